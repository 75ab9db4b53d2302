/**
 * libsodium, native: the `sodium-native` N-API addon (libsodium compiled for
 * the platform, prebuilt binaries shipped in the package), 2–4× faster than
 * the WebAssembly build on Ed25519, X25519 and ChaCha20-Poly1305 and with no
 * copy across a WebAssembly heap. Same library, same primitives, same
 * behaviour on every input as ./sodium-backend.ts; loaded when the platform
 * has a prebuilt binary, otherwise crypto-core stays on the WebAssembly build.
 *
 * sodium-native has no HMAC-SHA256 and no `crypto_box_easy`: those two come
 * from the WebAssembly build given to the constructor (HMAC-SHA256 is served
 * by OpenSSL under `auto`; `boxSealWithEphemeral` exists for vectors only).
 */
import { createRequire } from 'node:module';
import type { CryptoBackend, PwhashBackend, SodiumOnlyBackend } from './backend.js';

type Full = CryptoBackend & PwhashBackend & SodiumOnlyBackend;
type Bytes = Uint8Array;

/** The subset of sodium-native's API crypto-core calls (outputs are caller-allocated). */
interface SodiumNative {
  randombytes_buf(out: Bytes): void;
  sodium_memzero(buf: Bytes): void;
  crypto_sign_seed_keypair(pk: Bytes, sk: Bytes, seed: Bytes): void;
  crypto_sign_detached(sig: Bytes, message: Bytes, sk: Bytes): void;
  crypto_sign_verify_detached(sig: Bytes, message: Bytes, pk: Bytes): boolean;
  crypto_scalarmult_base(q: Bytes, n: Bytes): void;
  crypto_scalarmult(q: Bytes, n: Bytes, p: Bytes): void;
  crypto_aead_chacha20poly1305_ietf_encrypt(c: Bytes, m: Bytes, ad: Bytes | null, nsec: null, npub: Bytes, k: Bytes): number;
  crypto_aead_chacha20poly1305_ietf_decrypt(m: Bytes, nsec: null, c: Bytes, ad: Bytes | null, npub: Bytes, k: Bytes): number;
  crypto_aead_xchacha20poly1305_ietf_encrypt(c: Bytes, m: Bytes, ad: Bytes | null, nsec: null, npub: Bytes, k: Bytes): number;
  crypto_aead_xchacha20poly1305_ietf_decrypt(m: Bytes, nsec: null, c: Bytes, ad: Bytes | null, npub: Bytes, k: Bytes): number;
  crypto_generichash(out: Bytes, data: Bytes, key?: Bytes): void;
  crypto_hash_sha256(out: Bytes, data: Bytes): void;
  crypto_pwhash(out: Bytes, password: Bytes, salt: Bytes, opsLimit: number, memLimit: number, alg: number): void;
  crypto_pwhash_ALG_ARGON2ID13: number;
  crypto_sign_ed25519_pk_to_curve25519(x: Bytes, ed: Bytes): void;
  crypto_sign_ed25519_sk_to_curve25519(x: Bytes, ed: Bytes): void;
  crypto_box_seal(c: Bytes, m: Bytes, pk: Bytes): void;
  crypto_box_seal_open(m: Bytes, c: Bytes, pk: Bytes, sk: Bytes): boolean;
}

const TAG = 16;
const SEAL_OVERHEAD = 48;

let loaded: SodiumNative | null | undefined;

/** sodium-native, or null when this platform has no prebuilt binary (or it fails to load). */
export function loadSodiumNative(): SodiumNative | null {
  if (loaded !== undefined) return loaded;
  try {
    loaded = createRequire(import.meta.url)('sodium-native') as SodiumNative;
  } catch {
    loaded = null;
  }
  return loaded;
}

/** Runs a libsodium call that signals failure by throwing; null on failure. */
function orNull<T>(fn: () => T): T | null {
  try {
    return fn();
  } catch {
    return null;
  }
}

