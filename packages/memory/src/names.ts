/**
 * Names and limits of shared memory (docs/PROTOCOL.md §18.2, §18.10): memory
 * ids, segment ids, sizes. Every boundary (client and store) checks them.
 */
import { AGENT_ID_PATTERN } from '@parley/identity';
import { MemoryAccess } from '@parley/proto';
import { fail } from './errors.js';

/** A memory id: `mem-` and 32 lowercase hex digits (16 bytes of BLAKE3, §18.4). It is also a valid agent id, so audit entries can name it. */
export const MEMORY_ID_PATTERN = /^mem-[0-9a-f]{32}$/;
/** A segment id: 1..128 bytes of ASCII `[a-z0-9._:/-]`, starting with `[a-z0-9]`. */
export const SEGMENT_ID_PATTERN = /^[a-z0-9][a-z0-9._:/-]{0,127}$/;
/** Bytes of a memory's creation nonce. */
export const CREATION_NONCE_BYTES = 16;
/** Bytes of an epoch key (XChaCha20-Poly1305). */
export const EPOCH_KEY_BYTES = 32;
/** Bytes of a BLAKE3 digest, entry hash or key commitment. */
export const HASH_BYTES = 32;
/** Bytes of an Ed25519 public key. */
export const PUBLIC_KEY_BYTES = 32;
/** Bytes of an Ed25519 signature. */
export const SIGNATURE_BYTES = 64;
/** Bytes of a back link: nonce (24) ‖ sealed previous key (32) ‖ tag (16). */
export const BACK_LINK_BYTES = 72;
/**
 * Largest sealed key of a key copy (§18.6): 48 bytes of sealed-box overhead and the longest wrap plaintext,
 * str("parley/v1/memory-epoch-key") 4 + 26 ‖ str(memory_id) 4 + 36 ‖ u32(epoch) 4 ‖ str(member_id) 4 + 128 ‖ key 32: 286 bytes.
 */
export const MAX_SEALED_KEY_BYTES = 48 + 4 + 26 + 4 + 36 + 4 + 4 + 128 + 32;
/** Largest plaintext of one segment version: 1 MiB. */
export const MAX_SEGMENT_PLAINTEXT_BYTES = 1024 * 1024;
/** Largest ciphertext of one segment version: the plaintext plus nonce and tag. */
export const MAX_SEGMENT_CIPHERTEXT_BYTES = MAX_SEGMENT_PLAINTEXT_BYTES + 40;
/** Largest membership log (entries); beyond it a memory takes no more grants or revocations. */
export const MAX_MEMBERSHIP_ENTRIES = 4096;
/** Most members of one memory (owner included). */
export const MAX_MEMBERS = 256;
/**
 * Highest log version a GRANT by the owner may have (§18.4): the last {@link MAX_MEMBERS} entries are kept
 * for REVOKEs, so every member (at most 255 besides the owner) can always be removed.
 */
export const GRANT_LIMIT = MAX_MEMBERSHIP_ENTRIES - MAX_MEMBERS;
/** Highest log version a GRANT by an admin other than the owner may have: {@link MAX_MEMBERS} more are kept for the owner's grants. */
export const ADMIN_GRANT_LIMIT = MAX_MEMBERSHIP_ENTRIES - 2 * MAX_MEMBERS;
/** The clock skew a store allows between its clock and its callers' timestamps, ms (its default, §18.2). */
export const MEMORY_CLOCK_SKEW_MS = 60_000;
/** Segments of one memory a store allows by default (§18.2); its quota is configurable. */
export const DEFAULT_MAX_SEGMENTS_PER_MEMORY = 10_000;
/** Most key epochs a memory keeps (older ones no segment uses are pruned). */
export const MAX_EPOCHS = 4096;

export function isMemoryId(value: unknown): value is string {
  return typeof value === 'string' && MEMORY_ID_PATTERN.test(value);
}

export function isSegmentId(value: unknown): value is string {
  return typeof value === 'string' && SEGMENT_ID_PATTERN.test(value);
}

export function isAgentIdString(value: unknown): value is string {
  return typeof value === 'string' && AGENT_ID_PATTERN.test(value);
}

/** @throws MemoryError `malformed` */
export function assertMemoryId(value: unknown, name = 'memoryId'): string {
  if (!isMemoryId(value)) fail('malformed', `${name} must be "mem-" and 32 lowercase hex digits`);
  return value;
}

/** @throws MemoryError `malformed` */
export function assertSegmentId(value: unknown, name = 'segmentId'): string {
  if (!isSegmentId(value)) fail('malformed', `${name} must be 1..128 chars of [a-z0-9._:/-] starting with [a-z0-9]`);
  return value;
}

/** @throws MemoryError `malformed` */
export function assertAgent(value: unknown, name: string): string {
  if (!isAgentIdString(value)) fail('malformed', `${name} must be an agent id (1..128 chars of [a-z0-9._:-] starting with [a-z0-9])`);
  return value;
}

/** The access levels a grant may give. */
export type AccessLevel = 'read' | 'write' | 'admin';

const LEVEL_OF: Readonly<Record<AccessLevel, MemoryAccess>> = { read: MemoryAccess.READ, write: MemoryAccess.WRITE, admin: MemoryAccess.ADMIN };

/** The wire value of a level. @throws MemoryError `malformed` */
export function accessOf(level: AccessLevel): MemoryAccess {
  const access = LEVEL_OF[level];
  if (access === undefined) fail('malformed', "access must be 'read', 'write' or 'admin'");
  return access;
}

/** The level of a wire value. @throws MemoryError `malformed` for UNSPECIFIED or an unknown value */
export function levelOf(access: MemoryAccess): AccessLevel {
  switch (access) {
    case MemoryAccess.READ:
      return 'read';
    case MemoryAccess.WRITE:
      return 'write';
    case MemoryAccess.ADMIN:
      return 'admin';
    default:
      return fail('malformed', `access level ${String(access)} is not defined`);
  }
}
