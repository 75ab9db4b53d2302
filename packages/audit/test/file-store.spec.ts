// The shared store suite on the append-only file (per-entry and batched
// fsync), and crash recovery: a file truncated at every byte offset reopens
// at its last whole entry; torn, zero-filled and corrupt tails; locking.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AuditLog,
  openFileStore,
  RECORD_OVERHEAD,
  verifyChain,
  type AuditStore,
  type FileStoreOptions,
} from '../src/index.js';
import { buildChain, crypto, fieldsFor, writerA, WRONG, tempDir } from './fixtures.js';
import { cutAtEveryOffset, openCollecting, writeLog } from './crash-cut.js';
import { storeSuite } from './store-suite.js';

const dir = tempDir();
let n = 0;

function fileBackend(options: FileStoreOptions) {
  return () => {
    const path = join(dir, `suite-${n++}.log`);
    return {
      open: () => openFileStore(crypto, path, options),
      reopen: async (store: AuditStore) => {
        await store.close();
        return openFileStore(crypto, path, options);
      },
    };
  };
}

storeSuite('file, fsync always', fileBackend({ fsync: 'always' }));
storeSuite('file, fsync batched', fileBackend({ fsync: { entries: 7, ms: 5 } }));

describe('crash recovery', () => {
  // Every offset of a 4-entry file is test/load/file-store.spec.ts's.
  it('a file cut at every byte offset (2 entries) reopens at its last whole entry, says so, and appends on', async () => {
    await cutAtEveryOffset(dir, 2);
  });

  it('a zero-filled tail (blocks allocated, never written) is cut', async () => {
    const { path, bytes } = await writeLog(dir, 3);
    writeFileSync(path, Buffer.concat([bytes, new Uint8Array(8192)]));
    const { store, events } = await openCollecting(path);
    expect(await store.size()).toBe(3);
    expect(events).toMatchObject([{ cause: 'zeros', bytes: 8192, entries: 3, action: 'cut' }]);
    expect(statSync(path).size).toBe(bytes.length);
    await store.close();
  });

  it('a last record that fails its checksum is cut as torn', async () => {
    const { path, bytes, boundaries } = await writeLog(dir, 3);
    const copy = new Uint8Array(bytes);
    copy[boundaries[2]! + 10]! ^= 0x40;
    writeFileSync(path, copy);
    const { store, events } = await openCollecting(path);
    expect(await store.size()).toBe(2);
    expect(events).toMatchObject([{ cause: 'checksum', offset: boundaries[2], entries: 2 }]);
    await store.close();
  });

  it('a half-zeroed last record followed by zero pages (power loss, batched fsync) is cut as torn', async () => {
    const { path, bytes, boundaries } = await writeLog(dir, 3);
    const copy = new Uint8Array(bytes);
    const mid = boundaries[2]! + Math.floor((boundaries[3]! - boundaries[2]!) / 2);
    copy.fill(0, mid);
    writeFileSync(path, Buffer.concat([copy, new Uint8Array(8192)]));
    const { store, events } = await openCollecting(path);
    expect(await store.size()).toBe(2);
    expect(events).toMatchObject([{ type: 'torn_record', action: 'cut', cause: 'checksum', offset: boundaries[2], bytes: bytes.length - boundaries[2]! + 8192, entries: 2 }]);
    expect(statSync(path).size).toBe(boundaries[2]);
    await store.append(buildChain(3)[2]!);
    expect((await verifyChain(crypto, store.read(0, 3), { keys: writerA.publicKey })).ok).toBe(true);
    await store.close();
  });

  it('a damaged last record followed by zeros and then data is still corruption', async () => {
    const { path, bytes, boundaries } = await writeLog(dir, 3);
    const copy = new Uint8Array(bytes);
    copy[boundaries[2]! + 10]! ^= 0x40;
    writeFileSync(path, Buffer.concat([copy, new Uint8Array(4096), new Uint8Array([1])]));
    await expect(openFileStore(crypto, path, { onEvent: () => undefined })).rejects.toMatchObject({ code: 'malformed' });
  });

  it('a damaged record with data after it is corruption: refused by writers and readers, inspected or cut only on request', async () => {
    const { path, bytes, boundaries } = await writeLog(dir, 4);
    const copy = new Uint8Array(bytes);
    copy[boundaries[1]! + 12]! ^= 0x01;
    writeFileSync(path, copy);
    const named = { code: 'malformed', message: expect.stringContaining(`record 1 at offset ${boundaries[1]} is damaged and data follows it`) as unknown as string };
    await expect(openFileStore(crypto, path, { onEvent: () => undefined })).rejects.toMatchObject(named);
    expect(existsSync(`${path}.lock`)).toBe(false); // released on failure
    await expect(openCollecting(path, { readOnly: true })).rejects.toMatchObject(named);
    const ro = await openCollecting(path, { readOnly: true, onCorruption: 'inspect' });
    expect(await ro.store.size()).toBe(1);
    expect(ro.store.damage).toMatchObject({ cause: 'corrupt', offset: boundaries[1], entries: 1 });
    expect(ro.store.corruption).toMatchObject(named);
    expect(ro.events).toMatchObject([{ action: 'ignored', cause: 'corrupt' }]);
    await ro.store.close();
    expect(readFileSync(path).length).toBe(bytes.length); // read-only never changes the file
    const { store, events } = await openCollecting(path, { onCorruption: 'truncate' });
    expect(await store.size()).toBe(1);
    expect(events).toMatchObject([{ action: 'cut', cause: 'corrupt' }]);
    await store.close();
  });

  it('a library reader never takes a file with a corrupt middle record for a shorter valid log (10 entries, one byte flipped)', async () => {
    const { path, bytes, boundaries } = await writeLog(dir, 10);
    const copy = new Uint8Array(bytes);
    copy[boundaries[4]! + 20]! ^= 0x08; // inside entry 4's protobuf: its checksum fails, entries 5..9 follow
    writeFileSync(path, copy);
    // The auditor's steps of the README, unchanged: the open itself refuses, naming the record and its offset.
    await expect(openFileStore(crypto, path, { readOnly: true })).rejects.toMatchObject({
      code: 'malformed',
      message: expect.stringMatching(new RegExp(`record 4 at offset ${boundaries[4]} is damaged and data follows it.*onCorruption: 'inspect'`)) as unknown as string,
    });
    // Opted in: the four records before it can be read, but a verification of the whole log breaks at 4.
    const reader = await openFileStore(crypto, path, { readOnly: true, onCorruption: 'inspect', onEvent: () => undefined });
    expect(await reader.size()).toBe(4);
    expect(reader.damage).toMatchObject({ offset: boundaries[4], cause: 'corrupt', entries: 4 });
    expect(await verifyChain(crypto, reader.read(0, await reader.size()), { keys: writerA.publicKey })).toMatchObject({
      ok: false,
      index: 4,
      reason: 'malformed',
      detail: expect.stringContaining(`record 4 at offset ${boundaries[4]} is damaged`) as unknown as string,
    });
    expect(await verifyChain(crypto, reader.read(0, 3), { keys: writerA.publicKey })).toMatchObject({ ok: true, size: 3 }); // a prefix, asked for as such
    await reader.close();
    // A writer refuses it too, and cuts nothing.
    await expect(openFileStore(crypto, path, { onEvent: () => undefined })).rejects.toMatchObject({ code: 'malformed' });
    expect(readFileSync(path)).toEqual(Buffer.from(copy));
  });

  it('a damaged length that swallows whole records is corruption, not a torn tail: neither a writer nor a reader drops them', async () => {
    const { path, bytes, boundaries } = await writeLog(dir, 3);
    const length = (b: number): number => boundaries[b + 1]! - boundaries[b]! - RECORD_OVERHEAD;
    // Record 1's length claims record 2 too: exactly (its checksum then fails with nothing after it), or beyond
    // the end of the file (a "partial" record). Both looked like a torn tail, and a writer cut entry 2 with it.
    for (const claimed of [length(1) + RECORD_OVERHEAD + length(2), length(1) + RECORD_OVERHEAD + length(2) + 7]) {
      const copy = new Uint8Array(bytes);
      new DataView(copy.buffer).setUint32(boundaries[1]!, claimed, false);
      writeFileSync(path, copy);
      await expect(openFileStore(crypto, path, { onEvent: () => undefined }), `length ${claimed}`).rejects.toMatchObject({
        code: 'malformed',
        message: expect.stringContaining(`record 1 at offset ${boundaries[1]} is damaged`) as unknown as string,
      });
      expect(readFileSync(path), `length ${claimed}`).toEqual(Buffer.from(copy)); // nothing cut
      await expect(openFileStore(crypto, path, { readOnly: true }), `length ${claimed}`).rejects.toMatchObject({ code: 'malformed' });
      const { store } = await openCollecting(path, { readOnly: true, onCorruption: 'inspect' });
      expect(store.damage, `length ${claimed}`).toMatchObject({ cause: 'corrupt', entries: 1 });
      expect(await verifyChain(crypto, store.read(0, 1), { keys: writerA.publicKey })).toMatchObject({ ok: false, index: 1, reason: 'malformed' });
      await store.close();
    }
  });

  it('a read-only open of a torn file leaves it alone and reports the tear', async () => {
    const { path, bytes } = await writeLog(dir, 2);
    writeFileSync(path, bytes.subarray(0, bytes.length - 5));
    const { store, events } = await openCollecting(path, { readOnly: true });
    expect(await store.size()).toBe(1);
    expect(events).toMatchObject([{ action: 'ignored', cause: 'incomplete' }]);
    await expect(store.append(buildChain(2)[1]!)).rejects.toMatchObject({ code: 'storage_failure' });
    await store.close();
    expect(readFileSync(path).length).toBe(bytes.length - 5);
  });

  it('without a handler, a cut is a process warning (never silent)', async () => {
    const { path, bytes } = await writeLog(dir, 2);
    writeFileSync(path, bytes.subarray(0, bytes.length - 3));
    const warnings: Error[] = [];
    const listener = (w: Error) => warnings.push(w);
    process.on('warning', listener);
    try {
      const store = await openFileStore(crypto, path);
      await new Promise((r) => setImmediate(r));
      await store.close();
    } finally {
      process.off('warning', listener);
    }
    expect(warnings.map((w) => (w as Error & { code?: string }).code)).toContain('PARLEY_AUDIT_TORN_RECORD');
  });

  it('a record rewritten on disk with a valid checksum is caught by the verifier', async () => {
    const { path, bytes, boundaries } = await writeLog(dir, 5);
    const copy = new Uint8Array(bytes);
    const at = boundaries[2]!;
    const len = new DataView(copy.buffer).getUint32(at);
    copy[at + 4 + len - 1]! ^= 0x02; // last byte of entry 2: inside its signature
    copy.set(crypto.blake3(copy.subarray(at, at + 4 + len)).subarray(0, 4), at + 4 + len);
    writeFileSync(path, copy);
    const store = await openFileStore(crypto, path, { readOnly: true });
    expect(await verifyChain(crypto, store.read(0, 5), { keys: writerA.publicKey })).toMatchObject({ ok: false, index: 2, reason: 'modified' });
    await store.close();
  });

  it('a record damaged after open fails its checksum on read: malformed at that index', async () => {
    const { path, bytes, boundaries } = await writeLog(dir, 5);
    const store = await openFileStore(crypto, path, { readOnly: true });
    const copy = new Uint8Array(bytes);
    copy[boundaries[3]! + 9]! ^= 0x10;
    writeFileSync(path, copy);
    expect(await verifyChain(crypto, store.read(0, 5), { keys: writerA.publicKey })).toMatchObject({ ok: false, index: 3, reason: 'malformed' });
    await store.close();
  });

  it('rejects a file that is not an audit log', async () => {
    const path = join(dir, 'not-audit.log');
    writeFileSync(path, 'hello world, not an audit log');
    await expect(openFileStore(crypto, path)).rejects.toMatchObject({ code: 'malformed' });
    await expect(openFileStore(crypto, join(dir, 'missing.log'), { readOnly: true })).rejects.toMatchObject({ code: 'not_found' });
  });
});

