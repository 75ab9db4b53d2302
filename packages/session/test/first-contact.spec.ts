// First contact as the initiator sees it (docs/PROTOCOL.md §5.4, §17.2 items 6–7): a step 1 the transport
// reports stored for an offline peer waits for its step 2 beyond the handshake timeout while the owner holds
// messages for that peer (never longer than the message lifetime); a refusal of the step 1 fails the
// handshake with the transport's code, not `handshake_failed`; an error's code is printed once; a message
// sealed late carries its creation time.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createIssuerKey } from '@parley/identity';
import { HandshakeFrameSchema, MessageType, fromBinary, toBinary, type HandshakeFrame } from '@parley/proto';
import { InitiatorHandshake, SessionError, SessionManager, type FrameRelayed, type SessionManagerOptions } from '../src/index.js';
import { createWorld, type World } from './fixtures.js';

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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Alice's manager, whose step 1 frames the "gateway" keeps (answering `queued` as told) until `connect()` hands
 * them to Bob's manager, which answers at once; every other frame goes straight through.
 */
function offlineBob(aliceOptions: Partial<SessionManagerOptions>, queued: boolean | undefined) {
  const alice = w.agent('alice');
  const bob = w.agent('bob');
  const stored: HandshakeFrame[] = [];
  const m: { a?: SessionManager; b?: SessionManager } = {};
  m.a = new SessionManager({
    crypto: w.crypto,
    handshake: { identity: alice, trustBundle: w.trustBundle, revocations: w.revocations },
    transport: {
      sendFrame: async (frame): Promise<FrameRelayed | undefined> => {
        if (frame.step === 1) {
          stored.push(frame);
          return queued === undefined ? undefined : { queued };
        }
        await m.b!.handleFrame(frame);
        return { queued: false };
      },
    },
    clock: w.clock,
    handshakeTimeoutMs: 50,
    ...aliceOptions,
  });
  m.b = new SessionManager({
    crypto: w.crypto,
    handshake: { identity: bob, trustBundle: w.trustBundle, revocations: w.revocations },
    transport: { sendFrame: (frame) => void m.a!.handleFrame(frame) },
    clock: w.clock,
  });
  managers.push(m.a, m.b);
  return {
    a: m.a,
    b: m.b,
    stored,
    /** Bob connects: the gateway drains his mailbox. */
    connect: async () => {
      for (const f of stored.splice(0)) await m.b!.handleFrame(f);
    },
  };
}

/** Settles into `{ value }` or `{ error }` without an unhandled rejection. */
function track<T>(promise: Promise<T>): { value?: T; error?: unknown; done: boolean } {
  const state: { value?: T; error?: unknown; done: boolean } = { done: false };
  promise.then(
    (value) => Object.assign(state, { value, done: true }),
    (error: unknown) => Object.assign(state, { error, done: true }),
  );
  return state;
}

describe('first contact with an offline peer (§5.4)', () => {
  it('a step 1 stored for the offline peer waits for step 2 beyond the handshake timeout while messages wait, then completes', async () => {
    let asked = 0;
    const { a, b, connect } = offlineBob({ queuedHandshakeUntil: () => (asked++, w.clock.now + 40) }, true);
    const session = track(a.session('bob'));
    await sleep(400); // eight handshake timeouts
    expect(session.done).toBe(false);
    expect(asked).toBeGreaterThan(1); // asked again each time: sends made meanwhile extend the wait
    await connect();
    await sleep(20);
    expect(session.error).toBeUndefined();
    expect(session.value?.peerId).toBe('bob');
    const sealed = await a.seal('bob', { type: MessageType.TASK_ASSIGNMENT, content: { first: true } });
    expect(b.open(sealed.envelope).content).toEqual({ first: true });
    // By contrast, a step 1 answered DELIVERED (or with no word about it), or one with no owner to ask, keeps
    // the normal timeout.
    for (const [queued, owner] of [[false, true], [undefined, true], [true, false]] as const) {
      const other = offlineBob(owner ? { queuedHandshakeUntil: () => w.clock.now + 60_000 } : {}, queued);
      await expect(other.a.session('bob')).rejects.toMatchObject({ code: 'handshake_failed', message: expect.stringMatching(/timed out$/) as unknown });
    }
  });

  it('ends the wait once no message waits for the peer any more (handshake_failed)', async () => {
    let waiting = true;
    const { a } = offlineBob({ queuedHandshakeUntil: () => (waiting ? w.clock.now + 30 : undefined) }, true);
    const session = track(a.session('bob'));
    await sleep(200);
    expect(session.done).toBe(false);
    waiting = false;
    await sleep(150);
    expect(session.error).toBeInstanceOf(SessionError);
    expect((session.error as SessionError).code).toBe('handshake_failed');
    expect((session.error as SessionError).message).toMatch(/offline peer/);
  });

  it('never waits longer than the message lifetime after step 1, whatever the owner answers', async () => {
    const { a } = offlineBob({ queuedHandshakeUntil: () => w.clock.now + 30 }, true);
    const session = track(a.session('bob'));
    await sleep(150);
    expect(session.done).toBe(false);
    w.clock.now += 60 * MINUTE; // the default lifetime (max_age) has passed since the handshake started
    w.revocations.apply([], 0, w.clock.now);
    await sleep(150);
    expect((session.error as SessionError | undefined)?.code).toBe('handshake_failed');
  });

});

