/**
 * Identity-layer errors: one class, one closed code union, in the style of
 * connect-es (and of @parley/session's SessionError): the code is part of the
 * message (`[expired] …`), the original error is kept as `cause`, and no
 * message carries key material — only field names, lengths and codes.
 *
 * Certificate rejections map one-to-one onto the session rejection codes of
 * the same name (DESIGN.md "SecureMessage": revoked, expired, …), so a caller
 * can forward `error.code` without a translation table.
 */

/**
 * Stable error codes. Callers switch on `error.code`, never on the message.
 *
 * - `malformed`            wrong type, length, encoding, range or structure of an input or field
 * - `unsupported_version`  certificate (or trust-bundle JSON) version is not one this implementation speaks
 * - `unknown_issuer`       the certificate's issuer key id is not in the trust bundle
 * - `bad_certificate`      the issuer's signature over the certificate TBS layout does not verify
 * - `expired`              now >= valid_until, or the issuer entry's own `notAfterMs` has passed
 * - `not_yet_valid`        now < valid_from
 * - `revoked`              the agent id or the certificate serial is revoked
 * - `identity_mismatch`    the certificate is for another agent than the one expected
 * - `revocation_stale`     revocation data is older than its freshness bound (or unavailable), or a
 *                          revocation list batch skips versions: fail closed
 * - `bad_signature`        a revocation list head's (§15.6) or a signed trust bundle document's (§15.9)
 *                          issuer signature does not verify
 * - `rollback`             a trust bundle document older than (or a different one at) the version already held
 */
export type IdentityErrorCode =
  | 'malformed'
  | 'unsupported_version'
  | 'unknown_issuer'
  | 'bad_certificate'
  | 'expired'
  | 'not_yet_valid'
  | 'revoked'
  | 'identity_mismatch'
  | 'revocation_stale'
  | 'bad_signature'
  | 'rollback';

/** Every {@link IdentityErrorCode}, in the documented order. */
export const IDENTITY_ERROR_CODES: readonly IdentityErrorCode[] = Object.freeze([
  'malformed',
  'unsupported_version',
  'unknown_issuer',
  'bad_certificate',
  'expired',
  'not_yet_valid',
  'revoked',
  'identity_mismatch',
  'revocation_stale',
  'bad_signature',
  'rollback',
] as const);

/**
 * The single error type thrown by @parley/identity.
 *
 * @example
 * try { verifyCertificate(crypto, cert, options) }
 * catch (e) { if (isIdentityError(e, 'revoked')) refuse(); else throw e; }
 */
export class IdentityError extends Error {
  override readonly name = 'IdentityError';
  readonly code: IdentityErrorCode;

  /**
   * @param code stable code (see {@link IdentityErrorCode})
   * @param message detail for the local log; never sent to a peer
   * @param options `cause`: the underlying error, kept as `error.cause`
   */
  constructor(code: IdentityErrorCode, message: string, options?: { cause?: unknown }) {
    super(`[${code}] ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

/**
 * Type guard for {@link IdentityError}, optionally for one code.
 *
 * @param value anything caught
 * @param code when given, also require this code
 * @returns true when `value` is an IdentityError (with that code)
 */
export function isIdentityError(value: unknown, code?: IdentityErrorCode): value is IdentityError {
  return value instanceof IdentityError && (code === undefined || value.code === code);
}
