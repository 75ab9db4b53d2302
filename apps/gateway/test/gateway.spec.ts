// End-to-end tests of the gateway over real gRPC on 127.0.0.1 (ephemeral ports):
// stream authentication, the Outbound check order, relaying a real Parley
// session between two agents, revocation while connected, and unary Send.
import { credentials } from '@grpc/grpc-js';
import { createIssuerKey } from '@parley/identity';
import { AgentGatewayService, BinaryWriter, DeliveryStatus, MessageType, SecureMessageSchema, WireType, fromBinary, toBinary, type HandshakeFrame, type SecureMessage } from '@parley/proto';
import { RpcError, createClient, type Client } from '@parley/rpc';
import { InitiatorHandshake, SessionError, isSessionError } from '@parley/session';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GatewayConnection } from '@parley/client';
import { handshakeFrameDigest, buildSendRequest, signReceipt } from '@parley/protocol';
import { Policy } from '../src/policy.js';
import { pushDelivery, type DeliveryWriter } from '../src/delivery.js';
import type { DeliveryInit } from '../src/context.js';
import type { RunningGateway, StartGatewayOptions } from '../src/server.js';
import { GO_AWAY_GRACE_MS, SECURITY_LOG_RATE, peerAddress } from '../src/context.js';
import { CONNECT_RATE } from '../src/routing.js';
import { DATABASE_URL, DAY, dropSchema, freshSchema, rawConnect, sleep, tempDir, waitFor, type RawStream, type TempDir } from '@parley/test-support';
import { GATEWAY_ID, connectAgent, createWorld, deliveredOrder, fakeEnvelope, rawStream, signedFakeEnvelope, type Agent, type ConnectedAgent, type World } from './fixtures.js';

let world: World;
let gw: RunningGateway;
/** What the malicious relay injected into `gw` does now to each Delivery (undefined: nothing). */
let tamper: ((delivery: DeliveryInit) => void) | undefined;

/**
 * A malicious relay, injected as `gw`'s delivery writer: it changes a deep copy of each Delivery
 * (never what the gateway holds for redelivery) with `tamper`, then writes it as the gateway would.
 */
const tamperingWriter: DeliveryWriter = (stream, delivery, encoded) => {
  if (tamper === undefined) return pushDelivery(stream, delivery, encoded);
  const copy = structuredClone(delivery); // reads (decodes) a stored item; the copy has no encoding
  tamper(copy);
  return pushDelivery(stream, copy, undefined);
};
const open: ConnectedAgent[] = [];

async function connect(agentId: string, agentType = 'worker', target: RunningGateway = gw): Promise<ConnectedAgent> {
  const a = await connectAgent(world, target.address, world.agent(agentId, { agentType }));
  open.push(a);
  return a;
}

/** A fresh step-1 handshake frame from `from` to `to`. */
function step1(a: ConnectedAgent, to: string): HandshakeFrame {
  return InitiatorHandshake.start(world.crypto, { identity: a.agent, trustBundle: world.trustBundle }, to).frame;
}

/** A raw Connect stream (no SDK) of a world agent on `gw`. */
function rawAgent(a: Agent, deliveryBatches = false): Promise<RawStream> {
  return rawConnect(world.crypto, gw.address, GATEWAY_ID, { agentId: a.agentId, certificate: a.certificate, secretKey: a.signingKey }, { deliveryBatches });
}

/** A shape-valid envelope signed by `from` (the gateway checks its signature, not its session). */
function signedEnvelope(from: Agent, to: string): SecureMessage {
  return signedFakeEnvelope(world.crypto, from, to);
}

/** Polls `gw`'s mailbox depth of `agentId` until `done` holds (at most 5 s); the last depth read. */
async function mailboxDepthUntil(agentId: string, done: (depth: number) => boolean): Promise<number> {
  let depth = await gw.mailbox.depth(agentId);
  for (let waited = 0; !done(depth) && waited < 5_000; waited += 20) {
    await sleep(20);
    depth = await gw.mailbox.depth(agentId);
  }
  return depth;
}

async function rejection(promise: Promise<unknown>): Promise<RpcError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(RpcError);
    return error as RpcError;
  }
  throw new Error('expected a rejection');
}

function securityLogs(code: string): Record<string, unknown>[] {
  return world.logs.filter((l) => l['event'] === 'security' && l['code'] === code);
}

const dirs: TempDir[] = [];
/**
 * A gateway on PGlite in a fresh directory of its own: it starts as a copy of the cached template with
 * the gateway's migrations applied (@parley/db), a fraction of a second where an in-memory PGlite runs
 * initdb and the migrations (seconds of WebAssembly) on every start.
 */
function start(overrides: Partial<StartGatewayOptions> = {}): Promise<RunningGateway> {
  const dir = tempDir('gateway-spec');
  dirs.push(dir);
  return world.start({ database: { dataDir: dir.path }, ...overrides });
}

beforeAll(async () => {
  world = await createWorld();
  gw = await start({ deliveryWriter: tamperingWriter });
});
// The world's revocation copy goes stale after 60 s (as a gateway's would): this file runs longer than that.
beforeEach(() => world.refresh());

afterAll(async () => {
  for (const a of open) a.close();
  await gw.close();
  for (const dir of dirs) dir.remove();
});

