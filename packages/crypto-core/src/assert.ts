/**
 * Tiny assertion helpers (after noble's `abytes`/`anumber`): every public
 * function calls them first; each returns the checked value. Messages name the
 * parameter and lengths, never contents.
 */
import { CryptoError } from './errors.js';

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'Array';
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  return typeof value;
}

/** Asserts `value` is a Uint8Array (optionally of one of the given lengths). */
export function abytes(value: unknown, name: string, ...lengths: number[]): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new CryptoError('invalid_type', `${name} must be a Uint8Array, got ${describe(value)}`);
  }
  if (lengths.length > 0 && !lengths.includes(value.length)) {
    const expected = lengths.length === 1 ? `${lengths[0]}` : `one of ${lengths.join(', ')}`;
    throw new CryptoError('invalid_length', `${name} must be ${expected} bytes, got ${value.length}`);
  }
  return value;
}

/** Asserts a Uint8Array whose length lies in [min, max]. */
export function abytesRange(value: unknown, name: string, min: number, max: number): Uint8Array {
  const bytes = abytes(value, name);
  if (bytes.length < min || bytes.length > max) {
    throw new CryptoError('invalid_length', `${name} must be ${min}..${max} bytes, got ${bytes.length}`);
  }
  return bytes;
}

/** Asserts a safe non-negative integer in [min, max]. */
export function anumber(value: unknown, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new CryptoError('invalid_type', `${name} must be a safe integer, got ${describe(value)}`);
  }
  if (value < min || value > max) {
    throw new CryptoError('invalid_value', `${name} must be in ${min}..${max}, got ${value}`);
  }
  return value;
}

export const U64_MAX = (1n << 64n) - 1n;

/** Asserts an unsigned 64-bit counter given as bigint (or a safe non-negative integer). */
export function au64(value: unknown, name: string): bigint {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new CryptoError('invalid_value', `${name} must be an unsigned 64-bit integer`);
    }
    return BigInt(value);
  }
  if (typeof value !== 'bigint') {
    throw new CryptoError('invalid_type', `${name} must be a bigint, got ${describe(value)}`);
  }
  if (value < 0n || value > U64_MAX) {
    throw new CryptoError('invalid_value', `${name} must be in 0..2^64-1`);
  }
  return value;
}

/** Asserts a string. */
export function astring(value: unknown, name: string): string {
  if (typeof value !== 'string') {
    throw new CryptoError('invalid_type', `${name} must be a string, got ${describe(value)}`);
  }
  return value;
}
