/**
 * BLAKE3 (hash mode, 32-byte output) through hash-wasm, behind a tiny
 * interface. Why hash-wasm: of the BLAKE3 packages on the npm registry that
 * install without fetching anything else, it is the fastest well-kept one at
 * the sizes Parley hashes (≤ a few KiB); the measurements are in the README.
 *
 * Parley uses BLAKE3 only in hash mode with the default 32-byte output, so
 * that is all this exposes; keyed derivations use libsodium's keyed BLAKE2b.
 */
import { createBLAKE3 } from 'hash-wasm';

export interface Blake3 {
  readonly name: string;
  /** BLAKE3 hash of `data`, 32 bytes. */
  hash(data: Uint8Array): Uint8Array;
  /** BLAKE3 hash of the concatenation of `parts`, 32 bytes. */
  hashParts(parts: readonly Uint8Array[]): Uint8Array;
}

export async function createBlake3(): Promise<Blake3> {
  // One hasher instance, reused: JavaScript is single-threaded and init()
  // resets its state, so each call is independent.
  const hasher = await createBLAKE3(256);
  return {
    name: 'hash-wasm',
    hash(data) {
      hasher.init();
      hasher.update(data);
      return hasher.digest('binary');
    },
    hashParts(parts) {
      hasher.init();
      for (const part of parts) hasher.update(part);
      return hasher.digest('binary');
    },
  };
}
