// A first contact with an agent the gateway has never seen (docs/PROTOCOL.md §10.3, §17.2 item 6), without a gateway
// process: Alice's SessionManager relays through FirstContact (as the agent's transport does) to a stand-in gateway
// that refuses a step 1 to a recipient it never saw `policy_denied` unless the recipient's certificate is attached
// (then it applies its policy, stores the step 1 for the offline recipient — QUEUED — and remembers the certificate),
// and a stand-in registry answers GetAgent. Bob's SessionManager is the recipient, offline until `connectBob()`.
// Covers: lookup → the SAME step 1 again with the certificate → QUEUED → delivered and receipted; its resends carry
// the certificate; refused again with it → policy_denied; NOT_FOUND → policy_denied naming the cause; a certificate
// that does not verify → policy_denied and a `directory` security event; the registry down → retried until the
// sends expire (or it comes back); without `registry` → policy_denied at once saying what is missing; one lookup per
// peer for many sends; the bounded cache.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { toHex, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey, issueCertificate, type MemoryRevocationSet, type TrustBundle } from '@parley/identity';
import { AgentGatewayService, AgentStatus, DeliveryStatus, GetAgentResponseSchema, RegistryService, type ConnectRequest, type ConnectResponseSchema, type MessageInitShape, HandshakeFrameSchema, MessageType, create, toBinary, type Accepted, type AgentCertificate, type GetAgentResponse, type HandshakeFrame, type SecureMessage } from '@parley/proto';
import { RpcError, addService, type ServerDuplex } from '@parley/rpc';
import { SessionManager, type LocalIdentity } from '@parley/session';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AgentEvent, ConnectOptions } from '../src/agent-options.js';
import type { GatewayConnection } from '../src/connection.js';
import { CACHE_TTL_MS, FirstContact, MAX_CACHED_PEERS, type DirectorySecurityEvent } from '../src/first-contact.js';
import { Lifecycle } from '../src/lifecycle.js';
import { Outbox } from '../src/outbox.js';
import { ClientError, connect, signReceipt, type ClientErrorCode } from '../src/index.js';
import { testWorld, type TestWorld } from './world.js';

let tw: TestWorld;
let crypto: ParleyCrypto;
let alice: LocalIdentity;
let bob: LocalIdentity;
let trustBundle: TrustBundle;
let revocations: MemoryRevocationSet;

beforeAll(async () => {
  tw = await testWorld();
  ({ crypto, trustBundle, revocations } = tw);
  alice = tw.agent('alice');
  bob = tw.agent('bob');
});

const DAY = 86_400_000;
const hex = (frame: HandshakeFrame): string => toHex(toBinary(HandshakeFrameSchema, frame));
const accepted = (status: DeliveryStatus): Accepted => ({ status }) as unknown as Accepted;

/** One item as the stand-in gateway got it. */
interface Relayed {
  readonly frame: HandshakeFrame;
  readonly bytes: string;
  readonly certificate: AgentCertificate | undefined;
}

/** The stand-in registry: GetAgent over `agents`, or `unavailable` while `down`. */
interface Registry {
  readonly agents: Map<string, AgentCertificate>;
  down: boolean;
  calls: string[];
  /** Answers wait for this, when set. */
  gate?: Promise<void>;
  getAgent(agentId: string): Promise<GetAgentResponse>;
}

function registry(agents: [string, AgentCertificate][] = []): Registry {
  const r: Registry = {
    agents: new Map(agents),
    down: false,
    calls: [],
    async getAgent(agentId) {
      r.calls.push(agentId);
      await r.gate;
      if (r.down) throw new RpcError('unavailable', 'connect ECONNREFUSED 127.0.0.1:1');
      const certificate = r.agents.get(agentId);
      if (certificate === undefined) throw new RpcError('not_found', `no agent '${agentId}'`);
      return create(GetAgentResponseSchema, { agent: { agentId, agentType: 'worker', status: AgentStatus.ACTIVE, certificate } });
    },
  };
  return r;
}

