/**
 * The shared-memory error (docs/PROTOCOL.md §18.11): one class, the protocol's
 * closed code union (RpcErrorCode, the codes every Parley component shares),
 * the code in the message (`[conflict] …`), the original kept as `cause`.
 * The codes a memory call can end with, and what they mean here:
 *
 * - `conflict`           a write's compare-and-set lost: the segment is at `currentVersion`
 *                        (and `current` holds its record); or a membership or epoch
 *                        change raced another one (reload and retry)
 * - `quota_exceeded`     the memory's or the owner's byte, segment or member quota refuses the change
 * - `rotation_required`  a member holding the current epoch key is gone; a new epoch must come first
 *                        (the client does it itself and retries)
 * - `permission_denied`  not a member, not at this level, or no such memory (the two are not told apart)
 * - `expired`            the caller's grant has expired
 * - `not_found`          no such segment (members only), or no certificate for an agent
 * - `bad_signature`      a record the store returned does not verify (the store is not trusted for integrity)
 * - `decrypt_failed`     a ciphertext or key copy does not open, or does not match its commitment
 * - `replay`             the store returned an older membership log than this client has already seen
 * - `malformed`, `too_large`, `rate_limited`, `unavailable`, … as everywhere (§11, §15.8)
 */
import { RpcError, isRpcErrorCode, type RpcErrorCode } from '@parley/rpc';
import type { WriteRecord } from '@parley/proto';

/** The memory error codes: the protocol's shared codes (docs/PROTOCOL.md §11, §15.8, §18.11). */
export type MemoryErrorCode = RpcErrorCode;

/** The one error type of @parley/memory. */
export class MemoryError extends Error {
  override readonly name = 'MemoryError';
  readonly code: MemoryErrorCode;
  /** For `conflict` on a segment: its current version (0n when it does not exist). */
  readonly currentVersion: bigint | undefined;
  /** For `conflict` on a segment: its current write record, verified. */
  readonly current: WriteRecord | undefined;

  constructor(code: MemoryErrorCode, message: string, options?: { cause?: unknown; currentVersion?: bigint; current?: WriteRecord }) {
    super(`[${code}] ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.currentVersion = options?.currentVersion;
    this.current = options?.current;
  }

  /** The message without its `[code] ` prefix (to wrap it in another message without printing the code twice). */
  get detail(): string {
    return this.message.slice(this.code.length + 3);
  }

  /** Wraps anything thrown, keeping a Parley code (RpcError, IdentityError, CryptoError, …); the original is `cause`. */
  static from(error: unknown): MemoryError {
    if (error instanceof MemoryError) return error;
    if (error instanceof RpcError) return new MemoryError(error.code, error.details, { cause: error });
    const code = (error as { code?: unknown } | null)?.code;
    const message = error instanceof Error ? error.message.replace(/^\[[a-z_]+\] /, '') : String(error);
    if (typeof code === 'string' && isRpcErrorCode(code)) return new MemoryError(code, message, { cause: error });
    if ((error as { name?: unknown } | null)?.name === 'CryptoError') {
      return new MemoryError(code === 'decrypt_failed' ? 'decrypt_failed' : 'malformed', message, { cause: error });
    }
    return new MemoryError('internal', message, { cause: error });
  }
}

/**
 * Type guard for {@link MemoryError}, optionally for one code.
 * @param value anything caught
 * @param code when given, also require this code
 */
export function isMemoryError(value: unknown, code?: MemoryErrorCode): value is MemoryError {
  return value instanceof MemoryError && (code === undefined || value.code === code);
}

/** Throws a MemoryError. */
export function fail(code: MemoryErrorCode, message: string, options?: { cause?: unknown; currentVersion?: bigint; current?: WriteRecord }): never {
  throw new MemoryError(code, message, options);
}
