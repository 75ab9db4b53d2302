/**
 * @parley/protocol — the byte layouts of Parley's gateway and registry
 * protocols (docs/PROTOCOL.md §10, §15.3–§15.5, §17.4) and the signatures
 * over them. The agent SDK and the apps both build and check these bytes from
 * here; nothing in it needs gRPC. (The revocation list's layouts, §15.6, are
 * in @parley/identity with the revocation set they feed.)
 */

export { ProtocolError, isProtocolError, PROTOCOL_ERROR_CODES } from './errors.js';
export type { ProtocolErrorCode } from './errors.js';

// The gateway protocol (§10, §17.4): stream authentication, unary Send, receipts, session rejects
export {
  gatewayAuthLayout,
  gatewaySendLayout,
  handshakeFrameDigest,
  deliveryReceiptLayout,
  deliveryReceiptDigest,
  sessionRejectLayout,
  sessionRejectDigest,
  itemDigest,
  signReceipt,
  verifyReceiptSignature,
  signSessionReject,
  verifySessionRejectSignature,
  buildSendRequest,
  GATEWAY_AUTH_DOMAIN,
  GATEWAY_SEND_DOMAIN,
  HANDSHAKE_FRAME_DOMAIN,
  DELIVERY_RECEIPT_DOMAIN,
  SESSION_REJECT_DOMAIN,
  CHALLENGE_NONCE_BYTES,
  SEND_NONCE_BYTES,
  SERIAL_BYTES,
  ITEM_HASH_BYTES,
  SIGNATURE_BYTES,
} from './gateway.js';
export type { RelayItem } from './gateway.js';

// The registry's proofs of possession (§15.4–§15.5)
export { registrationProofLayout, rotationAuthorisationLayout, rotationProofLayout, CHALLENGE_BYTES, REGISTRY_DOMAINS } from './registry.js';
export type { RotationFields } from './registry.js';

// Join tokens and enrolment (§15.11)
export {
  joinTokenHash,
  enrolmentLayout,
  formatJoinToken,
  parseJoinToken,
  JOIN_TOKEN_ID_BYTES,
  JOIN_TOKEN_SECRET_BYTES,
  JOIN_TOKEN_PREFIX,
} from './registry.js';
export type { EnrolmentFields } from './registry.js';

// Agent request signatures on directory reads (§15.3)
export { agentRequestLayout, signAgentRequest, agentRequestSigner, parseAgentMetadata, verifyAgentRequest, AGENT_REQUEST_DOMAIN, AGENT_METADATA_KEYS } from './agent-auth.js';
export type { AgentRequestAuth, AgentRequestKey } from './agent-auth.js';

// Following a registry's signed trust bundle (§15.9), for gateways and agents
export { FOLLOWED_TRUST_BUNDLE_DOMAIN, PINNED_TRUST_BUNDLE_DOMAIN, TrustBundleFollower, pinnedTrustBundleHash } from './trust-bundle-follower.js';
export type { TrustBundleFollowerEvent, TrustBundleFollowerOptions, TrustBundleFollowerState, TrustBundleSource, TrustBundleStore } from './trust-bundle-follower.js';
export { REGISTRY_ID_BYTES } from '@parley/identity';

// Operator request signatures (§15.3)
export {
  signOperatorRequest,
  operatorRequestSigner,
  parseOperatorMetadata,
  verifyOperatorRequest,
  operatorRequestLayout,
  OPERATOR_METADATA_KEYS,
  OPERATOR_REQUEST_DOMAIN,
  OPERATOR_NONCE_BYTES,
} from './operator-auth.js';
export type { OperatorKey, OperatorRequestAuth, OperatorRequestSigner, OperatorRequestTarget } from './operator-auth.js';
