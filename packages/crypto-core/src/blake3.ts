/**
 * BLAKE3 (hash, keyed_hash, derive_key; XOF output) behind a tiny interface so
 * the implementation can be swapped; the choice and its measurements are in
 * the package README.
 */
import { blake3 as nobleBlake3 } from '@noble/hashes/blake3.js';

export interface Blake3 {
  readonly name: string;
  hash(data: Uint8Array, outLen: number): Uint8Array;
  keyed(key: Uint8Array, data: Uint8Array, outLen: number): Uint8Array;
  deriveKey(context: string, material: Uint8Array, outLen: number): Uint8Array;
}

export async function createBlake3(): Promise<Blake3> {
  return {
    name: '@noble/hashes',
    hash: (data, outLen) => nobleBlake3(data, { dkLen: outLen }),
    keyed: (key, data, outLen) => nobleBlake3(data, { key, dkLen: outLen }),
    deriveKey: (context, material, outLen) => nobleBlake3(material, { context: new TextEncoder().encode(context), dkLen: outLen }),
  };
}
