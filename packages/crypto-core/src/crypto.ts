/**
 * The crypto-core facade: one async initialiser, `createCrypto()`, then a
 * synchronous, typed, validated API. Every input is checked (type, length,
 * range) before any backend sees it; every failure is a CryptoError with a
 * stable code; no library message escapes and no key is ever printed.
 */
import * as nodeCrypto from 'node:crypto';
import { abytes, abytesRange, anumber, au64, describe as describeType } from './assert.js';
import type { CryptoBackend, PwhashBackend, SodiumOnlyBackend } from './backend.js';
import { createBlake3, type Blake3 } from './blake3.js';
import { CryptoError } from './errors.js';
import { createNodeBackend } from './node-backend.js';
import { SecretKey, asecret, assertKeyKind, type SecretKeyKind } from './secret-key.js';
import { createSodiumBackend } from './sodium-backend.js';
import { createSodiumNativeBackend } from './sodium-native-backend.js';

export const ED25519_PUBLIC_KEY_BYTES = 32;
export const ED25519_SEED_BYTES = 32;
export const ED25519_SECRET_KEY_BYTES = 64;
export const ED25519_SIGNATURE_BYTES = 64;
export const X25519_KEY_BYTES = 32;
export const AEAD_KEY_BYTES = 32;
export const AEAD_NONCE_BYTES = 12;
export const AEAD_TAG_BYTES = 16;
export const HMAC_SHA256_BYTES = 32;
export const BLAKE2B_BYTES = 64;
export const BLAKE3_BYTES = 32;
/** Upper bound on any single AEAD message crypto-core accepts (64 MiB). */
export const AEAD_MAX_PLAINTEXT_BYTES = 64 * 1024 * 1024;
/** Salt length of {@link ParleyCrypto.pwhash} (libsodium crypto_pwhash_SALTBYTES). */
export const PWHASH_SALT_BYTES = 16;
/** Argon2id passes for interactive logins (libsodium crypto_pwhash_OPSLIMIT_INTERACTIVE). */
export const PWHASH_OPSLIMIT_INTERACTIVE = 2;
/** Argon2id memory for interactive logins: 64 MiB (crypto_pwhash_MEMLIMIT_INTERACTIVE). */
export const PWHASH_MEMLIMIT_INTERACTIVE = 64 * 1024 * 1024;
/** Argon2id passes for keys at rest (crypto_pwhash_OPSLIMIT_MODERATE); about 0.7 s with MODERATE memory. */
export const PWHASH_OPSLIMIT_MODERATE = 3;
/** Argon2id memory for keys at rest: 256 MiB (crypto_pwhash_MEMLIMIT_MODERATE). */
export const PWHASH_MEMLIMIT_MODERATE = 256 * 1024 * 1024;
/** Smallest accepted passes (crypto_pwhash_OPSLIMIT_MIN). Only for tests: far too cheap for a real passphrase. */
export const PWHASH_OPSLIMIT_MIN = 1;
/** Smallest accepted memory, 8 KiB (crypto_pwhash_MEMLIMIT_MIN). Only for tests. */
export const PWHASH_MEMLIMIT_MIN = 8192;
/** Largest accepted passes. */
export const PWHASH_OPSLIMIT_MAX = 16;
/** Largest accepted memory (1 GiB): bounds what a stored parameter set can make a process allocate. */
export const PWHASH_MEMLIMIT_MAX = 1024 * 1024 * 1024;
/** Longest accepted password, in bytes. */
export const PWHASH_MAX_PASSWORD_BYTES = 4096;
/** Nonce length of XChaCha20-Poly1305 (24 bytes: large enough to be drawn at random for every message). */
export const XAEAD_NONCE_BYTES = 24;
/** Bytes {@link XAeadApi.seal} adds to a plaintext: the 24-byte nonce and the 16-byte tag. */
export const XAEAD_OVERHEAD_BYTES = XAEAD_NONCE_BYTES + AEAD_TAG_BYTES;
/** Bytes a sealed box adds to its message: the ephemeral X25519 public key and the 16-byte tag (crypto_box_SEALBYTES). */
export const SEALED_BOX_OVERHEAD_BYTES = 48;

/** An Ed25519 key pair. `secretKey` is libsodium's 64-byte seed‖publicKey form. */
export interface Ed25519KeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: SecretKey;
}

/** An X25519 key pair. */
export interface X25519KeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: SecretKey;
}

/** Which implementation serves the primitives. */
export type BackendChoice = 'libsodium' | 'node' | 'auto';

