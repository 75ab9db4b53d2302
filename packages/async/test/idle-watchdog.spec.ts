import { describe, expect, it, vi } from 'vitest';
import { IdleWatchdog } from '../src/index.js';

describe('IdleWatchdog', () => {
  it('aborts after idleMs without a touch (timedOut), not while touched; with its parent (not timedOut); dispose leaves no timer', () => {
    vi.useFakeTimers();
    try {
      const quiet = new IdleWatchdog(undefined, 1_000);
      vi.advanceTimersByTime(900);
      quiet.touch();
      vi.advanceTimersByTime(900);
      expect(quiet.signal.aborted).toBe(false);
      vi.advanceTimersByTime(100);
      expect([quiet.signal.aborted, quiet.timedOut]).toEqual([true, true]);
      quiet.dispose();

      const parent = new AbortController();
      const child = new IdleWatchdog(parent.signal, 1_000);
      parent.abort();
      expect([child.signal.aborted, child.timedOut]).toEqual([true, false]);
      child.dispose();
      expect(vi.getTimerCount()).toBe(0);

      const late = new IdleWatchdog(parent.signal, 1_000); // the parent had aborted already
      expect([late.signal.aborted, late.timedOut]).toEqual([true, false]);
      late.dispose();
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
