// Key copies the Noise layer makes on the way are wiped once used: the 48-byte ENCRYPT output whose first
// 32 bytes are REKEY(k), and HKDF's `output1 ‖ 0x02` input (output1 is the next chaining key).
import { beforeAll, describe, expect, it } from 'vitest';
import { SecretKey, createCrypto, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { CipherState, MAX_NONCE, SymmetricState, parseProtocolName } from '../src/index.js';

let crypto: ParleyCrypto;
beforeAll(async () => {
  crypto = await createCrypto();
});

const isZero = (bytes: Uint8Array): boolean => bytes.every((b) => b === 0);

/** The same crypto, recording what `aead.seal` returns at the REKEY nonce and what HMAC-BLAKE2b is given. */
function recording(base: ParleyCrypto) {
  const rekeyOutputs: Uint8Array[] = [];
  const hmacInputs: Uint8Array[] = [];
  const crypto: ParleyCrypto = {
    ...base,
    aead: {
      ...base.aead,
      seal(key, counter, plaintext, ad) {
        const out = base.aead.seal(key, counter, plaintext, ad);
        if (counter === MAX_NONCE) rekeyOutputs.push(out);
        return out;
      },
    },
    hmacBlake2b(key, data) {
      if (data instanceof Uint8Array) hmacInputs.push(data);
      return base.hmacBlake2b(key, data);
    },
  };
  return { crypto, rekeyOutputs, hmacInputs };
}

describe('key copies are wiped', () => {
  it('REKEY wipes the whole ENCRYPT output, not only the key it keeps (rekey and rekeyed)', () => {
    const r = recording(crypto);
    const k0 = crypto.randomBytes(32);
    const expected = crypto.aead.seal(SecretKey.from(k0, 'aead'), MAX_NONCE, new Uint8Array(32), new Uint8Array(0)).slice(0, 32);

    const next = new CipherState(r.crypto, SecretKey.from(k0, 'aead')).rekeyed();
    const inPlace = new CipherState(r.crypto, SecretKey.from(k0, 'aead'));
    inPlace.rekey();

    expect(r.rekeyOutputs).toHaveLength(2);
    for (const out of r.rekeyOutputs) expect(isZero(out), 'the 48-byte ENCRYPT output holding k(e+1)').toBe(true);
    // and the keys themselves are still REKEY(k)
    expect(toHex(next.unsafeKey()!.unsafeBytes())).toBe(toHex(expected));
    expect(toHex(inPlace.unsafeKey()!.unsafeBytes())).toBe(toHex(expected));
  });

  it("HKDF wipes its `output1 ‖ 0x02` input (a copy of the next chaining key) in MixKey and Split", () => {
    const r = recording(crypto);
    const state = new SymmetricState(r.crypto, parseProtocolName('Noise_XX_25519_ChaChaPoly_BLAKE2b', r.crypto).hash, 'Noise_XX_25519_ChaChaPoly_BLAKE2b');
    state.mixKey(crypto.randomBytes(32));
    const [c1, c2] = state.split(r.crypto);
    // HMAC-HASH's second-output input is HASHLEN + 1 bytes; the 1-byte inputs are the public 0x01.
    const copies = r.hmacInputs.filter((d) => d.length === 65);
    expect(copies).toHaveLength(2);
    for (const d of copies) expect(isZero(d), 'output1 ‖ 0x02').toBe(true);
    expect(c1.hasKey() && c2.hasKey()).toBe(true);
    state.wipe();
  });
});