function world(options: { registry?: Registry; maxAgeMs?: number; handshakeTimeoutMs?: number } = {}) {
  /** `refuseWithCertificate`: codes the next step 1 frames carrying a certificate are refused with, one each (a stale revocation list at the gateway, a reconnect, …). */
  const gateway = { known: new Set<string>(), deny: false, bobOnline: false, stored: [] as HandshakeFrame[], relayed: [] as Relayed[], refuseWithCertificate: [] as ClientErrorCode[] };
  const events: AgentEvent[] = [];
  const firstContact = new FirstContact({
    crypto,
    agentId: 'alice',
    getAgent: options.registry === undefined ? undefined : (id) => options.registry!.getAgent(id),
    trustBundle: () => trustBundle,
    revocations,
    emit: (e) => void events.push(e),
  });
  /** The gateway's side (apps/gateway routing, §10.3): unknown recipient → policy_denied, unless its certificate is attached. */
  const relay = (frame: HandshakeFrame, certificate: AgentCertificate | undefined): Promise<Accepted> => {
    gateway.relayed.push({ frame, bytes: hex(frame), certificate });
    const refused = certificate === undefined ? undefined : gateway.refuseWithCertificate.shift();
    if (refused !== undefined) return Promise.reject(new ClientError(refused, `refused ${refused} (stand-in)`));
    if (frame.step === 1 && frame.recipientId === 'bob') {
      if (!gateway.known.has('bob')) {
        if (certificate === undefined) return Promise.reject(new ClientError('policy_denied', 'recipient bob was never seen or its last certificate no longer verifies', { cause: new RpcError('policy_denied', 'x') }));
        if (certificate.agentId !== 'bob') return Promise.reject(new ClientError('identity_mismatch', 'recipient_certificate is for another agent'));
        if (gateway.deny) return Promise.reject(new ClientError('policy_denied', 'policy does not allow this route'));
        gateway.known.add('bob'); // remembered until bob connects with his own
      } else if (gateway.deny) return Promise.reject(new ClientError('policy_denied', 'policy does not allow this route'));
      if (!gateway.bobOnline) {
        gateway.stored.push(frame);
        return Promise.resolve(accepted(DeliveryStatus.QUEUED));
      }
    }
    void m.b!.handleFrame(frame).catch(() => undefined);
    return Promise.resolve(accepted(DeliveryStatus.DELIVERED));
  };
  const m: { a?: SessionManager; b?: SessionManager } = {};
  const ref: { box?: Outbox } = {};
  m.a = new SessionManager({
    crypto,
    handshake: { identity: alice, trustBundle, revocations },
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    queuedHandshakeUntil: (peerId) => ref.box?.waitingUntil(peerId),
    queuedHandshakeResendMs: 50,
    // As the agent's transport (agent.ts): every frame through FirstContact.
    transport: { sendFrame: async (frame) => ({ queued: (await firstContact.relay(frame, (cert) => relay(frame, cert))).status === DeliveryStatus.QUEUED }) },
    onEvent: (e) => {
      if (e.kind === 'established') firstContact.handshakeOver(e.session.idHex);
    },
  });
  m.b = new SessionManager({
    crypto,
    handshake: { identity: bob, trustBundle, revocations },
    transport: { sendFrame: (frame) => void m.a!.handleFrame(frame).catch(() => undefined) },
  });
  const sent: SecureMessage[] = [];
  const conn = {
    isOpen: true,
    sendEnvelope: (envelope: SecureMessage) => {
      sent.push(envelope);
      return Promise.resolve(accepted(DeliveryStatus.DELIVERED));
    },
  } as unknown as GatewayConnection;
  const outbox = new Outbox({
    crypto,
    options: { identity: alice, resendIntervalMs: 50, ...(options.maxAgeMs === undefined ? {} : { skew: { maxAgeMs: options.maxAgeMs } }) } as unknown as ConnectOptions,
    manager: m.a,
    lifecycle: new Lifecycle(),
    record: () => Promise.resolve(),
    durable: true,
    emit: (e) => void events.push(e),
    connection: () => conn,
  });
  ref.box = outbox;
  return {
    box: outbox,
    gateway,
    sent,
    events,
    recipient: m.b,
    step1: () => gateway.relayed.filter((r) => r.frame.step === 1),
    /** Bob connects for the first time: his mailbox (the stored step 1 frames) drains. */
    connectBob: () => {
      gateway.bobOnline = true;
      for (const f of gateway.stored.splice(0)) void m.b!.handleFrame(f).catch(() => undefined);
    },
    async send(n: number) {
      const entry = await outbox.enqueue('bob', MessageType.TASK_ASSIGNMENT, { n }, {});
      const result: { receipt?: unknown; error?: ClientError } = {};
      outbox.attach(entry, { resolve: (r) => (result.receipt = r), reject: (e) => (result.error = e) });
      return { entry, result };
    },
    settled: () => events.filter((e): e is Extract<AgentEvent, { kind: 'send_settled' }> => e.kind === 'send_settled'),
    close() {
      m.a!.close();
      m.b!.close();
    },
  };
}

