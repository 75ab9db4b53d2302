/**
 * A small unbounded async queue: producers `push`, one consumer iterates.
 * `end()` finishes the iteration after the queued items; `fail(error)` makes
 * the consumer throw once the queued items are drained. Used for the client's
 * request stream, deliveries and application inbox (the gateway writes its streams through @parley/rpc's
 * ResponseSink instead: no pending promise per idle stream).
 */
export class Channel<T> implements AsyncIterable<T> {
  readonly #items: T[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;
  #error: unknown;
  #failed = false;

  /** Whether `end()` or `fail()` was called. */
  get closed(): boolean {
    return this.#ended;
  }

  /** Queues an item; ignored once the channel is closed. */
  push(item: T): boolean {
    if (this.#ended) return false;
    this.#items.push(item);
    this.#wake();
    return true;
  }

  /** Ends the iteration after the items already queued. */
  end(): void {
    this.#ended = true;
    this.#wake();
  }

  /** Ends the iteration with an error, after the items already queued. */
  fail(error: unknown): void {
    if (this.#ended) return;
    this.#error = error;
    this.#failed = true;
    this.end();
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      const item = this.#items.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.#ended) {
        if (this.#failed) throw this.#error;
        return;
      }
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
      });
    }
  }
}
