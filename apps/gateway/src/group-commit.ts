/**
 * Group commit (docs/PROTOCOL.md §17.6): callers add one item each and await
 * its result; the items that arrive while one batch is being written are
 * written together as the next batch, in arrival order — one statement and one
 * commit for many items, with no timer (an idle queue writes a lone item at
 * once). A batch is bounded in items and, optionally, in weight (bytes: one
 * statement must stay far below PostgreSQL's 1 GB limit on a value). A failed
 * batch fails every item in it. The queue is bounded: beyond
 * `maxQueued` items waiting, `add` refuses at once with `unavailable` (the
 * database is not keeping up).
 */
import { RpcError } from '@parley/rpc';

interface Waiting<T, R> {
  readonly item: T;
  readonly resolve: (result: R) => void;
  readonly reject: (error: unknown) => void;
}

/** Settings of a {@link GroupCommit}. */
export interface GroupCommitOptions<T, R> {
  /** Writes one batch; returns one result per item, in order. */
  readonly write: (batch: readonly T[]) => Promise<readonly R[]>;
  /** Most items in one batch. */
  readonly maxBatch: number;
  /** With `weigh`: most total weight (e.g. bytes) in one batch; a batch always takes at least one item. */
  readonly maxBatchWeight?: number;
  /** An item's weight for `maxBatchWeight`. */
  readonly weigh?: (item: T) => number;
  /** Most items waiting (not yet in a batch being written). Default 100 000. */
  readonly maxQueued?: number;
  /** Called with each batch's size (metrics). */
  readonly onBatch?: (size: number) => void;
}

/** A queue whose items are written in batches, one batch at a time. */
export class GroupCommit<T, R> {
  readonly #o: GroupCommitOptions<T, R>;
  readonly #queue: Waiting<T, R>[] = [];
  #running = false;
  #idle: Promise<void> = Promise.resolve();
  #markIdle: () => void = () => undefined;

  constructor(options: GroupCommitOptions<T, R>) {
    this.#o = options;
  }

  /** Items waiting for a batch. */
  get queued(): number {
    return this.#queue.length;
  }

  /**
   * Adds one item to the next batch.
   * @param bounded false for an item that the caller bounds itself and must not lose to this queue's bound (an
   *   item already accepted and held, e.g. a spilled delivery: at most `maxInFlight` per stream)
   * @returns its result once its batch is written
   * @throws RpcError `unavailable` when too many items are waiting (a bounded item); whatever the batch write threw
   */
  add(item: T, bounded = true): Promise<R> {
    if (bounded && this.#queue.length >= (this.#o.maxQueued ?? 100_000)) return Promise.reject(new RpcError('unavailable', 'storage is not keeping up'));
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      if (!this.#running) this.#start();
    });
  }

  /** Resolves when nothing is waiting or being written. */
  idle(): Promise<void> {
    return this.#idle;
  }

  #start(): void {
    this.#running = true;
    this.#idle = new Promise((resolve) => (this.#markIdle = resolve));
    // A microtask later, so the items added in the same tick share the first batch.
    queueMicrotask(() => void this.#run());
  }

  async #run(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#batchLength());
      this.#o.onBatch?.(batch.length);
      try {
        const results = await this.#o.write(batch.map((w) => w.item));
        if (results.length !== batch.length) throw new RpcError('internal', `group write returned ${results.length} results for ${batch.length} items`);
        batch.forEach((w, i) => w.resolve(results[i]!));
      } catch (error) {
        for (const w of batch) w.reject(error);
      }
    }
    this.#running = false;
    this.#markIdle();
  }

  /** How many queued items the next batch takes: up to maxBatch, and up to maxBatchWeight (at least one). */
  #batchLength(): number {
    const { maxBatch, maxBatchWeight, weigh } = this.#o;
    const most = Math.min(maxBatch, this.#queue.length);
    if (weigh === undefined || maxBatchWeight === undefined) return most;
    let weight = weigh(this.#queue[0]!.item);
    let n = 1;
    while (n < most) {
      weight += weigh(this.#queue[n]!.item);
      if (weight > maxBatchWeight) break;
      n++;
    }
    return n;
  }
}
