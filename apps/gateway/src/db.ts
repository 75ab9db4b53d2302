/**
 * The gateway's database (DESIGN.md "Gateway"): PostgreSQL through `pg` when
 * a URL is given, else PGlite (PostgreSQL compiled to WebAssembly) in a data
 * directory, or in memory when there is none (tests). Both run the very same
 * migrations and SQL. The approach (and a little of the code) is the
 * registry's `apps/registry/src/db.ts`; apps cannot import apps, so it is
 * copied here, trimmed to what the gateway needs. `pg` returns int8 as strings
 * and bytea as Buffers, PGlite numbers and Uint8Arrays: rows leave through
 * {@link int} / {@link bytes}, which accept both.
 */
import { mkdirSync } from 'node:fs';
import type { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import { RpcError } from '@parley/rpc';

/** Something SQL can be sent to. */
export interface Queryable {
  /** One statement with `$1…` parameters; returns its rows. */
  query<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]>;
  /** Several statements without parameters (a migration). */
  exec(sql: string): Promise<void>;
}

/** A connected database. */
export interface Database extends Queryable {
  readonly engine: 'postgres' | 'pglite';
  /** A URL without password, a directory, or `memory`, for logs. */
  readonly location: string;
  /** The raw client (`pg.Pool` or PGlite): what `@parley/audit`'s `openPostgresStore` takes. */
  readonly sqlClient: { query(text: string, params?: unknown[]): Promise<{ rows: unknown[] }> };
  /** Runs `fn` in one transaction. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Where the database is. */
export interface DatabaseOptions {
  /** A `postgres://` URL; when absent, PGlite. */
  readonly url?: string;
  /** PGlite's data directory (created if missing); absent: in memory (lost on close). */
  readonly dataDir?: string;
  /** PostgreSQL schema instead of `public` (created if missing): lets test files or deployments share a database. */
  readonly schema?: string;
  /** Largest number of pooled connections (PostgreSQL). Default 10. */
  readonly maxConnections?: number;
}

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/** A safe integer from an int8/int4 column (string from pg, number from PGlite). */
export function int(value: unknown): number {
  const n = typeof value === 'string' ? Number(value) : typeof value === 'bigint' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw new RpcError('internal', 'database returned a non-integer where an integer was expected');
  return n;
}

/** A bytea column as a plain Uint8Array. */
export function bytes(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new RpcError('internal', 'database returned a non-bytea where bytea was expected');
  return new Uint8Array(value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength));
}

/** A database URL safe to log: no password, no query parameters. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.password = '';
    u.search = '';
    return u.toString();
  } catch {
    return 'postgres://<unparsable url>';
  }
}

/**
 * Opens the database and, for PostgreSQL with a schema, creates the schema.
 * @throws RpcError `unavailable` (PostgreSQL unreachable, PGlite cannot open), `malformed` (bad schema name)
 */
export async function openDatabase(options: DatabaseOptions = {}): Promise<Database> {
  if (options.schema !== undefined && !SCHEMA_RE.test(options.schema)) {
    throw new RpcError('malformed', 'database schema name must be 1..63 characters of [a-z0-9_], not starting with a digit');
  }
  if (options.url !== undefined) return openPostgres(options.url, options.schema, options.maxConnections ?? 10);
  return openPglite(options.dataDir);
}

async function openPostgres(url: string, schema: string | undefined, max: number): Promise<Database> {
  const { default: pgModule } = await import('pg');
  const location = redactUrl(url) + (schema === undefined ? '' : ` (schema ${schema})`);
  const pool = new pgModule.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: 5000,
    keepAlive: true,
    options: ['-c lock_timeout=10000', '-c idle_in_transaction_session_timeout=60000', ...(schema === undefined ? [] : [`-c search_path=${schema}`])].join(' '),
  });
  pool.on('error', () => undefined);
  try {
    const client = await pool.connect();
    try {
      if (schema !== undefined) await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    } finally {
      client.release();
    }
  } catch (cause) {
    await pool.end().catch(() => undefined);
    const code = (cause as { code?: unknown }).code;
    throw new RpcError('unavailable', `database unreachable at ${location} (${typeof code === 'string' ? code : 'error'})`, { cause });
  }
  const on = (client: pg.Pool | pg.PoolClient): Queryable => ({
    query: async <R>(sql: string, params?: readonly unknown[]) => (await client.query(sql, params as unknown[])).rows as R[],
    exec: async (sql: string) => void (await client.query(sql)),
  });
  return {
    engine: 'postgres',
    location,
    sqlClient: pool,
    ...on(pool),
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const result = await fn(on(client));
        await client.query('COMMIT');
        return result;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}

async function openPglite(dataDir: string | undefined): Promise<Database> {
  if (dataDir !== undefined) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const { PGlite } = await import('@electric-sql/pglite');
  let db: PGlite;
  try {
    db = await PGlite.create(dataDir);
  } catch (cause) {
    throw new RpcError('unavailable', `cannot open the embedded database in ${dataDir ?? 'memory'}`, { cause });
  }
  const on = (q: Pick<PGlite, 'query' | 'exec'>): Queryable => ({
    query: async <R>(sql: string, params?: readonly unknown[]) => (await q.query<R>(sql, params as unknown[])).rows,
    exec: async (sql: string) => void (await q.exec(sql)),
  });
  return {
    engine: 'pglite',
    location: dataDir ?? 'memory',
    sqlClient: { query: async (text, params) => ({ rows: (await db.query(text, params)).rows }) },
    ...on(db),
    transaction: <T>(fn: (tx: Queryable) => Promise<T>) => db.transaction((tx) => fn(on(tx))),
    close: () => db.close(),
  };
}
