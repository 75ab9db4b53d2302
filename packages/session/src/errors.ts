/**
 * Session-layer errors: one class, one closed code union. These codes are the
 * stable rejection codes of the protocol (docs/PROTOCOL.md §11); the gateway
 * maps them to gRPC statuses. Messages never carry key material, and what is
 * sent to a remote peer is only the code, never the detail.
 */

/**
 * - `malformed`            structure, length, encoding or range of a field is wrong
 * - `unsupported_version`  version field is not one this implementation speaks
 * - `unknown_session`      no session with that id (or it was closed)
 * - `bad_signature`        Ed25519 envelope signature does not verify
 * - `bad_tag`              HMAC-SHA256 auth tag does not verify
 * - `decrypt_failed`       AEAD (or Noise) decryption failed
 * - `replay`               nonce already seen, left of the window, or message hash seen
 * - `stale_timestamp`      timestamp older than the skew bound allows
 * - `future_timestamp`     timestamp further in the future than the skew bound allows
 * - `revoked`              certificate (by agent id or serial) is revoked
 * - `expired`              certificate past valid_until, or session past its lifetime
 * - `not_yet_valid`        certificate before valid_from
 * - `unknown_issuer`       certificate issuer not in the trust bundle
 * - `bad_certificate`      certificate signature or contents invalid
 * - `identity_mismatch`    certificate is for another agent than the one expected / routed
 * - `bad_binding`          handshake identity signature does not cover this Noise static key
 * - `bad_commitment`       decrypted payload does not match the signed payload commitment
 * - `revocation_stale`     revocation data is older than its freshness bound (fail closed)
 * - `handshake_failed`     handshake out of order, wrong turn, or already failed (poisoned)
 * - `nonce_exhausted`      counter reached the reserved range; the session must be renewed
 * - `too_large`            message exceeds the size limit
 * - `policy_denied`        local policy refused the peer or message
 * - `rate_limited`         peer exceeded its rate limit
 * - `state_corrupt`        sealed session state does not open or does not parse
 */
export type SessionErrorCode =
  | 'malformed'
  | 'unsupported_version'
  | 'unknown_session'
  | 'bad_signature'
  | 'bad_tag'
  | 'decrypt_failed'
  | 'replay'
  | 'stale_timestamp'
  | 'future_timestamp'
  | 'revoked'
  | 'expired'
  | 'not_yet_valid'
  | 'unknown_issuer'
  | 'bad_certificate'
  | 'identity_mismatch'
  | 'bad_binding'
  | 'bad_commitment'
  | 'revocation_stale'
  | 'handshake_failed'
  | 'nonce_exhausted'
  | 'too_large'
  | 'policy_denied'
  | 'rate_limited'
  | 'state_corrupt';

/** Every code, once (the type makes the table complete). */
const CODE_TABLE: Readonly<Record<SessionErrorCode, true>> = {
  malformed: true,
  unsupported_version: true,
  unknown_session: true,
  bad_signature: true,
  bad_tag: true,
  decrypt_failed: true,
  replay: true,
  stale_timestamp: true,
  future_timestamp: true,
  revoked: true,
  expired: true,
  not_yet_valid: true,
  unknown_issuer: true,
  bad_certificate: true,
  identity_mismatch: true,
  bad_binding: true,
  bad_commitment: true,
  revocation_stale: true,
  handshake_failed: true,
  nonce_exhausted: true,
  too_large: true,
  policy_denied: true,
  rate_limited: true,
  state_corrupt: true,
};
const CODES: ReadonlySet<string> = new Set(Object.keys(CODE_TABLE));

/** Whether `value` is one of the {@link SessionErrorCode}s. */
export function isSessionErrorCode(value: unknown): value is SessionErrorCode {
  return typeof value === 'string' && CODES.has(value);
}

/**
 * An error's message without its leading `[code] ` (every Parley error class puts its code there): what to
 * pass on when wrapping it under the same code, so that the code is printed once (`[unknown_issuer] …`, not
 * `[unknown_issuer] [unknown_issuer] …`).
 */
export function detailOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  const prefix = typeof code === 'string' ? `[${code}] ` : undefined;
  return prefix !== undefined && error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message;
}

export class SessionError extends Error {
  override readonly name = 'SessionError';
  readonly code: SessionErrorCode;

  constructor(code: SessionErrorCode, message: string, options?: { cause?: unknown }) {
    super(`[${code}] ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

export function isSessionError(value: unknown, code?: SessionErrorCode): value is SessionError {
  return value instanceof SessionError && (code === undefined || value.code === code);
}
