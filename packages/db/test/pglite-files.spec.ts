// The on-disk PGlite directory's lock, the template cluster that spares a
// fresh directory its initdb and the memory image that spares an in-memory
// database its initdb (src/pglite-files.ts), on real directories. The cache
// directory here is private to this file but seeded with a copy of this
// machine's template and memory image (made once if there are none), so no
// test runs an initdb: making them from an empty cache and the initdb
// fallbacks are test/load/pglite-template.spec.ts's (target test-load).
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PGLITE_LOCK_FILE, PGLITE_TEMPLATE_ENV, lockDirectory, openDatabase, pgliteTemplateRoot, type Database } from '../src/index.js';
import { PGlite } from '@electric-sql/pglite';
import { copyTemplate, pruneTemplates, saveMemoryImage, usableMemoryImage, usableTemplate } from '../src/pglite-files.js';

const dir = mkdtempSync(join(tmpdir(), 'parley-db-files-'));
const root = join(dir, 'cache');
const previous = process.env[PGLITE_TEMPLATE_ENV];
beforeAll(async () => {
  // This machine's template and memory image (the first fresh directory and the first in-memory database
  // ever opened here make them), copied into our cache.
  let machine = usableTemplate(pgliteTemplateRoot());
  if (machine === undefined) {
    await (await openDatabase({ dataDir: join(dir, 'seed') })).close();
    machine = usableTemplate(pgliteTemplateRoot());
  }
  let image = usableMemoryImage(pgliteTemplateRoot());
  if (image === undefined) {
    await (await openDatabase()).close();
    image = usableMemoryImage(pgliteTemplateRoot());
  }
  process.env[PGLITE_TEMPLATE_ENV] = root;
  mkdirSync(root, { mode: 0o700 });
  if (machine !== undefined) copyTemplate(machine, join(root, basename(machine)));
  if (image !== undefined) copyFileSync(image, join(root, basename(image)));
}, 120_000);
afterAll(() => {
  if (previous === undefined) delete process.env[PGLITE_TEMPLATE_ENV];
  else process.env[PGLITE_TEMPLATE_ENV] = previous;
  rmSync(dir, { recursive: true, force: true });
});

function deadPid(): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', '']);
    child.on('exit', () => resolve(child.pid!));
  });
}

// Each PGlite boot takes a second or more on a loaded 2-core machine: generous per-test bounds; nothing
// here asserts a timing.
describe('data directory lock', { timeout: 120_000 }, () => {
  it('refuses a second open while a live process holds it, and releases on close', async () => {
    const dataDir = join(dir, 'locked');
    const db = await openDatabase({ dataDir });
    try {
      expect(readFileSync(join(dataDir, PGLITE_LOCK_FILE), 'utf8')).toBe(`${process.pid}\n`);
      await expect(openDatabase({ dataDir })).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringContaining('already open in this process') });
    } finally {
      await db.close();
    }
    expect(existsSync(join(dataDir, PGLITE_LOCK_FILE))).toBe(false);
    // Another live process's lock: refused, naming the pid.
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    try {
      writeFileSync(join(dataDir, PGLITE_LOCK_FILE), `${sleeper.pid}\n`);
      await expect(openDatabase({ dataDir })).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringContaining(`in use by process ${sleeper.pid}`) });
    } finally {
      sleeper.kill('SIGKILL');
    }
    // A dead process's lock is stale: replaced.
    writeFileSync(join(dataDir, PGLITE_LOCK_FILE), `${await deadPid()}\n`);
    const again = await openDatabase({ dataDir });
    try {
      expect((await again.query<{ n: number }>('SELECT 1 AS n'))[0]!.n).toBe(1);
    } finally {
      await again.close();
    }
  });

  it('lockDirectory is exclusive within a process and idempotent to release', () => {
    const release = lockDirectory(join(dir, 'plain'), 'x.lock');
    expect(() => lockDirectory(join(dir, 'plain'), 'x.lock')).toThrow(/already open in this process/);
    release();
    release();
    lockDirectory(join(dir, 'plain'), 'x.lock')();
  });
});

