/**
 * The issuer keys this registry process holds and their lifecycle (docs/PROTOCOL.md §15.9): the active key
 * signs; a lifecycle step (one at a time) activates a prepared key when due, drops retired keys past their
 * grace, and follows what other registry processes on the same database changed (the active key, a
 * prepared key whose file is here, the trust bundle version).
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { toHex } from '@parley/crypto-core';
import type { IssuerKey } from '@parley/identity';
import { RpcError } from '@parley/rpc';
import type { Logger } from 'pino';
import type { IssuerKeyFiles } from '../issuer-keys.js';
import type { IssuerRow, RegistryStore } from '../store.js';

export interface IssuerKeyRingOptions {
  readonly crypto: ParleyCrypto;
  readonly store: RegistryStore;
  readonly keyFiles: IssuerKeyFiles;
  readonly logger: Logger;
  /** The trust bundle version changed (watches send it at once). */
  readonly onBundleVersion: () => void;
  /**
   * While this process does not hold the active key, how often at most a call (or a lifecycle step) looks
   * for its file in the data directory again (default {@link KEY_FILE_RECHECK_MS}).
   */
  readonly keyFileRecheckMs?: number;
}

/** How often at most a process missing the active issuer key looks for its file again. */
export const KEY_FILE_RECHECK_MS = 2_000;

export class IssuerKeyRing {
  readonly #o: IssuerKeyRingOptions;
  /** Issuer keys this process holds (active, and prepared when its file is here), by hex key id. */
  readonly #keys = new Map<string, IssuerKey>();
  #activeKeyId: Uint8Array | undefined;
  #bundleVersion = 0;
  #lifecycle: Promise<void> = Promise.resolve();
  #stopped = false;
  /** When this process last looked for a missing active key's file (0: not yet). */
  #lastKeyFileCheckMs = 0;

  constructor(options: IssuerKeyRingOptions) {
    this.#o = options;
  }

  /** Loads the key files for the database's issuers (checked against it) and makes sure a trust bundle is published. */
  async load(): Promise<void> {
    const { store, keyFiles, logger } = this.#o;
    const { keys, notes } = keyFiles.loadFor(await store.issuers());
    for (const note of notes) logger.warn({ event: 'issuer_keys' }, note);
    for (const key of keys) this.#keys.set(toHex(key.keyId), key);
    this.#activeKeyId = keys[0]!.keyId;
    this.#bundleVersion = await store.ensureTrustBundle((id) => this.key(id), Date.now());
  }

  /** The key id this process signs with now. */
  get activeKeyId(): Uint8Array | undefined {
    return this.#activeKeyId === undefined ? undefined : new Uint8Array(this.#activeKeyId);
  }

  /** The trust bundle version this process last saw. */
  get bundleVersion(): number {
    return this.#bundleVersion;
  }

  key(keyId: Uint8Array): IssuerKey | undefined {
    return this.#keys.get(toHex(keyId));
  }

