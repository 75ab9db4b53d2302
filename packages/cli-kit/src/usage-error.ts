/**
 * The usage error: the one class every Parley CLI throws for a mistake in how
 * it was called (an unknown command or option, a missing or malformed
 * argument). It exits 2 with one line on stderr and a pointer to `--help`.
 */

/** A mistake in how the program was called: exit code 2, one line, a pointer to `--help`. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  /** Stable code, for `--json` failure output. */
  readonly code = 'usage';
}

/**
 * True for a {@link UsageError} (including the ones the parser raises), nothing else.
 * @param error anything caught
 */
export function isUsageError(error: unknown): error is UsageError {
  return error instanceof UsageError;
}
