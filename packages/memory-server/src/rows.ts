/**
 * The stored shapes of a memory and of a member, their decoders, and the columns every memory query
 * selects.
 */
import { bytes, int } from '@parley/db';
import type { MemoryAccess } from '@parley/proto';

export interface MemoryRow {
  readonly memoryId: string;
  readonly ownerId: string;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
  readonly membershipVersion: bigint;
  readonly head: Uint8Array;
  readonly currentEpoch: number;
  readonly usedBytes: number;
  readonly usedSegments: number;
}

export interface MemberRow {
  readonly memberId: string;
  readonly access: MemoryAccess;
  readonly publicKey: Uint8Array;
  readonly expiresAtMs: number;
  readonly certificate: Uint8Array;
}

export const MEMORY_COLUMNS = 'memory_id, owner_id, created_at_ms, expires_at_ms, membership_version, membership_head, current_epoch, used_bytes, used_segments';

export function memoryRow(r: Record<string, unknown>): MemoryRow {
  return {
    memoryId: String(r['memory_id']),
    ownerId: String(r['owner_id']),
    createdAtMs: int(r['created_at_ms']),
    expiresAtMs: int(r['expires_at_ms']),
    membershipVersion: BigInt(int(r['membership_version'])),
    head: bytes(r['membership_head']),
    currentEpoch: int(r['current_epoch']),
    usedBytes: int(r['used_bytes']),
    usedSegments: int(r['used_segments']),
  };
}

export function memberRow(r: Record<string, unknown>): MemberRow {
  return {
    memberId: String(r['member_id']),
    access: int(r['access']) as MemoryAccess,
    publicKey: bytes(r['public_key']),
    expiresAtMs: int(r['expires_at_ms']),
    certificate: bytes(r['certificate']),
  };
}

/** Whether an expiry (0: never) is still ahead of `now`. */
export const live = (expiresAtMs: number, now: number): boolean => expiresAtMs === 0 || now < expiresAtMs;
