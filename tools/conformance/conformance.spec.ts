// The TypeScript implementation checked against the committed conformance
// vectors (docs/conformance/parley-v1.json). This reads the FILE, not the
// generator's objects: every expectation below comes from the JSON, so the
// test fails if the implementation and the committed bytes ever diverge.
// The Go example agent checks the same file (examples/go-agent).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { createCrypto, fromHex, layout, SecretKey, toHex, type ParleyCrypto, type X25519KeyPair } from '@parley/crypto-core';
import {
  certificateTbs,
  decodeCertificate,
  keyId,
  TrustBundle,
  verifyCertificate,
  REVOCATION_KIND,
  revocationEntryHash,
  revocationHeadLayout,
} from '@parley/identity';
import {
  AgentCertificateSchema,
  DeliveryReceiptSchema,
  HandshakeFrameSchema,
  HandshakePayloadSchema,
  MessagePayloadSchema,
  MessageType,
  SecureMessageSchema,
  SessionRejectSchema,
} from '@parley/proto';
import {
  CipherState,
  HMAC_KEY_NONCE,
  InitiatorHandshake,
  ResponderHandshake,
  envelopeAd,
  envelopeMacInput,
  envelopeSignedBytes,
  identityBindingBytes,
  noisePrologue,
  payloadCommitment,
  verifyDisclosure,
  type Session,
} from '@parley/session';
import {
  MerkleTree,
  WriterKeys,
  ZERO_HASH,
  decodeEntry,
  encodeEntry,
  entryHash,
  entryLayout,
  leafHash,
  merkleHasher,
  verifyConsistencyProof,
  verifyEntrySignature,
  verifyInclusionProof,
  verifyTreeHead,
} from '@parley/audit';
import {
  OPERATOR_METADATA_KEYS,
  operatorRequestLayout,
  parseOperatorMetadata,
  registrationProofLayout,
  rotationAuthorisationLayout,
  rotationProofLayout,
  verifyOperatorRequest,
  deliveryReceiptDigest,
  deliveryReceiptLayout,
  gatewayAuthLayout,
  gatewaySendLayout,
  handshakeFrameDigest,
  verifyReceiptSignature,
} from '@parley/protocol';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildVectors, KEY_CHECK_NONCE, PlannedCrypto, renderVectors, VECTOR_FILE } from './vectors.js';
import { StaticRevocations, type RevokedJson } from './negative.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- the vector file is untyped JSON, checked field by field */
const ROOT = join(import.meta.dirname, '..', '..');
const TEXT = readFileSync(join(ROOT, VECTOR_FILE), 'utf8');
const V = JSON.parse(TEXT) as any;
const h = (s: string): Uint8Array => fromHex(s);
const code = (fn: () => unknown): string => {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? `untyped: ${String(e)}`;
  }
};

const cases = (list: any[]): [string, any][] => list.map((x) => [x.name as string, x]);

/** The top-level keys that are metadata, not vector groups (PROTOCOL.md §16). */
const METADATA = ['format', 'version', 'protocol', 'generated_by', 'notes', 'now_ms'];
/** Every vector group this suite checks; a group added to the file without a check here fails (§16). */
const GROUPS = [
  'keys', 'trust_bundle', 'certificates', 'certificate_checks', 'handshake', 'messages', 'message_rejections', 'disclosures', 'receipts',
  'gateway_auth', 'gateway_send', 'audit', 'revocations', 'registry', 'trust_bundle_checks', 'handshake_rejections', 'session_rejects',
];

let crypto: ParleyCrypto;
let bundle: TrustBundle;
const pub = (name: string): Uint8Array => h(V.keys[name].ed25519_public_key);
const signer = (name: string): SecretKey => crypto.ed25519.keyPairFromSeed(h(V.keys[name].ed25519_seed)).secretKey;
const cert = (name: string) => decodeCertificate(h(V.certificates.find((c: any) => c.name === name).encoded));

