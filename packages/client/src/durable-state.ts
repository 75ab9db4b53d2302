/**
 * The agent's durable state (docs/PROTOCOL.md §13): appends journal records — a failure stops the agent
 * (fail closed) — and rewrites the journal as a compact snapshot of the live state. Without a state store
 * every call is a no-op.
 *
 * Compaction loses nothing: the snapshot is taken and the rewrite handed to the store in one synchronous
 * step, the store replaces only what was appended before the rewrite and keeps every later append after it,
 * so each record is either reflected in the snapshot (it was asked for before it) or appended after it. The
 * snapshot therefore must reflect every record already passed to `record()`, durable yet or not — the live
 * state is updated before its record is made — and for counter reservations this class makes sure of it
 * itself: the manager raises its mark only once the reservation is durable, after `record()` returned.
 *
 * `close()` is final: from its call on `record()` refuses (`cancelled`, see {@link isStateClosedRefusal}; no
 * failure, the agent does not stop for it) and `compact()` does nothing — neither an append still on its way nor a
 * compaction it would trigger reopens the store (and takes its lock again) after the agent released it.
 */
import { ClientError } from './errors.js';
import { replay, type Journal, type JournalRecord, type JournalState } from './journal.js';

const COMPACT_AFTER_RECORDS = 20_000;

/** The refusals of `record()` after `close()`. */
const closedRefusals = new WeakSet<object>();

/** Whether `error` (or an error in its `cause` chain) is DurableState's refusal of a record after close(): nothing was written. */
export function isStateClosedRefusal(error: unknown): boolean {
  for (let e = error, depth = 0; typeof e === 'object' && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (closedRefusals.has(e)) return true;
  }
  return false;
}

export interface DurableStateOptions {
  /**
   * Every record the live state needs, in replay order (sessions, outbox, inbox, receipts), reflecting every
   * record already passed to `record()`; the bundle and the reservations recorded here are added here.
   */
  readonly snapshot: () => JournalRecord[];
  /** Saving failed: the agent reports it and stops. */
  readonly onFailure: (error: ClientError) => void;
  /** Compact after this many records appended since the last compaction. Default 20 000. */
  readonly compactAfterRecords?: number;
}

export class DurableState {
  readonly #journal: Journal | undefined;
  readonly #options: DurableStateOptions;
  #recordsSinceCompaction = 0;
  #compacting: Promise<void> | undefined;
  /**
   * The highest counter mark recorded per session (from the `reserve` records passed to `record()`, durable
   * yet or not): a snapshot never writes a lower one. The session manager raises its own mark only after the
   * reservation is durable, so a compaction started meanwhile — by that very record — would write the old
   * mark, and a restore would seal again counters already used (§13).
   */
  readonly #reserved = new Map<string, number>();
  /** The newest trust bundle document recorded (restored at start, replaced by the follower). */
  #savedBundle: { version: number; doc: string } | undefined;
  /** close() was called: nothing more is recorded or compacted, the store stays closed. */
  #closed = false;

  constructor(journal: Journal | undefined, options: DurableStateOptions) {
    this.#journal = journal;
    this.#options = options;
  }

  /** Whether there is a state store at all. */
  get enabled(): boolean {
    return this.#journal !== undefined;
  }

  /** Whether the journal can still be trusted (it has a store and no append failed). */
  get healthy(): boolean {
    return this.#journal !== undefined && this.#journal.failure === undefined;
  }

  get savedBundle(): { version: number; doc: string } | undefined {
    return this.#savedBundle;
  }

  /** Replays the saved journal (the caller restores from it, then compacts); undefined without a store. */
  async load(): Promise<JournalState | undefined> {
    if (this.#journal === undefined) return undefined;
    const state = replay(await this.#journal.load());
    this.#savedBundle = state.bundle;
    return state;
  }

  /** Records the newest accepted trust bundle document. */
  async saveBundle(version: number, doc: string): Promise<void> {
    this.#savedBundle = { version, doc };
    await this.record([{ t: 'bundle', ...this.#savedBundle }]);
  }

  /** Whether close() was called (every later record is refused). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Appends journal records (no-op without a store). A failure stops the agent (fail closed).
   * @throws ClientError the store's failure; `cancelled` after close() ({@link isStateClosedRefusal}): nothing
   *   written, and no failure (the agent is not stopped for it)
   */
  async record(records: JournalRecord[]): Promise<void> {
    if (this.#journal === undefined) return;
    if (this.#closed) {
      const refusal = new ClientError('cancelled', 'agent closed: its state store is released, nothing more is recorded');
      closedRefusals.add(refusal);
      throw refusal;
    }
    for (const r of records) {
      if (r.t === 'reserve') this.#reserved.set(r.id, Math.max(r.upTo, this.#reserved.get(r.id) ?? 0));
      else if (r.t === 'closed') this.#reserved.delete(r.id);
    }
    try {
      await this.#journal.append(records);
    } catch (error) {
      const e = ClientError.from(error);
      this.#options.onFailure(e);
      throw e;
    }
    this.#recordsSinceCompaction += records.length;
    // Never once closed: the compaction would reopen the store (and take its lock again) after the release.
    if (!this.#closed && this.#recordsSinceCompaction >= (this.#options.compactAfterRecords ?? COMPACT_AFTER_RECORDS) && this.#compacting === undefined) void this.compact().catch(() => undefined);
  }

  /**
   * Rewrites the journal as the current state: fresh session snapshots, pending sends and messages, recent
   * receipts. Nothing after close() (a compaction already running finishes before the store closes).
   */
  compact(): Promise<void> {
    const journal = this.#journal;
    if (journal === undefined || this.#closed) return Promise.resolve();
    if (this.#compacting !== undefined) return this.#compacting;
    const records = this.#options.snapshot();
    // Each session's mark is the higher of the snapshot's (the manager's) and the one recorded here.
    const marks = new Map<string, number>();
    for (const r of records) {
      if (r.t === 'session') marks.set(r.id, marks.get(r.id) ?? 0);
      else if (r.t === 'reserve') marks.set(r.id, Math.max(marks.get(r.id) ?? 0, r.upTo));
    }
    for (const [id, upTo] of [...this.#reserved]) {
      const snapshotMark = marks.get(id);
      if (snapshotMark === undefined) this.#reserved.delete(id); // the session ended
      else if (upTo > snapshotMark) records.push({ t: 'reserve', id, upTo });
    }
    if (this.#savedBundle !== undefined) records.push({ t: 'bundle', ...this.#savedBundle });
    this.#recordsSinceCompaction = 0;
    const run = journal.rewrite(records).finally(() => {
      this.#compacting = undefined;
    });
    this.#compacting = run;
    return run;
  }

  /**
   * Closes the store (after everything asked of it before), for good: later records are refused, compactions
   * do nothing, so nothing reopens the store or takes its lock again.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#journal?.close().catch(() => undefined);
  }
}
