// PostgreSQL-store behaviour shared by the PGlite and real-PostgreSQL runs.
import { describe, expect, it } from 'vitest';
import { openPostgresStore, verifyChain, type SqlClient } from '../src/index.js';
import { buildChain, crypto, writerA } from './fixtures.js';

/** Registers the PostgreSQL-specific tests; `make` gives a client and a fresh table name. */
export function postgresSpecifics(name: string, make: () => { client: SqlClient; table: string }): void {
  describe(`PostgreSQL store specifics: ${name}`, () => {
    it('migration is idempotent; migrate: false needs an existing table', async () => {
      const { client, table } = make();
      await expect(openPostgresStore(crypto, client, { table, migrate: false })).rejects.toMatchObject({ code: 'not_found' });
      const a = await openPostgresStore(crypto, client, { table });
      await a.migrate();
      const b = await openPostgresStore(crypto, client, { table, migrate: false });
      expect(await b.size()).toBe(0);
    });

    it('the table is append-only: UPDATE and DELETE are refused by the trigger', async () => {
      const { client, table } = make();
      const store = await openPostgresStore(crypto, client, { table });
      for (const e of buildChain(3)) await store.append(e);
      await expect(client.query(`UPDATE ${table} SET entry = entry WHERE idx = 1`)).rejects.toThrow(/append-only/);
      await expect(client.query(`DELETE FROM ${table} WHERE idx = 1`)).rejects.toThrow(/append-only/);
      expect(await store.size()).toBe(3);
    });

    it('the table is append-only: TRUNCATE is refused by the trigger, also on a table migrated before that trigger', async () => {
      const { client, table } = make();
      const store = await openPostgresStore(crypto, client, { table });
      for (const e of buildChain(3)) await store.append(e);
      await expect(client.query(`TRUNCATE ${table}`)).rejects.toThrow(/append-only/);
      expect(await store.size()).toBe(3);
      // A table created by an earlier version (row trigger only) gets the TRUNCATE trigger on the next migration.
      await client.query(`DROP TRIGGER ${table.replace(/^.*\./, '')}_append_only_truncate ON ${table}`);
      await store.migrate();
      await expect(client.query(`TRUNCATE ${table}`)).rejects.toThrow(/append-only/);
      expect(await store.size()).toBe(3);
    });

    it('tampering behind the trigger is caught by the verifier: modified, reordered, removed', async () => {
      const { client, table } = make();
      const store = await openPostgresStore(crypto, client, { table });
      const chain = buildChain(12);
      for (const e of chain) await store.append(e);
      await client.query(`ALTER TABLE ${table} DISABLE TRIGGER USER`);
      const verify = async () => verifyChain(crypto, store.read(0, await store.size()), { keys: writerA.publicKey });

      // Flip one byte inside entry 4's protobuf (the last byte is inside its signature).
      await client.query(`UPDATE ${table} SET entry = set_byte(entry, length(entry) - 1, get_byte(entry, length(entry) - 1) # 1) WHERE idx = 4`);
      expect(await verify()).toMatchObject({ ok: false, index: 4, reason: 'modified' });

      await client.query(`UPDATE ${table} SET entry = $1 WHERE idx = 4`, [Buffer.from((await import('../src/index.js')).encodeEntry(chain[4]!))]);
      expect((await verify()).ok).toBe(true);

      // Swap the bytes of rows 7 and 8.
      await client.query(
        `UPDATE ${table} t SET entry = s.entry FROM (SELECT idx, entry FROM ${table} WHERE idx IN (7, 8)) s WHERE t.idx IN (7, 8) AND s.idx = 15 - t.idx`,
      );
      expect(await verify()).toMatchObject({ ok: false, index: 7, reason: 'reordered' });
      await client.query(
        `UPDATE ${table} t SET entry = s.entry FROM (SELECT idx, entry FROM ${table} WHERE idx IN (7, 8)) s WHERE t.idx IN (7, 8) AND s.idx = 15 - t.idx`,
      );

      await client.query(`DELETE FROM ${table} WHERE idx = 2`);
      expect(await verify()).toMatchObject({ ok: false, index: 2, reason: 'removed' });
      // The hole cannot be filled in: an append must extend the highest index.
      await expect(store.append(chain[2]!)).rejects.toMatchObject({ code: 'conflict' });
    });
  });
}
