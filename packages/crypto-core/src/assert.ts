/**
 * Parley's one set of input assertions (after noble's `abytes`/`anumber`):
 * every public function of a package calls them first; each returns the
 * checked value; messages name the parameter, types and lengths, never
 * contents. The checks are written once, here; each package binds them to its
 * own error class with {@link createAssertions} (crypto-core: CryptoError with
 * `invalid_type` / `invalid_length` / `invalid_value`; identity: IdentityError
 * `malformed`; audit: AuditError `malformed`).
 */
import { CryptoError } from './errors.js';

/** What kind of check failed: the value's type, its length, or its value (range). */
export type AssertionKind = 'type' | 'length' | 'value';

/** Throws the binding package's error for a failed check. */
export type AssertionFailure = (kind: AssertionKind, message: string) => never;

/** Short description of a value's type for error messages (never its contents). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'Array';
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  return typeof value;
}

export const U64_MAX = (1n << 64n) - 1n;

/** The checks, bound to one package's error (see {@link createAssertions}). */
export interface Assertions {
  /** A Uint8Array, of one of `lengths` bytes when any are given. */
  bytes(value: unknown, name: string, ...lengths: number[]): Uint8Array;
  /** A Uint8Array whose length lies in [min, max]. */
  bytesRange(value: unknown, name: string, min: number, max: number): Uint8Array;
  /** A safe integer in [min, max] (default 0 .. 2^53-1): a millisecond timestamp, a count, a version. */
  safeInt(value: unknown, name: string, min?: number, max?: number): number;
  /** A bigint in [min, 2^53-1], returned as a number. */
  safeBigInt(value: unknown, name: string, min?: number): number;
  /** A safe integer in [min, max] given as a number or a bigint; returns a number. */
  intLike(value: unknown, name: string, min?: number, max?: number): number;
  /** An unsigned 64-bit counter given as a bigint or a safe non-negative integer; returns a bigint. */
  u64(value: unknown, name: string): bigint;
  /** A string. */
  string(value: unknown, name: string): string;
  /** A non-null, non-array object. */
  object(value: unknown, name: string): Record<string, unknown>;
  /** A function. */
  func<T extends (...args: never[]) => unknown>(value: unknown, name: string): T;
}

/**
 * The checks, throwing through `fail`.
 * @param fail throws the caller's error class for a failed check (it must not return)
 * @example
 * const check = createAssertions((_kind, message) => { throw new IdentityError('malformed', message); });
 * check.bytes(serial, 'serial', 16);
 */
export function createAssertions(fail: AssertionFailure): Assertions {
  const safeInt = (value: unknown, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) fail('type', `${name} must be a safe integer, got ${describe(value)}`);
    if (value < min || value > max) fail('value', `${name} must be in ${min}..${max}, got ${value}`);
    return value;
  };
  const bytes = (value: unknown, name: string, ...lengths: number[]): Uint8Array => {
    if (!(value instanceof Uint8Array)) fail('type', `${name} must be a Uint8Array, got ${describe(value)}`);
    if (lengths.length > 0 && !lengths.includes(value.length)) {
      const expected = lengths.length === 1 ? `${lengths[0]}` : `one of ${lengths.join(', ')}`;
      fail('length', `${name} must be ${expected} bytes, got ${value.length}`);
    }
    return value;
  };
  return {
    bytes,
    bytesRange(value, name, min, max) {
      const b = bytes(value, name);
      if (b.length < min || b.length > max) fail('length', `${name} must be ${min}..${max} bytes, got ${b.length}`);
      return b;
    },
    safeInt,
    safeBigInt(value, name, min = 0) {
      if (typeof value !== 'bigint') fail('type', `${name} must be a bigint, got ${describe(value)}`);
      if (value < BigInt(min) || value > BigInt(Number.MAX_SAFE_INTEGER)) fail('value', `${name} must be in ${min}..2^53-1`);
      return Number(value);
    },
    intLike(value, name, min = 0, max = Number.MAX_SAFE_INTEGER) {
      if (typeof value === 'bigint') {
        if (value < BigInt(min) || value > BigInt(max)) fail('value', `${name} must be in ${min}..${max}`);
        return Number(value);
      }
      return safeInt(value, name, min, max);
    },
    u64(value, name) {
      if (typeof value === 'number') {
        if (!Number.isSafeInteger(value) || value < 0) fail('value', `${name} must be an unsigned 64-bit integer`);
        return BigInt(value);
      }
      if (typeof value !== 'bigint') fail('type', `${name} must be a bigint, got ${describe(value)}`);
      if (value < 0n || value > U64_MAX) fail('value', `${name} must be in 0..2^64-1`);
      return value;
    },
    string(value, name) {
      if (typeof value !== 'string') fail('type', `${name} must be a string, got ${describe(value)}`);
      return value;
    },
    object(value, name) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('type', `${name} must be an object, got ${describe(value)}`);
      return value as Record<string, unknown>;
    },
    func<T extends (...args: never[]) => unknown>(value: unknown, name: string): T {
      if (typeof value !== 'function') fail('type', `${name} must be a function, got ${describe(value)}`);
      return value as T;
    },
  };
}

/**
 * Whether `value` is shaped like the ParleyCrypto object from `createCrypto()`
 * (a cheap structural check: `blake3`, `ed25519.sign` / `verify`, and the other
 * functions named in `also`).
 */
export function looksLikeParleyCrypto(value: unknown, also: readonly string[] = []): boolean {
  const c = value as ({ ed25519?: { sign?: unknown; verify?: unknown } | null } & Record<string, unknown>) | null | undefined;
  return (
    typeof c === 'object' &&
    c !== null &&
    typeof c['blake3'] === 'function' &&
    also.every((f) => typeof c[f] === 'function') &&
    typeof c.ed25519 === 'object' &&
    c.ed25519 !== null &&
    typeof c.ed25519.sign === 'function' &&
    typeof c.ed25519.verify === 'function'
  );
}

const CRYPTO_CODES = { type: 'invalid_type', length: 'invalid_length', value: 'invalid_value' } as const;
const check = createAssertions((kind, message) => {
  throw new CryptoError(CRYPTO_CODES[kind], message);
});

/** Asserts `value` is a Uint8Array (optionally of one of the given lengths). CryptoError `invalid_type` / `invalid_length`. */
export const abytes: Assertions['bytes'] = check.bytes;
/** Asserts a Uint8Array whose length lies in [min, max]. */
export const abytesRange: Assertions['bytesRange'] = check.bytesRange;
/** Asserts a safe non-negative integer in [min, max]. CryptoError `invalid_type` / `invalid_value`. */
export const anumber: Assertions['safeInt'] = check.safeInt;
/** Asserts an unsigned 64-bit counter given as bigint (or a safe non-negative integer). */
export const au64: Assertions['u64'] = check.u64;
/** Asserts a string. */
export const astring: Assertions['string'] = check.string;
