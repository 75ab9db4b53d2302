// Negative conformance vectors (docs/PROTOCOL.md §16): the inputs a receiver
// must refuse, each with the exact code it must produce, for the trust bundle
// JSON (§3.3), certificates (§3.2, §3.3) and every handshake check (§5.1,
// §5.3, §5.4). Like vectors.ts, everything is derived from labels and every
// expected code is the one the production code produces: the build stops if
// that differs from the code written here, so the file states what the
// specification says and the TypeScript implementation does, both at once.
import { SecretKey, toBase64Url, toHex, type Ed25519KeyPair, type ParleyCrypto, type X25519KeyPair } from '@parley/crypto-core';
import {
  TrustBundle,
  certificateTbs,
  decodeCertificate,
  issueCertificate,
  keyId,
  verifyCertificate,
  type IssuerKey,
  type RevocationChecker,
} from '@parley/identity';
import {
  AgentCertificateSchema,
  HandshakeFrameSchema,
  HandshakePayloadSchema,
  create,
  toBinary,
  type AgentCertificate,
  type HandshakeFrame,
} from '@parley/proto';
import {
  HandshakeState,
  InitiatorHandshake,
  PARLEY_NOISE_PROTOCOL,
  ResponderHandshake,
  identityBindingBytes,
  noisePrologue,
  parseProtocolName,
  type HandshakeConfig,
  type LocalIdentity,
} from '@parley/session';

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** The `revoked` field of a vector: the agent ids and serials the receiver's revocation data lists. */
export interface RevokedJson {
  agent_ids: string[];
  serials: string[];
}

export const NOTHING_REVOKED: RevokedJson = Object.freeze({ agent_ids: [], serials: [] }) as RevokedJson;

/**
 * A revocation checker over a fixed list, always fresh: what a vector's `revoked` field describes.
 * `set` replaces the list (a checker that learns of a revocation after a handshake).
 */
export class StaticRevocations implements RevocationChecker {
  #agents = new Set<string>();
  #serials = new Set<string>();

  constructor(revoked: RevokedJson = NOTHING_REVOKED) {
    this.set(revoked);
  }

  set(revoked: RevokedJson): void {
    this.#agents = new Set(revoked.agent_ids);
    this.#serials = new Set(revoked.serials);
  }

