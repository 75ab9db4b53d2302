// The store against a real database (PGlite in memory; PostgreSQL in a fresh
// schema with DATABASE_URL): request authentication (§18.8), the membership
// ACL (default deny), compare-and-set writes, key epochs on revocation and
// expiry, quotas, expiry and its sweep, one audit entry per call, and nothing
// in the database that a key could be recovered from or a plaintext read in.
import {
  AgentCertificateSchema,
  MemoryAccess,
  MemoryService,
  MembershipChange,
  MembershipEntrySchema,
  WriteRecordSchema,
  clone,
  toBinary,
  type AuditMessage,
  type EpochRecord,
  type MembershipEntry,
} from '@parley/proto';
import {
  ADMIN_GRANT_LIMIT,
  BACK_LINK_BYTES,
  GRANT_LIMIT,
  MAX_MEMBERS,
  MAX_SEGMENT_CIPHERTEXT_BYTES,
  Membership,
  MemoryClient,
  MEMORY_METADATA_KEYS,
  changeEntry,
  createEntry,
  isMemoryError,
  keyWrapLayout,
  membershipEntryHash,
  newCutEpoch,
  newEpoch,
  openWrap,
  openWrite,
  sealWrite,
  wrapKey,
  type EpochKey,
  type MemoryError,
} from '@parley/memory';
import { createIssuerKey } from '@parley/identity';
import { RpcError, addService, type RpcErrorCode } from '@parley/rpc';
import { serveOnLoopback } from '@parley/test-support';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Queryable } from '@parley/db';
import { DATABASE_URL, SERVICE_ID, openHarness, type Harness, type TestAgent } from './harness.js';
import { UNAUTHENTICATED_AUDIT_RATE } from '../src/call.js';

const ENGINE = DATABASE_URL === undefined ? 'PGlite' : 'PostgreSQL';

async function expectCode(p: Promise<unknown>, code: RpcErrorCode): Promise<void> {
  let thrown: unknown;
  try {
    await p;
  } catch (error) {
    thrown = error;
  }
  expect(thrown, `expected RpcError ${code}`).toBeInstanceOf(RpcError);
  expect((thrown as RpcError).code, (thrown as Error).message).toBe(code);
}

/** What an agent keeps about one memory to build its requests (what MemoryClient keeps, minimally). */
class TestMemory {
  epoch: EpochKey;
  constructor(
    readonly h: Harness,
    readonly memoryId: string,
    readonly log: Membership,
    epoch: EpochKey,
  ) {
    this.epoch = epoch;
  }

  static async create(h: Harness, owner: TestAgent, expiresAtMs = 0): Promise<TestMemory> {
    const now = h.clock.now;
    const { memoryId, entry } = createEntry(h.crypto, owner, owner.publicKey, { nowMs: now, expiresAtMs });
    const log = Membership.create(h.crypto, entry, memoryId);
    const epoch = newEpoch(h.crypto, owner, memoryId, { version: 1n, hash: log.head }, undefined, now);
    const ownerWrap = wrapKey(h.crypto, owner, memoryId, epoch, { memberId: owner.agentId, publicKey: owner.publicKey });
    const res = await h.call(owner, 'createMemory', { entry, epoch: epoch.record, ownerWrap });
    expect(res.memoryId).toBe(memoryId);
    return new TestMemory(h, memoryId, log, epoch);
  }

  async grant(by: TestAgent, to: TestAgent, access: MemoryAccess, expiresAtMs = 0): Promise<void> {
    const entry = changeEntry(this.h.crypto, by, this.log, { kind: 'grant', memberId: to.agentId, access, publicKey: to.publicKey, expiresAtMs }, this.h.clock.now);
    const wrap = wrapKey(this.h.crypto, by, this.memoryId, this.epoch, { memberId: to.agentId, publicKey: to.publicKey });
    await this.h.call(by, 'updateMembership', { memoryId: this.memoryId, entry, memberCertificate: to.certificate, wraps: [wrap] });
    this.log.append(entry);
  }

  /** Builds a revocation (or, without `who`, a rotation) for `members`; sends it; adopts it on success. */
  async rotate(by: TestAgent, members: TestAgent[], who?: TestAgent): Promise<void> {
    const now = this.h.clock.now;
    const entry = who === undefined ? undefined : changeEntry(this.h.crypto, by, this.log, { kind: 'revoke', memberId: who.agentId, publicKey: who.publicKey }, now);
    const membership = entry === undefined ? { version: this.log.version, hash: this.log.head } : { version: entry.version, hash: membershipEntryHash(this.h.crypto, this.memoryId, entry) };
    const next = newEpoch(this.h.crypto, by, this.memoryId, membership, this.epoch, now);
    const wraps = members.map((m) => wrapKey(this.h.crypto, by, this.memoryId, next, { memberId: m.agentId, publicKey: m.publicKey }));
    if (entry === undefined) await this.h.call(by, 'rotateEpoch', { memoryId: this.memoryId, epoch: next.record, wraps });
    else await this.h.call(by, 'updateMembership', { memoryId: this.memoryId, entry, epoch: next.record, wraps });
    if (entry !== undefined) this.log.append(entry);
    this.epoch = next;
  }

  seal(writer: TestAgent, segmentId: string, text: string, previousVersion: bigint, expiresAtMs = 0) {
    return sealWrite(this.h.crypto, writer, this.memoryId, this.epoch, { segmentId, previousVersion, data: new TextEncoder().encode(text), expiresAtMs, nowMs: this.h.clock.now });
  }

  async write(writer: TestAgent, segmentId: string, text: string, previousVersion: bigint, expiresAtMs = 0) {
    const w = this.seal(writer, segmentId, text, previousVersion, expiresAtMs);
    return this.h.call(writer, 'writeSegment', { memoryId: this.memoryId, record: w.record, ciphertext: w.ciphertext });
  }

  async read(reader: TestAgent, segmentId: string): Promise<string> {
    const res = await this.h.call(reader, 'readSegment', { memoryId: this.memoryId, segmentId });
    return new TextDecoder().decode(openWrite(this.h.crypto, this.memoryId, this.epoch, res.record, res.ciphertext));
  }
}

const outcomes = (entries: AuditMessage[]): string[] => entries.map((e) => `${e.senderId}>${e.recipientId}:${e.outcome}`);

