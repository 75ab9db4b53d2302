/**
 * The package's input checks: crypto-core's one set of assertions (`createAssertions`, as identity, session
 * and audit bind theirs), bound to ProtocolError `malformed`, and the two wrappers every entry point uses —
 * {@link asMalformed} (another package's "bad input" error, e.g. a CryptoError from a layout of an ill-sized
 * field, becomes a ProtocolError) and {@link verifying} (a verification answers false, never throws). So an
 * exported function rejects malformed input with a ProtocolError, never a raw TypeError. Messages name the
 * parameter and lengths, never contents. Not exported from the package.
 */
import { CryptoError, createAssertions, describeType, looksLikeParleyCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { REGISTRY_ID_BYTES } from '@parley/identity';
import { ProtocolError } from './errors.js';
import type { OperatorRequestTarget } from './operator-auth.js';

/** Short description of a value's type for error messages (never its contents). */
export const describe = describeType;

/** Throws `malformed`. */
export function malformed(message: string, cause?: unknown): never {
  throw new ProtocolError('malformed', message, cause === undefined ? undefined : { cause });
}

/** The checks (`bytes`, `object`, `string`, `safeInt`, `func`, …), each throwing ProtocolError `malformed`. */
export const check = createAssertions((_kind, message) => malformed(message));

/**
 * Asserts the ParleyCrypto object from `createCrypto()` (a cheap structural check: BLAKE3 and Ed25519, and the
 * other functions named in `also`).
 */
export function assertCrypto(value: unknown, also: readonly string[] = []): ParleyCrypto {
  if (!looksLikeParleyCrypto(value, also)) malformed(`crypto must be the ParleyCrypto object from createCrypto(), got ${describe(value)}`);
  return value as ParleyCrypto;
}

/** Asserts a signed request's target: an object with the 16-byte registry id, the method path and the request bytes. */
export function assertTarget(target: unknown): OperatorRequestTarget {
  const t = check.object(target, 'target');
  check.bytes(t['registryId'], 'target.registryId', REGISTRY_ID_BYTES);
  check.string(t['path'], 'target.path');
  check.bytes(t['body'], 'target.body');
  return target as OperatorRequestTarget;
}

/** Asserts an object, or undefined (an optional options argument: `{}` then). */
export function optionalObject(value: unknown, name: string): Record<string, unknown> {
  return value === undefined ? {} : check.object(value, name);
}

/**
 * Whether `error` is another Parley package's verdict on bad input: a CryptoError `invalid_*` (a layout's field
 * of the wrong type or length, a key of the wrong kind), or an IdentityError / SessionError `malformed`.
 */
function isBadInput(error: unknown): error is Error & { code: string } {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return false;
  if (error instanceof CryptoError) return code.startsWith('invalid_');
  return (error.name === 'IdentityError' || error.name === 'SessionError') && code === 'malformed';
}

/**
 * Runs `fn`, turning another package's verdict on bad input into ProtocolError `malformed` (`what: detail`, the
 * original as `cause`). Everything else passes through unchanged: a ProtocolError, a wiped key (CryptoError
 * `key_wiped`), a backend failure.
 */
export function asMalformed<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    if (isBadInput(cause)) malformed(`${what}: ${cause.message.replace(/^\[[a-z_]+\] /, '')}`, cause);
    throw cause;
  }
}

/** Runs a verification: true only when `fn` answers true; false when it answers anything else or throws. */
export function verifying(fn: () => boolean): boolean {
  try {
    return fn() === true;
  } catch {
    return false;
  }
}
