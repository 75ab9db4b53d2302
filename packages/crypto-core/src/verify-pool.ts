/**
 * Ed25519 verification off the event loop: libsodium's
 * `crypto_sign_verify_detached` (the native addon, the same call
 * `ParleyCrypto.ed25519.verify` makes) run on worker threads, for a server
 * whose event loop is its bottleneck and whose signature checks are its
 * largest single cost (the gateway checks one per envelope).
 *
 * Verifications asked for in one event-loop turn go to a worker as one batch
 * (one message each way, packed into one transferred buffer), to the worker
 * with the fewest outstanding; the workers start at the first verification. Nothing is lost when a worker fails: its batches
 * are verified on the event loop, and a new worker takes its place (at most
 * {@link MAX_RESTARTS} within `restartWindowMs`; beyond that the pool verifies on the event loop until the
 * window has room again).
 * Bounded: at most `maxPending` verifications wait for workers; more are verified
 * on the event loop at once (back-pressure instead of a growing queue).
 *
 * Without the native addon (the WebAssembly build is per-thread state of its
 * own) or with `threads: 0`, every verification runs on the event loop: the same
 * answers, the same API.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { ED25519_PUBLIC_KEY_BYTES, ED25519_SIGNATURE_BYTES, ed25519VerifyInputs, type ParleyCrypto } from './crypto.js';

/** Settings of {@link createVerifyPool}. */
export interface VerifyPoolOptions {
  /** Worker threads; 0 verifies on the event loop. Default 1. At most 64. */
  readonly threads?: number;
  /** Most verifications waiting for workers before more are verified on the event loop. Default 65 536. */
  readonly maxPending?: number;
  /** Told when a worker fails (its work is verified on the event loop; never secret data). */
  readonly onWorkerError?: (error: Error) => void;
  /** The window {@link MAX_RESTARTS} counts failures in, ms. Default 600 000 (10 min). */
  readonly restartWindowMs?: number;
  /** @internal The addon file the workers load (default: the resolved `sodium-native`); the tests give one that fails. */
  readonly addon?: string;
}

/** Ed25519 verification on worker threads (see the module comment). */
export interface VerifyPool {
  /**
   * Whether `signature` is a valid Ed25519 signature of `message` by `publicKey`, with libsodium's
   * checks (small-order and non-canonical keys and R refused). False on any malformed input; never rejects.
   * The inputs are read when the batch is sent (later in this turn): the caller must not change them
   * until the promise settles.
   */
  verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): Promise<boolean>;
  /** Worker threads running (0: every verification runs on the event loop). */
  readonly threads: number;
  /** Stops the workers; verifications still waiting are done on the event loop. */
  close(): Promise<void>;
}

/** Most workers a pool starts. */
const MAX_THREADS = 64;
/** Failed workers replaced within {@link VerifyPoolOptions.restartWindowMs}; beyond that the pool verifies on the event loop until the window has room again. */
export const MAX_RESTARTS = 8;
/** Most verifications in one batch (a batch is one message each way). */
const MAX_BATCH = 256;
/** Per item in a batch: u32 message length ‖ signature ‖ public key ‖ message. */
const ITEM_HEADER = 4 + ED25519_SIGNATURE_BYTES + ED25519_PUBLIC_KEY_BYTES;

/**
 * The worker: a CommonJS script (evaluated, so it runs the same from sources and from dist), given the
 * addon's resolved path. Batch layout: u32 count, then the items; answer: one byte per item (1 valid).
 */
const WORKER_SOURCE = `
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const sodium = require(workerData.addon);
parentPort.on('message', (batch) => {
  const bytes = new Uint8Array(batch.buffer);
  const view = new DataView(batch.buffer);
  const count = view.getUint32(0);
  const answer = new Uint8Array(count);
  let at = 4;
  for (let i = 0; i < count; i++) {
    const length = view.getUint32(at);
    const signature = bytes.subarray(at + 4, at + ${4 + ED25519_SIGNATURE_BYTES});
    const publicKey = bytes.subarray(at + ${4 + ED25519_SIGNATURE_BYTES}, at + ${ITEM_HEADER});
    const message = bytes.subarray(at + ${ITEM_HEADER}, at + ${ITEM_HEADER} + length);
    at += ${ITEM_HEADER} + length;
    let valid = false;
    try { valid = sodium.crypto_sign_verify_detached(signature, message, publicKey) === true; } catch { valid = false; }
    answer[i] = valid ? 1 : 0;
  }
  parentPort.postMessage({ id: batch.id, answer }, [answer.buffer]);
});
`;

interface Job {
  readonly signature: Uint8Array;
  readonly message: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly resolve: (valid: boolean) => void;
}

interface Slot {
  readonly worker: Worker;
  /** Batches sent and not answered, by id. */
  readonly batches: Map<number, Job[]>;
  outstanding: number;
  dead: boolean;
}

/**
 * A pool of Ed25519 verifiers on worker threads (see the module comment). Falls back to the event loop
 * when the crypto's Ed25519 is not the native libsodium addon.
 */
