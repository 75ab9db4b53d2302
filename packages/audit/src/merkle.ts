/**
 * Merkle tree over the audit entries: RFC 9162 §2.1 (Certificate Transparency
 * v2.0) with BLAKE3 as the hash (docs/PROTOCOL.md §9.3).
 *
 *   MTH({})      = HASH()                                  the empty tree
 *   MTH({d0})    = HASH(0x00 ‖ d0)                         leaf hash
 *   MTH(D[n])    = HASH(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))  k = largest power of two < n
 *
 * Proof generation follows RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1 (PROOF / SUBPROOF);
 * verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step, with the
 * edge cases the RFC leaves to the caller handled as transparency-dev/merkle
 * does (equal sizes, an empty old tree), except that an empty old tree must
 * carry the empty-tree root (a deliberate, stricter departure: a signed head
 * for size 0 has exactly one valid root).
 *
 * The tree keeps every complete subtree hash (level l holds the roots of the
 * aligned 2^l-leaf subtrees), so a root or proof for any size up to the
 * current one costs O(log² n) hashes and nothing is recomputed from leaves.
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { assertBytes, assertCrypto, assertFunction, assertHashPath, assertSafeInt, describe, malformed } from './assert.js';
import { AuditError } from './errors.js';
import { HASH_BYTES } from './entry.js';

/** Most hashes an inclusion or consistency proof may carry (2 × 53 covers every tree below 2^53 leaves). */
export const MAX_PROOF_HASHES = 106;

/** The three hashing operations of RFC 9162 §2.1.1, over one hash function. */
export interface TreeHasher {
  /** MTH of the empty tree: HASH(""). */
  emptyRoot(): Uint8Array;
  /** HASH(0x00 ‖ data). */
  hashLeaf(data: Uint8Array): Uint8Array;
  /** HASH(0x01 ‖ left ‖ right). */
  hashChildren(left: Uint8Array, right: Uint8Array): Uint8Array;
}

/**
 * RFC 9162 hashing over any 32-byte hash function. Parley uses BLAKE3
 * ({@link merkleHasher}); SHA-256 reproduces RFC 6962/9162 test vectors.
 *
 * @param hash a function returning 32 bytes
 * @returns the hasher
 * @throws AuditError `malformed` when `hash` is not a function
 */
export function createTreeHasher(hash: (data: Uint8Array) => Uint8Array): TreeHasher {
  assertFunction(hash, 'hash');
  const empty = hash(new Uint8Array(0));
  if (!(empty instanceof Uint8Array) || empty.length !== HASH_BYTES) malformed(`hash must return ${HASH_BYTES} bytes`);
  const node = new Uint8Array(1 + 2 * HASH_BYTES);
  node[0] = 0x01;
  return Object.freeze({
    emptyRoot: () => empty.slice(),
    hashLeaf(data: Uint8Array): Uint8Array {
      const buf = new Uint8Array(1 + data.length);
      buf.set(data, 1); // buf[0] = 0x00: leaf domain separation
      return hash(buf);
    },
    hashChildren(left: Uint8Array, right: Uint8Array): Uint8Array {
      node.set(left, 1);
      node.set(right, 1 + HASH_BYTES);
      return hash(node);
    },
  });
}

/**
 * Parley's tree hasher: RFC 9162 hashing with BLAKE3 (hash mode, 32 bytes).
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @returns the hasher
 * @throws AuditError `malformed`
 */
export function merkleHasher(crypto: ParleyCrypto): TreeHasher {
  assertCrypto(crypto);
  return createTreeHasher((data) => crypto.blake3(data));
}

/** An inclusion proof (RFC 9162 §2.1.3): the audit path of one leaf in a tree of `treeSize` leaves. */
export interface InclusionProof {
  readonly leafIndex: number;
  readonly treeSize: number;
  readonly path: readonly Uint8Array[];
}

/** A consistency proof (RFC 9162 §2.1.4): the tree of `oldSize` leaves is a prefix of the tree of `newSize`. */
export interface ConsistencyProof {
  readonly oldSize: number;
  readonly newSize: number;
  readonly path: readonly Uint8Array[];
}

