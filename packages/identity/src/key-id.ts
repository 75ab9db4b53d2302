/**
 * Key ids (docs/PROTOCOL.md §3.1): the 16-byte name of an Ed25519 public key,
 * used as a certificate's `issuer_key_id` and as the trust-bundle index.
 *
 *   key_id = BLAKE3( layout('parley/v1/key-id').fixed(public_key, 32) )[0..16]
 *
 * 128 bits: a collision needs ~2^64 work, and a collision alone does not forge
 * anything, because the signature is still checked against the bundle's key.
 */
import { layout, type ParleyCrypto } from '@parley/crypto-core';
import { asMalformed, assertBytes, assertCrypto } from './assert.js';

/** Length of a key id in bytes. */
export const KEY_ID_BYTES = 16;
/** Length of an Ed25519 public key in bytes. */
export const PUBLIC_KEY_BYTES = 32;
/** Domain-separation tag of the key-id layout. */
export const KEY_ID_DOMAIN = 'parley/v1/key-id';

/**
 * The key id of an Ed25519 public key.
 *
 * @param crypto the ParleyCrypto instance from `createCrypto()`
 * @param publicKey 32-byte Ed25519 public key
 * @returns 16 bytes: the first 16 bytes of BLAKE3 over the key-id layout
 * @throws IdentityError `malformed` when `publicKey` is not 32 bytes or `crypto` is not a ParleyCrypto
 * @example
 * const id = keyId(crypto, issuer.publicKey); // Uint8Array(16)
 */
export function keyId(crypto: ParleyCrypto, publicKey: Uint8Array): Uint8Array {
  assertCrypto(crypto);
  assertBytes(publicKey, 'publicKey', PUBLIC_KEY_BYTES);
  return asMalformed('key id', () =>
    crypto.blake3(layout(KEY_ID_DOMAIN).fixed(publicKey, PUBLIC_KEY_BYTES, 'publicKey').bytes()).slice(0, KEY_ID_BYTES),
  );
}
