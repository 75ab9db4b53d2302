/**
 * @parley/gateway — the agent gateway: authenticated gRPC relay with
 * default-deny policy, per-agent rate limits and revocation (docs/PROTOCOL.md §10).
 * Mailbox, audit trail and metrics follow.
 */
export { Gateway, DEFAULT_MAX_FRAME_BYTES } from './gateway.js';
export type { GatewayOptions, DeliveryInit } from './gateway.js';
export { startGateway, isLoopback } from './server.js';
export type { StartGatewayOptions, RunningGateway } from './server.js';
export { GatewayConnection, signReceipt, buildSendRequest } from './client-transport.js';
export type { GatewayConnectionOptions } from './client-transport.js';
export {
  gatewayAuthLayout,
  gatewaySendLayout,
  handshakeFrameDigest,
  deliveryReceiptLayout,
  deliveryReceiptDigest,
  itemDigest,
  GATEWAY_AUTH_DOMAIN,
  GATEWAY_SEND_DOMAIN,
  HANDSHAKE_FRAME_DOMAIN,
  DELIVERY_RECEIPT_DOMAIN,
  CHALLENGE_NONCE_BYTES,
  SEND_NONCE_BYTES,
} from './layouts.js';
export type { RelayItem } from './layouts.js';
export { Policy, PolicyError, parsePolicy } from './policy.js';
export type { PolicyDocument, PolicyRule, PolicySubject, Matcher } from './policy.js';
export { RateLimiter } from './rate-limit.js';
export type { RateLimitOptions } from './rate-limit.js';
