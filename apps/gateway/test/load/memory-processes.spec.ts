// Shared memory (docs/PROTOCOL.md §18) with REAL PROCESSES on loopback: the
// gateway CLI (`parley-gateway serve`, which mounts parley.v1.MemoryService
// next to AgentGatewayService) spawned as a process beside a real registry
// process, agents in this test process through @parley/client (`agent.memory`).
// Storage: PostgreSQL in a fresh schema with DATABASE_URL, else PGlite in a
// data directory (read directly by the test once the gateway has stopped).
//
//   - a member reads and writes; a reader cannot write
//   - a non-member is refused by the store, AND could not decrypt what the store holds
//     (the test reads the database directly: no plaintext, no key, and no sealed key
//     copy opens with the outsider's identity key)
//   - a removed member cannot read anything written after its removal (by the store,
//     nor with every key it ever held), and can still open what it had
//   - an expired grant stops working on time (and the next write moves to a new epoch)
//   - two concurrent writers: one wins, the other gets a typed `conflict` and retries
//   - every access attempt has its audit entry: the gateway's own call log and the audit
//     table agree call for call, refusals (and an unsigned call) included
//   - the gateway SIGKILLed mid-write and restarted: no acknowledged write lost, none applied twice
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { connect, isMemoryError, type Agent as SdkAgent } from '@parley/client';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { openDatabase, bytes as dbBytes, type Database } from '@parley/db';
import { createIssuerKey, issueCertificate, type IssuerKey, type TrustBundle } from '@parley/identity';
import { decodeEntry } from '@parley/audit';
import { backLinkAd, memoryRequestSigner, openWrap, openWrite, followBackLink, type EpochKey } from '@parley/memory';
import { EpochRecordSchema, KeyWrapSchema, MemoryService, WriteRecordSchema, fromBinary, type AuditMessage } from '@parley/proto';
import { createClient } from '@parley/rpc';
import type { LocalIdentity } from '@parley/session';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayReady, pinCombinedTrustBundle, startApp, startRegistry, tempDir, type RunningProcess, type TestRegistry } from '@parley/test-support';

const GATEWAY_ID = 'gw-memory.test';
const DAY = 86_400_000;
const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (b: Uint8Array): string => new TextDecoder().decode(b);

type Gateway = RunningProcess;

let crypto: ParleyCrypto;
let issuer: IssuerKey;
let trustBundle: TrustBundle;
let registry: TestRegistry;
const dir = tempDir('memory');
const schemas: string[] = [];
const agents: SdkAgent[] = [];

beforeAll(async () => {
  crypto = await createCrypto();
  registry = await startRegistry(['--heartbeat-ms', '1000']);
  issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  trustBundle = pinCombinedTrustBundle(crypto, registry.trustBundleFile, [issuer], join(dir.path, 'bundle.json'));
}, 120_000);

afterAll(async () => {
  for (const a of agents) await a.close();
  await registry?.cleanup();
  if (DATABASE_URL !== undefined && schemas.length > 0) {
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    try {
      for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
    } finally {
      await client.end();
    }
  }
  dir.remove();
}, 60_000);

interface Storage {
  readonly env: Record<string, string>;
  /** Opens the gateway's database (PGlite: only once the gateway has stopped). */
  open(): Promise<Database>;
}

