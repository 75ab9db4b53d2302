/**
 * Configuration problems, all at once: a program's settings are checked in
 * full and every problem is reported together (one ConfigError, one line),
 * rather than the first only, so an operator fixes a file in one pass.
 *
 * The codes are Parley error codes (`malformed`, `failed_precondition`,
 * `not_found`), so `exitCodeOf(error.code)` gives the exit code, and
 * `@parley/rpc`'s `RpcError.from` keeps a ConfigError's code and line.
 */

/** One configuration problem: its error code (what a CLI exits with) and a line naming the setting. */
export interface ConfigProblem {
  readonly code: 'malformed' | 'failed_precondition' | 'not_found';
  readonly message: string;
}

/**
 * Every problem of a configuration at once (not only the first): its message
 * lists them all, `; `-separated (one line), and `problems` holds them one by
 * one. Its code is the first present in this order: `malformed` (a bad
 * value), `failed_precondition` (an unsafe combination), `not_found` (a file).
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code: ConfigProblem['code'];
  /** The message without the `[code] ` prefix (one line). */
  readonly details: string;
  /** The same line (the field `RpcError` has), for callers that print local details. */
  readonly localDetails: string;
  readonly problems: readonly ConfigProblem[];

  /**
   * @param problems at least one
   * @param file the file every problem is about, named once in the message (`registry.json: …`); without it
   *   each problem names its own source (a key of a file, an environment variable)
   */
  constructor(problems: readonly ConfigProblem[], file?: string) {
    const code = (['malformed', 'failed_precondition', 'not_found'] as const).find((c) => problems.some((p) => p.code === c)) ?? 'malformed';
    const list = problems.map((p) => p.message).join('; ');
    const message =
      problems.length === 1
        ? `${file === undefined ? '' : `${file}: `}${list}`
        : `${problems.length} problems in ${file ?? 'the configuration'}: ${list}`;
    super(`[${code}] ${message}`);
    this.code = code;
    this.details = message;
    this.localDetails = message;
    this.problems = problems;
  }
}

/** Collects problems; {@link ProblemList.take} throws them all as one ConfigError. */
export class ProblemList {
  readonly #problems: ConfigProblem[] = [];

  /** Records a problem; returns undefined, so a getter can `return problems.add(…)`. */
  add(code: ConfigProblem['code'], message: string): undefined {
    this.#problems.push({ code, message });
    return undefined;
  }

  /**
   * Runs `fn`; an error with a string `code` that it throws (a Parley error from a value or file check)
   * becomes a problem instead: `not_found` and `failed_precondition` keep their code, any other is
   * `malformed`. Anything else is rethrown.
   */
  check<T>(fn: () => T): T | undefined {
    try {
      return fn();
    } catch (error) {
      if (error instanceof ConfigError) {
        this.#problems.push(...error.problems);
        return undefined;
      }
      const e = error as { code?: unknown; localDetails?: unknown; details?: unknown; message?: unknown } | null;
      if (error === null || typeof e?.code !== 'string') throw error;
      const line = typeof e.localDetails === 'string' ? e.localDetails : typeof e.details === 'string' ? e.details : String(e.message).replace(/^\[[a-z_]+\] /, '');
      this.add(e.code === 'not_found' ? 'not_found' : e.code === 'failed_precondition' ? 'failed_precondition' : 'malformed', line);
      return undefined;
    }
  }

  get size(): number {
    return this.#problems.length;
  }

  /**
   * @param file the file every problem is about (see {@link ConfigError})
   * @throws ConfigError when there is any problem
   */
  take(file?: string): void {
    if (this.#problems.length > 0) throw new ConfigError([...this.#problems], file);
  }
}

/**
 * ` (did you mean 'x'?)` for an unknown key that differs from a known one only
 * in case and `_`/`-` (`rateBurst`, `rate-burst`), or by at most two edits
 * (`rate_brust`); empty otherwise.
 */
export function suggestKey(key: string, known: Iterable<string>): string {
  const norm = (k: string): string => k.toLowerCase().replace(/[-_]/g, '');
  const keys = [...known];
  const hit = keys.find((k) => norm(k) === norm(key)) ?? keys.find((k) => editDistance(k, key) <= 2);
  return hit === undefined ? '' : ` (did you mean '${hit}'?)`;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}
