import { describe, expect, it } from 'vitest';
import { GroupCommit } from './group-commit.js';

/** A GroupCommit whose writes are recorded and finish when `release` is called. */
function recorder(options: { maxBatch: number; maxBatchWeight?: number; fail?: (batch: readonly number[]) => boolean }) {
  const batches: number[][] = [];
  let release: () => void = () => undefined;
  const gc = new GroupCommit<number, string>({
    maxBatch: options.maxBatch,
    ...(options.maxBatchWeight === undefined ? {} : { maxBatchWeight: options.maxBatchWeight, weigh: (n: number) => n }),
    write: async (batch) => {
      batches.push([...batch]);
      await new Promise<void>((resolve) => (release = resolve));
      if (options.fail?.(batch) === true) throw new Error(`batch ${batch.join(',')} failed`);
      return batch.map((n) => `ok:${n}`);
    },
  });
  return { gc, batches, release: () => release() };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('GroupCommit', () => {
  it('writes a lone item at once and what arrives meanwhile as the next batch, in order', async () => {
    const { gc, batches, release } = recorder({ maxBatch: 10 });
    const first = gc.add(1);
    await tick();
    const later = [2, 3, 4].map((n) => gc.add(n));
    expect(batches).toEqual([[1]]);
    release();
    expect(await first).toBe('ok:1');
    await tick();
    expect(batches).toEqual([[1], [2, 3, 4]]);
    release();
    expect(await Promise.all(later)).toEqual(['ok:2', 'ok:3', 'ok:4']);
  });

  it('takes at most maxBatch items a batch', async () => {
    const { gc, batches, release } = recorder({ maxBatch: 2 });
    const all = [1, 2, 3, 4, 5].map((n) => gc.add(n));
    for (let i = 0; i < 3; i++) {
      await tick();
      release();
    }
    expect(await Promise.all(all)).toEqual(['ok:1', 'ok:2', 'ok:3', 'ok:4', 'ok:5']);
    expect(batches).toEqual([[1, 2], [3, 4], [5]]);
  });

  it('takes at most maxBatchWeight a batch, and an item heavier than that alone', async () => {
    const { gc, batches, release } = recorder({ maxBatch: 100, maxBatchWeight: 10 });
    const all = [4, 4, 4, 25, 1, 9, 1].map((n) => gc.add(n));
    for (let i = 0; i < 5; i++) {
      await tick();
      release();
    }
    await Promise.all(all);
    expect(batches).toEqual([[4, 4], [4], [25], [1, 9], [1]]);
  });

  it('fails every item of a failed batch and goes on with the next', async () => {
    const { gc, release } = recorder({ maxBatch: 2, fail: (b) => b.includes(2) });
    const all = [1, 2, 3].map((n) => gc.add(n).catch((e: Error) => e.message));
    for (let i = 0; i < 2; i++) {
      await tick();
      release();
    }
    expect(await Promise.all(all)).toEqual(['batch 1,2 failed', 'batch 1,2 failed', 'ok:3']);
  });

  it('refuses with unavailable beyond maxQueued waiting items', async () => {
    const gc = new GroupCommit<number, number>({ maxBatch: 1, maxQueued: 2, write: () => new Promise(() => undefined) });
    void gc.add(1);
    void gc.add(2);
    const refused = gc.add(3);
    // An item the caller holds and bounds itself (a spilled delivery) is never refused for the queue's length.
    let held = 'waiting';
    void gc.add(4, false).then(
      () => (held = 'written'),
      () => (held = 'refused'),
    );
    await expect(refused).rejects.toMatchObject({ code: 'unavailable' });
    await tick();
    expect(held).toBe('waiting');
    expect(gc.queued).toBe(2);
  });
});
