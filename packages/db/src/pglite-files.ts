/**
 * What an on-disk PGlite data directory needs around PGlite itself:
 *
 * - **A lock.** PGlite is single-process and writes `postmaster.pid` but never
 *   checks it: a second process opening the same directory corrupts it. Every
 *   on-disk open takes `<dataDir>/parley.lock` (O_EXCL, with the pid), released
 *   on close and on process exit; a lock left by a process that no longer
 *   exists (SIGKILL, power loss) is replaced.
 * - **A template for fresh directories.** A fresh directory costs an initdb
 *   (PostgreSQL's bootstrap, run in WebAssembly): 5–15 s of CPU, most of a
 *   first `registry init` and of a gateway's first start. Every cluster initdb
 *   makes is the same apart from its system identifier (which nothing in
 *   PGlite uses), so the first one made on a machine is kept in a cache
 *   directory and later fresh directories start as a file copy of it, which
 *   PGlite then opens as an existing database. The template is made by the
 *   installed PGlite (its version and wasm sizes name it), only ever from a
 *   clean initdb, published by an atomic rename, and used only when the cache
 *   directory and the template belong to this user and nobody else can write
 *   them (the database starts as its files). Any failure falls back to initdb.
 * - **Prepared templates.** An app may name a second template: the clean
 *   cluster with its migrations applied (`DatabaseOptions.prepared`), named
 *   after a hash of those migrations, so a fresh directory also skips them.
 * - **A memory image.** An in-memory PGlite has no directory to copy into, but
 *   PGlite loads a cluster from a tar of its data directory (`loadDataDir`,
 *   the format its `dumpDataDir` writes). The first in-memory database made on
 *   a machine dumps its clean cluster into the same cache (`memory-<build>.tar`,
 *   published by an atomic rename), and later ones load it instead of running
 *   initdb: 0.5–0.9 s instead of 2–5 s on a 2-core machine. Used under the same
 *   conditions as a template (ours, nobody else can write it or the cache);
 *   any failure falls back to initdb.
 * - **Modes.** PGlite's file system writes every file 0666 and every
 *   directory 0777 whatever the umask, so the permissions of a cluster are
 *   ours to set: a data directory is made 0700 whenever a database is opened
 *   or created in it (refused when it cannot be: not ours), which also covers
 *   the files PGlite creates later; a fresh cluster's files (a template copy, an
 *   initdb) and a template's are made 0600, their directories 0700; the cache
 *   directory is made 0700 when used.
 */
import { chmodSync, closeSync, constants, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { DbError } from './errors.js';

/** The lock file inside an on-disk PGlite data directory. */
export const PGLITE_LOCK_FILE = 'parley.lock';

/**
 * Environment variable naming the directory PGlite templates are cached in;
 * `off` (or `0`) disables the template (every fresh directory runs initdb).
 * Default: `$XDG_CACHE_HOME/parley/pglite`, else `~/.cache/parley/pglite`.
 */
export const PGLITE_TEMPLATE_ENV = 'PARLEY_PGLITE_TEMPLATE_DIR';

/** Lock files this process holds. */
const HELD = new Set<string>();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: unknown }).code === 'EPERM';
  }
}

/**
 * Takes a directory's lock file (created with O_EXCL, holding this pid),
 * replacing a stale one whose process no longer exists.
 *
 * @param dir the directory (created, mode 0700, when missing)
 * @param fileName the lock file's name inside it
 * @param what how errors name the directory ("data directory")
 * @returns the release function (idempotent; also run on process exit)
 * @throws DbError `failed_precondition` when a live process (or this one) holds it; `unavailable` when it cannot be created
 */