beforeAll(async () => {
  crypto = await createCrypto();
  bundle = TrustBundle.fromJSON(crypto, V.trust_bundle);
});

describe('conformance vector file', () => {
  it('is exactly what tools/conformance/generate.ts produces (regenerate with `npm run conformance`)', async () => {
    expect(renderVectors(await buildVectors())).toBe(TEXT);
  });

  it('PROTOCOL.md §16 names exactly these metadata keys and groups', () => {
    const spec = readFileSync(join(ROOT, 'docs', 'PROTOCOL.md'), 'utf8');
    const section = spec.slice(spec.indexOf('## 16. Conformance vectors'), spec.indexOf('## 17.'));
    const tableGroups = section
      .split('\n')
      .filter((line) => line.startsWith('| `'))
      .flatMap((line) => [...(line.split('|')[1] ?? '').matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!));
    expect(tableGroups.sort()).toEqual([...GROUPS].sort());
    for (const key of METADATA) expect(section).toContain(`\`${key}\``);
  });

  it('has only groups this suite checks (§16: an unknown group fails)', () => {
    const unknown = Object.keys(V).filter((k) => !METADATA.includes(k) && !GROUPS.includes(k));
    expect(unknown).toEqual([]);
    expect(Object.keys(V).sort()).toEqual([...METADATA, ...GROUPS].sort());
    expect(V.format).toBe('parley-conformance-vectors');
    expect(V.version).toBe(1);
    expect(V.protocol).toBe('parley/v1');
  });
});

describe('keys and certificates (§3)', () => {
  it('derives every public key and key id from its seed', () => {
    for (const k of Object.values<any>(V.keys)) {
      const kp = crypto.ed25519.keyPairFromSeed(h(k.ed25519_seed));
      expect(toHex(kp.publicKey)).toBe(k.ed25519_public_key);
      expect(toHex(keyId(crypto, kp.publicKey))).toBe(k.key_id);
    }
    expect(bundle.toJSON()).toEqual(V.trust_bundle);
  });

  it('decodes every certificate to its fields, TBS layout and a valid issuer signature', () => {
    for (const c of V.certificates) {
      const decoded = decodeCertificate(h(c.encoded));
      expect(decoded.agentId).toBe(c.agent_id);
      expect(decoded.agentType).toBe(c.agent_type);
      expect([...decoded.capabilities]).toEqual(c.capabilities);
      expect(Number(decoded.validFromMs)).toBe(c.valid_from_ms);
      expect(Number(decoded.validUntilMs)).toBe(c.valid_until_ms);
      expect(toHex(decoded.serial)).toBe(c.serial);
      expect(toHex(decoded.identityPublicKey)).toBe(c.identity_public_key);
      expect(toHex(decoded.issuerKeyId)).toBe(c.issuer_key_id);
      expect(toHex(certificateTbs(decoded))).toBe(c.tbs);
      expect(toHex(decoded.signature)).toBe(c.signature);
      const issuer = Object.values<any>(V.keys).find((k) => k.key_id === c.issuer_key_id);
      expect(crypto.ed25519.verify(decoded.signature, certificateTbs(decoded), h(issuer.ed25519_public_key))).toBe(true);
    }
  });

  it.each(cases(V.certificate_checks))('certificate check %s', (_name, c: any) => {
    const got = code(() =>
      verifyCertificate(crypto, decodeCertificate(h(c.certificate)), {
        trustBundle: bundle,
        nowMs: c.at_ms,
        revocations: new StaticRevocations(c.revoked as RevokedJson),
        ...(c.expected_agent_id === null ? {} : { expectedAgentId: c.expected_agent_id }),
      }),
    );
    expect(got).toBe(c.expect);
  });

  it.each(cases(V.trust_bundle_checks))('trust bundle JSON %s (§3.3)', (_name, t: any) => {
    let parsed: TrustBundle | undefined;
    expect(code(() => (parsed = TrustBundle.fromJSON(crypto, t.json as string)))).toBe(t.expect);
    if (parsed === undefined) {
      expect(t.certificate_expect).toBeUndefined();
      return;
    }
    expect(code(() => verifyCertificate(crypto, cert('alice'), { trustBundle: parsed!, nowMs: V.now_ms }))).toBe(t.certificate_expect);
  });
});