export interface CreateCryptoOptions {
  /**
   * `auto` (default): per primitive, the faster of the two as measured in this
   * package's benchmark (see README). `libsodium` or `node`: one backend for
   * every primitive it has.
   */
  readonly backend?: BackendChoice;
  /**
   * Which build of libsodium serves the libsodium primitives. `auto` (default):
   * the native addon (sodium-native) when this platform has its prebuilt
   * binary, else the WebAssembly build. `native` fails with `backend_failure`
   * when the addon cannot load; `wasm` never loads it.
   */
  readonly libsodium?: 'auto' | 'native' | 'wasm';
}

/** Ed25519 operations (RFC 8032, pure Ed25519). */
export interface Ed25519Api {
  /** Fresh key pair from 32 bytes of OS randomness. */
  generateKeyPair(): Ed25519KeyPair;
  /** Deterministic key pair from a 32-byte seed. @throws invalid_type, invalid_length */
  keyPairFromSeed(seed: Uint8Array): Ed25519KeyPair;
  /** The 32-byte seed of a secret key (a copy; wipe it after use). */
  exportSeed(secretKey: SecretKey): Uint8Array;
  /** 64-byte signature. @throws invalid_type, invalid_length, key_wiped */
  sign(message: Uint8Array, secretKey: SecretKey): Uint8Array;
  /**
   * True only for a valid signature; false (never throws) on any malformed input. Always libsodium's
   * `crypto_sign_verify_detached`, whatever the backend: a small-order or non-canonical public key or R,
   * or a non-canonical S, is refused (OpenSSL accepts the identity-key forgery for every message).
   */
  verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
}

/** X25519 operations (RFC 7748). */
export interface X25519Api {
  generateKeyPair(): X25519KeyPair;
  /** Key pair for a given 32-byte private key (copied). */
  keyPairFromSecret(secret: Uint8Array): X25519KeyPair;
  /**
   * Shared secret. @throws weak_public_key when the result is all zeros
   * (low-order peer key), invalid_type, invalid_length, key_wiped
   */
  dh(secretKey: SecretKey, publicKey: Uint8Array): SecretKey;
}

/** Argon2id cost parameters of {@link ParleyCrypto.pwhash}; both default to MODERATE. */
export interface PwhashOptions {
  /** Passes over memory, {@link PWHASH_OPSLIMIT_MIN}..{@link PWHASH_OPSLIMIT_MAX}. Default {@link PWHASH_OPSLIMIT_MODERATE}. */
  readonly opsLimit?: number;
  /** Memory in bytes, {@link PWHASH_MEMLIMIT_MIN}..{@link PWHASH_MEMLIMIT_MAX}, a multiple of 1024. Default {@link PWHASH_MEMLIMIT_MODERATE}. */
  readonly memLimit?: number;
  /** Output length, 16..64 bytes. Default 32. */
  readonly length?: number;
  /** Kind of the returned SecretKey. Default `'aead'` (a key that seals something at rest). */
  readonly kind?: SecretKey['kind'];
}

/** ChaCha20-Poly1305 IETF with the Noise nonce layout (4 zero bytes ‖ 64-bit little-endian counter). */
export interface AeadApi {
  /** The 12-byte nonce for a 64-bit counter (Noise §12.3). @throws invalid_type (not a bigint), invalid_value (outside 0..2^64−1) */
  nonce(counter: bigint): Uint8Array;
  /** Ciphertext ‖ 16-byte tag. */
  seal(key: SecretKey, counter: bigint, plaintext: Uint8Array, ad: Uint8Array): Uint8Array;
  /** Plaintext. @throws decrypt_failed when authentication fails */
  open(key: SecretKey, counter: bigint, ciphertext: Uint8Array, ad: Uint8Array): Uint8Array;
}

/**
 * XChaCha20-Poly1305 IETF (draft-irtf-cfrg-xchacha-03) with a fresh random
 * 24-byte nonce per message, for keys that seal many messages from several
 * writers or across restarts, where no counter can be kept unique: 192 random
 * bits make a repeated nonce negligible (birthday bound 2^96 messages per key),
 * and no crash can make a writer reuse one.
 */
