import { fromHex, toBase64Url, toHex } from '@parley/crypto-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { WRONG_TYPES, createWorld, expectCode, type World } from '../test/fixtures.js';
import { keyId } from './key-id.js';
import { MAX_TRUST_BUNDLE_ISSUERS, TrustBundle } from './trust-bundle.js';

describe('TrustBundle', () => {
  let w: World;
  let pkA: Uint8Array;
  let pkB: Uint8Array;
  beforeAll(async () => {
    w = await createWorld();
    pkA = w.crypto.ed25519.keyPairFromSeed(fromHex('aa'.repeat(32))).publicKey;
    pkB = w.crypto.ed25519.keyPairFromSeed(fromHex('bb'.repeat(32))).publicKey;
  });

  it('indexes issuers by key id (given or computed) and returns copies', () => {
    const bundle = TrustBundle.from(w.crypto, [{ keyId: keyId(w.crypto, pkA), publicKey: pkA }, { publicKey: pkB, notAfterMs: 5 }]);
    expect(bundle.size).toBe(2);
    const a = bundle.get(keyId(w.crypto, pkA));
    expect(a?.publicKey).toEqual(pkA);
    expect(a?.notAfterMs).toBeUndefined();
    expect(bundle.get(keyId(w.crypto, pkB))?.notAfterMs).toBe(5);
    a!.publicKey.fill(0);
    expect(bundle.get(keyId(w.crypto, pkA))?.publicKey).toEqual(pkA);
    expect(bundle.get(new Uint8Array(16))).toBeUndefined();
    for (const v of WRONG_TYPES) expect(bundle.get(v as Uint8Array)).toBeUndefined();
    expect(bundle.entries().map((e) => toHex(e.publicKey))).toEqual([toHex(pkA), toHex(pkB)]);
  });

  it('copies its inputs', () => {
    const pk = pkA.slice();
    const bundle = TrustBundle.from(w.crypto, [{ publicKey: pk }]);
    pk.fill(0);
    expect(bundle.get(keyId(w.crypto, pkA))?.publicKey).toEqual(pkA);
  });

  it('rejects a key id that is not keyId(publicKey), duplicates, and wrong types', () => {
    expectCode(() => TrustBundle.from(w.crypto, [{ keyId: keyId(w.crypto, pkB), publicKey: pkA }]), 'malformed');
    expectCode(() => TrustBundle.from(w.crypto, [{ publicKey: pkA }, { publicKey: pkA.slice() }]), 'malformed');
    expectCode(() => TrustBundle.from(w.crypto, [{ publicKey: pkA, notAfterMs: -1 }]), 'malformed');
    expectCode(() => TrustBundle.from(w.crypto, [{ publicKey: pkA, notAfterMs: 1.5 }]), 'malformed');
    expectCode(() => TrustBundle.from(w.crypto, [{ publicKey: pkA, keyId: new Uint8Array(15) }]), 'malformed');
    expectCode(() => TrustBundle.from(w.crypto, [{ publicKey: new Uint8Array(31) }]), 'malformed');
    for (const v of WRONG_TYPES) {
      if (Array.isArray(v)) continue; // [] is a valid (empty) list; [1, 2] is checked below
      expectCode(() => TrustBundle.from(w.crypto, v as never), 'malformed');
      expectCode(() => TrustBundle.from(w.crypto, [v] as never), 'malformed');
      if (v !== undefined) expectCode(() => TrustBundle.from(w.crypto, [{ publicKey: v }] as never), 'malformed');
      if (v !== undefined) expectCode(() => TrustBundle.from(w.crypto, [{ publicKey: pkA, keyId: v }] as never), 'malformed');
    }
    expectCode(() => TrustBundle.from(w.crypto, [1, 2] as never), 'malformed');
  });

  it('holds at most MAX_TRUST_BUNDLE_ISSUERS issuers', () => {
    const keys = Array.from({ length: MAX_TRUST_BUNDLE_ISSUERS + 1 }, (_, i) => {
      const pk = new Uint8Array(32);
      new DataView(pk.buffer).setUint32(0, i);
      return { publicKey: pk };
    });
    expect(TrustBundle.from(w.crypto, keys.slice(0, -1)).size).toBe(MAX_TRUST_BUNDLE_ISSUERS);
    expectCode(() => TrustBundle.from(w.crypto, keys), 'malformed');
  });

  describe('JSON form', () => {
    it('round-trips through JSON text and objects', () => {
      const bundle = TrustBundle.from(w.crypto, [{ publicKey: pkA }, { publicKey: pkB, notAfterMs: 1_800_000_000_000 }]);
      const json = bundle.toJSON();
      expect(json).toEqual({
        version: 1,
        issuers: [
          { key_id: toHex(keyId(w.crypto, pkA)), public_key: toBase64Url(pkA) },
          { key_id: toHex(keyId(w.crypto, pkB)), public_key: toBase64Url(pkB), not_after_ms: 1_800_000_000_000 },
        ],
      });
      const text = JSON.stringify(bundle);
      expect(TrustBundle.fromJSON(w.crypto, text).toJSON()).toEqual(json);
      expect(TrustBundle.fromJSON(w.crypto, JSON.parse(text)).toJSON()).toEqual(json);
    });

    it('is strict', () => {
      const good = { key_id: toHex(keyId(w.crypto, pkA)), public_key: toBase64Url(pkA) };
      const doc = (issuers: unknown[], extra: Record<string, unknown> = {}) => ({ version: 1, issuers, ...extra });
      expect(TrustBundle.fromJSON(w.crypto, doc([good])).size).toBe(1);
      expectCode(() => TrustBundle.fromJSON(w.crypto, { version: 2, issuers: [good] }), 'unsupported_version');
      const malformedDocs: unknown[] = [
        '{',
        'null',
        '[]',
        { issuers: [good] },
        { version: '1', issuers: [good] },
        { version: 1 },
        { version: 1, issuers: {} },
        doc([good], { extra: true }),
        doc([{ ...good, extra: 1 }]),
        doc([{ ...good, key_id: good.key_id.toUpperCase() }]),
        doc([{ ...good, key_id: good.key_id.slice(2) }]),
        doc([{ ...good, key_id: toHex(keyId(w.crypto, pkB)) }]),
        doc([{ ...good, public_key: toBase64Url(pkA) + '=' }]),
        doc([{ ...good, public_key: Buffer.from(pkA).toString('base64') + 'x' }]),
        doc([{ ...good, public_key: toBase64Url(pkA.slice(1)) }]),
        doc([{ ...good, public_key: 7 }]),
        doc([{ ...good, not_after_ms: '5' }]),
        doc([{ ...good, not_after_ms: -5 }]),
        doc([{ key_id: good.key_id }]),
        doc([good, good]),
        doc([null]),
      ];
      for (const d of malformedDocs) expectCode(() => TrustBundle.fromJSON(w.crypto, d), 'malformed');
      for (const v of WRONG_TYPES) {
        if (typeof v === 'string') continue;
        expectCode(() => TrustBundle.fromJSON(w.crypto, v), 'malformed');
      }
    });
  });
});
