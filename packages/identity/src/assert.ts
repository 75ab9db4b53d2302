/**
 * Internal assertion helpers (after noble's `abytes` / `anumber`): each public
 * function calls them first, each returns the checked value, and each failure
 * is an IdentityError `malformed` — never a raw TypeError. Messages name the
 * parameter and lengths, never contents. Not exported from the package.
 */
import { IdentityError } from './errors.js';

/** Short description of a value's type for error messages (never its contents). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'Array';
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  return typeof value;
}

/** Throws `malformed`. */
export function malformed(message: string, cause?: unknown): never {
  throw new IdentityError('malformed', message, cause === undefined ? undefined : { cause });
}

/** Asserts a Uint8Array, of exactly `length` bytes when given. */
export function assertBytes(value: unknown, name: string, length?: number): Uint8Array {
  if (!(value instanceof Uint8Array)) malformed(`${name} must be a Uint8Array, got ${describe(value)}`);
  if (length !== undefined && value.length !== length) {
    malformed(`${name} must be ${length} bytes, got ${value.length}`);
  }
  return value;
}

/** Asserts a non-null, non-array object. */
export function assertObject(value: unknown, name: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    malformed(`${name} must be an object, got ${describe(value)}`);
  }
  return value as Record<string, unknown>;
}

/** Asserts a safe integer in [min, max] (a millisecond timestamp, a count, a version). */
export function assertSafeInt(value: unknown, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    malformed(`${name} must be a safe integer, got ${describe(value)}`);
  }
  if (value < min || value > max) malformed(`${name} must be in ${min}..${max}, got ${value}`);
  return value;
}

/** Asserts a bigint in the safe-integer range [min, MAX_SAFE_INTEGER] and returns it as a number. */
export function assertSafeBigInt(value: unknown, name: string, min = 0): number {
  if (typeof value !== 'bigint') malformed(`${name} must be a bigint, got ${describe(value)}`);
  if (value < BigInt(min) || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    malformed(`${name} must be in ${min}..2^53-1`);
  }
  return Number(value);
}

/** Accepts a millisecond time as a safe integer number or bigint; returns a number. */
export function assertMs(value: unknown, name: string): number {
  return typeof value === 'bigint' ? assertSafeBigInt(value, name) : assertSafeInt(value, name);
}

/** A copy of `bytes` (inputs are copied so a caller's later mutation changes nothing here). */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/** Runs `fn`, turning any non-IdentityError (a CryptoError from a layout, say) into `malformed`. */
export function asMalformed<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    if (cause instanceof IdentityError) throw cause;
    return malformed(`${what} failed`, cause);
  }
}

/** Asserts something shaped like the ParleyCrypto object from `createCrypto()` (a cheap structural check). */
export function assertCrypto<T>(value: T): T {
  const c = value as { blake3?: unknown; ed25519?: { sign?: unknown; verify?: unknown } } | null | undefined;
  if (
    typeof c !== 'object' ||
    c === null ||
    typeof c.blake3 !== 'function' ||
    typeof c.ed25519 !== 'object' ||
    c.ed25519 === null ||
    typeof c.ed25519.sign !== 'function' ||
    typeof c.ed25519.verify !== 'function'
  ) {
    malformed(`crypto must be the ParleyCrypto object from createCrypto(), got ${describe(value)}`);
  }
  return value;
}
