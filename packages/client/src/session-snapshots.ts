/**
 * Keeps the journaled snapshot of each session (the `session` record, docs/PROTOCOL.md §13) close to the
 * session's live state, so that a restart can always carry on from it.
 *
 * *Why it matters:* a restored session derives at most 4096 epochs past the newest key its snapshot holds
 * (§7, MAX_EPOCH_SKIP), for sealing as for opening. A snapshot left behind by more than that — a session
 * journaled only when established, with a small rekey threshold — can neither seal at its reserved mark
 * (`replay`) nor open anything its peer sends next (every new message `replay`, dropped as a duplicate).
 *
 * The rule: a session is snapshotted when it is established (handshakes.ts), by every compaction, and
 * again once one direction's newest epoch is {@link snapshotStep} epochs or more past the snapshot journaled
 * last — checked where the journal already sees that direction move: a counter reservation and a sent
 * message's `out` record (sending), a received message's `in` record (receiving). The fresh snapshot goes in
 * the same append as the record that showed the move (one fsync); nothing waits for it but that append.
 * *Why this step:* `max(1, ⌈256 / threshold⌉)` epochs is about 256 messages, so a restored session is at
 * most ~256 counters behind (plus, sending, the jump to its reserved mark: one block of 256) — far inside
 * 4096 epochs even at threshold 1 — while it costs at most one snapshot per ~256 messages per direction,
 * and one per epoch change at the usual thresholds (≥ 256; 1000 by default). A snapshot at every epoch
 * change would, at threshold 1, export the whole receive key range (up to 8160 keys) for every message.
 *
 * Each record carries `ep`, the snapshot's send epoch plus its newest receive epoch: both only grow in a
 * live session, so replay ignores a record with a lower `ep` than the one it holds (journal.ts) and an
 * older snapshot can never replace a newer one, whatever order the records end up in.
 */
import { toBase64Url } from '@parley/crypto-core';
import type { Session, SessionManager } from '@parley/session';
import type { JournalRecord } from './journal.js';

/** About how many messages a direction may move past its journaled snapshot (see the module comment). */
export const SNAPSHOT_EVERY_COUNTERS = 256;

/** Epochs one direction may move past the journaled snapshot before a fresh one is journaled: `max(1, ⌈256 / threshold⌉)`. */
export function snapshotStep(threshold: number): number {
  return Math.max(1, Math.ceil(SNAPSHOT_EVERY_COUNTERS / threshold));
}

/** The epochs of a journaled snapshot. */
interface Journaled {
  readonly send: number;
  readonly receive: number;
}

export class SessionSnapshots {
  readonly #manager: () => SessionManager;
  /** Per session id: the epochs of the newest snapshot passed to the journal (durable yet or not). */
  readonly #journaled = new Map<string, Journaled>();

  /** `manager`: the agent's session manager (read when used: the agent builds it after this). */
  constructor(manager: () => SessionManager) {
    this.#manager = manager;
  }

  /**
   * The `session` record of the live state of `session`, noted as its newest journaled snapshot: pass it to
   * the journal in the same turn (the order of records in the journal is the order they were asked for).
   * @throws SessionError `unknown_session` for a closed session (as `exportSession`)
   */
  take(session: Session): Extract<JournalRecord, { t: 'session' }> {
    const sealed = toBase64Url(this.#manager().exportSession(session));
    const send = session.sendEpoch;
    const receive = session.stats.receiveEpochs.at(-1) ?? 0;
    this.#journaled.set(session.idHex, { send, receive });
    return { t: 'session', id: session.idHex, sealed, ep: send + receive };
  }

  /**
   * `records` followed by a fresh snapshot of each session they show far enough past its journaled one
   * (a `reserve` or `out` record: the session's send epoch; an `in` record: the epoch of the counter it accepted).
   */
  refresh(records: JournalRecord[]): JournalRecord[] {
    let fresh: JournalRecord[] | undefined;
    for (const r of records) {
      let id: string;
      if (r.t === 'reserve') id = r.id;
      else if (r.t === 'out' || r.t === 'in') id = r.sid;
      else continue;
      const session = this.#manager().sessionById(id);
      if (session === undefined || session.isClosed) continue;
      const last = this.#journaled.get(id);
      const step = snapshotStep(session.rekeyThreshold);
      const moved =
        last === undefined ||
        (r.t === 'in' ? Math.floor(r.n / session.rekeyThreshold) - last.receive >= step : session.sendEpoch - last.send >= step);
      if (!moved || fresh?.some((f) => f.t === 'session' && f.id === id) === true) continue;
      try {
        (fresh ??= []).push(this.take(session));
      } catch {
        // Closed meanwhile: nothing to snapshot (its `closed` record follows).
      }
    }
    return fresh === undefined ? records : [...records, ...fresh];
  }

  /** The session ended: nothing more to track. */
  forget(sessionIdHex: string): void {
    this.#journaled.delete(sessionIdHex);
  }
}
