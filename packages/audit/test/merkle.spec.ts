// RFC 9162 Merkle tree: the Certificate Transparency SHA-256 vectors (an
// independent check of the algorithms), a naive recursive reference straight
// from the RFC text (test/merkle-sweeps.ts), inclusion proofs for every index
// of every tree size 1..64 and 127..130, consistency proofs for every pair of
// sizes up to 32 and from every old size to 63 and 64, and corrupted proofs
// that must fail. test/load/merkle.spec.ts sweeps every size 1..130 and every
// pair up to 64.
import { readFileSync } from 'node:fs';
import { fromHex } from '@parley/crypto-core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkConsistencyProof,
  createTreeHasher,
  MAX_PROOF_HASHES,
  MerkleTree,
  rootFromInclusionProof,
  verifyConsistencyProof,
  verifyInclusionProof,
  type TreeHasher,
} from '../src/index.js';
import { crypto, WRONG } from './fixtures.js';
import { blake, consistencySweep, hex, inclusionSweep, treeOf, upTo } from './merkle-sweeps.js';

interface Vectors {
  emptyRoot: string;
  leaves: string[];
  roots: string[];
  inclusion: { leafIndex: number; treeSize: number; path: string[] }[];
  consistency: { oldSize: number; newSize: number; path: string[] }[];
}
const V = JSON.parse(readFileSync(new URL('./vectors/rfc6962-sha256.json', import.meta.url), 'utf8')) as Vectors;

const sha = createTreeHasher((d) => crypto.sha256(d));

describe('RFC 6962 / 9162 vectors (SHA-256)', () => {
  const leaves = V.leaves.map((l) => fromHex(l));
  const tree = treeOf(sha, leaves);

  it('empty root and every root for sizes 1..8', () => {
    expect(hex(tree.root(0))).toBe(V.emptyRoot);
    V.roots.forEach((r, i) => expect(hex(tree.root(i + 1)), `size ${i + 1}`).toBe(r));
  });

  it('inclusion proofs', () => {
    for (const v of V.inclusion) {
      const proof = tree.inclusionProof(v.leafIndex, v.treeSize);
      expect(proof.path.map(hex)).toEqual(v.path);
      const root = fromHex(V.roots[v.treeSize - 1]!);
      expect(verifyInclusionProof(sha, { ...v, path: v.path.map((p) => fromHex(p)) }, tree.leafHash(v.leafIndex), root)).toBe(true);
    }
  });

  it('consistency proofs', () => {
    for (const v of V.consistency) {
      const proof = tree.consistencyProof(v.oldSize, v.newSize);
      expect(proof.path.map(hex), `${v.oldSize}→${v.newSize}`).toEqual(v.path);
      const ok = verifyConsistencyProof(sha, { ...v, path: v.path.map((p) => fromHex(p)) }, fromHex(V.roots[v.oldSize - 1]!), fromHex(V.roots[v.newSize - 1]!));
      expect(ok).toBe(true);
    }
  });

  it('edge cases as transparency-dev/merkle (except that size 0 must carry the empty root)', () => {
    const empty = fromHex(V.emptyRoot);
    const r1 = fromHex(V.roots[0]!);
    const r2 = fromHex(V.roots[1]!);
    const cons = (oldSize: number, newSize: number, a: Uint8Array, b: Uint8Array, p: Uint8Array[] = []) =>
      verifyConsistencyProof(sha, { oldSize, newSize, path: p }, a, b);
    expect(cons(0, 0, empty, empty)).toBe(true);
    expect(cons(0, 1, empty, r1)).toBe(true);
    expect(cons(0, 1, r2, r1)).toBe(false); // transparency-dev accepts any root1 for size 0; we do not
    expect(cons(1, 1, r1, r1)).toBe(true);
    expect(cons(1, 1, r1, r2)).toBe(false);
    expect(cons(1, 0, r1, r2)).toBe(false);
    expect(cons(2, 1, r2, r1)).toBe(false);
    expect(cons(1, 2, r1, r2)).toBe(false); // empty proof
    expect(cons(0, 0, empty, empty, [empty])).toBe(false);
    expect(cons(1, 1, r1, r1, [empty])).toBe(false);
    const leaf = sha.hashLeaf(new TextEncoder().encode('data'));
    expect(verifyInclusionProof(sha, { leafIndex: 0, treeSize: 1, path: [] }, leaf, leaf)).toBe(true);
    for (const [leafIndex, treeSize] of [[0, 0], [1, 0], [2, 1], [1, 1]] as const) {
      expect(verifyInclusionProof(sha, { leafIndex, treeSize, path: [] }, leaf, leaf)).toBe(false);
    }
  });
});

