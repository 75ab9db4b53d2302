/**
 * The registry's rows as the store returns them, the request shapes it takes, and the decoders from
 * SQL result rows (shared by every table group of the store).
 */
import { type IssuerKey, type IssuerLifecycleState, type RevocationEntryFields, decodeCertificate } from '@parley/identity';
import { AgentStatus, type AgentCertificate, type RevocationReason } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import { bytes, int, intOrNull } from '@parley/db';

/** Issuer key states as stored (docs/PROTOCOL.md §15.9); `dropped`: retired and no longer in the trust bundle. */
export const ISSUER_STATE = Object.freeze({ prepared: 1, active: 2, retired: 3, dropped: 4 } as const);
const STATE_NAME: Readonly<Record<number, IssuerLifecycleState | 'dropped'>> = Object.freeze({ 1: 'prepared', 2: 'active', 3: 'retired', 4: 'dropped' });

/** An agent as stored, with its current certificate. */
export interface AgentRow {
  readonly agentId: string;
  readonly agentType: string;
  readonly capabilities: string[];
  readonly status: AgentStatus;
  readonly certificate: AgentCertificate;
  readonly registeredAtMs: number;
  readonly updatedAtMs: number;
  /** Version of the revocation of the agent id or its current certificate; 0 when not revoked. */
  readonly revocationVersion: number;
}

/** A revocation list entry as stored. */
export interface RevocationRow extends RevocationEntryFields {
  readonly version: number;
  readonly revokedAtMs: number;
  readonly entryHash: Uint8Array;
}

/** An operator key as stored. */
export interface OperatorRow {
  readonly keyId: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly name: string;
  readonly addedAtMs: number;
  readonly addedByKeyId: Uint8Array | null;
}

/** An issuer public key as stored. */
export interface IssuerRow {
  readonly keyId: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly createdAtMs: number;
  readonly notAfterMs: number | null;
  readonly active: boolean;
  readonly state: IssuerLifecycleState | 'dropped';
  /** For a prepared key: when it becomes active. */
  readonly activatesAtMs: number | null;
  /** For a prepared key: the grace it gives the key it retires (0: until that key's last certificate expires). */
  readonly retireGraceMs: number | null;
}

/** Finds the in-memory issuer key (secret included) for a key id, when this process holds it. */
export type IssuerKeyLookup = (keyId: Uint8Array) => IssuerKey | undefined;

/** A join token as stored (never its secret). */
export interface JoinTokenRow {
  readonly tokenId: Uint8Array;
  readonly tokenHash: Uint8Array;
  readonly agentId: string;
  readonly agentType: string;
  readonly capabilities: string[];
  readonly validityMs: number;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
  readonly createdByKeyId: Uint8Array;
  readonly usedAtMs: number | null;
  readonly revokedAtMs: number | null;
}

/** Filters and cursor of {@link RegistryStore.listAgents}. */
export interface ListAgentsQuery {
  readonly afterAgentId?: string;
  readonly limit: number;
  readonly agentType?: string;
  readonly capability?: string;
  readonly status?: AgentStatus;
  readonly nowMs: number;
}

/** A new certificate's contents (the store signs it inside the transaction). */
export interface NewAgent {
  readonly agentId: string;
  readonly identityPublicKey: Uint8Array;
  readonly agentType: string;
  readonly capabilities: readonly string[];
  readonly validFromMs: number;
  readonly validUntilMs: number;
  readonly challenge: Uint8Array;
  readonly nowMs: number;
}

/** What revoking needs besides the subject. */
export interface RevocationRequest {
  readonly reason: RevocationReason;
  readonly reasonText: string;
  readonly revokedAtMs: number;
  readonly operatorKeyId: Uint8Array | null;
  readonly nowMs: number;
  /**
   * Revoke a subject this registry does not know too (an agent or a certificate made after the backup it
   * was restored from: docs/OPERATIONS.md, "Restoring an older revocation list"); the entry only adds to the list.
   */
  readonly unknownOk?: boolean;
}

const UNIQUE_VIOLATION = '23505';

export function isUniqueViolation(error: unknown): error is { constraint?: string } {
  return (error as { code?: unknown }).code === UNIQUE_VIOLATION;
}