describe('first contact with an agent the gateway never saw, with `registry`', () => {
  it('looks the recipient up, relays the SAME step 1 with its certificate (QUEUED), keeps it on the resends; Bob connects later and gets both messages', async () => {
    const reg = registry([['bob', bob.certificate]]);
    const w = world({ registry: reg });
    const sends = [await w.send(1), await w.send(2)];
    await vi.waitFor(() => expect(w.gateway.stored.length).toBeGreaterThanOrEqual(1));
    const [first, second] = w.step1();
    // Refused without a certificate, then the very same bytes with Bob's registry certificate attached.
    expect(first!.certificate).toBeUndefined();
    expect(second!.bytes).toBe(first!.bytes);
    expect(second!.certificate).toEqual(bob.certificate);
    expect(reg.calls).toEqual(['bob']);
    // While it waits for the offline recipient, the step 1 is resent byte for byte — with the certificate.
    await vi.waitFor(() => expect(w.step1().length).toBeGreaterThanOrEqual(4));
    for (const r of w.step1().slice(1)) expect([r.bytes === first!.bytes, r.certificate?.agentId]).toEqual([true, 'bob']);
    expect(w.settled()).toEqual([]);
    expect(w.box.pending().map((p) => p.state)).toEqual(['unsealed', 'unsealed']);
    w.connectBob();
    await vi.waitFor(() => expect(w.sent).toHaveLength(2));
    const opened = w.sent.map((e) => w.recipient.open(e));
    expect(opened.map((o) => o.content)).toEqual([{ n: 1 }, { n: 2 }]);
    for (const o of opened) w.box.onReceipt(signReceipt(crypto, bob, { messageHash: o.messageHash, senderId: 'alice', receivedAtMs: Date.now() }));
    expect(w.settled().map((e) => e.outcome)).toEqual(['delivered', 'delivered']);
    for (const { result } of sends) expect(result.receipt).toBeDefined();
    expect(reg.calls).toEqual(['bob']); // one lookup for the whole first contact
    expect(w.events.filter((e) => e.kind === 'security')).toEqual([]);
    w.close();
  });

  it('refused `policy_denied` again with the certificate attached: every waiting send settles `policy_denied` (the route is denied)', async () => {
    const reg = registry([['bob', bob.certificate]]);
    const w = world({ registry: reg });
    w.gateway.deny = true;
    const sends = [await w.send(1), await w.send(2)];
    await vi.waitFor(() => expect(w.settled()).toHaveLength(2));
    for (const { result } of sends) {
      expect(result.error?.code).toBe('policy_denied');
      expect(result.error?.message).toMatch(/registry certificate attached: the gateway's policy denies this route/);
      expect(result.error?.message.match(/\[policy_denied\]/g)).toHaveLength(1);
    }
    expect(w.step1().map((r) => r.certificate?.agentId)).toEqual([undefined, 'bob']);
    expect(w.step1()[1]!.bytes).toBe(w.step1()[0]!.bytes);
    expect(reg.calls).toEqual(['bob']);
    w.close();
  });

  it('the registry has no such agent: `policy_denied`, the message naming the cause', async () => {
    const reg = registry();
    const w = world({ registry: reg });
    const { result } = await w.send(1);
    await vi.waitFor(() => expect(w.settled()).toHaveLength(1));
    expect(result.error?.code).toBe('policy_denied');
    expect(result.error?.message).toMatch(/the registry has no agent with that id/);
    // Walkthrough nit: it read "'ghost' is unknown to the gateway (the route to this recipient is not allowed), and
    // the registry has no agent with that id" — unknown, or a denied route? The gateway's answer is quoted as its own.
    expect(result.error?.message).toMatch(/no agent 'bob': the registry has no agent with that id \(the gateway had refused the first contact as it refuses any id it never saw: "recipient bob was never seen/);
    expect(result.error?.message).not.toMatch(/unknown to the gateway/);
    expect(result.error?.message.match(/\[policy_denied\]/g)).toHaveLength(1);
    expect(w.events.filter((e) => e.kind === 'first_contact')).toEqual([]); // permanent: no "waiting" event
    expect(w.step1()).toHaveLength(1); // nothing to attach: not relayed again
    w.close();
  });

  it('a certificate that does not verify (another issuer; another agent id): `policy_denied` saying so, and a `directory` security event', async () => {
    const stranger = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const now = Date.now();
    const forged = issueCertificate(crypto, stranger, { agentId: 'bob', identityPublicKey: crypto.ed25519.generateKeyPair().publicKey, agentType: 'worker', capabilities: [], validFromMs: now - DAY, validUntilMs: now + DAY });
    const cases: [AgentCertificate, DirectorySecurityEvent['code']][] = [
      [forged, 'unknown_issuer'],
      [tw.agent('mallory').certificate, 'identity_mismatch'],
    ];
    for (const [certificate, code] of cases) {
      const w = world({ registry: registry([['bob', certificate]]) });
      const { result } = await w.send(1);
      await vi.waitFor(() => expect(w.settled()).toHaveLength(1));
      expect(result.error?.code).toBe('policy_denied');
      expect(result.error?.message).toMatch(/the certificate the registry returned for 'bob' does not verify/);
      expect(w.events.filter((e) => e.kind === 'security')).toEqual([expect.objectContaining({ kind: 'security', stage: 'directory', code, peerId: 'bob' })]);
      expect(w.step1()).toHaveLength(1); // never attached
      w.close();
    }
  });

  it('the registry down: not settled, the lookup retried on the backoff; the sends end `expired` if it never answers', async () => {
    const reg = registry([['bob', bob.certificate]]);
    reg.down = true;
    const w = world({ registry: reg, maxAgeMs: 1_500 });
    const { entry, result } = await w.send(1);
    await vi.waitFor(() => expect(reg.calls.length).toBeGreaterThanOrEqual(1));
    await vi.waitFor(() => {
      w.box.onTick(Date.now(), true);
      expect(reg.calls.length).toBeGreaterThanOrEqual(3); // retried on the outbox's backoff
    });
    expect(w.settled()).toEqual([]);
    expect(result.error).toBeUndefined();
    expect(w.box.pending()).toEqual([expect.objectContaining({ id: entry.id, state: 'unsealed' })]);
    // Walkthrough finding: nothing told the program why its sends were stuck. Each failed lookup is a `first_contact` event.
    const waiting = w.events.filter((e) => e.kind === 'first_contact');
    expect(waiting.length).toBeGreaterThanOrEqual(3);
    expect(waiting[0]).toEqual({ kind: 'first_contact', peerId: 'bob', code: 'unavailable', atMs: expect.any(Number), detail: expect.stringMatching(/registry lookup of its certificate failed: \[unavailable\] connect ECONNREFUSED/) });
    await vi.waitFor(
      () => {
        w.box.onTick(Date.now(), true);
        expect(w.settled()).toHaveLength(1);
      },
      { timeout: 5_000 },
    );
    expect(w.settled()[0]).toEqual(expect.objectContaining({ outcome: 'expired' }));
    expect(result.error?.code).toBe('expired');
    w.close();
  });

  it('the registry back before the sends expire: the next attempt gets the certificate and the send proceeds', async () => {
    const reg = registry([['bob', bob.certificate]]);
    reg.down = true;
    const w = world({ registry: reg });
    await w.send(1);
    await vi.waitFor(() => expect(reg.calls.length).toBeGreaterThanOrEqual(1));
    reg.down = false;
    await vi.waitFor(() => {
      w.box.onTick(Date.now(), true);
      expect(w.gateway.stored.length).toBeGreaterThanOrEqual(1);
    });
    w.connectBob();
    await vi.waitFor(() => expect(w.sent).toHaveLength(1));
    expect(w.recipient.open(w.sent[0]!).content).toEqual({ n: 1 });
    w.close();
  });

  it('one lookup per peer: many concurrent sends, and concurrent step 1 frames to the same peer, share it', async () => {
    const reg = registry([['bob', bob.certificate]]);
    let open!: () => void;
    reg.gate = new Promise<void>((resolve) => (open = resolve));
    const w = world({ registry: reg });
    await Promise.all(Array.from({ length: 20 }, (_, i) => w.send(i)));
    await vi.waitFor(() => expect(reg.calls).toHaveLength(1));
    open();
    await vi.waitFor(() => expect(w.gateway.stored.length).toBeGreaterThanOrEqual(1));
    expect(reg.calls).toEqual(['bob']);
    w.close();

    // Two different handshakes' step 1 frames refused at once (two managers of Alice's, say): one lookup.
    const reg2 = registry([['bob', bob.certificate]]);
    let open2!: () => void;
    reg2.gate = new Promise<void>((resolve) => (open2 = resolve));
    const fc = new FirstContact({ crypto, agentId: 'alice', getAgent: (id) => reg2.getAgent(id), trustBundle: () => trustBundle, emit: () => undefined });
    const attached: (AgentCertificate | undefined)[] = [];
    const send = (cert: AgentCertificate | undefined): Promise<Accepted> => {
      attached.push(cert);
      return cert === undefined ? Promise.reject(new ClientError('policy_denied', 'never seen')) : Promise.resolve(accepted(DeliveryStatus.QUEUED));
    };
    const frame = (i: number): HandshakeFrame => ({ version: 1, sessionId: new Uint8Array(16).fill(i), senderId: 'alice', recipientId: 'bob', step: 1 }) as HandshakeFrame;
    const both = Promise.all([fc.relay(frame(1), send), fc.relay(frame(2), send)]);
    await vi.waitFor(() => expect(reg2.calls).toHaveLength(1));
    open2();
    expect((await both).map((a) => a.status)).toEqual([DeliveryStatus.QUEUED, DeliveryStatus.QUEUED]);
    expect(reg2.calls).toEqual(['bob']);
    // A later first contact within the cache's lifetime asks the registry nothing.
    await fc.relay(frame(3), send);
    expect(reg2.calls).toEqual(['bob']);
  });

  it('the cache is bounded (least recently used peer dropped) and its entries expire', async () => {
    const reg = registry();
    let now = Date.now();
    const fc = new FirstContact({ crypto, agentId: 'alice', getAgent: (id) => reg.getAgent(id), trustBundle: () => trustBundle, emit: () => undefined, clock: () => now });
    const send = (cert: AgentCertificate | undefined): Promise<Accepted> => (cert === undefined ? Promise.reject(new ClientError('policy_denied', 'never seen')) : Promise.resolve(accepted(DeliveryStatus.QUEUED)));
    let n = 0;
    const contact = (peer: string): Promise<Accepted> => fc.relay({ version: 1, sessionId: crypto.randomBytes(16), senderId: 'alice', recipientId: peer, step: 1, noiseMessage: new Uint8Array(32) } as HandshakeFrame, send).finally(() => n++);
    for (let i = 0; i <= MAX_CACHED_PEERS; i++) reg.agents.set(`peer-${i}`, tw.agent(`peer-${i}`).certificate);
    for (let i = 0; i <= MAX_CACHED_PEERS; i++) await contact(`peer-${i}`);
    expect(reg.calls).toHaveLength(MAX_CACHED_PEERS + 1);
    await contact(`peer-${MAX_CACHED_PEERS}`); // cached
    expect(reg.calls).toHaveLength(MAX_CACHED_PEERS + 1);
    await contact('peer-0'); // the oldest was dropped: asked again
    expect(reg.calls).toHaveLength(MAX_CACHED_PEERS + 2);
    now += CACHE_TTL_MS;
    await contact(`peer-${MAX_CACHED_PEERS}`); // expired: asked again
    expect(reg.calls).toHaveLength(MAX_CACHED_PEERS + 3);
    expect(n).toBe(MAX_CACHED_PEERS + 4);
  });
});

describe('first contact with an agent the gateway never saw, without `registry`', () => {
  it('fails `policy_denied` at once, as before, saying that the `registry` option (or the recipient connecting once) is needed', async () => {
    const w = world();
    const sends = [await w.send(1), await w.send(2)];
    await vi.waitFor(() => expect(w.settled()).toHaveLength(2));
    for (const { result } of sends) {
      expect(result.error?.code).toBe('policy_denied');
      expect(result.error?.message).toMatch(/never seen/);
      expect(result.error?.message).toMatch(/needs this agent's `registry` option.*or the recipient must connect to the gateway once/);
      expect(result.error?.message.match(/\[policy_denied\]/g)).toHaveLength(1);
    }
    expect(w.step1()).toHaveLength(1);
    expect(w.step1()[0]!.certificate).toBeUndefined();
    w.close();
  });

  it('a recipient the gateway knows: nothing looked up, nothing attached (the usual path costs nothing)', async () => {
    const reg = registry([['bob', bob.certificate]]);
    const w = world({ registry: reg });
    w.gateway.known.add('bob');
    w.gateway.bobOnline = true;
    const { result } = await w.send(1);
    await vi.waitFor(() => expect(w.sent).toHaveLength(1));
    const opened = w.recipient.open(w.sent[0]!);
    w.box.onReceipt(signReceipt(crypto, bob, { messageHash: opened.messageHash, senderId: 'alice', receivedAtMs: Date.now() }));
    expect(result.receipt).toBeDefined();
    expect(reg.calls).toEqual([]);
    expect(w.gateway.relayed.every((r) => r.certificate === undefined)).toBe(true);
    w.close();
  });
});

describe('a refusal of a step 1 that carried the certificate: what it drops', () => {
  /** The gateway's transient answers and §17.2 item 6's transient list: the certificate is kept (attached and cached). */
  const TRANSIENT: ClientErrorCode[] = ['unavailable', 'deadline_exceeded', 'cancelled', 'rate_limited', 'quota_exceeded', 'not_yet_valid', 'revocation_stale', 'handshake_failed', 'replay', 'internal'];
  /** The gateway's refusals of the recipient certificate itself: dropped, the registry asked again. */
  const CERTIFICATE: ClientErrorCode[] = ['malformed', 'unsupported_version', 'unknown_issuer', 'bad_certificate', 'expired', 'identity_mismatch', 'revoked'];

  /** A FirstContact over a scripted gateway: no certificate → policy_denied; with one → `failNext` once, else QUEUED. */
  function scripted() {
    const reg = registry([['bob', bob.certificate]]);
    const fc = new FirstContact({ crypto, agentId: 'alice', getAgent: (id) => reg.getAgent(id), trustBundle: () => trustBundle, emit: () => undefined });
    const g = { sent: [] as (string | undefined)[], failNext: undefined as ClientErrorCode | undefined };
    const send = (cert: AgentCertificate | undefined): Promise<Accepted> => {
      g.sent.push(cert?.agentId);
      if (cert === undefined) return Promise.reject(new ClientError('policy_denied', 'never seen'));
      const code = g.failNext;
      g.failNext = undefined;
      return code === undefined ? Promise.resolve(accepted(DeliveryStatus.QUEUED)) : Promise.reject(new ClientError(code, `refused ${code}`));
    };
    const frame = (i: number): HandshakeFrame => ({ version: 1, sessionId: new Uint8Array(16).fill(i), senderId: 'alice', recipientId: 'bob', step: 1 }) as HandshakeFrame;
    return { reg, g, relay: (i: number) => fc.relay(frame(i), send) };
  }

  it('a transient answer to the relay with the certificate (the second send) keeps it: the resend carries it, a new handshake uses the cache — the registry is not read again', async () => {
    for (const code of TRANSIENT) {
      const { reg, g, relay } = scripted();
      g.failNext = code;
      await expect(relay(1)).rejects.toMatchObject({ code });
      expect(g.sent).toEqual([undefined, 'bob']);
      // The same step 1 again (its resend, or the outbox's retry of it): the certificate is still bound to it.
      await expect(relay(1)).resolves.toMatchObject({ status: DeliveryStatus.QUEUED });
      expect([code, g.sent]).toEqual([code, [undefined, 'bob', 'bob']]);
      // Another handshake to the same peer: refused without, then the cached certificate.
      await expect(relay(2)).resolves.toMatchObject({ status: DeliveryStatus.QUEUED });
      expect([code, reg.calls]).toEqual([code, ['bob']]);
    }
  });

  it('a transient answer to a resend that carried the certificate (a reconnect, a timeout, the gateway’s revocation data stale) keeps it too', async () => {
    for (const code of TRANSIENT) {
      const { reg, g, relay } = scripted();
      await expect(relay(1)).resolves.toMatchObject({ status: DeliveryStatus.QUEUED });
      g.failNext = code;
      await expect(relay(1)).rejects.toMatchObject({ code });
      await expect(relay(1)).resolves.toMatchObject({ status: DeliveryStatus.QUEUED });
      expect([code, g.sent]).toEqual([code, [undefined, 'bob', 'bob', 'bob']]); // never again without it
      await expect(relay(2)).resolves.toMatchObject({ status: DeliveryStatus.QUEUED });
      expect([code, reg.calls]).toEqual([code, ['bob']]);
    }
  });

  it('the gateway refusing the certificate itself drops it, from that step 1 and from the cache: the next attempt asks the registry again', async () => {
    for (const code of CERTIFICATE) {
      for (const on of ['second send', 'resend'] as const) {
        const { reg, g, relay } = scripted();
        if (on === 'resend') await relay(1);
        g.failNext = code;
        await expect(relay(1)).rejects.toMatchObject({ code });
        const before = g.sent.length;
        await expect(relay(1)).resolves.toMatchObject({ status: DeliveryStatus.QUEUED });
        expect([code, on, g.sent.slice(before), reg.calls]).toEqual([code, on, [undefined, 'bob'], ['bob', 'bob']]);
      }
    }
  });

  it('end to end: the gateway’s revocation data stale, then a reconnect while resending — the sends wait on, one registry read, every later step 1 carries the certificate; Bob connects and gets both', async () => {
    const reg = registry([['bob', bob.certificate]]);
    const w = world({ registry: reg });
    w.gateway.refuseWithCertificate.push('revocation_stale');
    await w.send(1);
    await w.send(2);
    await vi.waitFor(() => {
      w.box.onTick(Date.now(), true);
      expect(w.gateway.stored.length).toBeGreaterThanOrEqual(1);
    });
    w.gateway.refuseWithCertificate.push('unavailable'); // the next resend
    await vi.waitFor(() => expect(w.step1().filter((r) => r.certificate !== undefined).length).toBeGreaterThanOrEqual(4));
    expect(w.settled()).toEqual([]);
    expect(reg.calls).toEqual(['bob']);
    // Without a certificate only the first step 1 of each handshake (refused, then relayed with it): the one after a
    // refusal of the resend still carries it.
    const withoutCertificate = w.step1().filter((r) => r.certificate === undefined);
    expect(new Set(withoutCertificate.map((r) => toHex(r.frame.sessionId))).size).toBe(withoutCertificate.length);
    const queued = toHex(w.gateway.stored[0]!.sessionId);
    expect(w.step1().filter((r) => toHex(r.frame.sessionId) === queued && r.certificate === undefined)).toHaveLength(1);
    w.connectBob();
    await vi.waitFor(() => expect(w.sent).toHaveLength(2));
    expect(w.sent.map((e) => w.recipient.open(e).content)).toEqual([{ n: 1 }, { n: 2 }]);
    w.close();
  });
});

// The agent itself (agent.ts's transport and its SessionManager) against a stand-in gRPC gateway and registry on
// loopback: the handshake timeout is the gateway's and the peer's time, not the registry's.
describe('the registry lookup does not count against the handshake timeout (a real agent)', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const f of cleanup.splice(0).reverse()) f();
  });

  async function listen(server: Server): Promise<string> {
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))));
    cleanup.push(() => server.forceShutdown());
    return `127.0.0.1:${port}`;
  }

  /** A gateway that refuses a step 1 to Bob `policy_denied` without his certificate and stores it (QUEUED) with it. */
  async function standInGateway() {
    const step1: { readonly sessionId: string; readonly certificate: string | undefined }[] = [];
    const server = new Server();
    addService(server, AgentGatewayService, {
      connect(call: ServerDuplex<ConnectRequest, MessageInitShape<typeof ConnectResponseSchema>>) {
        let agentId = '';
        const push = (r: MessageInitShape<typeof ConnectResponseSchema>): void => void call.push(r);
        call.listen({
          message(request: ConnectRequest) {
            const kind = request.kind;
            if (kind.case === 'hello') {
              agentId = kind.value.certificate?.agentId ?? '';
              push({ kind: { case: 'challenge', value: { gatewayId: 'gw-1', nonce: new Uint8Array(32) } } });
            } else if (kind.case === 'auth') {
              push({ kind: { case: 'welcome', value: { agentId, outboundAcks: true } } });
            } else if (kind.case === 'send') {
              const { requestId, item, recipientCertificate, quiet } = kind.value;
              if (item.case === 'handshake' && item.value.step === 1 && item.value.recipientId === 'bob') {
                step1.push({ sessionId: toHex(item.value.sessionId), certificate: recipientCertificate?.agentId });
                if (recipientCertificate === undefined) push({ kind: { case: 'rejected', value: { requestId, code: 'policy_denied', message: 'the route to this recipient is not allowed' } } });
                else push({ kind: { case: 'accepted', value: { requestId, itemHash: new Uint8Array(32), status: DeliveryStatus.QUEUED } } });
              } else if (!quiet) push({ kind: { case: 'accepted', value: { requestId, itemHash: new Uint8Array(32), status: DeliveryStatus.DELIVERED } } });
            }
          },
          end: () => call.end(),
          error: () => call.end(),
          finished: () => undefined,
        });
      },
      send() {
        throw new Error('not used');
      },
    } as never);
    return { address: await listen(server), step1 };
  }

  /** A registry whose GetAgent answers once `open()` is called (a slow registry), with Bob's certificate. */
  async function slowRegistry() {
    const registryId = crypto.randomBytes(16);
    const calls: string[] = [];
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const implementation: Record<string, unknown> = {};
    for (const method of RegistryService.methods) {
      implementation[method.localName] = () => {
        throw new RpcError('unimplemented', `${method.name} is not in the stand-in registry`);
      };
    }
    implementation['getTrustBundle'] = () => ({ issuers: [], registryId, documents: [], currentVersion: 0n });
    implementation['getAgent'] = async (request: { agentId: string }) => {
      calls.push(request.agentId);
      await gate;
      return { agent: { agentId: request.agentId, agentType: 'worker', status: AgentStatus.ACTIVE, certificate: bob.certificate } };
    };
    const server = new Server();
    addService(server, RegistryService, implementation as never);
    return { address: await listen(server), registryId, calls, open };
  }

  it('a lookup that outlasts the handshake timeout: the same handshake relays its step 1 with the certificate (QUEUED) and waits — no timeout, no second handshake, no step 1 left behind', async () => {
    const handshakeTimeoutMs = 400;
    const gw = await standInGateway();
    const reg = await slowRegistry();
    const events: AgentEvent[] = [];
    const agent = await connect({
      gateway: gw.address,
      expectedGatewayId: 'gw-1',
      identity: alice,
      trustBundle,
      revocations,
      crypto,
      registry: { address: reg.address, registryId: reg.registryId },
      handshakeTimeoutMs,
      resendIntervalMs: 100,
      reconnect: { initialDelayMs: 10, maxDelayMs: 100 },
      onEvent: (e) => void events.push(e),
    });
    cleanup.unshift(() => void agent.close());
    const sent = agent.send('bob', MessageType.TASK_ASSIGNMENT, { n: 1 });
    sent.catch(() => undefined);
    await vi.waitFor(() => expect(reg.calls).toEqual(['bob']));
    // The registry answers only after several handshake timeouts (the frame timer's and the manager's alike).
    await new Promise((resolve) => setTimeout(resolve, 3 * handshakeTimeoutMs));
    reg.open();
    await vi.waitFor(() => expect(gw.step1.filter((r) => r.certificate === 'bob')).toHaveLength(1));
    // Long enough for a timed-out handshake to be retried (the outbox's backoff: 100 ms, ticks every 250 ms).
    await new Promise((resolve) => setTimeout(resolve, 3 * handshakeTimeoutMs));
    const first = gw.step1[0]!.sessionId;
    expect(gw.step1).toEqual([
      { sessionId: first, certificate: undefined },
      { sessionId: first, certificate: 'bob' },
    ]);
    expect(reg.calls).toEqual(['bob']);
    expect(events.filter((e) => e.kind === 'send_settled')).toEqual([]);
    expect(agent.pendingSends().map((p) => p.state)).toEqual(['unsealed']);
  });
});
