/**
 * The SDK's one error type. Its codes are the protocol's stable codes
 * (docs/PROTOCOL.md §11, §15.8 — the same set as RpcError's): a refusal by the
 * gateway keeps the gateway's code (`policy_denied`, `rate_limited`, …), a
 * session failure keeps the session's (`handshake_failed`, `revoked`, …), and
 * the SDK itself adds no new codes:
 *
 * - `deadline_exceeded` a send got no verified receipt within its timeout
 * - `cancelled`         the agent was closed while the operation was pending (a send the outbox held: `heldSendId`)
 * - `unavailable`       no gateway connection (and reconnection is off or gave up)
 */
import { ERROR_CODE_METADATA_KEY, RpcError, isRpcErrorCode, type RpcErrorCode } from '@parley/rpc';
import { SessionError } from '@parley/session';

export type ClientErrorCode = RpcErrorCode;

export class ClientError extends Error {
  override readonly name = 'ClientError';
  readonly code: ClientErrorCode;
  /**
   * Set only on the rejection of a `send()` that `close()` (or a stop for good) ended after the outbox took the
   * send — its first record was written to the state store: the send is not lost, a restart with the same state
   * resumes it and reports its outcome as the `send_settled` event of this id. Without it, a `cancelled` (or
   * the stopping error) means the send was refused before the outbox took it: no event, nothing kept.
   */
  readonly heldSendId?: string;

  constructor(code: ClientErrorCode, message: string, options?: { cause?: unknown; heldSendId?: string }) {
    super(`[${code}] ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options?.heldSendId !== undefined) this.heldSendId = options.heldSendId;
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

/**
 * The rejection of a `send()` ended by `close()` or a stop for good (`error`) after its send `id` was held in the
 * state store: the same code, a message saying the send is kept, and {@link ClientError.heldSendId}.
 */
export function heldSendError(error: ClientError, id: string): ClientError {
  return new ClientError(error.code, `${withoutCode(error)}; the send '${id}' is held in the state store (not lost): a restart with the same state resumes it and reports its outcome as the send_settled event of id '${id}'`, { cause: error, heldSendId: id });
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

/**
 * The gateway answers to `connect` that time can fix (see {@link isTransientConnectRefusal}): its revocation copy
 * is stale, it is busy or shutting down (a go-away `shutting_down` — not a stable code — arrives as `unavailable`).
 */
export const TRANSIENT_CONNECT_CODES: ReadonlySet<ClientErrorCode> = new Set<ClientErrorCode>(['revocation_stale', 'unavailable', 'rate_limited']);

/**
 * Whether a failed first connection is one `connect` retries until its deadline: a code time can fix
 * ({@link TRANSIENT_CONNECT_CODES}) AND said by the gateway itself — a go-away frame (or the gateway ending the
 * stream before its welcome), or the Connect call's status carrying the gateway's own `parley-error-code`. A
 * connection that could not be made (nothing listening, a wrong host, a TLS failure, not a gRPC server) is
 * `unavailable` from grpc-js with no such code: it is a configuration to fix, and rejects at once — the agent
 * must not spend a minute retrying a typo. Every verdict on this agent (`revoked`, `bad_certificate`, …) and
 * every other code rejects at once too.
 */
export function isTransientConnectRefusal(error: ClientError): boolean {
  if (!TRANSIENT_CONNECT_CODES.has(error.code)) return false;
  const rpc = error.cause;
  if (!(rpc instanceof RpcError)) return false;
  // connection.ts builds the RpcError of a go-away (and of a stream the gateway ended before its welcome)
  // itself, with no cause; a failed call's is RpcError.fromStatus(status), the status its cause.
  if (rpc.cause === undefined) return true;
  const metadata = (rpc.cause as { metadata?: { get?: unknown } } | null)?.metadata;
  if (typeof metadata?.get !== 'function') return false;
  const codes = (metadata.get as (key: string) => unknown[]).call(metadata, ERROR_CODE_METADATA_KEY);
  return Array.isArray(codes) && codes.length > 0;
}
