// SessionManager: get-or-establish over a frame transport, lifetimes
// (idle timeout, max duration, warning, auto-renew), graceful close, and
// sealed export/import across a simulated restart.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SecretKey } from '@parley/crypto-core';
import { TrustBundle } from '@parley/identity';
import { MessageType, type HandshakeFrame } from '@parley/proto';
import { InitiatorHandshake, SessionError, SessionManager, type SessionManagerEvent, type SessionManagerOptions } from '../src/index.js';
import { createWorld, type Agent, type World } from './fixtures.js';

const MINUTE = 60_000;
let w: World;
let managers: SessionManager[];

beforeEach(async () => {
  w = await createWorld();
  managers = [];
});
afterEach(() => {
  for (const m of managers) m.close();
});

/** Two managers wired back to back: each one's frames go to the other's handleFrame. */
function pair(options: Partial<SessionManagerOptions> = {}, agents?: [Agent, Agent]) {
  const [alice, bob] = agents ?? [w.agent('alice'), w.agent('bob')];
  const events: Record<string, SessionManagerEvent[]> = { [alice.agentId]: [], [bob.agentId]: [] };
  const peers = new Map<string, SessionManager>();
  const make = (agent: Agent) =>
    new SessionManager({
      crypto: w.crypto,
      handshake: { identity: agent, trustBundle: w.trustBundle, revocations: w.revocations },
      transport: {
        sendFrame: async (frame: HandshakeFrame) => {
          await peers.get(frame.recipientId)?.handleFrame(frame);
        },
      },
      clock: w.clock,
      onEvent: (e) => events[agent.agentId]!.push(e),
      ...options,
    });
  const a = make(alice);
  const b = make(bob);
  peers.set(alice.agentId, a);
  peers.set(bob.agentId, b);
  managers.push(a, b);
  return { a, b, events, alice, bob };
}

