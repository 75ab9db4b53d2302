// The full-size sweeps (target test-load, not the fast loop; test/messages.spec.ts runs the same
// checks smaller): every single-bit flip of every field of a sealed 1 KiB message, forward secrecy
// with every one of 10,000 messages opened, and the interleaving property 200 times.
import { beforeAll, describe, expect, it } from 'vitest';
import { createWorld, type Agent, type World } from '../fixtures.js';
import { anyInterleavingOpensOnce, everyBitFlipFails, oldEpochKeysAreGone } from '../sweeps.js';

let w: World;
let alice: Agent;
let bob: Agent;

beforeAll(async () => {
  w = await createWorld();
  alice = w.agent('alice');
  bob = w.agent('bob');
});

describe('sweeps at full size', () => {
  it('flipping any single bit of any field of a sealed 1 KiB message makes open fail', () => {
    expect(everyBitFlipFails(w, alice, bob, 1000)).toBeGreaterThan(8 * 1000);
  });

  it('once the window has passed, no old epoch key is in the exported state (every message opened)', () => {
    oldEpochKeysAreGone(w, alice, bob, { messages: 10_000, openEvery: 1 });
  });

  it('property: any interleaving inside the window is accepted once (small threshold), 200 runs', () => {
    anyInterleavingOpensOnce(w, alice, bob, 200);
  });
});
