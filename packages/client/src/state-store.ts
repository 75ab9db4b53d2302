/**
 * Where an agent keeps its durable local state between runs: an append-only
 * log of records that are already sealed under the agent's `stateKey`
 * (./journal.ts; docs/PROTOCOL.md §13, §17). A store only keeps bytes, but
 * should still keep them private.
 *
 * The contract a store must keep, because the delivery and nonce guarantees
 * rest on it:
 * - `append` resolves only once the records are durable (fsync), in order;
 * - `load` returns every record appended since the last `rewrite`, in order,
 *   dropping only a torn tail (a record cut by a crash mid-write);
 * - `rewrite` atomically replaces everything appended before it was called (a
 *   crash leaves the old or the new records, never a mix); records appended
 *   after it was called are kept, after the new records.
 *
 * One process at a time may use a state file (PROTOCOL §13): `fileStateStore` holds a lock file beside it from
 * its first use until `close()` (./state-lock.ts).
 */
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, readFile, readdir, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { SecretKey, createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { ClientError } from './errors.js';
import { acquireStateLock, type StateLock } from './state-lock.js';

/** Durable storage of the agent's sealed records. */
export interface StateStore {
  /** Every record appended since the last rewrite, in order; a torn last record is dropped. */
  load(): Promise<Uint8Array[]>;
  /** Appends records; resolves once they are durable. Rejects (and keeps nothing of the batch it cannot vouch for) on failure. */
  append(records: readonly Uint8Array[]): Promise<void>;
  /** Atomically replaces every record appended before this call (compaction); later appends follow the new records. */
  rewrite(records: readonly Uint8Array[]): Promise<void>;
  /** Waits for appends in flight and releases file handles and locks (a later call reopens them). */
  close(): Promise<void>;
  /** Where the records are kept (a file's path), for messages. */
  readonly location?: string;
}

const MAGIC = new TextEncoder().encode('PAJ1');
/** Largest single record accepted on load (a sealed 1 MiB payload with its envelope, base64, and headroom). */
export const MAX_RECORD_BYTES = 8 * 1024 * 1024;

/** Frames records: u32be(length) ‖ bytes, for each. */
export function frameRecords(records: readonly Uint8Array[]): Uint8Array {
  const size = records.reduce((n, r) => n + 4 + r.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const r of records) {
    if (r.length > MAX_RECORD_BYTES) throw new ClientError('too_large', `state record of ${r.length} bytes exceeds ${MAX_RECORD_BYTES}`);
    view.setUint32(at, r.length);
    out.set(r, at + 4);
    at += 4 + r.length;
  }
  return out;
}

/**
 * Parses framed records after the header; a record cut short at the end is a
 * torn tail and is dropped (`tornAt` says where the whole records end).
 */
export function parseRecords(bytes: Uint8Array, from = 0): { records: Uint8Array[]; tornAt: number | undefined } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: Uint8Array[] = [];
  let at = from;
  while (at < bytes.length) {
    if (at + 4 > bytes.length) return { records, tornAt: at };
    const len = view.getUint32(at);
    if (len > MAX_RECORD_BYTES || at + 4 + len > bytes.length) return { records, tornAt: at };
    records.push(new Uint8Array(bytes.subarray(at + 4, at + 4 + len)));
    at += 4 + len;
  }
  return { records, tornAt: undefined };
}

let tmpCounter = 0;

