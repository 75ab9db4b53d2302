// The TypeScript implementation checked against the committed shared-memory
// vectors (docs/conformance/parley-v1-memory.json, docs/PROTOCOL.md §18). Every
// expectation comes from the FILE; the generator is only used to check that
// the file is current. Sealed key copies are opened with libsodium's own
// crypto_box_seal_open (through crypto-core), not with the code that built them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SecretKey, createCrypto, fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, decodeCertificate, verifyCertificate } from '@parley/identity';
import {
  Membership,
  backLinkAd,
  epochLayout,
  keyCommitment,
  keyFromWrapPlaintext,
  keyWrapLayout,
  memoryIdOf,
  memoryRequestLayout,
  membershipEntryHash,
  membershipLayout,
  openWrite,
  parseMemoryMetadata,
  segmentAd,
  verifyEpochRecord,
  verifyKeyWrap,
  verifyMemoryRequest,
  verifyWriteRecord,
  wrapPlaintext,
  writeLayout,
} from '@parley/memory';
import { EpochRecordSchema, KeyWrapSchema, MembershipEntrySchema, WriteRecordSchema, create, fromBinary } from '@parley/proto';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildMemoryVectors, MEMORY_VECTOR_FILE } from './memory-vectors.js';
import { renderVectors } from './vectors.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- the vector file is untyped JSON, checked field by field */
const ROOT = join(import.meta.dirname, '..', '..');
const TEXT = readFileSync(join(ROOT, MEMORY_VECTOR_FILE), 'utf8');
const V = JSON.parse(TEXT) as any;
const h = (s: string): Uint8Array => fromHex(s);
const CHECKED = ['format', 'version', 'protocol', 'section', 'generated_by', 'notes', 'keys', 'issuer', 'trust_bundle', 'certificates', 'memory', 'membership', 'epochs', 'key_wraps', 'writes', 'request', 'rejections'];

let crypto: ParleyCrypto;
const memoryId = (): string => V.memory.memory_id as string;
const signer = (name: string): SecretKey => crypto.ed25519.keyPairFromSeed(h(V.keys[name].ed25519_seed)).secretKey;
const entries = () => (V.membership as any[]).map((e) => fromBinary(MembershipEntrySchema, h(e.encoded)));
const epochRecord = (e: any) =>
  create(EpochRecordSchema, {
    epoch: e.epoch,
    keyCommitment: h(e.key_commitment),
    backLink: h(e.back_link),
    membershipVersion: BigInt(e.membership_version),
    membershipHash: h(e.membership_hash),
    createdAtMs: BigInt(e.created_at_ms),
    creatorId: e.creator_id,
    signature: h(e.signature),
  });

beforeAll(async () => {
  crypto = await createCrypto();
});

describe('shared-memory vector file', () => {
  it('is exactly what tools/conformance/generate.ts produces (regenerate with `npm run conformance`)', async () => {
    expect(renderVectors(await buildMemoryVectors())).toBe(TEXT);
  });

  it('has only groups this suite checks', () => {
    expect(Object.keys(V)).toEqual(CHECKED);
    expect([V.format, V.version, V.protocol]).toEqual(['parley-conformance-vectors', 1, 'parley/v1']);
  });
});

describe('keys and certificates', () => {
  it('derives each Ed25519 key and its X25519 conversion; every certificate verifies under the bundle', () => {
    const bundle = TrustBundle.fromJSON(crypto, V.trust_bundle);
    for (const [name, k] of Object.entries<any>(V.keys)) {
      const kp = crypto.ed25519.keyPairFromSeed(h(k.ed25519_seed));
      expect(toHex(kp.publicKey)).toBe(k.ed25519_public_key);
      expect(toHex(crypto.sealedBox.x25519PublicKey(kp.publicKey))).toBe(k.x25519_public_key);
      expect(toHex(crypto.sealedBox.x25519SecretKey(kp.secretKey).unsafeBytes())).toBe(k.x25519_secret_key);
      const cert = verifyCertificate(crypto, decodeCertificate(h(V.certificates[name])), { trustBundle: bundle, nowMs: V.membership[0].timestamp_ms, expectedAgentId: name });
      expect(toHex(cert.identityPublicKey)).toBe(k.ed25519_public_key);
    }
  });
});