describe(`memory store on ${ENGINE}`, () => {
  let h: Harness;
  let owner: TestAgent;
  let writer: TestAgent;
  let reader: TestAgent;
  let outsider: TestAgent;
  beforeAll(async () => {
    h = await openHarness();
  }, 60_000);
  afterAll(async () => {
    await h.close();
  });
  beforeEach(async () => {
    await h.fresh();
    owner = h.agent('planner-1');
    writer = h.agent('worker-2');
    reader = h.agent('worker-3');
    outsider = h.agent('intruder-4');
  });

  it('members read and write by level; a non-member and a reader writing are refused; every call is audited', async () => {
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    await m.grant(owner, reader, MemoryAccess.READ);
    const first = await m.write(writer, 'plan', 'step 1: gather sources', 0n);
    expect(first.outcome).toEqual({ case: 'accepted', value: expect.objectContaining({ version: 1n, alreadyApplied: false }) });
    expect(await m.read(reader, 'plan')).toBe('step 1: gather sources');
    expect(await m.read(owner, 'plan')).toBe('step 1: gather sources');
    await expectCode(m.write(reader, 'plan', 'reader edit', 1n), 'permission_denied');
    await expectCode(h.call(outsider, 'readSegment', { memoryId: m.memoryId, segmentId: 'plan' }), 'permission_denied');
    await expectCode(h.call(outsider, 'getMemory', { memoryId: m.memoryId }), 'permission_denied');
    await expectCode(h.call(outsider, 'readSegment', { memoryId: `mem-${'0'.repeat(32)}`, segmentId: 'plan' }), 'permission_denied');
    await expectCode(h.call(reader, 'readSegment', { memoryId: m.memoryId, segmentId: 'nothing' }), 'not_found');
    const list = await h.call(reader, 'listMemories', {});
    expect(list.memories.map((x: { memoryId: string }) => x.memoryId)).toEqual([m.memoryId]);
    expect((await h.call(outsider, 'listMemories', {})).memories).toEqual([]);

    const trail = outcomes(await h.auditEntries());
    expect(trail).toEqual([
      `planner-1>${m.memoryId}:memory.create:ok`,
      `planner-1>${m.memoryId}:memory.grant:ok`,
      `planner-1>${m.memoryId}:memory.grant:ok`,
      `worker-2>${m.memoryId}:memory.write:ok`,
      `worker-3>${m.memoryId}:memory.read:ok`,
      `planner-1>${m.memoryId}:memory.read:ok`,
      `worker-3>${m.memoryId}:memory.write:permission_denied`,
      `intruder-4>${m.memoryId}:memory.read:permission_denied`,
      `intruder-4>${m.memoryId}:memory.get:permission_denied`,
      `intruder-4>mem-${'0'.repeat(32)}:memory.read:permission_denied`,
      `worker-3>${m.memoryId}:memory.read:not_found`,
      'worker-3>memory-service:memory.list:ok',
      'intruder-4>memory-service:memory.list:ok',
    ]);
  });

  it('compare-and-set: the second writer of a version gets the current one; a retried write is recognised', async () => {
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    const a = m.seal(owner, 'notes', 'owner v1', 0n);
    const b = m.seal(writer, 'notes', 'writer v1', 0n);
    const ra = await h.call(owner, 'writeSegment', { memoryId: m.memoryId, record: a.record, ciphertext: a.ciphertext });
    const rb = await h.call(writer, 'writeSegment', { memoryId: m.memoryId, record: b.record, ciphertext: b.ciphertext });
    expect(ra.outcome.case).toBe('accepted');
    expect(rb.outcome.case).toBe('conflict');
    expect(rb.outcome.value.currentVersion).toBe(1n);
    expect(rb.outcome.value.current.writerId).toBe(owner.agentId);
    // The same signed write again (its answer was lost): accepted, not applied twice.
    const again = await h.call(owner, 'writeSegment', { memoryId: m.memoryId, record: a.record, ciphertext: a.ciphertext });
    expect(again.outcome.value).toEqual(expect.objectContaining({ version: 1n, alreadyApplied: true }));
    expect((await h.call(writer, 'getMemory', { memoryId: m.memoryId })).usage.segments).toBe(1n);
    // The loser retries on the version it was told.
    expect((await m.write(writer, 'notes', 'writer v2', 1n)).outcome.case).toBe('accepted');
    expect(await m.read(owner, 'notes')).toBe('writer v2');
    const trail = outcomes(await h.auditEntries()).slice(2);
    expect(trail).toEqual([
      `planner-1>${m.memoryId}:memory.write:ok`,
      `worker-2>${m.memoryId}:memory.write:cas_conflict`,
      `planner-1>${m.memoryId}:memory.write:already_applied`,
      `worker-2>${m.memoryId}:memory.get:ok`,
      `worker-2>${m.memoryId}:memory.write:ok`,
      `planner-1>${m.memoryId}:memory.read:ok`,
    ]);
  });

  it('refuses writes whose record does not match: another writer, a changed ciphertext, a changed field', async () => {
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    const w = m.seal(writer, 'plan', 'x', 0n);
    await expectCode(h.call(owner, 'writeSegment', { memoryId: m.memoryId, record: w.record, ciphertext: w.ciphertext }), 'identity_mismatch');
    const flipped = w.ciphertext.slice();
    flipped[40]! ^= 1;
    await expectCode(h.call(writer, 'writeSegment', { memoryId: m.memoryId, record: w.record, ciphertext: flipped }), 'malformed');
    const changed = clone(WriteRecordSchema, w.record);
    changed.expiresAtMs = BigInt(h.clock.now + 10_000);
    await expectCode(h.call(writer, 'writeSegment', { memoryId: m.memoryId, record: changed, ciphertext: w.ciphertext }), 'bad_signature');
    const late = m.seal(writer, 'plan', 'x', 0n);
    h.clock.advance(61_000);
    await expectCode(h.call(writer, 'writeSegment', { memoryId: m.memoryId, record: late.record, ciphertext: late.ciphertext }), 'stale_timestamp');
  });

  it('authenticates every call: missing, replayed, stale, tampered, unknown issuer and revoked certificates are refused and audited', async () => {
    const m = await TestMemory.create(h, owner);
    const req = { memoryId: m.memoryId };
    await expectCode(h.call(owner, 'getMemory', req, (md) => void delete md[MEMORY_METADATA_KEYS.signature]), 'unauthenticated');
    // Replay: the same metadata (nonce) twice — also after the store restarts, since nonces are persisted.
    let saved: Record<string, string> = {};
    await h.call(owner, 'getMemory', req, (md) => void (saved = { ...md }));
    await expectCode(h.call(owner, 'getMemory', req, (md) => void Object.assign(md, saved)), 'replay');
    await h.reopen();
    await expectCode(h.call(owner, 'getMemory', req, (md) => void Object.assign(md, saved)), 'replay');
    // A refused call spends its nonce too (its transaction rolled back; the nonce is recorded on its own).
    let refused: Record<string, string> = {};
    await expectCode(h.call(outsider, 'getMemory', req, (md) => void (refused = { ...md })), 'permission_denied');
    await expectCode(h.call(outsider, 'getMemory', req, (md) => void Object.assign(md, refused)), 'replay');
    await expectCode(h.call(owner, 'getMemory', req, (md) => void (md[MEMORY_METADATA_KEYS.timestamp] = String(h.clock.now - 120_000))), 'stale_timestamp');
    await expectCode(h.call(owner, 'getMemory', req, (md) => void (md[MEMORY_METADATA_KEYS.timestamp] = String(h.clock.now + 120_000))), 'future_timestamp');
    // The body changed after signing (another memory id asked for).
    await expectCode(h.call(owner, 'getMemory', req, (_md, body) => { const b = body.slice(); b[b.length - 1] = b[b.length - 1] === 0x30 ? 0x31 : 0x30; return b; }), 'bad_signature');
    // A certificate from an issuer the store does not trust.
    await expectCode(h.call(h.agentOf(createIssuerKey(h.crypto, h.crypto.ed25519.generateKeyPair()), 'planner-1'), 'getMemory', req), 'unknown_issuer');
    h.revocations.apply([{ kind: 'agent', agentId: owner.agentId, reason: 'key-compromise', revokedAtMs: h.clock.now }], 1, h.clock.now);
    await expectCode(h.call(owner, 'getMemory', req), 'revoked');
    const trail = (await h.auditEntries()).slice(1).map((e) => e.outcome);
    expect(trail).toEqual([
      'memory.get:unauthenticated',
      'memory.get:ok',
      'memory.get:replay',
      'memory.get:replay',
      'memory.get:permission_denied',
      'memory.get:replay',
      'memory.get:stale_timestamp',
      'memory.get:future_timestamp',
      'memory.get:bad_signature',
      'memory.get:unknown_issuer',
      'memory.get:revoked',
    ]);
    expect(h.events.filter((e) => e['event'] === 'security').map((e) => e['code'])).toEqual(expect.arrayContaining(['replay', 'bad_signature', 'revoked']));
  });

  it('audits refusals before authentication up to a bound for all callers together: beyond it they are refused alike, counted, not audited, and logged once a second per code', async () => {
    const m = await TestMemory.create(h, owner);
    const req = { memoryId: m.memoryId };
    const before = (await h.auditEntries()).length;
    const unsigned = (): Promise<unknown> => expectCode(h.call(owner, 'getMemory', req, (md) => void delete md[MEMORY_METADATA_KEYS.signature]), 'unauthenticated');
    for (let i = 0; i < 150; i++) await unsigned(); // the clock stands still: no refill
    const entries = (await h.auditEntries()).slice(before);
    expect(entries.length).toBe(UNAUTHENTICATED_AUDIT_RATE.burst);
    expect(h.store.unauditedRefusals).toBe(150 - UNAUTHENTICATED_AUDIT_RATE.burst);
    const lines = h.events.filter((e) => e['event'] === 'security' && e['code'] === 'unauthenticated');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ claimed: true });
    // An authenticated caller's refusals are audited whatever the bound's state, each with its own line.
    await expectCode(h.call(outsider, 'getMemory', req), 'permission_denied');
    expect((await h.auditEntries()).slice(before).map((e) => e.outcome).at(-1)).toBe('memory.get:permission_denied');
    // The bound refills with time: a second later, ten more are audited, and one more line says how many were held back.
    h.clock.advance(1_000);
    for (let i = 0; i < 11; i++) await unsigned();
    expect(h.store.unauditedRefusals).toBe(150 - UNAUTHENTICATED_AUDIT_RATE.burst + 1);
    const later = h.events.filter((e) => e['event'] === 'security' && e['code'] === 'unauthenticated');
    expect(later).toHaveLength(2);
    expect(later[1]).toMatchObject({ suppressed: 149 });
  });

  it('revocation rotates the epoch: the removed member is refused, and the new key is sealed to the rest only', async () => {
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    await m.grant(owner, reader, MemoryAccess.READ);
    await m.write(writer, 'plan', 'before removal', 0n);
    // A revocation must carry the next epoch, sealed to exactly the remaining active members.
    const entry = changeEntry(h.crypto, owner, m.log, { kind: 'revoke', memberId: reader.agentId, publicKey: reader.publicKey }, h.clock.now);
    await expectCode(h.call(owner, 'updateMembership', { memoryId: m.memoryId, entry }), 'malformed');
    await expectCode(m.rotate(owner, [owner, writer, reader], reader), 'conflict'); // still sealed to the removed one
    await expectCode(m.rotate(owner, [owner], reader), 'conflict'); // a remaining member left out
    await m.rotate(owner, [owner, writer], reader);
    await expectCode(h.call(reader, 'readSegment', { memoryId: m.memoryId, segmentId: 'plan' }), 'permission_denied');
    // Writes under the old epoch are refused; under the new one accepted.
    const old = sealWrite(h.crypto, writer, m.memoryId, { record: { ...m.epoch.record, epoch: 1 }, key: (await freshKey(h, m, writer)).key }, { segmentId: 'plan', previousVersion: 1n, data: new Uint8Array(4), expiresAtMs: 0, nowMs: h.clock.now });
    await expectCode(h.call(writer, 'writeSegment', { memoryId: m.memoryId, record: old.record, ciphertext: old.ciphertext }), 'conflict');
    expect((await m.write(writer, 'plan', 'after removal', 1n)).outcome.case).toBe('accepted');
    // The writer's copy of epoch 2 opens; the reader has none.
    const state = await h.call(writer, 'getMemory', { memoryId: m.memoryId });
    expect(state.memory.currentEpoch).toBe(2);
    expect(state.wrap.epoch).toBe(2);
    expect(openWrap(h.crypto, writer, m.memoryId, state.wrap, state.epochs.at(-1)).key.unsafeBytes()).toEqual(m.epoch.key.unsafeBytes());
    const rows = await h.db.query<{ member_id: string }>('SELECT member_id FROM memory_key_wraps WHERE memory_id = $1 ORDER BY member_id', [m.memoryId]);
    expect(rows.map((r) => r.member_id)).toEqual([owner.agentId, writer.agentId].sort());
  });

  it('an expired grant stops working at its expiry, and writes wait for the next epoch', async () => {
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    const expiry = h.clock.now + 5_000;
    await m.grant(owner, reader, MemoryAccess.READ, expiry);
    await m.write(writer, 'plan', 'v1', 0n);
    h.clock.now = expiry - 1;
    expect(await m.read(reader, 'plan')).toBe('v1');
    h.clock.now = expiry;
    await expectCode(h.call(reader, 'readSegment', { memoryId: m.memoryId, segmentId: 'plan' }), 'expired');
    expect((await h.call(writer, 'getMemory', { memoryId: m.memoryId })).rotationRequired).toBe(true);
    await expectCode(m.write(writer, 'plan', 'v2', 1n), 'rotation_required');
    await expectCode(m.rotate(writer, [owner, writer, reader]), 'conflict'); // sealed to the expired member: refused
    await m.rotate(writer, [owner, writer]);
    expect((await m.write(writer, 'plan', 'v2', 1n)).outcome.case).toBe('accepted');
    await expectCode(h.call(reader, 'getMemory', { memoryId: m.memoryId }), 'expired');
  });

  it('a member granted again under a new identity key makes a rotation required: the next epoch goes to the new key only', async () => {
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    await m.grant(owner, reader, MemoryAccess.READ);
    await m.write(writer, 'plan', 'v1', 0n);
    // Granting again under the same key (another level) changes no key: no rotation.
    await m.grant(owner, reader, MemoryAccess.WRITE);
    expect((await h.call(owner, 'getMemory', { memoryId: m.memoryId })).rotationRequired).toBe(false);
    // The writer rotates its identity key (registry, §15.5) and is granted again under the new one.
    const oldKey = writer;
    const rotated = h.agent(writer.agentId);
    await expectCode(h.call(rotated, 'getMemory', { memoryId: m.memoryId }), 'identity_mismatch');
    await m.grant(owner, rotated, MemoryAccess.WRITE);
    // The old key still opens epoch 1: until a rotation, nothing more may be written under it.
    expect((await h.call(owner, 'getMemory', { memoryId: m.memoryId })).rotationRequired).toBe(true);
    expect((await h.call(rotated, 'getMemory', { memoryId: m.memoryId })).rotationRequired).toBe(true);
    await expectCode(m.write(owner, 'plan', 'v2', 1n), 'rotation_required');
    await expectCode(m.write(rotated, 'plan', 'v2', 1n), 'rotation_required');
    await expectCode(m.rotate(rotated, [owner, oldKey, reader]), 'conflict'); // sealed to the replaced key: refused
    // A writer may make the required epoch (not only an admin); its copies go to the keys on record.
    await m.rotate(rotated, [owner, rotated, reader]);
    expect((await h.call(owner, 'getMemory', { memoryId: m.memoryId })).rotationRequired).toBe(false);
    expect((await m.write(owner, 'plan', 'v2', 1n)).outcome.case).toBe('accepted');
    expect(await m.read(rotated, 'plan')).toBe('v2');
    const state = await h.call(rotated, 'getMemory', { memoryId: m.memoryId });
    expect(state.wrap.epoch).toBe(2);
    expect(state.wrap.memberPublicKey).toEqual(rotated.publicKey);
    expect(openWrap(h.crypto, rotated, m.memoryId, state.wrap, state.epochs.at(-1)).key.unsafeBytes()).toEqual(m.epoch.key.unsafeBytes());
    expect(() => openWrap(h.crypto, oldKey, m.memoryId, state.wrap, state.epochs.at(-1))).toThrow();
    // Exactly one copy of epoch 2 per member, none sealed to the replaced key.
    const rows = await h.db.query<{ member_id: string; epoch: number }>('SELECT member_id, epoch FROM memory_key_wraps WHERE memory_id = $1 ORDER BY member_id', [m.memoryId]);
    expect(rows.map((r) => `${r.member_id}@${r.epoch}`)).toEqual([owner.agentId, rotated.agentId, reader.agentId].sort().map((id) => `${id}@2`));
  });

  it('admins only: grants by a writer are refused; an admin grant needs the owner; grants need a valid certificate', async () => {
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    await expectCode(m.grant(writer, reader, MemoryAccess.READ), 'permission_denied');
    const admin = h.agent('admin-5');
    await m.grant(owner, admin, MemoryAccess.ADMIN);
    await expectCode(m.grant(admin, reader, MemoryAccess.ADMIN), 'permission_denied');
    await m.grant(admin, reader, MemoryAccess.READ);
    // A certificate for another key than the entry names.
    const entry = changeEntry(h.crypto, owner, m.log, { kind: 'grant', memberId: outsider.agentId, access: MemoryAccess.READ, publicKey: outsider.publicKey, expiresAtMs: 0 }, h.clock.now);
    const wrap = wrapKey(h.crypto, owner, m.memoryId, m.epoch, { memberId: outsider.agentId, publicKey: outsider.publicKey });
    await expectCode(h.call(owner, 'updateMembership', { memoryId: m.memoryId, entry, memberCertificate: reader.certificate, wraps: [wrap] }), 'identity_mismatch');
    expect(entry.change).toBe(MembershipChange.GRANT);
  });

  it('enforces quotas with quota_exceeded', async () => {
    await h.fresh({ quotas: { maxBytesPerMemory: 300, maxSegmentsPerMemory: 3, maxMemoriesPerOwner: 2, maxMembersPerMemory: 2 } });
    owner = h.agent('quota-owner'); // per-owner quotas: an owner no other test uses
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    await expectCode(m.grant(owner, h.agent('worker-9'), MemoryAccess.READ), 'quota_exceeded');
    await m.write(writer, 'a', 'x'.repeat(100), 0n);
    await m.write(writer, 'b', 'x', 0n);
    await expectCode(m.write(writer, 'c', 'x'.repeat(150), 0n), 'quota_exceeded'); // bytes
    await m.write(writer, 'c', 'x', 0n);
    await expectCode(m.write(writer, 'd', 'x', 0n), 'quota_exceeded'); // segments
    await m.write(writer, 'a', 'short', 1n); // replacing frees bytes
    const usage = (await h.call(owner, 'getMemory', { memoryId: m.memoryId })).usage;
    expect(usage.segments).toBe(3n);
    expect(usage.bytes).toBe(BigInt(3 * 40 + 5 + 1 + 1));
    await TestMemory.create(h, owner);
    await expectCode(TestMemory.create(h, owner), 'quota_exceeded');
  });

  it('rate-limits each agent with rate_limited, writing nothing for a refused call: no nonce, no audit entry, one sampled security event', async () => {
    await h.fresh({ rateLimit: { ratePerSecond: 1, burst: 3 } });
    const m = await TestMemory.create(h, owner);
    const req = { memoryId: m.memoryId };
    await h.call(owner, 'getMemory', req);
    await h.call(owner, 'getMemory', req);
    const nonces = async () => (await h.db.query('SELECT 1 FROM memory_request_nonces WHERE agent_id = $1', [owner.agentId])).length;
    const [audited, stored] = [(await h.auditEntries()).length, await nonces()];
    let refused: Record<string, string> = {};
    await expectCode(h.call(owner, 'getMemory', req, (md) => void (refused = { ...md })), 'rate_limited');
    for (let i = 0; i < 5; i++) await expectCode(h.call(owner, 'getMemory', req), 'rate_limited');
    expect((await h.auditEntries()).length).toBe(audited);
    expect(await nonces()).toBe(stored);
    expect(h.store.rateLimitedCalls).toBe(6);
    expect(h.events.filter((e) => e['code'] === 'rate_limited')).toEqual([expect.objectContaining({ event: 'security', agent: owner.agentId, refused: 1 })]);
    // The refused request had no effect and spent no nonce: sent again once the bucket has a token, it is served once.
    h.clock.advance(1000);
    await h.call(owner, 'getMemory', req, (md) => void Object.assign(md, refused));
    h.clock.advance(1000);
    await expectCode(h.call(owner, 'getMemory', req, (md) => void Object.assign(md, refused)), 'replay');
  });

  it('keeps a request nonce until timestamp + 2 × skew + 1 s: an instance whose clock is the skew behind the sweeper still refuses the replay', async () => {
    const m = await TestMemory.create(h, owner);
    let saved: Record<string, string> = {};
    const sent = h.clock.now;
    await h.call(owner, 'getMemory', { memoryId: m.memoryId }, (md) => void (saved = { ...md }));
    const rows = await h.db.query<{ expires_at_ms: unknown }>('SELECT expires_at_ms FROM memory_request_nonces WHERE agent_id = $1 ORDER BY expires_at_ms DESC LIMIT 1', [owner.agentId]);
    expect(Number(rows[0]!.expires_at_ms)).toBe(sent + 2 * 60_000 + 1000);
    // The sweeping instance's clock: past timestamp + skew + 1 s.
    h.clock.now = sent + 60_000 + 1001;
    await h.store.sweep();
    // An instance sharing the database whose clock is 60 s behind: the request's timestamp is within its window.
    h.clock.now = sent + 1001;
    await expectCode(h.call(owner, 'getMemory', { memoryId: m.memoryId }, (md) => void Object.assign(md, saved)), 'replay');
  });

  it('a writer cannot exhaust the epoch bound, and the owner can always revoke: a REVOKE brings an epoch beyond it', async () => {
    await h.fresh({ quotas: { maxEpochsPerMemory: 4 } });
    const admin = h.agent('admin-5');
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    await m.grant(owner, admin, MemoryAccess.ADMIN);
    await m.write(writer, 'pin', 'written at epoch 1', 0n); // keeps epoch 1, and so every later one, from being pruned
    // A writer starts an epoch only when one is required.
    await expectCode(m.rotate(writer, [owner, writer, admin]), 'permission_denied');
    // An admin may rotate at will, up to the bound.
    for (let i = 0; i < 3; i++) await m.rotate(admin, [owner, writer, admin]);
    await expectCode(m.rotate(admin, [owner, writer, admin]), 'quota_exceeded');
    // A required rotation passes the bound: a reader's grant expires, and the writer rotates.
    const expiry = h.clock.now + 5000;
    await m.grant(owner, reader, MemoryAccess.READ, expiry);
    h.clock.now = expiry;
    await m.rotate(writer, [owner, writer, admin]);
    const writerKey = m.epoch; // the newest key the writer will ever have
    // The owner revokes the admin, then the writer: each REVOKE's epoch is accepted beyond the bound.
    await m.rotate(owner, [owner, writer], admin);
    await m.rotate(owner, [owner], writer);
    expect(m.epoch.record.epoch).toBe(7);
    const epochs = await h.db.query('SELECT epoch FROM memory_epochs WHERE memory_id = $1', [m.memoryId]);
    expect(epochs.length).toBe(7);
    // The revoked writer is refused, holds no copy of the new epoch, and what it holds does not open what is written now.
    await expectCode(h.call(writer, 'readSegment', { memoryId: m.memoryId, segmentId: 'pin' }), 'permission_denied');
    await expectCode(h.call(writer, 'getMemory', { memoryId: m.memoryId }), 'permission_denied');
    const copies = await h.db.query<{ member_id: string }>('SELECT member_id FROM memory_key_wraps WHERE memory_id = $1', [m.memoryId]);
    expect(copies.map((r) => r.member_id)).toEqual([owner.agentId]);
    expect((await m.write(owner, 'after', 'after the writer left', 0n)).outcome.case).toBe('accepted');
    const after = await h.call(owner, 'readSegment', { memoryId: m.memoryId, segmentId: 'after' });
    expect(after.record.keyEpoch).toBe(7);
    expect(() => openWrite(h.crypto, m.memoryId, { ...writerKey, record: { ...writerKey.record, epoch: 7 } }, after.record, after.ciphertext)).toThrow();
    expect(await m.read(owner, 'after')).toBe('after the writer left');
    // Once no segment uses the old epochs, the next rotation prunes them and admins may rotate again.
    await m.write(owner, 'pin', 'rewritten', 1n);
    await m.rotate(owner, [owner]);
    expect((await h.db.query('SELECT epoch FROM memory_epochs WHERE memory_id = $1', [m.memoryId])).length).toBeLessThanOrEqual(2);
  });

  it('refuses a membership entry or an epoch for another log version before reading the log, and reads it once otherwise', async () => {
    // The store's database, counting the log rows its transactions read.
    let logRows = 0;
    const counting = (tx: Queryable): Queryable => ({
      query: async <R,>(sql: string, params?: readonly unknown[]) => {
        const rows = await tx.query<R>(sql, params);
        if (sql.includes('FROM memory_membership_log')) logRows += rows.length;
        return rows;
      },
      exec: (sql: string) => tx.exec(sql),
    });
    const database = new Proxy(h.db, {
      get: (target, key) => {
        if (key === 'transaction') return <T,>(fn: (tx: Queryable) => Promise<T>) => target.transaction((tx) => fn(counting(tx)));
        const value: unknown = Reflect.get(target, key, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    await h.fresh({ database });
    const m = await TestMemory.create(h, owner);
    for (let i = 0; i < 120; i++) await m.grant(owner, reader, i % 2 === 0 ? MemoryAccess.READ : MemoryAccess.WRITE);
    expect(m.log.version).toBe(121n);
    const next = changeEntry(h.crypto, owner, m.log, { kind: 'grant', memberId: writer.agentId, access: MemoryAccess.WRITE, publicKey: writer.publicKey, expiresAtMs: 0 }, h.clock.now);
    const wraps = [wrapKey(h.crypto, owner, m.memoryId, m.epoch, { memberId: writer.agentId, publicKey: writer.publicKey })];
    const read = async (call: Promise<unknown>, code?: RpcErrorCode): Promise<number> => {
      logRows = 0;
      if (code === undefined) await call;
      else await expectCode(call, code);
      return logRows;
    };
    const stale = clone(MembershipEntrySchema, next);
    stale.version = 60n;
    const ahead = clone(MembershipEntrySchema, next);
    ahead.version = 123n;
    const forged = clone(MembershipEntrySchema, next);
    forged.signature = h.crypto.ed25519.sign(new Uint8Array(1), owner.signingKey);
    const oldEpoch = newEpoch(h.crypto, owner, m.memoryId, { version: 60n, hash: m.log.hashAt(60n)! }, m.epoch, h.clock.now);
    // A stale entry reads the one stored entry it could be a retry of; the others read nothing of the log.
    expect(await read(h.call(owner, 'updateMembership', { memoryId: m.memoryId, entry: stale, memberCertificate: writer.certificate, wraps }), 'conflict')).toBe(1);
    expect(await read(h.call(owner, 'updateMembership', { memoryId: m.memoryId, entry: ahead, memberCertificate: writer.certificate, wraps }), 'conflict')).toBe(0);
    expect(await read(h.call(owner, 'updateMembership', { memoryId: m.memoryId, entry: forged, memberCertificate: writer.certificate, wraps }), 'bad_signature')).toBe(0);
    expect(await read(h.call(owner, 'rotateEpoch', { memoryId: m.memoryId, epoch: oldEpoch.record, wraps: [] }), 'conflict')).toBe(0);
    // The call that needs the log reads it once.
    expect(await read(h.call(owner, 'updateMembership', { memoryId: m.memoryId, entry: next, memberCertificate: writer.certificate, wraps }))).toBe(121);
  });

  it('counts key copies and matches them to the members before checking any of their signatures: a flood of copies costs no signature check', async () => {
    // The store's crypto, counting the signatures it checks.
    let verified = 0;
    const ed25519 = { ...h.crypto.ed25519, verify: (...args: Parameters<typeof h.crypto.ed25519.verify>) => (verified++, h.crypto.ed25519.verify(...args)) };
    await h.fresh({ crypto: { ...h.crypto, ed25519 } });
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, reader, MemoryAccess.READ);
    const next = newEpoch(h.crypto, owner, m.memoryId, { version: m.log.version, hash: m.log.head }, m.epoch, h.clock.now);
    const copy = (to: TestAgent) => wrapKey(h.crypto, owner, m.memoryId, next, { memberId: to.agentId, publicKey: to.publicKey });
    const checks = async (wraps: unknown[], code?: RpcErrorCode): Promise<number> => {
      verified = 0;
      const call = h.call(owner, 'rotateEpoch', { memoryId: m.memoryId, epoch: next.record, wraps });
      if (code === undefined) await call;
      else await expectCode(call, code);
      return verified;
    };
    // One copy short of the members: refused after the request's own checks (caller, certificate, epoch record).
    const base = await checks([copy(owner)], 'conflict');
    // The same copy as many times as a memory can have members: refused as cheaply, none of the copies verified.
    expect(await checks(Array.from({ length: MAX_MEMBERS }, () => copy(owner)), 'conflict')).toBe(base);
    // More copies than a memory can have members: refused before the transaction and the epoch record's check.
    expect(await checks(Array.from({ length: MAX_MEMBERS + 1 }, () => copy(owner)), 'malformed')).toBeLessThan(base);
    // The right members: each copy is verified once, and the epoch is installed.
    expect(await checks([copy(owner), copy(reader)])).toBe(base + 2);
  });

  it('keeps the end of the membership log for revocations: grants stop at entry 3584 (admins) and 3840 (the owner)', async () => {
    const admin = h.agent('admin-5');
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, admin, MemoryAccess.ADMIN);
    await fillLog(h, m, owner, reader, ADMIN_GRANT_LIMIT);
    await expectCode(m.grant(admin, writer, MemoryAccess.WRITE), 'quota_exceeded');
    await m.grant(owner, writer, MemoryAccess.WRITE); // the owner's grants go on
    await fillLog(h, m, owner, reader, GRANT_LIMIT);
    await expectCode(m.grant(owner, outsider, MemoryAccess.READ), 'quota_exceeded');
    // Every member can still be removed.
    await m.rotate(owner, [owner, reader, writer].sort((a, b) => (a.agentId < b.agentId ? -1 : 1)), admin);
    await m.rotate(owner, [owner, reader].sort((a, b) => (a.agentId < b.agentId ? -1 : 1)), writer);
    await m.rotate(owner, [owner], reader);
    expect(m.log.version).toBe(BigInt(GRANT_LIMIT + 3));
    expect((await h.call(owner, 'getMemory', { memoryId: m.memoryId, afterVersion: BigInt(GRANT_LIMIT) })).memory.membershipVersion).toBe(m.log.version);
  });

  it('expires segments and memories on time and sweeps them, keeping usage exact', async () => {
    owner = h.agent('sweep-owner'); // its owner totals are checked below
    const m = await TestMemory.create(h, owner);
    await m.write(owner, 'scratch', 'temporary', 0n, h.clock.now + 10_000);
    await m.write(owner, 'plan', 'kept', 0n);
    h.clock.advance(10_000);
    await expectCode(h.call(owner, 'readSegment', { memoryId: m.memoryId, segmentId: 'scratch' }), 'not_found');
    expect(await h.store.sweep()).toEqual(expect.objectContaining({ segments: 1, memories: 0 }));
    const usage = (await h.call(owner, 'getMemory', { memoryId: m.memoryId })).usage;
    expect([usage.segments, usage.bytes, usage.ownerSegments]).toEqual([1n, 44n, 1n]);
    const short = await TestMemory.create(h, owner, h.clock.now + 5_000);
    await short.write(owner, 'x', 'y', 0n);
    h.clock.advance(5_000);
    await expectCode(h.call(owner, 'getMemory', { memoryId: short.memoryId }), 'permission_denied');
    expect(await h.store.sweep()).toEqual(expect.objectContaining({ memories: 1 }));
    expect(await h.db.query('SELECT 1 FROM memory_segments WHERE memory_id = $1', [short.memoryId])).toEqual([]);
    const owners = await h.db.query<Record<string, unknown>>('SELECT memories, used_segments FROM memory_owners WHERE owner_id = $1', [owner.agentId]);
    expect(owners.map((r) => [Number(r['memories']), Number(r['used_segments'])])).toEqual([[1, 1]]);
  });

  // §18.5 "A key copy or back link that does not open": a member (a writer in a required rotation, or any admin)
  // hands the others a key the store cannot check. Real MemoryClients over gRPC on loopback, as the gateway serves.
  describe('a key copy or back link that does not open: a member’s fault, detected, attributed and repaired by a revocation (§18.5)', () => {
    it('a writer’s key copies do not open: reads and writes that need it fail naming the writer, the owner revokes it with a cut, and the memory works again', async () => {
      const net = await serve(h);
      try {
        const attacker = writer;
        const honest = h.agent('worker-5');
        const temp = h.agent('worker-6');
        const ownerC = net.client(owner);
        const honestC = net.client(honest);
        const attackerC = net.client(attacker);
        const { memoryId } = await ownerC.create();
        await ownerC.grant(memoryId, attacker.agentId, 'write', { certificate: attacker.certificate });
        await ownerC.grant(memoryId, honest.agentId, 'write', { certificate: honest.certificate });
        await ownerC.grant(memoryId, temp.agentId, 'read', { certificate: temp.certificate, expiresAtMs: h.clock.now + 10_000 });
        await ownerC.write(memoryId, 'history', 'written at epoch 1', { previousVersion: 0 });
        expect(new TextDecoder().decode((await honestC.read(memoryId, 'history')).data)).toBe('written at epoch 1'); // honest caches epoch 1's key
        h.clock.advance(20_000); // temp's grant expires: a rotation is required, and any writer may make it

        await faultyRotation(h, attacker, memoryId, [owner, attacker, honest], { badCopiesFor: [owner, honest], unopenable: true });
        await attackerC.write(memoryId, 'attack', 'written at epoch 2', { previousVersion: 0 });

        // The answer is adopted (log, epochs); the fault is the attacker's, and only what needs epoch 2's key fails.
        const info = await ownerC.get(memoryId);
        expect(info.currentEpoch).toBe(2);
        expect(info.keyFaults).toEqual([{ epoch: 2, memberId: attacker.agentId, kind: 'keyCopy', proven: true }]);
        const needKey: [string, () => Promise<unknown>][] = [
          ['owner writes', () => ownerC.write(memoryId, 'history', 'v2', { previousVersion: 1 })],
          ['owner reads epoch 2', () => ownerC.read(memoryId, 'attack')],
          ['owner rotates', () => ownerC.rotate(memoryId)],
          ['honest writes', () => honestC.write(memoryId, 'notes', 'n', { previousVersion: 0 })],
        ];
        for (const [what, op] of needKey) {
          const e = await memoryCode(op(), 'decrypt_failed');
          expect(e.message, what).toContain(`the key copy of epoch 2 that member ${attacker.agentId} made for this agent does not open`);
          expect(e.message).toContain(`the owner or an admin can revoke ${attacker.agentId}`);
        }
        // What this client can still reach reads: its cached epoch-1 key.
        expect(new TextDecoder().decode((await ownerC.read(memoryId, 'history')).data)).toBe('written at epoch 1');
        // A fresh client holds no key at all: epoch 1 is reached only through epoch 2.
        const freshBefore = net.client(owner);
        const e1 = await memoryCode(freshBefore.read(memoryId, 'history'), 'decrypt_failed');
        expect(e1.message).toContain('the key of epoch 1 (reached through epoch 2)');
        expect(e1.message).toContain(`the owner or an admin can revoke ${attacker.agentId}`);

        // The owner holds no key of the current epoch: its revocation of the attacker is a cut.
        const revoked = await ownerC.revoke(memoryId, attacker.agentId);
        expect(revoked.currentEpoch).toBe(3);
        const epochs = (await h.call(owner, 'getMemory', { memoryId })).epochs as EpochRecord[];
        expect(epochs.find((r) => r.epoch === 3)!.backLink.length).toBe(0);
        await memoryCode(attackerC.write(memoryId, 'attack', 'still here?', { previousVersion: 1 }), 'permission_denied');

        // The owner and the honest member write and read under the new epoch.
        await ownerC.write(memoryId, 'next', 'after the cut', { previousVersion: 0 });
        await honestC.write(memoryId, 'notes', 'honest, after the cut', { previousVersion: 0 });
        expect(new TextDecoder().decode((await honestC.read(memoryId, 'next')).data)).toBe('after the cut');
        expect(new TextDecoder().decode((await ownerC.read(memoryId, 'notes')).data)).toBe('honest, after the cut');
        // Before the cut: readable to clients that kept an older key, not to a fresh one.
        expect(new TextDecoder().decode((await ownerC.read(memoryId, 'history')).data)).toBe('written at epoch 1');
        expect(new TextDecoder().decode((await honestC.read(memoryId, 'history')).data)).toBe('written at epoch 1');
        const fresh = net.client(owner);
        expect(new TextDecoder().decode((await fresh.read(memoryId, 'next')).data)).toBe('after the cut');
        expect((await memoryCode(fresh.read(memoryId, 'history'), 'decrypt_failed')).message).toContain('before the cut at epoch 3');
        expect((await memoryCode(fresh.read(memoryId, 'attack'), 'decrypt_failed')).message).toContain('before the cut at epoch 3');

        // Holding the current key, the owner's next revocation links back as always (no cut), and a fresh client reads through it.
        await ownerC.revoke(memoryId, temp.agentId);
        const e4 = ((await h.call(owner, 'getMemory', { memoryId })).epochs as EpochRecord[]).find((r) => r.epoch === 4)!;
        expect(e4.backLink.length).toBe(BACK_LINK_BYTES);
        const fresh2 = net.client(honest);
        expect(new TextDecoder().decode((await fresh2.read(memoryId, 'next')).data)).toBe('after the cut');
        expect((await memoryCode(fresh2.read(memoryId, 'history'), 'decrypt_failed')).message).toContain('before the cut at epoch 3');
      } finally {
        net.close();
      }
    });

    it('a writer’s back link opens to a random key: detected when the epoch is loaded, attributed to its creator, repaired by a revocation that links back', async () => {
      const net = await serve(h);
      try {
        const attacker = writer;
        const honest = h.agent('worker-5');
        const temp = h.agent('worker-6');
        const ownerC = net.client(owner);
        const honestC = net.client(honest);
        const attackerC = net.client(attacker);
        const { memoryId } = await ownerC.create();
        await ownerC.grant(memoryId, attacker.agentId, 'write', { certificate: attacker.certificate });
        await ownerC.grant(memoryId, honest.agentId, 'write', { certificate: honest.certificate });
        await ownerC.grant(memoryId, temp.agentId, 'read', { certificate: temp.certificate, expiresAtMs: h.clock.now + 10_000 });
        await ownerC.write(memoryId, 'history', 'written at epoch 1', { previousVersion: 0 });
        h.clock.advance(20_000);
        // Every copy of epoch 2 opens; its back link opens to a random key, not epoch 1's. That is not provably the
        // attacker's (a store could serve another record of epoch 1 than the one the link was made for), so it is
        // reported as possibly the attacker's: the repair is the same.
        await faultyRotation(h, attacker, memoryId, [owner, attacker, honest], { badBackLink: true });
        const backLinkFault = `the back link of epoch 2, made by member ${attacker.agentId}, does not open to the key of epoch 1: either ${attacker.agentId} made a bad back link or the store served another record of epoch 1`;

        // Detected at load, by a client that never needed epoch 1, and attributed to the epoch's creator.
        const info = await honestC.get(memoryId);
        expect(info.currentEpoch).toBe(2);
        expect(info.keyFaults).toEqual([{ epoch: 2, memberId: attacker.agentId, kind: 'backLink', proven: false }]);
        // Epoch 2's key matches its commitment: it is kept, and the honest member writes and reads under it.
        expect((await honestC.write(memoryId, 'notes', 'honest, at epoch 2', { previousVersion: 0 })).version).toBe(1n);
        const notes = await honestC.read(memoryId, 'notes');
        expect(notes.keyEpoch).toBe(2);
        expect(new TextDecoder().decode(notes.data)).toBe('honest, at epoch 2');
        await attackerC.write(memoryId, 'attack', 'written at epoch 2', { previousVersion: 0 });
        expect(new TextDecoder().decode((await honestC.read(memoryId, 'attack')).data)).toBe('written at epoch 2');
        // Only what lies before it is out of reach, naming the attacker: for this client and for a fresh one.
        for (const c of [honestC, net.client(honest), net.client(owner)]) {
          const r = await memoryCode(c.read(memoryId, 'history'), 'decrypt_failed');
          expect(r.message).toContain('the key of epoch 1 (reached through epoch 2)');
          expect(r.message).toContain(backLinkFault);
          expect(r.message).toContain(`the owner or an admin can revoke ${attacker.agentId} if it is at fault`);
        }
        // The owner kept epoch 1's key: it still reads the epoch-1 segment, and reads and writes under epoch 2.
        expect(new TextDecoder().decode((await ownerC.read(memoryId, 'history')).data)).toBe('written at epoch 1');
        expect(new TextDecoder().decode((await ownerC.read(memoryId, 'notes')).data)).toBe('honest, at epoch 2');
        expect((await ownerC.get(memoryId)).keyFaults).toEqual([{ epoch: 2, memberId: attacker.agentId, kind: 'backLink', proven: false }]);

        // Repair: the owner holds the current key, so its revocation of the attacker links back (no cut).
        const revoked = await ownerC.revoke(memoryId, attacker.agentId);
        expect(revoked.currentEpoch).toBe(3);
        const e3 = ((await h.call(owner, 'getMemory', { memoryId })).epochs as EpochRecord[]).find((x) => x.epoch === 3)!;
        expect(e3.backLink.length).toBe(BACK_LINK_BYTES);
        await memoryCode(attackerC.write(memoryId, 'attack', 'still here?', { previousVersion: 1 }), 'permission_denied');

        // New writes and reads work for the owner and the honest member; epoch 2 stays readable through epoch 3's back link.
        await ownerC.write(memoryId, 'next', 'after the revocation', { previousVersion: 0 });
        await honestC.write(memoryId, 'notes', 'honest, at epoch 3', { previousVersion: 1 });
        expect(new TextDecoder().decode((await honestC.read(memoryId, 'next')).data)).toBe('after the revocation');
        expect(new TextDecoder().decode((await ownerC.read(memoryId, 'notes')).data)).toBe('honest, at epoch 3');
        expect((await honestC.get(memoryId)).currentEpoch).toBe(3);
        const fresh = net.client(honest);
        expect(new TextDecoder().decode((await fresh.read(memoryId, 'attack')).data)).toBe('written at epoch 2');
        // The back link of epoch 2 is still bad: a fresh client still cannot reach the epoch-1 segment...
        const stillBad = await memoryCode(fresh.read(memoryId, 'history'), 'decrypt_failed');
        expect(stillBad.message).toContain('the key of epoch 1 (reached through epoch 2)');
        expect(stillBad.message).toContain(backLinkFault);
        // ...until the owner, who still reads it, rewrites it under the current epoch.
        expect(new TextDecoder().decode((await ownerC.read(memoryId, 'history')).data)).toBe('written at epoch 1');
        await ownerC.write(memoryId, 'history', 'rewritten at epoch 3', { previousVersion: 1 });
        expect(new TextDecoder().decode((await fresh.read(memoryId, 'history')).data)).toBe('rewritten at epoch 3');
        expect(new TextDecoder().decode((await net.client(owner).read(memoryId, 'history')).data)).toBe('rewritten at epoch 3');
      } finally {
        net.close();
      }
    });

    it('a client that holds the current key revokes with a normal back link, and the member it repairs reads everything again', async () => {
      const net = await serve(h);
      try {
        const admin = h.agent('admin-7');
        const honest = h.agent('worker-5');
        const ownerC = net.client(owner);
        const honestC = net.client(honest);
        const adminC = net.client(admin);
        const { memoryId } = await ownerC.create();
        await ownerC.grant(memoryId, admin.agentId, 'admin', { certificate: admin.certificate });
        await ownerC.grant(memoryId, honest.agentId, 'read', { certificate: honest.certificate });
        await ownerC.write(memoryId, 'history', 'written at epoch 1', { previousVersion: 0 });
        // An admin rotates at will, handing only the honest member a copy of a random key (not provably the admin's:
        // a store could pair a genuine copy with another record of the epoch).
        await faultyRotation(h, admin, memoryId, [owner, admin, honest], { badCopiesFor: [honest] });
        await adminC.write(memoryId, 'by-admin', 'written at epoch 2', { previousVersion: 0 });
        expect((await honestC.get(memoryId)).keyFaults).toEqual([{ epoch: 2, memberId: admin.agentId, kind: 'keyCopy', proven: false }]);
        const e = await memoryCode(honestC.read(memoryId, 'by-admin'), 'decrypt_failed');
        expect(e.message).toContain(`either ${admin.agentId} sealed another key, or the store paired the copy with another record of epoch 2`);
        expect(e.message).toContain(`the owner or an admin can revoke ${admin.agentId} if it is at fault`);
        // The owner's copy opened: its revocation links back to epoch 2 (no cut).
        expect((await ownerC.get(memoryId)).keyFaults).toEqual([]);
        await ownerC.revoke(memoryId, admin.agentId);
        const e3 = ((await h.call(owner, 'getMemory', { memoryId })).epochs as EpochRecord[]).find((r) => r.epoch === 3)!;
        expect(e3.backLink.length).toBe(BACK_LINK_BYTES);
        // The honest member's copy of epoch 3 opens, and its back links reach everything before.
        expect(new TextDecoder().decode((await honestC.read(memoryId, 'by-admin')).data)).toBe('written at epoch 2');
        expect(new TextDecoder().decode((await net.client(honest).read(memoryId, 'history')).data)).toBe('written at epoch 1');
        expect((await honestC.get(memoryId)).keyFaults).toEqual([]);
      } finally {
        net.close();
      }
    });

    it('takes an epoch without a back link (a cut) only with a REVOKE: RotateEpoch and a grant carrying one are malformed', async () => {
      const m = await TestMemory.create(h, owner);
      await m.grant(owner, writer, MemoryAccess.WRITE);
      await m.grant(owner, reader, MemoryAccess.READ);
      const cut = (by: TestAgent, membership: { version: bigint; hash: Uint8Array }) => newCutEpoch(h.crypto, by, m.memoryId, membership, m.epoch.record.epoch + 1, h.clock.now);
      const copies = (by: TestAgent, e: EpochKey, members: TestAgent[]) => members.map((x) => wrapKey(h.crypto, by, m.memoryId, e, { memberId: x.agentId, publicKey: x.publicKey }));
      // RotateEpoch never takes a cut, from an admin at will or from anyone.
      const atWill = cut(owner, { version: m.log.version, hash: m.log.head });
      await expectCode(h.call(owner, 'rotateEpoch', { memoryId: m.memoryId, epoch: atWill.record, wraps: copies(owner, atWill, [owner, writer, reader]) }), 'malformed');
      // Nor a grant (a non-REVOKE update) carrying one.
      const grant = changeEntry(h.crypto, owner, m.log, { kind: 'grant', memberId: outsider.agentId, access: MemoryAccess.READ, publicKey: outsider.publicKey, expiresAtMs: 0 }, h.clock.now);
      const withGrant = cut(owner, { version: grant.version, hash: membershipEntryHash(h.crypto, m.memoryId, grant) });
      await expectCode(
        h.call(owner, 'updateMembership', { memoryId: m.memoryId, entry: grant, memberCertificate: outsider.certificate, epoch: withGrant.record, wraps: copies(owner, withGrant, [outsider]) }),
        'malformed',
      );
      // A REVOKE may carry one (the epoch made for its version, by its signer)...
      const revoke = changeEntry(h.crypto, owner, m.log, { kind: 'revoke', memberId: reader.agentId, publicKey: reader.publicKey }, h.clock.now);
      const withRevoke = cut(owner, { version: revoke.version, hash: membershipEntryHash(h.crypto, m.memoryId, revoke) });
      const res = await h.call(owner, 'updateMembership', { memoryId: m.memoryId, entry: revoke, epoch: withRevoke.record, wraps: copies(owner, withRevoke, [owner, writer]) });
      expect(res.currentEpoch).toBe(2);
      m.log.append(revoke);
      m.epoch = withRevoke;
      const state = await h.call(writer, 'getMemory', { memoryId: m.memoryId });
      expect(state.epochs.at(-1).backLink.length).toBe(0);
      await m.write(writer, 'plan', 'after the cut', 0n);
      expect(await m.read(owner, 'plan')).toBe('after the cut');
      // ...but a RotateEpoch for the REVOKE's own version, by its signer, still may not (it would verify as the REVOKE's epoch).
      await m.grant(owner, reader, MemoryAccess.READ);
      await m.rotate(owner, [owner, writer], reader); // a REVOKE by the owner is now the head
      const afterRevoke = cut(owner, { version: m.log.version, hash: m.log.head });
      await expectCode(h.call(owner, 'rotateEpoch', { memoryId: m.memoryId, epoch: afterRevoke.record, wraps: copies(owner, afterRevoke, [owner, writer]) }), 'malformed');
      const live = (await h.call(owner, 'getMemory', { memoryId: m.memoryId })).epochs as EpochRecord[];
      expect(live.at(-1)!.epoch).toBe(3);
      expect(live.at(-1)!.backLink.length).toBe(BACK_LINK_BYTES);
    });
  });

  it('stores no plaintext and no key: every stored byte is ciphertext, a digest, a signature or public', async () => {
    const m = await TestMemory.create(h, owner);
    await m.grant(owner, writer, MemoryAccess.WRITE);
    const secret = 'TOP-SECRET-launch-codes-4815162342';
    await m.write(writer, 'plan', secret, 0n);
    const needles = [Buffer.from(secret), Buffer.from(m.epoch.key.unsafeBytes())];
    const tables = await h.db.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND (table_name LIKE 'memory%' OR table_name = 'memories')",
    );
    expect(tables.length).toBeGreaterThanOrEqual(9);
    let scanned = 0;
    for (const { table_name } of tables) {
      for (const row of await h.db.query<Record<string, unknown>>(`SELECT * FROM ${table_name}`)) {
        for (const value of Object.values(row)) {
          const b = value instanceof Uint8Array ? Buffer.from(value) : Buffer.from(String(value));
          scanned += b.length;
          for (const needle of needles) expect(b.includes(needle), `${table_name} holds a secret`).toBe(false);
        }
      }
    }
    expect(scanned).toBeGreaterThan(1000);
  });
});

