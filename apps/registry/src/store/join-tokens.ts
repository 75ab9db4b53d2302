/**
 * Join tokens and enrolment (docs/PROTOCOL.md §15.11): tokens are stored by hash only, at most
 * MAX_OUTSTANDING_JOIN_TOKENS outstanding; enrolment consumes one, inserts the agent and issues its
 * certificate in one transaction.
 */
import { toHex } from '@parley/crypto-core';
import { int } from '@parley/db';
import { issueCertificate, type IssuerKey } from '@parley/identity';
import { RpcError } from '@parley/rpc';
import { insertCertificate } from './agents.js';
import { assertAgentIdNotRevoked } from './revocations.js';
import type { StoreState } from './context.js';
import { agentOf, joinTokenFrom, type AgentRow, type JoinTokenRow } from './rows.js';

/** Most join tokens outstanding (unused, unrevoked, unexpired) at once. */
export const MAX_OUTSTANDING_JOIN_TOKENS = 1000;
/** How long used, revoked and expired join tokens are kept (for `join-token list --all`) after they expire. */
export const JOIN_TOKEN_RETENTION_MS = 7 * 86_400_000;

/**
 * Stores a new join token (its hash only).
 * @throws RpcError `quota_exceeded` (too many outstanding), `already_exists` (the agent id is registered)
 */
export async function createJoinToken(s: StoreState, t: Omit<JoinTokenRow, 'usedAtMs' | 'revokedAtMs'>): Promise<JoinTokenRow> {
  return s.db.transaction(async (tx) => {
    await tx.exec('LOCK TABLE join_tokens IN SHARE ROW EXCLUSIVE MODE');
    const outstanding = await tx.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM join_tokens WHERE used_at_ms IS NULL AND revoked_at_ms IS NULL AND expires_at_ms > $1', [t.createdAtMs]);
    if (int(outstanding[0]!.n) >= MAX_OUTSTANDING_JOIN_TOKENS) {
      throw new RpcError('quota_exceeded', `${MAX_OUTSTANDING_JOIN_TOKENS} join tokens are outstanding: revoke unused ones or wait for them to expire`);
    }
    const taken = await tx.query('SELECT 1 FROM agents WHERE agent_id = $1', [t.agentId]);
    if (taken.length > 0) throw new RpcError('already_exists', `agent '${t.agentId}' already exists`);
    const rows = await tx.query<Record<string, unknown>>(
      `INSERT INTO join_tokens (token_id, token_hash, agent_id, agent_type, capabilities, validity_ms, created_at_ms, expires_at_ms, created_by_key_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *`,
      [t.tokenId, t.tokenHash, t.agentId, t.agentType, t.capabilities, t.validityMs, t.createdAtMs, t.expiresAtMs, t.createdByKeyId],
    );
    return joinTokenFrom(rows[0]!);
  });
}

/** Join tokens, newest first: the outstanding ones, or (`all`) every one still kept. */
export async function joinTokens(s: StoreState, all: boolean, nowMs: number): Promise<JoinTokenRow[]> {
  const rows = all
    ? await s.db.query<Record<string, unknown>>('SELECT * FROM join_tokens ORDER BY created_at_ms DESC, token_id LIMIT 10000')
    : await s.db.query<Record<string, unknown>>(
        'SELECT * FROM join_tokens WHERE used_at_ms IS NULL AND revoked_at_ms IS NULL AND expires_at_ms > $1 ORDER BY created_at_ms DESC, token_id',
        [nowMs],
      );
  return rows.map(joinTokenFrom);
}

/**
 * Makes an unused join token unusable.
 * @throws RpcError `not_found`, `failed_precondition` (already used or revoked)
 */
export async function revokeJoinToken(s: StoreState, tokenId: Uint8Array, nowMs: number): Promise<JoinTokenRow> {
  return s.db.transaction(async (tx) => {
    const rows = await tx.query<Record<string, unknown>>('SELECT * FROM join_tokens WHERE token_id = $1 FOR UPDATE', [tokenId]);
    if (rows[0] === undefined) throw new RpcError('not_found', `no join token ${toHex(tokenId)}`);
    const token = joinTokenFrom(rows[0]);
    if (token.usedAtMs !== null) throw new RpcError('failed_precondition', `join token ${toHex(tokenId)} was already used`);
    if (token.revokedAtMs !== null) throw new RpcError('failed_precondition', `join token ${toHex(tokenId)} is already revoked`);
    const updated = await tx.query<Record<string, unknown>>('UPDATE join_tokens SET revoked_at_ms = $2 WHERE token_id = $1 RETURNING *', [tokenId, nowMs]);
    return joinTokenFrom(updated[0]!);
  });
}

/**
 * Enrols an agent with a join token, in one transaction: the token (its hash compared in constant
 * time, then: not revoked, not used, not expired, for this agent id) is consumed, the agent inserted
 * and its certificate issued (type, capabilities and validity from the token). A failure rolls it all
 * back, the token included.
 * @throws RpcError `join_token_invalid` (unknown, wrong secret, revoked, another agent id),
 *   `join_token_used`, `join_token_expired`, `already_exists` (agent id or identity key)
 */
export async function enrollAgent(s: StoreState, issuer: IssuerKey, e: { tokenId: Uint8Array; tokenHash: Uint8Array; agentId: string; identityPublicKey: Uint8Array; nowMs: number }): Promise<AgentRow> {
  return s.db.transaction(async (tx) => {
    const rows = await tx.query<Record<string, unknown>>('SELECT * FROM join_tokens WHERE token_id = $1 FOR UPDATE', [e.tokenId]);
    const invalid = (): never => {
      throw new RpcError('join_token_invalid', 'join token unknown, revoked, or not for this agent id');
    };
    if (rows[0] === undefined) invalid();
    const token = joinTokenFrom(rows[0]!);
    if (!s.crypto.constantTimeEqual(token.tokenHash, e.tokenHash)) invalid();
    if (token.revokedAtMs !== null || token.agentId !== e.agentId) invalid();
    if (token.usedAtMs !== null) throw new RpcError('join_token_used', 'join token already used: ask an operator for a new one');
    if (token.expiresAtMs <= e.nowMs) throw new RpcError('join_token_expired', 'join token expired: ask an operator for a new one');
    const cert = issueCertificate(s.crypto, issuer, {
      agentId: token.agentId,
      identityPublicKey: e.identityPublicKey,
      agentType: token.agentType,
      capabilities: token.capabilities,
      validFromMs: e.nowMs,
      validUntilMs: e.nowMs + token.validityMs,
    });
    const inserted = await tx.query(
      `INSERT INTO agents (agent_id, agent_type, capabilities, current_serial, registered_at_ms, updated_at_ms)
       VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (agent_id) DO NOTHING RETURNING 1`,
      [token.agentId, token.agentType, cert.capabilities, cert.serial, e.nowMs],
    );
    if (inserted.length === 0) throw new RpcError('already_exists', `agent '${token.agentId}' already exists`);
    await assertAgentIdNotRevoked(tx, token.agentId); // revoked while unknown here (RevokeAgent with unknownOk)
    await insertCertificate(tx, cert, e.nowMs);
    await tx.query('UPDATE join_tokens SET used_at_ms = $2, used_serial = $3 WHERE token_id = $1', [e.tokenId, e.nowMs, cert.serial]);
    return agentOf(cert, token.agentType, e.nowMs, e.nowMs);
  });
}
