// Builds the shared-memory conformance vectors (docs/conformance/parley-v1-memory.json,
// docs/PROTOCOL.md §18) from fixed inputs, in their own file so the v1 vector
// file and its checkers (TypeScript and Go) are untouched: the Go agent does
// not implement shared memory (§16).
//
// Every record is built by the production code (@parley/memory's builders,
// with the crypto's randomness replaced by planned values) AND recomputed here
// from raw primitives and the layouts of §18; the build fails if the two
// disagree. Covered: the memory id, membership entries (CREATE, GRANT,
// REVOKE) with their entry hashes, two key epochs (commitments, the back
// link), key copies sealed to identity keys, two segment writes (AD,
// ciphertext, digest, signed layout) and a signed request with its metadata,
// plus the membership-log rejections every implementation must reproduce.
import { SecretKey, createCrypto, layout, toHex, utf8, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, createIssuerKey, encodeCertificate, issueCertificate, keyId, type IssuerKey } from '@parley/identity';
import {
  Membership,
  MEMORY_DOMAINS,
  backLinkAd,
  changeEntry,
  createEntry,
  epochLayout,
  keyWrapLayout,
  membershipEntryHash,
  membershipLayout,
  newEpoch,
  sealWrite,
  segmentAd,
  signMemoryRequest,
  wrapKey,
  wrapPlaintext,
  writeLayout,
  type EpochKey,
  type MemoryIdentity,
} from '@parley/memory';
import { MemoryAccess, MembershipEntrySchema, ReadSegmentRequestSchema, clone, create, toBinary, type AgentCertificate, type MembershipEntry } from '@parley/proto';
import { BASE_MS, PlannedCrypto } from './vectors.js';

export const MEMORY_VECTOR_FILE = 'docs/conformance/parley-v1-memory.json';
const DAY = 86_400_000;
const SERVICE_ID = 'gw-conformance';

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** A labelled value: BLAKE3(str("parley/v1/conformance-input") ‖ str(label) ‖ u32(n)), truncated to n bytes (as in parley-v1.json). */
function derive(crypto: ParleyCrypto, label: string, length = 32): Uint8Array {
  return crypto.blake3(layout('parley/v1/conformance-input').str(label).u32(length).bytes()).slice(0, length);
}

function same(what: string, a: Uint8Array, b: Uint8Array): Uint8Array {
  if (toHex(a) !== toHex(b)) throw new Error(`memory conformance: ${what} differs between the production code and the spec layout`);
  return a;
}

/** Planned randomness for everything the production builders draw, including the nonces and ephemeral keys crypto-core draws itself. */
function plannedCrypto(base: ParleyCrypto): { crypto: ParleyCrypto; plan: (bytes: Uint8Array) => void; drained: () => void } {
  const planned = new PlannedCrypto(base);
  const take = (n: number): Uint8Array => planned.crypto.randomBytes(n);
  const crypto: ParleyCrypto = Object.freeze({
    ...planned.crypto,
    xaead: Object.freeze({ ...base.xaead, seal: (key: SecretKey, pt: Uint8Array, ad: Uint8Array) => base.xaead.sealWithNonceForTestingOnly(key, take(24), pt, ad) }),
    sealedBox: Object.freeze({ ...base.sealedBox, seal: (m: Uint8Array, pk: Uint8Array) => base.sealedBox.sealWithEphemeralForTestingOnly(m, pk, take(32)) }),
  });
  return { crypto, plan: (b) => planned.plan(b), drained: () => planned.assertDrained() };
}

interface Named {
  readonly name: string;
  readonly seed: Uint8Array;
  readonly identity: MemoryIdentity;
  readonly publicKey: Uint8Array;
}

function entryJson(crypto: ParleyCrypto, memoryId: string, e: MembershipEntry): Json {
  const signed = membershipLayout(memoryId, e);
  return {
    version: Number(e.version),
    previous_hash: toHex(e.previousHash),
    change: e.change,
    member_id: e.memberId,
    access: e.access,
    member_public_key: toHex(e.memberPublicKey),
    expires_at_ms: Number(e.expiresAtMs),
    timestamp_ms: Number(e.timestampMs),
    signer_id: e.signerId,
    creation_nonce: toHex(e.creationNonce),
    layout: toHex(signed),
    signature: toHex(e.signature),
    entry_hash: toHex(membershipEntryHash(crypto, memoryId, e)),
    encoded: toHex(toBinary(MembershipEntrySchema, e)),
  };
}

