// One suite over both engines: PGlite (in memory and on disk) always, and the
// real PostgreSQL server when DATABASE_URL is set (CI always sets it; under
// CI=true a missing DATABASE_URL fails instead of skipping).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bytes, int, intOrNull, openDatabase, redactUrl, type Database } from '../src/index.js';

const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
if (DATABASE_URL === undefined && process.env['CI'] === 'true') throw new Error('DATABASE_URL is required under CI=true');

const dir = mkdtempSync(join(tmpdir(), 'parley-db-'));
const schemas: string[] = [];
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  if (DATABASE_URL === undefined || schemas.length === 0) return;
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await client.end();
  }
});

const engines: [string, () => Promise<Database>][] = [
  ['PGlite in memory', () => openDatabase()],
  ['PGlite on disk', () => openDatabase({ dataDir: join(dir, `pgdata-${String(Math.random()).slice(2)}`) })],
];
if (DATABASE_URL !== undefined) {
  engines.push([
    'PostgreSQL',
    () => {
      const schema = `parley_db_test_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
      schemas.push(schema);
      return openDatabase({ url: DATABASE_URL, schema, maxConnections: 4 });
    },
  ]);
}

// One database per engine for the whole file (a PGlite boot costs seconds of WebAssembly): each test
// works in tables of its own, so none depends on another's leftovers.
describe.each(engines)('%s', (_name, open) => {
  let db: Database;
  beforeAll(async () => {
    db = await open();
  });
  afterAll(async () => {
    await db?.close();
  });

  it('runs the same SQL, and int/bytes decode both engines\' values alike', async () => {
    await db.exec('CREATE TABLE sql_t (id BIGINT PRIMARY KEY, data BYTEA NOT NULL, maybe BIGINT)');
    await db.query('INSERT INTO sql_t VALUES ($1, $2, NULL)', [9007199254740991n, new Uint8Array([1, 2, 3])]);
    const [row] = await db.query<{ id: unknown; data: unknown; maybe: unknown }>('SELECT * FROM sql_t');
    expect(int(row!.id)).toBe(Number.MAX_SAFE_INTEGER);
    expect(bytes(row!.data)).toEqual(new Uint8Array([1, 2, 3]));
    expect(Object.getPrototypeOf(bytes(row!.data))).toBe(Uint8Array.prototype);
    expect(intOrNull(row!.maybe)).toBeNull();
    expect((await db.sqlClient.query('SELECT count(*)::int AS n FROM sql_t')).rows).toEqual([{ n: 1 }]);
  });

  it('commits a transaction that resolves and rolls back one that throws', async () => {
    await db.exec('CREATE TABLE tx_t (v INT)');
    await db.transaction(async (tx) => {
      await tx.query('INSERT INTO tx_t VALUES (1)');
    });
    await expect(
      db.transaction(async (tx) => {
        await tx.query('INSERT INTO tx_t VALUES (2)');
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    expect((await db.query<{ v: number }>('SELECT v FROM tx_t')).map((r) => r.v)).toEqual([1]);
  });

  it('delivers NOTIFY to a listener until it unsubscribes', async () => {
    let heard = 0;
    const stop = await db.listen('parley_db_test', () => (heard += 1));
    await db.exec("NOTIFY parley_db_test, 'x'");
    const deadline = Date.now() + 5000;
    while (heard === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(heard).toBe(1);
    await stop();
  });

  describe('probes and figures', () => {
    it('ping answers; observe times statements, transactions and sqlClient; stats counts them', async () => {
      await db.ping();
      const events: { kind: string; ok: boolean; seconds: number }[] = [];
      const stop = db.observe((e) => events.push(e));
      await db.query('SELECT 1');
      await db.exec('CREATE TABLE IF NOT EXISTS probe_t (x int)');
      await db.transaction(async (tx) => {
        await tx.query('INSERT INTO probe_t VALUES (1)');
        await tx.query('INSERT INTO probe_t VALUES (2)');
      });
      await db.sqlClient.query('SELECT count(*) FROM probe_t');
      await expect(db.query('SELECT * FROM no_such_table')).rejects.toBeDefined();
      stop();
      await db.query('SELECT 1');
      expect(events.map((e) => [e.kind, e.ok])).toEqual([
        ['query', true],
        ['exec', true],
        ['transaction', true],
        ['query', true],
        ['query', false],
      ]);
      for (const e of events) expect(e.seconds).toBeGreaterThanOrEqual(0);
      const stats = db.stats();
      expect(stats.failures).toBeGreaterThanOrEqual(1);
      expect(stats.queries).toBeGreaterThanOrEqual(6);
      if (db.engine === 'postgres') expect(stats.pool).toMatchObject({ total: expect.any(Number), idle: expect.any(Number), waiting: 0, max: 4 });
      else expect(stats.pool).toBeUndefined();
    });
  });
});

describe.skipIf(DATABASE_URL === undefined)('PostgreSQL: ping while the database refuses connections', () => {
  it('rejects with unavailable while connections are refused, and answers again once they are allowed', async () => {
    const admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
    const name = `parley_db_ping_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(DATABASE_URL!);
    url.pathname = `/${name}`;
    const db = await openDatabase({ url: url.toString(), maxConnections: 2 });
    try {
      await db.ping();
      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name]);
      await expect(db.ping(3_000)).rejects.toMatchObject({ code: 'unavailable' });
      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
      await db.ping();
    } finally {
      await db.close().catch(() => undefined);
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  });
});

describe('failures', () => {
  it('refuses a schema name that is not a plain identifier (it is interpolated into SQL)', async () => {
    await expect(openDatabase({ url: 'postgres://postgres@127.0.0.1:1/x', schema: 'x; DROP TABLE y' })).rejects.toMatchObject({ code: 'malformed' });
  });

  it('reports an unreachable server once, as unavailable, without the password', async () => {
    const error = await openDatabase({ url: 'postgres://postgres:hunter2@127.0.0.1:1/x' }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'unavailable' });
    expect(String((error as Error).message)).not.toContain('hunter2');
  });

  it('redacts passwords and query parameters from URLs it logs', () => {
    expect(redactUrl('postgres://u:secret@db:5432/x?sslpassword=p')).toBe('postgres://u@db:5432/x');
    expect(redactUrl('not a url')).toBe('postgres://<unparsable url>');
  });

  it('decoders refuse what a column of that type cannot hold', () => {
    expect(() => int('1.5')).toThrow(expect.objectContaining({ code: 'internal' }) as Error);
    expect(() => bytes('abc')).toThrow(expect.objectContaining({ code: 'internal' }) as Error);
  });
});
