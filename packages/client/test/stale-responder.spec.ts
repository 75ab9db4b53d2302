// A responder whose revocation data is stale (PROTOCOL §17.3 item 7, §17.2 item 4). New-user walkthrough finding
// (HIGH): a worker started while its registry was down acked the planner's step 3, abandoned the handshake
// (`revocation_stale` at the certificate check) and answered every envelope behind it with a SessionReject; the
// planner resealed at once, six times within 200 ms, and failed all three sends `unknown_session` — the registry
// came back 8 s later and nothing was ever delivered. Now a step 1 or step 3 the responder cannot check is left
// unacknowledged (its handshake held), the envelopes behind it are held, none is refused, and everything is
// processed once the data is fresh; and a sender's second reject in a row waits for the resend backoff.
import { createCrypto, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { IdentityError, TrustBundle, createIssuerKey, issueCertificate, type IssuerKey, type RevocationChecker } from '@parley/identity';
import { DeliveryStatus, MessageType, type DeliveryReceipt, type HandshakeFrame, type SecureMessage, type SessionReject } from '@parley/proto';
import { SessionManager, messageHash, type LocalIdentity, type SessionManagerEvent } from '@parley/session';
import { signSessionReject } from '@parley/protocol';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AgentEvent, ConnectOptions, ReceivedMessage } from '../src/agent-options.js';
import type { GatewayConnection } from '../src/connection.js';
import { DurableState } from '../src/durable-state.js';
import { Handshakes } from '../src/handshakes.js';
import { Inbox } from '../src/inbox.js';
import { Lifecycle } from '../src/lifecycle.js';
import { Outbox } from '../src/outbox.js';
import type { SessionSnapshots } from '../src/session-snapshots.js';
import { connect, type Agent } from '../src/index.js';
import { standInRegistry } from './stand-in-registry.js';
import { standInRelay } from './stand-in-relay.js';

const DAY = 86_400_000;
let crypto: ParleyCrypto;
let issuer: IssuerKey;
let trustBundle: TrustBundle;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  crypto = await createCrypto();
  issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
});

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function identity(agentId: string): LocalIdentity {
  const keyPair = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, issuer, { agentId, identityPublicKey: keyPair.publicKey, agentType: 'worker', capabilities: [], validFromMs: now - DAY, validUntilMs: now + DAY });
  return { agentId, signingKey: keyPair.secretKey, certificate };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Alice (initiator) and Bob (responder) — Bob as the agent wires him: SessionManager, Handshakes, Inbox —, Bob's
 * revocation checker stale while `bob.stale` is true. The test is the gateway: it hands Bob what Alice relays,
 * and records what Bob acks and answers.
 */
