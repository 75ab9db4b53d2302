/**
 * Noise CipherState (Noise spec rev. 34, §5.1) for ChaChaPoly (§12.3), plus
 * REKEY (§4.2, §11.3). Explicit-nonce helpers (`encryptAt`/`decryptAt`) are the
 * spec's SetNonce followed by EncryptWithAd/DecryptWithAd, without touching n.
 */
import { SecretKey, type ParleyCrypto } from '@parley/crypto-core';
import { SessionError } from '../errors.js';

/** 2^64 - 1: the nonce Noise reserves (§5.1) and REKEY uses (§4.2). */
export const MAX_NONCE = (1n << 64n) - 1n;
const ZEROS_32 = new Uint8Array(32);
const EMPTY = new Uint8Array(0);

export class CipherState {
  #k: SecretKey | undefined;
  #n = 0n;
  readonly #crypto: ParleyCrypto;

  constructor(crypto: ParleyCrypto, key?: SecretKey) {
    this.#crypto = crypto;
    this.#k = key;
  }

  /** InitializeKey(key): k = key, n = 0. Takes ownership of `key`. */
  initializeKey(key: SecretKey | undefined): void {
    this.#k?.wipe();
    this.#k = key;
    this.#n = 0n;
  }

  hasKey(): boolean {
    return this.#k !== undefined;
  }

  /** SetNonce(nonce). */
  setNonce(nonce: bigint): void {
    this.#n = nonce;
  }

  get nonce(): bigint {
    return this.#n;
  }

  /** EncryptWithAd(ad, plaintext): encrypts at n and increments n. */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.#k === undefined) return plaintext.slice();
    // §5.1: n = 2^64-1 is reserved; exhausting it is an error.
    if (this.#n >= MAX_NONCE) throw new SessionError('nonce_exhausted', 'cipher nonce exhausted');
    const out = this.#crypto.aead.seal(this.#k, this.#n, plaintext, ad);
    this.#n += 1n;
    return out;
  }

  /** DecryptWithAd(ad, ciphertext): on failure n is unchanged (§5.1). */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.#k === undefined) return ciphertext.slice();
    if (this.#n >= MAX_NONCE) throw new SessionError('nonce_exhausted', 'cipher nonce exhausted');
    const out = this.#open(this.#n, ad, ciphertext);
    this.#n += 1n;
    return out;
  }

  /** ENCRYPT(k, nonce, ad, plaintext) at an explicit nonce; n is not touched. */
  encryptAt(nonce: bigint, ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    return this.#crypto.aead.seal(this.#key(), nonce, plaintext, ad);
  }

  /** DECRYPT(k, nonce, ad, ciphertext) at an explicit nonce; n is not touched. */
  decryptAt(nonce: bigint, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    return this.#open(nonce, ad, ciphertext);
  }

  /** Rekey(): k = REKEY(k) = first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, zeros). n is unchanged (§11.3). */
  rekey(): void {
    this.initializeKeyKeepNonce(this.#rekeyKey());
  }

  /** A new CipherState holding REKEY(k), leaving this one untouched. */
  rekeyed(): CipherState {
    return new CipherState(this.#crypto, this.#rekeyKey());
  }

  /** Wipes the key. The state can no longer encrypt. */
  wipe(): void {
    this.#k?.wipe();
    this.#k = undefined;
  }

  /** The key itself, for sealed state export (loud name on purpose). */
  unsafeKey(): SecretKey | undefined {
    return this.#k;
  }

  toString(): string {
    return `CipherState(${this.#k === undefined ? 'empty' : 'keyed'}, n=${this.#n})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  private initializeKeyKeepNonce(key: SecretKey): void {
    this.#k?.wipe();
    this.#k = key;
  }

  /** REKEY(k) (§4.2) as a new key; the 48-byte ENCRYPT output it is cut from (k(e+1) ‖ tag) is wiped. */
  #rekeyKey(): SecretKey {
    const block = this.#crypto.aead.seal(this.#key(), MAX_NONCE, ZEROS_32, EMPTY);
    try {
      return SecretKey.adopt(block.slice(0, 32), 'aead');
    } finally {
      this.#crypto.wipe(block);
    }
  }

  #key(): SecretKey {
    if (this.#k === undefined) throw new SessionError('handshake_failed', 'cipher state has no key');
    return this.#k;
  }

  #open(nonce: bigint, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    try {
      return this.#crypto.aead.open(this.#key(), nonce, ciphertext, ad);
    } catch (cause) {
      throw new SessionError('decrypt_failed', 'authenticated decryption failed', { cause });
    }
  }
}
