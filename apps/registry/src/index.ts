/**
 * @parley/registry — the identity and revocation registry (DESIGN.md
 * "Registry"; docs/PROTOCOL.md §15): gRPC server, storage on PostgreSQL or
 * PGlite, and the operator CLI (`parley-registry`, src/cli.ts).
 */
export { RegistryServer, MAX_REQUEST_BYTES, MAX_PAGE_SIZE, MAX_LIST_ENTRIES } from './server.js';
export type { RegistryServerOptions, TlsFiles } from './server.js';
export { RegistryStore, REVOCATION_CHANNEL } from './store.js';
export type { AgentRow, RevocationRow, OperatorRow, IssuerRow } from './store.js';
export { openDatabase } from '@parley/db';
export type { Database, DatabaseOptions, Queryable } from '@parley/db';
export { applyMigrations, MIGRATIONS, MIGRATION_LOCK_KEY } from './migrations.js';
export type { Migration, MigrationResult } from './migrations.js';
export { openRegistry, lockDataDir } from './registry.js';
export type { OpenRegistry, RegistryLocation } from './registry.js';
export { readSettings, settingsJson, DEFAULT_SETTINGS, DATA_FILES } from './config.js';
export type { RegistrySettings } from './config.js';
export { readKeyFile, writeKeyFile, readPublicKey } from './key-file.js';
export type { KeyFileType, LoadedKey } from './key-file.js';
export { main, EXIT_CODES } from './cli.js';
export { REVOKE_UNKNOWN_METADATA_KEY } from './wire.js';
export { certificateBundle, normalisePem, pemFileText } from './pem.js';
