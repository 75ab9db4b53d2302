// The verification pool gives exactly the answers of crypto.ed25519.verify (the same libsodium call),
// on worker threads, and keeps giving them when its workers fail or it is closed.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createCrypto, createVerifyPool, fromHex, VERIFY_POOL_MAX_RESTARTS, type ParleyCrypto, type VerifyPool } from './index.js';

let native: ParleyCrypto;
let wasm: ParleyCrypto;
const pools: VerifyPool[] = [];
const track = (p: VerifyPool): VerifyPool => (pools.push(p), p);

beforeAll(async () => {
  native = await createCrypto({ libsodium: 'native' });
  wasm = await createCrypto({ libsodium: 'wasm' });
});
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

/** Valid and invalid cases: each bit flip, a wrong key, a wrong message, a small-order key, a non-canonical S. */
function cases(c: ParleyCrypto, n: number): { signature: Uint8Array; message: Uint8Array; publicKey: Uint8Array }[] {
  const out = [];
  for (let i = 0; i < n; i++) {
    const { publicKey, secretKey } = c.ed25519.generateKeyPair();
    const message = c.randomBytes(i % 300);
    const signature = c.ed25519.sign(message, secretKey);
    out.push({ signature, message, publicKey });
    const flipped = Uint8Array.from(signature);
    flipped[i % 64]! ^= 1 << i % 8;
    out.push({ signature: flipped, message, publicKey });
    out.push({ signature, message, publicKey: c.ed25519.generateKeyPair().publicKey });
    if (message.length > 0) out.push({ signature, message: message.subarray(1), publicKey });
  }
  // A small-order public key (the identity point) with R = identity, S = 0: OpenSSL accepts it, libsodium must not.
  const identity = fromHex('0100000000000000000000000000000000000000000000000000000000000000');
  out.push({ signature: new Uint8Array([...identity, ...new Uint8Array(32)]), message: new Uint8Array([1, 2, 3]), publicKey: identity });
  // S = L (not reduced): non-canonical.
  const { publicKey, secretKey } = c.ed25519.generateKeyPair();
  const sig = c.ed25519.sign(new Uint8Array([7]), secretKey);
  const L = fromHex('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010');
  out.push({ signature: new Uint8Array([...sig.subarray(0, 32), ...L]), message: new Uint8Array([7]), publicKey });
  return out;
}