export const AGENT_SELECT = `
  SELECT a.agent_id, a.agent_type, a.capabilities, a.registered_at_ms, a.updated_at_ms,
         a.revoked_version AS agent_revoked, c.revoked_version AS cert_revoked, c.valid_until_ms, c.encoded
    FROM agents a JOIN certificates c ON c.serial = a.current_serial`;

export interface AgentJoin {
  agent_id: string;
  agent_type: string;
  capabilities: string[];
  registered_at_ms: unknown;
  updated_at_ms: unknown;
  agent_revoked: unknown;
  cert_revoked: unknown;
  valid_until_ms: unknown;
  encoded: unknown;
}

export function agentFrom(row: AgentJoin, nowMs: number): AgentRow {
  const revoked = intOrNull(row.agent_revoked) ?? intOrNull(row.cert_revoked);
  const status = revoked !== null ? AgentStatus.REVOKED : int(row.valid_until_ms) <= nowMs ? AgentStatus.EXPIRED : AgentStatus.ACTIVE;
  return {
    agentId: row.agent_id,
    agentType: row.agent_type,
    capabilities: [...row.capabilities],
    status,
    certificate: decodeCertificate(bytes(row.encoded)),
    registeredAtMs: int(row.registered_at_ms),
    updatedAtMs: int(row.updated_at_ms),
    revocationVersion: revoked ?? 0,
  };
}

export interface RevocationJoin {
  version: unknown;
  agent_id: string | null;
  serial: unknown;
  reason: unknown;
  reason_text: string;
  revoked_at_ms: unknown;
  entry_hash: unknown;
}

export function revocationFrom(row: RevocationJoin): RevocationRow {
  const serial = row.serial === null ? new Uint8Array(0) : bytes(row.serial);
  return {
    version: int(row.version),
    kind: row.agent_id !== null ? 'agent' : 'serial',
    agentId: row.agent_id ?? '',
    serial,
    reason: int(row.reason),
    reasonText: row.reason_text,
    revokedAtMs: int(row.revoked_at_ms),
    entryHash: bytes(row.entry_hash),
  };
}

export function issuerFrom(r: Record<string, unknown>): IssuerRow {
  const state = STATE_NAME[int(r['state'])];
  if (state === undefined) throw new RpcError('internal', `issuer key state ${String(r['state'])} is unknown`);
  return {
    keyId: bytes(r['key_id']),
    publicKey: bytes(r['public_key']),
    createdAtMs: int(r['created_at_ms']),
    notAfterMs: intOrNull(r['not_after_ms']),
    active: r['active'] === true,
    state,
    activatesAtMs: intOrNull(r['activates_at_ms']),
    retireGraceMs: intOrNull(r['retire_grace_ms']),
  };
}

export function joinTokenFrom(r: Record<string, unknown>): JoinTokenRow {
  return {
    tokenId: bytes(r['token_id']),
    tokenHash: bytes(r['token_hash']),
    agentId: r['agent_id'] as string,
    agentType: r['agent_type'] as string,
    capabilities: [...(r['capabilities'] as string[])],
    validityMs: int(r['validity_ms']),
    createdAtMs: int(r['created_at_ms']),
    expiresAtMs: int(r['expires_at_ms']),
    createdByKeyId: bytes(r['created_by_key_id']),
    usedAtMs: intOrNull(r['used_at_ms']),
    revokedAtMs: intOrNull(r['revoked_at_ms']),
  };
}

export function operatorFrom(r: Record<string, unknown>): OperatorRow {
  return {
    keyId: bytes(r['key_id']),
    publicKey: bytes(r['public_key']),
    name: r['name'] as string,
    addedAtMs: int(r['added_at_ms']),
    addedByKeyId: r['added_by_key_id'] === null ? null : bytes(r['added_by_key_id']),
  };
}

export function agentOf(cert: AgentCertificate, agentType: string, registeredAtMs: number, nowMs: number): AgentRow {
  return {
    agentId: cert.agentId,
    agentType,
    capabilities: [...cert.capabilities],
    status: Number(cert.validUntilMs) > nowMs ? AgentStatus.ACTIVE : AgentStatus.EXPIRED,
    certificate: cert,
    registeredAtMs,
    updatedAtMs: nowMs,
    revocationVersion: 0,
  };
}
