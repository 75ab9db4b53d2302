// The one migration runner (registry, gateway, shared-memory store): applies each version once, in order,
// under the component's advisory lock; again is a no-op; concurrent runs apply each version once; a newer
// schema is refused (also when nothing is left to apply); bad names and gapped lists are refused before any SQL.
// PGlite in memory always; PostgreSQL (a fresh schema) when DATABASE_URL is set.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDbError, migrate, openDatabase, type Database, type MigrationSet } from '../src/index.js';

const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const schemas: string[] = [];
afterAll(async () => {
  if (DATABASE_URL === undefined || schemas.length === 0) return;
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await client.end();
  }
});

/** A component's migrations in tables of its own (`<prefix>_migrations`, `<prefix>_t1`, `<prefix>_t2`): each test uses its own prefix on the file's one database. */
function setOf(prefix: string): MigrationSet {
  return {
    component: 'test component',
    table: `${prefix}_migrations`,
    lockKey: 0x7061726c65797473n,
    migrations: [
      { version: 1, name: 'one', sql: `CREATE TABLE ${prefix}_t1 (x int)` },
      { version: 2, name: 'two', sql: `CREATE TABLE ${prefix}_t2 (y int)` },
    ],
  };
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (isDbError(error)) return error.code;
    throw error;
  }
  throw new Error('expected a failure');
}

const engines: [string, () => Promise<{ db: Database; schema?: string }>][] = [['PGlite in memory', async () => ({ db: await openDatabase() })]];
if (DATABASE_URL !== undefined) {
  engines.push([
    'PostgreSQL',
    async () => {
      const schema = `parley_migrate_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
      schemas.push(schema);
      return { db: await openDatabase({ url: DATABASE_URL, schema, maxConnections: 4 }), schema };
    },
  ]);
}

// One database per engine for the whole file (a PGlite boot costs seconds of WebAssembly).
describe.each(engines)('migrate on %s', (_name, open) => {
  let db: Database;
  let options: { schema?: string } = {};
  beforeAll(async () => {
    const opened = await open();
    db = opened.db;
    options = opened.schema === undefined ? {} : { schema: opened.schema };
  });
  afterAll(async () => {
    await db?.close();
  });

  it('applies in order once, records each version, and a second run is a no-op', async () => {
    const SET = setOf('applies');
    const runs = await Promise.all([migrate(db, SET, options), migrate(db, SET, options)]);
    expect(runs.map((r) => r.version)).toEqual([2, 2]);
    expect([...runs[0]!.applied, ...runs[1]!.applied].sort()).toEqual([1, 2]);
    expect(await migrate(db, SET, options)).toEqual({ applied: [], version: 2 });
    const rows = await db.query<{ version: number; name: string }>('SELECT version, name FROM applies_migrations ORDER BY version');
    expect(rows.map((r) => [Number(r.version), r.name])).toEqual([
      [1, 'one'],
      [2, 'two'],
    ]);
    await db.query('INSERT INTO applies_t2 (y) VALUES (1)');
  });

  it('refuses a newer schema, naming the component; refuses bad names and gapped lists before any SQL', async () => {
    const SET = setOf('refuses');
    await migrate(db, SET, options);
    const older = { ...SET, migrations: SET.migrations.slice(0, 1) };
    const refused = await migrate(db, older, options).catch((e: unknown) => e);
    expect(isDbError(refused, 'failed_precondition')).toBe(true);
    expect((refused as Error).message).toContain('test component schema is at version 2, newer than this build knows (1)');
    expect(await codeOf(migrate(db, { ...SET, table: 'x; DROP TABLE refuses_t1' }))).toBe('malformed');
    expect(await codeOf(migrate(db, SET, { schema: 'Upper' }))).toBe('malformed');
    expect(await codeOf(migrate(db, { ...SET, migrations: [SET.migrations[1]!] }))).toBe('internal');
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM refuses_t1'))[0]!.n).toBe(0);
  });
});
