/**
 * What Parley's command-line programs (parley-registry, parley-gateway) share:
 * one table of exit codes, the mapping from error codes to them, the usage
 * error, and the entry point that runs `main` only when the file is executed.
 */
import type { RpcErrorCode } from './errors.js';

/** Exit codes of every Parley CLI (also in the apps' READMEs). */
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
});

/** The exit code for an error code: a refused credential is 5, bad input 6, an unreachable server 7, … */
export function exitCodeOf(code: RpcErrorCode): number {
  switch (code) {
    case 'not_found':
    case 'unknown_session':
      return EXIT_CODES.notFound;
    case 'already_exists':
      return EXIT_CODES.alreadyExists;
    case 'unauthenticated':
    case 'permission_denied':
    case 'bad_signature':
    case 'unknown_issuer':
    case 'bad_certificate':
    case 'identity_mismatch':
    case 'expired':
    case 'replay':
    case 'stale_timestamp':
    case 'future_timestamp':
      return EXIT_CODES.permissionDenied;
    case 'malformed':
    case 'unsupported_version':
    case 'too_large':
      return EXIT_CODES.invalidArgument;
    case 'unavailable':
    case 'deadline_exceeded':
      return EXIT_CODES.unavailable;
    case 'failed_precondition':
    case 'challenge_invalid':
    case 'revocation_stale':
    case 'conflict':
    case 'quota_exceeded':
    case 'rotation_required':
      return EXIT_CODES.failedPrecondition;
    default:
      return EXIT_CODES.internal;
  }
}

/** A usage mistake: exit code 2 with a pointer to --help. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** True for a UsageError or a `node:util` parseArgs refusal (unknown option, missing value, …). */
export function isUsageError(error: unknown): error is Error {
  const code = (error as { code?: unknown } | null)?.code;
  return error instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'));
}

/**
 * Runs `main(argv)` and sets the exit code, but only when this process was
 * started on the CLI file itself (`…/cli.ts`, `…/cli.js` or the program's bin
 * name), never when a test imports it. An exception escaping `main` becomes
 * exit code 1 with its first line on stderr.
 */
export function runWhenExecuted(program: string, main: (argv: readonly string[]) => Promise<number>): void {
  const invokedAs = process.argv[1] ?? '';
  if (!/cli\.(ts|js)$/.test(invokedAs) && !invokedAs.endsWith(program)) return;
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`${program}: error: internal error: ${error instanceof Error ? (error.message.split('\n')[0] ?? '') : String(error)}\n`);
      process.exitCode = EXIT_CODES.internal;
    },
  );
}
