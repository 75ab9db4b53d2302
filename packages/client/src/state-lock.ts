/**
 * One writer at a time for an agent's state file (docs/PROTOCOL.md §13): two processes that restored the same
 * sessions and counter reservations would seal under the same (key, nonce) pairs. Node has no flock, so this is
 * PostgreSQL's postmaster.pid approach: a lock file beside the state file, `<path>.lock`, created with
 * O_CREAT|O_EXCL (mode 0600) and holding `{ pid, start_time, pid_ns, thread, hostname, created_at }` (`start_time`:
 * field 22 of /proc/<pid>/stat, `pid_ns`: the /proc/self/ns/pid link, both Linux only; `thread`: a worker thread's
 * id; each absent where there is none). It is held from the store's first use until its `close()`, and removed —
 * only if it is still this process's — then and at process exit (a killed process leaves it: stale, see below).
 *
 * The lock is taken on the real file, not on the name it was opened by: `<path>` is the state file's realpath (for
 * one not made yet, its directory's realpath and its name), so a symlink to a held state file finds the same lock,
 * and the store then reads and writes that real path. A state file with more than one hard link is refused
 * (`failed_precondition`): another of its names would get a lock of its own, and a hard link has no one name to
 * resolve to — and so, at the holder's next check, is one linked while held. So is a symlink to a file that does
 * not exist. The locks held in this thread are keyed by real path.
 *
 * Heartbeat: the holder refreshes the lock file's mtime every {@link HEARTBEAT_MS} (an unref'd timer; `futimes` on
 * a descriptor of the file at `<path>.lock`, only when that file is still the one it created, which it then
 * remembers with its new mtime). A lock found in place is judged:
 *
 * - another host, or another PID namespace (a container) of this host, whose process cannot be checked from here:
 *   refused while its mtime is at most {@link STALE_MS} old (its holder may be running and refreshing it), stale
 *   once older (its holder is gone, or has not run for that long); the message names the file to remove;
 * - this host, its process alive (`kill(pid, 0)` succeeds or EPERM) and, on Linux, started when the lock says (so a
 *   reused pid is not taken for the holder): refused, naming the pid, since when it holds the lock and the file,
 *   whatever its mtime (the pid check is authoritative here) — also when it is this process with another store
 *   open on the same file in this thread;
 * - another thread of this process: like another host (whether that thread still runs cannot be checked: a worker
 *   ended by `terminate()` runs no exit hook) — refused while fresh, stale once its mtime is older than the bound;
 * - its process gone (ESRCH, or another start time), or this very thread's without it holding it: stale, taken over;
 * - unreadable (its writer is between O_EXCL and its write, or died there): waited for briefly, then stale.
 *
 * Taking a stale lock over: rename it to a unique name, check that what was renamed is the file judged stale
 * (same inode, mtime and bytes: a holder that refreshed it meanwhile keeps it), delete it, O_EXCL-create a new one. A racer that judged the same stale file either
 * fails the rename (ENOENT) or renames the NEW lock of the winner: it sees other bytes and links the file back
 * (link fails rather than replace, should a third process have created one meanwhile). Every creator checks,
 * after writing and fsyncing its lock, that the file at `<path>.lock` is still the one it created, and the
 * holder checks it again before and after every write to the state file: a holder whose lock was moved away
 * or replaced (the three-way race above, or someone deleting the lock of a running agent) fails its next write
 * and the agent stops (fail closed) — and since a counter reservation counts only once the check after its
 * fsync passed, a process that took the lock and then loaded the state has every reservation the old holder
 * may seal under. What stays possible in that case is only a write already under way completing in the file.
 * The same fencing covers a holder that was only stalled (SIGSTOP, a VM or container paused, an event loop blocked)
 * for longer than {@link STALE_MS} and whose lock was taken over as stale meanwhile: its heartbeat finds the file
 * is not its own and stops, and its next write fails the check before it (or, for a write already past that check,
 * the one after it) — it never vouches for anything written after the new holder loaded the state.
 */
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  futimesSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readlinkSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
  type BigIntStats,
} from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { threadId } from 'node:worker_threads';
import { ClientError } from './errors.js';

