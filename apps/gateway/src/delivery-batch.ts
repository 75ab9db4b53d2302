/**
 * Delivery frames (docs/PROTOCOL.md §10.3, §10.8).
 *
 * Deliveries relayed as stored: a Delivery of a mailbox item is framed around the item's stored bytes
 * ({@link encodeDelivery}) instead of decoding them and encoding them again; the frame is the same
 * protobuf a decoded item gives.
 *
 * Deliveries in batches: for an agent whose Hello set `delivery_batches`, the Deliveries written to its
 * stream in one event-loop turn go out as one `deliveries` frame — a backlog page, the items of one group
 * commit — instead of a frame each. Every other frame (accepted, rejected, go_away) and the end of the
 * stream first send what is waiting, so frames keep the order they were written in. A batch is bounded in
 * items and in bytes; an item above the byte bound goes alone.
 */
import { BinaryReader, ConnectResponseSchema, DeliveriesSchema, DeliverySchema, WireType, create, toBinary } from '@parley/proto';
import type { ResponseSink } from '@parley/rpc';
import type { ConnectResponseInit, DeliveryInit } from './context.js';
import type { EncodedItem } from './mailbox.js';

const FIELD = {
  delivery: ConnectResponseSchema.field['delivery']!.number,
  deliveries: ConnectResponseSchema.field['deliveries']!.number,
  items: DeliveriesSchema.field['items']!.number,
  deliveryId: DeliverySchema.field['deliveryId']!.number,
  acceptedAtMs: DeliverySchema.field['acceptedAtMs']!.number,
  handshake: DeliverySchema.field['handshake']!.number,
  envelope: DeliverySchema.field['envelope']!.number,
  receipt: DeliverySchema.field['receipt']!.number,
  sessionReject: DeliverySchema.field['sessionReject']!.number,
} as const;

/** Bytes of the varint encoding of `v` (a non-negative bigint below 2^64). */
function varintSize(v: bigint): number {
  let n = 1;
  for (let x = v >> 7n; x > 0n; x >>= 7n) n++;
  return n;
}

/** Bytes of the varint encoding of a length (a non-negative safe integer). */
function lengthSize(v: number): number {
  let n = 1;
  for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) n++;
  return n;
}

/** Writes the varint of `v` at `at`; returns the position after it. */
function putVarint(out: Uint8Array, at: number, v: bigint): number {
  while (v >= 0x80n) {
    out[at++] = Number(v & 0x7fn) | 0x80;
    v >>= 7n;
  }
  out[at++] = Number(v);
  return at;
}

