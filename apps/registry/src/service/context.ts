/**
 * What every RegistryService handler group works with (one value per running server, built at start once
 * the registry id is known), and the fan-out wake-up that tells revocation watches a commit happened.
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import type { Logger } from 'pino';
import type { RegistrySettings } from '../config.js';
import type { IssuerKeyFiles } from '../issuer-keys.js';
import type { RegistryMetrics } from '../metrics.js';
import type { RegistryStore } from '../store.js';
import type { Authoriser } from './auth.js';
import type { IssuerKeyRing } from './issuer-lifecycle.js';

export interface ServiceContext {
  readonly crypto: ParleyCrypto;
  readonly store: RegistryStore;
  readonly settings: RegistrySettings;
  readonly logger: Logger;
  readonly keyFiles: IssuerKeyFiles;
  readonly metrics: RegistryMetrics;
  /** This registry's id (16 bytes), as every signed layout names it. */
  readonly registryId: Uint8Array;
  /** The issuer keys this process holds: the active one signs. */
  readonly issuers: IssuerKeyRing;
  /** Request signatures (§15.3). */
  readonly auth: Authoriser;
  /** Wakes revocation watches (a revocation committed, a new trust bundle version). */
  readonly notifier: Notifier;
  /** Bounds of WatchRevocations streams: in all, and from one network address. */
  readonly watchLimits: { readonly total: number; readonly perAddress: number };
  /** Aborted when the server stops: every revocation watch (a stream the server owns, that never ends by itself) ends at once. */
  readonly stopping: AbortSignal;
}

/** A fan-out wake-up for watchers: notify() resolves every pending wait(). */
export class Notifier {
  #waiters = new Set<() => void>();
  #generation = 0;

  /** How many notifications there were: a read started after it changed sees what they announced. */
  get generation(): number {
    return this.#generation;
  }

  notify(): void {
    this.#generation++;
    const waiters = this.#waiters;
    this.#waiters = new Set();
    for (const wake of waiters) wake();
  }

  wait(timeoutMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener('abort', done, { once: true });
      this.#waiters.add(done);
    });
  }
}
