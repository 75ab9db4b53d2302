/**
 * The registry's storage (DESIGN.md "Registry"): every operation is one SQL
 * transaction over the schema in migrations.ts, identical on PostgreSQL and
 * PGlite, so a failure anywhere leaves nothing half-written.
 *
 * Revocation versions are gapless and monotonic under concurrent writers: a
 * revoking transaction increments the single counter row
 * (`UPDATE revocation_counter SET version = version + 1 RETURNING …`), which
 * locks it until commit, so writers take versions one at a time in commit
 * order and a rolled-back writer gives its number back. The chain head (the
 * last entry hash) lives in the same row for the same reason.
 *
 * Row locks are always taken agent → certificate → counter, so concurrent
 * registrations, rotations and revocations cannot deadlock.
 */
import { SecretKey, concatBytes, toHex, type ParleyCrypto } from '@parley/crypto-core';
import {
  encodeCertificate,
  encodeTrustBundleDocument,
  issueCertificate,
  signTrustBundleDocument,
  EMPTY_CHAIN_HASH,
  revocationEntryHash,
  type IssuerKey,
  type IssuerLifecycleState,
  type RevocationEntryFields,
} from '@parley/identity';
import { AgentStatus, ChallengePurpose, RevocationReason, type AgentCertificate } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import { bytes, int, intOrNull, type Database, type Queryable } from '@parley/db';
import { decodeCertificate } from '@parley/identity';

/** NOTIFY channel for new revocations (its payload is the new version). */
export const REVOCATION_CHANNEL = 'parley_registry_revocations';
/** NOTIFY channel for new trust bundle versions (its payload is the new version). */
export const TRUST_BUNDLE_CHANNEL = 'parley_registry_trust_bundle';
/** Most join tokens outstanding (unused, unrevoked, unexpired) at once. */
export const MAX_OUTSTANDING_JOIN_TOKENS = 1000;
/** How long used, revoked and expired join tokens are kept (for `join-token list --all`) after they expire. */
export const JOIN_TOKEN_RETENTION_MS = 7 * 86_400_000;

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
}

const UNIQUE_VIOLATION = '23505';

function isUniqueViolation(error: unknown): error is { constraint?: string } {
  return (error as { code?: unknown }).code === UNIQUE_VIOLATION;
}

const AGENT_SELECT = `
  SELECT a.agent_id, a.agent_type, a.capabilities, a.registered_at_ms, a.updated_at_ms,
         a.revoked_version AS agent_revoked, c.revoked_version AS cert_revoked, c.valid_until_ms, c.encoded
    FROM agents a JOIN certificates c ON c.serial = a.current_serial`;

