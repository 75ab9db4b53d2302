/**
 * LRU set of recently accepted message hashes: the second replay defence
 * beside the per-session window (it also catches a replay into a session whose
 * window was rebuilt). Keys are message hashes (32 bytes), stored as base64url.
 */
import { toBase64Url } from '@parley/crypto-core';
import { check } from './assert.js';
import { SessionError } from './errors.js';

export const DEFAULT_MESSAGE_CACHE_SIZE = 100_000;

export class MessageHashCache {
  readonly capacity: number;
  readonly #entries = new Map<string, true>();

  /** @throws SessionError `malformed` unless `capacity` is a positive integer */
  constructor(capacity = DEFAULT_MESSAGE_CACHE_SIZE) {
    this.capacity = check.safeInt(capacity, 'capacity', 1);
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

  /** @throws SessionError `state_corrupt` unless `keys` is what {@link export} returns; `malformed` for the capacity */
  static fromExport(keys: readonly string[], capacity = DEFAULT_MESSAGE_CACHE_SIZE): MessageHashCache {
    const cache = new MessageHashCache(capacity);
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) throw new SessionError('state_corrupt', 'message hash cache export must be an array of strings');
    for (const k of keys.slice(-capacity)) cache.#entries.set(k, true);
    return cache;
  }
}
