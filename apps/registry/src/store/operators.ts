/**
 * Operators (docs/PROTOCOL.md §15.3): the keys that may sign state-changing requests, and the request
 * nonces that make each signature usable once.
 */
import { RpcError } from '@parley/rpc';
import type { StoreState } from './context.js';
import { isUniqueViolation, operatorFrom, type OperatorRow } from './rows.js';

/** The operator with this key id, if listed (removed operators are not). */
export async function operator(s: StoreState, keyId: Uint8Array): Promise<OperatorRow | undefined> {
  const rows = await s.db.query<Record<string, unknown>>('SELECT * FROM operators WHERE key_id = $1 AND removed_at_ms IS NULL', [keyId]);
  return rows[0] === undefined ? undefined : operatorFrom(rows[0]);
}

/** Every listed operator, oldest first. */
export async function operators(s: StoreState): Promise<OperatorRow[]> {
  const rows = await s.db.query<Record<string, unknown>>('SELECT * FROM operators WHERE removed_at_ms IS NULL ORDER BY added_at_ms, key_id');
  return rows.map(operatorFrom);
}

/**
 * Delists an operator key: it can never sign again, and its row stays as a record (the same key cannot
 * be listed again). One transaction, serialised on the operators table, so two removals racing can never
 * leave the registry without an operator.
 * @throws RpcError `not_found` (no listed operator with this key id), `failed_precondition` (the last one)
 */
export async function removeOperator(s: StoreState, keyId: Uint8Array, removedByKeyId: Uint8Array | null, nowMs: number): Promise<OperatorRow> {
  return s.db.transaction(async (tx) => {
    await tx.exec('LOCK TABLE operators IN SHARE ROW EXCLUSIVE MODE');
    const listed = (await tx.query<Record<string, unknown>>('SELECT * FROM operators WHERE removed_at_ms IS NULL')).map(operatorFrom);
    const target = listed.find((op) => Buffer.from(op.keyId).equals(Buffer.from(keyId)));
    if (target === undefined) throw new RpcError('not_found', `no listed operator has key id ${Buffer.from(keyId).toString('hex')}`);
    if (listed.length === 1) throw new RpcError('failed_precondition', 'the last operator cannot be removed: add another operator first');
    await tx.query('UPDATE operators SET removed_at_ms = $2, removed_by_key_id = $3 WHERE key_id = $1', [keyId, nowMs, removedByKeyId]);
    return target;
  });
}

/**
 * Lists an operator key.
 * @throws RpcError `already_exists` when the key is listed
 */
export async function addOperator(s: StoreState, op: { keyId: Uint8Array; publicKey: Uint8Array; name: string; addedByKeyId: Uint8Array | null; nowMs: number }): Promise<OperatorRow> {
  try {
    const rows = await s.db.query<Record<string, unknown>>(
      'INSERT INTO operators (key_id, public_key, name, added_at_ms, added_by_key_id) VALUES ($1, $2, $3, $4, $5) RETURNING *',
      [op.keyId, op.publicKey, op.name, op.nowMs, op.addedByKeyId],
    );
    return operatorFrom(rows[0]!);
  } catch (error) {
    if (isUniqueViolation(error)) throw new RpcError('already_exists', 'this operator key is already listed, or was removed (a removed key cannot be listed again)');
    throw error;
  }
}

/**
 * Records an operator request nonce; false when it was seen before (a replay).
 * The row is kept until `expiresAtMs` (after which the timestamp check alone refuses the request).
 */
export async function useNonce(s: StoreState, keyId: Uint8Array, nonce: Uint8Array, expiresAtMs: number): Promise<boolean> {
  const rows = await s.db.query('INSERT INTO operator_nonces (key_id, nonce, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1', [
    keyId,
    nonce,
    expiresAtMs,
  ]);
  return rows.length === 1;
}
