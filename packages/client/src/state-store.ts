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
 * - `rewrite` atomically replaces everything (a crash leaves the old or the new
 *   records, never a mix).
 */
import { mkdir, open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ClientError } from './errors.js';

/** Durable storage of the agent's sealed records. */
export interface StateStore {
  /** Every record appended since the last rewrite, in order; a torn last record is dropped. */
  load(): Promise<Uint8Array[]>;
  /** Appends records; resolves once they are durable. Rejects (and keeps nothing of the batch it cannot vouch for) on failure. */
  append(records: readonly Uint8Array[]): Promise<void>;
  /** Atomically replaces every record (compaction). */
  rewrite(records: readonly Uint8Array[]): Promise<void>;
  /** Waits for appends in flight and releases file handles (a later call reopens them). */
  close(): Promise<void>;
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

/**
 * A StateStore in one file: "PAJ1" ‖ framed records. Appends are
 * group-committed: records appended while a write and fsync are in flight go
 * out together in the next one, so many concurrent sends and receipts cost one
 * fsync. `rewrite` writes a temporary file (mode 0600) in the same directory,
 * fsyncs it, renames it over `path` and fsyncs the directory. A torn tail
 * found by `load` is cut off before the next append.
 */
export function fileStateStore(path: string): StateStore {
  let handle: FileHandle | undefined;
  let size = 0;
  let queue: { bytes: Uint8Array; resolve: () => void; reject: (e: unknown) => void }[] = [];
  let writing: Promise<void> | undefined;

  const ensureOpen = async (): Promise<FileHandle> => {
    if (handle !== undefined) return handle;
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const h = await open(path, 'a+', 0o600);
    const stat = await h.stat();
    if (stat.size === 0) {
      await h.write(MAGIC, 0, MAGIC.length, 0);
      await h.sync();
      size = MAGIC.length;
    } else size = stat.size;
    handle = h;
    return h;
  };

  const flush = async (): Promise<void> => {
    while (queue.length > 0) {
      const batch = queue;
      queue = [];
      const total = batch.reduce((n, b) => n + b.bytes.length, 0);
      const bytes = new Uint8Array(total);
      let at = 0;
      for (const b of batch) {
        bytes.set(b.bytes, at);
        at += b.bytes.length;
      }
      try {
        const h = await ensureOpen();
        const before = size;
        try {
          await h.write(bytes, 0, bytes.length, before);
          await h.datasync();
          size = before + bytes.length;
        } catch (error) {
          // Cut whatever part of the batch reached the file: none of it was promised durable.
          await h.truncate(before).catch(() => undefined);
          throw error;
        }
        for (const b of batch) b.resolve();
      } catch (error) {
        for (const b of batch) b.reject(error);
      }
    }
  };

  return {
    async load() {
      let bytes: Uint8Array;
      try {
        bytes = await readFile(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw error;
      }
      if (bytes.length === 0) return [];
      if (bytes.length < MAGIC.length || !MAGIC.every((b, i) => bytes[i] === b)) throw new ClientError('state_corrupt', `agent state file ${path}: bad header`);
      const { records, tornAt } = parseRecords(bytes, MAGIC.length);
      if (tornAt !== undefined) {
        const h = await ensureOpen();
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
      const done = new Promise<void>((resolve, reject) => queue.push({ bytes, resolve, reject }));
      if (writing === undefined) {
        writing = flush().finally(() => {
          writing = undefined;
        });
      }
      return done;
    },
    async rewrite(records) {
      while (writing !== undefined) await writing;
      await mkdir(dirname(path), { recursive: true, mode: 0o700 });
      const tmp = `${path}.${process.pid}.${Date.now()}.${tmpCounter++}.tmp`;
      const framed = frameRecords(records);
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
        await rename(tmp, path);
      } catch (error) {
        await rm(tmp, { force: true });
        throw error;
      }
      const dir = await open(dirname(path), 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
      if (handle !== undefined) await handle.close();
      handle = undefined;
      await ensureOpen();
    },
    async close() {
      while (writing !== undefined) await writing;
      await handle?.close();
      handle = undefined;
    },
  };
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
