/**
 * The identity-bound handshake (docs/PROTOCOL.md §5): Noise_XX_25519_ChaChaPoly_BLAKE2b
 * carried in HandshakeFrames, with the prologue binding version, session id,
 * both agent ids and the rekey threshold, and the payloads of messages 2 and 3
 * carrying an AgentCertificate and an Ed25519 signature over the Noise static
 * key. A Session exists only after the peer's certificate, validity,
 * revocation status and binding signature have all been checked.
 *
 *   -> e                       frame step 1, empty payload
 *   <- e, ee, s, es            frame step 2, payload = responder's HandshakePayload
 *   -> s, se                   frame step 3, payload = initiator's HandshakePayload
 */
import { SecretKey, layout, type ParleyCrypto, type X25519KeyPair } from '@parley/crypto-core';
import {
  MAX_CERTIFICATE_BYTES,
  TrustBundle,
  isIdentityError,
  verifyCertificate,
  type RevocationChecker,
  type VerifiedCertificate,
} from '@parley/identity';
import {
  BinaryReader,
  HandshakeFrameSchema,
  HandshakePayloadSchema,
  WireType,
  create,
  fromBinary,
  toBinary,
  type HandshakeFrame,
} from '@parley/proto';
import { asSessionError, assertCrypto, check, describe, malformed } from './assert.js';
import { PROTOCOL_VERSION, SESSION_ID_BYTES, SIGNATURE_BYTES, isAgentId } from './envelope.js';
import { SessionError, detailOf, isSessionError, type SessionErrorCode } from './errors.js';
import { ignoreEvents, type SecurityEventSink } from './events.js';
import { DEFAULT_REKEY_THRESHOLD, DirectionKeys, assertRekeyThreshold, MAX_REKEY_THRESHOLD } from './key-schedule.js';
import type { MessageHashCache } from './message-cache.js';
import { HandshakeState, NOISE_MAX_MESSAGE_BYTES, type HandshakeResult } from './noise/handshake-state.js';
import { PARLEY_NOISE_PROTOCOL, parseProtocolName } from './noise/protocol.js';
import { Session, type LocalIdentity, type SkewLimits } from './session.js';

/** Largest encoded HandshakePayload accepted (certificate + signature). */
export const MAX_HANDSHAKE_PAYLOAD_BYTES = 8192;
const ROLE_INITIATOR = 1;
const ROLE_RESPONDER = 2;

export interface HandshakeConfig {
  readonly identity: LocalIdentity;
  readonly trustBundle: TrustBundle;
  readonly revocations?: RevocationChecker;
  /** Initiator's proposed messages per epoch; the responder accepts any value in 1..1,000,000. */
  readonly rekeyThreshold?: number;
  readonly clock?: () => number;
  readonly events?: SecurityEventSink;
  readonly skew?: SkewLimits;
  readonly messageCache?: MessageHashCache;
  /**
   * Noise static key pair. Default: a fresh one per handshake (the binding
   * signature makes it this agent's for this session only).
   */
  readonly staticKeyPair?: X25519KeyPair;
}

/** The Noise prologue (docs/PROTOCOL.md §5.2). */
export function noisePrologue(sessionId: Uint8Array, initiatorId: string, responderId: string, rekeyThreshold: number): Uint8Array {
  return asSessionError('noise prologue', () =>
    layout('parley/v1/noise-prologue').u32(PROTOCOL_VERSION).fixed(sessionId, SESSION_ID_BYTES, 'session_id').str(initiatorId).str(responderId).u32(rekeyThreshold).bytes(),
  );
}

/** The bytes an agent's identity key signs to bind its Noise static key (docs/PROTOCOL.md §5.3). */
export function identityBindingBytes(sessionId: Uint8Array, agentId: string, role: 1 | 2, noiseStaticKey: Uint8Array): Uint8Array {
  return asSessionError('identity binding', () =>
    layout('parley/v1/identity-binding').fixed(sessionId, SESSION_ID_BYTES, 'session_id').str(agentId).u8(role).fixed(noiseStaticKey, 32, 'noise static key').bytes(),
  );
}

