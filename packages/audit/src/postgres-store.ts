/**
 * PostgreSQL store (docs/PROTOCOL.md §9.6). Works with any client that has
 * `query(text, params) → { rows }`: a `pg.Pool` or `pg.Client`, or PGlite.
 * This module imports neither; the caller passes the client (and owns it).
 *
 *   CREATE TABLE IF NOT EXISTS parley_audit (
 *     idx         BIGINT PRIMARY KEY CHECK (idx >= 0),
 *     entry       BYTEA NOT NULL                  -- protobuf AuditMessage
 *                 CHECK (octet_length(entry) BETWEEN 1 AND 1024), -- MAX_ENTRY_BYTES; tables created from now on
 *     entry_hash  BYTEA NOT NULL CHECK (octet_length(entry_hash) = 32),
 *     recorded_at TIMESTAMPTZ NOT NULL DEFAULT now())
 *
 * plus triggers that reject UPDATE, DELETE (per row) and TRUNCATE (per
 * statement: TRUNCATE fires no row triggers), so the table is append-only
 * unless someone with DDL rights disables them — which the verifier then
 * catches. Also revoke UPDATE, DELETE and TRUNCATE from the writers' role.
 *
 * No fork under concurrent writers (several gateway instances share one
 * database): an append is ONE statement that inserts row `idx` only if no row
 * at or after `idx` exists and row `idx − 1` carries the entry's
 * previous_hash. Two writers racing for the same index collide on the primary
 * key; the loser gets `conflict`, catches up and re-signs. A single statement
 * also means it works through a pool, where consecutive queries may run on
 * different connections (so BEGIN … COMMIT could not be relied on).
 * `appendMany` is the same statement over several rows (a writer's group
 * commit): the guard applies to the first, the links between the rows are
 * checked before sending, and one statement inserts all of them or none.
 */
import type { AuditMessage } from '@parley/proto';
import type { ParleyCrypto } from '@parley/crypto-core';
import { assertCrypto, assertObject, assertSafeInt, describe, malformed } from './assert.js';
import { AuditError, storageFailure } from './errors.js';
import { HASH_BYTES, KEY_ID_BYTES, MAX_ENTRY_BYTES, SIGNATURE_BYTES, assertEntry, digestEntry, encodeEntry } from './entry.js';
import { MAX_CHECKPOINT_PEAKS, MAX_CHECKPOINT_SIGNERS, type AuditCheckpoint } from './checkpoint.js';
import { assertNotification, checkRange, decodeStream, type AuditNotification, type AuditStore } from './store.js';

/** Most entries one `appendMany` statement inserts (3 parameters each, far below PostgreSQL's 65535). */
export const MAX_BATCH = 256;
/**
 * Most notifications one `appendMany` statement sends (two array parameters, whatever their number): the entries'
 * own and as many sent along with them (`AuditLog.notify`).
 */
export const MAX_NOTIFICATIONS = 2 * MAX_BATCH;

/** The part of `pg.Pool`, `pg.Client` and PGlite that the store uses. */
export interface SqlClient {
  query(text: string, params?: unknown[]): Promise<{ rows: unknown[] }>;
}

/** Options of {@link openPostgresStore}. */
export interface PostgresStoreOptions {
  /** Table name, optionally schema-qualified: `[a-z_][a-z0-9_]*` (`.` once). Default `parley_audit`. */
  readonly table?: string;
  /** Create the table and trigger if missing (idempotent). Default true; false checks that the table exists. */
  readonly migrate?: boolean;
  /** Rows per page when reading. Default 1000. */
  readonly pageSize?: number;
}

