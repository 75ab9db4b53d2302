/**
 * Issuer keys and the signed trust bundle (docs/PROTOCOL.md §15.9): the registry's first key at
 * `initialise`, then prepare → active → retired → dropped. Every change is one transaction that takes the
 * issuer_keys table lock first, so changes from several registry processes are serialised and every one
 * publishes the next trust bundle version, signed by the active key.
 */
import { toHex } from '@parley/crypto-core';
import { bytes, int, intOrNull, type Queryable } from '@parley/db';
import { encodeTrustBundleDocument, signTrustBundleDocument, type IssuerKey, type IssuerLifecycleState } from '@parley/identity';
import { RpcError } from '@parley/rpc';
import type { StoreState } from './context.js';
import { isUniqueViolation, issuerFrom, type IssuerKeyLookup, type IssuerRow } from './rows.js';

/** NOTIFY channel for new trust bundle versions (its payload is the new version). */
export const TRUST_BUNDLE_CHANNEL = 'parley_registry_trust_bundle';

/** Shortest time a key retired with the default grace stays trusted. */
const MIN_RETIRED_TRUST_MS = 60_000;

/** Most issuer keys the trust bundle lists at once (the document's limit, docs/PROTOCOL.md §15.9). */
const MAX_BUNDLE_ISSUERS = 64;

/**
 * Records a new registry: its id, first issuer key and first operator. Fails
 * when the database already holds a registry.
 * @throws RpcError `already_exists`
 */
export async function initialise(s: StoreState, init: { registryId: Uint8Array; issuer: IssuerKey; operator: { publicKey: Uint8Array; keyId: Uint8Array; name: string }; nowMs: number }): Promise<void> {
  await s.db.transaction(async (tx) => {
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
    s.rememberRegistryId(init.registryId);
    await publishTrustBundle(s, tx, (id) => (s.crypto.constantTimeEqual(id, init.issuer.keyId) ? init.issuer : undefined), init.nowMs);
    await tx.query('INSERT INTO operators (key_id, public_key, name, added_at_ms, added_by_key_id) VALUES ($1, $2, $3, $4, NULL)', [
      init.operator.keyId,
      init.operator.publicKey,
      init.operator.name,
      init.nowMs,
    ]);
  });
  s.rememberRegistryId(init.registryId);
}

/** Every issuer key, newest first. */
export async function issuers(s: StoreState): Promise<IssuerRow[]> {
  const rows = await s.db.query<Record<string, unknown>>(
    'SELECT key_id, public_key, created_at_ms, not_after_ms, active, state, activates_at_ms, retire_grace_ms FROM issuer_keys ORDER BY active DESC, created_at_ms DESC',
  );
  return rows.map(issuerFrom);
}

/** The current trust bundle version (0: none published yet). */
export async function trustBundleVersion(s: StoreState): Promise<number> {
  const rows = await s.db.query<{ v: unknown }>('SELECT COALESCE(MAX(version), 0) AS v FROM trust_bundles');
  return int(rows[0]!.v);
}

/** Signed documents with version > `after`, oldest first, at most `limit`. */
export async function trustBundlesAfter(s: StoreState, after: number, limit: number): Promise<{ version: number; document: Uint8Array }[]> {
  const rows = await s.db.query<{ version: unknown; document: unknown }>('SELECT version, document FROM trust_bundles WHERE version > $1 ORDER BY version LIMIT $2', [after, limit]);
  return rows.map((r) => ({ version: int(r.version), document: bytes(r.document) }));
}

/**
 * Publishes version 1 when no trust bundle was ever published (a registry created before signed
 * trust bundles), signed by the active key.
 * @returns the current version
 */
export async function ensureTrustBundle(s: StoreState, keys: IssuerKeyLookup, nowMs: number): Promise<number> {
  return s.db.transaction(async (tx) => {
    await tx.exec('LOCK TABLE issuer_keys IN SHARE ROW EXCLUSIVE MODE');
    const rows = await tx.query<{ v: unknown }>('SELECT COALESCE(MAX(version), 0) AS v FROM trust_bundles');
    const current = int(rows[0]!.v);
    if (current > 0) return current;
    // Keys retired before this version existed, already past their bound, are left out (dropped).
    await tx.query('UPDATE issuer_keys SET state = 4 WHERE state = 3 AND not_after_ms <= $1', [nowMs]);
    return publishTrustBundle(s, tx, keys, nowMs);
  });
}

