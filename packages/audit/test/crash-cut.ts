// The crash-cut sweep, shared by the fast loop (test/file-store.spec.ts: a 2-entry file) and the test-load
// target (test/load/file-store.spec.ts: 4 entries): the file cut at every byte offset reopens at its last
// whole entry, reports the torn tail, and appends on.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { encodeEntry, FILE_MAGIC, openFileStore, RECORD_OVERHEAD, verifyChain, type FileAuditStore, type FileStoreEvent, type FileStoreOptions } from '../src/index.js';
import { buildChain, crypto, writerA } from './fixtures.js';

let n = 0;

/** Writes a file store of `count` entries; its bytes and the offset where each record ends. */
export async function writeLog(dir: string, count: number): Promise<{ path: string; bytes: Uint8Array; boundaries: number[] }> {
  const path = join(dir, `log-${n++}.log`);
  const store = await openFileStore(crypto, path);
  const chain = buildChain(count);
  for (const e of chain) await store.append(e);
  await store.close();
  const boundaries = [FILE_MAGIC.length];
  for (const e of chain) boundaries.push(boundaries.at(-1)! + RECORD_OVERHEAD + encodeEntry(e).length);
  const bytes = new Uint8Array(readFileSync(path));
  expect(bytes.length).toBe(boundaries.at(-1));
  return { path, bytes, boundaries };
}

/** Opens a file store, collecting its events. */
export async function openCollecting(path: string, options: FileStoreOptions = {}): Promise<{ store: FileAuditStore; events: FileStoreEvent[] }> {
  const events: FileStoreEvent[] = [];
  const store = await openFileStore(crypto, path, { ...options, onEvent: (e) => events.push(e) });
  return { store, events };
}

/** Cuts a file of `entries` entries at every byte offset; each cut reopens, reports and appends on. */
export async function cutAtEveryOffset(dir: string, entries: number): Promise<void> {
  const { bytes, boundaries } = await writeLog(dir, entries);
  const chain = buildChain(entries + 1);
  for (let len = 0; len <= bytes.length; len++) {
    const path = join(dir, `cut-${entries}-${len}.log`);
    writeFileSync(path, bytes.subarray(0, len));
    const { store, events } = await openCollecting(path);
    const whole = boundaries.filter((b) => b <= len).length - 1; // records entirely within len
    const end = Math.max(FILE_MAGIC.length, boundaries[Math.max(0, whole)]!);
    expect(await store.size(), `cut at ${len}`).toBe(Math.max(0, whole));
    const isBoundary = len === 0 || boundaries.includes(len);
    if (isBoundary) {
      expect(events, `cut at ${len}`).toEqual([]);
    } else {
      expect(events, `cut at ${len}`).toMatchObject([
        { type: 'torn_record', action: 'cut', cause: len < FILE_MAGIC.length ? 'header' : 'incomplete', bytes: len < FILE_MAGIC.length ? len : len - end },
      ]);
    }
    expect(statSync(path).size, `cut at ${len}`).toBe(end);
    const size = await store.size();
    await store.append(chain[size]!);
    const result = await verifyChain(crypto, store.read(0, size + 1), { keys: writerA.publicKey });
    expect(result.ok, `cut at ${len}`).toBe(true);
    await store.close();
  }
}
