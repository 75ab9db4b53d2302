/**
 * @parley/db — the database layer shared by Parley's servers (registry,
 * gateway): PostgreSQL through `pg`, or PGlite (PostgreSQL in WebAssembly) on
 * disk or in memory, behind one small interface, with the value decoders that
 * hide the engines' differences, and the one migration runner of the servers.
 */
export {
  openDatabase,
  assertSchemaName,
  int,
  intOrNull,
  bytes,
  redactUrl,
  LOCK_TIMEOUT_MS,
  IDLE_IN_TRANSACTION_TIMEOUT_MS,
  DEFAULT_PING_TIMEOUT_MS,
} from './db.js';
export type { Database, DatabaseOptions, DatabaseStats, PreparedTemplate, Queryable, QueryEvent, QueryListener } from './db.js';
export { migrate } from './migrations.js';
export type { Migration, MigrationSet, MigrationResult } from './migrations.js';
export { DbError, isDbError, DB_ERROR_CODES } from './errors.js';
export type { DbErrorCode } from './errors.js';
export { lockDirectory, pgliteTemplateRoot, PGLITE_LOCK_FILE, PGLITE_TEMPLATE_ENV } from './pglite-files.js';
