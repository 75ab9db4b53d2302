/**
 * Session establishment as the agent sees it (docs/PROTOCOL.md §6, §13, §17.3): relayed handshake frames
 * go to the session manager (a frame of a finished handshake is a `duplicate`); envelopes that overtook
 * step 3 of a handshake this agent is responding to are held and opened once it completes, or refused
 * with a SessionReject if it is abandoned; each new session's first snapshot and each end are journaled (later
 * snapshots: session-snapshots.ts). A step 1 or step 3 this agent cannot check now — its revocation data is stale
 * (§17.3 item 7) — is left unacknowledged at the gateway and processed once the data is fresh again: never
 * turned into SessionRejects for the envelopes behind it. Only the newest step 1 of a sender waits (an initiator has
 * one handshake in flight per peer: an older step 1 is one it gave up on), and the frames behind a sender's waiting
 * ones wait behind them, in arrival order.
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import type { AgentCertificate, HandshakeFrame } from '@parley/proto';
import type { LocalIdentity, Session, SessionManager, SessionManagerEvent } from '@parley/session';
import type { AgentEvent } from './agent-options.js';
import type { DurableState } from './durable-state.js';
import { rejectSession, type DeliveredEnvelope } from './inbox.js';
import type { Lifecycle } from './lifecycle.js';
import type { SessionSnapshots } from './session-snapshots.js';

const HELD_PER_HANDSHAKE = 64;
/**
 * Most handshake frames left unacknowledged, from all senders, to be processed once the revocation data is fresh.
 * Each one takes a slot of the gateway's in-flight window of this stream (256 deliveries, apps/gateway delivery.ts
 * DEFAULT_MAX_IN_FLIGHT), which the envelopes held behind a waiting step 3 (up to {@link HELD_PER_HANDSHAKE} per
 * handshake, §17.3 item 4), the inbox's deferred deliveries (§17.3 item 6) and the receipts for this agent's own
 * sends need too: a full window delivers nothing more until the data is fresh. 64 leaves three quarters of it to them.
 */
const MAX_DEFERRED_FRAMES = 64;
/**
 * Most frames left unacknowledged from one sender: its one step 1 (a newer one replaces it) and the step 3s of the
 * handshakes this agent answers for it — at most the session manager's `maxPendingHandshakesPerPeer` (default 4) —,
 * so that no peer takes the slots of the others.
 */
const MAX_DEFERRED_PER_SENDER = 5;
/** How often frames waiting for fresh revocation data are tried again (as the inbox's deferred deliveries, §17.3 item 6). */
const RETRY_MS = 250;

/** A handshake frame left unacknowledged until this agent can check its sender's revocation again. */
interface DeferredFrame {
  readonly frame: HandshakeFrame;
  readonly ack: () => void;
  /** step, session id and sender: a later copy of the same frame replaces it (and a later step 1 of that sender any step 1). */
  readonly key: string;
  /** Releases the hold of the responder's timeout (a step 3). */
  readonly release: (() => void) | undefined;
}

/** What the handshake handling works with. */
export interface HandshakesDeps {
  readonly crypto: ParleyCrypto;
  readonly identity: LocalIdentity;
  readonly manager: SessionManager;
  readonly lifecycle: Lifecycle;
  readonly state: DurableState;
  /** Builds the journaled snapshots of sessions (and tracks how far behind each one is). */
  readonly snapshots: SessionSnapshots;
  readonly emit: (event: AgentEvent) => void;
  /** Runs `fn`, returning the session events it emitted instead of forwarding them. */
  readonly captured: (fn: () => void) => SessionManagerEvent[];
  /** Processes an envelope (the inbox), for the ones held until their handshake completed. */
  readonly openEnvelope: (item: DeliveredEnvelope) => void;
  /** This agent's certificate, attached to its SessionRejects after a key rotation (§17.8). */
  readonly signerCertificate?: () => AgentCertificate | undefined;
}

export class Handshakes {
  readonly #deps: HandshakesDeps;
  /** Envelopes held for a session this agent is still responding to (§17.3), by session id. */
  readonly #held = new Map<string, DeliveredEnvelope[]>();
  /** Frames waiting for fresh revocation data, in arrival order (§17.3 item 7). */
  #deferred: DeferredFrame[] = [];
  #retryTimer: NodeJS.Timeout | undefined;
  /** The deferred frames are being processed (one pass at a time). */
  #retrying = false;

  constructor(deps: HandshakesDeps) {
    this.#deps = deps;
  }

  /**
   * A relayed handshake frame: handled, acked (with `ack`), and what was held for its session released — or, when
   * it is a step 1, or the step 3 of a handshake this agent responds to, and this agent's revocation data cannot
   * answer for its sender now, left unacknowledged and processed once it can (§17.3 item 7).
   */
  async onFrame(frame: HandshakeFrame, ack: () => void): Promise<void> {
    if (this.#waitsForRevocation(frame) || this.#waitsBehind(frame)) {
      const overflow = this.#defer(frame, ack);
      if (overflow) await this.#process(frame, ack);
      return;
    }
    await this.#process(frame, ack);
  }

