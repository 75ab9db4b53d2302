// Shared test fixtures: one ParleyCrypto, deterministic writer keys, and
// chains built with the low-level signEntry (fast and independent of the stores).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCrypto, type Ed25519KeyPair } from '@parley/crypto-core';
import { MessageType, type AuditMessage } from '@parley/proto';
import { afterAll } from 'vitest';
import { signEntry, ZERO_HASH, type AuditEntryFields } from '../src/index.js';
import { digestEntry } from '../src/entry.js';

export const crypto = await createCrypto();
export const writerA: Ed25519KeyPair = crypto.ed25519.keyPairFromSeed(new Uint8Array(32).fill(0xa1));
export const writerB: Ed25519KeyPair = crypto.ed25519.keyPairFromSeed(new Uint8Array(32).fill(0xb2));
export const T0 = 1_760_000_000_000;

const TYPES = [MessageType.UNSPECIFIED, MessageType.TASK_ASSIGNMENT, MessageType.STATUS_UPDATE, MessageType.CONSENSUS_VOTE];
const OUTCOMES = ['routed', 'queued', 'delivered', 'rejected:replay'];

/** Deterministic, varied fields for entry i. */
export function fieldsFor(i: number): AuditEntryFields & { timestampMs: number } {
  const messageHash = new Uint8Array(32);
  new DataView(messageHash.buffer).setUint32(0, i);
  messageHash[31] = 0x5a;
  return {
    messageHash,
    senderId: `agent-${i % 7}`,
    recipientId: `worker.${(i * 3) % 11}`,
    messageType: TYPES[i % TYPES.length]!,
    outcome: OUTCOMES[i % OUTCOMES.length]!,
    timestampMs: T0 + i * 10,
  };
}

/** Signs entries `from`..`from+n−1` continuing from `previousHash`. */
export function extendChain(n: number, from = 0, previousHash: Uint8Array = ZERO_HASH, writer: Ed25519KeyPair = writerA): AuditMessage[] {
  const out: AuditMessage[] = [];
  let prev = previousHash;
  for (let i = from; i < from + n; i++) {
    const entry = signEntry(crypto, writer, { ...fieldsFor(i), index: i, previousHash: prev });
    prev = digestEntry(crypto, entry).entryHash;
    out.push(entry);
  }
  return out;
}

/** A valid chain of n entries by one writer. */
export function buildChain(n: number, writer: Ed25519KeyPair = writerA): AuditMessage[] {
  return extendChain(n, 0, ZERO_HASH, writer);
}

/** The entry hash (chain link) of an entry. */
export function hashOf(entry: AuditMessage): Uint8Array {
  return digestEntry(crypto, entry).entryHash;
}

/** A fresh temporary directory, removed after the test file. */
export function tempDir(prefix = 'parley-audit-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Wrong-typed values for validation tables. */
export const WRONG: readonly unknown[] = [undefined, null, 0, -1, 1.5, 'x', 1n, [], {}, new Uint8Array(3), () => 1, Symbol('s')];
