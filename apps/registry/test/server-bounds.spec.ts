// The registry server in this process (PGlite, in memory) for what anonymous or concurrent callers can
// make it hold or write: concurrent issuer rotations keep the prepared key's file, revocation watches are
// bounded in all and per address and share their database reads, a rotating agent is rate limited, and
// a caller claiming a newer revocation list cannot write a log line per request.
// (The spawned `serve` process over both engines is test/load/server.spec.ts.)
import { existsSync } from 'node:fs';
import { Writable } from 'node:stream';
import { credentials } from '@grpc/grpc-js';
import { createCrypto, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey, keyId, type IssuerKey } from '@parley/identity';
import { ChallengePurpose, RegistryService } from '@parley/proto';
import { agentRequestSigner, operatorRequestSigner, rotationAuthorisationLayout, rotationProofLayout } from '@parley/protocol';
import { createClient, isRpcError, type Client } from '@parley/rpc';
import { tempDir } from '@parley/test-support';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { IssuerKeyFiles } from '../src/issuer-keys.js';
import { AGENT_READ_RATE } from '../src/service/auth.js';
import { DEFAULT_SETTINGS, RegistryServer, RegistryStore, applyMigrations, openDatabase, writeKeyFile, type Database } from '../src/index.js';

const PER_ADDRESS = 25;
// The default burst with a refill of one read a second: however slowly a busy machine answers the flood
// below, the bucket empties (at the default 50/s, 300 calls answered over 4 s never did on a slow CI machine).
const READ_RATE = { ratePerSecond: 1, burst: AGENT_READ_RATE.burst };

let crypto: ParleyCrypto;
let dir: ReturnType<typeof tempDir>;
let db: Database;
let store: RegistryStore;
let issuer: IssuerKey;
let keyFiles: IssuerKeyFiles;
let server: RegistryServer;
let op: Client<typeof RegistryService>;
let anon: Client<typeof RegistryService>;
let address: string;
const logs: Record<string, unknown>[] = [];
let n = 0;

beforeAll(async () => {
  crypto = await createCrypto();
  dir = tempDir('registry-bounds');
  db = await openDatabase({});
  await applyMigrations(db);
  store = new RegistryStore(db, crypto);
  issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  keyFiles = new IssuerKeyFiles(crypto, dir.path, undefined);
  writeKeyFile(crypto, keyFiles.activePath, 'parley-registry-issuer-key', issuer);
  const operator = crypto.ed25519.generateKeyPair();
  const registryId = crypto.randomBytes(16);
  await store.initialise({ registryId, issuer, operator: { publicKey: operator.publicKey, keyId: keyId(crypto, operator.publicKey), name: 'admin' }, nowMs: Date.now() });
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const logger = pino({ level: 'info' }, sink);
  server = new RegistryServer({
    crypto,
    store,
    keyFiles,
    logger,
    settings: { ...DEFAULT_SETTINGS, heartbeatMs: 600_000 },
    maxRevocationWatches: 1_000,
    maxRevocationWatchesPerAddress: PER_ADDRESS,
    agentReadRate: READ_RATE,
  });
  const { port } = await server.start('127.0.0.1:0');
  address = `127.0.0.1:${port}`;
  op = createClient(RegistryService, address, credentials.createInsecure(), { signer: operatorRequestSigner(crypto, operator, registryId), defaultTimeoutMs: 15_000 });
  anon = createClient(RegistryService, address, credentials.createInsecure(), { defaultTimeoutMs: 15_000 });
}, 60_000);

afterAll(async () => {
  op?.close();
  anon?.close();
  await server?.stop(0);
  await db?.close();
  dir?.remove();
});

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (isRpcError(error)) return error.code;
    throw error;
  }
  throw new Error('expected a failure');
}

async function register(): Promise<{ agentId: string; key: ReturnType<ParleyCrypto['ed25519']['generateKeyPair']> }> {
  const agentId = `bounds-${++n}`;
  const key = crypto.ed25519.generateKeyPair();
  const nowMs = Date.now();
  const challenge = await store.createChallenge(ChallengePurpose.REGISTER, nowMs + 60_000);
  await store.registerAgent(issuer, { agentId, identityPublicKey: key.publicKey, agentType: 'worker', capabilities: [], validFromMs: nowMs, validUntilMs: nowMs + 3_600_000, challenge, nowMs });
  return { agentId, key };
}

