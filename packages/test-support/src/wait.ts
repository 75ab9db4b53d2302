/** Polling helpers for tests that wait on another process or an event loop. */

/**
 * Polls until `check` holds (it may be async: a database query); resolves with how long it took (a figure to report, never to assert on).
 * @throws Error naming `what` after `timeoutMs`
 */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5_000, what = 'condition', intervalMs = 10): Promise<number> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what} (${timeoutMs} ms)`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  return Date.now() - t0;
}

/** `waitFor` with the bound first (the process tests' spelling). */
export function within(timeoutMs: number, check: () => boolean | Promise<boolean>, what: string): Promise<number> {
  return waitFor(check, timeoutMs, what, 20);
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
