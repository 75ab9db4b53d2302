import { ConnectResponseSchema, DeliveryReceiptSchema, DeliverySchema, HandshakeFrameSchema, SecureMessageSchema, SessionRejectSchema, create, fromBinary, toBinary } from '@parley/proto';
import type { RelayItem } from '@parley/protocol';
import { describe, expect, it } from 'vitest';
import type { ConnectResponseInit } from './context.js';
import { BatchingSink, MAX_BATCH_BYTES, MAX_BATCH_ITEMS, deliveriesFrame, deliveryFrame, deliveryOfFrame, encodeDelivery } from './delivery-batch.js';
import type { DeliveryInit } from './context.js';
import { encodeItem } from './mailbox.js';

/** A sink that records the frames it is given (an encoded one decoded, and counted in `encoded`). */
function recorder() {
  const frames: ConnectResponseInit[] = [];
  let encoded = 0;
  let closed = false;
  const sink = {
    get closed() {
      return closed;
    },
    push: (r: ConnectResponseInit) => (closed ? false : (frames.push(r), true)),
    pushEncoded: (frame: Uint8Array) => (closed ? false : (frames.push(fromBinary(ConnectResponseSchema, frame)), encoded++, true)),
    end: () => void (closed = true),
    fail: () => void (closed = true),
  };
  return { frames, sink, batching: new BatchingSink(sink), encodedFrames: () => encoded };
}

const delivery = (id: number, payloadBytes = 100): ConnectResponseInit => ({
  kind: { case: 'delivery', value: { deliveryId: BigInt(id), acceptedAtMs: 1n, item: { case: 'envelope', value: { encryptedPayload: new Uint8Array(payloadBytes) } } } },
});
/** The same Delivery as {@link delivery}, framed around its item's encoding as a stored item is. */
const encodedDelivery = (id: number, payloadBytes = 100): Uint8Array => {
  const d = delivery(id, payloadBytes).kind!.value as DeliveryInit;
  return deliveryFrame(encodeDelivery(BigInt(id), 1n, encodeItem(create(DeliverySchema, d).item as RelayItem)));
};
const accepted = (id: number): ConnectResponseInit => ({ kind: { case: 'accepted', value: { requestId: BigInt(id) } } });
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Each frame as `delivery:id`, `deliveries:id,id,…` or its kind. */
function shape(frames: readonly ConnectResponseInit[]): string[] {
  return frames.map((f) => {
    const k = f.kind!;
    if (k.case === 'delivery') return `delivery:${(k.value as DeliveryInit).deliveryId}`;
    if (k.case === 'deliveries') return `deliveries:${k.value.items!.map((d) => d.deliveryId).join(',')}`;
    return k.case ?? 'none';
  });
}

describe('BatchingSink', () => {
  it('sends the deliveries of one turn as one frame, and a lone one as a delivery frame', async () => {
    const { frames, batching } = recorder();
    for (const id of [1, 2, 3]) expect(batching.push(delivery(id))).toBe(true);
    expect(frames).toEqual([]);
    await turn();
    batching.push(delivery(4));
    await turn();
    expect(shape(frames)).toEqual(['deliveries:1,2,3', 'delivery:4']);
  });

  it('keeps the order frames were written in: any other frame, and the end, first send what is waiting', async () => {
    const { frames, batching } = recorder();
    batching.push(delivery(1));
    batching.push(delivery(2));
    batching.push(accepted(7));
    batching.push(delivery(3));
    batching.end();
    await turn();
    expect(shape(frames)).toEqual(['deliveries:1,2', 'accepted', 'delivery:3']);
  });

  it('bounds a frame in items and in bytes; an item above the byte bound goes alone', async () => {
    const { frames, batching } = recorder();
    for (let id = 1; id <= MAX_BATCH_ITEMS + 2; id++) batching.push(delivery(id));
    await turn();
    expect(frames.map((f) => (f.kind!.case === 'deliveries' ? f.kind!.value.items!.length : 1))).toEqual([MAX_BATCH_ITEMS, 2]);

    const big = recorder();
    big.batching.push(delivery(1));
    big.batching.push(delivery(2, MAX_BATCH_BYTES));
    big.batching.push(delivery(3));
    big.batching.push(delivery(4));
    await turn();
    expect(shape(big.frames)).toEqual(['delivery:1', 'delivery:2', 'deliveries:3,4']);
  });

  it('drops what is waiting when the stream fails, and refuses once closed', async () => {
    const { frames, batching } = recorder();
    batching.push(delivery(1));
    batching.fail(new Error('gone'));
    await turn();
    expect(frames).toEqual([]);
    expect(batching.push(delivery(2))).toBe(false);
    expect(batching.closed).toBe(true);
  });

  it('batches deliveries pushed encoded with the others, in order; a lone one goes as a delivery frame; other encoded frames flush first', async () => {
    const { frames, batching, encodedFrames } = recorder();
    batching.push(delivery(1));
    expect(batching.pushEncoded(encodedDelivery(2))).toBe(true);
    batching.push(delivery(3));
    await turn();
    batching.pushEncoded(encodedDelivery(4));
    await turn();
    batching.pushEncoded(encodedDelivery(5));
    batching.pushEncoded(toBinary(ConnectResponseSchema, create(ConnectResponseSchema, accepted(9))));
    await turn();
    expect(shape(frames)).toEqual(['deliveries:1,2,3', 'delivery:4', 'delivery:5', 'accepted']);
    expect(encodedFrames()).toBe(4);
    const items = (frames[0]!.kind!.value as { items: DeliveryInit[] }).items;
    expect(items.map((d) => (d.item?.case === 'envelope' ? d.item.value.encryptedPayload?.length : -1))).toEqual([100, 100, 100]);
  });
});

