/**
 * Session establishment as the agent sees it (docs/PROTOCOL.md §6, §13, §17.3): relayed handshake frames
 * go to the session manager (a frame of a finished handshake is a `duplicate`); envelopes that overtook
 * step 3 of a handshake this agent is responding to are held and opened once it completes, or refused
 * with a SessionReject if it is abandoned; each new session's first snapshot and each end are journaled (later
 * snapshots: session-snapshots.ts). A step 1 or step 3 this agent cannot check now — its revocation data is stale
 * (§17.3 item 7) — is left unacknowledged at the gateway and processed once the data is fresh again: never
 * acked and dropped, never turned into SessionRejects for the envelopes behind it.
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
/** Most handshake frames left unacknowledged to be processed once the revocation data is fresh (beyond it, left for the next stream). */
const MAX_DEFERRED_FRAMES = 256;
/** How often frames waiting for fresh revocation data are tried again (as the inbox's deferred deliveries, §17.3 item 6). */
const RETRY_MS = 250;

/** A handshake frame left unacknowledged until this agent can check its sender's revocation again. */
interface DeferredFrame {
  readonly frame: HandshakeFrame;
  readonly ack: () => void;
  /** step, session id and sender: a later copy of the same frame replaces it. */
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
    if (this.#waitsForRevocation(frame)) {
      this.#defer(frame, ack);
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
   * Leaves a frame unacknowledged (the gateway keeps it: a crash loses nothing) and keeps it to be processed once
   * the revocation data is fresh; a step 3's handshake is held meanwhile (its timeout would abandon it). A later
   * copy of a frame already waiting (a queued step 1 sent again, a redelivery on a new stream) takes its place, and
   * the earlier copy is acked: the gateway keeps the newest one.
   */
  #defer(frame: HandshakeFrame, ack: () => void): void {
    const { manager, emit, identity } = this.#deps;
    const sid = sessionHex(frame);
    const key = `${frame.step}:${sid}:${frame.senderId}`;
    const i = this.#deferred.findIndex((d) => d.key === key);
    if (i >= 0) {
      const earlier = this.#deferred[i]!;
      this.#deferred[i] = { frame, ack, key, release: earlier.release };
      earlier.ack();
      return;
    }
    if (this.#deferred.length >= MAX_DEFERRED_FRAMES) return; // left unacked: the next stream delivers it again
    const release = frame.step === 3 ? manager.holdResponder(sid) : undefined;
    this.#deferred.push({ frame, ack, key, release });
    emit({
      kind: 'security',
      code: 'revocation_stale',
      stage: 'handshake',
      sessionId: sid.length === 32 ? sid : undefined,
      senderId: frame.senderId.slice(0, 128),
      recipientId: identity.agentId,
      atMs: Date.now(),
      detail: `revocation data is stale: step ${frame.step} is left unacknowledged and processed once it is fresh again`,
    });
    if (this.#retryTimer === undefined) {
      this.#retryTimer = setInterval(() => void this.#retryDeferred(), RETRY_MS);
      this.#retryTimer.unref();
    }
  }

  /** Processes, in arrival order, the deferred frames whose sender can be checked now; stops when none waits. */
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
      for (const d of [...this.#deferred]) {
        if (this.#deps.lifecycle.stopped) return;
        if (!this.#deferred.includes(d)) continue; // replaced by a later copy meanwhile: the next pass takes that one
        if (this.#waitsForRevocation(d.frame)) continue;
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
    if (event.kind === 'established' && state.enabled) {
      // The session's first snapshot; reservations follow before anything is sealed in it.
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
