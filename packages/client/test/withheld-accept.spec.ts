// A gateway that never answers the agent's handshake frame (a responder's step 2) held every later delivery
// behind it for good — receipts, envelopes, nothing acked, no SessionReject sent — while it could push deliveries
// without a byte bound (a hostile-gateway review finding: 600 × 1 MB took the agent to 750 MB). Now the frame's
// answer is awaited at most the handshake timeout, and the deliveries waiting are bounded in bytes too.
import { create, DeliveryReceiptSchema, SecureMessageSchema, type HandshakeFrame } from '@parley/proto';
import { SessionManager } from '@parley/session';
import { afterEach, beforeAll, expect, it, vi } from 'vitest';
import { GatewayConnection, connect, type Agent } from '../src/index.js';
import { MAX_UNANSWERED } from '../src/connection.js';
import { standInGateway, type Push, type StandIn } from './stand-in-gateway.js';
import { testWorld, type TestWorld } from './world.js';

let world: TestWorld;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  world = await testWorld();
});

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** A stand-in gateway that runs `script` after each welcome and never answers a send (see stand-in-gateway.ts). */
async function standIn(script: (push: Push, stream: number) => void): Promise<StandIn> {
  const gw = await standInGateway({ welcomed: (stream, push) => script(push, stream) });
  cleanup.push(() => gw.close());
  return gw;
}

/** A genuine step 1 from `alice` to `bob` (its sender waits for a step 2 that never comes). */
async function stepOne(alice: ReturnType<TestWorld['agent']>): Promise<HandshakeFrame> {
  let frame!: HandshakeFrame;
  const sent = new Promise<void>((resolve) => {
    const manager = new SessionManager({ crypto: world.crypto, handshake: { identity: alice, trustBundle: world.trustBundle }, transport: { sendFrame: async (f) => void ((frame = f), resolve()) } });
    cleanup.push(() => manager.close());
    void manager.session('bob').catch(() => undefined);
  });
  await sent;
  return frame;
}

async function agent(address: string, bob: ReturnType<TestWorld['agent']>, handshakeTimeoutMs: number): Promise<Agent> {
  const a = await connect({ gateway: address, expectedGatewayId: 'gw-1', identity: bob, trustBundle: world.trustBundle, crypto: world.crypto, handshakeTimeoutMs, reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
  cleanup.push(() => a.close());
  return a;
}

function envelope(payloadBytes: number) {
  return create(SecureMessageSchema, { version: 1, senderId: 'alice', recipientId: 'bob', sessionId: world.crypto.randomBytes(16), nonce: 1n, timestampMs: BigInt(Date.now()), payloadCommitment: new Uint8Array(32), encryptedPayload: new Uint8Array(payloadBytes), authTag: new Uint8Array(32), signature: new Uint8Array(64) });
}

it('a handshake frame the gateway never answers holds later deliveries at most the handshake timeout: the envelope behind it is answered', async () => {
  const alice = world.agent('alice');
  const bob = world.agent('bob');
  const frame = await stepOne(alice);
  const gw = await standIn((push, stream) => {
    if (stream > 0) return;
    push({ kind: { case: 'delivery', value: { deliveryId: 1n, item: { case: 'handshake', value: frame } } } });
    push({ kind: { case: 'delivery', value: { deliveryId: 2n, item: { case: 'envelope', value: envelope(100) } } } }); // of a session bob does not have
  });
  await agent(gw.address, bob, 300);
  // Bob's step 2 goes out and is never answered; after 300 ms the envelope behind it is handled: a SessionReject.
  await expect.poll(() => gw.requests.map((s) => (s.kind.case === 'send' ? s.kind.value.item.case : s.kind.case)), { timeout: 5_000 }).toContain('sessionReject');
});

it('deliveries waiting behind one being handled are bounded in bytes: beyond 64 MiB the stream ends and the agent reconnects', async () => {
  const alice = world.agent('alice');
  const bob = world.agent('bob');
  const frame = await stepOne(alice);
  const gw = await standIn((push, stream) => {
    if (stream > 0) return;
    push({ kind: { case: 'delivery', value: { deliveryId: 1n, item: { case: 'handshake', value: frame } } } });
    for (let i = 0; i < 70; i++) push({ kind: { case: 'delivery', value: { deliveryId: BigInt(10 + i), item: { case: 'envelope', value: envelope(1_000_000) } } } });
  });
  await agent(gw.address, bob, 60_000); // the frame's answer would hold them a minute
  await expect.poll(() => gw.streams(), { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
});

it('close() cancels the call when the gateway does not end it after the half-close (nothing keeps the stream or the process alive)', async () => {
  // Review finding: against a gateway that ignores the half-close, close() left the Connect call open for good.
  const bob = world.agent('bob');
  const gw = await standInGateway({ ignoreEnd: true }); // the half-close is ignored: the call stays open from that side
  cleanup.push(() => gw.close());
  const conn = await GatewayConnection.open({ address: gw.address, crypto: world.crypto, identity: bob, expectedGatewayId: 'gw-1' });
  conn.close();
  await conn.closed; // the call ends (cancelled after the grace) — before: never (the test timed out)
  expect(conn.isOpen).toBe(false);
}, 15_000);

it('items the gateway leaves unanswered are bounded: beyond MAX_UNANSWERED refused, and when the oldest waited 30 s the stream is cancelled (the agent reconnects)', async () => {
  const bob = world.agent('bob');
  const gw = await standIn(() => undefined); // never answers a send
  const conn = await GatewayConnection.open({ address: gw.address, crypto: world.crypto, identity: bob, expectedGatewayId: 'gw-1' });
  cleanup.push(() => conn.close());
  const receipt = create(DeliveryReceiptSchema, { version: 1, messageHash: new Uint8Array(32), senderId: 'alice', recipientId: 'bob', receivedAtMs: 1n, signature: new Uint8Array(64) });
  const waiting = Array.from({ length: MAX_UNANSWERED }, () => conn.sendReceipt(receipt).catch((e: unknown) => e));
  await expect(conn.sendReceipt(receipt)).rejects.toMatchObject({ code: 'unavailable' }); // a burst: refused, the stream kept
  expect(conn.isOpen).toBe(true);
  vi.useFakeTimers({ toFake: ['Date'] });
  try {
    vi.setSystemTime(Date.now() + 31_000); // the oldest has waited 31 s: the gateway stopped answering
    await expect(conn.sendReceipt(receipt)).rejects.toMatchObject({ code: 'unavailable' });
  } finally {
    vi.useRealTimers();
  }
  await conn.closed;
  expect((await Promise.all(waiting)).every((e) => e instanceof Error)).toBe(true); // each fails, to be sent again on the next stream
}, 30_000);
