/**
 * Exit codes of Parley's command-line programs, and the one table from Parley
 * error codes (docs/PROTOCOL.md §11 and §15.8) to them.
 *
 * parley-registry and parley-gateway use the whole table; parley-audit keeps
 * its own meanings above 2 (1 verification failed, 3 storage error) but shares
 * 0 and 2, so a usage error exits 2 from every Parley program.
 */

/** Exit codes of every Parley CLI (also in the READMEs and in each program's `--help`). */
export const EXIT_CODES = Object.freeze({
  ok: 0,
  internal: 1,
  usage: 2,
  notFound: 3,
  alreadyExists: 4,
  permissionDenied: 5,
  invalidArgument: 6,
  unavailable: 7,
  failedPrecondition: 8,
  /** `check` commands: the server answered, and is not ready (a readiness check fails). No error code maps here. */
  notReady: 9,
} as const);

/** One of {@link EXIT_CODES}. */
export type ExitCode = (typeof EXIT_CODES)[keyof typeof EXIT_CODES];

/**
 * Error code → exit code. The keys are `RpcErrorCode`s of `@parley/rpc`
 * (this package imports nothing of Parley, so that it never pulls in gRPC;
 * tools/cli-consistency checks every key against `RPC_ERROR_CODES`).
 * A code not listed here is an internal error (1).
 */
export const EXIT_CODE_BY_ERROR_CODE: ReadonlyMap<string, ExitCode> = new Map<string, ExitCode>([
  ['not_found', EXIT_CODES.notFound],
  ['unknown_session', EXIT_CODES.notFound],
  ['already_exists', EXIT_CODES.alreadyExists],
  ['unauthenticated', EXIT_CODES.permissionDenied],
  ['permission_denied', EXIT_CODES.permissionDenied],
  ['bad_signature', EXIT_CODES.permissionDenied],
  ['unknown_issuer', EXIT_CODES.permissionDenied],
  ['bad_certificate', EXIT_CODES.permissionDenied],
  ['identity_mismatch', EXIT_CODES.permissionDenied],
  ['expired', EXIT_CODES.permissionDenied],
  ['replay', EXIT_CODES.permissionDenied],
  ['stale_timestamp', EXIT_CODES.permissionDenied],
  ['future_timestamp', EXIT_CODES.permissionDenied],
  ['malformed', EXIT_CODES.invalidArgument],
  ['unsupported_version', EXIT_CODES.invalidArgument],
  ['too_large', EXIT_CODES.invalidArgument],
  ['unavailable', EXIT_CODES.unavailable],
  ['deadline_exceeded', EXIT_CODES.unavailable],
  ['failed_precondition', EXIT_CODES.failedPrecondition],
  ['challenge_invalid', EXIT_CODES.failedPrecondition],
  ['revocation_stale', EXIT_CODES.failedPrecondition],
  ['conflict', EXIT_CODES.failedPrecondition],
  ['quota_exceeded', EXIT_CODES.failedPrecondition],
  ['rotation_required', EXIT_CODES.failedPrecondition],
  ['rollback', EXIT_CODES.failedPrecondition],
  ['join_token_invalid', EXIT_CODES.permissionDenied],
  ['join_token_expired', EXIT_CODES.permissionDenied],
  ['join_token_used', EXIT_CODES.permissionDenied],
]);

/**
 * The exit code for an error code: a refused credential is 5, bad input 6, an
 * unreachable server 7, …; anything unlisted 1.
 * @param code a Parley error code (`RpcErrorCode`)
 * @returns its exit code
 * @example exitCodeOf('not_found') // 3
 */
export function exitCodeOf(code: string): ExitCode {
  return EXIT_CODE_BY_ERROR_CODE.get(code) ?? EXIT_CODES.internal;
}