/**
 * Appends owner-signed grants of `member` to the log until it reaches `version`, written straight to the
 * store's tables as it writes them (thousands of calls would take minutes); the store then reads them as its own.
 */
async function fillLog(h: Harness, m: TestMemory, owner: TestAgent, member: TestAgent, version: number): Promise<void> {
  await h.db.transaction(async (tx) => {
    while (m.log.version < BigInt(version)) {
      const e = changeEntry(h.crypto, owner, m.log, { kind: 'grant', memberId: member.agentId, access: MemoryAccess.READ, publicKey: member.publicKey, expiresAtMs: 0 }, h.clock.now);
      m.log.append(e);
      await tx.query('INSERT INTO memory_membership_log (memory_id, version, entry, entry_hash) VALUES ($1, $2, $3, $4)', [m.memoryId, e.version.toString(), toBinary(MembershipEntrySchema, e), m.log.head]);
    }
    await tx.query('UPDATE memories SET membership_version = $2, membership_head = $3 WHERE memory_id = $1', [m.memoryId, m.log.version.toString(), m.log.head]);
    await tx.query(
      `INSERT INTO memory_members (memory_id, member_id, access, public_key, expires_at_ms, certificate) VALUES ($1, $2, $3, $4, 0, $5)
       ON CONFLICT (memory_id, member_id) DO UPDATE SET access = EXCLUDED.access`,
      [m.memoryId, member.agentId, MemoryAccess.READ, member.publicKey, toBinary(AgentCertificateSchema, member.certificate)],
    );
  });
}

