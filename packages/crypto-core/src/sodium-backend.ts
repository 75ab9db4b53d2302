/**
 * libsodium backend (libsodium-wrappers-sumo: the full build, which has
 * HMAC-SHA256). Everything after `createSodiumBackend()` is synchronous.
 */
import sodiumModule from 'libsodium-wrappers-sumo';
import type { CryptoBackend, PwhashBackend, SodiumOnlyBackend } from './backend.js';

type Sodium = typeof sodiumModule;

let ready: Promise<Sodium> | undefined;

/** Waits for libsodium's WebAssembly to load, once per process. */
export function loadSodium(): Promise<Sodium> {
  ready ??= sodiumModule.ready.then(() => sodiumModule);
  return ready;
}

/** Creates the libsodium backend (which also serves password hashing). */
export async function createSodiumBackend(): Promise<CryptoBackend & PwhashBackend & SodiumOnlyBackend> {
  const sodium = await loadSodium();
  return {
    name: 'libsodium',
    randomFill(out) {
      out.set(sodium.randombytes_buf(out.length));
    },
    ed25519KeyPairFromSeed(seed) {
      const kp = sodium.crypto_sign_seed_keypair(seed);
      return { publicKey: kp.publicKey, secretKey: kp.privateKey };
    },
    ed25519Sign(message, secretKey) {
      return sodium.crypto_sign_detached(message, secretKey);
    },
    ed25519Verify(signature, message, publicKey) {
      try {
        return sodium.crypto_sign_verify_detached(signature, message, publicKey);
      } catch {
        return false;
      }
    },
    x25519PublicKey(secretKey) {
      return sodium.crypto_scalarmult_base(secretKey);
    },
    x25519(secretKey, publicKey) {
      try {
        // libsodium returns -1 (the wrapper throws) when the result is all zeros.
        return sodium.crypto_scalarmult(secretKey, publicKey);
      } catch {
        return null;
      }
    },
    aeadSeal(key, nonce, plaintext, ad) {
      return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key);
    },
    aeadOpen(key, nonce, ciphertext, ad) {
      try {
        return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(null, ciphertext, ad, nonce, key);
      } catch {
        return null;
      }
    },
    hmacSha256(key, data) {
      // crypto_auth_hmacsha256 takes a 32-byte key; the streaming API takes any
      // length (longer keys are hashed first, as RFC 2104 requires).
      if (data instanceof Uint8Array && key.length === sodium.crypto_auth_hmacsha256_KEYBYTES) return sodium.crypto_auth_hmacsha256(data, key);
      const state = sodium.crypto_auth_hmacsha256_init(key);
      if (data instanceof Uint8Array) sodium.crypto_auth_hmacsha256_update(state, data);
      else for (const part of data) sodium.crypto_auth_hmacsha256_update(state, part);
      return sodium.crypto_auth_hmacsha256_final(state);
    },
    blake2b(data, outLen, key) {
      return sodium.crypto_generichash(outLen, data, key ?? null);
    },
    sha256(data) {
      return sodium.crypto_hash_sha256(data);
    },
    wipe(bytes) {
      sodium.memzero(bytes);
    },
    pwhashArgon2id(outLen, password, salt, opsLimit, memLimit) {
      return sodium.crypto_pwhash(outLen, password, salt, opsLimit, memLimit, sodium.crypto_pwhash_ALG_ARGON2ID13);
    },
    xchachaSeal(key, nonce, plaintext, ad) {
      return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key);
    },
    xchachaOpen(key, nonce, ciphertext, ad) {
      try {
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, ciphertext, ad, nonce, key);
      } catch {
        return null;
      }
    },
    ed25519PkToX25519(publicKey) {
      try {
        return sodium.crypto_sign_ed25519_pk_to_curve25519(publicKey);
      } catch {
        return null;
      }
    },
    ed25519SkToX25519(secretKey) {
      return sodium.crypto_sign_ed25519_sk_to_curve25519(secretKey);
    },
    boxSeal(message, publicKey) {
      return sodium.crypto_box_seal(message, publicKey);
    },
    boxSealOpen(sealed, publicKey, secretKey) {
      try {
        return sodium.crypto_box_seal_open(sealed, publicKey, secretKey);
      } catch {
        return null;
      }
    },
    boxSealWithEphemeral(message, publicKey, ephemeralSecretKey) {
      // libsodium's crypto_box_seal (crypto_box/crypto_box_seal.c), with the ephemeral key given.
      const epk = sodium.crypto_scalarmult_base(ephemeralSecretKey);
      const nonceInput = new Uint8Array(64);
      nonceInput.set(epk, 0);
      nonceInput.set(publicKey, 32);
      const nonce = sodium.crypto_generichash(sodium.crypto_box_NONCEBYTES, nonceInput, null);
      const boxed = sodium.crypto_box_easy(message, nonce, publicKey, ephemeralSecretKey);
      const out = new Uint8Array(32 + boxed.length);
      out.set(epk, 0);
      out.set(boxed, 32);
      return out;
    },
  };
}
