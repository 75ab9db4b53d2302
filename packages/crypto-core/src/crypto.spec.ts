// Behaviour and negative tests for the crypto-core facade, run against every
// backend choice so one suite proves them interchangeable.
import { inspect } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { CryptoError, SecretKey, createCrypto, fromHex, toHex, type ParleyCrypto } from './index.js';

// Each backend choice with each libsodium build (native addon and WebAssembly), so the two builds
// are proved interchangeable on every behaviour and negative case.
const BACKENDS = [
  { backend: 'libsodium', libsodium: 'native' },
  { backend: 'libsodium', libsodium: 'wasm' },
  { backend: 'node', libsodium: 'native' },
  { backend: 'node', libsodium: 'wasm' },
  { backend: 'auto', libsodium: 'native' },
  { backend: 'auto', libsodium: 'wasm' },
] as const;

/** Values of every wrong JavaScript type, fed to each public function. */
const WRONG_TYPES: unknown[] = [undefined, null, 0, 1n, 'bytes', [1, 2, 3], {}, new ArrayBuffer(32), Buffer.alloc(0).buffer];

function expectCode(fn: () => unknown, code: CryptoError['code']): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, `expected a CryptoError with code ${code}`).toBeInstanceOf(CryptoError);
  expect((thrown as CryptoError).code).toBe(code);
  expect((thrown as CryptoError).message.startsWith(`[${code}] `)).toBe(true);
}

