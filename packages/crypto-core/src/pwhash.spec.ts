// Argon2id password hashing (crypto_pwhash): cross-checked against an
// independent implementation (hash-wasm's argon2id, a different code base
// than libsodium's) at several cost settings, plus the input checks.
import { argon2id } from 'hash-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CryptoError,
  PWHASH_MEMLIMIT_MIN,
  PWHASH_OPSLIMIT_MIN,
  PWHASH_SALT_BYTES,
  SecretKey,
  createCrypto,
  toHex,
  utf8,
  type ParleyCrypto,
} from './index.js';

const WRONG_TYPES: unknown[] = [undefined, null, 0, 1n, 'bytes', [1, 2, 3], {}, new ArrayBuffer(16)];

function expectCode(fn: () => unknown, code: CryptoError['code']): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, `expected a CryptoError with code ${code}`).toBeInstanceOf(CryptoError);
  expect((thrown as CryptoError).code).toBe(code);
}

describe.each(['libsodium', 'node', 'auto'] as const)('pwhash (Argon2id) with backend %s', (backend) => {
  let c: ParleyCrypto;
  beforeAll(async () => {
    c = await createCrypto({ backend });
  });

  it.each([
    { opsLimit: 1, memLimit: 8192, length: 32 },
    { opsLimit: 2, memLimit: 1024 * 1024, length: 32 },
    { opsLimit: 3, memLimit: 64 * 1024, length: 64 },
    { opsLimit: 1, memLimit: 8192, length: 16 },
  ])('matches hash-wasm argon2id at %o', async ({ opsLimit, memLimit, length }) => {
    const password = utf8('correct horse battery staple');
    const salt = Uint8Array.from({ length: PWHASH_SALT_BYTES }, (_, i) => i * 7);
    const key = c.pwhash(password, salt, { opsLimit, memLimit, length });
    const expected = await argon2id({
      password,
      salt,
      parallelism: 1, // crypto_pwhash uses one lane
      iterations: opsLimit,
      memorySize: memLimit / 1024, // KiB
      hashLength: length,
      outputType: 'hex',
    });
    expect(key).toBeInstanceOf(SecretKey);
    expect(key.kind).toBe('aead');
    expect(toHex(key.unsafeBytes())).toBe(expected);
  });

  it('depends on every input', () => {
    const o = { opsLimit: PWHASH_OPSLIMIT_MIN, memLimit: PWHASH_MEMLIMIT_MIN };
    const salt = new Uint8Array(16);
    const base = toHex(c.pwhash(utf8('pw'), salt, o).unsafeBytes());
    expect(toHex(c.pwhash(utf8('pW'), salt, o).unsafeBytes())).not.toBe(base);
    expect(toHex(c.pwhash(utf8('pw'), salt.map((_, i) => (i === 15 ? 1 : 0)), o).unsafeBytes())).not.toBe(base);
    expect(toHex(c.pwhash(utf8('pw'), salt, { ...o, opsLimit: 2 }).unsafeBytes())).not.toBe(base);
    expect(toHex(c.pwhash(utf8('pw'), salt, { ...o, memLimit: 16384 }).unsafeBytes())).not.toBe(base);
    expect(c.pwhash(new Uint8Array(0), salt, { ...o, kind: 'generic' }).kind).toBe('generic');
  });

  it('validates every input with typed errors', () => {
    const salt = new Uint8Array(16);
    const o = { opsLimit: 1, memLimit: 8192 };
    for (const bad of WRONG_TYPES) {
      expectCode(() => c.pwhash(bad as Uint8Array, salt, o), 'invalid_type');
      expectCode(() => c.pwhash(utf8('pw'), bad as Uint8Array, o), 'invalid_type');
    }
    expectCode(() => c.pwhash(utf8('pw'), new Uint8Array(15), o), 'invalid_length');
    expectCode(() => c.pwhash(utf8('pw'), new Uint8Array(17), o), 'invalid_length');
    expectCode(() => c.pwhash(new Uint8Array(4097), salt, o), 'invalid_length');
    expectCode(() => c.pwhash(utf8('pw'), salt, { ...o, opsLimit: 0 }), 'invalid_value');
    expectCode(() => c.pwhash(utf8('pw'), salt, { ...o, opsLimit: 17 }), 'invalid_value');
    expectCode(() => c.pwhash(utf8('pw'), salt, { ...o, opsLimit: 1.5 }), 'invalid_type');
    expectCode(() => c.pwhash(utf8('pw'), salt, { ...o, memLimit: 4096 }), 'invalid_value');
    expectCode(() => c.pwhash(utf8('pw'), salt, { ...o, memLimit: 2 ** 31 }), 'invalid_value');
    expectCode(() => c.pwhash(utf8('pw'), salt, { ...o, memLimit: 8193 }), 'invalid_value');
    expectCode(() => c.pwhash(utf8('pw'), salt, { ...o, length: 15 }), 'invalid_value');
    expectCode(() => c.pwhash(utf8('pw'), salt, { ...o, length: 65 }), 'invalid_value');
    expectCode(() => c.pwhash(utf8('pw'), salt, null as unknown as object), 'invalid_type');
    expectCode(() => c.pwhash(utf8('pw'), salt, { ...o, kind: 'bogus' as never }), 'invalid_value');
  });
});