export function lockDirectory(dir: string, fileName: string, what = 'data directory'): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, fileName);
  if (HELD.has(path)) throw new DbError('failed_precondition', `${what} ${dir} is already open in this process`);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      HELD.add(path);
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        HELD.delete(path);
        process.off('exit', release);
        try {
          unlinkSync(path);
        } catch {
          // already gone
        }
      };
      process.on('exit', release);
      return release;
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EEXIST') throw new DbError('unavailable', `cannot create ${path}`, { cause: error });
      let text = '';
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        continue; // removed meanwhile: try again
      }
      const pid = Number(text.trim());
      if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
        throw new DbError('failed_precondition', `${what} ${dir} is in use by process ${pid} (${path}); stop that process first`);
      }
      try {
        unlinkSync(path); // stale: its process is gone
      } catch {
        // someone else removed it first; try again
      }
    }
  }
  throw new DbError('failed_precondition', `cannot lock ${what} ${dir}`);
}

/** Where templates are cached, or undefined when disabled. */
export function pgliteTemplateRoot(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const set = env[PGLITE_TEMPLATE_ENV];
  if (set !== undefined && set !== '') return set === 'off' || set === '0' ? undefined : set;
  const xdg = env['XDG_CACHE_HOME'];
  const base = xdg !== undefined && xdg.startsWith('/') ? xdg : join(homedir(), '.cache');
  return join(base, 'parley', 'pglite');
}

/** The installed PGlite's identity: version and the sizes of its two wasm files. */
function pgliteBuildKey(): string | undefined {
  try {
    const require = createRequire(import.meta.url);
    const wasm = require.resolve('@electric-sql/pglite/pglite.wasm');
    const initdb = require.resolve('@electric-sql/pglite/initdb.wasm');
    const pkg = JSON.parse(readFileSync(join(dirname(wasm), '..', 'package.json'), 'utf8')) as { version?: unknown };
    if (typeof pkg.version !== 'string' || !/^[0-9A-Za-z.+-]{1,40}$/.test(pkg.version)) return undefined;
    return `${pkg.version}-${statSync(wasm).size}-${statSync(initdb).size}`;
  } catch {
    return undefined;
  }
}