function pair() {
  const alice = identity('alice');
  const bob = identity('bob');
  const state = { stale: true };
  const checker: RevocationChecker = {
    check: () => {
      if (state.stale) throw new IdentityError('revocation_stale', 'revocation data was never loaded');
      return { revoked: false };
    },
  };
  const toBob: HandshakeFrame[] = [];
  const bobEvents: (SessionManagerEvent | AgentEvent)[] = [];
  const acked: bigint[] = [];
  const replies: { case: string; id: bigint | undefined }[] = [];
  const receipts: DeliveryReceipt[] = [];
  const handed: ReceivedMessage[] = [];
  const m: { a?: SessionManager; b?: SessionManager; handshakes?: Handshakes } = {};
  m.a = new SessionManager({ crypto, handshakeTimeoutMs: 10_000, handshake: { identity: alice, trustBundle }, transport: { sendFrame: (f: HandshakeFrame) => void toBob.push(f) } });
  m.b = new SessionManager({
    crypto,
    handshakeTimeoutMs: 300, // a held step 3 must outlive it
    handshake: { identity: bob, trustBundle, revocations: checker },
    transport: { sendFrame: (f: HandshakeFrame) => void m.a!.handleFrame(f).catch(() => undefined) },
    onEvent: (e) => {
      m.handshakes?.onSessionEvent(e);
      bobEvents.push(e);
    },
  });
  cleanup.push(() => m.a!.close(), () => m.b!.close());
  const lifecycle = new Lifecycle();
  cleanup.push(() => void (lifecycle.closed = true));
  const conn = {
    isOpen: true,
    ack: (id: bigint) => void acked.push(id),
    sendReply: (item: { case: string; value: unknown }, id?: bigint) => {
      replies.push({ case: item.case, id });
      if (item.case === 'receipt') receipts.push(item.value as DeliveryReceipt);
      if (id !== undefined) acked.push(id);
    },
  } as unknown as GatewayConnection;
  const emit = (e: AgentEvent): void => void bobEvents.push(e);
  const inbox = new Inbox({
    crypto,
    lifecycle,
    options: { identity: bob } as unknown as ConnectOptions,
    manager: m.b,
    record: () => Promise.resolve(),
    durable: false,
    emit,
    captured: (fn) => (fn(), []),
    connection: () => conn,
    deliver: (x) => void handed.push(x),
    hold: (sid, item) => m.handshakes!.hold(sid, item),
  });
  m.handshakes = new Handshakes({
    crypto,
    identity: bob,
    manager: m.b,
    lifecycle,
    state: new DurableState(undefined, { snapshot: () => [], onFailure: () => undefined }),
    snapshots: { forget: () => undefined } as unknown as SessionSnapshots,
    emit,
    captured: (fn) => (fn(), []),
    openEnvelope: (item) => inbox.onEnvelope(item.envelope, item.conn, item.deliveryId),
  });
  const tick = setInterval(() => inbox.retryDeferred(), 250); // the agent's tick
  cleanup.push(() => clearInterval(tick));
  let next = 1n;
  return {
    state,
    a: m.a,
    b: m.b,
    handshakes: m.handshakes,
    toBob,
    acked,
    replies,
    receipts,
    handed,
    bobEvents,
    /** The next frame Alice relays to Bob. */
    async nextFrame(): Promise<HandshakeFrame> {
      await expect.poll(() => toBob.length).toBeGreaterThan(0);
      return toBob.shift()!;
    },
    /** The gateway delivers a frame to Bob; returns its delivery id. */
    frame(f: HandshakeFrame): bigint {
      const id = next++;
      void m.handshakes!.onFrame(f, () => void acked.push(id));
      return id;
    },
    envelope(e: SecureMessage): bigint {
      const id = next++;
      inbox.onEnvelope(e, conn, id);
      return id;
    },
    async seal(n: number): Promise<SecureMessage> {
      return (await m.a!.seal('bob', { type: MessageType.TASK_ASSIGNMENT, content: { n } })).envelope;
    },
  };
}

const abandoned = (events: readonly unknown[]): unknown[] => events.filter((e) => (e as { kind?: string }).kind === 'responder_abandoned');

