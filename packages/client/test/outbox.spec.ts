// The outbox on its own (no gateway): SessionManagers wired back to back establish real sessions and seal
// real envelopes, a stand-in for the gateway stream records what is relayed, and the journal is a list.
// Covers: nothing leaves before its outbox record is durable (§17.2 item 2), a restored send whose session
// is gone still settles by its receipt or a SessionReject, a session closing during a counter reservation,
// and no relay once the agent stopped.
import { fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import type { MemoryRevocationSet, TrustBundle } from '@parley/identity';
import { DeliveryStatus, MessageType, type HandshakeFrame, type SecureMessage } from '@parley/proto';
import { SessionManager, type LocalIdentity, type Session, type SessionManagerOptions } from '@parley/session';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { AgentEvent, ConnectOptions } from '../src/agent-options.js';
import type { GatewayConnection } from '../src/connection.js';
import { Lifecycle } from '../src/lifecycle.js';
import { Outbox, type OutboxEntry } from '../src/outbox.js';
import { ClientError, replay, signReceipt, signSessionReject, type JournalRecord } from '../src/index.js';
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

/** Alice's manager (the sender's) and Bob's, wired back to back. */
function managers(extra: Partial<SessionManagerOptions> = {}): { sender: SessionManager; recipient: SessionManager } {
  const m: { a?: SessionManager; b?: SessionManager } = {};
  m.a = new SessionManager({
    crypto,
    handshake: { identity: alice, trustBundle, revocations },
    transport: { sendFrame: (frame: HandshakeFrame) => void m.b!.handleFrame(frame).catch(() => undefined) },
    ...extra,
  });
  m.b = new SessionManager({
    crypto,
    handshake: { identity: bob, trustBundle, revocations },
    transport: { sendFrame: (frame: HandshakeFrame) => void m.a!.handleFrame(frame).catch(() => undefined) },
  });
  return { sender: m.a, recipient: m.b };
}

/** A promise with its resolve function outside. */
interface Deferred<T = void> {
  readonly promise: Promise<T>;
  readonly resolve: (value: T) => void;
}
function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * An outbox of Alice's with a stand-in stream that records every envelope relayed (`nextSent` resolves with
 * the next one). `record` is the journal (default: kept in `records`, durable at once).
 */
function outbox(manager: SessionManager, options: { durable?: boolean; record?: (r: JournalRecord[]) => Promise<void> } = {}) {
  const sent: SecureMessage[] = [];
  let waiting: ((e: SecureMessage) => void) | undefined;
  const conn = {
    isOpen: true,
    sendEnvelope: (envelope: SecureMessage) => {
      sent.push(envelope);
      waiting?.(envelope);
      waiting = undefined;
      return Promise.resolve({ status: DeliveryStatus.DELIVERED });
    },
  } as unknown as GatewayConnection;
  const events: AgentEvent[] = [];
  const records: JournalRecord[] = [];
  const lifecycle = new Lifecycle();
  const box = new Outbox({
    crypto,
    options: { identity: alice } as unknown as ConnectOptions,
    manager,
    lifecycle,
    record:
      options.record ??
      ((r) => {
        records.push(...r);
        return Promise.resolve();
      }),
    durable: options.durable ?? true,
    emit: (e) => void events.push(e),
    connection: () => conn,
  });
  const nextSent = (): Promise<SecureMessage> => new Promise((resolve) => (waiting = resolve));
  return { box, sent, events, records, lifecycle, nextSent };
}

/** A send, once sealed and relayed (`enqueue` resolves as soon as it is recorded, before its handshake). */
async function send(box: Outbox, n: number): Promise<OutboxEntry> {
  const entry = await box.enqueue('bob', MessageType.STATUS_UPDATE, { n }, {});
  await vi.waitFor(() => expect(entry.envelope !== undefined && !entry.resealing).toBe(true));
  return entry;
}

