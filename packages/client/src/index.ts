/**
 * @parley/client — the agent SDK: connect to a gateway, send SecureMessages
 * and get verified delivery receipts, receive each message once, reconnect
 * with backoff, persist sessions across restarts (docs/PROTOCOL.md §5–§8, §10, §13).
 */

// For agents
export { connect, Agent } from './agent.js';
/** Whether an address names a loopback host: the only place `connect` allows plaintext (the rule every Parley program shares). */
export { isLoopbackAddress } from '@parley/rpc';
export type { ConnectOptions, RegistryFollowOptions, SendOptions, ReceivedMessage, AgentEvent, ReceiptSecurityEvent, SendOutcome, TlsOptions } from './agent.js';
// The agent's own revocation data (docs/PROTOCOL.md §8.4): the registry's list it follows, its events and status
export type { RevocationListEvent, RevocationListState, RevocationListStatus, RevocationSecurityEvent, RevokedSubject } from './agent.js';
// A first contact with an agent the gateway never saw: its registry certificate did not verify (PROTOCOL §10.3)
export type { DirectorySecurityEvent } from './agent.js';
// Enrolment with a join token: the agent's key is generated where it runs (docs/PROTOCOL.md §15.11)
export { enroll } from './enrol.js';
export type { EnrolOptions, Enrolment } from './enrol.js';
export { Journal, replay } from './journal.js';
export type { JournalRecord, JournalState } from './journal.js';
// What `pendingSends()` lists, and which handshake failures end a send (PROTOCOL §17.2 item 6)
export type { PendingSend } from './outbox.js';
export { PERMANENT_HANDSHAKE_FAILURES, isPermanentHandshakeFailure } from './outbox.js';
export { ClientError, isClientError } from './errors.js';
export type { ClientErrorCode } from './errors.js';
export { fileStateStore, memoryStateStore, frameRecords, parseRecords, stateKeyFile } from './state-store.js';
// Shared memory (docs/PROTOCOL.md §18): `agent.memory` is a MemoryClient
export { MemoryClient, MemoryError, isMemoryError } from '@parley/memory';
export type { MemoryClientOptions, MemoryInfo, MemoryListing, ReadResult, WriteResult, SegmentInfo, AccessLevel, MemoryErrorCode } from '@parley/memory';
export type { StateStore } from './state-store.js';

// Low level: one authenticated gateway stream
export { GatewayConnection } from './connection.js';
export type { GatewayConnectionOptions } from './connection.js';

// The gateway protocol (docs/PROTOCOL.md §10, §17.4) as the SDK's users need it: receipts, session
// rejects, unary Send, and the byte layouts (from @parley/protocol, which the gateway imports too)
export {
  signReceipt,
  verifyReceiptSignature,
  signSessionReject,
  verifySessionRejectSignature,
  buildSendRequest,
  gatewayAuthLayout,
  gatewaySendLayout,
  handshakeFrameDigest,
  deliveryReceiptLayout,
  deliveryReceiptDigest,
  sessionRejectLayout,
  sessionRejectDigest,
  SESSION_REJECT_DOMAIN,
  itemDigest,
  GATEWAY_AUTH_DOMAIN,
  GATEWAY_SEND_DOMAIN,
  HANDSHAKE_FRAME_DOMAIN,
  DELIVERY_RECEIPT_DOMAIN,
  CHALLENGE_NONCE_BYTES,
  SEND_NONCE_BYTES,
  SERIAL_BYTES,
  ITEM_HASH_BYTES,
  SIGNATURE_BYTES,
} from '@parley/protocol';
export type { RelayItem } from '@parley/protocol';
