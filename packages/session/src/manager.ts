/**
 * SessionManager: one agent's sessions with its peers (docs/PROTOCOL.md §10).
 *
 * - get-or-establish: `session(peerId)` returns the live session or runs a
 *   handshake through the caller's FrameTransport (concurrent callers share it);
 * - lifetimes: idle timeout, maximum duration, a warning before expiry, and
 *   optional auto-renew (a fresh handshake before the old session ends; the old
 *   one keeps receiving until it expires, so nothing in flight is lost);
 * - graceful close; sealed export/import of every session's state.
 */
import { SecretKey, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, isIdentityError } from '@parley/identity';
import type { HandshakeFrame, SecureMessage } from '@parley/proto';
import { assertCrypto, assertLocalIdentity, check, describe, malformed, optionalObject } from './assert.js';
import { SessionError, detailOf, isSessionErrorCode } from './errors.js';
import type { SecurityEvent } from './events.js';
import { InitiatorHandshake, ResponderHandshake, type HandshakeConfig } from './handshake.js';
import { MessageHashCache } from './message-cache.js';
import { exportSessionState, importSessionState } from './sealed-state.js';
import { DEFAULT_SKEW, type OpenedMessage, type OutgoingMessage, type SealedMessage, type Session } from './session.js';
import { MAX_MESSAGE_COUNTER, assertEnvelopeShape, type EnvelopeDigest } from './envelope.js';

/** Session lifetimes, in minutes, as operators configure them. */
export interface SessionTimeouts {
  /** Idle timeout: a session unused this long is closed. Default 30. */
  readonly timeoutMinutes: number;
  /** Hard maximum lifetime of one session. Default 24 * 60. */
  readonly maxDurationMinutes: number;
  /** Start a replacement handshake this long before maxDuration (autoRenew) and warn. Default 5. */
  readonly warningThresholdMinutes: number;
  /** Renew sessions automatically before they reach maxDuration. Default true. */
  readonly autoRenew: boolean;
}

export const DEFAULT_TIMEOUTS: SessionTimeouts = Object.freeze({
  timeoutMinutes: 30,
  maxDurationMinutes: 24 * 60,
  warningThresholdMinutes: 5,
  autoRenew: true,
});

/** What a transport may say about a frame it relayed. */
export interface FrameRelayed {
  /**
   * The gateway stored the frame in the mailbox of a recipient that is offline (`accepted QUEUED`, §10.8):
   * it is delivered when the recipient connects. For a step 1, the initiator may then wait for step 2 beyond
   * the handshake timeout (docs/PROTOCOL.md §5.4, {@link SessionManagerOptions.queuedHandshakeUntil}).
   */
  readonly queued: boolean;
}

/**
 * Carries handshake frames to a peer (through the gateway, in practice). A refusal rejects with an error
 * whose `code` is the gateway's (`policy_denied`, …): the handshake fails with that code.
 */
export interface FrameTransport {
  sendFrame(frame: HandshakeFrame): void | FrameRelayed | Promise<void | FrameRelayed>;
}

export type SessionManagerEvent =
  | SecurityEvent
  | { readonly kind: 'established'; readonly session: Session }
  | { readonly kind: 'expiring'; readonly session: Session; readonly expiresAtMs: number }
  | { readonly kind: 'expired'; readonly session: Session; readonly reason: 'idle' | 'max_duration' }
  | { readonly kind: 'renewed'; readonly previous: Session; readonly session: Session }
  | { readonly kind: 'closed'; readonly session: Session }
  /** A handshake this agent was responding to ended without a session (failed step 3, timeout, close). */
  | { readonly kind: 'responder_abandoned'; readonly sessionIdHex: string; readonly peerId: string };