describe('outbox', () => {
  it('relays a send only once its outbox record is durable: not on a reconnect or a tick while the record is written', async () => {
    const { sender, recipient } = managers();
    const written = deferred();
    const recording = deferred();
    const o = outbox(sender, {
      record: (r) => {
        if (r[0]!.t !== 'out') return Promise.resolve();
        recording.resolve();
        return written.promise;
      },
    });
    const enqueued = send(o.box, 1);
    await recording.promise;
    o.box.onConnected(); // a stream came up while the record is being written
    o.box.onTick(Date.now() + 60_000, true);
    expect(o.sent).toEqual([]);
    written.resolve();
    const entry = await enqueued;
    expect(o.sent).toHaveLength(1);
    expect(toHex(o.sent[0]!.sessionId)).toBe(entry.sessionIdHex);
    sender.close();
    recipient.close();
  });

  it('relays a resealed envelope only once its record is durable; until then the snapshot already holds it', async () => {
    const { sender, recipient } = managers();
    const hold: { armed: boolean; recording: Deferred; written: Deferred } = { armed: false, recording: deferred(), written: deferred() };
    const o = outbox(sender, {
      record: (r) => {
        if (r[0]!.t !== 'out' || !hold.armed) return Promise.resolve();
        hold.recording.resolve();
        return hold.written.promise;
      },
    });
    const entry = await send(o.box, 1);
    const original = o.sent[0]!;
    const firstSession = entry.sessionIdHex;
    hold.armed = true; // the next 'out' record (the reseal's) is held until the test releases it
    // Bob lost the session: his verified SessionReject makes Alice seal the message again in a new session.
    o.box.onSessionReject(signSessionReject(crypto, bob, { sessionId: original.sessionId, messageHash: fromHex(entry.hashHex), senderId: 'alice', rejectedAtMs: Date.now() }));
    await hold.recording.promise;
    o.box.onConnected();
    o.box.onTick(Date.now() + 60_000, true);
    expect(o.sent.filter((e) => toHex(e.sessionId) !== firstSession)).toEqual([]);
    // A compaction now must keep the envelope being recorded (it may leave once the record is written).
    const snapshot = o.box.records();
    expect(snapshot).toHaveLength(1);
    expect(snapshot[0]).toMatchObject({ t: 'out', id: entry.id, reseals: 1 });
    expect((snapshot[0] as { sid: string }).sid).not.toBe(firstSession);
    const resent = o.nextSent();
    hold.written.resolve();
    const envelope = await resent;
    expect(toHex(envelope.sessionId)).toBe((snapshot[0] as { sid: string }).sid);
    expect(recipient.open(envelope).content).toEqual({ n: 1 });
    sender.close();
    recipient.close();
  });

  it('a send restored without its session settles by its receipt: the recipient key is kept in its record', async () => {
    const first = managers();
    const before = outbox(first.sender);
    const entry = await send(before.box, 1);
    // Restart: the session did not survive (the new process has other sessions, or none).
    const second = managers();
    await second.sender.session('bob');
    const after = outbox(second.sender);
    after.box.restore(replay(before.records));
    expect(after.box.pending().map((p) => p.id)).toEqual([entry.id]);
    after.box.onReceipt(signReceipt(crypto, bob, { messageHash: fromHex(entry.hashHex), senderId: 'alice', receivedAtMs: Date.now() }));
    expect(after.events.filter((e) => e.kind === 'security')).toEqual([]);
    expect(after.box.pending()).toEqual([]);
    expect(after.events).toContainEqual(expect.objectContaining({ kind: 'send_settled', id: entry.id, outcome: 'delivered' }));
    for (const m of [first.sender, first.recipient, second.sender, second.recipient]) m.close();
  });

  it('a send restored without its session is resealed on a verified SessionReject', async () => {
    const first = managers();
    const before = outbox(first.sender);
    const entry = await send(before.box, 2);
    const second = managers();
    const after = outbox(second.sender);
    after.box.restore(replay(before.records));
    const resent = after.nextSent();
    after.box.onSessionReject(signSessionReject(crypto, bob, { sessionId: fromHex(entry.sessionIdHex), messageHash: fromHex(entry.hashHex), senderId: 'alice', rejectedAtMs: Date.now() }));
    expect(after.events.filter((e) => e.kind === 'security')).toEqual([]); // it verified
    const envelope = await resent;
    expect(toHex(envelope.sessionId)).not.toBe(entry.sessionIdHex);
    expect(second.recipient.open(envelope).content).toEqual({ n: 2 });
    for (const m of [first.sender, first.recipient, second.sender, second.recipient]) m.close();
  });

  it('a session that closes while a counter reservation is written does not fail the send: it is sealed in a new session', async () => {
    const reserving = deferred<Session>();
    const reserved = deferred();
    let calls = 0;
    const { sender, recipient } = managers({
      reserveCounters: (session) => {
        if (++calls > 1) return Promise.resolve();
        reserving.resolve(session);
        return reserved.promise;
      },
    });
    const o = outbox(sender, { durable: false });
    const enqueued = send(o.box, 3);
    const session = await reserving.promise;
    sender.closeSession(session); // idle expiry, a SessionReject, the per-peer bound, …
    reserved.resolve();
    const entry = await enqueued;
    expect(entry.sessionIdHex).not.toBe(session.idHex);
    expect(o.sent).toHaveLength(1);
    expect(recipient.open(o.sent[0]!).content).toEqual({ n: 3 });
    sender.close();
    recipient.close();
  });

  it('reports "not delivered" only once the record ending the send is durable: a crash before leaves it pending, never reported then delivered', async () => {
    const refusing = (): Partial<SessionManagerOptions> => ({
      transport: {
        sendFrame: () => {
          throw new ClientError('policy_denied', 'no route yet');
        },
      },
    });
    for (const outcome of ['failed', 'expired'] as const) {
      const { sender, recipient } = managers(outcome === 'failed' ? refusing() : {});
      const written = deferred();
      const ending = deferred();
      const o = outbox(sender, {
        record: (r) => {
          if (r[0]!.t === 'out_done') {
            ending.resolve();
            return written.promise; // the append is under way (write, fsync) …
          }
          o.records.push(...r);
          return Promise.resolve();
        },
      });
      const entry = await o.box.enqueue('bob', MessageType.STATUS_UPDATE, { outcome }, { id: `order-${outcome}` });
      const told: string[] = [];
      o.box.attach(entry, { resolve: () => told.push('delivered'), reject: (e) => told.push(e.code) });
      if (outcome === 'expired') {
        await vi.waitFor(() => expect(entry.envelope).toBeDefined());
        o.box.onTick(entry.expiresAtMs, true); // no receipt before the message expired
      }
      await ending.promise;
      await new Promise((r) => setTimeout(r, 20));
      // … and a crash now: nothing was reported, and the journal still holds the send — the next run goes on with it.
      expect(told).toEqual([]);
      expect(o.events.filter((e) => e.kind === 'send_settled')).toEqual([]);
      expect([...replay(o.records).outbox.keys()]).toEqual([entry.id]);
      written.resolve();
      await vi.waitFor(() => expect(told).toEqual([outcome === 'failed' ? 'policy_denied' : 'expired']));
      expect(o.events.filter((e) => e.kind === 'send_settled')).toEqual([expect.objectContaining({ id: entry.id, outcome })]);
      sender.close();
      recipient.close();
    }
  });

  it('a record ending a send that cannot be written reports no outcome: the waiters get the journal failure', async () => {
    const { sender, recipient } = managers({
      transport: {
        sendFrame: () => {
          throw new ClientError('policy_denied', 'no route yet');
        },
      },
    });
    const o = outbox(sender, {
      record: (r) => (r[0]!.t === 'out_done' ? Promise.reject(new ClientError('unavailable', 'disk full')) : Promise.resolve()),
    });
    const entry = await o.box.enqueue('bob', MessageType.STATUS_UPDATE, { n: 5 }, {});
    const told: string[] = [];
    o.box.attach(entry, { resolve: () => told.push('delivered'), reject: (e) => told.push(e.code) });
    await vi.waitFor(() => expect(told).toEqual(['unavailable']));
    expect(o.events.filter((e) => e.kind === 'send_settled')).toEqual([]);
    sender.close();
    recipient.close();
  });

  it('relays nothing once the agent stopped for good', async () => {
    const { sender, recipient } = managers();
    const o = outbox(sender);
    await send(o.box, 4);
    expect(o.sent).toHaveLength(1);
    o.lifecycle.fatal = new ClientError('revoked', 'stopped');
    o.box.onConnected();
    o.box.onTick(Date.now() + 60_000, true);
    expect(o.sent).toHaveLength(1);
    sender.close();
    recipient.close();
  });
});
