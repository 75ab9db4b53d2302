// Checkpoint behaviour that needs no database (PROTOCOL §9.6): a store in memory with the optional
// checkpoint methods. The PostgreSQL store's own checkpoint tests are in postgres-specifics.ts.
import type { AuditMessage } from '@parley/proto';
import { describe, expect, it } from 'vitest';
import { AuditLog, MAX_CHECKPOINT_SIGNERS, signEntry, ZERO_HASH, type AuditCheckpoint, type AuditStore } from '../src/index.js';
import { digestEntry, encodeEntry } from '../src/entry.js';
import { crypto, fieldsFor, writerA } from './fixtures.js';

function memoryStore(entries: AuditMessage[], checkpoints: AuditCheckpoint[]): AuditStore {
  return {
    kind: 'memory',
    size: async () => entries.length,
    append: async (e) => void entries.push(e),
    appendMany: async (es) => void entries.push(...es),
    readEncoded: async function* (from, to) {
      for (const e of entries.slice(from, to)) yield encodeEntry(e);
    },
    read: async function* (from, to) {
      yield* entries.slice(from, to);
    },
    saveCheckpoint: async (c) => void checkpoints.push(c),
    checkpoints: async (limit, atMost = Number.MAX_SAFE_INTEGER) => checkpoints.filter((c) => c.treeSize <= atMost).sort((a, b) => b.treeSize - a.treeSize).slice(0, limit),
    close: async () => undefined,
  };
}

const now = (i: number) => ({ ...fieldsFor(i), timestampMs: undefined }) as never;

describe('audit checkpoints', () => {
  it('entries signed by more keys than a checkpoint can name: appends succeed, no checkpoint is taken', async () => {
    const keys = Array.from({ length: MAX_CHECKPOINT_SIGNERS + 1 }, (_, i) => crypto.ed25519.keyPairFromSeed(new Uint8Array(32).map((_, j) => (j === 0 ? i & 0xff : j === 1 ? i >> 8 : 7))));
    const entries: AuditMessage[] = [];
    let previousHash = ZERO_HASH;
    keys.forEach((k, i) => {
      const e = signEntry(crypto, k, { ...fieldsFor(i), index: i, previousHash });
      entries.push(e);
      previousHash = digestEntry(crypto, e).entryHash;
    });
    const checkpoints: AuditCheckpoint[] = [];
    const log = await AuditLog.open(crypto, { store: memoryStore(entries, checkpoints), writer: keys[0]!, trustedKeys: keys.map((k) => k.publicKey), proofs: false, checkpointEvery: 1 });
    await log.append(now(1000));
    await log.append(now(1001));
    await log.close();
    expect([entries.length, log.size, checkpoints.length]).toEqual([MAX_CHECKPOINT_SIGNERS + 3, MAX_CHECKPOINT_SIGNERS + 3, 0]);
  });

  it('a store cut below a signed checkpoint of its log is removed — also when it was emptied', async () => {
    const entries: AuditMessage[] = [];
    const checkpoints: AuditCheckpoint[] = [];
    const log = await AuditLog.open(crypto, { store: memoryStore(entries, checkpoints), writer: writerA, proofs: false, checkpointEvery: 5 });
    for (let i = 0; i < 12; i++) await log.append(now(i));
    await log.close();
    expect(checkpoints.map((c) => c.treeSize)).toEqual([5, 10, 12]);
    entries.length = 3;
    await expect(AuditLog.open(crypto, { store: memoryStore(entries, checkpoints), writer: writerA, proofs: false })).rejects.toMatchObject({ code: 'removed' });
    entries.length = 0;
    await expect(AuditLog.open(crypto, { store: memoryStore(entries, checkpoints), writer: writerA, proofs: false })).rejects.toMatchObject({ code: 'removed' });
  });

  it('junk rows beyond the store hide nothing: the checkpoint within it is adopted', async () => {
    const entries: AuditMessage[] = [];
    const checkpoints: AuditCheckpoint[] = [];
    const log = await AuditLog.open(crypto, { store: memoryStore(entries, checkpoints), writer: writerA, proofs: false, checkpointEvery: 100 });
    for (let i = 0; i < 300; i++) await log.append(now(i));
    await log.close();
    const good = checkpoints[checkpoints.length - 1]!;
    for (let i = 0; i < 20; i++) checkpoints.push({ ...good, treeSize: 2 ** 40 + i, signature: new Uint8Array(64) });
    const again = await AuditLog.open(crypto, { store: memoryStore(entries, checkpoints), writer: writerA, proofs: false });
    expect(again.opening).toMatchObject({ checkpointSize: 300, entriesRead: 0 });
    expect(again.opening.checkpointRefused).toMatch(/other checkpoint\(s\) refused/);
  });

  it('a failed save is tried again at close, even with no entry since', async () => {
    const entries: AuditMessage[] = [];
    const checkpoints: AuditCheckpoint[] = [];
    const store = memoryStore(entries, checkpoints);
    const save = store.saveCheckpoint!;
    let fail = true;
    store.saveCheckpoint = async (c) => {
      if (fail) {
        fail = false;
        throw new Error('transient');
      }
      return save(c);
    };
    const log = await AuditLog.open(crypto, { store, writer: writerA, proofs: false, checkpointEvery: 10 });
    for (let i = 0; i < 10; i++) await log.append(now(i));
    await log.close();
    expect(checkpoints.map((c) => c.treeSize)).toEqual([10]);
  });
});