/** The receivers' clock and revocation data, changeable after a handshake (message_rejections). */
interface Environment {
  clockMs: number;
  readonly revocations: StaticRevocations;
}

/** Runs the handshake of the file with its fixed keys through the production handshake code. */
function handshake(env: Environment = { clockMs: V.now_ms, revocations: new StaticRevocations() }): { frames: Uint8Array[]; initiator: Session; responder: Session } {
  const hs = V.handshake;
  const planned = new PlannedCrypto(crypto);
  const kp = (secret: string): X25519KeyPair => crypto.x25519.keyPairFromSecret(h(secret));
  const identity = (name: string) => ({ agentId: name, signingKey: signer(name), certificate: cert(name) });
  const config = (name: string, staticSecret: string) => ({
    identity: identity(name),
    trustBundle: bundle,
    rekeyThreshold: hs.rekey_threshold,
    clock: () => env.clockMs,
    staticKeyPair: kp(staticSecret),
    revocations: env.revocations,
  });
  planned.planX25519(kp(hs.initiator.ephemeral_private));
  const i = InitiatorHandshake.start(planned.crypto, config(hs.initiator_id, hs.initiator.static_private), hs.responder_id, h(hs.session_id));
  planned.planX25519(kp(hs.responder.ephemeral_private));
  const r = ResponderHandshake.accept(planned.crypto, config(hs.responder_id, hs.responder.static_private), i.frame);
  const done = i.handshake.receive(r.frame);
  const responder = r.handshake.receive(done.frame);
  planned.assertDrained();
  return { frames: [i.frame, r.frame, done.frame].map((f) => toBinary(HandshakeFrameSchema, f)), initiator: done.session, responder };
}

