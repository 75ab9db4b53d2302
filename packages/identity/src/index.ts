/**
 * @parley/identity — agent certificates, trust bundles, did:key and
 * revocation sets (DESIGN.md "Identity"). All cryptography goes through the
 * ParleyCrypto object the caller passes in; the package holds no global state.
 */

// For users
export { IdentityError, isIdentityError, IDENTITY_ERROR_CODES } from './errors.js';
export type { IdentityErrorCode } from './errors.js';
export {
  CERTIFICATE_VERSION,
  MAX_CERTIFICATE_BYTES,
  createIssuerKey,
  issueCertificate,
  verifyCertificate,
  encodeCertificate,
  decodeCertificate,
} from './certificate.js';
export type { IssuerKey, CertificateFields, VerifyCertificateOptions, VerifiedCertificate } from './certificate.js';
export { assertLocalIdentity } from './local-identity.js';
export type { SigningIdentity } from './local-identity.js';
export { TrustBundle, TRUST_BUNDLE_VERSION, MAX_TRUST_BUNDLE_ISSUERS } from './trust-bundle.js';
export type { TrustBundleEntry, TrustBundleEntryInit, TrustBundleJson, TrustBundleIssuerJson } from './trust-bundle.js';
export {
  TrustBundleChain,
  checkTrustBundleDocument,
  signTrustBundleDocument,
  trustBundleLayout,
  trustBundleOfDocument,
  verifyDocumentSignature,
  encodeTrustBundleDocument,
  decodeTrustBundleDocument,
  TRUST_BUNDLE_DOMAIN,
  MAX_DOCUMENT_ISSUERS,
  MAX_TRUST_BUNDLE_DOCUMENT_BYTES,
} from './trust-bundle-document.js';
export type { ChainAdvance, CheckedTrustBundleDocument, DocumentIssuer, IssuerLifecycleState, TrustBundleDocumentFields } from './trust-bundle-document.js';
export { MemoryRevocationSet, DEFAULT_REVOCATION_MAX_AGE_MS, MAX_REVOCATION_REASON_LENGTH } from './revocation.js';
export type {
  RevocationChecker,
  RevocationStatus,
  RevocationSubject,
  RevocationEntry,
  MemoryRevocationSetOptions,
} from './revocation.js';
// Following a registry's signed revocation list (docs/PROTOCOL.md §15.6) into a MemoryRevocationSet
export {
  RevocationListFollower,
  revocationEntryHash,
  revocationHeadLayout,
  entryFields,
  reasonString,
  CHAIN_HASH_BYTES,
  EMPTY_CHAIN_HASH,
  REGISTRY_ID_BYTES,
  REVOCATION_DOMAINS,
  REVOCATION_KIND,
  DEFAULT_REVOCATION_CLOCK_SKEW_MS,
} from './revocation-list.js';
export type { AcceptedBatch, RevocationEntryFields, RevocationHeadFields } from './revocation-list.js';
export { toDidKey, fromDidKey, DID_KEY_PREFIX } from './did-key.js';
export { keyId, KEY_ID_BYTES, KEY_ID_DOMAIN, PUBLIC_KEY_BYTES } from './key-id.js';

// For sibling packages (session, gateway, registry): names, layouts, limits
export {
  isAgentId,
  assertAgentId,
  assertAgentType,
  assertCapability,
  assertCapabilities,
  normaliseCapabilities,
  AGENT_ID_PATTERN,
  AGENT_TYPE_PATTERN,
  CAPABILITY_PATTERN,
  MAX_CAPABILITIES,
} from './names.js';
export { certificateTbs, CERTIFICATE_DOMAIN, CERTIFICATE_SIGNATURE_BYTES } from './certificate.js';
export { SERIAL_BYTES, randomSerial } from './serial.js';
