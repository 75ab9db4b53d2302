/**
 * PostgreSQL for the storage suites: the URL the environment gives
 * (`DATABASE_URL`; .ci/run sets it), fresh schemas, and dropping them.
 */
import pg from 'pg';

/** PostgreSQL URL for the storage suites, when the environment gives one. */
export const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];

/** In CI a missing PostgreSQL is a failure, never a silent skip. */
export const REQUIRE_POSTGRES = process.env['CI'] === 'true' || process.env['CI'] === '1';

/** The backends a storage suite runs on: PGlite always, PostgreSQL when DATABASE_URL is set. */
export const BACKENDS: readonly ('pglite' | 'postgres')[] = DATABASE_URL === undefined ? ['pglite'] : ['pglite', 'postgres'];

/** A fresh schema name for one test's PostgreSQL run (lower case, [a-z0-9_]). */
export function freshSchema(tag: string): string {
  return `t_${tag}_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
}

/** Drops test schemas (and everything in them); nothing without DATABASE_URL. */
export async function dropSchema(...schemas: string[]): Promise<void> {
  if (DATABASE_URL === undefined || schemas.length === 0) return;
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}