/** One operation on the file, in the order it was asked for. */
interface StoreOp {
  readonly kind: 'append' | 'rewrite' | 'close';
  /** Framed records (append, rewrite). */
  readonly bytes?: Uint8Array;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

/**
 * A StateStore in one file: "PAJ1" ‖ framed records. Appends, rewrites and closes run one at a time in the
 * order they were called. Appends are group-committed: consecutive appends waiting while a write and fsync
 * are in flight go out together in the next one, so many concurrent sends and receipts cost one fsync.
 * `rewrite` writes a temporary file (mode 0600) in the same directory, fsyncs it, renames it over `path`
 * and fsyncs the directory; it replaces what was appended before it was called, and appends called after
 * it wait for it and go to the new file (none is written to the file being replaced). A torn tail found by
 * `load` is cut off before the next append.
 *
 * One writer at a time: the first `load`, `append` or `rewrite` takes `<path>.lock` (./state-lock.ts) and
 * `close()` releases it (a later call takes it again). The lock, and every read and write, is on the state file's
 * real path (a symlink is followed once, when the lock is taken; a file with several hard links is refused).
 * Another process's open fails with `failed_precondition` naming that process; so does a second store on the
 * same file in this process. Every write checks before and after that the lock is still this store's, and fails
 * (the agent stops) when it is not.
 */
export function fileStateStore(path: string): StateStore {
  let lock: StateLock | undefined;
  /** The state file's real path, which the lock is taken on (set by `locked()`): read and written, never `path`. */
  let file = path;
  /** Takes the lock on first use; @throws ClientError `failed_precondition` when another process holds it. */
  const locked = (): StateLock => {
    if (lock === undefined) {
      lock = acquireStateLock(path);
      file = lock.realPath;
    }
    return lock;
  };
  let handle: FileHandle | undefined;
  let size = 0;
  const ops: StoreOp[] = [];
  /** Whether the runner is working through `ops` (cleared in the same turn as it finds `ops` empty). */
  let running = false;

  const ensureOpen = async (): Promise<FileHandle> => {
    if (handle !== undefined) return handle;
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    locked();
    const h = await open(file, 'a+', 0o600);
    const stat = await h.stat();
    if (stat.size === 0) {
      await h.write(MAGIC, 0, MAGIC.length, 0);
      await h.sync();
      size = MAGIC.length;
    } else size = stat.size;
    handle = h;
    return h;
  };

  const closeHandle = async (): Promise<void> => {
    const h = handle;
    handle = undefined;
    await h?.close();
  };

  /** Writes one group of appends with one fsync; on failure cuts whatever part of it reached the file. */
  const appendBatch = async (batch: readonly StoreOp[]): Promise<void> => {
    const total = batch.reduce((n, b) => n + b.bytes!.length, 0);
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const b of batch) {
      bytes.set(b.bytes!, at);
      at += b.bytes!.length;
    }
    const h = await ensureOpen();
    locked().check(); // nothing is written to a file another process may have taken over
    const before = size;
    try {
      await h.write(bytes, 0, bytes.length, before);
      await h.datasync();
      size = before + bytes.length;
    } catch (error) {
      // None of the batch was promised durable.
      await h.truncate(before).catch(() => undefined);
      throw error;
    }
    // Durable — but vouched for (a counter reservation counts) only while the lock is still ours: a process that
    // took it over before this check loaded the state after this write.
    locked().check();
  };

