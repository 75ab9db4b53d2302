// Boundary validation of every public function (wrong types → AuditError
// `malformed`, never a raw TypeError), entry rules, encodings, tree heads,
// proof checks against heads, and the writer's own rules.
import { AuditMessageSchema, clone, create, MessageType, toBinary, type AuditMessage } from '@parley/proto';
import { toHex } from '@parley/crypto-core';
import { describe, expect, it } from 'vitest';
import {
  AUDIT_ERROR_CODES,
  AuditError,
  AuditLog,
  assertEntry,
  assertEntryFields,
  assertSignedTreeHead,
  BREAK_REASONS,
  checkConsistency,
  checkInclusion,
  consistencyProofToJson,
  decodeEntry,
  encodeEntry,
  entryHash,
  entryLayout,
  entryProblem,
  inclusionProofToJson,
  isAuditError,
  leafData,
  leafHash,
  MAX_ENTRY_BYTES,
  MerkleTree,
  merkleHasher,
  proofFromJson,
  RootAccumulator,
  signCheckpoint,
  signEntry,
  signTreeHead,
  treeFromEntries,
  treeHeadFromJson,
  treeHeadToJson,
  verifyEntrySignature,
  verifyTreeHead,
  writerKeyId,
  WriterKeys,
  type AuditStore,
} from '../src/index.js';
import { buildChain, crypto, fieldsFor, writerA, writerB, WRONG } from './fixtures.js';

/** Asserts `fn` throws an AuditError with `code` (and nothing else, in particular no TypeError). */
function throwsAudit(fn: () => unknown, code = 'malformed'): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'should throw').toBeInstanceOf(AuditError);
  expect((caught as AuditError).code).toBe(code);
}

/** An in-memory AuditStore (tests of the writer that need no backend). */
function memoryStore(entries: AuditMessage[] = []): AuditStore {
  return {
    kind: 'memory',
    size: async () => entries.length,
    append: async (e) => void entries.push(e),
    readEncoded: async function* (from, to) {
      for (const e of entries.slice(from, to)) yield encodeEntry(e);
    },
    read: async function* (from, to) {
      yield* entries.slice(from, to);
    },
    close: async () => undefined,
  };
}

describe('errors', () => {
  it('one class, closed codes, code in the message, cause kept', () => {
    const cause = new Error('x');
    const e = new AuditError('removed', 'gap', { cause });
    expect(e.message).toBe('[removed] gap');
    expect(e.cause).toBe(cause);
    expect(isAuditError(e, 'removed')).toBe(true);
    expect(isAuditError(e, 'modified')).toBe(false);
    expect(isAuditError(new Error('x'))).toBe(false);
    for (const reason of BREAK_REASONS) expect(AUDIT_ERROR_CODES).toContain(reason);
  });
});