describe('handshake (§5) and key schedule (§7)', () => {
  it('reproduces the prologue, all three frames, their digests and the handshake hash', () => {
    const hs = V.handshake;
    expect(toHex(noisePrologue(h(hs.session_id), hs.initiator_id, hs.responder_id, hs.rekey_threshold))).toBe(hs.prologue);
    for (const side of [hs.initiator, hs.responder]) {
      expect(toHex(crypto.x25519.keyPairFromSecret(h(side.static_private)).publicKey)).toBe(side.static_public);
      expect(toHex(crypto.x25519.keyPairFromSecret(h(side.ephemeral_private)).publicKey)).toBe(side.ephemeral_public);
    }
    const run = handshake();
    hs.steps.forEach((step: any, n: number) => {
      expect(toHex(run.frames[n]!)).toBe(step.frame);
      const frame = fromBinary(HandshakeFrameSchema, h(step.frame));
      expect(frame.step).toBe(step.step);
      expect(toHex(frame.noiseMessage)).toBe(step.noise_message);
      expect(toHex(handshakeFrameDigest(crypto, frame))).toBe(step.frame_digest);
    });
    expect(toHex(run.initiator.handshakeHash)).toBe(hs.handshake_hash);
    expect(toHex(run.responder.handshakeHash)).toBe(hs.handshake_hash);
  });

  it('binds each static key to its identity (§5.3)', () => {
    const hs = V.handshake;
    const check = (role: 1 | 2, name: string, side: any, payloadHex: string, binding: any): void => {
      const layout = identityBindingBytes(h(hs.session_id), name, role, h(side.static_public));
      expect(toHex(layout)).toBe(binding.layout);
      expect(crypto.ed25519.verify(h(binding.signature), layout, pub(name))).toBe(true);
      const payload = fromBinary(HandshakePayloadSchema, h(payloadHex));
      expect(toHex(payload.identitySignature)).toBe(binding.signature);
      expect(toHex(toBinary(AgentCertificateSchema, payload.certificate!))).toBe(V.certificates.find((c: any) => c.agent_id === name).encoded);
    };
    expect(hs.steps[0].payload).toBe('');
    check(2, hs.responder_id, hs.responder, hs.steps[1].payload, hs.bindings.responder);
    check(1, hs.initiator_id, hs.initiator, hs.steps[2].payload, hs.bindings.initiator);
  });

  it('derives every epoch key and HMAC key from the one before (REKEY, nonce 2^64-2; key_check at 2^64-3)', () => {
    for (const direction of ['initiator_to_responder', 'responder_to_initiator']) {
      const epochs = V.handshake.transport[direction];
      let cipher = new CipherState(crypto, SecretKey.adopt(h(epochs[0].key), 'aead'));
      for (const e of epochs) {
        expect(toHex(cipher.unsafeKey()!.unsafeBytes())).toBe(e.key);
        expect(KEY_CHECK_NONCE).toBe((1n << 64n) - 3n);
        expect(toHex(cipher.encryptAt((1n << 64n) - 3n, new Uint8Array(0), new Uint8Array(32)))).toBe(e.key_check);
        const mk = cipher.encryptAt(HMAC_KEY_NONCE, new TextEncoder().encode('parley/v1/hmac-key'), new Uint8Array(32)).slice(0, 32);
        expect(toHex(mk)).toBe(e.hmac_key);
        // §7: the AD does not reach the first 32 bytes of output (keystream); the reserved nonce separates mk(e).
        expect(toHex(cipher.encryptAt(HMAC_KEY_NONCE, new Uint8Array(0), new Uint8Array(32)).slice(0, 32))).toBe(e.hmac_key);
        cipher = cipher.rekeyed();
      }
    }
  });
});