/** The writer's key of the current epoch, opened from its copy (what a member has). */
async function freshKey(h: Harness, m: TestMemory, who: TestAgent): Promise<EpochKey> {
  const state = await h.call(who, 'getMemory', { memoryId: m.memoryId });
  return openWrap(h.crypto, who, m.memoryId, state.wrap, state.epochs.at(-1));
}

/** The current store served over gRPC on loopback (as the gateway serves it), and MemoryClients of it, closed together. */
async function serve(h: Harness): Promise<{ client(agent: TestAgent): MemoryClient; close(): void }> {
  const store = h.store;
  const server = await serveOnLoopback((s) => addService(s, MemoryService, store), { 'grpc.max_receive_message_length': MAX_SEGMENT_CIPHERTEXT_BYTES + 65_536 });
  const clients: MemoryClient[] = [];
  return {
    client(agent) {
      const c = new MemoryClient({ crypto: h.crypto, identity: agent, address: server.address, serviceId: SERVICE_ID, trustBundle: h.trustBundle, clock: h.clock.fn, retryUnavailableMs: 0 });
      clients.push(c);
      return c;
    },
    close() {
      for (const c of clients) c.close();
      server.close();
    },
  };
}

/**
 * `by` starts the next epoch by hand, as a member at fault would (the store cannot check a sealed key): the
 * copies for `badCopiesFor` seal a random key instead of the epoch's, or (`badBackLink`) the back link seals a
 * random key instead of the current one.
 */