describe('relaying a Parley session', () => {
  it('establishes a session through the gateway and exchanges messages both ways, with receipts', async () => {
    const planner = await connect('planner-1', 'planner');
    const worker = await connect('worker-1');
    expect(planner.conn.welcome.agentId).toBe('planner-1');
    expect(planner.conn.gatewayId).toBe(GATEWAY_ID);

    const toWorker = await planner.manager.seal('worker-1', { type: MessageType.HANDOFF_REQUEST, content: { task: 'index', n: 1 } });
    const accepted = await planner.conn.sendEnvelope(toWorker.envelope);
    expect(accepted.status).toBe(DeliveryStatus.DELIVERED);
    expect(Buffer.from(accepted.itemHash)).toEqual(Buffer.from(toWorker.messageHash));
    await waitFor(() => worker.opened.length === 1, 5_000, 'worker to open');
    expect(worker.opened[0]!.content).toEqual({ task: 'index', n: 1 });

    const reply = await worker.manager.seal('planner-1', { type: MessageType.HANDOFF_APPROVAL, content: { ok: true } });
    await worker.conn.sendEnvelope(reply.envelope);
    await waitFor(() => planner.opened.length === 1, 5_000, 'planner to open');
    expect(planner.opened[0]!.content).toEqual({ ok: true });

    // The worker signs a receipt for what it opened; the gateway routes it back to the planner.
    const receipt = signReceipt(world.crypto, worker.agent, { messageHash: worker.opened[0]!.messageHash, senderId: 'planner-1', receivedAtMs: Date.now() });
    expect((await worker.conn.sendReceipt(receipt)).status).toBe(DeliveryStatus.DELIVERED);
    await waitFor(() => planner.receipts.length === 1, 5_000, 'receipt');
    expect(Buffer.from(planner.receipts[0]!.messageHash)).toEqual(Buffer.from(toWorker.messageHash));
    // A receipt with a bad signature is relayed: its addressee verifies it, not the gateway (§10.3 step 6;
    // packages/client/test/e2e/client.spec.ts shows the SDK refusing one and the genuine receipt settling the send).
    expect((await worker.conn.sendReceipt({ ...receipt, signature: new Uint8Array(64) })).status).toBe(DeliveryStatus.DELIVERED);
  });

  it('a reply\'s signer_certificate (§17.8) is relayed only when it is the certificate its signer authenticated the stream with', async () => {
    const planner = world.agent('planner-sc', { agentType: 'planner' });
    const worker = world.agent('worker-sc', { agentType: 'worker' });
    const other = world.agent('worker-sc2', { agentType: 'worker' });
    const w = await rawAgent(worker);
    const p = await rawAgent(planner);
    for (let i = 1n; i <= 3n; i++) p.send({ case: 'envelope', value: signedEnvelope(planner, worker.agentId) }, i);
    await waitFor(() => p.responses.filter((r) => r.kind.case === 'accepted').length === 3, 5_000, 'three accepted');
    const hashes = [1n, 2n, 3n].map((id) => {
      const a = p.responses.find((r) => r.kind.case === 'accepted' && r.kind.value.requestId === id);
      return a?.kind.case === 'accepted' ? a.kind.value.itemHash : new Uint8Array(32);
    });
    const receipt = (messageHash: Uint8Array, certificate?: typeof worker.certificate) => {
      const r = signReceipt(world.crypto, worker, { messageHash, senderId: planner.agentId, receivedAtMs: Date.now() });
      if (certificate !== undefined) r.signerCertificate = certificate;
      return r;
    };
    w.send({ case: 'receipt', value: receipt(hashes[0]!, other.certificate) }, 1n); // another agent's certificate
    const stale = world.agent('worker-sc', { agentType: 'worker' }); // the same agent's other (here: newer) certificate
    w.send({ case: 'receipt', value: receipt(hashes[1]!, stale.certificate) }, 2n);
    w.send({ case: 'receipt', value: receipt(hashes[2]!, worker.certificate) }, 3n); // the stream's own
    await waitFor(() => w.responses.filter((r) => r.kind.case === 'accepted' || r.kind.case === 'rejected').length === 3, 5_000, 'three verdicts');
    const verdicts = w.responses.flatMap((r) => (r.kind.case === 'accepted' ? [['accepted', r.kind.value.requestId]] : r.kind.case === 'rejected' ? [[r.kind.value.code, r.kind.value.requestId]] : []));
    expect(verdicts).toEqual([
      ['identity_mismatch', 1n],
      ['identity_mismatch', 2n],
      ['accepted', 3n],
    ]);
    await waitFor(() => p.responses.some((r) => r.kind.case === 'delivery' && r.kind.value.item.case === 'receipt'), 5_000, 'the receipt relayed');
    const relayed = p.responses.flatMap((r) => (r.kind.case === 'delivery' && r.kind.value.item.case === 'receipt' ? [r.kind.value.item.value] : []));
    expect(relayed).toHaveLength(1);
    expect(relayed[0]!.signerCertificate?.serial).toEqual(worker.certificate.serial);
  });

  it('a quiet receipt carrying the ack of its delivery: no Accepted, the delivery released, the receipt relayed (§10.3)', async () => {
    const planner = world.agent('planner-q', { agentType: 'planner' });
    const worker = world.agent('worker-q', { agentType: 'worker' });
    const w = await rawAgent(worker);
    const p = await rawAgent(planner);
    const welcome = w.responses.find((r) => r.kind.case === 'welcome');
    expect(welcome?.kind.case === 'welcome' && welcome.kind.value.outboundAcks).toBe(true);
    const deliveries = () => w.responses.flatMap((r) => (r.kind.case === 'delivery' && r.kind.value.item.case === 'envelope' ? [r.kind.value] : []));
    p.send({ case: 'envelope', value: signedEnvelope(planner, worker.agentId) }, 1n);
    p.send({ case: 'envelope', value: signedEnvelope(planner, worker.agentId) }, 2n);
    await waitFor(() => deliveries().length === 2, 5_000, 'two deliveries');
    const [d1] = deliveries();
    // An ack of a delivery id never written is refused like an Ack frame's (request_id 0, malformed).
    w.send({ case: 'receipt', value: signReceipt(world.crypto, worker, { messageHash: world.crypto.randomBytes(32), senderId: planner.agentId, receivedAtMs: Date.now() }) }, 9n, { ackDeliveryId: 99n, quiet: true });
    // The envelope's message hash is its item hash in the sender's Accepted.
    const accepted = p.responses.find((r) => r.kind.case === 'accepted' && r.kind.value.requestId === 1n);
    const messageHash = accepted?.kind.case === 'accepted' ? accepted.kind.value.itemHash : new Uint8Array(32);
    w.send({ case: 'receipt', value: signReceipt(world.crypto, worker, { messageHash, senderId: planner.agentId, receivedAtMs: Date.now() }) }, 10n, { ackDeliveryId: d1!.deliveryId, quiet: true });
    // A loud item after them: its Accepted comes after theirs would have (one stream's items in order).
    w.send({ case: 'receipt', value: signReceipt(world.crypto, worker, { messageHash, senderId: planner.agentId, receivedAtMs: Date.now() }) }, 11n);
    await waitFor(() => w.responses.some((r) => r.kind.case === 'accepted' && r.kind.value.requestId === 11n), 5_000, 'the loud receipt accepted');
    await waitFor(() => p.responses.some((r) => r.kind.case === 'delivery' && r.kind.value.item.case === 'receipt'), 5_000, 'the receipt relayed');
    const verdicts = w.responses.flatMap((r) =>
      r.kind.case === 'accepted' ? [['accepted', '', r.kind.value.requestId]] : r.kind.case === 'rejected' ? [['rejected', r.kind.value.code, r.kind.value.requestId]] : [],
    );
    expect(verdicts.filter((v) => v[2] !== 11n)).toEqual([
      ['rejected', 'malformed', 0n], // the bad ack
      ['rejected', 'policy_denied', 9n], // that receipt answers nothing relayed: refused, quiet or not
    ]);
    // The first delivery was released by the carried ack, the second was not: when the stream ends only the
    // second is spilled to the mailbox.
    w.close();
    await w.ended;
    await mailboxDepthUntil(worker.agentId, (depth) => depth > 0);
    await sleep(200); // both spills are one group-commit batch; a late second one would show here
    expect(await gw.mailbox.depth(worker.agentId)).toBe(1);
    p.close();
  });

  it('a backlog goes to an agent that asked for batches in deliveries frames, and one ack frame takes many ids (§10.3)', async () => {
    const planner = world.agent('planner-b', { agentType: 'planner' });
    const worker = world.agent('worker-b', { agentType: 'worker' });
    (await rawAgent(worker)).close(); // seen once (the gateway's directory), then offline
    const p = await rawAgent(planner);
    for (let i = 1; i <= 5; i++) p.send({ case: 'envelope', value: signedEnvelope(planner, worker.agentId) }, BigInt(i));
    await waitFor(() => p.responses.filter((r) => r.kind.case === 'accepted').length === 5, 5_000, 'five stored');
    expect(await gw.mailbox.depth(worker.agentId)).toBe(5);
    const w = await rawAgent(worker, true);
    await waitFor(() => w.responses.some((r) => r.kind.case === 'deliveries' || r.kind.case === 'delivery'), 5_000, 'the backlog');
    const frames = w.responses.filter((r) => r.kind.case === 'deliveries' || r.kind.case === 'delivery');
    expect(frames.map((f) => (f.kind.case === 'deliveries' ? f.kind.value.items.map((d) => d.deliveryId) : f.kind.case))).toEqual([[1n, 2n, 3n, 4n, 5n]]);
    // Counted for operators: one frame of 5 in parley_gateway_deliveries_per_frame.
    const perFrame = (await gw.gateway.metrics.deliveriesPerFrame.get()).values;
    expect(perFrame.find((v) => v.metricName === 'parley_gateway_deliveries_per_frame_sum')?.value).toBeGreaterThanOrEqual(5);
    // Too many ids in one frame: refused, none taken.
    w.ack(1n, Array.from({ length: 1025 }, (_, i) => BigInt(i + 2)));
    await waitFor(() => w.responses.some((r) => r.kind.case === 'rejected'), 5_000, 'the refusal');
    const refusal = w.responses.find((r) => r.kind.case === 'rejected')!;
    expect(refusal.kind.case === 'rejected' && [refusal.kind.value.requestId, refusal.kind.value.code]).toEqual([0n, 'malformed']);
    w.ack(1n, [2n, 3n, 4n, 5n]);
    expect(await mailboxDepthUntil(worker.agentId, (depth) => depth === 0)).toBe(0);
    w.close();
    p.close();
  });

  it('bounds the bytes held for a stream and for all streams: beyond them items are queued, and drained as acks free room', async () => {
    const g = await start({ maxInFlightBytes: 3_000, maxHeldBytes: 5_000 });
    try {
      const raw = (a: Agent): Promise<RawStream> => rawStream(world.crypto, g.address, a);
      const planner = world.agent('planner-held', { agentType: 'planner' });
      const workers = [world.agent('worker-held-1'), world.agent('worker-held-2')];
      const [w1, w2] = await Promise.all(workers.map(raw));
      const p = await raw(planner);
      const envelope = (to: Agent): SecureMessage => signedFakeEnvelope(world.crypto, planner, to.agentId, 1_200);
      const statuses = async (from: number, n: number): Promise<string[]> => {
        await waitFor(() => p.responses.filter((r) => r.kind.case === 'accepted').length === from + n, 5_000, 'accepted');
        return p.responses.flatMap((r) => (r.kind.case === 'accepted' ? [DeliveryStatus[r.kind.value.status]] : [])).slice(from);
      };
      let id = 0n;
      // ~1.4 KB each: two fit the stream's 3,000 bytes, the third does not.
      for (let i = 0; i < 4; i++) p.send({ case: 'envelope', value: envelope(workers[0]!) }, ++id);
      expect(await statuses(0, 4)).toEqual(['DELIVERED', 'DELIVERED', 'QUEUED', 'QUEUED']);
      // The second stream holds nothing: its first item goes live whatever the total; its second passes 5,000 in all.
      for (let i = 0; i < 2; i++) p.send({ case: 'envelope', value: envelope(workers[1]!) }, ++id);
      expect(await statuses(4, 2)).toEqual(['DELIVERED', 'QUEUED']);
      const held = (await g.gateway.metrics.registry.getSingleMetric('parley_gateway_held_bytes')!.get()).values[0]!.value;
      expect(held).toBeGreaterThan(3 * 1_200);
      expect(held).toBeLessThan(5_000 + 1_500);
      // Acks free room: everything arrives, in order, once each.
      const deliveries = (s: RawStream): bigint[] => s.responses.flatMap((r) => (r.kind.case === 'delivery' ? [r.kind.value.deliveryId] : []));
      const ackAll = (s: RawStream, acked: Set<bigint>): void => {
        for (const d of deliveries(s)) {
          if (acked.has(d)) continue;
          acked.add(d);
          s.ack(d);
        }
      };
      const acked = [new Set<bigint>(), new Set<bigint>()];
      await waitFor(
        () => {
          ackAll(w1!, acked[0]!);
          ackAll(w2!, acked[1]!);
          return deliveries(w1!).length === 4 && deliveries(w2!).length === 2;
        },
        5_000,
        'every item delivered',
      );
      expect(deliveries(w1!)).toEqual([1n, 2n, 3n, 4n]);
      expect(deliveries(w2!)).toEqual([1n, 2n]);
      for (const s of [w1!, w2!, p]) s.close();
    } finally {
      await g.close();
    }
  });

  it('rate tokens are charged in arrival order: an envelope checked early never takes the token of a handshake ahead of it', async () => {
    for (const verifyThreads of [1, 0]) {
      const K = 40;
      const g = await start({ rateLimit: { ratePerSecond: 0.001, burst: K + 1 }, verifyThreads });
      try {
        const planner = world.agent(`planner-order-${verifyThreads}`, { agentType: 'planner' });
        const worker = world.agent(`worker-order-${verifyThreads}`);
        const raw = (a: Agent): Promise<RawStream> => rawStream(world.crypto, g.address, a);
        const w = await raw(worker);
        const p = await raw(planner);
        for (let i = 1; i <= K; i++) p.send({ case: 'envelope', value: signedEnvelope(planner, worker.agentId) }, BigInt(i)); // tokens 1..K
        p.send({ case: 'handshake', value: InitiatorHandshake.start(world.crypto, { identity: planner, trustBundle: world.trustBundle }, worker.agentId).frame }, BigInt(K + 1)); // token K+1
        p.send({ case: 'envelope', value: signedEnvelope(planner, worker.agentId) }, BigInt(K + 2)); // none left
        const answer = (id: bigint): string | undefined => {
          for (const r of p.responses) {
            if (r.kind.case === 'accepted' && r.kind.value.requestId === id) return DeliveryStatus[r.kind.value.status];
            if (r.kind.case === 'rejected' && r.kind.value.requestId === id) return r.kind.value.code;
          }
          return undefined;
        };
        await waitFor(() => answer(BigInt(K + 2)) !== undefined && answer(BigInt(K + 1)) !== undefined, 5_000, 'the answers');
        expect([answer(BigInt(K)), answer(BigInt(K + 1)), answer(BigInt(K + 2))]).toEqual(['DELIVERED', 'DELIVERED', 'rate_limited']);
        w.close();
        p.close();
      } finally {
        await g.close();
      }
    }
  });

  it('a large item queued for want of room is not overtaken by later, smaller items of the same sender (PostgreSQL too)', async () => {
    for (const engine of DATABASE_URL === undefined ? ['pglite'] : ['pglite', 'postgres']) {
      const schema = freshSchema('gw_order');
      const g = await start({ maxInFlightBytes: 4_000, ...(engine === 'postgres' ? { database: { url: DATABASE_URL!, schema } } : {}) });
      try {
        const planner = world.agent(`planner-big-${engine}`, { agentType: 'planner' });
        const worker = world.agent(`worker-big-${engine}`);
        const raw = (a: Agent): Promise<RawStream> => rawStream(world.crypto, g.address, a);
        const w = await raw(worker);
        const p = await raw(planner);
        const envelope = (bytes: number): SecureMessage => signedFakeEnvelope(world.crypto, planner, worker.agentId, bytes);
        // Two of 2.5 KB (the second does not fit the 4,000 bytes the first holds), then ten small ones: all in one go.
        const sent = [envelope(2_500), envelope(2_500), ...Array.from({ length: 10 }, () => envelope(64))];
        sent.forEach((e, i) => p.send({ case: 'envelope', value: e }, BigInt(i + 1)));
        const got = (): number[] => deliveredOrder(w, sent);
        const acked = new Set<bigint>();
        await waitFor(
          () => {
            for (const r of w.responses) {
              if (r.kind.case !== 'delivery' || acked.has(r.kind.value.deliveryId)) continue;
              acked.add(r.kind.value.deliveryId);
              w.ack(r.kind.value.deliveryId);
            }
            return got().length === sent.length;
          },
          10_000,
          'every item',
        );
        expect(got()).toEqual(sent.map((_, i) => i + 1));
        w.close();
        p.close();
      } finally {
        await g.close();
        if (engine === 'postgres') await dropSchema(schema);
      }
    }
  });

  it('a gateway that flips a bit in a relayed envelope is caught by the recipient', async () => {
    const planner = await connect('planner-2', 'planner');
    const worker = await connect('worker-2');
    await planner.manager.session('worker-2');
    tamper = (delivery) => {
      if (delivery.item?.case === 'envelope') {
        const payload = delivery.item.value.encryptedPayload;
        if (payload instanceof Uint8Array) payload[5] = payload[5]! ^ 0x01;
      }
    };
    try {
      const sealed = await planner.manager.seal('worker-2', { type: MessageType.HANDOFF_REQUEST, content: { amount: 100 } });
      await planner.conn.sendEnvelope(sealed.envelope);
      await waitFor(() => worker.failures.length === 1, 5_000, 'rejection');
    } finally {
      tamper = undefined;
    }
    expect(isSessionError(worker.failures[0])).toBe(true);
    expect((worker.failures[0] as SessionError).code).toBe('bad_signature');
    expect(worker.opened).toHaveLength(0);
    expect(worker.events.some((e) => e.kind === 'security' && e.code === 'bad_signature')).toBe(true);
  });

  it('a gateway that flips a bit in any field of every relayed envelope: every one is rejected and reported', async () => {
    const planner = await connect('planner-9', 'planner');
    const worker = await connect('worker-9');
    await planner.manager.session('worker-9');
    const fields = ['senderId', 'recipientId', 'sessionId', 'nonce', 'timestampMs', 'payloadCommitment', 'encryptedPayload', 'authTag', 'signature'] as const;
    let n = 0;
    tamper = (delivery) => {
      if (delivery.item?.case !== 'envelope') return;
      const env = delivery.item.value as Record<string, unknown>;
      const field = fields[n % fields.length]!;
      const bit = (n * 7) % 8;
      n++;
      const v = env[field];
      if (v instanceof Uint8Array) v[(n * 13) % v.length] = v[(n * 13) % v.length]! ^ (1 << bit);
      else if (typeof v === 'string') env[field] = (v.charCodeAt(0) ^ 1).toString(36) + v.slice(1);
      else if (typeof v === 'bigint') env[field] = v ^ (1n << BigInt(bit));
    };
    const total = fields.length * 3;
    try {
      for (let i = 0; i < total; i++) {
        const sealed = await planner.manager.seal('worker-9', { type: MessageType.STATUS_UPDATE, content: { i } });
        await planner.conn.sendEnvelope(sealed.envelope);
      }
      await waitFor(() => worker.failures.length === total, 10_000, 'every tampered envelope rejected');
    } finally {
      tamper = undefined;
    }
    expect(worker.opened).toHaveLength(0);
    expect(worker.failures.every((f) => isSessionError(f))).toBe(true);
    expect(worker.events.filter((e) => e.kind === 'security')).toHaveLength(total);
    // The untampered path still works afterwards.
    const fine = await planner.manager.seal('worker-9', { type: MessageType.STATUS_UPDATE, content: 'ok' });
    await planner.conn.sendEnvelope(fine.envelope);
    await waitFor(() => worker.opened.length === 1, 5_000, 'clean message');
  });

  it('a replayed envelope is rejected by the recipient as replay', async () => {
    const planner = await connect('planner-3', 'planner');
    const worker = await connect('worker-3');
    const sealed = await planner.manager.seal('worker-3', { type: MessageType.CONSENSUS_VOTE, content: { vote: 'yes' } });
    await planner.conn.sendEnvelope(sealed.envelope);
    await planner.conn.sendEnvelope(sealed.envelope); // the gateway relays it; the recipient must refuse it
    await waitFor(() => worker.opened.length + worker.failures.length === 2, 5_000, 'both deliveries');
    expect(worker.opened).toHaveLength(1);
    expect((worker.failures[0] as SessionError).code).toBe('replay');
  });

  it('a new stream for the same agent replaces the old one with GoAway replaced', async () => {
    const first = await connect('worker-4');
    const second = await connect('worker-4');
    const goAway = await first.conn.closed;
    expect(goAway).toMatchObject({ code: 'replaced' });
    expect(gw.gateway.connectedAgents()).toContain('worker-4');
    second.close();
  });

  it('resets a stream told to go away whose agent stopped reading also when the gateway had few frames left to write', async () => {
    // 30 envelopes of 200 KB: the client's buffers take about half; the rest (and later the GoAway and the
    // status) wait in the gateway's HTTP/2 stream — fewer frames than grpc-js buffers, so its end() completes
    // at once and only a reset frees the stream.
    const N = 30;
    const { g, raw, worker, sender, stuck } = await stalledRecipient('stall2', N);
    try {
      const fresh = await raw(worker); // GoAway replaced for the stuck one
      await sleep(GO_AWAY_GRACE_MS + 1_000);
      // It reads again: had the stream not been reset, the frames still waiting would arrive, then the GoAway.
      stuck.close();
      await stuck.ended;
      expect(stuck.goAway()).toBeUndefined();
      expect(stuck.responses.filter((r) => r.kind.case === 'delivery').length).toBeLessThan(N);
      fresh.close();
      sender.close();
    } finally {
      await g.close();
    }
  }, 60_000);

  it('refuses an item carrying fields version 1 does not define, and answers an unknown recipient as a denied route', async () => {
    const planner = world.agent('planner-u', { agentType: 'planner' });
    const worker = world.agent('worker-u', { agentType: 'worker' });
    const otherPlanner = world.agent('planner-u2', { agentType: 'planner' });
    const w = await rawAgent(worker);
    const q = await rawAgent(otherPlanner);
    const p = await rawAgent(planner);
    const verdict = async (requestId: bigint) => {
      await waitFor(() => p.responses.some((r) => (r.kind.case === 'accepted' || r.kind.case === 'rejected') && r.kind.value.requestId === requestId), 5_000, `answer ${requestId}`);
      const r = p.responses.find((x) => (x.kind.case === 'accepted' || x.kind.case === 'rejected') && x.kind.value.requestId === requestId)!;
      return r.kind.case === 'rejected' ? { code: r.kind.value.code, message: r.kind.value.message } : { code: 'accepted', message: '' };
    };
    // A signed envelope padded with 100 KB of a field no version defines: its signature and hash still hold.
    const signed = signedEnvelope(planner, worker.agentId);
    const padding = new BinaryWriter().tag(99, WireType.LengthDelimited).bytes(new Uint8Array(100_000)).finish();
    const padded = fromBinary(SecureMessageSchema, Buffer.concat([toBinary(SecureMessageSchema, signed), padding]));
    expect(padded.$unknown?.length).toBe(1);
    p.send({ case: 'envelope', value: padded }, 1n);
    expect(await verdict(1n)).toEqual({ code: 'malformed', message: 'envelope carries fields version 1 does not define' });
    p.send({ case: 'envelope', value: signed }, 2n);
    expect((await verdict(2n)).code).toBe('accepted');
    // Never seen vs seen but not allowed (planner → planner): one answer, so which ids exist is not told.
    p.send({ case: 'envelope', value: signedEnvelope(planner, 'worker-nobody-u') }, 3n);
    p.send({ case: 'envelope', value: signedEnvelope(planner, otherPlanner.agentId) }, 4n);
    const [unknown, denied] = [await verdict(3n), await verdict(4n)];
    expect(unknown.code).toBe('policy_denied');
    expect(unknown).toEqual(denied);
    expect(securityLogs('policy_denied').some((l) => String(l['detail']).includes('worker-nobody-u'))).toBe(true); // the detail: in the log
    for (const s of [p, q, w]) s.close();
  });

  it('a stream told to go away whose agent stopped reading is reset after the grace period: what it held is delivered on the new stream', async () => {
    // 48 envelopes of 200 KB: far more than HTTP/2's windows and the client's buffers, so the gateway's writes back up.
    const N = 48;
    const { g, raw, worker, sender, stuck } = await stalledRecipient('stall', N);
    try {
      // The agent connects again: the old stream gets GoAway replaced, which it never reads, so it never ends; it held
      // its deliveries for as long as its connection stayed up. Now it is reset after the grace period, they go back
      // to the mailbox, and the new stream gets every one.
      const fresh = await raw(worker);
      const envelopes = () => fresh.responses.filter((r) => r.kind.case === 'delivery' && r.kind.value.item.case === 'envelope');
      // 48 × 200 KB spilled and read back through PGlite: seconds on a slow, busy machine.
      await waitFor(() => envelopes().length === N, GO_AWAY_GRACE_MS + 25_000, 'the held deliveries on the new stream');
      for (const r of envelopes()) if (r.kind.case === 'delivery') fresh.ack(r.kind.value.deliveryId);
      await waitFor(async () => (await g.mailbox.depth(worker.agentId)) === 0, 5_000, 'acked');
      fresh.close();
      stuck.close();
      sender.close();
    } finally {
      await g.close();
    }
  }, 60_000);
});