/** What a lock file holds. */
export interface StateLockOwner {
  readonly pid: number;
  /** Linux: when the process started, in clock ticks after boot (field 22 of /proc/<pid>/stat). */
  readonly start_time?: number;
  /** Linux: the PID namespace the pid is in (`pid:[…]`). */
  readonly pid_ns?: string;
  /** The worker thread (worker_threads.threadId) that holds it; absent for the main thread. */
  readonly thread?: number;
  readonly hostname: string;
  /** When the lock was taken (ISO 8601). */
  readonly created_at: string;
}

/** A lock this process holds. */
export interface StateLock {
  /** The lock file. */
  readonly path: string;
  /** The state file's real path (symlinks resolved), which the lock is taken on: where to read and write it. */
  readonly realPath: string;
  /**
   * @throws ClientError `failed_precondition` when the file at {@link path} is no longer the one this lock
   *   created (removed, or replaced by another process's)
   */
  check(): void;
  /** Removes the lock file if it is still this one. Idempotent. */
  release(): void;
}

/**
 * The real path of an agent state file: its realpath, or for one that does not exist (yet) its directory's realpath
 * and its name (the name itself when the directory does not exist either).
 */
export function realStatePath(statePath: string): string {
  const absolute = resolve(statePath);
  try {
    return realpathSync(absolute);
  } catch {
    // not made yet (or a symlink to nothing: refused when locking)
  }
  try {
    return join(realpathSync(dirname(absolute)), basename(absolute));
  } catch {
    return absolute;
  }
}

/** The lock file of an agent state file: beside its real path. */
export const stateLockPath = (statePath: string): string => `${realStatePath(statePath)}.lock`;

/** How often a holder refreshes its lock file's mtime. */
export const HEARTBEAT_MS = 5_000;
/**
 * How old a lock file's mtime must be for a lock whose holder cannot be checked directly (another host, PID
 * namespace or thread) to count as stale: several heartbeats missed.
 */
export const STALE_MS = 30_000;

/** How long an unreadable lock file is taken for one being written (its creator between O_EXCL and write). */
const BEING_WRITTEN_MS = 2_000;
/** How often a lock that changed under the judging is judged again before giving up. */
const MAX_ATTEMPTS = 20;

/**
 * The locks held in this process, by lock file, shared by every copy of this module loaded in it (two copies of
 * @parley/client in one program must not both hold one state file either).
 */
const HELD: Map<string, HeldLock> = ((globalThis as Record<symbol, unknown>)[Symbol.for('parley.client.stateLocks')] ??= new Map()) as Map<string, HeldLock>;
let exitHook = false;
let asideCounter = 0;

const errno = (error: unknown): unknown => (error as { code?: unknown } | null)?.code;
const sleep = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Field 22 of /proc/<pid>/stat (start time in ticks after boot), or undefined where there is none. */
export function processStartTime(pid: number): number | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so fields are counted after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const value = Number(fields[22 - 3]);
    return Number.isSafeInteger(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function pidNamespace(): string | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return undefined;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errno(error) === 'EPERM';
  }
}

const sameFile = (a: BigIntStats, b: BigIntStats): boolean => a.dev === b.dev && a.ino === b.ino && a.mtimeNs === b.mtimeNs;

function statOrUndefined(path: string): BigIntStats | undefined {
  try {
    return statSync(path, { bigint: true });
  } catch {
    return undefined;
  }
}

class HeldLock implements StateLock {
  #released = false;
  /** The lock file as this holder created it, with the mtime of its last refresh. */
  #file: BigIntStats;
  readonly #heartbeat: ReturnType<typeof setInterval>;

  constructor(
    readonly path: string,
    readonly statePath: string,
    readonly realPath: string,
    file: BigIntStats,
  ) {
    this.#file = file;
    this.#heartbeat = setInterval(() => this.#refresh(), stateLockTestHooks.heartbeatMs ?? HEARTBEAT_MS);
    this.#heartbeat.unref();
  }

