/**
 * Membership and key epochs (docs/PROTOCOL.md §18.4–§18.6): UpdateMembership appends a signed GRANT (with
 * the member's certificate and its copy of the current key) or REVOKE (with the next key epoch, which may be a
 * cut: no back link, §18.5) to the log; RotateEpoch starts the next epoch, never a cut. A retry of an applied
 * change is recognised by its signature.
 */
import { bytes } from '@parley/db';
import { MAX_CERTIFICATE_BYTES, verifyCertificate } from '@parley/identity';
import {
  ADMIN_GRANT_LIMIT,
  GRANT_LIMIT,
  MAX_MEMBERS,
  assertEpochRecordShape,
  assertKeyWrapShape,
  assertMembershipEntryShape,
  isCutEpoch,
  membershipEntryHash,
  membershipLayout,
  verifyKeyWrap,
} from '@parley/memory';
import {
  AgentCertificateSchema,
  EpochRecordSchema,
  KeyWrapSchema,
  MembershipChange,
  MembershipEntrySchema,
  MemoryAccess,
  fromBinary,
  toBinary,
  type RotateEpochRequest,
  type RotateEpochResponseSchema,
  type UpdateMembershipRequest,
  type UpdateMembershipResponseSchema,
  type MembershipEntry,
} from '@parley/proto';
import { access, installEpoch, loadLog, rotationRequired } from './access.js';
import { assertTime, callTx, refuse, type Caller, type Init, type OpContext, type Outcome } from './call.js';

