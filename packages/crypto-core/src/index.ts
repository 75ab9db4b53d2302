/**
 * @parley/crypto-core — the only Parley package that touches libsodium or
 * BLAKE3. One async initialiser (`createCrypto`), then a synchronous API.
 */

// For users
export { createCrypto } from './crypto.js';
export type {
  ParleyCrypto,
  CreateCryptoOptions,
  BackendChoice,
  PrimitiveName,
  Ed25519Api,
  X25519Api,
  AeadApi,
  XAeadApi,
  SealedBoxApi,
  Ed25519KeyPair,
  X25519KeyPair,
  PwhashOptions,
} from './crypto.js';
export {
  ED25519_PUBLIC_KEY_BYTES,
  ED25519_SEED_BYTES,
  ED25519_SECRET_KEY_BYTES,
  ED25519_SIGNATURE_BYTES,
  X25519_KEY_BYTES,
  AEAD_KEY_BYTES,
  AEAD_NONCE_BYTES,
  AEAD_TAG_BYTES,
  AEAD_MAX_PLAINTEXT_BYTES,
  XAEAD_NONCE_BYTES,
  XAEAD_OVERHEAD_BYTES,
  SEALED_BOX_OVERHEAD_BYTES,
  HMAC_SHA256_BYTES,
  BLAKE2B_BYTES,
  BLAKE3_BYTES,
  PWHASH_SALT_BYTES,
  PWHASH_OPSLIMIT_INTERACTIVE,
  PWHASH_MEMLIMIT_INTERACTIVE,
  PWHASH_OPSLIMIT_MODERATE,
  PWHASH_MEMLIMIT_MODERATE,
  PWHASH_OPSLIMIT_MIN,
  PWHASH_MEMLIMIT_MIN,
  PWHASH_OPSLIMIT_MAX,
  PWHASH_MEMLIMIT_MAX,
  PWHASH_MAX_PASSWORD_BYTES,
} from './crypto.js';
export { SecretKey } from './secret-key.js';
export type { SecretKeyKind } from './secret-key.js';
export { CryptoError, isCryptoError, CRYPTO_ERROR_CODES } from './errors.js';
export type { CryptoErrorCode } from './errors.js';
export {
  toHex,
  fromHex,
  toBase64Url,
  fromBase64Url,
  utf8,
  fromUtf8,
  concatBytes,
  u32be,
  u64be,
  i64be,
} from './encoding.js';

// For sibling packages: validation helpers with the same error shape, and the one set of checks
// each package binds to its own error class (identity, audit)
export { abytes, abytesRange, anumber, astring, au64, U64_MAX, createAssertions, describe as describeType, looksLikeParleyCrypto } from './assert.js';
export type { Assertions, AssertionFailure, AssertionKind } from './assert.js';
export { Layout, layout } from './layout.js';
export { createVerifyPool, MAX_RESTARTS as VERIFY_POOL_MAX_RESTARTS } from './verify-pool.js';
export type { VerifyPool, VerifyPoolOptions } from './verify-pool.js';