  /** How many frames wait for fresh revocation data (tests, diagnostics). */
  get deferredFrames(): number {
    return this.#deferred.length;
  }

  /**
   * Whether `frame` must wait for fresh revocation data: a step 1 (answered, its step 3 would fail `revocation_stale`,
   * and the envelopes sealed in the initiator's session at once would be refused) or the step 3 of a handshake this
   * agent responds to (its certificate check would fail, the handshake be abandoned and its envelopes refused).
   */
  #waitsForRevocation(frame: HandshakeFrame): boolean {
    const { manager } = this.#deps;
    if (typeof frame?.senderId !== 'string') return false;
    if (frame.step === 1) return manager.revocationStale(frame.senderId);
    if (frame.step === 3) return manager.isResponding(sessionHex(frame)) && manager.revocationStale(frame.senderId);
    return false;
  }

  /**
   * Whether `frame` must wait behind frames of its sender that wait already (in arrival order, §17.3 item 7): a step 1,
   * or the step 3 of a handshake this agent responds to, whose sender has frames waiting — the data may have become
   * fresh since, and processing it before them would answer a step 1 its initiator gave up on after the one it waits
   * on, or take a responder slot ahead of them.
   */
  #waitsBehind(frame: HandshakeFrame): boolean {
    if (typeof frame?.senderId !== 'string' || this.#deferred.length === 0) return false;
    if (frame.step !== 1 && !(frame.step === 3 && this.#deps.manager.isResponding(sessionHex(frame)))) return false;
    return this.#deferred.some((d) => d.frame.senderId === frame.senderId);
  }

  /**
   * Leaves a frame unacknowledged (the gateway keeps it: a crash loses nothing) and keeps it to be processed once
   * the revocation data is fresh; a step 3's handshake is held meanwhile (its timeout would abandon it). A later
   * copy of a step 3 already waiting (a redelivery on a new stream) takes its place, and the earlier copy is acked:
   * the gateway keeps the newest one. A step 1 replaces every step 1 of its sender that waits (a copy of it, a queued
   * step 1 sent again, or the step 1 of a handshake its initiator gave up on: an initiator has one handshake in
   * flight per peer, and one that timed out retries with a new session id), each acked — else the dead ones, processed
   * first, would take the per-peer responder slots and the live one be dropped `rate_limited`.
   * Beyond {@link MAX_DEFERRED_PER_SENDER} or {@link MAX_DEFERRED_FRAMES}, a step 1 is acked and dropped
   * (`rate_limited`: nothing was answered, its initiator retries it after its timeout, §17.2 item 6; left unacked
   * it would hold a slot of the gateway's in-flight window until the stream ends), and a step 3 takes the place of
   * the oldest waiting step 1 — or, when none waits, is processed at once (true: the caller processes it).
   * @returns whether the frame could not be kept and is to be processed now
   */
  #defer(frame: HandshakeFrame, ack: () => void): boolean {
    const { manager, emit, identity } = this.#deps;
    const sid = sessionHex(frame);
    const sender = frame.senderId;
    const key = `${frame.step}:${sid}:${sender}`;
    const report = (code: 'revocation_stale' | 'rate_limited', detail: string, sessionIdHex = sid, senderId = sender): void =>
      emit({
        kind: 'security',
        code,
        stage: 'handshake',
        sessionId: sessionIdHex.length === 32 ? sessionIdHex : undefined,
        senderId: senderId.slice(0, 128),
        recipientId: identity.agentId,
        atMs: Date.now(),
        detail,
      });
    let replaced = false;
    if (frame.step === 1) {
      const older = this.#deferred.filter((d) => d.frame.step === 1 && d.frame.senderId === sender);
      if (older.length > 0) {
        this.#deferred = this.#deferred.filter((d) => !older.includes(d));
        for (const d of older) d.ack();
        replaced = true;
      }
    } else {
      const i = this.#deferred.findIndex((d) => d.key === key);
      if (i >= 0) {
        const earlier = this.#deferred[i]!;
        this.#deferred[i] = { frame, ack, key, release: earlier.release };
        earlier.ack();
        return false;
      }
    }
    const full = this.#deferred.length >= MAX_DEFERRED_FRAMES;
    if (full || this.#deferred.filter((d) => d.frame.senderId === sender).length >= MAX_DEFERRED_PER_SENDER) {
      const oldest = frame.step === 3 && full ? this.#deferred.find((d) => d.frame.step === 1) : undefined;
      if (oldest === undefined) {
        if (frame.step === 3) return true;
        ack();
        report('rate_limited', `too many handshake frames wait for fresh revocation data: step 1 dropped (its initiator retries it)`);
        return false;
      }
      this.#deferred = this.#deferred.filter((d) => d !== oldest);
      oldest.ack();
      report('rate_limited', `too many handshake frames wait for fresh revocation data: a waiting step 1 is dropped for a step 3 (its initiator retries it)`, sessionHex(oldest.frame), oldest.frame.senderId);
    }
    const release = frame.step === 3 ? manager.holdResponder(sid) : undefined;
    this.#deferred.push({ frame, ack, key, release });
    // Reported once per sender's handshake: a newer step 1 replacing a waiting one was reported with it.
    if (!replaced) report('revocation_stale', `revocation data is stale: step ${frame.step} is left unacknowledged and processed once it is fresh again`);
    if (this.#retryTimer === undefined) {
      this.#retryTimer = setInterval(() => void this.#retryDeferred(), RETRY_MS);
      this.#retryTimer.unref();
    }
    return false;
  }

  /**
   * Processes, in arrival order, the deferred frames whose sender can be checked now — a sender's frames in its order:
   * one that still waits keeps the later ones of its sender waiting —; stops when none waits.
   */
  async #retryDeferred(): Promise<void> {
    if (this.#retrying) return;
    if (this.#deps.lifecycle.stopped) {
      // Not acked: the gateway keeps them for the next run.
      for (const d of this.#deferred) d.release?.();
      this.#deferred = [];
    }
    if (this.#deferred.length === 0) {
      clearInterval(this.#retryTimer);
      this.#retryTimer = undefined;
      return;
    }
    this.#retrying = true;
    try {
      const blocked = new Set<string>();
      for (const d of [...this.#deferred]) {
        if (this.#deps.lifecycle.stopped) return;
        if (!this.#deferred.includes(d)) continue; // replaced by a later copy meanwhile: the next pass takes that one
        if (blocked.has(d.frame.senderId)) continue;
        if (this.#waitsForRevocation(d.frame)) {
          blocked.add(d.frame.senderId);
          continue;
        }
        this.#deferred = this.#deferred.filter((x) => x !== d);
        try {
          await this.#process(d.frame, d.ack);
        } finally {
          d.release?.();
        }
      }
    } finally {
      this.#retrying = false;
    }
  }

  /** Handles a frame now: to the session manager, acked, and what was held for its session released. */
  async #process(frame: HandshakeFrame, ack: () => void): Promise<void> {
    const { manager, captured, emit } = this.#deps;
    let done: Promise<Session | undefined> | undefined;
    const events = captured(() => {
      done = manager.handleFrame(frame);
    });
    // A frame of a handshake already finished (or a step 1 already answered) is a redelivery.
    for (const e of events) {
      if (e.kind === 'security' && e.stage === 'handshake' && (e.code === 'replay' || (e.code === 'unknown_session' && frame.step !== 1))) {
        emit({ kind: 'duplicate', item: 'handshake', senderId: frame.senderId, detail: e.detail });
      } else emit(e);
    }
    const session = await done?.catch(() => undefined);
    ack();
    if (session !== undefined) this.#releaseHeld(session.idHex);
  }

  /** Holds an envelope that overtook step 3 of the handshake of `sessionIdHex` (at most {@link HELD_PER_HANDSHAKE}). */
  hold(sessionIdHex: string, item: DeliveredEnvelope): boolean {
    let items = this.#held.get(sessionIdHex);
    if (items === undefined) this.#held.set(sessionIdHex, (items = []));
    if (items.length >= HELD_PER_HANDSHAKE) return false;
    items.push(item);
    return true;
  }

  /** The agent's part in a session manager event (before it is forwarded). */
  onSessionEvent(event: SessionManagerEvent): void {
    const { state, snapshots, lifecycle } = this.#deps;
    if (event.kind === 'responder_abandoned') {
      // The handshake will never complete: whatever was held for it can never open.
      const items = this.#held.get(event.sessionIdHex);
      this.#held.delete(event.sessionIdHex);
      for (const item of items ?? []) {
        rejectSession(this.#deps.crypto, this.#deps.identity, item.envelope, item.conn, item.deliveryId, this.#deps.signerCertificate?.());
      }
    }
    if (event.kind === 'established' && state.enabled && !lifecycle.stopped) {
      // The session's first snapshot; reservations follow before anything is sealed in it. Not once the agent
      // closed or stopped: its store is released (a session established now is in #release's snapshot, if any).
      void state.record([snapshots.take(event.session)]).catch(() => undefined);
    }
    if (event.kind === 'closed' || event.kind === 'expired') {
      snapshots.forget(event.session.idHex);
      if (state.enabled && !lifecycle.stopped) void state.record([{ t: 'closed', id: event.session.idHex }]).catch(() => undefined);
    }
  }

  /** Processes envelopes held for a handshake that just completed, in arrival order. */
  #releaseHeld(sessionIdHex: string): void {
    const items = this.#held.get(sessionIdHex);
    if (items === undefined) return;
    this.#held.delete(sessionIdHex);
    for (const item of items) this.#deps.openEnvelope(item);
  }
}

/** A frame's session id as the session manager names it (hex); '' when it is not bytes. */
function sessionHex(frame: HandshakeFrame): string {
  return frame.sessionId instanceof Uint8Array ? Buffer.from(frame.sessionId).toString('hex') : '';
}
