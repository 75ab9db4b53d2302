// SecureMessage: round trip, every-bit tamper detection, replay, skew, sizes,
// rekeying, forward secrecy, disclosure. The 100,000-message rekeying runs
// (100 epochs in order and shuffled) and the full-size sweeps (test/load/sweeps.spec.ts)
// are in test/load (target test-load).
import { beforeEach, describe, expect, it } from 'vitest';
import { SecretKey, toHex } from '@parley/crypto-core';
import { TrustBundle } from '@parley/identity';
import { MessageType, SecureMessageSchema, create, fromBinary, toBinary, type SecureMessage } from '@parley/proto';
import {
  MAX_PAYLOAD_BYTES,
  assertEnvelopeShape,
  decodePayload,
  exportSessionState,
  importSessionState,
  messageHash,
  messageHashOf,
  verifyDisclosure,
  verifyEnvelopeDigest,
  verifyEnvelopeSignature,
  type SecurityEvent,
  type Session,
} from '../src/index.js';
import { createWorld, handshake, type Agent, type World } from './fixtures.js';
import { anyInterleavingOpensOnce, codeOf, everyBitFlipFails, note, oldEpochKeysAreGone } from './sweeps.js';

let w: World;
let alice: Agent;
let bob: Agent;
let a: Session;
let b: Session;
let events: SecurityEvent[];

function setup(rekeyThreshold = 1000): void {
  events = [];
  ({ a, b } = handshake(w.crypto, w.config(alice, { rekeyThreshold }), w.config(bob, { events: (e) => events.push(e) })));
}

beforeEach(async () => {
  w = await createWorld();
  alice = w.agent('alice');
  bob = w.agent('bob');
  setup();
});


describe('open with a digest taken before (messageHashOf)', () => {
  const copy = (e: SecureMessage): SecureMessage => fromBinary(SecureMessageSchema, toBinary(SecureMessageSchema, e));

  it('gives the same hash as messageHash and opens with it, once', () => {
    const sealed = a.seal(note('one'));
    const envelope = copy(sealed.envelope);
    const digest = messageHashOf(w.crypto, envelope);
    expect(toHex(digest.hash)).toBe(toHex(messageHash(w.crypto, envelope)));
    expect(toHex(digest.hash)).toBe(toHex(sealed.messageHash));
    const opened = b.open(envelope, digest);
    expect(toHex(opened.messageHash)).toBe(toHex(sealed.messageHash));
    expect(opened.content).toEqual({ text: 'one' });
    expect(codeOf(() => b.open(envelope, digest))).toBe('replay');
  });

  it('ignores a digest of another envelope object: every check runs on the envelope given', () => {
    const first = copy(a.seal(note('first')).envelope);
    const second = copy(a.seal(note('second')).envelope);
    // A digest of `first` handed in with `second`: `second` is checked on its own bytes and opens.
    expect(b.open(second, messageHashOf(w.crypto, first)).content).toEqual({ text: 'second' });
    // A forgery handed in with the digest of the genuine envelope is still refused.
    const forged = copy(first);
    forged.encryptedPayload[0]! ^= 1;
    expect(codeOf(() => b.open(forged, messageHashOf(w.crypto, first)))).toBe('bad_signature');
    expect(b.open(first, messageHashOf(w.crypto, first)).content).toEqual({ text: 'first' });
  });

  it('refuses a tampered envelope whose digest was taken from its own (tampered) bytes', () => {
    for (const field of ['encryptedPayload', 'authTag', 'payloadCommitment', 'signature'] as const) {
      const envelope = copy(a.seal(note(field)).envelope);
      envelope[field][3]! ^= 0x10;
      expect(codeOf(() => b.open(envelope, messageHashOf(w.crypto, envelope)))).toBe('bad_signature');
    }
  });
});

