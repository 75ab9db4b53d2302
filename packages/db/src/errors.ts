/**
 * Database errors: one class, one closed code union (the same codes as
 * Parley's error table, docs/PROTOCOL.md §15.8), so that a server maps one to
 * a gRPC status without a translation table (`@parley/rpc`'s `RpcError.from`
 * keeps its code and line). This package imports nothing of Parley, so the
 * database layer never pulls in gRPC.
 */

/**
 * Stable error codes. Callers switch on `error.code`, never on the message.
 *
 * - `malformed`            a bad argument (a schema name that is not a plain identifier)
 * - `unavailable`          the database cannot be reached or opened
 * - `failed_precondition`  the database's schema is newer than this build
 * - `internal`             the database returned something it never should (a non-integer, a gap in migrations)
 */
export type DbErrorCode = 'malformed' | 'unavailable' | 'failed_precondition' | 'internal';

/** Every {@link DbErrorCode}. */
export const DB_ERROR_CODES: readonly DbErrorCode[] = Object.freeze(['malformed', 'unavailable', 'failed_precondition', 'internal'] as const);

/** The error type of @parley/db. Messages name tables, versions and redacted locations, never values or passwords. */
export class DbError extends Error {
  override readonly name = 'DbError';
  readonly code: DbErrorCode;
  /** The message without the `[code] ` prefix. */
  readonly details: string;

  /**
   * @param code stable code (see {@link DbErrorCode})
   * @param details one line: what failed (never a password or a row's contents)
   * @param options `cause`: the driver's error, kept as `error.cause`
   */
  constructor(code: DbErrorCode, details: string, options?: { cause?: unknown }) {
    super(`[${code}] ${details}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = details;
  }
}

/**
 * Type guard for {@link DbError}, optionally for one code.
 * @param value anything caught
 * @param code when given, also require this code
 */
export function isDbError(value: unknown, code?: DbErrorCode): value is DbError {
  return value instanceof DbError && (code === undefined || value.code === code);
}
