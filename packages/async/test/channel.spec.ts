// Channel: order, end after the queued items, fail after the queued items, nothing accepted once closed,
// and a consumer waiting on an empty channel wakes for the next push.
import { describe, expect, it } from 'vitest';
import { Channel } from '../src/index.js';

async function drain<T>(channel: Channel<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of channel) out.push(item);
  return out;
}

describe('Channel', () => {
  it('yields pushed items in order and ends after the queued ones', async () => {
    const c = new Channel<number>();
    expect(c.push(1)).toBe(true);
    expect(c.push(2)).toBe(true);
    c.end();
    expect(c.closed).toBe(true);
    expect(c.push(3)).toBe(false);
    expect(await drain(c)).toEqual([1, 2]);
  });

  it('wakes a waiting consumer on push, and on end', async () => {
    const c = new Channel<string>();
    const consumed = drain(c);
    await new Promise((resolve) => setTimeout(resolve, 5));
    c.push('a');
    await new Promise((resolve) => setTimeout(resolve, 5));
    c.push('b');
    c.end();
    expect(await consumed).toEqual(['a', 'b']);
  });

  it('fail() throws to the consumer after the queued items; a second fail or end changes nothing', async () => {
    const c = new Channel<number>();
    c.push(1);
    const error = new Error('stream broke');
    c.fail(error);
    c.fail(new Error('later'));
    c.end();
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const item of c) seen.push(item);
      })(),
    ).rejects.toBe(error);
    expect(seen).toEqual([1]);
  });
});
