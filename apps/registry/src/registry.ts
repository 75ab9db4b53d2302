/**
 * Opening a registry's data directory and database, shared by `init`,
 * `serve` and `issuer rotate`: the PGlite data directory is locked while a
 * process has it open (PGlite is single-process; a second opener would
 * corrupt it), migrations are applied on every open, and the store is ready.
 */
import { join } from 'node:path';
import { toHex, utf8, type ParleyCrypto } from '@parley/crypto-core';
import { DATA_FILES } from './config.js';
import { lockDirectory, openDatabase, type Database } from '@parley/db';
import { MIGRATIONS, applyMigrations, type MigrationResult } from './migrations.js';
import { RegistryStore } from './store.js';

/** Where a registry keeps its state. */
export interface RegistryLocation {
  /** The data directory (key files, registry.json, and the PGlite database when no URL is given). */
  readonly dataDir: string;
  /** PostgreSQL URL; PGlite in the data directory when absent. */
  readonly databaseUrl?: string;
  /** PostgreSQL schema (default: the connection's search_path, normally `public`). */
  readonly databaseSchema?: string;
  /** Pool size for PostgreSQL. */
  readonly maxConnections?: number;
}

/** An open registry database. */
export interface OpenRegistry {
  readonly db: Database;
  readonly store: RegistryStore;
  readonly migrations: MigrationResult;
  /** Closes the database and releases the data directory lock. */
  close(): Promise<void>;
}

/**
 * Takes the data directory's lock file (O_EXCL), replacing a stale one left by
 * a process that no longer exists.
 * @returns the release function
 * @throws RpcError `failed_precondition` when a live process holds it
 */
export function lockDataDir(dataDir: string): () => void {
  return lockDirectory(dataDir, DATA_FILES.lock);
}

/**
 * Opens the registry database (locking the data directory for PGlite) and
 * applies the migrations.
 * @throws RpcError `unavailable` (database unreachable), `failed_precondition` (locked, or a newer schema)
 */
export async function openRegistry(crypto: ParleyCrypto, where: RegistryLocation): Promise<OpenRegistry> {
  const release = where.databaseUrl === undefined ? lockDataDir(where.dataDir) : () => undefined;
  let db: Database | undefined;
  try {
    db = await openDatabase({
      ...(where.databaseUrl === undefined
        ? // A fresh PGlite directory starts as a copy of a cached cluster that already has these migrations.
          { dataDir: join(where.dataDir, DATA_FILES.pgliteDir), prepared: { name: `registry-${migrationsDigest(crypto)}`, prepare: async (fresh) => void (await applyMigrations(fresh)) } }
        : { url: where.databaseUrl }),
      ...(where.databaseSchema === undefined ? {} : { schema: where.databaseSchema }),
      ...(where.maxConnections === undefined ? {} : { maxConnections: where.maxConnections }),
    });
    const migrations = await applyMigrations(db, where.databaseSchema);
    const opened = db;
    return {
      db: opened,
      store: new RegistryStore(opened, crypto),
      migrations,
      async close() {
        await opened.close().catch(() => undefined);
        release();
      },
    };
  } catch (error) {
    await db?.close().catch(() => undefined);
    release();
    throw error;
  }
}

/** Names the prepared PGlite template after the migrations it holds (16 hex digits of their BLAKE3). */
function migrationsDigest(crypto: ParleyCrypto): string {
  return toHex(crypto.blake3(utf8(JSON.stringify(MIGRATIONS))).subarray(0, 8));
}
