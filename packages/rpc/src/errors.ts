/**
 * RPC errors: the ONE table that maps Parley error codes (docs/PROTOCOL.md §11,
 * plus the API codes of §15.8) to gRPC status codes, and the error class that
 * carries a code across the wire, in the style of connect-es's `ConnectError`:
 * one class, a closed code union, the code in the message (`[not_found] …`),
 * the original kept as `cause`.
 *
 * On the wire a failed call carries the gRPC status code, a one-line message,
 * and the Parley code in the trailing metadata key `parley-error-code`, so a
 * client recovers the exact code even where several share one gRPC status.
 */
import { Metadata, status as GrpcStatus, type ServiceError, type StatusObject } from '@grpc/grpc-js';

/** Trailing metadata key that carries the Parley error code of a failed call. */
export const ERROR_CODE_METADATA_KEY = 'parley-error-code';

/**
 * Every Parley error code and its gRPC status: the single mapping used by
 * every Parley server (registry, gateway) and client. The first group is
 * docs/PROTOCOL.md §11; the second the API codes of §15.8; the third the
 * shared-memory codes of §18.11; the last the trust bundle and enrolment codes
 * of §15.9 and §15.11.
 */
export const GRPC_STATUS_BY_CODE = Object.freeze({
  // §11: message, handshake and certificate rejections
  malformed: GrpcStatus.INVALID_ARGUMENT,
  unsupported_version: GrpcStatus.INVALID_ARGUMENT,
  too_large: GrpcStatus.INVALID_ARGUMENT,
  unknown_session: GrpcStatus.NOT_FOUND,
  bad_signature: GrpcStatus.UNAUTHENTICATED,
  bad_tag: GrpcStatus.UNAUTHENTICATED,
  decrypt_failed: GrpcStatus.UNAUTHENTICATED,
  bad_commitment: GrpcStatus.UNAUTHENTICATED,
  bad_binding: GrpcStatus.UNAUTHENTICATED,
  bad_certificate: GrpcStatus.UNAUTHENTICATED,
  unknown_issuer: GrpcStatus.UNAUTHENTICATED,
  identity_mismatch: GrpcStatus.UNAUTHENTICATED,
  replay: GrpcStatus.PERMISSION_DENIED,
  stale_timestamp: GrpcStatus.PERMISSION_DENIED,
  future_timestamp: GrpcStatus.PERMISSION_DENIED,
  revoked: GrpcStatus.PERMISSION_DENIED,
  expired: GrpcStatus.PERMISSION_DENIED,
  not_yet_valid: GrpcStatus.PERMISSION_DENIED,
  policy_denied: GrpcStatus.PERMISSION_DENIED,
  revocation_stale: GrpcStatus.FAILED_PRECONDITION,
  handshake_failed: GrpcStatus.FAILED_PRECONDITION,
  nonce_exhausted: GrpcStatus.FAILED_PRECONDITION,
  rate_limited: GrpcStatus.RESOURCE_EXHAUSTED,
  quota_exceeded: GrpcStatus.RESOURCE_EXHAUSTED,
  state_corrupt: GrpcStatus.INTERNAL,
  // §15.8: API codes
  not_found: GrpcStatus.NOT_FOUND,
  already_exists: GrpcStatus.ALREADY_EXISTS,
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  permission_denied: GrpcStatus.PERMISSION_DENIED,
  challenge_invalid: GrpcStatus.FAILED_PRECONDITION,
  failed_precondition: GrpcStatus.FAILED_PRECONDITION,
  unavailable: GrpcStatus.UNAVAILABLE,
  deadline_exceeded: GrpcStatus.DEADLINE_EXCEEDED,
  cancelled: GrpcStatus.CANCELLED,
  unimplemented: GrpcStatus.UNIMPLEMENTED,
  internal: GrpcStatus.INTERNAL,
  // §18.11: shared memory
  conflict: GrpcStatus.ABORTED,
  rotation_required: GrpcStatus.FAILED_PRECONDITION,
  // §15.9, §15.11: trust bundle and enrolment
  rollback: GrpcStatus.FAILED_PRECONDITION,
  join_token_invalid: GrpcStatus.UNAUTHENTICATED,
  join_token_expired: GrpcStatus.PERMISSION_DENIED,
  join_token_used: GrpcStatus.PERMISSION_DENIED,
} as const);

/**
 * Stable Parley error codes carried by {@link RpcError}. Callers switch on
 * `error.code`, never on the message. Meanings: docs/PROTOCOL.md §11 and §15.8.
 */
export type RpcErrorCode = keyof typeof GRPC_STATUS_BY_CODE;

/** Every {@link RpcErrorCode}, in table order. */
export const RPC_ERROR_CODES: readonly RpcErrorCode[] = Object.freeze(Object.keys(GRPC_STATUS_BY_CODE) as RpcErrorCode[]);

