/**
 * One database interface over two engines, for the registry and the gateway
 * (DESIGN.md "Registry", "Gateway"): PostgreSQL through `pg` when a URL is
 * given, else PGlite (PostgreSQL compiled to WebAssembly) with its data in a
 * directory on disk, or in memory when there is none (tests). Both run the
 * very same migrations and SQL; only connection handling, notifications and
 * value decoding differ, and they stop here: `pg` returns int8 as strings and bytea
 * as Buffers, PGlite as numbers and Uint8Arrays; rows leave this module through
 * {@link int} and {@link bytes}, which accept both.
 */
import { readFileSync, rmSync } from 'node:fs';
import type { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import { DbError } from './errors.js';
import { PGLITE_LOCK_FILE, copyTemplate, emptyDataDir, isFreshDataDir, lockDirectory, makePrivateDataDir, makeTemplate, pgliteTemplateRoot, saveMemoryImage, tightenTree, usableMemoryImage, usableTemplate } from './pglite-files.js';

/** Something SQL can be sent to: the database, or one transaction. */
export interface Queryable {
  /** One statement with `$1…` parameters; returns its rows. */
  query<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]>;
  /** Several statements without parameters (a migration). */
  exec(sql: string): Promise<void>;
}

/** A connected database. */
export interface Database extends Queryable {
  /** Which engine. */
  readonly engine: 'postgres' | 'pglite';
  /** Where (a URL without password, a directory, or `memory`), for logs and errors. */
  readonly location: string;
  /** The pool (`pg.Pool`) or PGlite, timed like `query`, in the shape `@parley/audit`'s `openPostgresStore` takes. */
  readonly sqlClient: { query(text: string, params?: unknown[]): Promise<{ rows: unknown[] }> };
  /** Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Calls `onNotify` on every NOTIFY on `channel` (from any process); resolves to an unsubscribe function. */
  listen(channel: string, onNotify: () => void): Promise<() => Promise<void>>;
  /**
   * One `SELECT 1` with a deadline: the readiness probe of the servers.
   * @param timeoutMs how long to wait for the answer (default 5 000)
   * @throws DbError `unavailable` when the database does not answer in time or refuses
   */
  ping(timeoutMs?: number): Promise<void>;
  /** Connection pool figures (PostgreSQL) and totals of statements run, for metrics. */
  stats(): DatabaseStats;
  /**
   * Calls `listener` after every statement (`query`, `exec`, a transaction as
   * one, and the statements of `sqlClient`) with its duration; for metrics.
   * @returns a function that removes the listener
   */
  observe(listener: QueryListener): () => void;
  /** Closes every connection. */
  close(): Promise<void>;
}

/** What {@link Database.stats} reports. */
export interface DatabaseStats {
  readonly engine: 'postgres' | 'pglite';
  /** PostgreSQL only: connections open, idle in the pool, and requests waiting for one (pg.Pool totalCount, idleCount, waitingCount). */
  readonly pool?: { readonly total: number; readonly idle: number; readonly waiting: number; readonly max: number };
  /** Statements (and transactions) run, and how many of them failed, since open. */
  readonly queries: number;
  readonly failures: number;
}

/** One finished statement, as {@link Database.observe} reports it. */
export interface QueryEvent {
  /** Wall time, seconds. */
  readonly seconds: number;
  /** `query`, `exec` or `transaction`. */
  readonly kind: 'query' | 'exec' | 'transaction';
  readonly ok: boolean;
}

/** A {@link Database.observe} listener. */
export type QueryListener = (event: QueryEvent) => void;

/** Where the database is. */
export interface DatabaseOptions {
  /** A `postgres://` URL; when absent, PGlite in `dataDir`. */
  readonly url?: string;
  /** PGlite's data directory (created if missing); absent: in memory, lost on close. */
  readonly dataDir?: string;
  /**
   * PostgreSQL schema to use instead of `public` (created by the migrations if
   * missing): lets several registries, or test files, share one database.
   */
  readonly schema?: string;
  /** Largest number of pooled connections (PostgreSQL). Default 10. */
  readonly maxConnections?: number;
  /**
   * PGlite on disk only: what a fresh directory should already hold, as a cached
   * template (./pglite-files.ts) — `prepare` (the app's migrations) runs once per
   * user and `name`, and later fresh directories start as a copy. `name` must
   * change whenever `prepare` would do something else (put a hash of the
   * migrations in it): `[a-z0-9-]{1,80}`. The app still runs its migrations
   * after opening (a no-op on a prepared copy).
   */
  readonly prepared?: PreparedTemplate;
}

