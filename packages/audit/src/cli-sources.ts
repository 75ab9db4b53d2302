/**
 * Where parley-audit reads a log (./cli.ts): besides an audit file and a PostgreSQL table, the database of
 * a Parley gateway, on either engine — PostgreSQL (its `database_schema`) or the embedded PGlite data
 * directory (`data_dir`) — whose audit chains (one per audit key, PROTOCOL §10.9) are listed in
 * `gateway_audit_chains`. A chain is picked by the writer key given (`--key` / `--public-key`), so an
 * operator never looks the table up by hand.
 *
 * A PGlite data directory is one process's database: it is opened only while no live process holds the
 * gateway's lock file in it (`parley.lock`, the one @parley/db takes — the same name and form: the holder's
 * pid), and parley-audit holds that lock itself while it reads, so the gateway cannot start meanwhile.
 */
import { closeSync, existsSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { toHex, type ParleyCrypto } from '@parley/crypto-core';
import { AuditError } from './errors.js';
import type { SqlClient } from './postgres-store.js';
import { writerKeyId } from './entry.js';

/** The lock file a PGlite data directory's owner holds (@parley/db's PGLITE_LOCK_FILE: audit may not import the storage layer). */
export const PGLITE_LOCK_FILE = 'parley.lock';

/** The table listing a gateway database's audit chains (apps/gateway, migration 3). */
export const GATEWAY_CHAINS_TABLE = 'gateway_audit_chains';

/** A PostgreSQL schema name, as the gateway's `database_schema` takes it. */
export const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/** One gateway audit chain. */
export interface GatewayChain {
  /** The table, schema-qualified when a schema was given. */
  readonly table: string;
  readonly writerPublicKey: Uint8Array;
  readonly createdAtMs: number;
}

/** Whether `path` is a directory holding a PostgreSQL (PGlite) cluster. */
export function isPgliteDataDir(path: string): boolean {
  try {
    return statSync(path).isDirectory() && existsSync(join(path, 'PG_VERSION'));
  } catch {
    return false;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: unknown }).code === 'EPERM';
  }
}

/**
 * Takes the data directory's lock file (O_EXCL, holding this pid), replacing a stale one whose process is gone.
 * @returns the release function
 * @throws AuditError `storage_failure` when a live process (the gateway) holds it
 */
export function lockPgliteDir(dir: string): () => void {
  const path = join(dir, PGLITE_LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        process.off('exit', release);
        try {
          unlinkSync(path);
        } catch {
          // already gone
        }
      };
      process.on('exit', release);
      return release;
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EEXIST') throw new AuditError('storage_failure', `cannot create the lock file ${path}`, { cause: error });
      let text = '';
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        continue; // removed meanwhile
      }
      const pid = Number(text.trim());
      if (Number.isSafeInteger(pid) && pid > 0 && pidAlive(pid)) {
        throw new AuditError(
          'storage_failure',
          `the PGlite data directory ${dir} is in use by process ${pid} (${path}): an embedded database is one process's — stop the gateway first (or verify a copy of the directory made while it was stopped)`,
        );
      }
      try {
        unlinkSync(path); // stale: its process is gone
      } catch {
        // someone else removed it first
      }
    }
  }
  throw new AuditError('storage_failure', `cannot lock the PGlite data directory ${dir}`);
}

/**
 * Opens a PGlite data directory (locked while open).
 * @throws AuditError `storage_failure` when it is in use or cannot be opened
 */
export async function openPgliteDir(dir: string): Promise<{ client: SqlClient; close(): Promise<void> }> {
  const release = lockPgliteDir(dir);
  try {
    const { PGlite } = await import('@electric-sql/pglite');
    const db = await PGlite.create(dir);
    return {
      client: db,
      close: async () => {
        try {
          await db.close();
        } finally {
          release();
        }
      },
    };
  } catch (cause) {
    release();
    throw cause instanceof AuditError ? cause : new AuditError('storage_failure', `cannot open the PGlite data directory ${dir}`, { cause });
  }
}

function bytesOf(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return new Uint8Array(value);
  throw new AuditError('malformed', `${GATEWAY_CHAINS_TABLE}.writer_public_key is not bytea`);
}

/**
 * The gateway audit chains listed in the database (in `schema` when given), oldest first; undefined when the
 * database has no `gateway_audit_chains` table (not a gateway's database).
 */
export async function gatewayChains(client: SqlClient, schema: string | undefined): Promise<GatewayChain[] | undefined> {
  const qualify = (name: string): string => (schema === undefined ? name : `${schema}.${name}`);
  let rows: unknown[];
  try {
    rows = (await client.query(`SELECT table_name, writer_public_key, created_at_ms FROM ${qualify(GATEWAY_CHAINS_TABLE)} ORDER BY created_at_ms, table_name`)).rows;
  } catch (cause) {
    const code = (cause as { code?: unknown } | null)?.code;
    if (code === '42P01' || code === '3F000') return undefined; // no such table, or no such schema
    throw new AuditError('storage_failure', `cannot read ${qualify(GATEWAY_CHAINS_TABLE)}`, { cause });
  }
  return rows.map((row) => {
    const r = row as { table_name: unknown; writer_public_key: unknown; created_at_ms: unknown };
    return { table: qualify(String(r.table_name)), writerPublicKey: bytesOf(r.writer_public_key), createdAtMs: Number(r.created_at_ms) };
  });
}

/** One line per chain, for errors and the `chains` command. */
export function describeChain(crypto: ParleyCrypto, chain: GatewayChain): string {
  return `${chain.table} (writer key ${toHex(chain.writerPublicKey)}, key id ${toHex(writerKeyId(crypto, chain.writerPublicKey))})`;
}

/**
 * The table to read: `--table` as given (qualified with `schema`), else the gateway chain written by one of
 * `keys`, else the library's default `parley_audit` when the database lists no gateway chains.
 * @throws AuditError `not_found` when the database lists gateway chains and none is written by the keys given
 *   (the chains are named), `malformed` when several are (pick one with --table)
 */
export async function chooseTable(
  crypto: ParleyCrypto,
  client: SqlClient,
  options: { readonly table: string | undefined; readonly schema: string | undefined; readonly keys: readonly Uint8Array[] },
): Promise<{ table: string | undefined; chain?: GatewayChain }> {
  const { table, schema, keys } = options;
  if (table !== undefined) return { table: schema === undefined || table.includes('.') ? table : `${schema}.${table}` };
  const chains = await gatewayChains(client, schema);
  if (chains === undefined || chains.length === 0) return { table: schema === undefined ? undefined : `${schema}.parley_audit` };
  const hex = new Set(keys.map((k) => toHex(k)));
  const mine = chains.filter((c) => hex.has(toHex(c.writerPublicKey)));
  if (mine.length === 1) return { table: mine[0]!.table, chain: mine[0]! };
  const listing = chains.map((c) => describeChain(crypto, c)).join('; ');
  if (mine.length === 0) {
    throw new AuditError(
      'not_found',
      `none of the ${chains.length} gateway audit chain(s) in this database is written by the key given: ${listing}. Give the audit key of one (--key <audit_key_file> or --public-key <hex>), or --table <name>`,
    );
  }
  throw new AuditError('malformed', `the keys given write ${mine.length} of the gateway audit chains in this database: pick one with --table <name> (${mine.map((c) => describeChain(crypto, c)).join('; ')})`);
}
