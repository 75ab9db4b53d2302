/**
 * The SDK's one error type. Its codes are the protocol's stable codes
 * (docs/PROTOCOL.md §11, §15.8 — the same set as RpcError's): a refusal by the
 * gateway keeps the gateway's code (`policy_denied`, `rate_limited`, …), a
 * session failure keeps the session's (`handshake_failed`, `revoked`, …), and
 * the SDK itself adds no new codes:
 *
 * - `deadline_exceeded` a send got no verified receipt within its timeout
 * - `cancelled`         the agent was closed while the operation was pending
 * - `unavailable`       no gateway connection (and reconnection is off or gave up)
 */
import { RpcError, isRpcErrorCode, type RpcErrorCode } from '@parley/rpc';
import { SessionError } from '@parley/session';

export type ClientErrorCode = RpcErrorCode;

export class ClientError extends Error {
  override readonly name = 'ClientError';
  readonly code: ClientErrorCode;

  constructor(code: ClientErrorCode, message: string, options?: { cause?: unknown }) {
    super(`[${code}] ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }

  /**
   * Wraps anything thrown (RpcError, SessionError, …), keeping its code; the original is `cause`. A
   * SessionError that only carries the transport's failure to relay a handshake frame (its cause is the
   * gateway's refusal, or the stream's end) takes the transport's code: `policy_denied` on first contact is
   * `policy_denied`, as it is in an existing session. The code is printed once (`[code] detail`).
   */
  static from(error: unknown): ClientError {
    if (error instanceof ClientError) return error;
    if (error instanceof RpcError) return new ClientError(error.code, error.details, { cause: error });
    if (error instanceof SessionError) {
      const transport = error.cause instanceof ClientError || error.cause instanceof RpcError ? error.cause.code : undefined;
      return new ClientError(transport ?? error.code, withoutCode(error), { cause: error });
    }
    const code = (error as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && isRpcErrorCode(code)) return new ClientError(code, withoutCode(error), { cause: error });
    return new ClientError('internal', error instanceof Error ? error.message : String(error), { cause: error });
  }
}

/** An error's message without the `[code] ` its class put in front (so that wrapping prints the code once). */
function withoutCode(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && error.message.startsWith(`[${code}] `) ? error.message.slice(code.length + 3) : error.message;
}

export function isClientError(value: unknown, code?: ClientErrorCode): value is ClientError {
  return value instanceof ClientError && (code === undefined || value.code === code);
}
