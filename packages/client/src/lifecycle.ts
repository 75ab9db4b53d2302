/**
 * Where an agent stands: running, closed by its application, or stopped for good by an error it cannot
 * recover from (fail closed). Written by the Agent facade only; read by the outbox, inbox, handshakes and link.
 */
import { ClientError } from './errors.js';

export class Lifecycle {
  /** `close()` was called. */
  closed = false;
  /** The error that stopped the agent for good, if any. */
  fatal: ClientError | undefined;

  /** Closed or stopped: nothing new may start. */
  get stopped(): boolean {
    return this.closed || this.fatal !== undefined;
  }

  /** @throws ClientError `cancelled` after close, or the error that stopped the agent */
  assertUsable(): void {
    if (this.closed) throw new ClientError('cancelled', 'agent closed');
    if (this.fatal !== undefined) throw this.fatal;
  }
}