/** A prepared template: see {@link DatabaseOptions.prepared}. */
export interface PreparedTemplate {
  readonly name: string;
  prepare(db: Database): Promise<void>;
}

const PREPARED_NAME_RE = /^[a-z0-9][a-z0-9-]{0,79}$/;

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;
/** Longest wait for a row lock (PostgreSQL `lock_timeout`). */
export const LOCK_TIMEOUT_MS = 10_000;
/** A session idle inside a transaction this long is ended (PostgreSQL `idle_in_transaction_session_timeout`). */
export const IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000;

/**
 * Checks a PostgreSQL schema name (it is interpolated into SQL: `CREATE SCHEMA`, `search_path`).
 * @throws DbError `malformed` unless it is 1..63 characters of [a-z0-9_], not starting with a digit
 */
export function assertSchemaName(schema: string): string {
  if (!SCHEMA_RE.test(schema)) throw new DbError('malformed', 'database schema name must be 1..63 characters of [a-z0-9_], not starting with a digit');
  return schema;
}

/** A safe integer from an int8/int4 column (string from pg, number from PGlite). */
export function int(value: unknown): number {
  const n = typeof value === 'string' ? Number(value) : typeof value === 'bigint' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw new DbError('internal', 'database returned a non-integer where an integer was expected');
  return n;
}

/** An integer column that may be NULL. */
export function intOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : int(value);
}

/** A bytea column as a plain Uint8Array (Buffer from pg, Uint8Array from PGlite). */
export function bytes(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new DbError('internal', 'database returned a non-bytea where bytea was expected');
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

/** Connection errors from pg (ECONNREFUSED, DNS, auth) become one clear `unavailable`. */
function unreachable(location: string, cause: unknown): DbError {
  const code = (cause as { code?: unknown }).code;
  const why = typeof code === 'string' ? code : cause instanceof Error ? cause.message.split('\n')[0] : 'unknown error';
  return new DbError('unavailable', `database unreachable at ${location} (${why})`, { cause });
}

function ignoreDuplicateSchema(error: unknown): void {
  const code = (error as { code?: unknown }).code;
  if (code !== '42P06' && code !== '23505') throw error;
}

function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return error instanceof Error && /Connection terminated|connect|timeout/i.test(error.message);
  // Node socket errors, and PostgreSQL classes 08 (connection), 28 (authorisation), 3D (no database), 57P (shutdown).
  return /^E[A-Z]+$/.test(code) || /^(08|28|3D|57P)/.test(code);
}

/** Timing of statements for {@link Database.observe} and {@link Database.stats}. */
class QueryObserver {
  readonly #listeners = new Set<QueryListener>();
  queries = 0;
  failures = 0;

  add(listener: QueryListener): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /** Runs `fn`, timing it. */
  async time<T>(kind: QueryEvent['kind'], fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    let ok = false;
    try {
      const result = await fn();
      ok = true;
      return result;
    } finally {
      this.queries++;
      if (!ok) this.failures++;
      if (this.#listeners.size > 0) {
        const event: QueryEvent = { seconds: (performance.now() - t0) / 1000, kind, ok };
        for (const listener of this.#listeners) {
          try {
            listener(event);
          } catch {
            // a metrics listener must never break a statement
          }
        }
      }
    }
  }
}

