/**
 * Memories (docs/PROTOCOL.md §18.3, §18.7): CreateMemory (the owner's signed first log entry, epoch 1 and
 * its own key copy; within the owner's quota), GetMemory (log, members, epochs, the caller's key copy,
 * usage), ListMemories (the caller's, by page), and GetAgentCertificate (a member's certificate, to seal
 * key copies to).
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { bytes, int } from '@parley/db';
import { isAgentId } from '@parley/identity';
import {
  Membership,
  assertEpochRecordShape,
  assertKeyWrapShape,
  assertMembershipEntryShape,
  isMemoryId,
  memoryIdOf,
  verifyEpochRecord,
  verifyKeyWrap,
} from '@parley/memory';
import {
  AgentCertificateSchema,
  EpochRecordSchema,
  KeyWrapSchema,
  MembershipEntrySchema,
  MemoryAccess,
  fromBinary,
  toBinary,
  type CreateMemoryRequest,
  type CreateMemoryResponseSchema,
  type GetAgentCertificateRequest,
  type GetAgentCertificateResponseSchema,
  type GetMemoryRequest,
  type GetMemoryResponseSchema,
  type ListMemoriesRequest,
  type ListMemoriesResponseSchema,
  type MembershipEntry,
} from '@parley/proto';
import { access, rotationRequired } from './access.js';
import { assertTime, callTx, refuse, type Caller, type Init, type OpContext, type Outcome } from './call.js';
import { MEMORY_COLUMNS, memberRow, memoryRow, type MemoryRow } from './rows.js';

export async function createMemory(c: OpContext, req: CreateMemoryRequest, caller: Caller, now: number): Promise<Outcome<Init<typeof CreateMemoryResponseSchema>>> {
  const entry = assertMembershipEntryShape(req.entry);
  if (entry.memberId !== caller.cert.agentId || !c.crypto.constantTimeEqual(entry.memberPublicKey, caller.cert.identityPublicKey)) {
    refuse('identity_mismatch', 'a memory is created by its owner, for its own identity key');
  }
  const log = Membership.create(c.crypto, entry);
  const memoryId = log.memoryId;
  assertTime(c.skewMs, entry.timestampMs, 'entry', now);
  if (entry.expiresAtMs !== 0n && entry.expiresAtMs <= BigInt(now)) refuse('malformed', 'memory expiry is in the past');
  const epoch = assertEpochRecordShape(req.epoch);
  if (epoch.epoch !== 1) refuse('malformed', 'a memory starts at epoch 1');
  assertTime(c.skewMs, epoch.createdAtMs, 'epoch', now);
  verifyEpochRecord(c.crypto, log, epoch, undefined);
  const wrap = assertKeyWrapShape(req.ownerWrap, 'owner_wrap');
  if (wrap.epoch !== 1 || wrap.memberId !== entry.memberId || wrap.signerId !== entry.memberId || !c.crypto.constantTimeEqual(wrap.memberPublicKey, entry.memberPublicKey)) {
    refuse('malformed', "owner_wrap must be the owner's own copy of the epoch 1 key");
  }
  verifyKeyWrap(c.crypto, log, wrap);
  const outcome = await callTx(c.db, caller, async (tx) => {
    await tx.query('INSERT INTO memory_owners (owner_id) VALUES ($1) ON CONFLICT DO NOTHING', [entry.memberId]);
    const owner = await tx.query<{ memories: unknown }>('SELECT memories FROM memory_owners WHERE owner_id = $1 FOR UPDATE', [entry.memberId]);
    const existing = await tx.query<{ entry: unknown }>('SELECT entry FROM memory_membership_log WHERE memory_id = $1 AND version = 1', [memoryId]);
    if (existing[0] !== undefined) {
      const stored = fromBinary(MembershipEntrySchema, bytes(existing[0].entry));
      if (c.crypto.constantTimeEqual(stored.signature, entry.signature)) return 'already_applied';
      refuse('already_exists', 'a memory with this id exists');
    }
    if (int(owner[0]?.memories ?? 0) >= c.quotas.maxMemoriesPerOwner) refuse('quota_exceeded', `an agent may own at most ${c.quotas.maxMemoriesPerOwner} memories`);
    await tx.query(`INSERT INTO memories (${MEMORY_COLUMNS}) VALUES ($1, $2, $3, $4, 1, $5, 1, 0, 0)`, [
      memoryId,
      entry.memberId,
      Number(entry.timestampMs),
      Number(entry.expiresAtMs),
      log.head,
    ]);
    await tx.query('INSERT INTO memory_membership_log (memory_id, version, entry, entry_hash) VALUES ($1, 1, $2, $3)', [memoryId, toBinary(MembershipEntrySchema, entry), log.head]);
    await tx.query('INSERT INTO memory_members (memory_id, member_id, access, public_key, expires_at_ms, certificate) VALUES ($1, $2, $3, $4, 0, $5)', [
      memoryId,
      entry.memberId,
      MemoryAccess.ADMIN,
      entry.memberPublicKey,
      toBinary(AgentCertificateSchema, caller.certificate),
    ]);
    await tx.query('INSERT INTO memory_epochs (memory_id, epoch, record) VALUES ($1, 1, $2)', [memoryId, toBinary(EpochRecordSchema, epoch)]);
    await tx.query('INSERT INTO memory_key_wraps (memory_id, member_id, epoch, wrap) VALUES ($1, $2, 1, $3)', [memoryId, entry.memberId, toBinary(KeyWrapSchema, wrap)]);
    await tx.query('UPDATE memory_owners SET memories = memories + 1 WHERE owner_id = $1', [entry.memberId]);
    return 'ok';
  });
  return { response: { memoryId }, outcome };
}

export async function getMemory(c: OpContext, req: GetMemoryRequest, caller: Caller, now: number): Promise<Outcome<Init<typeof GetMemoryResponseSchema>>> {
  if (req.afterVersion < 0n) refuse('malformed', 'after_version must not be negative');
  return callTx(c.db, caller, async (tx) => {
    const { memory, member } = await access(c, tx, req.memoryId, caller, now, MemoryAccess.READ, 'share');
    const entries = await tx.query<{ entry: unknown }>('SELECT entry FROM memory_membership_log WHERE memory_id = $1 AND version > $2 ORDER BY version', [
      memory.memoryId,
      req.afterVersion.toString(),
    ]);
    const members = await tx.query<Record<string, unknown>>(
      'SELECT member_id, access, public_key, expires_at_ms, certificate FROM memory_members WHERE memory_id = $1 AND (expires_at_ms = 0 OR expires_at_ms > $2) ORDER BY member_id',
      [memory.memoryId, now],
    );
    const epochs = await tx.query<{ record: unknown }>('SELECT record FROM memory_epochs WHERE memory_id = $1 ORDER BY epoch', [memory.memoryId]);
    const wrap = await tx.query<{ wrap: unknown }>('SELECT wrap FROM memory_key_wraps WHERE memory_id = $1 AND member_id = $2 ORDER BY epoch DESC LIMIT 1', [
      memory.memoryId,
      caller.cert.agentId,
    ]);
    const owner = await tx.query<Record<string, unknown>>('SELECT used_bytes, used_segments FROM memory_owners WHERE owner_id = $1', [memory.ownerId]);
    return {
      response: {
        memory: summary(memory, member.access),
        entries: entries.map((r) => fromBinary(MembershipEntrySchema, bytes(r.entry))),
        members: members.map((r) => {
          const m = memberRow(r);
          return { memberId: m.memberId, access: m.access, memberPublicKey: m.publicKey, expiresAtMs: BigInt(m.expiresAtMs), certificate: fromBinary(AgentCertificateSchema, m.certificate) };
        }),
        epochs: epochs.map((r) => fromBinary(EpochRecordSchema, bytes(r.record))),
        ...(wrap[0] === undefined ? {} : { wrap: fromBinary(KeyWrapSchema, bytes(wrap[0].wrap)) }),
        usage: {
          bytes: BigInt(memory.usedBytes),
          segments: BigInt(memory.usedSegments),
          maxBytes: BigInt(c.quotas.maxBytesPerMemory),
          maxSegments: BigInt(c.quotas.maxSegmentsPerMemory),
          ownerBytes: BigInt(int(owner[0]?.['used_bytes'] ?? 0)),
          ownerSegments: BigInt(int(owner[0]?.['used_segments'] ?? 0)),
          ownerMaxBytes: BigInt(c.quotas.maxBytesPerOwner),
          ownerMaxSegments: BigInt(c.quotas.maxSegmentsPerOwner),
        },
        rotationRequired: await rotationRequired(tx, memory, now),
      },
    };
  }, true);
}

export async function listMemories(c: OpContext, req: ListMemoriesRequest, caller: Caller, now: number): Promise<Outcome<Init<typeof ListMemoriesResponseSchema>>> {
  const size = req.pageSize === 0 ? 100 : req.pageSize;
  if (size < 1 || size > 500) refuse('malformed', 'page_size must be 1..500');
  if (req.pageToken !== '' && !isMemoryId(req.pageToken)) refuse('malformed', 'page_token is not one this service issued');
  const rows = await callTx(c.db, caller, (tx) => tx.query<Record<string, unknown>>(
    `SELECT ${MEMORY_COLUMNS.split(', ').map((col) => `m.${col}`).join(', ')}, mm.access FROM memories m JOIN memory_members mm ON mm.memory_id = m.memory_id
     WHERE mm.member_id = $1 AND mm.public_key = $2 AND (mm.expires_at_ms = 0 OR mm.expires_at_ms > $3) AND (m.expires_at_ms = 0 OR m.expires_at_ms > $3) AND m.memory_id > $4
     ORDER BY m.memory_id LIMIT $5`,
    [caller.cert.agentId, caller.cert.identityPublicKey, now, req.pageToken, size + 1],
  ), true);
  const page = rows.slice(0, size);
  return {
    response: {
      memories: page.map((r) => summary(memoryRow(r), int(r['access']) as MemoryAccess)),
      nextPageToken: rows.length > size ? String(page[page.length - 1]!['memory_id']) : '',
    },
  };
}

export async function getAgentCertificate(c: OpContext, req: GetAgentCertificateRequest, caller: Caller): Promise<Outcome<Init<typeof GetAgentCertificateResponseSchema>>> {
  if (!isAgentId(req.agentId)) refuse('malformed', 'agent_id must be an agent id');
  const rows = await callTx(c.db, caller, (tx) => tx.query<{ certificate: unknown }>('SELECT certificate FROM memory_agents WHERE agent_id = $1', [req.agentId]), true);
  let certificate = rows[0] === undefined ? undefined : fromBinary(AgentCertificateSchema, bytes(rows[0].certificate));
  if (certificate === undefined && c.directory !== undefined) certificate = await c.directory(req.agentId);
  if (certificate === undefined) refuse('not_found', 'no certificate known for this agent');
  return { response: { certificate } };
}

export function summary(m: MemoryRow, access: MemoryAccess): Init<typeof ListMemoriesResponseSchema>['memories'] extends (infer S)[] | undefined ? S : never {
  return {
    memoryId: m.memoryId,
    ownerId: m.ownerId,
    access,
    createdAtMs: BigInt(m.createdAtMs),
    expiresAtMs: BigInt(m.expiresAtMs),
    membershipVersion: m.membershipVersion,
    currentEpoch: m.currentEpoch,
  };
}

/** The memory id a CREATE entry derives, for its audit entry ('memory-service' when it derives none). */
export function derivedMemoryId(crypto: ParleyCrypto, entry: MembershipEntry | undefined): string {
  try {
    const e = assertMembershipEntryShape(entry);
    return memoryIdOf(crypto, e.memberId, e.memberPublicKey, e.creationNonce);
  } catch {
    return 'memory-service';
  }
}
