import { base58 } from '@scure/base';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WRONG_TYPES, expectCode } from '../test/fixtures.js';
import { DID_KEY_PREFIX, fromDidKey, toDidKey } from './did-key.js';

describe('did:key', () => {
  it('Ed25519 keys start with did:key:z6Mk and round-trip', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (pk) => {
        const did = toDidKey(pk);
        expect(did.startsWith('did:key:z6Mk')).toBe(true);
        expect(fromDidKey(did)).toEqual(pk);
      }),
    );
  });

  it('keeps leading zero bytes of the key', () => {
    const pk = new Uint8Array(32);
    expect(fromDidKey(toDidKey(pk))).toEqual(pk);
  });

  it('toDidKey rejects anything but 32 bytes', () => {
    for (const v of [...WRONG_TYPES, new Uint8Array(31), new Uint8Array(33)]) expectCode(() => toDidKey(v as Uint8Array), 'malformed');
  });

  it('fromDidKey is strict', () => {
    const good = 'did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp';
    expect(fromDidKey(good)).toHaveLength(32);
    const x25519 = 'did:key:z' + base58.encode(Uint8Array.of(0xec, 0x01, ...new Uint8Array(32).fill(7)));
    const short = 'did:key:z' + base58.encode(Uint8Array.of(0xed, 0x01, ...new Uint8Array(31).fill(7)));
    const long = 'did:key:z' + base58.encode(Uint8Array.of(0xed, 0x01, ...new Uint8Array(33).fill(7)));
    const bad = [
      '',
      'did:key:',
      'did:key:z',
      good.replace('did:key:', 'did:web:'),
      good.replace(':z', ':f'), // another multibase
      'DID:KEY:' + good.slice(8),
      good + '#' + good.slice(8), // DID URL, not a bare DID
      good + '?x=1',
      ' ' + good,
      good + ' ',
      good.slice(0, -1) + '0', // '0' is not in the base58 alphabet
      good.slice(0, -1) + 'l',
      good.slice(0, -1), // too short after decoding
      x25519,
      short,
      long,
      DID_KEY_PREFIX + '1'.repeat(200),
    ];
    for (const did of bad) expectCode(() => fromDidKey(did), 'malformed');
    for (const v of WRONG_TYPES) expectCode(() => fromDidKey(v as string), 'malformed');
  });
});
