// Builds Parley's conformance vectors (docs/conformance/parley-v1.json) from
// fixed inputs. Every value is computed twice where the product offers two
// paths: once by the production code (certificates, handshakes, sessions,
// audit writer) and once from raw primitives and the layouts of
// docs/PROTOCOL.md, and the build fails if the two disagree. Nothing here is
// random: every "random" input (seeds, session id, ephemeral keys, salts,
// nonces) is derived from a label, and the crypto handed to the production
// code refuses any randomness it was not told to expect.
import {
  SecretKey,
  concatBytes,
  createCrypto,
  layout,
  toHex,
  utf8,
  type Ed25519KeyPair,
  type ParleyCrypto,
  type X25519KeyPair,
} from '@parley/crypto-core';
import {
  certificateTbs,
  createIssuerKey,
  encodeCertificate,
  issueCertificate,
  keyId,
  TrustBundle,
  verifyCertificate,
  type IssuerKey,
  REVOCATION_KIND,
  revocationEntryHash,
  revocationHeadLayout,
  type RevocationEntryFields,
} from '@parley/identity';
import {
  AgentCertificateSchema,
  HandshakeFrameSchema,
  MessageType,
  SecureMessageSchema,
  DeliveryReceiptSchema,
  MessagePayloadSchema,
  RevokeAgentRequestSchema,
  type AgentCertificate,
  type HandshakeFrame,
  type SecureMessage,
} from '@parley/proto';
import {
  HandshakeState,
  InitiatorHandshake,
  ResponderHandshake,
  PARLEY_NOISE_PROTOCOL,
  parseProtocolName,
  envelopeAd,
  envelopeMacInput,
  envelopeSignedBytes,
  identityBindingBytes,
  noisePrologue,
  payloadCommitment,
  type EnvelopeHeader,
  type HandshakeConfig,
  type LocalIdentity,
  type Session,
} from '@parley/session';
import {
  MerkleTree,
  ZERO_HASH,
  encodeEntry,
  entryHash,
  entryLayout,
  leafHash,
  merkleHasher,
  signEntry,
  signTreeHead,
  writerKeyId,
} from '@parley/audit';
import {
  OPERATOR_METADATA_KEYS,
  operatorRequestLayout,
  registrationProofLayout,
  rotationAuthorisationLayout,
  rotationProofLayout,
  signOperatorRequest,
  deliveryReceiptLayout,
  gatewayAuthLayout,
  gatewaySendLayout,
  handshakeFrameDigest,
  signReceipt,
} from '@parley/protocol';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { SessionRejectSchema } from '@parley/proto';
import {
  NOTHING_REVOKED,
  StaticRevocations,
  certificateVariant,
  handshakeRejections,
  moreCertificateChecks,
  revokedJson,
  trustBundleChecks,
  type RevokedJson,
} from './negative.js';

/** Fixed clock of the vectors: 2027-01-15T08:00:00Z. */
export const BASE_MS = 1_800_000_000_000;
const DAY = 86_400_000;
/** The receivers' clock for every check in the file. */
export const NOW_MS = BASE_MS + 60_000;
const GATEWAY_ID = 'gw-conformance';
const REKEY_THRESHOLD = 2;

export const VECTOR_FILE = 'docs/conformance/parley-v1.json';

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** A labelled 32-byte value: BLAKE3(str("parley/v1/conformance-input") ‖ str(label) ‖ u32(n)), truncated to n bytes. */
function derive(crypto: ParleyCrypto, label: string, length = 32): Uint8Array {
  return crypto.blake3(layout('parley/v1/conformance-input').str(label).u32(length).bytes()).slice(0, length);
}

/**
 * The production crypto with its randomness replaced by a queue of planned
 * values. Anything that asks for randomness nobody planned fails the build,
 * so the file can never silently depend on the OS RNG.
 */
export class PlannedCrypto {
  readonly #queue: Uint8Array[] = [];
  readonly #x25519: X25519KeyPair[] = [];
  readonly crypto: ParleyCrypto;

  constructor(base: ParleyCrypto) {
    const take = (length: number): Uint8Array => {
      const next = this.#queue.shift();
      if (next === undefined) throw new Error(`conformance: unplanned request for ${String(length)} random bytes`);
      if (next.length !== length) throw new Error(`conformance: planned ${String(next.length)} random bytes, ${String(length)} requested`);
      return next.slice();
    };
    this.crypto = Object.freeze({
      ...base,
      randomBytes: take,
      randomKey: (kind: SecretKey['kind'], length = 32) => SecretKey.adopt(take(length), kind),
      ed25519: Object.freeze({ ...base.ed25519, generateKeyPair: () => base.ed25519.keyPairFromSeed(take(32)) }),
      x25519: Object.freeze({
        ...base.x25519,
        generateKeyPair: () => {
          const kp = this.#x25519.shift();
          if (kp === undefined) throw new Error('conformance: unplanned X25519 key generation');
          return kp;
        },
      }),
    });
  }

  plan(bytes: Uint8Array): void {
    this.#queue.push(bytes);
  }

  planX25519(kp: X25519KeyPair): void {
    this.#x25519.push(kp);
  }