/**
 * On a gateway of its own with no rate limits (and room for every delivery held): `planner` sends `n` signed envelopes of 200 KB to `worker`, whose
 * stream has stopped reading, and every one is accepted (what the gateway cannot write waits in its HTTP/2 stream).
 * The caller closes the gateway.
 */
async function stalledRecipient(name: string, n: number): Promise<{ g: RunningGateway; raw: (a: Agent) => Promise<RawStream>; worker: Agent; sender: RawStream; stuck: RawStream }> {
  // Room for all n held (n × 200 KB is past the default 8 MiB a stream may hold): the stall is HTTP/2's here.
  const g = await start({ byteRateLimit: { ratePerSecond: 1e9, burst: 1e9 }, rateLimit: { ratePerSecond: 1e6, burst: 1e6 }, maxInFlightBytes: 64 * 1024 * 1024 });
  const raw = (a: Agent) => rawStream(world.crypto, g.address, a);
  const planner = world.agent(`planner-${name}`, { agentType: 'planner' });
  const worker = world.agent(`worker-${name}`, { agentType: 'worker' });
  const sender = await raw(planner);
  const stuck = await raw(worker);
  stuck.stopReading();
  for (let i = 0; i < n; i++) {
    sender.send({ case: 'envelope', value: signedFakeEnvelope(world.crypto, planner, worker.agentId, 200_000) }, BigInt(i + 1));
  }
  const accepted = () => sender.responses.filter((r) => r.kind.case === 'accepted');
  await waitFor(() => accepted().length === n, 20_000, 'all accepted');
  expect(accepted().every((r) => r.kind.case === 'accepted' && r.kind.value.status === DeliveryStatus.DELIVERED)).toBe(true);
  return { g, raw, worker, sender, stuck };
}

