/**
 * The gateway's byte layouts (docs/PROTOCOL.md §10). They live in the agent
 * SDK (`packages/client/src/layouts.ts`), since agents build the same bytes
 * and packages cannot import apps; re-exported here for the gateway's modules.
 */
export {
  GATEWAY_AUTH_DOMAIN,
  GATEWAY_SEND_DOMAIN,
  HANDSHAKE_FRAME_DOMAIN,
  DELIVERY_RECEIPT_DOMAIN,
  CHALLENGE_NONCE_BYTES,
  SEND_NONCE_BYTES,
  SERIAL_BYTES,
  ITEM_HASH_BYTES,
  SIGNATURE_BYTES,
  gatewayAuthLayout,
  gatewaySendLayout,
  handshakeFrameDigest,
  deliveryReceiptLayout,
  deliveryReceiptDigest,
  sessionRejectLayout,
  sessionRejectDigest,
  SESSION_REJECT_DOMAIN,
  itemDigest,
} from '@parley/client';
export type { RelayItem } from '@parley/client';