describe.each(BACKENDS)('crypto-core with backend $backend, libsodium $libsodium', (options) => {
  let c: ParleyCrypto;
  beforeAll(async () => {
    c = await createCrypto(options);
  });

  describe('xaead (XChaCha20-Poly1305, random nonces)', () => {
    it('round-trips, draws a fresh nonce per message, binds the associated data', () => {
      const key = c.randomKey('aead');
      const pt = new TextEncoder().encode('shared plan v3');
      const ad = new TextEncoder().encode('segment plan');
      const a = c.xaead.seal(key, pt, ad);
      const b = c.xaead.seal(key, pt, ad);
      expect(a).toHaveLength(24 + pt.length + 16);
      expect(a.subarray(0, 24)).not.toEqual(b.subarray(0, 24));
      expect(c.xaead.open(key, a, ad)).toEqual(pt);
      expectCode(() => c.xaead.open(key, a, new TextEncoder().encode('segment other')), 'decrypt_failed');
      expectCode(() => c.xaead.open(c.randomKey('aead'), a, ad), 'decrypt_failed');
      expectCode(() => c.xaead.open(key, a.subarray(0, 39), ad), 'invalid_length');
      expect(c.xaead.open(key, c.xaead.seal(key, new Uint8Array(0), ad), ad)).toHaveLength(0);
    });

    it('validates every input with typed errors', () => {
      const key = c.randomKey('aead');
      for (const bad of WRONG_TYPES) {
        expectCode(() => c.xaead.seal(bad as SecretKey, new Uint8Array(1), new Uint8Array(0)), 'invalid_type');
        expectCode(() => c.xaead.seal(key, bad as Uint8Array, new Uint8Array(0)), 'invalid_type');
        expectCode(() => c.xaead.open(key, bad as Uint8Array, new Uint8Array(0)), 'invalid_type');
      }
      expectCode(() => c.xaead.seal(c.randomKey('mac'), new Uint8Array(1), new Uint8Array(0)), 'invalid_type');
      expectCode(() => c.xaead.sealWithNonceForTestingOnly(key, new Uint8Array(12), new Uint8Array(1), new Uint8Array(0)), 'invalid_length');
      key.wipe();
      expectCode(() => c.xaead.seal(key, new Uint8Array(1), new Uint8Array(0)), 'key_wiped');
    });
  });

  describe('sealedBox (crypto_box_seal to an Ed25519 identity)', () => {
    it('seals to the identity key; only that key opens it; any changed byte is refused', () => {
      const member = c.ed25519.generateKeyPair();
      const other = c.ed25519.generateKeyPair();
      const msg = c.randomBytes(68);
      const sealed = c.sealedBox.seal(msg, member.publicKey);
      expect(sealed).toHaveLength(48 + 68);
      expect(c.sealedBox.open(sealed, member.secretKey)).toEqual(msg);
      expect(c.sealedBox.seal(msg, member.publicKey)).not.toEqual(sealed); // fresh ephemeral key each time
      expectCode(() => c.sealedBox.open(sealed, other.secretKey), 'decrypt_failed');
      for (const at of [0, 31, 32, sealed.length - 1]) {
        const bad = sealed.slice();
        bad[at]! ^= 1;
        expectCode(() => c.sealedBox.open(bad, member.secretKey), 'decrypt_failed');
      }
      expectCode(() => c.sealedBox.open(sealed.subarray(0, 47), member.secretKey), 'invalid_length');
    });

    it("the deterministic construction is libsodium's sealed-box format", () => {
      const member = c.ed25519.generateKeyPair();
      const msg = new TextEncoder().encode('epoch key');
      const eph = c.randomBytes(32);
      const sealed = c.sealedBox.sealWithEphemeralForTestingOnly(msg, member.publicKey, eph);
      expect(c.sealedBox.sealWithEphemeralForTestingOnly(msg, member.publicKey, eph)).toEqual(sealed);
      expect(sealed.subarray(0, 32)).toEqual(c.x25519.keyPairFromSecret(eph).publicKey);
      expect(c.sealedBox.open(sealed, member.secretKey)).toEqual(msg);
    });

    it('refuses Ed25519 public keys that are not valid points, and wrong types', () => {
      // The identity point (small order) and a y coordinate not on the curve.
      const identity = fromHex('0100000000000000000000000000000000000000000000000000000000000000');
      const offCurve = fromHex('0200000000000000000000000000000000000000000000000000000000000000');
      for (const pk of [identity, offCurve]) expectCode(() => c.sealedBox.seal(new Uint8Array(1), pk), 'weak_public_key');
      const kp = c.ed25519.generateKeyPair();
      for (const bad of WRONG_TYPES) {
        expectCode(() => c.sealedBox.seal(bad as Uint8Array, kp.publicKey), 'invalid_type');
        expectCode(() => c.sealedBox.seal(new Uint8Array(1), bad as Uint8Array), 'invalid_type');
        expectCode(() => c.sealedBox.open(bad as Uint8Array, kp.secretKey), 'invalid_type');
        expectCode(() => c.sealedBox.open(new Uint8Array(64), bad as SecretKey), 'invalid_type');
      }
      expectCode(() => c.sealedBox.open(new Uint8Array(64), c.x25519.generateKeyPair().secretKey), 'invalid_type');
      expectCode(() => c.sealedBox.seal(new Uint8Array(1), new Uint8Array(31)), 'invalid_length');
    });
  });

  describe('ed25519', () => {
    it('signs and verifies; rejects a changed message, signature or key', () => {
      const kp = c.ed25519.generateKeyPair();
      const msg = new TextEncoder().encode('handoff task 42');
      const sig = c.ed25519.sign(msg, kp.secretKey);
      expect(sig).toHaveLength(64);
      expect(c.ed25519.verify(sig, msg, kp.publicKey)).toBe(true);
      const other = c.ed25519.generateKeyPair();
      expect(c.ed25519.verify(sig, msg, other.publicKey)).toBe(false);
      for (let bit = 0; bit < 8; bit++) {
        const m = msg.slice();
        m[3]! ^= 1 << bit;
        expect(c.ed25519.verify(sig, m, kp.publicKey)).toBe(false);
        const s = sig.slice();
        s[bit * 8]! ^= 1 << bit;
        expect(c.ed25519.verify(s, msg, kp.publicKey)).toBe(false);
      }
    });

    it('refuses the small-order forgery (identity public key, R = identity, S = 0) for every message', () => {
      // With A the identity point, [k]A is the identity for every k, so R = identity, S = 0 satisfies
      // [S]B = R + [k]A for any message: OpenSSL accepts it, libsodium refuses small-order and
      // non-canonical A and R. The last two keys are non-canonical encodings of the identity (y = p + 1,
      // and y = 1 with the sign bit of x = 0 set).
      const identity = fromHex(`01${'00'.repeat(31)}`);
      const keys = [identity, fromHex(`ee${'ff'.repeat(30)}7f`), fromHex(`01${'00'.repeat(30)}80`)];
      const forged = new Uint8Array(64);
      forged.set(identity, 0);
      for (const publicKey of keys) {
        for (const message of ['hello', 'anything else', '']) {
          expect(c.ed25519.verify(forged, new TextEncoder().encode(message), publicKey), `${toHex(publicKey)} / ${message}`).toBe(false);
        }
      }
    });

    it('derives the same key pair from a seed and exports the seed', () => {
      const seed = c.randomBytes(32);
      const a = c.ed25519.keyPairFromSeed(seed);
      const b = c.ed25519.keyPairFromSeed(seed);
      expect(a.publicKey).toEqual(b.publicKey);
      expect(c.ed25519.exportSeed(a.secretKey)).toEqual(seed);
    });

    it('validates every input with typed errors', () => {
      const kp = c.ed25519.generateKeyPair();
      for (const bad of WRONG_TYPES) {
        expectCode(() => c.ed25519.keyPairFromSeed(bad as Uint8Array), 'invalid_type');
        expectCode(() => c.ed25519.sign(bad as Uint8Array, kp.secretKey), 'invalid_type');
        expectCode(() => c.ed25519.sign(new Uint8Array(1), bad as SecretKey), 'invalid_type');
        expect(c.ed25519.verify(bad as Uint8Array, new Uint8Array(1), kp.publicKey)).toBe(false);
        expect(c.ed25519.verify(new Uint8Array(64), bad as Uint8Array, kp.publicKey)).toBe(false);
        expect(c.ed25519.verify(new Uint8Array(64), new Uint8Array(1), bad as Uint8Array)).toBe(false);
      }
      for (const len of [0, 16, 31, 33, 64]) expectCode(() => c.ed25519.keyPairFromSeed(new Uint8Array(len)), 'invalid_length');
      for (const len of [0, 63, 65]) expect(c.ed25519.verify(new Uint8Array(len), new Uint8Array(1), kp.publicKey)).toBe(false);
      for (const len of [0, 31, 33]) expect(c.ed25519.verify(new Uint8Array(64), new Uint8Array(1), new Uint8Array(len))).toBe(false);
      expectCode(() => c.ed25519.sign(new Uint8Array(1), SecretKey.from(new Uint8Array(64), 'x25519')), 'invalid_type');
      expectCode(() => c.ed25519.sign(new Uint8Array(1), SecretKey.from(new Uint8Array(32), 'ed25519')), 'invalid_length');
    });

    it('refuses a wiped key', () => {
      const kp = c.ed25519.generateKeyPair();
      c.wipe(kp.secretKey);
      expect(kp.secretKey.isWiped).toBe(true);
      expectCode(() => c.ed25519.sign(new Uint8Array(1), kp.secretKey), 'key_wiped');
    });
  });

  describe('x25519', () => {
    it('agrees on a shared secret', () => {
      const a = c.x25519.generateKeyPair();
      const b = c.x25519.generateKeyPair();
      const ab = c.x25519.dh(a.secretKey, b.publicKey);
      const ba = c.x25519.dh(b.secretKey, a.publicKey);
      expect(ab.unsafeBytes()).toEqual(ba.unsafeBytes());
    });

    it('rejects low-order public keys (all-zero result)', () => {
      const a = c.x25519.generateKeyPair();
      // RFC 7748 §6.1 / libsodium blocklist: low-order points give an all-zero output.
      const lowOrder = [
        '0000000000000000000000000000000000000000000000000000000000000000',
        '0100000000000000000000000000000000000000000000000000000000000000',
        'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
        '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
        'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
      ];
      for (const hex of lowOrder) expectCode(() => c.x25519.dh(a.secretKey, fromHex(hex)), 'weak_public_key');
    });

    it('validates inputs', () => {
      const a = c.x25519.generateKeyPair();
      for (const bad of WRONG_TYPES) {
        expectCode(() => c.x25519.keyPairFromSecret(bad as Uint8Array), 'invalid_type');
        expectCode(() => c.x25519.dh(a.secretKey, bad as Uint8Array), 'invalid_type');
        expectCode(() => c.x25519.dh(bad as SecretKey, a.publicKey), 'invalid_type');
      }
      for (const len of [0, 31, 33]) {
        expectCode(() => c.x25519.keyPairFromSecret(new Uint8Array(len)), 'invalid_length');
        expectCode(() => c.x25519.dh(a.secretKey, new Uint8Array(len)), 'invalid_length');
      }
    });
  });

  describe('aead', () => {
    const ad = new TextEncoder().encode('header');
    const plaintext = new TextEncoder().encode('the quick brown fox');

    it('uses the Noise nonce layout: 4 zero bytes then little-endian counter', () => {
      expect(c.aead.nonce(0x0102030405060708n)).toEqual(fromHex('000000000807060504030201'));
      expect(c.aead.nonce((1n << 64n) - 1n)).toEqual(fromHex('00000000ffffffffffffffff'));
    });

    it('round-trips and rejects a tampered ciphertext, tag, AD, nonce and key', () => {
      const key = c.randomKey('aead');
      const sealed = c.aead.seal(key, 7n, plaintext, ad);
      expect(sealed).toHaveLength(plaintext.length + 16);
      expect(c.aead.open(key, 7n, sealed, ad)).toEqual(plaintext);
      const body = sealed.slice();
      body[0]! ^= 1;
      expectCode(() => c.aead.open(key, 7n, body, ad), 'decrypt_failed');
      const tag = sealed.slice();
      tag[tag.length - 1]! ^= 0x80;
      expectCode(() => c.aead.open(key, 7n, tag, ad), 'decrypt_failed');
      const badAd = ad.slice();
      badAd[0]! ^= 1;
      expectCode(() => c.aead.open(key, 7n, sealed, badAd), 'decrypt_failed');
      expectCode(() => c.aead.open(key, 8n, sealed, ad), 'decrypt_failed');
      expectCode(() => c.aead.open(c.randomKey('aead'), 7n, sealed, ad), 'decrypt_failed');
      expectCode(() => c.aead.open(key, 7n, sealed.subarray(0, sealed.length - 1), ad), 'decrypt_failed');
    });

    it('seals empty plaintext', () => {
      const key = c.randomKey('aead');
      const sealed = c.aead.seal(key, 0n, new Uint8Array(0), new Uint8Array(0));
      expect(sealed).toHaveLength(16);
      expect(c.aead.open(key, 0n, sealed, new Uint8Array(0))).toHaveLength(0);
    });

    it('validates inputs', () => {
      const key = c.randomKey('aead');
      for (const bad of WRONG_TYPES) {
        expectCode(() => c.aead.seal(bad as SecretKey, 0n, plaintext, ad), 'invalid_type');
        expectCode(() => c.aead.seal(key, 0n, bad as Uint8Array, ad), 'invalid_type');
        expectCode(() => c.aead.seal(key, 0n, plaintext, bad as Uint8Array), 'invalid_type');
        expectCode(() => c.aead.open(key, 0n, bad as Uint8Array, ad), 'invalid_type');
      }
      expectCode(() => c.aead.seal(key, -1n, plaintext, ad), 'invalid_value');
      expectCode(() => c.aead.seal(key, 1n << 64n, plaintext, ad), 'invalid_value');
      expectCode(() => c.aead.seal(key, '1' as unknown as bigint, plaintext, ad), 'invalid_type');
      expectCode(() => c.aead.seal(SecretKey.from(new Uint8Array(16), 'aead'), 0n, plaintext, ad), 'invalid_length');
      expectCode(() => c.aead.seal(SecretKey.from(new Uint8Array(32), 'mac'), 0n, plaintext, ad), 'invalid_type');
      for (const len of [0, 15]) expectCode(() => c.aead.open(key, 0n, new Uint8Array(len), ad), 'invalid_length');
    });

    it('refuses a counter that is not a bigint, a number included (typed bigint; a string was already refused)', () => {
      const key = c.randomKey('aead');
      const sealed = c.aead.seal(key, 1n, plaintext, ad);
      for (const counter of [1, 0, 1.5, '1', null, undefined]) {
        expectCode(() => c.aead.seal(key, counter as unknown as bigint, plaintext, ad), 'invalid_type');
        expectCode(() => c.aead.open(key, counter as unknown as bigint, sealed, ad), 'invalid_type');
        expectCode(() => c.aead.nonce(counter as unknown as bigint), 'invalid_type');
      }
      expect(c.aead.open(key, 1n, sealed, ad)).toEqual(plaintext);
    });
  });

  describe('hmac-sha256', () => {
    it('verifies in constant time and rejects a flipped tag or wrong length', () => {
      const key = c.randomKey('mac');
      const data = c.randomBytes(100);
      const tag = c.hmacSha256(key, data);
      expect(c.hmacSha256Verify(key, data, tag)).toBe(true);
      for (let i = 0; i < 32; i++) {
        const t = tag.slice();
        t[i]! ^= 1;
        expect(c.hmacSha256Verify(key, data, t)).toBe(false);
      }
      expect(c.hmacSha256Verify(key, data, tag.subarray(0, 31))).toBe(false);
      expect(c.hmacSha256Verify(key, data, 'tag' as unknown as Uint8Array)).toBe(false);
      for (const bad of WRONG_TYPES) {
        expectCode(() => c.hmacSha256(bad as SecretKey, data), 'invalid_type');
        expectCode(() => c.hmacSha256(key, bad as Uint8Array), 'invalid_type');
      }
    });

    it('takes a mac (or generic) key, never a signing, DH or AEAD key (as aead checks its kind)', () => {
      const data = c.randomBytes(10);
      const wrongKinds = [c.ed25519.generateKeyPair().secretKey, c.x25519.generateKeyPair().secretKey, c.randomKey('aead')];
      for (const key of wrongKinds) {
        expectCode(() => c.hmacSha256(key, data), 'invalid_type');
        expectCode(() => c.hmacSha256Parts(key, [data]), 'invalid_type');
        expectCode(() => c.hmacSha256Verify(key, data, new Uint8Array(32)), 'invalid_type');
        expectCode(() => c.hmacSha256VerifyParts(key, [data], new Uint8Array(32)), 'invalid_type');
        expectCode(() => c.hmacBlake2b(key, data), 'invalid_type');
      }
      // The kinds in use: `mac` (session MAC keys, Noise's chaining keys, the registry's challenge key) and
      // `generic` (a key wrapped without a kind), with the same tag for the same bytes.
      const bytes = c.randomBytes(32);
      const mac = SecretKey.from(bytes, 'mac');
      const generic = SecretKey.from(bytes);
      expect(c.hmacSha256(generic, data)).toEqual(c.hmacSha256(mac, data));
      expect(c.hmacSha256Verify(generic, data, c.hmacSha256(mac, data))).toBe(true);
      expect(c.hmacBlake2b(generic, data)).toEqual(c.hmacBlake2b(mac, data));
    });

    it('hmacSha256Parts is the tag of the concatenation, for keys of any length', () => {
      const data = c.randomBytes(1200);
      for (const length of [16, 32, 33, 64, 100]) {
        const key = c.randomKey('mac', length);
        const tag = c.hmacSha256(key, data);
        for (const cuts of [[], [0], [1], [600], [0, 1200], [3, 4, 1199]]) {
          const parts: Uint8Array[] = [];
          let at = 0;
          for (const cut of [...cuts, data.length]) {
            parts.push(data.subarray(at, cut));
            at = cut;
          }
          expect(Buffer.from(c.hmacSha256Parts(key, parts)).equals(Buffer.from(tag))).toBe(true);
          expect(c.hmacSha256VerifyParts(key, parts, tag)).toBe(true);
        }
        const flipped = tag.slice();
        flipped[0]! ^= 1;
        expect(c.hmacSha256VerifyParts(key, [data], flipped)).toBe(false);
        expect(c.hmacSha256VerifyParts(key, [data], tag.subarray(0, 31))).toBe(false);
      }
      expect(Buffer.from(c.hmacSha256Parts(c.randomKey('mac'), [])).length).toBe(32);
      const key = c.randomKey('mac');
      for (const bad of WRONG_TYPES) {
        expectCode(() => c.hmacSha256Parts(bad as SecretKey, [data]), 'invalid_type');
        if (!Array.isArray(bad)) expectCode(() => c.hmacSha256Parts(key, bad as Uint8Array[]), 'invalid_type');
        if (!Array.isArray(bad)) expectCode(() => c.blake3Parts(bad as Uint8Array[]), 'invalid_type');
        expectCode(() => c.hmacSha256Parts(key, [data, bad as Uint8Array]), 'invalid_type');
        expectCode(() => c.blake3Parts([bad as Uint8Array]), 'invalid_type');
      }
    });

    it('blake3Parts is the hash of the concatenation', () => {
      const data = c.randomBytes(3000);
      const whole = Buffer.from(c.blake3(data));
      for (const cuts of [[], [0], [1], [1024], [1500, 2048], [0, 3000]]) {
        const parts: Uint8Array[] = [];
        let at = 0;
        for (const cut of [...cuts, data.length]) {
          parts.push(data.subarray(at, cut));
          at = cut;
        }
        expect(Buffer.from(c.blake3Parts(parts)).equals(whole)).toBe(true);
      }
      expect(Buffer.from(c.blake3Parts([])).equals(Buffer.from(c.blake3(new Uint8Array(0))))).toBe(true);
    });
  });

  describe('hashes and kdf', () => {
    it('validates lengths', () => {
      expectCode(() => c.blake2b(new Uint8Array(1), 0), 'invalid_value');
      expectCode(() => c.blake2b(new Uint8Array(1), 65), 'invalid_value');
      expectCode(() => c.blake2b(new Uint8Array(1), 32, SecretKey.from(new Uint8Array(8))), 'invalid_length');
      expectCode(() => c.hkdfSha256(new Uint8Array(32), new Uint8Array(0), new Uint8Array(0), 0), 'invalid_value');
      expectCode(() => c.hkdfSha256(new Uint8Array(32), new Uint8Array(0), new Uint8Array(0), 8161), 'invalid_value');
      for (const bad of WRONG_TYPES) {
        expectCode(() => c.blake2b(bad as Uint8Array), 'invalid_type');
        expectCode(() => c.blake3(bad as Uint8Array), 'invalid_type');
        expectCode(() => c.hkdfSha256(bad as Uint8Array, new Uint8Array(0), new Uint8Array(0), 32), 'invalid_type');
      }
    });

    it('hmacBlake2b matches RFC 2104 over BLAKE2b-512 (block 128)', () => {
      // Cross-check with an HMAC composed by hand from the BLAKE2b primitive.
      const key = c.randomBytes(40);
      const data = c.randomBytes(77);
      const k0 = new Uint8Array(128);
      k0.set(key);
      const ipad = k0.map((b) => b ^ 0x36);
      const opad = k0.map((b) => b ^ 0x5c);
      const inner = c.blake2b(new Uint8Array([...ipad, ...data]));
      const expected = c.blake2b(new Uint8Array([...opad, ...inner]));
      expect(c.hmacBlake2b(SecretKey.from(key), data)).toEqual(expected);
    });
  });

  describe('utilities', () => {
    it('constantTimeEqual', () => {
      expect(c.constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
      expect(c.constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
      expect(c.constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1]))).toBe(false);
      expectCode(() => c.constantTimeEqual('a' as unknown as Uint8Array, new Uint8Array(1)), 'invalid_type');
    });

    it('random bytes differ and have the requested length', () => {
      expect(c.randomBytes(0)).toHaveLength(0);
      expect(c.randomBytes(32)).not.toEqual(c.randomBytes(32));
      expectCode(() => c.randomBytes(-1), 'invalid_value');
      expectCode(() => c.randomBytes(1.5), 'invalid_type');
    });

    it('refuses an unknown key kind: randomKey, SecretKey.from and SecretKey.adopt', () => {
      for (const kind of ['bogus', 'MAC', '', 'any']) {
        expectCode(() => c.randomKey(kind as SecretKey['kind']), 'invalid_value');
        expectCode(() => SecretKey.from(new Uint8Array(32), kind as SecretKey['kind']), 'invalid_value');
        expectCode(() => SecretKey.adopt(new Uint8Array(32), kind as SecretKey['kind']), 'invalid_value');
      }
      for (const kind of [42, null, {}]) {
        expectCode(() => c.randomKey(kind as SecretKey['kind']), 'invalid_type');
        expectCode(() => SecretKey.from(new Uint8Array(32), kind as SecretKey['kind']), 'invalid_type');
      }
      for (const kind of ['ed25519', 'x25519', 'aead', 'mac', 'generic'] as const) {
        expect(c.randomKey(kind).kind).toBe(kind);
        expect(SecretKey.from(new Uint8Array(32), kind).kind).toBe(kind);
      }
    });

    it('wipes bytes', () => {
      const b = new Uint8Array([1, 2, 3]);
      c.wipe(b);
      expect(b).toEqual(new Uint8Array(3));
    });
  });
});