describe('§18.4 memory id and membership log', () => {
  it('derives the memory id from the owner, its key and the creation nonce', () => {
    expect(memoryIdOf(crypto, V.memory.owner_id, h(V.memory.owner_public_key), h(V.memory.creation_nonce))).toBe(memoryId());
  });

  it('rebuilds every entry layout, verifies its signature and chains the entry hashes', () => {
    const es = entries();
    const log = Membership.create(crypto, es[0]!, memoryId());
    for (const [i, e] of es.entries()) {
      const v = V.membership[i];
      expect(toHex(membershipLayout(memoryId(), e))).toBe(v.layout);
      expect(toHex(e.signature)).toBe(v.signature);
      expect(toHex(membershipEntryHash(crypto, memoryId(), e))).toBe(v.entry_hash);
      expect([Number(e.version), e.change, e.memberId, e.access, e.signerId]).toEqual([v.version, v.change, v.member_id, v.access, v.signer_id]);
      expect(crypto.ed25519.verify(e.signature, h(v.layout), signer(v.signer_id).unsafeBytes().subarray(32))).toBe(true);
      if (i > 0) {
        expect(v.previous_hash).toBe(V.membership[i - 1].entry_hash);
        log.append(e);
      }
    }
    expect(log.version).toBe(BigInt(es.length));
    expect(log.active(V.membership[3].timestamp_ms).map((m) => m.memberId)).toEqual(['planner-1', 'worker-2']);
  });

  it.each((V.rejections as any[]).map((r) => [r.name, r]))('rejection %s', (_name, r: any) => {
    const es = entries();
    const log = Membership.create(crypto, es[0]!, memoryId());
    if (r.log.includes('grant_worker')) log.append(es[1]!);
    let got = 'ok';
    try {
      log.append(fromBinary(MembershipEntrySchema, h(r.entry)));
    } catch (error) {
      got = (error as { code?: string }).code ?? String(error);
    }
    expect(got).toBe(r.expect);
  });
});

describe('§18.5 epochs, §18.6 key copies', () => {
  it('checks commitments, epoch layouts, signatures, and walks the back link from epoch 2 to epoch 1', () => {
    const es = entries();
    const log = Membership.create(crypto, es[0]!, memoryId());
    for (const e of es.slice(1)) log.append(e);
    let previous;
    for (const v of V.epochs) {
      const r = epochRecord(v);
      expect(toHex(keyCommitment(crypto, memoryId(), v.epoch, h(v.key)))).toBe(v.key_commitment);
      expect(toHex(epochLayout(memoryId(), r))).toBe(v.layout);
      verifyEpochRecord(crypto, log, r, previous);
      previous = r;
    }
    const [e1, e2] = V.epochs;
    expect(toHex(backLinkAd(memoryId(), 2))).toBe(e2.back_link_ad);
    expect(h(e2.back_link).subarray(0, 24)).toEqual(h(e2.back_link_nonce));
    expect(toHex(crypto.xaead.open(SecretKey.from(h(e2.key), 'aead'), h(e2.back_link), h(e2.back_link_ad)))).toBe(e1.key);
  });

  it('opens each key copy with its member identity key (libsodium crypto_box_seal_open); nobody else opens it; re-seals byte for byte', () => {
    const es = entries();
    const log = Membership.create(crypto, es[0]!, memoryId());
    for (const e of es.slice(1)) log.append(e);
    for (const w of V.key_wraps) {
      const epoch = V.epochs.find((e: any) => e.epoch === w.epoch);
      const plaintext = crypto.sealedBox.open(h(w.sealed_key), signer(w.member_id));
      expect(toHex(plaintext)).toBe(w.plaintext);
      expect(toHex(wrapPlaintext(memoryId(), w.epoch, w.member_id, h(epoch.key)))).toBe(w.plaintext);
      expect(toHex(keyFromWrapPlaintext(plaintext, memoryId(), w.epoch, w.member_id))).toBe(epoch.key);
      for (const other of Object.keys(V.keys).filter((n) => n !== w.member_id)) {
        expect(() => crypto.sealedBox.open(h(w.sealed_key), signer(other))).toThrow(/decrypt_failed/);
      }
      expect(h(w.sealed_key).subarray(0, 32)).toEqual(h(w.ephemeral_x25519_public));
      expect(toHex(crypto.sealedBox.sealWithEphemeralForTestingOnly(h(w.plaintext), h(w.member_public_key), h(w.ephemeral_x25519_secret)))).toBe(w.sealed_key);
      const wrap = create(KeyWrapSchema, { epoch: w.epoch, memberId: w.member_id, memberPublicKey: h(w.member_public_key), sealedKey: h(w.sealed_key), signerId: w.signer_id, signature: h(w.signature) });
      expect(toHex(keyWrapLayout(crypto, memoryId(), wrap))).toBe(w.layout);
      verifyKeyWrap(crypto, log, wrap);
    }
    // The revoked member (worker-3) has a copy of epoch 1 only.
    expect(V.key_wraps.filter((w: any) => w.member_id === 'worker-3').map((w: any) => w.epoch)).toEqual([1]);
  });
});

