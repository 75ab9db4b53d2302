/**
 * Waits `ms` milliseconds, or until `signal` aborts — whichever comes first; never rejects (a loop that
 * backs off between retries checks its own signal after it). The timer is cleared on abort.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