describe('SecureMessage', () => {
  it('round-trips JSON content with type, timestamp and optional hashes', () => {
    const first = a.seal({ type: MessageType.HANDOFF_REQUEST, content: { task: 'index', priority: 2, tags: ['x'], done: false, extra: null } });
    const opened = b.open(first.envelope);
    expect(opened.content).toEqual({ task: 'index', priority: 2, tags: ['x'], done: false, extra: null });
    expect(opened.payload.type).toBe(MessageType.HANDOFF_REQUEST);
    expect(opened.payload.timestampMs).toBe(BigInt(w.clock.now));
    expect(toHex(opened.messageHash)).toBe(toHex(first.messageHash));
    const reply = b.seal({ type: MessageType.HANDOFF_APPROVAL, content: 'ok', handoffHash: first.messageHash, parentMessageHash: first.messageHash });
    const got = a.open(reply.envelope);
    expect(got.payload.handoffHash).toEqual(first.messageHash);
    expect(got.content).toBe('ok');
  });

  it('survives the protobuf wire encoding', () => {
    const sealed = a.seal(note('over the wire'));
    const wire = toBinary(SecureMessageSchema, sealed.envelope);
    expect(b.open(fromBinary(SecureMessageSchema, wire)).content).toEqual({ text: 'over the wire' });
  });

  // The 1 KiB message (8,000+ flips) is test/load/sweeps.spec.ts's: the same sweep, exhaustive.
  it('flipping any single bit of any field of a sealed message (16-byte content) makes open fail', () => {
    expect(everyBitFlipFails(w, alice, bob, 16)).toBeGreaterThan(1500);
  }, 120_000);

  it('a gateway can check the sender without any session key', () => {
    const sealed = a.seal(note('hi'));
    expect(verifyEnvelopeSignature(w.crypto, sealed.envelope, alice.keyPair.publicKey)).toBe(true);
    expect(verifyEnvelopeSignature(w.crypto, sealed.envelope, bob.keyPair.publicKey)).toBe(false);
    const env = create(SecureMessageSchema, { ...sealed.envelope, recipientId: 'carol' });
    expect(verifyEnvelopeSignature(w.crypto, env, alice.keyPair.publicKey)).toBe(false);
    // The same check over the bytes messageHashOf took (the gateway's: hash and signature share one encoding).
    expect(verifyEnvelopeDigest(w.crypto, messageHashOf(w.crypto, sealed.envelope), alice.keyPair.publicKey)).toBe(true);
    expect(verifyEnvelopeDigest(w.crypto, messageHashOf(w.crypto, sealed.envelope), bob.keyPair.publicKey)).toBe(false);
    expect(verifyEnvelopeDigest(w.crypto, messageHashOf(w.crypto, env), alice.keyPair.publicKey)).toBe(false);
    const shortSignature = create(SecureMessageSchema, { ...sealed.envelope, signature: sealed.envelope.signature.subarray(0, 63) });
    expect(verifyEnvelopeDigest(w.crypto, messageHashOf(w.crypto, shortSignature), alice.keyPair.publicKey)).toBe(false);
  });

  it('rejects replays, reports security events, and commits nothing on rejection', () => {
    const m1 = a.seal(note('once'));
    b.open(m1.envelope);
    expect(codeOf(() => b.open(m1.envelope))).toBe('replay');
    expect(events.at(-1)).toMatchObject({ code: 'replay', stage: 'message', senderId: 'alice', recipientId: 'bob', sessionId: b.idHex });
    expect(JSON.stringify(events)).not.toMatch(/"key"/);
  });

  it('enforces the timestamp skew bounds', () => {
    const old = a.seal(note('old'));
    w.clock.now += 2 * 60 * 60_000; // two hours later: past the 1 h default
    w.revocations.apply([], 0, w.clock.now); // fresh revocation data: the peer's standing is checked first (§8.1 step 2)
    expect(codeOf(() => b.open(old.envelope))).toBe('stale_timestamp');
    w.clock.now += 5 * 60_000;
    const future = a.seal(note('future'));
    w.clock.now -= 5 * 60_000;
    expect(codeOf(() => b.open(future.envelope))).toBe('future_timestamp');
    w.revocations.apply([], 0, w.clock.now);
  });

  it('checks version, sizes, routing and session', () => {
    const base = a.seal(note('x')).envelope;
    const variants: [Partial<SecureMessage>, string][] = [
      [{ version: 2 }, 'unsupported_version'],
      [{ sessionId: new Uint8Array(16) }, 'unknown_session'],
      [{ recipientId: 'carol' }, 'identity_mismatch'],
      [{ senderId: 'mallory' }, 'identity_mismatch'],
      [{ authTag: new Uint8Array(31) }, 'malformed'],
      [{ signature: new Uint8Array(63) }, 'malformed'],
      [{ payloadCommitment: new Uint8Array(0) }, 'malformed'],
      [{ encryptedPayload: new Uint8Array(40) }, 'malformed'],
      [{ encryptedPayload: new Uint8Array(MAX_PAYLOAD_BYTES + 100) }, 'too_large'],
      [{ nonce: 1n << 60n }, 'nonce_exhausted'],
      [{ senderId: 'UPPER' }, 'malformed'],
    ];
    for (const [change, code] of variants) expect(codeOf(() => b.open(create(SecureMessageSchema, { ...base, ...change }))), JSON.stringify(Object.keys(change))).toBe(code);
    expect(codeOf(() => b.open({} as SecureMessage))).toBe('malformed');
    expect(codeOf(() => a.seal({ type: MessageType.UNSPECIFIED, content: 1 }))).toBe('malformed');
    expect(codeOf(() => a.seal({ type: 99 as MessageType, content: 1 }))).toBe('malformed');
    expect(codeOf(() => a.seal({ type: MessageType.STATUS_UPDATE, content: 'x'.repeat(MAX_PAYLOAD_BYTES) }))).toBe('too_large');
    expect(codeOf(() => a.seal({ type: MessageType.STATUS_UPDATE, content: 1, handoffHash: new Uint8Array(5) }))).toBe('malformed');
    expect(codeOf(() => a.seal({ type: MessageType.STATUS_UPDATE, content: (() => undefined) as never }))).toBe('malformed');
  });

  it('closed sessions wipe their keys and refuse to work', () => {
    const m = a.seal(note('late'));
    b.close();
    expect(codeOf(() => b.open(m.envelope))).toBe('unknown_session');
    a.close();
    expect(codeOf(() => a.seal(note('x')))).toBe('unknown_session');
  });
});

