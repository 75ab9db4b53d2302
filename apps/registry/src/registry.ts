/**
 * Opening a registry's data directory and database, shared by `init`,
 * `serve` and `issuer rotate`: the PGlite data directory is locked while a
 * process has it open (PGlite is single-process; a second opener would
 * corrupt it), migrations are applied on every open, and the store is ready.
 */
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { ParleyCrypto } from '@parley/crypto-core';
import { RpcError } from '@parley/rpc';
import { DATA_FILES } from './config.js';
import { openDatabase, type Database } from '@parley/db';
import { applyMigrations, type MigrationResult } from './migrations.js';
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

/** Lock files this process holds. */
const HELD = new Set<string>();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: unknown }).code === 'EPERM';
  }
}

/**
 * Takes the data directory's lock file (O_EXCL), replacing a stale one left by
 * a process that no longer exists.
 * @returns the release function
 * @throws RpcError `failed_precondition` when a live process holds it
 */
export function lockDataDir(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, DATA_FILES.lock);
  if (HELD.has(path)) throw new RpcError('failed_precondition', `data directory ${dataDir} is already open in this process`);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      HELD.add(path);
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        HELD.delete(path);
        try {
          unlinkSync(path);
        } catch {
          // already gone
        }
      };
      process.once('exit', release);
      return release;
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EEXIST') throw new RpcError('unavailable', `cannot create ${path}`, { cause: error });
      const pid = Number(readFileSync(path, 'utf8').trim());
      if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
        throw new RpcError('failed_precondition', `data directory ${dataDir} is in use by process ${pid} (a running \`serve\`?)`);
      }
      try {
        unlinkSync(path); // stale: its process is gone
      } catch {
        // someone else removed it first; try again
      }
    }
  }
  throw new RpcError('failed_precondition', `cannot lock data directory ${dataDir}`);
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
      ...(where.databaseUrl === undefined ? { dataDir: join(where.dataDir, DATA_FILES.pgliteDir) } : { url: where.databaseUrl }),
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