describe('SecureMessage (§6, §8)', () => {
  it('covers every defined MessageType exactly once', () => {
    const defined = Object.values(MessageType).filter((v): v is number => typeof v === 'number' && v !== MessageType.UNSPECIFIED);
    expect(V.messages.map((m: any) => m.type_value).sort()).toEqual(defined.sort());
  });

  it('rebuilds every layout of every message from its fields', () => {
    for (const m of V.messages) {
      const env = fromBinary(SecureMessageSchema, h(m.envelope));
      expect([env.senderId, env.recipientId, toHex(env.sessionId), Number(env.nonce), Number(env.timestampMs)]).toEqual([
        m.sender_id, m.recipient_id, m.session_id, m.nonce, m.timestamp_ms,
      ]);
      expect(Math.floor(m.nonce / V.handshake.rekey_threshold)).toBe(m.epoch);
      expect(toHex(payloadCommitment(crypto, h(m.salt), h(m.payload)))).toBe(m.commitment);
      expect(toHex(envelopeAd(env))).toBe(m.ad);
      expect(toHex(envelopeMacInput(env, env.encryptedPayload))).toBe(m.mac_input);
      const signed = envelopeSignedBytes(crypto, env, env.encryptedPayload, env.authTag);
      expect(toHex(signed)).toBe(m.signed);
      expect(toHex(crypto.blake3(signed))).toBe(m.message_hash);
      expect(crypto.ed25519.verify(h(m.signature), signed, pub(m.sender_id))).toBe(true);
      const keys = V.handshake.transport[m.direction][m.epoch];
      expect(toHex(crypto.hmacSha256(SecretKey.adopt(h(keys.hmac_key), 'mac'), h(m.mac_input)))).toBe(m.auth_tag);
      const sealed = crypto.aead.seal(SecretKey.adopt(h(keys.key), 'aead'), BigInt(m.nonce), new Uint8Array([...h(m.salt), ...h(m.payload)]), h(m.ad));
      expect(toHex(sealed)).toBe(m.encrypted_payload);
    }
  });

  it('opens every message in order on the sessions of the handshake, with the committed content', () => {
    const { initiator, responder } = handshake();
    for (const m of V.messages) {
      const receiver = m.direction === 'initiator_to_responder' ? responder : initiator;
      const opened = receiver.open(fromBinary(SecureMessageSchema, h(m.envelope)));
      expect(toHex(opened.messageHash)).toBe(m.message_hash);
      expect(toHex(opened.disclosure.payload)).toBe(m.payload);
      expect(toHex(opened.disclosure.salt)).toBe(m.salt);
      expect(opened.content).toEqual(m.content);
      expect(opened.payload.type).toBe(m.type_value);
      expect(toHex(toBinary(MessagePayloadSchema, fromBinary(MessagePayloadSchema, h(m.payload))))).toBe(m.payload);
    }
  });

  it.each(cases(V.message_rejections))('rejection %s', (_name, r: any) => {
    const env: Environment = { clockMs: V.now_ms, revocations: new StaticRevocations() };
    const run = handshake(env);
    const receiver = r.receiver === 'responder' ? run.responder : run.initiator;
    for (const name of r.accept_first) receiver.open(fromBinary(SecureMessageSchema, h(V.messages.find((m: any) => m.name === name).envelope)));
    for (const e of r.accept_first_envelopes) receiver.open(fromBinary(SecureMessageSchema, h(e)));
    env.revocations.set(r.revoked as RevokedJson);
    env.clockMs = r.open_at_ms;
    expect(code(() => receiver.open(fromBinary(SecureMessageSchema, h(r.envelope))))).toBe(r.expect);
    if (r.expect === 'revoked' || r.expect === 'expired') expect(receiver.isClosed).toBe(true);
  });

  it.each(cases(V.disclosures))('disclosure %s (§6.5)', (_name, d: any) => {
    const proof = {
      envelope: fromBinary(SecureMessageSchema, h(d.envelope)),
      senderCertificate: fromBinary(AgentCertificateSchema, h(d.certificate)),
      disclosure: { payload: h(d.payload), salt: h(d.salt) },
    };
    expect(code(() => verifyDisclosure(crypto, proof, { trustBundle: bundle }))).toBe(d.expect);
  });
});

describe('handshake rejections (§5.1, §5.3, §5.4)', () => {
  it.each(cases(V.handshake_rejections))('handshake rejection %s', (_name, r: any) => {
    const hs = V.handshake;
    const kp = (secret: string): X25519KeyPair => crypto.x25519.keyPairFromSecret(h(secret));
    const withEphemeral = (secret: string): ParleyCrypto => {
      const planned = new PlannedCrypto(crypto);
      planned.planX25519(kp(secret));
      return planned.crypto;
    };
    const config = (name: string, side: any) => ({
      identity: { agentId: name, signingKey: signer(name), certificate: cert(name) },
      trustBundle: bundle,
      rekeyThreshold: hs.rekey_threshold,
      clock: () => V.now_ms,
      staticKeyPair: kp(side.static_private),
      revocations: new StaticRevocations(r.revoked as RevokedJson),
    });
    const frame = fromBinary(HandshakeFrameSchema, h(r.frame));
    const step1 = fromBinary(HandshakeFrameSchema, h(hs.steps[0].frame));
    const got = code(() => {
      if (r.receiver === 'responder' && r.at_step === 1) {
        ResponderHandshake.accept(withEphemeral(hs.responder.ephemeral_private), config(hs.responder_id, hs.responder), frame);
      } else if (r.receiver === 'initiator' && r.at_step === 2) {
        const started = InitiatorHandshake.start(withEphemeral(hs.initiator.ephemeral_private), config(hs.initiator_id, hs.initiator), hs.responder_id, h(hs.session_id));
        expect(toHex(toBinary(HandshakeFrameSchema, started.frame))).toBe(hs.steps[0].frame);
        started.handshake.receive(frame);
      } else if (r.receiver === 'responder' && r.at_step === 3) {
        const accepted = ResponderHandshake.accept(withEphemeral(hs.responder.ephemeral_private), config(hs.responder_id, hs.responder), step1);
        expect(toHex(toBinary(HandshakeFrameSchema, accepted.frame))).toBe(hs.steps[1].frame);
        accepted.handshake.receive(frame);
      } else {
        throw new Error(`unknown receiver ${String(r.receiver)} at step ${String(r.at_step)}`);
      }
    });
    expect(got).toBe(r.expect);
  });
});