interface AgentJoin {
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

function agentFrom(row: AgentJoin, nowMs: number): AgentRow {
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

interface RevocationJoin {
  version: unknown;
  agent_id: string | null;
  serial: unknown;
  reason: unknown;
  reason_text: string;
  revoked_at_ms: unknown;
  entry_hash: unknown;
}

function revocationFrom(row: RevocationJoin): RevocationRow {
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

/** Registry storage over a migrated database. */
export class RegistryStore {
  readonly #db: Database;
  #challengeSecret: SecretKey | undefined;
  readonly #crypto: ParleyCrypto;
  #registryId: Uint8Array | undefined;

  /**
   * @param db a migrated database
   * @param crypto the ParleyCrypto instance (certificate signing, chain hashes)
   */
  constructor(db: Database, crypto: ParleyCrypto) {
    this.#db = db;
    this.#crypto = crypto;
  }

  /** The underlying database. */
  get db(): Database {
    return this.#db;
  }

  // -------------------------------------------------------------------------
  // Registry identity and issuer keys

  /**
   * Records a new registry: its id, first issuer key and first operator. Fails
   * when the database already holds a registry.
   * @throws RpcError `already_exists`
   */
  async initialise(init: { registryId: Uint8Array; issuer: IssuerKey; operator: { publicKey: Uint8Array; keyId: Uint8Array; name: string }; nowMs: number }): Promise<void> {
    await this.#db.transaction(async (tx) => {
      const existing = await tx.query<{ registry_id: unknown }>('SELECT registry_id FROM registry_meta FOR UPDATE');
      if (existing.length > 0) {
        throw new RpcError('already_exists', `the database already holds a registry (id ${Buffer.from(bytes(existing[0]!.registry_id)).toString('hex')})`);
      }
      await tx.query('INSERT INTO registry_meta (registry_id, created_at_ms) VALUES ($1, $2)', [init.registryId, init.nowMs]);
      await tx.query('INSERT INTO issuer_keys (key_id, public_key, created_at_ms, active, state) VALUES ($1, $2, $3, true, 2)', [
        init.issuer.keyId,
        init.issuer.publicKey,
        init.nowMs,
      ]);
      this.#registryId = new Uint8Array(init.registryId);
      await this.#publish(tx, (id) => (this.#crypto.constantTimeEqual(id, init.issuer.keyId) ? init.issuer : undefined), init.nowMs);
      await tx.query('INSERT INTO operators (key_id, public_key, name, added_at_ms, added_by_key_id) VALUES ($1, $2, $3, $4, NULL)', [
        init.operator.keyId,
        init.operator.publicKey,
        init.operator.name,
        init.nowMs,
      ]);
    });
    this.#registryId = new Uint8Array(init.registryId);
  }

  /**
   * The registry id.
   * @throws RpcError `failed_precondition` when the database holds no registry (not initialised)
   */
  async registryId(): Promise<Uint8Array> {
    if (this.#registryId !== undefined) return this.#registryId;
    const rows = await this.#db.query<{ registry_id: unknown }>('SELECT registry_id FROM registry_meta');
    if (rows.length === 0) throw new RpcError('failed_precondition', `the database at ${this.#db.location} holds no registry: run \`init\` first`);
    this.#registryId = bytes(rows[0]!.registry_id);
    return this.#registryId;
  }

  /** The registry id, read through `tx` when not cached. */
  async #registryIdIn(tx: Queryable): Promise<Uint8Array> {
    if (this.#registryId !== undefined) return this.#registryId;
    const rows = await tx.query<{ registry_id: unknown }>('SELECT registry_id FROM registry_meta');
    if (rows.length === 0) throw new RpcError('failed_precondition', `the database at ${this.#db.location} holds no registry: run \`init\` first`);
    this.#registryId = bytes(rows[0]!.registry_id);
    return this.#registryId;
  }

  /** Every issuer key, newest first. */
  async issuers(): Promise<IssuerRow[]> {
    const rows = await this.#db.query<Record<string, unknown>>(
      'SELECT key_id, public_key, created_at_ms, not_after_ms, active, state, activates_at_ms, retire_grace_ms FROM issuer_keys ORDER BY active DESC, created_at_ms DESC',
    );
    return rows.map(issuerFrom);
  }

  // -------------------------------------------------------------------------
  // Issuer lifecycle and the signed trust bundle (docs/PROTOCOL.md §15.9). Every change is one
  // transaction that takes the issuer_keys table lock first, so changes from several registry
  // processes are serialised and every one publishes the next trust bundle version.

  /** The current trust bundle version (0: none published yet). */
  async trustBundleVersion(): Promise<number> {
    const rows = await this.#db.query<{ v: unknown }>('SELECT COALESCE(MAX(version), 0) AS v FROM trust_bundles');
    return int(rows[0]!.v);
  }

  /** Signed documents with version > `after`, oldest first, at most `limit`. */
  async trustBundlesAfter(after: number, limit: number): Promise<{ version: number; document: Uint8Array }[]> {
    const rows = await this.#db.query<{ version: unknown; document: unknown }>('SELECT version, document FROM trust_bundles WHERE version > $1 ORDER BY version LIMIT $2', [after, limit]);
    return rows.map((r) => ({ version: int(r.version), document: bytes(r.document) }));
  }

  /**
   * Publishes version 1 when no trust bundle was ever published (a registry created before signed
   * trust bundles), signed by the active key.
   * @returns the current version
   */
  async ensureTrustBundle(keys: IssuerKeyLookup, nowMs: number): Promise<number> {
    return this.#db.transaction(async (tx) => {
      await tx.exec('LOCK TABLE issuer_keys IN SHARE ROW EXCLUSIVE MODE');
      const rows = await tx.query<{ v: unknown }>('SELECT COALESCE(MAX(version), 0) AS v FROM trust_bundles');
      const current = int(rows[0]!.v);
      if (current > 0) return current;
      // Keys retired before this version existed, already past their bound, are left out (dropped).
      await tx.query('UPDATE issuer_keys SET state = 4 WHERE state = 3 AND not_after_ms <= $1', [nowMs]);
      return this.#publish(tx, keys, nowMs);
    });
  }

  /**
   * Records a new PREPARED issuer key and publishes the trust bundle version that lists it, signed by
   * the active key (§15.9): every follower trusts the key before it signs anything.
   * @returns the new version, and how many valid certificates of the active key would outlive the grace
   * @throws RpcError `failed_precondition` (a key is already prepared, or the bundle would be too large),
   *   `already_exists` (the key was used before)
   */
  async prepareIssuer(
    prepared: { keyId: Uint8Array; publicKey: Uint8Array },
    plan: { activatesAtMs: number; retireGraceMs: number },
    keys: IssuerKeyLookup,
    nowMs: number,
  ): Promise<{ version: number; outlivingGrace: number }> {
    return this.#db.transaction(async (tx) => {
      await tx.exec('LOCK TABLE issuer_keys IN SHARE ROW EXCLUSIVE MODE');
      const live = (await tx.query<Record<string, unknown>>('SELECT key_id, public_key, created_at_ms, not_after_ms, active, state, activates_at_ms, retire_grace_ms FROM issuer_keys WHERE state IN (1, 2, 3)')).map(issuerFrom);
      const waiting = live.find((i) => i.state === 'prepared');
      if (waiting !== undefined) {
        throw new RpcError('failed_precondition', `issuer key ${toHex(waiting.keyId)} is already prepared (activates at ${new Date(waiting.activatesAtMs ?? 0).toISOString()}): one rotation at a time`);
      }
      if (live.length >= MAX_BUNDLE_ISSUERS) {
        throw new RpcError('failed_precondition', `the trust bundle already holds ${live.length} issuer keys (retired keys within their grace period): wait until some drop out`);
      }
      try {
        await tx.query(
          'INSERT INTO issuer_keys (key_id, public_key, created_at_ms, active, state, activates_at_ms, retire_grace_ms) VALUES ($1, $2, $3, false, 1, $4, $5)',
          [prepared.keyId, prepared.publicKey, nowMs, plan.activatesAtMs, plan.retireGraceMs],
        );
      } catch (error) {
        if (isUniqueViolation(error)) throw new RpcError('already_exists', 'this issuer key was already used by the registry');
        throw error;
      }
      let outlivingGrace = 0;
      const active = live.find((i) => i.state === 'active');
      if (plan.retireGraceMs > 0 && active !== undefined) {
        const counted = await tx.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM certificates WHERE issuer_key_id = $1 AND revoked_version IS NULL AND valid_until_ms > $2', [
          active.keyId,
          plan.activatesAtMs + plan.retireGraceMs,
        ]);
        outlivingGrace = int(counted[0]!.n);
      }
      const version = await this.#publish(tx, keys, nowMs);
      return { version, outlivingGrace };
    });
  }

  /**
   * Activates the prepared key when its time has come: the active key is retired with
   * `not_after_ms` = now + the prepared key's grace (0: the latest `valid_until_ms` of the certificates
   * it signed, at least now + 1 minute), the prepared key becomes active, and the new trust bundle version is
   * signed by it. Does nothing when no key is due, or when this process does not hold the prepared
   * key's secret (another registry process with it will).
   * @returns what changed, or undefined
   */
  async activateDueIssuer(keys: IssuerKeyLookup, nowMs: number): Promise<{ activated: Uint8Array; retired: Uint8Array; notAfterMs: number; version: number } | undefined> {
    return this.#db.transaction(async (tx) => {
      await tx.exec('LOCK TABLE issuer_keys IN SHARE ROW EXCLUSIVE MODE');
      const live = (await tx.query<Record<string, unknown>>('SELECT key_id, public_key, created_at_ms, not_after_ms, active, state, activates_at_ms, retire_grace_ms FROM issuer_keys WHERE state IN (1, 2)')).map(issuerFrom);
      const prepared = live.find((i) => i.state === 'prepared');
      const active = live.find((i) => i.state === 'active');
      if (prepared === undefined || active === undefined || (prepared.activatesAtMs ?? 0) > nowMs || keys(prepared.keyId) === undefined) return undefined;
      let notAfterMs = nowMs + (prepared.retireGraceMs ?? 0);
      if ((prepared.retireGraceMs ?? 0) === 0) {
        // Until its last certificate expires, and at least a minute: what it signed just before (a revocation
        // head) keeps verifying while every registry process switches to the new key.
        const last = await tx.query<{ until: unknown }>('SELECT MAX(valid_until_ms) AS until FROM certificates WHERE issuer_key_id = $1', [active.keyId]);
        notAfterMs = Math.max(intOrNull(last[0]?.until) ?? nowMs, nowMs + MIN_RETIRED_TRUST_MS);
      }
      await tx.query('UPDATE issuer_keys SET active = false, state = 3, retired_at_ms = $2, not_after_ms = $3 WHERE key_id = $1', [active.keyId, nowMs, notAfterMs]);
      await tx.query('UPDATE issuer_keys SET active = true, state = 2, activated_at_ms = $2 WHERE key_id = $1', [prepared.keyId, nowMs]);
      const version = await this.#publish(tx, keys, nowMs);
      return { activated: prepared.keyId, retired: active.keyId, notAfterMs, version };
    });
  }

  /**
   * Drops retired keys past their `not_after_ms` out of the trust bundle (a new version, signed by the
   * active key). Does nothing when none is due, or when this process does not hold the active key.
   * @returns the dropped key ids and the new version, or undefined
   */
  async dropExpiredIssuers(keys: IssuerKeyLookup, nowMs: number): Promise<{ dropped: Uint8Array[]; version: number } | undefined> {
    return this.#db.transaction(async (tx) => {
      await tx.exec('LOCK TABLE issuer_keys IN SHARE ROW EXCLUSIVE MODE');
      const due = await tx.query<{ key_id: unknown }>('SELECT key_id FROM issuer_keys WHERE state = 3 AND not_after_ms <= $1', [nowMs]);
      if (due.length === 0) return undefined;
      const active = await tx.query<{ key_id: unknown }>('SELECT key_id FROM issuer_keys WHERE state = 2');
      if (active[0] === undefined || keys(bytes(active[0].key_id)) === undefined) return undefined;
      const dropped = due.map((r) => bytes(r.key_id));
      await tx.query('UPDATE issuer_keys SET state = 4 WHERE state = 3 AND not_after_ms <= $1', [nowMs]);
      const version = await this.#publish(tx, keys, nowMs);
      return { dropped, version };
    });
  }

  /** Builds, signs (with the active key) and stores the next trust bundle version from the live issuer rows. */
  async #publish(tx: Queryable, keys: IssuerKeyLookup, nowMs: number): Promise<number> {
    const registryId = await this.#registryIdIn(tx);
    const rows = (await tx.query<Record<string, unknown>>('SELECT key_id, public_key, created_at_ms, not_after_ms, active, state, activates_at_ms, retire_grace_ms FROM issuer_keys WHERE state IN (1, 2, 3)')).map(issuerFrom);
    const active = rows.find((r) => r.state === 'active');
    const signer = active === undefined ? undefined : keys(active.keyId);
    if (active === undefined || signer === undefined) {
      throw new RpcError('failed_precondition', `this registry process does not hold the active issuer key${active === undefined ? '' : ` (${toHex(active.keyId)})`}: it cannot sign the trust bundle`);
    }
    const last = await tx.query<{ v: unknown }>('SELECT COALESCE(MAX(version), 0) AS v FROM trust_bundles');
    const version = int(last[0]!.v) + 1;
    const document = signTrustBundleDocument(
      this.#crypto,
      {
        registryId,
        version,
        issuedAtMs: nowMs,
        issuers: rows.map((r) => ({ publicKey: r.publicKey, state: r.state as IssuerLifecycleState, ...(r.state === 'retired' ? { notAfterMs: Math.max(1, r.notAfterMs ?? nowMs) } : {}) })),
      },
      signer,
    );
    await tx.query('INSERT INTO trust_bundles (version, issued_at_ms, document) VALUES ($1, $2, $3)', [version, nowMs, encodeTrustBundleDocument(this.#crypto, document)]);
    // Delivered at commit to every registry process that LISTENs: their watches send the new version.
    await tx.query('SELECT pg_notify($1, $2)', [TRUST_BUNDLE_CHANNEL, String(version)]);
    return version;
  }

  // -------------------------------------------------------------------------
  // Operators and their request nonces

  /** The operator with this key id, if listed (removed operators are not). */
  async operator(keyId: Uint8Array): Promise<OperatorRow | undefined> {
    const rows = await this.#db.query<Record<string, unknown>>('SELECT * FROM operators WHERE key_id = $1 AND removed_at_ms IS NULL', [keyId]);
    return rows[0] === undefined ? undefined : operatorFrom(rows[0]);
  }

  /** Every listed operator, oldest first. */
  async operators(): Promise<OperatorRow[]> {
    const rows = await this.#db.query<Record<string, unknown>>('SELECT * FROM operators WHERE removed_at_ms IS NULL ORDER BY added_at_ms, key_id');
    return rows.map(operatorFrom);
  }

  /**
   * Delists an operator key: it can never sign again, and its row stays as a record (the same key cannot
   * be listed again). One transaction, serialised on the operators table, so two removals racing can never
   * leave the registry without an operator.
   * @throws RpcError `not_found` (no listed operator with this key id), `failed_precondition` (the last one)
   */
  async removeOperator(keyId: Uint8Array, removedByKeyId: Uint8Array | null, nowMs: number): Promise<OperatorRow> {
    return this.#db.transaction(async (tx) => {
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
  async addOperator(op: { keyId: Uint8Array; publicKey: Uint8Array; name: string; addedByKeyId: Uint8Array | null; nowMs: number }): Promise<OperatorRow> {
    try {
      const rows = await this.#db.query<Record<string, unknown>>(
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
  async useNonce(keyId: Uint8Array, nonce: Uint8Array, expiresAtMs: number): Promise<boolean> {
    const rows = await this.#db.query('INSERT INTO operator_nonces (key_id, nonce, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1', [
      keyId,
      nonce,
      expiresAtMs,
    ]);
    return rows.length === 1;
  }

  // -------------------------------------------------------------------------
  // Challenges

  /**
   * Makes a challenge without writing anything (§15.4): random(8) ‖ u48be(expires_at_ms) ‖ u8(purpose) ‖
   * the first 17 bytes of HMAC-SHA256(challenge secret, "parley/v1/registry-challenge" ‖ those 15 bytes).
   * *Why:* CreateChallenge is anonymous; a row per call let anyone fill the table.
   */
  async createChallenge(purpose: ChallengePurpose, expiresAtMs: number): Promise<Uint8Array> {
    const body = new Uint8Array(CHALLENGE_BODY_BYTES);
    body.set(this.#crypto.randomBytes(8), 0);
    writeU48(body, 8, expiresAtMs);
    body[14] = purpose;
    const out = new Uint8Array(32);
    out.set(body, 0);
    out.set(await this.#challengeTag(body), CHALLENGE_BODY_BYTES);
    return out;
  }

  async #challengeTag(body: Uint8Array): Promise<Uint8Array> {
    const key = await this.#challengeKey();
    return this.#crypto.hmacSha256(key, concatBytes(CHALLENGE_MAC_DOMAIN, body)).subarray(0, 32 - CHALLENGE_BODY_BYTES);
  }

  /** The registry's challenge secret: created once (by whichever instance comes first), then cached. */
  async #challengeKey(): Promise<SecretKey> {
    if (this.#challengeSecret !== undefined) return this.#challengeSecret;
    await this.#db.query("INSERT INTO registry_secrets (name, secret) VALUES ('challenge', $1) ON CONFLICT (name) DO NOTHING", [this.#crypto.randomBytes(32)]);
    const rows = await this.#db.query<{ secret: unknown }>("SELECT secret FROM registry_secrets WHERE name = 'challenge'");
    this.#challengeSecret = SecretKey.from(bytes(rows[0]!.secret), 'mac');
    return this.#challengeSecret;
  }

  /**
   * Checks a challenge's MAC, purpose and expiry, then records it as used (inside the caller's
   * transaction, so a failed registration leaves it unused).
   * @throws RpcError `challenge_invalid`
   */
  async #consumeChallenge(tx: Queryable, challenge: Uint8Array, purpose: ChallengePurpose, nowMs: number): Promise<void> {
    if (challenge.length !== 32) throw new RpcError('challenge_invalid', 'challenge unknown or already used: request a new one');
    const body = challenge.subarray(0, CHALLENGE_BODY_BYTES);
    if (!this.#crypto.constantTimeEqual(await this.#challengeTag(body), challenge.subarray(CHALLENGE_BODY_BYTES))) {
      throw new RpcError('challenge_invalid', 'challenge unknown or already used: request a new one');
    }
    if (body[14] !== purpose) throw new RpcError('challenge_invalid', 'challenge was issued for another purpose');
    const expiresAtMs = readU48(body, 8);
    if (expiresAtMs <= nowMs) throw new RpcError('challenge_invalid', 'challenge expired: request a new one');
    const rows = await tx.query('INSERT INTO challenges (challenge, purpose, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT (challenge) DO NOTHING RETURNING 1', [challenge, purpose, expiresAtMs]);
    if (rows.length === 0) throw new RpcError('challenge_invalid', 'challenge unknown or already used: request a new one');
  }

  /**
   * Deletes expired challenges and nonces; returns how many rows went.
   * A nonce is kept `nonceGraceMs` past its expiry: give the allowed clock skew,
   * so a registry process whose clock runs behind the pruning one (and so still
   * accepts that timestamp) still finds the nonce and refuses the replay.
   */
  async prune(nowMs: number, nonceGraceMs = 0): Promise<number> {
    const a = await this.#db.query('DELETE FROM challenges WHERE expires_at_ms < $1 RETURNING 1', [nowMs]);
    const b = await this.#db.query('DELETE FROM operator_nonces WHERE expires_at_ms < $1 RETURNING 1', [nowMs - nonceGraceMs]);
    const c = await this.#db.query('DELETE FROM join_tokens WHERE expires_at_ms < $1 RETURNING 1', [nowMs - JOIN_TOKEN_RETENTION_MS]);
    return a.length + b.length + c.length;
  }

  // -------------------------------------------------------------------------
  // Agents

  /** One agent, or undefined. */
  async agent(agentId: string, nowMs: number): Promise<AgentRow | undefined> {
    const rows = await this.#db.query<AgentJoin>(`${AGENT_SELECT} WHERE a.agent_id = $1`, [agentId]);
    return rows[0] === undefined ? undefined : agentFrom(rows[0], nowMs);
  }

  /** One page of agents (limit + 1 rows are read to know whether more follow). */
  async listAgents(q: ListAgentsQuery): Promise<{ agents: AgentRow[]; more: boolean }> {
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
    const rows = await this.#db.query<AgentJoin>(sql, params);
    return { agents: rows.slice(0, q.limit).map((r) => agentFrom(r, q.nowMs)), more: rows.length > q.limit };
  }

  /**
   * Registers an agent and issues its first certificate, consuming the
   * challenge, in one transaction.
   * @throws RpcError `challenge_invalid` (unknown, used, expired or other-purpose challenge),
   *   `already_exists` (agent id taken, or identity key registered before)
   */
  async registerAgent(issuer: IssuerKey, a: NewAgent): Promise<AgentRow> {
    return this.#db.transaction(async (tx) => {
      await this.#consumeChallenge(tx, a.challenge, ChallengePurpose.REGISTER, a.nowMs);
      const cert = issueCertificate(this.#crypto, issuer, {
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
      await insertCertificate(tx, cert, a.nowMs);
      return agentOf(cert, a.agentType, a.nowMs, a.nowMs);
    });
  }

  // -------------------------------------------------------------------------
  // Join tokens and enrolment (docs/PROTOCOL.md §15.11)

  /**
   * Stores a new join token (its hash only).
   * @throws RpcError `quota_exceeded` (too many outstanding), `already_exists` (the agent id is registered)
   */
  async createJoinToken(t: Omit<JoinTokenRow, 'usedAtMs' | 'revokedAtMs'>): Promise<JoinTokenRow> {
    return this.#db.transaction(async (tx) => {
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
  async joinTokens(all: boolean, nowMs: number): Promise<JoinTokenRow[]> {
    const rows = all
      ? await this.#db.query<Record<string, unknown>>('SELECT * FROM join_tokens ORDER BY created_at_ms DESC, token_id LIMIT 10000')
      : await this.#db.query<Record<string, unknown>>(
          'SELECT * FROM join_tokens WHERE used_at_ms IS NULL AND revoked_at_ms IS NULL AND expires_at_ms > $1 ORDER BY created_at_ms DESC, token_id',
          [nowMs],
        );
    return rows.map(joinTokenFrom);
  }

  /**
   * Makes an unused join token unusable.
   * @throws RpcError `not_found`, `failed_precondition` (already used or revoked)
   */
  async revokeJoinToken(tokenId: Uint8Array, nowMs: number): Promise<JoinTokenRow> {
    return this.#db.transaction(async (tx) => {
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
  async enrollAgent(issuer: IssuerKey, e: { tokenId: Uint8Array; tokenHash: Uint8Array; agentId: string; identityPublicKey: Uint8Array; nowMs: number }): Promise<AgentRow> {
    return this.#db.transaction(async (tx) => {
      const rows = await tx.query<Record<string, unknown>>('SELECT * FROM join_tokens WHERE token_id = $1 FOR UPDATE', [e.tokenId]);
      const invalid = (): never => {
        throw new RpcError('join_token_invalid', 'join token unknown, revoked, or not for this agent id');
      };
      if (rows[0] === undefined) invalid();
      const token = joinTokenFrom(rows[0]!);
      if (!this.#crypto.constantTimeEqual(token.tokenHash, e.tokenHash)) invalid();
      if (token.revokedAtMs !== null || token.agentId !== e.agentId) invalid();
      if (token.usedAtMs !== null) throw new RpcError('join_token_used', 'join token already used: ask an operator for a new one');
      if (token.expiresAtMs <= e.nowMs) throw new RpcError('join_token_expired', 'join token expired: ask an operator for a new one');
      const cert = issueCertificate(this.#crypto, issuer, {
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
      await insertCertificate(tx, cert, e.nowMs);
      await tx.query('UPDATE join_tokens SET used_at_ms = $2, used_serial = $3 WHERE token_id = $1', [e.tokenId, e.nowMs, cert.serial]);
      return agentOf(cert, token.agentType, e.nowMs, e.nowMs);
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
   * @throws RpcError `not_found`, `challenge_invalid`, `failed_precondition` (revoked, expired or not yet valid,
   *   or rotated concurrently), `already_exists` (key used before)
   */
  async rotateKey(
    issuer: IssuerKey,
    r: { agentId: string; expectedSerial: Uint8Array; newPublicKey: Uint8Array; validUntilMs?: number | undefined; challenge: Uint8Array; nowMs: number },
  ): Promise<{ agent: AgentRow; superseded: RevocationRow }> {
    return this.#db.transaction(async (tx) => {
      await this.#consumeChallenge(tx, r.challenge, ChallengePurpose.ROTATE_KEY, r.nowMs);
      const rows = await tx.query<{ current_serial: unknown; revoked_version: unknown; agent_type: string; capabilities: string[]; registered_at_ms: unknown }>(
        'SELECT current_serial, revoked_version, agent_type, capabilities, registered_at_ms FROM agents WHERE agent_id = $1 FOR UPDATE',
        [r.agentId],
      );
      const row = rows[0];
      if (row === undefined) throw new RpcError('not_found', `unknown agent '${r.agentId}'`);
      if (row.revoked_version !== null) throw new RpcError('failed_precondition', `agent '${r.agentId}' is revoked`);
      const oldSerial = bytes(row.current_serial);
      if (!this.#crypto.constantTimeEqual(oldSerial, r.expectedSerial)) {
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
      const cert = issueCertificate(this.#crypto, issuer, {
        agentId: r.agentId,
        identityPublicKey: r.newPublicKey,
        agentType: row.agent_type,
        capabilities: row.capabilities,
        validFromMs: r.nowMs,
        validUntilMs: Math.min(r.validUntilMs ?? oldUntilMs, oldUntilMs),
      });
      await insertCertificate(tx, cert, r.nowMs);
      await tx.query('UPDATE agents SET current_serial = $2, updated_at_ms = $3 WHERE agent_id = $1', [r.agentId, cert.serial, r.nowMs]);
      const superseded = await this.#append(tx, { kind: 'serial', agentId: '', serial: oldSerial }, {
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

  // -------------------------------------------------------------------------
  // Revocations

  /**
   * Revokes an agent id (every certificate it holds, past and future).
   * @throws RpcError `not_found` (unknown agent), `already_exists` (already revoked)
   */
  async revokeAgent(agentId: string, req: RevocationRequest): Promise<RevocationRow> {
    return this.#db.transaction(async (tx) => {
      const rows = await tx.query<{ revoked_version: unknown }>('SELECT revoked_version FROM agents WHERE agent_id = $1 FOR UPDATE', [agentId]);
      if (rows[0] === undefined) throw new RpcError('not_found', `unknown agent '${agentId}'`);
      if (rows[0].revoked_version !== null) {
        throw new RpcError('already_exists', `agent '${agentId}' is already revoked (revocation version ${int(rows[0].revoked_version)})`);
      }
      const entry = await this.#append(tx, { kind: 'agent', agentId, serial: new Uint8Array(0) }, req);
      await tx.query('UPDATE agents SET revoked_version = $2, updated_at_ms = $3 WHERE agent_id = $1', [agentId, entry.version, req.nowMs]);
      return entry;
    });
  }

  /**
   * Revokes one certificate by serial.
   * @throws RpcError `not_found` (no such certificate), `already_exists` (already revoked)
   */
  async revokeSerial(serial: Uint8Array, req: RevocationRequest): Promise<RevocationRow> {
    return this.#db.transaction(async (tx) => {
      const rows = await tx.query<{ agent_id: string; revoked_version: unknown }>(
        'SELECT c.agent_id, c.revoked_version FROM agents a JOIN certificates c ON c.agent_id = a.agent_id WHERE c.serial = $1 FOR UPDATE',
        [serial],
      );
      const hex = Buffer.from(serial).toString('hex');
      if (rows[0] === undefined) throw new RpcError('not_found', `unknown certificate serial ${hex}`);
      if (rows[0].revoked_version !== null) {
        throw new RpcError('already_exists', `certificate ${hex} is already revoked (revocation version ${int(rows[0].revoked_version)})`);
      }
      const entry = await this.#append(tx, { kind: 'serial', agentId: '', serial }, req);
      await tx.query('UPDATE certificates SET revoked_version = $2 WHERE serial = $1', [serial, entry.version]);
      await tx.query('UPDATE agents SET updated_at_ms = $2 WHERE agent_id = $1', [rows[0].agent_id, req.nowMs]);
      return entry;
    });
  }

  /** Appends one entry: takes the next version from the counter row (locking it until commit) and extends the chain. */
  async #append(
    tx: Queryable,
    subject: { kind: 'agent' | 'serial'; agentId: string; serial: Uint8Array },
    req: RevocationRequest,
  ): Promise<RevocationRow> {
    // Read through `tx`: a query on the pool while this transaction holds the only connection would never return.
    const registryId = await this.#registryIdIn(tx);
    const counter = await tx.query<{ version: unknown; head_hash: unknown }>(
      'UPDATE revocation_counter SET version = version + 1 RETURNING version, head_hash',
    );
    const version = int(counter[0]!.version);
    const fields: RevocationEntryFields = { ...subject, version, reason: req.reason, reasonText: req.reasonText, revokedAtMs: req.revokedAtMs };
    const entryHash = revocationEntryHash(this.#crypto, registryId, bytes(counter[0]!.head_hash), fields);
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
  async revocationHead(): Promise<{ version: number; headHash: Uint8Array }> {
    const rows = await this.#db.query<{ version: unknown; head_hash: unknown }>('SELECT version, head_hash FROM revocation_counter');
    return { version: int(rows[0]!.version), headHash: bytes(rows[0]!.head_hash) };
  }

  /** The chain hash at `version` (the empty-chain hash at 0). */
  async hashAt(version: number): Promise<Uint8Array> {
    if (version === 0) return new Uint8Array(EMPTY_CHAIN_HASH);
    const rows = await this.#db.query<{ entry_hash: unknown }>('SELECT entry_hash FROM revocations WHERE version = $1', [version]);
    if (rows[0] === undefined) throw new RpcError('failed_precondition', `revocation version ${version} does not exist`);
    return bytes(rows[0].entry_hash);
  }

  /** Entries with version > `after`, in order, at most `limit`. */
  async revocationsAfter(after: number, limit: number): Promise<RevocationRow[]> {
    const rows = await this.#db.query<RevocationJoin>(
      'SELECT version, agent_id, serial, reason, reason_text, revoked_at_ms, entry_hash FROM revocations WHERE version > $1 ORDER BY version LIMIT $2',
      [after, limit],
    );
    return rows.map(revocationFrom);
  }
}

/** Shortest time a key retired with the default grace stays trusted. */
const MIN_RETIRED_TRUST_MS = 60_000;

/** Most issuer keys the trust bundle lists at once (the document's limit, docs/PROTOCOL.md §15.9). */
const MAX_BUNDLE_ISSUERS = 64;

function issuerFrom(r: Record<string, unknown>): IssuerRow {
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

function joinTokenFrom(r: Record<string, unknown>): JoinTokenRow {
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

function operatorFrom(r: Record<string, unknown>): OperatorRow {
  return {
    keyId: bytes(r['key_id']),
    publicKey: bytes(r['public_key']),
    name: r['name'] as string,
    addedAtMs: int(r['added_at_ms']),
    addedByKeyId: r['added_by_key_id'] === null ? null : bytes(r['added_by_key_id']),
  };
}

function agentOf(cert: AgentCertificate, agentType: string, registeredAtMs: number, nowMs: number): AgentRow {
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

async function insertCertificate(tx: Queryable, cert: AgentCertificate, nowMs: number): Promise<void> {
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

const CHALLENGE_BODY_BYTES = 15;
const CHALLENGE_MAC_DOMAIN = new TextEncoder().encode('parley/v1/registry-challenge');

function writeU48(out: Uint8Array, at: number, value: number): void {
  let v = value;
  for (let i = 5; i >= 0; i--) {
    out[at + i] = v % 256;
    v = Math.floor(v / 256);
  }
}

function readU48(from: Uint8Array, at: number): number {
  let v = 0;
  for (let i = 0; i < 6; i++) v = v * 256 + from[at + i]!;
  return v;
}
