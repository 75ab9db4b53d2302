// The Merkle proof sweeps, shared by the fast loop (test/merkle.spec.ts: every tree size 1..64 and a
// few large ones) and the test-load target (test/load/merkle.spec.ts: every size 1..130, every pair of
// sizes up to 64). One body, two sizes: each generated proof matches a naive recursive transcription
// of RFC 9162 and verifies, and each of transparency-dev's corruptions of it fails.
import { toHex } from '@parley/crypto-core';
import { expect } from 'vitest';
import { MerkleTree, merkleHasher, verifyConsistencyProof, verifyInclusionProof, type TreeHasher } from '../src/index.js';
import { crypto } from './fixtures.js';

export const blake = merkleHasher(crypto);
export const hex = (b: Uint8Array): string => toHex(b);

// --- Reference: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 as written (recursive, from the leaf data). ---
function k(n: number): number {
  let p = 1;
  while (p * 2 < n) p *= 2;
  return p;
}
export function mth(h: TreeHasher, d: Uint8Array[]): Uint8Array {
  if (d.length === 0) return h.emptyRoot();
  if (d.length === 1) return h.hashLeaf(d[0]!);
  const s = k(d.length);
  return h.hashChildren(mth(h, d.slice(0, s)), mth(h, d.slice(s)));
}
export function path(h: TreeHasher, m: number, d: Uint8Array[]): Uint8Array[] {
  if (d.length === 1) return [];
  const s = k(d.length);
  return m < s ? [...path(h, m, d.slice(0, s)), mth(h, d.slice(s))] : [...path(h, m - s, d.slice(s)), mth(h, d.slice(0, s))];
}
export function subproof(h: TreeHasher, m: number, d: Uint8Array[], b: boolean): Uint8Array[] {
  if (m === d.length) return b ? [] : [mth(h, d)];
  const s = k(d.length);
  return m <= s ? [...subproof(h, m, d.slice(0, s), b), mth(h, d.slice(s))] : [...subproof(h, m - s, d.slice(s), false), mth(h, d.slice(0, s))];
}

export function treeOf(h: TreeHasher, data: Uint8Array[]): MerkleTree {
  const t = new MerkleTree(h);
  for (const d of data) t.append(h.hashLeaf(d));
  return t;
}

/** Corruptions in the style of transparency-dev's corruptInclusionProof. */
function badInclusions(p: { leafIndex: number; treeSize: number; path: readonly Uint8Array[] }, root: Uint8Array) {
  const some = new Uint8Array(32).fill(0xab);
  const out: { leafIndex: number; treeSize: number; path: Uint8Array[]; root: Uint8Array; what: string }[] = [];
  const add = (what: string, leafIndex: number, treeSize: number, path: readonly Uint8Array[], r = root) => {
    if (leafIndex >= 0) out.push({ leafIndex, treeSize, path: [...path], root: r, what });
  };
  add('index − 1', p.leafIndex - 1, p.treeSize, p.path);
  add('index + 1', p.leafIndex + 1, p.treeSize, p.path);
  add('index ^ 2', p.leafIndex ^ 2, p.treeSize, p.path);
  add('size × 2', p.leafIndex, p.treeSize * 2, p.path);
  add('size / 2', p.leafIndex, Math.floor(p.treeSize / 2), p.path);
  add('other root', p.leafIndex, p.treeSize, p.path, some);
  add('trailing hash', p.leafIndex, p.treeSize, [...p.path, root]);
  add('preceding hash', p.leafIndex, p.treeSize, [root, ...p.path]);
  if (p.path.length > 0) add('last removed', p.leafIndex, p.treeSize, p.path.slice(0, -1));
  if (p.path.length > 1) add('one replaced', p.leafIndex, p.treeSize, [p.path[0]!, some, ...p.path.slice(2)]);
  p.path.forEach((_, i) => {
    const q = p.path.map((h) => h.slice());
    q[i]![0]! ^= 8;
    add(`bit flip in path[${i}]`, p.leafIndex, p.treeSize, q);
  });
  return out;
}

/**
 * Inclusion proofs for every index of each tree size in `sizes` (a tree of max(sizes) leaves): each
 * matches the RFC reference and verifies, and no corruption of it does. Returns how many proofs were checked.
 */
