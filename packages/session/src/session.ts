/**
 * An established session between two agents: seals and opens SecureMessages
 * (docs/PROTOCOL.md §6–§8). Created only by a completed, identity-checked
 * handshake (handshake.ts) or by importing sealed state (sealed-state.ts).
 *
 * Receive-path check order (normative, docs/PROTOCOL.md §8.1): shape → session,
 * routing and the peer certificate's standing (issuer in the trust bundle, validity, revocation) → signature → timestamp skew → replay window → message-hash
 * cache → epoch key → HMAC tag → AEAD → commitment → payload. Nothing is
 * committed (window, cache, epoch keys) until every check has passed.
 */
import { concatBytes, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import { TrustBundle, isIdentityError, type RevocationChecker, type VerifiedCertificate } from '@parley/identity';
import {
  MessagePayloadSchema,
  MessageType,
  SecureMessageSchema,
  ValueSchema,
  create,
  fromBinary,
  fromJson,
  toBinary,
  toJson,
  type AgentCertificate,
  type JsonValue,
  type MessagePayload,
  type SecureMessage,
} from '@parley/proto';
import {
  MAX_MESSAGE_COUNTER,
  MAX_PAYLOAD_BYTES,
  PROTOCOL_VERSION,
  SALT_BYTES,
  EnvelopeHeaderFields,
  assertEnvelopeShape,
  payloadCommitment,
  type EnvelopeDigest,
  type EnvelopeHeader,
} from './envelope.js';
import { check, describe, malformed } from './assert.js';
import { SessionError, isSessionError } from './errors.js';
import { ignoreEvents, type SecurityEventSink } from './events.js';
import type { DirectionKeys } from './key-schedule.js';
import { MessageHashCache } from './message-cache.js';
import { ReplayWindow } from './replay-window.js';

/** This agent's identity, as sessions need it. */
export interface LocalIdentity {
  readonly agentId: string;
  /** Ed25519 identity secret key (signs envelopes and handshake bindings). */
  readonly signingKey: SecretKey;
  readonly certificate: AgentCertificate;
}

/** Timestamp skew bounds (docs/PROTOCOL.md §8.3). */
export interface SkewLimits {
  /** Oldest accepted timestamp, relative to now. Default 1 hour (must cover mailbox delivery). */
  readonly maxAgeMs: number;
  /** Furthest-future accepted timestamp, relative to now. Default 60 s. */
  readonly maxFutureSkewMs: number;
}

export const DEFAULT_SKEW: SkewLimits = Object.freeze({ maxAgeMs: 60 * 60_000, maxFutureSkewMs: 60_000 });

/** What the application passes to seal. */
export interface OutgoingMessage {
  readonly type: MessageType;
  /** Any JSON value. */
  readonly content: JsonValue;
  /** Optional 32-byte message hash of the handoff this refers to. */
  readonly handoffHash?: Uint8Array;
  /** Optional 32-byte message hash of the message this answers. */
  readonly parentMessageHash?: Uint8Array;
  /**
   * When the message was created (ms), for one sealed later than that — an outbox that waited for a session,
   * or a reseal (docs/PROTOCOL.md §17.2 item 7): its `timestamp_ms`, so that its validity at the recipient
   * ends when the sender's expiry does. A time after now is taken as now. Default: now.
   */
  readonly timestampMs?: number;
}

/** What a recipient can disclose to prove what the sender sent (docs/PROTOCOL.md §6.4). */
export interface Disclosure {
  /** The encoded MessagePayload, exactly as committed. */
  readonly payload: Uint8Array;
  /** The 32-byte commitment salt. */
  readonly salt: Uint8Array;
}

export interface SealedMessage {
  readonly envelope: SecureMessage;
  readonly messageHash: Uint8Array;
  /** The sender's own opening, should it need to prove what it sent. */
  readonly disclosure: Disclosure;
}

export interface OpenedMessage {
  readonly envelope: SecureMessage;
  readonly messageHash: Uint8Array;
  readonly payload: MessagePayload;
  /** payload.content as a plain JSON value. */
  readonly content: JsonValue;
  readonly disclosure: Disclosure;
}

export interface SessionInit {
  readonly sessionId: Uint8Array;
  readonly role: 'initiator' | 'responder';
  readonly local: LocalIdentity;
  readonly peer: VerifiedCertificate;
  readonly peerCertificate: AgentCertificate;
  readonly handshakeHash: Uint8Array;
  readonly send: DirectionKeys;
  readonly receive: DirectionKeys;
  readonly sendCounter?: number;
  readonly window?: ReplayWindow;
  readonly createdAtMs: number;
  readonly lastActivityMs?: number;
  readonly skew?: SkewLimits;
  readonly messageCache?: MessageHashCache;
  readonly events?: SecurityEventSink;
  readonly clock?: () => number;
  /**
   * The agent's revocation data. When set, every `open` re-checks the peer's certificate against it
   * (docs/PROTOCOL.md §8.1 step 2): a revoked peer closes the session.
   */
  readonly revocations?: RevocationChecker;
  /**
   * The agent's trust bundle — a live view (`TrustBundle.live`) when the agent follows the registry's
   * (§15.9). Every `open` looks the peer certificate's issuer up in it (docs/PROTOCOL.md §8.1 step 2): an
   * issuer no longer in it (`unknown_issuer`) or past its `not_after_ms` (`expired`) closes the session.
   */
  readonly trustBundle: TrustBundle;
}

const HASH_BYTES = 32;
const KNOWN_TYPES = new Set<number>(
  Object.values(MessageType).filter((v): v is number => typeof v === 'number' && v !== MessageType.UNSPECIFIED),
);

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export class Session {
  readonly #crypto: ParleyCrypto;
  readonly id: Uint8Array;
  /** Hex form of the session id, for logs and maps. */
  readonly idHex: string;
  readonly role: 'initiator' | 'responder';
  readonly local: LocalIdentity;
  readonly peer: VerifiedCertificate;
  readonly peerCertificate: AgentCertificate;
  readonly handshakeHash: Uint8Array;
  readonly createdAtMs: number;
  readonly #send: DirectionKeys;
  readonly #receive: DirectionKeys;
  readonly #window: ReplayWindow;
  readonly #cache: MessageHashCache;
  readonly #skew: SkewLimits;
  readonly #events: SecurityEventSink;
  readonly #clock: () => number;
  readonly #revocations: RevocationChecker | undefined;
  readonly #trustBundle: TrustBundle;
  #sendCounter: number;
  #lastActivityMs: number;
  #closed = false;
  #sent = 0;
  #received = 0;

  constructor(crypto: ParleyCrypto, init: SessionInit) {
    this.#crypto = crypto;
    this.id = init.sessionId.slice();
    this.idHex = hex(this.id);
    this.role = init.role;
    this.local = init.local;
    this.peer = init.peer;
    this.peerCertificate = init.peerCertificate;
    this.handshakeHash = init.handshakeHash.slice();
    this.createdAtMs = init.createdAtMs;
    this.#send = init.send;
    this.#receive = init.receive;
    this.#window = init.window ?? new ReplayWindow();
    this.#cache = init.messageCache ?? new MessageHashCache();
    this.#skew = init.skew ?? DEFAULT_SKEW;
    this.#events = init.events ?? ignoreEvents;
    this.#clock = init.clock ?? Date.now;
    this.#revocations = init.revocations;
    if (!(init.trustBundle instanceof TrustBundle)) throw new SessionError('malformed', 'a session needs the trust bundle its peer is checked against');
    this.#trustBundle = init.trustBundle;
    this.#sendCounter = init.sendCounter ?? 0;
    this.#lastActivityMs = init.lastActivityMs ?? init.createdAtMs;
  }

  get peerId(): string {
    return this.peer.agentId;
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  get lastActivityMs(): number {
    return this.#lastActivityMs;
  }

  /** Next counter this side will send. */
  get sendCounter(): number {
    return this.#sendCounter;
  }

  get rekeyThreshold(): number {
    return this.#send.threshold;
  }

  /** The epoch this side seals in (what `stats.sendEpoch` reports, without building the rest). */
  get sendEpoch(): number {
    return this.#send.newestEpoch;
  }

  get stats(): { sent: number; received: number; sendEpoch: number; receiveEpochs: number[] } {
    return { sent: this.#sent, received: this.#received, sendEpoch: this.#send.newestEpoch, receiveEpochs: this.#receive.heldEpochs() };
  }

  /**
   * Seals an application message into a signed SecureMessage.
   * @throws SessionError `unknown_session` (closed), `malformed` (bad input), `too_large`, `nonce_exhausted`,
   *   `stale_timestamp` (a `timestampMs` older than the message lifetime allows)
   */
  seal(message: OutgoingMessage): SealedMessage {
    if (this.#closed) throw new SessionError('unknown_session', 'session is closed');
    const counter = this.#sendCounter;
    if (counter >= MAX_MESSAGE_COUNTER) throw new SessionError('nonce_exhausted', 'send counter exhausted; renew the session');
    const nowMs = this.#clock();
    const stampMs = this.#stamp(message.timestampMs, nowMs);
    const payload = encodePayload(message, stampMs);
    const salt = this.#crypto.randomBytes(SALT_BYTES);
    const header: EnvelopeHeader = {
      version: PROTOCOL_VERSION,
      senderId: this.local.agentId,
      recipientId: this.peer.agentId,
      sessionId: this.id,
      nonce: BigInt(counter),
      timestampMs: BigInt(stampMs),
      payloadCommitment: payloadCommitment(this.#crypto, salt, payload),
    };
    const keys = this.#send.forSend(counter);
    const fields = new EnvelopeHeaderFields(header); // encoded once for the three layouts
    const plaintext = concatBytes(salt, payload);
    const encryptedPayload = keys.cipher.encryptAt(header.nonce, fields.ad(), plaintext);
    plaintext.fill(0);
    const authTag = this.#crypto.hmacSha256Parts(keys.macKey, fields.macInputParts(encryptedPayload));
    const signed = fields.signedBytes(this.#crypto, encryptedPayload, authTag);
    const signature = this.#crypto.ed25519.sign(signed, this.local.signingKey);
    this.#sendCounter = counter + 1;
    this.#sent += 1;
    this.#lastActivityMs = nowMs;
    const envelope = create(SecureMessageSchema, { ...header, encryptedPayload, authTag, signature });
    return { envelope, messageHash: this.#crypto.blake3(signed), disclosure: { payload, salt } };
  }

  /** The timestamp a message is sealed with: its creation time when given (never after now), else now. */
  #stamp(createdAtMs: number | undefined, nowMs: number): number {
    if (createdAtMs === undefined) return nowMs;
    if (!Number.isSafeInteger(createdAtMs)) throw new SessionError('malformed', 'timestampMs must be an integer number of ms');
    // A recipient refuses an envelope older than max_age (§8.3): sealing one is a message already expired.
    if (createdAtMs <= nowMs - this.#skew.maxAgeMs) throw new SessionError('stale_timestamp', 'the message is older than its lifetime (max_age)');
    return Math.min(createdAtMs, nowMs);
  }

  /**
   * Verifies, decrypts and accepts a SecureMessage from the peer.
   * @param digest the envelope's signed bytes and hash from {@link messageHashOf}, if the caller took them
   *   already (used only when taken from this very envelope object; the checks are the same either way)
   * @throws SessionError with the rejection code; a security event is emitted first
   */
  open(envelope: SecureMessage, digest?: EnvelopeDigest): OpenedMessage {
    const nowMs = this.#clock();
    try {
      return this.#open(envelope, nowMs, digest);
    } catch (error) {
      const e = isSessionError(error) ? error : new SessionError('malformed', 'envelope rejected', { cause: error });
      this.#events({
        kind: 'security',
        code: e.code,
        stage: 'message',
        sessionId: this.idHex,
        senderId: typeof envelope?.senderId === 'string' ? envelope.senderId.slice(0, 128) : undefined,
        recipientId: this.local.agentId,
        atMs: nowMs,
        detail: e.message,
      } as const);
      throw e;
    }
  }

  #open(envelope: SecureMessage, nowMs: number, digest: EnvelopeDigest | undefined): OpenedMessage {
    assertEnvelopeShape(envelope);
    if (this.#closed) throw new SessionError('unknown_session', 'session is closed');
    if (!this.#crypto.constantTimeEqual(envelope.sessionId, this.id)) throw new SessionError('unknown_session', 'session id does not match');
    if (envelope.recipientId !== this.local.agentId) throw new SessionError('identity_mismatch', 'envelope is addressed to another agent');
    if (envelope.senderId !== this.peer.agentId) throw new SessionError('identity_mismatch', 'envelope sender is not the session peer');
    this.#checkPeerStanding(nowMs);

    const own = digest !== undefined && digest.envelope === envelope;
    const fields = own ? digest.fields : new EnvelopeHeaderFields(envelope); // encoded once for the three layouts
    const signed = own ? digest.signed : fields.signedBytes(this.#crypto, envelope.encryptedPayload, envelope.authTag);
    if (!this.#crypto.ed25519.verify(envelope.signature, signed, this.peer.identityPublicKey)) {
      throw new SessionError('bad_signature', 'envelope signature does not verify');
    }

    const ts = Number(envelope.timestampMs);
    if (ts < nowMs - this.#skew.maxAgeMs) throw new SessionError('stale_timestamp', 'timestamp older than the skew bound');
    if (ts > nowMs + this.#skew.maxFutureSkewMs) throw new SessionError('future_timestamp', 'timestamp beyond the future skew bound');

    const counter = Number(envelope.nonce);
    const verdict = this.#window.check(counter);
    if (verdict !== 'ok') throw new SessionError('replay', `nonce rejected by the replay window (${verdict})`);
    const hash = own ? digest.hash : this.#crypto.blake3(signed);
    if (this.#cache.has(hash)) throw new SessionError('replay', 'message hash seen before');

    const { keys, derived } = this.#receive.lookup(this.#receive.epochOf(counter));
    let payloadBytes: Uint8Array;
    let salt: Uint8Array;
    let payload: MessagePayload;
    try {
      if (!this.#crypto.hmacSha256VerifyParts(keys.macKey, fields.macInputParts(envelope.encryptedPayload), envelope.authTag)) {
        throw new SessionError('bad_tag', 'auth tag does not verify');
      }
      const plaintext = keys.cipher.decryptAt(envelope.nonce, fields.ad(), envelope.encryptedPayload);
      salt = plaintext.slice(0, SALT_BYTES);
      payloadBytes = plaintext.slice(SALT_BYTES);
      plaintext.fill(0);
      const commitment = payloadCommitment(this.#crypto, salt, payloadBytes);
      if (!this.#crypto.constantTimeEqual(commitment, envelope.payloadCommitment)) {
        throw new SessionError('bad_commitment', 'payload does not match its commitment');
      }
      payload = decodePayload(payloadBytes, envelope.timestampMs);
    } catch (error) {
      this.#receive.discard(derived);
      throw error;
    }

    // Every check passed: commit.
    this.#window.accept(counter);
    this.#cache.add(hash);
    this.#receive.commit(derived, this.#receive.epochOf(this.#window.floor));
    this.#received += 1;
    this.#lastActivityMs = nowMs;
    return {
      envelope,
      messageHash: hash,
      payload,
      content: payload.content === undefined ? null : toJson(ValueSchema, payload.content),
      disclosure: { payload: payloadBytes, salt },
    };
  }

  /**
   * Marks a message accepted before a restart, from the owner's durable
   * journal: its counter in the replay window and its hash in the cache, so a
   * redelivery of it is refused as `replay`. Keys are not touched (the next
   * accepted message prunes them).
   */
  markAccepted(counter: number, hash: Uint8Array): void {
    this.#window.accept(counter);
    this.#cache.add(hash);
  }

  /**
   * Moves the send counter forward to `counter` (never back): a restored
   * session resumes at the first counter its previous process never reserved.
   * @throws SessionError `malformed` if `counter` is below the current one or out of range
   */
  resumeSendingAt(counter: number): void {
    if (!Number.isSafeInteger(counter) || counter < this.#sendCounter || counter > MAX_MESSAGE_COUNTER) {
      throw new SessionError('malformed', 'a send counter can only move forward, below 2^53');
    }
    this.#sendCounter = counter;
  }

  /**
   * §8.1 step 2: the certificate the handshake authenticated must still stand when each message is opened
   * (§3.3 steps 2, 4 and 6 again, on signed data the session already holds and on the agent's current trust
   * bundle and revocation data). A peer whose issuer has left the trust bundle, or that is expired (its own
   * validity or its issuer's `not_after_ms`, read from the bundle now, not copied at the handshake) or
   * revoked, closes the session: nothing it sends can be accepted any more, and its keys are wiped now.
   * Stale revocation data refuses the message (fail closed) but keeps the session, since fresher data may
   * clear the peer.
   */
  #checkPeerStanding(nowMs: number): void {
    const issuer = this.#trustBundle.get(this.peer.issuerKeyId);
    if (issuer === undefined) {
      this.close();
      throw new SessionError('unknown_issuer', "the issuer of the peer's certificate is no longer in the trust bundle; session closed");
    }
    if (nowMs >= this.peer.validUntilMs || (issuer.notAfterMs !== undefined && nowMs >= issuer.notAfterMs)) {
      this.close();
      throw new SessionError('expired', "the peer's certificate (or its issuer) has expired; session closed");
    }
    if (this.#revocations === undefined) return;
    let status: unknown;
    try {
      status = this.#revocations.check({ agentId: this.peer.agentId, serial: this.peer.serial.slice() }, nowMs);
    } catch (cause) {
      if (isIdentityError(cause, 'revoked')) status = { revoked: true };
      else throw new SessionError('revocation_stale', 'revocation data could not answer (fail closed)', { cause });
    }
    const revoked = (status as { revoked?: unknown } | null)?.revoked;
    if (revoked === true) {
      this.close();
      throw new SessionError('revoked', "the peer's certificate is revoked; session closed");
    }
    if (revoked !== false) throw new SessionError('revocation_stale', 'revocation checker returned an invalid status (fail closed)');
  }

  /** Closes the session and wipes every key it holds. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#send.wipe();
    this.#receive.wipe();
  }

  /** Internals for sealed export (sealed-state.ts only). */
  unsafeExportInternals(): { send: DirectionKeys; receive: DirectionKeys; window: ReplayWindow; lastActivityMs: number } {
    if (this.#closed) throw new SessionError('unknown_session', 'session is closed');
    return { send: this.#send, receive: this.#receive, window: this.#window, lastActivityMs: this.#lastActivityMs };
  }

  toString(): string {
    return `Session(${this.idHex}, ${this.local.agentId} ${this.role === 'initiator' ? '->' : '<-'} ${this.peer.agentId}${this.#closed ? ', closed' : ''})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

function optionalHash(value: Uint8Array | undefined, name: string): Uint8Array {
  if (value === undefined) return new Uint8Array(0);
  if (!(value instanceof Uint8Array) || value.length !== HASH_BYTES) throw new SessionError('malformed', `${name} must be ${HASH_BYTES} bytes`);
  return value;
}

/** Encodes and validates the application's message (sender side). */
export function encodePayload(message: OutgoingMessage, nowMs: number): Uint8Array {
  if (typeof message !== 'object' || message === null) throw new SessionError('malformed', 'message must be an object');
  check.safeInt(nowMs, 'nowMs');
  if (!KNOWN_TYPES.has(message.type)) throw new SessionError('malformed', 'message type must be a known, non-UNSPECIFIED MessageType');
  let content;
  try {
    content = fromJson(ValueSchema, message.content);
  } catch (cause) {
    throw new SessionError('malformed', 'content must be a JSON value', { cause });
  }
  const bytes = toBinary(
    MessagePayloadSchema,
    create(MessagePayloadSchema, {
      type: message.type,
      timestampMs: BigInt(nowMs),
      content,
      handoffHash: optionalHash(message.handoffHash, 'handoffHash'),
      parentMessageHash: optionalHash(message.parentMessageHash, 'parentMessageHash'),
    }),
  );
  if (bytes.length > MAX_PAYLOAD_BYTES) throw new SessionError('too_large', `payload of ${bytes.length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  return bytes;
}

/** Decodes and validates a received payload (receiver side and disclosure verification). */
export function decodePayload(bytes: Uint8Array, envelopeTimestampMs: bigint): MessagePayload {
  check.bytes(bytes, 'payload');
  if (typeof envelopeTimestampMs !== 'bigint') malformed(`envelopeTimestampMs must be a bigint, got ${describe(envelopeTimestampMs)}`);
  if (bytes.length > MAX_PAYLOAD_BYTES) throw new SessionError('too_large', 'payload exceeds the size limit');
  let payload: MessagePayload;
  try {
    payload = fromBinary(MessagePayloadSchema, bytes, { readUnknownFields: false });
  } catch (cause) {
    throw new SessionError('malformed', 'payload does not decode', { cause });
  }
  if (!KNOWN_TYPES.has(payload.type)) throw new SessionError('malformed', 'payload has an unknown or UNSPECIFIED type');
  if (payload.timestampMs !== envelopeTimestampMs) throw new SessionError('malformed', 'payload timestamp differs from the envelope timestamp');
  if (payload.handoffHash.length !== 0 && payload.handoffHash.length !== HASH_BYTES) throw new SessionError('malformed', 'handoff_hash must be empty or 32 bytes');
  if (payload.parentMessageHash.length !== 0 && payload.parentMessageHash.length !== HASH_BYTES) {
    throw new SessionError('malformed', 'parent_message_hash must be empty or 32 bytes');
  }
  return payload;
}