/** Files and directories below `top` that any local user can write and reach (every directory on the way searchable by others). */
function worldWritableReachable(top: string): string[] {
  const found: string[] = [];
  const walk = (d: string): void => {
    if ((statSync(d).mode & 0o001) === 0) return; // others cannot pass through
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if ((lstatSync(path).mode & 0o002) !== 0) found.push(path);
      if (entry.isDirectory()) walk(path);
    }
  };
  walk(top);
  return found;
}

const mode = (path: string): number => statSync(path).mode & 0o777;

// PGlite's file system writes files 0666 and directories 0777 whatever the umask.
describe('modes', { timeout: 120_000 }, () => {
  it('makes a pre-created 0755 data directory 0700; the template\'s copies are 0600, their directories 0700', async () => {
    const dataDir = join(dir, 'by-hand');
    mkdirSync(dataDir);
    chmodSync(dataDir, 0o755); // `mkdir` under umask 022
    const db = await openDatabase({ dataDir });
    try {
      await db.exec('CREATE TABLE later (x int)'); // a file PGlite creates after the open
    } finally {
      await db.close();
    }
    expect(mode(dataDir)).toBe(0o700);
    expect(worldWritableReachable(dataDir)).toEqual([]);
    expect(mode(join(dataDir, 'postgresql.conf'))).toBe(0o600);
    expect(mode(join(dataDir, 'pg_hba.conf'))).toBe(0o600);
    expect(mode(join(dataDir, 'base'))).toBe(0o700);
    // The cache: 0700 once used, its template's files 0600 (a template made here) or behind 0700 directories.
    chmodSync(root, 0o755);
    await (await openDatabase({ dataDir: join(dir, 'by-hand-2') })).close();
    expect(mode(root)).toBe(0o700);
    expect(worldWritableReachable(root)).toEqual([]);
  });

  it('tightens an existing directory and the files already in it', async () => {
    const dataDir = join(dir, 'loose');
    await (await openDatabase({ dataDir })).close();
    chmodSync(dataDir, 0o777);
    chmodSync(join(dataDir, 'pg_hba.conf'), 0o666);
    const db = await openDatabase({ dataDir });
    await db.close();
    expect(mode(dataDir)).toBe(0o700);
    expect(mode(join(dataDir, 'pg_hba.conf'))).toBe(0o600);
  });

  it('never chmods files of a directory that is not a cluster (a data_dir pointed at `.` by mistake): only its top is made 0700', async () => {
    // Review finding: the whole tree was made 0600/0700 — a script lost its execute bit, a page its read access.
    const elsewhere = join(dir, 'not-a-cluster');
    mkdirSync(join(elsewhere, 'bin'), { recursive: true, mode: 0o755 });
    chmodSync(elsewhere, 0o755);
    writeFileSync(join(elsewhere, 'bin', 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(elsewhere, 'index.html'), '<p>', { mode: 0o644 });
    await (await openDatabase({ dataDir: elsewhere })).close();
    expect(mode(elsewhere)).toBe(0o700);
    expect(mode(join(elsewhere, 'bin', 'run.sh'))).toBe(0o755);
    expect(mode(join(elsewhere, 'index.html'))).toBe(0o644);
    expect(mode(join(elsewhere, 'bin'))).toBe(0o755);
  });

  it('refuses a data directory that is not a directory', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, '');
    await expect(openDatabase({ dataDir: file })).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringContaining('is not a directory') });
  });

  it.runIf(process.getuid?.() === 0)('refuses a data directory another user owns (run as root)', async () => {
    const dataDir = join(dir, 'theirs');
    mkdirSync(dataDir, { mode: 0o755 });
    chownSync(dataDir, 65534, 65534);
    await expect(openDatabase({ dataDir })).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringContaining('belongs to uid 65534') });
    expect(mode(dataDir)).toBe(0o755);
    expect(readdirSync(dataDir)).toEqual([]);
  });
});

