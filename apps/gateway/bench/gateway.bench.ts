// gateway benchmark: 1 KiB application messages through an in-process gateway
// (real gRPC on 127.0.0.1, @parley/client agents in planner/worker pairs, each
// agent sending to its peer with a few sends in flight), beside — in the same
// run, rounds alternated (gateway, relay, gateway, relay …) so machine drift
// hits both — a plain @grpc/grpc-js bidi relay written here: raw Buffers, no
// TLS, no authentication, no signatures, no storage, no audit. Same agent
// count, same window, same byte sizes (the sealed envelope out, the signed
// receipt back).
//
//   1. messages/s and send → verified receipt latency (p50/p99), 10 and 100 agents
//   2. the gateway alone relaying pre-sealed envelopes (sealed beforehand;
//      only the relay is timed: send → the recipient's stream, acked, no receipt)
//   3. session establishment (Noise XX through the gateway) p50/p99, beside
//      three relayed frames of the same sizes on the plain relay
//
// Database: PGlite in memory by default; PostgreSQL (a fresh schema, dropped
// afterwards) when DATABASE_URL is set. BENCH_ROUNDS (default 2) rounds per case.
import { Client, Server, ServerCredentials, credentials, type ClientDuplexStream, type ServerDuplexStream } from '@grpc/grpc-js';
import { printTable, type Row, type Sample } from '@parley/bench-harness';
import { GatewayConnection, connect, type Agent as SdkAgent } from '@parley/client';
import { DeliveryReceiptSchema, MessageType, SecureMessageSchema, toBinary, type SecureMessage } from '@parley/proto';
import pg from 'pg';
import pino from 'pino';
import type { RunningGateway } from '../src/server.js';
import { GATEWAY_ID, createWorld, type Agent, type World } from '../test/fixtures.js';

const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 2);
const PAYLOAD = 'x'.repeat(1024);
const WINDOW = 4; // sends in flight per agent

// ---------------------------------------------------------------------------
// Small statistics

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

interface Run {
  readonly opsPerSec: number;
  readonly p50: number; // µs
  readonly p99: number; // µs
}

const throughput = (opsPerSec: number): Sample => ({ opsPerSec, usPerOp: 1e6 / opsPerSec });
const latency = (us: number): Sample => ({ opsPerSec: 1e6 / us, usPerOp: us });

/** `agents` senders, each `perAgent` operations with WINDOW in flight; wall-clock ops/s and per-op latency. */
async function drive(agents: number, perAgent: number, op: (agent: number, seq: number) => Promise<unknown>): Promise<Run> {
  const times: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: agents }, async (_, a) => {
      let next = 0;
      await Promise.all(
        Array.from({ length: WINDOW }, async () => {
          while (next < perAgent) {
            const seq = next++;
            const s = performance.now();
            await op(a, seq);
            times.push((performance.now() - s) * 1000);
          }
        }),
      );
    }),
  );
  const total = performance.now() - t0;
  times.sort((a, b) => a - b);
  return { opsPerSec: (agents * perAgent * 1000) / total, p50: percentile(times, 0.5), p99: percentile(times, 0.99) };
}

/** Alternates the two cases round by round; medians of each figure. */
async function alternate(ours: () => Promise<Run>, peer: () => Promise<Run>): Promise<{ ours: Run; peer: Run }> {
  const a: Run[] = [];
  const b: Run[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    a.push(await ours());
    b.push(await peer());
  }
  const med = (runs: Run[]): Run => ({ opsPerSec: median(runs.map((x) => x.opsPerSec)), p50: median(runs.map((x) => x.p50)), p99: median(runs.map((x) => x.p99)) });
  return { ours: med(a), peer: med(b) };
}

// ---------------------------------------------------------------------------
// The peer: a plain grpc-js bidi relay of raw Buffers.
//
// Frame: kind (1: message, 2: ack, 3: register) | from u16 | to u16 | id u32 | ack size u16 | body.
// The relay reads `to` and writes the frame, unchanged, to that stream.

const identity = (b: Buffer): Buffer => b;
const RELAY_METHOD = { path: '/bench.Relay/Relay', requestStream: true, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity };

