/**
 * @parley/memory-server — the shared-memory store (docs/PROTOCOL.md §18):
 * parley.v1.MemoryService over PostgreSQL / PGlite. It enforces the signed
 * membership log (default deny), quotas and expiry, audits every call, and
 * never holds a key. Mounted by the gateway (apps/gateway/src/server.ts).
 */
export { MemoryStore } from './service.js';
export type { MemoryServiceOptions } from './service.js';
export { DEFAULT_MEMORY_QUOTAS } from './settings.js';
export type { MemoryQuotas, MemoryLogger } from './settings.js';
export { MEMORY_MIGRATIONS, migrateMemorySchema } from './schema.js';