/** Structural checks on a frame before any cryptography. Total: never throws anything but SessionError. */
export function assertFrameShape(frame: HandshakeFrame, step: 1 | 2 | 3): void {
  if (typeof frame !== 'object' || frame === null || frame.$typeName !== 'parley.v1.HandshakeFrame') {
    throw new SessionError('malformed', 'not a HandshakeFrame');
  }
  if (typeof frame.version !== 'number') throw new SessionError('malformed', 'version must be a number');
  if (frame.version !== PROTOCOL_VERSION) throw new SessionError('unsupported_version', `handshake version ${frame.version} is not supported`);
  if (check.bytes(frame.sessionId, 'session_id').length !== SESSION_ID_BYTES) throw new SessionError('malformed', `session_id must be ${SESSION_ID_BYTES} bytes`);
  if (!isAgentId(frame.senderId) || !isAgentId(frame.recipientId)) throw new SessionError('malformed', 'frame agent ids are not valid');
  if (frame.senderId === frame.recipientId) throw new SessionError('malformed', 'frame sender and recipient are the same agent');
  // §5.1: a step outside 1..3 is a field out of range (malformed, as the gateway's §10.3 step 1 says);
  // a defined step this receiver is not waiting for is a wrong turn (handshake_failed).
  if (frame.step !== 1 && frame.step !== 2 && frame.step !== 3) throw new SessionError('malformed', `handshake step must be 1, 2 or 3, got ${frame.step}`);
  if (frame.step !== step) throw new SessionError('handshake_failed', `expected handshake step ${step}, got ${frame.step}`);
  if (check.bytes(frame.noiseMessage, 'noise_message').length < 32 || frame.noiseMessage.length > NOISE_MAX_MESSAGE_BYTES) {
    throw new SessionError('malformed', 'noise_message length out of range');
  }
  if (typeof frame.rekeyThreshold !== 'number' || frame.rekeyThreshold < 1 || frame.rekeyThreshold > MAX_REKEY_THRESHOLD) throw new SessionError('malformed', 'rekey_threshold out of range');
}

interface Context {
  readonly crypto: ParleyCrypto;
  readonly config: HandshakeConfig;
  readonly clock: () => number;
  readonly events: SecurityEventSink;
}

/**
 * The handshake's context, after checking the types of its configuration: a genuine crypto, an identity
 * (a valid agent id, a SecretKey, a certificate), a TrustBundle. Whether the key is the certificate's is
 * the SessionManager's check, at construction (`assertLocalIdentity`): a handshake driven directly is the
 * caller's — tests play impostors through it. @throws SessionError `malformed`
 */
function context(crypto: ParleyCrypto, config: HandshakeConfig): Context {
  assertCrypto(crypto);
  check.object(config, 'handshake config');
  const identity = check.object(config.identity, 'handshake.identity');
  if (!isAgentId(identity['agentId'])) throw new SessionError('malformed', 'local agent id is not valid');
  if (!(identity['signingKey'] instanceof SecretKey)) malformed(`handshake.identity.signingKey must be a SecretKey, got ${describe(identity['signingKey'])}`);
  check.object(identity['certificate'], 'handshake.identity.certificate');
  if (!(config.trustBundle instanceof TrustBundle)) malformed(`handshake.trustBundle must be a TrustBundle, got ${describe(config.trustBundle)}`);
  if (config.clock !== undefined) check.func(config.clock, 'handshake.clock');
  if (config.events !== undefined) check.func(config.events, 'handshake.events');
  return { crypto, config, clock: config.clock ?? Date.now, events: config.events ?? ignoreEvents };
}

/**
 * Runs one Noise operation. §5.1: every error the Noise layer reports (a failed decryption, a message too
 * short for its tokens, a low-order DH result) is `handshake_failed`, whatever the library calls it, so that
 * implementations over different Noise libraries agree on the code.
 */
function noise<T>(fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    if (isSessionError(cause, 'handshake_failed')) throw cause;
    throw new SessionError('handshake_failed', 'Noise rejected the handshake message', { cause });
  }
}

function report(ctx: Context, error: unknown, sessionId: Uint8Array | undefined, peerId: string | undefined): SessionError {
  let e: SessionError;
  if (isSessionError(error)) e = error;
  else if (isIdentityError(error)) e = new SessionError(error.code as SessionErrorCode, detailOf(error), { cause: error });
  else e = new SessionError('handshake_failed', 'handshake rejected', { cause: error });
  ctx.events({
    kind: 'security',
    code: e.code,
    stage: 'handshake',
    sessionId: sessionId && sessionId.length === SESSION_ID_BYTES ? Buffer.from(sessionId).toString('hex') : undefined,
    senderId: peerId,
    recipientId: ctx.config.identity.agentId,
    atMs: ctx.clock(),
    detail: e.message,
  });
  return e;
}

function ownPayload(ctx: Context, sessionId: Uint8Array, role: 1 | 2, staticKey: Uint8Array): Uint8Array {
  const { identity } = ctx.config;
  const signature = ctx.crypto.ed25519.sign(identityBindingBytes(sessionId, identity.agentId, role, staticKey), identity.signingKey);
  return toBinary(HandshakePayloadSchema, create(HandshakePayloadSchema, { certificate: identity.certificate, identitySignature: signature }));
}