describe('entries', () => {
  const [e0] = buildChain(1);
  const entry = e0!;

  it('entryProblem accepts a valid entry and names each broken rule', () => {
    expect(entryProblem(entry)).toBeUndefined();
    const cases: [keyof AuditMessage, unknown, RegExp][] = [
      ['index', -1n, /index/],
      ['index', 2n ** 53n, /index/],
      ['index', 3, /index/],
      ['messageHash', new Uint8Array(31), /message_hash/],
      ['senderId', '', /sender_id/],
      ['senderId', 'A', /sender_id/],
      ['senderId', 'x'.repeat(129), /sender_id/],
      ['recipientId', '-start', /recipient_id/],
      ['timestampMs', -1n, /timestamp_ms/],
      ['timestampMs', 5, /timestamp_ms/],
      ['messageType', 99, /message_type/],
      ['messageType', '1', /message_type/],
      ['outcome', '', /outcome/],
      ['outcome', 'x'.repeat(65), /outcome/],
      ['outcome', 'Routed', /outcome/],
      ['outcome', 'routed ok', /outcome/],
      ['previousHash', new Uint8Array(0), /previous_hash/],
      ['signerKeyId', new Uint8Array(32), /signer_key_id/],
      ['signature', new Uint8Array(63), /signature/],
    ];
    for (const [field, value, re] of cases) {
      const bad = { ...entry, [field]: value };
      expect(entryProblem(bad), `${String(field)}=${String(value)}`).toMatch(re);
      throwsAudit(() => assertEntry(bad));
      throwsAudit(() => entryLayout(bad as AuditMessage));
      throwsAudit(() => encodeEntry(bad as AuditMessage));
      expect(verifyEntrySignature(crypto, bad as AuditMessage, WriterKeys.from(crypto, writerA.publicKey))).toBe(false);
    }
    for (const bad of WRONG) {
      expect(entryProblem(bad)).toBeDefined();
      throwsAudit(() => entryHash(crypto, bad as AuditMessage));
      throwsAudit(() => leafHash(crypto, bad as AuditMessage));
      throwsAudit(() => leafData(bad as AuditMessage));
      throwsAudit(() => entryHash(bad as never, entry));
    }
    expect(entryProblem({ ...entry, outcome: 'a'.repeat(64) })).toBeUndefined();
    expect(entryProblem({ ...entry, outcome: 'rejected:replay.v1_x-2' })).toBeUndefined();
  });

  it('decodeEntry refuses garbage, oversize input and fields v1 does not define', () => {
    expect(toHex(encodeEntry(decodeEntry(encodeEntry(entry))))).toBe(toHex(encodeEntry(entry)));
    throwsAudit(() => decodeEntry(new Uint8Array([0xff, 0xff, 0xff])));
    throwsAudit(() => decodeEntry(new Uint8Array(MAX_ENTRY_BYTES + 1)));
    throwsAudit(() => decodeEntry(new Uint8Array(0))); // all fields empty: not a valid entry
    for (const bad of WRONG) if (!(bad instanceof Uint8Array)) throwsAudit(() => decodeEntry(bad as Uint8Array));
    const withUnknown = new Uint8Array([...encodeEntry(entry), 0x58, 0x01]); // field 11, varint 1
    throwsAudit(() => decodeEntry(withUnknown));
    const unknownMessage = clone(AuditMessageSchema, entry);
    (unknownMessage as { $unknown?: unknown }).$unknown = [{ no: 11, wireType: 0, data: new Uint8Array([1]) }];
    throwsAudit(() => encodeEntry(unknownMessage));
    expect(toBinary(AuditMessageSchema, create(AuditMessageSchema, {})).length).toBe(0);
  });

  it('signEntry validates everything it is given', () => {
    const good = { ...fieldsFor(0), index: 0, previousHash: new Uint8Array(32) };
    expect(verifyEntrySignature(crypto, signEntry(crypto, writerA, good), WriterKeys.from(crypto, writerA.publicKey))).toBe(true);
    expect(verifyEntrySignature(crypto, signEntry(crypto, writerA, good), WriterKeys.from(crypto, writerB.publicKey))).toBe(false);
    for (const bad of WRONG) {
      throwsAudit(() => signEntry(bad as never, writerA, good));
      throwsAudit(() => signEntry(crypto, bad as never, good));
      throwsAudit(() => signEntry(crypto, writerA, bad as never));
      for (const key of ['messageHash', 'senderId', 'recipientId', 'messageType', 'outcome', 'index', 'timestampMs', 'previousHash']) {
        if (key === 'messageType' && bad === 0) continue; // UNSPECIFIED is valid
        if ((key === 'index' || key === 'timestampMs') && (bad === 0 || bad === 1n)) continue;
        if ((key === 'senderId' || key === 'recipientId' || key === 'outcome') && bad === 'x') continue;
        throwsAudit(() => signEntry(crypto, writerA, { ...good, [key]: bad } as never));
      }
    }
    throwsAudit(() => assertEntryFields({ ...good, messageType: 9 }));
    throwsAudit(() => signEntry(crypto, { publicKey: writerA.publicKey, secretKey: {} } as never, good));
  });

  it('WriterKeys: keys by key id; wrong input is malformed', () => {
    const keys = WriterKeys.from(crypto, [writerA.publicKey, writerB.publicKey]);
    expect(keys.size).toBe(2);
    expect(toHex(keys.get(writerKeyId(crypto, writerB.publicKey))!)).toBe(toHex(writerB.publicKey));
    expect(keys.get(new Uint8Array(16))).toBeUndefined();
    expect(keys.get('x' as never)).toBeUndefined();
    expect(WriterKeys.from(crypto, keys)).toBe(keys);
    for (const bad of WRONG) throwsAudit(() => WriterKeys.from(crypto, bad as never));
    throwsAudit(() => WriterKeys.from(crypto, [writerA.publicKey, new Uint8Array(31)]));
  });
});