describe('SessionManager', () => {
  it('establishes on first use, reuses afterwards, and shares one handshake between concurrent callers', async () => {
    const { a, b } = pair();
    const [s1, s2] = await Promise.all([a.session('bob'), a.session('bob')]);
    expect(s1).toBe(s2);
    expect(await a.session('bob')).toBe(s1);
    const sealed = await a.seal('bob', { type: MessageType.TASK_ASSIGNMENT, content: { task: 1 } });
    expect(b.open(sealed.envelope).content).toEqual({ task: 1 });
    const back = await b.seal('alice', { type: MessageType.STATUS_UPDATE, content: 'done' });
    expect(a.open(back.envelope).content).toBe('done');
    expect(b.sessions()).toHaveLength(1); // bob reused the session alice opened
  });

  it('reports unknown sessions and handshake failures as security events', async () => {
    const { a, b, events } = pair();
    const sealed = await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 1 });
    b.closeSession(b.sessions()[0]!);
    expect(() => b.open(sealed.envelope)).toThrow(SessionError);
    expect(events['bob']!.some((e) => e.kind === 'security' && e.code === 'unknown_session')).toBe(true);
    w.revocations.apply([{ kind: 'agent', agentId: 'carol', reason: 'test', revokedAtMs: w.clock.now }], 1, w.clock.now);
    const { a: dave, events: ev2 } = pair({}, [w.agent('dave'), w.agent('carol')]);
    await expect(dave.session('carol')).rejects.toMatchObject({ code: 'revoked' });
    expect(ev2['dave']!.some((e) => e.kind === 'security' && e.code === 'revoked' && e.stage === 'handshake')).toBe(true);
  });

  it('times out a handshake that gets no answer', async () => {
    const alice = w.agent('alice');
    const m = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: alice, trustBundle: w.trustBundle },
      transport: { sendFrame: () => undefined },
      handshakeTimeoutMs: 50,
    });
    managers.push(m);
    await expect(m.session('nobody')).rejects.toMatchObject({ code: 'handshake_failed' });
  });

  it('expires idle sessions and sessions past their maximum duration', async () => {
    const { a, events } = pair({ timeouts: { timeoutMinutes: 10, maxDurationMinutes: 60, warningThresholdMinutes: 5, autoRenew: false } });
    const s = await a.session('bob');
    w.clock.now += 11 * MINUTE;
    w.revocations.apply([], 0, w.clock.now);
    a.tick();
    expect(s.isClosed).toBe(true);
    expect(events['alice']!.some((e) => e.kind === 'expired' && e.reason === 'idle')).toBe(true);
    const s2 = await a.session('bob');
    expect(s2).not.toBe(s);
    for (let t = 0; t <= 64; t += 4) {
      w.clock.now += 4 * MINUTE;
      w.revocations.apply([], 0, w.clock.now);
      await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: t }); // keep it active
      a.tick();
    }
    expect(s2.isClosed).toBe(true);
    expect(events['alice']!.some((e) => e.kind === 'expiring')).toBe(true);
    expect(events['alice']!.some((e) => e.kind === 'expired' && e.reason === 'max_duration')).toBe(true);
  });

  it('auto-renews before the maximum duration; the old session keeps receiving until it ends', async () => {
    const { a, b, events } = pair({ timeouts: { timeoutMinutes: 30, maxDurationMinutes: 60, warningThresholdMinutes: 5, autoRenew: true } });
    const old = await a.session('bob');
    for (let i = 0; i < 2; i++) {
      w.clock.now += 28 * MINUTE; // stay active: below the 30-minute idle timeout
      w.revocations.apply([], 0, w.clock.now);
      b.open((await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: i })).envelope);
      a.tick();
    }
    const inFlight = await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 'sent before renewal' });
    expect(a.current('bob')).toBe(old);
    a.tick(); // 56 minutes: inside the 5-minute warning before the 60-minute maximum
    await new Promise((r) => setTimeout(r, 10));
    const renewed = a.current('bob')!;
    expect(renewed).not.toBe(old);
    expect(events['alice']!.some((e) => e.kind === 'renewed')).toBe(true);
    expect(b.open(inFlight.envelope).content).toBe('sent before renewal');
    const next = await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 'after' });
    expect(next.envelope.sessionId).toEqual(renewed.id);
    expect(b.open(next.envelope).content).toBe('after');
  });

  it('graceful close wipes sessions and refuses further use', async () => {
    const { a } = pair();
    const s = await a.session('bob');
    a.close();
    expect(s.isClosed).toBe(true);
    await expect(a.session('bob')).rejects.toMatchObject({ code: 'unknown_session' });
  });

  it('a restarted process carries on from sealed state and still rejects every earlier message', async () => {
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const snapshots: Uint8Array[] = [];
    const { a, b, alice, bob } = pair({ stateKey, onStateChange: (_peer, sealed) => snapshots.push(sealed) });
    const sent = [];
    for (let i = 0; i < 20; i++) sent.push((await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: i })).envelope);
    for (const e of sent) b.open(e);
    expect(snapshots.length).toBeGreaterThan(0);
    const saved = b.exportState();
    b.close();
    const b2 = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: bob, trustBundle: w.trustBundle, revocations: w.revocations },
      transport: { sendFrame: () => undefined },
      clock: w.clock,
      stateKey,
    });
    managers.push(b2);
    const [restored] = b2.importState(saved);
    expect(restored!.peerId).toBe('alice');
    for (const e of sent) expect(() => b2.open(e)).toThrow(expect.objectContaining({ code: 'replay' }) as Error);
    const fresh = await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 'new' });
    expect(b2.open(fresh.envelope).content).toBe('new');
    const reply = await b2.seal('alice', { type: MessageType.STATUS_UPDATE, content: 'back' });
    expect(a.open(reply.envelope).content).toBe('back');
    void alice;
  });

  it("restore takes the live trust bundle: a restored session closes once its peer's issuer is past not_after_ms", async () => {
    let current = w.trustBundle;
    const live = TrustBundle.live(() => current);
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    const peers = new Map<string, SessionManager>();
    const make = (agent: Agent) => {
      const m = new SessionManager({
        crypto: w.crypto,
        handshake: { identity: agent, trustBundle: live, revocations: w.revocations },
        transport: { sendFrame: async (frame: HandshakeFrame) => void (await peers.get(frame.recipientId)?.handleFrame(frame)) },
        clock: w.clock,
        stateKey,
      });
      peers.set(agent.agentId, m);
      managers.push(m);
      return m;
    };
    const a = make(alice);
    const b = make(bob);
    await a.session('bob');
    const saved = b.exportSession(b.sessions()[0]!);
    b.close();
    const closed: string[] = [];
    const b2 = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: bob, trustBundle: live, revocations: w.revocations },
      transport: { sendFrame: () => undefined },
      clock: w.clock,
      stateKey,
      onEvent: (e) => void (e.kind === 'closed' && closed.push(e.session.idHex)),
    });
    managers.push(b2);
    const restored = b2.restore(saved, 0);
    current = TrustBundle.from(w.crypto, [{ publicKey: w.issuer.publicKey, notAfterMs: w.clock.now + MINUTE }]);
    expect(b2.open((await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 1 })).envelope).content).toBe(1);
    w.clock.now += MINUTE;
    w.revocations.apply([], 0, w.clock.now);
    const late = (await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 2 })).envelope;
    expect(() => b2.open(late)).toThrow(expect.objectContaining({ code: 'expired' }) as Error);
    expect(restored.isClosed).toBe(true);
    expect(b2.sessionById(restored.idHex)).toBeUndefined();
    expect(closed).toEqual([restored.idHex]);
  });

  it('drops a step 1 whose session id is its own handshake in progress (replay): no second session under that id', async () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    const mallory = w.agent('mallory');
    const toBob: HandshakeFrame[] = [];
    const toMallory: HandshakeFrame[] = [];
    const events: SessionManagerEvent[] = [];
    const a = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: alice, trustBundle: w.trustBundle, revocations: w.revocations },
      transport: { sendFrame: (f: HandshakeFrame) => void (f.recipientId === 'bob' ? toBob : toMallory).push(f) },
      clock: w.clock,
      onEvent: (e) => events.push(e),
    });
    managers.push(a);
    const established = a.session('bob');
    await new Promise((r) => setTimeout(r, 0));
    const step1 = toBob[0]!;
    const id = Buffer.from(step1.sessionId).toString('hex');
    // mallory saw the session id go by and starts her own handshake with alice under it
    const { handshake: m, frame: m1 } = InitiatorHandshake.start(w.crypto, w.config(mallory), 'alice', step1.sessionId);
    await a.handleFrame(m1);
    expect(a.isResponding(id)).toBe(false);
    expect(toMallory).toHaveLength(0);
    expect(events.some((e) => e.kind === 'security' && e.code === 'replay' && e.senderId === 'mallory')).toBe(true);
    m.abort();
    // bob's genuine handshake completes and owns the id
    const b = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: bob, trustBundle: w.trustBundle, revocations: w.revocations },
      transport: { sendFrame: async (f: HandshakeFrame) => void (await a.handleFrame(f)) },
      clock: w.clock,
    });
    managers.push(b);
    await b.handleFrame(step1);
    const session = await established;
    expect(session.peerId).toBe('bob');
    expect(a.sessionById(id)).toBe(session);
  });

  it('never lets a completed handshake replace a live session with the same id', async () => {
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const { a, b, bob } = pair({ stateKey });
    const original = await a.session('bob');
    const saved = b.exportSession(b.sessions()[0]!);
    const events: SessionManagerEvent[] = [];
    const toMallory: HandshakeFrame[] = [];
    const b2 = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: bob, trustBundle: w.trustBundle, revocations: w.revocations },
      transport: { sendFrame: (f: HandshakeFrame) => void toMallory.push(f) },
      clock: w.clock,
      stateKey,
      onEvent: (e) => events.push(e),
    });
    managers.push(b2);
    // mallory opens a handshake under the id of bob's session before bob's restart has restored it …
    const mallory = w.agent('mallory');
    const { handshake: m, frame: m1 } = InitiatorHandshake.start(w.crypto, w.config(mallory), 'bob', original.id);
    await b2.handleFrame(m1);
    expect(b2.isResponding(original.idHex)).toBe(true);
    const [restored] = b2.importState([saved]);
    // … and completes it afterwards: refused, the restored session stays the one under that id, mallory's is closed
    const { frame: m3, session: mSession } = m.receive(toMallory[0]!);
    expect(await b2.handleFrame(m3)).toBeUndefined();
    expect(b2.sessionById(original.idHex)).toBe(restored);
    expect(b2.sessions()).toEqual([restored]);
    expect(events.some((e) => e.kind === 'security' && e.code === 'replay' && e.senderId === 'mallory')).toBe(true);
    expect(events.some((e) => e.kind === 'established')).toBe(false);
    const sealed = await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 'still bob' });
    expect(b2.open(sealed.envelope).content).toBe('still bob');
    mSession.close();
  });

  it('refuses to import the state of a session whose id is live already', async () => {
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const { a, b } = pair({ stateKey });
    await a.session('bob');
    const [live] = b.sessions();
    expect(() => b.importState([b.exportSession(live!)])).toThrow(expect.objectContaining({ code: 'replay' }) as Error);
    expect(b.sessions()).toEqual([live]);
    expect(live!.isClosed).toBe(false);
  });

  it('refuses importState when counter reservations are on (restore with the durable mark instead)', async () => {
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const { a, b, alice } = pair({ stateKey });
    await a.session('bob');
    const saved = a.exportState();
    a.close();
    const reserved: number[] = [];
    const a2 = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: alice, trustBundle: w.trustBundle, revocations: w.revocations },
      transport: { sendFrame: () => undefined },
      clock: w.clock,
      stateKey,
      reserveCounters: async (_s, upTo) => void reserved.push(upTo),
    });
    managers.push(a2);
    expect(() => a2.importState(saved)).toThrow(expect.objectContaining({ code: 'malformed' }) as Error);
    expect(a2.sessions()).toHaveLength(0);
    expect(reserved).toEqual([]);
    // restore, with the mark the store recorded, is the way back for a sender that reserves
    const restored = a2.restore(saved[0]!, 0);
    const sealed = await a2.sealIn(restored, { type: MessageType.STATUS_UPDATE, content: 'after restart' });
    expect(reserved).toHaveLength(1);
    expect(Number(sealed.envelope.nonce)).toBeLessThan(reserved[0]!);
    expect(b.open(sealed.envelope).content).toBe('after restart');
  });

  it('caps the responder handshakes in progress', async () => {
    const { b, events } = pair({ maxPendingHandshakes: 2 });
    const alice = w.agent('alice');
    const frames = [0, 1, 2].map(() => InitiatorHandshake.start(w.crypto, { identity: alice, trustBundle: w.trustBundle }, 'bob').frame);
    const silent = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: w.agent('bob'), trustBundle: w.trustBundle },
      transport: { sendFrame: () => undefined },
      maxPendingHandshakes: 2,
      onEvent: (e) => events['bob']!.push(e),
    });
    managers.push(silent);
    for (const f of frames) await silent.handleFrame(f);
    expect(events['bob']!.filter((e) => e.kind === 'security' && e.code === 'rate_limited')).toHaveLength(1);
    void b;
  });

  it('holds at most maxSessionsPerPeer sessions with one peer: a new one closes the oldest', async () => {
    const { a, b, events } = pair({ maxSessionsPerPeer: 2 });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const s = await a.session('bob'); // a handshake each time: alice closed the last one on her side only
      ids.push(s.idHex);
      a.closeSession(s);
    }
    expect(new Set(ids).size).toBe(3);
    expect(b.sessions().map((s) => s.idHex)).toEqual(ids.slice(1));
    expect(events['bob']!.filter((e) => e.kind === 'closed').map((e) => (e as { session: { idHex: string } }).session.idHex)).toEqual([ids[0]]);
    expect(() => pair({ maxSessionsPerPeer: 0 })).toThrow(/maxSessionsPerPeer must be a positive integer/);
  });

  it('validates its configuration', () => {
    const alice = w.agent('alice');
    const base = { crypto: w.crypto, handshake: { identity: alice, trustBundle: w.trustBundle }, transport: { sendFrame: () => undefined } };
    expect(() => new SessionManager({ ...base, timeouts: { timeoutMinutes: 0 } })).toThrow(SessionError);
    expect(() => new SessionManager({ ...base, timeouts: { maxDurationMinutes: 10, warningThresholdMinutes: 10 } })).toThrow(SessionError);
    expect(() => new SessionManager({ ...base, timeouts: { autoRenew: 'yes' as never } })).toThrow(SessionError);
  });

  // A key that is not the certificate's used to be accepted: seal() resolved with an envelope, the peer refused
  // the handshake (`bad_binding … identity signature does not bind this Noise static key`) and open() answered
  // `unknown_session` — the sender never learned. Refused now where the owner sees it: at construction.
  it('refuses at construction a signing key that is not the certificate’s (identity_mismatch), before any seal', () => {
    const alice = w.agent('alice');
    const transport = { sendFrame: () => undefined };
    const stranger = w.crypto.ed25519.generateKeyPair().secretKey;
    const code = (options: unknown) => {
      try {
        managers.push(new SessionManager(options as SessionManagerOptions));
        return 'constructed';
      } catch (error) {
        expect(error).toBeInstanceOf(SessionError);
        return (error as SessionError).code;
      }
    };
    const handshake = (identity: unknown) => ({ identity, trustBundle: w.trustBundle });
    expect(code({ crypto: w.crypto, handshake: handshake({ ...alice, signingKey: stranger }), transport })).toBe('identity_mismatch');
    expect(code({ crypto: w.crypto, handshake: handshake({ ...alice, agentId: 'bob' }), transport })).toBe('identity_mismatch');
    expect(code({ crypto: w.crypto, handshake: handshake({ ...alice, signingKey: new Uint8Array(64) }), transport })).toBe('malformed');
    // A missing crypto is a typed error here, not a TypeError at the first seal.
    expect(code({ handshake: handshake(alice), transport })).toBe('malformed');
    expect(code({ crypto: w.crypto, transport })).toBe('malformed');
    expect(code({ crypto: w.crypto, handshake: handshake(alice) })).toBe('malformed');
    expect(code(null)).toBe('malformed');
    expect(code({ crypto: w.crypto, handshake: handshake(alice), transport })).toBe('constructed');
  });

  it('open(null) and open({}) are malformed (the shape is checked before the session), reported as security events', () => {
    const { b, events } = pair();
    for (const hostile of [null, {}, undefined, 42, { sessionId: new Uint8Array(16) }]) {
      let thrown: unknown;
      try {
        b.open(hostile as never);
      } catch (error) {
        thrown = error;
      }
      expect(thrown, String(hostile)).toBeInstanceOf(SessionError);
      expect((thrown as SessionError).code).toBe('malformed');
    }
    expect(events['bob']!.filter((e) => e.kind === 'security' && e.code === 'malformed' && e.stage === 'message')).toHaveLength(5);
  });
});