/** Writes a length varint at `at`; returns the position after it. */
function putLength(out: Uint8Array, at: number, v: number): number {
  while (v >= 0x80) {
    out[at++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  out[at++] = v;
  return at;
}

/** The key (tag) of a field: field number and wire type, as a varint (every field here is below 2^28). */
const key = (field: number, wireType: WireType): bigint => BigInt((field << 3) | wireType);

/**
 * A Delivery message (the bytes of one `Delivery`) around an item's stored encoding, fields in number
 * order as protobuf-es writes them: one allocation of the exact size and one copy of the item.
 */
export function encodeDelivery(deliveryId: bigint, acceptedAtMs: bigint, item: EncodedItem): Uint8Array {
  // int64 as protobuf writes it: a negative value is its two's complement, 10 bytes.
  const accepted = acceptedAtMs < 0n ? BigInt.asUintN(64, acceptedAtMs) : acceptedAtMs;
  const k1 = key(FIELD.deliveryId, WireType.Varint);
  const k2 = key(FIELD.acceptedAtMs, WireType.Varint);
  const k3 = key(FIELD[item.kind], WireType.LengthDelimited);
  const size =
    (deliveryId !== 0n ? varintSize(k1) + varintSize(deliveryId) : 0) +
    (accepted !== 0n ? varintSize(k2) + varintSize(accepted) : 0) +
    varintSize(k3) +
    lengthSize(item.bytes.length) +
    item.bytes.length;
  const out = new Uint8Array(size);
  let at = 0;
  if (deliveryId !== 0n) at = putVarint(out, putVarint(out, at, k1), deliveryId);
  if (accepted !== 0n) at = putVarint(out, putVarint(out, at, k2), accepted);
  at = putLength(out, putVarint(out, at, k3), item.bytes.length);
  out.set(item.bytes, at);
  return out;
}

/** A `delivery` ConnectResponse frame around an encoded Delivery. */
export function deliveryFrame(delivery: Uint8Array): Uint8Array {
  const k = key(FIELD.delivery, WireType.LengthDelimited);
  const out = new Uint8Array(varintSize(k) + lengthSize(delivery.length) + delivery.length);
  out.set(delivery, putLength(out, putVarint(out, 0, k), delivery.length));
  return out;
}

/** A `deliveries` ConnectResponse frame of encoded Deliveries: one allocation of the exact size, one copy of each. */
export function deliveriesFrame(deliveries: readonly Uint8Array[]): Uint8Array {
  const kItem = key(FIELD.items, WireType.LengthDelimited);
  const kOuter = key(FIELD.deliveries, WireType.LengthDelimited);
  let inner = 0;
  for (const d of deliveries) inner += varintSize(kItem) + lengthSize(d.length) + d.length;
  const out = new Uint8Array(varintSize(kOuter) + lengthSize(inner) + inner);
  let at = putLength(out, putVarint(out, 0, kOuter), inner);
  for (const d of deliveries) {
    at = putLength(out, putVarint(out, at, kItem), d.length);
    out.set(d, at);
    at += d.length;
  }
  return out;
}

/** The encoded Delivery in a `delivery` frame; undefined for any other frame. */
export function deliveryOfFrame(frame: Uint8Array): Uint8Array | undefined {
  try {
    const r = new BinaryReader(frame);
    const [field, wireType] = r.tag();
    if (field !== FIELD.delivery || wireType !== WireType.LengthDelimited) return undefined;
    const delivery = r.bytes();
    return r.pos === frame.length ? delivery : undefined;
  } catch {
    return undefined; // not a frame this module wrote: passed on as it is
  }
}

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
  /** Deliveries not sent yet: as given, or encoded (a Uint8Array: the bytes of one Delivery). */
  #waiting: (DeliveryInit | Uint8Array)[] | undefined;
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
    return this.#add(response.kind.value, estimate(response.kind.value));
  }

  /** An encoded `delivery` frame waits for the turn's batch like any other; other frames go after what waits. */
  pushEncoded(frame: Uint8Array): boolean {
    if (this.#sink.closed) return false;
    const delivery = deliveryOfFrame(frame);
    if (delivery === undefined) {
      this.flush();
      return this.#sink.pushEncoded(frame);
    }
    return this.#add(delivery, delivery.length);
  }

  /** An encoded Delivery (not a frame: {@link encodeDelivery}'s bytes) waits for the turn's batch like any other. */
  pushDeliveryBytes(delivery: Uint8Array): boolean {
    if (this.#sink.closed) return false;
    return this.#add(delivery, delivery.length);
  }

  #add(delivery: DeliveryInit | Uint8Array, size: number): boolean {
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
    const messages = waiting.filter((d): d is DeliveryInit => !(d instanceof Uint8Array));
    if (messages.length === waiting.length) {
      if (waiting.length === 1) this.#sink.push({ kind: { case: 'delivery', value: messages[0]! } });
      else this.#sink.push({ kind: { case: 'deliveries', value: { items: messages } } });
    } else if (waiting.length === 1) {
      this.#sink.pushEncoded(deliveryFrame(waiting[0] as Uint8Array));
    } else {
      this.#sink.pushEncoded(deliveriesFrame(waiting.map((d) => (d instanceof Uint8Array ? d : toBinary(DeliverySchema, create(DeliverySchema, d))))));
    }
    this.#onFrame?.(waiting.length);
  }
}
