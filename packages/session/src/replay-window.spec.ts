import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_COUNTER, ReplayWindow, WINDOW_SIZE } from './replay-window.js';

// The properties run thousands of window operations: seconds on a quiet machine, more on a loaded
// 2-core one, so a generous bound (nothing here asserts a timing).
describe('ReplayWindow', { timeout: 120_000 }, () => {
  it('covers at least 8128 positions', () => {
    expect(WINDOW_SIZE).toBeGreaterThanOrEqual(8128);
  });

  it('accepts in order, rejects duplicates and anything left of the window', () => {
    const w = new ReplayWindow();
    for (let i = 0; i < 20_000; i++) expect(w.accept(i)).toBe(true);
    expect(w.check(19_999)).toBe('duplicate');
    expect(w.check(20_000 - WINDOW_SIZE)).toBe('duplicate');
    expect(w.check(20_000 - WINDOW_SIZE - 1)).toBe('too_old');
    expect(w.check(0)).toBe('too_old');
    expect(w.check(-1)).toBe('out_of_range');
    expect(w.check(1.5)).toBe('out_of_range');
    expect(w.check(MAX_COUNTER + 1)).toBe('out_of_range');
  });

  it('handles a jump far beyond the ring and the maximum counter', () => {
    const w = new ReplayWindow();
    expect(w.accept(5)).toBe(true);
    expect(w.accept(1_000_000)).toBe(true);
    expect(w.check(5)).toBe('too_old');
    expect(w.check(1_000_000 - 1)).toBe('ok');
    expect(w.accept(MAX_COUNTER)).toBe(true);
    expect(w.check(MAX_COUNTER)).toBe('duplicate');
    expect(w.check(MAX_COUNTER - 1)).toBe('ok');
  });

  it('property: no counter is ever accepted twice', () => {
    fc.assert(
      fc.property(fc.array(fc.nat({ max: 40_000 }), { maxLength: 2000 }), (counters) => {
        const w = new ReplayWindow();
        const accepted = new Set<number>();
        for (const c of counters) {
          if (w.accept(c)) {
            expect(accepted.has(c)).toBe(false);
            accepted.add(c);
          }
        }
      }),
    );
  });

  it('property: every permutation of counters within the window is accepted exactly once', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 1_000_000 }),
        fc.integer({ min: 1, max: WINDOW_SIZE }),
        fc.infiniteStream(fc.nat()),
        (base, size, seeds) => {
          const counters = Array.from({ length: size }, (_, i) => base + i);
          // Fisher–Yates with fast-check's random stream, so failures shrink.
          const it = seeds[Symbol.iterator]();
          for (let i = counters.length - 1; i > 0; i--) {
            const j = (it.next().value as number) % (i + 1);
            [counters[i], counters[j]] = [counters[j]!, counters[i]!];
          }
          const w = new ReplayWindow();
          expect(counters.filter((c) => !w.accept(c))).toEqual([]);
          expect(counters.filter((c) => w.accept(c))).toEqual([]);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('property: anything left of the window is rejected', () => {
    fc.assert(
      fc.property(fc.integer({ min: WINDOW_SIZE, max: 10_000_000 }), fc.nat({ max: 10_000_000 }), (top, back) => {
        const w = new ReplayWindow();
        w.accept(top);
        const old = top - WINDOW_SIZE - back;
        if (old >= 0) expect(w.check(old)).toBe('too_old');
        expect(w.check(top - WINDOW_SIZE + 1)).toBe('ok');
      }),
    );
  });

  it('round-trips its state', () => {
    const w = new ReplayWindow();
    for (const c of [3, 1, 9000, 8999, 100]) w.accept(c);
    const copy = ReplayWindow.fromState(w.exportState());
    for (const c of [3, 1, 9000, 8999, 100, 5, 9001]) expect(copy.check(c)).toBe(w.check(c));
  });
});
