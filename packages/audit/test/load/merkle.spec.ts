// The exhaustive Merkle proof sweeps (target test-load, not the fast loop; test/merkle.spec.ts runs the
// same bodies on sizes 1..64 and a few large ones): inclusion proofs for every index of every tree size
// 1..130 and consistency proofs for every pair of sizes up to 64, each matching the RFC 9162 reference
// and verifying, each of transparency-dev's corruptions failing.
import { describe, expect, it } from 'vitest';
import { consistencySweep, inclusionSweep, upTo } from '../merkle-sweeps.js';

describe('inclusion proofs for every index of every tree size 1..130 (BLAKE3)', () => {
  it('match the RFC reference and verify; every corruption fails', () => {
    expect(inclusionSweep(upTo(130))).toBe((130 * 131) / 2);
  });
});

describe('consistency proofs for every pair of sizes up to 64 (BLAKE3)', () => {
  it('match the RFC reference and verify; every corruption fails', () => {
    expect(consistencySweep([0, ...upTo(64)])).toBe((65 * 66) / 2);
  });
});
