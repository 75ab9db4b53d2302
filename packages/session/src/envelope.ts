/**
 * SecureMessage layouts and stateless checks (docs/PROTOCOL.md §6).
 *
 * Byte strings, each built with crypto-core's `layout()` (§2 of the spec):
 *
 *   header(domain) = str(domain) ‖ u32 version ‖ str sender_id ‖ str recipient_id
 *                    ‖ fixed16 session_id ‖ u64 nonce ‖ i64 timestamp_ms
 *                    ‖ fixed32 payload_commitment
 *   AEAD associated data = header("parley/v1/envelope-ad")
 *   MAC input            = header("parley/v1/envelope-mac") ‖ var encrypted_payload
 *   signed bytes         = header("parley/v1/envelope-signature")
 *                          ‖ fixed32 BLAKE3(encrypted_payload) ‖ fixed32 auth_tag
 *   message hash         = BLAKE3(signed bytes)
 *   commitment           = BLAKE3(str "parley/v1/payload-commitment" ‖ fixed32 salt ‖ var payload)
 *   AEAD plaintext       = salt (32 bytes) ‖ payload (protobuf MessagePayload)
 *
 * The signature needs no session key, so a gateway can check the sender
 * without decrypting, and a recipient can later prove what the sender sent by
 * disclosing (payload, salt) — see verifyDisclosure.
 */
import { layout, type Layout, type ParleyCrypto } from '@parley/crypto-core';
import type { SecureMessage } from '@parley/proto';
import { asSessionError, assertCrypto, check, describe } from './assert.js';
import { SessionError } from './errors.js';

export const PROTOCOL_VERSION = 1;
export const SESSION_ID_BYTES = 16;
export const SALT_BYTES = 32;
export const COMMITMENT_BYTES = 32;
export const AUTH_TAG_BYTES = 32;
export const SIGNATURE_BYTES = 64;
export const AEAD_TAG_BYTES = 16;
/** Largest encoded MessagePayload: 1 MiB. */
export const MAX_PAYLOAD_BYTES = 1 << 20;
/** Largest encrypted_payload: salt + payload + Poly1305 tag. */
export const MAX_CIPHERTEXT_BYTES = SALT_BYTES + MAX_PAYLOAD_BYTES + AEAD_TAG_BYTES;
/** Largest encoded SecureMessage accepted before parsing (ciphertext plus generous header room). */
export const MAX_ENVELOPE_BYTES = MAX_CIPHERTEXT_BYTES + 4096;
/** Message counters stay below 2^53 (docs/PROTOCOL.md §7). */
export const MAX_MESSAGE_COUNTER = Number.MAX_SAFE_INTEGER;

const AGENT_ID_RE = /^[a-z0-9][a-z0-9._:-]{0,127}$/;

/** True for a syntactically valid AgentId (docs/PROTOCOL.md §3). */
export function isAgentId(value: unknown): value is string {
  return typeof value === 'string' && AGENT_ID_RE.test(value);
}

function fail(message: string): never {
  throw new SessionError('malformed', message);
}

/**
 * Structural checks every receiver (and the gateway) applies before any
 * cryptography: a SecureMessage (protobuf-es, `$typeName` `parley.v1.SecureMessage`),
 * version, identifiers, fixed lengths, size limits, counter range. Cheap and
 * total: never throws anything but SessionError, whatever `envelope` is.
 */
export function assertEnvelopeShape(value: unknown): asserts value is SecureMessage {
  const envelope = value as SecureMessage;
  if (typeof envelope !== 'object' || envelope === null || envelope.$typeName !== 'parley.v1.SecureMessage') {
    fail(`not a SecureMessage: ${describe(envelope)}`);
  }
  if (typeof envelope.version !== 'number') fail('version must be a number');
  if (envelope.version !== PROTOCOL_VERSION) {
    throw new SessionError('unsupported_version', `envelope version ${envelope.version} is not supported`);
  }
  if (!isAgentId(envelope.senderId)) fail('sender_id is not a valid agent id');
  if (!isAgentId(envelope.recipientId)) fail('recipient_id is not a valid agent id');
  if (bytesOf(envelope.sessionId, 'session_id').length !== SESSION_ID_BYTES) fail(`session_id must be ${SESSION_ID_BYTES} bytes`);
  if (typeof envelope.nonce !== 'bigint' || envelope.nonce < 0n) fail('nonce must be an unsigned 64-bit integer');
  if (envelope.nonce > BigInt(MAX_MESSAGE_COUNTER)) throw new SessionError('nonce_exhausted', 'nonce beyond 2^53 - 1');
  if (typeof envelope.timestampMs !== 'bigint' || envelope.timestampMs < 0n || envelope.timestampMs > BigInt(Number.MAX_SAFE_INTEGER)) fail('timestamp_ms out of range');
  if (bytesOf(envelope.payloadCommitment, 'payload_commitment').length !== COMMITMENT_BYTES) fail(`payload_commitment must be ${COMMITMENT_BYTES} bytes`);
  if (bytesOf(envelope.encryptedPayload, 'encrypted_payload').length > MAX_CIPHERTEXT_BYTES) {
    throw new SessionError('too_large', `encrypted_payload exceeds ${MAX_CIPHERTEXT_BYTES} bytes`);
  }
  if (envelope.encryptedPayload.length < SALT_BYTES + AEAD_TAG_BYTES) fail('encrypted_payload too short');
  if (bytesOf(envelope.authTag, 'auth_tag').length !== AUTH_TAG_BYTES) fail(`auth_tag must be ${AUTH_TAG_BYTES} bytes`);
  if (bytesOf(envelope.signature, 'signature').length !== SIGNATURE_BYTES) fail(`signature must be ${SIGNATURE_BYTES} bytes`);
}