describe('resending a queued step 1 (§5.4)', () => {
  /**
   * Alice's step 1 is stored (QUEUED) while Bob is offline; once he is online every frame goes straight through.
   * `loseStep2` of Bob's step-2 frames are refused by the "gateway" (rate_limited) after he took the step 1.
   */
  function flaky(aliceOptions: Partial<SessionManagerOptions>, loseStep2: number) {
    const step1s: Uint8Array[] = [];
    const state = { online: false, lost: 0, replays: 0 };
    const m: { a?: SessionManager; b?: SessionManager } = {};
    m.a = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: w.agent('alice'), trustBundle: w.trustBundle, revocations: w.revocations },
      transport: {
        sendFrame: async (frame): Promise<FrameRelayed> => {
          if (frame.step === 1) {
            step1s.push(toBinary(HandshakeFrameSchema, frame));
            if (!state.online) return { queued: true };
          }
          await m.b!.handleFrame(frame);
          return { queued: false };
        },
      },
      clock: w.clock,
      handshakeTimeoutMs: 50,
      queuedHandshakeResendMs: 20,
      ...aliceOptions,
    });
    m.b = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: w.agent('bob'), trustBundle: w.trustBundle, revocations: w.revocations },
      onEvent: (e) => void (e.kind === 'security' && e.code === 'replay' && state.replays++),
      transport: {
        sendFrame: (frame) => {
          if (frame.step === 2 && state.lost < loseStep2) {
            state.lost++;
            throw new SessionError('rate_limited', 'the gateway refused the step 2');
          }
          void m.a!.handleFrame(frame);
        },
      },
      clock: w.clock,
    });
    managers.push(m.a, m.b);
    return { a: m.a, b: m.b, step1s, state };
  }

  it('a step 2 lost after a QUEUED step 1 costs one resend of the same step 1, not the whole wait; none after step 2', async () => {
    const { a, b, step1s, state } = flaky({ queuedHandshakeUntil: () => w.clock.now + 60_000 }, 1);
    const session = track(a.session('bob'));
    await sleep(10);
    expect(step1s).toHaveLength(1);
    state.online = true; // Bob connects; the stored step 1 is drained to him, his step 2 is refused once
    await expect(b.handleFrame(fromBinary(HandshakeFrameSchema, step1s[0]!))).rejects.toMatchObject({ code: 'rate_limited' });
    expect(state.lost).toBe(1);
    for (let i = 0; i < 100 && !session.done; i++) await sleep(10);
    expect(session.error).toBeUndefined();
    expect(session.value?.peerId).toBe('bob');
    expect(step1s.length).toBeGreaterThanOrEqual(2);
    for (const copy of step1s) expect(Buffer.from(copy).equals(Buffer.from(step1s[0]!))).toBe(true); // byte-identical
    const sent = step1s.length;
    await sleep(200); // several resend intervals: nothing more once step 2 arrived
    expect(step1s).toHaveLength(sent);
    // A copy still in Bob's mailbox finds the session: dropped, and not reported as a replay (it is a resend).
    await b.handleFrame(fromBinary(HandshakeFrameSchema, step1s[0]!));
    expect(state.replays).toBe(0);
  });

  it('resends on a doubling interval while the wait lasts, and stops when it ends', async () => {
    let waiting = true;
    const { a, step1s } = flaky({ queuedHandshakeUntil: () => (waiting ? w.clock.now + 30 : undefined) }, 0);
    const session = track(a.session('bob'));
    await sleep(330); // resends at about 20, 60, 140, 300 ms (not 16 at a fixed 20 ms)
    expect(session.done).toBe(false);
    expect(step1s.length).toBeGreaterThanOrEqual(3);
    expect(step1s.length).toBeLessThanOrEqual(7);
    waiting = false;
    for (let i = 0; i < 50 && !session.done; i++) await sleep(10);
    expect((session.error as SessionError | undefined)?.code).toBe('handshake_failed');
    const sent = step1s.length;
    await sleep(400);
    expect(step1s).toHaveLength(sent);
  });
});