describe('template cluster', { timeout: 120_000 }, () => {
  it('copies the template into fresh directories, and refuses one others can write', async () => {
    const first = await openDatabase({ dataDir: join(dir, 'first') });
    await first.exec('CREATE TABLE mine (id int)');
    await first.close();
    const template = usableTemplate(root);
    expect(template).toBeDefined();
    // The template is the clean cluster: nothing the first database did afterwards.
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

  it('a prepared template runs the app\'s preparation once; later fresh directories start with its result', async () => {
    let runs = 0;
    const prepared = {
      name: 'test-app-1',
      prepare: async (db: Database): Promise<void> => {
        runs++;
        await db.exec('CREATE TABLE app_t (x int)');
      },
    };
    for (const name of ['p1', 'p2']) {
      const db = await openDatabase({ dataDir: join(dir, name), prepared });
      try {
        expect(await db.query('SELECT x FROM app_t')).toEqual([]);
      } finally {
        await db.close();
      }
    }
    expect(runs).toBe(1);
    expect(usableTemplate(root, 'prepared-test-app-1')).toBeDefined();
    await expect(openDatabase({ dataDir: join(dir, 'p3'), prepared: { ...prepared, name: 'Bad Name' } })).rejects.toMatchObject({ code: 'malformed' });
  });

  it('keeps at most three prepared templates of one family, the newest', () => {
    const cache = mkdtempSync(join(dir, 'prune-'));
    const make = (name: string, ageS: number): void => {
      mkdirSync(join(cache, name));
      const t = new Date(Date.now() - ageS * 1000);
      utimesSync(join(cache, name), t, t);
    };
    make('cluster-k', 100);
    make('prepared-app-aaaa-k', 50);
    make('prepared-app-bbbb-k', 40);
    make('prepared-app-cccc-k', 30);
    make('prepared-app-dddd-k', 20);
    make('prepared-other-eeee-k', 500);
    make('prepared-app-memory-ffff-k', 600);
    pruneTemplates(cache, 'prepared-app-aaaa'); // the one just made stays, whatever its age
    expect(readdirSync(cache).sort()).toEqual(['cluster-k', 'prepared-app-aaaa-k', 'prepared-app-cccc-k', 'prepared-app-dddd-k', 'prepared-app-memory-ffff-k', 'prepared-other-eeee-k']);
  });

  it('an in-memory database starts from the memory image; an image others can write is not used', async () => {
    const image = usableMemoryImage(root);
    expect(image).toBeDefined();
    // An image whose cluster holds a table: a database loaded from it has that table.
    const pg = await PGlite.create({ loadDataDir: new Blob([readFileSync(image!)]) });
    try {
      await pg.exec('CREATE TABLE from_the_image (x int); INSERT INTO from_the_image VALUES (7)');
      expect(await saveMemoryImage(root, () => pg.dumpDataDir('none'))).toBe(image);
    } finally {
      await pg.close();
    }
    expect(readdirSync(root).filter((n) => n.startsWith('.making-'))).toEqual([]);
    const db = await openDatabase();
    try {
      expect(await db.query('SELECT x FROM from_the_image')).toEqual([{ x: 7 }]);
    } finally {
      await db.close();
    }
    chmodSync(image!, 0o664);
    expect(usableMemoryImage(root)).toBeUndefined();
    chmodSync(image!, 0o600);
    chmodSync(root, 0o777);
    expect(usableMemoryImage(root)).toBeUndefined();
    chmodSync(root, 0o700);
    expect(usableMemoryImage(root)).toBe(image);
  });

  it('is off with PARLEY_PGLITE_TEMPLATE_DIR=off, else under XDG_CACHE_HOME or ~/.cache', () => {
    expect(pgliteTemplateRoot({ [PGLITE_TEMPLATE_ENV]: 'off' })).toBeUndefined();
    expect(pgliteTemplateRoot({ [PGLITE_TEMPLATE_ENV]: '/x/y' })).toBe('/x/y');
    expect(pgliteTemplateRoot({ XDG_CACHE_HOME: '/c' })).toBe('/c/parley/pglite');
    expect(pgliteTemplateRoot({})).toMatch(/\.cache\/parley\/pglite$/);
  });
});