describe('rekeying', () => {
  // Here the receiver opens one message in 90 (it derives the skipped epochs); test/load/sweeps.spec.ts
  // opens all 10,000, and runs the interleaving property 200 times.
  it('once the window has passed, no old epoch key is in the exported state (sparse receiver)', () => {
    oldEpochKeysAreGone(w, alice, bob, { messages: 10_000, openEvery: 90 });
  }, 60_000);

  it('property: any interleaving inside the window is accepted once (small threshold)', () => {
    anyInterleavingOpensOnce(w, alice, bob, 10);
  }, 60_000);
});

describe('restart', () => {
  it('imported state carries on and still rejects every replay of messages accepted before', () => {
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const sent = Array.from({ length: 50 }, (_, i) => a.seal({ type: MessageType.STATUS_UPDATE, content: i }).envelope);
    for (const e of sent) b.open(e);
    const sealedB = exportSessionState(w.crypto, b, stateKey);
    const sealedA = exportSessionState(w.crypto, a, stateKey);
    b.close();
    a.close();
    const b2 = importSessionState(w.crypto, sealedB, stateKey, { identity: bob, clock: w.clock, trustBundle: w.trustBundle });
    const a2 = importSessionState(w.crypto, sealedA, stateKey, { identity: alice, clock: w.clock, trustBundle: w.trustBundle });
    for (const e of sent) expect(codeOf(() => b2.open(e))).toBe('replay');
    // The sender resumes two epochs ahead: never a nonce the old process may have used.
    expect(a2.sendCounter).toBe(2000);
    expect(b2.open(a2.seal(note('after restart')).envelope).content).toEqual({ text: 'after restart' });
    expect(a2.open(b2.seal(note('reply')).envelope).content).toEqual({ text: 'reply' });
  });

  it('sealed state does not open under another key or when tampered, and never shows keys', () => {
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const sealed = exportSessionState(w.crypto, b, stateKey);
    expect(codeOf(() => importSessionState(w.crypto, sealed, SecretKey.from(w.crypto.randomBytes(32), 'aead'), { identity: bob, trustBundle: w.trustBundle }))).toBe('state_corrupt');
    const t = sealed.slice();
    t[t.length - 5]! ^= 1;
    expect(codeOf(() => importSessionState(w.crypto, t, stateKey, { identity: bob, trustBundle: w.trustBundle }))).toBe('state_corrupt');
    expect(codeOf(() => importSessionState(w.crypto, sealed, stateKey, { identity: alice, trustBundle: w.trustBundle }))).toBe('identity_mismatch');
    expect(String(b)).not.toMatch(/[0-9a-f]{64}/);
  });
});