export interface SessionManagerOptions {
  readonly crypto: ParleyCrypto;
  readonly handshake: Omit<HandshakeConfig, 'events' | 'messageCache' | 'clock'>;
  readonly transport: FrameTransport;
  readonly timeouts?: Partial<SessionTimeouts>;
  /** A handshake not finished within this many ms fails. Default 10 000. */
  readonly handshakeTimeoutMs?: number;
  /**
   * How long a handshake this manager initiated waits for step 2 when the transport reports its step 1
   * `queued` (stored for an offline peer, docs/PROTOCOL.md §5.4): until the time (this manager's clock, ms)
   * this returns for the peer — asked again when that time comes, so sends made meanwhile extend it —, never
   * longer than the message lifetime (the handshake's `skew.maxAgeMs`) after the handshake started.
   * `undefined`, or a time already past, ends the handshake as a timeout (`handshake_failed`). The owner
   * answers with the latest expiry of the messages waiting for that peer. Without it, and for a step 1 the
   * transport does not report queued, the handshake times out after `handshakeTimeoutMs`.
   */
  readonly queuedHandshakeUntil?: (peerId: string) => number | undefined;
  /**
   * While a handshake whose step 1 was stored for an offline peer waits for step 2 (§5.4), the same step-1
   * frame (byte-identical: same session id, same ephemeral key) is sent again after this many ms, then after
   * twice that, doubling up to 60 000 ms (or this value, if larger), until step 2 arrives or the wait ends:
   * a step 1 or step 2 lost on the way (dropped by the responder, refused by the gateway, lost in a crash)
   * then costs one interval, not the whole wait. Default 5 000.
   */
  readonly queuedHandshakeResendMs?: number;
  /**
   * Most responder handshakes in progress at once (each costs a key generation,
   * two DH operations and a signature before the initiator is authenticated).
   * Further step-1 frames are dropped as `rate_limited`. Default 1000.
   */
  readonly maxPendingHandshakes?: number;
  /**
   * Most responder handshakes in progress at once for one initiating peer
   * (further step-1 frames from it are dropped as `rate_limited`), so one peer
   * cannot take every responder slot. Default 4.
   */
  readonly maxPendingHandshakesPerPeer?: number;
  /**
   * Most sessions held with one peer (the newest carries outgoing traffic, older ones keep receiving until
   * they expire): registering one more closes the oldest, whose late envelopes are then answered with a
   * SessionReject and resealed by their sender (§17.4). Without it a peer that completes handshakes over and
   * over holds a session (keys, a replay window, a journal record) per handshake for a day. Default 8.
   */
  readonly maxSessionsPerPeer?: number;
  /** Most sessions held in all; step-1 frames beyond it are dropped as `rate_limited`. Default 100 000. */
  readonly maxSessions?: number;
  /**
   * Whether to answer a step 1 from `peerId` (the gateway has authenticated
   * the frame's sender; the certificate is checked at step 3). Default: all.
   * A refused step 1 is dropped as `policy_denied` without any cryptography.
   */
  readonly acceptHandshake?: (peerId: string) => boolean;
  /**
   * Durable counter reservation (docs/PROTOCOL.md §13): before sealing a
   * counter at or beyond the session's reserved mark, the manager awaits this
   * with a new mark `upTo` (exclusive) and seals only once it resolved. The
   * owner records `upTo` durably; after a restart, {@link SessionManager.restore}
   * resumes at the recorded mark, so no (key, nonce) is ever used twice even
   * if the process crashed right after sealing. If it rejects, nothing is sealed.
   */
  readonly reserveCounters?: (session: Session, upTo: number) => Promise<void>;
  /** Counters reserved per call of `reserveCounters`. Default 256. */
  readonly reservationBlock?: number;
  /** How often lifetimes are checked, ms. Default 1000. */
  readonly tickMs?: number;
  readonly clock?: () => number;
  /** Receives security and lifecycle events. */
  readonly onEvent?: (event: SessionManagerEvent) => void;
  /** Called with fresh sealed state whenever a session starts or its send epoch advances (persistence hook). */
  readonly onStateChange?: (peerId: string, sealed: Uint8Array) => void;
  /** 32-byte key sealing exported state (required for export/import and onStateChange). */
  readonly stateKey?: SecretKey;
}

interface Pending {
  readonly handshake: InitiatorHandshake;
  readonly promise: Promise<Session>;
  readonly resolve: (s: Session) => void;
  readonly reject: (e: unknown) => void;
  /** The timeout; re-armed while a step 1 stored for an offline peer waits for its answer. */
  timer: NodeJS.Timeout | undefined;
  /** The transport reported step 1 stored for an offline peer (§5.4). */
  queued: boolean;
  /** The step-1 frame, sent again as it is while a queued step 1 waits (§5.4). */
  readonly frame: HandshakeFrame;
  /** The next resend of {@link frame}, while queued. */
  resendTimer: NodeJS.Timeout | undefined;
  readonly startedAtMs: number;
  readonly renewing?: Session;
  /** When {@link timer} fires (this manager's clock); what is left of it is kept while held. */
  deadlineMs: number;
  /** Holds of the timeout in force ({@link SessionManager.holdHandshake}): the timer is stopped while any is. */
  holds: number;
}

/** Options that are counts or durations in ms: positive integers when given. */
const POSITIVE_INTEGER_OPTIONS = [
  'maxSessionsPerPeer',
  'maxSessions',
  'maxPendingHandshakes',
  'maxPendingHandshakesPerPeer',
  'reservationBlock',
  'handshakeTimeoutMs',
  'queuedHandshakeResendMs',
  'tickMs',
] as const satisfies readonly (keyof SessionManagerOptions)[];

/** Options that are callbacks: functions when given. */
const FUNCTION_OPTIONS = [
  'queuedHandshakeUntil',
  'acceptHandshake',
  'reserveCounters',
  'clock',
  'onEvent',
  'onStateChange',
] as const satisfies readonly (keyof SessionManagerOptions)[];

/** Longest delay setTimeout takes (about 24.8 days); longer waits are re-armed when it fires. */
const MAX_TIMER_MS = 2_147_483_647;

const MINUTE = 60_000;

/** Longest interval between two resends of a queued step 1 (unless `queuedHandshakeResendMs` is longer). */
const MAX_STEP1_RESEND_MS = 60_000;

