// The shared store suite on PGlite (in-memory PostgreSQL), plus the
// PostgreSQL store's own behaviour: migration, the append-only trigger, and
// tampering done behind the trigger's back.
import { PGlite } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPostgresStore, verifyChain, type AuditStore } from '../src/index.js';
import { buildChain, crypto, writerA, WRONG } from './fixtures.js';
import { postgresSpecifics } from './postgres-specifics.js';
import { storeSuite } from './store-suite.js';

let db: PGlite;
let n = 0;
beforeAll(async () => {
  db = new PGlite();
  await db.waitReady;
});
afterAll(async () => {
  await db.close();
});

storeSuite('PGlite', () => {
  const table = `audit_${n++}`;
  return {
    open: () => openPostgresStore(crypto, db, { table, pageSize: 7 }),
    reopen: async (store: AuditStore) => {
      await store.close();
      return openPostgresStore(crypto, db, { table, pageSize: 7 });
    },
  };
});

postgresSpecifics('PGlite', () => ({ client: db, table: `specific_${n++}` }));

describe('openPostgresStore validation', () => {
  it('rejects bad clients and options with malformed', async () => {
    for (const bad of WRONG) {
      await expect(openPostgresStore(crypto, bad as never)).rejects.toMatchObject({ code: 'malformed' });
      if (bad !== undefined) {
        if (typeof bad !== 'string') await expect(openPostgresStore(crypto, db, { table: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
        await expect(openPostgresStore(crypto, db, { migrate: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
        await expect(openPostgresStore(crypto, db, { pageSize: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      }
    }
    for (const table of ['Audit', 'a;drop table x', '1abc', 'a.b.c', '"quoted"', '']) {
      await expect(openPostgresStore(crypto, db, { table })).rejects.toMatchObject({ code: 'malformed' });
    }
  });

  it('a failing client surfaces as storage_failure with the cause kept', async () => {
    const broken = { query: async () => Promise.reject(Object.assign(new Error('connection reset'), { code: 'ECONNRESET' })) };
    const error = await openPostgresStore(crypto, broken).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'storage_failure', cause: { code: 'ECONNRESET' } });
  });

  it('pages through long logs', async () => {
    const store = await openPostgresStore(crypto, db, { table: `paged_${n++}`, pageSize: 3 });
    for (const e of buildChain(10)) await store.append(e);
    expect((await verifyChain(crypto, store.read(0, 10), { keys: writerA.publicKey })).ok).toBe(true);
  });
});
