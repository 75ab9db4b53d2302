/**
 * The trust bundle (docs/PROTOCOL.md §15.9): GetTrustBundle (open: it is what lets a client check
 * everything else) and RotateIssuer, which prepares a new issuer key — its file written first, then the
 * database row and the trust bundle version that publishes it — for the lifecycle to activate when due.
 */
import { toHex } from '@parley/crypto-core';
import { createIssuerKey, decodeTrustBundleDocument } from '@parley/identity';
import { IssuerKeyState, type RegistryService } from '@parley/proto';
import { RpcError, type ServiceImplementation } from '@parley/rpc';
import type { ServiceContext } from './context.js';
import { isRpcErrorCode } from './fields.js';

/** Most trust bundle documents one GetTrustBundle response carries. */
export const MAX_BUNDLE_DOCUMENTS = 64;
/** Longest RotateIssuer activate_after_ms (30 days) and grace_ms (400 days). */
const MAX_ACTIVATE_AFTER_MS = 30 * 86_400_000;
const MAX_GRACE_MS = 400 * 86_400_000;

/** GetTrustBundle, RotateIssuer. */
export function trustBundleHandlers(c: ServiceContext): Pick<ServiceImplementation<typeof RegistryService>, 'getTrustBundle' | 'rotateIssuer'> {
  const { store, crypto, settings } = c;
  /**
   * Whether a RotateIssuer call of this process is between writing its key file and adopting its key.
   * *Why:* the database allows one prepared key, so of two concurrent rotations one must fail; they are
   * serialised here so the second is refused before it generates, writes or removes anything (and each
   * rotation writes and removes only its own per-key file, for rotations of other processes sharing
   * the data directory).
   */
  let rotating = false;
  return {
    getTrustBundle: async (req) => {
      const nowMs = Date.now();
      const issuers = (await store.issuers()).filter((i) => i.state !== 'dropped' && (i.notAfterMs === null || i.notAfterMs > nowMs));
      const currentVersion = await store.trustBundleVersion();
      const documents = await store.trustBundlesAfter(req.afterVersion > BigInt(currentVersion) ? currentVersion : Number(req.afterVersion), MAX_BUNDLE_DOCUMENTS);
      return {
        registryId: c.registryId,
        issuers: issuers.map((i) => ({
          keyId: i.keyId,
          publicKey: i.publicKey,
          notAfterMs: BigInt(i.state === 'retired' ? (i.notAfterMs ?? 0) : 0),
          active: i.active,
          state: i.state === 'prepared' ? IssuerKeyState.PREPARED : i.state === 'active' ? IssuerKeyState.ACTIVE : IssuerKeyState.RETIRED,
          activatesAtMs: BigInt(i.state === 'prepared' ? (i.activatesAtMs ?? 0) : 0),
        })),
        documents: documents.map((d) => decodeTrustBundleDocument(d.document)),
        currentVersion: BigInt(currentVersion),
      };
    },

    rotateIssuer: async (req, ctx) => {
      const activateAfterMs = Number(req.activateAfterMs === 0n ? BigInt(settings.issuerActivationDelayMs) : req.activateAfterMs);
      if (req.activateAfterMs < 0n || activateAfterMs > MAX_ACTIVATE_AFTER_MS) throw new RpcError('malformed', `activate_after_ms must be 0..${MAX_ACTIVATE_AFTER_MS}`);
      if (req.graceMs < 0n || req.graceMs > BigInt(MAX_GRACE_MS)) throw new RpcError('malformed', `grace_ms must be 0..${MAX_GRACE_MS}`);
      const caller = await c.auth.authorise(ctx, 'write');
      if (rotating) throw new RpcError('failed_precondition', 'another issuer rotation is in progress: one rotation at a time');
      const nowMs = Date.now();
      const key = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
      const { keyFiles } = c;
      let result: { version: number; outlivingGrace: number };
      rotating = true; // cleared by the finally below, whatever happens from here
      try {
        // The key is on disk (its own file, synced) before the database names it; a failed commit removes
        // that file (never another key's). `unavailable`: the commit may have happened, so the file stays.
        keyFiles.writePrepared(key);
        try {
          result = await store.prepareIssuer(key, { activatesAtMs: nowMs + activateAfterMs, retireGraceMs: Number(req.graceMs) }, (id) => c.issuers.key(id), nowMs);
        } catch (error) {
          if (!isRpcErrorCode(error, 'unavailable')) keyFiles.removePrepared(key.keyId);
          throw error;
        }
        c.issuers.adoptPrepared(key, result.version);
      } catch (error) {
        key.secretKey.wipe();
        throw error;
      } finally {
        rotating = false;
      }
      c.notifier.notify();
      c.logger.warn(
        { event: 'security', stage: 'issuer', code: 'issuer_prepared', issuer_key_id: toHex(key.keyId), activates_at_ms: nowMs + activateAfterMs, grace_ms: Number(req.graceMs), trust_bundle_version: result.version, operator: caller?.name },
        'issuer key prepared',
      );
      return {
        prepared: { keyId: key.keyId, publicKey: key.publicKey, notAfterMs: 0n, active: false, state: IssuerKeyState.PREPARED, activatesAtMs: BigInt(nowMs + activateAfterMs) },
        activatesAtMs: BigInt(nowMs + activateAfterMs),
        trustBundleVersion: BigInt(result.version),
        certificatesOutlivingGrace: BigInt(result.outlivingGrace),
      };
    },
  };
}
