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
  /** Atomically replaces every record appended before this call (compaction); later appends follow the new records. */
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
 */
export function fileStateStore(path: string): StateStore {
  let handle: FileHandle | undefined;
  let size = 0;
  const ops: StoreOp[] = [];
  /** Whether the runner is working through `ops` (cleared in the same turn as it finds `ops` empty). */
  let running = false;

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
  };

  const rewriteFile = async (framed: Uint8Array): Promise<void> => {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.${process.pid}.${Date.now()}.${tmpCounter++}.tmp`;
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
    // The old handle is the replaced file's: never append to it again, whatever happens next.
    await closeHandle().catch(() => undefined);
    const dir = await open(dirname(path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    await ensureOpen();
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
          else await closeHandle();
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
