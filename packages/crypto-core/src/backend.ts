/**
 * The provider interface behind crypto-core (after js-libp2p-noise's injectable
 * crypto): a small set of raw primitives over already-validated byte arrays.
 * Two implementations exist — libsodium (libsodium-wrappers-sumo) and native
 * (node:crypto / OpenSSL) — and one test suite runs against both.
 *
 * Backends never validate and never throw library messages outward: the facade
 * in crypto.ts validates every input first and maps every failure to a
 * CryptoError.
 */

/** Raw primitive operations. All keys are raw bytes here; the facade owns SecretKey handling. */
export interface CryptoBackend {
  /** Backend name, for diagnostics and benchmarks. */
  readonly name: string;
  /** Fills `out` with cryptographically secure random bytes. */
  randomFill(out: Uint8Array): void;
  /** Ed25519 key pair from a 32-byte seed: secretKey is libsodium's 64-byte seed‖publicKey. */
  ed25519KeyPairFromSeed(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array };
  /** Ed25519 (RFC 8032, pure) signature of `message` with a 64-byte seed‖pk secret key. */
  ed25519Sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array;
  /** X25519 public key for a 32-byte private scalar (RFC 7748). */
  x25519PublicKey(secretKey: Uint8Array): Uint8Array;
  /** X25519 shared secret, or null when it is all zeros (low-order peer key). */
  x25519(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array | null;
  /** ChaCha20-Poly1305 IETF (RFC 8439) seal: ciphertext ‖ 16-byte tag. */
  aeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array;
  /** ChaCha20-Poly1305 IETF open; null when authentication fails. */
  aeadOpen(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): Uint8Array | null;
  /** HMAC-SHA256 (RFC 2104 / FIPS 198-1) of `data`, or of the concatenation of its parts. */
  hmacSha256(key: Uint8Array, data: Uint8Array | readonly Uint8Array[]): Uint8Array;
  /** BLAKE2b (RFC 7693) with 1..64 output bytes and an optional 16..64-byte key. */
  blake2b(data: Uint8Array, outLen: number, key: Uint8Array | undefined): Uint8Array;
  /** SHA-256 (FIPS 180-4). */
  sha256(data: Uint8Array): Uint8Array;
  /** Wipes a buffer (sodium_memzero or fill(0)). */
  wipe(bytes: Uint8Array): void;
}

/**
 * Password hashing (Argon2id, RFC 9106). Only libsodium has it (node:crypto
 * gains Argon2 in Node 24), so it is served by libsodium in every backend
 * choice, the way HMAC-BLAKE2b is served by OpenSSL in every one.
 */
export interface PwhashBackend {
  /** Argon2id v1.3 via crypto_pwhash: `outLen` bytes from password and 16-byte salt. */
  pwhashArgon2id(outLen: number, password: Uint8Array, salt: Uint8Array, opsLimit: number, memLimit: number): Uint8Array;
}

/**
 * Primitives only libsodium has: XChaCha20-Poly1305 (24-byte random nonces),
 * the Ed25519 → X25519 key conversion and sealed boxes (`crypto_box_seal`).
 * node:crypto has none of them, so libsodium serves them in every backend
 * choice, the way it serves password hashing. Ed25519 verification is here too:
 * node:crypto has it, but with other acceptance rules (below).
 */
export interface SodiumOnlyBackend {
  /**
   * Ed25519 verification (`crypto_sign_verify_detached`); false on any malformed input. libsodium's, in
   * every backend choice: it refuses a small-order or non-canonical public key or R and a non-canonical S,
   * where OpenSSL accepts the small-order forgery (A = R = identity, S = 0) for every message.
   */
  ed25519Verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
  /** XChaCha20-Poly1305 IETF (draft-irtf-cfrg-xchacha) seal: ciphertext ‖ 16-byte tag. */
  xchachaSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array;
  /** XChaCha20-Poly1305 IETF open; null when authentication fails. */
  xchachaOpen(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): Uint8Array | null;
  /** `crypto_sign_ed25519_pk_to_curve25519`; null for a point libsodium refuses (not on the curve, small order). */
  ed25519PkToX25519(publicKey: Uint8Array): Uint8Array | null;
  /** `crypto_sign_ed25519_sk_to_curve25519` of a 64-byte seed‖pk secret key. */
  ed25519SkToX25519(secretKey: Uint8Array): Uint8Array;
  /** `crypto_box_seal`: ephemeral X25519 public key ‖ crypto_box(message) — 48 bytes of overhead. */
  boxSeal(message: Uint8Array, publicKey: Uint8Array): Uint8Array;
  /** `crypto_box_seal_open`; null when it does not open. */
  boxSealOpen(sealed: Uint8Array, publicKey: Uint8Array, secretKey: Uint8Array): Uint8Array | null;
  /**
   * The `crypto_box_seal` construction with a given ephemeral secret key (libsodium
   * picks it at random): epk ‖ crypto_box_easy(m, BLAKE2b-192(epk ‖ pk), pk, esk).
   * Conformance vectors only; `boxSealOpen` opens its output.
   */
  boxSealWithEphemeral(message: Uint8Array, publicKey: Uint8Array, ephemeralSecretKey: Uint8Array): Uint8Array;
}
