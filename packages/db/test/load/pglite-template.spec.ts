// The template cluster that spares a fresh directory its initdb and the memory image that spares an
// in-memory database its initdb (src/pglite-files.ts), from an empty cache directory: each made by the
// first database of its kind (an initdb), used by later ones, and dropped (initdb again) when it does not
// open. Four initdb runs: the test-load target's, not the fast loop's; test/pglite-files.spec.ts covers
// the lock, copies, prepared templates, the image's use and pruning from a cache seeded with a copy of
// this machine's template and image.
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PGLITE_TEMPLATE_ENV, openDatabase } from '../../src/index.js';
import { usableMemoryImage, usableTemplate } from '../../src/pglite-files.js';

const dir = mkdtempSync(join(tmpdir(), 'parley-db-files-'));
const root = join(dir, 'cache');
const previous = process.env[PGLITE_TEMPLATE_ENV];
process.env[PGLITE_TEMPLATE_ENV] = root;
afterAll(() => {
  if (previous === undefined) delete process.env[PGLITE_TEMPLATE_ENV];
  else process.env[PGLITE_TEMPLATE_ENV] = previous;
  rmSync(dir, { recursive: true, force: true });
});

// Each initdb takes seconds on a loaded 2-core machine: generous per-test bounds; nothing here asserts a timing.
describe('template cluster', { timeout: 120_000 }, () => {
  it('makes the template on the first fresh directory, copies it into later ones, and refuses one others can write', async () => {
    const first = await openDatabase({ dataDir: join(dir, 'first') });
    await first.exec('CREATE TABLE mine (id int)');
    await first.close();
    const template = usableTemplate(root);
    expect(template).toBeDefined();
    // The template is the clean initdb cluster: nothing the first database did afterwards.
    writeFileSync(join(template!, 'marker'), 'from the template');
    const second = await openDatabase({ dataDir: join(dir, 'second') });
    try {
      expect(readFileSync(join(dir, 'second', 'marker'), 'utf8')).toBe('from the template');
      expect(await second.query("SELECT 1 FROM pg_tables WHERE tablename = 'mine'")).toEqual([]);
      await second.exec('CREATE TABLE t (id int)');
      await second.query('INSERT INTO t VALUES (1)');
    } finally {
      await second.close();
    }
    // Reopened: an ordinary existing cluster, data kept.
    const reopened = await openDatabase({ dataDir: join(dir, 'second') });
    try {
      expect(await reopened.query('SELECT id FROM t')).toEqual([{ id: 1 }]);
    } finally {
      await reopened.close();
    }
    // A cache directory others can write is not trusted.
    chmodSync(root, 0o777);
    expect(usableTemplate(root)).toBeUndefined();
    chmodSync(root, 0o700);
    chmodSync(template!, 0o775);
    expect(usableTemplate(root)).toBeUndefined();
    chmodSync(template!, 0o700);
    expect(usableTemplate(root)).toBe(template);
  });

  it('falls back to initdb when the template does not open, and drops it', async () => {
    const template = usableTemplate(root) ?? '';
    expect(template).not.toBe('');
    writeFileSync(join(template, 'global', 'pg_control'), 'not a control file');
    const db = await openDatabase({ dataDir: join(dir, 'fallback') });
    try {
      expect((await db.query<{ n: number }>('SELECT 1 AS n'))[0]!.n).toBe(1);
      expect(existsSync(join(dir, 'fallback', 'marker'))).toBe(false);
    } finally {
      await db.close();
    }
    expect(existsSync(template)).toBe(false);
    expect(readdirSync(root).filter((n) => n.startsWith('.making-'))).toEqual([]);
  });

  it('the first in-memory database makes the memory image, later ones load it; a broken one is dropped and initdb runs', async () => {
    expect(usableMemoryImage(root)).toBeUndefined();
    const first = await openDatabase();
    try {
      await first.exec('CREATE TABLE only_in_first (x int)');
    } finally {
      await first.close();
    }
    const image = usableMemoryImage(root);
    expect(image).toBeDefined();
    // The image is the clean cluster: nothing the first database did afterwards.
    const second = await openDatabase();
    try {
      expect(await second.query("SELECT 1 FROM pg_tables WHERE tablename = 'only_in_first'")).toEqual([]);
    } finally {
      await second.close();
    }
    writeFileSync(image!, 'not a tar');
    const third = await openDatabase();
    try {
      expect((await third.query<{ n: number }>('SELECT 1 AS n'))[0]!.n).toBe(1);
    } finally {
      await third.close();
    }
    // Dropped, and made again from the initdb that replaced it.
    expect(usableMemoryImage(root)).toBe(image);
    expect(statSync(image!).size).toBeGreaterThan(1_000_000);
    expect(readdirSync(root).filter((n) => n.startsWith('.making-'))).toEqual([]);
  });
});