const TABLE_RE = /^(?:[a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$/;
/**
 * Longest table name (without its schema) that gets a checkpoints table: `<name>_checkpoints` must stay within
 * PostgreSQL's 63 characters (a longer one is cut to 63 — and would then be the table itself). A new table is
 * refused above it; an existing one opened with `migrate: false` is read and written without checkpoints.
 */
export const MAX_CHECKPOINTED_TABLE_NAME = 51;

/** SQLSTATEs that mean "someone else created it first" during a concurrent migration. */
const MIGRATION_RACE = new Set(['23505', '42P07', '42710', 'XX000']);

function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function toBuffer(bytes: Uint8Array): Buffer {
  // pg's parameter encoder wants a Buffer for bytea; PGlite takes any Uint8Array.
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function toBytes(value: unknown, what: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new AuditError('storage_failure', `${what} is not bytea`);
  return new Uint8Array(value);
}

/**
 * Byte bound of each bytea column read from the checkpoints table (a checkpoint's own shape, checkpoint.ts).
 * Stored rows are not trusted: each column is selected as `bounded()`, so a longer value never leaves the server.
 */
const CHECKPOINT_COLUMN_BYTES: Readonly<Record<string, number>> = {
  first_entry_hash: HASH_BYTES,
  root_hash: HASH_BYTES,
  last_entry_hash: HASH_BYTES,
  signer_key_id: KEY_ID_BYTES,
  entry_signers: MAX_CHECKPOINT_SIGNERS * KEY_ID_BYTES,
  peaks: MAX_CHECKPOINT_PEAKS * HASH_BYTES,
  signature: SIGNATURE_BYTES,
};

/**
 * SQL selecting bytea `column` only when it is at most `max` bytes (NULL otherwise), and its length as
 * `<column>_length`: whoever can insert rows cannot make a reader load (or pg's parser choke on) a huge value.
 */
function bounded(column: string, max: number): string {
  return `octet_length(${column}) AS ${column}_length, CASE WHEN octet_length(${column}) <= ${max} THEN ${column} END AS ${column}`;
}

/** The bytes of a column selected with {@link bounded}; `malformed` when the stored value is longer than `max`. */
function boundedBytes(row: Record<string, unknown>, column: string, max: number, what: string): Uint8Array {
  const length = row[`${column}_length`];
  const n = typeof length === 'string' || typeof length === 'number' ? Number(length) : Number.NaN;
  if (n > max) malformed(`${what} is ${n} bytes, more than ${max}`);
  return toBytes(row[column], what);
}

function toCount(value: unknown, what: string): number {
  const n = typeof value === 'string' || typeof value === 'bigint' || typeof value === 'number' ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 0) throw new AuditError('storage_failure', `${what} is not a count`);
  return n;
}

/**
 * Opens the PostgreSQL store, creating its table when `migrate` is on.
 *
 * @param crypto ParleyCrypto from `createCrypto()` (entry hashes for the link column)
 * @param client a `pg.Pool`, `pg.Client` or PGlite instance (owned by the caller)
 * @param options table name, migration switch, page size
 * @returns the store
 * @throws AuditError `malformed` (options), `not_found` (no table and `migrate: false`), `storage_failure`
 * @example
 * const store = await openPostgresStore(crypto, new pg.Pool({ connectionString: process.env.DATABASE_URL }));
 */
export async function openPostgresStore(crypto: ParleyCrypto, client: SqlClient, options: PostgresStoreOptions = {}): Promise<PostgresAuditStore> {
  assertCrypto(crypto);
  if (typeof client !== 'object' || client === null || typeof (client as { query?: unknown }).query !== 'function') {
    malformed(`client must have a query(text, params) method, got ${describe(client)}`);
  }
  const o = assertObject(options, 'options');
  const table = o['table'] === undefined ? 'parley_audit' : o['table'];
  if (typeof table !== 'string' || !TABLE_RE.test(table)) malformed('options.table must be [schema.]name of [a-z0-9_], starting with [a-z_], at most 63 characters each');
  const migrate = o['migrate'] === undefined ? true : o['migrate'];
  if (typeof migrate !== 'boolean') malformed(`options.migrate must be a boolean, got ${describe(migrate)}`);
  if (migrate && table.replace(/^.*\./, '').length > MAX_CHECKPOINTED_TABLE_NAME) {
    malformed(`options.table: a new table's name is at most ${MAX_CHECKPOINTED_TABLE_NAME} characters (its checkpoints table adds 12); open a longer existing one with migrate: false`);
  }
  const pageSize = assertSafeInt(o['pageSize'] === undefined ? 1000 : o['pageSize'], 'options.pageSize', 1, 100_000);
  const store = new PostgresAuditStore(crypto, client, table, pageSize);
  if (migrate) await store.migrate();
  else await store.size().catch((cause: unknown) => {
    if (sqlState((cause as AuditError).cause) === '42P01') throw new AuditError('not_found', `table ${table} does not exist`, { cause });
    throw cause;
  });
  return store;
}

/** The PostgreSQL backend; see {@link openPostgresStore}. */
export class PostgresAuditStore implements AuditStore {
  readonly kind = 'postgres';
  /** `appendMany` sends notifications in the same statement as the entries (sent iff they are stored). */
  readonly notifies = true;
  /** The (possibly schema-qualified) table. */
  readonly table: string;
  readonly #crypto: ParleyCrypto;
  readonly #client: SqlClient;
  readonly #pageSize: number;
  #closed = false;
  /** Whether this table's name leaves room for `<name>_checkpoints` (else: no checkpoints read or written). */
  readonly #checkpointed: boolean;

  /** @internal use {@link openPostgresStore} */
  constructor(crypto: ParleyCrypto, client: SqlClient, table: string, pageSize: number) {
    this.#crypto = crypto;
    this.#client = client;
    this.table = table;
    this.#pageSize = pageSize;
    this.#checkpointed = table.replace(/^.*\./, '').length <= MAX_CHECKPOINTED_TABLE_NAME;
  }

  /** Idempotent migration: table, append-only triggers (UPDATE/DELETE per row, TRUNCATE per statement). Safe to run from several processes at once. */
  async migrate(): Promise<void> {
    const t = this.table;
    const fn = `${t}_append_only`;
    const trigger = `${t.replace(/^.*\./, '')}_append_only`;
    const statements = [
      // The entry length CHECK is on tables created from now on only: an existing table is not altered (a migration
      // validating every row of a big append-only table is out of scope); readers bound the length themselves (#records).
      `CREATE TABLE IF NOT EXISTS ${t} (
         idx BIGINT PRIMARY KEY CHECK (idx >= 0),
         entry BYTEA NOT NULL CHECK (octet_length(entry) BETWEEN 1 AND ${MAX_ENTRY_BYTES}),
         entry_hash BYTEA NOT NULL CHECK (octet_length(entry_hash) = 32),
         recorded_at TIMESTAMPTZ NOT NULL DEFAULT now())`,
      `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'the Parley audit table is append-only'; END $$`,
      `DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '${trigger}' AND tgrelid = '${t}'::regclass) THEN
           CREATE TRIGGER ${trigger} BEFORE UPDATE OR DELETE ON ${t} FOR EACH ROW EXECUTE FUNCTION ${fn}();
         END IF;
       END $$`,
      // TRUNCATE fires no row triggers: a statement trigger of its own (also added to tables migrated before it existed).
      `DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '${trigger}_truncate' AND tgrelid = '${t}'::regclass) THEN
           CREATE TRIGGER ${trigger}_truncate BEFORE TRUNCATE ON ${t} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
         END IF;
       END $$`,
      // The writer's signed checkpoints (§9.6): what it adopts on open without reading the entries before them.
      // Append-only too (the same function; trigger names are per table).
      `CREATE TABLE IF NOT EXISTS ${t}_checkpoints (
         tree_size BIGINT PRIMARY KEY CHECK (tree_size > 0),
         first_entry_hash BYTEA NOT NULL,
         root_hash BYTEA NOT NULL,
         last_entry_hash BYTEA NOT NULL,
         timestamp_ms BIGINT NOT NULL,
         signer_key_id BYTEA NOT NULL,
         entry_signers BYTEA NOT NULL,
         peaks BYTEA NOT NULL,
         signature BYTEA NOT NULL,
         recorded_at TIMESTAMPTZ NOT NULL DEFAULT now())`,
      `DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'parley_append_only' AND tgrelid = '${t}_checkpoints'::regclass) THEN
           CREATE TRIGGER parley_append_only BEFORE UPDATE OR DELETE ON ${t}_checkpoints FOR EACH ROW EXECUTE FUNCTION ${fn}();
         END IF;
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'parley_append_only_truncate' AND tgrelid = '${t}_checkpoints'::regclass) THEN
           CREATE TRIGGER parley_append_only_truncate BEFORE TRUNCATE ON ${t}_checkpoints FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
         END IF;
       END $$`,
    ];
    for (const sql of statements) {
      for (let attempt = 0; ; attempt++) {
        try {
          await this.#client.query(sql);
          break;
        } catch (cause) {
          // Another process migrating at the same moment: the object now exists; run it again to be sure.
          if (attempt < 3 && MIGRATION_RACE.has(sqlState(cause) ?? '')) continue;
          throw storageFailure(`migrating ${t}`, cause);
        }
      }
    }
  }

  /** Number of entries: one past the highest index (the table is gapless unless tampered with). */
  async size(): Promise<number> {
    this.#check();
    const rows = await this.#query(`SELECT (COALESCE(MAX(idx), -1) + 1)::text AS n FROM ${this.table}`, [], 'reading the size');
    return toCount((rows[0] as { n?: unknown } | undefined)?.n, 'size');
  }

  /** Appends one entry in one conditional INSERT (see the module comment). */
  async append(entry: AuditMessage): Promise<void> {
    await this.appendMany([entry]);
  }

  /**
   * Appends consecutive, linked entries in ONE conditional INSERT: the guard of the module comment
   * applies to the first row, and the links between the rows are checked here first, so the statement
   * inserts all of them or none.
   */
  async appendMany(entries: readonly AuditMessage[], notifications: readonly AuditNotification[] = []): Promise<void> {
    this.#check();
    if (!Array.isArray(entries) || entries.length === 0 || entries.length > MAX_BATCH) malformed(`appendMany takes 1..${MAX_BATCH} entries`);
    if (!Array.isArray(notifications) || notifications.length > MAX_NOTIFICATIONS) malformed(`appendMany takes 0..${MAX_NOTIFICATIONS} notifications`);
    for (const n of notifications) assertNotification(n);
    const params: unknown[] = [];
    const rowsSql: string[] = [];
    let previous: { index: bigint; hash: Uint8Array } | undefined;
    for (const entry of entries) {
      assertEntry(entry);
      const hash = digestEntry(this.#crypto, entry).entryHash;
      if (previous !== undefined) {
        if (entry.index !== previous.index + 1n) malformed(`batch entry index ${entry.index} does not follow ${previous.index}`);
        if (!this.#crypto.constantTimeEqual(entry.previousHash, previous.hash)) {
          throw new AuditError('bad_link', `batch entry ${entry.index}'s previous_hash is not the entry hash of entry ${previous.index}`);
        }
      }
      const n = params.length;
      rowsSql.push(`($${n + 1}::bigint, $${n + 2}::bytea, $${n + 3}::bytea)`);
      params.push(entry.index.toString(), toBuffer(encodeEntry(entry)), toBuffer(hash));
      previous = { index: entry.index, hash };
    }
    const first = entries[0]!;
    const idx = first.index.toString();
    const i = params.length + 1;
    params.push(idx, toBuffer(first.previousHash));
    const insert = `INSERT INTO ${this.table} (idx, entry, entry_hash)
           SELECT v.idx, v.entry, v.entry_hash FROM (VALUES ${rowsSql.join(', ')}) AS v(idx, entry, entry_hash)
           WHERE NOT EXISTS (SELECT 1 FROM ${this.table} WHERE idx >= $${i}::bigint)
             AND ($${i}::bigint = 0 OR EXISTS (SELECT 1 FROM ${this.table} WHERE idx = $${i}::bigint - 1 AND entry_hash = $${i + 1}::bytea))
             AND ($${i}::bigint <> 0 OR $${i + 1}::bytea = decode(repeat('00', 32), 'hex'))
           RETURNING idx`;
    let sql = insert;
    if (notifications.length > 0) {
      // Sent only when the rows were inserted (the guard held) and the statement commits.
      sql = `WITH ins AS (${insert}),
                  n AS (SELECT pg_notify(c, p) FROM unnest($${i + 2}::text[], $${i + 3}::text[]) AS t(c, p) WHERE (SELECT count(*) FROM ins) > 0)
             SELECT idx, (SELECT count(*) FROM n) AS notified FROM ins`;
      params.push(notifications.map((n) => n.channel), notifications.map((n) => n.payload));
    }
    let rows: unknown[];
    try {
      rows = (await this.#client.query(sql, params)).rows;
    } catch (cause) {
      if (sqlState(cause) === '23505') throw new AuditError('conflict', `index ${idx} was taken by another writer`, { cause });
      throw storageFailure(`appending to ${this.table}`, cause);
    }
    if (rows.length === entries.length) return;
    if (rows.length !== 0) throw new AuditError('storage_failure', `appending to ${this.table} inserted ${rows.length} of ${entries.length} rows`);
    // Nothing inserted: find out which condition failed.
    const size = await this.size();
    if (BigInt(size) !== first.index) throw new AuditError('conflict', `entry index ${idx} is not the next index ${size}`);
    throw new AuditError('bad_link', `entry ${idx}'s previous_hash is not the entry hash of entry ${size - 1}`);
  }

  /** Stores a checkpoint (§9.6); one for the same tree size already stored is kept. */
  async saveCheckpoint(c: AuditCheckpoint): Promise<void> {
    this.#check();
    if (!this.#checkpointed) return;
    await this.#query(
      `INSERT INTO ${this.table}_checkpoints (tree_size, first_entry_hash, root_hash, last_entry_hash, timestamp_ms, signer_key_id, entry_signers, peaks, signature)
       VALUES ($1::bigint, $2, $3, $4, $5::bigint, $6, $7, $8, $9) ON CONFLICT (tree_size) DO NOTHING`,
      [
        String(c.treeSize),
        toBuffer(c.firstEntryHash),
        toBuffer(c.rootHash),
        toBuffer(c.lastEntryHash),
        String(c.timestampMs),
        toBuffer(c.signerKeyId),
        Buffer.concat(c.entrySigners.map(toBuffer)),
        Buffer.concat(c.peaks.map(toBuffer)),
        toBuffer(c.signature),
      ],
      'storing a checkpoint',
    );
  }

  /**
   * The stored checkpoints, largest tree size first, at most `limit` (unchecked: the writer checks them); none when
   * the checkpoint table does not exist (a table migrated before checkpoints, opened with `migrate: false`).
   */
  async checkpoints(limit: number, atMost: number = Number.MAX_SAFE_INTEGER): Promise<AuditCheckpoint[]> {
    this.#check();
    assertSafeInt(limit, 'limit', 1, 1000);
    assertSafeInt(atMost, 'atMost');
    if (!this.#checkpointed) return [];
    let rows: unknown[];
    try {
      rows = (
        await this.#client.query(
          `SELECT tree_size::text AS n, timestamp_ms::text AS t,
                  ${Object.entries(CHECKPOINT_COLUMN_BYTES)
                    .map(([column, max]) => bounded(column, max))
                    .join(',\n                  ')}
             FROM ${this.table}_checkpoints WHERE tree_size <= $2::bigint ORDER BY tree_size DESC LIMIT $1`,
          [limit, String(atMost)],
        )
      ).rows;
    } catch (cause) {
      // No table (migrated before checkpoints, opened with migrate: false), or one of another shape: none.
      if (sqlState(cause) === '42P01' || sqlState(cause) === '42703') return [];
      throw storageFailure(`reading checkpoints from ${this.table}`, cause);
    }
    return rows.map((row) => {
      const r = row as Record<string, unknown>;
      const bytes = (column: string): Uint8Array => boundedBytes(r, column, CHECKPOINT_COLUMN_BYTES[column]!, `a stored checkpoint's ${column}`);
      const split = (column: string, size: number): Uint8Array[] => {
        const all = bytes(column);
        if (all.length % size !== 0) throw new AuditError('storage_failure', `a stored checkpoint's ${column} is ${all.length} bytes, not a multiple of ${size}`);
        return Array.from({ length: all.length / size }, (_, i) => all.slice(i * size, (i + 1) * size));
      };
      return {
        treeSize: toCount(r['n'], 'tree_size'),
        firstEntryHash: bytes('first_entry_hash'),
        rootHash: bytes('root_hash'),
        lastEntryHash: bytes('last_entry_hash'),
        timestampMs: toCount(r['t'], 'timestamp_ms'),
        signerKeyId: bytes('signer_key_id'),
        entrySigners: split('entry_signers', KEY_ID_BYTES),
        peaks: split('peaks', HASH_BYTES),
        signature: bytes('signature'),
      };
    });
  }

  /** Sends notifications in one statement of their own (no entry: a group with none, `AuditLog.notify`). */
  async notify(notifications: readonly AuditNotification[]): Promise<void> {
    this.#check();
    if (!Array.isArray(notifications) || notifications.length === 0 || notifications.length > MAX_NOTIFICATIONS) malformed(`notify takes 1..${MAX_NOTIFICATIONS} notifications`);
    for (const n of notifications) assertNotification(n);
    try {
      await this.#client.query('SELECT count(pg_notify(c, p)) AS notified FROM unnest($1::text[], $2::text[]) AS t(c, p)', [
        notifications.map((n) => n.channel),
        notifications.map((n) => n.payload),
      ]);
    } catch (cause) {
      throw storageFailure(`notifying from ${this.table}`, cause);
    }
  }

  /** Protobuf bytes of entries [from, to), paged by index. */
  readEncoded(from: number, to: number): AsyncIterable<Uint8Array> {
    return this.#records(from, to);
  }

  /** Decoded entries [from, to). */
  read(from: number, to: number): AsyncIterable<AuditMessage> {
    return decodeStream(this.readEncoded(from, to), from);
  }

  /** Marks the store closed. The client is the caller's: end the pool yourself. */
  async close(): Promise<void> {
    this.#closed = true;
  }

  async *#records(from: number, to: number): AsyncIterable<Uint8Array> {
    this.#check();
    assertSafeInt(from, 'from');
    assertSafeInt(to, 'to');
    checkRange(from, to, await this.size());
    let next = from;
    while (next < to) {
      this.#check();
      const rows = await this.#query(
        // The alias must not be "idx": ORDER BY would then sort by the text.
        // An entry longer than MAX_ENTRY_BYTES (a table created before its CHECK, or altered) stays on the server.
        `SELECT idx::text AS position, ${bounded('entry', MAX_ENTRY_BYTES)} FROM ${this.table} WHERE idx >= $1::bigint AND idx < $2::bigint ORDER BY idx LIMIT $3`,
        [String(next), String(to), this.#pageSize],
        'reading entries',
      );
      if (rows.length === 0) return; // rows deleted behind the trigger's back: the verifier names the gap
      for (const row of rows) {
        const r = row as Record<string, unknown>;
        next = toCount(r['position'], 'idx') + 1;
        // The decoder's own error for an oversized entry (`malformed`), without the bytes.
        yield boundedBytes(r, 'entry', MAX_ENTRY_BYTES, `stored entry ${next - 1}`);
      }
    }
  }

  async #query(text: string, params: unknown[], what: string): Promise<unknown[]> {
    try {
      return (await this.#client.query(text, params)).rows;
    } catch (cause) {
      throw storageFailure(`${what} from ${this.table}`, cause);
    }
  }

  #check(): void {
    if (this.#closed) throw new AuditError('storage_failure', `audit table ${this.table} store is closed`);
  }
}
