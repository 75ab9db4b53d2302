/**
 * The revocation list (docs/PROTOCOL.md §15.6): versions are gapless and monotonic under concurrent
 * writers — a revoking transaction increments the single counter row, which locks it until commit, so
 * writers take versions one at a time in commit order and a rolled-back writer gives its number back;
 * the chain head (the last entry hash) lives in the same row for the same reason.
 */
import { bytes, int, type Queryable } from '@parley/db';
import { EMPTY_CHAIN_HASH, revocationEntryHash, type RevocationEntryFields } from '@parley/identity';
import { RpcError } from '@parley/rpc';
import type { StoreState } from './context.js';
import { isUniqueViolation, revocationFrom, type RevocationJoin, type RevocationRequest, type RevocationRow } from './rows.js';

/** NOTIFY channel for new revocations (its payload is the new version). */
export const REVOCATION_CHANNEL = 'parley_registry_revocations';

/**
 * Revokes an agent id (every certificate it holds, past and future).
 * @throws RpcError `not_found` (unknown agent), `already_exists` (already revoked)
 */
export async function revokeAgent(s: StoreState, agentId: string, req: RevocationRequest): Promise<RevocationRow> {
  return s.db.transaction(async (tx) => {
    const rows = await tx.query<{ revoked_version: unknown }>('SELECT revoked_version FROM agents WHERE agent_id = $1 FOR UPDATE', [agentId]);
    if (rows[0] === undefined) {
      if (req.unknownOk !== true) throw new RpcError('not_found', `unknown agent '${agentId}'`);
      return appendUnknown(s, tx, { kind: 'agent', agentId, serial: new Uint8Array(0) }, req, `agent '${agentId}'`);
    }
    if (rows[0].revoked_version !== null) {
      throw new RpcError('already_exists', `agent '${agentId}' is already revoked (revocation version ${int(rows[0].revoked_version)})`);
    }
    const entry = await appendRevocation(s, tx, { kind: 'agent', agentId, serial: new Uint8Array(0) }, req);
    await tx.query('UPDATE agents SET revoked_version = $2, updated_at_ms = $3 WHERE agent_id = $1', [agentId, entry.version, req.nowMs]);
    return entry;
  });
}

/**
 * Revokes one certificate by serial.
 * @throws RpcError `not_found` (no such certificate), `already_exists` (already revoked)
 */
export async function revokeSerial(s: StoreState, serial: Uint8Array, req: RevocationRequest): Promise<RevocationRow> {
  return s.db.transaction(async (tx) => {
    const rows = await tx.query<{ agent_id: string; revoked_version: unknown }>(
      'SELECT c.agent_id, c.revoked_version FROM agents a JOIN certificates c ON c.agent_id = a.agent_id WHERE c.serial = $1 FOR UPDATE',
      [serial],
    );
    const hex = Buffer.from(serial).toString('hex');
    if (rows[0] === undefined) {
      if (req.unknownOk !== true) throw new RpcError('not_found', `unknown certificate serial ${hex}`);
      return appendUnknown(s, tx, { kind: 'serial', agentId: '', serial }, req, `certificate ${hex}`);
    }
    if (rows[0].revoked_version !== null) {
      throw new RpcError('already_exists', `certificate ${hex} is already revoked (revocation version ${int(rows[0].revoked_version)})`);
    }
    const entry = await appendRevocation(s, tx, { kind: 'serial', agentId: '', serial }, req);
    await tx.query('UPDATE certificates SET revoked_version = $2 WHERE serial = $1', [serial, entry.version]);
    await tx.query('UPDATE agents SET updated_at_ms = $2 WHERE agent_id = $1', [rows[0].agent_id, req.nowMs]);
    return entry;
  });
}

/**
 * Revokes a subject this registry has no row for (`unknownOk`): the entry only, once per subject like
 * every entry (the list's unique indexes; a concurrent twin loses on them and rolls back its version).
 */
async function appendUnknown(
  s: StoreState,
  tx: Queryable,
  subject: { kind: 'agent' | 'serial'; agentId: string; serial: Uint8Array },
  req: RevocationRequest,
  what: string,
): Promise<RevocationRow> {
  const already = await revokedVersionOf(tx, subject);
  if (already !== undefined) throw new RpcError('already_exists', `${what} is already revoked (revocation version ${already})`);
  try {
    return await appendRevocation(s, tx, subject, req);
  } catch (error) {
    if (isUniqueViolation(error)) throw new RpcError('already_exists', `${what} is already revoked`);
    throw error;
  }
}

