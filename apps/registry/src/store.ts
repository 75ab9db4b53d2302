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
 *
 * This class is the store's public face; each table group is a module in `store/`: issuers.ts (issuer
 * keys and the signed trust bundle), operators.ts (operators and request nonces), challenges.ts,
 * agents.ts (agents, certificates, key rotation), join-tokens.ts (join tokens and enrolment),
 * revocations.ts (the revocation list), with rows.ts (row types and decoders) and context.ts (the
 * database, crypto and cached registry id they share).
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import type { Database } from '@parley/db';
import type { IssuerKey } from '@parley/identity';
import type { ChallengePurpose } from '@parley/proto';
import * as agents from './store/agents.js';
import { Challenges } from './store/challenges.js';
import { StoreState } from './store/context.js';
import * as issuers from './store/issuers.js';
import * as joinTokens from './store/join-tokens.js';
import * as operators from './store/operators.js';
import * as revocations from './store/revocations.js';
import type { AgentRow, IssuerKeyLookup, IssuerRow, JoinTokenRow, ListAgentsQuery, NewAgent, OperatorRow, RevocationRequest, RevocationRow } from './store/rows.js';

export { REVOCATION_CHANNEL } from './store/revocations.js';
export { TRUST_BUNDLE_CHANNEL } from './store/issuers.js';
export { MAX_OUTSTANDING_JOIN_TOKENS, JOIN_TOKEN_RETENTION_MS } from './store/join-tokens.js';
export { ISSUER_STATE } from './store/rows.js';
export type { AgentRow, RevocationRow, OperatorRow, IssuerRow, IssuerKeyLookup, JoinTokenRow, ListAgentsQuery, NewAgent, RevocationRequest } from './store/rows.js';

/** Registry storage over a migrated database. */
export class RegistryStore {
  readonly #s: StoreState;
  readonly #challenges: Challenges;

  /**
   * @param db a migrated database
   * @param crypto the ParleyCrypto instance (certificate signing, chain hashes)
   */
  constructor(db: Database, crypto: ParleyCrypto) {
    this.#s = new StoreState(db, crypto);
    this.#challenges = new Challenges(this.#s);
  }

  /** The underlying database. */
  get db(): Database {
    return this.#s.db;
  }

  // -------------------------------------------------------------------------
  // Registry identity, issuer keys and the signed trust bundle (store/issuers.ts)

