/**
 * The gateway's byte layouts (docs/PROTOCOL.md §10), shared by the gateway (which imports them from @parley/client)
 * and its clients. Built with crypto-core's `layout()` (§2); nothing here
 * hashes or signs protobuf bytes.
 */
import { layout, type ParleyCrypto } from '@parley/crypto-core';
import type { DeliveryReceipt, HandshakeFrame, SessionReject } from '@parley/proto';
import { messageHash, SESSION_ID_BYTES } from '@parley/session';
import type { SecureMessage } from '@parley/proto';

export const GATEWAY_AUTH_DOMAIN = 'parley/v1/gateway-auth';
export const GATEWAY_SEND_DOMAIN = 'parley/v1/gateway-send';
export const HANDSHAKE_FRAME_DOMAIN = 'parley/v1/handshake-frame';
export const DELIVERY_RECEIPT_DOMAIN = 'parley/v1/delivery-receipt';
export const SESSION_REJECT_DOMAIN = 'parley/v1/session-reject';

/** Bytes of a stream-auth challenge nonce. */
export const CHALLENGE_NONCE_BYTES = 32;
/** Bytes of a unary Send nonce. */
export const SEND_NONCE_BYTES = 16;
/** Bytes of a certificate serial. */
export const SERIAL_BYTES = 16;
/** Bytes of an item digest / message hash. */
export const ITEM_HASH_BYTES = 32;
/** Bytes of an Ed25519 signature. */
export const SIGNATURE_BYTES = 64;

/** What the agent signs to authenticate a Connect stream (§10.2). */
export function gatewayAuthLayout(gatewayId: string, nonce: Uint8Array, agentId: string, serial: Uint8Array): Uint8Array {
  return layout(GATEWAY_AUTH_DOMAIN)
    .str(gatewayId)
    .fixed(nonce, CHALLENGE_NONCE_BYTES, 'nonce')
    .str(agentId)
    .fixed(serial, SERIAL_BYTES, 'serial')
    .bytes();
}

/** What the sender signs for a unary Send (§10.6). */
export function gatewaySendLayout(gatewayId: string, timestampMs: bigint | number, nonce: Uint8Array, itemDigest: Uint8Array): Uint8Array {
  return layout(GATEWAY_SEND_DOMAIN)
    .str(gatewayId)
    .i64(timestampMs)
    .fixed(nonce, SEND_NONCE_BYTES, 'nonce')
    .fixed(itemDigest, ITEM_HASH_BYTES, 'item_digest')
    .bytes();
}

/** BLAKE3 digest of a handshake frame (§10.4). */
export function handshakeFrameDigest(crypto: ParleyCrypto, frame: HandshakeFrame): Uint8Array {
  return crypto.blake3(
    layout(HANDSHAKE_FRAME_DOMAIN)
      .u32(frame.version)
      .fixed(frame.sessionId, SESSION_ID_BYTES, 'session_id')
      .str(frame.senderId)
      .str(frame.recipientId)
      .u32(frame.step)
      .var(frame.noiseMessage, 'noise_message')
      .u32(frame.rekeyThreshold)
      .bytes(),
  );
}

/** The receipt layout its recipient signs (§10.5). */
export function deliveryReceiptLayout(receipt: Omit<DeliveryReceipt, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  return layout(DELIVERY_RECEIPT_DOMAIN)
    .u32(receipt.version)
    .fixed(receipt.messageHash, ITEM_HASH_BYTES, 'message_hash')
    .str(receipt.senderId)
    .str(receipt.recipientId)
    .i64(receipt.receivedAtMs)
    .bytes();
}

/** BLAKE3 digest of a receipt's layout (§10.4). */
export function deliveryReceiptDigest(crypto: ParleyCrypto, receipt: Omit<DeliveryReceipt, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  return crypto.blake3(deliveryReceiptLayout(receipt));
}

/** The layout the recipient of an envelope signs to refuse it for good (§17.4). */
export function sessionRejectLayout(reject: Omit<SessionReject, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  return layout(SESSION_REJECT_DOMAIN)
    .u32(reject.version)
    .fixed(reject.sessionId, SESSION_ID_BYTES, 'session_id')
    .fixed(reject.messageHash, ITEM_HASH_BYTES, 'message_hash')
    .str(reject.senderId)
    .str(reject.recipientId)
    .i64(reject.rejectedAtMs)
    .bytes();
}

/** BLAKE3 digest of a session reject's layout (§10.4). */
export function sessionRejectDigest(crypto: ParleyCrypto, reject: Omit<SessionReject, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  return crypto.blake3(sessionRejectLayout(reject));
}

/** The relayable items. */
export type RelayItem =
  | { readonly case: 'handshake'; readonly value: HandshakeFrame }
  | { readonly case: 'envelope'; readonly value: SecureMessage }
  | { readonly case: 'receipt'; readonly value: DeliveryReceipt }
  | { readonly case: 'sessionReject'; readonly value: SessionReject };

/** Item digest (§10.4): the message hash of an envelope, the frame or receipt digest otherwise. Shape must be checked first. */
export function itemDigest(crypto: ParleyCrypto, item: RelayItem): Uint8Array {
  switch (item.case) {
    case 'envelope':
      return messageHash(crypto, item.value);
    case 'handshake':
      return handshakeFrameDigest(crypto, item.value);
    case 'receipt':
      return deliveryReceiptDigest(crypto, item.value);
    case 'sessionReject':
      return sessionRejectDigest(crypto, item.value);
  }
}