describe('gateway layouts (§10)', () => {
  it('verifies every receipt (§10.5)', () => {
    for (const r of V.receipts) {
      const receipt = fromBinary(DeliveryReceiptSchema, h(r.encoded));
      expect([receipt.version, toHex(receipt.messageHash), receipt.senderId, receipt.recipientId, Number(receipt.receivedAtMs)]).toEqual([
        r.version, r.message_hash, r.sender_id, r.recipient_id, r.received_at_ms,
      ]);
      expect(toHex(deliveryReceiptLayout(receipt))).toBe(r.layout);
      expect(toHex(deliveryReceiptDigest(crypto, receipt))).toBe(r.digest);
      expect(toHex(receipt.signature)).toBe(r.signature);
      expect(verifyReceiptSignature(crypto, receipt, pub(r.signer))).toBe(true);
      expect(V.messages.some((m: any) => m.message_hash === r.message_hash && m.recipient_id === r.recipient_id)).toBe(true);
    }
  });

  it('rebuilds every session reject (§17): layout, digest, signature, encoding', () => {
    for (const r of V.session_rejects) {
      const decoded = fromBinary(SessionRejectSchema, h(r.encoded));
      expect([decoded.version, toHex(decoded.sessionId), toHex(decoded.messageHash), decoded.senderId, decoded.recipientId, Number(decoded.rejectedAtMs)]).toEqual([
        r.version, r.session_id, r.message_hash, r.sender_id, r.recipient_id, r.rejected_at_ms,
      ]);
      const lay = layout('parley/v1/session-reject')
        .u32(decoded.version)
        .fixed(decoded.sessionId, 16)
        .fixed(decoded.messageHash, 32)
        .str(decoded.senderId)
        .str(decoded.recipientId)
        .i64(decoded.rejectedAtMs)
        .bytes();
      expect(toHex(lay)).toBe(r.layout);
      expect(toHex(crypto.blake3(lay))).toBe(r.digest);
      expect(toHex(decoded.signature)).toBe(r.signature);
      expect(toHex(crypto.ed25519.sign(lay, signer(r.signer)))).toBe(r.signature);
      expect(r.recipient_id).toBe(r.signer);
      // It names the envelope it refuses: message_rejections/unknown_session, by its §6.6 hash.
      const refused = fromBinary(SecureMessageSchema, h(V.message_rejections.find((x: any) => x.name === 'unknown_session').envelope));
      expect(toHex(crypto.blake3(envelopeSignedBytes(crypto, refused, refused.encryptedPayload, refused.authTag)))).toBe(r.message_hash);
      expect(toHex(refused.sessionId)).toBe(r.session_id);
    }
  });

  it('rebuilds the stream-auth and unary-send layouts and verifies their signatures', () => {
    for (const a of V.gateway_auth) {
      const layout = gatewayAuthLayout(a.gateway_id, h(a.nonce), a.agent_id, h(a.serial));
      expect(toHex(layout)).toBe(a.layout);
      expect(toHex(crypto.ed25519.sign(layout, signer(a.signer)))).toBe(a.signature);
    }
    for (const s of V.gateway_send) {
      const layout = gatewaySendLayout(s.gateway_id, BigInt(s.timestamp_ms), h(s.nonce), h(s.item_digest));
      expect(toHex(layout)).toBe(s.layout);
      expect(crypto.ed25519.verify(h(s.signature), layout, pub(s.signer))).toBe(true);
    }
  });
});

