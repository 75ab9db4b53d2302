import { describe, expect, it, vi } from 'vitest';
import { sleep } from '../src/index.js';

describe('sleep', () => {
  it('resolves after its time, at once when its signal aborts (or had aborted), and leaves no timer behind', async () => {
    vi.useFakeTimers();
    try {
      let done = false;
      void sleep(1_000).then(() => (done = true));
      await vi.advanceTimersByTimeAsync(999);
      expect(done).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(done).toBe(true);

      const abort = new AbortController();
      let cut = false;
      void sleep(60_000, abort.signal).then(() => (cut = true));
      await vi.advanceTimersByTimeAsync(10);
      abort.abort();
      await vi.advanceTimersByTimeAsync(0);
      expect(cut).toBe(true);
      expect(vi.getTimerCount()).toBe(0);

      await sleep(60_000, abort.signal); // already aborted: no wait
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