  const rewriteFile = async (framed: Uint8Array): Promise<void> => {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    locked().check();
    const tmp = `${file}.${process.pid}.${Date.now()}.${tmpCounter++}.tmp`;
    const h = await open(tmp, 'wx', 0o600);
    try {
      await h.write(MAGIC, 0, MAGIC.length, 0);
      await h.write(framed, 0, framed.length, MAGIC.length);
      await h.sync();
    } catch (error) {
      await h.close();
      await rm(tmp, { force: true });
      throw error;
    }
    await h.close();
    try {
      locked().check();
      await rename(tmp, file);
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }
    // The old handle is the replaced file's: never append to it again, whatever happens next.
    await closeHandle().catch(() => undefined);
    const dir = await open(dirname(file), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    await ensureOpen();
    locked().check();
  };

  const run = async (): Promise<void> => {
    await Promise.resolve(); // appends made in this turn join the first batch
    try {
      while (ops.length > 0) {
        const head = ops[0]!;
        if (head.kind === 'append') {
          let n = 1;
          while (n < ops.length && ops[n]!.kind === 'append') n++;
          const batch = ops.splice(0, n);
          try {
            await appendBatch(batch);
            for (const b of batch) b.resolve();
          } catch (error) {
            for (const b of batch) b.reject(error);
          }
          continue;
        }
        ops.shift();
        try {
          if (head.kind === 'rewrite') await rewriteFile(head.bytes!);
          else {
            try {
              await closeHandle();
            } finally {
              lock?.release();
              lock = undefined;
            }
          }
          head.resolve();
        } catch (error) {
          head.reject(error);
        }
      }
    } finally {
      running = false;
    }
  };

  const enqueue = (kind: StoreOp['kind'], bytes?: Uint8Array): Promise<void> => {
    const done = new Promise<void>((resolve, reject) => ops.push({ kind, ...(bytes === undefined ? {} : { bytes }), resolve, reject }));
    if (!running) {
      running = true;
      void run();
    }
    return done;
  };

  return {
    location: path,
    async load() {
      locked(); // before reading: a second process must not restore what the first one uses
      let bytes: Uint8Array;
      try {
        bytes = await readFile(file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw error;
      }
      if (bytes.length === 0) return [];
      if (bytes.length < MAGIC.length || !MAGIC.every((b, i) => bytes[i] === b)) throw new ClientError('state_corrupt', `agent state file ${path}: bad header`);
      const { records, tornAt } = parseRecords(bytes, MAGIC.length);
      if (tornAt !== undefined) {
        const h = await ensureOpen();
        locked().check();
        await h.truncate(tornAt);
        await h.sync();
        size = tornAt;
      }
      return records;
    },
    append(records) {
      if (records.length === 0) return Promise.resolve();
      let bytes: Uint8Array;
      try {
        bytes = frameRecords(records);
      } catch (error) {
        return Promise.reject(error);
      }
      return enqueue('append', bytes);
    },
    rewrite(records) {
      let bytes: Uint8Array;
      try {
        bytes = frameRecords(records);
      } catch (error) {
        return Promise.reject(error);
      }
      return enqueue('rewrite', bytes);
    },
    close() {
      // After everything asked for before it; a later append reopens the file.
      return enqueue('close');
    },
  };
}

const STATE_KEY_BYTES = 32;

/**
 * The agent's `stateKey` kept in a file of its own: read when the file exists, else made (32 random bytes, mode
 * 0600) — so a program started again continues from its state (a new key each run could not read it). The file
 * is written as `<path>.<pid>.<random>.tmp` (O_EXCL, fsynced), then linked to `path` (which fails rather than
 * replaces: two processes making it at once end with one key, the loser reads it) and the directory is fsynced.
 * Such temporary files left by a maker that died before removing them (each a copy of the key) are removed by the
 * next call: only files of that name pattern, regular and this user's, and not being written (neither this
 * process's own in flight nor, unless older than a minute, one whose pid is alive).
 * Keep it apart from the state file (another directory, another backup): the state is sealed under it.
 * @param path the key file (its directory is created, mode 0700, when missing)
 * @param options.crypto the ParleyCrypto to draw a new key from (default: a new one)
 * @returns the key (`aead`); the caller may `wipe()` it once the agent is closed
 * @throws ClientError `permission_denied` when group or others may access the file; `malformed` when it is not
 *   a regular file of 32 bytes; `unavailable` when it cannot be read or written
 */
export async function stateKeyFile(path: string, options: { readonly crypto?: ParleyCrypto } = {}): Promise<SecretKey> {
  await removeLeftoverKeyTemps(path);
  for (let attempt = 0; attempt < 3; attempt++) {
    const existing = await readStateKeyFile(path);
    if (existing !== undefined) return existing;
    const made = await makeStateKeyFile(path, options.crypto ?? (await createCrypto()));
    if (made !== undefined) return made;
    // another process made it meanwhile: read that one
  }
  throw new ClientError('unavailable', `state key file ${path} keeps appearing and disappearing; try again`);
}

/** The temporary key files this process is writing (see makeStateKeyFile), which are not leftovers. */
const keyTempsInFlight = new Set<string>();
/** How old a temporary key file of a live pid must be to count as left over (making one takes milliseconds). */
const KEY_TEMP_ABANDONED_MS = 60_000;

/** Removes the temporary key files of `path` that a maker left behind (see stateKeyFile). Best effort. */
async function removeLeftoverKeyTemps(path: string): Promise<void> {
  const dir = dirname(path);
  const prefix = `${basename(path)}.`;
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return; // no directory yet: nothing left over
  }
  for (const entry of entries) {
    const named = entry.startsWith(prefix) ? /^(\d+)\.\d+\.\d+\.tmp$/.exec(entry.slice(prefix.length)) : null;
    const tmp = join(dir, entry);
    if (named === null || keyTempsInFlight.has(tmp)) continue;
    try {
      const stat = await lstat(tmp);
      if (!stat.isFile() || (process.getuid !== undefined && stat.uid !== process.getuid())) continue;
      const pid = Number(named[1]);
      if (pid === process.pid || !pidAlive(pid) || Date.now() - stat.mtimeMs > KEY_TEMP_ABANDONED_MS) await rm(tmp, { force: true });
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const ioError = (what: string, path: string, error: unknown): ClientError =>
  new ClientError('unavailable', `cannot ${what} state key file ${path}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });

async function readStateKeyFile(path: string): Promise<SecretKey | undefined> {
  let h: FileHandle;
  try {
    h = await open(path, constants.O_RDONLY | constants.O_NONBLOCK); // never waits on a FIFO
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError('read', path, error);
  }
  const bytes = new Uint8Array(STATE_KEY_BYTES);
  try {
    const stat = await h.stat();
    if (!stat.isFile()) throw new ClientError('malformed', `state key file ${path} is not a regular file`);
    const mode = stat.mode & 0o777;
    if ((mode & 0o077) !== 0) throw new ClientError('permission_denied', `state key file ${path} is accessible by group or others (mode ${mode.toString(8)}): run chmod 600 ${path}`);
    if (stat.size !== STATE_KEY_BYTES) {
      throw new ClientError('malformed', `state key file ${path} is ${stat.size} bytes, not ${STATE_KEY_BYTES}: not a state key (a state key file holds the 32 raw key bytes)`);
    }
    const { bytesRead } = await h.read(bytes, 0, STATE_KEY_BYTES, 0);
    if (bytesRead !== STATE_KEY_BYTES) throw new ClientError('malformed', `state key file ${path}: read ${bytesRead} of its ${STATE_KEY_BYTES} bytes`);
    return SecretKey.from(bytes, 'aead');
  } catch (error) {
    throw error instanceof ClientError ? error : ioError('read', path, error);
  } finally {
    bytes.fill(0);
    await h.close();
  }
}

/** Makes the key file; undefined when one appeared meanwhile. */
async function makeStateKeyFile(path: string, crypto: ParleyCrypto): Promise<SecretKey | undefined> {
  const dir = dirname(path);
  const tmp = `${path}.${process.pid}.${Date.now()}.${tmpCounter++}.tmp`;
  const key = crypto.randomKey('aead', STATE_KEY_BYTES);
  let made = false;
  keyTempsInFlight.add(tmp);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const h = await open(tmp, 'wx', 0o600);
    try {
      await h.write(key.unsafeBytes(), 0, STATE_KEY_BYTES, 0);
      await h.sync();
    } finally {
      await h.close();
    }
    try {
      await link(tmp, path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // EEXIST: another maker's key is in place (read it); ENOENT: this temporary file was taken for a leftover
      // by a process that could not tell it is being written (another PID namespace): try again.
      if (code === 'EEXIST' || code === 'ENOENT') return undefined;
      throw error;
    }
    await rm(tmp, { force: true });
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
    made = true;
    return key;
  } catch (error) {
    throw ioError('create', path, error);
  } finally {
    if (!made) key.wipe();
    await rm(tmp, { force: true }).catch(() => undefined);
    keyTempsInFlight.delete(tmp);
  }
}

/** A StateStore in memory (tests, and agents that need no persistence but want the same code path). */
export function memoryStateStore(): StateStore & { readonly records: readonly Uint8Array[] } {
  let records: Uint8Array[] = [];
  return {
    get records() {
      return records;
    },
    load: () => Promise.resolve(records.slice()),
    append: (more) => {
      records.push(...more.map((r) => r.slice()));
      return Promise.resolve();
    },
    rewrite: (all) => {
      records = all.map((r) => r.slice());
      return Promise.resolve();
    },
    close: () => Promise.resolve(),
  };
}
