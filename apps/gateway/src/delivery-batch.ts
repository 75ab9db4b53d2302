/**
 * Deliveries in batches (docs/PROTOCOL.md §10.3): for an agent whose Hello set `delivery_batches`, the
 * Deliveries written to its stream in one event-loop turn go out as one `deliveries` frame — a backlog
 * page, the items of one group commit — instead of a frame each. Every other frame (accepted, rejected,
 * go_away) and the end of the stream first send what is waiting, so frames keep the order they were
 * written in. A batch is bounded in items and in bytes; an item above the byte bound goes alone.
 */
import type { ResponseSink } from '@parley/rpc';
import type { ConnectResponseInit } from './context.js';
import type { DeliveryInit } from './delivery.js';

/** Most Deliveries in one frame (a backlog page is at most 128 rows). */
export const MAX_BATCH_ITEMS = 128;
/** Most bytes (estimated: the items' variable-length fields) in one frame before it is sent. */
export const MAX_BATCH_BYTES = 256 * 1024;
/** What an item adds besides its variable-length bytes (ids, header fields, framing): a generous bound. */
const ITEM_OVERHEAD = 512;

/** An upper estimate of a Delivery's encoded size, without encoding it. */
function estimate(d: DeliveryInit): number {
  const item = d.item;
  switch (item?.case) {
    case 'envelope':
      return ITEM_OVERHEAD + (item.value.encryptedPayload?.length ?? 0);
    case 'handshake':
      return ITEM_OVERHEAD + (item.value.noiseMessage?.length ?? 0);
    default:
      return ITEM_OVERHEAD;
  }
}

/** A stream's response sink that batches its Deliveries (see the module comment). */
export class BatchingSink implements ResponseSink<ConnectResponseInit> {
  readonly #sink: ResponseSink<ConnectResponseInit>;
  readonly #onFrame: ((items: number) => void) | undefined;
  #waiting: DeliveryInit[] | undefined;
  #bytes = 0;
  #scheduled = false;

  /** @param onFrame told the number of Deliveries in each frame sent (metrics) */
  constructor(sink: ResponseSink<ConnectResponseInit>, onFrame?: (items: number) => void) {
    this.#sink = sink;
    this.#onFrame = onFrame;
  }

  get closed(): boolean {
    return this.#sink.closed;
  }

  push(response: ConnectResponseInit): boolean {
    if (this.#sink.closed) return false;
    if (response.kind?.case !== 'delivery') {
      this.flush();
      return this.#sink.push(response);
    }
    const delivery = response.kind.value;
    const size = estimate(delivery);
    const n = this.#waiting?.length ?? 0;
    if (n > 0 && (n >= MAX_BATCH_ITEMS || this.#bytes + size > MAX_BATCH_BYTES)) this.flush();
    (this.#waiting ??= []).push(delivery);
    this.#bytes += size;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.flush();
      });
    }
    return true;
  }

  end(): void {
    this.flush();
    this.#sink.end();
  }

  fail(error: unknown): void {
    this.#waiting = undefined; // a failed stream's held deliveries are spilled by the gateway (§17.6)
    this.#bytes = 0;
    this.#sink.fail(error);
  }

  /** Sends what is waiting: one Delivery as a `delivery` frame, several as one `deliveries` frame. */
  flush(): void {
    const waiting = this.#waiting;
    if (waiting === undefined || waiting.length === 0) return;
    this.#waiting = undefined;
    this.#bytes = 0;
    if (waiting.length === 1) this.#sink.push({ kind: { case: 'delivery', value: waiting[0]! } });
    else this.#sink.push({ kind: { case: 'deliveries', value: { items: waiting } } });
    this.#onFrame?.(waiting.length);
  }
}
