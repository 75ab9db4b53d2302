/**
 * Request validation for RegistryService handlers (before any database access: a malformed request changes
 * nothing), and the conversions of store rows into the messages the service returns.
 */
import { isIdentityError } from '@parley/identity';
import type { AgentRecordSchema, JoinTokenSchema, MessageInitShape, OperatorSchema, RevocationListEntrySchema } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import type { RegistrySettings } from '../config.js';
import type { AgentRow, JoinTokenRow, OperatorRow, RevocationRow } from '../store.js';

export type AgentRecordInit = MessageInitShape<typeof AgentRecordSchema>;
export type EntryInit = MessageInitShape<typeof RevocationListEntrySchema>;
type JoinTokenInit = MessageInitShape<typeof JoinTokenSchema>;
type OperatorInit = MessageInitShape<typeof OperatorSchema>;

/**
 * Runs a request-field check from @parley/identity and keeps its one-line
 * reason for the caller: it describes the caller's own request field, unlike a
 * library error deep in a call, which RpcError.from reduces to its code.
 */
export function field<T>(check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (isIdentityError(error, 'malformed')) throw new RpcError('malformed', error.message.replace(/^\[[a-z_]+\] /, ''));
    throw error;
  }
}

/** `value`, if it is `length` bytes long. @throws RpcError `malformed` naming the field */
export function requireBytes(value: Uint8Array, length: number, name: string): Uint8Array {
  if (value.length !== length) throw new RpcError('malformed', `${name} must be ${length} bytes, got ${value.length}`);
  return value;
}

/** A requested certificate validity (0: now / the default length), within the registry's limits. @throws RpcError `malformed` */
export function checkValidity(s: RegistrySettings, fromMs: bigint, untilMs: bigint, nowMs: number): { validFromMs: number; validUntilMs: number } {
  if (fromMs < 0n || untilMs < 0n || fromMs > BigInt(Number.MAX_SAFE_INTEGER) || untilMs > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RpcError('malformed', 'validity times must be non-negative milliseconds since the epoch');
  }
  const validFromMs = fromMs === 0n ? nowMs : Number(fromMs);
  // No back-dating: a certificate must not claim validity for a time before it was issued.
  if (validFromMs < nowMs - s.maxClockSkewMs) throw new RpcError('malformed', `valid_from_ms is in the past (more than ${s.maxClockSkewMs / 1000} s before now)`);
  const validUntilMs = untilMs === 0n ? validFromMs + s.defaultValidityMs : Number(untilMs);
  if (validUntilMs <= validFromMs) throw new RpcError('malformed', 'valid_until_ms must be later than valid_from_ms');
  if (validUntilMs <= nowMs) throw new RpcError('malformed', 'valid_until_ms is in the past: the certificate would be expired');
  if (validUntilMs - validFromMs > s.maxValidityMs) {
    throw new RpcError('malformed', `validity of ${Math.ceil((validUntilMs - validFromMs) / 86_400_000)} days exceeds the registry maximum of ${s.maxValidityMs / 86_400_000} days`);
  }
  if (validFromMs > nowMs + s.maxValidityMs) throw new RpcError('malformed', 'valid_from_ms is too far in the future');
  return { validFromMs, validUntilMs };
}

export function isRpcErrorCode(error: unknown, code: string): boolean {
  return error instanceof RpcError && error.code === code;
}

export function agentRecord(a: AgentRow): AgentRecordInit {
  return {
    agentId: a.agentId,
    agentType: a.agentType,
    capabilities: a.capabilities,
    status: a.status,
    certificate: a.certificate,
    registeredAtMs: BigInt(a.registeredAtMs),
    updatedAtMs: BigInt(a.updatedAtMs),
    revocationVersion: BigInt(a.revocationVersion),
  };
}

export function revocationEntry(r: RevocationRow): EntryInit {
  return {
    version: BigInt(r.version),
    subject: r.kind === 'agent' ? { case: 'agentId', value: r.agentId } : { case: 'serial', value: r.serial },
    reason: r.reason,
    reasonText: r.reasonText,
    revokedAtMs: BigInt(r.revokedAtMs),
    entryHash: r.entryHash,
  };
}

export function joinTokenMessage(t: JoinTokenRow): JoinTokenInit {
  return {
    tokenId: t.tokenId,
    agentId: t.agentId,
    agentType: t.agentType,
    capabilities: t.capabilities,
    createdAtMs: BigInt(t.createdAtMs),
    expiresAtMs: BigInt(t.expiresAtMs),
    usedAtMs: BigInt(t.usedAtMs ?? 0),
    revokedAtMs: BigInt(t.revokedAtMs ?? 0),
    createdByKeyId: t.createdByKeyId,
  };
}

export function operatorMessage(op: OperatorRow): OperatorInit {
  return { keyId: op.keyId, publicKey: op.publicKey, name: op.name, addedAtMs: BigInt(op.addedAtMs), addedByKeyId: op.addedByKeyId ?? new Uint8Array(0) };
}