describe("the peer's issuer, read from the live trust bundle at every open (§8.1 step 2)", () => {
  /** A handshake over a trust bundle that the test replaces, as a follower does (§15.9). */
  function liveSetup() {
    let current = w.trustBundle;
    const live = TrustBundle.live(() => current);
    const pair = handshake(w.crypto, w.config(alice, { trustBundle: live }), w.config(bob, { trustBundle: live }));
    const set = (entries: { notAfterMs?: number }[]) => {
      current = TrustBundle.from(w.crypto, entries.map((e) => ({ publicKey: w.issuer.publicKey, ...e })));
    };
    return { ...pair, live, set };
  }
  const later = (ms: number) => {
    w.clock.now += ms;
    w.revocations.apply([], 0, w.clock.now); // fresh revocation data: only the issuer decides
  };

  it("a restored session refuses an envelope once its issuer's not_after_ms has passed, and closes", () => {
    const { a: a1, b: b1, live, set } = liveSetup();
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const sealed = exportSessionState(w.crypto, b1, stateKey);
    b1.close();
    const restored = importSessionState(w.crypto, sealed, stateKey, { identity: bob, clock: w.clock, trustBundle: live, revocations: w.revocations });
    set([{ notAfterMs: w.clock.now + 60_000 }]); // the issuer is retired after the restart
    expect(restored.open(a1.seal(note('before')).envelope).content).toEqual({ text: 'before' });
    later(60_000);
    const after = a1.seal(note('after')).envelope;
    expect(codeOf(() => restored.open(after))).toBe('expired');
    expect(restored.isClosed).toBe(true);
    expect(codeOf(() => restored.open(after))).toBe('unknown_session');
  });

  it('a session whose issuer leaves the trust bundle is closed on the next open (unknown_issuer)', () => {
    const { a: a1, b: b1, set } = liveSetup();
    expect(b1.open(a1.seal(note('one')).envelope).content).toEqual({ text: 'one' });
    set([]); // a bundle without the issuer
    const two = a1.seal(note('two')).envelope;
    expect(codeOf(() => b1.open(two))).toBe('unknown_issuer');
    expect(b1.isClosed).toBe(true);
    set([{}]); // the issuer back: the session stays closed
    expect(codeOf(() => b1.open(two))).toBe('unknown_session');
  });

  it('refuses to import state without a trust bundle', () => {
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const sealed = exportSessionState(w.crypto, b, stateKey);
    expect(codeOf(() => importSessionState(w.crypto, sealed, stateKey, { identity: bob } as never))).toBe('malformed');
  });
});

