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
