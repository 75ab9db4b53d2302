/**
 * The `did:key` form of an Ed25519 identity key (W3C CCG did:key method,
 * https://w3c-ccg.github.io/did-method-key/), so agent identities read as DIDs
 * without any ledger (DESIGN.md "Identity"):
 *
 *   did:key:z ‖ base58btc( 0xed 0x01 ‖ public_key )
 *
 * `z` is the multibase prefix for base58btc; 0xed 0x01 is the unsigned-varint
 * encoding of the `ed25519-pub` multicodec (0xed). Only Ed25519 keys are
 * accepted, and only the bare DID (no path, query or fragment).
 *
 * Departure: the did:key spec lets a resolver check that the key is a valid
 * curve point; we do not (crypto-core exposes no point check), so a bogus key
 * parses here and simply never verifies a signature.
 */
import { base58 } from '@scure/base';
import { describe, malformed, assertBytes } from './assert.js';
import { PUBLIC_KEY_BYTES } from './key-id.js';

/** Everything before the base58btc payload of an Ed25519 did:key. */
export const DID_KEY_PREFIX = 'did:key:z';
/** The multicodec varint for `ed25519-pub`. */
const ED25519_MULTICODEC = Uint8Array.of(0xed, 0x01);
/** Longest base58 text of 34 bytes is 47 chars; bound the (quadratic) decoder well above that. */
const MAX_DID_LENGTH = 128;

/**
 * The did:key of an Ed25519 public key.
 *
 * @param publicKey 32-byte Ed25519 public key
 * @returns `did:key:z6Mk…`
 * @throws IdentityError `malformed` when `publicKey` is not 32 bytes
 * @example
 * toDidKey(publicKey); // 'did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp'
 */
export function toDidKey(publicKey: Uint8Array): string {
  assertBytes(publicKey, 'publicKey', PUBLIC_KEY_BYTES);
  const payload = new Uint8Array(ED25519_MULTICODEC.length + PUBLIC_KEY_BYTES);
  payload.set(ED25519_MULTICODEC, 0);
  payload.set(publicKey, ED25519_MULTICODEC.length);
  return DID_KEY_PREFIX + base58.encode(payload);
}

/**
 * The Ed25519 public key named by a did:key (strict inverse of {@link toDidKey}).
 *
 * @param did a bare `did:key:z…` string (no fragment, path or query)
 * @returns the 32-byte public key (a new array)
 * @throws IdentityError `malformed` on anything else: another method or multibase,
 *   bad base58, another multicodec, a wrong key length, or a non-canonical encoding
 */
export function fromDidKey(did: string): Uint8Array {
  if (typeof did !== 'string') malformed(`did must be a string, got ${describe(did)}`);
  if (did.length > MAX_DID_LENGTH) malformed(`did must be at most ${MAX_DID_LENGTH} chars`);
  if (!did.startsWith(DID_KEY_PREFIX)) malformed(`did must start with '${DID_KEY_PREFIX}' (did:key, base58btc multibase)`);
  const text = did.slice(DID_KEY_PREFIX.length);
  let payload: Uint8Array;
  try {
    payload = base58.decode(text);
  } catch (cause) {
    return malformed('did:key payload is not valid base58btc', cause);
  }
  if (payload.length !== ED25519_MULTICODEC.length + PUBLIC_KEY_BYTES) {
    malformed(`did:key payload must be ${ED25519_MULTICODEC.length + PUBLIC_KEY_BYTES} bytes, got ${payload.length}`);
  }
  if (payload[0] !== ED25519_MULTICODEC[0] || payload[1] !== ED25519_MULTICODEC[1]) {
    malformed('did:key multicodec must be ed25519-pub (0xed 0x01)');
  }
  // base58 has one encoding per byte string; re-encode to be certain nothing else slipped through.
  if (base58.encode(payload) !== text) malformed('did:key payload is not canonical base58btc');
  return payload.slice(ED25519_MULTICODEC.length);
}