/**
 * Verifies the peer's HandshakePayload: certificate (issuer, signature,
 * validity, expected agent id, revocation), then the binding signature over
 * the Noise static key the handshake authenticated.
 */
function verifyPeerPayload(
  ctx: Context,
  bytes: Uint8Array,
  sessionId: Uint8Array,
  expectedPeerId: string,
  role: 1 | 2,
  remoteStatic: Uint8Array,
): { verified: VerifiedCertificate; certificate: NonNullable<ReturnType<typeof decodeHandshakePayload>['certificate']> } {
  const payload = decodeHandshakePayload(bytes);
  const certificate = payload.certificate;
  if (certificate === undefined) throw new SessionError('malformed', 'handshake payload has no certificate');
  if (payload.identitySignature.length !== SIGNATURE_BYTES) throw new SessionError('malformed', 'identity signature must be 64 bytes');
  const verified = verifyCertificate(ctx.crypto, certificate, {
    trustBundle: ctx.config.trustBundle,
    nowMs: ctx.clock(),
    expectedAgentId: expectedPeerId,
    ...(ctx.config.revocations === undefined ? {} : { revocations: ctx.config.revocations }),
  });
  const binding = identityBindingBytes(sessionId, verified.agentId, role, remoteStatic);
  if (!ctx.crypto.ed25519.verify(payload.identitySignature, binding, verified.identityPublicKey)) {
    throw new SessionError('bad_binding', 'identity signature does not bind this Noise static key');
  }
  return { verified, certificate };
}

function decodeHandshakePayload(bytes: Uint8Array) {
  if (bytes.length === 0 || bytes.length > MAX_HANDSHAKE_PAYLOAD_BYTES) throw new SessionError('malformed', 'handshake payload size out of range');
  let payload;
  try {
    // Unknown fields are kept (the default): the payload's own are ignored (§5.3), the certificate's are
    // refused as `malformed` by verifyCertificate (§3.2: unsigned data must not travel with signed data).
    // `readUnknownFields: false` would drop them from the nested certificate too, and nothing would see them.
    payload = fromBinary(HandshakePayloadSchema, bytes);
  } catch (cause) {
    throw new SessionError('malformed', 'handshake payload does not decode', { cause });
  }
  // §3.2: an encoded certificate is at most 4096 bytes — its bytes as sent, not a re-encoding of them.
  if (certificateBytes(bytes) > MAX_CERTIFICATE_BYTES) {
    throw new SessionError('malformed', `the certificate in the handshake payload is over ${MAX_CERTIFICATE_BYTES} bytes`);
  }
  return payload;
}

/**
 * Bytes of the certificate field (HandshakePayload field 1) as sent. Every occurrence counts: protobuf
 * merges repeated occurrences of a message field into the one certificate that is then verified.
 */
function certificateBytes(payload: Uint8Array): number {
  const reader = new BinaryReader(payload);
  let total = 0;
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1 && wireType === WireType.LengthDelimited) total += reader.bytes().length;
    else reader.skip(wireType, fieldNo);
  }
  return total;
}

function makeSession(
  ctx: Context,
  role: 'initiator' | 'responder',
  sessionId: Uint8Array,
  threshold: number,
  result: HandshakeResult,
  peer: { verified: VerifiedCertificate; certificate: import('@parley/proto').AgentCertificate },
): Session {
  const { config, crypto } = ctx;
  return new Session(crypto, {
    sessionId,
    role,
    local: config.identity,
    peer: peer.verified,
    peerCertificate: peer.certificate,
    handshakeHash: result.handshakeHash,
    send: new DirectionKeys(crypto, result.send, threshold),
    receive: new DirectionKeys(crypto, result.receive, threshold),
    createdAtMs: ctx.clock(),
    events: ctx.events,
    clock: ctx.clock,
    // §8.1 step 2: the peer's certificate is re-checked on every message (validity, issuer bound, revocation).
    ...(config.revocations === undefined ? {} : { revocations: config.revocations }),
    // … and its issuer against the trust bundle as it is then (a live bundle follows issuer rotations).
    trustBundle: config.trustBundle,
    ...(config.skew === undefined ? {} : { skew: config.skew }),
    ...(config.messageCache === undefined ? {} : { messageCache: config.messageCache }),
  });
}

function frame(sessionId: Uint8Array, senderId: string, recipientId: string, step: 1 | 2 | 3, noiseMessage: Uint8Array, rekeyThreshold: number): HandshakeFrame {
  return create(HandshakeFrameSchema, { version: PROTOCOL_VERSION, sessionId, senderId, recipientId, step, noiseMessage, rekeyThreshold });
}

