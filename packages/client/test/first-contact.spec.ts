// A send waiting for a session (docs/PROTOCOL.md §17.2 items 2, 6–8), without a gateway: SessionManagers wired
// back to back through a stand-in "gateway" that can hold step 1 frames (the recipient offline), refuse them,
// or drop them; the journal is a real Journal over a memory store.
// Covers: the `out_unsealed` record (written before the handshake, replaced by the sealed `out` record in one
// append, restored and resumed after a restart; older journals still load), the permanent/transient
// classification of handshake failures, a permanent one settling every waiting send with its code, a
// transient one retried, the creation time as the envelope's timestamp, and one code per error message.
import { SecretKey, type ParleyCrypto } from '@parley/crypto-core';
import { IdentityError, type MemoryRevocationSet, type TrustBundle } from '@parley/identity';
import { DeliveryStatus, MessageType, type HandshakeFrame, type SecureMessage } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import { SessionError, SessionManager, type LocalIdentity } from '@parley/session';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { AgentEvent, ConnectOptions } from '../src/agent-options.js';
import type { GatewayConnection } from '../src/connection.js';
import { Lifecycle } from '../src/lifecycle.js';
import { Outbox } from '../src/outbox.js';
import { ClientError, Journal, isPermanentHandshakeFailure, memoryStateStore, replay, signReceipt, type ClientErrorCode, type JournalRecord } from '../src/index.js';
import { testWorld } from './world.js';

let crypto: ParleyCrypto;
let alice: LocalIdentity;
let bob: LocalIdentity;
let trustBundle: TrustBundle;
let revocations: MemoryRevocationSet;

beforeAll(async () => {
  const world = await testWorld();
  ({ crypto, trustBundle, revocations } = world);
  alice = world.agent('alice');
  bob = world.agent('bob');
});

/** What the stand-in gateway does with Alice's step 1 frames. */
type Step1 = 'deliver' | 'store' | { readonly refuse: unknown } | 'drop';

/**
 * Alice (the sender, with an outbox over a real journal) and Bob, wired back to back. `gateway.step1` says what
 * happens to Alice's step 1; `gateway.connectBob()` hands Bob the stored ones (his mailbox drains).
 */