/** Connect streams to `target` that send nothing for `ms`: `outcome` is the error each ends with. */
function silentStreams(target: RunningGateway): { client: Client<typeof AgentGatewayService>; outcome: (ms: number) => Promise<RpcError> } {
  const client: Client<typeof AgentGatewayService> = createClient(AgentGatewayService, target.address, credentials.createInsecure());
  const silent = (ms: number) =>
    (async function* () {
      await new Promise((resolve) => setTimeout(resolve, ms));
      yield { kind: { case: undefined } } as const;
    })();
  const outcome = (ms: number): Promise<RpcError> =>
    rejection(
      (async () => {
        for await (const _ of client.connect(silent(ms))) {
          // nothing arrives
        }
      })(),
    );
  return { client, outcome };
}

describe('stream authentication', () => {
  const refused = async (identity: Parameters<typeof GatewayConnection.open>[0]['identity']): Promise<RpcError> =>
    rejection(GatewayConnection.open({ address: gw.address, crypto: world.crypto, identity }));

  it('refuses a bad auth signature', async () => {
    const agent = world.agent('worker-bad-sig');
    const other = world.agent('worker-other');
    const e = await refused({ ...agent, signingKey: other.signingKey });
    expect(e.code).toBe('bad_signature');
    expect(securityLogs('bad_signature').some((l) => l['agent'] === 'worker-bad-sig')).toBe(true);
  });

  it('refuses an unknown issuer, an expired and a revoked certificate', async () => {
    const rogue = world.agent('rogue');
    const otherIssuer = createIssuerKey(world.crypto, world.crypto.ed25519.generateKeyPair());
    expect((await refused(world.agent('worker-x', { issuer: otherIssuer }))).code).toBe('unknown_issuer');
    const now = Date.now();
    expect((await refused(world.agent('worker-old', { validFromMs: now - 10 * DAY, validUntilMs: now - DAY }))).code).toBe('expired');
    world.revoke({ kind: 'agent', agentId: 'rogue', reason: 'key compromise', revokedAtMs: now });
    expect((await refused(rogue)).code).toBe('revoked');
    expect(gw.gateway.connectedAgents()).not.toContain('rogue');
  });

  it('closes a stream that does not authenticate in time', async () => {
    const quick = await start({ authTimeoutMs: 200 });
    const client: Client<typeof AgentGatewayService> = createClient(AgentGatewayService, quick.address, credentials.createInsecure());
    try {
      const never = (async function* () {
        await new Promise((resolve) => setTimeout(resolve, 5_000));
        yield { kind: { case: undefined } } as const;
      })();
      const e = await rejection((async () => {
        for await (const _ of client.connect(never)) {
          // nothing arrives before the timeout
        }
      })());
      expect(e.code).toBe('deadline_exceeded'); // transient: an agent retries it
    } finally {
      client.close();
      await quick.close();
    }
  });

  it('refuses streams beyond maxAuthenticating while they wait for hello → auth, and takes one again once one ends', async () => {
    const small = await start({ authTimeoutMs: 600, maxAuthenticating: 2 });
    const { client, outcome } = silentStreams(small);
    try {
      const first = [outcome(5_000), outcome(5_000)];
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect((await outcome(5_000)).code).toBe('unavailable'); // the third, while two wait
      expect((await Promise.all(first)).map((e) => e.code)).toEqual(['deadline_exceeded', 'deadline_exceeded']);
      expect((await outcome(5_000)).code).toBe('deadline_exceeded'); // a slot is free again: it waits, and times out
    } finally {
      client.close();
      await small.close();
    }
  });

  it('refuses streams beyond maxAuthenticatingPerAddress from one address, below the bound of all', async () => {
    const small = await start({ authTimeoutMs: 600, maxAuthenticating: 10, maxAuthenticatingPerAddress: 2 });
    const { client, outcome } = silentStreams(small);
    try {
      const first = [outcome(5_000), outcome(5_000)];
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect((await outcome(5_000)).code).toBe('unavailable'); // the third from 127.0.0.1, while two wait
      expect(securityLogs('unavailable').some((l) => String(l['detail']).includes('from this address'))).toBe(true);
      expect((await Promise.all(first)).map((e) => e.code)).toEqual(['deadline_exceeded', 'deadline_exceeded']);
    } finally {
      client.close();
      await small.close();
    }
  });

  it('refuses an agent that opens streams too often (rate_limited, a security event), before writing anything for it', async () => {
    const a = world.agent('worker-flap');
    const opened: RawStream[] = [];
    let refused: unknown;
    for (let i = 0; i < 2 * CONNECT_RATE.burst && refused === undefined; i++) {
      try {
        opened.push(await rawAgent(a));
      } catch (error) {
        refused = error;
      }
    }
    expect(opened.length).toBeGreaterThanOrEqual(CONNECT_RATE.burst);
    expect(String(refused)).toMatch(/connects too often/);
    expect(securityLogs('rate_limited').some((l) => l['agent'] === 'worker-flap')).toBe(true);
    for (const s of opened) s.close();
  });

  it('logs a flood of refused frames from one agent at a bounded rate; the metric counts every one, and the rest are reported as suppressed', async () => {
    const a = world.agent('worker-noisy');
    const s = await rawAgent(a);
    const counted = async () =>
      (await gw.gateway.metrics.securityEvents.get()).values.find((v) => v.labels['stage'] === 'ack' && v.labels['code'] === 'malformed')?.value ?? 0;
    const before = await counted();
    const N = SECURITY_LOG_RATE.burst + 300;
    for (let i = 0; i < N; i++) s.ack(1_000_000n + BigInt(i)); // acks of deliveries that never were: ten bytes each
    await waitFor(() => s.responses.filter((r) => r.kind.case === 'rejected').length === N, 10_000, 'every ack refused');
    expect((await counted()) - before).toBe(N);
    const lines = () => world.logs.filter((l) => l['event'] === 'security' && (l['agent'] === 'worker-noisy' || l['subject'] === 'worker-noisy'));
    expect(lines().filter((l) => l['code'] === 'malformed').length).toBeLessThan(N - 100);
    await waitFor(() => lines().some((l) => l['code'] === 'suppressed'), 5_000, 'the suppressed events reported');
    s.close();
  });

  it('reads a peer\'s network address without its port', () => {
    expect(peerAddress('127.0.0.1:5050')).toBe('127.0.0.1');
    expect(peerAddress('[::1]:5050')).toBe('::1');
    expect(peerAddress('ipv4:10.0.0.2:443')).toBe('10.0.0.2');
    expect(peerAddress('unix:/run/parley.sock')).toBe('unix:/run/parley.sock');
  });
});