  /** The active issuer key, to sign with. @throws RpcError `failed_precondition` when this process does not hold it */
  active(): IssuerKey {
    const key = this.#activeKeyId === undefined ? undefined : (this.key(this.#activeKeyId) ?? this.#pickUpActive(Date.now()));
    if (key === undefined) {
      const id = this.#activeKeyId === undefined ? '' : toHex(this.#activeKeyId);
      throw new RpcError(
        'failed_precondition',
        `this registry process does not hold the active issuer key${id === '' ? '' : ` (${id})`}: copy its key file into this process's data directory (as ${this.#o.keyFiles.activePath}${this.#activeKeyId === undefined ? '' : `, or ${this.#o.keyFiles.preparedPath(this.#activeKeyId)}`}); it is picked up within seconds, no restart needed`,
      );
    }
    return key;
  }

  /**
   * The active key, read from the data directory when its file has appeared there since (an operator
   * copied it from the process that prepared it); looked for at most every `keyFileRecheckMs`.
   */
  #pickUpActive(nowMs: number): IssuerKey | undefined {
    const activeKeyId = this.#activeKeyId;
    if (activeKeyId === undefined || this.#stopped) return undefined;
    if (this.#lastKeyFileCheckMs !== 0 && nowMs - this.#lastKeyFileCheckMs < (this.#o.keyFileRecheckMs ?? KEY_FILE_RECHECK_MS)) return undefined;
    this.#lastKeyFileCheckMs = nowMs;
    const { keyFiles, logger } = this.#o;
    let key: IssuerKey;
    try {
      keyFiles.promote(activeKeyId); // a copied prepared file becomes the active one; no-op when the active file holds it
      key = keyFiles.read(keyFiles.activePath);
    } catch {
      return undefined; // still not here (or not readable yet: a copy in progress); looked for again later
    }
    if (!this.#o.crypto.constantTimeEqual(key.keyId, activeKeyId)) {
      key.secretKey.wipe();
      return undefined;
    }
    this.#keys.set(toHex(activeKeyId), key);
    logger.info({ issuer_key_id: toHex(activeKeyId), file: keyFiles.activePath }, 'the active issuer key file is here now: signing with the active issuer key');
    return key;
  }

  /** A key this process just prepared (RotateIssuer) and the trust bundle version that publishes it. */
  adoptPrepared(key: IssuerKey, bundleVersion: number): void {
    this.#keys.set(toHex(key.keyId), key);
    this.#bundleVersion = bundleVersion;
  }

  /** Runs one lifecycle step after the previous one (never two at once in this process). */
  schedule(): void {
    if (this.#stopped) return;
    this.#lifecycle = this.#lifecycle
      .then(() => this.#lifecycleStep())
      .catch((error: unknown) => this.#o.logger.warn({ event: 'issuer_lifecycle', err: error }, 'issuer lifecycle step failed (retried in 1 s)'));
  }

  /** No new steps; resolves when the running one has finished. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#lifecycle.catch(() => undefined);
  }

  /** Wipes every key held and forgets them (the server has stopped: nothing signs any more). */
  wipe(): void {
    for (const key of this.#keys.values()) key.secretKey.wipe();
    this.#keys.clear();
  }

  async #lifecycleStep(): Promise<void> {
    if (this.#stopped) return;
    const { store, keyFiles, logger } = this.#o;
    const nowMs = Date.now();
    const activated = await store.activateDueIssuer((id) => this.key(id), nowMs);
    if (activated !== undefined) {
      logger.warn(
        { event: 'security', stage: 'issuer', code: 'issuer_activated', issuer_key_id: toHex(activated.activated), retired_key_id: toHex(activated.retired), retired_not_after_ms: activated.notAfterMs, trust_bundle_version: activated.version },
        'issuer key activated; the previous one is retired',
      );
    }
    const dropped = await store.dropExpiredIssuers((id) => this.key(id), nowMs);
    if (dropped !== undefined) {
      logger.info({ event: 'issuer_dropped', issuer_key_ids: dropped.dropped.map(toHex), trust_bundle_version: dropped.version }, 'retired issuer keys past their grace period left the trust bundle');
    }
    // Follow the database (this process's changes and other processes'): the active key, the version.
    const issuers = await store.issuers();
    const active = issuers.find((i) => i.state === 'active');
    if (active !== undefined && (this.#activeKeyId === undefined || !this.#o.crypto.constantTimeEqual(active.keyId, this.#activeKeyId))) {
      this.#switchActive(active, issuers);
    } else if (this.#activeKeyId !== undefined && this.key(this.#activeKeyId) === undefined) {
      this.#pickUpActive(nowMs); // its file may have been copied here since
    }
    const prepared = issuers.find((i) => i.state === 'prepared');
    if (prepared !== undefined && this.key(prepared.keyId) === undefined) {
      const file = keyFiles.findPrepared(prepared.keyId);
      if (file !== undefined) this.#keys.set(toHex(prepared.keyId), keyFiles.read(file));
    }
    const version = await store.trustBundleVersion();
    if (version !== this.#bundleVersion) {
      this.#bundleVersion = version;
      this.#o.onBundleVersion(); // watches send the new version at once
    }
  }

  /** Another key became active (here or in another registry process): sign with it, forget the old secret. */
  #switchActive(active: IssuerRow, issuers: readonly IssuerRow[]): void {
    const { keyFiles, logger } = this.#o;
    let held = true;
    try {
      keyFiles.promote(active.keyId);
      if (this.key(active.keyId) === undefined) this.#keys.set(toHex(active.keyId), keyFiles.read(keyFiles.activePath));
    } catch (error) {
      held = false;
      logger.error(
        { event: 'issuer_keys', issuer_key_id: toHex(active.keyId), err: error },
        `the active issuer key is not in this data directory: this process cannot sign until it is, so it refuses register, enrol, key rotation and the revocation list (GetRevocationList, WatchRevocations: every answer carries a head signed by the active key), and gateways following it fail closed. Copy the key file here, as ${keyFiles.activePath} or ${keyFiles.preparedPath(active.keyId)}: it is picked up within seconds, no restart needed`,
      );
    }
    const previous = this.#activeKeyId;
    this.#activeKeyId = active.keyId;
    this.#lastKeyFileCheckMs = held ? 0 : Date.now();
    for (const [hex, key] of this.#keys) {
      const row = issuers.find((i) => toHex(i.keyId) === hex);
      if (row === undefined || row.state === 'retired' || row.state === 'dropped') {
        key.secretKey.wipe();
        this.#keys.delete(hex);
      }
    }
    // Only when it really signs with it: after the error above, this line would say the opposite (found by an operator review).
    if (held) logger.info({ issuer_key_id: toHex(active.keyId), previous_key_id: previous === undefined ? undefined : toHex(previous) }, 'signing with the new active issuer key');
  }
}