  assertDrained(): void {
    if (this.#queue.length > 0 || this.#x25519.length > 0) throw new Error('conformance: planned randomness left unused');
  }
}

function same(a: Uint8Array, b: Uint8Array, what: string): void {
  if (toHex(a) !== toHex(b)) throw new Error(`conformance: ${what}: production code and the spec layout disagree`);
}

interface NamedKey {
  readonly name: string;
  readonly seed: Uint8Array;
  readonly pair: Ed25519KeyPair;
  readonly keyId: Uint8Array;
}

interface Agent {
  readonly key: NamedKey;
  readonly identity: LocalIdentity;
  readonly certificate: AgentCertificate;
}

function keyJson(k: NamedKey): Json {
  return { ed25519_seed: toHex(k.seed), ed25519_public_key: toHex(k.pair.publicKey), key_id: toHex(k.keyId) };
}

function certJson(crypto: ParleyCrypto, name: string, cert: AgentCertificate): Json {
  return {
    name,
    version: cert.version,
    agent_id: cert.agentId,
    agent_type: cert.agentType,
    capabilities: [...cert.capabilities],
    valid_from_ms: Number(cert.validFromMs),
    valid_until_ms: Number(cert.validUntilMs),
    serial: toHex(cert.serial),
    identity_public_key: toHex(cert.identityPublicKey),
    issuer_key_id: toHex(cert.issuerKeyId),
    tbs: toHex(certificateTbs(cert)),
    signature: toHex(cert.signature),
    encoded: toHex(encodeCertificate(cert)),
  };
}

function x25519Json(kp: X25519KeyPair, e: X25519KeyPair): Json {
  return {
    static_private: toHex(kp.secretKey.unsafeBytes()),
    static_public: toHex(kp.publicKey),
    ephemeral_private: toHex(e.secretKey.unsafeBytes()),
    ephemeral_public: toHex(e.publicKey),
  };
}

function frameJson(crypto: ParleyCrypto, frame: HandshakeFrame, payload: Uint8Array): Json {
  return {
    step: frame.step,
    sender_id: frame.senderId,
    recipient_id: frame.recipientId,
    payload: toHex(payload),
    noise_message: toHex(frame.noiseMessage),
    frame: toHex(toBinary(HandshakeFrameSchema, frame)),
    frame_digest: toHex(handshakeFrameDigest(crypto, frame)),
  };
}

/** Epoch keys from the Split() key by the §7 derivations, computed from raw AEAD calls. */
function epochKeys(crypto: ParleyCrypto, k0: Uint8Array, epochs: number): { key: Uint8Array; hmacKey: Uint8Array }[] {
  const out: { key: Uint8Array; hmacKey: Uint8Array }[] = [];
  let k = k0.slice();
  const zeros = new Uint8Array(32);
  for (let e = 0; e < epochs; e++) {
    const sk = SecretKey.adopt(k.slice(), 'aead');
    const hmacKey = crypto.aead.seal(sk, (1n << 64n) - 2n, zeros, utf8('parley/v1/hmac-key')).slice(0, 32);
    out.push({ key: k, hmacKey });
    k = crypto.aead.seal(sk, (1n << 64n) - 1n, zeros, new Uint8Array(0)).slice(0, 32);
  }
  return out;
}

function flipBit(bytes: Uint8Array, index: number): void {
  bytes[index] = (bytes[index] ?? 0) ^ 0x01;
}

/** The nonce of the test-only key check (§16): reserved, never a message nonce, REKEY's or mk(e)'s. */
export const KEY_CHECK_NONCE = (1n << 64n) - 3n;

/**
 * One epoch's keys, with a known-answer check value ENCRYPT(k(e), 2^64−3, "", 0^32) for Noise libraries
 * that never reveal a CipherState's key bytes but can encrypt at an explicit nonce. Test-only (§16): at
 * nonce 0 it would be message 0's keystream, and XORed with message 0's ciphertext it would give its salt.
 */
function epochJson(crypto: ParleyCrypto, epoch: number, k: { key: Uint8Array; hmacKey: Uint8Array }): Json {
  const check = crypto.aead.seal(SecretKey.adopt(k.key.slice(), 'aead'), KEY_CHECK_NONCE, new Uint8Array(32), new Uint8Array(0));
  return { epoch, key: toHex(k.key), key_check: toHex(check), hmac_key: toHex(k.hmacKey) };
}

/** Seals an envelope from raw primitives and the §6 layouts (independent of Session). */
function rawSeal(
  crypto: ParleyCrypto,
  args: {
    header: Omit<EnvelopeHeader, 'payloadCommitment'> & { payloadCommitment?: Uint8Array };
    payload: Uint8Array;
    salt: Uint8Array;
    key: Uint8Array;
    hmacKey: Uint8Array;
    signer: SecretKey;
    corrupt?: 'ciphertext' | 'tag';
  },
): { envelope: SecureMessage; parts: Record<string, Uint8Array> } {
  const commitment = payloadCommitment(crypto, args.salt, args.payload);
  const header: EnvelopeHeader = { ...args.header, payloadCommitment: args.header.payloadCommitment ?? commitment };
  const ad = envelopeAd(header);
  const sk = SecretKey.adopt(args.key.slice(), 'aead');
  const encryptedPayload = crypto.aead.seal(sk, header.nonce, concatBytes(args.salt, args.payload), ad);
  if (args.corrupt === 'ciphertext') flipBit(encryptedPayload, 40);
  const macInput = envelopeMacInput(header, encryptedPayload);
  const authTag = crypto.hmacSha256(SecretKey.adopt(args.hmacKey.slice(), 'mac'), macInput);
  if (args.corrupt === 'tag') flipBit(authTag, 0);
  const signed = envelopeSignedBytes(crypto, header, encryptedPayload, authTag);
  const signature = crypto.ed25519.sign(signed, args.signer);
  const envelope = create(SecureMessageSchema, { ...header, encryptedPayload, authTag, signature });
  return { envelope, parts: { commitment, ad, encryptedPayload, macInput, authTag, signed, signature, messageHash: crypto.blake3(signed) } };
}

const MESSAGE_PLAN: readonly { name: string; type: MessageType; content: Json }[] = [
  { name: 'handoff_request', type: MessageType.HANDOFF_REQUEST, content: { task: 'summarise-report-42', reason: 'capacity', deadline_ms: BASE_MS + DAY } },
  { name: 'handoff_approval', type: MessageType.HANDOFF_APPROVAL, content: { accepted: true, eta_ms: 900000 } },
  { name: 'task_assignment', type: MessageType.TASK_ASSIGNMENT, content: { task: 'summarise-report-42', inputs: ['s3://reports/42.pdf'], priority: 2 } },
  { name: 'status_update', type: MessageType.STATUS_UPDATE, content: { task: 'summarise-report-42', state: 'running', progress: 0.5 } },
  { name: 'consensus_vote', type: MessageType.CONSENSUS_VOTE, content: { round: 7, proposal: 'ship-v2', vote: 'yes' } },
  { name: 'quality_gate_result', type: MessageType.QUALITY_GATE_RESULT, content: { gate: 'lint', passed: false, findings: 3 } },
  { name: 'security_alert', type: MessageType.SECURITY_ALERT, content: { severity: 'high', kind: 'unexpected-peer', detail: 'unicode ✓ survives' } },
  { name: 'system_notification', type: MessageType.SYSTEM_NOTIFICATION, content: { notice: 'maintenance', at_ms: BASE_MS + 2 * DAY, empty: null } },
];

/** Builds the whole vector file. Deterministic: the same bytes on every run and machine. */
export async function buildVectors(): Promise<Record<string, Json>> {
  const base = await createCrypto();
  const planned = new PlannedCrypto(base);
  const crypto = planned.crypto;

  const named = (name: string): NamedKey => {
    const seed = derive(base, `ed25519/${name}`);
    const pair = base.ed25519.keyPairFromSeed(seed);
    return { name, seed, pair, keyId: keyId(base, pair.publicKey) };
  };
  const issuerKey = named('issuer');
  const rogueKey = named('rogue-issuer');
  const alice = named('alice');
  const bob = named('bob');
  const gatewayKey = named('gateway');
  const operatorKey = named('operator');
  const aliceNext = named('alice-next');
  const carol = named('carol');
  const issuer: IssuerKey = createIssuerKey(base, issuerKey.pair);
  const rogue: IssuerKey = createIssuerKey(base, rogueKey.pair);
  const trustBundle = TrustBundle.from(base, [{ publicKey: issuerKey.pair.publicKey }]);

  // ---- certificates -------------------------------------------------------
  const certFor = (k: NamedKey, agentType: string, capabilities: string[], by: IssuerKey = issuer): AgentCertificate =>
    issueCertificate(base, by, {
      agentId: k.name,
      identityPublicKey: k.pair.publicKey,
      agentType,
      capabilities,
      validFromMs: BASE_MS - DAY,
      validUntilMs: BASE_MS + 30 * DAY,
      serial: derive(base, `serial/${k.name}/${by === issuer ? 'issuer' : 'rogue'}`, 16),
    });
  const aliceCert = certFor(alice, 'planner', ['task:delegate', 'msg:send']);
  const bobCert = certFor(bob, 'worker', ['task:execute', 'msg:send']);
  const rogueCert = certFor(alice, 'planner', ['task:delegate', 'msg:send'], rogue);
  const tampered = create(AgentCertificateSchema, { ...aliceCert, capabilities: ['admin:all', 'msg:send', 'task:delegate'] });
  // Certificates the negative vectors carry (§3.3 failures inside handshakes).
  const variant = (c: AgentCertificate, label: string, over: { validFromMs?: number; validUntilMs?: number }, by: IssuerKey = issuer): AgentCertificate =>
    certificateVariant(base, by, c, { ...over, serial: derive(base, `serial/${label}`, 16) });
  const bobExpired = variant(bobCert, 'bob/expired', { validFromMs: BASE_MS - 30 * DAY, validUntilMs: NOW_MS });
  const bobNotYetValid = variant(bobCert, 'bob/not-yet-valid', { validFromMs: NOW_MS + 1, validUntilMs: NOW_MS + 30 * DAY });
  const bobByRogue = certFor(bob, 'worker', ['task:execute', 'msg:send'], rogue);
  const aliceExpired = variant(aliceCert, 'alice/expired', { validFromMs: BASE_MS - 30 * DAY, validUntilMs: NOW_MS });
  const carolCert = certificateVariant(base, issuer, bobCert, { agentId: 'carol', identityPublicKey: carol.pair.publicKey, serial: derive(base, 'serial/carol/issuer', 16) });
  const aliceAgent: Agent = { key: alice, certificate: aliceCert, identity: { agentId: 'alice', signingKey: alice.pair.secretKey, certificate: aliceCert } };
  const bobAgent: Agent = { key: bob, certificate: bobCert, identity: { agentId: 'bob', signingKey: bob.pair.secretKey, certificate: bobCert } };

  const certChecks: Json[] = [];
  const checkCert = (name: string, cert: AgentCertificate, expectedAgentId: string | null, atMs: number): void => {
    let expect = 'ok';
    try {
      verifyCertificate(base, cert, { trustBundle, nowMs: atMs, ...(expectedAgentId === null ? {} : { expectedAgentId }) });
    } catch (e) {
      expect = (e as { code: string }).code;
    }
    certChecks.push({
      name,
      certificate: toHex(toBinary(AgentCertificateSchema, cert)),
      expected_agent_id: expectedAgentId,
      at_ms: atMs,
      expect,
      revoked: revokedJson(NOTHING_REVOKED),
    });
  };
  checkCert('valid', aliceCert, 'alice', NOW_MS);
  checkCert('valid_any_agent', bobCert, null, NOW_MS);
  checkCert('wrong_agent', aliceCert, 'bob', NOW_MS);
  checkCert('not_yet_valid', aliceCert, 'alice', BASE_MS - DAY - 1);
  checkCert('expired_at_valid_until', aliceCert, 'alice', BASE_MS + 30 * DAY);
  checkCert('tampered_capabilities', tampered, 'alice', NOW_MS);
  checkCert('unknown_issuer', rogueCert, 'alice', NOW_MS);
  checkCert('unsupported_version', create(AgentCertificateSchema, { ...aliceCert, version: 2 }), 'alice', NOW_MS);
  const expectCodes = ['ok', 'ok', 'identity_mismatch', 'not_yet_valid', 'expired', 'bad_certificate', 'unknown_issuer', 'unsupported_version'];
  certChecks.forEach((c, i) => {
    if ((c as { expect: string }).expect !== expectCodes[i]) throw new Error(`conformance: certificate check ${String(i)} gave ${(c as { expect: string }).expect}`);
  });
  for (const c of moreCertificateChecks({ crypto: base, issuer, trustBundle, alice: aliceCert, aliceExpired, nowMs: NOW_MS, derive: (l, n) => derive(base, l, n) })) {
    certChecks.push({
      name: c.name,
      certificate: toHex(c.certificate),
      expected_agent_id: c.expectedAgentId,
      at_ms: c.atMs,
      expect: c.expect,
      revoked: revokedJson(c.revoked),
    });
  }

  // ---- trust bundle JSON (§3.3) ---------------------------------------------
  const trustBundleCases = trustBundleChecks({
    crypto: base,
    issuer: { publicKey: issuerKey.pair.publicKey, keyId: issuerKey.keyId },
    other: { publicKey: rogueKey.pair.publicKey, keyId: rogueKey.keyId },
    manyKeys: Array.from({ length: 257 }, (_, i) => base.ed25519.keyPairFromSeed(derive(base, `ed25519/bundle-issuer/${String(i)}`)).publicKey),
    certificate: aliceCert,
    nowMs: NOW_MS,
  });

  // ---- handshake ----------------------------------------------------------
  const sessionId = derive(base, 'session-id', 16);
  const x = (label: string): X25519KeyPair => base.x25519.keyPairFromSecret(derive(base, `x25519/${label}`));
  // Fresh objects on every use: the handshake wipes the keys it is given once they are spent.
  const noiseKeys = {
    get iStatic() { return x('alice/static'); },
    get iEph() { return x('alice/ephemeral'); },
    get rStatic() { return x('bob/static'); },
    get rEph() { return x('bob/ephemeral'); },
  };
  let clockMs = BASE_MS;
  const clock = (): number => clockMs;
  const config = (a: Agent, staticKeyPair: X25519KeyPair, revocations?: StaticRevocations): HandshakeConfig => ({
    identity: a.identity,
    trustBundle,
    rekeyThreshold: REKEY_THRESHOLD,
    clock,
    staticKeyPair,
    ...(revocations === undefined ? {} : { revocations }),
  });
  planned.planX25519(noiseKeys.iEph);
  const { handshake: ih, frame: f1 } = InitiatorHandshake.start(crypto, config(aliceAgent, noiseKeys.iStatic), 'bob', sessionId);
  planned.planX25519(noiseKeys.rEph);
  const { handshake: rh, frame: f2 } = ResponderHandshake.accept(crypto, config(bobAgent, noiseKeys.rStatic), f1);
  const { frame: f3, session: aliceSession } = ih.receive(f2);
  const bobSession = rh.receive(f3);
  same(aliceSession.handshakeHash, bobSession.handshakeHash, 'handshake hash (both sides)');

  // The same handshake again with raw Noise HandshakeStates, for the payloads and the Split() keys.
  const prologue = noisePrologue(sessionId, 'alice', 'bob', REKEY_THRESHOLD);
  const protocol = parseProtocolName(PARLEY_NOISE_PROTOCOL, base);
  const raw = (initiator: boolean): HandshakeState =>
    new HandshakeState(base, {
      protocol,
      initiator,
      prologue,
      staticKeyPair: initiator ? noiseKeys.iStatic : noiseKeys.rStatic,
      fixedEphemeralKeyForTestingOnly: initiator ? noiseKeys.iEph : noiseKeys.rEph,
    });
  const hsI = raw(true);
  const hsR = raw(false);
  same(hsI.writeMessage(new Uint8Array(0)).message, f1.noiseMessage, 'noise message 1');
  hsR.readMessage(f1.noiseMessage);
  const p2 = hsI.readMessage(f2.noiseMessage).payload;
  same(hsR.writeMessage(p2).message, f2.noiseMessage, 'noise message 2');
  const read3 = hsR.readMessage(f3.noiseMessage);
  const p3 = read3.payload;
  const w3 = hsI.writeMessage(p3);
  same(w3.message, f3.noiseMessage, 'noise message 3');
  const bindingR = identityBindingBytes(sessionId, 'bob', 2, noiseKeys.rStatic.publicKey);
  const bindingI = identityBindingBytes(sessionId, 'alice', 1, noiseKeys.iStatic.publicKey);
  const rr = read3.result;
  const ir = w3.result;
  if (ir === undefined || rr === undefined) throw new Error('conformance: raw handshake did not complete');
  same(ir.handshakeHash, aliceSession.handshakeHash, 'handshake hash (raw)');
  const i2r = epochKeys(base, ir.send.unsafeKey()!.unsafeBytes(), 3);
  const r2i = epochKeys(base, ir.receive.unsafeKey()!.unsafeBytes(), 3);
  same(rr.receive.unsafeKey()!.unsafeBytes(), i2r[0]!.key, 'split keys');

  const handshake: Json = {
    protocol_name: PARLEY_NOISE_PROTOCOL,
    session_id: toHex(sessionId),
    initiator_id: 'alice',
    responder_id: 'bob',
    rekey_threshold: REKEY_THRESHOLD,
    prologue: toHex(prologue),
    initiator: x25519Json(noiseKeys.iStatic, noiseKeys.iEph),
    responder: x25519Json(noiseKeys.rStatic, noiseKeys.rEph),
    steps: [frameJson(base, f1, new Uint8Array(0)), frameJson(base, f2, p2), frameJson(base, f3, p3)],
    bindings: {
      responder: { layout: toHex(bindingR), signature: toHex(base.ed25519.sign(bindingR, bob.pair.secretKey)) },
      initiator: { layout: toHex(bindingI), signature: toHex(base.ed25519.sign(bindingI, alice.pair.secretKey)) },
    },
    handshake_hash: toHex(aliceSession.handshakeHash),
    transport: {
      initiator_to_responder: i2r.map((k, epoch) => epochJson(base, epoch, k)),
      responder_to_initiator: r2i.map((k, epoch) => epochJson(base, epoch, k)),
    },
  };

  // ---- handshake rejections (§5.1, §5.3, §5.4) -----------------------------
  const withEphemeral = (ephemeral: X25519KeyPair): ParleyCrypto => {
    const p = new PlannedCrypto(base);
    p.planX25519(ephemeral);
    return p.crypto;
  };
  const hsAgent = (a: Agent) => ({ name: a.identity.agentId, identity: a.identity, pair: a.key.pair });
  const handshakeNegatives = handshakeRejections({
    crypto: base,
    withEphemeral,
    trustBundle,
    sessionId,
    rekeyThreshold: REKEY_THRESHOLD,
    nowMs: NOW_MS,
    initiator: hsAgent(aliceAgent),
    responder: hsAgent(bobAgent),
    noise: noiseKeys,
    frames: [f1, f2, f3],
    certs: {
      responderExpired: bobExpired,
      responderNotYetValid: bobNotYetValid,
      responderByRogue: bobByRogue,
      initiatorExpired: aliceExpired,
      initiatorByRogue: rogueCert,
      other: carolCert,
      otherPair: carol.pair,
    },
    derive: (l, n) => derive(base, l, n),
  });

  // ---- messages: one per MessageType, alternating directions ---------------
  const messages: Json[] = [];
  const sealed: { name: string; envelope: SecureMessage; hash: Uint8Array; payload: Uint8Array; salt: Uint8Array; from: Agent }[] = [];
  let previousHash: Uint8Array | undefined;
  MESSAGE_PLAN.forEach((m, i) => {
    const fromAlice = i % 2 === 0;
    const [from, session, keys] = fromAlice ? [aliceAgent, aliceSession, i2r] : [bobAgent, bobSession, r2i];
    const salt = derive(base, `salt/${m.name}`);
    clockMs = BASE_MS + 1000 * (i + 1);
    planned.plan(salt);
    const handoff = m.type === MessageType.HANDOFF_APPROVAL ? sealed[0]!.hash : undefined;
    const out = (session as Session).seal({
      type: m.type,
      content: m.content as never,
      ...(handoff === undefined ? {} : { handoffHash: handoff }),
      ...(previousHash === undefined || handoff !== undefined ? {} : { parentMessageHash: previousHash }),
    });
    const e = out.envelope;
    const epoch = Math.floor(Number(e.nonce) / REKEY_THRESHOLD);
    const raw = rawSeal(base, {
      header: { version: 1, senderId: e.senderId, recipientId: e.recipientId, sessionId: e.sessionId, nonce: e.nonce, timestampMs: e.timestampMs },
      payload: out.disclosure.payload,
      salt,
      key: keys[epoch]!.key,
      hmacKey: keys[epoch]!.hmacKey,
      signer: from.key.pair.secretKey,
    });
    same(toBinary(SecureMessageSchema, raw.envelope), toBinary(SecureMessageSchema, e), `message ${m.name}`);
    const p = raw.parts;
    messages.push({
      name: m.name,
      type: `MESSAGE_TYPE_${MessageType[m.type]}`,
      type_value: m.type,
      direction: fromAlice ? 'initiator_to_responder' : 'responder_to_initiator',
      sender_id: e.senderId,
      recipient_id: e.recipientId,
      session_id: toHex(e.sessionId),
      nonce: Number(e.nonce),
      epoch,
      timestamp_ms: Number(e.timestampMs),
      content: m.content,
      payload: toHex(out.disclosure.payload),
      salt: toHex(salt),
      commitment: toHex(p['commitment']!),
      ad: toHex(p['ad']!),
      encrypted_payload: toHex(p['encryptedPayload']!),
      mac_input: toHex(p['macInput']!),
      auth_tag: toHex(p['authTag']!),
      signed: toHex(p['signed']!),
      signature: toHex(p['signature']!),
      message_hash: toHex(out.messageHash),
      envelope: toHex(toBinary(SecureMessageSchema, e)),
    });
    sealed.push({ name: m.name, envelope: e, hash: out.messageHash, payload: out.disclosure.payload, salt, from });
    previousHash = out.messageHash;
  });

  // ---- rejections (receiver: bob, the responder, for alice's messages) -----
  const first = sealed[0]!;
  const firstHeader = {
    version: 1,
    senderId: 'alice',
    recipientId: 'bob',
    sessionId,
    nonce: 4n, // alice's next unused counter (epoch 2)
    timestampMs: BigInt(NOW_MS - 5000),
  };
  // k(0) … k(8191) of alice → bob: the window and epochs-ahead vectors reach epoch 8191.
  const chain = epochKeys(base, i2r[0]!.key, 8192);
  const k2 = chain[2]!;
  const fresh = (
    over: Partial<typeof firstHeader>,
    extra: { corrupt?: 'ciphertext' | 'tag'; payloadCommitment?: Uint8Array; signer?: SecretKey; payload?: Uint8Array } = {},
  ): SecureMessage => {
    const header = { ...firstHeader, ...over };
    const payload = extra.payload ?? payloadWithTimestamp(first.payload, header.timestampMs);
    // The epoch key of the counter; a counter beyond the chain is refused before any key is used.
    const ek = chain[Number(header.nonce / BigInt(REKEY_THRESHOLD))] ?? k2;
    return rawSeal(base, {
      header: { ...header, ...(extra.payloadCommitment === undefined ? {} : { payloadCommitment: extra.payloadCommitment }) },
      payload,
      salt: derive(base, 'salt/rejection'),
      key: ek.key,
      hmacKey: ek.hmacKey,
      signer: extra.signer ?? alice.pair.secretKey,
      ...(extra.corrupt === undefined ? {} : { corrupt: extra.corrupt }),
    }).envelope;
  };
  const flip = (e: SecureMessage, field: 'timestampMs' | 'signature'): SecureMessage =>
    field === 'timestampMs'
      ? create(SecureMessageSchema, { ...e, timestampMs: e.timestampMs + 1n })
      : create(SecureMessageSchema, { ...e, signature: Uint8Array.from(e.signature, (b, i) => (i === 0 ? b ^ 1 : b)) });
  /** The rejections added for issue 14: every §8.1 step-1 shape code, window and epoch edges, payload rules, revocation. */
  const moreMessageRejections = (): Rejection[] => {
    const at = (nonce: number, tsOffsetMs = 0): SecureMessage => fresh({ nonce: BigInt(nonce), timestampMs: BigInt(NOW_MS - 5000 + tsOffsetMs) });
    const ok4 = fresh({});
    const mut = (over: Partial<SecureMessage>): SecureMessage => create(SecureMessageSchema, { ...ok4, ...over });
    const ts = BigInt(NOW_MS - 5000);
    const payload = (over: Record<string, unknown>): Uint8Array =>
      toBinary(MessagePayloadSchema, create(MessagePayloadSchema, { ...fromBinary(MessagePayloadSchema, payloadWithTimestamp(first.payload, ts)), ...over }));
    const withUnknownField = new Uint8Array([...payloadWithTimestamp(first.payload, ts), 0x98, 0x06, 0x01]); // field 99, varint 1
    const c8190 = at(8190);
    const c8000 = at(8000);
    const aliceUntil = Number(aliceCert.validUntilMs);
    const r = (name: string, envelope: SecureMessage, expect: string, more: Partial<Rejection> = {}): Rejection => ({
      name,
      receiver: 'responder',
      accept_first: [],
      envelope,
      expect,
      ...more,
    });
    return [
      // §8.1 step 1, every shape rule and its code, then the order between rules
      r('version_0', mut({ version: 0 }), 'unsupported_version'),
      r('sender_id_invalid', mut({ senderId: 'Alice' }), 'malformed'),
      r('recipient_id_empty', mut({ recipientId: '' }), 'malformed'),
      r('session_id_15_bytes', mut({ sessionId: sessionId.slice(0, 15) }), 'malformed'),
      r('nonce_2p53', mut({ nonce: 1n << 53n }), 'nonce_exhausted'),
      r('nonce_2p64_minus_1', mut({ nonce: (1n << 64n) - 1n }), 'nonce_exhausted'),
      r('timestamp_negative', mut({ timestampMs: -1n }), 'malformed'),
      r('timestamp_2p53', mut({ timestampMs: 1n << 53n }), 'malformed'),
      r('payload_commitment_31_bytes', mut({ payloadCommitment: ok4.payloadCommitment.slice(0, 31) }), 'malformed'),
      r('encrypted_payload_too_large', mut({ encryptedPayload: new Uint8Array(32 + 1_048_576 + 16 + 1) }), 'too_large'),
      r('encrypted_payload_47_bytes', mut({ encryptedPayload: ok4.encryptedPayload.slice(0, 47) }), 'malformed'),
      r('encrypted_payload_empty', mut({ encryptedPayload: new Uint8Array(0) }), 'malformed'),
      r('auth_tag_31_bytes', mut({ authTag: ok4.authTag.slice(0, 31) }), 'malformed'),
      r('auth_tag_33_bytes', mut({ authTag: new Uint8Array([...ok4.authTag, 0]) }), 'malformed'),
      r('signature_63_bytes', mut({ signature: ok4.signature.slice(0, 63) }), 'malformed'),
      r('signature_empty', mut({ signature: new Uint8Array(0) }), 'malformed'),
      r('version_2_and_sender_id_invalid', mut({ version: 2, senderId: 'Alice' }), 'unsupported_version'),
      r('sender_id_invalid_and_nonce_2p53', mut({ senderId: 'Alice', nonce: 1n << 53n }), 'malformed'),
      r('nonce_2p53_and_timestamp_negative', mut({ nonce: 1n << 53n, timestampMs: -1n }), 'nonce_exhausted'),
      r('sender_is_recipient', fresh({ senderId: 'bob' }), 'identity_mismatch'),
      r('unknown_session_and_bad_signature', mut({ sessionId: derive(base, 'other-session', 16), signature: new Uint8Array(64) }), 'unknown_session'),
      // §8.3 timestamp bounds are inclusive
      r('timestamp_exactly_max_age', fresh({ timestampMs: BigInt(NOW_MS - 3_600_000) }), 'ok'),
      r('timestamp_exactly_max_future', fresh({ timestampMs: BigInt(NOW_MS + 60_000) }), 'ok'),
      // §8.2 replay window (8160 counters) and §7 epochs derived ahead (4096)
      r('window_next_after_highest', at(8191), 'ok', { accept_first_envelopes: [c8190] }),
      r('window_highest_again_new_content', at(8190, 1000), 'replay', { accept_first_envelopes: [c8190] }),
      r('window_left_edge', at(31), 'ok', { accept_first_envelopes: [c8190] }),
      r('window_just_outside_left_edge', at(30), 'replay', { accept_first_envelopes: [c8190] }),
      r('window_inside_seen_new_content', at(8000, 1000), 'replay', { accept_first_envelopes: [c8190, c8000] }),
      r('window_inside_unseen', at(7999), 'ok', { accept_first_envelopes: [c8190, c8000] }),
      r('epoch_4096_ahead', at(2 * 4096), 'ok'),
      r('epoch_4097_ahead', at(2 * 4097), 'replay'),
      r('epoch_4096_ahead_of_newest', at(2 * (4095 + 4096)), 'ok', { accept_first_envelopes: [c8190] }),
      r('epoch_4097_ahead_of_newest', at(2 * (4095 + 4097)), 'replay', { accept_first_envelopes: [c8190] }),
      r('nonce_2p53_minus_1_is_too_far_ahead', fresh({ nonce: (1n << 53n) - 1n }), 'replay'),
      // §6.2 payload rules (after decryption)
      r('payload_without_content', fresh({}, { payload: toBinary(MessagePayloadSchema, create(MessagePayloadSchema, { type: MessageType.STATUS_UPDATE, timestampMs: ts })) }), 'ok'),
      r('payload_with_unknown_field', fresh({}, { payload: withUnknownField }), 'ok'),
      r('payload_empty', fresh({}, { payload: new Uint8Array(0) }), 'malformed'),
      r('payload_not_protobuf', fresh({}, { payload: new Uint8Array([0xff, 0xff, 0xff]) }), 'malformed'),
      r('payload_type_unspecified', fresh({}, { payload: payload({ type: MessageType.UNSPECIFIED }) }), 'malformed'),
      r('payload_type_undefined', fresh({}, { payload: payload({ type: 99 }) }), 'malformed'),
      r('payload_timestamp_differs', fresh({}, { payload: payload({ timestampMs: ts + 1n }) }), 'malformed'),
      r('payload_handoff_hash_31_bytes', fresh({}, { payload: payload({ handoffHash: new Uint8Array(31) }) }), 'malformed'),
      r('payload_parent_hash_33_bytes', fresh({}, { payload: payload({ parentMessageHash: new Uint8Array(33) }) }), 'malformed'),
      // §8.1 step 2: the peer's certificate is re-checked on every message
      r('peer_revoked_by_agent_id', fresh({}), 'revoked', { revoked: { agent_ids: ['alice'], serials: [] } }),
      r('peer_revoked_by_serial', fresh({}), 'revoked', { revoked: { agent_ids: [], serials: [toHex(aliceCert.serial)] } }),
      r('another_agent_revoked', fresh({}), 'ok', { revoked: { agent_ids: ['mallory'], serials: [toHex(derive(base, 'serial/not-alice', 16))] } }),
      r('peer_revoked_and_bad_signature', mut({ signature: new Uint8Array(64) }), 'revoked', { revoked: { agent_ids: ['alice'], serials: [] } }),
      r('peer_certificate_valid_until_minus_1', fresh({ timestampMs: BigInt(aliceUntil - 5000) }), 'ok', { open_at_ms: aliceUntil - 1 }),
      r('peer_certificate_expired', fresh({ timestampMs: BigInt(aliceUntil - 5000) }), 'expired', { open_at_ms: aliceUntil }),
    ];
  };
  interface Rejection {
    name: string;
    receiver: 'responder' | 'initiator';
    accept_first: string[];
    envelope: SecureMessage;
    expect: string;
    /** Envelopes opened (and accepted) after accept_first, before `envelope`. */
    accept_first_envelopes?: SecureMessage[];
    /** The receiver's revocation data when it opens `envelope` (the handshake and accept_first ran with none). */
    revoked?: RevokedJson;
    /** The receiver's clock when it opens `envelope` (default now_ms). */
    open_at_ms?: number;
  }
  const rejections: Rejection[] = [
    { name: 'valid_fresh_message', receiver: 'responder', accept_first: [], envelope: fresh({}), expect: 'ok' },
    { name: 'header_changed_after_signing', receiver: 'responder', accept_first: [], envelope: flip(first.envelope, 'timestampMs'), expect: 'bad_signature' },
    { name: 'signature_bit_flipped', receiver: 'responder', accept_first: [], envelope: flip(first.envelope, 'signature'), expect: 'bad_signature' },
    { name: 'signed_by_another_agent', receiver: 'responder', accept_first: [], envelope: fresh({}, { signer: bob.pair.secretKey }), expect: 'bad_signature' },
    { name: 'replayed_envelope', receiver: 'responder', accept_first: ['handoff_request'], envelope: first.envelope, expect: 'replay' },
    { name: 'bad_auth_tag', receiver: 'responder', accept_first: [], envelope: fresh({}, { corrupt: 'tag' }), expect: 'bad_tag' },
    { name: 'ciphertext_corrupted_then_maced_and_signed', receiver: 'responder', accept_first: [], envelope: fresh({}, { corrupt: 'ciphertext' }), expect: 'decrypt_failed' },
    {
      name: 'commitment_does_not_match_payload',
      receiver: 'responder',
      accept_first: [],
      envelope: fresh({}, { payloadCommitment: derive(base, 'wrong-commitment') }),
      expect: 'bad_commitment',
    },
    { name: 'stale_timestamp', receiver: 'responder', accept_first: [], envelope: fresh({ timestampMs: BigInt(NOW_MS - 3_600_001) }), expect: 'stale_timestamp' },
    { name: 'future_timestamp', receiver: 'responder', accept_first: [], envelope: fresh({ timestampMs: BigInt(NOW_MS + 60_001) }), expect: 'future_timestamp' },
    { name: 'unsupported_version', receiver: 'responder', accept_first: [], envelope: fresh({ version: 2 }), expect: 'unsupported_version' },
    { name: 'unknown_session', receiver: 'responder', accept_first: [], envelope: fresh({ sessionId: derive(base, 'other-session', 16) }), expect: 'unknown_session' },
    { name: 'addressed_to_another_agent', receiver: 'responder', accept_first: [], envelope: fresh({ recipientId: 'carol' }), expect: 'identity_mismatch' },
    { name: 'reflected_to_its_sender', receiver: 'initiator', accept_first: [], envelope: first.envelope, expect: 'identity_mismatch' },
    ...moreMessageRejections(),
  ];
  // Check every expectation with the production Session on a fresh receiver.
  for (const r of rejections) {
    const revocations = new StaticRevocations();
    clockMs = BASE_MS;
    planned.planX25519(noiseKeys.iEph);
    const again = InitiatorHandshake.start(crypto, config(aliceAgent, noiseKeys.iStatic, revocations), 'bob', sessionId);
    planned.planX25519(noiseKeys.rEph);
    const resp = ResponderHandshake.accept(crypto, config(bobAgent, noiseKeys.rStatic, revocations), again.frame);
    const done = again.handshake.receive(resp.frame);
    const receiver = r.receiver === 'responder' ? resp.handshake.receive(done.frame) : done.session;
    clockMs = NOW_MS;
    for (const name of r.accept_first) receiver.open(sealed.find((s) => s.name === name)!.envelope);
    for (const e of r.accept_first_envelopes ?? []) receiver.open(e);
    revocations.set(r.revoked ?? NOTHING_REVOKED);
    clockMs = r.open_at_ms ?? NOW_MS;
    let got = 'ok';
    try {
      receiver.open(r.envelope);
    } catch (e) {
      got = (e as { code: string }).code;
    }
    if (got !== r.expect) throw new Error(`conformance: rejection ${r.name}: expected ${r.expect}, the implementation said ${got}`);
  }

  // ---- disclosures (proof of origin, §6.5) ---------------------------------
  const disclosures: Json[] = [
    { name: 'valid', envelope: toHex(toBinary(SecureMessageSchema, first.envelope)), certificate: toHex(encodeCertificate(aliceCert)), payload: toHex(first.payload), salt: toHex(first.salt), expect: 'ok' },
    { name: 'wrong_salt', envelope: toHex(toBinary(SecureMessageSchema, first.envelope)), certificate: toHex(encodeCertificate(aliceCert)), payload: toHex(first.payload), salt: toHex(derive(base, 'wrong-salt')), expect: 'bad_commitment' },
    { name: 'other_payload', envelope: toHex(toBinary(SecureMessageSchema, first.envelope)), certificate: toHex(encodeCertificate(aliceCert)), payload: toHex(sealed[2]!.payload), salt: toHex(first.salt), expect: 'bad_commitment' },
    { name: 'certificate_of_another_agent', envelope: toHex(toBinary(SecureMessageSchema, first.envelope)), certificate: toHex(encodeCertificate(bobCert)), payload: toHex(first.payload), salt: toHex(first.salt), expect: 'identity_mismatch' },
  ];

  // ---- receipts (§10.5) -----------------------------------------------------
  const receipts: Json[] = [
    [sealed[0]!, bobAgent, NOW_MS - 59_000],
    [sealed[1]!, aliceAgent, NOW_MS - 58_000],
  ].map(([s, signer, at], i) => {
    const msg = s as (typeof sealed)[number];
    const a = signer as Agent;
    const r = signReceipt(base, a.identity, { messageHash: msg.hash, senderId: msg.from.identity.agentId, receivedAtMs: at as number });
    const lay = deliveryReceiptLayout(r);
    return {
      name: i === 0 ? 'bob_received_handoff_request' : 'alice_received_handoff_approval',
      version: r.version,
      message_hash: toHex(r.messageHash),
      sender_id: r.senderId,
      recipient_id: r.recipientId,
      received_at_ms: Number(r.receivedAtMs),
      layout: toHex(lay),
      signature: toHex(r.signature),
      digest: toHex(base.blake3(lay)),
      encoded: toHex(toBinary(DeliveryReceiptSchema, r)),
      signer: a.key.name,
    };
  });

  // ---- session rejects (§17): bob refuses alice's envelope of a session it does not hold ----
  const sessionRejects: Json[] = [[rejections.find((x) => x.name === 'unknown_session')!.envelope, NOW_MS - 4000]].map(([env, at]) => {
    const e = env as SecureMessage;
    const fields = {
      version: 1,
      sessionId: e.sessionId,
      messageHash: base.blake3(envelopeSignedBytes(base, e, e.encryptedPayload, e.authTag)),
      senderId: e.senderId,
      recipientId: e.recipientId,
      rejectedAtMs: BigInt(at as number),
    };
    const lay = layout('parley/v1/session-reject')
      .u32(fields.version)
      .fixed(fields.sessionId, 16)
      .fixed(fields.messageHash, 32)
      .str(fields.senderId)
      .str(fields.recipientId)
      .i64(fields.rejectedAtMs)
      .bytes();
    const signature = base.ed25519.sign(lay, bob.pair.secretKey);
    return {
      name: 'bob_rejects_envelope_of_unknown_session',
      version: fields.version,
      session_id: toHex(fields.sessionId),
      message_hash: toHex(fields.messageHash),
      sender_id: fields.senderId,
      recipient_id: fields.recipientId,
      rejected_at_ms: Number(fields.rejectedAtMs),
      layout: toHex(lay),
      digest: toHex(base.blake3(lay)),
      signature: toHex(signature),
      encoded: toHex(toBinary(SessionRejectSchema, create(SessionRejectSchema, { ...fields, signature }))),
      signer: 'bob',
    };
  });

  // ---- gateway layouts (§10.2, §10.6) -------------------------------------
  const gwNonce = derive(base, 'gateway/challenge-nonce');
  const authLayout = gatewayAuthLayout(GATEWAY_ID, gwNonce, 'alice', aliceCert.serial);
  const sendNonce = derive(base, 'gateway/send-nonce', 16);
  const sendLayout = gatewaySendLayout(GATEWAY_ID, BigInt(NOW_MS), sendNonce, first.hash);
  const gatewayAuth: Json[] = [
    { gateway_id: GATEWAY_ID, nonce: toHex(gwNonce), agent_id: 'alice', serial: toHex(aliceCert.serial), layout: toHex(authLayout), signature: toHex(base.ed25519.sign(authLayout, alice.pair.secretKey)), signer: 'alice' },
  ];
  const gatewaySend: Json[] = [
    { gateway_id: GATEWAY_ID, timestamp_ms: NOW_MS, nonce: toHex(sendNonce), item_digest: toHex(first.hash), layout: toHex(sendLayout), signature: toHex(base.ed25519.sign(sendLayout, alice.pair.secretKey)), signer: 'alice' },
  ];

  // ---- audit trail (§9) -----------------------------------------------------
  const hasher = merkleHasher(base);
  const tree = new MerkleTree(hasher);
  const signerKeyId = writerKeyId(base, gatewayKey.pair.publicKey);
  let prev = ZERO_HASH;
  const entries: Json[] = [];
  sealed.slice(0, 7).forEach((s, i) => {
    const entry = signEntry(base, gatewayKey.pair, {
      index: i,
      messageHash: s.hash,
      senderId: s.envelope.senderId,
      recipientId: s.envelope.recipientId,
      timestampMs: BASE_MS + 1000 * (i + 1) + 7,
      messageType: i === 6 ? MessageType.SECURITY_ALERT : MessageType.UNSPECIFIED,
      outcome: i % 3 === 2 ? 'queued' : i === 5 ? 'rejected:policy_denied' : 'delivered',
      previousHash: prev,
    });
    const lh = leafHash(base, entry);
    tree.append(lh);
    const eh = entryHash(base, entry);
    entries.push({
      index: Number(entry.index),
      message_hash: toHex(entry.messageHash),
      sender_id: entry.senderId,
      recipient_id: entry.recipientId,
      timestamp_ms: Number(entry.timestampMs),
      message_type: entry.messageType,
      outcome: entry.outcome,
      previous_hash: toHex(entry.previousHash),
      signer_key_id: toHex(entry.signerKeyId),
      layout: toHex(entryLayout(entry)),
      signature: toHex(entry.signature),
      entry_hash: toHex(eh),
      leaf_hash: toHex(lh),
      encoded: toHex(encodeEntry(entry)),
    });
    prev = eh;
  });
  same(signerKeyId, gatewayKey.keyId, 'audit writer key id');
  const inclusion = [
    [0, 7],
    [6, 7],
    [3, 5],
    [0, 1],
  ].map(([leaf, size]) => {
    const proof = tree.inclusionProof(leaf!, size!);
    return { leaf_index: leaf!, tree_size: size!, path: proof.path.map(toHex), root: toHex(tree.root(size!)) };
  });
  const consistency = [
    [3, 7],
    [4, 7],
    [1, 7],
    [6, 7],
  ].map(([a, b]) => {
    const proof = tree.consistencyProof(a!, b!);
    return { first: a!, second: b!, path: proof.path.map(toHex), first_root: toHex(tree.root(a!)), second_root: toHex(tree.root(b!)) };
  });
  const heads = [7, 3].map((size) => {
    const head = signTreeHead(base, gatewayKey.pair, { treeSize: size, rootHash: tree.root(size), timestampMs: NOW_MS });
    return {
      tree_size: size,
      root: toHex(head.rootHash),
      timestamp_ms: Number(head.timestampMs),
      signer_key_id: toHex(head.signerKeyId),
      layout: toHex(layout('parley/v1/tree-head').u64(size).fixed(head.rootHash, 32).i64(head.timestampMs).fixed(head.signerKeyId, 16).bytes()),
      signature: toHex(head.signature),
    };
  });
  for (const h of heads) {
    if (!base.ed25519.verify(Uint8Array.from(Buffer.from(h.signature, 'hex')), Uint8Array.from(Buffer.from(h.layout, 'hex')), gatewayKey.pair.publicKey)) {
      throw new Error('conformance: tree head layout does not match what the audit package signs');
    }
  }
  // ---- revocation list (§15.6) ----------------------------------------------
  const registryId = derive(base, 'registry-id', 16);
  const revoked: RevocationEntryFields[] = [
    { version: 1, kind: 'agent', agentId: 'mallory', serial: new Uint8Array(0), reason: 1, reasonText: 'key on a stolen laptop', revokedAtMs: BASE_MS - 3_600_000 },
    { version: 2, kind: 'serial', agentId: '', serial: derive(base, 'serial/bob/superseded', 16), reason: 2, reasonText: '', revokedAtMs: BASE_MS - 1_800_000 },
    { version: 3, kind: 'agent', agentId: 'retired-worker', serial: new Uint8Array(0), reason: 3, reasonText: 'décommissionné ✓', revokedAtMs: BASE_MS - 60_000 },
  ];
  let chainHash: Uint8Array = new Uint8Array(32);
  const revocationEntries: Json[] = revoked.map((r) => {
    const previousHash = chainHash;
    const hashInput = layout('parley/v1/revocation-entry')
      .fixed(registryId, 16)
      .fixed(previousHash, 32)
      .u64(r.version)
      .u8(REVOCATION_KIND[r.kind])
      .str(r.agentId)
      .var(r.serial)
      .u32(r.reason)
      .str(r.reasonText)
      .i64(r.revokedAtMs)
      .bytes();
    chainHash = revocationEntryHash(base, registryId, previousHash, r);
    same(base.blake3(hashInput), chainHash, `revocation entry ${String(r.version)}`);
    return {
      version: Number(r.version),
      kind: r.kind,
      kind_value: REVOCATION_KIND[r.kind],
      agent_id: r.agentId,
      serial: toHex(r.serial),
      reason: r.reason,
      reason_text: r.reasonText,
      revoked_at_ms: Number(r.revokedAtMs),
      previous_hash: toHex(previousHash),
      hash_input: toHex(hashInput),
      entry_hash: toHex(chainHash),
    };
  });
  const headFields = { registryId, version: 3, headHash: chainHash, issuedAtMs: NOW_MS - 1000, issuerKeyId: issuerKey.keyId };
  const headLayout = revocationHeadLayout(headFields);
  const revocations: Json = {
    registry_id: toHex(registryId),
    issuer: 'issuer',
    entries: revocationEntries,
    head: {
      version: 3,
      head_hash: toHex(chainHash),
      issued_at_ms: headFields.issuedAtMs,
      issuer_key_id: toHex(issuerKey.keyId),
      layout: toHex(headLayout),
      signature: toHex(base.ed25519.sign(headLayout, issuerKey.pair.secretKey)),
    },
  };

  // ---- registry requests (§15.3–§15.5) --------------------------------------
  const regChallenge = derive(base, 'registry/challenge/register');
  const regLayout = registrationProofLayout({ registryId, challenge: regChallenge, agentId: 'alice', identityPublicKey: alice.pair.publicKey });
  const rotChallenge = derive(base, 'registry/challenge/rotate');
  const rotFields = { registryId, challenge: rotChallenge, agentId: 'alice', oldPublicKey: alice.pair.publicKey, newPublicKey: aliceNext.pair.publicKey };
  const rotAuth = rotationAuthorisationLayout(rotFields);
  const rotProof = rotationProofLayout(rotFields);
  const revokeRequest = toBinary(
    RevokeAgentRequestSchema,
    create(RevokeAgentRequestSchema, { subject: { case: 'agentId', value: 'mallory' }, reason: 1, reasonText: 'key on a stolen laptop' }),
  );
  const opPath = '/parley.v1.RegistryService/RevokeAgent';
  const opNonce = derive(base, 'registry/operator-nonce', 16);
  planned.plan(opNonce);
  const metadata = signOperatorRequest(crypto, operatorKey.pair, { registryId, path: opPath, body: revokeRequest }, NOW_MS);
  const opLayout = operatorRequestLayout(base, { registryId, path: opPath, body: revokeRequest }, { keyId: operatorKey.keyId, timestampMs: NOW_MS, nonce: opNonce });
  if (!base.ed25519.verify(Buffer.from(metadata[OPERATOR_METADATA_KEYS.signature]!, 'base64url'), opLayout, operatorKey.pair.publicKey)) {
    throw new Error('conformance: operator request signature does not cover the spec layout');
  }
  const registry: Json = {
    registry_id: toHex(registryId),
    registration: [
      {
        agent_id: 'alice',
        challenge: toHex(regChallenge),
        identity_public_key: toHex(alice.pair.publicKey),
        layout: toHex(regLayout),
        signature: toHex(base.ed25519.sign(regLayout, alice.pair.secretKey)),
        signer: 'alice',
      },
    ],
    rotation: [
      {
        agent_id: 'alice',
        challenge: toHex(rotChallenge),
        old_public_key: toHex(alice.pair.publicKey),
        new_public_key: toHex(aliceNext.pair.publicKey),
        authorisation_layout: toHex(rotAuth),
        authorisation_signature: toHex(base.ed25519.sign(rotAuth, alice.pair.secretKey)),
        authorisation_signer: 'alice',
        proof_layout: toHex(rotProof),
        proof_signature: toHex(base.ed25519.sign(rotProof, aliceNext.pair.secretKey)),
        proof_signer: 'alice-next',
      },
    ],
    operator_requests: [
      {
        path: opPath,
        request: toHex(revokeRequest),
        request_digest: toHex(base.blake3(revokeRequest)),
        timestamp_ms: NOW_MS,
        nonce: toHex(opNonce),
        operator_key_id: toHex(operatorKey.keyId),
        layout: toHex(opLayout),
        metadata,
        signer: 'operator',
      },
    ],
  };

  planned.assertDrained();

  return {
    format: 'parley-conformance-vectors',
    version: 1,
    protocol: 'parley/v1',
    generated_by: 'tools/conformance/generate.ts',
    notes: [
      'Normative text: docs/PROTOCOL.md. Byte strings are lowercase hex; integers are JSON numbers below 2^53.',
      'Every seed, key, salt, nonce and id is derived from a label: BLAKE3(str("parley/v1/conformance-input") ‖ str(label) ‖ u32(length)) truncated to length, in the layout notation of §2; they are printed so no implementation needs to derive them.',
      'now_ms is the receivers\' clock for every check; skew limits are the defaults of §8.3 (max_age 1 h, max_future 60 s).',
      'handshake: Noise XX with fixed static and ephemeral keys (never fixed in production); the transport keys are k(e) and mk(e) of §7 for epochs 0..2 in each direction; key_check = ENCRYPT(k(e), 2^64−3, "", 0^32) lets a Noise library that hides key bytes compare k(e) (test-only, §16).',
      'messages: one per MessageType, alternating directions (initiator: alice, responder: bob), rekey_threshold 2, so nonces 2 and 3 use epoch 1. Re-sealing payload with salt under the listed key reproduces envelope byte for byte (Ed25519 signatures are deterministic). content is informative only: google.protobuf.Value encoding is not canonical, so payload is never rebuilt from it.',
      'message_rejections: each runs on a fresh receiver session of this handshake (receiver initiator = alice, responder = bob) that has first accepted the messages in accept_first, at now_ms; expect is the first check of §8.1 that fails, or "ok".',
      'disclosures: §6.5 with the trust bundle above; certificates are checked at the envelope\'s timestamp_ms.',
      'audit: entries 0..6 of a gateway audit log signed by the "gateway" key; proofs are RFC 9162 with BLAKE3 (§9.3).',
      'revocations: a three-entry revocation list of a registry (§15.6): each entry hash chains to the previous one; the head at version 3 is signed by the "issuer" key.',
      'registry: the proofs an agent signs for RegisterAgent (§15.4) and RotateKey (§15.5), and an operator-signed RevokeAgent request (§15.3) with its four metadata entries; request is the exact protobuf bytes sent, and only their BLAKE3 digest is signed.',
      'message_rejections (continued): after accept_first the receiver accepts accept_first_envelopes in order (each must open), then its revocation data becomes revoked (agent ids and hex serials; empty before, so the handshake passed) and its clock open_at_ms, and it opens envelope.',
      'certificate_checks: revoked is the verifier\'s revocation data (§3.3 step 6), always fresh; a certificate is decoded (§3.2: at most 4096 bytes, no unknown fields) and then checked.',
      'trust_bundle_checks: json is the exact text a verifier parses (§3.3); certificate_expect, present when it parses, is the certificate "alice" checked under that bundle at now_ms with no expected agent id.',
      'handshake_rejections: the receiver uses the fixed Noise keys of handshake and the clock now_ms; the responder at step 1 receives frame as a step 1; the initiator at step 2 has sent handshake.steps[0] and receives frame; the responder at step 3 has received steps[0], sent steps[1] and receives frame. revoked is its revocation data. expect is the first failing check of §5.1, §5.3 or §5.4, or "ok".',
      'session_rejects: the §17 layout bob signs to refuse alice\'s envelope of message_rejections/unknown_session, its BLAKE3 digest (the §10.4 item digest) and the encoded SessionReject.',
    ],
    now_ms: NOW_MS,
    keys: Object.fromEntries([issuerKey, rogueKey, alice, aliceNext, bob, gatewayKey, operatorKey, carol].map((k) => [k.name, keyJson(k)])),
    trust_bundle: trustBundle.toJSON() as unknown as Json,
    certificates: [
      certJson(base, 'alice', aliceCert),
      certJson(base, 'bob', bobCert),
      certJson(base, 'alice_by_rogue_issuer', rogueCert),
      certJson(base, 'carol', carolCert),
      certJson(base, 'alice_expired', aliceExpired),
      certJson(base, 'bob_expired', bobExpired),
      certJson(base, 'bob_not_yet_valid', bobNotYetValid),
      certJson(base, 'bob_by_rogue_issuer', bobByRogue),
    ],
    certificate_checks: certChecks,
    handshake,
    messages,
    message_rejections: rejections.map((r) => ({
      name: r.name,
      receiver: r.receiver,
      accept_first: r.accept_first,
      envelope: toHex(toBinary(SecureMessageSchema, r.envelope)),
      expect: r.expect,
      accept_first_envelopes: (r.accept_first_envelopes ?? []).map((e) => toHex(toBinary(SecureMessageSchema, e))),
      revoked: revokedJson(r.revoked ?? NOTHING_REVOKED),
      open_at_ms: r.open_at_ms ?? NOW_MS,
    })),
    disclosures,
    receipts,
    gateway_auth: gatewayAuth,
    gateway_send: gatewaySend,
    audit: {
      writer: 'gateway',
      entries,
      tree_size: 7,
      root: toHex(tree.root(7)),
      inclusion,
      consistency,
      tree_heads: heads,
    },
    revocations,
    registry,
    trust_bundle_checks: trustBundleCases,
    handshake_rejections: handshakeNegatives.map((h) => ({
      name: h.name,
      receiver: h.receiver,
      at_step: h.atStep,
      frame: toHex(h.frame),
      revoked: revokedJson(h.revoked),
      expect: h.expect,
    })),
    session_rejects: sessionRejects,
  };
}

/** The MessagePayload `bytes` with its timestamp_ms replaced (for the hand-built rejection envelopes). */
function payloadWithTimestamp(bytes: Uint8Array, timestampMs: bigint): Uint8Array {
  const p = fromBinary(MessagePayloadSchema, bytes);
  return toBinary(MessagePayloadSchema, create(MessagePayloadSchema, { ...p, timestampMs }));
}

/** The file's text: stable key order, two-space indent, trailing newline. */
export function renderVectors(vectors: Record<string, Json>): string {
  return `${JSON.stringify(vectors, null, 2)}\n`;
}