describe('a responder whose revocation data is stale', () => {
  it('leaves a step 1 unacknowledged and unanswered; once the data is fresh it answers it, and the messages arrive once', async () => {
    const w = pair();
    const established = w.a.session('bob');
    const step1 = w.frame(await w.nextFrame());
    await sleep(600);
    expect(w.acked).toEqual([]); // the gateway keeps it
    expect(w.toBob).toEqual([]); // no step 2 went out, so no step 3 came back
    expect(w.handshakes.deferredFrames).toBe(1);
    expect(w.bobEvents.filter((e) => e.kind === 'security' && e.stage === 'handshake' && e.code === 'revocation_stale')).toHaveLength(1); // reported once

    w.state.stale = false;
    await expect.poll(() => w.acked, { timeout: 3_000 }).toContain(step1);
    const session = await established;
    const step3 = w.frame(await w.nextFrame());
    await expect.poll(() => w.acked).toContain(step3);
    for (const n of [1, 2, 3]) w.envelope(await w.seal(n));
    await expect.poll(() => w.handed.map((x) => x.content)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    for (const x of w.handed) await x.ack();
    expect(w.receipts).toHaveLength(3);
    expect(w.replies.map((r) => r.case)).not.toContain('sessionReject');
    expect(w.b.sessionById(session.idHex)).toBeDefined();
    expect(w.handshakes.deferredFrames).toBe(0);
  });

  it('leaves a step 3 unacknowledged and holds its handshake past the timeout, holds the envelopes behind it (no SessionReject); once fresh, each message arrives once', async () => {
    const w = pair();
    w.state.stale = false;
    const established = w.a.session('bob');
    const step1 = w.frame(await w.nextFrame());
    const session = await established; // Alice holds the session after writing step 3 …
    await expect.poll(() => w.acked).toEqual([step1]);
    w.state.stale = true; // … and Bob's data goes stale before he reads it (a registry outage, a restart)
    const step3 = await w.nextFrame();
    const e1 = await w.seal(1);
    const e2 = await w.seal(2);
    const e3 = await w.seal(3);
    const d1 = w.envelope(e1); // overtook step 3: held
    const s3 = w.frame(step3); // cannot be checked: left unacked, the handshake held
    const d2 = w.envelope(e2);
    const d3 = w.envelope(e3);
    await sleep(900); // three times the responder's handshake timeout
    expect(w.acked).toEqual([step1]);
    expect(w.replies).toEqual([]); // no SessionReject, no receipt
    expect(w.handed).toEqual([]);
    expect(abandoned(w.bobEvents)).toEqual([]);
    expect(w.b.isResponding(session.idHex)).toBe(true);

    // A later copy of the step 3 (a redelivery on a new stream) takes the place of the first, which is acked now.
    const s3again = w.frame(step3);
    expect(w.acked).toEqual([step1, s3]);
    expect(w.handshakes.deferredFrames).toBe(1);

    w.state.stale = false;
    await expect.poll(() => w.handed.map((x) => x.content), { timeout: 3_000 }).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(w.acked).toContain(s3again);
    expect(w.b.sessionById(session.idHex)).toBeDefined();
    for (const x of w.handed) await x.ack();
    expect(w.receipts).toHaveLength(3);
    expect(w.acked).toEqual(expect.arrayContaining([d1, d2, d3]));
    await sleep(500);
    expect(w.handed).toHaveLength(3); // each once
    expect(w.replies.map((r) => r.case)).toEqual(['receipt', 'receipt', 'receipt']);
    expect(abandoned(w.bobEvents)).toEqual([]);
  });
});

describe('the sender, refused session after session', () => {
  it('reseals the first refusal at once, and each further one only after the resend backoff: six refusals within milliseconds no longer exhaust the budget', async () => {
    const alice = identity('alice');
    const bob = identity('bob');
    const m: { a?: SessionManager; b?: SessionManager } = {};
    m.a = new SessionManager({ crypto, handshake: { identity: alice, trustBundle }, transport: { sendFrame: (f: HandshakeFrame) => void m.b!.handleFrame(f).catch(() => undefined) } });
    m.b = new SessionManager({ crypto, handshake: { identity: bob, trustBundle }, transport: { sendFrame: (f: HandshakeFrame) => void m.a!.handleFrame(f).catch(() => undefined) } });
    cleanup.push(() => m.a!.close(), () => m.b!.close());
    const sent: { at: number; envelope: SecureMessage }[] = [];
    const outbox: { o?: Outbox } = {};
    // Bob refuses every envelope at once with a genuine, signed SessionReject (what a responder that gave up on a
    // handshake did, within milliseconds each time).
    const conn = {
      isOpen: true,
      sendEnvelope: (e: SecureMessage) => {
        sent.push({ at: Date.now(), envelope: e });
        const reject: SessionReject = signSessionReject(crypto, bob, { sessionId: e.sessionId, messageHash: messageHash(crypto, e), senderId: 'alice', rejectedAtMs: Date.now() });
        setTimeout(() => outbox.o!.onSessionReject(reject), 1);
        return Promise.resolve({ status: DeliveryStatus.DELIVERED });
      },
    } as unknown as GatewayConnection;
    const events: AgentEvent[] = [];
    const lifecycle = new Lifecycle();
    outbox.o = new Outbox({ crypto, options: { identity: alice, resendIntervalMs: 200 } as unknown as ConnectOptions, manager: m.a, lifecycle, record: () => Promise.resolve(), durable: true, emit: (e) => void events.push(e), connection: () => conn });
    const tick = setInterval(() => outbox.o!.onTick(Date.now(), true), 25);
    cleanup.push(() => clearInterval(tick));
    const started = Date.now();
    await outbox.o.enqueue('bob', MessageType.TASK_ASSIGNMENT, { n: 1 }, { id: 'm1' });
    await sleep(300);
    // The original and its first reseal at once; the second reseal waits 200 ms.
    expect(sent.length).toBeLessThanOrEqual(3);
    expect(events.filter((e) => e.kind === 'send_settled')).toEqual([]);
    await expect.poll(() => events.filter((e) => e.kind === 'send_settled').length, { timeout: 10_000 }).toBe(1);
    // A genuine refusal of every session still ends the send after 5 reseals — only later, spaced by the backoff.
    const settled = events.find((e) => e.kind === 'send_settled')!;
    expect(settled).toMatchObject({ outcome: 'failed', error: { code: 'unknown_session' } });
    expect(sent).toHaveLength(6);
    const gaps = sent.slice(1).map((s, i) => s.at - sent[i]!.at);
    expect(gaps[0]).toBeLessThan(150); // the first reseal at once
    for (const [i, min] of [200, 400, 800, 1600].entries()) expect(gaps[i + 1]!).toBeGreaterThanOrEqual(min - 30);
    expect(Date.now() - started).toBeGreaterThan(3_000);
    expect(new Set(sent.map((s) => toHex(s.envelope.sessionId))).size).toBe(6); // each in a new session
  }, 20_000);
});

describe('agents on a relay, the recipient following a registry that is down when it starts', () => {
  it('three messages sent before it started reach its application once when the registry comes back; the sender gets three receipts and never reseals', async () => {
    const gw = await standInRelay();
    cleanup.push(() => gw.close());
    const reg = await standInRegistry(crypto, issuer);
    cleanup.push(() => reg.close());
    const events: Record<string, AgentEvent[]> = { alice: [], bob: [] };
    const received: ReceivedMessage[] = [];
    const start = async (id: string, extra: Partial<ConnectOptions>): Promise<Agent> => {
      const agent = await connect({
        gateway: gw.address,
        expectedGatewayId: 'gw-1',
        identity: identity(id),
        trustBundle,
        crypto,
        handshakeTimeoutMs: 2_000,
        resendIntervalMs: 500,
        reconnect: { initialDelayMs: 10, maxDelayMs: 100 },
        onEvent: (e) => void events[id]!.push(e),
        ...extra,
      });
      cleanup.push(() => agent.close());
      return agent;
    };
    reg.down = true;
    const alice = await start('alice', { registry: { address: reg.address } }); // never loaded: stale from the start
    void (async () => {
      try {
        for await (const msg of alice.messages()) {
          received.push(msg);
          await msg.ack();
        }
      } catch {
        // closed
      }
    })();
    const bob = await start('bob', {});
    const sends = [1, 2, 3].map((n) => bob.send('alice', MessageType.TASK_ASSIGNMENT, { n }, { id: `s${n}`, timeoutMs: 60_000 }));
    sends.forEach((p) => p.catch(() => undefined));
    await sleep(3_000); // Bob's handshakes time out (2 s) and are retried: nothing is refused, nothing is lost
    expect(received).toEqual([]);
    expect(bob.pendingSends()).toHaveLength(3);
    expect(gw.relayed('sessionReject')).toBe(0);

    reg.down = false;
    const receipts = await Promise.all(sends);
    expect(receipts.map((r) => r.recipientId)).toEqual(['alice', 'alice', 'alice']);
    await sleep(500);
    expect(received.map((x) => (x.content as { n: number }).n).sort()).toEqual([1, 2, 3]);
    expect(gw.relayed('sessionReject')).toBe(0);
    expect(events.bob!.filter((e) => e.kind === 'resealed')).toEqual([]);
  }, 60_000);
});