/**
 * `by` rotates with faults: `badCopiesFor` get a copy of a random key (with `unopenable`: a copy signed as sealed to
 * their key but sealed to another, which does not open), and with `badBackLink` the back link seals a random key.
 */
async function faultyRotation(h: Harness, by: TestAgent, memoryId: string, members: TestAgent[], fault: { badCopiesFor?: TestAgent[]; unopenable?: boolean; badBackLink?: boolean }): Promise<void> {
  const res = await h.call(by, 'getMemory', { memoryId, afterVersion: 0n });
  const entries = res.entries as MembershipEntry[];
  const log = Membership.create(h.crypto, entries[0]!, memoryId);
  for (const e of entries.slice(1)) log.append(e);
  const current = (res.epochs as EpochRecord[]).find((r) => r.epoch === res.memory.currentEpoch)!;
  const currentKey = openWrap(h.crypto, by, memoryId, res.wrap, current);
  const random = h.crypto.randomKey('aead');
  const next = newEpoch(h.crypto, by, memoryId, { version: log.version, hash: log.head }, fault.badBackLink === true ? { record: current, key: random } : currentKey, h.clock.now);
  const wraps = members.map((m) => {
    if (fault.badCopiesFor?.includes(m) !== true) return wrapKey(h.crypto, by, memoryId, next, { memberId: m.agentId, publicKey: m.publicKey });
    if (fault.unopenable !== true) return wrapKey(h.crypto, by, memoryId, { record: next.record, key: random }, { memberId: m.agentId, publicKey: m.publicKey });
    const copy = wrapKey(h.crypto, by, memoryId, next, { memberId: m.agentId, publicKey: h.crypto.ed25519.generateKeyPair().publicKey });
    copy.memberPublicKey = m.publicKey;
    copy.signature = h.crypto.ed25519.sign(keyWrapLayout(h.crypto, memoryId, copy), by.signingKey);
    return copy;
  });
  try {
    await h.call(by, 'rotateEpoch', { memoryId, epoch: next.record, wraps });
  } finally {
    for (const k of [currentKey.key, next.key, random]) k.wipe();
  }
}

/** Awaits `p` and insists on a MemoryError with `code`. */
async function memoryCode(p: Promise<unknown>, code: RpcErrorCode): Promise<MemoryError> {
  let thrown: unknown;
  try {
    await p;
  } catch (error) {
    thrown = error;
  }
  expect(isMemoryError(thrown), `expected MemoryError ${code}, got ${String(thrown)}`).toBe(true);
  expect((thrown as MemoryError).code, (thrown as Error).message).toBe(code);
  return thrown as MemoryError;
}