function world(options: { step1?: Step1; handshakeTimeoutMs?: number; journal?: { store: ReturnType<typeof memoryStateStore>; key: SecretKey } } = {}) {
  const gateway = { step1: options.step1 ?? ('deliver' as Step1), stored: [] as HandshakeFrame[], frames: [] as HandshakeFrame[] };
  const log: string[] = []; // records and frames in the order they happened
  const m: { a?: SessionManager; b?: SessionManager } = {};
  const ref: { box?: Outbox } = {};
  m.a = new SessionManager({
    crypto,
    handshake: { identity: alice, trustBundle, revocations },
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    queuedHandshakeUntil: (peerId) => ref.box?.waitingUntil(peerId),
    transport: {
      sendFrame: async (frame) => {
        gateway.frames.push(frame);
        log.push(`frame ${frame.step}`);
        if (frame.step === 1) {
          const what = gateway.step1;
          if (what === 'store') {
            gateway.stored.push(frame);
            return { queued: true };
          }
          if (what === 'drop') return { queued: false };
          if (typeof what === 'object') throw what.refuse;
        }
        void m.b!.handleFrame(frame).catch(() => undefined);
        return { queued: false };
      },
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
      log.push('envelope');
      return Promise.resolve({ status: DeliveryStatus.DELIVERED });
    },
  } as unknown as GatewayConnection;
  const events: AgentEvent[] = [];
  const journal = options.journal === undefined ? undefined : new Journal(crypto, options.journal.key, options.journal.store);
  const appends: JournalRecord[][] = [];
  const outbox = new Outbox({
    crypto,
    options: { identity: alice, resendIntervalMs: 50 } as unknown as ConnectOptions,
    manager: m.a,
    lifecycle: new Lifecycle(),
    record: async (records) => {
      appends.push(records);
      for (const r of records) log.push(`record ${r.t}`);
      await journal?.append(records);
    },
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
    appends,
    log,
    recipient: m.b,
    /** Bob connects: his stored step 1 frames are delivered to him. */
    connectBob: () => {
      for (const f of gateway.stored.splice(0)) void m.b!.handleFrame(f).catch(() => undefined);
    },
    /** A `send()`: the entry and its outcome (settled into `result` without an unhandled rejection). */
    async send(n: number, id?: string) {
      const entry = await outbox.enqueue('bob', MessageType.TASK_ASSIGNMENT, { n }, id === undefined ? {} : { id });
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

describe('the unsealed record (§17.2 item 2)', () => {
  it('is written before the handshake starts, and replaced by the sealed record in ONE append once the session exists', async () => {
    const w = world();
    const { entry } = await w.send(1);
    await vi.waitFor(() => expect(w.sent).toHaveLength(1));
    expect(w.log.slice(0, 2)).toEqual(['record out_unsealed', 'frame 1']);
    const sealing = w.appends.filter((a) => a.some((r) => r.t === 'out' && r.id === entry.id));
    expect(sealing).toHaveLength(1);
    expect(sealing[0]!.filter((r) => r.t.startsWith('out'))).toEqual([expect.objectContaining({ t: 'out', id: entry.id })]);
    expect(w.log.indexOf('envelope')).toBeGreaterThan(w.log.indexOf('record out'));
    // Sealed with its creation time (§17.2 item 7), and the expiry is the message lifetime from then.
    expect(Number(w.sent[0]!.timestampMs)).toBe(entry.createdAtMs);
    expect(entry.expiresAtMs).toBe(entry.createdAtMs + 3_600_000);
    expect(w.recipient.open(w.sent[0]!).content).toEqual({ n: 1 });
    // With the session there, a send waits for nothing: sealed at once, its sealed record its only one.
    const before = w.appends.length;
    const second = await w.send(2);
    expect(second.entry.envelope).toBeDefined();
    expect(w.appends.slice(before).flat().filter((r) => r.t.startsWith('out'))).toEqual([expect.objectContaining({ t: 'out', id: second.entry.id })]);
    expect(w.recipient.open(w.sent[1]!).content).toEqual({ n: 2 });
    w.close();
  });

  it('round-trips through the journal: sealed under the state key, replaced by `out`, ended by `out_done`; older journals load', async () => {
    const store = memoryStateStore();
    const key = SecretKey.from(crypto.randomBytes(32), 'aead');
    const journal = new Journal(crypto, key, store);
    const unsealed = { t: 'out_unsealed', id: 'order-1', to: 'bob', msg: { type: MessageType.TASK_ASSIGNMENT, content: { task: 'secret-task' } }, at: 1_000, exp: 3_601_000 } as const;
    await journal.append([unsealed]);
    expect(new TextDecoder().decode(store.records[0]!)).not.toContain('secret-task'); // sealed, like every record
    let state = replay(await new Journal(crypto, key, store).load());
    expect([...state.outbox.values()]).toEqual([{ v: 1, ...unsealed }]);
    const sealed = { t: 'out', id: 'order-1', to: 'bob', msg: unsealed.msg, env: '', hash: 'ab', sid: 'cd', at: 1_000, exp: 3_601_000, reseals: 0 } as const;
    await journal.append([sealed]);
    state = replay(await journal.load());
    expect([...state.outbox.values()]).toEqual([{ v: 1, ...sealed }]);
    await journal.append([{ t: 'out_done', id: 'order-1', outcome: 'delivered' }]);
    expect(replay(await journal.load()).outbox.size).toBe(0);
    // A journal of the previous version (no unsealed records) replays as before.
    expect([...replay([sealed]).outbox.keys()]).toEqual(['order-1']);
    expect(() => replay([{ t: 'out_unsealed', id: 'x' } as never])).toThrow(/state_corrupt/);
  });

  it('after a restart an unsealed send is restored as `unsealed`, resumed by a new handshake, sealed with its creation time and delivered', async () => {
    const store = memoryStateStore();
    const key = SecretKey.from(crypto.randomBytes(32), 'aead');
    const before = world({ step1: 'store', journal: { store, key } });
    const { entry } = await before.send(7, 'order-7');
    await vi.waitFor(() => expect(before.gateway.stored).toHaveLength(1));
    before.close(); // the process dies while the first handshake waits for the offline recipient
    const after = world({ journal: { store, key } });
    after.box.restore(replay(await new Journal(crypto, key, store).load()));
    expect(after.box.pending()).toEqual([{ id: 'order-7', to: 'bob', state: 'unsealed', createdAtMs: entry.createdAtMs, expiresAtMs: entry.expiresAtMs }]);
    after.box.onTick(Date.now(), true);
    await vi.waitFor(() => expect(after.sent).toHaveLength(1));
    expect(after.box.pending()[0]!.state).toBe('sealed');
    expect(Number(after.sent[0]!.timestampMs)).toBe(entry.createdAtMs);
    const opened = after.recipient.open(after.sent[0]!);
    expect(opened.content).toEqual({ n: 7 });
    after.box.onReceipt(signReceipt(crypto, bob, { messageHash: opened.messageHash, senderId: 'alice', receivedAtMs: Date.now() }));
    expect(after.settled()).toEqual([expect.objectContaining({ id: 'order-7', outcome: 'delivered' })]);
    after.close();
  });
});

describe('handshake outcomes for waiting sends (§17.2 item 6)', () => {
  it('classifies: permanent — the gateway policy and the peer certificate; transient — time, connectivity, load', () => {
    const permanent: ClientErrorCode[] = ['policy_denied', 'too_large', 'malformed', 'unsupported_version', 'revoked', 'expired', 'bad_certificate', 'unknown_issuer', 'identity_mismatch', 'bad_binding'];
    const transient: ClientErrorCode[] = ['handshake_failed', 'unavailable', 'deadline_exceeded', 'cancelled', 'rate_limited', 'quota_exceeded', 'revocation_stale', 'not_yet_valid', 'replay', 'unknown_session', 'internal'];
    for (const code of permanent) expect([code, isPermanentHandshakeFailure(code)]).toEqual([code, true]);
    for (const code of transient) expect([code, isPermanentHandshakeFailure(code)]).toEqual([code, false]);
  });

  it('a refused step 1 settles every send waiting for that peer with the refusal code (not handshake_failed), its chain kept', async () => {
    const refusal = new ClientError('policy_denied', 'denied by policy', { cause: new RpcError('policy_denied', 'denied by policy') });
    const w = world({ step1: { refuse: refusal } });
    const sends = await Promise.all([w.send(1), w.send(2), w.send(3)]);
    await vi.waitFor(() => expect(w.settled()).toHaveLength(3));
    for (const { result } of sends) {
      expect(result.error?.code).toBe('policy_denied');
      expect(result.error?.message.match(/\[policy_denied\]/g)).toHaveLength(1);
      // ClientError policy_denied ← SessionError policy_denied ← the transport's ClientError ← RpcError
      expect(result.error?.cause).toBeInstanceOf(SessionError);
      expect((result.error?.cause as SessionError).cause).toBe(refusal);
    }
    expect(w.settled().map((e) => [e.outcome, e.outcome === 'delivered' ? undefined : e.error.code])).toEqual([
      ['failed', 'policy_denied'],
      ['failed', 'policy_denied'],
      ['failed', 'policy_denied'],
    ]);
    expect(w.gateway.frames.filter((f) => f.step === 1)).toHaveLength(1); // one handshake for the three
    expect(w.box.pending()).toEqual([]);
    w.close();
  });

  it('a transient failure (no step 2 in time) keeps the send `unsealed` and tries again with backoff; the next handshake delivers it', async () => {
    const w = world({ step1: 'drop', handshakeTimeoutMs: 60 });
    const { entry, result } = await w.send(4);
    await vi.waitFor(() => expect(entry.nextAttemptAtMs).toBeGreaterThan(0)); // the first handshake timed out
    expect(w.settled()).toEqual([]);
    expect(w.box.pending()).toEqual([expect.objectContaining({ id: entry.id, state: 'unsealed' })]);
    w.gateway.step1 = 'deliver';
    await vi.waitFor(() => {
      w.box.onTick(Date.now(), true);
      expect(w.sent.length).toBeGreaterThan(0);
    });
    expect(new Set(w.sent.map((e) => e.signature.toString())).size).toBe(1); // resent as sealed, never sealed twice
    expect(w.gateway.frames.filter((f) => f.step === 1).length).toBeGreaterThanOrEqual(2);
    const opened = w.recipient.open(w.sent[0]!);
    w.box.onReceipt(signReceipt(crypto, bob, { messageHash: opened.messageHash, senderId: 'alice', receivedAtMs: Date.now() }));
    expect(result.receipt).toBeDefined();
    expect(w.settled()).toEqual([expect.objectContaining({ id: entry.id, outcome: 'delivered' })]);
    w.close();
  });

  it('a step 1 stored for the offline recipient waits past the handshake timeout for as long as the send does; Bob connects, it is delivered', async () => {
    const w = world({ step1: 'store', handshakeTimeoutMs: 50 });
    const { entry } = await w.send(5);
    await new Promise((resolve) => setTimeout(resolve, 400)); // eight handshake timeouts
    expect(w.gateway.frames.filter((f) => f.step === 1)).toHaveLength(1); // still the first handshake
    expect(entry.nextAttemptAtMs).toBe(0); // it never failed
    expect(w.box.waitingUntil('bob')).toBe(entry.expiresAtMs);
    w.connectBob();
    await vi.waitFor(() => expect(w.sent).toHaveLength(1));
    expect(w.recipient.open(w.sent[0]!).content).toEqual({ n: 5 });
    expect(w.box.waitingUntil('bob')).toBeUndefined();
    w.close();
  });
});

describe('refusals before the outbox holds a message, and error messages', () => {
  it('sending to the agent itself says so; no send exists', async () => {
    const w = world();
    await expect(w.box.enqueue('alice', MessageType.TASK_ASSIGNMENT, {}, {})).rejects.toThrow(/is this agent itself/);
    expect(w.box.pending()).toEqual([]);
    expect(w.appends).toEqual([]);
    w.close();
  });

  it('prints a code once, and a handshake that only carried the transport failure takes its code', () => {
    const identity = new IdentityError('unknown_issuer', 'certificate issuer key id 1234 is not in the trust bundle');
    const wrapped = new SessionError('unknown_issuer', 'certificate issuer key id 1234 is not in the trust bundle', { cause: identity });
    expect(ClientError.from(wrapped).message).toBe('[unknown_issuer] certificate issuer key id 1234 is not in the trust bundle');
    expect(ClientError.from(identity).message).toBe('[unknown_issuer] certificate issuer key id 1234 is not in the trust bundle');
    const down = new ClientError('unavailable', 'no gateway stream');
    expect(ClientError.from(new SessionError('handshake_failed', 'could not send the handshake frame: no gateway stream', { cause: down })).code).toBe('unavailable');
    expect(ClientError.from(new SessionError('handshake_failed', 'timed out')).code).toBe('handshake_failed');
  });
});
