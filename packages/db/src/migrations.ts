/**
 * The one migration runner of Parley's servers (registry, gateway, shared-memory
 * store): versioned SQL, applied on start, the same SQL on PostgreSQL and PGlite.
 *
 * Each migration runs in its own transaction that first takes a
 * transaction-scoped advisory lock (`pg_advisory_xact_lock`, one key per
 * component), then reads the component's `<name>_migrations` table: so two
 * processes starting at once serialise, the second sees the first's committed
 * record and skips, and a migration is either applied and recorded or neither.
 * Running them again is a no-op. A database that records a version this build
 * does not know is refused: an older binary must not run against a newer schema.
 */
import { assertSchemaName, int, type Database, type Queryable } from './db.js';
import { DbError } from './errors.js';

/** One migration: a version (1, 2, …, gapless), a name, and its SQL. Never edit an applied one: add a new one. */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/** A component's schema: its migrations, the table recording them, the lock that serialises them. */
export interface MigrationSet {
  /** Who owns the schema, for messages: `registry`, `gateway`, `shared-memory store`. */
  readonly component: string;
  /** Table recording the applied versions (a plain identifier, e.g. `registry_migrations`). */
  readonly table: string;
  /** Advisory lock key (any fixed 64-bit value, one per component). */
  readonly lockKey: bigint;
  /** The migrations, in order, versions 1, 2, … without gaps. */
  readonly migrations: readonly Migration[];
}

/** What {@link migrate} did. */
export interface MigrationResult {
  /** Versions this call applied (empty when the schema was current). */
  readonly applied: number[];
  /** The schema version afterwards. */
  readonly version: number;
}

const TABLE_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Applies every migration of `set` not yet recorded, each in its own
 * transaction under the set's advisory lock. Safe to run twice and from several
 * processes at once.
 *
 * @param db the database (with its search_path schema, if any)
 * @param set the component's migrations, table and lock key
 * @param options `schema`: created first when set (PostgreSQL only; PGlite uses `public`)
 * @returns the versions applied and the resulting version
 * @throws DbError `failed_precondition` when the database records a newer version than this build knows;
 *   `malformed` on a bad schema or table name; `internal` on a gap in the recorded versions
 */
export async function migrate(db: Database, set: MigrationSet, options: { readonly schema?: string } = {}): Promise<MigrationResult> {
  // Both are interpolated into SQL below: plain identifiers only.
  const schema = options.schema === undefined ? undefined : assertSchemaName(options.schema);
  if (!TABLE_RE.test(set.table)) throw new DbError('malformed', `migration table name must be a plain identifier, got '${set.table}'`);
  const migrations = set.migrations;
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new DbError('internal', `${set.component} migration ${i + 1} has version ${m.version}: versions must be 1, 2, … without gaps`);
  });
  const known = migrations.length;
  const newer = (current: number): DbError =>
    new DbError('failed_precondition', `${set.component} schema is at version ${current}, newer than this build knows (${known}): upgrade the ${set.component}`);
  const prepare = async (tx: Queryable): Promise<number> => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [set.lockKey.toString()]);
    if (schema !== undefined) await tx.exec(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await tx.exec(`CREATE TABLE IF NOT EXISTS ${set.table} (version integer PRIMARY KEY, name text NOT NULL, applied_at_ms bigint NOT NULL)`);
    const rows = await tx.query<{ v: unknown }>(`SELECT COALESCE(MAX(version), 0) AS v FROM ${set.table}`);
    return int(rows[0]?.v ?? 0);
  };
  const applied: number[] = [];
  for (const migration of migrations) {
    await db.transaction(async (tx) => {
      const current = await prepare(tx);
      if (current > known) throw newer(current);
      if (current >= migration.version) return;
      if (current !== migration.version - 1) throw new DbError('internal', `${set.component} migration ${migration.version} cannot follow schema version ${current}`);
      await tx.exec(migration.sql);
      await tx.query(`INSERT INTO ${set.table} (version, name, applied_at_ms) VALUES ($1, $2, $3)`, [migration.version, migration.name, Date.now()]);
      applied.push(migration.version);
    });
  }
  // Also refuses a newer schema when every known migration was already applied.
  const version = await db.transaction(async (tx) => prepare(tx));
  if (version > known) throw newer(version);
  return { applied, version };
}
