import { describe, expect, it } from 'vitest';
import type { ConnectResponseInit } from './context.js';
import { BatchingSink, MAX_BATCH_BYTES, MAX_BATCH_ITEMS } from './delivery-batch.js';
import type { DeliveryInit } from './delivery.js';

/** A sink that records the frames it is given. */
function recorder() {
  const frames: ConnectResponseInit[] = [];
  let closed = false;
  const sink = {
    get closed() {
      return closed;
    },
    push: (r: ConnectResponseInit) => (closed ? false : (frames.push(r), true)),
    end: () => void (closed = true),
    fail: () => void (closed = true),
  };
  return { frames, sink, batching: new BatchingSink(sink) };
}

const delivery = (id: number, payloadBytes = 100): ConnectResponseInit => ({
  kind: { case: 'delivery', value: { deliveryId: BigInt(id), acceptedAtMs: 1n, item: { case: 'envelope', value: { encryptedPayload: new Uint8Array(payloadBytes) } } } },
});
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
});