describe('createVerifyPool', () => {
  it('answers as crypto.ed25519.verify does, on worker threads, in batches', async () => {
    const errors: Error[] = [];
    const pool = track(createVerifyPool(native, { threads: 2, onWorkerError: (e) => errors.push(e) }));
    expect(pool.threads).toBe(2);
    const all = cases(native, 200);
    const answers = await Promise.all(all.map((x) => pool.verify(x.signature, x.message, x.publicKey)));
    expect(answers).toEqual(all.map((x) => native.ed25519.verify(x.signature, x.message, x.publicKey)));
    expect(answers.filter(Boolean)).toHaveLength(200);
    expect(answers.slice(-2)).toEqual([false, false]); // small-order key, non-canonical S
    expect(errors).toEqual([]);
    expect(pool.threads).toBe(2);
  });

  it('answers false, without throwing, for malformed inputs', async () => {
    const pool = track(createVerifyPool(native, { threads: 1 }));
    const { signature, message, publicKey } = cases(native, 1)[0]!;
    const wrong: unknown[] = [undefined, null, 'x', [1], new ArrayBuffer(64)];
    for (const w of wrong) {
      await expect(pool.verify(w as Uint8Array, message, publicKey)).resolves.toBe(false);
      await expect(pool.verify(signature, w as Uint8Array, publicKey)).resolves.toBe(false);
      await expect(pool.verify(signature, message, w as Uint8Array)).resolves.toBe(false);
    }
    await expect(pool.verify(signature.subarray(1), message, publicKey)).resolves.toBe(false);
    await expect(pool.verify(signature, message, publicKey.subarray(1))).resolves.toBe(false);
    await expect(pool.verify(signature, message, publicKey)).resolves.toBe(true);
  });

  it('verifies on the event loop with threads 0, or when Ed25519 is not the native addon', async () => {
    for (const [c, threads] of [[native, 0], [wasm, 2]] as const) {
      const pool = track(createVerifyPool(c, { threads }));
      expect(pool.threads).toBe(0);
      const all = cases(c, 20);
      expect(await Promise.all(all.map((x) => pool.verify(x.signature, x.message, x.publicKey)))).toEqual(all.map((x) => c.ed25519.verify(x.signature, x.message, x.publicKey)));
    }
  });

  it('beyond maxPending verifies on the event loop: same answers, no growing queue', async () => {
    const pool = track(createVerifyPool(native, { threads: 1, maxPending: 3 }));
    const all = cases(native, 30);
    expect(await Promise.all(all.map((x) => pool.verify(x.signature, x.message, x.publicKey)))).toEqual(all.map((x) => native.ed25519.verify(x.signature, x.message, x.publicKey)));
  });

  it('workers that fail: their work is verified on the event loop, they are replaced a bounded number of times', async () => {
    const errors: Error[] = [];
    // An addon that does not load: every worker fails at start.
    const pool = track(createVerifyPool(native, { threads: 2, addon: '/nonexistent/sodium-native.node', onWorkerError: (e) => errors.push(e) }));
    const all = cases(native, 50);
    const expected = all.map((x) => native.ed25519.verify(x.signature, x.message, x.publicKey));
    expect(await Promise.all(all.map((x) => pool.verify(x.signature, x.message, x.publicKey)))).toEqual(expected);
    for (let i = 0; i < 200 && pool.threads > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(pool.threads).toBe(0);
    expect(errors.length).toBe(2 + VERIFY_POOL_MAX_RESTARTS);
    expect(await Promise.all(all.map((x) => pool.verify(x.signature, x.message, x.publicKey)))).toEqual(expected);
  });

  it('replacements are bounded per window, not for life: once the window has room, a worker is started again', async () => {
    const errors: Error[] = [];
    const pool = track(createVerifyPool(native, { threads: 1, addon: '/nonexistent/sodium-native.node', restartWindowMs: 3_000, onWorkerError: (e) => errors.push(e) }));
    const [x] = cases(native, 1);
    await pool.verify(x!.signature, x!.message, x!.publicKey);
    for (let i = 0; i < 200 && pool.threads > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(errors.length).toBe(1 + VERIFY_POOL_MAX_RESTARTS);
    await new Promise((r) => setTimeout(r, 3_100));
    await expect(pool.verify(x!.signature, x!.message, x!.publicKey)).resolves.toBe(true);
    for (let i = 0; i < 200 && errors.length === 1 + VERIFY_POOL_MAX_RESTARTS; i++) await new Promise((r) => setTimeout(r, 10));
    expect(errors.length).toBeGreaterThan(1 + VERIFY_POOL_MAX_RESTARTS); // tried again (and failed again: the addon is still missing)
  });

  it('close: what waits is answered, later calls are verified on the event loop', async () => {
    const pool = createVerifyPool(native, { threads: 1 });
    const all = cases(native, 20);
    const waiting = Promise.all(all.map((x) => pool.verify(x.signature, x.message, x.publicKey)));
    await pool.close();
    const expected = all.map((x) => native.ed25519.verify(x.signature, x.message, x.publicKey));
    expect(await waiting).toEqual(expected);
    expect(pool.threads).toBe(0);
    expect(await Promise.all(all.map((x) => pool.verify(x.signature, x.message, x.publicKey)))).toEqual(expected);
  });

  it('refuses bad settings', () => {
    expect(() => createVerifyPool(native, { threads: -1 })).toThrow(RangeError);
    expect(() => createVerifyPool(native, { threads: 1.5 })).toThrow(RangeError);
    expect(() => createVerifyPool(native, { threads: 65 })).toThrow(RangeError);
    expect(() => createVerifyPool(native, { maxPending: 0 })).toThrow(RangeError);
    expect(() => createVerifyPool(native, { restartWindowMs: 0 })).toThrow(RangeError);
  });
});
