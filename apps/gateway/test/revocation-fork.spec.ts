// The revocation feed against a registry that cannot be trusted to keep its list (§10.7, §15.6): restored
// from an older backup and revoking others since (a fork whose version passes the gateway's high-water
// mark), or paging without end. A registry here is a fake client serving real signed chains and heads.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { openDatabase, type Database } from '@parley/db';
import { EMPTY_CHAIN_HASH, MemoryRevocationSet, TrustBundle, keyId, revocationEntryHash, revocationHeadLayout, type RevocationEntry } from '@parley/identity';
import type { RevocationListEntry, SignedRevocationHead } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import { waitFor } from '@parley/test-support';
import pino from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { migrateGatewaySchema } from '../src/mailbox.js';
import { RevocationFeed, openRevocationFloor, type RevocationFeedOptions } from '../src/revocation-feed.js';

let crypto: ParleyCrypto;
let db: Database;
let issuer: ReturnType<ParleyCrypto['ed25519']['generateKeyPair']>;
let trustBundle: TrustBundle;
const registryId = new Uint8Array(16).fill(7);
const serial = new Uint8Array(16);
const schema = `gw_fork_${process.pid}_${Date.now()}`;

beforeAll(async () => {
  crypto = await createCrypto();
  // PostgreSQL in a schema of its own when DATABASE_URL is set (CI), PGlite in memory otherwise.
  const url = process.env['DATABASE_URL'];
  db = await openDatabase(url === undefined || url === '' ? {} : { url, schema });
  await migrateGatewaySchema(db);
  issuer = crypto.ed25519.generateKeyPair();
  trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
});
afterAll(async () => {
  if (db?.engine === 'postgres') await db.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
  await db?.close();
});

/** A registry's chain revoking these agent ids, versions 1, 2, … */
function chain(ids: readonly string[]): RevocationListEntry[] {
  let previous = EMPTY_CHAIN_HASH;
  return ids.map((agentId, i) => {
    const fields = { version: BigInt(i + 1), kind: 'agent' as const, agentId, serial: new Uint8Array(0), reason: 1, reasonText: '', revokedAtMs: 1000n };
    previous = revocationEntryHash(crypto, registryId, previous, fields);
    return { version: fields.version, subject: { case: 'agentId', value: agentId }, reason: 1, reasonText: '', revokedAtMs: 1000n, entryHash: previous } as unknown as RevocationListEntry;
  });
}

function head(list: readonly RevocationListEntry[]): SignedRevocationHead {
  const h = { registryId, version: BigInt(list.length), headHash: list.at(-1)?.entryHash ?? EMPTY_CHAIN_HASH, issuedAtMs: BigInt(Date.now()), issuerKeyId: keyId(crypto, issuer.publicKey) };
  return { ...h, signature: crypto.ed25519.sign(revocationHeadLayout(h), issuer.secretKey) } as unknown as SignedRevocationHead;
}

/** A registry serving `list` (changed by the test); `restart()` ends the open watches (the feed reconnects). */
function fakeRegistry(initial: readonly string[]): { client: RevocationFeedOptions['client']; serve(ids: readonly string[]): void; lists: { n: number } } {
  let list = chain(initial);
  let wake: (() => void)[] = [];
  const lists = { n: 0 };
  const beyond = (): never => {
    throw new RpcError('failed_precondition', 'after_version is beyond the list');
  };
  const client = {
    async getRevocationList({ afterVersion }: { afterVersion: bigint }) {
      lists.n++;
      if (Number(afterVersion) > list.length) beyond();
      return { entries: list.slice(Number(afterVersion)), head: head(list), currentVersion: BigInt(list.length) };
    },
    async *watchRevocations({ afterVersion }: { afterVersion: bigint }, { signal }: { signal?: AbortSignal } = {}) {
      if (Number(afterVersion) > list.length) beyond();
      yield { entries: list.slice(Number(afterVersion)), head: head(list), trustBundleVersion: 0n };
      await new Promise<void>((resolve) => {
        wake.push(resolve);
        signal?.addEventListener('abort', () => resolve(), { once: true });
      });
      throw new RpcError('unavailable', 'watch ended');
    },
  } as unknown as RevocationFeedOptions['client'];
  return {
    client,
    lists,
    serve(ids) {
      list = chain(ids);
      for (const w of wake) w();
      wake = [];
    },
  };
}

