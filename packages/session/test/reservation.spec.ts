// Durable counter reservation (docs/PROTOCOL.md §13): a sender never seals
// on a (key, nonce) that a crash could make it use again. Property: over
// random workloads, random reservation failures (a full disk) and a crash at a
// random point, restored from the last durable mark, no (session, counter)
// pair is ever sealed twice — and the peer opens every envelope of both runs.
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SecretKey } from '@parley/crypto-core';
import { MessageType, type HandshakeFrame, type SecureMessage } from '@parley/proto';
import { SessionManager, type Session, type SessionManagerOptions } from '../src/index.js';
import { createWorld, type World } from './fixtures.js';

let w: World;
let managers: SessionManager[];
beforeEach(async () => {
  w = await createWorld();
  managers = [];
});
afterEach(() => {
  for (const m of managers) m.close();
});

function wire(options: { alice?: Partial<SessionManagerOptions>; bob?: Partial<SessionManagerOptions>; rekeyThreshold?: number } = {}) {
  const alice = w.agent('alice');
  const bob = w.agent('bob');
  const peers = new Map<string, SessionManager>();
  const make = (agent: typeof alice, extra: Partial<SessionManagerOptions> = {}) =>
    new SessionManager({
      crypto: w.crypto,
      handshake: { identity: agent, trustBundle: w.trustBundle, revocations: w.revocations, ...(options.rekeyThreshold === undefined ? {} : { rekeyThreshold: options.rekeyThreshold }) },
      transport: {
        sendFrame: async (frame: HandshakeFrame) => {
          await peers.get(frame.recipientId)?.handleFrame(frame);
        },
      },
      clock: w.clock,
      ...extra,
    });
  const a = make(alice, options.alice);
  const b = make(bob, options.bob);
  peers.set('alice', a);
  peers.set('bob', b);
  managers.push(a, b);
  return { a, b, alice, bob, peers };
}

describe('counter reservation', () => {
  it('seals only below a durably reserved mark, and seals nothing when the reservation fails', async () => {
    const marks: number[] = [];
    let fail = false;
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const { a, b } = wire({
      alice: {
        stateKey,
        reservationBlock: 4,
        reserveCounters: async (_s, upTo) => {
          if (fail) throw new Error('ENOSPC: no space left on device');
          marks.push(upTo);
        },
      },
    });
    for (let i = 0; i < 10; i++) {
      const sealed = await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: i });
      expect(Number(sealed.envelope.nonce)).toBeLessThan(marks[marks.length - 1]!);
      b.open(sealed.envelope);
    }
    expect(marks).toEqual([4, 8, 12]);
    // 10 and 11 are reserved; 12 needs a new mark, which fails: nothing is sealed, the counter does not move.
    await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 10 });
    await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 11 });
    fail = true;
    const session = a.current('bob')!;
    await expect(a.seal('bob', { type: MessageType.STATUS_UPDATE, content: 12 })).rejects.toThrow(/ENOSPC/);
    expect(session.sendCounter).toBe(12);
  });

  it('property: a crash at any point, restored from the last durable mark, never reuses a (session, counter) pair', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          block: fc.integer({ min: 1, max: 8 }),
          threshold: fc.integer({ min: 1, max: 5 }),
          before: fc.integer({ min: 0, max: 40 }),
          after: fc.integer({ min: 1, max: 20 }),
          failAt: fc.option(fc.integer({ min: 0, max: 40 }), { nil: undefined }),
        }),
        async ({ block, threshold, before, after, failAt }) => {
          for (const m of managers.splice(0)) m.close();
          const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
          // What the store made durable: a reservation's promise resolves only once it is (the store's contract).
          const durable: number[] = [];
          let writes = 0;
          const reserve = async (_s: Session, upTo: number): Promise<void> => {
            writes++;
            if (failAt !== undefined && writes > failAt) throw new Error('ENOSPC');
            durable.push(upTo);
          };
          const { a, b } = wire({ alice: { stateKey, reservationBlock: block, reserveCounters: reserve }, rekeyThreshold: threshold });
          const seen = new Set<string>();
          const record = (e: SecureMessage): void => {
            const key = `${Buffer.from(e.sessionId).toString('hex')}/${e.nonce}`;
            expect(seen.has(key)).toBe(false);
            seen.add(key);
          };
          const session = await a.session('bob');
          const snapshot = a.exportSession(session); // the snapshot the owner wrote when the session started
          for (let i = 0; i < before; i++) {
            try {
              const s = await a.seal('bob', { type: MessageType.STATUS_UPDATE, content: i });
              record(s.envelope);
              b.open(s.envelope);
            } catch {
              break; // the disk filled up: fail closed
            }
          }
          // crash: a new process restores the snapshot at the durable mark
          const restored = new SessionManager({
            crypto: w.crypto,
            handshake: { identity: a.sessions()[0]!.local, trustBundle: w.trustBundle, revocations: w.revocations },
            transport: { sendFrame: () => undefined },
            clock: w.clock,
            stateKey,
            reservationBlock: block,
            reserveCounters: async (_s, upTo) => void durable.push(upTo),
          });
          managers.push(restored);
          const mark = durable.length === 0 ? 0 : Math.max(...durable);
          const again = restored.restore(snapshot, mark);
          for (let i = 0; i < after; i++) {
            const s = await restored.seal('bob', { type: MessageType.STATUS_UPDATE, content: `after ${i}` });
            record(s.envelope);
            expect(b.open(s.envelope).content).toBe(`after ${i}`);
          }
          expect(again.idHex).toBe(session.idHex);
        },
      ),
      { numRuns: 60 },
    );
  });
});
