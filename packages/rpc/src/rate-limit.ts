/**
 * Keyed token buckets (the gateway's frames and bytes per agent, the memory store's calls per agent, the
 * registry's agent-signed reads per key): each key may take `burst` tokens at once and `ratePerSecond`
 * sustained. Only keys of authenticated callers should get a bucket, and buckets idle long enough to be
 * full again are dropped by `sweep`, so the map is bounded by the keys active in the last few seconds.
 */

export interface RateLimitOptions {
  /** Sustained tokens per second per key. */
  readonly ratePerSecond: number;
  /** Bucket size (tokens that may be taken at once). */
  readonly burst: number;
  /** Clock in ms (tests). Default Date.now. */
  readonly clock?: () => number;
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

  constructor(options: RateLimitOptions) {
    if (!(options.ratePerSecond > 0) || !Number.isFinite(options.ratePerSecond)) throw new RangeError('ratePerSecond must be a positive number');
    if (!Number.isSafeInteger(options.burst) || options.burst < 1) throw new RangeError('burst must be a positive integer');
    this.#rate = options.ratePerSecond;
    this.#burst = options.burst;
    this.#clock = options.clock ?? Date.now;
  }

  /** Takes `cost` tokens for `agentId`; false (nothing taken) when the bucket is short. */
  take(agentId: string, cost = 1): boolean {
    const now = this.#clock();
    let bucket = this.#buckets.get(agentId);
    if (bucket === undefined) {
      bucket = { tokens: this.#burst, updatedMs: now };
      this.#buckets.set(agentId, bucket);
    } else {
      const elapsed = Math.max(0, now - bucket.updatedMs) / 1000;
      bucket.tokens = Math.min(this.#burst, bucket.tokens + elapsed * this.#rate);
      bucket.updatedMs = now;
    }
    if (bucket.tokens < cost) return false;
    bucket.tokens -= cost;
    return true;
  }

  /** Forgets buckets that have been full for a while (call periodically). */
  sweep(): void {
    const now = this.#clock();
    const fullAfterMs = (this.#burst / this.#rate) * 1000;
    for (const [id, b] of this.#buckets) if (now - b.updatedMs > fullAfterMs) this.#buckets.delete(id);
  }

  /** Sustained tokens per second per key. */
  get ratePerSecond(): number {
    return this.#rate;
  }

  /** Tokens a full bucket holds. */
  get burst(): number {
    return this.#burst;
  }

  /** Whether `agentId` has a bucket. */
  has(agentId: string): boolean {
    return this.#buckets.has(agentId);
  }

  get size(): number {
    return this.#buckets.size;
  }
}

/**
 * Lets a log line through at most once per `intervalMs` in all, and counts the ones held back, which the
 * next line that goes through reports. Global, not per value: a key per value (a caller-chosen version, an
 * address) lets any caller write a line per value it invents.
 */
export class LogThrottle {
  readonly #intervalMs: number;
  #lastMs: number | undefined;
  #suppressed = 0;

  constructor(intervalMs: number) {
    this.#intervalMs = intervalMs;
  }

  /** @returns undefined when the line is held back; else how many were held back since the last one. */
  admit(nowMs: number): { suppressed: number } | undefined {
    if (this.#lastMs !== undefined && nowMs - this.#lastMs < this.#intervalMs && nowMs >= this.#lastMs) {
      this.#suppressed++;
      return undefined;
    }
    this.#lastMs = nowMs;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return { suppressed };
  }
}
