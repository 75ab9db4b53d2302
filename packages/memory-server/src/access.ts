/**
 * Access control and key epochs (docs/PROTOCOL.md §18.4–§18.6): the caller's membership of a memory
 * (default deny, no existence oracle), the stored membership log checked against its head, and a new key
 * epoch checked — sealed to exactly the active members — and installed.
 */
import { type ParleyCrypto } from '@parley/crypto-core';
import { bytes, int, type Queryable } from '@parley/db';
import { Membership, assertEpochRecordShape, assertKeyWrapShape, isMemoryId, verifyEpochRecord, verifyKeyWrap, type Member } from '@parley/memory';
import { EpochRecordSchema, KeyWrapSchema, MembershipEntrySchema, MemoryAccess, fromBinary, toBinary, type EpochRecord, type KeyWrap } from '@parley/proto';
import { assertTime, refuse, type Caller, type OpContext } from './call.js';
import { MEMORY_COLUMNS, live, memberRow, memoryRow, type MemberRow, type MemoryRow } from './rows.js';

/**
 * The memory and the caller's membership, or a refusal: unknown or expired memory and
 * non-member alike are `permission_denied` (no existence oracle); an expired grant is `expired`;
 * a member calling with another identity key than its grant's is `identity_mismatch`.
 */
export async function access(c: OpContext, q: Queryable, memoryId: string, caller: Caller, now: number, min: MemoryAccess, lock: '' | 'share' | 'update'): Promise<{ memory: MemoryRow; member: MemberRow }> {
  if (!isMemoryId(memoryId)) refuse('malformed', 'memory_id must be "mem-" and 32 lowercase hex digits');
  const rows = await q.query<Record<string, unknown>>(
    `SELECT ${MEMORY_COLUMNS.split(', ').map((col) => `m.${col}`).join(', ')}, mm.member_id, mm.access, mm.public_key, mm.expires_at_ms AS member_expires_at_ms, mm.certificate
     FROM memories m LEFT JOIN memory_members mm ON mm.memory_id = m.memory_id AND mm.member_id = $2
     WHERE m.memory_id = $1${lock === '' ? '' : lock === 'share' ? ' FOR SHARE OF m' : ' FOR UPDATE OF m'}`,
    [memoryId, caller.cert.agentId],
  );
  const row = rows[0];
  const memory = row === undefined ? undefined : memoryRow(row);
  const denied = (): never => refuse('permission_denied', 'not a member of this memory, or no such memory');
  if (row === undefined || memory === undefined || !live(memory.expiresAtMs, now) || row['member_id'] === null || row['member_id'] === undefined) return denied();
  const member = memberRow({ ...row, expires_at_ms: row['member_expires_at_ms'] });
  if (!live(member.expiresAtMs, now)) refuse('expired', 'membership grant has expired');
  if (!c.crypto.constantTimeEqual(member.publicKey, caller.cert.identityPublicKey)) refuse('identity_mismatch', 'the grant is for another identity key of this agent: ask an admin to grant again');
  if (member.access < min) refuse('permission_denied', `this operation needs ${MemoryAccess[min]!.toLowerCase()} access`);
  return { memory, member };
}

/**
 * The stored log, rebuilt (without re-verifying the signatures it checked on acceptance, with the entry hashes it
 * stored) and checked against the head: work linear in the log, once per call that changes membership or epochs,
 * and only after the refusals that need no log (§18.4).
 */
export async function loadLog(crypto: ParleyCrypto, q: Queryable, memory: MemoryRow): Promise<Membership> {
  const rows = await q.query<{ entry: unknown; entry_hash: unknown }>('SELECT entry, entry_hash FROM memory_membership_log WHERE memory_id = $1 ORDER BY version', [memory.memoryId]);
  const log = Membership.restore(
    crypto,
    memory.memoryId,
    rows.map((r) => fromBinary(MembershipEntrySchema, bytes(r.entry))),
    rows.map((r) => bytes(r.entry_hash)),
  );
  if (log.version !== memory.membershipVersion || !crypto.constantTimeEqual(log.head, memory.head)) refuse('state_corrupt', 'stored membership log does not match its head');
  return log;
}

async function currentEpoch(q: Queryable, memory: MemoryRow): Promise<EpochRecord> {
  const rows = await q.query<{ record: unknown }>('SELECT record FROM memory_epochs WHERE memory_id = $1 AND epoch = $2', [memory.memoryId, memory.currentEpoch]);
  if (rows[0] === undefined) refuse('state_corrupt', 'current epoch record missing');
  return fromBinary(EpochRecordSchema, bytes(rows[0].record));
}

/**
 * Whether a holder of the current epoch key is no longer an active member (§18.5): a copy of it held by a
 * member that is gone or whose grant expired, or a copy sealed to a member key a later GRANT replaced (that
 * copy is deleted with the grant, so the memory row keeps the epoch it was of).
 */