describe('audit trail (§9)', () => {
  it('verifies every entry, its chain link, leaf hash and the tree root', () => {
    const a = V.audit;
    const keys = WriterKeys.from(crypto, pub(a.writer));
    const tree = new MerkleTree(merkleHasher(crypto));
    let prev = ZERO_HASH;
    for (const e of a.entries) {
      const entry = decodeEntry(h(e.encoded));
      expect(toHex(encodeEntry(entry))).toBe(e.encoded);
      expect([Number(entry.index), toHex(entry.previousHash), entry.outcome, entry.messageType]).toEqual([e.index, e.previous_hash, e.outcome, e.message_type]);
      expect(toHex(entry.previousHash)).toBe(toHex(prev));
      expect(toHex(entryLayout(entry))).toBe(e.layout);
      expect(verifyEntrySignature(crypto, entry, keys)).toBe(true);
      expect(toHex(entryHash(crypto, entry))).toBe(e.entry_hash);
      expect(toHex(leafHash(crypto, entry))).toBe(e.leaf_hash);
      tree.append(leafHash(crypto, entry));
      prev = entryHash(crypto, entry);
    }
    expect(toHex(tree.root(a.tree_size))).toBe(a.root);
  });

  it('verifies every inclusion and consistency proof and every signed tree head', () => {
    const a = V.audit;
    const hasher = merkleHasher(crypto);
    for (const p of a.inclusion) {
      const proof = { leafIndex: p.leaf_index, treeSize: p.tree_size, path: p.path.map(h) };
      expect(verifyInclusionProof(hasher, proof, h(a.entries[p.leaf_index].leaf_hash), h(p.root))).toBe(true);
      expect(verifyInclusionProof(hasher, proof, h(a.entries[(p.leaf_index + 1) % a.tree_size].leaf_hash), h(p.root))).toBe(false);
    }
    for (const p of a.consistency) {
      const proof = { oldSize: p.first, newSize: p.second, path: p.path.map(h) };
      expect(verifyConsistencyProof(hasher, proof, h(p.first_root), h(p.second_root))).toBe(true);
      expect(verifyConsistencyProof(hasher, proof, h(p.second_root), h(p.second_root))).toBe(false);
    }
    for (const t of a.tree_heads) {
      const head = { treeSize: t.tree_size, rootHash: h(t.root), timestampMs: t.timestamp_ms, signerKeyId: h(t.signer_key_id), signature: h(t.signature) };
      expect(verifyTreeHead(crypto, head, pub(a.writer))).toBe(true);
      expect(crypto.ed25519.verify(head.signature, h(t.layout), pub(a.writer))).toBe(true);
      expect(verifyTreeHead(crypto, { ...head, treeSize: head.treeSize + 1 }, pub(a.writer))).toBe(false);
    }
  });
});

describe('revocation list (§15.6)', () => {
  it('recomputes every entry hash from its predecessor and verifies the signed head', () => {
    const r = V.revocations;
    const registryId = h(r.registry_id);
    let previous: Uint8Array = new Uint8Array(32);
    for (const [i, e] of (r.entries as any[]).entries()) {
      expect(e.version).toBe(i + 1);
      expect(REVOCATION_KIND[e.kind as 'agent' | 'serial']).toBe(e.kind_value);
      expect(toHex(previous)).toBe(e.previous_hash);
      expect(toHex(crypto.blake3(h(e.hash_input)))).toBe(e.entry_hash);
      const hash = revocationEntryHash(crypto, registryId, previous, {
        version: e.version, kind: e.kind, agentId: e.agent_id, serial: h(e.serial), reason: e.reason, reasonText: e.reason_text, revokedAtMs: e.revoked_at_ms,
      });
      expect(toHex(hash)).toBe(e.entry_hash);
      previous = hash;
    }
    const head = r.head;
    expect(head.version).toBe(r.entries.length);
    expect(head.head_hash).toBe(toHex(previous));
    expect(head.issuer_key_id).toBe(V.keys[r.issuer].key_id);
    const layout = revocationHeadLayout({ registryId, version: head.version, headHash: h(head.head_hash), issuedAtMs: head.issued_at_ms, issuerKeyId: h(head.issuer_key_id) });
    expect(toHex(layout)).toBe(head.layout);
    expect(crypto.ed25519.verify(h(head.signature), layout, pub(r.issuer))).toBe(true);
    expect(crypto.ed25519.verify(h(head.signature), revocationHeadLayout({ registryId, version: head.version + 1, headHash: h(head.head_hash), issuedAtMs: head.issued_at_ms, issuerKeyId: h(head.issuer_key_id) }), pub(r.issuer))).toBe(false);
  });
});