/** A watch that records what it receives, until stopped. */
function watch(afterVersion = 0n): { first: Promise<void>; versions: number[]; done: Promise<string>; stop(): void } {
  const controller = new AbortController();
  const versions: number[] = [];
  let firstSeen!: () => void;
  const first = new Promise<void>((resolve) => (firstSeen = resolve));
  const done = (async () => {
    try {
      for await (const batch of anon.watchRevocations({ afterVersion }, { signal: controller.signal })) {
        versions.push(...batch.entries.map((e) => Number(e.version)));
        firstSeen();
      }
      return 'ended';
    } catch (error) {
      firstSeen();
      return isRpcError(error) ? error.code : String(error);
    }
  })();
  return { first, versions, done, stop: () => controller.abort() };
}

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const securityEvents = (code: string, stage: string) => logs.filter((l) => l['event'] === 'security' && l['code'] === code && l['stage'] === stage);

describe('issuer rotation', () => {
  it('two concurrent RotateIssuer calls: one prepares, the other is refused, and the prepared key keeps its file (a restart loads it)', async () => {
    const results = await Promise.allSettled([op.rotateIssuer({ activateAfterMs: 600_000n }), op.rotateIssuer({ activateAfterMs: 600_000n })]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    expect(ok).toHaveLength(1);
    const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
    expect(isRpcError(refused.reason, 'failed_precondition')).toBe(true);
    const prepared = (await store.issuers()).find((i) => i.state === 'prepared')!;
    expect(toHex(prepared.keyId)).toBe(toHex(ok[0]!.value.prepared!.keyId));
    // What a restarted process does: find the prepared key's file by its key id.
    const loaded = new IssuerKeyFiles(crypto, dir.path, undefined).loadFor(await store.issuers());
    expect(loaded.keys.map((k) => toHex(k.keyId))).toEqual([toHex(issuer.keyId), toHex(prepared.keyId)]);
    expect(loaded.notes).toEqual([]);
    expect(existsSync(keyFiles.preparedPath(prepared.keyId))).toBe(true);
  });
});

describe('WatchRevocations', () => {
  it(`refuses a watch beyond ${PER_ADDRESS} from one address with UNAVAILABLE and a security event; a closed one frees its slot`, async () => {
    const watches = Array.from({ length: PER_ADDRESS }, () => watch());
    await Promise.all(watches.map((w) => w.first));
    const extra = watch();
    expect(await extra.done).toBe('unavailable');
    expect(securityEvents('unavailable', 'registry.WatchRevocations')).toHaveLength(1);
    expect(securityEvents('unavailable', 'registry.WatchRevocations')[0]!['detail']).toMatch(/from this address/);
    watches[0]!.stop();
    expect(await watches[0]!.done).toBe('cancelled');
    // The server releases the slot when the stream ends (its generator's finally).
    await until(async () => (await server.metrics.watchers.get()).values[0]?.value === PER_ADDRESS - 1, 'the cancelled watch to end on the server');
    const again = watch();
    await again.first;
    expect(again.versions).toBeDefined();
    again.stop();
    expect(await again.done).toBe('cancelled');
    for (const w of watches.slice(1)) w.stop();
    await Promise.all(watches.map((w) => w.done));
  });

  it('watchers share one database read per wake-up instead of one query per watcher', async () => {
    const agent = await register();
    await until(async () => (await server.metrics.watchers.get()).values[0]?.value === 0, 'the earlier watches to end on the server');
    const watches = Array.from({ length: 20 }, () => watch());
    await Promise.all(watches.map((w) => w.first));
    await until(async () => (await server.metrics.watchers.get()).values[0]?.value === 20, 'the watches to be open');
    const reads = vi.spyOn(store, 'revocationsAfter');
    try {
      const { entry } = await op.revokeAgent({ subject: { case: 'agentId', value: agent.agentId } });
      const version = Number(entry!.version);
      await until(() => watches.every((w) => w.versions.includes(version)), 'every watch to receive the revocation');
      // 20 watchers woken by one commit: before, 20 queries; now one per wake-up (two notifications at most:
      // the in-process one and LISTEN/NOTIFY, and a safety poll can coincide).
      expect(reads.mock.calls.length).toBeLessThanOrEqual(4);
    } finally {
      reads.mockRestore();
      for (const w of watches) w.stop();
      await Promise.all(watches.map((w) => w.done));
    }
  });
});

describe('RotateKey', () => {
  it('refuses a second rotation of one agent within a minute with rate_limited (RESOURCE_EXHAUSTED) and a security event', async () => {
    const registered = await register();
    const { agentId } = registered;
    let key = registered.key;
    const rotate = async () => {
      const { challenge } = await anon.createChallenge({ purpose: ChallengePurpose.ROTATE_KEY });
      const next = crypto.ed25519.generateKeyPair();
      const f = { registryId: (await anon.getTrustBundle({})).registryId, challenge, agentId, oldPublicKey: key.publicKey, newPublicKey: next.publicKey };
      await anon.rotateKey({
        agentId,
        newIdentityPublicKey: next.publicKey,
        challenge,
        oldKeySignature: crypto.ed25519.sign(rotationAuthorisationLayout(f), key.secretKey),
        newKeySignature: crypto.ed25519.sign(rotationProofLayout(f), next.secretKey),
      });
      key = next;
    };
    const before = (await op.getRevocationList({})).currentVersion;
    await rotate();
    expect(await codeOf(rotate())).toBe('rate_limited');
    expect((await op.getRevocationList({})).currentVersion).toBe(before + 1n);
    const events = securityEvents('rate_limited', 'registry.RotateKey');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ agent: agentId });
  });
});