export async function rotationRequired(q: Queryable, memory: MemoryRow, now: number): Promise<boolean> {
  const rows = await q.query(
    `SELECT 1 FROM memories WHERE memory_id = $1 AND replaced_key_epoch = $2
     UNION ALL
     SELECT 1 FROM memory_key_wraps w LEFT JOIN memory_members m ON m.memory_id = w.memory_id AND m.member_id = w.member_id
     WHERE w.memory_id = $1 AND w.epoch = $2 AND (m.member_id IS NULL OR (m.expires_at_ms > 0 AND m.expires_at_ms <= $3))
     LIMIT 1`,
    [memory.memoryId, memory.currentEpoch, now],
  );
  return rows.length > 0;
}

/**
 * Checks a new epoch and its key copies (exactly the active members) and stores them (§18.5, §18.6).
 * Epoch records no stored segment needs any more are pruned first; then, when `bounded`, the epoch is
 * refused (`quota_exceeded`) if the memory already keeps `maxEpochsPerMemory` of them. A REVOKE's epoch and
 * a rotation that is required are not bounded: each is paid for by a log entry (the REVOKE, or the
 * expiring or key-replacing GRANT that made the rotation due), so they cannot be repeated at will, and
 * refusing them would let whoever filled the table block a removal for good.
 */
export async function installEpoch(
  c: OpContext,
  q: Queryable,
  memory: MemoryRow,
  log: Membership,
  epoch: EpochRecord,
  wraps: readonly KeyWrap[],
  caller: Caller,
  now: number,
  bounded: boolean,
): Promise<void> {
  assertEpochRecordShape(epoch);
  if (epoch.epoch !== memory.currentEpoch + 1) refuse('conflict', `epoch ${epoch.epoch} does not follow the current epoch ${memory.currentEpoch}`);
  if (epoch.membershipVersion !== log.version) refuse('conflict', `epoch is for membership version ${epoch.membershipVersion}, the log is at ${log.version}`);
  if (epoch.creatorId !== caller.cert.agentId) refuse('identity_mismatch', 'epoch creator is not the caller');
  assertTime(c.skewMs, epoch.createdAtMs, 'epoch', now);
  verifyEpochRecord(c.crypto, log, epoch, await currentEpoch(q, memory));
  const active = log.active(now);
  // Every cheap check of all the copies before the first signature check: a request's signature checks are
  // bounded by the active members (at most MAX_MEMBERS), never by how many copies the caller sent.
  for (const w of wraps) {
    assertKeyWrapShape(w);
    if (w.epoch !== epoch.epoch || w.signerId !== caller.cert.agentId) refuse('malformed', 'key copies must be of the new epoch, signed by the caller');
  }
  if (!sameMembers(c.crypto, wraps, active)) refuse('conflict', 'the new epoch must be sealed to exactly the active members, each under its key on record');
  for (const w of wraps) verifyKeyWrap(c.crypto, log, w);
  // Epochs below the oldest one a live segment uses are no longer needed (the new key reaches the rest through back links).
  await q.query(
    `DELETE FROM memory_epochs WHERE memory_id = $1 AND epoch < COALESCE((SELECT MIN(key_epoch) FROM memory_segments WHERE memory_id = $1 AND (expires_at_ms = 0 OR expires_at_ms > $3)), $2)`,
    [memory.memoryId, epoch.epoch, now],
  );
  if (bounded) {
    const count = await q.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM memory_epochs WHERE memory_id = $1', [memory.memoryId]);
    if (int(count[0]?.n ?? 0) >= c.quotas.maxEpochsPerMemory) refuse('quota_exceeded', `a memory keeps at most ${c.quotas.maxEpochsPerMemory} key epochs that segments still use`);
  }
  await q.query('INSERT INTO memory_epochs (memory_id, epoch, record) VALUES ($1, $2, $3)', [memory.memoryId, epoch.epoch, toBinary(EpochRecordSchema, epoch)]);
  // Older copies are no longer needed: the new key opens the earlier ones through back links.
  await q.query('DELETE FROM memory_key_wraps WHERE memory_id = $1 AND epoch < $2', [memory.memoryId, epoch.epoch]);
  for (const w of wraps) {
    await q.query('INSERT INTO memory_key_wraps (memory_id, member_id, epoch, wrap) VALUES ($1, $2, $3, $4)', [memory.memoryId, w.memberId, w.epoch, toBinary(KeyWrapSchema, w)]);
  }
  await q.query('UPDATE memories SET current_epoch = $2 WHERE memory_id = $1', [memory.memoryId, epoch.epoch]);
}

/** Same set of ids, each with the key on record. */
function sameMembers(crypto: ParleyCrypto, wraps: readonly KeyWrap[], members: readonly Member[]): boolean {
  if (wraps.length !== members.length) return false;
  const byId = new Map(members.map((m) => [m.memberId, m]));
  const seen = new Set<string>();
  for (const w of wraps) {
    const m = byId.get(w.memberId);
    if (m === undefined || seen.has(w.memberId) || !crypto.constantTimeEqual(m.publicKey, w.memberPublicKey)) return false;
    seen.add(w.memberId);
  }
  return true;
}
