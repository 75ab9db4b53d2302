// Shared-memory benchmark: read and write latency and throughput of 1 KiB and
// 64 KiB segments through a REAL gateway process (`parley-gateway serve`,
// spawned here next to a real registry process, MemoryService over gRPC on
// 127.0.0.1, PGlite in a data directory or PostgreSQL with DATABASE_URL),
// beside — in the same run, rounds alternated (memory, redis, memory, redis …)
// so machine drift hits both — Redis at 127.0.0.1:6379 doing plain GET/SET of
// the same bytes (the `redis` npm client, RESP over TCP, no TLS, no
// authentication, no encryption, no durability beyond Redis's own defaults).
//
// What one memory write costs that a SET does not: XChaCha20-Poly1305 and an
// Ed25519 signature of the write record, an Ed25519 request signature, on the
// store the certificate and two signature checks, a persisted nonce, a
// transaction with the compare-and-set, the ACL and the quotas, and a signed
// audit entry. A read: request signature, certificate and ACL check, nonce,
// audit entry, and on the client the writer's signature, the digest and the
// AEAD.
//
//   latency:    one operation at a time, p50 (µs), per size
//   throughput: WINDOW operations in flight (distinct segments / keys), ops/s and MB/s
//
// BENCH_ROUNDS (default 3) rounds; BENCH_OPS (default 100) operations per round and case;
// BENCH_PROFILE_DIR writes the gateway process's CPU profile.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { printTable, type Row, type Sample } from '@parley/bench-harness';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey, issueCertificate, type IssuerKey } from '@parley/identity';
import { createClient as createRedis, RESP_TYPES } from 'redis';
import { MemoryClient, type MemoryIdentity } from '@parley/memory';
import { dropSchema, gatewayEnv, gatewayReady, pinCombinedTrustBundle, startApp, startRegistry, type RunningProcess, type TestRegistry } from '@parley/test-support';

const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const OPS = Number(process.env['BENCH_OPS'] ?? 100);
const WINDOW = 8;
const SIZES = [1024, 64 * 1024] as const;
const GATEWAY_ID = 'gw-bench';
const DAY = 86_400_000;

/** BENCH_PROFILE_DIR: write the gateway's CPU profile there (node --cpu-prof) to see where its time goes. */
const PROFILE_DIR = process.env['BENCH_PROFILE_DIR'];

// ---------------------------------------------------------------------------
// Statistics

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

interface Run {
  readonly p50: number; // µs
  readonly p99: number; // µs
  readonly opsPerSec: number;
}

/** `count` operations, `window` in flight; per-operation latency and wall-clock throughput. */
async function drive(count: number, window: number, op: (i: number) => Promise<unknown>): Promise<Run> {
  const times: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (next < count) {
        const i = next++;
        const s = performance.now();
        await op(i);
        times.push((performance.now() - s) * 1000);
      }
    }),
  );
  const total = performance.now() - t0;
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 0.5), p99: percentile(times, 0.99), opsPerSec: (count * 1000) / total };
}

async function alternate(ours: () => Promise<Run>, peer: () => Promise<Run>): Promise<{ ours: Run; peer: Run }> {
  const a: Run[] = [];
  const b: Run[] = [];
  await ours(); // warm-up (JIT, connections, caches)
  await peer();
  for (let r = 0; r < ROUNDS; r++) {
    a.push(await ours());
    b.push(await peer());
  }
  const med = (runs: Run[]): Run => ({ p50: median(runs.map((x) => x.p50)), p99: median(runs.map((x) => x.p99)), opsPerSec: median(runs.map((x) => x.opsPerSec)) });
  return { ours: med(a), peer: med(b) };
}

const latency = (us: number): Sample => ({ opsPerSec: 1e6 / us, usPerOp: us });
const throughput = (opsPerSec: number, bytes: number): Sample => ({ opsPerSec, usPerOp: 1e6 / opsPerSec, mbPerSec: (opsPerSec * bytes) / 1e6 });

// ---------------------------------------------------------------------------

function certified(crypto: ParleyCrypto, issuer: IssuerKey, agentId: string): MemoryIdentity {
  const kp = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, issuer, { agentId, identityPublicKey: kp.publicKey, agentType: 'worker', capabilities: [], validFromMs: now - DAY, validUntilMs: now + DAY });
  return { agentId, signingKey: kp.secretKey, certificate };
}