export function inclusionSweep(sizes: readonly number[]): number {
  const data = Array.from({ length: Math.max(...sizes) }, (_, i) => new TextEncoder().encode(`leaf ${i}`));
  const tree = treeOf(blake, data);
  const accepted: string[] = [];
  let checked = 0;
  for (const n of sizes) {
    const root = tree.root(n);
    expect(hex(root)).toBe(hex(mth(blake, data.slice(0, n))));
    for (let m = 0; m < n; m++) {
      const proof = tree.inclusionProof(m, n);
      expect(proof.path.map(hex)).toEqual(path(blake, m, data.slice(0, n)).map(hex));
      const leaf = tree.leafHash(m);
      expect(verifyInclusionProof(blake, proof, leaf, root)).toBe(true);
      expect(verifyInclusionProof(blake, proof, tree.leafHash((m + 1) % n === m ? 0 : (m + 1) % n), root)).toBe(n === 1);
      for (const bad of badInclusions(proof, root)) {
        if (bad.leafIndex === m && bad.treeSize === n && bad.path.length === proof.path.length && bad.path.every((h, i) => hex(h) === hex(proof.path[i]!)) && bad.root === root) continue;
        // Collected rather than asserted one by one: 100,000 expect() calls cost more than the hashing.
        if (verifyInclusionProof(blake, bad, leaf, bad.root)) accepted.push(`${bad.what} (m=${m}, n=${n})`);
      }
      checked++;
    }
  }
  expect(accepted, 'corrupted inclusion proofs that verified').toEqual([]);
  return checked;
}

/**
 * Consistency proofs for every old size 0..n of each new size n in `newSizes`: each matches the RFC
 * reference and verifies, and no corruption of it does. Returns how many proofs were checked.
 */
export function consistencySweep(newSizes: readonly number[]): number {
  const max = Math.max(...newSizes);
  const data = Array.from({ length: max }, (_, i) => new TextEncoder().encode(`entry ${i}`));
  const tree = treeOf(blake, data);
  const some = new Uint8Array(32).fill(0xcd);
  const accepted: string[] = [];
  let checked = 0;
  for (const n of newSizes) {
    for (let m = 0; m <= n; m++) {
      const proof = tree.consistencyProof(m, n);
      const expected = m === 0 || m === n ? [] : subproof(blake, m, data.slice(0, n), true);
      expect(proof.path.map(hex), `${m}→${n}`).toEqual(expected.map(hex));
      const r1 = tree.root(m);
      const r2 = tree.root(n);
      expect(verifyConsistencyProof(blake, proof, r1, r2), `${m}→${n}`).toBe(true);
      checked++;
      if (m === 0 || m === n) continue;
      const p = proof.path;
      const probes: [string, number, number, readonly Uint8Array[], Uint8Array, Uint8Array][] = [
        ['old − 1', m - 1, n, p, r1, r2],
        ['old + 1', m + 1, n, p, r1, r2],
        ['old ^ 2', m ^ 2, n, p, r1, r2],
        ['new × 2', m, n * 2, p, r1, r2],
        ['new / 2', m, Math.floor(n / 2), p, r1, r2],
        ['wrong old root', m, n, p, some, r2],
        ['wrong new root', m, n, p, r1, some],
        ['swapped roots', m, n, p, r2, r1],
        ['empty proof', m, n, [], r1, r2],
        ['trailing old root', m, n, [...p, r1], r1, r2],
        ['trailing new root', m, n, [...p, r2], r1, r2],
        ['preceding old root', m, n, [r1, ...p], r1, r2],
        ['preceding new root', m, n, [r2, ...p], r1, r2],
        ['preceding proof[0]', m, n, [p[0]!, ...p], r1, r2],
        ['truncated', m, n, p.slice(0, -1), r1, r2],
      ];
      p.forEach((_, i) => {
        const q = p.map((h) => h.slice());
        q[i]![0]! ^= 16;
        probes.push([`bit flip in path[${i}]`, m, n, q, r1, r2]);
      });
      for (const [what, a, b, q, x, y] of probes) {
        if (a === m && b === n && q === p && x === r1 && y === r2) continue;
        // Some probes describe a different but genuinely valid statement (e.g. old ^ 2 = old); skip those.
        if (a <= b && b <= max && q === p && x === r1 && y === r2 && a !== m && hex(tree.root(a)) === hex(r1)) continue;
        if (verifyConsistencyProof(blake, { oldSize: a, newSize: b, path: q }, x, y)) accepted.push(`${what} (${m}→${n})`);
      }
    }
  }
  expect(accepted, 'corrupted consistency proofs that verified').toEqual([]);
  return checked;
}

/** 1, 2, …, n. */
export const upTo = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);