describe('directory reads signed by an agent', () => {
  it(`are rate limited per agent key (burst ${READ_RATE.burst}, here ${READ_RATE.ratePerSecond}/s) before the nonce is written: a flood grows no table, logs a line a second, and leaves other agents alone`, async () => {
    const signed = async () => {
      const { agentId, key } = await register();
      const agent = (await store.agent(agentId, Date.now()))!;
      const registryId = (await anon.getTrustBundle({})).registryId;
      return createClient(RegistryService, address, credentials.createInsecure(), { signer: agentRequestSigner(crypto, { agentId, serial: agent.certificate.serial, secretKey: key.secretKey }, registryId), defaultTimeoutMs: 15_000 });
    };
    const nonces = async (): Promise<number> => Number((await db.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM operator_nonces'))[0]!.n);
    const flooder = await signed();
    const other = await signed();
    try {
      const before = await nonces();
      const t0 = Date.now();
      // All at once: one after the other, calls slower than the refill (a busy CI machine) never empty the bucket.
      const codes = await Promise.all(
        Array.from({ length: 3 * READ_RATE.burst }, () => flooder.getAgent({ agentId: 'bounds-1' }).then(() => 'ok', (e: unknown) => (isRpcError(e) ? e.code : String(e)))),
      );
      const seconds = (Date.now() - t0) / 1000;
      const ok = codes.filter((c) => c === 'ok').length;
      expect(new Set(codes)).toEqual(new Set(['ok', 'rate_limited']));
      expect(ok).toBeGreaterThanOrEqual(READ_RATE.burst);
      expect(ok).toBeLessThanOrEqual(READ_RATE.burst + Math.ceil(seconds * READ_RATE.ratePerSecond) + 1);
      // Only the answered calls wrote a nonce.
      expect((await nonces()) - before).toBe(ok);
      const lines = securityEvents('rate_limited', 'registry.GetAgent');
      expect(lines.length).toBeGreaterThanOrEqual(1);
      expect(lines.length).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
      // Another agent's bucket is its own.
      expect((await other.getAgent({ agentId: 'bounds-1' })).agent!.agentId).toBe('bounds-1');
    } finally {
      flooder.close();
      other.close();
    }
  });
});

describe('GetRevocationList beyond the current version', () => {
  it('refuses every such call, but logs the rollback at most once a minute in all (not once per claimed version)', async () => {
    const current = (await anon.getRevocationList({})).currentVersion;
    const rollbacks = () => logs.filter((l) => l['event'] === 'revocation_rollback').length;
    const before = rollbacks();
    for (let k = 1n; k <= 5n; k++) expect(await codeOf(anon.getRevocationList({ afterVersion: current + k }))).toBe('failed_precondition');
    expect(await codeOf(anon.watchRevocations({ afterVersion: current + 9n })[Symbol.asyncIterator]().next())).toBe('failed_precondition');
    expect(rollbacks() - before).toBe(1);
  });
});