async function startRelay(): Promise<{ address: string; close: () => void }> {
  const server = new Server();
  const streams = new Map<number, ServerDuplexStream<Buffer, Buffer>>();
  server.addService({ relay: RELAY_METHOD }, {
    relay: (call: ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (frame: Buffer) => {
        if (frame[0] === 3) streams.set(frame.readUInt16BE(1), call);
        else streams.get(frame.readUInt16BE(3))?.write(frame);
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { address: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
}

interface RelayAgent {
  /** Sends `bytes` to `to`; with ackBytes > 0 resolves when `to` answered with that many bytes, else at once. */
  send(to: number, bytes: number, ackBytes: number): Promise<void>;
  /** Messages received so far. */
  received(): number;
  close(): void;
}

function frame(kind: number, from: number, to: number, id: number, ackBytes: number, bodyBytes: number): Buffer {
  const b = Buffer.alloc(11 + bodyBytes, 0x78);
  b[0] = kind;
  b.writeUInt16BE(from, 1);
  b.writeUInt16BE(to, 3);
  b.writeUInt32BE(id, 5);
  b.writeUInt16BE(ackBytes, 9);
  return b;
}

async function relayAgent(self: number, client: Client): Promise<RelayAgent> {
  const stream: ClientDuplexStream<Buffer, Buffer> = client.makeBidiStreamRequest(RELAY_METHOD.path, identity, identity);
  const pending = new Map<number, () => void>();
  let nextId = 0;
  let count = 0;
  stream.on('data', (f: Buffer) => {
    if (f[0] === 1) {
      count++;
      const ackBytes = f.readUInt16BE(9);
      if (ackBytes > 0) stream.write(frame(2, self, f.readUInt16BE(1), f.readUInt32BE(5), 0, ackBytes));
    } else if (f[0] === 2) {
      const id = f.readUInt32BE(5);
      pending.get(id)?.();
      pending.delete(id);
    }
  });
  stream.on('error', () => undefined);
  stream.write(frame(3, self, 0, 0, 0, 0));
  await new Promise((resolve) => setTimeout(resolve, 5)); // registered
  return {
    send(to, bytes, ackBytes) {
      const id = nextId++;
      if (ackBytes === 0) {
        stream.write(frame(1, self, to, id, 0, bytes));
        return Promise.resolve();
      }
      return new Promise<void>((resolve) => {
        pending.set(id, resolve);
        stream.write(frame(1, self, to, id, ackBytes, bytes));
      });
    },
    received: () => count,
    close: () => stream.end(),
  };
}

// ---------------------------------------------------------------------------
// The gateway side

async function waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

async function sdkAgent(world: World, gw: RunningGateway, agent: Agent): Promise<SdkAgent> {
  const sdk = await connect({ gateway: gw.address, identity: agent, trustBundle: world.trustBundle, revocations: world.revocations, expectedGatewayId: GATEWAY_ID, crypto: world.crypto, sendTimeoutMs: 120_000 });
  void (async () => {
    for await (const m of sdk.messages()) await m.ack();
  })().catch(() => undefined);
  return sdk;
}

let pairCounter = 0;
/** `n` agents in planner/worker pairs (agent i sends to i ^ 1), connected, sessions established both ways. */
async function pairs(world: World, gw: RunningGateway, n: number): Promise<{ agents: Agent[]; sdks: SdkAgent[] }> {
  const tag = pairCounter++;
  const agents = Array.from({ length: n }, (_, i) => world.agent(`${i % 2 === 0 ? 'planner' : 'worker'}-${tag}-${i >> 1}`, { agentType: i % 2 === 0 ? 'planner' : 'worker' }));
  const sdks: SdkAgent[] = [];
  for (let i = 0; i < n; i += 25) sdks.push(...(await Promise.all(agents.slice(i, i + 25).map((a) => sdkAgent(world, gw, a)))));
  await Promise.all(sdks.map((s, i) => s.send(agents[i ^ 1]!.agentId, MessageType.TASK_ASSIGNMENT, PAYLOAD))); // warm-up: sessions, JIT
  return { agents, sdks };
}

// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now();
  const world = await createWorld();
  const schema = `gw_bench_${process.pid}`;
  const database = DATABASE_URL === undefined ? undefined : { url: DATABASE_URL, schema };
  const dbLabel = DATABASE_URL === undefined ? 'PGlite in memory' : `PostgreSQL (${new URL(DATABASE_URL).host}, schema ${schema})`;
  const gw = await world.start({
    logger: pino({ level: 'silent' }),
    metrics: false,
    rateLimit: { ratePerSecond: 1_000_000, burst: 1_000_000 },
    ...(database === undefined ? {} : { database }),
  });
  const relay = await startRelay();
  const relayClient = new Client(relay.address, credentials.createInsecure());
  console.log(`gateway bench — Node ${process.version}, database: ${dbLabel}, verify_signatures on, ${ROUNDS} round(s) per case alternated with the peer, ${WINDOW} sends in flight per agent`);

  try {
    // Byte sizes of the real items, for the relay to carry the same bytes.
    const probe = await pairs(world, gw, 2);
    const sealed = await probe.sdks[0]!.sessions.seal(probe.agents[1]!.agentId, { type: MessageType.TASK_ASSIGNMENT, content: PAYLOAD });
    const envelopeBytes = toBinary(SecureMessageSchema, sealed.envelope).length;
    const receipt = await probe.sdks[0]!.send(probe.agents[1]!.agentId, MessageType.TASK_ASSIGNMENT, PAYLOAD);
    const receiptBytes = toBinary(DeliveryReceiptSchema, receipt).length;
    console.log(`1 KiB content → SecureMessage ${envelopeBytes} B, DeliveryReceipt ${receiptBytes} B (the relay peer carries the same sizes)`);
    await Promise.all(probe.sdks.map((s) => s.close()));

    // 1. End to end: send → verified receipt.
    const rows: Row[] = [];
    let relayId = 0;
    for (const [n, perAgent] of [
      [10, 100],
      [100, 20],
    ] as const) {
      const { agents, sdks } = await pairs(world, gw, n);
      const base = relayId;
      relayId += n;
      const ragents = await Promise.all(Array.from({ length: n }, (_, i) => relayAgent(base + i, relayClient)));
      const { ours, peer } = await alternate(
        () => drive(n, perAgent, (a) => sdks[a]!.send(agents[a ^ 1]!.agentId, MessageType.TASK_ASSIGNMENT, PAYLOAD)),
        () => drive(n, perAgent, (a) => ragents[a]!.send(base + (a ^ 1), envelopeBytes, receiptBytes)),
      );
      rows.push(
        { label: `${n} agents: messages/s`, ours: throughput(ours.opsPerSec), peer: throughput(peer.opsPerSec), unit: 'ops/s' },
        { label: `${n} agents: p50 send→receipt`, ours: latency(ours.p50), peer: latency(peer.p50), unit: 'µs' },
        { label: `${n} agents: p99 send→receipt`, ours: latency(ours.p99), peer: latency(peer.p99), unit: 'µs' },
      );
      await Promise.all(sdks.map((s) => s.close()));
      for (const r of ragents) r.close();
    }
    printTable('1 KiB messages, send → verified receipt (gateway: session seal/open, signatures, mailbox, audit; peer: raw relay + ack)', 'grpc-js relay', rows);

    // 2. Pre-sealed envelopes: only the relay is timed.
    {
      const PAIRS = 5;
      const PER = 600; // below the 1000-message rekey threshold of one epoch
      const { agents, sdks } = await pairs(world, gw, PAIRS * 2);
      const envelopes: SecureMessage[][] = [];
      for (let p = 0; p < PAIRS; p++) {
        const batch: SecureMessage[] = [];
        for (let k = 0; k < PER * ROUNDS; k++) batch.push((await sdks[2 * p]!.sessions.seal(agents[2 * p + 1]!.agentId, { type: MessageType.TASK_ASSIGNMENT, content: PAYLOAD })).envelope);
        envelopes.push(batch);
      }
      await Promise.all(sdks.map((s) => s.close()));
      let delivered = 0;
      const conns = await Promise.all(
        agents.map((agent, i) =>
          GatewayConnection.open({ address: gw.address, crypto: world.crypto, identity: agent, expectedGatewayId: GATEWAY_ID, ...(i % 2 === 1 ? { onDelivery: () => void delivered++ } : {}) }),
        ),
      );
      const base = relayId;
      relayId += PAIRS * 2;
      const ragents = await Promise.all(Array.from({ length: PAIRS * 2 }, (_, i) => relayAgent(base + i, relayClient)));
      let round = 0;
      const { ours, peer } = await alternate(
        async () => {
          const from = round++ * PER;
          const target = delivered + PAIRS * PER;
          const t0 = performance.now();
          await Promise.all(Array.from({ length: PAIRS }, (_, p) => Promise.all(envelopes[p]!.slice(from, from + PER).map((e) => conns[2 * p]!.sendEnvelope(e)))));
          await waitUntil(() => delivered >= target, 120_000, 'pre-sealed deliveries');
          return { opsPerSec: (PAIRS * PER * 1000) / (performance.now() - t0), p50: Number.NaN, p99: Number.NaN };
        },
        async () => {
          const before = ragents.reduce((s, r) => s + r.received(), 0);
          const t0 = performance.now();
          for (let p = 0; p < PAIRS; p++) for (let k = 0; k < PER; k++) void ragents[2 * p]!.send(base + 2 * p + 1, envelopeBytes, 0);
          await waitUntil(() => ragents.reduce((s, r) => s + r.received(), 0) >= before + PAIRS * PER, 120_000, 'relay deliveries');
          return { opsPerSec: (PAIRS * PER * 1000) / (performance.now() - t0), p50: Number.NaN, p99: Number.NaN };
        },
      );
      printTable(`Pre-sealed envelopes (${envelopeBytes} B), ${PAIRS} senders × ${PER} pipelined, relay only (sealed beforehand; no receipts)`, 'grpc-js relay', [
        { label: 'envelopes/s', ours: throughput(ours.opsPerSec), peer: throughput(peer.opsPerSec), unit: 'ops/s' },
      ]);
      for (const c of conns) c.close();
      for (const r of ragents) r.close();
    }

    // 3. Session establishment through the gateway.
    {
      const COUNT = 40;
      const planner = world.agent('planner-hs', { agentType: 'planner' });
      const initiator = await sdkAgent(world, gw, planner);
      const workers = Array.from({ length: COUNT * ROUNDS }, (_, i) => world.agent(`worker-hs-${i}`));
      const responders: SdkAgent[] = [];
      for (let i = 0; i < workers.length; i += 20) responders.push(...(await Promise.all(workers.slice(i, i + 20).map((w) => sdkAgent(world, gw, w)))));
      const base = relayId;
      relayId += 2;
      const [ra, rb] = await Promise.all([relayAgent(base, relayClient), relayAgent(base + 1, relayClient)]);
      let next = 0;
      const { ours, peer } = await alternate(
        async () => {
          const times: number[] = [];
          for (let i = 0; i < COUNT; i++) {
            const t0 = performance.now();
            await initiator.sessions.session(workers[next++]!.agentId);
            times.push((performance.now() - t0) * 1000);
          }
          times.sort((a, b) => a - b);
          return { opsPerSec: Number.NaN, p50: percentile(times, 0.5), p99: percentile(times, 0.99) };
        },
        async () => {
          // Three legs A → B → A → B of handshake-sized frames (≈ 100 B, ≈ 700 B, ≈ 700 B with certificates).
          const times: number[] = [];
          for (let i = 0; i < COUNT; i++) {
            const t0 = performance.now();
            const before = rb!.received();
            await ra!.send(base + 1, 100, 700);
            await ra!.send(base + 1, 700, 0);
            await waitUntil(() => rb!.received() >= before + 2, 10_000, 'third leg');
            times.push((performance.now() - t0) * 1000);
          }
          times.sort((a, b) => a - b);
          return { opsPerSec: Number.NaN, p50: percentile(times, 0.5), p99: percentile(times, 0.99) };
        },
      );
      printTable(`Session establishment (Noise XX + certificates) through the gateway, ${COUNT} per round, sequential`, '3 relay legs', [
        { label: 'p50 establish', ours: latency(ours.p50), peer: latency(peer.p50), unit: 'µs' },
        { label: 'p99 establish', ours: latency(ours.p99), peer: latency(peer.p99), unit: 'µs' },
      ]);
      await initiator.close();
      await Promise.all(responders.map((r) => r.close()));
      ra!.close();
      rb!.close();
    }
  } finally {
    relayClient.close();
    relay.close();
    await gw.close();
    if (database !== undefined) {
      const client = new pg.Client({ connectionString: DATABASE_URL });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
    }
  }
  console.log(`\ntotal ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

await main();
