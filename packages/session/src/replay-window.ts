/**
 * Anti-replay sliding window, RFC 6479 style (as WireGuard's counter
 * validation): a ring of 32-bit blocks; moving the window forward clears whole
 * blocks, so each check and update is O(1) amortised.
 *
 * With RING_BITS = 8192 and 32-bit blocks the window covers the newest
 * WINDOW_SIZE = 8192 − 32 = 8160 counters: a counter more than 8159 below the
 * highest accepted one is rejected outright, as is any counter already seen.
 *
 * Counters are plain numbers and must stay below 2^53 (MAX_COUNTER); the
 * protocol renews sessions long before (docs/PROTOCOL.md §7).
 */

import { SessionError } from './errors.js';

export const BLOCK_BITS = 32;
export const RING_BITS = 8192;
export const RING_BLOCKS = RING_BITS / BLOCK_BITS;
/** Number of counters (ending at the highest accepted one) the window can tell apart. */
export const WINDOW_SIZE = RING_BITS - BLOCK_BITS;
/** Largest counter a window accepts: 2^53 − 1. */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

export type ReplayVerdict = 'ok' | 'duplicate' | 'too_old' | 'out_of_range';

/** Serialisable state, for sealed session export. */
export interface ReplayWindowState {
  /** Highest accepted counter, or -1 when none. */
  readonly top: number;
  /** The ring, RING_BLOCKS 32-bit words. */
  readonly ring: Uint32Array;
}

export class ReplayWindow {
  #top = -1;
  readonly #ring = new Uint32Array(RING_BLOCKS);

  /** Highest accepted counter, -1 before the first. */
  get top(): number {
    return this.#top;
  }

  /** Lowest counter still inside the window (0 until the window has filled). */
  get floor(): number {
    return Math.max(0, this.#top - WINDOW_SIZE + 1);
  }

  /** Checks a counter without recording it. */
  check(counter: number): ReplayVerdict {
    if (!Number.isSafeInteger(counter) || counter < 0 || counter > MAX_COUNTER) return 'out_of_range';
    if (counter > this.#top) return 'ok';
    if (counter < this.floor) return 'too_old';
    const block = Math.floor(counter / BLOCK_BITS) % RING_BLOCKS;
    const bit = 1 << counter % BLOCK_BITS;
    return (this.#ring[block]! & bit) === 0 ? 'ok' : 'duplicate';
  }

  /**
   * Records a counter that has passed every other check (authenticated).
   * Returns false, changing nothing, if check() would not say 'ok'.
   */
  accept(counter: number): boolean {
    if (this.check(counter) !== 'ok') return false;
    const index = Math.floor(counter / BLOCK_BITS);
    if (counter > this.#top) {
      const current = this.#top < 0 ? -1 : Math.floor(this.#top / BLOCK_BITS);
      const advance = Math.min(index - current, RING_BLOCKS);
      for (let i = 1; i <= advance; i++) this.#ring[(current + i) % RING_BLOCKS] = 0;
      this.#top = counter;
    }
    this.#ring[index % RING_BLOCKS]! |= 1 << counter % BLOCK_BITS;
    return true;
  }

  exportState(): ReplayWindowState {
    return { top: this.#top, ring: this.#ring.slice() };
  }

  /** @throws SessionError `state_corrupt` unless `state` is what {@link exportState} returns */
  static fromState(state: ReplayWindowState): ReplayWindow {
    const w = new ReplayWindow();
    const top = (state as Partial<ReplayWindowState> | null | undefined)?.top;
    const ring = (state as Partial<ReplayWindowState> | null | undefined)?.ring;
    if (typeof top !== 'number' || !Number.isSafeInteger(top) || top < -1 || !(ring instanceof Uint32Array) || ring.length !== RING_BLOCKS) {
      throw new SessionError('state_corrupt', 'invalid replay window state');
    }
    w.#top = state.top;
    w.#ring.set(state.ring);
    return w;
  }
}