function storage(name: string): Storage {
  if (DATABASE_URL === undefined) {
    const dataDir = join(dir.path, `${name}-pgdata`);
    return { env: { PARLEY_GATEWAY_DATA_DIR: dataDir }, open: () => openDatabase({ dataDir }) };
  }
  const schema = `gw_memory_${name}_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
  schemas.push(schema);
  return { env: { DATABASE_URL, PARLEY_GATEWAY_DB_SCHEMA: schema }, open: () => openDatabase({ url: DATABASE_URL, schema }) };
}

function gatewayEnv(name: string, db: Storage, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PARLEY_GATEWAY_ID: GATEWAY_ID,
    PARLEY_GATEWAY_LISTEN: '127.0.0.1:0',
    PARLEY_GATEWAY_METRICS_LISTEN: 'off',
    PARLEY_GATEWAY_AUDIT_KEY: join(dir.path, `${name}-audit-key.json`),
    PARLEY_GATEWAY_REGISTRY: registry.address,
    PARLEY_GATEWAY_TRUST_BUNDLE: join(dir.path, 'bundle.json'),
    // Certificates of a test issuer the registry does not know: the pinned bundle as is (§15.9 following off).
    PARLEY_GATEWAY_TRUST_BUNDLE_FOLLOW: 'false',
    PARLEY_GATEWAY_RATE_PER_SECOND: '100000',
    PARLEY_GATEWAY_RATE_BURST: '100000',
    PARLEY_GATEWAY_LOG_LEVEL: 'warn',
    ...db.env,
    ...extra,
  };
}

function startGatewayProcess(env: Record<string, string>): Promise<Gateway> {
  return startApp('gateway', ['serve'], { env, ready: gatewayReady(), timeoutMs: 60_000 });
}

interface TestAgent {
  readonly identity: LocalIdentity;
  readonly publicKey: Uint8Array;
}

function agent(agentId: string): TestAgent {
  const kp = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, issuer, {
    agentId,
    identityPublicKey: kp.publicKey,
    agentType: 'worker',
    capabilities: [],
    validFromMs: now - DAY,
    validUntilMs: now + 30 * DAY,
  });
  return { identity: { agentId, signingKey: kp.secretKey, certificate }, publicKey: kp.publicKey };
}

async function online(a: TestAgent, address: string): Promise<SdkAgent> {
  const sdk = await connect({ gateway: address, identity: a.identity, trustBundle, expectedGatewayId: GATEWAY_ID, crypto, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
  agents.push(sdk);
  return sdk;
}

/** A bare MemoryService client signing as `a` (what the SDK sends, without its checks), for key capture and raw calls. */
function raw(a: TestAgent, address: string) {
  return createClient(MemoryService, address, credentials.createInsecure(), { signer: memoryRequestSigner(crypto, a.identity, GATEWAY_ID) });
}

/** The keys an agent holds for a memory right now: its key copy opened, and every earlier epoch through back links. */
async function keysHeldBy(a: TestAgent, address: string, memoryId: string): Promise<EpochKey[]> {
  const client = raw(a, address);
  try {
    const state = await client.getMemory({ memoryId });
    const byEpoch = new Map(state.epochs.map((r) => [r.epoch, r]));
    let key = openWrap(crypto, a.identity, memoryId, state.wrap!, byEpoch.get(state.wrap!.epoch)!);
    const keys = [key];
    while (byEpoch.has(key.record.epoch - 1)) {
      key = followBackLink(crypto, memoryId, key, byEpoch.get(key.record.epoch - 1)!);
      keys.push(key);
    }
    return keys;
  } finally {
    client.close();
  }
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (error) {
    return (error as { code?: string }).code ?? String(error);
  }
}

describe('shared memory through a gateway process', () => {
  let gw: Gateway;
  let address: string;
  let db: Storage;
  const people = {} as Record<'owner' | 'writer' | 'reader' | 'outsider' | 'temp' | 'rival', TestAgent>;
  const sdk = {} as Record<keyof typeof people, SdkAgent>;
  let memoryId: string;
  /** What the removed reader held (captured before its removal), and what was written after. */
  let readerKeys: EpochKey[] = [];
  const SECRET = 'PLAN-7f3a: acquire the launch codes at 04:00, route via node 12';

  beforeAll(async () => {
    db = storage('main');
    // The gateway's own call log (one line per gRPC call) is the independent count of access attempts.
    gw = await startGatewayProcess(gatewayEnv('main', db, { PARLEY_GATEWAY_LOG_LEVEL: 'info' }));
    address = gw.readyLine['address'] as string;
    for (const [role, id] of [
      ['owner', 'planner-1'],
      ['writer', 'worker-2'],
      ['reader', 'worker-3'],
      ['outsider', 'intruder-4'],
      ['temp', 'contractor-5'],
      ['rival', 'worker-6'],
    ] as const) {
      people[role] = agent(id);
      sdk[role] = await online(people[role], address);
    }
  }, 120_000);

  it('a member reads and writes; a reader cannot write', async () => {
    const info = await sdk.owner.memory.create();
    memoryId = info.memoryId;
    expect(info.ownerId).toBe('planner-1');
    await sdk.owner.memory.grant(memoryId, 'worker-2', 'write');
    await sdk.owner.memory.grant(memoryId, 'worker-3', 'read');
    const w = await sdk.writer.memory.write(memoryId, 'plan', SECRET, { previousVersion: 0 });
    expect(w).toEqual({ version: 1n, alreadyApplied: false });
    const r = await sdk.reader.memory.read(memoryId, 'plan');
    expect(str(r.data)).toBe(SECRET);
    expect(r.writerId).toBe('worker-2');
    expect(r.version).toBe(1n);
    expect(await code(sdk.reader.memory.write(memoryId, 'plan', 'reader edit', { previousVersion: 1 }))).toBe('permission_denied');
    const got = await sdk.reader.memory.get(memoryId);
    expect(got.members.map((m) => `${m.agentId}:${m.access}`)).toEqual(['planner-1:admin', 'worker-2:write', 'worker-3:read']);
    expect((await sdk.reader.memory.list()).map((m) => m.memoryId)).toEqual([memoryId]);
    expect((await sdk.writer.memory.segments(memoryId)).map((s) => `${s.segmentId}@${s.version}`)).toEqual(['plan@1']);
  });

  it('a non-member is refused by the store (and the database check at the end shows it could not decrypt anyway)', async () => {
    for (const attempt of [
      sdk.outsider.memory.read(memoryId, 'plan'),
      sdk.outsider.memory.get(memoryId),
      sdk.outsider.memory.write(memoryId, 'plan', 'overwrite', { previousVersion: 1 }),
      sdk.outsider.memory.grant(memoryId, 'intruder-4', 'admin'),
    ]) {
      expect(await code(attempt)).toBe('permission_denied');
    }
    expect(await sdk.outsider.memory.list()).toEqual([]);
    // The SDK stops at the membership check; a hand-made, correctly signed ReadSegment reaches the store's ACL.
    const direct = raw(people.outsider, address);
    try {
      expect(await code(direct.readSegment({ memoryId, segmentId: 'plan' }))).toBe('permission_denied');
      expect(await code(direct.listSegments({ memoryId }))).toBe('permission_denied');
    } finally {
      direct.close();
    }
    // An unsigned call is refused too (and audited: see the last test).
    const unsigned = createClient(MemoryService, address, credentials.createInsecure());
    try {
      expect(await code(unsigned.readSegment({ memoryId, segmentId: 'plan' }))).toBe('unauthenticated');
    } finally {
      unsigned.close();
    }
  });

  it('a removed member cannot read anything written after its removal, and keeps what it had', async () => {
    readerKeys = await keysHeldBy(people.reader, address, memoryId);
    expect(readerKeys.map((k) => k.record.epoch)).toEqual([1]);
    const before = await sdk.reader.memory.read(memoryId, 'plan');
    const after = await sdk.owner.memory.revoke(memoryId, 'worker-3');
    expect(after.currentEpoch).toBe(2);
    expect(after.members.map((m) => m.agentId)).toEqual(['planner-1', 'worker-2']);
    const w2 = await sdk.writer.memory.write(memoryId, 'plan', 'v2: written after worker-3 left', { previousVersion: 1 });
    expect(w2.version).toBe(2n);
    expect((await sdk.writer.memory.read(memoryId, 'plan')).keyEpoch).toBe(2);
    expect(await code(sdk.reader.memory.read(memoryId, 'plan'))).toBe('permission_denied');
    expect(await code(sdk.reader.memory.get(memoryId))).toBe('permission_denied');
    // What it had: the version it read opens with the key it held.
    expect(str(openWrite(crypto, memoryId, readerKeys[0]!, before.record, before.ciphertext))).toBe(SECRET);
  });

  it('an expired grant stops working on time; the next write starts a new epoch without it', async () => {
    const expiresAtMs = Date.now() + 4_000;
    await sdk.owner.memory.grant(memoryId, 'contractor-5', 'read', { expiresAtMs });
    expect(str((await sdk.temp.memory.read(memoryId, 'plan')).data)).toContain('v2');
    const tempKeys = await keysHeldBy(people.temp, address, memoryId);
    while (Date.now() < expiresAtMs) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await code(sdk.temp.memory.read(memoryId, 'plan'))).toBe('expired');
    expect(await code(sdk.temp.memory.get(memoryId))).toBe('expired');
    const epochBefore = (await sdk.writer.memory.get(memoryId)).currentEpoch;
    const w3 = await sdk.writer.memory.write(memoryId, 'plan', 'v3: after the contractor left', { previousVersion: 2 });
    const r3 = await sdk.writer.memory.read(memoryId, 'plan');
    expect(r3.version).toBe(w3.version);
    expect(r3.keyEpoch).toBe(epochBefore + 1);
    // Nothing the contractor held opens v3.
    for (const k of tempKeys) expect(() => openWrite(crypto, memoryId, { ...k, record: { ...k.record, epoch: r3.keyEpoch } }, r3.record, r3.ciphertext)).toThrow();
  });

  it('two concurrent writers: one wins, the other gets a typed conflict with the current version and retries', async () => {
    await sdk.owner.memory.grant(memoryId, 'worker-6', 'write');
    // The writer's cached view predates worker-6's grant: losing to worker-6 is still a typed conflict (it re-verifies).
    await sdk.rival.memory.write(memoryId, 'notes', 'rival first', { previousVersion: 0 });
    const stale = await sdk.writer.memory.write(memoryId, 'notes', 'writer second', { previousVersion: 0 }).catch((e: unknown) => e);
    expect(isMemoryError(stale, 'conflict')).toBe(true);
    expect((stale as { currentVersion?: bigint }).currentVersion).toBe(1n);
    expect((stale as { current?: { writerId: string } }).current?.writerId).toBe('worker-6');
    const base = await sdk.writer.memory.read(memoryId, 'plan');
    const results = await Promise.allSettled([
      sdk.writer.memory.write(memoryId, 'plan', `${str(base.data)}\n+ writer`, { previousVersion: base.version }),
      sdk.rival.memory.write(memoryId, 'plan', `${str(base.data)}\n+ rival`, { previousVersion: base.version }),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    const conflict = lost[0]!.reason;
    expect(isMemoryError(conflict, 'conflict')).toBe(true);
    expect(conflict.currentVersion).toBe(base.version + 1n);
    const loser = results[0]!.status === 'rejected' ? sdk.writer : sdk.rival;
    const loserName = loser === sdk.writer ? 'writer' : 'rival';
    // The loser retries: read-modify-write on the version it was told.
    const retried = await loser.memory.update(memoryId, 'plan', (current) => `${str(current!.data)}\n+ ${loserName}`);
    expect(retried.version).toBe(base.version + 2n);
    const final = str((await sdk.owner.memory.read(memoryId, 'plan')).data);
    expect(final).toContain('+ writer');
    expect(final).toContain('+ rival');
    // Two updaters racing through update(): both land, no update lost.
    const [a, b] = await Promise.all([
      sdk.writer.memory.update(memoryId, 'counter', (c) => String(Number(c === undefined ? '0' : str(c.data)) + 1)),
      sdk.rival.memory.update(memoryId, 'counter', (c) => String(Number(c === undefined ? '0' : str(c.data)) + 1)),
    ]);
    expect([a.version, b.version].sort()).toEqual([1n, 2n]);
    expect(str((await sdk.owner.memory.read(memoryId, 'counter')).data)).toBe('2');
  });

  it('in the database: no plaintext, no key; nothing opens for the outsider or the removed member; one audit entry per call', async () => {
    for (const a of Object.values(sdk)) await a.close();
    expect(await gw.stop()).toBe(0);
    const calls = gw.stderr
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return undefined;
        }
      })
      .filter((l): l is Record<string, unknown> => l !== undefined && ['call', 'call refused', 'call failed'].includes(l['msg'] as string) && String(l['method']).startsWith('/parley.v1.MemoryService/'));
    const database = await db.open();
    try {
      // 1. No plaintext and no key anywhere in the memory tables.
      const tables = await database.query<{ table_name: string }>(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND (table_name LIKE 'memory%' OR table_name = 'memories' OR table_name LIKE 'gateway\\_audit\\_%')",
      );
      const needles = [text('launch codes'), text('written after worker-3 left'), text('after the contractor left'), text('+ rival'), ...readerKeys.map((k) => k.key.unsafeBytes())];
      let scanned = 0;
      for (const { table_name } of tables) {
        for (const row of await database.query<Record<string, unknown>>(`SELECT * FROM ${table_name}`)) {
          for (const value of Object.values(row)) {
            const b = Buffer.from(value instanceof Uint8Array ? value : text(String(value)));
            scanned += b.length;
            for (const n of needles) expect(b.includes(Buffer.from(n)), `${table_name} holds plaintext or a key`).toBe(false);
          }
        }
      }
      expect(scanned).toBeGreaterThan(5_000);

      // 2. The outsider opens no sealed key copy; the removed reader opens none of the epochs after its removal.
      const wraps = await database.query<{ wrap: unknown }>('SELECT wrap FROM memory_key_wraps WHERE memory_id = $1', [memoryId]);
      expect(wraps.length).toBeGreaterThanOrEqual(3);
      for (const row of wraps) {
        const w = fromBinary(KeyWrapSchema, dbBytes(row.wrap));
        expect(() => crypto.sealedBox.open(w.sealedKey, people.outsider.identity.signingKey)).toThrow(/decrypt_failed/);
        expect(() => crypto.sealedBox.open(w.sealedKey, people.reader.identity.signingKey)).toThrow(/decrypt_failed/);
      }
      // 3. Everything stored after the reader's removal is under epochs ≥ 2, whose records and back links its epoch-1 key cannot open.
      const segments = await database.query<{ record: unknown; ciphertext: unknown }>('SELECT record, ciphertext FROM memory_segments WHERE memory_id = $1', [memoryId]);
      expect(segments.length).toBe(3);
      for (const row of segments) {
        const record = fromBinary(WriteRecordSchema, dbBytes(row.record));
        expect(record.keyEpoch).toBeGreaterThanOrEqual(2);
        for (const k of readerKeys) {
          expect(() => openWrite(crypto, memoryId, { ...k, record: { ...k.record, epoch: record.keyEpoch } }, record, dbBytes(row.ciphertext))).toThrow(/decrypt_failed/);
        }
      }
      const epochs = await database.query<{ record: unknown }>('SELECT record FROM memory_epochs WHERE memory_id = $1 AND epoch >= 2', [memoryId]);
      for (const row of epochs) {
        const r = fromBinary(EpochRecordSchema, dbBytes(row.record));
        expect(() => crypto.xaead.open(readerKeys[0]!.key, r.backLink, backLinkAd(memoryId, r.epoch))).toThrow(/decrypt_failed/);
      }

      // 4. One audit entry per MemoryService call, refusals and the unsigned call included, with matching outcomes.
      // The gateway instance's own chain (§10.9): its table is listed in gateway_audit_chains.
      const chains = await database.query<{ table_name: string }>('SELECT table_name FROM gateway_audit_chains');
      expect(chains).toHaveLength(1);
      const audit = (await database.query<{ entry: unknown }>(`SELECT entry FROM ${chains[0]!.table_name} ORDER BY idx`)).map((r) => decodeEntry(dbBytes(r.entry)));
      const memoryEntries = audit.filter((e: AuditMessage) => e.outcome.startsWith('memory.'));
      expect(memoryEntries).toHaveLength(calls.length);
      const refused = calls.filter((c) => c['code'] !== 'ok').map((c) => c['code']).sort();
      const auditRefused = memoryEntries.map((e) => e.outcome.split(':')[1]).filter((c) => c !== 'ok' && c !== 'cas_conflict' && c !== 'already_applied').sort();
      expect(auditRefused).toEqual(refused);
      const outcomes = memoryEntries.map((e) => `${e.senderId}:${e.outcome}`);
      expect(outcomes).toEqual(expect.arrayContaining(['intruder-4:memory.read:permission_denied', 'unknown:memory.read:unauthenticated', 'worker-3:memory.read:permission_denied', 'contractor-5:memory.read:expired', 'planner-1:memory.revoke:ok']));
      expect(memoryEntries.filter((e) => e.outcome === 'memory.write:cas_conflict').length).toBeGreaterThanOrEqual(1);
      console.log(`[memory e2e] ${calls.length} MemoryService calls, ${memoryEntries.length} audit entries (${refused.length} refusals), ${scanned} stored bytes scanned on ${DATABASE_URL === undefined ? 'PGlite' : 'PostgreSQL'}`);
    } finally {
      await database.close();
    }
  }, 120_000);
});

describe('a store that lies is caught by the clients', () => {
  it('a changed ciphertext, a member the log never granted, and a rolled-back log are all refused', async () => {
    const db = storage('liar');
    const env = gatewayEnv('liar', db);
    let gw = await startGatewayProcess(env);
    const address = gw.readyLine['address'] as string;
    const [owner, writer, outsider] = [agent('planner-liar'), agent('worker-liar'), agent('intruder-liar')];
    const [o, w, x] = [await online(owner, address), await online(writer, address), await online(outsider, address)];
    const { memoryId } = await o.memory.create();
    await o.memory.grant(memoryId, 'worker-liar', 'write');
    await w.memory.write(memoryId, 'plan', 'the real plan', { previousVersion: 0 });
    expect(str((await o.memory.read(memoryId, 'plan')).data)).toBe('the real plan');
    /** Stops the gateway, lets `change` edit its database directly, starts it again on the same address. */
    const tamper = async (change: (database: Database) => Promise<void>): Promise<void> => {
      expect(await gw.stop()).toBe(0);
      const database = await db.open();
      try {
        await change(database);
      } finally {
        await database.close();
      }
      gw = await startGatewayProcess({ ...env, PARLEY_GATEWAY_LISTEN: address });
    };
    try {
      // 1. One ciphertext byte changed: not what its writer signed.
      await tamper(async (database) => {
        const [row] = await database.query<{ ciphertext: unknown }>('SELECT ciphertext FROM memory_segments WHERE memory_id = $1', [memoryId]);
        const changed = dbBytes(row!.ciphertext);
        changed[30]! ^= 1;
        await database.query('UPDATE memory_segments SET ciphertext = $2 WHERE memory_id = $1', [memoryId, changed]);
      });
      expect(await code(w.memory.read(memoryId, 'plan'))).toBe('bad_signature');
      // 2. The store lets an outsider in (a member row the log never granted): it passes the store, and holds no key.
      await tamper(async (database) => {
        await database.query('INSERT INTO memory_members (memory_id, member_id, access, public_key, expires_at_ms, certificate) SELECT memory_id, $2, 3, $3, 0, certificate FROM memory_members WHERE memory_id = $1 AND member_id = $4', [
          memoryId,
          'intruder-liar',
          outsider.publicKey,
          'worker-liar',
        ]);
      });
      // The store now answers it, but the verified log does not list it and no key copy is sealed to it.
      const read = await x.memory.read(memoryId, 'plan').then(() => undefined, (error: unknown) => error as Error & { code: string });
      expect(read?.code).toBe('permission_denied');
      expect(read?.message).toMatch(/holds no key/);
      expect(await code(x.memory.get(memoryId))).toBe('permission_denied');
      // 3. Roll the log back past a revocation the owner already saw.
      await o.memory.revoke(memoryId, 'worker-liar');
      await tamper(async (database) => {
        const [prev] = await database.query<{ entry_hash: unknown }>('SELECT entry_hash FROM memory_membership_log WHERE memory_id = $1 AND version = 2', [memoryId]);
        await database.query('DELETE FROM memory_membership_log WHERE memory_id = $1 AND version = 3', [memoryId]);
        await database.query('UPDATE memories SET membership_version = 2, membership_head = $2 WHERE memory_id = $1', [memoryId, dbBytes(prev!.entry_hash)]);
      });
      expect(await code(o.memory.get(memoryId))).toBe('replay');
    } finally {
      for (const a of [o, w, x]) await a.close();
      expect(await gw.stop()).toBe(0);
    }
  }, 240_000);
});

describe('gateway process SIGKILLed mid-write', () => {
  it('loses no acknowledged write and applies none twice', async () => {
    const db = storage('crash');
    const env = gatewayEnv('crash', db);
    let gw = await startGatewayProcess(env);
    const address = gw.readyLine['address'] as string;
    const owner = agent('planner-crash');
    const writers = ['w-1', 'w-2', 'w-3'].map((id) => agent(`worker-crash-${id}`));
    const ownerSdk = await online(owner, address);
    const sdks = [ownerSdk];
    // Online first: the gateway's directory then has their certificates for the grants.
    for (const w of writers) sdks.push(await online(w, address));
    const { memoryId } = await ownerSdk.memory.create();
    for (const w of writers) await ownerSdk.memory.grant(memoryId, w.identity.agentId, 'write');
    const ROUNDS = 40;
    const acked = new Map<string, { version: bigint; data: string }[]>();
    const failures: string[] = [];
    let retriedAfterCrash = 0;
    let killed = false;
    let crash: Promise<void> | undefined;
    const writerSdks = sdks.slice(1);
    await Promise.all(
      writerSdks.map(async (s, i) => {
        const segment = `progress-${i}`;
        const mine: { version: bigint; data: string }[] = [];
        acked.set(segment, mine);
        for (let n = 1; n <= ROUNDS; n++) {
          if (i === 0 && n === ROUNDS / 2 && crash === undefined) {
            crash = (async () => {
              gw.process.kill('SIGKILL');
              await gw.exited;
              killed = true;
              await new Promise((resolve) => setTimeout(resolve, 300));
              gw = await startGatewayProcess({ ...env, PARLEY_GATEWAY_LISTEN: address });
            })();
          }
          const data = `${segment} step ${n}`;
          try {
            const r = await s.memory.write(memoryId, segment, data, { previousVersion: BigInt(n - 1) });
            if (r.alreadyApplied) retriedAfterCrash++;
            mine.push({ version: r.version, data });
          } catch (error) {
            failures.push(`${segment}#${n}: ${isMemoryError(error) ? error.code : String(error)}`);
            break; // the next write's previous version would be unknown
          }
        }
      }),
    );
    await crash;
    try {
      expect(killed).toBe(true);
      for (const [segment, mine] of acked) {
        const r = await ownerSdk.memory.read(memoryId, segment);
        const last = mine[mine.length - 1]!;
        // Every acknowledged version is there (the last one acknowledged is what is stored), versions gapless.
        expect(mine.map((m) => m.version)).toEqual(mine.map((_, k) => BigInt(k + 1)));
        expect(r.version).toBe(last.version);
        expect(str(r.data)).toBe(last.data);
      }
      console.log(`[memory crash] ${writers.length} writers × ${ROUNDS} CAS writes, gateway SIGKILLed at write ${ROUNDS / 2}: acknowledged ${[...acked.values()].reduce((n, m) => n + m.length, 0)}, ` +
        `recognised as already applied after the restart ${retriedAfterCrash}, failed ${failures.length} (${failures.join(', ') || '-'})`);
      expect(failures).toEqual([]);
      expect([...acked.values()].every((m) => m.length === ROUNDS)).toBe(true);
    } finally {
      for (const s of sdks) await s.close();
      expect(await gw.stop()).toBe(0);
    }
  }, 180_000);
});

