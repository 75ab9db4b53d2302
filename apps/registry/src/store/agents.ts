/**
 * Agents and their certificates: reads (one agent, filtered pages), registration with a challenge, and key
 * rotation (a new certificate, the old one revoked as SUPERSEDED in the same transaction). Row locks are
 * taken agent → certificate → counter, as everywhere in the store.
 */
import { encodeCertificate, issueCertificate, type IssuerKey } from '@parley/identity';
import { bytes, int, intOrNull, type Queryable } from '@parley/db';
import { AgentStatus, ChallengePurpose, RevocationReason, type AgentCertificate } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import type { Challenges } from './challenges.js';
import type { StoreState } from './context.js';
import { appendRevocation, assertAgentIdNotRevoked } from './revocations.js';

/**
 * Shortest time between two key rotations of one agent (docs/PROTOCOL.md §15.5): each rotation appends a
 * SUPERSEDED entry to the revocation list for ever, and RotateKey needs only the agent's own key.
 */
export const MIN_ROTATION_INTERVAL_MS = 60_000;
import { AGENT_SELECT, agentFrom, agentOf, isUniqueViolation, type AgentJoin, type AgentRow, type ListAgentsQuery, type NewAgent, type RevocationRow } from './rows.js';

/** One agent, or undefined. */
export async function agent(s: StoreState, agentId: string, nowMs: number): Promise<AgentRow | undefined> {
  const rows = await s.db.query<AgentJoin>(`${AGENT_SELECT} WHERE a.agent_id = $1`, [agentId]);
  return rows[0] === undefined ? undefined : agentFrom(rows[0], nowMs);
}

/** One page of agents (limit + 1 rows are read to know whether more follow). */
export async function listAgents(s: StoreState, q: ListAgentsQuery): Promise<{ agents: AgentRow[]; more: boolean }> {
  const where: string[] = [];
  const params: unknown[] = [];
  const p = (value: unknown): string => {
    params.push(value);
    return `$${params.length}`;
  };
  if (q.afterAgentId !== undefined) where.push(`a.agent_id > ${p(q.afterAgentId)}`);
  if (q.agentType !== undefined) where.push(`a.agent_type = ${p(q.agentType)}`);
  if (q.capability !== undefined) where.push(`a.capabilities @> ARRAY[${p(q.capability)}]::text[]`);
  const revoked = '(a.revoked_version IS NOT NULL OR c.revoked_version IS NOT NULL)';
  if (q.status === AgentStatus.REVOKED) where.push(revoked);
  if (q.status === AgentStatus.EXPIRED) where.push(`NOT ${revoked} AND c.valid_until_ms <= ${p(q.nowMs)}`);
  if (q.status === AgentStatus.ACTIVE) where.push(`NOT ${revoked} AND c.valid_until_ms > ${p(q.nowMs)}`);
  const sql = `${AGENT_SELECT}${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY a.agent_id LIMIT ${p(q.limit + 1)}`;
  const rows = await s.db.query<AgentJoin>(sql, params);
  return { agents: rows.slice(0, q.limit).map((r) => agentFrom(r, q.nowMs)), more: rows.length > q.limit };
}

/**
 * Registers an agent and issues its first certificate, consuming the
 * challenge, in one transaction.
 * @throws RpcError `challenge_invalid` (unknown, used, expired or other-purpose challenge),
 *   `already_exists` (agent id taken, or identity key registered before)
 */
export async function registerAgent(s: StoreState, challenges: Challenges, issuer: IssuerKey, a: NewAgent): Promise<AgentRow> {
  return s.db.transaction(async (tx) => {
    await challenges.consume(tx, a.challenge, ChallengePurpose.REGISTER, a.nowMs);
    const cert = issueCertificate(s.crypto, issuer, {
      agentId: a.agentId,
      identityPublicKey: a.identityPublicKey,
      agentType: a.agentType,
      capabilities: a.capabilities,
      validFromMs: a.validFromMs,
      validUntilMs: a.validUntilMs,
    });
    const inserted = await tx.query(
      `INSERT INTO agents (agent_id, agent_type, capabilities, current_serial, registered_at_ms, updated_at_ms)
       VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (agent_id) DO NOTHING RETURNING 1`,
      [a.agentId, a.agentType, cert.capabilities, cert.serial, a.nowMs],
    );
    if (inserted.length === 0) throw new RpcError('already_exists', `agent '${a.agentId}' already exists`);
    await assertAgentIdNotRevoked(tx, a.agentId); // revoked while unknown here (RevokeAgent with unknownOk)
    await insertCertificate(tx, cert, a.nowMs);
    return agentOf(cert, a.agentType, a.nowMs, a.nowMs);
  });
}

/**
 * Replaces an agent's identity key: consumes the challenge, issues a new
 * certificate and revokes the old one (reason SUPERSEDED), in one transaction.
 * `expectedSerial` is the certificate whose key signed the request: if a
 * concurrent rotation replaced it first, this one fails. The old certificate
 * must be valid now (not expired, not yet-to-start), and the new one is valid
 * from now until `validUntilMs` capped at the old certificate's end (default:
 * the old end): rotation replaces the key, never extends the grant.
 * At most one rotation per agent per {@link MIN_ROTATION_INTERVAL_MS} (by `nowMs`, checked under the row lock).
 * @throws RpcError `not_found`, `challenge_invalid`, `failed_precondition` (revoked, expired or not yet valid,
 *   or rotated concurrently), `rate_limited` (rotated less than a minute ago), `already_exists` (key used before)
 */
