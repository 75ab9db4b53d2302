// The shared-memory model without a store (docs/PROTOCOL.md §18.4–§18.8):
// the membership log's rules, key epochs and back links, key copies, signed
// writes and request signatures, each with the refusals that protect it.
import { clone } from '@bufbuild/protobuf';
import { MembershipChange, MembershipEntrySchema, MemoryAccess, WriteRecordSchema, EpochRecordSchema, KeyWrapSchema, type MembershipEntry } from '@parley/proto';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACK_LINK_BYTES,
  Membership,
  MEMORY_METADATA_KEYS,
  assertEpochRecordShape,
  isCutEpoch,
  changeEntry,
  createEntry,
  followBackLink,
  membershipEntryHash,
  newCutEpoch,
  newEpoch,
  openWrap,
  openWrite,
  parseMemoryMetadata,
  sealWrite,
  signMemoryRequest,
  verifyCurrentEpoch,
  verifyEpochRecord,
  verifyKeyWrap,
  verifyMemoryRequest,
  verifyWriteRecord,
  wrapKey,
  type EpochKey,
} from '../src/index.js';
import { createWorld, expectCode, type TestAgent, type World } from './fixtures.js';

let w: World;
let owner: TestAgent;
let admin: TestAgent;
let writer: TestAgent;
let reader: TestAgent;
let outsider: TestAgent;
const NOW = 1_750_000_000_000;

beforeAll(async () => {
  w = await createWorld();
  owner = w.agent('planner-1', 'planner');
  admin = w.agent('admin-2');
  writer = w.agent('worker-3');
  reader = w.agent('worker-4');
  outsider = w.agent('intruder-5');
});

function newLog(): Membership {
  const { memoryId, entry } = createEntry(w.crypto, owner, owner.publicKey, { nowMs: NOW });
  return Membership.create(w.crypto, entry, memoryId);
}

function grant(log: Membership, by: TestAgent, to: TestAgent, access: MemoryAccess, expiresAtMs = 0, at = NOW + 1): MembershipEntry {
  return changeEntry(w.crypto, by, log, { kind: 'grant', memberId: to.agentId, access, publicKey: to.publicKey, expiresAtMs }, at);
}

