/**
 * The package's input checks: crypto-core's one set of assertions
 * (`createAssertions`), bound to AuditError `malformed` — never a raw
 * TypeError. Messages name the parameter and lengths, never contents. Not
 * exported from the package.
 */
import { CryptoError, createAssertions, describeType, looksLikeParleyCrypto, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { AuditError } from './errors.js';

/** Short description of a value's type for error messages (never its contents). */
export const describe = describeType;

/** Throws `malformed`. */
export function malformed(message: string, cause?: unknown): never {
  throw new AuditError('malformed', message, cause === undefined ? undefined : { cause });
}

const check = createAssertions((_kind, message) => malformed(message));

/** Asserts a Uint8Array, of exactly `length` bytes when given. */
export function assertBytes(value: unknown, name: string, length?: number): Uint8Array {
  return length === undefined ? check.bytes(value, name) : check.bytes(value, name, length);
}

/** Asserts a non-null, non-array object. */
export const assertObject = check.object;

/** Asserts a safe integer in [min, max]. */
export const assertSafeInt = check.safeInt;

/** Accepts a safe non-negative integer as a number or bigint; returns a number. */
export const assertIntLike = check.intLike;

/** Asserts a function. */
export const assertFunction = check.func;

/** Asserts something shaped like the ParleyCrypto object from `createCrypto()` (a cheap structural check). */
export function assertCrypto(value: unknown): ParleyCrypto {
  if (!looksLikeParleyCrypto(value, ['constantTimeEqual'])) malformed(`crypto must be the ParleyCrypto object from createCrypto(), got ${describe(value)}`);
  return value as ParleyCrypto;
}

/**
 * Asserts an Ed25519 key pair from crypto-core (`{ publicKey: 32 bytes, secretKey: SecretKey }`).
 * @throws AuditError `malformed`, `key_wiped` (a SecretKey that was wiped: it can sign nothing)
 */
export function assertKeyPair(value: unknown, name: string): Ed25519KeyPair {
  const kp = assertObject(value, name);
  assertBytes(kp['publicKey'], `${name}.publicKey`, 32);
  const sk = kp['secretKey'] as { kind?: unknown; unsafeBytes?: unknown; isWiped?: unknown } | null | undefined;
  if (typeof sk !== 'object' || sk === null || sk.kind !== 'ed25519' || typeof sk.unsafeBytes !== 'function') {
    malformed(`${name}.secretKey must be an ed25519 SecretKey`);
  }
  if (sk.isWiped === true) keyWiped(name);
  return value as Ed25519KeyPair;
}

/** Throws `key_wiped` for the key pair named `name`. */
function keyWiped(name: string, cause?: unknown): never {
  throw new AuditError('key_wiped', `${name}: the secret key was wiped; nothing can be signed with it`, cause === undefined ? undefined : { cause });
}

/**
 * Runs `fn`, turning a CryptoError (from a layout or a backend) into `malformed` — except a wiped key
 * (`key_wiped` stays `key_wiped`: a signature that could not be made, not bad input); AuditErrors pass through.
 */
export function asMalformed<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    if (cause instanceof AuditError) throw cause;
    if (cause instanceof CryptoError && cause.code === 'key_wiped') return keyWiped(what, cause);
    if (cause instanceof CryptoError) return malformed(`${what}: ${cause.message}`, cause);
    return malformed(`${what} failed`, cause);
  }
}

/** Asserts an iterable or async iterable (a string is iterable: its characters are then the items, each checked by the caller). */
export function assertIterable<T>(value: unknown, name: string): Iterable<T> | AsyncIterable<T> {
  const v = value as Partial<Iterable<T> & AsyncIterable<T>> | null | undefined;
  const sync = typeof v === 'string' || (typeof v === 'object' && v !== null && typeof v[Symbol.iterator] === 'function');
  const async = typeof v === 'object' && v !== null && typeof v[Symbol.asyncIterator] === 'function';
  if (!sync && !async) malformed(`${name} must be an iterable or async iterable, got ${describe(value)}`);
  return value as Iterable<T> | AsyncIterable<T>;
}

/** Asserts a Merkle hash path: an array of at most `max` 32-byte hashes. */
export function assertHashPath(value: unknown, name: string, max: number): readonly Uint8Array[] {
  if (!Array.isArray(value)) malformed(`${name} must be an array of hashes, got ${describe(value)}`);
  if (value.length > max) malformed(`${name} has ${value.length} hashes, more than ${max}`);
  value.forEach((h: unknown, i) => assertBytes(h, `${name}[${i}]`, 32));
  return value as Uint8Array[];
}