/** `SELECT 1` on `q`, failing with `unavailable` after `timeoutMs`. */
async function pingWith(q: Queryable, location: string, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DbError('unavailable', `database at ${location} did not answer within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
  });
  try {
    await Promise.race([q.query('SELECT 1'), deadline]);
  } catch (error) {
    if (error instanceof DbError && error.code === 'unavailable') throw error;
    const code = (error as { code?: unknown }).code;
    const first = error instanceof Error ? error.message.split('\n')[0] : String(error);
    throw new DbError('unavailable', `database at ${location} refused a probe (${typeof code === 'string' ? `${code}: ` : ''}${first})`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

/** Default deadline of {@link Database.ping}, ms. */
export const DEFAULT_PING_TIMEOUT_MS = 5_000;

/**
 * Opens a database: PostgreSQL when `url` is given, else PGlite in `dataDir`
 * (in memory without one).
 * For PostgreSQL it checks the connection once, so an unreachable server fails
 * here with one `unavailable` error rather than on the first request.
 *
 * @param options URL or data directory, optional schema
 * @returns the database
 * @throws DbError `unavailable` when PostgreSQL cannot be reached; `malformed` on a bad schema name
 */
export async function openDatabase(options: DatabaseOptions = {}): Promise<Database> {
  if (options.schema !== undefined) assertSchemaName(options.schema);
  if (options.url !== undefined) return openPostgres(options.url, options.schema, options.maxConnections ?? 10);
  if (options.prepared !== undefined && !PREPARED_NAME_RE.test(options.prepared.name)) throw new DbError('malformed', 'prepared template name must be 1..80 characters of [a-z0-9-]');
  return openPglite(options.dataDir, options.prepared);
}

async function openPostgres(url: string, schema: string | undefined, max: number): Promise<Database> {
  // Loaded on demand: a PGlite registry never loads pg, and a PostgreSQL one never loads PGlite's WebAssembly.
  const { default: pg } = await import('pg');
  const location = redactUrl(url) + (schema === undefined ? '' : ` (schema ${schema})`);
  const config: pg.PoolConfig = {
    connectionString: url,
    max,
    connectionTimeoutMillis: 5000,
    // Notice a silently dropped connection (NAT, failover) instead of waiting on it forever: probes after 10 s
    // idle (the system's default waits two hours before the first).
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    // A lock wait or an abandoned transaction must fail, not hold rows (and the revocation counter) indefinitely.
    options: [`-c lock_timeout=${LOCK_TIMEOUT_MS}`, `-c idle_in_transaction_session_timeout=${IDLE_IN_TRANSACTION_TIMEOUT_MS}`, ...(schema === undefined ? [] : [`-c search_path=${schema}`])].join(' '),
  };
  const pool = new pg.Pool(config);
  // An idle client losing its connection must not crash the process; the next query reports it.
  pool.on('error', () => undefined);
  try {
    const client = await pool.connect();
    try {
      // Two processes creating the same schema at once can collide even with IF NOT EXISTS; the loser's schema exists too.
      if (schema !== undefined) await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`).catch(ignoreDuplicateSchema);
    } finally {
      client.release();
    }
  } catch (cause) {
    await pool.end().catch(() => undefined);
    throw unreachable(location, cause);
  }
  const wrap = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (error) {
      throw isConnectionError(error) ? unreachable(location, error) : error;
    }
  };
  const observer = new QueryObserver();
  // Statements inside a transaction are timed as the transaction, not again one by one.
  const on = (client: pg.Pool | pg.PoolClient, timed: boolean): Queryable => ({
    query: <R>(sql: string, params?: readonly unknown[]) => {
      const run = () => wrap(async () => (await client.query(sql, params as unknown[])).rows as R[]);
      return timed ? observer.time('query', run) : run();
    },
    exec: (sql: string) => {
      const run = () => wrap(async () => void (await client.query(sql)));
      return timed ? observer.time('exec', run) : run();
    },
  });
  const listeners: pg.Client[] = [];
  const top = on(pool, true);
  return {
    engine: 'postgres',
    location,
    sqlClient: { query: (text: string, params?: unknown[]) => observer.time('query', () => pool.query(text, params)) },
    ...top,
    ping: (timeoutMs = DEFAULT_PING_TIMEOUT_MS) => pingWith(on(pool, false), location, timeoutMs),
    stats: () => ({ engine: 'postgres', pool: { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max }, queries: observer.queries, failures: observer.failures }),
    observe: (listener) => observer.add(listener),
    transaction: <T>(fn: (tx: Queryable) => Promise<T>) =>
      observer.time('transaction', () => wrap(async () => {
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          const result = await fn(on(client, false));
          await client.query('COMMIT');
          return result;
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw error;
        } finally {
          client.release();
        }
      })),
    async listen(channel, onNotify) {
      // A dedicated connection: LISTEN belongs to a session, and pooled sessions come and go.
      const client = new pg.Client(config);
      client.on('error', () => undefined);
      await wrap(() => client.connect());
      client.on('notification', (msg) => {
        if (msg.channel === channel) onNotify();
      });
      await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      listeners.push(client);
      return async () => {
        listeners.splice(listeners.indexOf(client), 1);
        await client.end().catch(() => undefined);
      };
    },
    async close() {
      await Promise.all(listeners.splice(0).map((c) => c.end().catch(() => undefined)));
      await pool.end();
    },
  };
}