// The exhaustive sweeps (every index of every tree size 1..130, every pair of sizes up to 64) are
// test/load/merkle.spec.ts's; here the same bodies (test/merkle-sweeps.ts) on every small size and a
// few large ones, around the powers of two where the tree's shape changes.
describe('inclusion proofs for every index of tree sizes 1..64 and 127..130 (BLAKE3)', () => {
  it('match the RFC reference and verify; every corruption fails', () => {
    expect(inclusionSweep([...upTo(64), 127, 128, 129, 130])).toBe((64 * 65) / 2 + 127 + 128 + 129 + 130);
  });
});

describe('consistency proofs for every pair of sizes up to 32, and every old size of 63 and 64 (BLAKE3)', () => {
  const tree = treeOf(blake, Array.from({ length: 64 }, (_, i) => new TextEncoder().encode(`entry ${i}`)));

  it('match the RFC reference and verify; every corruption fails', () => {
    expect(consistencySweep([0, ...upTo(32), 63, 64])).toBe((33 * 34) / 2 + 64 + 65);
  });

  it('checkConsistencyProof names the failure with bad_proof', () => {
    expect(() => checkConsistencyProof(blake, { oldSize: 3, newSize: 7, path: [] }, tree.root(3), tree.root(7))).toThrow(/\[bad_proof\]/);
  });
});

describe('arithmetic beyond 32 bits', () => {
  // A BigInt transcription of RFC 9162 §2.1.3.2: the production code must agree for sizes up to 2^53.
  function referenceRoot(h: TreeHasher, leafIndex: bigint, treeSize: bigint, leaf: Uint8Array, p: Uint8Array[]): string | undefined {
    if (leafIndex >= treeSize) return undefined;
    let fn = leafIndex;
    let sn = treeSize - 1n;
    let r = leaf;
    for (const x of p) {
      if (sn === 0n) return undefined;
      if ((fn & 1n) === 1n || fn === sn) {
        r = h.hashChildren(x, r);
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        r = h.hashChildren(r, x);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    return sn === 0n ? hex(r) : undefined;
  }

  it('rootFromInclusionProof matches a BigInt reference for random sizes up to 2^53', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: 2n ** 53n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 53n - 2n }), fc.integer({ min: 0, max: 60 }), (size, idx, len) => {
        const leafIndex = idx % size;
        const leaf = new Uint8Array(32).fill(Number(leafIndex % 251n));
        const p = Array.from({ length: len }, (_, i) => new Uint8Array(32).fill(i));
        let ours: string | undefined;
        try {
          ours = hex(rootFromInclusionProof(blake, { leafIndex: Number(leafIndex), treeSize: Number(size), path: p }, leaf));
        } catch {
          ours = undefined;
        }
        expect(ours).toBe(referenceRoot(blake, leafIndex, size, leaf, p));
      }),
      { numRuns: 300 },
    );
  });
});