export async function rotateKey(
  s: StoreState,
  challenges: Challenges,
  issuer: IssuerKey,
  r: { agentId: string; expectedSerial: Uint8Array; newPublicKey: Uint8Array; validUntilMs?: number | undefined; challenge: Uint8Array; nowMs: number },
): Promise<{ agent: AgentRow; superseded: RevocationRow }> {
  return s.db.transaction(async (tx) => {
    await challenges.consume(tx, r.challenge, ChallengePurpose.ROTATE_KEY, r.nowMs);
    const rows = await tx.query<{ current_serial: unknown; revoked_version: unknown; agent_type: string; capabilities: string[]; registered_at_ms: unknown; last_rotated_at_ms: unknown }>(
      'SELECT current_serial, revoked_version, agent_type, capabilities, registered_at_ms, last_rotated_at_ms FROM agents WHERE agent_id = $1 FOR UPDATE',
      [r.agentId],
    );
    const row = rows[0];
    if (row === undefined) throw new RpcError('not_found', `unknown agent '${r.agentId}'`);
    if (row.revoked_version !== null) throw new RpcError('failed_precondition', `agent '${r.agentId}' is revoked`);
    const oldSerial = bytes(row.current_serial);
    if (!s.crypto.constantTimeEqual(oldSerial, r.expectedSerial)) {
      throw new RpcError('failed_precondition', `agent '${r.agentId}' was rotated concurrently; sign with its current key`);
    }
    const old = await tx.query<{ revoked_version: unknown; valid_from_ms: unknown; valid_until_ms: unknown }>(
      'SELECT revoked_version, valid_from_ms, valid_until_ms FROM certificates WHERE serial = $1 FOR UPDATE',
      [oldSerial],
    );
    if (old[0] === undefined || old[0].revoked_version !== null) throw new RpcError('failed_precondition', `the current certificate of agent '${r.agentId}' is revoked`);
    // Rotation changes the key, not the grant: only a currently valid certificate can be rotated,
    // and the new one ends no later than the old one (renewal needs an operator).
    const oldFromMs = int(old[0].valid_from_ms);
    const oldUntilMs = int(old[0].valid_until_ms);
    if (r.nowMs >= oldUntilMs) throw new RpcError('failed_precondition', `the current certificate of agent '${r.agentId}' is expired: an operator must register it again`);
    if (r.nowMs < oldFromMs) throw new RpcError('failed_precondition', `the current certificate of agent '${r.agentId}' is not yet valid`);
    // Checked under the agent's row lock, so concurrent rotations (any registry process) cannot both pass.
    const lastRotatedMs = intOrNull(row.last_rotated_at_ms);
    if (lastRotatedMs !== null && r.nowMs - lastRotatedMs < MIN_ROTATION_INTERVAL_MS) {
      const waitS = Math.ceil((lastRotatedMs + MIN_ROTATION_INTERVAL_MS - r.nowMs) / 1000);
      throw new RpcError('rate_limited', `agent '${r.agentId}' rotated its key less than ${MIN_ROTATION_INTERVAL_MS / 1000} s ago: try again in ${waitS} s`);
    }
    const cert = issueCertificate(s.crypto, issuer, {
      agentId: r.agentId,
      identityPublicKey: r.newPublicKey,
      agentType: row.agent_type,
      capabilities: row.capabilities,
      validFromMs: r.nowMs,
      validUntilMs: Math.min(r.validUntilMs ?? oldUntilMs, oldUntilMs),
    });
    await insertCertificate(tx, cert, r.nowMs);
    await tx.query('UPDATE agents SET current_serial = $2, updated_at_ms = $3, last_rotated_at_ms = $3 WHERE agent_id = $1', [r.agentId, cert.serial, r.nowMs]);
    const superseded = await appendRevocation(s, tx, { kind: 'serial', agentId: '', serial: oldSerial }, {
      reason: RevocationReason.SUPERSEDED,
      reasonText: 'key rotated',
      revokedAtMs: r.nowMs,
      operatorKeyId: null,
      nowMs: r.nowMs,
    });
    await tx.query('UPDATE certificates SET revoked_version = $2 WHERE serial = $1', [oldSerial, superseded.version]);
    return { agent: agentOf(cert, row.agent_type, int(row.registered_at_ms), r.nowMs), superseded };
  });
}

/** Stores an issued certificate. @throws RpcError `already_exists` when its identity key is registered already */
export async function insertCertificate(tx: Queryable, cert: AgentCertificate, nowMs: number): Promise<void> {
  try {
    await tx.query(
      `INSERT INTO certificates (serial, agent_id, identity_public_key, issuer_key_id, valid_from_ms, valid_until_ms, issued_at_ms, encoded)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [cert.serial, cert.agentId, cert.identityPublicKey, cert.issuerKeyId, Number(cert.validFromMs), Number(cert.validUntilMs), nowMs, encodeCertificate(cert)],
    );
  } catch (error) {
    if (isUniqueViolation(error) && String(error.constraint ?? '').includes('identity_public_key')) {
      throw new RpcError('already_exists', 'this identity public key is already registered (to this or another agent)');
    }
    throw error;
  }
}