describe('§18.7 writes', () => {
  it('rebuilds AD and layout, reproduces the ciphertext, verifies the writer, and opens', () => {
    const es = entries();
    const log = Membership.create(crypto, es[0]!, memoryId());
    for (const e of es.slice(1)) log.append(e);
    for (const w of V.writes) {
      const epoch = V.epochs.find((e: any) => e.epoch === w.key_epoch);
      const key = SecretKey.from(h(epoch.key), 'aead');
      const record = create(WriteRecordSchema, {
        segmentId: w.segment_id,
        version: BigInt(w.version),
        previousVersion: BigInt(w.previous_version),
        keyEpoch: w.key_epoch,
        ciphertextDigest: h(w.ciphertext_digest),
        ciphertextBytes: BigInt(w.ciphertext_bytes),
        writerId: w.writer_id,
        timestampMs: BigInt(w.timestamp_ms),
        expiresAtMs: BigInt(w.expires_at_ms),
        signature: h(w.signature),
      });
      expect(toHex(segmentAd(memoryId(), record))).toBe(w.ad);
      expect(toHex(crypto.xaead.sealWithNonceForTestingOnly(key, h(w.nonce), h(w.plaintext), h(w.ad)))).toBe(w.ciphertext);
      expect(toHex(crypto.blake3(h(w.ciphertext)))).toBe(w.ciphertext_digest);
      expect(toHex(writeLayout(memoryId(), record))).toBe(w.layout);
      verifyWriteRecord(log, record);
      expect(toHex(openWrite(crypto, memoryId(), { record: epochRecord(epoch), key }, record, h(w.ciphertext)))).toBe(w.plaintext);
    }
  });
});

describe('§18.8 request signature', () => {
  it('rebuilds the layout from the exact request bytes, verifies, and parses the four metadata entries', () => {
    const r = V.request;
    expect(toHex(crypto.blake3(h(r.request)))).toBe(r.request_digest);
    const fields = { timestampMs: r.timestamp_ms, nonce: h(r.nonce), agentId: r.agent_id, serial: h(r.serial) };
    expect(toHex(memoryRequestLayout(crypto, { serviceId: r.service_id, path: r.path, body: h(r.request) }, fields))).toBe(r.layout);
    const auth = parseMemoryMetadata((k) => r.metadata[k]);
    expect(toHex(auth.signature)).toBe(r.signature);
    expect(auth.timestampMs).toBe(r.timestamp_ms);
    const cert = decodeCertificate(h(V.certificates[r.agent_id]));
    const who = { agentId: cert.agentId, identityPublicKey: cert.identityPublicKey, serial: cert.serial };
    expect(verifyMemoryRequest(crypto, auth, { serviceId: r.service_id, path: r.path, body: h(r.request) }, who)).toBe(true);
    expect(verifyMemoryRequest(crypto, auth, { serviceId: 'another-store', path: r.path, body: h(r.request) }, who)).toBe(false);
  });
});