const CODE_SET: ReadonlySet<string> = new Set(RPC_ERROR_CODES);

/**
 * What a client reports when a status arrives without `parley-error-code`
 * (a proxy, a non-Parley server, or grpc-js itself): one code per status.
 */
const CODE_BY_STATUS: Readonly<Partial<Record<GrpcStatus, RpcErrorCode>>> = Object.freeze({
  [GrpcStatus.INVALID_ARGUMENT]: 'malformed',
  [GrpcStatus.OUT_OF_RANGE]: 'malformed',
  [GrpcStatus.NOT_FOUND]: 'not_found',
  [GrpcStatus.ALREADY_EXISTS]: 'already_exists',
  [GrpcStatus.UNAUTHENTICATED]: 'unauthenticated',
  [GrpcStatus.PERMISSION_DENIED]: 'permission_denied',
  [GrpcStatus.FAILED_PRECONDITION]: 'failed_precondition',
  // grpc-js itself answers RESOURCE_EXHAUSTED for a message over the size limit (either side);
  // a Parley server that rate-limits always sends the `rate_limited` trailer.
  [GrpcStatus.RESOURCE_EXHAUSTED]: 'too_large',
  [GrpcStatus.UNAVAILABLE]: 'unavailable',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'deadline_exceeded',
  [GrpcStatus.CANCELLED]: 'cancelled',
  [GrpcStatus.UNIMPLEMENTED]: 'unimplemented',
  [GrpcStatus.ABORTED]: 'conflict',
});

/**
 * What a peer is told for a library error (IdentityError, SessionError,
 * AuditError): the code and a fixed line, never the library's message, which
 * may echo inputs or internal state (PROTOCOL §11). The message stays in
 * {@link RpcError.localDetails} and `cause` for the local log.
 */
const PEER_MESSAGES: Readonly<Partial<Record<RpcErrorCode, string>>> = Object.freeze({
  malformed: 'malformed input',
  unsupported_version: 'unsupported protocol version',
  too_large: 'input too large',
  unknown_session: 'unknown session',
  bad_signature: 'signature does not verify',
  bad_tag: 'authentication tag does not verify',
  decrypt_failed: 'decryption failed',
  bad_commitment: 'payload commitment does not match',
  bad_binding: 'identity binding does not verify',
  bad_certificate: 'certificate invalid',
  unknown_issuer: 'certificate issuer not trusted',
  identity_mismatch: 'identity does not match',
  replay: 'replayed message',
  stale_timestamp: 'timestamp too old',
  future_timestamp: 'timestamp in the future',
  revoked: 'certificate revoked',
  expired: 'certificate expired',
  not_yet_valid: 'certificate not yet valid',
  policy_denied: 'denied by policy',
  revocation_stale: 'revocation data is stale',
  handshake_failed: 'handshake failed',
  nonce_exhausted: 'nonce space exhausted',
  rate_limited: 'rate limited',
  state_corrupt: 'internal error',
  rollback: 'trust bundle rollback refused',
});

/** The fixed line a peer gets for `code` (see {@link PEER_MESSAGES}). */
export function peerMessage(code: RpcErrorCode): string {
  return PEER_MESSAGES[code] ?? code.replace(/_/g, ' ');
}

/** Longest message sent in a status (longer ones are cut): a status is one line, not a document. */
const MAX_DETAILS = 512;

/**
 * The error type of @parley/rpc, on both sides of a call. On a server, throw
 * one from a handler to fail the call with that code; on a client, every
 * failed call rejects with one.
 *
 * @example
 * throw new RpcError('not_found', `unknown agent '${id}'`);
 * // client: error.code === 'not_found', error.grpcCode === status.NOT_FOUND
 */
export class RpcError extends Error {
  override readonly name = 'RpcError';
  /** The Parley error code. */
  readonly code: RpcErrorCode;
  /** The message without the `[code] ` prefix: what goes on the wire. */
  readonly details: string;
  /** What the local log records: the full detail (equal to {@link details} unless a library error was wrapped). Never sent. */
  readonly localDetails: string;