export async function updateMembership(c: OpContext, req: UpdateMembershipRequest, caller: Caller, now: number): Promise<Outcome<Init<typeof UpdateMembershipResponseSchema>>> {
  const entry = assertMembershipEntryShape(req.entry);
  if (entry.signerId !== caller.cert.agentId) refuse('identity_mismatch', 'the entry must be signed by the caller');
  assertWrapCount(req.wraps.length);
  return callTx(c.db, caller, async (tx): Promise<Outcome<Init<typeof UpdateMembershipResponseSchema>>> => {
    const { memory } = await access(c, tx, req.memoryId, caller, now, MemoryAccess.ADMIN, 'update');
    // Refusals that need no log first: what a call costs must not grow with the log (§18.4).
    if (entry.version <= memory.membershipVersion) {
      const stored = await tx.query<{ entry: unknown }>('SELECT entry FROM memory_membership_log WHERE memory_id = $1 AND version = $2', [memory.memoryId, entry.version.toString()]);
      if (stored[0] !== undefined && c.crypto.constantTimeEqual(fromBinary(MembershipEntrySchema, bytes(stored[0].entry)).signature, entry.signature)) {
        return { response: { membershipVersion: memory.membershipVersion, currentEpoch: memory.currentEpoch }, outcome: 'already_applied' };
      }
    }
    if (entry.version !== memory.membershipVersion + 1n) refuse('conflict', `membership entry has version ${entry.version}, the log is at ${memory.membershipVersion}`);
    assertLogRoom(entry, memory.ownerId);
    if (!c.crypto.ed25519.verify(entry.signature, membershipLayout(memory.memoryId, entry), caller.cert.identityPublicKey)) refuse('bad_signature', 'membership entry signature does not verify');
    if (entry.change === MembershipChange.REVOKE) {
      const epoch = req.epoch;
      if (epoch === undefined) refuse('malformed', 'a revocation carries the next key epoch');
      if (epoch.epoch !== memory.currentEpoch + 1) refuse('conflict', `epoch ${epoch.epoch} does not follow the current epoch ${memory.currentEpoch}`);
      if (epoch.membershipVersion !== entry.version) refuse('conflict', `epoch is for membership version ${epoch.membershipVersion}, the revocation is version ${entry.version}`);
    }
    const log = await loadLog(c.crypto, tx, memory);
    log.append(entry); // version, chain, signer rights, signature
    assertTime(c.skewMs, entry.timestampMs, 'entry', now);
    const hash = membershipEntryHash(c.crypto, memory.memoryId, entry);
    if (entry.change === MembershipChange.GRANT) {
      if (entry.expiresAtMs !== 0n && entry.expiresAtMs <= BigInt(now)) refuse('malformed', 'grant expiry is in the past');
      if (log.members().length > c.quotas.maxMembersPerMemory) refuse('quota_exceeded', `a memory has at most ${c.quotas.maxMembersPerMemory} members`);
      const certificate = req.memberCertificate;
      if (certificate === undefined) refuse('malformed', "a grant carries the member's certificate");
      const cert = verifyCertificate(c.crypto, certificate, { trustBundle: c.trustBundle, nowMs: now, revocations: c.revocations, expectedAgentId: entry.memberId });
      if (!c.crypto.constantTimeEqual(cert.identityPublicKey, entry.memberPublicKey)) refuse('identity_mismatch', "the grant is not for the key in the member's certificate");
      // Every GetMemory answer carries it: its cap is part of the answer's bound (@parley/memory limits.ts).
      const encodedCertificate = toBinary(AgentCertificateSchema, certificate);
      if (encodedCertificate.length > MAX_CERTIFICATE_BYTES) refuse('malformed', `the member's certificate is ${encodedCertificate.length} bytes, more than ${MAX_CERTIFICATE_BYTES}`);
      if (req.wraps.length !== 1 || req.epoch !== undefined) refuse('malformed', "a grant carries exactly the member's copy of the current epoch key");
      const wrap = assertKeyWrapShape(req.wraps[0]);
      if (wrap.epoch !== memory.currentEpoch) refuse('conflict', `the key copy is of epoch ${wrap.epoch}, the current epoch is ${memory.currentEpoch}`);
      if (wrap.memberId !== entry.memberId || wrap.signerId !== caller.cert.agentId || !c.crypto.constantTimeEqual(wrap.memberPublicKey, entry.memberPublicKey)) {
        refuse('malformed', "the key copy must be the granted member's, sealed to the granted key, signed by the caller");
      }
      verifyKeyWrap(c.crypto, log, wrap);
      await tx.query(
        `INSERT INTO memory_members (memory_id, member_id, access, public_key, expires_at_ms, certificate) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (memory_id, member_id) DO UPDATE SET access = EXCLUDED.access, public_key = EXCLUDED.public_key, expires_at_ms = EXCLUDED.expires_at_ms, certificate = EXCLUDED.certificate`,
        [memory.memoryId, entry.memberId, entry.access, entry.memberPublicKey, Number(entry.expiresAtMs), encodedCertificate],
      );
      // §18.5: a grant that replaces the key a copy of the current epoch was sealed to leaves that key able to open the
      // current epoch, and the copy it deletes was the only record of it: the memory keeps the epoch instead, and
      // a rotation is required until the next epoch (sealed to the new key only) is made.
      const held = await tx.query<{ wrap: unknown }>('SELECT wrap FROM memory_key_wraps WHERE memory_id = $1 AND member_id = $2 AND epoch = $3', [
        memory.memoryId,
        entry.memberId,
        memory.currentEpoch,
      ]);
      if (held[0] !== undefined && !c.crypto.constantTimeEqual(fromBinary(KeyWrapSchema, bytes(held[0].wrap)).memberPublicKey, entry.memberPublicKey)) {
        await tx.query('UPDATE memories SET replaced_key_epoch = $2 WHERE memory_id = $1', [memory.memoryId, memory.currentEpoch]);
      }
      await tx.query('DELETE FROM memory_key_wraps WHERE memory_id = $1 AND member_id = $2', [memory.memoryId, entry.memberId]);
      await tx.query('INSERT INTO memory_key_wraps (memory_id, member_id, epoch, wrap) VALUES ($1, $2, $3, $4)', [memory.memoryId, entry.memberId, wrap.epoch, toBinary(KeyWrapSchema, wrap)]);
    } else {
      if (req.memberCertificate !== undefined) refuse('malformed', 'a revocation carries no certificate');
      await tx.query('DELETE FROM memory_members WHERE memory_id = $1 AND member_id = $2', [memory.memoryId, entry.memberId]);
      await tx.query('DELETE FROM memory_key_wraps WHERE memory_id = $1 AND member_id = $2', [memory.memoryId, entry.memberId]);
      // A revocation's epoch is never refused by the epoch bound: the owner (and admins) can always remove a member (§18.5).
      await installEpoch(c, tx, memory, log, req.epoch!, req.wraps, caller, now, false);
    }
    await tx.query('INSERT INTO memory_membership_log (memory_id, version, entry, entry_hash) VALUES ($1, $2, $3, $4)', [
      memory.memoryId,
      entry.version.toString(),
      toBinary(MembershipEntrySchema, entry),
      hash,
    ]);
    await tx.query('UPDATE memories SET membership_version = $2, membership_head = $3 WHERE memory_id = $1', [memory.memoryId, entry.version.toString(), hash]);
    const epoch = entry.change === MembershipChange.REVOKE ? memory.currentEpoch + 1 : memory.currentEpoch;
    return { response: { membershipVersion: entry.version, currentEpoch: epoch } };
  });
}

