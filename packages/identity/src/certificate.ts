/**
 * Agent certificates (DESIGN.md "Identity"; proto/parley/v1/identity.proto;
 * docs/PROTOCOL.md §3.2): issuing, the signed "TBS" byte layout, protobuf
 * encoding, and offline verification against a trust bundle.
 *
 * The issuer signs (Ed25519, RFC 8032) this layout, never the protobuf bytes,
 * so any implementation re-derives exactly the same bytes from the fields:
 *
 *   layout('parley/v1/agent-certificate')
 *     .u32(version)                      // 1
 *     .str(agent_id)
 *     .fixed(identity_public_key, 32)
 *     .str(agent_type)
 *     .list(capabilities)                // canonical order
 *     .i64(valid_from_ms)
 *     .i64(valid_until_ms)
 *     .fixed(serial, 16)
 *     .fixed(issuer_key_id, 16)
 */
import { SecretKey, layout, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { AgentCertificateSchema, create, fromBinary, toBinary, type AgentCertificate } from '@parley/proto';
import {
  asMalformed,
  assertBytes,
  assertCrypto,
  assertMs,
  assertObject,
  assertSafeBigInt,
  assertSafeInt,
  copyBytes,
  describe,
  malformed,
} from './assert.js';
import { toDidKey } from './did-key.js';
import { IdentityError } from './errors.js';
import { KEY_ID_BYTES, PUBLIC_KEY_BYTES, keyId as computeKeyId } from './key-id.js';
import { assertAgentId, assertAgentType, assertCapabilities, normaliseCapabilities } from './names.js';
import type { RevocationChecker, RevocationStatus } from './revocation.js';
import { SERIAL_BYTES, randomSerial } from './serial.js';
import { TrustBundle } from './trust-bundle.js';

/** The certificate format version this implementation issues and accepts. */
export const CERTIFICATE_VERSION = 1;
/** Largest encoded certificate accepted (and issued), in bytes. */
export const MAX_CERTIFICATE_BYTES = 4096;
/** Length of the issuer's Ed25519 signature. */
export const CERTIFICATE_SIGNATURE_BYTES = 64;
/** Domain-separation tag of the certificate TBS layout. */
export const CERTIFICATE_DOMAIN = 'parley/v1/agent-certificate';

/** What the registry signs with. `inspect()` shows the secret key only as `SecretKey(ed25519, 64 bytes)`. */
export interface IssuerKey {
  /** 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** The Ed25519 signing key (64-byte seed‖public key form). */
  readonly secretKey: SecretKey;
  /** 16-byte key id of `publicKey` (see {@link computeKeyId keyId}). */
  readonly keyId: Uint8Array;
}

/** The fields an issuer chooses for a new certificate. */
export interface CertificateFields {
  readonly agentId: string;
  /** The agent's 32-byte Ed25519 identity public key. */
  readonly identityPublicKey: Uint8Array;
  readonly agentType: string;
  /** Any order, duplicates allowed: they are normalised (sorted, de-duplicated). */
  readonly capabilities: Iterable<string>;
  /** Start of validity, ms since the epoch (safe integer, >= 0). */
  readonly validFromMs: number | bigint;
  /** End of validity (exclusive), ms since the epoch; > validFromMs. */
  readonly validUntilMs: number | bigint;
  /** 16 bytes; random when omitted. */
  readonly serial?: Uint8Array;
}

/** Inputs of {@link verifyCertificate}. */
export interface VerifyCertificateOptions {
  /** The pinned issuer keys. */
  readonly trustBundle: TrustBundle;
  /** Current time, ms since the epoch. */
  readonly nowMs: number;
  /** When given, consulted last; may throw `revocation_stale`. */
  readonly revocations?: RevocationChecker;
  /** When given, the certificate must be for this agent. */
  readonly expectedAgentId?: string;
}

/** What a successful verification vouches for. All byte arrays are copies. */
export interface VerifiedCertificate {
  readonly agentId: string;
  readonly identityPublicKey: Uint8Array;
  readonly agentType: string;
  readonly capabilities: readonly string[];
  readonly validFromMs: number;
  readonly validUntilMs: number;
  readonly serial: Uint8Array;
  readonly issuerKeyId: Uint8Array;
  /** `did:key` form of the identity public key. */
  readonly didKey: string;
}

const ISSUER_KEY_CHECK = new TextEncoder().encode('parley/v1/issuer-key-check');

/**
 * Wraps an Ed25519 key pair as an issuer key, computing its key id and
 * checking (by a test signature) that the secret key belongs to the public key.
 *
 * @param crypto the ParleyCrypto instance
 * @param keyPair an Ed25519 key pair from `crypto.ed25519`
 * @returns a frozen IssuerKey (it shares `keyPair.secretKey`; wiping one wipes both)
 * @throws IdentityError `malformed` when the key pair is ill-typed or its halves do not match
 * @example
 * const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
 */
export function createIssuerKey(crypto: ParleyCrypto, keyPair: Ed25519KeyPair): IssuerKey {
  assertCrypto(crypto);
  const kp = assertObject(keyPair, 'keyPair');
  const publicKey = copyBytes(assertBytes(kp['publicKey'], 'keyPair.publicKey', PUBLIC_KEY_BYTES));
  const secretKey = kp['secretKey'];
  if (!(secretKey instanceof SecretKey)) malformed(`keyPair.secretKey must be a SecretKey, got ${describe(secretKey)}`);
  const signature = asMalformed('issuer key check', () => crypto.ed25519.sign(ISSUER_KEY_CHECK, secretKey));
  if (!crypto.ed25519.verify(signature, ISSUER_KEY_CHECK, publicKey)) {
    malformed('keyPair.secretKey does not belong to keyPair.publicKey');
  }
  return Object.freeze({ publicKey, secretKey, keyId: computeKeyId(crypto, publicKey) });
}

/**
 * The certificate TBS ("to be signed") bytes, after validating every field.
 * The signature field is not part of it and not checked here.
 *
 * @param cert an AgentCertificate (int64 fields as bigint, as protobuf-es maps them)
 * @returns the layout bytes the issuer signs
 * @throws IdentityError `unsupported_version` when version is not 1;
 *   `malformed` when any field has a wrong type, length, range or form
 */
export function certificateTbs(cert: AgentCertificate): Uint8Array {
  return tbsOf(checkFields(cert));
}

/**
 * Issues (signs) a certificate.
 *
 * @param crypto the ParleyCrypto instance
 * @param issuer the issuer key (from {@link createIssuerKey})
 * @param fields the certificate contents
 * @returns a signed AgentCertificate, version 1, capabilities in canonical order
 * @throws IdentityError `malformed` when a field or the issuer key is invalid, or the
 *   encoded certificate would exceed {@link MAX_CERTIFICATE_BYTES}
 * @example
 * const cert = issueCertificate(crypto, issuer, {
 *   agentId: 'planner-1', identityPublicKey: agent.publicKey, agentType: 'planner',
 *   capabilities: ['task:delegate'], validFromMs: now, validUntilMs: now + 86_400_000,
 * });
 */
export function issueCertificate(crypto: ParleyCrypto, issuer: IssuerKey, fields: CertificateFields): AgentCertificate {
  assertCrypto(crypto);
  const key = assertObject(issuer, 'issuer');
  const issuerPublicKey = assertBytes(key['publicKey'], 'issuer.publicKey', PUBLIC_KEY_BYTES);
  const issuerKeyId = assertBytes(key['keyId'], 'issuer.keyId', KEY_ID_BYTES);
  const secretKey = key['secretKey'];
  if (!(secretKey instanceof SecretKey)) malformed(`issuer.secretKey must be a SecretKey, got ${describe(secretKey)}`);
  if (!crypto.constantTimeEqual(issuerKeyId, computeKeyId(crypto, issuerPublicKey))) {
    malformed('issuer.keyId does not match keyId(issuer.publicKey)');
  }

  const f = assertObject(fields, 'fields');
  const validFromMs = assertMs(f['validFromMs'], 'validFromMs');
  const validUntilMs = assertMs(f['validUntilMs'], 'validUntilMs');
  const serial = f['serial'] === undefined ? randomSerial(crypto) : copyBytes(assertBytes(f['serial'], 'serial', SERIAL_BYTES));
  const cert = create(AgentCertificateSchema, {
    version: CERTIFICATE_VERSION,
    agentId: assertAgentId(f['agentId']),
    identityPublicKey: copyBytes(assertBytes(f['identityPublicKey'], 'identityPublicKey', PUBLIC_KEY_BYTES)),
    agentType: assertAgentType(f['agentType']),
    capabilities: normaliseCapabilities(f['capabilities'] as Iterable<string>),
    validFromMs: BigInt(validFromMs),
    validUntilMs: BigInt(validUntilMs),
    serial,
    issuerKeyId: copyBytes(issuerKeyId),
  });
  const tbs = certificateTbs(cert); // validates the rest (e.g. validUntilMs > validFromMs)
  cert.signature = asMalformed('certificate signing', () => crypto.ed25519.sign(tbs, secretKey));
  encodeCertificate(cert); // enforces MAX_CERTIFICATE_BYTES at issue time, so every issued certificate decodes
  return cert;
}

/**
 * Protobuf encoding of a certificate, after checking its structure.
 *
 * @param cert the certificate
 * @returns its protobuf bytes (at most {@link MAX_CERTIFICATE_BYTES})
 * @throws IdentityError `unsupported_version`, or `malformed` for a structurally invalid
 *   certificate, one with fields v1 does not define, or one that encodes to more than
 *   {@link MAX_CERTIFICATE_BYTES}
 */
export function encodeCertificate(cert: AgentCertificate): Uint8Array {
  checkFields(cert);
  assertBytes(cert.signature, 'signature', CERTIFICATE_SIGNATURE_BYTES);
  rejectUnknownFields(cert);
  const bytes = asMalformed('certificate encoding', () => toBinary(AgentCertificateSchema, cert));
  if (bytes.length > MAX_CERTIFICATE_BYTES) {
    malformed(`encoded certificate is ${bytes.length} bytes, more than ${MAX_CERTIFICATE_BYTES}`);
  }
  return bytes;
}

/**
 * Parses a certificate's protobuf bytes. Only the wire format is checked here
 * (size, protobuf syntax, no unknown fields); {@link verifyCertificate} checks the rest.
 *
 * @param bytes protobuf encoding of an AgentCertificate
 * @returns the message
 * @throws IdentityError `malformed` when `bytes` is not a Uint8Array, exceeds
 *   {@link MAX_CERTIFICATE_BYTES}, is not valid protobuf, or carries fields v1 does not define
 */
export function decodeCertificate(bytes: Uint8Array): AgentCertificate {
  assertBytes(bytes, 'bytes');
  if (bytes.length > MAX_CERTIFICATE_BYTES) malformed(`certificate is ${bytes.length} bytes, more than ${MAX_CERTIFICATE_BYTES}`);
  const cert = asMalformed('certificate decoding', () => fromBinary(AgentCertificateSchema, bytes));
  rejectUnknownFields(cert);
  return cert;
}

/**
 * Verifies a certificate offline. The checks run in this order, which is
 * normative (this comment and the README are its definition until docs/PROTOCOL.md
 * records it): each failure has its own code, and a
 * later check never runs on data an earlier one rejected.
 *
 *   1. structure and version   → `malformed` / `unsupported_version`
 *      (also: options; version is read first, since other versions may define other fields)
 *   2. issuer key id in the trust bundle → `unknown_issuer`
 *   3. issuer signature over the TBS layout → `bad_certificate`
 *   4. validity at `nowMs`: nowMs < valid_from → `not_yet_valid`; nowMs >= valid_until → `expired`;
 *      the issuer entry's `notAfterMs`, when set: nowMs >= notAfterMs → `expired`
 *   5. `expectedAgentId`, when given, differs from agent_id → `identity_mismatch`
 *   6. revocation (by agent id, then serial) → `revoked`; stale data → `revocation_stale`
 *      (a checker failing in any other way is also `revocation_stale`: fail closed)
 *
 * Nothing about the certificate is trusted before step 3 succeeds; steps 4–6
 * only read signed data.
 *
 * @param crypto the ParleyCrypto instance
 * @param cert the certificate (e.g. from {@link decodeCertificate})
 * @param options trust bundle, current time, optional revocation checker and expected agent id
 * @returns the verified contents, frozen
 * @throws IdentityError with the code of the first failing step (see above)
 */
export function verifyCertificate(
  crypto: ParleyCrypto,
  cert: AgentCertificate,
  options: VerifyCertificateOptions,
): VerifiedCertificate {
  // (1) structure and version (crypto and options first: they are the caller's, not the peer's)
  assertCrypto(crypto);
  const o = assertObject(options, 'options');
  const trustBundle = o['trustBundle'];
  if (!(trustBundle instanceof TrustBundle)) malformed(`options.trustBundle must be a TrustBundle, got ${describe(trustBundle)}`);
  const nowMs = assertSafeInt(o['nowMs'], 'options.nowMs');
  const revocations = o['revocations'];
  if (revocations !== undefined && typeof (revocations as RevocationChecker | null)?.check !== 'function') {
    malformed('options.revocations must have a check(subject, nowMs) method');
  }
  const expectedAgentId = o['expectedAgentId'] === undefined ? undefined : assertAgentId(o['expectedAgentId'], 'options.expectedAgentId');

  const fields = checkFields(cert);
  const signature = assertBytes(cert.signature, 'signature', CERTIFICATE_SIGNATURE_BYTES);
  rejectUnknownFields(cert);
  const tbs = tbsOf(fields);

  // (2) issuer
  const issuer = trustBundle.get(fields.issuerKeyId);
  if (issuer === undefined) throw new IdentityError('unknown_issuer', 'certificate issuer key id is not in the trust bundle');

  // (3) signature
  if (!crypto.ed25519.verify(signature, tbs, issuer.publicKey)) {
    throw new IdentityError('bad_certificate', 'issuer signature does not verify over the certificate');
  }

  // (4) validity
  if (nowMs < fields.validFromMs) throw new IdentityError('not_yet_valid', 'certificate is not valid yet');
  if (nowMs >= fields.validUntilMs) throw new IdentityError('expired', 'certificate has expired');
  if (issuer.notAfterMs !== undefined && nowMs >= issuer.notAfterMs) {
    throw new IdentityError('expired', 'certificate issuer key is past its notAfterMs in the trust bundle');
  }

  // (5) identity
  if (expectedAgentId !== undefined && expectedAgentId !== fields.agentId) {
    throw new IdentityError('identity_mismatch', 'certificate is for another agent than expected');
  }

  // (6) revocation
  if (revocations !== undefined) {
    const status = checkRevocation(revocations as RevocationChecker, fields, nowMs);
    if (status.revoked) throw new IdentityError('revoked', `certificate revoked by ${status.by}`);
  }

  return Object.freeze({
    agentId: fields.agentId,
    identityPublicKey: copyBytes(fields.identityPublicKey),
    agentType: fields.agentType,
    capabilities: Object.freeze([...fields.capabilities]),
    validFromMs: fields.validFromMs,
    validUntilMs: fields.validUntilMs,
    serial: copyBytes(fields.serial),
    issuerKeyId: copyBytes(fields.issuerKeyId),
    didKey: toDidKey(fields.identityPublicKey),
  });
}

// ---------------------------------------------------------------------------

/** The TBS fields after validation: a VerifiedCertificate before its did:key is derived. */
type CheckedFields = Omit<VerifiedCertificate, 'didKey'>;

/** Validates every TBS field (version first), without copying. */
function checkFields(value: unknown): CheckedFields {
  const cert = assertObject(value, 'certificate');
  const version = assertSafeInt(cert['version'], 'version', 0, 0xffff_ffff);
  if (version !== CERTIFICATE_VERSION) {
    throw new IdentityError('unsupported_version', `certificate version ${version} is not supported (expected ${CERTIFICATE_VERSION})`);
  }
  const validFromMs = assertSafeBigInt(cert['validFromMs'], 'validFromMs');
  const validUntilMs = assertSafeBigInt(cert['validUntilMs'], 'validUntilMs');
  if (validUntilMs <= validFromMs) malformed('validUntilMs must be greater than validFromMs');
  return {
    agentId: assertAgentId(cert['agentId']),
    identityPublicKey: assertBytes(cert['identityPublicKey'], 'identityPublicKey', PUBLIC_KEY_BYTES),
    agentType: assertAgentType(cert['agentType']),
    capabilities: assertCapabilities(cert['capabilities']),
    validFromMs,
    validUntilMs,
    serial: assertBytes(cert['serial'], 'serial', SERIAL_BYTES),
    issuerKeyId: assertBytes(cert['issuerKeyId'], 'issuerKeyId', KEY_ID_BYTES),
  };
}

function tbsOf(f: CheckedFields): Uint8Array {
  return asMalformed('certificate TBS layout', () =>
    layout(CERTIFICATE_DOMAIN)
      .u32(CERTIFICATE_VERSION)
      .str(f.agentId)
      .fixed(f.identityPublicKey, PUBLIC_KEY_BYTES, 'identityPublicKey')
      .str(f.agentType)
      .list(f.capabilities)
      .i64(f.validFromMs)
      .i64(f.validUntilMs)
      .fixed(f.serial, SERIAL_BYTES, 'serial')
      .fixed(f.issuerKeyId, KEY_ID_BYTES, 'issuerKeyId')
      .bytes(),
  );
}

/** v1 defines every field a certificate may carry; anything else is unsigned data riding along. */
function rejectUnknownFields(cert: AgentCertificate): void {
  const unknown = (cert as { $unknown?: unknown }).$unknown;
  if (Array.isArray(unknown) && unknown.length > 0) malformed('certificate carries fields that version 1 does not define');
}

function checkRevocation(checker: RevocationChecker, f: CheckedFields, nowMs: number): RevocationStatus {
  let status: unknown;
  try {
    status = checker.check({ agentId: f.agentId, serial: copyBytes(f.serial) }, nowMs);
  } catch (cause) {
    if (cause instanceof IdentityError) throw cause;
    // Fail closed: a checker that cannot answer is treated like stale data.
    throw new IdentityError('revocation_stale', 'revocation checker failed', { cause });
  }
  const revoked = (status as { revoked?: unknown } | null)?.revoked;
  if (revoked !== true && revoked !== false) {
    // Fail closed on an answer that is neither "revoked" nor "not revoked".
    throw new IdentityError('revocation_stale', `revocation checker returned an invalid status (${describe(status)})`);
  }
  return status as RevocationStatus;
}