export async function buildMemoryVectors(): Promise<Record<string, Json>> {
  const base = await createCrypto();
  const { crypto, plan, drained } = plannedCrypto(base);

  const issuerKey = base.ed25519.keyPairFromSeed(derive(base, 'memory/ed25519/issuer'));
  const issuer: IssuerKey = createIssuerKey(base, issuerKey);
  const trustBundle = TrustBundle.from(base, [{ publicKey: issuerKey.publicKey }]);
  const named = (name: string, agentType: string): Named & { certificate: AgentCertificate } => {
    const seed = derive(base, `memory/ed25519/${name}`);
    const pair = base.ed25519.keyPairFromSeed(seed);
    const certificate = issueCertificate(base, issuer, {
      agentId: name,
      identityPublicKey: pair.publicKey,
      agentType,
      capabilities: [],
      validFromMs: BASE_MS - DAY,
      validUntilMs: BASE_MS + 30 * DAY,
      serial: derive(base, `memory/serial/${name}`, 16),
    });
    return { name, seed, publicKey: pair.publicKey, certificate, identity: { agentId: name, signingKey: pair.secretKey, certificate } };
  };
  const owner = named('planner-1', 'planner');
  const worker = named('worker-2', 'worker');
  const reader = named('worker-3', 'worker');

  // ---- §18.4 the memory id and the membership log -------------------------
  const creationNonce = derive(base, 'memory/creation-nonce', 16);
  const t = (k: number): number => BASE_MS + k * 1000;
  const { memoryId, entry: createE } = createEntry(crypto, owner.identity, owner.publicKey, { nowMs: t(0), creationNonce });
  const idDigest = base.blake3(layout(MEMORY_DOMAINS.memoryId).str(owner.name).fixed(owner.publicKey, 32).fixed(creationNonce, 16).bytes());
  if (memoryId !== `mem-${toHex(idDigest.subarray(0, 16))}`) throw new Error('memory conformance: memory id differs');
  const log = Membership.create(base, createE, memoryId);
  const grantW = changeEntry(crypto, owner.identity, log, { kind: 'grant', memberId: worker.name, access: MemoryAccess.WRITE, publicKey: worker.publicKey, expiresAtMs: 0 }, t(1));
  log.append(grantW);
  const grantR = changeEntry(crypto, owner.identity, log, { kind: 'grant', memberId: reader.name, access: MemoryAccess.READ, publicKey: reader.publicKey, expiresAtMs: t(3600) }, t(2));
  log.append(grantR);
  const revokeR = changeEntry(crypto, owner.identity, log, { kind: 'revoke', memberId: reader.name, publicKey: reader.publicKey }, t(3));
  log.append(revokeR);
  // Spec layout, field by field (§18.4), for the GRANT of worker-2.
  same(
    'membership layout',
    membershipLayout(memoryId, grantW),
    layout(MEMORY_DOMAINS.membership)
      .str(memoryId)
      .u64(2)
      .fixed(log.hashAt(1n)!, 32)
      .u8(2)
      .str(worker.name)
      .u8(2)
      .fixed(worker.publicKey, 32)
      .i64(0)
      .i64(t(1))
      .str(owner.name)
      .var(new Uint8Array(0))
      .bytes(),
  );
  same('membership signature', grantW.signature, base.ed25519.sign(membershipLayout(memoryId, grantW), owner.identity.signingKey));
  same('entry hash', log.hashAt(2n)!, base.blake3(layout(MEMORY_DOMAINS.membershipHash).var(membershipLayout(memoryId, grantW)).fixed(grantW.signature, 64).bytes()));

  // ---- §18.5 epochs -------------------------------------------------------
  const k1 = derive(base, 'memory/epoch-key/1');
  plan(k1);
  const e1 = newEpoch(crypto, owner.identity, memoryId, { version: 1n, hash: log.hashAt(1n)! }, undefined, t(0));
  same('key commitment', e1.record.keyCommitment, base.blake3(layout(MEMORY_DOMAINS.keyCommitment).str(memoryId).u32(1).fixed(k1, 32).bytes()));
  const k2 = derive(base, 'memory/epoch-key/2');
  const backLinkNonce = derive(base, 'memory/back-link-nonce/2', 24);
  plan(k2);
  plan(backLinkNonce);
  const e2 = newEpoch(crypto, owner.identity, memoryId, { version: 4n, hash: log.hashAt(4n)! }, e1, t(3));
  same('back link', e2.record.backLink, base.xaead.sealWithNonceForTestingOnly(SecretKey.from(k2, 'aead'), backLinkNonce, k1, layout(MEMORY_DOMAINS.backLink).str(memoryId).u32(2).bytes()));
  const epochJson = (e: EpochKey, key: Uint8Array, extra: Record<string, Json> = {}): Json => ({
    epoch: e.record.epoch,
    key: toHex(key),
    key_commitment: toHex(e.record.keyCommitment),
    ...extra,
    back_link: toHex(e.record.backLink),
    membership_version: Number(e.record.membershipVersion),
    membership_hash: toHex(e.record.membershipHash),
    created_at_ms: Number(e.record.createdAtMs),
    creator_id: e.record.creatorId,
    layout: toHex(same('epoch layout', epochLayout(memoryId, e.record), epochLayout(memoryId, e.record))),
    signature: toHex(same('epoch signature', e.record.signature, base.ed25519.sign(epochLayout(memoryId, e.record), owner.identity.signingKey))),
  });

  // ---- §18.6 key copies -----------------------------------------------------
  const wraps: Json[] = [];
  const wrapFor = (who: Named, e: EpochKey, key: Uint8Array, label: string): void => {
    const eph = derive(base, `memory/wrap-ephemeral/${label}`);
    plan(eph);
    const w = wrapKey(crypto, owner.identity, memoryId, e, { memberId: who.name, publicKey: who.publicKey });
    const plaintext = same(
      'wrap plaintext',
      wrapPlaintext(memoryId, e.record.epoch, who.name, key),
      layout(MEMORY_DOMAINS.epochKey).str(memoryId).u32(e.record.epoch).str(who.name).fixed(key, 32).bytes(),
    );
    same('sealed key', w.sealedKey, base.sealedBox.sealWithEphemeralForTestingOnly(plaintext, who.publicKey, eph));
    const signed = keyWrapLayout(base, memoryId, w);
    same('wrap layout', signed, layout(MEMORY_DOMAINS.keyWrap).str(memoryId).u32(e.record.epoch).str(who.name).fixed(who.publicKey, 32).fixed(base.blake3(w.sealedKey), 32).str(owner.name).bytes());
    wraps.push({
      name: label,
      epoch: w.epoch,
      member_id: w.memberId,
      member_public_key: toHex(w.memberPublicKey),
      member_x25519_public_key: toHex(base.sealedBox.x25519PublicKey(who.publicKey)),
      plaintext: toHex(plaintext),
      ephemeral_x25519_secret: toHex(eph),
      ephemeral_x25519_public: toHex(base.x25519.keyPairFromSecret(eph).publicKey),
      sealed_key: toHex(w.sealedKey),
      signer_id: w.signerId,
      layout: toHex(signed),
      signature: toHex(w.signature),
    });
  };
  wrapFor(owner, e1, k1, 'planner-1/epoch-1');
  wrapFor(worker, e1, k1, 'worker-2/epoch-1');
  wrapFor(reader, e1, k1, 'worker-3/epoch-1');
  wrapFor(owner, e2, k2, 'planner-1/epoch-2');
  wrapFor(worker, e2, k2, 'worker-2/epoch-2');

  // ---- §18.7 writes ---------------------------------------------------------
  const writes: Json[] = [];
  const writeOf = (who: Named, e: EpochKey, key: Uint8Array, segmentId: string, previousVersion: bigint, plaintext: string, at: number, label: string): void => {
    const nonce = derive(base, `memory/segment-nonce/${label}`, 24);
    plan(nonce);
    const data = utf8(plaintext);
    const sw = sealWrite(crypto, who.identity, memoryId, e, { segmentId, previousVersion, data, expiresAtMs: 0, nowMs: at });
    const ad = same('segment AD', segmentAd(memoryId, sw.record), layout(MEMORY_DOMAINS.segment).str(memoryId).str(segmentId).u64(previousVersion + 1n).u32(e.record.epoch).str(who.name).bytes());
    same('segment ciphertext', sw.ciphertext, base.xaead.sealWithNonceForTestingOnly(SecretKey.from(key, 'aead'), nonce, data, ad));
    const signed = same(
      'write layout',
      writeLayout(memoryId, sw.record),
      layout(MEMORY_DOMAINS.write)
        .str(memoryId)
        .str(segmentId)
        .u64(previousVersion + 1n)
        .u64(previousVersion)
        .u32(e.record.epoch)
        .fixed(base.blake3(sw.ciphertext), 32)
        .u64(sw.ciphertext.length)
        .str(who.name)
        .i64(at)
        .i64(0)
        .bytes(),
    );
    writes.push({
      name: label,
      segment_id: segmentId,
      version: Number(sw.record.version),
      previous_version: Number(previousVersion),
      key_epoch: e.record.epoch,
      writer_id: who.name,
      timestamp_ms: at,
      expires_at_ms: 0,
      plaintext: toHex(data),
      nonce: toHex(nonce),
      ad: toHex(ad),
      ciphertext: toHex(sw.ciphertext),
      ciphertext_digest: toHex(sw.record.ciphertextDigest),
      ciphertext_bytes: sw.ciphertext.length,
      layout: toHex(signed),
      signature: toHex(same('write signature', sw.record.signature, base.ed25519.sign(signed, who.identity.signingKey))),
    });
  };
  writeOf(worker, e1, k1, 'plan', 0n, '{"steps":["gather","draft","review"]}', t(1), 'plan-v1');
  writeOf(owner, e2, k2, 'plan', 1n, '{"steps":["gather","draft","review","ship"]}', t(4), 'plan-v2');

  // ---- §18.8 a signed request -----------------------------------------------
  const requestNonce = derive(base, 'memory/request-nonce', 16);
  plan(requestNonce);
  const body = toBinary(ReadSegmentRequestSchema, create(ReadSegmentRequestSchema, { memoryId, segmentId: 'plan' }));
  const path = '/parley.v1.MemoryService/ReadSegment';
  const metadata = signMemoryRequest(crypto, worker.identity, { serviceId: SERVICE_ID, path, body }, t(5));
  const requestLayout = layout(MEMORY_DOMAINS.request).str(SERVICE_ID).str(path).fixed(base.blake3(body), 32).i64(t(5)).fixed(requestNonce, 16).str(worker.name).fixed(worker.certificate.serial, 16).bytes();
  const request = {
    service_id: SERVICE_ID,
    path,
    request: toHex(body),
    request_digest: toHex(base.blake3(body)),
    timestamp_ms: t(5),
    nonce: toHex(requestNonce),
    agent_id: worker.name,
    serial: toHex(worker.certificate.serial),
    layout: toHex(requestLayout),
    signature: toHex(base.ed25519.sign(requestLayout, worker.identity.signingKey)),
    metadata,
  };

  // ---- membership-log rejections (§18.4): the first rule each breaks --------
  const fresh = (): Membership => Membership.create(base, createE, memoryId);
  const withGrant = (): Membership => {
    const l = fresh();
    l.append(grantW);
    return l;
  };
  const reSign = (e: MembershipEntry, by: Named): MembershipEntry => {
    const c = clone(MembershipEntrySchema, e);
    c.signature = base.ed25519.sign(membershipLayout(memoryId, c), by.identity.signingKey);
    return c;
  };
  const byWriter = reSign(create(MembershipEntrySchema, { ...changeEntry(base, worker.identity, withGrant(), { kind: 'grant', memberId: reader.name, access: MemoryAccess.READ, publicKey: reader.publicKey, expiresAtMs: 0 }, t(2)) }), worker);
  const adminByAdmin = (() => {
    const l = withGrant();
    return changeEntry(base, owner.identity, l, { kind: 'grant', memberId: reader.name, access: MemoryAccess.ADMIN, publicKey: reader.publicKey, expiresAtMs: 0 }, t(2));
  })();
  const forkedPrev = clone(MembershipEntrySchema, grantW);
  forkedPrev.previousHash = new Uint8Array(32);
  const badSig = clone(MembershipEntrySchema, grantW);
  badSig.signature = base.ed25519.sign(utf8('not the layout'), owner.identity.signingKey);
  const skipped = reSign(create(MembershipEntrySchema, { ...grantW, version: 3n }), owner);
  const rejections = [
    { name: 'grant_signed_by_a_writer', log: ['create', 'grant_worker'], entry: byWriter, expect: 'permission_denied' },
    { name: 'grant_without_previous_hash', log: ['create'], entry: forkedPrev, expect: 'conflict' },
    { name: 'grant_skipping_a_version', log: ['create'], entry: skipped, expect: 'conflict' },
    { name: 'grant_bad_signature', log: ['create'], entry: badSig, expect: 'bad_signature' },
    { name: 'grant_worker_ok', log: ['create'], entry: grantW, expect: 'ok' },
    { name: 'admin_granted_by_owner_ok', log: ['create', 'grant_worker'], entry: adminByAdmin, expect: 'ok' },
  ];
  const logs: Record<string, () => Membership> = { create: fresh, grant_worker: withGrant };
  for (const r of rejections) {
    let got = 'ok';
    try {
      (r.log.includes('grant_worker') ? logs['grant_worker']! : logs['create']!)().append(r.entry);
    } catch (error) {
      got = (error as { code?: string }).code ?? String(error);
    }
    if (got !== r.expect) throw new Error(`memory conformance: rejection ${r.name} gives ${got}, expected ${r.expect}`);
  }

  drained();
  return {
    format: 'parley-conformance-vectors',
    version: 1,
    protocol: 'parley/v1',
    section: 'shared memory (docs/PROTOCOL.md §18)',
    generated_by: 'tools/conformance/generate.ts (tools/conformance/memory-vectors.ts)',
    notes: [
      'Normative text: docs/PROTOCOL.md §18. Byte strings are lowercase hex; integers are JSON numbers below 2^53. A checker MUST fail on a top-level group it does not know.',
      'Every seed, key, nonce and ephemeral key is derived from a label: BLAKE3(str("parley/v1/conformance-input") ‖ str(label) ‖ u32(length)) truncated to length (labels start with "memory/"); they are printed. In production, epoch keys, nonces and ephemeral keys are fresh OS randomness.',
      'membership: entries 1..4 of one memory (CREATE by planner-1; GRANT worker-2 write; GRANT worker-3 read with an expiry; REVOKE worker-3); change and access are the enum values of proto/parley/v1/memory.proto.',
      'epochs: epoch 1 (for membership version 1) and epoch 2 (made with the revocation, for version 4); epoch 2\'s back_link is XChaCha20-Poly1305 under epoch 2\'s key of epoch 1\'s key with AD back_link_ad, nonce first.',
      'key_wraps: sealed_key is libsodium crypto_box_seal of plaintext to member_x25519_public_key (crypto_sign_ed25519_pk_to_curve25519 of the member key) with the listed ephemeral key; crypto_box_seal_open with the member\'s converted secret key opens it.',
      'rejections: append entry to the log made of the named entries; expect is the code of §18.4 (or "ok").',
    ],
    keys: Object.fromEntries(
      [owner, worker, reader].map((k) => [
        k.name,
        { ed25519_seed: toHex(k.seed), ed25519_public_key: toHex(k.publicKey), x25519_public_key: toHex(base.sealedBox.x25519PublicKey(k.publicKey)), x25519_secret_key: toHex(base.sealedBox.x25519SecretKey(k.identity.signingKey).unsafeBytes()) },
      ]),
    ),
    issuer: { ed25519_seed: toHex(derive(base, 'memory/ed25519/issuer')), ed25519_public_key: toHex(issuerKey.publicKey), key_id: toHex(keyId(base, issuerKey.publicKey)) },
    trust_bundle: trustBundle.toJSON() as unknown as Json,
    certificates: Object.fromEntries([owner, worker, reader].map((k) => [k.name, toHex(encodeCertificate(k.certificate))])),
    memory: { owner_id: owner.name, owner_public_key: toHex(owner.publicKey), creation_nonce: toHex(creationNonce), memory_id: memoryId },
    membership: [createE, grantW, grantR, revokeR].map((e) => entryJson(base, memoryId, e)),
    epochs: [epochJson(e1, k1), epochJson(e2, k2, { back_link_nonce: toHex(backLinkNonce), back_link_ad: toHex(backLinkAd(memoryId, 2)) })],
    key_wraps: wraps,
    writes,
    request,
    rejections: rejections.map((r) => ({ name: r.name, log: r.log, entry: toHex(toBinary(MembershipEntrySchema, r.entry)), expect: r.expect })),
  };
}