describe('Outbound checks', () => {
  it('rejects a spoofed sender as identity_mismatch and logs a security event without payload', async () => {
    const planner = await connect('planner-5', 'planner');
    await connect('worker-5');
    const envelope = fakeEnvelope(world.crypto, 'worker-5', 'planner-5');
    const e = await rejection(planner.conn.sendEnvelope(envelope));
    expect(e.code).toBe('identity_mismatch');
    const line = securityLogs('identity_mismatch').find((l) => l['agent'] === 'planner-5');
    expect(line).toMatchObject({ stage: 'outbound', peer: 'planner-5', request_id: expect.any(String) as unknown });
    expect(JSON.stringify(line)).not.toMatch(/encrypted|signature"|payload"/i);
    // The stream stays open: a valid item still goes through.
    expect((await planner.conn.sendFrame(step1(planner, 'worker-5'))).status).toBe(DeliveryStatus.DELIVERED);
  });

  it('enforces policy and picks up a reloaded policy without restart', async () => {
    const auditor = await connect('auditor-1', 'auditor');
    await connect('worker-6');
    expect((await rejection(auditor.conn.sendFrame(step1(auditor, 'worker-6')))).code).toBe('policy_denied');
    gw.gateway.setPolicy(
      Policy.parse({
        version: 1,
        rules: [
          { from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true },
          { from: { agent_id: 'auditor-1' }, to: { capability: 'tasks:read' } },
        ],
      }),
    );
    try {
      expect((await auditor.conn.sendFrame(step1(auditor, 'worker-6'))).status).toBe(DeliveryStatus.DELIVERED);
    } finally {
      gw.gateway.setPolicy(Policy.parse({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }));
    }
    expect((await rejection(auditor.conn.sendFrame(step1(auditor, 'worker-6')))).code).toBe('policy_denied');
  });

  it('refuses a recipient the gateway never saw with policy_denied (existence is not revealed)', async () => {
    const planner = await connect('planner-7', 'planner');
    expect((await rejection(planner.conn.sendFrame(step1(planner, 'worker-never-seen')))).code).toBe('policy_denied');
  });

  it('rate limits and size limits per agent', async () => {
    const small = await start({ rateLimit: { ratePerSecond: 0.5, burst: 3 }, maxFrameBytes: 4096 });
    try {
      const planner = await connect('planner-8', 'planner', small);
      await connect('worker-8', 'worker', small);
      // Oversize first: refused before the rate limit, so it costs no token.
      expect((await rejection(planner.conn.sendEnvelope(fakeEnvelope(world.crypto, 'planner-8', 'worker-8', 8192)))).code).toBe('too_large');
      for (let i = 0; i < 3; i++) expect((await planner.conn.sendFrame(step1(planner, 'worker-8'))).status).toBe(DeliveryStatus.DELIVERED);
      expect((await rejection(planner.conn.sendFrame(step1(planner, 'worker-8')))).code).toBe('rate_limited');
      expect(securityLogs('rate_limited').some((l) => l['agent'] === 'planner-8')).toBe(true);
    } finally {
      await small.close();
    }
  });

  it('refuses a malformed item and a forged envelope signature', async () => {
    const planner = await connect('planner-9', 'planner');
    await connect('worker-9');
    const bad = { ...step1(planner, 'worker-9'), step: 7 };
    expect((await rejection(planner.conn.sendFrame(bad))).code).toBe('malformed');
    expect((await rejection(planner.conn.sendEnvelope(fakeEnvelope(world.crypto, 'planner-9', 'worker-9')))).code).toBe('bad_signature');
  });
  it('pipelined envelopes, checked on the verify pool before their turn, are answered with the first failing check of each, in order', async () => {
    for (const verifyThreads of [1, 0]) {
      const g = await start({ rateLimit: { ratePerSecond: 0.01, burst: 4 }, verifyThreads });
      try {
        const tag = `p${verifyThreads}`;
        const planner = await connect(`planner-${tag}`, 'planner', g);
        const worker = await connect(`worker-${tag}`, 'worker', g);
        const other = world.agent(`planner-${tag}-other`, { agentType: 'planner' });
        const forged = fakeEnvelope(world.crypto, planner.agent.agentId, worker.agent.agentId);
        const answers = await Promise.allSettled([
          planner.conn.sendEnvelope(signedEnvelope(planner.agent, worker.agent.agentId)), // delivered (token 1)
          planner.conn.sendEnvelope(forged), // bad_signature (token 2)
          planner.conn.sendEnvelope(signedEnvelope(other, worker.agent.agentId)), // identity_mismatch (no token)
          planner.conn.sendEnvelope(fakeEnvelope(world.crypto, planner.agent.agentId, 'worker-never-seen')), // route first: policy_denied (token 3)
          planner.conn.sendEnvelope(signedEnvelope(planner.agent, worker.agent.agentId)), // delivered (token 4)
          planner.conn.sendEnvelope(signedEnvelope(planner.agent, worker.agent.agentId)), // rate_limited
        ]);
        const codes = answers.map((a) => (a.status === 'fulfilled' ? DeliveryStatus[a.value.status] : (a.reason as RpcError).code));
        expect(codes).toEqual(['DELIVERED', 'bad_signature', 'identity_mismatch', 'policy_denied', 'DELIVERED', 'rate_limited']);
        await waitFor(() => worker.failures.length === 2, 5_000); // both delivered (and refused by the worker: no session)
      } finally {
        await g.close();
      }
    }
  });
});

