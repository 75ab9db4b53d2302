// SecureMessage: round trip, every-bit tamper detection, replay, skew, sizes,
// rekeying, forward secrecy, disclosure. The 100,000-message rekeying runs
// (100 epochs in order and shuffled) are in test/load (target test-load).
import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { SecretKey, toHex } from '@parley/crypto-core';
import { MessageType, SecureMessageSchema, create, fromBinary, toBinary, type SecureMessage } from '@parley/proto';
import {
  MAX_PAYLOAD_BYTES,
  SessionError,
  exportSessionState,
  importSessionState,
  messageHash,
  messageHashOf,
  verifyDisclosure,
  verifyEnvelopeSignature,
  type SecurityEvent,
  type Session,
} from '../src/index.js';
import { createWorld, handshake, type Agent, type World } from './fixtures.js';

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

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof SessionError) return error.code;
    throw error;
  }
  return 'accepted';
}

const note = (text: string) => ({ type: MessageType.STATUS_UPDATE, content: { text } });

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

  it('flipping any single bit of any field of a sealed 1 KiB message makes open fail', () => {
    const content = { blob: 'x'.repeat(1000) };
    const fields = ['version', 'senderId', 'recipientId', 'sessionId', 'nonce', 'timestampMs', 'payloadCommitment', 'encryptedPayload', 'authTag', 'signature'] as const;
    let tried = 0;
    // Each flip is tried on a fresh message so that no failure can be explained by a replay.
    for (const field of fields) {
      const probe = a.seal({ type: MessageType.TASK_ASSIGNMENT, content }).envelope;
      const bits = bitLength(probe, field);
      for (let bit = 0; bit < bits; bit++) {
        const env = a.seal({ type: MessageType.TASK_ASSIGNMENT, content }).envelope;
        const tampered = flipBit(env, field, bit);
        const code = codeOf(() => b.open(tampered));
        expect(code, `${field} bit ${bit}`).not.toBe('accepted');
        tried++;
      }
    }
    expect(tried).toBeGreaterThan(8 * 1000);
    // The genuine messages still open afterwards: rejection committed nothing.
    const fine = a.seal(note('after the storm'));
    expect(b.open(fine.envelope).content).toEqual({ text: 'after the storm' });
  }, 120_000);

  it('a gateway can check the sender without any session key', () => {
    const sealed = a.seal(note('hi'));
    expect(verifyEnvelopeSignature(w.crypto, sealed.envelope, alice.keyPair.publicKey)).toBe(true);
    expect(verifyEnvelopeSignature(w.crypto, sealed.envelope, bob.keyPair.publicKey)).toBe(false);
    const env = create(SecureMessageSchema, { ...sealed.envelope, recipientId: 'carol' });
    expect(verifyEnvelopeSignature(w.crypto, env, alice.keyPair.publicKey)).toBe(false);
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
  it('once the window has passed, no old epoch key is in the exported state', () => {
    setup(100);
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const early = a.seal(note('epoch 0'));
    const snapshot = exportSessionState(w.crypto, b, stateKey); // b holds epoch 0
    const epoch0Keys = importSessionState(w.crypto, snapshot, stateKey, { identity: bob }).unsafeExportInternals().receive.unsafeExport();
    expect(epoch0Keys[0]!.epoch).toBe(0);
    for (let i = 0; i < 10_000; i++) b.open(a.seal(note(`m${i}`)).envelope);
    const after = importSessionState(w.crypto, exportSessionState(w.crypto, b, stateKey), stateKey, { identity: bob });
    const held = after.unsafeExportInternals().receive.unsafeExport();
    expect(held[0]!.epoch).toBeGreaterThan(0);
    const oldKeyHex = toHex(epoch0Keys[0]!.key);
    for (const e of held) expect(toHex(e.key)).not.toBe(oldKeyHex);
    // And the live session can no longer open an epoch-0 message: its key is gone.
    expect(codeOf(() => b.open(early.envelope))).toBe('replay');
  }, 60_000);

  it('property: any interleaving inside the window is accepted once (small threshold)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 50 }), fc.array(fc.nat(), { minLength: 200, maxLength: 200 }), (threshold, seeds) => {
        setup(threshold);
        const envs = Array.from({ length: 200 }, (_, i) => a.seal({ type: MessageType.STATUS_UPDATE, content: i }).envelope);
        for (let i = envs.length - 1; i > 0; i--) {
          const j = seeds[i]! % (i + 1);
          [envs[i], envs[j]] = [envs[j]!, envs[i]!];
        }
        const seen = new Set<unknown>();
        for (const e of envs) seen.add(b.open(e).content);
        expect(seen.size).toBe(200);
        for (const e of envs.slice(0, 5)) expect(codeOf(() => b.open(e))).toBe('replay');
      }),
      { numRuns: 25 },
    );
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
    const b2 = importSessionState(w.crypto, sealedB, stateKey, { identity: bob, clock: w.clock });
    const a2 = importSessionState(w.crypto, sealedA, stateKey, { identity: alice, clock: w.clock });
    for (const e of sent) expect(codeOf(() => b2.open(e))).toBe('replay');
    // The sender resumes two epochs ahead: never a nonce the old process may have used.
    expect(a2.sendCounter).toBe(2000);
    expect(b2.open(a2.seal(note('after restart')).envelope).content).toEqual({ text: 'after restart' });
    expect(a2.open(b2.seal(note('reply')).envelope).content).toEqual({ text: 'reply' });
  });

  it('sealed state does not open under another key or when tampered, and never shows keys', () => {
    const stateKey = SecretKey.from(w.crypto.randomBytes(32), 'aead');
    const sealed = exportSessionState(w.crypto, b, stateKey);
    expect(codeOf(() => importSessionState(w.crypto, sealed, SecretKey.from(w.crypto.randomBytes(32), 'aead'), { identity: bob }))).toBe('state_corrupt');
    const t = sealed.slice();
    t[t.length - 5]! ^= 1;
    expect(codeOf(() => importSessionState(w.crypto, t, stateKey, { identity: bob }))).toBe('state_corrupt');
    expect(codeOf(() => importSessionState(w.crypto, sealed, stateKey, { identity: alice }))).toBe('identity_mismatch');
    expect(String(b)).not.toMatch(/[0-9a-f]{64}/);
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
});

type Field = 'version' | 'senderId' | 'recipientId' | 'sessionId' | 'nonce' | 'timestampMs' | 'payloadCommitment' | 'encryptedPayload' | 'authTag' | 'signature';

function bitLength(env: SecureMessage, field: Field): number {
  const v = env[field];
  if (v instanceof Uint8Array) return v.length * 8;
  if (typeof v === 'string') return new TextEncoder().encode(v).length * 8;
  if (typeof v === 'bigint') return 64;
  return 32;
}

function flipBit(env: SecureMessage, field: Field, bit: number): SecureMessage {
  const v = env[field];
  let next: unknown;
  if (v instanceof Uint8Array) {
    const c = v.slice();
    c[bit >> 3]! ^= 1 << (bit & 7);
    next = c;
  } else if (typeof v === 'string') {
    const c = new TextEncoder().encode(v);
    c[bit >> 3]! ^= 1 << (bit & 7);
    next = new TextDecoder().decode(c);
  } else if (typeof v === 'bigint') {
    next = BigInt.asUintN(64, v ^ (1n << BigInt(bit)));
  } else {
    next = (v ^ (1 << bit)) >>> 0;
  }
  return create(SecureMessageSchema, { ...env, [field]: next });
}