/** The native libsodium backend, or null when the addon is unavailable. `wasm` serves what the addon lacks. */
export function createSodiumNativeBackend(wasm: Full): Full | null {
  const s = loadSodiumNative();
  if (s === null) return null;
  return {
    name: 'libsodium-native',
    randomFill(out) {
      s.randombytes_buf(out);
    },
    ed25519KeyPairFromSeed(seed) {
      const publicKey = new Uint8Array(32);
      const secretKey = new Uint8Array(64);
      s.crypto_sign_seed_keypair(publicKey, secretKey, seed);
      return { publicKey, secretKey };
    },
    ed25519Sign(message, secretKey) {
      const sig = new Uint8Array(64);
      s.crypto_sign_detached(sig, message, secretKey);
      return sig;
    },
    ed25519Verify(signature, message, publicKey) {
      return orNull(() => s.crypto_sign_verify_detached(signature, message, publicKey)) === true;
    },
    x25519PublicKey(secretKey) {
      const q = new Uint8Array(32);
      s.crypto_scalarmult_base(q, secretKey);
      return q;
    },
    x25519(secretKey, publicKey) {
      // libsodium returns -1 (the addon throws) when the result is all zeros.
      const q = new Uint8Array(32);
      return orNull(() => s.crypto_scalarmult(q, secretKey, publicKey)) === null ? null : q;
    },
    aeadSeal(key, nonce, plaintext, ad) {
      const out = new Uint8Array(plaintext.length + TAG);
      s.crypto_aead_chacha20poly1305_ietf_encrypt(out, plaintext, ad, null, nonce, key);
      return out;
    },
    aeadOpen(key, nonce, ciphertext, ad) {
      if (ciphertext.length < TAG) return null;
      const out = new Uint8Array(ciphertext.length - TAG);
      return orNull(() => s.crypto_aead_chacha20poly1305_ietf_decrypt(out, null, ciphertext, ad, nonce, key)) === null ? null : out;
    },
    hmacSha256: (key, data) => wasm.hmacSha256(key, data),
    blake2b(data, outLen, key) {
      const out = new Uint8Array(outLen);
      if (key === undefined) s.crypto_generichash(out, data);
      else s.crypto_generichash(out, data, key);
      return out;
    },
    sha256(data) {
      const out = new Uint8Array(32);
      s.crypto_hash_sha256(out, data);
      return out;
    },
    wipe(bytes) {
      s.sodium_memzero(bytes);
    },
    pwhashArgon2id(outLen, password, salt, opsLimit, memLimit) {
      const out = new Uint8Array(outLen);
      s.crypto_pwhash(out, password, salt, opsLimit, memLimit, s.crypto_pwhash_ALG_ARGON2ID13);
      return out;
    },
    xchachaSeal(key, nonce, plaintext, ad) {
      const out = new Uint8Array(plaintext.length + TAG);
      s.crypto_aead_xchacha20poly1305_ietf_encrypt(out, plaintext, ad, null, nonce, key);
      return out;
    },
    xchachaOpen(key, nonce, ciphertext, ad) {
      if (ciphertext.length < TAG) return null;
      const out = new Uint8Array(ciphertext.length - TAG);
      return orNull(() => s.crypto_aead_xchacha20poly1305_ietf_decrypt(out, null, ciphertext, ad, nonce, key)) === null ? null : out;
    },
    ed25519PkToX25519(publicKey) {
      const out = new Uint8Array(32);
      return orNull(() => s.crypto_sign_ed25519_pk_to_curve25519(out, publicKey)) === null ? null : out;
    },
    ed25519SkToX25519(secretKey) {
      const out = new Uint8Array(32);
      s.crypto_sign_ed25519_sk_to_curve25519(out, secretKey);
      return out;
    },
    boxSeal(message, publicKey) {
      const out = new Uint8Array(message.length + SEAL_OVERHEAD);
      s.crypto_box_seal(out, message, publicKey);
      return out;
    },
    boxSealOpen(sealed, publicKey, secretKey) {
      if (sealed.length < SEAL_OVERHEAD) return null;
      const out = new Uint8Array(sealed.length - SEAL_OVERHEAD);
      return orNull(() => s.crypto_box_seal_open(out, sealed, publicKey, secretKey)) === true ? out : null;
    },
    boxSealWithEphemeral: (message, publicKey, esk) => wasm.boxSealWithEphemeral(message, publicKey, esk),
  };
}
