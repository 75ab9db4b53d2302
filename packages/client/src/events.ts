/**
 * The agent's event sink: forwards AgentEvents to the application's `onEvent` (a listener's failure never
 * breaks the agent), and captures the session events a call emits synchronously, so the caller can
 * reclassify them (a replayed handshake frame or envelope is a `duplicate`, not a security event).
 */
import type { SessionManagerEvent } from '@parley/session';
import type { AgentEvent } from './agent-options.js';

export class AgentEvents {
  readonly #onEvent: ((event: AgentEvent) => void) | undefined;
  #capture: SessionManagerEvent[] | undefined;

  constructor(onEvent: ((event: AgentEvent) => void) | undefined) {
    this.#onEvent = onEvent;
  }

  emit(event: AgentEvent): void {
    try {
      this.#onEvent?.(event);
    } catch {
      // A listener's failure must not break the agent.
    }
  }

  /** A session manager event: collected while a {@link captured} call runs, forwarded otherwise. */
  session(event: SessionManagerEvent): void {
    if (this.#capture !== undefined) this.#capture.push(event);
    else this.emit(event);
  }

  /** Runs `fn`, collecting the session events it emits synchronously instead of forwarding them. */
  captured(fn: () => void): SessionManagerEvent[] {
    const events: SessionManagerEvent[] = [];
    const outer = this.#capture;
    this.#capture = events;
    try {
      fn();
    } finally {
      this.#capture = outer;
    }
    return events;
  }
}