describe('non-repudiation', () => {
  it('the recipient proves what the sender sent, with no session key', () => {
    const sealed = a.seal({ type: MessageType.CONSENSUS_VOTE, content: { proposal: 7, vote: 'yes' } });
    const opened = b.open(sealed.envelope);
    const proof = { envelope: sealed.envelope, senderCertificate: alice.certificate, disclosure: opened.disclosure };
    const proven = verifyDisclosure(w.crypto, proof, { trustBundle: w.trustBundle });
    expect(proven.senderId).toBe('alice');
    expect(proven.content).toEqual({ proposal: 7, vote: 'yes' });
    expect(toHex(proven.messageHash)).toBe(toHex(sealed.messageHash));
  });

  it('a forged disclosure or wrong certificate is refused', () => {
    const sealed = a.seal({ type: MessageType.CONSENSUS_VOTE, content: { vote: 'yes' } });
    const opened = b.open(sealed.envelope);
    const forgedPayload = b.seal({ type: MessageType.CONSENSUS_VOTE, content: { vote: 'no' } }).disclosure.payload;
    const base = { envelope: sealed.envelope, senderCertificate: alice.certificate, disclosure: opened.disclosure };
    expect(codeOf(() => verifyDisclosure(w.crypto, { ...base, disclosure: { ...opened.disclosure, payload: forgedPayload } }, { trustBundle: w.trustBundle }))).toBe(
      'bad_commitment',
    );
    const salt = opened.disclosure.salt.slice();
    salt[0]! ^= 1;
    expect(codeOf(() => verifyDisclosure(w.crypto, { ...base, disclosure: { ...opened.disclosure, salt } }, { trustBundle: w.trustBundle }))).toBe('bad_commitment');
    expect(codeOf(() => verifyDisclosure(w.crypto, { ...base, senderCertificate: bob.certificate }, { trustBundle: w.trustBundle }))).toBe('identity_mismatch');
    const mallory = w.agent('alice'); // same name, different key, genuinely issued
    expect(codeOf(() => verifyDisclosure(w.crypto, { ...base, senderCertificate: mallory.certificate }, { trustBundle: w.trustBundle }))).toBe('bad_signature');
  });

  // These were raw TypeErrors ("Cannot destructure property 'envelope' of 'proof' as it is null", "reading 'trustBundle'").
  it('a missing proof, options or trust bundle is malformed, never a TypeError', () => {
    const sealed = a.seal({ type: MessageType.CONSENSUS_VOTE, content: { vote: 'yes' } });
    const proof = { envelope: sealed.envelope, senderCertificate: alice.certificate, disclosure: b.open(sealed.envelope).disclosure };
    expect(codeOf(() => verifyDisclosure(w.crypto, null as never, { trustBundle: w.trustBundle }))).toBe('malformed');
    expect(codeOf(() => (verifyDisclosure as (...args: unknown[]) => unknown)(w.crypto, proof))).toBe('malformed');
    expect(codeOf(() => verifyDisclosure(w.crypto, proof, {} as never))).toBe('malformed');
    expect(codeOf(() => verifyDisclosure(undefined as never, proof, { trustBundle: w.trustBundle }))).toBe('malformed');
    expect(verifyDisclosure(w.crypto, proof, { trustBundle: w.trustBundle }).content).toEqual({ vote: 'yes' });
  });
});

describe('stateless envelope functions, given what is not an envelope', () => {
  it('assertEnvelopeShape, messageHashOf, messageHash and decodePayload throw SessionError malformed, never a TypeError', () => {
    for (const hostile of [null, undefined, {}, 42, { $typeName: 'parley.v1.SecureMessage' }]) {
      expect(codeOf(() => assertEnvelopeShape(hostile)), String(hostile)).toBe('malformed');
      expect(codeOf(() => messageHashOf(w.crypto, hostile as never)), String(hostile)).toBe('malformed');
      expect(codeOf(() => messageHash(w.crypto, hostile as never)), String(hostile)).toBe('malformed');
      expect(codeOf(() => decodePayload(hostile as never, 0n)), String(hostile)).toBe('malformed');
    }
    const { envelope } = a.seal({ type: MessageType.STATUS_UPDATE, content: 1 });
    expect(codeOf(() => messageHashOf(w.crypto, { ...envelope, sessionId: new Uint8Array(3) }))).toBe('malformed'); // was a CryptoError
  });
});