describe('refusals and messages', () => {
  it("a refused step 1 fails the handshake with the transport's code, its error kept as cause", async () => {
    const refusal = Object.assign(new Error('[policy_denied] denied by policy'), { code: 'policy_denied' });
    const m = new SessionManager({
      crypto: w.crypto,
      handshake: { identity: w.agent('alice'), trustBundle: w.trustBundle },
      transport: { sendFrame: () => Promise.reject(refusal) },
    });
    managers.push(m);
    const error = await m.session('bob').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SessionError);
    expect((error as SessionError).code).toBe('policy_denied');
    expect((error as SessionError).message).toBe('[policy_denied] could not send the handshake frame: denied by policy');
    expect((error as SessionError).cause).toBe(refusal);
    // A failure that is no session code stays handshake_failed, with the transport's error as cause.
    const down = Object.assign(new Error('[unavailable] no stream'), { code: 'unavailable' });
    const m2 = new SessionManager({ crypto: w.crypto, handshake: { identity: w.agent('carol'), trustBundle: w.trustBundle }, transport: { sendFrame: () => Promise.reject(down) } });
    managers.push(m2);
    await expect(m2.session('bob')).rejects.toMatchObject({ code: 'handshake_failed', cause: down });
  });

  it('a handshake with the agent itself says so (not "not a valid agent id")', () => {
    const alice = w.agent('alice');
    expect(() => InitiatorHandshake.start(w.crypto, w.config(alice), 'alice')).toThrow(/is this agent itself/);
    expect(() => InitiatorHandshake.start(w.crypto, w.config(alice), 'not valid!')).toThrow(/not a valid agent id/);
  });

  it('an identity failure prints its code once', async () => {
    const stranger = w.agent('bob', { issuer: createIssuerKey(w.crypto, w.crypto.ed25519.generateKeyPair()) });
    const peers = new Map<string, SessionManager>();
    const make = (agent: ReturnType<World['agent']>) =>
      new SessionManager({
        crypto: w.crypto,
        handshake: { identity: agent, trustBundle: w.trustBundle, revocations: w.revocations },
        transport: { sendFrame: async (f) => void (await peers.get(f.recipientId)?.handleFrame(f)) },
        clock: w.clock,
      });
    const a = make(w.agent('alice'));
    const b = make(stranger);
    peers.set('alice', a);
    peers.set('bob', b);
    managers.push(a, b);
    const error = (await a.session('bob').catch((e: unknown) => e)) as SessionError;
    expect(error.code).toBe('unknown_issuer');
    expect(error.message.match(/\[unknown_issuer\]/g)).toHaveLength(1);
  });
});

describe('sealing late (§17.2 item 7)', () => {
  it('seals with the creation time given (never after now), and refuses one older than the message lifetime', async () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    const peers = new Map<string, SessionManager>();
    const make = (agent: ReturnType<World['agent']>) =>
      new SessionManager({
        crypto: w.crypto,
        handshake: { identity: agent, trustBundle: w.trustBundle, revocations: w.revocations },
        transport: { sendFrame: async (f) => void (await peers.get(f.recipientId)?.handleFrame(f)) },
        clock: w.clock,
      });
    const a = make(alice);
    const b = make(bob);
    peers.set('alice', a);
    peers.set('bob', b);
    managers.push(a, b);
    const created = w.clock.now - 50 * MINUTE;
    const late = await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 1, timestampMs: created });
    expect(Number(late.envelope.timestampMs)).toBe(created);
    const opened = b.open(late.envelope);
    expect(Number(opened.payload.timestampMs)).toBe(created);
    const future = await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 2, timestampMs: w.clock.now + MINUTE });
    expect(Number(future.envelope.timestampMs)).toBe(w.clock.now);
    await expect(a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 3, timestampMs: w.clock.now - 61 * MINUTE })).rejects.toMatchObject({ code: 'stale_timestamp' });
  });
});