describe('delivery frames around stored bytes', () => {
  const items: RelayItem[] = [
    { case: 'envelope', value: create(SecureMessageSchema, { senderId: 'a', recipientId: 'b', encryptedPayload: new Uint8Array([1, 2, 3]), signature: new Uint8Array(64) }) },
    { case: 'receipt', value: create(DeliveryReceiptSchema, { recipientId: 'b', messageHash: new Uint8Array(32) }) },
    { case: 'handshake', value: create(HandshakeFrameSchema, { step: 1, noiseMessage: new Uint8Array(32) }) },
    { case: 'sessionReject', value: create(SessionRejectSchema, { senderId: 'b' }) },
  ];

  it('are the bytes protobuf-es writes for the decoded Delivery, for every item kind and id', () => {
    for (const item of items) {
      for (const [id, at] of [[1n, 1_700_000_000_000n], [2n ** 40n, 0n], [0n, 5n]] as const) {
        const expected = toBinary(DeliverySchema, create(DeliverySchema, { deliveryId: id, acceptedAtMs: at, item }));
        const ours = encodeDelivery(id, at, encodeItem(item));
        expect(Buffer.from(ours).equals(Buffer.from(expected))).toBe(true);
        const frame = deliveryFrame(ours);
        expect(Buffer.from(frame).equals(Buffer.from(toBinary(ConnectResponseSchema, create(ConnectResponseSchema, { kind: { case: 'delivery', value: create(DeliverySchema, { deliveryId: id, acceptedAtMs: at, item }) } }))))).toBe(true);
        expect(Buffer.from(deliveryOfFrame(frame)!).equals(Buffer.from(ours))).toBe(true);
      }
    }
    const many = items.map((item, i) => create(DeliverySchema, { deliveryId: BigInt(i + 1), acceptedAtMs: 7n, item }));
    const frame = deliveriesFrame(many.map((d) => toBinary(DeliverySchema, d)));
    expect(Buffer.from(frame).equals(Buffer.from(toBinary(ConnectResponseSchema, create(ConnectResponseSchema, { kind: { case: 'deliveries', value: { items: many } } }))))).toBe(true);
  });

  it('are those bytes too at every varint boundary: ids, times (a negative one: ten bytes), lengths of 0..2^21 + 1, batches of 1..130', () => {
    const ids = [0n, 1n, 127n, 128n, 16_383n, 16_384n, 2n ** 35n - 1n, 2n ** 35n, 2n ** 63n, 2n ** 64n - 1n];
    const times = [0n, 1n, 127n, 128n, 1_767_225_600_000n, -1n, -(2n ** 63n)];
    const lengths = [0, 1, 126, 127, 128, 16_381, 16_383, 16_384, 2 ** 21 - 3, 2 ** 21 + 1];
    let n = 0;
    for (const length of lengths) {
      const item: RelayItem = { case: 'envelope', value: create(SecureMessageSchema, { encryptedPayload: new Uint8Array(length).fill(length % 251) }) };
      const encoded = encodeItem(item);
      for (const id of ids) {
        const at = times[n++ % times.length]!;
        const message = create(DeliverySchema, { deliveryId: id, acceptedAtMs: at, item });
        const ours = encodeDelivery(id, at, encoded);
        expect(Buffer.from(ours).equals(Buffer.from(toBinary(DeliverySchema, message))), `id ${id}, at ${at}, length ${length}`).toBe(true);
        expect(Buffer.from(deliveryFrame(ours)).equals(Buffer.from(toBinary(ConnectResponseSchema, create(ConnectResponseSchema, { kind: { case: 'delivery', value: message } }))))).toBe(true);
      }
    }
    for (const count of [1, 2, 127, 128, 130]) {
      const many = Array.from({ length: count }, (_, i) => create(DeliverySchema, { deliveryId: BigInt(i + 1), acceptedAtMs: 7n, item: { case: 'envelope', value: create(SecureMessageSchema, { encryptedPayload: new Uint8Array((i * 37) % 300) }) } }));
      const frame = deliveriesFrame(many.map((d) => toBinary(DeliverySchema, d)));
      expect(Buffer.from(frame).equals(Buffer.from(toBinary(ConnectResponseSchema, create(ConnectResponseSchema, { kind: { case: 'deliveries', value: { items: many } } }))))).toBe(true);
    }
  });

  it('are told apart from other frames', () => {
    expect(deliveryOfFrame(toBinary(ConnectResponseSchema, create(ConnectResponseSchema, accepted(1))))).toBeUndefined();
    expect(deliveryOfFrame(deliveriesFrame([new Uint8Array([8, 1])]))).toBeUndefined();
    expect(deliveryOfFrame(new Uint8Array(0))).toBeUndefined();
    expect(deliveryOfFrame(new Uint8Array([0x1a, 10, 1]))).toBeUndefined(); // a length beyond the frame
    const frame = deliveryFrame(new Uint8Array([8, 1]));
    expect(deliveryOfFrame(new Uint8Array([...frame, 0x20, 1]))).toBeUndefined(); // anything after the delivery
  });
});
