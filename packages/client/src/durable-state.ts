/**
 * The agent's durable state (docs/PROTOCOL.md §13): appends journal records — a failure stops the agent
 * (fail closed) — and rewrites the journal as a compact snapshot of the live state. Without a state store
 * every call is a no-op.
 */
import { ClientError } from './errors.js';
import { replay, type Journal, type JournalRecord, type JournalState } from './journal.js';

const COMPACT_AFTER_RECORDS = 20_000;

export interface DurableStateOptions {
  /** Every record the live state needs, in replay order (sessions, outbox, inbox, receipts); the bundle is added here. */
  readonly snapshot: () => JournalRecord[];
  /** Saving failed: the agent reports it and stops. */
  readonly onFailure: (error: ClientError) => void;
}

export class DurableState {
  readonly #journal: Journal | undefined;
  readonly #options: DurableStateOptions;
  #recordsSinceCompaction = 0;
  #compacting: Promise<void> | undefined;
  /** The newest trust bundle document recorded (restored at start, replaced by the follower). */
  #savedBundle: { version: number; doc: string } | undefined;

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

  /** Appends journal records (no-op without a store). A failure stops the agent (fail closed). */
  async record(records: JournalRecord[]): Promise<void> {
    if (this.#journal === undefined) return;
    try {
      await this.#journal.append(records);
    } catch (error) {
      const e = ClientError.from(error);
      this.#options.onFailure(e);
      throw e;
    }
    this.#recordsSinceCompaction += records.length;
    if (this.#recordsSinceCompaction >= COMPACT_AFTER_RECORDS && this.#compacting === undefined) void this.compact().catch(() => undefined);
  }

  /** Rewrites the journal as the current state: fresh session snapshots, pending sends and messages, recent receipts. */
  compact(): Promise<void> {
    const journal = this.#journal;
    if (journal === undefined) return Promise.resolve();
    if (this.#compacting !== undefined) return this.#compacting;
    const records = this.#options.snapshot();
    if (this.#savedBundle !== undefined) records.push({ t: 'bundle', ...this.#savedBundle });
    this.#recordsSinceCompaction = 0;
    const run = journal.rewrite(records).finally(() => {
      this.#compacting = undefined;
    });
    this.#compacting = run;
    return run;
  }

  async close(): Promise<void> {
    await this.#journal?.close().catch(() => undefined);
  }
}
