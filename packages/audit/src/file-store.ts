/**
 * Append-only file store (docs/PROTOCOL.md §9.6). Layout:
 *
 *   file   = "PAUDIT1\n" ‖ record*
 *   record = u32be(n) ‖ entry (n bytes: protobuf AuditMessage, 1 ≤ n ≤ 1024)
 *            ‖ first 4 bytes of BLAKE3(u32be(n) ‖ entry)
 *
 * Crash safety. Records are only ever appended, one write each, and made
 * durable by fdatasync: after every record (`fsync: 'always'`, the default)
 * or in batches (`fsync: { entries, ms }`: after that many records or that
 * long after the first unsynced one, whichever comes first; a process crash
 * loses nothing that was written, a power failure loses at most that batch).
 * A crash can therefore leave only a torn tail: a partial last record, a last
 * record whose checksum fails, or zero-filled blocks the filesystem allocated
 * but never wrote (possibly after a damaged last record: a power loss with
 * batched fdatasync). `open` finds it, cuts the file back to the last whole
 * record, and reports it (an `onEvent` callback, else a process warning):
 * never silently.
 *
 * A damaged record that is NOT the tail (data follows it: bytes that are not
 * zeros, or a whole record inside the span its length claims) is not a crash
 * artefact, and the records before it are not the log. Every open refuses it
 * (`malformed`, naming the record's index and offset) — a writer rather than
 * throw away the data after it, a reader rather than present a shorter log as
 * the whole one — unless the caller opts in: a writer with
 * `onCorruption: 'truncate'` (cut from the damaged record), a reader with
 * `onCorruption: 'inspect'` (serve the records before it; a read that reaches
 * the end throws the same `malformed` after the last of them, so a verifier
 * reading the whole log reports the damage as a break at that index). A
 * read-only open never changes the file.
 *
 * One writer per file: a writable open holds `<path>.lock` (with its pid; a
 * lock left by a dead process is taken over). Readers take no lock.
 */
