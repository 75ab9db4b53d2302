// `init` records the database it created the registry in (registry.json: database_engine, database_schema),
// and `serve` refuses another one before opening or creating anything — an operator review found a
// forgotten DATABASE_URL answered with "holds no registry: run init first" and a new 39 MB pgdata left
// behind. A registry.json written before the record keeps today's behaviour, minus the leftover pgdata.
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DATABASE_URL, dropSchema, freshSchema, tempDir } from '@parley/test-support';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EXIT_CODES, main } from '../src/cli.js';

const dir = tempDir('registry-database-record');
const saved = process.env['DATABASE_URL'];
const savedSchema = process.env['PARLEY_REGISTRY_DB_SCHEMA'];
beforeAll(() => {
  // The commands below choose their database by option only.
  delete process.env['DATABASE_URL'];
  delete process.env['PARLEY_REGISTRY_DB_SCHEMA'];
});
afterAll(() => {
  if (saved !== undefined) process.env['DATABASE_URL'] = saved;
  if (savedSchema !== undefined) process.env['PARLEY_REGISTRY_DB_SCHEMA'] = savedSchema;
  dir.remove();
});

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (err.push(String(chunk)), true));
  try {
    const code = await main(argv, (t) => out.push(t));
    return { code, out: out.join('\n'), err: err.join('') };
  } finally {
    spy.mockRestore();
  }
}

const settingsOf = (dataDir: string): Record<string, unknown> => JSON.parse(readFileSync(join(dataDir, 'registry.json'), 'utf8')) as Record<string, unknown>;

describe('the database recorded by init', () => {
  const pglite = join(dir.path, 'pglite');

  it('init records PGlite; serve with a PostgreSQL URL is refused before connecting', async () => {
    const init = await run(['init', '--data-dir', pglite, '--json']);
    expect(init.code, init.err).toBe(0);
    expect(settingsOf(pglite)).toMatchObject({ database_engine: 'pglite' });
    expect(settingsOf(pglite)).not.toHaveProperty('database_schema');
    const serve = await run(['serve', '--data-dir', pglite, '--database-url', 'postgres://postgres@127.0.0.1:1/nowhere']);
    expect(serve.code).toBe(EXIT_CODES.failedPrecondition);
    expect(serve.err).toMatch(/^parley-registry: error: this data directory \(.*\) was initialised for PGlite \(.*pgdata\), not PostgreSQL: unset DATABASE_URL/);
    const again = await run(['init', '--data-dir', pglite]);
    expect(again.err).toMatch(/already initialised for PGlite/);
  });

  it('a directory initialised for PostgreSQL: serve without DATABASE_URL, or with another schema, names the mismatch and creates nothing', async () => {
    const pg = join(dir.path, 'pg');
    mkdirSync(pg);
    copyFileSync(join(pglite, 'issuer-key.json'), join(pg, 'issuer-key.json'));
    writeFileSync(join(pg, 'registry.json'), JSON.stringify({ ...settingsOf(pglite), database_engine: 'postgresql', database_schema: 'reg_a' }));
    const noUrl = await run(['serve', '--data-dir', pg]);
    expect(noUrl.code).toBe(EXIT_CODES.failedPrecondition);
    expect(noUrl.err).toMatch(/initialised for PostgreSQL \(schema reg_a\): set DATABASE_URL .* PARLEY_REGISTRY_DB_SCHEMA=reg_a/);
    const otherSchema = await run(['serve', '--data-dir', pg, '--database-url', 'postgres://postgres@127.0.0.1:1/nowhere', '--database-schema', 'reg_b']);
    expect(otherSchema.code).toBe(EXIT_CODES.failedPrecondition);
    expect(otherSchema.err).toMatch(/initialised for PostgreSQL \(schema reg_a\), not schema reg_b: set PARLEY_REGISTRY_DB_SCHEMA=reg_a/);
    expect(existsSync(join(pg, 'pgdata'))).toBe(false);
    expect(existsSync(join(pg, 'registry.lock'))).toBe(false);
  });

  it('an older registry.json (no record), no DATABASE_URL and no pgdata: refused as before, with a hint, and no pgdata left behind', async () => {
    const old = join(dir.path, 'old');
    mkdirSync(old);
    copyFileSync(join(pglite, 'issuer-key.json'), join(old, 'issuer-key.json'));
    const { database_engine: _engine, ...settings } = settingsOf(pglite);
    writeFileSync(join(old, 'registry.json'), JSON.stringify(settings));
    const serve = await run(['serve', '--data-dir', old, '--listen', '127.0.0.1:0']);
    expect(serve.code).toBe(EXIT_CODES.failedPrecondition);
    expect(serve.err).toMatch(/has no PGlite database .*if it was initialised for PostgreSQL, set DATABASE_URL/);
    expect(existsSync(join(old, 'pgdata'))).toBe(false);
  });

  it.skipIf(DATABASE_URL === undefined)('init on PostgreSQL records the engine and schema (PostgreSQL from DATABASE_URL)', async () => {
    const schema = freshSchema('dbrecord');
    const pg = join(dir.path, 'pg-real');
    try {
      const init = await run(['init', '--data-dir', pg, '--database-url', DATABASE_URL!, '--database-schema', schema]);
      expect(init.code, init.err).toBe(0);
      expect(settingsOf(pg)).toMatchObject({ database_engine: 'postgresql', database_schema: schema });
      const serve = await run(['serve', '--data-dir', pg]);
      expect(serve.err).toContain(`was initialised for PostgreSQL (schema ${schema}): set DATABASE_URL`);
      expect(existsSync(join(pg, 'pgdata'))).toBe(false);
    } finally {
      await dropSchema(schema);
    }
  });
});