export class SessionManager {
  readonly #crypto: ParleyCrypto;
  readonly #options: SessionManagerOptions;
  readonly #timeouts: SessionTimeouts;
  readonly #clock: () => number;
  readonly #cache = new MessageHashCache();
  readonly #config: HandshakeConfig;
  /** Every live session by session id (hex). */
  readonly #sessions = new Map<string, Session>();
  /** The session used to send to each peer. */
  readonly #current = new Map<string, Session>();
  readonly #pendingByPeer = new Map<string, Pending>();
  readonly #pendingById = new Map<string, Pending>();
  readonly #responders = new Map<string, { handshake: ResponderHandshake; timer: NodeJS.Timeout | undefined; peerId: string; holds: number }>();
  /** Responder handshakes in progress per initiating peer. */
  readonly #respondingPerPeer = new Map<string, number>();
  /** Send counters durably reserved per session (exclusive upper bound), when `reserveCounters` is set. */
  readonly #reserved = new Map<string, number>();
  readonly #reserving = new Map<string, Promise<void>>();
  readonly #warned = new Set<string>();
  readonly #lastSnapshotEpoch = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  /**
   * Checks the options before anything runs — among them that `handshake.identity`'s signing key is the one
   * its certificate names and its agent id the certificate's: a manager built with another key would seal
   * envelopes no peer can accept (the peer refuses the handshake, `bad_binding`, and only the peer knows).
   * @throws SessionError `malformed` (a missing or ill-typed option: `crypto`, `handshake`, `transport`, a
   *   limit, a callback), `identity_mismatch` (the signing key or agent id is not the certificate's)
   */
  constructor(options: SessionManagerOptions) {
    check.object(options, 'options');
    this.#crypto = assertCrypto(options.crypto, 'options.crypto');
    check.object(options.handshake, 'options.handshake');
    assertLocalIdentity(this.#crypto, options.handshake.identity, 'handshake.identity');
    if (!(options.handshake.trustBundle instanceof TrustBundle)) malformed(`handshake.trustBundle must be a TrustBundle, got ${describe(options.handshake.trustBundle)}`);
    check.func(check.object(options.transport, 'options.transport')['sendFrame'], 'options.transport.sendFrame');
    this.#options = options;
    this.#timeouts = { ...DEFAULT_TIMEOUTS, ...optionalObject(options.timeouts, 'options.timeouts') };
    validateTimeouts(this.#timeouts);
    for (const name of POSITIVE_INTEGER_OPTIONS) {
      const v = options[name];
      if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1)) throw new SessionError('malformed', `${name} must be a positive integer`);
    }
    for (const name of FUNCTION_OPTIONS) if (options[name] !== undefined) check.func(options[name], name);
    if (options.stateKey !== undefined && !(options.stateKey instanceof SecretKey)) malformed(`stateKey must be a SecretKey, got ${describe(options.stateKey)}`);
    this.#clock = options.clock ?? Date.now;
    this.#config = {
      ...options.handshake,
      clock: this.#clock,
      messageCache: this.#cache,
      events: (e) => this.#emit(e),
    };
    const tickMs = options.tickMs ?? 1000;
    this.#timer = setInterval(() => this.tick(), tickMs);
    this.#timer.unref();
  }

  get agentId(): string {
    return this.#config.identity.agentId;
  }

