/**
 * The chain verifier (docs/PROTOCOL.md §9.5): reads stored entries in order
 * and names the FIRST position where the log stops being the chain its writer
 * signed, and how it broke. It streams (O(log n) memory: the Merkle root is
 * kept as a compact range) and reads one entry ahead.
 *
 * Classification, for the entry at position p (all earlier ones accepted, so
 * `prev` is the entry hash of the entry at p − 1, or 32 zero bytes):
 *
 *   1. does not decode or breaks a field rule                    → malformed
 *   2. signature fails (or signer_key_id names no trusted key):
 *      a. the next entry is authentic, has index p and links to prev
 *         (the chain continues as if this entry were not there)   → inserted
 *      b. the next entry is authentic and links to THIS entry's
 *         hash (the writer committed to exactly these bytes)      → bad_signature
 *      c. otherwise (incl. the last entry)                        → modified
 *   3. authentic, index x = p: previous_hash ≠ prev               → bad_link   (else accept)
 *   4. authentic, index x < p (its index is already behind)       → inserted   (a replayed copy or a fork)
 *   5. authentic, index x > p, looking through the rest of the log:
 *      a. another authentic entry with index x appears later      → inserted   (a copy placed early)
 *      b. an authentic entry with an index in [p, x) appears later → reordered
 *      c. neither                                                  → removed    (entries p..x−1 are gone)
 *   6. with a signed tree head of size n: when p reaches n, the
 *      root of entries 0..n−1 ≠ the head's root                   → head_mismatch
 *      the log ends before n entries                              → removed    (the tail was cut)
 *
 * Why the signature decides first: index and previous_hash are signed, so the
 * structural rules (3–5) are applied only to entries the writer really wrote;
 * a tampered index is a modification, not a gap. Why a later link can vouch
 * for an entry (2b): the entry hash covers the layout and the signature, and
 * the next entry's signed previous_hash carries it, so a validly signed
 * successor proves the writer saw exactly these bytes.
 */
import type { AuditMessage } from '@parley/proto';
import type { ParleyCrypto } from '@parley/crypto-core';
import { assertCrypto, assertIterable, assertObject, assertSafeInt, malformed } from './assert.js';
import { AuditError, isAuditError } from './errors.js';
import { decodeEntry, digestEntry, entryProblem, WriterKeys, ZERO_HASH, type EntryDigest } from './entry.js';
import { merkleHasher, MerkleTree, RootAccumulator } from './merkle.js';
import { assertSignedTreeHead, type SignedTreeHead } from './tree-head.js';

/** How a chain breaks: a subset of the AuditError codes. */
export type BreakReason = 'malformed' | 'modified' | 'removed' | 'inserted' | 'reordered' | 'bad_signature' | 'bad_link' | 'head_mismatch';

/** Every {@link BreakReason}. */
export const BREAK_REASONS: readonly BreakReason[] = Object.freeze([
  'malformed',
  'modified',
  'removed',
  'inserted',
  'reordered',
  'bad_signature',
  'bad_link',
  'head_mismatch',
] as const);

/** Result of {@link verifyChain}. */
export type ChainVerification =
  | {
      readonly ok: true;
      /** Entries verified. */
      readonly size: number;
      /** MTH of all of them. */
      readonly rootHash: Uint8Array;
      /** Entry hash of the last one (32 zero bytes for an empty log): the next entry's previous_hash. */
      readonly lastEntryHash: Uint8Array;
    }
  | {
      readonly ok: false;
      /** Position of the first entry that breaks (= the number of entries that verified before it). */
      readonly index: number;
      readonly reason: BreakReason;
      /** Detail for the local log: field names, indexes, never key material. */
      readonly detail: string;
      /** The index field of the entry found at that position, when it decoded. */
      readonly entryIndex?: number;
    };

/** Entries to verify, in stored order: decoded messages or their protobuf bytes. */
export type ChainSource = Iterable<AuditMessage | Uint8Array> | AsyncIterable<AuditMessage | Uint8Array>;

/** Options of {@link verifyChain}. */
export interface VerifyChainOptions {
  /** Trusted writer public key(s): each entry's signer_key_id must name one. */
  readonly keys: Uint8Array | readonly Uint8Array[] | WriterKeys;
  /** A signed tree head the log must match (detects a cut tail and a rewritten history). */
  readonly head?: SignedTreeHead;
  /**
   * An empty MerkleTree (or RootAccumulator) that receives the leaf hash of every entry that verifies, so one
   * pass both verifies a log and prepares its proofs (or its root).
   */
  readonly tree?: MerkleTree | RootAccumulator;
}

