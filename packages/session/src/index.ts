/**
 * @parley/session — Noise XX sessions between agents, SecureMessage sealing,
 * replay protection, rekeying and session management.
 */

// For users
export { DEFAULT_TIMEOUTS, SessionManager } from './manager.js';
export type { SessionManagerOptions, SessionTimeouts, FrameTransport, FrameRelayed, SessionManagerEvent } from './manager.js';
export { Session, DEFAULT_SKEW, encodePayload, decodePayload } from './session.js';
export type { LocalIdentity, SkewLimits, OutgoingMessage, SealedMessage, OpenedMessage, Disclosure } from './session.js';
export { InitiatorHandshake, ResponderHandshake, noisePrologue, identityBindingBytes, assertFrameShape, MAX_HANDSHAKE_PAYLOAD_BYTES } from './handshake.js';
export type { HandshakeConfig } from './handshake.js';
export { verifyDisclosure } from './disclosure.js';
export type { DisclosureProof, ProvenMessage } from './disclosure.js';
export { SessionError, isSessionError } from './errors.js';
export type { SessionErrorCode } from './errors.js';
export type { SecurityEvent, SecurityEventSink } from './events.js';
export { exportSessionState, importSessionState, SEALED_STATE_VERSION } from './sealed-state.js';

// For sibling packages (gateway, client): stateless envelope checks and layouts
export {
  PROTOCOL_VERSION,
  SESSION_ID_BYTES,
  MAX_PAYLOAD_BYTES,
  MAX_CIPHERTEXT_BYTES,
  MAX_ENVELOPE_BYTES,
  MAX_MESSAGE_COUNTER,
  assertEnvelopeShape,
  envelopeAd,
  envelopeMacInput,
  envelopeSignedBytes,
  messageHashOf,
  verifyEnvelopeDigest,
  verifyEnvelopeDigestWith,
  EnvelopeHeaderFields,
  messageHash,
  payloadCommitment,
  verifyEnvelopeSignature,
  isAgentId,
} from './envelope.js';
export type { EnvelopeDigest, EnvelopeHeader } from './envelope.js';
export { ReplayWindow, WINDOW_SIZE } from './replay-window.js';
export { MessageHashCache } from './message-cache.js';
export { DirectionKeys, DEFAULT_REKEY_THRESHOLD, HMAC_KEY_NONCE } from './key-schedule.js';

// Noise (spec rev. 34) building blocks
export * from './noise/index.js';
