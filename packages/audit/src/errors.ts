/**
 * Audit errors: one class, one closed code union, in the style of connect-es
 * (and of @parley/identity's IdentityError): the code is part of the message
 * (`[removed] …`), the original error is kept as `cause`, and no message carries
 * key material — only field names, lengths, indexes and offsets.
 *
 * The chain-break codes (`modified` … `head_mismatch`) are also the `reason` of
 * a failed {@link ChainVerification}, so a caller can turn a result into an
 * error without a translation table.
 */

/**
 * Stable error codes. Callers switch on `error.code`, never on the message.
 *
 * - `malformed`        wrong type, length, pattern or range of an input or a stored field; a record that does not decode
 * - `modified`         an entry's bytes are not the bytes its writer signed
 * - `removed`          entries are missing: an index gap, or a log shorter than a signed tree head
 * - `inserted`         an entry that does not belong where it is: forged, a duplicate, or from a fork
 * - `reordered`        authentic entries out of order
 * - `bad_signature`    a signature does not verify under a trusted writer key, though the bytes are the ones the chain committed to (or a tree head's signature); or a stored entry an AuditLog refuses to adopt and extend
 * - `bad_link`         an authentic entry whose previous_hash is not the entry hash of the entry before it (a forked writer); or an append that does not extend the tip
 * - `head_mismatch`    the entries verify as a chain but do not hash to the root of the signed tree head for their size
 * - `torn_record`      a file ends in a partial or corrupt record (reported when it is cut on open; thrown when it may not be cut)
 * - `storage_failure`  an I/O or database operation failed, the file is locked by another writer, or the store or log is closed or poisoned
 * - `conflict`         an append raced another writer: the index is taken or the tip moved (catch up and retry)
 * - `not_found`        an index or tree size beyond the log, or a missing file or table
 * - `bad_proof`        an inclusion or consistency proof does not lead to the signed root
 * - `key_wiped`        the writer's secret key was wiped (`SecretKey.wipe()`) before something had to be signed with it
 *                      (an entry, a tree head, a checkpoint): nothing was signed or stored
 */
export type AuditErrorCode =
  | 'malformed'
  | 'modified'
  | 'removed'
  | 'inserted'
  | 'reordered'
  | 'bad_signature'
  | 'bad_link'
  | 'head_mismatch'
  | 'torn_record'
  | 'storage_failure'
  | 'conflict'
  | 'not_found'
  | 'bad_proof'
  | 'key_wiped';

/** Every {@link AuditErrorCode}, in the documented order. */
export const AUDIT_ERROR_CODES: readonly AuditErrorCode[] = Object.freeze([
  'malformed',
  'modified',
  'removed',
  'inserted',
  'reordered',
  'bad_signature',
  'bad_link',
  'head_mismatch',
  'torn_record',
  'storage_failure',
  'conflict',
  'not_found',
  'bad_proof',
  'key_wiped',
] as const);

/**
 * The single error type thrown by @parley/audit.
 *
 * @example
 * try { await log.append(fields) }
 * catch (e) { if (isAuditError(e, 'storage_failure')) alert(e); else throw e; }
 */
export class AuditError extends Error {
  override readonly name = 'AuditError';
  readonly code: AuditErrorCode;

  /**
   * @param code stable code (see {@link AuditErrorCode})
   * @param message detail for the local log
   * @param options `cause`: the underlying error, kept as `error.cause`
   */
  constructor(code: AuditErrorCode, message: string, options?: { cause?: unknown }) {
    super(`[${code}] ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

/**
 * Type guard for {@link AuditError}, optionally for one code.
 *
 * @param value anything caught
 * @param code when given, also require this code
 * @returns true when `value` is an AuditError (with that code)
 */
export function isAuditError(value: unknown, code?: AuditErrorCode): value is AuditError {
  return value instanceof AuditError && (code === undefined || value.code === code);
}

/**
 * Wraps a platform error (fs, pg, PGlite) as `storage_failure`, keeping it as
 * `cause`; an AuditError passes through unchanged. The one mapping from
 * platform errors to codes in this package.
 *
 * @param what the operation, for the message
 * @param cause the caught value
 * @returns the error to throw
 */
export function storageFailure(what: string, cause: unknown): AuditError {
  if (cause instanceof AuditError) return cause;
  const code = (cause as { code?: unknown } | null)?.code;
  const suffix = typeof code === 'string' && /^[A-Z0-9_]{2,32}$/.test(code) ? ` (${code})` : '';
  return new AuditError('storage_failure', `${what} failed${suffix}`, { cause });
}