async function openPglite(dataDir: string | undefined, prepared: PreparedTemplate | undefined): Promise<Database> {
  const { PGlite } = await import('@electric-sql/pglite');
  // Mode 0700 before anything is written there: PGlite writes its files 0666 and directories 0777.
  if (dataDir !== undefined) makePrivateDataDir(dataDir);
  const release = dataDir === undefined ? () => undefined : lockDirectory(dataDir, PGLITE_LOCK_FILE, 'PGlite data directory');
  let db: PGlite;
  try {
    db = dataDir === undefined ? await openPgliteMemory(PGlite) : await openPgliteDir(PGlite, dataDir, prepared);
  } catch (cause) {
    release();
    if (cause instanceof DbError) throw cause;
    throw new DbError('unavailable', `cannot open the embedded database in ${dataDir ?? 'memory'}`, { cause });
  }
  return wrapPglite(db, dataDir ?? 'memory', release);
}

function wrapPglite(db: PGlite, location: string, release: () => void): Database {
  const observer = new QueryObserver();
  const on = (q: Pick<PGlite, 'query' | 'exec'>, timed: boolean): Queryable => ({
    query: <R>(sql: string, params?: readonly unknown[]) => {
      const run = async () => (await q.query<R>(sql, params as unknown[])).rows;
      return timed ? observer.time('query', run) : run();
    },
    exec: (sql: string) => {
      const run = async () => void (await q.exec(sql));
      return timed ? observer.time('exec', run) : run();
    },
  });
  return {
    engine: 'pglite',
    location,
    sqlClient: { query: (text, params) => observer.time('query', async () => ({ rows: (await db.query(text, params)).rows })) },
    ...on(db, true),
    ping: (timeoutMs = DEFAULT_PING_TIMEOUT_MS) => pingWith(on(db, false), location, timeoutMs),
    stats: () => ({ engine: 'pglite', queries: observer.queries, failures: observer.failures }),
    observe: (listener) => observer.add(listener),
    transaction: <T>(fn: (tx: Queryable) => Promise<T>) => observer.time('transaction', () => db.transaction((tx) => fn(on(tx, false)))),
    async listen(channel, onNotify) {
      const unsubscribe = await db.listen(channel, () => onNotify());
      return async () => unsubscribe();
    },
    async close() {
      try {
        await db.close();
      } finally {
        release();
      }
    },
  };
}

/**
 * Opens PGlite in memory. Its cluster starts from the cached memory image (a
 * dump of a clean cluster, made here on first use) when there is one, which
 * spares the initdb; a failure on that path drops the image and falls back to
 * initdb (./pglite-files.ts).
 */
async function openPgliteMemory(PGliteClass: typeof PGlite): Promise<PGlite> {
  const root = pgliteTemplateRoot();
  const image = usableMemoryImage(root);
  if (image !== undefined) {
    try {
      return await PGliteClass.create({ loadDataDir: new Blob([readFileSync(image)]) });
    } catch {
      rmSync(image, { force: true }); // unusable: this open makes a new one
    }
  }
  const db = await PGliteClass.create();
  if (root !== undefined) await saveMemoryImage(root, () => db.dumpDataDir('none'));
  return db;
}

/**
 * Opens PGlite in a locked data directory. A fresh one starts as a copy of the
 * cached template cluster when there is one (made here on first use) — or of
 * the app's prepared template, the cluster with its migrations — which spares
 * the initdb (and the migrations); any failure on that path falls back to
 * initdb (./pglite-files.ts).
 */
async function openPgliteDir(PGliteClass: typeof PGlite, dataDir: string, prepared: PreparedTemplate | undefined): Promise<PGlite> {
  if (isFreshDataDir(dataDir)) {
    const root = pgliteTemplateRoot();
    const base =
      usableTemplate(root) ??
      (await makeTemplate(root, async (dir) => {
        await (await PGliteClass.create(dir)).close();
      }));
    let template = base;
    if (base !== undefined && prepared !== undefined) {
      const name = `prepared-${prepared.name}`;
      template =
        usableTemplate(root, name) ??
        (await makeTemplate(
          root,
          async (dir) => {
            copyTemplate(base, dir);
            const pg = await PGliteClass.create(dir);
            await prepared.prepare(wrapPglite(pg, dir, () => undefined)).finally(() => pg.close());
          },
          name,
        )) ??
        base;
    }
    if (template !== undefined) {
      try {
        copyTemplate(template, dataDir);
        return await PGliteClass.create(dataDir);
      } catch {
        emptyDataDir(dataDir);
        rmSync(template, { recursive: true, force: true }); // unusable: the next fresh directory makes a new one
      }
    }
    const db = await PGliteClass.create(dataDir); // initdb
    try {
      tightenTree(dataDir); // as a template copy's: 0600 files, 0700 directories
    } catch (error) {
      await db.close().catch(() => undefined);
      throw error;
    }
    return db;
  }
  return PGliteClass.create(dataDir);
}