interface Item {
  readonly entry?: AuditMessage;
  readonly problem?: string;
}

/** One-entry lookahead over a sync or async source; a `malformed` error from the source becomes an item and ends it. */
class Reader {
  readonly #it: Iterator<unknown> | AsyncIterator<unknown>;
  #peeked: Item | undefined | null = null;
  #done = false;

  constructor(source: ChainSource) {
    const s = assertIterable<unknown>(source, 'entries') as Partial<AsyncIterable<unknown> & Iterable<unknown>>;
    this.#it = typeof s[Symbol.asyncIterator] === 'function' ? s[Symbol.asyncIterator]!() : s[Symbol.iterator]!();
  }

  async next(): Promise<Item | undefined> {
    if (this.#peeked !== null) {
      const item = this.#peeked;
      this.#peeked = null;
      return item;
    }
    return this.#read();
  }

  async peek(): Promise<Item | undefined> {
    if (this.#peeked === null) this.#peeked = await this.#read();
    return this.#peeked;
  }

  async close(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      await this.#it.return?.();
    }
  }

  async #read(): Promise<Item | undefined> {
    if (this.#done) return undefined;
    let r: IteratorResult<unknown>;
    try {
      r = await this.#it.next();
    } catch (cause) {
      if (!isAuditError(cause, 'malformed')) throw cause;
      this.#done = true;
      return { problem: cause.message.replace(/^\[malformed\] /, '') };
    }
    if (r.done === true) {
      this.#done = true;
      return undefined;
    }
    const value = r.value;
    if (value instanceof Uint8Array) {
      try {
        return { entry: decodeEntry(value) };
      } catch (cause) {
        if (!isAuditError(cause, 'malformed')) throw cause;
        return { problem: cause.message.replace(/^\[malformed\] /, '') };
      }
    }
    const problem = entryProblem(value);
    return problem === undefined ? { entry: value as AuditMessage } : { problem };
  }
}

/**
 * Verifies a log: every entry well formed, signed by a trusted writer key,
 * indexed 0, 1, 2, … and linked to its predecessor; and, with `head`, that the
 * log reaches the head's size and its first `treeSize` entries hash to the
 * head's root. Stops at the first break (see the classification above).
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param entries the stored entries in order (AuditMessages or protobuf bytes, sync or async)
 * @param options trusted keys and an optional signed head
 * @returns `{ ok: true, size, rootHash, lastEntryHash }` or `{ ok: false, index, reason, detail }`
 * @throws AuditError `malformed` for bad options, `bad_signature` when `head` is not signed by a trusted key;
 *   a source's own failure (e.g. `storage_failure`) propagates
 * @example
 * const result = await verifyChain(crypto, store.read(0, await store.size()), { keys: writerPublicKey });
 * if (!result.ok) console.error(`audit log broken at ${result.index}: ${result.reason}`);
 */