/** Growable array of 32-byte hashes in one buffer. */
class HashList {
  #buf = new Uint8Array(HASH_BYTES * 64);
  #count = 0;

  get count(): number {
    return this.#count;
  }

  push(hash: Uint8Array): void {
    const end = (this.#count + 1) * HASH_BYTES;
    if (end > this.#buf.length) {
      const next = new Uint8Array(Math.max(end, this.#buf.length * 2));
      next.set(this.#buf.subarray(0, this.#count * HASH_BYTES));
      this.#buf = next;
    }
    this.#buf.set(hash, this.#count * HASH_BYTES);
    this.#count++;
  }

  /** A view (valid until the next push). */
  view(i: number): Uint8Array {
    return this.#buf.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES);
  }
}

/** Largest power of two strictly less than n (n ≥ 2). Arithmetic, not bit operations: sizes go to 2^53. */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: number): boolean {
  return n >= 1 && splitPoint(n + 1) === n;
}

/**
 * An append-only Merkle tree of leaf hashes, answering roots and proofs for
 * every size up to the current one.
 *
 * @example
 * const tree = new MerkleTree(merkleHasher(crypto));
 * tree.append(leafHash(crypto, entry));
 * const proof = tree.inclusionProof(0);          // for the current size
 * verifyInclusionProof(merkleHasher(crypto), proof, leafHash(crypto, entry), tree.root()); // true
 */
export class MerkleTree {
  readonly #h: TreeHasher;
  readonly #levels: HashList[] = [new HashList()];
  #size = 0;

  /**
   * @param hasher from {@link merkleHasher} (or {@link createTreeHasher})
   * @throws AuditError `malformed`
   */
  constructor(hasher: TreeHasher) {
    if (typeof hasher !== 'object' || hasher === null || typeof hasher.hashChildren !== 'function' || typeof hasher.emptyRoot !== 'function') {
      malformed(`hasher must be a TreeHasher, got ${describe(hasher)}`);
    }
    this.#h = hasher;
  }

  /** Number of leaves. */
  get size(): number {
    return this.#size;
  }

  /**
   * Appends one leaf hash (32 bytes, e.g. from `leafHash(crypto, entry)`).
   * @throws AuditError `malformed`
   */
  append(leafHash: Uint8Array): void {
    assertBytes(leafHash, 'leafHash', HASH_BYTES);
    this.#levels[0]!.push(leafHash);
    // Every completed pair of subtrees yields their parent, one level up.
    let index = this.#size;
    let level = 0;
    while (index % 2 === 1) {
      const list = this.#levels[level]!;
      const parent = this.#h.hashChildren(list.view(index - 1), list.view(index));
      level++;
      if (this.#levels.length === level) this.#levels.push(new HashList());
      this.#levels[level]!.push(parent);
      index = (index - 1) / 2;
    }
    this.#size++;
  }

  /**
   * The leaf hash at `index`.
   * @throws AuditError `malformed` unless `index` is a safe integer ≥ 0, `not_found` unless it is below the size
   */
  leafHash(index: number): Uint8Array {
    this.#checkIndex(index, 'index', this.#size);
    return this.#levels[0]!.view(index).slice();
  }

  /**
   * MTH of the first `treeSize` leaves (the empty-tree hash for 0).
   * @throws AuditError `not_found` when `treeSize` exceeds the tree, `malformed` for a non-integer
   */
  root(treeSize: number = this.#size): Uint8Array {
    this.#checkSize(treeSize, 'treeSize');
    return this.#mth(0, treeSize).slice();
  }

  /**
   * PATH(leafIndex, D[treeSize]) (RFC 9162 §2.1.3.1).
   * @throws AuditError `not_found` / `malformed` unless 0 ≤ leafIndex < treeSize ≤ size
   */
  inclusionProof(leafIndex: number, treeSize: number = this.#size): InclusionProof {
    this.#checkSize(treeSize, 'treeSize');
    this.#checkIndex(leafIndex, 'leafIndex', treeSize);
    const path: Uint8Array[] = [];
    // Iterative PATH: descend from the root, collecting the sibling of each step; the RFC lists them leaf-first.
    let lo = 0;
    let hi = treeSize;
    while (hi - lo > 1) {
      const k = splitPoint(hi - lo);
      if (leafIndex < lo + k) {
        path.push(this.#mth(lo + k, hi).slice());
        hi = lo + k;
      } else {
        path.push(this.#mth(lo, lo + k).slice());
        lo += k;
      }
    }
    return { leafIndex, treeSize, path: path.reverse() };
  }

  /**
   * PROOF(oldSize, D[newSize]) (RFC 9162 §2.1.4.1); empty when oldSize is 0 or equals newSize.
   * @throws AuditError `not_found` / `malformed` unless 0 ≤ oldSize ≤ newSize ≤ size
   */
  consistencyProof(oldSize: number, newSize: number = this.#size): ConsistencyProof {
    this.#checkSize(newSize, 'newSize');
    assertSafeInt(oldSize, 'oldSize');
    if (oldSize > newSize) throw new AuditError('malformed', `oldSize ${oldSize} exceeds newSize ${newSize}`);
    if (oldSize === 0 || oldSize === newSize) return { oldSize, newSize, path: [] };
    // SUBPROOF(m, D[lo:hi], b), unrolled: each step appends one hash, the RFC lists them deepest-first.
    const path: Uint8Array[] = [];
    let m = oldSize;
    let lo = 0;
    let hi = newSize;
    let complete = true; // b: whether the old tree's subtree here is the whole old tree
    while (m !== hi - lo) {
      const k = splitPoint(hi - lo);
      if (m <= k) {
        path.push(this.#mth(lo + k, hi).slice());
        hi = lo + k;
      } else {
        path.push(this.#mth(lo, lo + k).slice());
        m -= k;
        lo += k;
        complete = false;
      }
    }
    if (!complete) path.push(this.#mth(lo, hi).slice());
    return { oldSize, newSize, path: path.reverse() };
  }

  /** MTH(D[lo:hi]) as a view; lo is always aligned to the largest power of two ≤ hi − lo in RFC recursion. */
  #mth(lo: number, hi: number): Uint8Array {
    const n = hi - lo;
    if (n === 0) return this.#h.emptyRoot();
    if (isPowerOfTwo(n)) {
      const level = Math.log2(n);
      return this.#levels[level]!.view(lo / n);
    }
    const k = splitPoint(n);
    // Left side first, copied: the view it returns must not be invalidated by computing the right side.
    const left = this.#mth(lo, lo + k).slice();
    return this.#h.hashChildren(left, this.#mth(lo + k, hi));
  }

  /** A tree size: a safe integer in 0..size. */
  #checkSize(value: number, name: string): void {
    assertSafeInt(value, name);
    if (value > this.#size) throw new AuditError('not_found', `${name} ${value} exceeds the tree size ${this.#size}`);
  }

  /** A leaf index: a safe integer in 0..treeSize−1 (`malformed` below 0, `not_found` at or beyond treeSize). */
  #checkIndex(value: number, name: string, treeSize: number): void {
    assertSafeInt(value, name);
    if (value >= treeSize) {
      throw new AuditError('not_found', treeSize === 0 ? `${name} ${value}: the tree of size 0 has no leaves` : `${name} ${value} is not below the tree size ${treeSize}`);
    }
  }
}

/**
 * Root of a growing tree from its leaf hashes in O(log n) memory (a compact
 * range of the perfect subtrees' roots), for streaming verification.
 */
export class RootAccumulator {
  readonly #h: TreeHasher;
  readonly #peaks: { size: number; hash: Uint8Array }[] = [];
  #count = 0;

  /** @param hasher the tree hasher (not checked: internal use) */
  constructor(hasher: TreeHasher) {
    this.#h = hasher;
  }

  /** Leaves appended so far. */
  get size(): number {
    return this.#count;
  }

  /** Adds one leaf hash, merging equal-sized peaks. */
  append(leafHash: Uint8Array): void {
    let node = { size: 1, hash: leafHash };
    for (let top = this.#peaks.at(-1); top !== undefined && top.size === node.size; top = this.#peaks.at(-1)) {
      this.#peaks.pop();
      node = { size: node.size * 2, hash: this.#h.hashChildren(top.hash, node.hash) };
    }
    this.#peaks.push(node);
    this.#count++;
  }

  /**
   * The peaks: the roots of the perfect subtrees the leaves so far form, largest first (one per set bit of
   * `size`, from the highest). With the size they are the whole state: {@link RootAccumulator.fromPeaks}.
   */
  peaks(): Uint8Array[] {
    return this.#peaks.map((p) => p.hash.slice());
  }

  /**
   * An accumulator at `size` leaves from its {@link RootAccumulator.peaks} (a checkpoint's).
   * @throws AuditError `malformed` when the count of peaks is not the number of set bits of `size`
   */
  static fromPeaks(hasher: TreeHasher, size: number, peaks: readonly Uint8Array[]): RootAccumulator {
    assertSafeInt(size, 'size');
    if (!Array.isArray(peaks)) malformed(`peaks must be an array of hashes, got ${describe(peaks)}`);
    const sizes: number[] = [];
    for (let bit = 2 ** 52; bit >= 1; bit /= 2) if (Math.floor(size / bit) % 2 === 1) sizes.push(bit);
    if (peaks.length !== sizes.length) malformed(`a tree of ${size} leaves has ${sizes.length} peaks, not ${peaks.length}`);
    const acc = new RootAccumulator(hasher);
    peaks.forEach((h, i) => acc.#peaks.push({ size: sizes[i]!, hash: new Uint8Array(assertBytes(h, `peaks[${i}]`, HASH_BYTES)) }));
    acc.#count = size;
    return acc;
  }

  /** MTH of all leaves so far: the peaks, largest first, folded from the right. */
  root(): Uint8Array {
    if (this.#peaks.length === 0) return this.#h.emptyRoot();
    let r = this.#peaks.at(-1)!.hash;
    for (let i = this.#peaks.length - 2; i >= 0; i--) r = this.#h.hashChildren(this.#peaks[i]!.hash, r);
    return r.slice();
  }
}

function checkPath(path: unknown, name: string): readonly Uint8Array[] {
  return assertHashPath(path, name, MAX_PROOF_HASHES);
}

function checkHasher(hasher: unknown): TreeHasher {
  const h = hasher as Partial<TreeHasher> | null;
  if (typeof h !== 'object' || h === null || typeof h.hashChildren !== 'function') malformed(`hasher must be a TreeHasher, got ${describe(hasher)}`);
  return hasher as TreeHasher;
}

/** Byte equality without early exit (no ParleyCrypto at hand here: proofs take only a TreeHasher). */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/**
 * The root that an inclusion proof leads to (RFC 9162 §2.1.3.2, steps 1–5,
 * without the final comparison).
 *
 * @param hasher tree hasher
 * @param proof leaf index, tree size and audit path
 * @param leafHash the leaf's hash (32 bytes)
 * @returns the computed root
 * @throws AuditError `bad_proof` when the path does not fit the sizes, `malformed` for wrong types
 */
export function rootFromInclusionProof(hasher: TreeHasher, proof: InclusionProof, leafHash: Uint8Array): Uint8Array {
  const h = checkHasher(hasher);
  if (typeof proof !== 'object' || proof === null) malformed(`proof must be an InclusionProof, got ${describe(proof)}`);
  const leafIndex = assertSafeInt(proof.leafIndex, 'proof.leafIndex');
  const treeSize = assertSafeInt(proof.treeSize, 'proof.treeSize');
  const path = checkPath(proof.path, 'proof.path');
  assertBytes(leafHash, 'leafHash', HASH_BYTES);
  // 1. leaf_index must be below tree_size.
  if (leafIndex >= treeSize) throw new AuditError('bad_proof', `leafIndex ${leafIndex} is not below treeSize ${treeSize}`);
  // 2.–3.
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r = leafHash;
  // 4.
  for (const p of path) {
    if (sn === 0) throw new AuditError('bad_proof', 'inclusion path is longer than the tree is deep');
    if (fn % 2 === 1 || fn === sn) {
      r = h.hashChildren(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn /= 2;
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = h.hashChildren(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 5. (first half) sn must have reached 0: the path had exactly the right length.
  if (sn !== 0) throw new AuditError('bad_proof', 'inclusion path is shorter than the tree is deep');
  return r.slice();
}

/**
 * RFC 9162 §2.1.3.2: whether `proof` shows `leafHash` at `proof.leafIndex` in
 * the tree of `proof.treeSize` leaves with root `root`. False (never throws)
 * on any wrong or malformed input.
 *
 * @param hasher tree hasher
 * @param proof the inclusion proof
 * @param leafHash the leaf's hash
 * @param root the expected root (from a signed tree head)
 * @returns true when the proof holds
 */
export function verifyInclusionProof(hasher: TreeHasher, proof: InclusionProof, leafHash: Uint8Array, root: Uint8Array): boolean {
  try {
    return root instanceof Uint8Array && equalBytes(rootFromInclusionProof(hasher, proof, leafHash), root);
  } catch {
    return false;
  }
}

/**
 * RFC 9162 §2.1.4.2: checks that the tree with root `oldRoot` and
 * `proof.oldSize` leaves is a prefix of the tree with root `newRoot`.
 *
 * Edge cases outside the RFC's 0 < m < n: equal sizes need an empty proof and
 * equal roots; an empty old tree needs an empty proof and the empty-tree root.
 *
 * @param hasher tree hasher
 * @param proof sizes and path
 * @param oldRoot root of the old tree
 * @param newRoot root of the new tree
 * @throws AuditError `bad_proof` when the proof does not hold, `malformed` for wrong types
 */
export function checkConsistencyProof(hasher: TreeHasher, proof: ConsistencyProof, oldRoot: Uint8Array, newRoot: Uint8Array): void {
  const h = checkHasher(hasher);
  if (typeof proof !== 'object' || proof === null) malformed(`proof must be a ConsistencyProof, got ${describe(proof)}`);
  const first = assertSafeInt(proof.oldSize, 'proof.oldSize');
  const second = assertSafeInt(proof.newSize, 'proof.newSize');
  const path = checkPath(proof.path, 'proof.path');
  assertBytes(oldRoot, 'oldRoot', HASH_BYTES);
  assertBytes(newRoot, 'newRoot', HASH_BYTES);
  const fail = (why: string): never => {
    throw new AuditError('bad_proof', why);
  };
  if (first > second) fail(`oldSize ${first} exceeds newSize ${second}`);
  if (first === second) {
    if (path.length > 0) fail('a consistency proof between equal sizes must be empty');
    if (!equalBytes(oldRoot, newRoot)) fail('equal sizes with different roots');
    return;
  }
  if (first === 0) {
    if (path.length > 0) fail('a consistency proof from the empty tree must be empty');
    if (!equalBytes(oldRoot, h.emptyRoot())) fail('a tree of size 0 must have the empty-tree root');
    return;
  }
  // 1. An empty path fails.
  if (path.length === 0) fail('consistency path is empty');
  // 2. If first is an exact power of two, prepend first_hash to the path.
  const nodes = isPowerOfTwo(first) ? [oldRoot, ...path] : [...path];
  // 3.
  let fn = first - 1;
  let sn = second - 1;
  // 4. If LSB(fn) is set, right-shift fn and sn equally until it is not.
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 5.
  let fr = nodes[0]!;
  let sr = nodes[0]!;
  // 6.
  for (const c of nodes.slice(1)) {
    if (sn === 0) fail('consistency path is longer than needed');
    if (fn % 2 === 1 || fn === sn) {
      fr = h.hashChildren(c, fr);
      sr = h.hashChildren(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn /= 2;
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = h.hashChildren(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 7.
  if (sn !== 0) fail('consistency path is shorter than needed');
  if (!equalBytes(fr, oldRoot)) fail('consistency path does not lead to the old root');
  if (!equalBytes(sr, newRoot)) fail('consistency path does not lead to the new root');
}

/**
 * Boolean form of {@link checkConsistencyProof}: false (never throws) on any wrong or malformed input.
 *
 * @returns true when the proof holds
 */
export function verifyConsistencyProof(hasher: TreeHasher, proof: ConsistencyProof, oldRoot: Uint8Array, newRoot: Uint8Array): boolean {
  try {
    checkConsistencyProof(hasher, proof, oldRoot, newRoot);
    return true;
  } catch {
    return false;
  }
}
