/**
 * An AbortSignal for one attempt at a stream that must not go silent: it aborts when `parent` does, or when
 * {@link IdleWatchdog.touch} has not been called for `idleMs` (then {@link IdleWatchdog.timedOut} is true, so
 * the caller can tell silence from its own cancellation). Armed at construction; {@link IdleWatchdog.dispose}
 * clears the timer and the listener on `parent`. The timer is unref'd: it never keeps a process alive.
 */
export class IdleWatchdog {
  readonly #controller = new AbortController();
  readonly #parent: AbortSignal | undefined;
  readonly #idleMs: number;
  readonly #stop = (): void => this.#controller.abort();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timedOut = false;

  constructor(parent: AbortSignal | undefined, idleMs: number) {
    this.#parent = parent;
    this.#idleMs = idleMs;
    if (parent?.aborted === true) this.#controller.abort();
    else parent?.addEventListener('abort', this.#stop, { once: true });
    this.touch();
  }

  /** Aborts with the parent, or after `idleMs` without a {@link touch}. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether it aborted because nothing came for `idleMs`. */
  get timedOut(): boolean {
    return this.#timedOut;
  }

  /** Something came: the idle time starts again. */
  touch(): void {
    clearTimeout(this.#timer);
    if (this.#controller.signal.aborted) return;
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#controller.abort();
    }, this.#idleMs);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  /** Clears the timer and the listener on the parent. */
  dispose(): void {
    clearTimeout(this.#timer);
    this.#parent?.removeEventListener('abort', this.#stop);
  }
}
