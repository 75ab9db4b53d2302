/**
 * What every table group of the registry store works with: the database, the crypto instance, and the
 * registry id (read once, then cached: it never changes).
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { bytes, type Database, type Queryable } from '@parley/db';
import { RpcError } from '@parley/rpc';

export class StoreState {
  readonly db: Database;
  readonly crypto: ParleyCrypto;
  #registryId: Uint8Array | undefined;

  constructor(db: Database, crypto: ParleyCrypto) {
    this.db = db;
    this.crypto = crypto;
  }

  /** Caches the id of the registry this database holds (set by `initialise`). */
  rememberRegistryId(registryId: Uint8Array): void {
    this.#registryId = new Uint8Array(registryId);
  }

  /**
   * The registry id, read through `q` when not cached (in a transaction, read through it: a query on the
   * pool while the transaction holds the only connection would never return).
   * @throws RpcError `failed_precondition` when the database holds no registry (not initialised)
   */
  async registryIdIn(q: Queryable): Promise<Uint8Array> {
    if (this.#registryId !== undefined) return this.#registryId;
    const rows = await q.query<{ registry_id: unknown }>('SELECT registry_id FROM registry_meta');
    if (rows.length === 0) throw new RpcError('failed_precondition', `the database at ${this.db.location} holds no registry: run \`init\` first`);
    this.#registryId = bytes(rows[0]!.registry_id);
    return this.#registryId;
  }
}