export function createVerifyPool(crypto: ParleyCrypto, options: VerifyPoolOptions = {}): VerifyPool {
  const requested = options.threads ?? 1;
  if (!Number.isSafeInteger(requested) || requested < 0 || requested > MAX_THREADS) throw new RangeError(`threads must be an integer in 0..${MAX_THREADS}`);
  const maxPending = options.maxPending ?? 65_536;
  if (!Number.isSafeInteger(maxPending) || maxPending < 1) throw new RangeError('maxPending must be a positive integer');
  const restartWindowMs = options.restartWindowMs ?? 600_000;
  if (!Number.isSafeInteger(restartWindowMs) || restartWindowMs < 1) throw new RangeError('restartWindowMs must be a positive integer');
  let addon: string | undefined;
  if (requested > 0 && crypto.backends.ed25519 === 'libsodium-native') {
    try {
      addon = options.addon ?? createRequire(import.meta.url).resolve('sodium-native');
    } catch {
      addon = undefined;
    }
  }
  const inline = (job: Job): void => job.resolve(crypto.ed25519.verify(job.signature, job.message, job.publicKey));
  if (addon === undefined) {
    return {
      threads: 0,
      verify: (signature, message, publicKey) => Promise.resolve(crypto.ed25519.verify(signature, message, publicKey)),
      close: () => Promise.resolve(),
    };
  }
  const addonPath = addon;
  const slots: Slot[] = [];
  let queue: Job[] = [];
  let pending = 0;
  let scheduled = false;
  let nextId = 0;
  /** When workers were replaced, within the window. */
  let restarts: number[] = [];
  /** Whether the window has room for one more replacement (and records it). */
  const mayRestart = (): boolean => {
    const now = Date.now();
    restarts = restarts.filter((t) => now - t < restartWindowMs);
    if (restarts.length >= MAX_RESTARTS) return false;
    restarts.push(now);
    return true;
  };
  let closed = false;

  const start = (): Slot => {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { addon: addonPath }, stdout: false, stderr: false });
    worker.unref();
    const slot: Slot = { worker, batches: new Map(), outstanding: 0, dead: false };
    worker.on('message', (m: { id: number; answer: Uint8Array }) => {
      const jobs = slot.batches.get(m.id);
      if (jobs === undefined) return;
      slot.batches.delete(m.id);
      slot.outstanding -= jobs.length;
      pending -= jobs.length;
      if (slot.outstanding === 0) worker.unref();
      for (let i = 0; i < jobs.length; i++) jobs[i]!.resolve(m.answer[i] === 1);
    });
    const fail = (error: Error): void => {
      if (slot.dead) return;
      slot.dead = true;
      slots.splice(slots.indexOf(slot), 1);
      for (const jobs of slot.batches.values()) {
        pending -= jobs.length;
        for (const job of jobs) inline(job);
      }
      slot.batches.clear();
      if (!closed) {
        options.onWorkerError?.(error);
        void worker.terminate();
        if (mayRestart()) slots.push(start());
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`verify worker exited with code ${code}`)));
    return slot;
  };
  // Started at the first verification: a pool that never verifies costs no thread.
  let started = false;

  const send = (slot: Slot, jobs: Job[]): void => {
    let size = 4;
    for (const j of jobs) size += ITEM_HEADER + j.message.length;
    const buffer = new ArrayBuffer(size);
    const bytes = new Uint8Array(buffer);
    const view = new DataView(buffer);
    view.setUint32(0, jobs.length);
    let at = 4;
    for (const j of jobs) {
      view.setUint32(at, j.message.length);
      bytes.set(j.signature, at + 4);
      bytes.set(j.publicKey, at + 4 + ED25519_SIGNATURE_BYTES);
      bytes.set(j.message, at + ITEM_HEADER);
      at += ITEM_HEADER + j.message.length;
    }
    const id = nextId++;
    slot.batches.set(id, jobs);
    if (slot.outstanding === 0) slot.worker.ref();
    slot.outstanding += jobs.length;
    slot.worker.postMessage({ id, buffer }, [buffer]);
  };

  const flush = (): void => {
    scheduled = false;
    if (!started && !closed) {
      started = true;
      for (let i = 0; i < requested; i++) slots.push(start());
    }
    const jobs = queue;
    queue = [];
    for (let i = 0; i < jobs.length; i += MAX_BATCH) {
      const batch = jobs.slice(i, i + MAX_BATCH);
      let best: Slot | undefined;
      for (const s of slots) if (best === undefined || s.outstanding < best.outstanding) best = s;
      if (best === undefined) {
        pending -= batch.length;
        for (const job of batch) inline(job);
      } else send(best, batch);
    }
  };

  return {
    get threads() {
      return closed ? 0 : started ? slots.length : requested;
    },
    verify(signature, message, publicKey) {
      if (!ed25519VerifyInputs(signature, message, publicKey)) return Promise.resolve(false);
      // Workers lost beyond the window's replacements: one more once the window has room again.
      if (!closed && started && slots.length < requested && mayRestart()) slots.push(start());
      if (closed || (started && slots.length === 0) || pending >= maxPending) return Promise.resolve(crypto.ed25519.verify(signature, message, publicKey));
      return new Promise<boolean>((resolve) => {
        // Copied into the batch when it is sent, at the end of this turn.
        queue.push({ signature, message, publicKey, resolve });
        pending++;
        if (!scheduled) {
          scheduled = true;
          setImmediate(flush);
        }
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      if (scheduled) flush();
      const all = slots.splice(0);
      for (const slot of all) {
        slot.dead = true;
        for (const jobs of slot.batches.values()) for (const job of jobs) inline(job);
        slot.batches.clear();
      }
      pending = 0;
      await Promise.all(all.map((s) => s.worker.terminate()));
    },
  };
}