  check(subject: { agentId: string; serial: Uint8Array }): { revoked: false } | { revoked: true; reason: string; revokedAtMs: number; by: 'agent' | 'serial' } {
    if (this.#agents.has(subject.agentId)) return { revoked: true, reason: 'vector', revokedAtMs: 0, by: 'agent' };
    if (this.#serials.has(toHex(subject.serial))) return { revoked: true, reason: 'vector', revokedAtMs: 0, by: 'serial' };
    return { revoked: false };
  }
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    const c = (e as { code?: unknown }).code;
    if (typeof c !== 'string') throw e;
    return c;
  }
}

function expectCode(group: string, name: string, got: string, want: string): void {
  if (got !== want) throw new Error(`conformance: ${group} ${name}: the specification says ${want}, the implementation said ${got}`);
}

// ---------------------------------------------------------------------------
// Trust bundle JSON (§3.3)

export interface TrustBundleInputs {
  readonly crypto: ParleyCrypto;
  readonly issuer: { publicKey: Uint8Array; keyId: Uint8Array };
  readonly other: { publicKey: Uint8Array; keyId: Uint8Array };
  /** Distinct public keys for the too-many-issuers case. */
  readonly manyKeys: Uint8Array[];
  /** A certificate of `issuer`, valid at `nowMs`, checked under the bundles that parse. */
  readonly certificate: AgentCertificate;
  readonly nowMs: number;
}

/**
 * `trust_bundle_checks`: JSON texts a verifier parses (§3.3 "trust bundle JSON") → `ok` or the code; for
 * bundles that parse, the certificate `alice` checked under them at now_ms → `certificate_expect`.
 */
export function trustBundleChecks(inp: TrustBundleInputs): Json[] {
  const { crypto } = inp;
  const entry = (k: { publicKey: Uint8Array; keyId: Uint8Array }, extra: Record<string, Json> = {}): Record<string, Json> => ({
    key_id: toHex(k.keyId),
    public_key: toBase64Url(k.publicKey),
    ...extra,
  });
  const doc = (issuers: Json[], extra: Record<string, Json> = {}): string => JSON.stringify({ version: 1, issuers, ...extra });
  const b64 = toBase64Url(inp.issuer.publicKey);
  // A non-canonical base64url of the same key: the last character carries 4 bits, 2 of them padding; set one.
  const last = b64.at(-1)!;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const nonCanonical = b64.slice(0, -1) + alphabet[alphabet.indexOf(last) | 1]!;
  const cases: [string, string, string][] = [
    ['valid', doc([entry(inp.issuer)]), 'ok'],
    ['valid_with_not_after_in_the_future', doc([entry(inp.issuer, { not_after_ms: inp.nowMs + 1 })]), 'ok'],
    ['not_after_now_bounds_the_issuer', doc([entry(inp.issuer, { not_after_ms: inp.nowMs })]), 'ok'],
    ['not_after_zero_is_a_bound', doc([entry(inp.issuer, { not_after_ms: 0 })]), 'ok'],
    ['no_issuers', doc([]), 'ok'],
    ['two_issuers', doc([entry(inp.other), entry(inp.issuer)]), 'ok'],
    ['version_2', JSON.stringify({ version: 2, issuers: [entry(inp.issuer)] }), 'unsupported_version'],
    ['version_missing', JSON.stringify({ issuers: [entry(inp.issuer)] }), 'malformed'],
    ['version_a_string', JSON.stringify({ version: '1', issuers: [entry(inp.issuer)] }), 'malformed'],
    ['issuers_missing', JSON.stringify({ version: 1 }), 'malformed'],
    ['issuers_not_an_array', JSON.stringify({ version: 1, issuers: entry(inp.issuer) }), 'malformed'],
    ['unknown_top_level_key', doc([entry(inp.issuer)], { comment: 'x' }), 'malformed'],
    ['unknown_issuer_key', doc([entry(inp.issuer, { name: 'root' })]), 'malformed'],
    ['issuer_not_an_object', doc([b64]), 'malformed'],
    ['key_id_missing', doc([{ public_key: b64 }]), 'malformed'],
    ['public_key_missing', doc([{ key_id: toHex(inp.issuer.keyId) }]), 'malformed'],
    ['key_id_of_another_key', doc([{ key_id: toHex(inp.other.keyId), public_key: b64 }]), 'malformed'],
    ['key_id_uppercase_hex', doc([{ key_id: toHex(inp.issuer.keyId).toUpperCase(), public_key: b64 }]), 'malformed'],
    ['key_id_15_bytes', doc([{ key_id: toHex(inp.issuer.keyId).slice(0, 30), public_key: b64 }]), 'malformed'],
    ['public_key_padded', doc([{ key_id: toHex(inp.issuer.keyId), public_key: `${b64}=` }]), 'malformed'],
    ['public_key_standard_base64_alphabet', doc([{ key_id: toHex(inp.issuer.keyId), public_key: b64.replaceAll('-', '+').replaceAll('_', '/') }]), 'malformed'],
    ['public_key_noncanonical_trailing_bits', doc([{ key_id: toHex(inp.issuer.keyId), public_key: nonCanonical }]), 'malformed'],
    ['public_key_31_bytes', doc([{ key_id: toHex(inp.issuer.keyId), public_key: toBase64Url(inp.issuer.publicKey.slice(0, 31)) }]), 'malformed'],
    ['not_after_negative', doc([entry(inp.issuer, { not_after_ms: -1 })]), 'malformed'],
    ['not_after_fractional', doc([entry(inp.issuer, { not_after_ms: 1.5 })]), 'malformed'],
    ['not_after_above_2p53', doc([entry(inp.issuer, { not_after_ms: 2 ** 53 })]), 'malformed'],
    ['not_after_null', doc([entry(inp.issuer, { not_after_ms: null })]), 'malformed'],
    ['duplicate_issuer', doc([entry(inp.issuer), entry(inp.issuer)]), 'malformed'],
    ['257_issuers', doc(inp.manyKeys.map((pk) => entry({ publicKey: pk, keyId: keyId(crypto, pk) }))), 'malformed'],
    ['not_json', '{"version": 1, "issuers": [', 'malformed'],
    ['trailing_data_after_the_object', `${doc([entry(inp.issuer)])} {}`, 'malformed'],
    ['top_level_array', JSON.stringify([entry(inp.issuer)]), 'malformed'],
  ];
  if (!b64.includes('-') && !b64.includes('_')) throw new Error('conformance: the issuer key has no base64url-only character; pick another label');
  if (nonCanonical === b64) throw new Error('conformance: non-canonical base64url equals the canonical one');
  if (inp.manyKeys.length !== 257) throw new Error('conformance: 257 keys expected');
  const certExpect: Record<string, string> = {
    valid: 'ok',
    valid_with_not_after_in_the_future: 'ok',
    not_after_now_bounds_the_issuer: 'expired',
    not_after_zero_is_a_bound: 'expired',
    no_issuers: 'unknown_issuer',
    two_issuers: 'ok',
  };
  return cases.map(([name, json, want]) => {
    let bundle: TrustBundle | undefined;
    const got = codeOf(() => {
      bundle = TrustBundle.fromJSON(crypto, json);
    });
    expectCode('trust bundle', name, got, want);
    const out: Record<string, Json> = { name, json, expect: want };
    if (bundle !== undefined) {
      const c = codeOf(() => verifyCertificate(crypto, inp.certificate, { trustBundle: bundle!, nowMs: inp.nowMs }));
      expectCode('trust bundle certificate', name, c, certExpect[name]!);
      out['certificate_expect'] = c;
    }
    return out;
  });
}

// ---------------------------------------------------------------------------
// Certificates (§3.2, §3.3)

/** Encodes a certificate without any check (for malformed vectors). */
function rawCertificate(cert: AgentCertificate): Uint8Array {
  return toBinary(AgentCertificateSchema, cert);
}

/** A protobuf field unknown to v1 appended to an encoded certificate: field 99, varint 1. */
function withUnknownField(bytes: Uint8Array): Uint8Array {
  const tag = [0x98, 0x06, 0x01]; // (99 << 3 | 0) = 792 → varint 0x98 0x06, then value 1
  return new Uint8Array([...bytes, ...tag]);
}

export interface CertificateCheck {
  readonly name: string;
  readonly certificate: Uint8Array;
  readonly expectedAgentId: string | null;
  readonly atMs: number;
  readonly revoked: RevokedJson;
  readonly expect: string;
}

export interface CertificateInputs {
  readonly crypto: ParleyCrypto;
  readonly issuer: IssuerKey;
  readonly trustBundle: TrustBundle;
  /** The valid certificate of `alice` (issued by `issuer`). */
  readonly alice: AgentCertificate;
  readonly aliceExpired: AgentCertificate;
  readonly nowMs: number;
  readonly derive: (label: string, length?: number) => Uint8Array;
}

/** The certificate_checks added by issue 14: revocation, structure (every `malformed` rule), order. */
export function moreCertificateChecks(inp: CertificateInputs): CertificateCheck[] {
  const { crypto, alice, nowMs } = inp;
  const serial = toHex(alice.serial);
  // alice's certificate with one field changed and its signature kept: the structure check (§3.3 step 1)
  // comes before the issuer signature, so only the rule under test can fail.
  const resign = (fields: Partial<AgentCertificate>): AgentCertificate => create(AgentCertificateSchema, { ...alice, ...fields });
  const longCaps = Array.from({ length: 40 }, (_, i) => `cap:${String(i).padStart(2, '0')}:${'x'.repeat(110)}`);
  const big = issueCertificateUnchecked(crypto, inp.issuer, { ...alice, capabilities: longCaps });
  const list: [string, Uint8Array, string | null, RevokedJson, string][] = [
    ['revoked_by_agent_id', rawCertificate(alice), 'alice', { agent_ids: ['alice'], serials: [] }, 'revoked'],
    ['revoked_by_serial', rawCertificate(alice), 'alice', { agent_ids: [], serials: [serial] }, 'revoked'],
    ['another_serial_revoked', rawCertificate(alice), 'alice', { agent_ids: ['mallory'], serials: [toHex(inp.derive('serial/not-alice', 16))] }, 'ok'],
    ['revoked_and_expired_is_expired', rawCertificate(inp.aliceExpired), 'alice', { agent_ids: ['alice'], serials: [] }, 'expired'],
    ['revoked_and_wrong_agent_is_identity_mismatch', rawCertificate(alice), 'bob', { agent_ids: ['alice'], serials: [] }, 'identity_mismatch'],
    ['version_0', rawCertificate(resign({ version: 0 })), 'alice', NOTHING_REVOKED, 'unsupported_version'],
    ['version_2_and_bad_serial_is_unsupported_version', rawCertificate(resign({ version: 2, serial: alice.serial.slice(0, 15) })), 'alice', NOTHING_REVOKED, 'unsupported_version'],
    ['agent_id_uppercase', rawCertificate(resign({ agentId: 'Alice' })), null, NOTHING_REVOKED, 'malformed'],
    ['agent_id_empty', rawCertificate(resign({ agentId: '' })), null, NOTHING_REVOKED, 'malformed'],
    ['agent_id_129_characters', rawCertificate(resign({ agentId: `a${'b'.repeat(128)}` })), null, NOTHING_REVOKED, 'malformed'],
    ['agent_type_invalid', rawCertificate(resign({ agentType: 'Planner' })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['identity_public_key_31_bytes', rawCertificate(resign({ identityPublicKey: alice.identityPublicKey.slice(0, 31) })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['capabilities_not_sorted', rawCertificate(resign({ capabilities: ['task:delegate', 'msg:send'] })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['capabilities_duplicated', rawCertificate(resign({ capabilities: ['msg:send', 'msg:send'] })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['capability_invalid', rawCertificate(resign({ capabilities: ['Msg:send'] })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['capabilities_65', rawCertificate(resign({ capabilities: Array.from({ length: 65 }, (_, i) => `c${String(i).padStart(3, '0')}`) })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['valid_from_equals_valid_until', rawCertificate(resign({ validUntilMs: alice.validFromMs })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['valid_from_negative', rawCertificate(resign({ validFromMs: -1n })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['valid_until_above_2p53_minus_1', rawCertificate(resign({ validUntilMs: 1n << 53n })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['serial_15_bytes', rawCertificate(resign({ serial: alice.serial.slice(0, 15) })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['issuer_key_id_17_bytes', rawCertificate(resign({ issuerKeyId: new Uint8Array([...alice.issuerKeyId, 0]) })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['signature_63_bytes', rawCertificate(resign({ signature: alice.signature.slice(0, 63) })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['signature_missing', rawCertificate(resign({ signature: new Uint8Array(0) })), 'alice', NOTHING_REVOKED, 'malformed'],
    ['unknown_protobuf_field', withUnknownField(rawCertificate(alice)), 'alice', NOTHING_REVOKED, 'malformed'],
    ['encoded_over_4096_bytes', big, null, NOTHING_REVOKED, 'malformed'],
    ['not_protobuf', new Uint8Array([0xff, 0xff, 0xff]), null, NOTHING_REVOKED, 'malformed'],
  ];
  if (big.length <= 4096) throw new Error('conformance: oversized certificate is not oversized');
  return list.map(([name, certificate, expectedAgentId, revoked, want]) => {
    const got = codeOf(() => {
      const decoded = decodeCertificate(certificate);
      verifyCertificate(crypto, decoded, {
        trustBundle: inp.trustBundle,
        nowMs,
        revocations: new StaticRevocations(revoked),
        ...(expectedAgentId === null ? {} : { expectedAgentId }),
      });
    });
    expectCode('certificate check', name, got, want);
    return { name, certificate, expectedAgentId, atMs: nowMs, revoked, expect: want };
  });
}

/** Signs a certificate over its TBS layout without the issuer's size check (for the oversized vector). */
function issueCertificateUnchecked(crypto: ParleyCrypto, issuer: IssuerKey, cert: AgentCertificate): Uint8Array {
  const signed = create(AgentCertificateSchema, { ...cert, signature: crypto.ed25519.sign(certificateTbs(cert), issuer.secretKey) });
  return toBinary(AgentCertificateSchema, signed);
}

// ---------------------------------------------------------------------------
// Handshake (§5)

export interface HandshakeAgent {
  readonly name: string;
  readonly identity: LocalIdentity;
  readonly pair: Ed25519KeyPair;
}

export interface HandshakeInputs {
  readonly crypto: ParleyCrypto;
  /** A crypto for the production handshake code whose one X25519 key generation returns `ephemeral`. */
  readonly withEphemeral: (ephemeral: X25519KeyPair) => ParleyCrypto;
  readonly trustBundle: TrustBundle;
  readonly sessionId: Uint8Array;
  readonly rekeyThreshold: number;
  readonly nowMs: number;
  readonly initiator: HandshakeAgent;
  readonly responder: HandshakeAgent;
  /** Fresh key pairs on every call (the handshake wipes what it is given). */
  readonly noise: { readonly iStatic: X25519KeyPair; readonly iEph: X25519KeyPair; readonly rStatic: X25519KeyPair; readonly rEph: X25519KeyPair };
  /** The three frames of the positive handshake. */
  readonly frames: readonly [HandshakeFrame, HandshakeFrame, HandshakeFrame];
  /** Certificates the negative payloads carry. */
  readonly certs: {
    readonly responderExpired: AgentCertificate;
    readonly responderNotYetValid: AgentCertificate;
    readonly responderByRogue: AgentCertificate;
    readonly initiatorExpired: AgentCertificate;
    readonly initiatorByRogue: AgentCertificate;
    readonly other: AgentCertificate;
    readonly otherPair: Ed25519KeyPair;
  };
  readonly derive: (label: string, length?: number) => Uint8Array;
}

export interface HandshakeRejection {
  readonly name: string;
  /** Who receives `frame`: the responder waiting for step 1 or 3, or the initiator waiting for step 2. */
  readonly receiver: 'responder' | 'initiator';
  readonly atStep: 1 | 2 | 3;
  readonly frame: Uint8Array;
  readonly revoked: RevokedJson;
  readonly expect: string;
}

/** Runs one rejection through the production handshake code, as the checkers do; returns the code. */
export function runHandshakeRejection(
  inp: Pick<HandshakeInputs, 'withEphemeral' | 'trustBundle' | 'sessionId' | 'rekeyThreshold' | 'nowMs' | 'initiator' | 'responder' | 'noise' | 'frames'>,
  r: { receiver: string; atStep: number; frame: HandshakeFrame; revoked: RevokedJson },
): string {
  const config = (a: HandshakeAgent, staticKeyPair: X25519KeyPair): HandshakeConfig => ({
    identity: a.identity,
    trustBundle: inp.trustBundle,
    rekeyThreshold: inp.rekeyThreshold,
    clock: () => inp.nowMs,
    staticKeyPair,
    revocations: new StaticRevocations(r.revoked),
  });
  return codeOf(() => {
    if (r.receiver === 'responder' && r.atStep === 1) {
      ResponderHandshake.accept(inp.withEphemeral(inp.noise.rEph), config(inp.responder, inp.noise.rStatic), r.frame);
    } else if (r.receiver === 'initiator' && r.atStep === 2) {
      const started = InitiatorHandshake.start(inp.withEphemeral(inp.noise.iEph), config(inp.initiator, inp.noise.iStatic), inp.responder.name, inp.sessionId);
      started.handshake.receive(r.frame);
    } else if (r.receiver === 'responder' && r.atStep === 3) {
      const accepted = ResponderHandshake.accept(inp.withEphemeral(inp.noise.rEph), config(inp.responder, inp.noise.rStatic), inp.frames[0]);
      accepted.handshake.receive(r.frame);
    } else {
      throw new Error(`conformance: no handshake receiver ${r.receiver} at step ${r.atStep}`);
    }
  });
}

/** `handshake_rejections`: every §5.1 shape and routing code, every §5.3 identity failure, and Noise failures. */
export function handshakeRejections(inp: HandshakeInputs): HandshakeRejection[] {
  const { crypto, sessionId, rekeyThreshold } = inp;
  const [f1, f2, f3] = inp.frames;
  const I = inp.initiator;
  const R = inp.responder;
  const prologue = noisePrologue(sessionId, I.name, R.name, rekeyThreshold);
  const protocol = parseProtocolName(PARLEY_NOISE_PROTOCOL, crypto);
  const raw = (initiator: boolean, s: X25519KeyPair, e: X25519KeyPair): HandshakeState =>
    new HandshakeState(crypto, { protocol, initiator, prologue, staticKeyPair: s, fixedEphemeralKeyForTestingOnly: e });
  const payload = (cert: AgentCertificate | undefined, signer: SecretKey, agentId: string, role: 1 | 2, staticPub: Uint8Array, sid = sessionId): Uint8Array =>
    toBinary(
      HandshakePayloadSchema,
      create(HandshakePayloadSchema, {
        ...(cert === undefined ? {} : { certificate: cert }),
        identitySignature: crypto.ed25519.sign(identityBindingBytes(sid, agentId, role, staticPub), signer),
      }),
    );
  const rStaticPub = inp.noise.rStatic.publicKey;
  const iStaticPub = inp.noise.iStatic.publicKey;
  const otherStatic = crypto.x25519.keyPairFromSecret(inp.derive('x25519/other-static')).publicKey;
  /** A step-2 Noise message from the responder's fixed keys, carrying `p`. */
  const step2Message = (p: Uint8Array): Uint8Array => {
    const hs = raw(false, inp.noise.rStatic, inp.noise.rEph);
    hs.readMessage(f1.noiseMessage);
    return hs.writeMessage(p).message;
  };
  /** A step-3 Noise message from the initiator's fixed keys (after the positive step 2), carrying `p`. */
  const step3Message = (p: Uint8Array): Uint8Array => {
    const hs = raw(true, inp.noise.iStatic, inp.noise.iEph);
    hs.writeMessage(new Uint8Array(0));
    hs.readMessage(f2.noiseMessage);
    return hs.writeMessage(p).message;
  };
  const step1Message = (p: Uint8Array): Uint8Array => raw(true, inp.noise.iStatic, inp.noise.iEph).writeMessage(p).message;
  const frame = (base: HandshakeFrame, over: Partial<HandshakeFrame>): HandshakeFrame => create(HandshakeFrameSchema, { ...base, ...over });
  const rPay = (cert: AgentCertificate | undefined, over: { signer?: SecretKey; agentId?: string; role?: 1 | 2; staticPub?: Uint8Array; sid?: Uint8Array } = {}): Uint8Array =>
    payload(cert, over.signer ?? R.pair.secretKey, over.agentId ?? R.name, over.role ?? 2, over.staticPub ?? rStaticPub, over.sid);
  const iPay = (cert: AgentCertificate | undefined, over: { signer?: SecretKey; agentId?: string; role?: 1 | 2; staticPub?: Uint8Array; sid?: Uint8Array } = {}): Uint8Array =>
    payload(cert, over.signer ?? I.pair.secretKey, over.agentId ?? I.name, over.role ?? 1, over.staticPub ?? iStaticPub, over.sid);
  const s2 = (p: Uint8Array): HandshakeFrame => frame(f2, { noiseMessage: step2Message(p) });
  const s3 = (p: Uint8Array): HandshakeFrame => frame(f3, { noiseMessage: step3Message(p) });
  const flip = (bytes: Uint8Array, index: number): Uint8Array => Uint8Array.from(bytes, (b, i) => (i === index ? b ^ 1 : b));
  const otherSession = inp.derive('other-session', 16);
  const rCert = R.identity.certificate;
  const iCert = I.identity.certificate;
  const revokedR = (by: 'agent' | 'serial'): RevokedJson => (by === 'agent' ? { agent_ids: [R.name], serials: [] } : { agent_ids: [], serials: [toHex(rCert.serial)] });
  const revokedI = (by: 'agent' | 'serial'): RevokedJson => (by === 'agent' ? { agent_ids: [I.name], serials: [] } : { agent_ids: [], serials: [toHex(iCert.serial)] });
  const notAPayload = new Uint8Array([0xff, 0xff, 0xff]);
  const lowOrderStep2 = new Uint8Array(32 + 48 + 16 + 64); // re = 0 (low order): the ee DH output is all zeros
  const none = NOTHING_REVOKED;

  const list: [string, 'responder' | 'initiator', 1 | 2 | 3, HandshakeFrame, RevokedJson, string][] = [
    // ---- step 1 at the responder: shape (§5.1), addressee, empty payload, Noise
    ['step1_valid', 'responder', 1, f1, none, 'ok'],
    ['step1_version_0', 'responder', 1, frame(f1, { version: 0 }), none, 'unsupported_version'],
    ['step1_version_2', 'responder', 1, frame(f1, { version: 2 }), none, 'unsupported_version'],
    ['step1_version_2_and_short_session_id', 'responder', 1, frame(f1, { version: 2, sessionId: sessionId.slice(0, 15) }), none, 'unsupported_version'],
    ['step1_session_id_15_bytes', 'responder', 1, frame(f1, { sessionId: sessionId.slice(0, 15) }), none, 'malformed'],
    ['step1_session_id_empty', 'responder', 1, frame(f1, { sessionId: new Uint8Array(0) }), none, 'malformed'],
    ['step1_sender_id_invalid', 'responder', 1, frame(f1, { senderId: 'Alice' }), none, 'malformed'],
    ['step1_recipient_id_invalid', 'responder', 1, frame(f1, { recipientId: '' }), none, 'malformed'],
    ['step1_sender_is_recipient', 'responder', 1, frame(f1, { senderId: R.name }), none, 'malformed'],
    ['step1_step_0', 'responder', 1, frame(f1, { step: 0 }), none, 'malformed'],
    ['step1_step_4', 'responder', 1, frame(f1, { step: 4 }), none, 'malformed'],
    ['step1_step_4_and_short_noise_message', 'responder', 1, frame(f1, { step: 4, noiseMessage: f1.noiseMessage.slice(0, 31) }), none, 'malformed'],
    ['step1_frame_of_step_2', 'responder', 1, frame(f1, { step: 2 }), none, 'handshake_failed'],
    ['step1_frame_of_step_3_and_short_noise_message', 'responder', 1, frame(f1, { step: 3, noiseMessage: f1.noiseMessage.slice(0, 31) }), none, 'handshake_failed'],
    ['step1_noise_message_31_bytes', 'responder', 1, frame(f1, { noiseMessage: f1.noiseMessage.slice(0, 31) }), none, 'malformed'],
    ['step1_noise_message_65536_bytes', 'responder', 1, frame(f1, { noiseMessage: new Uint8Array(65_536) }), none, 'malformed'],
    ['step1_rekey_threshold_0', 'responder', 1, frame(f1, { rekeyThreshold: 0 }), none, 'malformed'],
    ['step1_rekey_threshold_1000001', 'responder', 1, frame(f1, { rekeyThreshold: 1_000_001 }), none, 'malformed'],
    ['step1_addressed_to_another_agent', 'responder', 1, frame(f1, { recipientId: 'carol' }), none, 'identity_mismatch'],
    ['step1_payload_not_empty', 'responder', 1, frame(f1, { noiseMessage: step1Message(new Uint8Array([0])) }), none, 'malformed'],
    ['step1_low_order_ephemeral_key', 'responder', 1, frame(f1, { noiseMessage: new Uint8Array(32) }), none, 'handshake_failed'],
    // ---- step 2 at the initiator: shape, routing, Noise, the responder's payload (§5.3)
    ['step2_valid', 'initiator', 2, f2, none, 'ok'],
    ['step2_version_2', 'initiator', 2, frame(f2, { version: 2 }), none, 'unsupported_version'],
    ['step2_sender_id_invalid', 'initiator', 2, frame(f2, { senderId: 'b' + 'o'.repeat(128) }), none, 'malformed'],
    ['step2_step_4', 'initiator', 2, frame(f2, { step: 4 }), none, 'malformed'],
    ['step2_frame_of_step_3', 'initiator', 2, frame(f2, { step: 3 }), none, 'handshake_failed'],
    ['step2_frame_of_step_1', 'initiator', 2, frame(f2, { step: 1 }), none, 'handshake_failed'],
    ['step2_rekey_threshold_0', 'initiator', 2, frame(f2, { rekeyThreshold: 0 }), none, 'malformed'],
    ['step2_other_session', 'initiator', 2, frame(f2, { sessionId: otherSession }), none, 'unknown_session'],
    ['step2_other_session_and_other_sender', 'initiator', 2, frame(f2, { sessionId: otherSession, senderId: 'carol' }), none, 'unknown_session'],
    ['step2_from_another_agent', 'initiator', 2, frame(f2, { senderId: 'carol' }), none, 'identity_mismatch'],
    ['step2_addressed_to_another_agent', 'initiator', 2, frame(f2, { recipientId: 'carol' }), none, 'identity_mismatch'],
    ['step2_rekey_threshold_changed', 'initiator', 2, frame(f2, { rekeyThreshold: rekeyThreshold + 1 }), none, 'malformed'],
    ['step2_noise_ciphertext_bit_flipped', 'initiator', 2, frame(f2, { noiseMessage: flip(f2.noiseMessage, 40) }), none, 'handshake_failed'],
    ['step2_noise_ephemeral_bit_flipped', 'initiator', 2, frame(f2, { noiseMessage: flip(f2.noiseMessage, 0) }), none, 'handshake_failed'],
    ['step2_noise_message_truncated', 'initiator', 2, frame(f2, { noiseMessage: f2.noiseMessage.slice(0, 40) }), none, 'handshake_failed'],
    ['step2_low_order_ephemeral_key', 'initiator', 2, frame(f2, { noiseMessage: lowOrderStep2 }), none, 'handshake_failed'],
    ['step2_payload_empty', 'initiator', 2, s2(new Uint8Array(0)), none, 'malformed'],
    ['step2_payload_not_protobuf', 'initiator', 2, s2(notAPayload), none, 'malformed'],
    ['step2_payload_without_certificate', 'initiator', 2, s2(rPay(undefined)), none, 'malformed'],
    ['step2_identity_signature_63_bytes', 'initiator', 2, s2(toBinary(HandshakePayloadSchema, create(HandshakePayloadSchema, { certificate: rCert, identitySignature: new Uint8Array(63) }))), none, 'malformed'],
    ['step2_certificate_malformed', 'initiator', 2, s2(rPay(create(AgentCertificateSchema, { ...rCert, serial: rCert.serial.slice(0, 15) }))), none, 'malformed'],
    ['step2_certificate_unknown_issuer', 'initiator', 2, s2(rPay(inp.certs.responderByRogue)), none, 'unknown_issuer'],
    ['step2_certificate_tampered', 'initiator', 2, s2(rPay(create(AgentCertificateSchema, { ...rCert, agentType: 'admin' }))), none, 'bad_certificate'],
    ['step2_certificate_expired', 'initiator', 2, s2(rPay(inp.certs.responderExpired)), none, 'expired'],
    ['step2_certificate_not_yet_valid', 'initiator', 2, s2(rPay(inp.certs.responderNotYetValid)), none, 'not_yet_valid'],
    ['step2_certificate_of_another_agent', 'initiator', 2, s2(rPay(inp.certs.other, { signer: inp.certs.otherPair.secretKey })), none, 'identity_mismatch'],
    ['step2_certificate_revoked_by_agent_id', 'initiator', 2, f2, revokedR('agent'), 'revoked'],
    ['step2_certificate_revoked_by_serial', 'initiator', 2, f2, revokedR('serial'), 'revoked'],
    ['step2_binding_over_another_static_key', 'initiator', 2, s2(rPay(rCert, { staticPub: otherStatic })), none, 'bad_binding'],
    ['step2_binding_with_initiator_role', 'initiator', 2, s2(rPay(rCert, { role: 1 })), none, 'bad_binding'],
    ['step2_binding_for_another_session', 'initiator', 2, s2(rPay(rCert, { sid: otherSession })), none, 'bad_binding'],
    ['step2_binding_signed_by_another_key', 'initiator', 2, s2(rPay(rCert, { signer: inp.certs.otherPair.secretKey })), none, 'bad_binding'],
    // ---- step 3 at the responder: routing, Noise, the initiator's payload
    ['step3_valid', 'responder', 3, f3, none, 'ok'],
    ['step3_frame_of_step_2', 'responder', 3, frame(f3, { step: 2 }), none, 'handshake_failed'],
    ['step3_step_0', 'responder', 3, frame(f3, { step: 0 }), none, 'malformed'],
    ['step3_other_session', 'responder', 3, frame(f3, { sessionId: otherSession }), none, 'unknown_session'],
    ['step3_from_another_agent', 'responder', 3, frame(f3, { senderId: 'carol' }), none, 'identity_mismatch'],
    ['step3_rekey_threshold_changed', 'responder', 3, frame(f3, { rekeyThreshold: rekeyThreshold + 1 }), none, 'malformed'],
    ['step3_noise_ciphertext_bit_flipped', 'responder', 3, frame(f3, { noiseMessage: flip(f3.noiseMessage, 10) }), none, 'handshake_failed'],
    ['step3_payload_without_certificate', 'responder', 3, s3(iPay(undefined)), none, 'malformed'],
    ['step3_certificate_unknown_issuer', 'responder', 3, s3(iPay(inp.certs.initiatorByRogue)), none, 'unknown_issuer'],
    ['step3_certificate_expired', 'responder', 3, s3(iPay(inp.certs.initiatorExpired)), none, 'expired'],
    ['step3_certificate_of_another_agent', 'responder', 3, s3(iPay(inp.certs.other, { signer: inp.certs.otherPair.secretKey })), none, 'identity_mismatch'],
    ['step3_certificate_revoked_by_agent_id', 'responder', 3, f3, revokedI('agent'), 'revoked'],
    ['step3_certificate_revoked_by_serial', 'responder', 3, f3, revokedI('serial'), 'revoked'],
    ['step3_binding_over_another_static_key', 'responder', 3, s3(iPay(iCert, { staticPub: otherStatic })), none, 'bad_binding'],
    ['step3_binding_with_responder_role', 'responder', 3, s3(iPay(iCert, { role: 2 })), none, 'bad_binding'],
  ];
  const out: HandshakeRejection[] = [];
  for (const [name, receiver, atStep, f, revoked, want] of list) {
    const got = runHandshakeRejection(inp, { receiver, atStep, frame: f, revoked });
    expectCode('handshake rejection', name, got, want);
    out.push({ name, receiver, atStep, frame: toBinary(HandshakeFrameSchema, f), revoked, expect: want });
  }
  return out;
}

/** The JSON form of a RevokedJson (fresh arrays, so the file never shares objects). */
export function revokedJson(r: RevokedJson): Json {
  return { agent_ids: [...r.agent_ids], serials: [...r.serials] };
}

/** A valid AgentCertificate with overridden validity and serial (for the negative vectors). */
export function certificateVariant(
  crypto: ParleyCrypto,
  issuer: IssuerKey,
  base: AgentCertificate,
  over: { validFromMs?: number; validUntilMs?: number; serial: Uint8Array; agentId?: string; identityPublicKey?: Uint8Array },
): AgentCertificate {
  return issueCertificate(crypto, issuer, {
    agentId: over.agentId ?? base.agentId,
    identityPublicKey: over.identityPublicKey ?? base.identityPublicKey,
    agentType: base.agentType,
    capabilities: [...base.capabilities],
    validFromMs: over.validFromMs ?? Number(base.validFromMs),
    validUntilMs: over.validUntilMs ?? Number(base.validUntilMs),
    serial: over.serial,
  });
}

