// Identity-bound handshake: success, and each rejection with its own code.
import { beforeEach, describe, expect, it } from 'vitest';
import { SecretKey, toHex } from '@parley/crypto-core';
import { certificateTbs, createIssuerKey, TrustBundle } from '@parley/identity';
import {
  AgentCertificateSchema,
  HandshakeFrameSchema,
  HandshakePayloadSchema,
  create,
  fromBinary,
  toBinary,
  type AgentCertificate,
  type HandshakeFrame,
} from '@parley/proto';
import {
  HandshakeState,
  InitiatorHandshake,
  PARLEY_NOISE_PROTOCOL,
  ResponderHandshake,
  SessionError,
  identityBindingBytes,
  noisePrologue,
  parseProtocolName,
  type SecurityEvent,
} from '../src/index.js';
import { DAY, NOW, createWorld, handshake, type Agent, type World } from './fixtures.js';

let w: World;
beforeEach(async () => {
  w = await createWorld();
});

function expectCode(fn: () => unknown, code: SessionError['code']): void {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SessionError);
    expect((error as SessionError).code).toBe(code);
    return;
  }
  expect.fail(`expected SessionError ${code}`);
}

describe('identity-bound Noise XX handshake', () => {
  it('establishes a session with matching keys and peer identities', () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    const { a, b } = handshake(w.crypto, w.config(alice), w.config(bob));
    expect(a.peerId).toBe('bob');
    expect(b.peerId).toBe('alice');
    expect(toHex(a.handshakeHash)).toBe(toHex(b.handshakeHash));
    expect(a.id).toEqual(b.id);
    expect(a.role).toBe('initiator');
    expect(b.role).toBe('responder');
    expect(a.peer.identityPublicKey).toEqual(bob.keyPair.publicKey);
  });

  describe('the initiator rejects the responder (frame 2)', () => {
    function run(bobOverrides: Parameters<World['agent']>[1], initiatorExtra = {}, responderExtra = {}) {
      const alice = w.agent('alice');
      const bob = w.agent('bob', bobOverrides);
      const events: SecurityEvent[] = [];
      const { handshake: i, frame: f1 } = InitiatorHandshake.start(w.crypto, w.config(alice, { events: (e) => events.push(e), ...initiatorExtra }), 'bob');
      const { frame: f2 } = ResponderHandshake.accept(w.crypto, w.config(bob, responderExtra), f1);
      return { receive: () => i.receive(f2), events, bob };
    }

    it('unknown issuer', () => {
      const rogue = createIssuerKey(w.crypto, w.crypto.ed25519.generateKeyPair());
      const { receive, events } = run({ issuer: rogue });
      expectCode(receive, 'unknown_issuer');
      expect(events.map((e) => e.code)).toEqual(['unknown_issuer']);
      expect(events[0]).toMatchObject({ stage: 'handshake', senderId: 'bob', recipientId: 'alice' });
    });

    it('expired', () => {
      expectCode(run({ validFromMs: NOW - 10 * DAY, validUntilMs: NOW - DAY }).receive, 'expired');
    });

    it('not yet valid', () => {
      expectCode(run({ validFromMs: NOW + DAY, validUntilMs: NOW + 10 * DAY }).receive, 'not_yet_valid');
    });

    it('revoked by agent id', () => {
      w.revocations.apply([{ kind: 'agent', agentId: 'bob', reason: 'compromised', revokedAtMs: NOW }], 1, NOW);
      expectCode(run({}).receive, 'revoked');
    });

    it('stale revocation data fails closed', () => {
      w.clock.now = NOW + 10 * 60_000; // revocation copy last updated at NOW, bound 60 s
      expectCode(run({}).receive, 'revocation_stale');
    });
  });

  it('rejects a certificate of another agent than the one expected (identity_mismatch)', () => {
    const alice = w.agent('alice');
    const mallory = w.agent('mallory');
    // Mallory answers a handshake meant for bob, with her own valid certificate.
    const { handshake: i, frame: f1 } = InitiatorHandshake.start(w.crypto, w.config(alice), 'bob');
    const asBob = { ...mallory, agentId: 'bob' };
    const { frame: f2 } = ResponderHandshake.accept(w.crypto, w.config(asBob), f1);
    expectCode(() => i.receive(f2), 'identity_mismatch');
  });

  it('rejects a binding signature over another static key (bad_binding)', () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    const { handshake: i, frame: f1 } = InitiatorHandshake.start(w.crypto, w.config(alice), 'bob');
    // Bob's binding signature is made for a different Noise static key than the one he uses.
    const signingKey = bob.signingKey;
    const other = w.crypto.x25519.generateKeyPair().publicKey;
    const realSign = w.crypto.ed25519.sign;
    const lying = {
      ...w.crypto,
      ed25519: {
        ...w.crypto.ed25519,
        sign: (msg: Uint8Array, key: SecretKey) => {
          const m = msg.slice();
          if (key === signingKey) m.set(other, m.length - 32);
          return realSign(m, key);
        },
      },
    };
    const { frame: f2 } = ResponderHandshake.accept(lying, w.config(bob), f1);
    expectCode(() => i.receive(f2), 'bad_binding');
  });

  it('the responder rejects a revoked initiator at frame 3', () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    const { handshake: i, frame: f1 } = InitiatorHandshake.start(w.crypto, w.config(alice), 'bob');
    const { handshake: r, frame: f2 } = ResponderHandshake.accept(w.crypto, w.config(bob), f1);
    const { frame: f3 } = i.receive(f2);
    w.revocations.apply([{ kind: 'serial', serial: alice.certificate.serial, reason: 'key rotated', revokedAtMs: NOW }], 1, NOW);
    expectCode(() => r.receive(f3), 'revoked');
  });

  it('a relay that rewrites frame fields breaks the handshake (prologue binding)', () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    const { handshake: i, frame: f1 } = InitiatorHandshake.start(w.crypto, w.config(alice), 'bob');
    // The relay lowers the rekey threshold in frame 1 and restores it in frame 2:
    // the two sides now hold different prologues, so Noise fails to decrypt — which a handshake reports as
    // handshake_failed, like every Noise-layer error (PROTOCOL.md §5.1).
    const { frame: f2 } = ResponderHandshake.accept(w.crypto, w.config(bob), create(HandshakeFrameSchema, { ...f1, rekeyThreshold: 7 }));
    expect(f2.rekeyThreshold).toBe(7);
    expectCode(() => i.receive(create(HandshakeFrameSchema, { ...f2, rekeyThreshold: f1.rekeyThreshold })), 'handshake_failed');
  });

  it('flipping any bit of frame 2 or 3 makes the handshake fail, and a failed handshake stays failed', () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    for (const target of [2, 3] as const) {
      for (let byte = 0; byte < 200; byte += 13) {
        const { handshake: i, frame: f1 } = InitiatorHandshake.start(w.crypto, w.config(alice), 'bob');
        const { handshake: r, frame: f2 } = ResponderHandshake.accept(w.crypto, w.config(bob), f1);
        if (target === 2) {
          const bad = create(HandshakeFrameSchema, { ...f2, noiseMessage: flip(f2.noiseMessage, byte) });
          expect(() => i.receive(bad)).toThrow(SessionError);
          expectCode(() => i.receive(f2), 'handshake_failed'); // poisoned: the genuine frame no longer helps
        } else {
          const { frame: f3 } = i.receive(f2);
          const bad = create(HandshakeFrameSchema, { ...f3, noiseMessage: flip(f3.noiseMessage, byte) });
          expect(() => r.receive(bad)).toThrow(SessionError);
          expectCode(() => r.receive(f3), 'handshake_failed');
        }
      }
    }
  });

  it('validates frames: version, step, lengths, routing', () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    const { frame: f1 } = InitiatorHandshake.start(w.crypto, w.config(alice), 'bob');
    const variants: [Partial<HandshakeFrame>, SessionError['code']][] = [
      [{ version: 2 }, 'unsupported_version'],
      [{ step: 2 }, 'handshake_failed'],
      [{ sessionId: new Uint8Array(15) }, 'malformed'],
      [{ senderId: 'Not An Id' }, 'malformed'],
      [{ recipientId: 'carol' }, 'identity_mismatch'],
      [{ noiseMessage: new Uint8Array(10) }, 'malformed'],
      [{ noiseMessage: new Uint8Array(70_000) }, 'malformed'],
      [{ rekeyThreshold: 0 }, 'malformed'],
    ];
    for (const [change, code] of variants) {
      expectCode(() => ResponderHandshake.accept(w.crypto, w.config(bob), create(HandshakeFrameSchema, { ...f1, ...change })), code);
    }
    // A non-empty payload in message 1 is refused.
    expectCode(() => InitiatorHandshake.start(w.crypto, w.config(alice), 'Bad Peer'), 'malformed');
  });

  it('trusts a rotated-out issuer still in the bundle', () => {
    const oldIssuer = createIssuerKey(w.crypto, w.crypto.ed25519.generateKeyPair());
    const bundle = TrustBundle.from(w.crypto, [{ publicKey: w.issuer.publicKey }, { publicKey: oldIssuer.publicKey }]);
    const alice = w.agent('alice');
    const bob = w.agent('bob', { issuer: oldIssuer });
    const { a } = handshake(w.crypto, w.config(alice, { trustBundle: bundle }), w.config(bob, { trustBundle: bundle }));
    expect(a.peerId).toBe('bob');
  });

  it('handshake payload decodes as documented (certificate + 64-byte signature)', () => {
    const alice = w.agent('alice');
    const bob = w.agent('bob');
    const { frame: f1 } = InitiatorHandshake.start(w.crypto, w.config(alice), 'bob');
    const { frame: f2 } = ResponderHandshake.accept(w.crypto, w.config(bob), f1);
    expect(f2.step).toBe(2);
    // 32 (e) + 48 (encrypted s) + payload + 16 tag
    const payloadLength = f2.noiseMessage.length - 32 - 48 - 16;
    const payloadSize = toBinary(HandshakePayloadSchema, create(HandshakePayloadSchema, { certificate: bob.certificate, identitySignature: new Uint8Array(64) })).length;
    expect(payloadLength).toBe(payloadSize);
  });
});