/**
 * A request carries at most one key copy per member there can be (§18.5), refused before the transaction
 * and before any signature check: the copies' count is the caller's choice, the members' is bounded.
 * @throws RpcError `malformed`
 */
function assertWrapCount(n: number): void {
  if (n > MAX_MEMBERS) refuse('malformed', `${n} key copies: a memory has at most ${MAX_MEMBERS} members, one copy each`);
}

/**
 * §18.4 log room: a GRANT by an admin other than the owner only up to version {@link ADMIN_GRANT_LIMIT}, by
 * the owner up to {@link GRANT_LIMIT}; the rest is kept for REVOKEs, enough to remove every member there can be.
 * @throws RpcError `quota_exceeded`
 */
function assertLogRoom(entry: MembershipEntry, ownerId: string): void {
  if (entry.change !== MembershipChange.GRANT) return;
  const limit = entry.signerId === ownerId ? GRANT_LIMIT : ADMIN_GRANT_LIMIT;
  if (entry.version > BigInt(limit)) {
    refuse('quota_exceeded', `the membership log takes grants ${entry.signerId === ownerId ? '' : "by admins other than the owner "}up to entry ${limit}; the rest is kept for revocations`);
  }
}

export async function rotateEpoch(c: OpContext, req: RotateEpochRequest, caller: Caller, now: number): Promise<Outcome<Init<typeof RotateEpochResponseSchema>>> {
  const epoch = assertEpochRecordShape(req.epoch);
  // §18.5: a cut (an epoch after the first without a back link) comes only with a REVOKE, in UpdateMembership.
  if (isCutEpoch(epoch)) refuse('malformed', 'a key epoch without a back link (a cut) comes only with a revocation');
  assertWrapCount(req.wraps.length);
  return callTx(c.db, caller, async (tx): Promise<Outcome<Init<typeof RotateEpochResponseSchema>>> => {
    const { memory, member } = await access(c, tx, req.memoryId, caller, now, MemoryAccess.WRITE, 'update');
    if (epoch.epoch <= memory.currentEpoch) {
      const stored = await tx.query<{ record: unknown }>('SELECT record FROM memory_epochs WHERE memory_id = $1 AND epoch = $2', [memory.memoryId, epoch.epoch]);
      if (stored[0] !== undefined && c.crypto.constantTimeEqual(fromBinary(EpochRecordSchema, bytes(stored[0].record)).signature, epoch.signature)) {
        return { response: { currentEpoch: memory.currentEpoch }, outcome: 'already_applied' };
      }
    }
    // Refusals that need no log first (§18.4: a call's cost does not grow with the log).
    if (epoch.epoch !== memory.currentEpoch + 1) refuse('conflict', `epoch ${epoch.epoch} does not follow the current epoch ${memory.currentEpoch}`);
    if (epoch.membershipVersion !== memory.membershipVersion) refuse('conflict', `epoch is for membership version ${epoch.membershipVersion}, the log is at ${memory.membershipVersion}`);
    if (epoch.creatorId !== caller.cert.agentId) refuse('identity_mismatch', 'epoch creator is not the caller');
    // §18.5: a writer starts an epoch only when one is required; an admin at any time, within the epoch bound.
    const required = await rotationRequired(tx, memory, now);
    if (!required && member.access < MemoryAccess.ADMIN) refuse('permission_denied', 'a writer starts a key epoch only when a rotation is required; admins at any time');
    const log = await loadLog(c.crypto, tx, memory);
    await installEpoch(c, tx, memory, log, epoch, req.wraps, caller, now, !required);
    return { response: { currentEpoch: epoch.epoch } };
  });
}