/** What both sides share between their first and last frame. */
abstract class PendingHandshake {
  protected readonly ctx: Context;
  protected readonly hs: HandshakeState;
  protected readonly staticKey: X25519KeyPair;
  readonly sessionId: Uint8Array;
  readonly peerId: string;
  readonly rekeyThreshold: number;
  readonly startedAtMs: number;
  #done = false;

  protected constructor(ctx: Context, hs: HandshakeState, staticKey: X25519KeyPair, sessionId: Uint8Array, peerId: string, threshold: number) {
    this.ctx = ctx;
    this.hs = hs;
    this.staticKey = staticKey;
    this.sessionId = sessionId;
    this.peerId = peerId;
    this.rekeyThreshold = threshold;
    this.startedAtMs = ctx.clock();
  }

  /** Abandons the handshake, wiping its keys. */
  abort(): void {
    this.#done = true;
    this.hs.destroy();
    this.releaseStatic();
  }

  /** A handshake accepts exactly one final frame. */
  protected begin(): void {
    if (this.#done) throw new SessionError('handshake_failed', 'handshake already finished');
    this.#done = true;
  }

  /** Checks the routing of the final frame against the handshake. */
  protected checkRouting(f: HandshakeFrame): void {
    if (!this.ctx.crypto.constantTimeEqual(f.sessionId, this.sessionId)) throw new SessionError('unknown_session', 'frame for another session');
    if (f.senderId !== this.peerId || f.recipientId !== this.ctx.config.identity.agentId) {
      throw new SessionError('identity_mismatch', 'frame routing does not match the handshake');
    }
    if (f.rekeyThreshold !== this.rekeyThreshold) throw new SessionError('malformed', 'rekey threshold changed mid-handshake');
  }

  /** Poisons the handshake and reports the rejection. */
  protected fail(error: unknown): SessionError {
    this.hs.destroy();
    return report(this.ctx, error, this.sessionId, this.peerId);
  }

  /** Wipes a per-handshake static key (never a caller-provided one). */
  protected releaseStatic(): void {
    if (this.ctx.config.staticKeyPair === undefined) this.staticKey.secretKey.wipe();
  }
}

/** Initiator side, between sending step 1 and receiving step 2. */
export class InitiatorHandshake extends PendingHandshake {
  private constructor(ctx: Context, hs: HandshakeState, staticKey: X25519KeyPair, sessionId: Uint8Array, peerId: string, threshold: number) {
    super(ctx, hs, staticKey, sessionId, peerId, threshold);
  }

  /**
   * Starts a handshake with `peerId`: returns the handshake and frame 1 to send.
   * @throws SessionError `malformed` for an invalid peer id, the agent's own id, or an invalid threshold
   */
  static start(crypto: ParleyCrypto, config: HandshakeConfig, peerId: string, sessionId?: Uint8Array): { handshake: InitiatorHandshake; frame: HandshakeFrame } {
    const ctx = context(crypto, config);
    if (!isAgentId(peerId)) throw new SessionError('malformed', 'peer id is not a valid agent id');
    if (peerId === config.identity.agentId) throw new SessionError('malformed', `'${peerId}' is this agent itself: an agent has no session with itself`);
    const threshold = assertRekeyThreshold(config.rekeyThreshold ?? DEFAULT_REKEY_THRESHOLD);
    const id = sessionId ?? crypto.randomBytes(SESSION_ID_BYTES);
    if (check.bytes(id, 'session id').length !== SESSION_ID_BYTES) throw new SessionError('malformed', 'session id must be 16 bytes');
    const staticKey = config.staticKeyPair ?? crypto.x25519.generateKeyPair();
    const hs = new HandshakeState(crypto, {
      protocol: parseProtocolName(PARLEY_NOISE_PROTOCOL, crypto),
      initiator: true,
      prologue: noisePrologue(id, config.identity.agentId, peerId, threshold),
      staticKeyPair: staticKey,
    });
    const handshake = new InitiatorHandshake(ctx, hs, staticKey, id, peerId, threshold);
    const { message } = hs.writeMessage(new Uint8Array(0)); // -> e
    return { handshake, frame: frame(id, config.identity.agentId, peerId, 1, message, threshold) };
  }

