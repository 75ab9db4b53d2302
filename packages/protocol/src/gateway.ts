/**
 * The gateway protocol's byte layouts (docs/PROTOCOL.md §10, §17.4), shared by
 * the gateway and its clients (the agent SDK, the tests' raw clients), with
 * the signatures over them: stream authentication, unary Send, delivery
 * receipts and session rejects. Built with crypto-core's `layout()` (§2);
 * nothing here hashes or signs protobuf bytes.
 */
import { layout, type ParleyCrypto } from '@parley/crypto-core';
import type { DeliveryReceipt, HandshakeFrame, MessageInitShape, SecureMessage, SendRequestSchema, SessionReject } from '@parley/proto';
import { messageHash, SESSION_ID_BYTES, type LocalIdentity } from '@parley/session';

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

/**
 * Signs a delivery receipt for an envelope this agent received (§10.5).
 * @param fields the envelope's message hash and sender, and when it was received
 */
export function signReceipt(
  crypto: ParleyCrypto,
  identity: LocalIdentity,
  fields: { readonly messageHash: Uint8Array; readonly senderId: string; readonly receivedAtMs: number },
): DeliveryReceipt {
  const body = { version: 1, messageHash: fields.messageHash, senderId: fields.senderId, recipientId: identity.agentId, receivedAtMs: BigInt(fields.receivedAtMs) };
  const signature = crypto.ed25519.sign(deliveryReceiptLayout(body), identity.signingKey);
  return { $typeName: 'parley.v1.DeliveryReceipt', ...body, signature };
}

/**
 * Verifies a delivery receipt (§10.5) against the recipient's certified identity
 * key: well-formed, signed by `recipientPublicKey`. The caller checks that its
 * fields (message hash, sender, recipient) are the ones it expects.
 */
export function verifyReceiptSignature(crypto: ParleyCrypto, receipt: DeliveryReceipt, recipientPublicKey: Uint8Array): boolean {
  if (receipt.version !== 1 || receipt.messageHash.length !== ITEM_HASH_BYTES || receipt.signature.length !== SIGNATURE_BYTES) return false;
  try {
    return crypto.ed25519.verify(receipt.signature, deliveryReceiptLayout(receipt), recipientPublicKey);
  } catch {
    return false;
  }
}

/**
 * Signs a session reject (§17.4) for an envelope this agent can never open:
 * its session is unknown and no handshake for it is in progress.
 */
export function signSessionReject(
  crypto: ParleyCrypto,
  identity: LocalIdentity,
  fields: { readonly sessionId: Uint8Array; readonly messageHash: Uint8Array; readonly senderId: string; readonly rejectedAtMs: number },
): SessionReject {
  const body = { version: 1, sessionId: fields.sessionId, messageHash: fields.messageHash, senderId: fields.senderId, recipientId: identity.agentId, rejectedAtMs: BigInt(fields.rejectedAtMs) };
  const signature = crypto.ed25519.sign(sessionRejectLayout(body), identity.signingKey);
  return { $typeName: 'parley.v1.SessionReject', ...body, signature };
}

/** Verifies a session reject (§17.4) against the rejecting recipient's certified identity key. */
export function verifySessionRejectSignature(crypto: ParleyCrypto, reject: SessionReject, recipientPublicKey: Uint8Array): boolean {
  if (reject.version !== 1 || reject.sessionId.length !== 16 || reject.messageHash.length !== ITEM_HASH_BYTES || reject.signature.length !== SIGNATURE_BYTES) return false;
  try {
    return crypto.ed25519.verify(reject.signature, sessionRejectLayout(reject), recipientPublicKey);
  } catch {
    return false;
  }
}

/**
 * Builds a signed unary SendRequest (§10.6) for `AgentGatewayService.send`.
 * @param item the item; its shape must be valid
 */
export function buildSendRequest(
  crypto: ParleyCrypto,
  identity: LocalIdentity,
  gatewayId: string,
  item: RelayItem,
  options: { readonly nowMs?: number; readonly nonce?: Uint8Array } = {},
): MessageInitShape<typeof SendRequestSchema> {
  const timestampMs = BigInt(options.nowMs ?? Date.now());
  const nonce = options.nonce ?? crypto.randomBytes(SEND_NONCE_BYTES);
  const signature = crypto.ed25519.sign(gatewaySendLayout(gatewayId, timestampMs, nonce, itemDigest(crypto, item)), identity.signingKey);
  return { certificate: identity.certificate, timestampMs, nonce, signature, item };
}
