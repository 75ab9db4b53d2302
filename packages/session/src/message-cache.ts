/**
 * LRU set of recently accepted message hashes: the second replay defence
 * beside the per-session window (it also catches a replay into a session whose
 * window was rebuilt). Keys are message hashes (32 bytes), stored as base64url.
 */
import { toBase64Url } from '@parley/crypto-core';

export const DEFAULT_MESSAGE_CACHE_SIZE = 100_000;

export class MessageHashCache {
  readonly capacity: number;
  readonly #entries = new Map<string, true>();

  constructor(capacity = DEFAULT_MESSAGE_CACHE_SIZE) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer');
    this.capacity = capacity;
  }

  get size(): number {
    return this.#entries.size;
  }

  has(hash: Uint8Array): boolean {
    return this.#entries.has(toBase64Url(hash));
  }

  /** Records a hash as most recent, evicting the least recent beyond capacity. */
  add(hash: Uint8Array): void {
    const key = toBase64Url(hash);
    this.#entries.delete(key);
    this.#entries.set(key, true);
    if (this.#entries.size > this.capacity) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
  }

  /** Hashes, least recent first (for sealed export). */
  export(): string[] {
    return [...this.#entries.keys()];
  }

  static fromExport(keys: readonly string[], capacity = DEFAULT_MESSAGE_CACHE_SIZE): MessageHashCache {
    const cache = new MessageHashCache(capacity);
    for (const k of keys.slice(-capacity)) cache.#entries.set(k, true);
    return cache;
  }
}
