// Rekeying at load (target test-load, not the fast loop): 100,000 messages
// across 100 epochs, in order and shuffled within the replay window.
import { beforeEach, describe, expect, it } from 'vitest';
import { MessageType } from '@parley/proto';
import { type Session } from '../../src/index.js';
import { createWorld, handshake, type Agent, type World } from '../fixtures.js';
import { codeOf } from '../sweeps.js';

let w: World;
let alice: Agent;
let bob: Agent;
let a: Session;
let b: Session;

function setup(rekeyThreshold = 1000): void {
  ({ a, b } = handshake(w.crypto, w.config(alice, { rekeyThreshold }), w.config(bob)));
}

beforeEach(async () => {
  w = await createWorld();
  alice = w.agent('alice');
  bob = w.agent('bob');
  setup();
});

function shuffle<T>(items: T[], seed: number): void {
  let s = seed + 1;
  for (let i = items.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const j = s % (i + 1);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
}

describe('rekeying at load', () => {
  it('100,000 messages across 100 rekeys round-trip in order', () => {
    setup(1000);
    for (let i = 0; i < 100_000; i++) {
      const m = a.seal({ type: MessageType.STATUS_UPDATE, content: i });
      if (b.open(m.envelope).content !== i) throw new Error(`message ${i} mismatch`);
    }
    expect(a.stats.sendEpoch).toBe(99);
    expect(b.stats.receiveEpochs.at(-1)).toBe(99);
    // The receiver keeps only the epochs its window covers (≤ 8160 counters → at most 10 epochs of 1000).
    expect(b.stats.receiveEpochs.length).toBeLessThanOrEqual(10);
  });

  it('100,000 messages shuffled within the window open exactly once, across epoch boundaries', () => {
    setup(1000);
    const block = 4000; // shuffle blocks of 4000 (< window 8160) covering 4–5 epochs each
    let next = 0;
    for (let start = 0; start < 100_000; start += block) {
      const batch = Array.from({ length: block }, () => a.seal({ type: MessageType.STATUS_UPDATE, content: next++ }).envelope);
      shuffle(batch, start);
      for (const env of batch) b.open(env);
      expect(codeOf(() => b.open(batch[0]!))).toBe('replay');
    }
    expect(b.stats.received).toBe(100_000);
  });
});