describe('validation', () => {
  const tree = treeOf(blake, [new Uint8Array([1]), new Uint8Array([2]), new Uint8Array([3])]);

  it('tree methods reject wrong types and sizes with AuditError', () => {
    for (const bad of WRONG) {
      expect(() => tree.append(bad as never)).toThrow(/\[malformed\]/);
      if (bad !== undefined && bad !== 0) {
        expect(() => tree.root(bad as never)).toThrow(/\[malformed\]/);
        expect(() => tree.consistencyProof(bad as never)).toThrow(/\[malformed\]/);
      }
      if (bad !== 0) expect(() => tree.inclusionProof(bad as never)).toThrow(/\[malformed\]/);
      expect(() => new MerkleTree(bad as never)).toThrow(/\[malformed\]/);
      expect(() => createTreeHasher(bad as never)).toThrow(/\[malformed\]/);
    }
    expect(() => tree.root(4)).toThrow(/\[not_found\]/);
    expect(() => tree.inclusionProof(3, 3)).toThrow(/\[not_found\]/);
    expect(() => tree.consistencyProof(3, 2)).toThrow(/\[malformed\]/);
    expect(() => tree.leafHash(3)).toThrow(/\[not_found\]/);
    expect(() => createTreeHasher(() => new Uint8Array(16))).toThrow(/\[malformed\]/);
  });

  it('every index-taking method takes integers 0..size−1: a negative index is malformed (leafHash(-1) was an empty hash), the message names the index given', () => {
    for (const bad of [-1, -3, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1]) {
      expect(() => tree.leafHash(bad), `leafHash(${bad})`).toThrow(/\[malformed\] index must be/);
      expect(() => tree.inclusionProof(bad), `inclusionProof(${bad})`).toThrow(/\[malformed\] leafIndex must be/);
      expect(() => tree.inclusionProof(0, bad), `inclusionProof(0, ${bad})`).toThrow(/\[malformed\] treeSize must be/);
      expect(() => tree.consistencyProof(bad), `consistencyProof(${bad})`).toThrow(/\[malformed\] oldSize must be/);
      expect(() => tree.consistencyProof(0, bad), `consistencyProof(0, ${bad})`).toThrow(/\[malformed\] newSize must be/);
      expect(() => tree.root(bad), `root(${bad})`).toThrow(/\[malformed\] treeSize must be/);
    }
    expect(() => tree.leafHash(3)).toThrow('[not_found] index 3 is not below the tree size 3');
    expect(() => tree.inclusionProof(2, 2)).toThrow('[not_found] leafIndex 2 is not below the tree size 2');
    const empty = new MerkleTree(blake);
    expect(() => empty.leafHash(5)).toThrow('[not_found] index 5: the tree of size 0 has no leaves');
    expect(() => empty.leafHash(0)).toThrow(/\[not_found\] index 0/);
    expect(() => empty.inclusionProof(0, 0)).toThrow(/\[not_found\] leafIndex 0/);
    expect(tree.leafHash(2)).toHaveLength(32);
    expect(tree.leafHash(0)).toEqual(blake.hashLeaf(new Uint8Array([1])));
  });

  it('verifiers return false (and the checking forms throw malformed) on wrong types', () => {
    const root = tree.root();
    const good = tree.inclusionProof(1);
    for (const bad of WRONG) {
      expect(verifyInclusionProof(blake, bad as never, tree.leafHash(1), root)).toBe(false);
      expect(verifyInclusionProof(blake, good, bad as never, root)).toBe(false);
      expect(verifyInclusionProof(blake, good, tree.leafHash(1), bad as never)).toBe(false);
      expect(verifyInclusionProof(bad as never, good, tree.leafHash(1), root)).toBe(false);
      expect(verifyConsistencyProof(blake, bad as never, root, root)).toBe(false);
      if (Array.isArray(bad)) continue; // an empty path is well formed (and wrong: bad_proof)
      expect(() => rootFromInclusionProof(blake, { ...good, path: bad as never }, tree.leafHash(1))).toThrow(/\[malformed\]/);
      expect(() => checkConsistencyProof(blake, { oldSize: 1, newSize: 3, path: bad as never }, root, root)).toThrow(/\[malformed\]/);
    }
    const long = Array.from({ length: MAX_PROOF_HASHES + 1 }, () => new Uint8Array(32));
    expect(() => rootFromInclusionProof(blake, { leafIndex: 0, treeSize: 3, path: long }, tree.leafHash(0))).toThrow(/\[malformed\]/);
  });
});