describe('registry requests (§15.3–§15.5)', () => {
  it('rebuilds and verifies the registration and rotation proofs', () => {
    const r = V.registry;
    const registryId = h(r.registry_id);
    for (const p of r.registration) {
      const layout = registrationProofLayout({ registryId, challenge: h(p.challenge), agentId: p.agent_id, identityPublicKey: h(p.identity_public_key) });
      expect(toHex(layout)).toBe(p.layout);
      expect(toHex(crypto.ed25519.sign(layout, signer(p.signer)))).toBe(p.signature);
    }
    for (const p of r.rotation) {
      const fields = { registryId, challenge: h(p.challenge), agentId: p.agent_id, oldPublicKey: h(p.old_public_key), newPublicKey: h(p.new_public_key) };
      expect(toHex(rotationAuthorisationLayout(fields))).toBe(p.authorisation_layout);
      expect(toHex(rotationProofLayout(fields))).toBe(p.proof_layout);
      expect(crypto.ed25519.verify(h(p.authorisation_signature), rotationAuthorisationLayout(fields), pub(p.authorisation_signer))).toBe(true);
      expect(crypto.ed25519.verify(h(p.proof_signature), rotationProofLayout(fields), pub(p.proof_signer))).toBe(true);
      // Distinct domains: neither signature stands in for the other.
      expect(crypto.ed25519.verify(h(p.authorisation_signature), rotationProofLayout(fields), pub(p.authorisation_signer))).toBe(false);
    }
  });

  it('rebuilds the operator request layout and accepts the metadata as the registry does', () => {
    const registryId = h(V.registry.registry_id);
    for (const q of V.registry.operator_requests) {
      const body = h(q.request);
      expect(toHex(crypto.blake3(body))).toBe(q.request_digest);
      const layout = operatorRequestLayout(crypto, { registryId, path: q.path, body }, { keyId: h(q.operator_key_id), timestampMs: q.timestamp_ms, nonce: h(q.nonce) });
      expect(toHex(layout)).toBe(q.layout);
      expect(q.metadata[OPERATOR_METADATA_KEYS.keyId]).toBe(q.operator_key_id);
      expect(q.metadata[OPERATOR_METADATA_KEYS.nonce]).toBe(q.nonce);
      expect(q.metadata[OPERATOR_METADATA_KEYS.timestamp]).toBe(String(q.timestamp_ms));
      expect(crypto.ed25519.verify(new Uint8Array(Buffer.from(q.metadata[OPERATOR_METADATA_KEYS.signature], 'base64url')), layout, pub(q.signer))).toBe(true);
      // As the registry does: parse the metadata, verify over the path and the bytes received.
      const auth = parseOperatorMetadata((k) => q.metadata[k]);
      expect(auth).toBeDefined();
      expect(verifyOperatorRequest(crypto, pub(q.signer), auth!, { registryId, path: q.path, body })).toBe(true);
      expect(verifyOperatorRequest(crypto, pub(q.signer), auth!, { registryId, path: '/parley.v1.RegistryService/AddOperator', body })).toBe(false);
    }
  });
});