  /**
   * Processes frame 2; on success returns frame 3 to send and the established Session.
   * @throws SessionError with the rejection code (the handshake is then unusable)
   */
  receive(frame2: HandshakeFrame): { frame: HandshakeFrame; session: Session } {
    try {
      this.begin();
      assertFrameShape(frame2, 2);
      this.checkRouting(frame2);
      // <- e, ee, s, es
      const { payload } = noise(() => this.hs.readMessage(frame2.noiseMessage));
      const remoteStatic = this.hs.remoteStaticKey;
      if (remoteStatic === undefined) throw new SessionError('handshake_failed', 'no remote static key');
      const peer = verifyPeerPayload(this.ctx, payload, this.sessionId, this.peerId, ROLE_RESPONDER, remoteStatic);
      // -> s, se
      const own = ownPayload(this.ctx, this.sessionId, ROLE_INITIATOR, this.staticKey.publicKey);
      const written = noise(() => this.hs.writeMessage(own));
      if (written.result === undefined) throw new SessionError('handshake_failed', 'handshake did not complete');
      const session = makeSession(this.ctx, 'initiator', this.sessionId, this.rekeyThreshold, written.result, peer);
      const me = this.ctx.config.identity.agentId;
      return { frame: frame(this.sessionId, me, this.peerId, 3, written.message, this.rekeyThreshold), session };
    } catch (error) {
      throw this.fail(error);
    } finally {
      this.releaseStatic();
    }
  }
}

/** Responder side, between sending step 2 and receiving step 3. */
export class ResponderHandshake extends PendingHandshake {
  private constructor(ctx: Context, hs: HandshakeState, staticKey: X25519KeyPair, frame1: HandshakeFrame) {
    super(ctx, hs, staticKey, frame1.sessionId.slice(), frame1.senderId, frame1.rekeyThreshold);
  }

  /**
   * Answers frame 1: returns the handshake and frame 2 to send.
   * @throws SessionError with the rejection code
   */
  static accept(crypto: ParleyCrypto, config: HandshakeConfig, frame1: HandshakeFrame): { handshake: ResponderHandshake; frame: HandshakeFrame } {
    const ctx = context(crypto, config);
    let staticKey: X25519KeyPair | undefined;
    try {
      assertFrameShape(frame1, 1);
      const me = config.identity.agentId;
      if (frame1.recipientId !== me) throw new SessionError('identity_mismatch', 'handshake addressed to another agent');
      const threshold = assertRekeyThreshold(frame1.rekeyThreshold);
      staticKey = config.staticKeyPair ?? crypto.x25519.generateKeyPair();
      const hs = new HandshakeState(crypto, {
        protocol: parseProtocolName(PARLEY_NOISE_PROTOCOL, crypto),
        initiator: false,
        prologue: noisePrologue(frame1.sessionId, frame1.senderId, me, threshold),
        staticKeyPair: staticKey,
      });
      const handshake = new ResponderHandshake(ctx, hs, staticKey, frame1);
      // -> e (payload must be empty: nothing is authenticated yet)
      const { payload } = noise(() => hs.readMessage(frame1.noiseMessage));
      if (payload.length !== 0) throw new SessionError('malformed', 'handshake message 1 must carry no payload');
      // <- e, ee, s, es
      const own = ownPayload(ctx, handshake.sessionId, ROLE_RESPONDER, staticKey.publicKey);
      const { message } = noise(() => hs.writeMessage(own));
      return { handshake, frame: frame(handshake.sessionId, me, frame1.senderId, 2, message, threshold) };
    } catch (error) {
      if (staticKey !== undefined && config.staticKeyPair === undefined) staticKey.secretKey.wipe();
      throw report(ctx, error, frame1?.sessionId, typeof frame1?.senderId === 'string' ? frame1.senderId : undefined);
    }
  }

  /**
   * Processes frame 3; on success returns the established Session.
   * @throws SessionError with the rejection code (the handshake is then unusable)
   */
  receive(frame3: HandshakeFrame): Session {
    let completed: HandshakeResult | undefined;
    try {
      this.begin();
      assertFrameShape(frame3, 3);
      this.checkRouting(frame3);
      // -> s, se
      const { payload, result } = noise(() => this.hs.readMessage(frame3.noiseMessage));
      completed = result;
      if (result === undefined) throw new SessionError('handshake_failed', 'handshake did not complete');
      const peer = verifyPeerPayload(this.ctx, payload, this.sessionId, this.peerId, ROLE_INITIATOR, result.remoteStaticKey);
      return makeSession(this.ctx, 'responder', this.sessionId, this.rekeyThreshold, result, peer);
    } catch (error) {
      // The peer failed a check after Noise completed: the transport keys must not outlive this.
      completed?.send.wipe();
      completed?.receive.wipe();
      throw this.fail(error);
    } finally {
      this.releaseStatic();
    }
  }
}
