// One test suite for every storage backend (file, PGlite, PostgreSQL): the
// AuditStore contract, and the AuditLog writer on top of it.
import { toHex } from '@parley/crypto-core';
import { AuditMessageSchema, clone, MessageType } from '@parley/proto';
import { describe, expect, it } from 'vitest';
import {
  AuditLog,
  checkConsistency,
  checkInclusion,
  encodeEntry,
  signEntry,
  verifyChain,
  verifyTreeHead,
  type AuditStore,
} from '../src/index.js';
import { buildChain, crypto, extendChain, fieldsFor, hashOf, writerA, writerB } from './fixtures.js';

/** How a suite gets stores: `open` makes a fresh empty one, `reopen` closes it and opens the same storage again. */
export interface StoreBackend {
  open(): Promise<AuditStore>;
  reopen(store: AuditStore): Promise<AuditStore>;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

const hexes = (entries: { index: bigint }[]): string[] => entries.map((e) => toHex(encodeEntry(e as never)));

/** Registers the shared suite for one backend. */
export function storeSuite(name: string, backend: () => StoreBackend): void {
  describe(`AuditStore contract: ${name}`, () => {
    it('starts empty', async () => {
      const store = await backend().open();
      expect(await store.size()).toBe(0);
      expect(await collect(store.read(0, 0))).toEqual([]);
      await expect(collect(store.readEncoded(0, 1))).rejects.toMatchObject({ code: 'not_found' });
      await store.close();
    });

    it('appends in order and reads back any range, decoded or encoded', async () => {
      const store = await backend().open();
      const chain = buildChain(25);
      for (const e of chain) await store.append(e);
      expect(await store.size()).toBe(25);
      expect(hexes(await collect(store.read(0, 25)))).toEqual(hexes(chain));
      expect(hexes(await collect(store.read(5, 9)))).toEqual(hexes(chain.slice(5, 9)));
      expect((await collect(store.readEncoded(24, 25))).map((b) => toHex(b))).toEqual(hexes(chain.slice(24)));
      expect(await collect(store.read(25, 25))).toEqual([]);
      await store.close();
    });

    it('refuses an append that does not extend the tip, and keeps nothing of it', async () => {
      const store = await backend().open();
      const chain = buildChain(6);
      await expect(store.append(chain[1]!)).rejects.toMatchObject({ code: 'conflict' });
      const wrongStart = signEntry(crypto, writerA, { ...fieldsFor(0), index: 0, previousHash: new Uint8Array(32).fill(9) });
      await expect(store.append(wrongStart)).rejects.toMatchObject({ code: 'bad_link' });
      for (const e of chain.slice(0, 5)) await store.append(e);
      await expect(store.append(chain[4]!)).rejects.toMatchObject({ code: 'conflict' }); // index taken
      await expect(store.append(extendChain(1, 6, hashOf(chain[4]!))[0]!)).rejects.toMatchObject({ code: 'conflict' }); // gap
      const fork = signEntry(crypto, writerA, { ...fieldsFor(5), index: 5, previousHash: hashOf(chain[3]!) });
      await expect(store.append(fork)).rejects.toMatchObject({ code: 'bad_link' });
      const bad = clone(AuditMessageSchema, chain[5]!);
      bad.outcome = 'NOT VALID';
      await expect(store.append(bad)).rejects.toMatchObject({ code: 'malformed' });
      await expect(store.append({} as never)).rejects.toMatchObject({ code: 'malformed' });
      expect(await store.size()).toBe(5);
      await store.append(chain[5]!);
      expect((await verifyChain(crypto, store.read(0, 6), { keys: writerA.publicKey })).ok).toBe(true);
      await store.close();
    });

    it('validates read ranges', async () => {
      const store = await backend().open();
      for (const e of buildChain(3)) await store.append(e);
      await expect(collect(store.read(2, 1))).rejects.toMatchObject({ code: 'malformed' });
      await expect(collect(store.read(0, 4))).rejects.toMatchObject({ code: 'not_found' });
      await expect(collect(store.read(-1, 2))).rejects.toMatchObject({ code: 'malformed' });
      await expect(collect(store.read(0.5, 2))).rejects.toMatchObject({ code: 'malformed' });
      await expect(collect(store.read('0' as never, 2))).rejects.toMatchObject({ code: 'malformed' });
      await store.close();
    });

    it('keeps entries across a reopen and extends them', async () => {
      const b = backend();
      let store = await b.open();
      const chain = buildChain(12);
      for (const e of chain.slice(0, 7)) await store.append(e);
      store = await b.reopen(store);
      expect(await store.size()).toBe(7);
      for (const e of chain.slice(7)) await store.append(e);
      expect(hexes(await collect(store.read(0, 12)))).toEqual(hexes(chain));
      await store.close();
    });

    it('refuses every call once closed (storage_failure)', async () => {
      const store = await backend().open();
      await store.close();
      await store.close(); // idempotent
      await expect(store.size()).rejects.toMatchObject({ code: 'storage_failure' });
      await expect(store.append(buildChain(1)[0]!)).rejects.toMatchObject({ code: 'storage_failure' });
      await expect(collect(store.read(0, 0))).rejects.toMatchObject({ code: 'storage_failure' });
    });
  });

  describe(`AuditLog over ${name}`, () => {
    const fields = (i: number) => ({
      messageHash: new Uint8Array(32).fill(i & 0xff),
      senderId: 'gateway-1',
      recipientId: `agent-${i % 5}`,
      messageType: MessageType.UNSPECIFIED,
      outcome: i % 3 === 0 ? 'queued' : 'routed',
    });

    it('appends concurrently in call order, signs heads, proves inclusion and consistency, survives a reopen', async () => {
      const b = backend();
      let clock = 1_700_000_000_000;
      const log = await AuditLog.open(crypto, { store: await b.open(), writer: writerA, clock: () => clock++ });
      const entries = await Promise.all(Array.from({ length: 30 }, (_, i) => log.append(fields(i))));
      expect(entries.map((e) => Number(e.index))).toEqual(Array.from({ length: 30 }, (_, i) => i));
      expect(entries.map((e) => e.recipientId)).toEqual(Array.from({ length: 30 }, (_, i) => `agent-${i % 5}`));
      expect(log.size).toBe(30);
      const head30 = log.treeHead();
      expect(verifyTreeHead(crypto, head30, writerA.publicKey)).toBe(true);
      expect(head30.treeSize).toBe(30);
      for (const i of [0, 13, 29]) {
        checkInclusion(crypto, { proof: log.inclusionProof(i), head: head30, entry: await log.entry(i), keys: writerA.publicKey });
      }
      const verified = await verifyChain(crypto, log.store.read(0, 30), { keys: writerA.publicKey, head: head30 });
      expect(verified.ok && toHex(verified.rootHash)).toBe(toHex(head30.rootHash));

      const store = await b.reopen(log.store);
      const again = await AuditLog.open(crypto, { store, writer: writerA, verify: 'full', clock: () => clock++ });
      expect(again.size).toBe(30);
      expect(toHex(again.rootHash())).toBe(toHex(head30.rootHash));
      await again.append({ ...fields(30), timestampMs: 42 });
      expect((await again.entry(30)).timestampMs).toBe(42n);
      const head31 = again.treeHead();
      checkConsistency(crypto, { proof: again.consistencyProof(30), oldHead: head30, newHead: head31, keys: writerA.publicKey });
      await again.close();
    });

    it('two writers sharing one store never fork: the loser of a race catches up and re-signs', async () => {
      const store = await backend().open();
      const a = await AuditLog.open(crypto, { store, writer: writerA, trustedKeys: [writerB.publicKey] });
      const bLog = await AuditLog.open(crypto, { store, writer: writerB, trustedKeys: [writerA.publicKey] });
      for (let i = 0; i < 10; i++) {
        await a.append(fields(2 * i));
        await bLog.append(fields(2 * i + 1)); // b's view is one entry behind each time: conflict, catch up, retry
      }
      expect(a.size).toBe(19);
      expect(await a.refresh()).toBe(20);
      expect(bLog.size).toBe(20);
      const result = await verifyChain(crypto, store.read(0, 20), { keys: [writerA.publicKey, writerB.publicKey] });
      expect(result.ok).toBe(true);
      expect(toHex(a.rootHash())).toBe(toHex(bLog.rootHash()));
      const none = await AuditLog.open(crypto, { store, writer: writerA, trustedKeys: [writerB.publicKey], maxRetries: 0 });
      await a.append(fields(99));
      await expect(none.append(fields(100))).rejects.toMatchObject({ code: 'conflict' });
      await store.close();
    });

    it('refuses to extend a stored chain whose signatures do not verify (verify: full)', async () => {
      const store = await backend().open();
      for (const e of buildChain(5, writerB)) await store.append(e);
      await expect(AuditLog.open(crypto, { store, writer: writerA, verify: 'full' })).rejects.toMatchObject({ code: 'modified' });
      const log = await AuditLog.open(crypto, { store, writer: writerA, verify: 'full', trustedKeys: [writerB.publicKey] });
      expect(log.size).toBe(5);
      await log.close();
    });

    it('adopts only entries signed by a trusted key: by default its own key, and never a bogus signature', async () => {
      const store = await backend().open();
      for (const e of buildChain(3, writerB)) await store.append(e);
      // Another writer's entries are not adopted unless its key is trusted, explicitly.
      await expect(AuditLog.open(crypto, { store, writer: writerA })).rejects.toMatchObject({ code: 'bad_signature' });
      const a = await AuditLog.open(crypto, { store, writer: writerA, trustedKeys: [writerB.publicKey] });
      await a.append(fields(3));
      expect(a.size).toBe(4);
      await a.close();
    });

    it('refuses to chain onto an entry with a bogus signature written behind its back (shared store)', async () => {
      const store = await backend().open();
      const log = await AuditLog.open(crypto, { store, writer: writerA, trustedKeys: [writerB.publicKey] });
      await log.append(fields(0));
      await log.append(fields(1));
      // Someone with INSERT on the table (or an untrusted writer) appends a correctly linked entry whose
      // signature verifies under no trusted key.
      const [forged] = extendChain(1, 2, hashOf(await log.entry(1)), writerA);
      const signature = forged!.signature.slice();
      signature[0]! ^= 0x01;
      await store.append({ ...forged!, signature });
      await expect(log.append(fields(3))).rejects.toMatchObject({ code: 'bad_signature' });
      await expect(log.refresh()).rejects.toMatchObject({ code: 'bad_signature' });
      await expect(AuditLog.open(crypto, { store, writer: writerA, trustedKeys: [writerB.publicKey] })).rejects.toMatchObject({ code: 'bad_signature' });
      // Nothing was chained onto it, so the verifier does not blame an honest writer (rule 2b): the forged last entry reads modified.
      expect(await store.size()).toBe(3);
      const result = await verifyChain(crypto, store.read(0, 3), { keys: [writerA.publicKey, writerB.publicKey] });
      expect(result).toMatchObject({ ok: false, index: 2, reason: 'modified' });
      await store.close();
    });
  });
}
