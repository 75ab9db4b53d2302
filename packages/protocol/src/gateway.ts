/**
 * The gateway protocol's byte layouts (docs/PROTOCOL.md §10, §17.4), shared by
 * the gateway and its clients (the agent SDK, the tests' raw clients), with
 * the signatures over them: stream authentication, unary Send, delivery
 * receipts and session rejects. Built with crypto-core's `layout()` (§2);
 * nothing here hashes or signs protobuf bytes.
 */
import { layout, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import type { DeliveryReceipt, HandshakeFrame, MessageInitShape, SecureMessage, SendRequestSchema, SessionReject } from '@parley/proto';
import { messageHash, SESSION_ID_BYTES, type LocalIdentity } from '@parley/session';
import { asMalformed, assertCrypto, check, malformed, optionalObject, verifying } from './assert.js';

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

/**
 * What the agent signs to authenticate a Connect stream (§10.2).
 * @throws ProtocolError `malformed` (a field of the wrong type or length)
 */
export function gatewayAuthLayout(gatewayId: string, nonce: Uint8Array, agentId: string, serial: Uint8Array): Uint8Array {
  return asMalformed('gateway auth layout', () =>
    layout(GATEWAY_AUTH_DOMAIN).str(gatewayId).fixed(nonce, CHALLENGE_NONCE_BYTES, 'nonce').str(agentId).fixed(serial, SERIAL_BYTES, 'serial').bytes(),
  );
}

/**
 * What the sender signs for a unary Send (§10.6).
 * @throws ProtocolError `malformed`
 */
export function gatewaySendLayout(gatewayId: string, timestampMs: bigint | number, nonce: Uint8Array, itemDigest: Uint8Array): Uint8Array {
  return asMalformed('gateway send layout', () =>
    layout(GATEWAY_SEND_DOMAIN).str(gatewayId).i64(timestampMs).fixed(nonce, SEND_NONCE_BYTES, 'nonce').fixed(itemDigest, ITEM_HASH_BYTES, 'item_digest').bytes(),
  );
}

/**
 * BLAKE3 digest of a handshake frame (§10.4).
 * @throws ProtocolError `malformed`
 */
export function handshakeFrameDigest(crypto: ParleyCrypto, frame: HandshakeFrame): Uint8Array {
  assertCrypto(crypto);
  const f = check.object(frame, 'frame') as unknown as HandshakeFrame;
  return asMalformed('handshake frame', () =>
    crypto.blake3(
      layout(HANDSHAKE_FRAME_DOMAIN)
        .u32(f.version)
        .fixed(f.sessionId, SESSION_ID_BYTES, 'session_id')
        .str(f.senderId)
        .str(f.recipientId)
        .u32(f.step)
        .var(f.noiseMessage, 'noise_message')
        .u32(f.rekeyThreshold)
        .bytes(),
    ),
  );
}

/**
 * The receipt layout its recipient signs (§10.5).
 * @throws ProtocolError `malformed`
 */
export function deliveryReceiptLayout(receipt: Omit<DeliveryReceipt, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  const r = check.object(receipt, 'receipt') as unknown as typeof receipt;
  return asMalformed('delivery receipt', () =>
    layout(DELIVERY_RECEIPT_DOMAIN)
      .u32(r.version)
      .fixed(r.messageHash, ITEM_HASH_BYTES, 'message_hash')
      .str(r.senderId)
      .str(r.recipientId)
      .i64(r.receivedAtMs)
      .bytes(),
  );
}

/**
 * BLAKE3 digest of a receipt's layout (§10.4).
 * @throws ProtocolError `malformed`
 */
export function deliveryReceiptDigest(crypto: ParleyCrypto, receipt: Omit<DeliveryReceipt, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  assertCrypto(crypto);
  return crypto.blake3(deliveryReceiptLayout(receipt));
}

/**
 * The layout the recipient of an envelope signs to refuse it for good (§17.4).
 * @throws ProtocolError `malformed`
 */
export function sessionRejectLayout(reject: Omit<SessionReject, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  const r = check.object(reject, 'reject') as unknown as typeof reject;
  return asMalformed('session reject', () =>
    layout(SESSION_REJECT_DOMAIN)
      .u32(r.version)
      .fixed(r.sessionId, SESSION_ID_BYTES, 'session_id')
      .fixed(r.messageHash, ITEM_HASH_BYTES, 'message_hash')
      .str(r.senderId)
      .str(r.recipientId)
      .i64(r.rejectedAtMs)
      .bytes(),
  );
}

/**
 * BLAKE3 digest of a session reject's layout (§10.4).
 * @throws ProtocolError `malformed`
 */
export function sessionRejectDigest(crypto: ParleyCrypto, reject: Omit<SessionReject, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  assertCrypto(crypto);
  return crypto.blake3(sessionRejectLayout(reject));
}

/** The relayable items. */
export type RelayItem =
  | { readonly case: 'handshake'; readonly value: HandshakeFrame }
  | { readonly case: 'envelope'; readonly value: SecureMessage }
  | { readonly case: 'receipt'; readonly value: DeliveryReceipt }
  | { readonly case: 'sessionReject'; readonly value: SessionReject };

/**
 * Item digest (§10.4): the message hash of an envelope, the frame or receipt digest otherwise. A relay checks the
 * item's shape first (its own rules); here only what the digest needs is checked.
 * @throws ProtocolError `malformed`
 */
export function itemDigest(crypto: ParleyCrypto, item: RelayItem): Uint8Array {
  assertCrypto(crypto);
  const i = check.object(item, 'item') as unknown as RelayItem;
  check.object(i.value, 'item.value');
  switch (i.case) {
    case 'envelope':
      return asMalformed('envelope', () => messageHash(crypto, i.value));
    case 'handshake':
      return handshakeFrameDigest(crypto, i.value);
    case 'receipt':
      return deliveryReceiptDigest(crypto, i.value);
    case 'sessionReject':
      return sessionRejectDigest(crypto, i.value);
    default:
      return malformed("item.case must be 'handshake', 'envelope', 'receipt' or 'sessionReject'");
  }
}

/** The agent id and signing key of an identity (what signing a receipt, reject or Send needs of it). */
function signerOf(identity: unknown): { agentId: string; signingKey: SecretKey } {
  const id = check.object(identity, 'identity');
  return { agentId: check.string(id['agentId'], 'identity.agentId'), signingKey: id['signingKey'] as SecretKey };
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
  assertCrypto(crypto);
  const signer = signerOf(identity);
  const f = check.object(fields, 'fields') as unknown as typeof fields;
  const receivedAtMs = BigInt(check.safeInt(f.receivedAtMs, 'fields.receivedAtMs'));
  const body = { version: 1, messageHash: f.messageHash, senderId: f.senderId, recipientId: signer.agentId, receivedAtMs };
  const signature = asMalformed('receipt signature', () => crypto.ed25519.sign(deliveryReceiptLayout(body), signer.signingKey));
  return { $typeName: 'parley.v1.DeliveryReceipt', ...body, signature };
}

/**
 * Verifies a delivery receipt (§10.5) against the recipient's certified identity
 * key: well-formed, signed by `recipientPublicKey`. The caller checks that its
 * fields (message hash, sender, recipient) are the ones it expects.
 */
export function verifyReceiptSignature(crypto: ParleyCrypto, receipt: DeliveryReceipt, recipientPublicKey: Uint8Array): boolean {
  return verifying(() => {
    const r = check.object(receipt, 'receipt') as unknown as DeliveryReceipt;
    if (r.version !== 1 || r.messageHash?.length !== ITEM_HASH_BYTES || r.signature?.length !== SIGNATURE_BYTES) return false;
    return assertCrypto(crypto).ed25519.verify(r.signature, deliveryReceiptLayout(r), recipientPublicKey);
  });
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
  assertCrypto(crypto);
  const signer = signerOf(identity);
  const f = check.object(fields, 'fields') as unknown as typeof fields;
  const rejectedAtMs = BigInt(check.safeInt(f.rejectedAtMs, 'fields.rejectedAtMs'));
  const body = { version: 1, sessionId: f.sessionId, messageHash: f.messageHash, senderId: f.senderId, recipientId: signer.agentId, rejectedAtMs };
  const signature = asMalformed('session reject signature', () => crypto.ed25519.sign(sessionRejectLayout(body), signer.signingKey));
  return { $typeName: 'parley.v1.SessionReject', ...body, signature };
}

/**
 * Verifies a session reject (§17.4) against the rejecting recipient's certified identity key.
 * @returns true only for a valid signature; false on any malformed input (never throws)
 */
export function verifySessionRejectSignature(crypto: ParleyCrypto, reject: SessionReject, recipientPublicKey: Uint8Array): boolean {
  return verifying(() => {
    const r = check.object(reject, 'reject') as unknown as SessionReject;
    if (r.version !== 1 || r.sessionId?.length !== SESSION_ID_BYTES || r.messageHash?.length !== ITEM_HASH_BYTES || r.signature?.length !== SIGNATURE_BYTES) return false;
    return assertCrypto(crypto).ed25519.verify(r.signature, sessionRejectLayout(r), recipientPublicKey);
  });
}

/**
 * Builds a signed unary SendRequest (§10.6) for `AgentGatewayService.send`.
 * @param item the item; its shape must be valid
 * @throws ProtocolError `malformed`
 */
export function buildSendRequest(
  crypto: ParleyCrypto,
  identity: LocalIdentity,
  gatewayId: string,
  item: RelayItem,
  options: { readonly nowMs?: number; readonly nonce?: Uint8Array } = {},
): MessageInitShape<typeof SendRequestSchema> {
  assertCrypto(crypto, ['randomBytes']);
  const signer = signerOf(identity);
  const o = optionalObject(options, 'options');
  const timestampMs = BigInt(o['nowMs'] === undefined ? Date.now() : check.safeInt(o['nowMs'], 'options.nowMs'));
  const nonce = o['nonce'] === undefined ? crypto.randomBytes(SEND_NONCE_BYTES) : check.bytes(o['nonce'], 'options.nonce', SEND_NONCE_BYTES);
  const signed = gatewaySendLayout(gatewayId, timestampMs, nonce, itemDigest(crypto, item));
  const signature = asMalformed('send signature', () => crypto.ed25519.sign(signed, signer.signingKey));
  return { certificate: identity.certificate, timestampMs, nonce, signature, item };
}