describe('one writer per file', () => {
  it('a second writable open is refused; readers are not; the lock goes with close', async () => {
    const path = join(dir, `lock-${n++}.log`);
    const store = await openFileStore(crypto, path);
    await expect(openFileStore(crypto, path)).rejects.toMatchObject({ code: 'storage_failure' });
    const reader = await openFileStore(crypto, path, { readOnly: true });
    await reader.close();
    await store.close();
    const again = await openFileStore(crypto, path);
    await again.close();
  });

  it("takes over a dead process's lock", async () => {
    const path = join(dir, `stale-${n++}.log`);
    const child = spawnSync(process.execPath, ['-e', '']);
    writeFileSync(`${path}.lock`, `${child.pid}\n`);
    const store = await openFileStore(crypto, path);
    expect(readFileSync(`${path}.lock`, 'utf8')).toBe(`${process.pid}\n`);
    await store.close();
  });
});

describe('fsync policies and the writer on a file', () => {
  it('batched fsync: appends are written at once, synced in batches, on sync() and on close', async () => {
    const path = join(dir, `batch-${n++}.log`);
    const store = await openFileStore(crypto, path, { fsync: { entries: 1000, ms: 60_000 } });
    const log = await AuditLog.open(crypto, { store, writer: writerA });
    for (let i = 0; i < 5; i++) await log.append(fieldsFor(i));
    // Written (a process crash loses nothing), though not yet fdatasync'ed.
    const reader = await openFileStore(crypto, path, { readOnly: true });
    expect(await reader.size()).toBe(5);
    await reader.close();
    await store.sync();
    await log.close();
    const reopened = await openFileStore(crypto, path);
    expect(await reopened.size()).toBe(5);
    await reopened.close();
  });

  it('validates options', async () => {
    const path = join(dir, 'opts.log');
    for (const bad of WRONG) {
      if (bad === undefined) continue;
      await expect(openFileStore(crypto, path, { fsync: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      await expect(openFileStore(crypto, path, { readOnly: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      await expect(openFileStore(crypto, path, { onCorruption: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      if (typeof bad !== 'function') await expect(openFileStore(crypto, path, { onEvent: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      if (typeof bad !== 'string' || bad === '') await expect(openFileStore(crypto, bad as never)).rejects.toMatchObject({ code: 'malformed' });
      await expect(openFileStore(bad as never, path)).rejects.toMatchObject({ code: 'malformed' });
    }
    await expect(openFileStore(crypto, path, { fsync: {} })).rejects.toMatchObject({ code: 'malformed' });
    // 'inspect' is a reader's, 'truncate' a writer's.
    await expect(openFileStore(crypto, path, { onCorruption: 'inspect' })).rejects.toMatchObject({ code: 'malformed' });
    await expect(openFileStore(crypto, path, { readOnly: true, onCorruption: 'truncate' })).rejects.toMatchObject({ code: 'malformed' });
    await expect(openFileStore(crypto, path, { fsync: { entries: 0 } })).rejects.toMatchObject({ code: 'malformed' });
    expect(existsSync(path)).toBe(false);
  });
});