  /**
   * @param code stable code (see {@link RpcErrorCode})
   * @param details one line for the peer; never key material
   * @param options `cause`: the underlying error, kept as `error.cause` (never sent);
   *   `localDetails`: a fuller line for the local log only (default `details`)
   */
  constructor(code: RpcErrorCode, details: string, options?: { cause?: unknown; localDetails?: string }) {
    super(`[${code}] ${details}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = details;
    this.localDetails = options?.localDetails ?? details;
  }

  /** The gRPC status code of {@link code}. */
  get grpcCode(): GrpcStatus {
    return GRPC_STATUS_BY_CODE[this.code];
  }

  /**
   * Converts anything thrown into an RpcError. An RpcError is returned as is;
   * an error whose `code` is a Parley code (an IdentityError, say) keeps its
   * code, but the peer gets only a fixed line for it (PROTOCOL §11) while its
   * message stays in `localDetails` for the log; a ProtocolError or DbError keeps its code and line; a CryptoError's
   * validation codes become `malformed`;
   * anything else becomes `internal` with a generic message, so no library or
   * database message (which may echo inputs) reaches a peer. The original is
   * kept as `cause` for the local log.
   *
   * @param error anything caught
   * @returns an RpcError
   */
  static from(error: unknown): RpcError {
    if (error instanceof RpcError) return error;
    if (error instanceof Error) {
      const code = (error as { code?: unknown }).code;
      const named = error.name === 'IdentityError' || error.name === 'SessionError' || error.name === 'AuditError';
      if (named && typeof code === 'string' && CODE_SET.has(code)) {
        return new RpcError(code as RpcErrorCode, peerMessage(code as RpcErrorCode), { cause: error, localDetails: stripCodePrefix(error.message) });
      }
      // A database error (@parley/db) names what failed and where (a redacted location), never a value: its line stays.
      // So does a configuration error (@parley/cli-kit): it names settings and files of the local operator.
      if ((error.name === 'DbError' || error.name === 'ConfigError') && typeof code === 'string' && CODE_SET.has(code)) {
        return new RpcError(code as RpcErrorCode, stripCodePrefix(error.message), { cause: error });
      }
      // A protocol check names the field of the peer's own request that is wrong (never its contents): the peer gets that line.
      if (error.name === 'ProtocolError' && typeof code === 'string' && CODE_SET.has(code)) {
        return new RpcError(code as RpcErrorCode, stripCodePrefix(error.message), { cause: error });
      }
      if (error.name === 'CryptoError' && typeof code === 'string' && code.startsWith('invalid_')) {
        return new RpcError('malformed', stripCodePrefix(error.message), { cause: error });
      }
    }
    return new RpcError('internal', 'internal error', { cause: error });
  }

  /**
   * The error a client sees for a failed call: the code from the trailing
   * `parley-error-code` when present and known, else from the gRPC status.
   *
   * @param error a grpc-js ServiceError (or StatusObject)
   * @returns an RpcError whose `cause` is the original
   */
  static fromStatus(error: Partial<StatusObject> & { code?: number; details?: string; metadata?: Metadata }): RpcError {
    const fromMetadata = error.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
    const status = (error.code ?? GrpcStatus.UNKNOWN) as GrpcStatus;
    const code =
      typeof fromMetadata === 'string' && CODE_SET.has(fromMetadata) ? (fromMetadata as RpcErrorCode) : (CODE_BY_STATUS[status] ?? 'internal');
    const details = error.details !== undefined && error.details !== '' ? withoutEmptyNote(error.details) : `gRPC status ${GrpcStatus[status] ?? status}`;
    return new RpcError(code, details, { cause: error });
  }

  /**
   * The status a server sends for this error: code, one-line details, and the
   * Parley code in trailing metadata.
   * @returns a grpc-js status object (usable as a ServiceError)
   */
  toStatus(): Partial<ServiceError> & { code: GrpcStatus; details: string; metadata: Metadata } {
    const metadata = new Metadata();
    metadata.set(ERROR_CODE_METADATA_KEY, this.code);
    return { code: this.grpcCode, details: oneLine(this.details), metadata };
  }
}

/**
 * Type guard for {@link RpcError}, optionally for one code.
 * @param value anything caught
 * @param code when given, also require this code
 * @returns true when `value` is an RpcError (with that code)
 */
export function isRpcError(value: unknown, code?: RpcErrorCode): value is RpcError {
  return value instanceof RpcError && (code === undefined || value.code === code);
}

/**
 * Whether a string is one of the {@link RPC_ERROR_CODES}.
 * @param value anything
 * @returns true for a known code
 */
export function isRpcErrorCode(value: unknown): value is RpcErrorCode {
  return typeof value === 'string' && CODE_SET.has(value);
}

/**
 * grpc-js ends a connection failure with "Resolution note: <note>" even when
 * the note is empty ("… Last error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: "):
 * the empty tail is dropped, a real note kept.
 */
function withoutEmptyNote(details: string): string {
  return details.replace(/\.?\s*Resolution note:\s*$/, '');
}

function stripCodePrefix(message: string): string {
  return message.replace(/^\[[a-z_]+\] /, '');
}

function oneLine(text: string): string {
  const flat = text.replace(/[\r\n]+/g, ' ');
  return flat.length > MAX_DETAILS ? `${flat.slice(0, MAX_DETAILS - 1)}…` : flat;
}