describe('membership log (§18.4)', () => {
  it('derives the memory id from the CREATE entry and refuses another id, a changed entry or a bad signature', async () => {
    const { memoryId, entry } = createEntry(w.crypto, owner, owner.publicKey, { nowMs: NOW });
    expect(memoryId).toMatch(/^mem-[0-9a-f]{32}$/);
    const log = Membership.create(w.crypto, entry, memoryId);
    expect(log.ownerId).toBe(owner.agentId);
    expect(log.version).toBe(1n);
    expect(log.head).toEqual(membershipEntryHash(w.crypto, memoryId, entry));
    await expectCode(() => Membership.create(w.crypto, entry, `mem-${'0'.repeat(32)}`), 'identity_mismatch');
    const forged = clone(MembershipEntrySchema, entry);
    forged.memberPublicKey = outsider.publicKey; // another owner key: another memory id
    await expectCode(() => Membership.create(w.crypto, forged, memoryId), 'identity_mismatch');
    const resigned = clone(MembershipEntrySchema, entry);
    resigned.signature[0]! ^= 1;
    await expectCode(() => Membership.create(w.crypto, resigned, memoryId), 'bad_signature');
  });

  it('folds grants and revocations by admins; the owner alone handles admins', async () => {
    const log = newLog();
    log.append(grant(log, owner, admin, MemoryAccess.ADMIN));
    log.append(grant(log, admin, writer, MemoryAccess.WRITE));
    log.append(grant(log, admin, reader, MemoryAccess.READ, NOW + 60_000));
    expect(log.active(NOW + 10).map((m) => m.memberId)).toEqual([admin.agentId, owner.agentId, writer.agentId, reader.agentId].sort());
    expect(log.active(NOW + 60_000).map((m) => m.memberId)).not.toContain(reader.agentId); // expired at exactly its expiry
    // A writer cannot grant; an admin cannot make or unmake admins; nobody grants or revokes the owner.
    await expectCode(() => log.append(grant(log, writer, outsider, MemoryAccess.READ)), 'permission_denied');
    await expectCode(() => log.append(grant(log, admin, outsider, MemoryAccess.ADMIN)), 'permission_denied');
    await expectCode(() => log.append(changeEntry(w.crypto, owner, log, { kind: 'revoke', memberId: owner.agentId, publicKey: owner.publicKey }, NOW + 2)), 'permission_denied');
    await expectCode(() => log.append(changeEntry(w.crypto, admin, log, { kind: 'revoke', memberId: admin.agentId, publicKey: admin.publicKey }, NOW + 2)), 'permission_denied');
    // An outsider signing in an admin's name fails on the signature.
    const forged = grant(log, admin, outsider, MemoryAccess.READ);
    forged.signature = w.crypto.ed25519.sign(new Uint8Array(1), outsider.signingKey);
    await expectCode(() => log.append(forged), 'bad_signature');
    log.append(changeEntry(w.crypto, admin, log, { kind: 'revoke', memberId: writer.agentId, publicKey: writer.publicKey }, NOW + 3));
    expect(log.member(writer.agentId)).toBeUndefined();
    // Its key stays known as a writer key: its earlier writes still verify.
    expect(log.keysOf(writer.agentId, MemoryAccess.WRITE)).toHaveLength(1);
    expect(log.version).toBe(5n);
  });

  it('refuses an entry that does not continue the head (version or previous hash), leaving the log unchanged', async () => {
    const log = newLog();
    const e = grant(log, owner, writer, MemoryAccess.WRITE);
    const skipped = clone(MembershipEntrySchema, e);
    skipped.version = 3n;
    await expectCode(() => log.append(skipped), 'conflict');
    const forked = clone(MembershipEntrySchema, e);
    forked.previousHash = new Uint8Array(32);
    await expectCode(() => log.append(forked), 'conflict');
    expect(log.version).toBe(1n);
    log.append(e);
    await expectCode(() => log.append(e), 'conflict'); // a replay of the same entry
  });

  it('an admin whose grant expired can no longer sign', async () => {
    const log = newLog();
    log.append(grant(log, owner, admin, MemoryAccess.ADMIN, NOW + 1000));
    log.append(grant(log, admin, writer, MemoryAccess.WRITE, 0, NOW + 999));
    await expectCode(() => log.append(grant(log, admin, reader, MemoryAccess.READ, 0, NOW + 1000)), 'permission_denied');
  });

  it('folds a full log in linear work: no entry copies the member list, and every earlier version is still answered', () => {
    // 4096 entries over 255 members: a member-list copy per entry would copy about a million members.
    const log = newLog();
    const members = Array.from({ length: 255 }, (_, i) => ({ agentId: `worker-${i}`, publicKey: w.crypto.ed25519.generateKeyPair().publicKey }));
    for (let v = 2; v <= 4096; v++) {
      const m = members[(v - 2) % members.length]!;
      const entry =
        v % 7 === 0 && log.member(m.agentId) !== undefined
          ? changeEntry(w.crypto, owner, log, { kind: 'revoke', memberId: m.agentId, publicKey: m.publicKey }, NOW + v)
          : changeEntry(w.crypto, owner, log, { kind: 'grant', memberId: m.agentId, access: v % 2 === 0 ? MemoryAccess.READ : MemoryAccess.WRITE, publicKey: m.publicKey, expiresAtMs: 0 }, NOW + v);
      log.append(entry);
    }
    const RealMap = globalThis.Map;
    let copied = 0;
    let made = 0;
    class CountingMap<K, V> extends RealMap<K, V> {
      constructor(entries?: Iterable<readonly [K, V]> | null) {
        super(entries);
        made++;
        copied += this.size;
      }
    }
    globalThis.Map = CountingMap as MapConstructor;
    let restored: Membership;
    try {
      restored = Membership.restore(w.crypto, log.memoryId, log.entries);
    } finally {
      globalThis.Map = RealMap;
    }
    expect(restored.version).toBe(4096n);
    expect(copied).toBe(0);
    expect(made).toBeLessThanOrEqual(2 + 2 * members.length); // the log's maps, one history and one key map per agent
    // The same answers as the log folded entry by entry, at the head and as of earlier versions.
    expect(restored.members().map((m) => m.memberId).sort()).toEqual(log.members().map((m) => m.memberId).sort());
    for (const v of [1n, 2n, 7n, 300n, 2048n, 4095n, 4096n]) {
      for (const m of [members[0]!, members[5]!, members[254]!]) {
        const entry = [...log.entries.slice(0, Number(v))].reverse().find((e) => e.memberId === m.agentId);
        const expected = entry === undefined || entry.change !== MembershipChange.GRANT ? undefined : entry.access;
        expect(restored.memberAt(m.agentId, v)?.access, `${m.agentId} at ${v}`).toBe(expected);
      }
    }
    expect(restored.lastRevokeVersion).toBe([...log.entries].reverse().find((e) => e.change === MembershipChange.REVOKE)!.version);
  });

  it('validates every field shape with `malformed`', async () => {
    const log = newLog();
    const good = grant(log, owner, writer, MemoryAccess.WRITE);
    const cases: [string, (e: MembershipEntry) => void][] = [
      ['member id', (e) => (e.memberId = 'Not An Id')],
      ['key length', (e) => (e.memberPublicKey = new Uint8Array(31))],
      ['access value', (e) => (e.access = 9 as MemoryAccess)],
      ['negative time', (e) => (e.timestampMs = -1n)],
      ['nonce on GRANT', (e) => (e.creationNonce = new Uint8Array(16))],
      ['signature length', (e) => (e.signature = new Uint8Array(63))],
      ['no level', (e) => (e.access = MemoryAccess.UNSPECIFIED)],
      ['expiry before the entry', (e) => (e.expiresAtMs = 5n)],
    ];
    for (const [what, change] of cases) {
      const e = clone(MembershipEntrySchema, good);
      change(e);
      await expectCode(() => log.append(e), 'malformed').catch((err: unknown) => {
        throw new Error(`${what}: ${String(err)}`);
      });
    }
  });
});