describe('tree heads and proofs', () => {
  const chain = buildChain(9);
  const tree = new MerkleTree(merkleHasher(crypto));
  for (const e of chain) tree.append(leafHash(crypto, e));
  const head = (n: number, w = writerA) => signTreeHead(crypto, w, { treeSize: n, rootHash: tree.root(n), timestampMs: 7 });

  it('sign, verify, JSON round trip; a tampered or untrusted head does not verify', () => {
    const h = head(9);
    expect(verifyTreeHead(crypto, h, writerA.publicKey)).toBe(true);
    expect(verifyTreeHead(crypto, h, writerB.publicKey)).toBe(false);
    expect(verifyTreeHead(crypto, treeHeadFromJson(JSON.stringify(treeHeadToJson(h))), [writerB.publicKey, writerA.publicKey])).toBe(true);
    for (const change of [{ treeSize: 8 }, { timestampMs: 8 }, { rootHash: tree.root(8) }, { signerKeyId: new Uint8Array(16) }]) {
      expect(verifyTreeHead(crypto, { ...h, ...change }, writerA.publicKey)).toBe(false);
    }
    expect(() => assertSignedTreeHead(crypto, head(9, writerB), writerA.publicKey)).toThrow(/\[bad_signature\]/);
    for (const bad of WRONG) {
      expect(verifyTreeHead(crypto, bad as never, writerA.publicKey)).toBe(false);
      expect(verifyTreeHead(crypto, h, bad as never)).toBe(false);
      throwsAudit(() => signTreeHead(crypto, writerA, bad as never));
      throwsAudit(() => treeHeadFromJson(bad));
      throwsAudit(() => treeHeadToJson(bad as never));
    }
    throwsAudit(() => treeHeadFromJson('{"treeSize":1}'));
    throwsAudit(() => treeHeadFromJson('not json'));
    throwsAudit(() => signTreeHead(crypto, writerA, { treeSize: -1, rootHash: tree.root(), timestampMs: 1 }));
  });

  it('checkInclusion: entry, leaf hash, head; each wrong piece has its code', () => {
    const h9 = head(9);
    const proof = tree.inclusionProof(4, 9);
    checkInclusion(crypto, { proof, head: h9, entry: chain[4]!, keys: writerA.publicKey });
    checkInclusion(crypto, { proof, head: h9, leafHash: tree.leafHash(4), keys: writerA.publicKey });
    const fail = (c: Parameters<typeof checkInclusion>[1], code: string) => throwsAudit(() => checkInclusion(crypto, c), code);
    fail({ proof, head: head(9, writerB), entry: chain[4]!, keys: writerA.publicKey }, 'bad_signature');
    fail({ proof, head: h9, entry: chain[5]!, keys: writerA.publicKey }, 'bad_proof');
    fail({ proof, head: head(8), entry: chain[4]!, keys: writerA.publicKey }, 'bad_proof');
    fail({ proof: tree.inclusionProof(4, 8), head: h9, entry: chain[4]!, keys: writerA.publicKey }, 'bad_proof');
    fail({ proof, head: h9, leafHash: tree.leafHash(3), keys: writerA.publicKey }, 'bad_proof');
    fail({ proof, head: h9, entry: chain[4]!, leafHash: tree.leafHash(3), keys: writerA.publicKey }, 'bad_proof');
    const forged = clone(AuditMessageSchema, chain[4]!);
    forged.outcome = 'forged';
    fail({ proof, head: h9, entry: forged, keys: writerA.publicKey }, 'bad_signature');
    for (const bad of WRONG) {
      fail(bad as never, 'malformed');
      fail({ proof: bad, head: h9, entry: chain[4]!, keys: writerA.publicKey } as never, 'malformed');
      fail({ proof, head: bad, entry: chain[4]!, keys: writerA.publicKey } as never, 'malformed');
      if (bad !== undefined) fail({ proof, head: h9, entry: bad, keys: writerA.publicKey } as never, 'malformed');
      fail({ proof, head: h9, entry: chain[4]!, keys: bad } as never, 'malformed');
    }
  });

  it('checkConsistency: heads and proof must agree', () => {
    const proof = tree.consistencyProof(3, 9);
    checkConsistency(crypto, { proof, oldHead: head(3), newHead: head(9), keys: writerA.publicKey });
    throwsAudit(() => checkConsistency(crypto, { proof, oldHead: head(4), newHead: head(9), keys: writerA.publicKey }), 'bad_proof');
    throwsAudit(() => checkConsistency(crypto, { proof, oldHead: head(3), newHead: head(9, writerB), keys: writerA.publicKey }), 'bad_signature');
    const other = signTreeHead(crypto, writerA, { treeSize: 9, rootHash: new Uint8Array(32).fill(1), timestampMs: 7 });
    throwsAudit(() => checkConsistency(crypto, { proof, oldHead: head(3), newHead: other, keys: writerA.publicKey }), 'bad_proof');
    for (const bad of WRONG) throwsAudit(() => checkConsistency(crypto, { proof: bad, oldHead: head(3), newHead: head(9), keys: writerA.publicKey } as never));
  });

  it('proof JSON round trips and rejects bad shapes', () => {
    const inc = inclusionProofToJson(tree.inclusionProof(2, 9), { leafHash: tree.leafHash(2), rootHash: tree.root(9), entry: chain[2]!, head: head(9) });
    const parsed = proofFromJson(JSON.stringify(inc));
    expect(parsed.type).toBe('inclusion');
    if (parsed.type === 'inclusion') {
      checkInclusion(crypto, { proof: parsed.proof, head: parsed.head!, entry: parsed.entry!, keys: writerA.publicKey });
    }
    const con = consistencyProofToJson(tree.consistencyProof(2, 9), { oldRoot: tree.root(2), newRoot: tree.root(9), oldHead: head(2), newHead: head(9) });
    const p2 = proofFromJson(con);
    expect(p2.type === 'consistency' && p2.proof.path.length).toBe(tree.consistencyProof(2, 9).path.length);
    for (const bad of [...WRONG, '{}', '[]', 'nope', { ...inc, path: ['zz'] }, { ...inc, leafIndex: -1 }, { ...inc, path: 'x' }, { ...con, oldRoot: 'abcd' }]) {
      throwsAudit(() => proofFromJson(bad));
    }
  });
});