import { link, open, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { AuditMessage } from '@parley/proto';
import { toHex, type ParleyCrypto } from '@parley/crypto-core';
import { assertCrypto, assertFunction, assertObject, assertSafeInt, describe, malformed } from './assert.js';
import { AuditError, storageFailure } from './errors.js';
import { assertEntry, decodeEntry, digestEntry, encodeEntry, MAX_ENTRY_BYTES, ZERO_HASH } from './entry.js';
import { checkRange, decodeStream, type AuditStore } from './store.js';

/** The 8-byte file header. */
export const FILE_MAGIC: Uint8Array = new TextEncoder().encode('PAUDIT1\n');
/** Bytes around each entry: u32 length and 4-byte checksum. */
export const RECORD_OVERHEAD = 8;
const CHUNK = 1 << 20;

/** When appended records are made durable. */
export type FsyncPolicy =
  /** fdatasync after every record. */
  | 'always'
  /** fdatasync after `entries` unsynced records, or `ms` after the first unsynced one (at least one of the two). */
  | { readonly entries?: number; readonly ms?: number };

/** Why the tail (or a record) was judged damaged. */
export type DamageCause = 'header' | 'incomplete' | 'checksum' | 'zeros' | 'corrupt';

/** A torn or corrupt region found on open. */
export interface FileDamage {
  /** File offset of the first damaged byte (the end of the last whole record). */
  readonly offset: number;
  /** Bytes from there to the end of the file. */
  readonly bytes: number;
  /** Whole records before it (the store's size). */
  readonly entries: number;
  readonly cause: DamageCause;
}

/** Reported through `onEvent` (or as a process warning when there is no handler). */
export type FileStoreEvent =
  | ({ readonly type: 'torn_record'; readonly path: string; readonly action: 'cut' | 'ignored' } & FileDamage)
  | { readonly type: 'sync_failed'; readonly path: string; readonly error: unknown };

/** Options of {@link openFileStore}. */
export interface FileStoreOptions {
  /** Default `'always'`. */
  readonly fsync?: FsyncPolicy;
  /** Open without the lock and never change the file (verification, proofs). Default false. */
  readonly readOnly?: boolean;
  /**
   * A damaged record followed by more data (not a torn tail): `'fail'` (default, readers and writers) refuses to
   * open (`malformed`); `'truncate'` (writers only) cuts the file from it; `'inspect'` (readers only) opens it:
   * `size()` counts the records before it, `damage` and `corruption` describe it, and a read that reaches the
   * end throws `corruption` after the last record (so `verifyChain` over the whole log reports it as a break).
   */
  readonly onCorruption?: 'fail' | 'truncate' | 'inspect';
  /** Receives torn-record and sync-failure events; default: `process.emitWarning`. */
  readonly onEvent?: (event: FileStoreEvent) => void;
}

/** Growable list of record offsets. */
class Offsets {
  #a = new Float64Array(1024);
  #n = 0;
  get count(): number {
    return this.#n;
  }
  push(v: number): void {
    if (this.#n === this.#a.length) {
      const next = new Float64Array(this.#a.length * 2);
      next.set(this.#a);
      this.#a = next;
    }
    this.#a[this.#n++] = v;
  }
  at(i: number): number {
    return this.#a[i]!;
  }
}

function checksum(crypto: ParleyCrypto, framed: Uint8Array): Uint8Array {
  return crypto.blake3(framed).subarray(0, 4);
}

/** u32be(n) ‖ payload ‖ checksum. */
function frame(crypto: ParleyCrypto, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(RECORD_OVERHEAD + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length, false);
  out.set(payload, 4);
  out.set(checksum(crypto, out.subarray(0, 4 + payload.length)), 4 + payload.length);
  return out;
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === length ? buf : buf.subarray(0, done);
}

async function allZero(fh: FileHandle, from: number, to: number): Promise<boolean> {
  for (let o = from; o < to; o += CHUNK) {
    const chunk = await readAt(fh, o, Math.min(CHUNK, to - o));
    if (chunk.some((b) => b !== 0)) return false;
  }
  return true;
}

/**
 * Whether a whole record (a length in range and a checksum that matches) starts after `from` and within the
 * longest span a record at `from` can claim: data after a damaged record, so it is no torn tail. A torn record is
 * a prefix of one record's bytes (and zeros), in which a valid frame has a chance of 2^-32 per position.
 */
async function wholeRecordWithin(crypto: ParleyCrypto, fh: FileHandle, from: number, fileSize: number): Promise<boolean> {
  const buf = await readAt(fh, from, Math.min(fileSize - from, 2 * (RECORD_OVERHEAD + MAX_ENTRY_BYTES)));
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let q = 1; q <= RECORD_OVERHEAD + MAX_ENTRY_BYTES && q + RECORD_OVERHEAD < buf.length; q++) {
    const n = view.getUint32(q, false);
    if (n < 1 || n > MAX_ENTRY_BYTES || q + RECORD_OVERHEAD + n > buf.length) continue;
    if (crypto.constantTimeEqual(checksum(crypto, buf.subarray(q, q + 4 + n)), buf.subarray(q + 4 + n, q + RECORD_OVERHEAD + n))) return true;
  }
  return false;
}

/**
 * The error for a damaged record with data after it (see the module comment): `malformed`, naming the record's
 * index and offset. The same error whoever meets it — an open without the opt-in, a read in `inspect` mode.
 */
function corruptionError(path: string, damage: FileDamage, readOnly: boolean): AuditError {
  const hint = readOnly
    ? `to read the ${damage.entries} records before it, open with onCorruption: 'inspect'`
    : "nothing is cut (to cut the file from it, pass onCorruption: 'truncate'; to inspect it, open read-only with onCorruption: 'inspect')";
  return new AuditError(
    'malformed',
    `${path}: record ${damage.entries} at offset ${damage.offset} is damaged and data follows it (${damage.bytes} bytes from there to the end): not a torn tail; ${hint}`,
  );
}

interface ScanResult {
  readonly offsets: Offsets;
  readonly end: number;
  readonly last?: Uint8Array;
  readonly damage?: Omit<FileDamage, 'entries'>;
}

/** Walks every record from the header on, checking lengths and checksums. */
async function scan(crypto: ParleyCrypto, fh: FileHandle, fileSize: number): Promise<ScanResult> {
  const offsets = new Offsets();
  let pos = FILE_MAGIC.length;
  let buf = new Uint8Array(0);
  let bufStart = pos;
  let last: Uint8Array | undefined;
  const damaged = (cause: DamageCause): ScanResult =>
    last === undefined
      ? { offsets, end: pos, damage: { offset: pos, bytes: fileSize - pos, cause } }
      : { offsets, end: pos, last, damage: { offset: pos, bytes: fileSize - pos, cause } };
  while (pos < fileSize) {
    const rem = fileSize - pos;
    const want = Math.min(rem, RECORD_OVERHEAD + MAX_ENTRY_BYTES);
    if (bufStart + buf.length - pos < want) {
      const keep = buf.subarray(pos - bufStart);
      const more = await readAt(fh, pos + keep.length, Math.min(CHUNK, fileSize - pos - keep.length));
      const next = new Uint8Array(keep.length + more.length);
      next.set(keep);
      next.set(more, keep.length);
      buf = next;
      bufStart = pos;
    }
    const view = buf.subarray(pos - bufStart);
    if (rem < 4) return damaged('incomplete');
    const n = new DataView(view.buffer, view.byteOffset, 4).getUint32(0, false);
    if (n < 1 || n > MAX_ENTRY_BYTES) return damaged((await allZero(fh, pos, fileSize)) ? 'zeros' : 'corrupt');
    // A partial last record, or one failing its checksum with nothing but zeros after it, is a torn write (a power
    // loss with batched fdatasync can leave zero-filled pages after it) — unless a whole record lies within the span
    // its length claims: then the length itself is damaged, and the data after it is records, not a tear.
    if (rem < RECORD_OVERHEAD + n) return damaged((await wholeRecordWithin(crypto, fh, pos, fileSize)) ? 'corrupt' : 'incomplete');
    if (!crypto.constantTimeEqual(checksum(crypto, view.subarray(0, 4 + n)), view.subarray(4 + n, RECORD_OVERHEAD + n))) {
      const torn = (await allZero(fh, pos + RECORD_OVERHEAD + n, fileSize)) && !(await wholeRecordWithin(crypto, fh, pos, fileSize));
      return damaged(torn ? 'checksum' : 'corrupt');
    }
    offsets.push(pos);
    last = view.subarray(4, 4 + n);
    pos += RECORD_OVERHEAD + n;
  }
  return last === undefined ? { offsets, end: pos } : { offsets, end: pos, last: last.slice() };
}

function checkOptions(options: unknown): Required<Pick<FileStoreOptions, 'readOnly' | 'onCorruption'>> & FileStoreOptions {
  const o = assertObject(options, 'options');
  const fsync = o['fsync'] === undefined ? 'always' : o['fsync'];
  if (fsync !== 'always') {
    const f = assertObject(fsync, 'options.fsync');
    if (f['entries'] === undefined && f['ms'] === undefined) malformed("options.fsync must be 'always' or { entries?, ms? } with at least one");
    if (f['entries'] !== undefined) assertSafeInt(f['entries'], 'options.fsync.entries', 1, 1_000_000);
    if (f['ms'] !== undefined) assertSafeInt(f['ms'], 'options.fsync.ms', 1, 60_000);
  }
  const readOnly = o['readOnly'] === undefined ? false : o['readOnly'];
  if (typeof readOnly !== 'boolean') malformed(`options.readOnly must be a boolean, got ${describe(readOnly)}`);
  const onCorruption = o['onCorruption'] === undefined ? 'fail' : o['onCorruption'];
  if (onCorruption !== 'fail' && onCorruption !== 'truncate' && onCorruption !== 'inspect') malformed("options.onCorruption must be 'fail', 'truncate' or 'inspect'");
  if (onCorruption === 'truncate' && readOnly) malformed("options.onCorruption 'truncate' needs a writable open (a read-only store never changes the file): use 'inspect'");
  if (onCorruption === 'inspect' && !readOnly) malformed("options.onCorruption 'inspect' is for a read-only open (readOnly: true): a writer cannot append after a damaged record");
  if (o['onEvent'] !== undefined) assertFunction(o['onEvent'], 'options.onEvent');
  return { ...(options as FileStoreOptions), fsync: fsync as FsyncPolicy, readOnly, onCorruption };
}

/**
 * Takes `<file>.lock` atomically. The lock file appears only by `link()` of a
 * complete temporary file (pid already written), and link fails if the path
 * exists, so two processes can never both create it. A lock whose pid is dead
 * is removed only by the process that first hard-links it to
 * `<file>.lock.takeover-<dev>-<ino>` (link is exclusive, and captures the file
 * that is at the lock path at that instant) and then finds, through that link,
 * the same file with a dead pid. Only that process may unlink the lock path
 * while it holds that file, so a fresh lock is never removed in its place.
 * Everyone then races on `link()` again, which exactly one wins.
 */
async function takeLock(crypto: ParleyCrypto, lockPath: string): Promise<void> {
  const tmp = `${lockPath}.${process.pid}.${toHex(crypto.randomBytes(8))}.tmp`;
  try {
    await writeFile(tmp, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
  } catch (cause) {
    throw storageFailure(`creating lock file ${lockPath}`, cause);
  }
  const stale = (h: { pid: number | undefined }): boolean => h.pid === undefined || !isAlive(h.pid);
  try {
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        await link(tmp, lockPath);
        return;
      } catch (cause) {
        if (errno(cause) !== 'EEXIST') throw storageFailure(`creating lock file ${lockPath}`, cause);
      }
      const holder = await readLock(lockPath);
      if (holder === undefined) continue; // gone in the meantime: race for it again
      if (!stale(holder)) throw new AuditError('storage_failure', `audit file is locked by process ${holder.pid} (${lockPath})`);
      const guard = `${lockPath}.takeover-${holder.dev}-${holder.ino}`;
      try {
        await link(lockPath, guard);
      } catch (cause) {
        if (errno(cause) === 'ENOENT') continue;
        if (errno(cause) !== 'EEXIST') throw storageFailure(`taking over the lock ${lockPath}`, cause);
        // Another process is taking this stale lock over: wait for it, then look again.
        await new Promise((resolve) => setTimeout(resolve, 2 + Math.random() * 8));
        continue;
      }
      try {
        const held = await readLock(guard);
        if (held !== undefined && held.ino === holder.ino && held.dev === holder.dev && stale(held)) await unlink(lockPath);
      } finally {
        await unlink(guard).catch(() => undefined);
      }
    }
    throw new AuditError('storage_failure', `could not take the lock ${lockPath} (a takeover of a stale lock is in progress, or was abandoned: remove ${lockPath}.takeover-*)`);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** The pid in a lock file and the file's identity; undefined when there is no lock file. */
async function readLock(lockPath: string): Promise<{ pid: number | undefined; ino: number; dev: number } | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(lockPath, 'r');
  } catch (cause) {
    if (errno(cause) === 'ENOENT') return undefined;
    throw storageFailure(`reading lock file ${lockPath}`, cause);
  }
  try {
    const { ino, dev } = await fh.stat();
    const pid = Number.parseInt(await fh.readFile('utf8'), 10);
    return { pid: Number.isSafeInteger(pid) && pid > 0 ? pid : undefined, ino, dev };
  } catch (cause) {
    throw storageFailure(`reading lock file ${lockPath}`, cause);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

function errno(error: unknown): unknown {
  return (error as { code?: unknown } | null)?.code;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (cause) {
    return (cause as { code?: unknown }).code === 'EPERM';
  }
}

async function syncDir(path: string): Promise<void> {
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/**
 * Opens (creating if needed) an append-only audit file.
 *
 * @param crypto ParleyCrypto from `createCrypto()` (record checksums, the tip's entry hash)
 * @param path file path
 * @param options fsync policy, read-only mode, corruption policy, event handler
 * @returns the store
 * @throws AuditError `not_found` (read-only and missing), `malformed` (not an audit file, or a damaged record with
 *   data after it, without `onCorruption: 'truncate'` (writer) or `'inspect'` (reader)), `storage_failure` (I/O, or
 *   locked by a live process)
 * @example
 * const store = await openFileStore(crypto, '/var/lib/parley/audit.log', { fsync: { entries: 256, ms: 20 } });
 */
export async function openFileStore(crypto: ParleyCrypto, path: string, options: FileStoreOptions = {}): Promise<FileAuditStore> {
  assertCrypto(crypto);
  if (typeof path !== 'string' || path.length === 0) malformed(`path must be a non-empty string, got ${describe(path)}`);
  const opts = checkOptions(options);
  const lockPath = `${path}.lock`;
  if (!opts.readOnly) await takeLock(crypto, lockPath);
  let fh: FileHandle | undefined;
  try {
    let created = false;
    try {
      fh = await open(path, opts.readOnly ? 'r' : 'r+');
    } catch (cause) {
      if ((cause as { code?: unknown }).code !== 'ENOENT') throw storageFailure(`opening ${path}`, cause);
      if (opts.readOnly) throw new AuditError('not_found', `no audit file at ${path}`, { cause });
      fh = await open(path, 'wx+', 0o600);
      created = true;
    }
    const store = await FileAuditStore.init(crypto, path, fh, opts, created);
    fh = undefined;
    return store;
  } catch (cause) {
    await fh?.close().catch(() => undefined);
    if (!opts.readOnly) await unlink(lockPath).catch(() => undefined);
    throw storageFailure(`opening ${path}`, cause);
  }
}

/** The file backend; see {@link openFileStore}. */
export class FileAuditStore implements AuditStore {
  readonly kind = 'file';
  /** The file path. */
  readonly path: string;
  /** The torn or corrupt region found on open (cut, unless read-only), if any. */
  readonly damage: FileDamage | undefined;
  /**
   * With `onCorruption: 'inspect'`: the `malformed` error an open without it throws (a damaged record with data
   * after it), which a read reaching the end throws too; undefined otherwise (a whole file, or a torn tail).
   */
  readonly corruption: AuditError | undefined;
  readonly #crypto: ParleyCrypto;
  readonly #fh: FileHandle;
  readonly #opts: ReturnType<typeof checkOptions>;
  readonly #offsets: Offsets;
  #end: number;
  #tip: Uint8Array;
  #queue: Promise<unknown> = Promise.resolve();
  #unsynced = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #failure: AuditError | undefined;
  #closed = false;

  private constructor(
    crypto: ParleyCrypto,
    path: string,
    fh: FileHandle,
    opts: ReturnType<typeof checkOptions>,
    scanned: ScanResult,
    tip: Uint8Array,
    damage: FileDamage | undefined,
  ) {
    this.#crypto = crypto;
    this.path = path;
    this.#fh = fh;
    this.#opts = opts;
    this.#offsets = scanned.offsets;
    this.#end = scanned.end;
    this.#tip = tip;
    this.damage = damage;
    this.corruption = damage?.cause === 'corrupt' && opts.onCorruption === 'inspect' ? corruptionError(path, damage, true) : undefined;
  }

  /** @internal */
  static async init(crypto: ParleyCrypto, path: string, fh: FileHandle, opts: ReturnType<typeof checkOptions>, created: boolean): Promise<FileAuditStore> {
    const emit = (event: FileStoreEvent): void => emitEvent(opts, event);
    const { size: fileSize } = await fh.stat();
    const head = await readAt(fh, 0, Math.min(fileSize, FILE_MAGIC.length));
    if (!crypto.constantTimeEqual(head, FILE_MAGIC.subarray(0, head.length))) {
      throw new AuditError('malformed', `${path} is not a Parley audit file (bad header)`);
    }
    if (fileSize < FILE_MAGIC.length) {
      // New, or a crash while the header was being written.
      const damage: FileDamage | undefined =
        fileSize > 0 ? { offset: 0, bytes: fileSize, entries: 0, cause: 'header' } : undefined;
      if (!opts.readOnly) {
        await fh.truncate(0);
        await fh.write(FILE_MAGIC, 0, FILE_MAGIC.length, 0);
        await fh.datasync();
        if (created) await syncDir(path);
      }
      if (damage !== undefined) emit({ type: 'torn_record', path, action: opts.readOnly ? 'ignored' : 'cut', ...damage });
      return new FileAuditStore(crypto, path, fh, opts, { offsets: new Offsets(), end: FILE_MAGIC.length }, ZERO_HASH, damage);
    }
    const scanned = await scan(crypto, fh, fileSize);
    let damage: FileDamage | undefined;
    if (scanned.damage !== undefined) {
      damage = { ...scanned.damage, entries: scanned.offsets.count };
      // Readers and writers alike: a damaged record with data after it is refused unless the caller opted in.
      if (damage.cause === 'corrupt' && opts.onCorruption === 'fail') throw corruptionError(path, damage, opts.readOnly);
      if (!opts.readOnly) {
        await fh.truncate(damage.offset);
        await fh.datasync();
      }
      emit({ type: 'torn_record', path, action: opts.readOnly ? 'ignored' : 'cut', ...damage });
    }
    let tip = ZERO_HASH;
    if (scanned.last !== undefined) {
      try {
        tip = digestEntry(crypto, decodeEntry(scanned.last)).entryHash;
      } catch (cause) {
        if (!opts.readOnly) throw new AuditError('malformed', `${path}: the last entry does not decode; refusing to extend it`, { cause });
      }
    }
    return new FileAuditStore(crypto, path, fh, opts, scanned, tip, damage);
  }

  /** Number of whole records. */
  async size(): Promise<number> {
    this.#check(false);
    return this.#offsets.count;
  }

  /** Appends one entry (see {@link AuditStore.append}); durable per the fsync policy. */
  append(entry: AuditMessage): Promise<void> {
    const run = async (): Promise<void> => {
      this.#check(true);
      assertEntry(entry);
      const size = this.#offsets.count;
      if (entry.index !== BigInt(size)) throw new AuditError('conflict', `entry index ${entry.index} is not the next index ${size}`);
      if (!this.#crypto.constantTimeEqual(entry.previousHash, this.#tip)) {
        throw new AuditError('bad_link', `entry ${size}'s previous_hash is not the entry hash of entry ${size - 1}`);
      }
      const record = frame(this.#crypto, encodeEntry(entry));
      const tip = digestEntry(this.#crypto, entry).entryHash;
      try {
        // A synchronous pwrite: a small record reaches the page cache in microseconds, where the
        // thread-pool round trip of an async write costs ~10x more. Durability is fdatasync's job.
        let done = 0;
        while (done < record.length) done += writeSync(this.#fh.fd, record, done, record.length - done, this.#end + done);
      } catch (cause) {
        // The file may now end in a partial record: stop here; reopening cuts it.
        throw this.#poison(storageFailure(`writing ${this.path}`, cause));
      }
      this.#offsets.push(this.#end);
      this.#end += record.length;
      this.#tip = tip;
      this.#unsynced++;
      await this.#afterWrite();
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** Makes every written record durable now (fdatasync). */
  async sync(): Promise<void> {
    this.#check(true);
    await this.#sync();
  }

  /** Protobuf bytes of entries [from, to), checksums checked. */
  readEncoded(from: number, to: number): AsyncIterable<Uint8Array> {
    return this.#records(from, to);
  }

  /** Decoded entries [from, to). */
  read(from: number, to: number): AsyncIterable<AuditMessage> {
    return decodeStream(this.readEncoded(from, to), from);
  }

  /** Waits for pending appends, syncs, closes the file and releases the lock. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#queue;
    this.#closed = true;
    clearTimeout(this.#timer);
    try {
      if (!this.#opts.readOnly && this.#unsynced > 0 && this.#failure === undefined) await this.#fh.datasync();
    } catch (cause) {
      throw storageFailure(`fdatasync of ${this.path} on close`, cause);
    } finally {
      await this.#fh.close().catch(() => undefined);
      if (!this.#opts.readOnly) await unlink(`${this.path}.lock`).catch(() => undefined);
    }
  }

  async *#records(from: number, to: number): AsyncIterable<Uint8Array> {
    this.#check(false);
    checkRange(from, to, this.#offsets.count);
    yield* this.#recordsIn(from, to);
    // Inspecting a damaged file: the log does not end here, it breaks. Whoever reads to the end hears of it.
    if (this.corruption !== undefined && to === this.#offsets.count) throw this.corruption;
  }

  async *#recordsIn(from: number, to: number): AsyncIterable<Uint8Array> {
    const offsets = this.#offsets;
    const offsetOf = (i: number): number => (i < offsets.count ? offsets.at(i) : this.#end);
    let i = from;
    while (i < to) {
      // One read per batch of whole records of up to ~1 MiB.
      const start = offsetOf(i);
      let j = i + 1;
      while (j < to && offsetOf(j + 1) - start <= CHUNK) j++;
      this.#check(false);
      let chunk: Uint8Array;
      try {
        chunk = await readAt(this.#fh, start, offsetOf(j) - start);
      } catch (cause) {
        throw storageFailure(`reading ${this.path}`, cause);
      }
      for (; i < j; i++) {
        const at = offsetOf(i) - start;
        const len = offsetOf(i + 1) - offsetOf(i) - RECORD_OVERHEAD;
        const rec = chunk.subarray(at, at + RECORD_OVERHEAD + len);
        const n = rec.length >= 4 ? new DataView(rec.buffer, rec.byteOffset, 4).getUint32(0, false) : -1;
        if (n !== len || !this.#crypto.constantTimeEqual(checksum(this.#crypto, rec.subarray(0, 4 + len)), rec.subarray(4 + len))) {
          throw new AuditError('malformed', `record ${i} at offset ${offsetOf(i)} of ${this.path} fails its checksum`);
        }
        yield rec.slice(4, 4 + len);
      }
    }
  }

  async #afterWrite(): Promise<void> {
    const policy = this.#opts.fsync ?? 'always';
    if (policy === 'always') return this.#sync();
    if (policy.entries !== undefined && this.#unsynced >= policy.entries) return this.#sync();
    if (policy.ms !== undefined && this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (!this.#closed) this.#sync().catch(() => undefined); // a failure poisons the store and is reported
      }, policy.ms);
      this.#timer.unref();
    }
  }

  async #sync(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#unsynced === 0) return;
    const pending = this.#unsynced;
    this.#unsynced = 0;
    try {
      await this.#fh.datasync();
    } catch (cause) {
      this.#unsynced += pending;
      const error = this.#poison(storageFailure(`fdatasync of ${this.path}`, cause));
      this.#emit({ type: 'sync_failed', path: this.path, error });
      throw error;
    }
  }

  #poison(error: AuditError): AuditError {
    this.#failure ??= error;
    return error;
  }

  #emit(event: FileStoreEvent): void {
    emitEvent(this.#opts, event);
  }

  #check(write: boolean): void {
    if (this.#closed) throw new AuditError('storage_failure', `audit file ${this.path} is closed`);
    if (write && this.#opts.readOnly) throw new AuditError('storage_failure', `audit file ${this.path} is open read-only`);
    if (write && this.#failure !== undefined) {
      throw new AuditError('storage_failure', `audit file ${this.path} failed earlier; reopen it`, { cause: this.#failure });
    }
  }
}

/** Reports an event to the handler, or as a process warning when there is none: never silently. */
function emitEvent(opts: FileStoreOptions, event: FileStoreEvent): void {
  if (opts.onEvent !== undefined) opts.onEvent(event);
  else process.emitWarning(describeEvent(event), { type: 'ParleyAuditWarning', code: `PARLEY_AUDIT_${event.type.toUpperCase()}` });
}

function describeEvent(event: FileStoreEvent): string {
  if (event.type === 'sync_failed') return `audit file ${event.path}: fdatasync failed; the store refuses further appends`;
  const what = event.cause === 'corrupt' ? 'a damaged record' : 'a torn record';
  return `audit file ${event.path}: ${what} (${event.cause}) at offset ${event.offset}, ${event.bytes} bytes after ${event.entries} whole entries: ${event.action === 'cut' ? 'cut' : 'ignored (read-only)'}`;
}
