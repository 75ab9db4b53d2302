/**
 * Protocol-level errors: one class, one closed code union, in the style of
 * @parley/identity's IdentityError and @parley/session's SessionError. The
 * code is part of the message (`[unauthenticated] …`); messages name fields,
 * never their contents. A server turns one into an `RpcError` with the same
 * code (`@parley/rpc`).
 */

/**
 * Stable error codes. Callers switch on `error.code`, never on the message.
 *
 * - `unauthenticated`  operator or agent signature metadata is incomplete or malformed (§15.3)
 * - `malformed`        an argument of the wrong type, length or shape — a layout's field of the wrong length
 *                      (crypto-core's CryptoError `invalid_*` is turned into this, the original kept as `cause`), a
 *                      key of the wrong kind, a join token's text form that is not `pjt1.<32 hex>.<43 base64url>`
 *                      (§15.11), a saved trust bundle state that does not decode
 *
 * Not converted: a CryptoError `key_wiped` (a wiped signing key; not bad input) and the IdentityErrors of a trust
 * bundle a registry serves (`rollback`, `bad_signature`, …: TrustBundleFollower.refresh).
 */
export type ProtocolErrorCode = 'unauthenticated' | 'malformed';

/** Every {@link ProtocolErrorCode}. */
export const PROTOCOL_ERROR_CODES: readonly ProtocolErrorCode[] = Object.freeze(['unauthenticated', 'malformed'] as const);

/** The error type of @parley/protocol. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly code: ProtocolErrorCode;
  /** The message without the `[code] ` prefix. */
  readonly details: string;

  /**
   * @param code stable code (see {@link ProtocolErrorCode})
   * @param details one line naming what is wrong; never key material
   */
  constructor(code: ProtocolErrorCode, details: string, options?: { cause?: unknown }) {
    super(`[${code}] ${details}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = details;
  }
}

/**
 * Type guard for {@link ProtocolError}, optionally for one code.
 * @param value anything caught
 * @param code when given, also require this code
 */
export function isProtocolError(value: unknown, code?: ProtocolErrorCode): value is ProtocolError {
  return value instanceof ProtocolError && (code === undefined || value.code === code);
}