describe('AuditLog', () => {
  const fields = fieldsFor(3);

  it('validates its options and fields', async () => {
    for (const bad of WRONG) {
      await expect(AuditLog.open(crypto, bad as never)).rejects.toMatchObject({ code: 'malformed' });
      await expect(AuditLog.open(crypto, { store: bad, writer: writerA } as never)).rejects.toMatchObject({ code: 'malformed' });
      await expect(AuditLog.open(crypto, { store: memoryStore(), writer: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      if (bad !== undefined) {
        if (typeof bad !== 'function') await expect(AuditLog.open(crypto, { store: memoryStore(), writer: writerA, clock: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
        await expect(AuditLog.open(crypto, { store: memoryStore(), writer: writerA, verify: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
        if (!Array.isArray(bad)) await expect(AuditLog.open(crypto, { store: memoryStore(), writer: writerA, trustedKeys: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
        if (bad !== 0) await expect(AuditLog.open(crypto, { store: memoryStore(), writer: writerA, maxRetries: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      }
      await expect(AuditLog.open(bad as never, { store: memoryStore(), writer: writerA })).rejects.toMatchObject({ code: 'malformed' });
    }
    const log = await AuditLog.open(crypto, { store: memoryStore(), writer: writerA });
    for (const bad of WRONG) await expect(log.append(bad as never)).rejects.toMatchObject({ code: 'malformed' });
    await expect(log.append({ ...fields, senderId: 'BAD' })).rejects.toMatchObject({ code: 'malformed' });
    await expect(log.append({ ...fields, timestampMs: -5 })).rejects.toMatchObject({ code: 'malformed' });
    expect(log.size).toBe(0);
    const broken = await AuditLog.open(crypto, { store: memoryStore(), writer: writerA, clock: () => -1 });
    await expect(broken.append({ ...fields, timestampMs: undefined } as never)).rejects.toMatchObject({ code: 'malformed' });
  });

  it('uses the clock, exposes its key, reads entries back, refuses use after close', async () => {
    const log = await AuditLog.open(crypto, { store: memoryStore(), writer: writerA, clock: () => 1234 });
    const { timestampMs: _omit, ...noTime } = fields;
    const e = await log.append(noTime);
    expect(e.timestampMs).toBe(1234n);
    expect(toHex(log.publicKey)).toBe(toHex(writerA.publicKey));
    expect(toHex(log.keyId)).toBe(toHex(e.signerKeyId));
    expect(toHex(log.leafHash(0))).toBe(toHex(leafHash(crypto, e)));
    expect(toHex(encodeEntry(await log.entry(0)))).toBe(toHex(encodeEntry(e)));
    await expect(log.entry(1)).rejects.toMatchObject({ code: 'not_found' });
    expect(() => log.treeHead(2)).toThrow(/\[not_found\]/);
    expect(log.treeHead(0).rootHash).toEqual(crypto.blake3(new Uint8Array(0)));
    await log.close();
    await log.close();
    await expect(log.append(fields)).rejects.toMatchObject({ code: 'storage_failure' });
  });

  it('once closed, every method throws the same closed error (a closed log signs and proves nothing); appends made before close are written', async () => {
    const entries: AuditMessage[] = [];
    const log = await AuditLog.open(crypto, { store: memoryStore(entries), writer: writerA, clock: () => 1234 });
    await log.append(fields);
    const before = log.append(fields); // accepted before close(): close waits for it and it is stored
    await log.close();
    expect((await before).index).toBe(1n);
    expect(entries).toHaveLength(2);
    const closed = { code: 'storage_failure', message: '[storage_failure] the audit log is closed' };
    const calls: [string, () => unknown][] = [
      ['append', () => log.append(fields)],
      ['notify', () => log.notify({ channel: 'audit', payload: 'x' })],
      ['refresh', () => log.refresh()],
      ['entry', () => log.entry(0)],
      ['rootHash', () => log.rootHash()],
      ['treeHead', () => log.treeHead()],
      ['treeHead(1)', () => log.treeHead(1)],
      ['inclusionProof', () => log.inclusionProof(0)],
      ['consistencyProof', () => log.consistencyProof(1)],
      ['leafHash', () => log.leafHash(0)],
    ];
    for (const [name, call] of calls) {
      let error: unknown;
      try {
        await call();
      } catch (e) {
        error = e;
      }
      expect(error, name).toBeInstanceOf(AuditError);
      expect(error, name).toMatchObject(closed);
    }
    expect(log.size).toBe(2); // getters still answer
    await log.close(); // idempotent
  });

  it('a wiped writer key is key_wiped (not malformed), at open, on append and for tree heads; nothing is stored', async () => {
    const writer = crypto.ed25519.keyPairFromSeed(new Uint8Array(32).fill(0x77));
    const entries: AuditMessage[] = [];
    const log = await AuditLog.open(crypto, { store: memoryStore(entries), writer });
    await log.append(fields);
    writer.secretKey.wipe();
    const wiped = { code: 'key_wiped', message: expect.stringContaining('wiped') as unknown as string };
    throwsAudit(() => log.treeHead(), 'key_wiped');
    expect(() => log.treeHead()).toThrow(/^\[key_wiped\] .*wiped/);
    await expect(log.append(fields)).rejects.toMatchObject(wiped);
    expect(entries).toHaveLength(1);
    expect(log.size).toBe(1);
    await expect(AuditLog.open(crypto, { store: memoryStore(), writer })).rejects.toMatchObject(wiped);
    throwsAudit(() => signTreeHead(crypto, writer, { treeSize: 0, rootHash: new Uint8Array(32), timestampMs: 1 }), 'key_wiped');
    throwsAudit(() => signEntry(crypto, writer, { ...fields, index: 0, previousHash: new Uint8Array(32) }), 'key_wiped');
    const tree = new RootAccumulator(merkleHasher(crypto));
    tree.append(new Uint8Array(32));
    const state = { tree, firstEntryHash: new Uint8Array(32), lastEntryHash: new Uint8Array(32), entrySigners: [writerKeyId(crypto, writer.publicKey)] };
    throwsAudit(() => signCheckpoint(crypto, writer, writerKeyId(crypto, writer.publicKey), state, 1), 'key_wiped');
    expect(AUDIT_ERROR_CODES).toContain('key_wiped');
  });

  it('index arguments are integers 0..size−1: leafHash(-1) is malformed, not an empty hash (full and proofs: false)', async () => {
    const full = await AuditLog.open(crypto, { store: memoryStore(buildChain(3)), writer: writerA });
    const compact = await AuditLog.open(crypto, { store: memoryStore(buildChain(3)), writer: writerA, proofs: false });
    for (const bad of [-1, 1.5, Number.NaN, '1']) {
      throwsAudit(() => full.leafHash(bad as number));
      throwsAudit(() => full.inclusionProof(bad as number));
      throwsAudit(() => full.consistencyProof(bad as number));
      throwsAudit(() => full.rootHash(bad as number));
      throwsAudit(() => full.treeHead(bad as number));
      throwsAudit(() => compact.rootHash(bad as number)); // was not_found "keeps only its current root"
      throwsAudit(() => compact.treeHead(bad as number));
      await expect(full.entry(bad as number)).rejects.toMatchObject({ code: 'malformed' });
    }
    expect(() => full.leafHash(3)).toThrow('[not_found] index 3 is not below the tree size 3');
    expect(full.leafHash(2)).toHaveLength(32);
    await expect(full.entry(3)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('refuses to extend a store whose entries do not link (links check on open)', async () => {
    const chain = buildChain(6);
    const swapped = [...chain.slice(0, 2), chain[3]!, chain[2]!, ...chain.slice(4)];
    await expect(AuditLog.open(crypto, { store: memoryStore(swapped), writer: writerA })).rejects.toMatchObject({ code: 'removed' });
    const relinked = [...chain.slice(0, 3), signEntry(crypto, writerA, { ...fieldsFor(3), index: 3, previousHash: new Uint8Array(32) })];
    await expect(AuditLog.open(crypto, { store: memoryStore(relinked), writer: writerA })).rejects.toMatchObject({ code: 'bad_link' });
    const ok = await AuditLog.open(crypto, { store: memoryStore([...chain]), writer: writerA });
    expect(ok.size).toBe(6);
    expect(toHex((await treeFromEntries(crypto, chain)).root())).toBe(toHex(ok.rootHash()));
  });

  it('with proofs: false keeps only the current root: the same root and tree heads, no history, reopened by a full verification', async () => {
    const chain = buildChain(37);
    const full = await AuditLog.open(crypto, { store: memoryStore([...chain]), writer: writerA });
    const compact = await AuditLog.open(crypto, { store: memoryStore([...chain]), writer: writerA, proofs: false });
    expect(compact.size).toBe(37);
    expect(toHex(compact.rootHash())).toBe(toHex(full.rootHash()));
    for (let i = 0; i < 29; i++) {
      await full.append(fields);
      await compact.append(fields);
      expect(toHex(compact.rootHash())).toBe(toHex(full.rootHash()));
    }
    expect(verifyTreeHead(crypto, compact.treeHead(), writerA.publicKey)).toBe(true);
    expect(compact.treeHead().rootHash).toEqual(full.rootHash());
    expect(() => compact.rootHash(10)).toThrow(/\[not_found\].*proofs: false/);
    expect(() => compact.inclusionProof(0)).toThrow(/\[not_found\]/);
    expect(() => compact.consistencyProof(1)).toThrow(/\[not_found\]/);
    expect(() => compact.leafHash(0)).toThrow(/\[not_found\]/);
    expect((await compact.entry(40)).index).toBe(40n); // entries are read from the store
    const again = await AuditLog.open(crypto, { store: memoryStore([...chain]), writer: writerA, proofs: false, verify: 'full' });
    expect(toHex(again.rootHash())).toBe(toHex((await treeFromEntries(crypto, chain)).root()));
    await expect(AuditLog.open(crypto, { store: memoryStore(), writer: writerA, proofs: 'no' } as never)).rejects.toMatchObject({ code: 'malformed' });
  });

  it('a store failure other than a lost race is not retried', async () => {
    const store = memoryStore();
    let calls = 0;
    store.append = async () => {
      calls++;
      throw new AuditError('storage_failure', 'disk full');
    };
    const log = await AuditLog.open(crypto, { store, writer: writerA });
    await expect(log.append(fields)).rejects.toMatchObject({ code: 'storage_failure' });
    expect(calls).toBe(1);
    expect(log.size).toBe(0);
    await expect(log.append({ ...fields, messageType: MessageType.STATUS_UPDATE })).rejects.toMatchObject({ code: 'storage_failure' });
  });
});