describe('key epochs, back links and key copies (§18.5, §18.6)', () => {
  it('a member opens its copy; back links give every earlier key; nobody else opens anything', async () => {
    const log = newLog();
    const e1 = newEpoch(w.crypto, owner, log.memoryId, { version: 1n, hash: log.head }, undefined, NOW);
    verifyEpochRecord(w.crypto, log, e1.record, undefined);
    log.append(grant(log, owner, writer, MemoryAccess.WRITE));
    const e2 = newEpoch(w.crypto, writer, log.memoryId, { version: log.version, hash: log.head }, e1, NOW + 5);
    verifyEpochRecord(w.crypto, log, e2.record, e1.record);
    const copy = wrapKey(w.crypto, writer, log.memoryId, e2, { memberId: writer.agentId, publicKey: writer.publicKey });
    verifyKeyWrap(w.crypto, log, copy);
    const opened = openWrap(w.crypto, writer, log.memoryId, copy, e2.record);
    expect(opened.key.unsafeBytes()).toEqual(e2.key.unsafeBytes());
    const back = followBackLink(w.crypto, log.memoryId, opened, e1.record);
    expect(back.key.unsafeBytes()).toEqual(e1.key.unsafeBytes());
    // Someone else's identity key does not open the copy; a copy moved to another member or epoch is refused.
    await expectCode(() => openWrap(w.crypto, { agentId: writer.agentId, signingKey: outsider.signingKey }, log.memoryId, copy, e2.record), 'decrypt_failed');
    await expectCode(() => openWrap(w.crypto, owner, log.memoryId, { ...copy, memberId: owner.agentId }, e2.record), 'decrypt_failed');
    await expectCode(() => openWrap(w.crypto, writer, log.memoryId, { ...copy, epoch: 1 }, e1.record), 'decrypt_failed');
    // A key that does not match the signed commitment is refused even when the copy opens.
    const wrongRecord = clone(EpochRecordSchema, e2.record);
    wrongRecord.keyCommitment = new Uint8Array(32);
    await expectCode(() => openWrap(w.crypto, writer, log.memoryId, copy, wrongRecord), 'decrypt_failed');
    // The back link of epoch 2 does not open without epoch 2's key.
    await expectCode(() => followBackLink(w.crypto, log.memoryId, { record: e2.record, key: w.crypto.randomKey('aead') }, e1.record), 'decrypt_failed');
  });

  it('leaves no copy of an epoch key behind: every buffer the key is copied into is zero once the key is wiped', () => {
    // Records every Uint8Array the key could be copied into: the targets of set() (the layouts' growable
    // buffers among them) and the copies slice() makes (what a layout's bytes() returns). Restored in finally.
    const proto = Uint8Array.prototype;
    const originalSet = proto.set;
    const originalSlice = proto.slice;
    const targets = new Set<Uint8Array>();
    proto.set = function (this: Uint8Array, ...args: Parameters<Uint8Array['set']>): void {
      targets.add(this);
      originalSet.apply(this, args);
    };
    proto.slice = function (this: Uint8Array, ...args: Parameters<Uint8Array['slice']>): Uint8Array {
      const copy = originalSlice.apply(this, args);
      targets.add(copy);
      return copy;
    } as Uint8Array['slice'];
    let epoch: EpochKey;
    try {
      const log = newLog();
      epoch = newEpoch(w.crypto, owner, log.memoryId, { version: 1n, hash: log.head }, undefined, NOW);
      wrapKey(w.crypto, owner, log.memoryId, epoch, { memberId: writer.agentId, publicKey: writer.publicKey });
    } finally {
      proto.set = originalSet;
      proto.slice = originalSlice;
    }
    const key = epoch.key.unsafeBytes().slice();
    epoch.key.wipe();
    const holders: string[] = [];
    for (const buf of targets) {
      for (let i = 0; i + key.length <= buf.length; i++) {
        let j = 0;
        while (j < key.length && buf[i + j] === key[j]) j++;
        if (j === key.length) holders.push(`${buf.length}-byte buffer at offset ${i}`);
      }
    }
    expect(targets.size).toBeGreaterThan(0);
    expect(holders).toEqual([]);
  });

  it('refuses epochs out of sequence, by a reader, or for a membership log the verifier does not have', async () => {
    const log = newLog();
    const e1 = newEpoch(w.crypto, owner, log.memoryId, { version: 1n, hash: log.head }, undefined, NOW);
    log.append(grant(log, owner, reader, MemoryAccess.READ));
    const byReader = newEpoch(w.crypto, reader, log.memoryId, { version: log.version, hash: log.head }, e1, NOW);
    await expectCode(() => verifyEpochRecord(w.crypto, log, byReader.record, e1.record), 'permission_denied');
    const e2 = newEpoch(w.crypto, owner, log.memoryId, { version: log.version, hash: log.head }, e1, NOW);
    await expectCode(() => verifyEpochRecord(w.crypto, log, e2.record, e2.record), 'conflict');
    const beyond = newEpoch(w.crypto, owner, log.memoryId, { version: 9n, hash: log.head }, e1, NOW);
    await expectCode(() => verifyEpochRecord(w.crypto, log, beyond.record, e1.record), 'conflict');
    const otherLog = newEpoch(w.crypto, owner, log.memoryId, { version: 2n, hash: new Uint8Array(32) }, e1, NOW);
    await expectCode(() => verifyEpochRecord(w.crypto, log, otherLog.record, e1.record), 'bad_signature');
    const tampered = clone(EpochRecordSchema, e2.record);
    tampered.createdAtMs += 1n;
    await expectCode(() => verifyEpochRecord(w.crypto, log, tampered, e1.record), 'bad_signature');
  });

  it('takes an epoch without a back link (a cut) only as the epoch of a REVOKE, made by the admin who signed it; back links stop at it', async () => {
    const log = newLog();
    const e1 = newEpoch(w.crypto, owner, log.memoryId, { version: 1n, hash: log.head }, undefined, NOW);
    log.append(grant(log, owner, admin, MemoryAccess.ADMIN));
    log.append(grant(log, owner, writer, MemoryAccess.WRITE));
    // For a GRANT's version: refused, whoever makes it.
    const forGrant = newCutEpoch(w.crypto, owner, log.memoryId, { version: log.version, hash: log.head }, 2, NOW + 2);
    expect(assertEpochRecordShape(forGrant.record).backLink.length).toBe(0);
    expect(isCutEpoch(forGrant.record)).toBe(true);
    expect((await expectCode(() => verifyEpochRecord(w.crypto, log, forGrant.record, e1.record), 'bad_signature')).message).toMatch(/cut/);
    log.append(changeEntry(w.crypto, admin, log, { kind: 'revoke', memberId: writer.agentId, publicKey: writer.publicKey }, NOW + 3));
    const revoked = { version: log.version, hash: log.head };
    // For the REVOKE's version, but by another admin than its signer (here the owner): refused.
    const byOwner = newCutEpoch(w.crypto, owner, log.memoryId, revoked, 2, NOW + 3);
    expect((await expectCode(() => verifyEpochRecord(w.crypto, log, byOwner.record, e1.record), 'bad_signature')).message).toMatch(/cut/);
    // By the REVOKE's signer: accepted, and nothing before it is reachable through it.
    const e2 = newCutEpoch(w.crypto, admin, log.memoryId, revoked, 2, NOW + 3);
    verifyEpochRecord(w.crypto, log, e2.record, e1.record);
    expect((await expectCode(() => followBackLink(w.crypto, log.memoryId, e2, e1.record), 'decrypt_failed')).message).toMatch(/before the cut at epoch 2/);
    // Epoch 1 has no back link; any other length than 0 or 72 bytes is malformed.
    await expectCode(() => assertEpochRecordShape({ ...e2.record, backLink: new Uint8Array(10) }), 'malformed');
    await expectCode(() => assertEpochRecordShape({ ...e1.record, backLink: new Uint8Array(BACK_LINK_BYTES) }), 'malformed');
    await expectCode(() => newCutEpoch(w.crypto, admin, log.memoryId, revoked, 1, NOW + 3), 'internal');
  });

  it('refuses an epoch made by a creator whose grant had expired when it was made', async () => {
    const log = newLog();
    const e1 = newEpoch(w.crypto, owner, log.memoryId, { version: 1n, hash: log.head }, undefined, NOW);
    log.append(grant(log, owner, writer, MemoryAccess.WRITE, NOW + 1000));
    const inTime = newEpoch(w.crypto, writer, log.memoryId, { version: log.version, hash: log.head }, e1, NOW + 999);
    verifyEpochRecord(w.crypto, log, inTime.record, e1.record);
    const late = newEpoch(w.crypto, writer, log.memoryId, { version: log.version, hash: log.head }, e1, NOW + 1000);
    await expectCode(() => verifyEpochRecord(w.crypto, log, late.record, e1.record), 'permission_denied');
  });

  it('the current epoch is made for the last revocation or later, and for no earlier log version than one already seen', async () => {
    const log = newLog();
    const e1 = newEpoch(w.crypto, owner, log.memoryId, { version: 1n, hash: log.head }, undefined, NOW);
    log.append(grant(log, owner, writer, MemoryAccess.WRITE));
    log.append(grant(log, owner, reader, MemoryAccess.WRITE));
    const e2 = newEpoch(w.crypto, owner, log.memoryId, { version: 3n, hash: log.head }, e1, NOW + 2);
    // The writer, still a member at version 3, makes an epoch it keeps for itself; then it is revoked.
    const byWriter = newEpoch(w.crypto, writer, log.memoryId, { version: 2n, hash: log.hashAt(2n)! }, e1, NOW + 3);
    log.append(changeEntry(w.crypto, owner, log, { kind: 'revoke', memberId: writer.agentId, publicKey: writer.publicKey }, NOW + 4));
    expect(log.lastRevokeVersion).toBe(4n);
    const e3 = newEpoch(w.crypto, owner, log.memoryId, { version: 4n, hash: log.head }, e2, NOW + 4);
    verifyEpochRecord(w.crypto, log, byWriter.record, e1.record); // a valid record of its time…
    await expectCode(() => verifyCurrentEpoch(log, byWriter.record), 'conflict'); // …but not one to write under
    verifyCurrentEpoch(log, e3.record, [e1.record, e2.record, e3.record]);
    const e4 = newEpoch(w.crypto, reader, log.memoryId, { version: 4n, hash: log.head }, e3, NOW + 5);
    verifyCurrentEpoch(log, e4.record, [e3.record]);
    // After the revocation, but older than an epoch already accepted: a store going back.
    log.append(grant(log, owner, outsider, MemoryAccess.READ));
    const later = newEpoch(w.crypto, owner, log.memoryId, { version: 5n, hash: log.head }, e3, NOW + 6);
    await expectCode(() => verifyCurrentEpoch(log, e4.record, [later.record]), 'conflict');
  });

  it('refuses a key copy signed by a member no longer on record, even under a key it once held with write access', async () => {
    const log = newLog();
    const e1 = newEpoch(w.crypto, owner, log.memoryId, { version: 1n, hash: log.head }, undefined, NOW);
    log.append(grant(log, owner, writer, MemoryAccess.WRITE));
    log.append(grant(log, owner, reader, MemoryAccess.READ));
    const byWriter = wrapKey(w.crypto, writer, log.memoryId, e1, { memberId: reader.agentId, publicKey: reader.publicKey });
    verifyKeyWrap(w.crypto, log, byWriter);
    log.append(changeEntry(w.crypto, owner, log, { kind: 'revoke', memberId: writer.agentId, publicKey: writer.publicKey }, NOW + 2));
    await expectCode(() => verifyKeyWrap(w.crypto, log, byWriter), 'bad_signature');
  });

  it('refuses a key copy sealed to a key its member never held, or signed by a reader', async () => {
    const log = newLog();
    const e1 = newEpoch(w.crypto, owner, log.memoryId, { version: 1n, hash: log.head }, undefined, NOW);
    log.append(grant(log, owner, reader, MemoryAccess.READ));
    const toOutsiderKey = wrapKey(w.crypto, owner, log.memoryId, e1, { memberId: reader.agentId, publicKey: outsider.publicKey });
    await expectCode(() => verifyKeyWrap(w.crypto, log, toOutsiderKey), 'permission_denied');
    const byReader = wrapKey(w.crypto, reader, log.memoryId, e1, { memberId: reader.agentId, publicKey: reader.publicKey });
    await expectCode(() => verifyKeyWrap(w.crypto, log, byReader), 'bad_signature');
    const bad = clone(KeyWrapSchema, wrapKey(w.crypto, owner, log.memoryId, e1, { memberId: reader.agentId, publicKey: reader.publicKey }));
    bad.sealedKey[60]! ^= 1; // the signature covers the sealed key's digest
    await expectCode(() => verifyKeyWrap(w.crypto, log, bad), 'bad_signature');
  });
});