/** A bytes field of an envelope (a Uint8Array; its length is the caller's to check, with its own message). */
function bytesOf(value: unknown, name: string): Uint8Array {
  return check.bytes(value, name);
}

/** The header fields shared by all three layouts. */
export interface EnvelopeHeader {
  readonly version: number;
  readonly senderId: string;
  readonly recipientId: string;
  readonly sessionId: Uint8Array;
  readonly nonce: bigint;
  readonly timestampMs: bigint;
  readonly payloadCommitment: Uint8Array;
}

const AD_DOMAIN = 'parley/v1/envelope-ad';
const MAC_DOMAIN = 'parley/v1/envelope-mac';
const SIGNATURE_DOMAIN = 'parley/v1/envelope-signature';

/**
 * The header fields shared by the three layouts, encoded once (under the AD tag; each
 * layout takes the fields after its own tag). Seal and open build all three from one.
 */
export class EnvelopeHeaderFields {
  readonly #layout: Layout;

  /** @throws SessionError `malformed` when a field has the wrong type or length */
  constructor(h: EnvelopeHeader) {
    check.object(h, 'envelope header');
    this.#layout = asSessionError('envelope header', () =>
      layout(AD_DOMAIN)
        .u32(h.version)
        .str(h.senderId)
        .str(h.recipientId)
        .fixed(h.sessionId, SESSION_ID_BYTES, 'session_id')
        .u64(h.nonce)
        .i64(h.timestampMs)
        .fixed(h.payloadCommitment, COMMITMENT_BYTES, 'payload_commitment'),
    );
  }

  /** AEAD associated data: header("parley/v1/envelope-ad"). */
  ad(): Uint8Array {
    return this.#layout.bytes();
  }

  /** Input of the HMAC-SHA256 auth tag. */
  macInput(encryptedPayload: Uint8Array): Uint8Array {
    check.bytes(encryptedPayload, 'encrypted_payload');
    return layout(MAC_DOMAIN).fieldsOf(this.#layout).var(encryptedPayload, 'encrypted_payload').bytes();
  }

  /**
   * The same input in two parts, header ‖ u32 length and the ciphertext itself, for a
   * MAC computed over their concatenation without copying the ciphertext.
   */
  macInputParts(encryptedPayload: Uint8Array): [Uint8Array, Uint8Array] {
    check.bytes(encryptedPayload, 'encrypted_payload');
    return [layout(MAC_DOMAIN).fieldsOf(this.#layout).u32(encryptedPayload.length).bytes(), encryptedPayload];
  }

  /** The bytes the sender's Ed25519 identity key signs. */
  signedBytes(crypto: ParleyCrypto, encryptedPayload: Uint8Array, authTag: Uint8Array): Uint8Array {
    check.bytes(encryptedPayload, 'encrypted_payload');
    check.bytes(authTag, 'auth_tag', AUTH_TAG_BYTES);
    return layout(SIGNATURE_DOMAIN).fieldsOf(this.#layout).fixed(crypto.blake3(encryptedPayload), 32, 'ciphertext digest').fixed(authTag, AUTH_TAG_BYTES, 'auth_tag').bytes();
  }
}

/** AEAD associated data. */
export function envelopeAd(h: EnvelopeHeader): Uint8Array {
  return new EnvelopeHeaderFields(h).ad();
}

/** Input of the HMAC-SHA256 auth tag. */
export function envelopeMacInput(h: EnvelopeHeader, encryptedPayload: Uint8Array): Uint8Array {
  return new EnvelopeHeaderFields(h).macInput(encryptedPayload);
}

/** The bytes the sender's Ed25519 identity key signs. */
export function envelopeSignedBytes(crypto: ParleyCrypto, h: EnvelopeHeader, encryptedPayload: Uint8Array, authTag: Uint8Array): Uint8Array {
  assertCrypto(crypto);
  return new EnvelopeHeaderFields(h).signedBytes(crypto, encryptedPayload, authTag);
}

/** BLAKE3 message hash: identifies an envelope in replay caches, receipts and the audit trail. */
export function messageHash(crypto: ParleyCrypto, envelope: SecureMessage): Uint8Array {
  return messageHashOf(crypto, envelope).hash;
}

/**
 * An envelope's signed bytes and message hash, taken once: a receiver that needs the
 * hash before opening (its inbox and receipt lookups) hands this to `open`, which
 * then checks the signature over these bytes instead of encoding them again.
 */
export interface EnvelopeDigest {
  /** The envelope these were computed from (`open` uses them only for this very object). */
  readonly envelope: SecureMessage;
  /** envelopeSignedBytes of the envelope's header, ciphertext and auth tag. */
  readonly signed: Uint8Array;
  /** BLAKE3(signed): the message hash. */
  readonly hash: Uint8Array;
  /** The envelope's header fields, encoded (for its AD and MAC input). */
  readonly fields: EnvelopeHeaderFields;
}

/**
 * The signed bytes and message hash of an envelope. The envelope must not change
 * between this call and the `open` it is given to. Checks only what the bytes need
 * (an object whose header fields, ciphertext and auth tag have their types and fixed
 * lengths): `open` applies every other check.
 * @throws SessionError `malformed` when it is not such an object
 */
export function messageHashOf(crypto: ParleyCrypto, envelope: SecureMessage): EnvelopeDigest {
  assertCrypto(crypto);
  check.object(envelope, 'envelope');
  const fields = new EnvelopeHeaderFields(envelope);
  const signed = fields.signedBytes(crypto, envelope.encryptedPayload, envelope.authTag);
  return { envelope, signed, hash: crypto.blake3(signed), fields };
}

/** Salted commitment to the encoded payload. */
export function payloadCommitment(crypto: ParleyCrypto, salt: Uint8Array, payload: Uint8Array): Uint8Array {
  assertCrypto(crypto);
  check.bytes(salt, 'salt', SALT_BYTES);
  // BLAKE3 of the layout ‖ var(payload), hashed in two parts so the payload is not copied.
  check.bytes(payload, 'payload');
  return crypto.blake3Parts([layout('parley/v1/payload-commitment').fixed(salt, SALT_BYTES, 'salt').u32(payload.length).bytes(), payload]);
}

/**
 * {@link verifyEnvelopeSignature} over the signed bytes a {@link messageHashOf} already took (a gateway needs
 * the message hash too: the bytes are encoded once). False on any malformed input.
 */
export function verifyEnvelopeDigest(crypto: ParleyCrypto, digest: EnvelopeDigest, identityPublicKey: Uint8Array): boolean {
  try {
    assertEnvelopeShape(digest.envelope);
    return crypto.ed25519.verify(digest.envelope.signature, digest.signed, identityPublicKey);
  } catch {
    return false;
  }
}

/**
 * {@link verifyEnvelopeDigest} with the Ed25519 check made by `verify` (a crypto-core VerifyPool's:
 * off the event loop). False on any malformed input; never rejects.
 */
export async function verifyEnvelopeDigestWith(
  digest: EnvelopeDigest,
  identityPublicKey: Uint8Array,
  verify: (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array) => Promise<boolean>,
): Promise<boolean> {
  try {
    assertEnvelopeShape(digest.envelope);
  } catch {
    return false;
  }
  return verify(digest.envelope.signature, digest.signed, identityPublicKey).catch(() => false);
}

/**
 * Checks the envelope signature against a sender's identity public key, with
 * no session key (what a gateway does). False on any malformed input.
 */
export function verifyEnvelopeSignature(crypto: ParleyCrypto, envelope: SecureMessage, identityPublicKey: Uint8Array): boolean {
  try {
    assertEnvelopeShape(envelope);
    const signed = envelopeSignedBytes(crypto, envelope, envelope.encryptedPayload, envelope.authTag);
    return crypto.ed25519.verify(envelope.signature, signed, identityPublicKey);
  } catch {
    return false;
  }
}
