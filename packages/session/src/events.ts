/**
 * Security events: every rejected security check is reported to a sink with
 * what an operator needs (code, session, sender, peer) and never any key
 * material or payload content.
 */
import type { SessionErrorCode } from './errors.js';

export interface SecurityEvent {
  readonly kind: 'security';
  readonly code: SessionErrorCode;
  /** What was being checked: 'handshake', 'message', 'state'. */
  readonly stage: 'handshake' | 'message' | 'state';
  readonly sessionId?: string | undefined;
  readonly senderId?: string | undefined;
  readonly recipientId?: string | undefined;
  readonly atMs: number;
  /** Local-only detail (the error message). Never sent to the peer. */
  readonly detail: string;
}

export type SecurityEventSink = (event: SecurityEvent) => void;

export const ignoreEvents: SecurityEventSink = () => undefined;
