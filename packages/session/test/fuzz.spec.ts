// Robustness: arbitrary envelopes and frames are refused with a SessionError
// (a stable code), never a TypeError or a crash, and never accepted.
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { HandshakeFrameSchema, SecureMessageSchema, create, fromBinary } from '@parley/proto';
import { InitiatorHandshake, ResponderHandshake, SessionError, type Session } from '../src/index.js';
import { createWorld, handshake, type World } from './fixtures.js';

let w: World;
let b: Session;
beforeAll(async () => {
  w = await createWorld();
  ({ b } = handshake(w.crypto, w.config(w.agent('alice')), w.config(w.agent('bob'))));
});

const bytes = (max: number) => fc.uint8Array({ maxLength: max });
const id = fc.oneof(fc.constantFrom('alice', 'bob', 'carol'), fc.string({ maxLength: 140 }));

describe('fuzz', () => {
  it('random SecureMessage fields are rejected with a SessionError', () => {
    fc.assert(
      fc.property(
        fc.record({
          version: fc.oneof(fc.constant(1), fc.nat()),
          senderId: id,
          recipientId: id,
          sessionId: fc.oneof(fc.constant(b.id), bytes(20)),
          nonce: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
          timestampMs: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }),
          payloadCommitment: bytes(40),
          encryptedPayload: bytes(200),
          authTag: bytes(40),
          signature: bytes(70),
        }),
        (fields) => {
          try {
            b.open(create(SecureMessageSchema, fields));
          } catch (error) {
            expect(error).toBeInstanceOf(SessionError);
            return;
          }
          expect.fail('a random envelope was accepted');
        },
      ),
      { numRuns: 500 },
    );
  });

  it('random bytes never decode into an accepted envelope', () => {
    fc.assert(
      fc.property(bytes(400), (raw) => {
        let env;
        try {
          env = fromBinary(SecureMessageSchema, raw);
        } catch {
          return; // not protobuf: the transport layer rejects it as malformed
        }
        expect(() => b.open(env)).toThrow(SessionError);
      }),
      { numRuns: 500 },
    );
  });

  it('random handshake frames are rejected with a SessionError by both sides', () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    fc.assert(
      fc.property(
        fc.record({
          version: fc.oneof(fc.constant(1), fc.nat()),
          sessionId: bytes(20),
          senderId: id,
          recipientId: id,
          step: fc.nat({ max: 5 }),
          noiseMessage: bytes(300),
          rekeyThreshold: fc.nat(),
        }),
        (fields) => {
          const f = create(HandshakeFrameSchema, fields);
          expect(() => ResponderHandshake.accept(w.crypto, w.config(bob), f)).toThrow(SessionError);
          const { handshake: i } = InitiatorHandshake.start(w.crypto, w.config(alice), 'bob');
          expect(() => i.receive(f)).toThrow(SessionError);
        },
      ),
      { numRuns: 300 },
    );
  });
});