/** The version of the list entry that revokes this agent id or serial, or undefined. */
export async function revokedVersionOf(q: Queryable, subject: { kind: 'agent' | 'serial'; agentId: string; serial: Uint8Array }): Promise<number | undefined> {
  const rows =
    subject.kind === 'agent'
      ? await q.query<{ version: unknown }>('SELECT version FROM revocations WHERE agent_id = $1', [subject.agentId])
      : await q.query<{ version: unknown }>('SELECT version FROM revocations WHERE serial = $1', [subject.serial]);
  return rows[0] === undefined ? undefined : int(rows[0].version);
}

/**
 * Refuses a registration under an agent id the list revokes (revoked while this registry did not know it,
 * `unknownOk`): an id revoked is revoked with every certificate it will ever have.
 * @throws RpcError `already_exists`
 */
export async function assertAgentIdNotRevoked(q: Queryable, agentId: string): Promise<void> {
  const version = await revokedVersionOf(q, { kind: 'agent', agentId, serial: new Uint8Array(0) });
  if (version !== undefined) throw new RpcError('already_exists', `agent id '${agentId}' is revoked (revocation list version ${version}): choose another id`);
}

/** Appends one entry: takes the next version from the counter row (locking it until commit) and extends the chain. */
export async function appendRevocation(
  s: StoreState,
  tx: Queryable,
  subject: { kind: 'agent' | 'serial'; agentId: string; serial: Uint8Array },
  req: RevocationRequest,
): Promise<RevocationRow> {
  // Read through `tx`: a query on the pool while this transaction holds the only connection would never return.
  const registryId = await s.registryIdIn(tx);
  const counter = await tx.query<{ version: unknown; head_hash: unknown }>(
    'UPDATE revocation_counter SET version = version + 1 RETURNING version, head_hash',
  );
  const version = int(counter[0]!.version);
  const fields: RevocationEntryFields = { ...subject, version, reason: req.reason, reasonText: req.reasonText, revokedAtMs: req.revokedAtMs };
  const entryHash = revocationEntryHash(s.crypto, registryId, bytes(counter[0]!.head_hash), fields);
  await tx.query(
    `INSERT INTO revocations (version, agent_id, serial, reason, reason_text, revoked_at_ms, recorded_at_ms, entry_hash, operator_key_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [
      version,
      subject.kind === 'agent' ? subject.agentId : null,
      subject.kind === 'serial' ? subject.serial : null,
      req.reason,
      req.reasonText,
      req.revokedAtMs,
      req.nowMs,
      entryHash,
      req.operatorKeyId,
    ],
  );
  await tx.query('UPDATE revocation_counter SET head_hash = $1', [entryHash]);
  // Delivered at commit, to every registry process that LISTENs (pg); PGlite wakes its own watchers.
  await tx.query('SELECT pg_notify($1, $2)', [REVOCATION_CHANNEL, String(version)]);
  return { ...fields, version, revokedAtMs: req.revokedAtMs, entryHash };
}

/** The current version and chain head. */
export async function revocationHead(s: StoreState): Promise<{ version: number; headHash: Uint8Array }> {
  const rows = await s.db.query<{ version: unknown; head_hash: unknown }>('SELECT version, head_hash FROM revocation_counter');
  return { version: int(rows[0]!.version), headHash: bytes(rows[0]!.head_hash) };
}

/** The chain hash at `version` (the empty-chain hash at 0). */
export async function hashAt(s: StoreState, version: number): Promise<Uint8Array> {
  if (version === 0) return new Uint8Array(EMPTY_CHAIN_HASH);
  const rows = await s.db.query<{ entry_hash: unknown }>('SELECT entry_hash FROM revocations WHERE version = $1', [version]);
  if (rows[0] === undefined) throw new RpcError('failed_precondition', `revocation version ${version} does not exist`);
  return bytes(rows[0].entry_hash);
}

/** Entries with version > `after`, in order, at most `limit`. */
export async function revocationsAfter(s: StoreState, after: number, limit: number): Promise<RevocationRow[]> {
  const rows = await s.db.query<RevocationJoin>(
    'SELECT version, agent_id, serial, reason, reason_text, revoked_at_ms, entry_hash FROM revocations WHERE version > $1 ORDER BY version LIMIT $2',
    [after, limit],
  );
  return rows.map(revocationFrom);
}
