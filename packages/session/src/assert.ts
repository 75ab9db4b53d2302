/**
 * The package's input checks: crypto-core's one set of assertions (`createAssertions`, as identity and
 * audit bind theirs), bound to SessionError `malformed`, and the two conversions every entry point needs —
 * another package's error (a CryptoError from a layout, an IdentityError) into a SessionError. So an
 * exported function rejects with a SessionError, never a raw TypeError. Messages name the parameter and
 * lengths, never contents. Not exported from the package.
 */
import { createAssertions, describeType, looksLikeParleyCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { assertLocalIdentity as assertIdentity, isIdentityError } from '@parley/identity';
import { SessionError, detailOf, isSessionErrorCode } from './errors.js';
import type { LocalIdentity } from './session.js';

/** Short description of a value's type for error messages (never its contents). */
export const describe = describeType;

/** Throws `malformed`. */
export function malformed(message: string, cause?: unknown): never {
  throw new SessionError('malformed', message, cause === undefined ? undefined : { cause });
}

/** The checks (`bytes`, `object`, `safeInt`, `func`, …), each throwing SessionError `malformed`. */
export const check = createAssertions((_kind, message) => malformed(message));

/** Asserts the ParleyCrypto object from `createCrypto()` (a cheap structural check). */
export function assertCrypto(value: unknown, name = 'crypto'): ParleyCrypto {
  if (!looksLikeParleyCrypto(value)) malformed(`${name} must be the ParleyCrypto object from createCrypto(), got ${describe(value)}`);
  return value as ParleyCrypto;
}

/** Asserts an object, or undefined (an optional options argument). */
export function optionalObject(value: unknown, name: string): Record<string, unknown> {
  return value === undefined ? {} : check.object(value, name);
}

/**
 * Runs `fn`, turning another package's error into a SessionError: an IdentityError keeps its code when the
 * session layer has it (the codes are shared, PROTOCOL §11), anything else (a CryptoError from a layout of
 * ill-sized fields) is `malformed`, with `what` and the original as `cause`.
 */
export function asSessionError<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    throw toSessionError(what, cause);
  }
}

/** {@link asSessionError}'s conversion. */
function toSessionError(what: string, cause: unknown): SessionError {
  if (cause instanceof SessionError) return cause;
  if (isIdentityError(cause) && isSessionErrorCode(cause.code)) return new SessionError(cause.code, detailOf(cause), { cause });
  return new SessionError('malformed', `${what}: ${detailOf(cause)}`, { cause });
}

/**
 * Asserts that this agent's identity holds together — its signing key is the one its certificate names, and
 * its agent id the certificate's (@parley/identity's `assertLocalIdentity`, derived key compared in constant
 * time) — so that a misconfigured agent learns it here rather than from peers that refuse its handshakes
 * (`bad_binding`) and envelopes it never hears about.
 * @throws SessionError `malformed` (not an identity, no crypto), `identity_mismatch` (key or id not the certificate's)
 */
export function assertLocalIdentity(crypto: unknown, identity: LocalIdentity, name = 'identity'): LocalIdentity {
  assertCrypto(crypto);
  return asSessionError(name, () => assertIdentity(crypto as ParleyCrypto, identity, name));
}
