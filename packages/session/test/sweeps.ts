// Sweeps shared by the fast loop (test/messages.spec.ts: a smaller message, fewer runs, a sparse
// receiver) and the test-load target (test/load/sweeps.spec.ts: the full 1 KiB message, more runs,
// every message opened). One body, two sizes: the load suite is the exhaustive version of the same check.
import fc from 'fast-check';
import { expect } from 'vitest';
import { SecretKey, toHex } from '@parley/crypto-core';
import { MessageType, SecureMessageSchema, create, type SecureMessage } from '@parley/proto';
import { SessionError, exportSessionState, importSessionState, type Session } from '../src/index.js';
import { handshake, type Agent, type World } from './fixtures.js';

export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof SessionError) return error.code;
    throw error;
  }
  return 'accepted';
}

/** A small STATUS_UPDATE message. */
export const note = (text: string) => ({ type: MessageType.STATUS_UPDATE, content: { text } });

function pair(w: World, alice: Agent, bob: Agent, rekeyThreshold = 1000): { a: Session; b: Session } {
  return handshake(w.crypto, w.config(alice, { rekeyThreshold }), w.config(bob));
}

const FIELDS = ['version', 'senderId', 'recipientId', 'sessionId', 'nonce', 'timestampMs', 'payloadCommitment', 'encryptedPayload', 'authTag', 'signature'] as const;
type Field = (typeof FIELDS)[number];

/**
 * Flips every single bit of every field of a sealed message whose content carries `blobBytes`
 * bytes, each flip on a fresh message (so no failure can be explained by a replay), and checks that
 * none opens and that the genuine messages still open afterwards. Returns how many flips were tried.
 */
export function everyBitFlipFails(w: World, alice: Agent, bob: Agent, blobBytes: number): number {
  const { a, b } = pair(w, alice, bob);
  const content = { blob: 'x'.repeat(blobBytes) };
  let tried = 0;
  for (const field of FIELDS) {
    const probe = a.seal({ type: MessageType.TASK_ASSIGNMENT, content }).envelope;
    const bits = bitLength(probe, field);
    for (let bit = 0; bit < bits; bit++) {
      const env = a.seal({ type: MessageType.TASK_ASSIGNMENT, content }).envelope;
      const tampered = flipBit(env, field, bit);
      const code = codeOf(() => b.open(tampered));
      if (code === 'accepted') expect.fail(`${field} bit ${bit} was accepted`);
      tried++;
    }
  }
  // The genuine messages still open afterwards: rejection committed nothing.
  const fine = a.seal(note('after the storm'));
  expect(b.open(fine.envelope).content).toEqual({ text: 'after the storm' });
  return tried;
}

/**
 * Forward secrecy across rekeys: with a rekey every 100 messages, once `messages` (more than the
 * replay window) have been sent, the receiver's exported state holds no epoch-0 key and an epoch-0
 * message no longer opens. The receiver opens every `openEvery`-th message (1: every one); a sparse
 * receiver derives the skipped epochs on the way, as a real one does after losses.
 */
export function oldEpochKeysAreGone(w: World, alice: Agent, bob: Agent, { messages, openEvery }: { messages: number; openEvery: number }): void {
  const { a, b } = pair(w, alice, bob, 100);
  const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
  const early = a.seal(note('epoch 0'));
  const snapshot = exportSessionState(w.crypto, b, stateKey); // b holds epoch 0
  const epoch0Keys = importSessionState(w.crypto, snapshot, stateKey, { identity: bob, trustBundle: w.trustBundle }).unsafeExportInternals().receive.unsafeExport();
  expect(epoch0Keys[0]!.epoch).toBe(0);
  for (let i = 0; i < messages; i++) {
    const sealed = a.seal(note(`m${i}`));
    if (i % openEvery === 0 || i === messages - 1) b.open(sealed.envelope);
  }
  const after = importSessionState(w.crypto, exportSessionState(w.crypto, b, stateKey), stateKey, { identity: bob, trustBundle: w.trustBundle });
  const held = after.unsafeExportInternals().receive.unsafeExport();
  expect(held[0]!.epoch).toBeGreaterThan(0);
  const oldKeyHex = toHex(epoch0Keys[0]!.key);
  for (const e of held) expect(toHex(e.key)).not.toBe(oldKeyHex);
  // And the live session can no longer open an epoch-0 message: its key is gone.
  expect(codeOf(() => b.open(early.envelope))).toBe('replay');
}

/** Property: with a small rekey threshold, any interleaving of 200 messages inside the window opens each exactly once. */
export function anyInterleavingOpensOnce(w: World, alice: Agent, bob: Agent, numRuns: number): void {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 50 }), fc.array(fc.nat(), { minLength: 200, maxLength: 200 }), (threshold, seeds) => {
      const { a, b } = pair(w, alice, bob, threshold);
      const envs = Array.from({ length: 200 }, (_, i) => a.seal({ type: MessageType.STATUS_UPDATE, content: i }).envelope);
      for (let i = envs.length - 1; i > 0; i--) {
        const j = seeds[i]! % (i + 1);
        [envs[i], envs[j]] = [envs[j]!, envs[i]!];
      }
      const seen = new Set<unknown>();
      for (const e of envs) seen.add(b.open(e).content);
      expect(seen.size).toBe(200);
      for (const e of envs.slice(0, 5)) expect(codeOf(() => b.open(e))).toBe('replay');
    }),
    { numRuns },
  );
}

function bitLength(env: SecureMessage, field: Field): number {
  const v = env[field];
  if (v instanceof Uint8Array) return v.length * 8;
  if (typeof v === 'string') return new TextEncoder().encode(v).length * 8;
  if (typeof v === 'bigint') return 64;
  return 32;
}

function flipBit(env: SecureMessage, field: Field, bit: number): SecureMessage {
  const v = env[field];
  let next: unknown;
  if (v instanceof Uint8Array) {
    const c = v.slice();
    c[bit >> 3]! ^= 1 << (bit & 7);
    next = c;
  } else if (typeof v === 'string') {
    const c = new TextEncoder().encode(v);
    c[bit >> 3]! ^= 1 << (bit & 7);
    next = new TextDecoder().decode(c);
  } else if (typeof v === 'bigint') {
    next = BigInt.asUintN(64, v ^ (1n << BigInt(bit)));
  } else {
    next = (v ^ (1 << bit)) >>> 0;
  }
  return create(SecureMessageSchema, { ...env, [field]: next });
}