async function main(): Promise<void> {
  const crypto = await createCrypto();
  const dir = mkdtempSync(join(tmpdir(), 'parley-memory-bench-'));
  const schema = DATABASE_URL === undefined ? undefined : `memory_bench_${process.pid}`;
  let registry: TestRegistry | undefined;
  let gateway: RunningProcess | undefined;
  const redis = createRedis({ url: 'redis://127.0.0.1:6379' }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
  const clients: MemoryClient[] = [];
  try {
    await redis.connect();
    // A real registry (the gateway follows its revocation list) and a real gateway process (@parley/test-support),
    // which trusts the bench's own issuer too (its pinned bundle as is: trust_bundle_follow false).
    registry = await startRegistry();
    const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const trustBundle = pinCombinedTrustBundle(crypto, registry.trustBundleFile, [issuer], join(dir, 'bundle.json'));
    gateway = await startApp('gateway', ['serve'], {
      env: gatewayEnv({
        gatewayId: GATEWAY_ID,
        registryAddress: registry.address,
        trustBundleFile: join(dir, 'bundle.json'),
        followTrustBundle: false,
        dir,
        env: {
          PARLEY_GATEWAY_LOG_LEVEL: 'warn',
          ...(DATABASE_URL === undefined ? { PARLEY_GATEWAY_DATA_DIR: join(dir, 'gateway-data') } : { DATABASE_URL, PARLEY_GATEWAY_DB_SCHEMA: schema! }),
        },
      }),
      ready: gatewayReady(),
      ...(PROFILE_DIR === undefined ? {} : { nodeOptions: ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`] }),
    });
    const address = gateway.readyLine['address'] as string;
    const client = (who: MemoryIdentity): MemoryClient => {
      const c = new MemoryClient({ crypto, identity: who, address, serviceId: GATEWAY_ID, trustBundle, retryUnavailableMs: 0 });
      clients.push(c);
      return c;
    };
    const owner = certified(crypto, issuer, 'bench-owner');
    const ownerMemory = client(owner);
    const { memoryId } = await ownerMemory.create();

    console.log(
      `\nshared memory: ${OPS} ops per round and case, ${ROUNDS} rounds (medians), through a gateway process on ${DATABASE_URL === undefined ? 'PGlite (data dir)' : 'PostgreSQL'}; ` +
        `peer: Redis GET/SET of the same bytes at 127.0.0.1:6379, same run, rounds alternated`,
    );
    for (const size of SIZES) {
      const data = crypto.randomBytes(size);
      const buf = Buffer.from(data);
      const label = size === 1024 ? '1 KiB' : '64 KiB';
      // Sequential: one segment whose version chain grows (each write names the version it replaces).
      let version = 0n;
      const seg = `seq-${size}`;
      const writeSeq = (): Promise<Run> =>
        drive(OPS, 1, async () => {
          const r = await ownerMemory.write(memoryId, seg, data, { previousVersion: version });
          version = r.version;
        });
      const setSeq = (): Promise<Run> => drive(OPS, 1, () => redis.set(`parley-bench:${seg}`, buf));
      const w1 = await alternate(writeSeq, setSeq);
      const readSeq = (): Promise<Run> => drive(OPS, 1, () => ownerMemory.read(memoryId, seg));
      const getSeq = (): Promise<Run> => drive(OPS, 1, () => redis.get(`parley-bench:${seg}`));
      const r1 = await alternate(readSeq, getSeq);
      // WINDOW in flight: distinct segments (a CAS chain each), distinct keys.
      const versions = new Map<number, bigint>();
      const writePar = (): Promise<Run> =>
        laneDrive(OPS, async (k) => {
          const r = await ownerMemory.write(memoryId, `par-${size}-${k}`, data, { previousVersion: versions.get(k) ?? 0n });
          versions.set(k, r.version);
        });
      const setPar = (): Promise<Run> => drive(OPS, WINDOW, (i) => redis.set(`parley-bench:par-${size}-${i % WINDOW}`, buf));
      const wN = await alternate(writePar, setPar);
      const readPar = (): Promise<Run> => drive(OPS, WINDOW, (i) => ownerMemory.read(memoryId, `par-${size}-${i % WINDOW}`));
      const getPar = (): Promise<Run> => drive(OPS, WINDOW, (i) => redis.get(`parley-bench:par-${size}-${i % WINDOW}`));
      const rN = await alternate(readPar, getPar);
      const rows: Row[] = [
        { label: `write ${label}, p50 latency`, ours: latency(w1.ours.p50), peer: latency(w1.peer.p50), unit: 'µs' },
        { label: `write ${label}, p99 latency`, ours: latency(w1.ours.p99), peer: latency(w1.peer.p99), unit: 'µs' },
        { label: `read ${label}, p50 latency`, ours: latency(r1.ours.p50), peer: latency(r1.peer.p50), unit: 'µs' },
        { label: `read ${label}, p99 latency`, ours: latency(r1.ours.p99), peer: latency(r1.peer.p99), unit: 'µs' },
        { label: `write ${label}, ${WINDOW} in flight`, ours: throughput(wN.ours.opsPerSec, size), peer: throughput(wN.peer.opsPerSec, size), unit: 'ops/s' },
        { label: `read ${label}, ${WINDOW} in flight`, ours: throughput(rN.ours.opsPerSec, size), peer: throughput(rN.peer.opsPerSec, size), unit: 'ops/s' },
        { label: `write ${label}, ${WINDOW} in flight`, ours: throughput(wN.ours.opsPerSec, size), peer: throughput(wN.peer.opsPerSec, size), unit: 'MB/s' },
        { label: `read ${label}, ${WINDOW} in flight`, ours: throughput(rN.ours.opsPerSec, size), peer: throughput(rN.peer.opsPerSec, size), unit: 'MB/s' },
      ];
      printTable(`${label} segments (memory = MemoryService via the gateway process; redis = GET/SET)`, 'redis', rows);
    }
  } finally {
    for (const c of clients) c.close();
    await redis.del((await redis.keys('parley-bench:*')).map(String)).catch(() => undefined);
    await redis.quit().catch(() => undefined);
    await gateway?.stop();
    await registry?.cleanup();
    if (schema !== undefined) await dropSchema(schema);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** WINDOW lanes, lane k writing only segment k (no two writes to one segment in flight), OPS operations in all. */
async function laneDrive(count: number, op: (lane: number) => Promise<unknown>): Promise<Run> {
  const times: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: WINDOW }, async (_, lane) => {
      while (next < count) {
        next++;
        const s = performance.now();
        await op(lane);
        times.push((performance.now() - s) * 1000);
      }
    }),
  );
  const total = performance.now() - t0;
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 0.5), p99: percentile(times, 0.99), opsPerSec: (count * 1000) / total };
}

await main();