/** Ours alone: a real directory or regular file (no symlink) owned by this user that nobody else can write. */
function privateEntry(path: string, kind: 'directory' | 'file'): boolean {
  try {
    const s = lstatSync(path);
    const uid = typeof process.getuid === 'function' ? process.getuid() : s.uid;
    return (kind === 'directory' ? s.isDirectory() : s.isFile()) && s.uid === uid && (s.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

const privateDirectory = (path: string): boolean => privateEntry(path, 'directory');

/** The PGlite build key when `root` is a cache to write into (made if missing, ours alone), else undefined. */
function privateCache(root: string | undefined): string | undefined {
  const key = pgliteBuildKey();
  if (root === undefined || key === undefined) return undefined;
  try {
    mkdirSync(root, { recursive: true, mode: 0o700 });
  } catch {
    return undefined;
  }
  return tightenCache(root) ? key : undefined;
}

/**
 * The cache directory ours alone: a private directory (see {@link privateEntry})
 * made 0700 if it was not (it holds clusters whose files PGlite wrote 0666).
 */
function tightenCache(root: string): boolean {
  if (!privateDirectory(root)) return false;
  try {
    if ((lstatSync(root).mode & 0o777) !== 0o700) chmodSync(root, 0o700);
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes a PGlite data directory ours alone before a database is opened or
 * created in it: created 0700 when missing, an existing one made 0700 (PGlite
 * writes its files 0666 and directories 0777, so the top directory is what
 * keeps other local users from the cluster, now and for the files PGlite
 * creates later). When it had to be tightened (a directory made by hand, or
 * by a version before this check) and holds a cluster (PG_VERSION), the files
 * of the cluster are too; nothing else in a directory is ever chmodded.
 *
 * @param dir the data directory (a symbolic link to a directory is followed)
 * @param what how errors name it
 * @throws DbError `failed_precondition` when it is not a directory, belongs to another user, or cannot be made 0700
 */
export function makePrivateDataDir(dir: string, what = 'PGlite data directory'): void {
  let s;
  try {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'EEXIST') throw error; // a file there: said below
    }
    s = statSync(dir);
  } catch (cause) {
    throw new DbError('failed_precondition', `cannot create ${what} ${dir} (${(cause as { code?: unknown }).code ?? String(cause)})`, { cause });
  }
  if (!s.isDirectory()) throw new DbError('failed_precondition', `${what} ${dir} is not a directory`);
  const uid = typeof process.getuid === 'function' ? process.getuid() : s.uid;
  if (s.uid !== uid) {
    throw new DbError('failed_precondition', `${what} ${dir} belongs to uid ${s.uid}, not to this process's user (uid ${uid}); it must be ours alone (mode 0700), as PGlite writes its files readable and writable by everyone: chown it to uid ${uid} or use another directory`);
  }
  if ((s.mode & 0o777) === 0o700) return;
  try {
    chmodSync(dir, 0o700);
  } catch (cause) {
    throw new DbError('failed_precondition', `cannot make ${what} ${dir} mode 0700 (it is ${(s.mode & 0o777).toString(8).padStart(4, '0')}; ${(cause as { code?: unknown }).code ?? String(cause)})`, { cause });
  }
  // Only a cluster's own files are tightened (it holds PG_VERSION): a data directory pointed by mistake at a
  // directory of other things (`.`, a home directory) gets its top made 0700 — which already keeps other users
  // out — but none of its files' modes changed.
  if (existsSync(join(dir, 'PG_VERSION'))) tightenTree(dir);
}

/**
 * Makes every file below `dir` 0600 and every directory 0700 (`dir` itself
 * included); other entries (a cluster has none) are left alone.
 */
export function tightenTree(dir: string): void {
  chmodSync(dir, 0o700);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) tightenTree(path);
    else if (entry.isFile()) chmodSync(path, 0o600);
  }
}
const privateFile = (path: string): boolean => privateEntry(path, 'file');

/** True when a data directory holds no cluster yet (missing, or empty). */
export function isFreshDataDir(dataDir: string): boolean {
  if (!existsSync(dataDir)) return true;
  return readdirSync(dataDir).every((name) => name === PGLITE_LOCK_FILE);
}

/**
 * A template this process can use: its path, or undefined.
 * @param name `cluster` (a clean initdb), or a prepared template's name (the cluster with an app's migrations)
 */
export function usableTemplate(root: string | undefined, name = 'cluster'): string | undefined {
  const key = pgliteBuildKey();
  if (root === undefined || key === undefined) return undefined;
  const template = join(root, `${name}-${key}`);
  if (!tightenCache(root) || !privateDirectory(template) || !existsSync(join(template, 'PG_VERSION'))) return undefined;
  return template;
}

/**
 * Copies the template's files into a fresh data directory (not the lock, not
 * a pid file). A plain walk — one readdir per directory, one copyFile per file
 * (the kernel copies) — rather than fs.cpSync, whose per-entry checks cost
 * about three times the CPU over a cluster's ~1,000 files. Only directories
 * and regular files are copied (a cluster has nothing else); the target must
 * not exist yet (COPYFILE_EXCL). Copies are made 0600, directories 0700,
 * whatever the template's modes (a template made before modes were set holds
 * PGlite's 0666 files).
 */
export function copyTemplate(template: string, dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const walk = (from: string, to: string, top: boolean): void => {
    for (const entry of readdirSync(from, { withFileTypes: true })) {
      if (top && (entry.name === PGLITE_LOCK_FILE || entry.name === 'postmaster.pid')) continue;
      const source = join(from, entry.name);
      const target = join(to, entry.name);
      if (entry.isDirectory()) {
        mkdirSync(target, { mode: 0o700 });
        walk(source, target, false);
      } else if (entry.isFile()) {
        copyFileSync(source, target, constants.COPYFILE_EXCL); // takes the source's mode
        chmodSync(target, 0o600);
      } else throw new Error(`template holds ${source}, neither a file nor a directory`);
    }
  };
  walk(template, dataDir, true);
}

/** How many prepared templates of one family (`prepared-registry-*`, say) are kept, newest first. */
export const PREPARED_TEMPLATES_KEPT = 3;

/**
 * Keeps the cache bounded: of the prepared templates of `name`'s family (its
 * name without the last `-` part, the migrations digest), only the
 * {@link PREPARED_TEMPLATES_KEPT} newest stay; `name` itself always does.
 * Best effort (another process may be removing the same ones).
 */
export function pruneTemplates(root: string, name: string): void {
  const cut = name.lastIndexOf('-');
  if (!name.startsWith('prepared-') || cut <= 'prepared-'.length) return;
  const family = name.slice(0, cut + 1);
  const mine = `${name}-`;
  const entries: { path: string; mtimeMs: number }[] = [];
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    // Same family: the family prefix, then a hex digest (so `prepared-gateway-` does not take `prepared-gateway-memory-…`).
    if (!entry.isDirectory() || !entry.name.startsWith(family) || entry.name.startsWith(mine) || !/^[0-9a-f]+-/.test(entry.name.slice(family.length))) continue;
    try {
      entries.push({ path: join(root, entry.name), mtimeMs: statSync(join(root, entry.name)).mtimeMs });
    } catch {
      // gone meanwhile
    }
  }
  entries.sort((a, b) => b.mtimeMs - a.mtimeMs);
  for (const old of entries.slice(PREPARED_TEMPLATES_KEPT - 1)) rmSync(old.path, { recursive: true, force: true });
}

