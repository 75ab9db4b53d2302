/**
 * Errors raised by @parley/crypto-core.
 *
 * One error class with a closed code union, in the style of connect-es: the
 * code is part of the message (`[invalid_length] …`), the original cause is kept
 * as `cause`, and no message ever contains key material — only parameter names,
 * expected and actual lengths.
 */

/**
 * Stable error codes. Callers switch on `error.code`, never on the message.
 *
 * - `invalid_type`     an argument has the wrong JavaScript type (e.g. a string where bytes are expected)
 * - `invalid_length`   a byte string has the wrong length, or a length parameter is out of range
 * - `invalid_encoding` a hex or base64url string does not decode
 * - `invalid_value`    an argument has the right type and length but a forbidden value (e.g. counter out of range)
 * - `decrypt_failed`   AEAD authentication failed: wrong key, nonce, associated data, or tampered ciphertext
 * - `weak_public_key`  X25519 produced the all-zero shared secret (low-order or invalid peer key)
 * - `key_wiped`        a SecretKey was used after `wipe()`
 * - `not_initialised`  reserved: the synchronous API was reached without the async initialiser
 * - `backend_failure`  the underlying library failed unexpectedly (its message is not exposed)
 */
export type CryptoErrorCode =
  | 'invalid_type'
  | 'invalid_length'
  | 'invalid_encoding'
  | 'invalid_value'
  | 'decrypt_failed'
  | 'weak_public_key'
  | 'key_wiped'
  | 'not_initialised'
  | 'backend_failure';

export const CRYPTO_ERROR_CODES: readonly CryptoErrorCode[] = [
  'invalid_type',
  'invalid_length',
  'invalid_encoding',
  'invalid_value',
  'decrypt_failed',
  'weak_public_key',
  'key_wiped',
  'not_initialised',
  'backend_failure',
];

/** The single error type thrown by crypto-core. */
export class CryptoError extends Error {
  override readonly name = 'CryptoError';
  readonly code: CryptoErrorCode;

  constructor(code: CryptoErrorCode, message: string, options?: { cause?: unknown }) {
    super(`[${code}] ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

/** Type guard for {@link CryptoError}, optionally for one code. */
export function isCryptoError(value: unknown, code?: CryptoErrorCode): value is CryptoError {
  return value instanceof CryptoError && (code === undefined || value.code === code);
}
