// The one set of input assertions, bound to a package's error: every failure goes through `fail` with its
// kind, and messages name the parameter and the type or length, never the contents.
import { describe, expect, it } from 'vitest';
import { CryptoError, abytes, createAssertions, looksLikeParleyCrypto, type AssertionKind } from '../src/index.js';

class TestError extends Error {
  constructor(readonly kind: AssertionKind, message: string) {
    super(message);
  }
}
const check = createAssertions((kind, message) => {
  throw new TestError(kind, message);
});
const failure = (fn: () => unknown): { kind: AssertionKind; message: string } => {
  try {
    fn();
  } catch (e) {
    if (e instanceof TestError) return { kind: e.kind, message: e.message };
    throw e;
  }
  throw new Error('expected a failure');
};

describe('createAssertions', () => {
  it('returns the checked value and fails through the binding with a kind', () => {
    const b = new Uint8Array(16);
    expect(check.bytes(b, 'serial', 16)).toBe(b);
    expect(failure(() => check.bytes('secret-bytes', 'serial', 16))).toEqual({ kind: 'type', message: 'serial must be a Uint8Array, got string' });
    expect(failure(() => check.bytes(new Uint8Array(3), 'serial', 16))).toEqual({ kind: 'length', message: 'serial must be 16 bytes, got 3' });
    expect(failure(() => check.bytes(new Uint8Array(3), 'key', 16, 32)).message).toBe('key must be one of 16, 32 bytes, got 3');
    expect(failure(() => check.bytesRange(new Uint8Array(3), 'body', 4, 8))).toEqual({ kind: 'length', message: 'body must be 4..8 bytes, got 3' });
    expect(check.safeInt(5, 'n', 0, 9)).toBe(5);
    expect(failure(() => check.safeInt(1.5, 'n'))).toEqual({ kind: 'type', message: 'n must be a safe integer, got number' });
    expect(failure(() => check.safeInt(10, 'n', 0, 9))).toEqual({ kind: 'value', message: 'n must be in 0..9, got 10' });
    expect(check.safeBigInt(7n, 'v')).toBe(7);
    expect(failure(() => check.safeBigInt(2n ** 60n, 'v')).message).toBe('v must be in 0..2^53-1');
    expect(check.intLike(3n, 'i')).toBe(3);
    expect(check.intLike(3, 'i')).toBe(3);
    expect(check.u64(3, 'c')).toBe(3n);
    expect(failure(() => check.u64(-1n, 'c')).message).toBe('c must be in 0..2^64-1');
    expect(failure(() => check.string(null, 's')).message).toBe('s must be a string, got null');
    expect(failure(() => check.object([], 'o')).message).toBe('o must be an object, got Array');
    expect(failure(() => check.func({}, 'f')).message).toBe('f must be a function, got Object');
  });

  it('crypto-core binds them to CryptoError codes', () => {
    expect(() => abytes(1, 'x')).toThrow(expect.objectContaining({ code: 'invalid_type' }) as Error);
    expect(() => abytes(new Uint8Array(1), 'x', 2)).toThrow(CryptoError);
  });

  it('recognises the shape of a ParleyCrypto object', () => {
    const fake = { blake3: () => 0, constantTimeEqual: () => true, ed25519: { sign: () => 0, verify: () => true } };
    expect(looksLikeParleyCrypto(fake)).toBe(true);
    expect(looksLikeParleyCrypto({ ...fake, constantTimeEqual: undefined }, ['constantTimeEqual'])).toBe(false);
    expect(looksLikeParleyCrypto({ blake3: () => 0 })).toBe(false);
    expect(looksLikeParleyCrypto(null)).toBe(false);
  });
});
