// The durable state against real files in a temporary directory: compaction (DurableState.compact, the
// store's rewrite) must never lose a record — least of all a counter reservation (docs/PROTOCOL.md §13),
// whose loss lets a restarted sender seal a counter it already used.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromBase64Url, toBase64Url, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import type { MemoryRevocationSet, TrustBundle } from '@parley/identity';
import { MessageType, type HandshakeFrame } from '@parley/proto';
import { SessionManager, type LocalIdentity } from '@parley/session';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DurableState, isStateClosedRefusal } from '../src/durable-state.js';
import { Journal, fileStateStore, isClientError, replay, type JournalRecord, type StateStore } from '../src/index.js';
import { testWorld } from './world.js';

let crypto: ParleyCrypto;
let dir: string;
let alice: LocalIdentity;
let bob: LocalIdentity;
let trustBundle: TrustBundle;
let revocations: MemoryRevocationSet;

beforeAll(async () => {
  const world = await testWorld();
  ({ crypto, trustBundle, revocations } = world);
  dir = mkdtempSync(join(tmpdir(), 'parley-durable-state-'));
  alice = world.agent('alice');
  bob = world.agent('bob');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const bytes = (n: number): Uint8Array => new Uint8Array([n]);

/** The records a new store finds in `path` (closed again: one store at a time holds a state file). */
async function reread(path: string): Promise<Uint8Array[]> {
  const store = fileStateStore(path);
  try {
    return await store.load();
  } finally {
    await store.close();
  }
}

/** The journal records a new store finds in `path` (closed again). */
async function journalRecords(path: string, stateKey: SecretKey): Promise<JournalRecord[]> {
  const journal = new Journal(crypto, stateKey, fileStateStore(path));
  try {
    return await journal.load();
  } finally {
    await journal.close();
  }
}

/** A store whose rewrites the test can wait for (the store itself is the real file store). */
function observed(store: StateStore): { store: StateStore; rewrites: Promise<void>[] } {
  const rewrites: Promise<void>[] = [];
  return {
    rewrites,
    store: {
      load: () => store.load(),
      append: (records) => store.append(records),
      rewrite: (records) => {
        const done = store.rewrite(records);
        rewrites.push(done);
        return done;
      },
      close: () => store.close(),
    },
  };
}

/** The session part of the agent's snapshot (agent.ts #snapshot): each session's state and its reserved mark. */
function sessionRecords(manager: SessionManager): JournalRecord[] {
  const records: JournalRecord[] = [];
  for (const s of manager.sessions()) {
    records.push({ t: 'session', id: s.idHex, sealed: toBase64Url(manager.exportSession(s)) });
    const reserved = manager.reservedUpTo(s);
    if (reserved !== undefined) records.push({ t: 'reserve', id: s.idHex, upTo: reserved });
  }
  return records;
}

describe('fileStateStore ordering', () => {
  it('writes an append made just as the previous one resolved without waiting for another append', async () => {
    const path = join(dir, 'chained', 'state.bin');
    const store = fileStateStore(path);
    await store.append([bytes(1)]);
    const next = store.append([bytes(2)]);
    await store.close(); // waits for every append made before it
    expect(await reread(path)).toEqual([bytes(1), bytes(2)]);
    await next;
  });

  it('keeps every append made while a rewrite runs (after the rewritten records); replaces only what was appended before it', async () => {
    const path = join(dir, 'race', 'state.bin');
    const store = fileStateStore(path);
    expect(await store.load()).toEqual([]);
    const before = store.append([bytes(2)]); // being written when the rewrite starts: replaced by it
    const rewritten = store.rewrite([bytes(10)]);
    const during = store.append([bytes(3)]);
    await Promise.all([before, rewritten, during]);
    await store.close(); // one store at a time (it reopens at its next call)
    expect(await reread(path)).toEqual([bytes(10), bytes(3)]);
    // An append made once the rewrite's file work is under way, awaited (resolved) before the rewrite is.
    const again = store.rewrite([bytes(20)]);
    await new Promise((resolve) => setImmediate(resolve));
    await store.append([bytes(4)]);
    await again;
    await store.append([bytes(5)]);
    await store.close();
    expect(await reread(path)).toEqual([bytes(20), bytes(4), bytes(5)]);
  });
});

describe('DurableState compaction', () => {
  it('a record made while a compaction runs survives it', async () => {
    const path = join(dir, 'concurrent', 'state.bin');
    const stateKey = crypto.randomKey('aead');
    const state = new DurableState(new Journal(crypto, stateKey, fileStateStore(path)), { snapshot: () => [], onFailure: () => undefined });
    await state.record([{ t: 'in_done', hash: 'aa', receipt: 'AQ', at: 1 }]);
    const compaction = state.compact();
    const during = state.record([{ t: 'in_done', hash: 'bb', receipt: 'Ag', at: 2 }]);
    await Promise.all([compaction, during]);
    await state.close();
    const saved = replay(await journalRecords(path, stateKey));
    expect([...saved.receipts.keys()]).toEqual(['bb']); // 'aa' was not in the snapshot; 'bb' came after it
  });

  it('a compaction triggered by a reserve record keeps that reservation: after a restore no counter at or below one already used is sealed', async () => {
    const path = join(dir, 'reserve', 'state.bin');
    const stateKey: SecretKey = crypto.randomKey('aead');
    const { store, rewrites } = observed(fileStateStore(path));
    const managers: { a?: SessionManager; b?: SessionManager } = {};
    const state = new DurableState(new Journal(crypto, stateKey, store), {
      snapshot: () => sessionRecords(managers.a!),
      onFailure: () => undefined,
      compactAfterRecords: 4,
    });
    managers.a = new SessionManager({
      crypto,
      stateKey,
      handshake: { identity: alice, trustBundle, revocations },
      transport: { sendFrame: (frame: HandshakeFrame) => void managers.b!.handleFrame(frame).catch(() => undefined) },
      reservationBlock: 4,
      reserveCounters: (s, upTo) => state.record([{ t: 'reserve', id: s.idHex, upTo }]),
    });
    managers.b = new SessionManager({
      crypto,
      handshake: { identity: bob, trustBundle, revocations },
      transport: { sendFrame: (frame: HandshakeFrame) => void managers.a!.handleFrame(frame).catch(() => undefined) },
    });
    const a = managers.a;
    const session = await a.session('bob');
    await state.record([{ t: 'session', id: session.idHex, sealed: toBase64Url(a.exportSession(session)) }]);
    await state.record([
      { t: 'out_done', id: 'x', outcome: 'delivered' },
      { t: 'out_done', id: 'y', outcome: 'delivered' },
    ]);
    // The first seal reserves counters 0..3: that record is the fourth, and starts a compaction.
    const used: bigint[] = [];
    for (let n = 0; n < 4; n++) used.push((await a.sealIn(session, { type: MessageType.STATUS_UPDATE, content: { n } })).envelope.nonce);
    await Promise.all(rewrites);
    expect(rewrites).toHaveLength(1);
    // Crash: a new process restores the session from the journal at its recorded mark (the crashed one's lock gone with it).
    await state.close();
    const saved = replay(await journalRecords(path, stateKey)).sessions.get(session.idHex)!;
    const restarted = new SessionManager({
      crypto,
      stateKey,
      handshake: { identity: alice, trustBundle, revocations },
      transport: { sendFrame: () => undefined },
      reserveCounters: () => Promise.resolve(),
    });
    const restored = restarted.restore(fromBase64Url(saved.sealed), saved.reservedUpTo);
    const next = await restarted.sealIn(restored, { type: MessageType.STATUS_UPDATE, content: { n: 4 } });
    expect(next.envelope.nonce > used[used.length - 1]!).toBe(true);
    await state.close();
    for (const m of [a, managers.b, restarted]) m.close();
  });
});

describe('DurableState.close() is final', () => {
  /** Opens the state file with another store (a restart): fails `failed_precondition … in use` while a store holds its lock. */
  async function opensAtOnce(path: string): Promise<unknown> {
    const other = fileStateStore(path);
    try {
      await other.load();
      return undefined;
    } catch (error) {
      return error;
    } finally {
      await other.close().catch(() => undefined);
    }
  }

  it('a record whose append completes while close() is queued starts no compaction after it: the lock stays free', async () => {
    const path = join(dir, 'final', 'a.state');
    const state = new DurableState(new Journal(crypto, crypto.randomKey('aead'), fileStateStore(path)), { snapshot: () => [], onFailure: () => undefined, compactAfterRecords: 1 });
    await state.load();
    const written = state.record([{ t: 'closed', id: 'aa' }]);
    await state.close(); // what Agent.#release does last
    await written;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await opensAtOnce(path)).toBeUndefined(); // used to be `failed_precondition … in use`: the compaction reopened the store
  });

  it('after close(): record() is refused `cancelled` without a failure (the agent is not stopped), compact() does nothing, the store is not reopened', async () => {
    const path = join(dir, 'final', 'b.state');
    const stateKey = crypto.randomKey('aead');
    const failures: unknown[] = [];
    const state = new DurableState(new Journal(crypto, stateKey, fileStateStore(path)), { snapshot: () => [{ t: 'closed', id: 'snap' }], onFailure: (e) => void failures.push(e) });
    await state.load();
    await state.record([{ t: 'in_done', hash: 'aa', receipt: 'AQ', at: 1 }]);
    await state.close();
    expect(state.closed).toBe(true);
    const refused = await state.record([{ t: 'in_done', hash: 'bb', receipt: 'Ag', at: 2 }]).catch((e: unknown) => e);
    expect(isClientError(refused, 'cancelled')).toBe(true);
    expect(isStateClosedRefusal(refused)).toBe(true);
    expect(isStateClosedRefusal(new Error('x', { cause: refused }))).toBe(true);
    expect(await state.saveBundle(2, 'doc').catch((e: unknown) => isStateClosedRefusal(e))).toBe(true);
    await state.compact();
    expect(failures).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await opensAtOnce(path)).toBeUndefined();
    const saved = replay(await journalRecords(path, stateKey));
    expect([...saved.receipts.keys()]).toEqual(['aa']); // neither the refused record nor a snapshot was written
    expect(saved.bundle).toBeUndefined();
  });
});