describe('the certificate in a HandshakePayload (§3.2: no unknown fields, at most 4096 bytes encoded)', () => {
  /**
   * Answers step 1 as `responder` would, but with `payloadOf(staticPublicKey, signature)` as its Noise
   * payload: what a peer that sends any bytes it likes can put there.
   */
  function step2With(frame1: HandshakeFrame, responder: Agent, payloadOf: (certificate: AgentCertificate, signature: Uint8Array) => Uint8Array): HandshakeFrame {
    const staticKey = w.crypto.x25519.generateKeyPair();
    const hs = new HandshakeState(w.crypto, {
      protocol: parseProtocolName(PARLEY_NOISE_PROTOCOL, w.crypto),
      initiator: false,
      prologue: noisePrologue(frame1.sessionId, frame1.senderId, responder.agentId, frame1.rekeyThreshold),
      staticKeyPair: staticKey,
    });
    hs.readMessage(frame1.noiseMessage);
    const signature = w.crypto.ed25519.sign(identityBindingBytes(frame1.sessionId, responder.agentId, 2, staticKey.publicKey), responder.signingKey);
    const { message } = hs.writeMessage(payloadOf(responder.certificate, signature));
    return create(HandshakeFrameSchema, { ...frame1, senderId: responder.agentId, recipientId: frame1.senderId, step: 2, noiseMessage: message });
  }
  const encode = (certificate: AgentCertificate, identitySignature: Uint8Array) =>
    toBinary(HandshakePayloadSchema, create(HandshakePayloadSchema, { certificate, identitySignature }));
  /** An unknown varint field 99 = 1: tag (99 << 3) | 0 = 792 = 0x98 0x06. */
  const UNKNOWN_FIELD = Uint8Array.of(0x98, 0x06, 0x01);

  function initiatorReads(payloadOf: Parameters<typeof step2With>[2], bob = w.agent('bob')) {
    const alice = w.agent('alice');
    const { handshake: i, frame: f1 } = InitiatorHandshake.start(w.crypto, w.config(alice), 'bob');
    const f2 = step2With(f1, bob, payloadOf);
    return () => i.receive(f2);
  }

  it('accepts a well-formed payload built this way (the helper is faithful)', () => {
    expect(initiatorReads(encode)().session.peerId).toBe('bob');
  });

  it('refuses a certificate carrying a field unknown to v1 (unsigned data riding with signed data): malformed', () => {
    // The issuer's signature covers the TBS layout only, so it still verifies with the extra field.
    const receive = initiatorReads((cert, sig) => {
      const certBytes = Uint8Array.from([...toBinary(AgentCertificateSchema, cert), ...UNKNOWN_FIELD]);
      const withUnknown = fromBinary(AgentCertificateSchema, certBytes);
      expect(withUnknown.$unknown).toHaveLength(1);
      return encode(withUnknown, sig);
    });
    expect(receive).toThrow(expect.objectContaining({ code: 'malformed', message: expect.stringMatching(/fields that version 1 does not define/) as string }) as Error);
  });

  it('refuses a validly signed certificate over 4096 bytes inside a payload under 8192: malformed', () => {
    const bob = w.agent('bob');
    // 64 capabilities of 100 characters: every §3.2 field rule holds, the encoding is about 6.7 KB.
    const capabilities = Array.from({ length: 64 }, (_, i) => `cap-${String(i).padStart(2, '0')}-${'x'.repeat(93)}`);
    const fields = create(AgentCertificateSchema, { ...bob.certificate, capabilities, signature: new Uint8Array(0) });
    const big = create(AgentCertificateSchema, { ...fields, signature: w.crypto.ed25519.sign(certificateTbs(fields), w.issuer.secretKey) });
    const bigBytes = toBinary(AgentCertificateSchema, big).length;
    expect(bigBytes).toBeGreaterThan(4096);
    const receive = initiatorReads((_cert, sig) => {
      const payload = encode(big, sig);
      expect(payload.length).toBeLessThanOrEqual(8192);
      return payload;
    }, bob);
    expect(receive).toThrow(expect.objectContaining({ code: 'malformed', message: expect.stringMatching(/over 4096 bytes/) as string }) as Error);
  });

  it('ignores unknown fields of the HandshakePayload itself (§5.3: encrypted and bound into the handshake hash)', () => {
    const receive = initiatorReads((cert, sig) => Uint8Array.from([...encode(cert, sig), ...UNKNOWN_FIELD]));
    expect(receive().session.peerId).toBe('bob');
  });
});

function flip(bytes: Uint8Array, byte: number): Uint8Array {
  const out = bytes.slice();
  out[byte % out.length]! ^= 0x01;
  return out;
}