describe('revocation while connected', () => {
  it('closes a revoked agent’s stream within 2 s', async () => {
    const worker = await connect('worker-10');
    const start = Date.now();
    world.revoke({ kind: 'serial', serial: worker.agent.certificate.serial, reason: 'key compromise', revokedAtMs: start });
    const goAway = await worker.conn.closed;
    expect(Date.now() - start).toBeLessThan(2_000);
    expect(goAway).toMatchObject({ code: 'revoked' });
    expect(gw.gateway.connectedAgents()).not.toContain('worker-10');
    await expect(worker.conn.sendFrame(step1(worker, 'planner-1'))).rejects.toMatchObject({ code: 'revoked' });
  });

  it('onRevocation closes matching streams immediately', async () => {
    const worker = await connect('worker-11');
    expect(gw.gateway.onRevocation({ agentId: 'worker-11' })).toBe(1);
    expect(await worker.conn.closed).toMatchObject({ code: 'revoked' });
  });
});

describe('unary Send', () => {
  it('relays a signed item and refuses a replayed nonce', async () => {
    const planner = world.agent('planner-12', { agentType: 'planner' });
    await connect('worker-12');
    const client = createClient(AgentGatewayService, gw.address, credentials.createInsecure());
    try {
      const frame = InitiatorHandshake.start(world.crypto, { identity: planner, trustBundle: world.trustBundle }, 'worker-12').frame;
      const request = buildSendRequest(world.crypto, planner, GATEWAY_ID, { case: 'handshake', value: frame });
      const response = await client.send(request);
      expect(response.status).toBe(DeliveryStatus.DELIVERED);
      expect(Buffer.from(response.itemHash)).toEqual(Buffer.from(handshakeFrameDigest(world.crypto, frame)));
      await expect(client.send(request)).rejects.toMatchObject({ code: 'replay' });
      const stale = buildSendRequest(world.crypto, planner, GATEWAY_ID, { case: 'handshake', value: frame }, { nowMs: Date.now() - 120_000 });
      await expect(client.send(stale)).rejects.toMatchObject({ code: 'stale_timestamp' });
      const wrongGateway = buildSendRequest(world.crypto, planner, 'other-gateway', { case: 'handshake', value: frame });
      await expect(client.send(wrongGateway)).rejects.toMatchObject({ code: 'bad_signature' });
    } finally {
      client.close();
    }
  });
});