describe('key material never leaks', () => {
  it('SecretKey redacts itself in inspect, JSON, template strings and errors', async () => {
    const c = await createCrypto();
    const kp = c.ed25519.generateKeyPair();
    const seedHex = Buffer.from(c.ed25519.exportSeed(kp.secretKey)).toString('hex');
    const texts = [
      inspect(kp, { depth: 10 }),
      inspect(kp.secretKey, { showHidden: true }),
      JSON.stringify(kp),
      `${kp.secretKey}`,
      String(kp.secretKey),
    ];
    for (const t of texts) {
      expect(t).not.toContain(seedHex);
      expect(t).not.toContain(seedHex.slice(0, 16));
    }
    expect(inspect(kp.secretKey)).toBe('SecretKey(ed25519, 64 bytes)');
    try {
      c.ed25519.sign('x' as unknown as Uint8Array, kp.secretKey);
    } catch (error) {
      expect(String(error)).not.toContain(seedHex.slice(0, 16));
    }
  });

  it('rejects an unknown backend name', async () => {
    await expect(createCrypto({ backend: 'openssl' as never })).rejects.toMatchObject({ code: 'invalid_value' });
    await expect(createCrypto({ libsodium: 'asm.js' as never })).rejects.toMatchObject({ code: 'invalid_value' });
  });

  it('names the libsodium build that serves each primitive', async () => {
    const native = await createCrypto({ libsodium: 'native' });
    expect(native.backends.ed25519).toBe('libsodium-native');
    expect(native.backends.aead).toBe('libsodium-native');
    expect(native.backends.hmacSha256).toBe('node');
    const wasm = await createCrypto({ libsodium: 'wasm' });
    expect(wasm.backends.ed25519).toBe('libsodium');
    expect(wasm.backends.aead).toMatch(/^libsodium<\d+B≤node$/);
    // The default loads the native build where the platform has it (linux-x64 here).
    expect((await createCrypto()).backends.ed25519).toBe('libsodium-native');
  });

  it('signs and seals identically under both libsodium builds (same library, same bytes)', async () => {
    const native = await createCrypto({ backend: 'libsodium', libsodium: 'native' });
    const wasm = await createCrypto({ backend: 'libsodium', libsodium: 'wasm' });
    const seed = new Uint8Array(32).fill(9);
    const message = new TextEncoder().encode('one layout, two builds');
    const sigN = native.ed25519.sign(message, native.ed25519.keyPairFromSeed(seed).secretKey);
    const sigW = wasm.ed25519.sign(message, wasm.ed25519.keyPairFromSeed(seed).secretKey);
    expect(Buffer.from(sigN).equals(Buffer.from(sigW))).toBe(true);
    const pk = native.ed25519.keyPairFromSeed(seed).publicKey;
    expect(wasm.ed25519.verify(sigN, message, pk) && native.ed25519.verify(sigW, message, pk)).toBe(true);
    const key = native.randomKey('aead');
    const sealed = native.aead.seal(key, 7n, message, message);
    expect(wasm.aead.open(SecretKey.from(key.unsafeBytes(), 'aead'), 7n, sealed, message)).toEqual(message);
  });
});
