/**
 * Where an agent keeps its sealed session state between runs (docs/PROTOCOL.md
 * §13). The blobs are already sealed under the agent's `stateKey`; a store only
 * has to keep bytes, but should still keep them private.
 */
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ClientError } from './errors.js';

/** Persistence of sealed session state. `save` replaces everything `load` returned before. */
export interface StateStore {
  load(): Promise<Uint8Array[]>;
  save(sealed: Uint8Array[]): Promise<void>;
}

let tmpCounter = 0;

const MAGIC = new TextEncoder().encode('PCS1');

/** Encodes sealed blobs: "PCS1" ‖ u32be(count) ‖ (u32be(length) ‖ bytes)*. */
export function encodeStateFile(sealed: readonly Uint8Array[]): Uint8Array {
  const size = MAGIC.length + 4 + sealed.reduce((n, b) => n + 4 + b.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint32(4, sealed.length);
  let at = 8;
  for (const b of sealed) {
    view.setUint32(at, b.length);
    out.set(b, at + 4);
    at += 4 + b.length;
  }
  return out;
}

/** Decodes {@link encodeStateFile}. @throws ClientError `state_corrupt` */
export function decodeStateFile(bytes: Uint8Array): Uint8Array[] {
  const corrupt = (why: string) => new ClientError('state_corrupt', `session state file: ${why}`);
  if (bytes.length < 8 || !MAGIC.every((b, i) => bytes[i] === b)) throw corrupt('bad header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(4);
  const out: Uint8Array[] = [];
  let at = 8;
  for (let i = 0; i < count; i++) {
    if (at + 4 > bytes.length) throw corrupt('truncated');
    const len = view.getUint32(at);
    if (at + 4 + len > bytes.length) throw corrupt('truncated');
    out.push(new Uint8Array(bytes.subarray(at + 4, at + 4 + len))); // a copy, and a plain Uint8Array even from a Buffer
    at += 4 + len;
  }
  if (at !== bytes.length) throw corrupt('trailing bytes');
  return out;
}

/**
 * A StateStore in one file. `save` writes a temporary file (mode 0600) in the
 * same directory, fsyncs it and renames it over `path`, so a crash leaves
 * either the old or the new state, never a torn one. A missing file loads as
 * no state.
 */
export function fileStateStore(path: string): StateStore {
  return {
    async load() {
      let bytes: Uint8Array;
      try {
        bytes = await readFile(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw error;
      }
      return decodeStateFile(bytes);
    },
    async save(sealed) {
      await mkdir(dirname(path), { recursive: true, mode: 0o700 });
      const tmp = `${path}.${process.pid}.${Date.now()}.${tmpCounter++}.tmp`;
      const handle = await open(tmp, 'wx', 0o600);
      try {
        await handle.writeFile(encodeStateFile(sealed));
        await handle.sync();
      } finally {
        await handle.close();
      }
      try {
        await rename(tmp, path);
      } catch (error) {
        await rm(tmp, { force: true });
        throw error;
      }
    },
  };
}