  /** Sets the lock file's mtime to now — through a descriptor of the file, and only if it is still this one. */
  #refresh(): void {
    if (this.#released) return;
    let fd: number;
    try {
      fd = openSync(this.path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch {
      return; // gone: the next check fails
    }
    try {
      if (!sameFile(fstatSync(fd, { bigint: true }), this.#file)) return; // not ours any more: left to its holder
      const now = new Date();
      futimesSync(fd, now, now);
      this.#file = fstatSync(fd, { bigint: true });
    } catch {
      // tried again at the next beat
    } finally {
      closeSync(fd);
    }
  }

  check(): void {
    if (this.#released) throw new ClientError('failed_precondition', `agent state file ${this.statePath}: its lock was released (the store was closed)`);
    const links = statOrUndefined(this.realPath)?.nlink ?? 1n;
    if (links > 1n) {
      // Linked since the lock was taken: after a rewrite (a rename over this name) the other name would be a file
      // of its own, with a lock of its own.
      throw new ClientError('failed_precondition', `agent state file ${this.statePath} (${this.realPath}) got ${links} hard links while this process held it: nothing more is written to it (PROTOCOL §13)`);
    }
    const now = statOrUndefined(this.path);
    if (now !== undefined && sameFile(now, this.#file)) return;
    throw new ClientError(
      'failed_precondition',
      `agent state file ${this.statePath}: its lock file ${this.path} was ${now === undefined ? 'removed' : 'replaced by another process'} while this process held it — ` +
        'another process may be using this state, so nothing more is written to it (two writers would reuse (key, nonce) pairs, PROTOCOL §13)',
    );
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#heartbeat);
    if (HELD.get(this.path) === this) HELD.delete(this.path);
    const now = statOrUndefined(this.path);
    if (now === undefined || !sameFile(now, this.#file)) return; // not ours any more: leave it to its holder
    try {
      unlinkSync(this.path);
    } catch {
      // gone already
    }
  }
}

function releaseAllAtExit(): void {
  for (const lock of [...HELD.values()]) lock.release();
}

/** A lock file as read: its bytes, what it says (undefined when unreadable), and the file it was read from. */
interface SeenLock {
  readonly bytes: Buffer;
  readonly owner: StateLockOwner | undefined;
  readonly file: BigIntStats;
}

function parseOwner(bytes: Buffer): StateLockOwner | undefined {
  try {
    const o = JSON.parse(bytes.toString('utf8')) as Partial<StateLockOwner> | null;
    if (typeof o !== 'object' || o === null || !Number.isSafeInteger(o.pid) || (o.pid as number) <= 0 || typeof o.hostname !== 'string') return undefined;
    return o as StateLockOwner;
  } catch {
    return undefined;
  }
}

/** Reads a lock file through one descriptor (bytes and identity of the same file); undefined when there is none. */
function readLock(path: string): SeenLock | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    if (errno(error) === 'ENOENT') return undefined;
    throw new ClientError('unavailable', `cannot read lock file ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    const file = fstatSync(fd, { bigint: true });
    const bytes = Buffer.alloc(Math.min(Number(file.size), 4096));
    const n = bytes.length === 0 ? 0 : readSync(fd, bytes, 0, bytes.length, 0);
    const read = bytes.subarray(0, n);
    return { bytes: read, owner: parseOwner(read), file };
  } finally {
    closeSync(fd);
  }
}

/** Creates the lock file with O_EXCL; undefined when one exists, or when the new one was moved away before it was checked. */
function create(path: string, statePath: string, realPath: string): HeldLock | undefined {
  const owner: StateLockOwner = {
    pid: process.pid,
    ...optional('start_time', processStartTime(process.pid)),
    ...optional('pid_ns', pidNamespace()),
    ...optional('thread', threadId === 0 ? undefined : threadId),
    hostname: hostname(),
    created_at: new Date().toISOString(),
  };
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  } catch (error) {
    if (errno(error) === 'EEXIST') return undefined;
    throw new ClientError('unavailable', `cannot create lock file ${path} for agent state file ${statePath}: ${(error as Error).message}`, { cause: error });
  }
  let file: BigIntStats;
  try {
    writeSync(fd, `${JSON.stringify(owner)}\n`);
    fsyncSync(fd);
    file = fstatSync(fd, { bigint: true });
  } catch (error) {
    try {
      const mine = fstatSync(fd, { bigint: true });
      const now = statOrUndefined(path);
      if (now !== undefined && now.dev === mine.dev && now.ino === mine.ino) unlinkSync(path);
    } catch {
      // left for the next opener to judge (unreadable, then stale)
    } finally {
      closeSync(fd);
    }
    throw new ClientError('unavailable', `cannot write lock file ${path} for agent state file ${statePath}: ${(error as Error).message}`, { cause: error });
  }
  closeSync(fd);
  // A racer taking over a stale lock may have renamed this new one away before it was complete (it puts it back
  // when it sees it is not the stale one): only a file still in place is held.
  const now = statOrUndefined(path);
  if (now === undefined || !sameFile(now, file)) return undefined;
  return new HeldLock(path, statePath, realPath, file);
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

/**
 * For tests: `beforeTakeOver` runs between judging a lock stale and taking it away (where a racer may get in);
 * `heartbeatMs` and `staleMs` replace {@link HEARTBEAT_MS} (for locks taken from then on) and {@link STALE_MS}.
 */
export const stateLockTestHooks: {
  beforeTakeOver?: ((lockPath: string) => void) | undefined;
  heartbeatMs?: number | undefined;
  staleMs?: number | undefined;
} = {};

/** Takes a stale lock file away, if the file at `path` is still the one judged stale. */
function takeOver(path: string, stale: SeenLock): void {
  stateLockTestHooks.beforeTakeOver?.(path);
  const aside = `${path}.stale-${process.pid}-${Date.now()}-${asideCounter++}`;
  try {
    renameSync(path, aside);
  } catch (error) {
    if (errno(error) === 'ENOENT') return; // another process took it away first
    throw new ClientError('unavailable', `cannot take over stale lock file ${path}: ${(error as Error).message}`, { cause: error });
  }
  const moved = readLock(aside);
  if (moved !== undefined && sameFile(moved.file, stale.file) && moved.bytes.equals(stale.bytes)) {
    unlinkSync(aside);
    return;
  }
  // Another process's new lock, made since this one was judged, or this one refreshed by its holder: put it back — unless a third process has created
  // one meanwhile (then that lock's holder finds its file gone at its next check and stops).
  try {
    linkSync(aside, path);
  } catch {
    // EEXIST (see above)
  }
  try {
    unlinkSync(aside);
  } catch {
    // already gone
  }
}

function describeHolder(owner: StateLockOwner): string {
  const where = owner.hostname === hostname() ? '' : ` on host ${owner.hostname}`;
  const thread = owner.thread === undefined ? '' : ` (worker thread ${owner.thread})`;
  return `process ${owner.pid}${thread}${where}, holding it since ${typeof owner.created_at === 'string' ? owner.created_at : 'an unknown time'}`;
}

/**
 * Takes the lock of an agent state file (see the module's documentation).
 * @throws ClientError `failed_precondition` when another process (or another store in this one) holds it, or
 *   one that cannot be judged from here (another host, PID namespace or thread) and was refreshed lately; when the
 *   state file has more than one hard link, or is a symlink to nothing; `unavailable` when it cannot be created
 */
export function acquireStateLock(statePath: string): StateLock {
  try {
    mkdirSync(dirname(resolve(statePath)), { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new ClientError('unavailable', `cannot create the directory of agent state file ${statePath}: ${(error as Error).message}`, { cause: error });
  }
  const realPath = realStatePath(statePath);
  const path = `${realPath}.lock`;
  let links: number;
  try {
    const found = lstatSync(realPath);
    if (found.isSymbolicLink()) {
      throw new ClientError('failed_precondition', `agent state file ${statePath} is a symbolic link to ${readlinkSync(realPath)}, which does not exist: create the state file there, or name it directly`);
    }
    links = found.nlink;
  } catch (error) {
    if (error instanceof ClientError) throw error;
    if (errno(error) !== 'ENOENT') throw new ClientError('unavailable', `cannot read agent state file ${statePath}: ${(error as Error).message}`, { cause: error });
    links = 1; // not made yet
  }
  if (links > 1) {
    throw new ClientError(
      'failed_precondition',
      `agent state file ${statePath} (${realPath}) has ${links} hard links: it is not used, since through another of its names a second process would take a lock of its own and write it too ` +
        `(two writers would reuse (key, nonce) pairs, PROTOCOL §13). Remove the other links (find / -samefile ${realPath}), or copy the file.`,
    );
  }
  const staleMs = stateLockTestHooks.staleMs ?? STALE_MS;
  const refuse = (holder: string, advice: string): ClientError =>
    new ClientError(
      'failed_precondition',
      `agent state file ${statePath} is in use by ${holder} (lock file ${path}). ${advice} ` +
        'One agent\'s state has one writer at a time: two would seal under the same keys and nonces (PROTOCOL §13).',
    );
  const refreshed = (age: number): string =>
    `It was refreshed ${Math.max(0, Math.round(age / 1000))} s ago; a running holder refreshes it every ${HEARTBEAT_MS / 1000} s, and it is taken over once not refreshed for ${staleMs / 1000} s.`;
  const unknowable = (owner: StateLockOwner, where: string, age: number): ClientError =>
    refuse(`${describeHolder(owner)}${where}`, `Whether that process still runs cannot be told from here: if it does not, remove ${path}. ${refreshed(age)}`);
  const deadline = Date.now() + BEING_WRITTEN_MS;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const held = create(path, statePath, realPath);
    if (held !== undefined) {
      HELD.set(path, held);
      if (!exitHook) {
        exitHook = true;
        process.on('exit', releaseAllAtExit);
      }
      return held;
    }
    const seen = readLock(path);
    if (seen === undefined) continue; // removed meanwhile
    const owner = seen.owner;
    const age = Date.now() - Number(seen.file.mtimeNs / 1_000_000n);
    if (owner === undefined) {
      // Being written (its creator is between O_EXCL and write), or its creator died right there.
      if (age < BEING_WRITTEN_MS && Date.now() < deadline) {
        sleep(10);
        attempt--; // waiting for a writer is not a change of holder
        continue;
      }
      if (age < BEING_WRITTEN_MS) throw refuse('another process creating its lock file right now', 'Try again.');
      takeOver(path, seen);
      continue;
    }
    // A holder that cannot be checked from here keeps its lock only while it refreshes it.
    const unrefreshed = age > staleMs;
    const ourNamespace = pidNamespace();
    if (owner.hostname !== hostname()) {
      if (!unrefreshed) throw unknowable(owner, '', age);
    } else if (owner.pid_ns !== undefined && ourNamespace !== undefined && owner.pid_ns !== ourNamespace) {
      if (!unrefreshed) throw unknowable(owner, ` in another PID namespace (${owner.pid_ns}: another container?)`, age);
    } else {
      const startTime = owner.start_time === undefined ? undefined : processStartTime(owner.pid);
      const reused = startTime !== undefined && startTime !== owner.start_time; // the pid now names another process
      if (owner.pid === process.pid && !reused) {
        if (HELD.has(path)) throw refuse(`this process (pid ${process.pid})`, 'Another state store on the same file is open in it: close that one first.');
        if ((owner.thread ?? 0) !== threadId && !unrefreshed) {
          throw refuse(describeHolder(owner), `Another thread of this process holds it: close its store first. ${refreshed(age)}`);
        }
        // A lock of this thread that it does not hold (one its creation abandoned above, put back by a racer), or
        // of another thread that stopped refreshing it (ended without closing its store, e.g. terminate()).
      } else if (!reused && pidAlive(owner.pid)) {
        throw refuse(describeHolder(owner), `Stop that process first; if it is gone, remove ${path}.`);
      }
    }
    takeOver(path, seen); // its process is gone, the pid now names another process, or it stopped refreshing it
  }
  throw new ClientError('failed_precondition', `could not take lock file ${path} of agent state file ${statePath}: it kept changing (other processes starting on the same state?); try again`);
}