  /**
   * Records a new registry: its id, first issuer key and first operator. Fails
   * when the database already holds a registry.
   * @throws RpcError `already_exists`
   */
  initialise(init: { registryId: Uint8Array; issuer: IssuerKey; operator: { publicKey: Uint8Array; keyId: Uint8Array; name: string }; nowMs: number }): Promise<void> {
    return issuers.initialise(this.#s, init);
  }

  /**
   * The registry id.
   * @throws RpcError `failed_precondition` when the database holds no registry (not initialised)
   */
  registryId(): Promise<Uint8Array> {
    return this.#s.registryIdIn(this.#s.db);
  }

  /** Every issuer key, newest first. */
  issuers(): Promise<IssuerRow[]> {
    return issuers.issuers(this.#s);
  }

  /** The current trust bundle version (0: none published yet). */
  trustBundleVersion(): Promise<number> {
    return issuers.trustBundleVersion(this.#s);
  }

  /** Signed documents with version > `after`, oldest first, at most `limit`. */
  trustBundlesAfter(after: number, limit: number): Promise<{ version: number; document: Uint8Array }[]> {
    return issuers.trustBundlesAfter(this.#s, after, limit);
  }

  /**
   * Publishes version 1 when no trust bundle was ever published (a registry created before signed
   * trust bundles), signed by the active key.
   * @returns the current version
   */
  ensureTrustBundle(keys: IssuerKeyLookup, nowMs: number): Promise<number> {
    return issuers.ensureTrustBundle(this.#s, keys, nowMs);
  }

  /**
   * Records a new PREPARED issuer key and publishes the trust bundle version that lists it, signed by
   * the active key (§15.9): every follower trusts the key before it signs anything.
   * @returns the new version, and how many valid certificates of the active key would outlive the grace
   * @throws RpcError `failed_precondition` (a key is already prepared, or the bundle would be too large),
   *   `already_exists` (the key was used before)
   */
  prepareIssuer(
    prepared: { keyId: Uint8Array; publicKey: Uint8Array },
    plan: { activatesAtMs: number; retireGraceMs: number },
    keys: IssuerKeyLookup,
    nowMs: number,
  ): Promise<{ version: number; outlivingGrace: number }> {
    return issuers.prepareIssuer(this.#s, prepared, plan, keys, nowMs);
  }

  /**
   * Activates the prepared key when its time has come: the active key is retired with
   * `not_after_ms` = now + the prepared key's grace (0: the latest `valid_until_ms` of the certificates
   * it signed, at least now + 1 minute), the prepared key becomes active, and the new trust bundle version is
   * signed by it. Does nothing when no key is due, or when this process does not hold the prepared
   * key's secret (another registry process with it will).
   * @returns what changed, or undefined
   */
  activateDueIssuer(keys: IssuerKeyLookup, nowMs: number): Promise<{ activated: Uint8Array; retired: Uint8Array; notAfterMs: number; version: number } | undefined> {
    return issuers.activateDueIssuer(this.#s, keys, nowMs);
  }

  /**
   * Drops retired keys past their `not_after_ms` out of the trust bundle (a new version, signed by the
   * active key). Does nothing when none is due, or when this process does not hold the active key.
   * @returns the dropped key ids and the new version, or undefined
   */
  dropExpiredIssuers(keys: IssuerKeyLookup, nowMs: number): Promise<{ dropped: Uint8Array[]; version: number } | undefined> {
    return issuers.dropExpiredIssuers(this.#s, keys, nowMs);
  }

  // -------------------------------------------------------------------------
  // Operators and their request nonces (store/operators.ts)

  /** The operator with this key id, if listed (removed operators are not). */
  operator(keyId: Uint8Array): Promise<OperatorRow | undefined> {
    return operators.operator(this.#s, keyId);
  }

  /** Every listed operator, oldest first. */
  operators(): Promise<OperatorRow[]> {
    return operators.operators(this.#s);
  }

  /**
   * Delists an operator key: it can never sign again, and its row stays as a record (the same key cannot
   * be listed again). One transaction, serialised on the operators table, so two removals racing can never
   * leave the registry without an operator.
   * @throws RpcError `not_found` (no listed operator with this key id), `failed_precondition` (the last one)
   */
  removeOperator(keyId: Uint8Array, removedByKeyId: Uint8Array | null, nowMs: number): Promise<OperatorRow> {
    return operators.removeOperator(this.#s, keyId, removedByKeyId, nowMs);
  }

  /**
   * Lists an operator key.
   * @throws RpcError `already_exists` when the key is listed
   */
  addOperator(op: { keyId: Uint8Array; publicKey: Uint8Array; name: string; addedByKeyId: Uint8Array | null; nowMs: number }): Promise<OperatorRow> {
    return operators.addOperator(this.#s, op);
  }

  /**
   * Records an operator request nonce; false when it was seen before (a replay).
   * The row is kept until `expiresAtMs` (after which the timestamp check alone refuses the request).
   */
  useNonce(keyId: Uint8Array, nonce: Uint8Array, expiresAtMs: number): Promise<boolean> {
    return operators.useNonce(this.#s, keyId, nonce, expiresAtMs);
  }

  // -------------------------------------------------------------------------
  // Challenges (store/challenges.ts) and expiry

  /**
   * Makes a challenge without writing anything (§15.4): random(8) ‖ u48be(expires_at_ms) ‖ u8(purpose) ‖
   * the first 17 bytes of HMAC-SHA256(challenge secret, "parley/v1/registry-challenge" ‖ those 15 bytes).
   * *Why:* CreateChallenge is anonymous; a row per call let anyone fill the table.
   */
  createChallenge(purpose: ChallengePurpose, expiresAtMs: number): Promise<Uint8Array> {
    return this.#challenges.create(purpose, expiresAtMs);
  }

  /**
   * Deletes expired challenges and nonces; returns how many rows went.
   * A nonce is kept `nonceGraceMs` past its expiry: give the allowed clock skew,
   * so a registry process whose clock runs behind the pruning one (and so still
   * accepts that timestamp) still finds the nonce and refuses the replay.
   */
  async prune(nowMs: number, nonceGraceMs = 0): Promise<number> {
    const a = await this.#s.db.query('DELETE FROM challenges WHERE expires_at_ms < $1 RETURNING 1', [nowMs]);
    const b = await this.#s.db.query('DELETE FROM operator_nonces WHERE expires_at_ms < $1 RETURNING 1', [nowMs - nonceGraceMs]);
    const c = await this.#s.db.query('DELETE FROM join_tokens WHERE expires_at_ms < $1 RETURNING 1', [nowMs - joinTokens.JOIN_TOKEN_RETENTION_MS]);
    return a.length + b.length + c.length;
  }

  // -------------------------------------------------------------------------
  // Agents (store/agents.ts)

  /** One agent, or undefined. */
  agent(agentId: string, nowMs: number): Promise<AgentRow | undefined> {
    return agents.agent(this.#s, agentId, nowMs);
  }

  /** One page of agents (limit + 1 rows are read to know whether more follow). */
  listAgents(q: ListAgentsQuery): Promise<{ agents: AgentRow[]; more: boolean }> {
    return agents.listAgents(this.#s, q);
  }

  /**
   * Registers an agent and issues its first certificate, consuming the
   * challenge, in one transaction.
   * @throws RpcError `challenge_invalid` (unknown, used, expired or other-purpose challenge),
   *   `already_exists` (agent id taken, or identity key registered before)
   */
  registerAgent(issuer: IssuerKey, a: NewAgent): Promise<AgentRow> {
    return agents.registerAgent(this.#s, this.#challenges, issuer, a);
  }

  /**
   * Replaces an agent's identity key: consumes the challenge, issues a new
   * certificate and revokes the old one (reason SUPERSEDED), in one transaction.
   * `expectedSerial` is the certificate whose key signed the request: if a
   * concurrent rotation replaced it first, this one fails. The old certificate
   * must be valid now (not expired, not yet-to-start), and the new one is valid
   * from now until `validUntilMs` capped at the old certificate's end (default:
   * the old end): rotation replaces the key, never extends the grant.
   * At most one rotation per agent a minute (by `nowMs`, checked under the agent's row lock).
   * @throws RpcError `not_found`, `challenge_invalid`, `failed_precondition` (revoked, expired or not yet valid,
   *   or rotated concurrently), `rate_limited` (rotated less than a minute ago), `already_exists` (key used before)
   */
  rotateKey(
    issuer: IssuerKey,
    r: { agentId: string; expectedSerial: Uint8Array; newPublicKey: Uint8Array; validUntilMs?: number | undefined; challenge: Uint8Array; nowMs: number },
  ): Promise<{ agent: AgentRow; superseded: RevocationRow }> {
    return agents.rotateKey(this.#s, this.#challenges, issuer, r);
  }

  // -------------------------------------------------------------------------
  // Join tokens and enrolment (store/join-tokens.ts)

  /**
   * Stores a new join token (its hash only).
   * @throws RpcError `quota_exceeded` (too many outstanding), `already_exists` (the agent id is registered)
   */
  createJoinToken(t: Omit<JoinTokenRow, 'usedAtMs' | 'revokedAtMs'>): Promise<JoinTokenRow> {
    return joinTokens.createJoinToken(this.#s, t);
  }

  /** Join tokens, newest first: the outstanding ones, or (`all`) every one still kept. */
  joinTokens(all: boolean, nowMs: number): Promise<JoinTokenRow[]> {
    return joinTokens.joinTokens(this.#s, all, nowMs);
  }

  /**
   * Makes an unused join token unusable.
   * @throws RpcError `not_found`, `failed_precondition` (already used or revoked)
   */
  revokeJoinToken(tokenId: Uint8Array, nowMs: number): Promise<JoinTokenRow> {
    return joinTokens.revokeJoinToken(this.#s, tokenId, nowMs);
  }

  /**
   * Enrols an agent with a join token, in one transaction: the token (its hash compared in constant
   * time, then: not revoked, not used, not expired, for this agent id) is consumed, the agent inserted
   * and its certificate issued (type, capabilities and validity from the token). A failure rolls it all
   * back, the token included.
   * @throws RpcError `join_token_invalid` (unknown, wrong secret, revoked, another agent id),
   *   `join_token_used`, `join_token_expired`, `already_exists` (agent id or identity key)
   */
  enrollAgent(issuer: IssuerKey, e: { tokenId: Uint8Array; tokenHash: Uint8Array; agentId: string; identityPublicKey: Uint8Array; nowMs: number }): Promise<AgentRow> {
    return joinTokens.enrollAgent(this.#s, issuer, e);
  }

  // -------------------------------------------------------------------------
  // Revocations (store/revocations.ts)

  /**
   * Revokes an agent id (every certificate it holds, past and future).
   * @throws RpcError `not_found` (unknown agent), `already_exists` (already revoked)
   */
  revokeAgent(agentId: string, req: RevocationRequest): Promise<RevocationRow> {
    return revocations.revokeAgent(this.#s, agentId, req);
  }

  /**
   * Revokes one certificate by serial.
   * @throws RpcError `not_found` (no such certificate), `already_exists` (already revoked)
   */
  revokeSerial(serial: Uint8Array, req: RevocationRequest): Promise<RevocationRow> {
    return revocations.revokeSerial(this.#s, serial, req);
  }

  /** The current version and chain head. */
  revocationHead(): Promise<{ version: number; headHash: Uint8Array }> {
    return revocations.revocationHead(this.#s);
  }

  /** The chain hash at `version` (the empty-chain hash at 0). */
  hashAt(version: number): Promise<Uint8Array> {
    return revocations.hashAt(this.#s, version);
  }

  /** Entries with version > `after`, in order, at most `limit`. */
  revocationsAfter(after: number, limit: number): Promise<RevocationRow[]> {
    return revocations.revocationsAfter(this.#s, after, limit);
  }
}
