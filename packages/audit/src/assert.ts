/**
 * Internal assertion helpers (after noble's `abytes` / `anumber`): each public
 * function calls them first, each returns the checked value, and each failure
 * is an AuditError `malformed` — never a raw TypeError. Messages name the
 * parameter and lengths, never contents. Not exported from the package.
 */
import { CryptoError, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { AuditError } from './errors.js';

/** Short description of a value's type for error messages (never its contents). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'Array';
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  return typeof value;
}

/** Throws `malformed`. */
export function malformed(message: string, cause?: unknown): never {
  throw new AuditError('malformed', message, cause === undefined ? undefined : { cause });
}

/** Asserts a Uint8Array, of exactly `length` bytes when given. */
export function assertBytes(value: unknown, name: string, length?: number): Uint8Array {
  if (!(value instanceof Uint8Array)) malformed(`${name} must be a Uint8Array, got ${describe(value)}`);
  if (length !== undefined && value.length !== length) malformed(`${name} must be ${length} bytes, got ${value.length}`);
  return value;
}

/** Asserts a non-null, non-array object. */
export function assertObject(value: unknown, name: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    malformed(`${name} must be an object, got ${describe(value)}`);
  }
  return value as Record<string, unknown>;
}

/** Asserts a safe integer in [min, max]. */
export function assertSafeInt(value: unknown, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) malformed(`${name} must be a safe integer, got ${describe(value)}`);
  if (value < min || value > max) malformed(`${name} must be in ${min}..${max}, got ${value}`);
  return value;
}

/** Accepts a safe non-negative integer as a number or bigint; returns a number. */
export function assertIntLike(value: unknown, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value === 'bigint') {
    if (value < BigInt(min) || value > BigInt(max)) malformed(`${name} must be in ${min}..${max}`);
    return Number(value);
  }
  return assertSafeInt(value, name, min, max);
}

/** Asserts a function. */
export function assertFunction<T extends (...args: never[]) => unknown>(value: unknown, name: string): T {
  if (typeof value !== 'function') malformed(`${name} must be a function, got ${describe(value)}`);
  return value as T;
}

/** Asserts something shaped like the ParleyCrypto object from `createCrypto()` (a cheap structural check). */
export function assertCrypto(value: unknown): ParleyCrypto {
  const c = value as { blake3?: unknown; constantTimeEqual?: unknown; ed25519?: { sign?: unknown; verify?: unknown } } | null | undefined;
  if (
    typeof c !== 'object' ||
    c === null ||
    typeof c.blake3 !== 'function' ||
    typeof c.constantTimeEqual !== 'function' ||
    typeof c.ed25519 !== 'object' ||
    c.ed25519 === null ||
    typeof c.ed25519.sign !== 'function' ||
    typeof c.ed25519.verify !== 'function'
  ) {
    malformed(`crypto must be the ParleyCrypto object from createCrypto(), got ${describe(value)}`);
  }
  return value as ParleyCrypto;
}

/** Asserts an Ed25519 key pair from crypto-core (`{ publicKey: 32 bytes, secretKey: SecretKey }`). */
export function assertKeyPair(value: unknown, name: string): Ed25519KeyPair {
  const kp = assertObject(value, name);
  assertBytes(kp['publicKey'], `${name}.publicKey`, 32);
  const sk = kp['secretKey'] as { kind?: unknown; unsafeBytes?: unknown } | null | undefined;
  if (typeof sk !== 'object' || sk === null || sk.kind !== 'ed25519' || typeof sk.unsafeBytes !== 'function') {
    malformed(`${name}.secretKey must be an ed25519 SecretKey`);
  }
  return value as Ed25519KeyPair;
}

/** Runs `fn`, turning a CryptoError (from a layout or a backend) into `malformed`; AuditErrors pass through. */
export function asMalformed<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    if (cause instanceof AuditError) throw cause;
    if (cause instanceof CryptoError) return malformed(`${what}: ${cause.message}`, cause);
    return malformed(`${what} failed`, cause);
  }
}