describe('segment writes (§18.7)', () => {
  let log: Membership;
  let e1: EpochKey;
  beforeAll(() => {
    log = newLog();
    e1 = newEpoch(w.crypto, owner, log.memoryId, { version: 1n, hash: log.head }, undefined, NOW);
    log.append(grant(log, owner, writer, MemoryAccess.WRITE));
    log.append(grant(log, owner, reader, MemoryAccess.READ));
  });

  it('encrypts under the epoch key with a fresh nonce, signs, and opens only unchanged', async () => {
    const data = new TextEncoder().encode('{"plan":["gather","draft","review"]}');
    const a = sealWrite(w.crypto, writer, log.memoryId, e1, { segmentId: 'plan', previousVersion: 0n, data, expiresAtMs: 0, nowMs: NOW });
    const b = sealWrite(w.crypto, writer, log.memoryId, e1, { segmentId: 'plan', previousVersion: 0n, data, expiresAtMs: 0, nowMs: NOW });
    expect(a.ciphertext.subarray(0, 24)).not.toEqual(b.ciphertext.subarray(0, 24));
    expect(Buffer.from(a.ciphertext).includes(Buffer.from('gather'))).toBe(false);
    verifyWriteRecord(log, a.record);
    expect(openWrite(w.crypto, log.memoryId, e1, a.record, a.ciphertext)).toEqual(data);
    const flipped = a.ciphertext.slice();
    flipped[30]! ^= 1;
    await expectCode(() => openWrite(w.crypto, log.memoryId, e1, a.record, flipped), 'bad_signature');
    // Moved to another segment or version: the signature fails, and so would the AEAD.
    const moved = clone(WriteRecordSchema, a.record);
    moved.segmentId = 'other';
    await expectCode(() => verifyWriteRecord(log, moved), 'bad_signature');
    await expectCode(() => openWrite(w.crypto, log.memoryId, e1, { ...a.record, segmentId: 'other' }, a.ciphertext), 'decrypt_failed');
  });

  it('a reader cannot sign a write that verifies; an outsider cannot either', async () => {
    const byReader = sealWrite(w.crypto, reader, log.memoryId, e1, { segmentId: 'plan', previousVersion: 0n, data: new Uint8Array(3), expiresAtMs: 0, nowMs: NOW });
    await expectCode(() => verifyWriteRecord(log, byReader.record), 'bad_signature');
    const byOutsider = sealWrite(w.crypto, outsider, log.memoryId, e1, { segmentId: 'plan', previousVersion: 0n, data: new Uint8Array(3), expiresAtMs: 0, nowMs: NOW });
    await expectCode(() => verifyWriteRecord(log, { ...byOutsider.record, writerId: writer.agentId }), 'bad_signature');
  });

  it('refuses oversize data before sealing', async () => {
    await expectCode(() => sealWrite(w.crypto, writer, log.memoryId, e1, { segmentId: 's', previousVersion: 0n, data: new Uint8Array(1024 * 1024 + 1), expiresAtMs: 0, nowMs: NOW }), 'too_large');
  });
});

