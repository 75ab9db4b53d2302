import { concatBytes, createCrypto, fromHex, toHex, u32be, utf8, type ParleyCrypto } from '@parley/crypto-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { WRONG_TYPES, expectCode } from '../test/fixtures.js';
import { KEY_ID_BYTES, keyId } from './key-id.js';

describe('keyId', () => {
  let crypto: ParleyCrypto;
  beforeAll(async () => {
    crypto = await createCrypto();
  });

  it('is the first 16 bytes of BLAKE3(u32(len) ‖ "parley/v1/key-id" ‖ public key)', () => {
    const pk = crypto.ed25519.keyPairFromSeed(fromHex('33'.repeat(32))).publicKey;
    const domain = utf8('parley/v1/key-id');
    // Built by hand, not through layout(), as an independent check of the layout.
    const expected = crypto.blake3(concatBytes(u32be(domain.length), domain, pk)).slice(0, 16);
    const id = keyId(crypto, pk);
    expect(id).toHaveLength(KEY_ID_BYTES);
    expect(toHex(id)).toBe(toHex(expected));
  });

  it('differs for different keys', () => {
    const a = keyId(crypto, new Uint8Array(32));
    const b = keyId(crypto, new Uint8Array(32).fill(1));
    expect(toHex(a)).not.toBe(toHex(b));
  });

  it('rejects anything but 32 bytes as malformed', () => {
    for (const v of [...WRONG_TYPES, new Uint8Array(31), new Uint8Array(33), new Uint8Array(0)]) {
      expectCode(() => keyId(crypto, v as Uint8Array), 'malformed');
    }
  });
});
