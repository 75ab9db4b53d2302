/**
 * The package's input checks: crypto-core's one set of assertions
 * (`createAssertions`), bound to IdentityError `malformed` — never a raw
 * TypeError. Messages name the parameter and lengths, never contents. Not
 * exported from the package.
 */
import { createAssertions, describeType, looksLikeParleyCrypto } from '@parley/crypto-core';
import { IdentityError } from './errors.js';

/** Short description of a value's type for error messages (never its contents). */
export const describe = describeType;

/** Throws `malformed`. */
export function malformed(message: string, cause?: unknown): never {
  throw new IdentityError('malformed', message, cause === undefined ? undefined : { cause });
}

const check = createAssertions((_kind, message) => malformed(message));

/** Asserts a Uint8Array, of exactly `length` bytes when given. */
export function assertBytes(value: unknown, name: string, length?: number): Uint8Array {
  return length === undefined ? check.bytes(value, name) : check.bytes(value, name, length);
}

/** Asserts a non-null, non-array object. */
export const assertObject = check.object;

/** Asserts an array (its elements are the caller's to check). */
export function assertArray(value: unknown, name: string): readonly unknown[] {
  if (!Array.isArray(value)) malformed(`${name} must be an array, got ${describe(value)}`);
  return value;
}

/** Asserts a safe integer in [min, max] (a millisecond timestamp, a count, a version). */
export const assertSafeInt = check.safeInt;

/** Asserts a bigint in the safe-integer range [min, MAX_SAFE_INTEGER] and returns it as a number. */
export const assertSafeBigInt = check.safeBigInt;

/** Accepts a millisecond time as a safe integer number or bigint; returns a number. */
export function assertMs(value: unknown, name: string): number {
  return typeof value === 'bigint' ? check.safeBigInt(value, name) : check.safeInt(value, name);
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
  if (!looksLikeParleyCrypto(value)) malformed(`crypto must be the ParleyCrypto object from createCrypto(), got ${describe(value)}`);
  return value;
}
