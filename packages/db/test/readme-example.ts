import assert from 'node:assert/strict';
import { openDatabase, int, bytes } from '../src/index.js';

// PostgreSQL with DATABASE_URL (in a schema of its own), else PGlite in memory; or { dataDir } for PGlite on disk.
const url = process.env['DATABASE_URL'];
const schema = `parley_readme_${process.pid}`;
const db = await openDatabase(url ? { url, schema } : {});
await db.query('CREATE TABLE t (id BIGINT PRIMARY KEY, data BYTEA NOT NULL)');
await db.transaction(async (tx) => {
  await tx.query('INSERT INTO t (id, data) VALUES ($1, $2)', [1n, new Uint8Array([1, 2])]);
});
const [row] = await db.query<{ id: unknown; data: unknown }>('SELECT id, data FROM t');
assert.equal(int(row!.id), 1); // number (pg returns int8 as a string, PGlite as a number)
assert.deepEqual(bytes(row!.data), new Uint8Array([1, 2])); // Uint8Array (pg returns Buffer)
let notify!: () => void;
const notified = new Promise<void>((resolve) => (notify = resolve));
const stop = await db.listen('parley_readme', () => notify()); // NOTIFY from any process
await db.query('NOTIFY parley_readme');
await notified;
await stop();
if (url) await db.query(`DROP SCHEMA ${schema} CASCADE`);
await db.close();