function logCapture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { lines, logger: pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }) };
}

it('a forked list from a restored registry undoes no revocation this database verified, also after a gateway restart, and says so as a security event', async () => {
  const registry = fakeRegistry(['agent-a', 'agent-b', 'agent-c']);
  const { logger, lines } = logCapture();
  const announced: string[] = [];
  const onRevoked = (e: RevocationEntry): void => void announced.push(e.kind === 'agent' ? e.agentId : 'serial');
  let revocations = new MemoryRevocationSet();
  const isRevoked = (id: string): boolean => revocations.check({ agentId: id, serial }, Date.now()).revoked;
  const options = { crypto, client: registry.client, registryId, trustBundle, logger, onRevoked, minBackoffMs: 10, maxBackoffMs: 40 };
  let feed = new RevocationFeed({ ...options, revocations, floor: await openRevocationFloor(db, registryId) });
  feed.start();
  await feed.synced;
  expect(['agent-a', 'agent-b', 'agent-c'].map(isRevoked)).toEqual([true, true, true]);

  // Restored from a backup taken at version 1; two other agents revoked since: version 3 again, another chain.
  registry.serve(['agent-a', 'agent-d', 'agent-e']);
  await waitFor(() => isRevoked('agent-d'), 5_000, 'the forked list taken');
  expect(['agent-b', 'agent-c', 'agent-d', 'agent-e'].map(isRevoked)).toEqual([true, true, true, true]);
  // Past the high-water mark: still nothing undone.
  registry.serve(['agent-a', 'agent-d', 'agent-e', 'agent-f']);
  await waitFor(() => isRevoked('agent-f'), 5_000, 'the next entry taken');
  expect(isRevoked('agent-b') && isRevoked('agent-c')).toBe(true);
  const forks = lines.filter((l) => l['code'] === 'revocation_fork');
  expect(forks).toHaveLength(1); // once a minute
  expect(forks[0]).toMatchObject({ event: 'security', kept: 2 });
  // Each newly revoked agent announced once (its streams are closed), including those at versions the gateway held.
  expect(announced).toEqual(['agent-a', 'agent-b', 'agent-c', 'agent-d', 'agent-e', 'agent-f']);
  await feed.close();

  // A restart: a fresh process's empty set, the same database; the registry serves only the forked list.
  revocations = new MemoryRevocationSet();
  feed = new RevocationFeed({ ...options, revocations, floor: await openRevocationFloor(db, registryId) });
  feed.start();
  await feed.synced;
  // (closed at once after: a close right after the list loaded used to wait for a watch nobody would end)
  expect(['agent-a', 'agent-b', 'agent-c', 'agent-d', 'agent-e', 'agent-f', 'agent-g'].map(isRevoked)).toEqual([true, true, true, true, true, true, false]);
  expect(revocations.version).toBe(4);
  await feed.close();
});

it('a registry that pages without bringing entries is refused and retried with backoff, not asked again at once forever', async () => {
  const list = chain(['agent-x']);
  let calls = 0;
  const client = {
    async getRevocationList() {
      calls++;
      return { entries: [], head: head([]), currentVersion: BigInt(list.length) }; // "one more version", never sent
    },
    async *watchRevocations() {
      throw new RpcError('unavailable', 'not reached');
    },
  } as unknown as RevocationFeedOptions['client'];
  const { logger, lines } = logCapture();
  const feed = new RevocationFeed({ crypto, client, registryId, trustBundle, revocations: new MemoryRevocationSet(), logger, onRevoked: () => undefined, minBackoffMs: 100, maxBackoffMs: 200 });
  feed.start();
  await new Promise((resolve) => setTimeout(resolve, 700));
  await feed.close();
  expect(calls).toBeGreaterThanOrEqual(2);
  expect(calls).toBeLessThanOrEqual(8); // 100, 200, 200, … ms apart; the unbounded loop made ~17,000 a second
  expect(lines.filter((l) => l['event'] === 'revocation_feed_rejected').length).toBe(calls);
  expect(feed.connected).toBe(false);
});