export async function verifyChain(crypto: ParleyCrypto, entries: ChainSource, options: VerifyChainOptions): Promise<ChainVerification> {
  assertCrypto(crypto);
  const o = assertObject(options, 'options');
  const keys = WriterKeys.from(crypto, o['keys'] as VerifyChainOptions['keys']);
  const head = o['head'] === undefined ? undefined : assertSignedTreeHead(crypto, o['head'], keys, 'options.head');
  const tree = o['tree'];
  if (tree !== undefined && (!(tree instanceof MerkleTree || tree instanceof RootAccumulator) || tree.size !== 0)) malformed('options.tree must be an empty MerkleTree or RootAccumulator');
  const equal = (a: Uint8Array, b: Uint8Array): boolean => crypto.constantTimeEqual(a, b);
  const reader = new Reader(entries);
  const acc = new RootAccumulator(merkleHasher(crypto));

  const authentic = (entry: AuditMessage, digest: EntryDigest): boolean => {
    const pk = keys.get(entry.signerKeyId);
    return pk !== undefined && crypto.ed25519.verify(entry.signature, digest.layout, pk);
  };
  const check = (item: Item | undefined): { entry: AuditMessage; digest: EntryDigest; ok: boolean } | undefined => {
    if (item?.entry === undefined) return undefined;
    const digest = digestEntry(crypto, item.entry);
    return { entry: item.entry, digest, ok: authentic(item.entry, digest) };
  };
  const broken = (index: number, reason: BreakReason, detail: string, entry?: AuditMessage): ChainVerification =>
    entry === undefined ? { ok: false, index, reason, detail } : { ok: false, index, reason, detail, entryIndex: Number(entry.index) };

  let p = 0;
  let prev = ZERO_HASH;
  try {
    for (;;) {
      if (head !== undefined && p === head.treeSize && !equal(acc.root(), head.rootHash)) {
        return broken(p, 'head_mismatch', `entries 0..${p - 1} verify but do not hash to the signed head's root for size ${p}`);
      }
      const item = await reader.next();
      if (item === undefined) break;
      if (item.problem !== undefined) return broken(p, 'malformed', item.problem);
      const cur = check(item)!;
      const { entry, digest } = cur;
      const x = Number(entry.index);

      if (!cur.ok) {
        const why = keys.get(entry.signerKeyId) === undefined ? 'signer_key_id names no trusted writer key' : 'signature does not verify';
        const next = check(await reader.peek());
        if (next?.ok === true && Number(next.entry.index) === p && equal(next.entry.previousHash, prev)) {
          return broken(p, 'inserted', `${why}, and the next entry (index ${p}) links to entry ${p - 1}: this entry was put in`, entry);
        }
        if (next?.ok === true && equal(next.entry.previousHash, digest.entryHash)) {
          return broken(p, 'bad_signature', `${why}, though the next entry's signed link commits to exactly these bytes`, entry);
        }
        return broken(p, 'modified', `${why}: the entry differs from what its writer signed`, entry);
      }
      if (x === p) {
        if (!equal(entry.previousHash, prev)) {
          return broken(p, 'bad_link', `entry ${p} is signed but its previous_hash is not the hash of entry ${p - 1} (a forked writer)`, entry);
        }
        acc.append(digest.leafHash);
        tree?.append(digest.leafHash);
        prev = digest.entryHash;
        p++;
        continue;
      }
      if (x < p) return broken(p, 'inserted', `authentic entry ${x} appears again at position ${p}`, entry);

      // x > p: look through the rest of the log for where entries p..x went.
      let duplicate = false;
      let earlier = false;
      for (let rest = await reader.next(); rest !== undefined && !duplicate; rest = await reader.next()) {
        if (rest.entry === undefined) continue;
        const y = Number(rest.entry.index);
        if (y < p || y > x) continue;
        if (!check(rest)!.ok) continue;
        if (y === x) duplicate = true;
        else earlier = true;
      }
      if (duplicate) return broken(p, 'inserted', `authentic entry ${x} sits at position ${p} and again later (a copy)`, entry);
      if (earlier) return broken(p, 'reordered', `authentic entry ${x} sits at position ${p}, before entries it follows`, entry);
      return broken(p, 'removed', x === p + 1 ? `entry ${p} is missing` : `entries ${p}..${x - 1} are missing`, entry);
    }
  } finally {
    await reader.close();
  }
  if (head !== undefined && p < head.treeSize) {
    return broken(p, 'removed', `the log ends after ${p} entries but a signed head covers ${head.treeSize}: the tail was cut`);
  }
  return { ok: true, size: p, rootHash: acc.root(), lastEntryHash: prev.slice() };
}

/**
 * The AuditError for a failed verification (for callers that throw).
 *
 * @param result a failed {@link ChainVerification}
 * @returns an AuditError whose code is the break reason
 * @throws AuditError `malformed` when `result` is not a failed ChainVerification
 */
export function chainError(result: Extract<ChainVerification, { ok: false }>): AuditError {
  const r = assertObject(result, 'result');
  if (r['ok'] !== false) malformed('result must be a failed ChainVerification ({ ok: false, … })');
  const reason = r['reason'];
  if (!(BREAK_REASONS as readonly unknown[]).includes(reason)) malformed(`result.reason must be one of ${BREAK_REASONS.join(', ')}`);
  const index = assertSafeInt(r['index'], 'result.index');
  const detail = r['detail'];
  if (typeof detail !== 'string') malformed('result.detail must be a string');
  return new AuditError(reason as BreakReason, `audit chain breaks at index ${index}: ${detail}`);
}