  /** Live sessions (including ones kept only for receiving during renewal). */
  sessions(): Session[] {
    return [...this.#sessions.values()];
  }

  /** The session used for sending to `peerId`, if any. */
  current(peerId: string): Session | undefined {
    return this.#current.get(peerId);
  }

  /**
   * Returns the live session with `peerId`, establishing one if needed.
   * @throws SessionError from the handshake (`unknown_issuer`, `revoked`, `handshake_failed` on timeout, …),
   *   or with the transport's code when it refused a frame (`policy_denied`, `rate_limited`, …; its error is `cause`)
   */
  session(peerId: string): Promise<Session> {
    if (this.#closed) return Promise.reject(new SessionError('unknown_session', 'session manager is closed'));
    const existing = this.#current.get(peerId);
    if (existing && !existing.isClosed) return Promise.resolve(existing);
    return this.#initiate(peerId);
  }

  /** Seals a message to `peerId`, establishing a session first if needed. */
  async seal(peerId: string, message: OutgoingMessage): Promise<SealedMessage> {
    const session = await this.session(peerId);
    return this.#needsReservation(session) ? this.sealIn(session, message) : this.#sealNow(session, message);
  }

  /**
   * Seals a message in `session` (one of this manager's), after reserving its
   * counter durably when `reserveCounters` is configured.
   * @throws SessionError `unknown_session` (closed), the reservation's failure, or Session.seal's
   */
  async sealIn(session: Session, message: OutgoingMessage): Promise<SealedMessage> {
    while (this.#needsReservation(session)) await this.#reserve(session);
    return this.#sealNow(session, message);
  }

  #needsReservation(session: Session): boolean {
    return this.#options.reserveCounters !== undefined && !session.isClosed && session.sendCounter >= (this.#reserved.get(session.idHex) ?? 0);
  }

  #sealNow(session: Session, message: OutgoingMessage): SealedMessage {
    const before = session.sendEpoch;
    const sealed = session.seal(message);
    if (session.sendEpoch !== before) this.#snapshot(session);
    return sealed;
  }

  /** Whether this agent is responding to a handshake with this session id (step 2 sent, step 3 not yet read). */
  isResponding(sessionIdHex: string): boolean {
    return this.#responders.has(sessionIdHex);
  }

  /**
   * Holds the timeout of a handshake this manager initiated, by its session id (hex), while its owner works on
   * getting its step 1 through — a first contact's registry lookup between the gateway's refusal and the relay
   * with the recipient's certificate (docs/PROTOCOL.md §17.2 item 6) —: the timer does not fire while held, and
   * the release re-arms it with what was left of it, so the handshake does not time out for that work's duration
   * (the owner bounds it). Holds nest; a release counts once.
   * @returns the release — which says whether the handshake still waits (it may have been closed meanwhile) —, or
   *   `undefined` when no handshake of this manager waits under that id, or its timeout is due already
   */
  holdHandshake(sessionIdHex: string): (() => boolean) | undefined {
    const pending = this.#pendingById.get(sessionIdHex);
    if (pending === undefined || (pending.holds === 0 && pending.deadlineMs <= this.#clock())) return undefined;
    if (pending.holds++ === 0) {
      clearTimeout(pending.timer);
      pending.timer = undefined;
      pending.deadlineMs -= this.#clock(); // what is left, while held
    }
    let released = false;
    return () => {
      const waits = this.#pendingById.get(sessionIdHex) === pending;
      if (released) return waits;
      released = true;
      if (--pending.holds === 0 && waits) this.#arm(pending, pending.deadlineMs);
      return waits;
    };
  }

  /**
   * Whether this manager's revocation data cannot answer for `peerId` now: its checker reports `revocation_stale`
   * or fails (fail closed, §3.3 step 6). A handshake with that peer would then fail at its certificate check (§5.3)
   * for a reason time changes; its owner leaves the frame unprocessed meanwhile (docs/PROTOCOL.md §17.3 item 7).
   * False without revocation data, and when the checker answers (revoked or not: the handshake decides then).
   * An answer is what the certificate check takes as one (identity's `checkRevocation`, Session's peer check): a
   * status whose `revoked` is `true` or `false`; anything else — a Promise of an async checker, `undefined` — is no
   * answer, and the certificate check would fail closed `revocation_stale` on it, so this says stale too.
   */
  revocationStale(peerId: string): boolean {
    const checker = this.#config.revocations;
    if (checker === undefined) return false;
    let status: unknown;
    try {
      status = checker.check({ agentId: peerId, serial: new Uint8Array(16) }, this.#clock());
    } catch (error) {
      return !isIdentityError(error) || error.code === 'revocation_stale';
    }
    const revoked = (status as { revoked?: unknown } | null)?.revoked;
    return revoked !== true && revoked !== false;
  }

  /**
   * Holds the timeout of a handshake this manager is responding to (step 2 sent, step 3 not yet read), by its
   * session id (hex), while its owner leaves that step 3 unprocessed until its revocation data is fresh again
   * (docs/PROTOCOL.md §17.3 item 7): the timer does not fire while held, and the last release re-arms the full
   * handshake timeout. Holds nest; a release counts once.
   * @returns the release, or `undefined` when this manager is not responding under that id
   */
  holdResponder(sessionIdHex: string): (() => void) | undefined {
    const responder = this.#responders.get(sessionIdHex);
    if (responder === undefined) return undefined;
    if (responder.holds++ === 0) {
      clearTimeout(responder.timer);
      responder.timer = undefined;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--responder.holds === 0 && this.#responders.get(sessionIdHex) === responder && !this.#closed) responder.timer = this.#responderTimer(sessionIdHex);
    };
  }

  /** The timeout of the responder handshake `id`: it is abandoned when it fires. */
  #responderTimer(id: string): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const r = this.#responders.get(id);
      if (r === undefined) return;
      r.handshake.abort();
      this.#endResponder(id, r.peerId, true);
    }, this.#options.handshakeTimeoutMs ?? 10_000);
    timer.unref();
    return timer;
  }

  /** The live session with this id (hex), if any. */
  sessionById(sessionIdHex: string): Session | undefined {
    return this.#sessions.get(sessionIdHex);
  }

  /**
   * Opens an envelope addressed to this agent.
   * @param digest the envelope's signed bytes and hash from `messageHashOf`, when the caller took them already
   * @throws SessionError (`unknown_session`, `bad_signature`, `replay`, …); a security event is emitted
   */
  open(envelope: SecureMessage, digest?: EnvelopeDigest): OpenedMessage {
    const id = envelope?.sessionId instanceof Uint8Array ? Buffer.from(envelope.sessionId).toString('hex') : '';
    const refuse = (error: SessionError): never => {
      this.#emit({
        kind: 'security',
        code: error.code,
        stage: 'message',
        sessionId: id.length === 32 ? id : undefined,
        senderId: typeof envelope?.senderId === 'string' ? envelope.senderId.slice(0, 128) : undefined,
        recipientId: this.agentId,
        atMs: this.#clock(),
        detail: error.message,
      });
      throw error;
    };
    // §8.1: the shape first (`malformed`, `unsupported_version`, …), then the session.
    try {
      assertEnvelopeShape(envelope);
    } catch (error) {
      return refuse(error as SessionError);
    }
    const session = this.#sessions.get(id);
    if (session === undefined) return refuse(new SessionError('unknown_session', 'no session with that id'));
    try {
      return session.open(envelope, digest); // the session emits its own security events
    } catch (error) {
      // A peer found revoked or expired closes its session (§8.1 step 2): forget it here too.
      if (session.isClosed && this.#sessions.get(session.idHex) === session) this.#forget(session);
      throw error;
    }
  }

  /**
   * Handles a handshake frame from the transport. Frames that fail are
   * reported as security events and dropped (the peer learns nothing specific).
   * @returns the session this frame completed, if any
   */
  async handleFrame(frame: HandshakeFrame): Promise<Session | undefined> {
    if (this.#closed) return undefined;
    const id = frame?.sessionId instanceof Uint8Array ? Buffer.from(frame.sessionId).toString('hex') : '';
    // Rejections decided here are reported here; the handshake classes report their own.
    const drop = (code: SessionError['code'], detail: string): undefined => {
      this.#emit({
        kind: 'security',
        code,
        stage: 'handshake',
        sessionId: id.length === 32 ? id : undefined,
        senderId: typeof frame?.senderId === 'string' ? frame.senderId.slice(0, 128) : undefined,
        recipientId: this.agentId,
        atMs: this.#clock(),
        detail,
      });
      return undefined;
    };
    const reported = (): undefined => undefined;
    switch (frame?.step) {
      case 1: {
        // A session id this agent holds in any role — a session, a handshake it answers, or one it started and
        // waits on (another agent that saw the id go by could otherwise open a second session under it) —
        // makes the step 1 a redelivery or a collision: dropped (§5.1).
        // A copy from the very peer this agent answers or holds that session with is its initiator's resend of
        // a queued step 1 (§5.4), benign: dropped without a security event.
        const held = this.#responders.get(id)?.peerId ?? this.#sessions.get(id)?.peerId;
        if (held !== undefined && held === frame.senderId && !this.#pendingById.has(id)) return undefined;
        if (this.#responders.has(id) || this.#sessions.has(id) || this.#pendingById.has(id)) return drop('replay', 'handshake for an existing session id');
        if (this.#responders.size >= (this.#options.maxPendingHandshakes ?? 1000)) return drop('rate_limited', 'too many handshakes in progress');
        if (this.#sessions.size >= (this.#options.maxSessions ?? 100_000)) return drop('rate_limited', 'too many sessions');
        const peerId = typeof frame.senderId === 'string' ? frame.senderId : '';
        if ((this.#respondingPerPeer.get(peerId) ?? 0) >= (this.#options.maxPendingHandshakesPerPeer ?? 4)) {
          return drop('rate_limited', 'too many handshakes in progress with this peer');
        }
        if (this.#options.acceptHandshake !== undefined && !this.#options.acceptHandshake(peerId)) return drop('policy_denied', 'the application refuses handshakes from this peer');
        let accepted;
        try {
          accepted = ResponderHandshake.accept(this.#crypto, this.#config, frame);
        } catch {
          return reported();
        }
        this.#responders.set(id, { handshake: accepted.handshake, timer: this.#responderTimer(id), peerId, holds: 0 });
        this.#respondingPerPeer.set(peerId, (this.#respondingPerPeer.get(peerId) ?? 0) + 1);
        try {
          await this.#options.transport.sendFrame(accepted.frame);
        } catch (error) {
          const r = this.#responders.get(id);
          if (r !== undefined) {
            clearTimeout(r.timer);
            r.handshake.abort();
            this.#endResponder(id, peerId, true);
          }
          throw error;
        }
        return undefined;
      }
      case 2: {
        const pending = this.#pendingById.get(id);
        if (pending === undefined) return drop('unknown_session', 'no handshake waiting for step 2');
        this.#dropPending(pending);
        let completed;
        try {
          completed = pending.handshake.receive(frame);
        } catch (error) {
          pending.reject(error);
          return reported();
        }
        try {
          await this.#options.transport.sendFrame(completed.frame);
        } catch (error) {
          completed.session.close();
          pending.reject(transportFailure(error, 'could not send the final handshake frame'));
          return undefined;
        }
        if (!this.#register(completed.session, pending.renewing)) {
          pending.reject(new SessionError('replay', 'a session with this id is live already'));
          return undefined;
        }
        pending.resolve(completed.session);
        return completed.session;
      }
      case 3: {
        const responder = this.#responders.get(id);
        if (responder === undefined) return drop('unknown_session', 'no handshake waiting for step 3');
        clearTimeout(responder.timer);
        let session;
        try {
          session = responder.handshake.receive(frame);
        } catch {
          this.#endResponder(id, responder.peerId, true);
          return reported();
        }
        if (!this.#register(session, undefined)) {
          this.#endResponder(id, responder.peerId, true);
          return undefined;
        }
        this.#endResponder(id, responder.peerId, false);
        return session;
      }
      default:
        return drop('malformed', 'handshake frame with an unknown step');
    }
  }

  /** Checks lifetimes: warnings, auto-renewal, expiry. Runs on a timer; callable directly (tests). */
  tick(): void {
    if (this.#closed) return;
    const now = this.#clock();
    const { timeoutMinutes, maxDurationMinutes, warningThresholdMinutes, autoRenew } = this.#timeouts;
    for (const session of [...this.#sessions.values()]) {
      const expiresAt = session.createdAtMs + maxDurationMinutes * MINUTE;
      if (now >= expiresAt) {
        this.#expire(session, 'max_duration');
        continue;
      }
      if (now - session.lastActivityMs >= timeoutMinutes * MINUTE) {
        this.#expire(session, 'idle');
        continue;
      }
      if (now >= expiresAt - warningThresholdMinutes * MINUTE && !this.#warned.has(session.idHex)) {
        this.#warned.add(session.idHex);
        this.#emit({ kind: 'expiring', session, expiresAtMs: expiresAt });
        if (autoRenew && this.#current.get(session.peerId) === session && !this.#pendingByPeer.has(session.peerId)) {
          this.#initiate(session.peerId, session).catch(() => undefined);
        }
      }
    }
  }

  /** Closes one session (wiping its keys). */
  closeSession(session: Session): void {
    const tracked = this.#sessions.get(session.idHex) === session;
    if (session.isClosed && !tracked) return;
    this.#forget(session);
  }

  /** Drops a session from every map, closes it (wiping its keys) and reports it closed. */
  #forget(session: Session): void {
    this.#sessions.delete(session.idHex);
    this.#reserved.delete(session.idHex);
    this.#reserving.delete(session.idHex);
    if (this.#current.get(session.peerId) === session) this.#current.delete(session.peerId);
    this.#warned.delete(session.idHex);
    this.#lastSnapshotEpoch.delete(session.idHex);
    session.close();
    this.#emit({ kind: 'closed', session });
  }

  /** Graceful shutdown: fails pending handshakes, closes every session, stops timers. */
  close(): void {
    if (this.#closed) return;
    for (const p of this.#pendingByPeer.values()) {
      this.#dropPending(p);
      p.handshake.abort();
      p.reject(new SessionError('unknown_session', 'session manager closed'));
    }
    for (const [id, r] of [...this.#responders]) {
      clearTimeout(r.timer);
      r.handshake.abort();
      this.#endResponder(id, r.peerId, true);
    }
    for (const s of [...this.#sessions.values()]) this.closeSession(s);
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
  }

  /** Sealed state of every live session (requires `stateKey`). */
  exportState(): Uint8Array[] {
    const key = this.#stateKey();
    return [...this.#sessions.values()].map((s) => exportSessionState(this.#crypto, s, key));
  }

  /**
   * Restores sessions from `exportState()` output (requires `stateKey`). Senders resume two epochs past the
   * snapshot's counter, which is safe only without reservations (§13): with `reserveCounters` configured
   * the previous process may have sealed up to its durable mark, further than that, so this refuses
   * (`malformed`, nothing imported) and {@link restore} with the recorded mark is the way back.
   * @throws SessionError `malformed` (reservations on, or no `stateKey`), `state_corrupt`, `identity_mismatch`,
   *   `replay` (a session with that id is live here already)
   */
  importState(sealed: readonly Uint8Array[]): Session[] {
    if (this.#options.reserveCounters !== undefined) {
      throw new SessionError('malformed', 'importState cannot resume sending under counter reservations: use restore(sealed, reservedMark)');
    }
    return sealed.map((bytes) => {
      const session = this.#import(bytes, undefined);
      this.#snapshot(session);
      return session;
    });
  }

  /**
   * Restores one session from sealed state (`exportState` output or a
   * snapshot taken by the owner) and resumes sending at `resumeSendCounter`:
   * the durable reservation mark recorded through `reserveCounters` (never
   * below the snapshot's own counter). The next seal reserves a new block.
   * @throws SessionError `state_corrupt`, `identity_mismatch`, `malformed`, `replay` (a session with that id
   *   is live here already)
   */
  restore(sealed: Uint8Array, resumeSendCounter: number): Session {
    const session = this.#import(sealed, resumeSendCounter);
    this.#reserved.set(session.idHex, session.sendCounter);
    return session;
  }

  #import(sealed: Uint8Array, resumeSendCounter: number | undefined): Session {
    const session = importSessionState(this.#crypto, sealed, this.#stateKey(), {
      identity: this.#config.identity,
      trustBundle: this.#config.trustBundle, // the live bundle: the peer's issuer is checked at every open (§8.1 step 2)
      clock: this.#clock,
      events: (e) => this.#emit(e),
      messageCache: this.#cache,
      ...(resumeSendCounter === undefined ? {} : { resumeSendCounter }),
      ...(this.#config.skew === undefined ? {} : { skew: this.#config.skew }),
      ...(this.#config.revocations === undefined ? {} : { revocations: this.#config.revocations }),
    });
    if (this.#sessions.has(session.idHex)) {
      // Never two sessions under one id (the live one would be orphaned, keys and all).
      session.close();
      throw new SessionError('replay', 'a session with this id is live already');
    }
    this.#sessions.set(session.idHex, session);
    const cur = this.#current.get(session.peerId);
    if (cur === undefined || cur.createdAtMs < session.createdAtMs) this.#current.set(session.peerId, session);
    return session;
  }

  /** Sealed state of one live session (requires `stateKey`). */
  exportSession(session: Session): Uint8Array {
    return exportSessionState(this.#crypto, session, this.#stateKey());
  }

  /** The reserved send mark of a session (exclusive), when reservations are on. */
  reservedUpTo(session: Session): number | undefined {
    return this.#reserved.get(session.idHex);
  }

  #reserve(session: Session): Promise<void> {
    const inFlight = this.#reserving.get(session.idHex);
    if (inFlight !== undefined) return inFlight;
    const block = this.#options.reservationBlock ?? 256;
    const upTo = Math.min(Math.max(session.sendCounter, this.#reserved.get(session.idHex) ?? 0) + block, MAX_MESSAGE_COUNTER);
    const run = this.#options.reserveCounters!(session, upTo).then(
      () => {
        this.#reserving.delete(session.idHex);
        if (!session.isClosed) this.#reserved.set(session.idHex, Math.max(upTo, this.#reserved.get(session.idHex) ?? 0));
      },
      (error: unknown) => {
        this.#reserving.delete(session.idHex);
        throw error;
      },
    );
    this.#reserving.set(session.idHex, run);
    return run;
  }

  #endResponder(id: string, peerId: string, abandoned: boolean): void {
    if (!this.#responders.delete(id)) return;
    const n = (this.#respondingPerPeer.get(peerId) ?? 1) - 1;
    if (n <= 0) this.#respondingPerPeer.delete(peerId);
    else this.#respondingPerPeer.set(peerId, n);
    if (abandoned) this.#emit({ kind: 'responder_abandoned', sessionIdHex: id, peerId });
  }

  #stateKey(): SecretKey {
    if (this.#options.stateKey === undefined) throw new SessionError('malformed', 'no stateKey configured');
    return this.#options.stateKey;
  }

  #initiate(peerId: string, renewing?: Session): Promise<Session> {
    const inFlight = this.#pendingByPeer.get(peerId);
    if (inFlight) return inFlight.promise;
    let handshake: InitiatorHandshake;
    let frame: HandshakeFrame;
    try {
      ({ handshake, frame } = InitiatorHandshake.start(this.#crypto, this.#config, peerId));
    } catch (error) {
      return Promise.reject(error);
    }
    let resolve!: (s: Session) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<Session>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined); // callers get the rejection; never an unhandled one
    const pending: Pending = { handshake, promise, resolve, reject, timer: undefined, queued: false, frame, resendTimer: undefined, startedAtMs: this.#clock(), deadlineMs: 0, holds: 0, ...(renewing ? { renewing } : {}) };
    this.#arm(pending, this.#options.handshakeTimeoutMs ?? 10_000);
    const id = Buffer.from(handshake.sessionId).toString('hex');
    this.#pendingByPeer.set(peerId, pending);
    this.#pendingById.set(id, pending);
    Promise.resolve()
      .then(() => this.#options.transport.sendFrame(frame))
      .then(
        (relayed) => {
          // Stored for an offline peer: its answer comes when it connects (§5.4). The timer, when it fires, waits
          // on while sends wait for this peer; step 2 (or a failure) ends the wait as usual.
          // While it waits, the same step 1 is sent again on a backoff: a lost step 1 or step 2 is retried (§5.4).
          if (relayed?.queued === true && this.#options.queuedHandshakeUntil !== undefined && this.#pendingById.get(id) === pending) {
            pending.queued = true;
            this.#resendLater(pending, this.#options.queuedHandshakeResendMs ?? 5_000);
          }
        },
        (error: unknown) => {
          if (this.#pendingById.get(id) !== pending) return; // over already (timed out, closed)
          this.#dropPending(pending);
          handshake.abort();
          reject(transportFailure(error, 'could not send the handshake frame'));
        },
      );
    return promise;
  }

  /**
   * Sends the queued step 1 of `pending` again, byte for byte, after `delayMs`, then on a doubling interval,
   * until the handshake is over (step 2, a failure, the end of the wait: {@link #dropPending} stops it). A
   * responder holding that session id drops the copy as a replay (§5.1); one whose handshake for it ended
   * answers with a new step 2, which this handshake takes. A resend the gateway refuses is tried again later.
   */
  #resendLater(pending: Pending, delayMs: number): void {
    const id = Buffer.from(pending.handshake.sessionId).toString('hex');
    clearTimeout(pending.resendTimer);
    pending.resendTimer = setTimeout(
      () => {
        if (this.#closed || this.#pendingById.get(id) !== pending) return;
        Promise.resolve()
          .then(() => this.#options.transport.sendFrame(pending.frame))
          .catch(() => undefined);
        this.#resendLater(pending, Math.min(delayMs * 2, Math.max(MAX_STEP1_RESEND_MS, this.#options.queuedHandshakeResendMs ?? 0)));
      },
      Math.min(delayMs, MAX_TIMER_MS),
    );
    pending.resendTimer.unref();
  }

  #arm(pending: Pending, delayMs: number): void {
    clearTimeout(pending.timer);
    const ms = Math.max(0, Math.min(delayMs, MAX_TIMER_MS));
    pending.deadlineMs = this.#clock() + ms;
    pending.timer = setTimeout(() => this.#timedOut(pending), ms);
    pending.timer.unref();
  }

  /**
   * A handshake's timer fired: it fails as timed out — unless its step 1 is stored for an offline peer and
   * the owner still holds messages for that peer (§5.4): then it waits on, until their latest expiry and at
   * most a message lifetime after it started.
   */
  #timedOut(pending: Pending): void {
    const { handshake } = pending;
    const peerId = handshake.peerId;
    if (this.#pendingById.get(Buffer.from(handshake.sessionId).toString('hex')) !== pending) return;
    if (pending.queued) {
      const lifetime = this.#options.handshake.skew?.maxAgeMs ?? DEFAULT_SKEW.maxAgeMs;
      const asked = this.#options.queuedHandshakeUntil?.(peerId);
      const until = typeof asked === 'number' && Number.isFinite(asked) ? Math.min(asked, pending.startedAtMs + lifetime) : 0;
      const now = this.#clock();
      if (until > now) {
        this.#arm(pending, until - now);
        return;
      }
    }
    this.#dropPending(pending);
    handshake.abort();
    pending.reject(
      new SessionError(
        'handshake_failed',
        pending.queued ? `handshake with ${peerId} timed out: its step 1 waits for the offline peer, and no message for it waits any more` : `handshake with ${peerId} timed out`,
      ),
    );
  }

  #dropPending(p: Pending): void {
    clearTimeout(p.timer);
    clearTimeout(p.resendTimer);
    const id = Buffer.from(p.handshake.sessionId).toString('hex');
    this.#pendingById.delete(id);
    if (this.#pendingByPeer.get(p.handshake.peerId) === p) this.#pendingByPeer.delete(p.handshake.peerId);
  }

  /**
   * Adds a session a handshake completed. A live session under the same id is never replaced (that would
   * leave it orphaned with live keys and send its peer's envelopes to the newcomer): the new one is closed,
   * its keys wiped, and the refusal reported as `replay`.
   * @returns whether the session was registered
   */
  #register(session: Session, renewing: Session | undefined): boolean {
    if (this.#sessions.has(session.idHex)) {
      session.close();
      this.#emit({
        kind: 'security',
        code: 'replay',
        stage: 'handshake',
        sessionId: session.idHex,
        senderId: session.peerId,
        recipientId: this.agentId,
        atMs: this.#clock(),
        detail: 'a session with this id is live already; the handshake that completed under it is closed',
      });
      return false;
    }
    this.#sessions.set(session.idHex, session);
    // Bounded per peer: the oldest of this peer's sessions beyond the bound are closed (never the new one).
    const max = this.#options.maxSessionsPerPeer ?? 8;
    const mine = [...this.#sessions.values()].filter((x) => x.peerId === session.peerId && x !== session);
    if (mine.length >= max) {
      mine.sort((a, b) => a.createdAtMs - b.createdAtMs);
      for (const old of mine.slice(0, mine.length - max + 1)) this.#forget(old);
    }
    const previous = this.#current.get(session.peerId);
    // The newest session carries outgoing traffic; older ones keep receiving until they expire.
    if (previous === undefined || previous.isClosed || previous.createdAtMs <= session.createdAtMs) this.#current.set(session.peerId, session);
    this.#emit({ kind: 'established', session });
    if (renewing) this.#emit({ kind: 'renewed', previous: renewing, session });
    this.#snapshot(session);
    return true;
  }

  #expire(session: Session, reason: 'idle' | 'max_duration'): void {
    this.#emit({ kind: 'expired', session, reason });
    this.closeSession(session);
  }

  #snapshot(session: Session): void {
    if (this.#options.onStateChange === undefined || this.#options.stateKey === undefined) return;
    const epoch = session.stats.sendEpoch;
    if (this.#lastSnapshotEpoch.get(session.idHex) === epoch && session.sendCounter > 0) return;
    this.#lastSnapshotEpoch.set(session.idHex, epoch);
    this.#options.onStateChange(session.peerId, exportSessionState(this.#crypto, session, this.#options.stateKey));
  }

  #emit(event: SessionManagerEvent): void {
    try {
      this.#options.onEvent?.(event);
    } catch {
      // A listener's failure must not break the session layer.
    }
  }
}

/**
 * The handshake's failure when the transport could not relay a frame: the transport's code when it is one of
 * the session codes (the gateway's `policy_denied`, `rate_limited`, `too_large`, …: the reason the handshake
 * failed, which a caller must be able to tell from a failed handshake), `handshake_failed` otherwise
 * (`unavailable`, `quota_exceeded`, …), the transport's error as `cause` either way.
 */
function transportFailure(error: unknown, what: string): SessionError {
  const code = (error as { code?: unknown } | null)?.code;
  return new SessionError(isSessionErrorCode(code) ? code : 'handshake_failed', `${what}: ${detailOf(error)}`, { cause: error });
}

function validateTimeouts(t: SessionTimeouts): void {
  const positive = (v: number, name: string) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new SessionError('malformed', `${name} must be a positive number of minutes`);
  };
  positive(t.timeoutMinutes, 'timeoutMinutes');
  positive(t.maxDurationMinutes, 'maxDurationMinutes');
  if (typeof t.warningThresholdMinutes !== 'number' || t.warningThresholdMinutes < 0 || t.warningThresholdMinutes >= t.maxDurationMinutes) {
    throw new SessionError('malformed', 'warningThresholdMinutes must be in [0, maxDurationMinutes)');
  }
  if (typeof t.autoRenew !== 'boolean') throw new SessionError('malformed', 'autoRenew must be a boolean');
}