describe('request signatures (§18.8)', () => {
  it('signs the exact request bytes for one store and method; any change fails verification', async () => {
    const target = { serviceId: 'gw-1', path: '/parley.v1.MemoryService/ReadSegment', body: new Uint8Array([10, 3, 1, 2, 3]) };
    const md = signMemoryRequest(w.crypto, writer, target, NOW);
    const auth = parseMemoryMetadata((k) => md[k]);
    const who = { agentId: writer.agentId, identityPublicKey: writer.publicKey, serial: writer.certificate.serial };
    expect(verifyMemoryRequest(w.crypto, auth, target, who)).toBe(true);
    expect(verifyMemoryRequest(w.crypto, auth, { ...target, serviceId: 'gw-2' }, who)).toBe(false);
    expect(verifyMemoryRequest(w.crypto, auth, { ...target, path: '/parley.v1.MemoryService/WriteSegment' }, who)).toBe(false);
    expect(verifyMemoryRequest(w.crypto, auth, { ...target, body: new Uint8Array([10, 3, 1, 2, 4]) }, who)).toBe(false);
    expect(verifyMemoryRequest(w.crypto, { ...auth, timestampMs: NOW + 1 }, target, who)).toBe(false);
    expect(verifyMemoryRequest(w.crypto, auth, target, { ...who, serial: new Uint8Array(16) })).toBe(false);
    // Missing or malformed metadata is `unauthenticated`.
    for (const key of Object.values(MEMORY_METADATA_KEYS)) {
      await expectCode(() => parseMemoryMetadata((k) => (k === key ? undefined : md[k])), 'unauthenticated');
      await expectCode(() => parseMemoryMetadata((k) => (k === key ? '!!' : md[k])), 'unauthenticated');
    }
  });
});