export interface XAeadApi {
  /**
   * Seals with a nonce drawn from the OS CSPRNG.
   * @returns nonce (24) ‖ ciphertext ‖ tag (16)
   * @throws invalid_type, invalid_length (key not a 32-byte `aead` SecretKey, plaintext over 64 MiB), key_wiped
   */
  seal(key: SecretKey, plaintext: Uint8Array, ad: Uint8Array): Uint8Array;
  /**
   * Opens the output of {@link seal}.
   * @throws decrypt_failed (wrong key or associated data, tampered or truncated input)
   */
  open(key: SecretKey, sealed: Uint8Array, ad: Uint8Array): Uint8Array;
  /** {@link seal} with a caller-chosen nonce: ONLY for published and conformance vectors. */
  sealWithNonceForTestingOnly(key: SecretKey, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array;
}

/**
 * Anonymous public-key encryption to an Ed25519 identity: libsodium's sealed
 * box (`crypto_box_seal`: X25519 with a fresh ephemeral key, XSalsa20-Poly1305)
 * to the X25519 key converted from the recipient's Ed25519 public key
 * (`crypto_sign_ed25519_pk_to_curve25519`). Sealed boxes do not authenticate
 * the sender: sign what you seal.
 */
export interface SealedBoxApi {
  /**
   * @returns ephemeral public key (32) ‖ ciphertext ‖ tag (16)
   * @throws invalid_type, invalid_length, weak_public_key (a key libsodium will not convert)
   */
  seal(message: Uint8Array, recipientEd25519PublicKey: Uint8Array): Uint8Array;
  /**
   * Opens a sealed box with the recipient's Ed25519 identity secret key.
   * @throws decrypt_failed when it was not sealed to this key or was changed, key_wiped
   */
  open(sealed: Uint8Array, recipientEd25519SecretKey: SecretKey): Uint8Array;
  /** X25519 public key of an Ed25519 public key. @throws weak_public_key */
  x25519PublicKey(ed25519PublicKey: Uint8Array): Uint8Array;
  /** X25519 secret key of an Ed25519 secret key (a new SecretKey; wipe it after use). */
  x25519SecretKey(ed25519SecretKey: SecretKey): SecretKey;
  /** {@link seal} with a caller-chosen ephemeral X25519 secret: ONLY for conformance vectors. */
  sealWithEphemeralForTestingOnly(message: Uint8Array, recipientEd25519PublicKey: Uint8Array, ephemeralX25519Secret: Uint8Array): Uint8Array;
}

/** The synchronous crypto API returned by {@link createCrypto}. */
export interface ParleyCrypto {
  /**
   * Which backend serves each primitive, e.g. `{ ed25519: 'libsodium', aead: 'node', … }`. For `ed25519`
   * it names key generation and signing; verification is libsodium's in every backend choice.
   */
  readonly backends: Readonly<Record<PrimitiveName, string>>;
  readonly ed25519: Ed25519Api;
  readonly x25519: X25519Api;
  readonly aead: AeadApi;
  /** XChaCha20-Poly1305 with random nonces (libsodium, in every backend choice). */
  readonly xaead: XAeadApi;
  /** Sealed boxes to Ed25519 identities (libsodium, in every backend choice). */
  readonly sealedBox: SealedBoxApi;
  /** `length` bytes of OS randomness. */
  randomBytes(length: number): Uint8Array;
  /** A fresh random SecretKey of `length` bytes (default 32). @throws invalid_value for an unknown kind */
  randomKey(kind: SecretKey['kind'], length?: number): SecretKey;
  /** HMAC-SHA256 with a key of any length, of kind `mac` (or `generic`). @throws invalid_type for another kind */
  hmacSha256(key: SecretKey, data: Uint8Array): Uint8Array;
  /** HMAC-SHA256 of the concatenation of `parts` (the same tag as over the joined bytes, without joining them). */
  hmacSha256Parts(key: SecretKey, parts: readonly Uint8Array[]): Uint8Array;
  /** Constant-time check of a 32-byte HMAC-SHA256 tag; false on any malformed input. */
  hmacSha256Verify(key: SecretKey, data: Uint8Array, tag: Uint8Array): boolean;
  /** {@link hmacSha256Verify} over the concatenation of `parts`. */
  hmacSha256VerifyParts(key: SecretKey, parts: readonly Uint8Array[], tag: Uint8Array): boolean;
  /** HMAC (RFC 2104) over BLAKE2b-512, as Noise's HMAC-HASH uses it. 64 bytes. The key as {@link hmacSha256}'s. */
  hmacBlake2b(key: SecretKey, data: Uint8Array | SecretKey): Uint8Array;
  /** BLAKE2b with 1..64 output bytes (default 64) and an optional 16..64-byte key. */
  blake2b(data: Uint8Array, outLen?: number, key?: SecretKey): Uint8Array;
  /** SHA-256 (used only by Noise_*_SHA256 test vectors; Parley itself uses BLAKE2b inside Noise). */
  sha256(data: Uint8Array): Uint8Array;
  /** BLAKE3 hash (hash mode, 32 bytes). */
  blake3(data: Uint8Array): Uint8Array;
  /** BLAKE3 of the concatenation of `parts` (the same hash as over the joined bytes, without joining them). */
  blake3Parts(parts: readonly Uint8Array[]): Uint8Array;
  /** HKDF-SHA256 (RFC 5869), 1..8160 output bytes, info up to 1024 bytes. */
  hkdfSha256(ikm: Uint8Array | SecretKey, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array;
  /**
   * Argon2id v1.3 (RFC 9106) through libsodium's crypto_pwhash, in every backend:
   * a key derived from a passphrase, for sealing secrets at rest.
   * Deliberately slow (MODERATE: about 0.7 s and 256 MiB); call it once per unlock.
   * @throws invalid_type, invalid_length (salt not 16 bytes, password over 4096 bytes),
   *   invalid_value (a cost parameter out of range)
   */
  pwhash(password: Uint8Array, salt: Uint8Array, options?: PwhashOptions): SecretKey;
  /** Constant-time equality; false (not an error) when lengths differ. */
  constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean;
  /** Zeroes bytes (or a SecretKey) in place. */
  wipe(target: Uint8Array | SecretKey): void;
}

export type PrimitiveName = 'random' | 'ed25519' | 'x25519' | 'aead' | 'hmacSha256' | 'blake2b' | 'sha256' | 'blake3';

/**
 * Per-primitive choice for `auto`, from `npm run bench` on the reference
 * machine (figures in the package README): libsodium where it is faster or
 * where its keys can be wiped (Ed25519 and X25519 secret keys never become
 * OpenSSL KeyObjects, which cannot be zeroed), node:crypto for randomness
 * (libsodium-wrappers draws one JS call per byte), HMAC-SHA256 and SHA-256.
 * ChaCha20-Poly1305 is split by size: libsodium below AEAD_NATIVE_THRESHOLD
 * (per-call cipher objects make OpenSSL slower on small messages), OpenSSL above.
 */
type BackendPrimitive = Exclude<PrimitiveName, 'blake3'>;

const AUTO_CHOICE: Readonly<Record<BackendPrimitive, 'libsodium' | 'node'>> = {
  random: 'node',
  ed25519: 'libsodium',
  x25519: 'libsodium',
  aead: 'libsodium',
  hmacSha256: 'node',
  blake2b: 'libsodium',
  sha256: 'node',
};

/** `auto` with native libsodium: libsodium for every primitive it has but HMAC-SHA256 (which sodium-native lacks). */
const AUTO_CHOICE_NATIVE: Readonly<Record<BackendPrimitive, 'libsodium' | 'node'>> = {
  random: 'libsodium',
  ed25519: 'libsodium',
  x25519: 'libsodium',
  aead: 'libsodium',
  hmacSha256: 'node',
  blake2b: 'libsodium',
  sha256: 'libsodium',
};

const PRIMITIVES = Object.keys(AUTO_CHOICE) as BackendPrimitive[];

/** Whether Ed25519 verification inputs have the types and lengths a signature check needs (else: not valid). */
export function ed25519VerifyInputs(signature: unknown, message: unknown, publicKey: unknown): boolean {
  return (
    signature instanceof Uint8Array &&
    signature.length === ED25519_SIGNATURE_BYTES &&
    message instanceof Uint8Array &&
    publicKey instanceof Uint8Array &&
    publicKey.length === ED25519_PUBLIC_KEY_BYTES
  );
}

/**
 * The kinds of key the HMACs take: `mac`, and `generic` (untyped secret bytes, `SecretKey.from`'s default). In
 * this repository every HMAC key is a `mac` key (the session's per-epoch MAC key, Noise's chaining and temporary
 * keys, the registry's challenge key); `generic` is kept for keys wrapped without a kind (the client benchmark's).
 * A signing, DH or AEAD key is refused: a key has one use.
 */
const MAC_KEY_KINDS: readonly SecretKeyKind[] = Object.freeze(['mac', 'generic'] as const);

function toSecretBytes(value: Uint8Array | SecretKey, name: string): Uint8Array {
  return value instanceof SecretKey ? value.unsafeBytes() : abytes(value, name);
}

/**
 * Loads the backends (libsodium's WebAssembly, BLAKE3) and returns the
 * synchronous API. Call once at start-up and share the result.
 *
 * @example
 * const crypto = await createCrypto();
 * const { publicKey, secretKey } = crypto.ed25519.generateKeyPair();
 * const sig = crypto.ed25519.sign(new TextEncoder().encode('hi'), secretKey);
 * crypto.ed25519.verify(sig, new TextEncoder().encode('hi'), publicKey); // true
 */
export async function createCrypto(options: CreateCryptoOptions = {}): Promise<ParleyCrypto> {
  const choice = options.backend ?? 'auto';
  if (choice !== 'auto' && choice !== 'libsodium' && choice !== 'node') {
    throw new CryptoError('invalid_value', `backend must be 'auto', 'libsodium' or 'node'`);
  }
  const build = options.libsodium ?? 'auto';
  if (build !== 'auto' && build !== 'native' && build !== 'wasm') {
    throw new CryptoError('invalid_value', `libsodium must be 'auto', 'native' or 'wasm'`);
  }
  const [wasm, blake3] = await Promise.all([createSodiumBackend(), createBlake3()]);
  const nativeSodium = build === 'wasm' ? null : createSodiumNativeBackend(wasm);
  if (build === 'native' && nativeSodium === null) {
    throw new CryptoError('backend_failure', 'the native libsodium addon (sodium-native) is not available on this platform');
  }
  const sodium = nativeSodium ?? wasm;
  const openssl = createNodeBackend(sodium);
  const pick = (primitive: BackendPrimitive): CryptoBackend => {
    const name = choice === 'auto' ? (nativeSodium === null ? AUTO_CHOICE : AUTO_CHOICE_NATIVE)[primitive] : choice;
    return name === 'node' ? openssl : sodium;
  };
  const use = Object.fromEntries(PRIMITIVES.map((p) => [p, pick(p)])) as Record<BackendPrimitive, CryptoBackend>;
  // The WebAssembly build is slower than OpenSSL on large AEAD messages; the native one is not.
  if (choice === 'auto' && nativeSodium === null) use.aead = sizeSplitAead(wasm, openssl);
  return buildCrypto(use, blake3, sodium);
}

/** Messages of at least this many bytes use OpenSSL's ChaCha20-Poly1305 under `auto`. */
export const AEAD_NATIVE_THRESHOLD = 8 * 1024;

function sizeSplitAead(small: CryptoBackend, large: CryptoBackend): CryptoBackend {
  return {
    ...small,
    name: `${small.name}<${AEAD_NATIVE_THRESHOLD}B≤${large.name}`,
    aeadSeal: (k, n, pt, ad) => (pt.length < AEAD_NATIVE_THRESHOLD ? small : large).aeadSeal(k, n, pt, ad),
    aeadOpen: (k, n, ct, ad) => (ct.length < AEAD_NATIVE_THRESHOLD ? small : large).aeadOpen(k, n, ct, ad),
  };
}

function guard<T>(operation: string, fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    if (cause instanceof CryptoError) throw cause;
    // Never forward a library's message: it may echo inputs.
    throw new CryptoError('backend_failure', `${operation} failed in the crypto backend`);
  }
}

function buildCrypto(use: Record<BackendPrimitive, CryptoBackend>, blake3: Blake3, pw: PwhashBackend & SodiumOnlyBackend): ParleyCrypto {
  const randomBytes = (length: number): Uint8Array => {
    anumber(length, 'length', 0, 1 << 20);
    const out = new Uint8Array(length);
    if (length > 0) use.random.randomFill(out);
    return out;
  };

  const ed25519KeyPairFromSeed = (seed: Uint8Array): Ed25519KeyPair => {
    abytes(seed, 'seed', ED25519_SEED_BYTES);
    const kp = guard('ed25519 key generation', () => use.ed25519.ed25519KeyPairFromSeed(seed));
    return { publicKey: kp.publicKey, secretKey: SecretKey.adopt(kp.secretKey, 'ed25519') };
  };

  const x25519KeyPairFromSecret = (secret: Uint8Array): X25519KeyPair => {
    abytes(secret, 'secret', X25519_KEY_BYTES);
    const copy = new Uint8Array(secret);
    const publicKey = guard('x25519 key generation', () => use.x25519.x25519PublicKey(copy));
    return { publicKey, secretKey: SecretKey.adopt(copy, 'x25519') };
  };

  const nonce = (counter: bigint): Uint8Array => {
    // A bigint only, as typed: a number counter would silently lose precision above 2^53 in the caller's arithmetic.
    if (typeof counter !== 'bigint') throw new CryptoError('invalid_type', `counter must be a bigint, got ${describeType(counter)}`);
    const n = au64(counter, 'counter');
    const out = new Uint8Array(AEAD_NONCE_BYTES);
    new DataView(out.buffer).setBigUint64(4, n, true); // Noise §12.3: 32 zero bits ‖ LE64(n)
    return out;
  };

  const xaeadSeal = (key: SecretKey, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array => {
    const k = asecret(key, 'key', 'aead', AEAD_KEY_BYTES);
    abytesRange(plaintext, 'plaintext', 0, AEAD_MAX_PLAINTEXT_BYTES);
    abytes(ad, 'ad');
    const body = guard('xchacha20-poly1305 seal', () => pw.xchachaSeal(k, nonce, plaintext, ad));
    const out = new Uint8Array(XAEAD_NONCE_BYTES + body.length);
    out.set(nonce, 0);
    out.set(body, XAEAD_NONCE_BYTES);
    return out;
  };

  const x25519OfEd25519 = (ed25519PublicKey: Uint8Array): Uint8Array => {
    abytes(ed25519PublicKey, 'ed25519PublicKey', ED25519_PUBLIC_KEY_BYTES);
    const pk = guard('ed25519 to x25519', () => pw.ed25519PkToX25519(ed25519PublicKey));
    if (pk === null) throw new CryptoError('weak_public_key', 'Ed25519 public key is not a valid point of the main subgroup');
    return pk;
  };

  const hmacSha256 = (key: SecretKey, data: Uint8Array): Uint8Array => {
    const k = asecret(key, 'key', MAC_KEY_KINDS);
    abytes(data, 'data');
    return guard('hmac-sha256', () => use.hmacSha256.hmacSha256(k, data));
  };

  const aparts = (parts: readonly Uint8Array[], name: string): readonly Uint8Array[] => {
    if (!Array.isArray(parts)) throw new CryptoError('invalid_type', `${name} must be an array of Uint8Array`);
    for (const part of parts) abytes(part, name);
    return parts;
  };

  const hmacSha256Parts = (key: SecretKey, parts: readonly Uint8Array[]): Uint8Array => {
    const k = asecret(key, 'key', MAC_KEY_KINDS);
    aparts(parts, 'parts');
    return guard('hmac-sha256', () => use.hmacSha256.hmacSha256(k, parts));
  };

  const verifyTag = (expected: Uint8Array, tag: Uint8Array): boolean => {
    try {
      return nodeCrypto.timingSafeEqual(expected, tag);
    } finally {
      expected.fill(0);
    }
  };

  const constantTimeEqual = (a: Uint8Array, b: Uint8Array): boolean => {
    abytes(a, 'a');
    abytes(b, 'b');
    if (a.length !== b.length) return false;
    return nodeCrypto.timingSafeEqual(a, b);
  };

  const wipe = (target: Uint8Array | SecretKey): void => {
    if (target instanceof SecretKey) target.wipe();
    else use.random.wipe(abytes(target, 'target'));
  };

  return Object.freeze({
    backends: Object.freeze(
      Object.fromEntries([...PRIMITIVES.map((p) => [p, use[p].name]), ['blake3', blake3.name]]),
    ) as Record<PrimitiveName, string>,
    ed25519: Object.freeze({
      generateKeyPair(): Ed25519KeyPair {
        const seed = randomBytes(ED25519_SEED_BYTES);
        try {
          return ed25519KeyPairFromSeed(seed);
        } finally {
          seed.fill(0);
        }
      },
      keyPairFromSeed: ed25519KeyPairFromSeed,
      exportSeed(secretKey: SecretKey): Uint8Array {
        return asecret(secretKey, 'secretKey', 'ed25519', ED25519_SECRET_KEY_BYTES).slice(0, ED25519_SEED_BYTES);
      },
      sign(message: Uint8Array, secretKey: SecretKey): Uint8Array {
        abytes(message, 'message');
        const sk = asecret(secretKey, 'secretKey', 'ed25519', ED25519_SECRET_KEY_BYTES);
        return guard('ed25519 sign', () => use.ed25519.ed25519Sign(message, sk));
      },
      verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
        if (!ed25519VerifyInputs(signature, message, publicKey)) return false;
        try {
          // libsodium in every backend choice: OpenSSL accepts small-order A and R (SodiumOnlyBackend).
          return pw.ed25519Verify(signature, message, publicKey);
        } catch {
          return false;
        }
      },
    }),
    x25519: Object.freeze({
      generateKeyPair(): X25519KeyPair {
        const secret = randomBytes(X25519_KEY_BYTES);
        try {
          return x25519KeyPairFromSecret(secret);
        } finally {
          secret.fill(0);
        }
      },
      keyPairFromSecret: x25519KeyPairFromSecret,
      dh(secretKey: SecretKey, publicKey: Uint8Array): SecretKey {
        const sk = asecret(secretKey, 'secretKey', 'x25519', X25519_KEY_BYTES);
        abytes(publicKey, 'publicKey', X25519_KEY_BYTES);
        const shared = guard('x25519', () => use.x25519.x25519(sk, publicKey));
        if (shared === null) {
          throw new CryptoError('weak_public_key', 'x25519 produced the all-zero shared secret (low-order public key)');
        }
        return SecretKey.adopt(shared, 'generic');
      },
    }),
    aead: Object.freeze({
      nonce,
      seal(key: SecretKey, counter: bigint, plaintext: Uint8Array, ad: Uint8Array): Uint8Array {
        const k = asecret(key, 'key', 'aead', AEAD_KEY_BYTES);
        const n = nonce(counter);
        abytesRange(plaintext, 'plaintext', 0, AEAD_MAX_PLAINTEXT_BYTES);
        abytes(ad, 'ad');
        return guard('aead seal', () => use.aead.aeadSeal(k, n, plaintext, ad));
      },
      open(key: SecretKey, counter: bigint, ciphertext: Uint8Array, ad: Uint8Array): Uint8Array {
        const k = asecret(key, 'key', 'aead', AEAD_KEY_BYTES);
        const n = nonce(counter);
        abytesRange(ciphertext, 'ciphertext', AEAD_TAG_BYTES, AEAD_MAX_PLAINTEXT_BYTES + AEAD_TAG_BYTES);
        abytes(ad, 'ad');
        const plain = guard('aead open', () => use.aead.aeadOpen(k, n, ciphertext, ad));
        if (plain === null) throw new CryptoError('decrypt_failed', 'authentication failed');
        return plain;
      },
    }),
    xaead: Object.freeze({
      seal(key: SecretKey, plaintext: Uint8Array, ad: Uint8Array): Uint8Array {
        return xaeadSeal(key, randomBytes(XAEAD_NONCE_BYTES), plaintext, ad);
      },
      open(key: SecretKey, sealed: Uint8Array, ad: Uint8Array): Uint8Array {
        const k = asecret(key, 'key', 'aead', AEAD_KEY_BYTES);
        abytesRange(sealed, 'sealed', XAEAD_OVERHEAD_BYTES, AEAD_MAX_PLAINTEXT_BYTES + XAEAD_OVERHEAD_BYTES);
        abytes(ad, 'ad');
        const n = sealed.subarray(0, XAEAD_NONCE_BYTES);
        const body = sealed.subarray(XAEAD_NONCE_BYTES);
        const plain = guard('xchacha20-poly1305 open', () => pw.xchachaOpen(k, n, body, ad));
        if (plain === null) throw new CryptoError('decrypt_failed', 'authentication failed');
        return plain;
      },
      sealWithNonceForTestingOnly(key: SecretKey, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array {
        return xaeadSeal(key, abytes(nonce, 'nonce', XAEAD_NONCE_BYTES), plaintext, ad);
      },
    }),
    sealedBox: Object.freeze({
      seal(message: Uint8Array, recipientEd25519PublicKey: Uint8Array): Uint8Array {
        abytesRange(message, 'message', 0, AEAD_MAX_PLAINTEXT_BYTES);
        const pk = x25519OfEd25519(recipientEd25519PublicKey);
        return guard('sealed box', () => pw.boxSeal(message, pk));
      },
      open(sealed: Uint8Array, recipientEd25519SecretKey: SecretKey): Uint8Array {
        abytesRange(sealed, 'sealed', SEALED_BOX_OVERHEAD_BYTES, AEAD_MAX_PLAINTEXT_BYTES + SEALED_BOX_OVERHEAD_BYTES);
        const edSk = asecret(recipientEd25519SecretKey, 'recipientEd25519SecretKey', 'ed25519', ED25519_SECRET_KEY_BYTES);
        const sk = guard('ed25519 to x25519', () => pw.ed25519SkToX25519(edSk));
        try {
          const pk = guard('x25519 public key', () => use.x25519.x25519PublicKey(sk));
          const plain = guard('sealed box open', () => pw.boxSealOpen(sealed, pk, sk));
          if (plain === null) throw new CryptoError('decrypt_failed', 'sealed box does not open with this key');
          return plain;
        } finally {
          sk.fill(0);
        }
      },
      x25519PublicKey: x25519OfEd25519,
      x25519SecretKey(ed25519SecretKey: SecretKey): SecretKey {
        const edSk = asecret(ed25519SecretKey, 'ed25519SecretKey', 'ed25519', ED25519_SECRET_KEY_BYTES);
        return SecretKey.adopt(guard('ed25519 to x25519', () => pw.ed25519SkToX25519(edSk)), 'x25519');
      },
      sealWithEphemeralForTestingOnly(message: Uint8Array, recipientEd25519PublicKey: Uint8Array, ephemeralX25519Secret: Uint8Array): Uint8Array {
        abytesRange(message, 'message', 0, AEAD_MAX_PLAINTEXT_BYTES);
        abytes(ephemeralX25519Secret, 'ephemeralX25519Secret', X25519_KEY_BYTES);
        const pk = x25519OfEd25519(recipientEd25519PublicKey);
        return guard('sealed box', () => pw.boxSealWithEphemeral(message, pk, ephemeralX25519Secret));
      },
    }),
    randomBytes,
    randomKey(kind: SecretKey['kind'], length = 32): SecretKey {
      assertKeyKind(kind, 'kind');
      anumber(length, 'length', 16, 1024);
      return SecretKey.adopt(randomBytes(length), kind);
    },
    hmacSha256,
    hmacSha256Parts,
    hmacSha256Verify(key: SecretKey, data: Uint8Array, tag: Uint8Array): boolean {
      if (!(tag instanceof Uint8Array) || tag.length !== HMAC_SHA256_BYTES) return false;
      return verifyTag(hmacSha256(key, data), tag);
    },
    hmacSha256VerifyParts(key: SecretKey, parts: readonly Uint8Array[], tag: Uint8Array): boolean {
      if (!(tag instanceof Uint8Array) || tag.length !== HMAC_SHA256_BYTES) return false;
      return verifyTag(hmacSha256Parts(key, parts), tag);
    },
    hmacBlake2b(key: SecretKey, data: Uint8Array | SecretKey): Uint8Array {
      // libsodium has keyed BLAKE2b but not HMAC-BLAKE2b, which Noise's HMAC-HASH
      // requires (Noise §4.3); OpenSSL provides it, in every backend.
      const k = asecret(key, 'key', MAC_KEY_KINDS);
      const d = toSecretBytes(data, 'data');
      return guard('hmac-blake2b', () => {
        const digest = nodeCrypto.createHmac('blake2b512', k).update(d).digest();
        const out = new Uint8Array(digest);
        digest.fill(0);
        return out;
      });
    },
    blake2b(data: Uint8Array, outLen = BLAKE2B_BYTES, key?: SecretKey): Uint8Array {
      abytes(data, 'data');
      anumber(outLen, 'outLen', 1, 64);
      const k = key === undefined ? undefined : asecret(key, 'key', 'any');
      if (k !== undefined && (k.length < 16 || k.length > 64)) {
        throw new CryptoError('invalid_length', `key must be 16..64 bytes, got ${k.length}`);
      }
      return guard('blake2b', () => use.blake2b.blake2b(data, outLen, k));
    },
    sha256(data: Uint8Array): Uint8Array {
      abytes(data, 'data');
      return guard('sha256', () => use.sha256.sha256(data));
    },
    blake3(data: Uint8Array): Uint8Array {
      abytes(data, 'data');
      return guard('blake3', () => blake3.hash(data));
    },
    blake3Parts(parts: readonly Uint8Array[]): Uint8Array {
      aparts(parts, 'parts');
      return guard('blake3', () => blake3.hashParts(parts));
    },
    hkdfSha256(ikm: Uint8Array | SecretKey, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array {
      const ikmBytes = toSecretBytes(ikm, 'ikm');
      abytes(salt, 'salt');
      abytesRange(info, 'info', 0, 1024);
      anumber(length, 'length', 1, 255 * HMAC_SHA256_BYTES);
      // libsodium-wrappers does not export libsodium's crypto_kdf_hkdf_sha256_*;
      // OpenSSL's HKDF (RFC 5869) serves it, in every backend.
      return guard('hkdf-sha256', () => new Uint8Array(nodeCrypto.hkdfSync('sha256', ikmBytes, salt, info, length)));
    },
    pwhash(password: Uint8Array, salt: Uint8Array, options: PwhashOptions = {}): SecretKey {
      abytesRange(password, 'password', 0, PWHASH_MAX_PASSWORD_BYTES);
      abytes(salt, 'salt', PWHASH_SALT_BYTES);
      if (typeof options !== 'object' || options === null) throw new CryptoError('invalid_type', 'options must be an object');
      const opsLimit = anumber(options.opsLimit ?? PWHASH_OPSLIMIT_MODERATE, 'opsLimit', PWHASH_OPSLIMIT_MIN, PWHASH_OPSLIMIT_MAX);
      const memLimit = anumber(options.memLimit ?? PWHASH_MEMLIMIT_MODERATE, 'memLimit', PWHASH_MEMLIMIT_MIN, PWHASH_MEMLIMIT_MAX);
      if (memLimit % 1024 !== 0) throw new CryptoError('invalid_value', 'memLimit must be a multiple of 1024');
      const length = anumber(options.length ?? 32, 'length', 16, 64);
      const kind = assertKeyKind(options.kind ?? 'aead', 'kind');
      const key = guard('argon2id', () => pw.pwhashArgon2id(length, password, salt, opsLimit, memLimit));
      return SecretKey.adopt(key, kind);
    },
    constantTimeEqual,
    wipe,
  });
}
