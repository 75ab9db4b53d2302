/**
 * Noise SymmetricState (Noise spec rev. 34, §5.2) and HKDF (§4.3).
 */
import { SecretKey, concatBytes, type ParleyCrypto } from '@parley/crypto-core';
import { assertCrypto, check } from '../assert.js';
import { CipherState } from './cipher-state.js';
import { assertNoiseHash, type NoiseHash } from './protocol.js';

export class SymmetricState {
  readonly cipherState: CipherState;
  #ck: SecretKey;
  #h: Uint8Array;
  readonly #hash: NoiseHash;
  readonly #crypto: ParleyCrypto;

  /** InitializeSymmetric(protocol_name). */
  constructor(crypto: ParleyCrypto, hash: NoiseHash, protocolName: string) {
    this.#crypto = assertCrypto(crypto);
    this.#hash = assertNoiseHash(hash);
    check.string(protocolName, 'protocolName');
    const name = new TextEncoder().encode(protocolName);
    // §5.2: if protocol_name is <= HASHLEN bytes, pad with zeros; otherwise hash it.
    if (name.length <= hash.hashLen) {
      this.#h = new Uint8Array(hash.hashLen);
      this.#h.set(name);
    } else {
      this.#h = hash.hash(name);
    }
    this.#ck = SecretKey.from(this.#h, 'mac');
    this.cipherState = new CipherState(crypto);
  }

  /** HKDF(chaining_key, input_key_material, 2) (§4.3). */
  #hkdf2(ikm: Uint8Array | SecretKey): [Uint8Array, Uint8Array] {
    const tempKey = SecretKey.adopt(this.#hash.hmac(this.#ck, ikm), 'mac');
    try {
      const output1 = this.#hash.hmac(tempKey, Uint8Array.of(0x01));
      const input2 = concatBytes(output1, Uint8Array.of(0x02)); // a copy of output1, the next chaining key
      try {
        return [output1, this.#hash.hmac(tempKey, input2)];
      } catch (error) {
        this.#crypto.wipe(output1);
        throw error;
      } finally {
        this.#crypto.wipe(input2);
      }
    } finally {
      tempKey.wipe();
    }
  }

  /** MixKey(ikm): ck, temp_k = HKDF(ck, ikm, 2); truncate temp_k to 32 bytes (§5.2). */
  mixKey(ikm: Uint8Array | SecretKey): void {
    const [ck, tempK] = this.#hkdf2(ikm);
    this.#ck.wipe();
    this.#ck = SecretKey.adopt(ck, 'mac');
    this.cipherState.initializeKey(SecretKey.adopt(tempK.slice(0, 32), 'aead'));
    this.#crypto.wipe(tempK);
  }

  /** MixHash(data): h = HASH(h ‖ data). */
  mixHash(data: Uint8Array): void {
    this.#h = this.#hash.hash(concatBytes(this.#h, data));
  }

  /** GetHandshakeHash(). */
  handshakeHash(): Uint8Array {
    return this.#h.slice();
  }

  /** EncryptAndHash(plaintext): ciphertext = EncryptWithAd(h, plaintext); MixHash(ciphertext). */
  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.cipherState.encryptWithAd(this.#h, plaintext);
    this.mixHash(ciphertext);
    return ciphertext;
  }

  /** DecryptAndHash(ciphertext): plaintext = DecryptWithAd(h, ciphertext); MixHash(ciphertext). */
  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.cipherState.decryptWithAd(this.#h, ciphertext);
    this.mixHash(ciphertext);
    return plaintext;
  }

  /** Split(): two CipherStates from HKDF(ck, zerolen, 2), each key truncated to 32 bytes. */
  split(crypto: ParleyCrypto): [CipherState, CipherState] {
    const [k1, k2] = this.#hkdf2(new Uint8Array(0));
    const c1 = new CipherState(crypto, SecretKey.adopt(k1.slice(0, 32), 'aead'));
    const c2 = new CipherState(crypto, SecretKey.adopt(k2.slice(0, 32), 'aead'));
    this.#crypto.wipe(k1);
    this.#crypto.wipe(k2);
    return [c1, c2];
  }

  /** Wipes ck and the handshake cipher key (after Split or on failure). */
  wipe(): void {
    this.#ck.wipe();
    this.cipherState.wipe();
  }

  toString(): string {
    return 'SymmetricState(redacted)';
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}
