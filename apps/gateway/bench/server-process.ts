// A bench server in its own process, as in production (the load generator and
// the server never share an event loop): either the gateway (startGateway from
// the built package, exactly what `parley-gateway serve` runs, minus the registry feed: its
// revocation set is refreshed locally) or the plain grpc-js relay peer.
//
// argv[2]: JSON { mode: 'gateway' | 'relay', issuerPublicKey (base64url), gatewayId?, database?, options? }.
// stdout: one JSON line {"ready":true,"address":…} when serving; then one JSON line per stdin command:
//   {"op":"mem"}    → {"heapUsed":…,"rss":…}     after two full GCs (run with --expose-gc)
//   {"op":"snapshot","path":…} → {"path":…}  a V8 heap snapshot after a full GC (BENCH_HEAP_SNAPSHOTS in case 6)
//   {"op":"stats"}  → {"statements":…,"commits":…,"cpuUs":…,"loopUs":…}  SQL statements sent through pg so far and
//                    the transactions they committed, process CPU time
//                    (every thread), time the main thread's event loop was busy
//   {"op":"stop"}   → closes and exits 0
import { createInterface } from 'node:readline';
import { writeHeapSnapshot } from 'node:v8';
import { Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';
import { createCrypto, fromBase64Url } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle } from '@parley/identity';
import pg from 'pg';
import pino from 'pino';
// The built gateway (dist), what `parley-gateway serve` runs: not the TypeScript sources through tsx, whose
// esbuild transform (keepNames) adds a property store to every named closure — ~2 KiB per stream, and CPU.
// (`npm run bench` builds first: the bench target depends on build.) Typed by the sources, loaded from dist.
const { Policy, startGateway } = (await import(new URL('../dist/index.js', import.meta.url).href)) as typeof import('../src/index.js');

interface Config {
  readonly mode: 'gateway' | 'relay';
  readonly issuerPublicKey: string;
  readonly gatewayId?: string;
  readonly database?: { readonly url: string; readonly schema?: string } | { readonly dataDir: string };
  /** Extra StartGatewayOptions (JSON-able). */
  readonly options?: Record<string, unknown>;
  /** Audit key seed and the other instances' audit public keys (base64url). */
  readonly auditSeed?: string;
  readonly auditTrusted?: readonly string[];
}

const config = JSON.parse(process.argv[2]!) as Config;
const out = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(line)}\n`);

// Every statement any pg client in this process sends (pool queries go through Client.prototype.query), and the
// transactions they commit, counted here rather than read from pg_stat_database: a backend that stays connected
// reports its counters up to 10 s late (PostgreSQL 15+ flushes them at most once a second, and when idle only
// after a 10 s timeout), which moved commits between the measured window and the ones around it. A statement
// outside BEGIN … COMMIT is its own transaction; a block is one.
let statements = 0;
let commits = 0;
const inTransaction = new WeakSet<object>();
// BENCH_STATEMENT_LOG=1: also counts statements by their text's first 70 characters (printed on stderr at exit).
const byText = process.env['BENCH_STATEMENT_LOG'] === undefined ? undefined : new Map<string, number>();
const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
(pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }).query = function (this: pg.Client, ...args: unknown[]) {
  statements++;
  const first = args[0];
  const text = typeof first === 'string' ? first : typeof (first as { text?: unknown } | undefined)?.text === 'string' ? (first as { text: string }).text : '';
  if (/^\s*(BEGIN|START\s+TRANSACTION)\b/i.test(text)) inTransaction.add(this);
  else if (/^\s*(COMMIT|END)\b/i.test(text)) {
    inTransaction.delete(this);
    commits++;
  } else if (/^\s*ROLLBACK\b/i.test(text)) inTransaction.delete(this);
  else if (!inTransaction.has(this)) commits++;
  if (byText !== undefined) {
    const key = text.replace(/\s+/g, ' ').trim().slice(0, 70);
    byText.set(key, (byText.get(key) ?? 0) + 1);
  }
  return query.apply(this, args);
};

const gc = (globalThis as { gc?: () => void }).gc;
let close: () => Promise<void>;
if (byText !== undefined) {
  process.on('exit', () => {
    for (const [text, n] of [...byText].sort((a, b) => b[1] - a[1])) process.stderr.write(`${String(n).padStart(7)} ${text}\n`);
  });
}

if (config.mode === 'gateway') {
  const crypto = await createCrypto();
  const trustBundle = TrustBundle.from(crypto, [{ publicKey: fromBase64Url(config.issuerPublicKey) }]);
  const revocations = new MemoryRevocationSet({ maxAgeMs: 600_000 });
  revocations.apply([], 0, Date.now());
  const refresh = setInterval(() => revocations.apply([], 0, Date.now()), 10_000);
  const running = await startGateway({
    crypto,
    gatewayId: config.gatewayId ?? 'gw-bench.local',
    trustBundle,
    revocations,
    policy: Policy.parse({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }),
    logger: pino({ level: 'error' }, pino.destination({ dest: 2, sync: false })),
    metrics: false,
    rateLimit: { ratePerSecond: 1_000_000, burst: 1_000_000 },
    ...(config.database === undefined ? {} : { database: config.database }),
    ...(config.auditSeed === undefined ? {} : { auditKey: crypto.ed25519.keyPairFromSeed(fromBase64Url(config.auditSeed)) }),
    ...(config.auditTrusted === undefined ? {} : { auditTrustedKeys: config.auditTrusted.map((k) => fromBase64Url(k)) }),
    ...(config.options ?? {}),
  });
  out({ ready: true, address: running.address });
  close = async () => {
    clearInterval(refresh);
    await running.close();
  };
} else {
  // The peer: a plain grpc-js bidi relay of raw Buffers. Frame: kind (1 message, 2 ack, 3 register) | from u16 | to u16 | …
  // It reads `to` and writes the frame, unchanged, to that stream.
  const identity = (b: Buffer): Buffer => b;
  const method = { path: '/bench.Relay/Relay', requestStream: true, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity };
  const server = new Server();
  const streams = new Map<number, ServerDuplexStream<Buffer, Buffer>>();
  server.addService({ relay: method }, {
    relay: (call: ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (frame: Buffer) => {
        if (frame[0] === 3) streams.set(frame.readUInt16BE(1), call);
        else streams.get(frame.readUInt16BE(3))?.write(frame);
      });
      call.on('end', () => {
        for (const [k, v] of streams) if (v === call) streams.delete(k);
        call.end();
      });
      call.on('error', () => undefined);
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  out({ ready: true, address: `127.0.0.1:${port}` });
  close = async () => void server.forceShutdown();
}

for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { op: string };
  if (cmd.op === 'mem') {
    gc?.();
    await new Promise((r) => setTimeout(r, 50));
    gc?.();
    const m = process.memoryUsage();
    out({ heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers });
  } else if (cmd.op === 'snapshot') {
    gc?.();
    out({ path: writeHeapSnapshot((cmd as { op: string; path?: string }).path) });
  } else if (cmd.op === 'stats') {
    const u = process.cpuUsage();
    out({ statements, commits, cpuUs: u.user + u.system, loopUs: performance.eventLoopUtilization().active * 1000 });
  } else if (cmd.op === 'stop') {
    await close();
    out({ stopped: true });
    process.exit(0);
  }
}
await close();
process.exit(0);
