/**
 * Session establishment as the agent sees it (docs/PROTOCOL.md §6, §13, §17.3): relayed handshake frames
 * go to the session manager (a frame of a finished handshake is a `duplicate`); envelopes that overtook
 * step 3 of a handshake this agent is responding to are held and opened once it completes, or refused
 * with a SessionReject if it is abandoned; each new session's first snapshot and each end are journaled (later
 * snapshots: session-snapshots.ts).
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

  constructor(deps: HandshakesDeps) {
    this.#deps = deps;
  }

  /** A relayed handshake frame: handled, acked (with `ack`), and what was held for its session released. */
  async onFrame(frame: HandshakeFrame, ack: () => void): Promise<void> {
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
