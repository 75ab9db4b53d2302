/**
 * Per-agent token buckets for memory calls (the gateway's design: `burst`
 * calls at once, `ratePerSecond` sustained). Only authenticated agents get a
 * bucket, and buckets idle long enough to be full again are dropped, so the
 * map is bounded by the agents active in the last few seconds.
 */

export interface RateLimitOptions {
  readonly ratePerSecond: number;
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

export class RateLimiter {
  readonly #rate: number;
  readonly #burst: number;
  readonly #clock: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: RateLimitOptions, clock: () => number) {
    if (!(options.ratePerSecond > 0) || !Number.isFinite(options.ratePerSecond)) throw new RangeError('ratePerSecond must be a positive number');
    if (!Number.isSafeInteger(options.burst) || options.burst < 1) throw new RangeError('burst must be a positive integer');
    this.#rate = options.ratePerSecond;
    this.#burst = options.burst;
    this.#clock = clock;
  }

  /** Takes one token for `agentId`; false when its bucket is empty. */
  take(agentId: string): boolean {
    const now = this.#clock();
    let bucket = this.#buckets.get(agentId);
    if (bucket === undefined) {
      bucket = { tokens: this.#burst, updatedMs: now };
      this.#buckets.set(agentId, bucket);
    } else {
      bucket.tokens = Math.min(this.#burst, bucket.tokens + (Math.max(0, now - bucket.updatedMs) / 1000) * this.#rate);
      bucket.updatedMs = now;
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Forgets buckets that have refilled completely. */
  sweep(): void {
    const now = this.#clock();
    const fullAfterMs = (this.#burst / this.#rate) * 1000;
    for (const [id, b] of this.#buckets) if (now - b.updatedMs > fullAfterMs) this.#buckets.delete(id);
  }
}