/**
 * Records a new PREPARED issuer key and publishes the trust bundle version that lists it, signed by
 * the active key (§15.9): every follower trusts the key before it signs anything.
 * @returns the new version, and how many valid certificates of the active key would outlive the grace
 * @throws RpcError `failed_precondition` (a key is already prepared, or the bundle would be too large),
 *   `already_exists` (the key was used before)
 */
export async function prepareIssuer(
  s: StoreState,
  prepared: { keyId: Uint8Array; publicKey: Uint8Array },
  plan: { activatesAtMs: number; retireGraceMs: number },
  keys: IssuerKeyLookup,
  nowMs: number,
): Promise<{ version: number; outlivingGrace: number }> {
  return s.db.transaction(async (tx) => {
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
    const version = await publishTrustBundle(s, tx, keys, nowMs);
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
export async function activateDueIssuer(s: StoreState, keys: IssuerKeyLookup, nowMs: number): Promise<{ activated: Uint8Array; retired: Uint8Array; notAfterMs: number; version: number } | undefined> {
  return s.db.transaction(async (tx) => {
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
    const version = await publishTrustBundle(s, tx, keys, nowMs);
    return { activated: prepared.keyId, retired: active.keyId, notAfterMs, version };
  });
}

/**
 * Drops retired keys past their `not_after_ms` out of the trust bundle (a new version, signed by the
 * active key). Does nothing when none is due, or when this process does not hold the active key.
 * @returns the dropped key ids and the new version, or undefined
 */
export async function dropExpiredIssuers(s: StoreState, keys: IssuerKeyLookup, nowMs: number): Promise<{ dropped: Uint8Array[]; version: number } | undefined> {
  return s.db.transaction(async (tx) => {
    await tx.exec('LOCK TABLE issuer_keys IN SHARE ROW EXCLUSIVE MODE');
    const due = await tx.query<{ key_id: unknown }>('SELECT key_id FROM issuer_keys WHERE state = 3 AND not_after_ms <= $1', [nowMs]);
    if (due.length === 0) return undefined;
    const active = await tx.query<{ key_id: unknown }>('SELECT key_id FROM issuer_keys WHERE state = 2');
    if (active[0] === undefined || keys(bytes(active[0].key_id)) === undefined) return undefined;
    const dropped = due.map((r) => bytes(r.key_id));
    await tx.query('UPDATE issuer_keys SET state = 4 WHERE state = 3 AND not_after_ms <= $1', [nowMs]);
    const version = await publishTrustBundle(s, tx, keys, nowMs);
    return { dropped, version };
  });
}

/** Builds, signs (with the active key) and stores the next trust bundle version from the live issuer rows. */
export async function publishTrustBundle(s: StoreState, tx: Queryable, keys: IssuerKeyLookup, nowMs: number): Promise<number> {
  const registryId = await s.registryIdIn(tx);
  const rows = (await tx.query<Record<string, unknown>>('SELECT key_id, public_key, created_at_ms, not_after_ms, active, state, activates_at_ms, retire_grace_ms FROM issuer_keys WHERE state IN (1, 2, 3)')).map(issuerFrom);
  const active = rows.find((r) => r.state === 'active');
  const signer = active === undefined ? undefined : keys(active.keyId);
  if (active === undefined || signer === undefined) {
    throw new RpcError('failed_precondition', `this registry process does not hold the active issuer key${active === undefined ? '' : ` (${toHex(active.keyId)})`}: it cannot sign the trust bundle`);
  }
  const last = await tx.query<{ v: unknown }>('SELECT COALESCE(MAX(version), 0) AS v FROM trust_bundles');
  const version = int(last[0]!.v) + 1;
  const document = signTrustBundleDocument(
    s.crypto,
    {
      registryId,
      version,
      issuedAtMs: nowMs,
      issuers: rows.map((r) => ({ publicKey: r.publicKey, state: r.state as IssuerLifecycleState, ...(r.state === 'retired' ? { notAfterMs: Math.max(1, r.notAfterMs ?? nowMs) } : {}) })),
    },
    signer,
  );
  await tx.query('INSERT INTO trust_bundles (version, issued_at_ms, document) VALUES ($1, $2, $3)', [version, nowMs, encodeTrustBundleDocument(s.crypto, document)]);
  // Delivered at commit to every registry process that LISTENs: their watches send the new version.
  await tx.query('SELECT pg_notify($1, $2)', [TRUST_BUNDLE_CHANNEL, String(version)]);
  return version;
}