/** Removes everything in a data directory but the lock (a failed copy or a failed first open). */
export function emptyDataDir(dataDir: string): void {
  for (const name of readdirSync(dataDir)) if (name !== PGLITE_LOCK_FILE) rmSync(join(dataDir, name), { recursive: true, force: true });
}

/**
 * Makes the template: a clean initdb in a private temporary directory of the
 * cache, closed, then renamed into place (a concurrent maker's rename wins,
 * ours is removed). Best effort: returns undefined when anything fails.
 *
 * @param root the cache directory
 * @param create opens (running initdb) and closes a PGlite cluster in a directory
 */
export async function makeTemplate(root: string | undefined, create: (dir: string) => Promise<void>, name = 'cluster'): Promise<string | undefined> {
  const key = privateCache(root);
  if (root === undefined || key === undefined) return undefined;
  let tmp: string | undefined;
  try {
    tmp = mkdtempSync(join(root, `.making-${process.pid}-`));
    await create(tmp);
    tightenTree(tmp); // PGlite wrote its files 0666: the copies are made 0600 anyway, but the cache is ours alone too
    const template = join(root, `${name}-${key}`);
    try {
      renameSync(tmp, template);
      tmp = undefined;
    } catch {
      // another process published one first
    }
    pruneTemplates(root, name);
    return usableTemplate(root, name);
  } catch {
    return undefined;
  } finally {
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  }
}

/** The memory image this process can use (a tar of a clean cluster, see above): its path, or undefined. */
export function usableMemoryImage(root: string | undefined): string | undefined {
  const key = pgliteBuildKey();
  if (root === undefined || key === undefined) return undefined;
  const image = join(root, `memory-${key}.tar`);
  if (!tightenCache(root) || !privateFile(image)) return undefined;
  return image;
}

/**
 * Publishes the memory image: `dump` (a clean cluster's `dumpDataDir`) written
 * into a private temporary directory of the cache, then renamed into place (a
 * concurrent maker's image is replaced by an equal one). Best effort: returns
 * undefined when anything fails.
 *
 * @param root the cache directory
 * @param dump the tar of a clean cluster
 */
export async function saveMemoryImage(root: string | undefined, dump: () => Promise<Blob>): Promise<string | undefined> {
  const key = privateCache(root);
  if (root === undefined || key === undefined) return undefined;
  let tmp: string | undefined;
  try {
    const bytes = new Uint8Array(await (await dump()).arrayBuffer());
    tmp = mkdtempSync(join(root, `.making-${process.pid}-`));
    const file = join(tmp, 'memory.tar');
    writeFileSync(file, bytes, { mode: 0o600, flag: 'wx' });
    renameSync(file, join(root, `memory-${key}.tar`));
    return usableMemoryImage(root);
  } catch {
    return undefined;
  } finally {
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  }
}
