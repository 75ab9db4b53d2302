/**
 * Export/import of a session's state, sealed under a local key, so a
 * restarted process carries on — and still rejects every replay of a message
 * it accepted before the restart (the replay window travels with the keys).
 *
 * Sealed form: "PSS1" ‖ salt(32) ‖ ChaCha20-Poly1305(k, nonce 0, ad = "PSS1" ‖ salt, JSON)
 * with k = BLAKE2b-256(key = localKey, data = "parley/v1/sealed-session-state" ‖ salt)
 * (libsodium's keyed BLAKE2b): a fresh key per export, so nonce 0 is never reused.
 *
 * Sending after import skips to the first counter of the epoch two after the
 * exported one, so a stale snapshot can never make this side reuse a
 * (key, nonce) pair the previous process already used — provided the snapshot
 * is refreshed at least once per epoch (SessionManager does so).
 */
import { SecretKey, concatBytes, fromBase64Url, toBase64Url, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, type RevocationChecker, type VerifiedCertificate } from '@parley/identity';
import { AgentCertificateSchema, fromBinary, toBinary } from '@parley/proto';
import { SessionError } from './errors.js';
import type { SecurityEventSink } from './events.js';
import { DirectionKeys } from './key-schedule.js';
import type { MessageHashCache } from './message-cache.js';
import { RING_BLOCKS, ReplayWindow } from './replay-window.js';
import { Session, type LocalIdentity, type SkewLimits } from './session.js';

export const SEALED_STATE_VERSION = 1;
const MAGIC = new TextEncoder().encode('PSS1');
const SALT = 32;
const CONTEXT = new TextEncoder().encode('parley/v1/sealed-session-state');
/** Epochs the send side skips on import (see module comment). */
export const SEND_EPOCH_SKIP_ON_IMPORT = 2;

interface EpochJson {
  epoch: number;
  key: string;
}

interface StateJson {
  v: number;
  sessionId: string;
  role: 'initiator' | 'responder';
  localId: string;
  peer: { agentId: string; identityPublicKey: string; agentType: string; capabilities: string[]; validFromMs: number; validUntilMs: number; serial: string; issuerKeyId: string; didKey: string };
  peerCertificate: string;
  handshakeHash: string;
  threshold: number;
  sendCounter: number;
  send: EpochJson[];
  receive: EpochJson[];
  window: { top: number; ring: string };
  createdAtMs: number;
  lastActivityMs: number;
}

function sealKey(crypto: ParleyCrypto, localKey: SecretKey, salt: Uint8Array): SecretKey {
  return SecretKey.adopt(crypto.blake2b(concatBytes(CONTEXT, salt), 32, localKey), 'aead');
}

/** Seals a live session's state under `localKey` (32 bytes). */
export function exportSessionState(crypto: ParleyCrypto, session: Session, localKey: SecretKey): Uint8Array {
  if (!(localKey instanceof SecretKey) || localKey.length !== 32) throw new SessionError('malformed', 'state key must be a 32-byte SecretKey');
  const { send, receive, window, lastActivityMs } = session.unsafeExportInternals();
  const w = window.exportState();
  // The key copies unsafeExport makes are wiped once encoded (the JSON string itself cannot be: see the README).
  const epochs = (dk: DirectionKeys): EpochJson[] =>
    dk.unsafeExport().map((e) => {
      try {
        return { epoch: e.epoch, key: toBase64Url(e.key) };
      } finally {
        crypto.wipe(e.key);
      }
    });
  const p = session.peer;
  const state: StateJson = {
    v: SEALED_STATE_VERSION,
    sessionId: toBase64Url(session.id),
    role: session.role,
    localId: session.local.agentId,
    peer: {
      agentId: p.agentId,
      identityPublicKey: toBase64Url(p.identityPublicKey),
      agentType: p.agentType,
      capabilities: [...p.capabilities],
      validFromMs: p.validFromMs,
      validUntilMs: p.validUntilMs,
      serial: toBase64Url(p.serial),
      issuerKeyId: toBase64Url(p.issuerKeyId),
      didKey: p.didKey,
    },
    peerCertificate: toBase64Url(toBinary(AgentCertificateSchema, session.peerCertificate)),
    handshakeHash: toBase64Url(session.handshakeHash),
    threshold: session.rekeyThreshold,
    sendCounter: session.sendCounter,
    send: epochs(send),
    receive: epochs(receive),
    window: { top: w.top, ring: toBase64Url(new Uint8Array(w.ring.buffer, w.ring.byteOffset, w.ring.byteLength)) },
    createdAtMs: session.createdAtMs,
    lastActivityMs,
  };
  const plaintext = new TextEncoder().encode(JSON.stringify(state));
  const salt = crypto.randomBytes(SALT);
  const key = sealKey(crypto, localKey, salt);
  try {
    const header = concatBytes(MAGIC, salt);
    return concatBytes(header, crypto.aead.seal(key, 0n, plaintext, header));
  } finally {
    key.wipe();
    plaintext.fill(0);
  }
}

export interface ImportOptions {
  readonly identity: LocalIdentity;
  readonly clock?: () => number;
  readonly events?: SecurityEventSink;
  readonly skew?: SkewLimits;
  readonly messageCache?: MessageHashCache;
  /**
   * Resume sending at this counter (the owner's durable reservation mark,
   * §13) instead of skipping two epochs; never below the exported counter.
   */
  readonly resumeSendCounter?: number;
  /** The agent's revocation data: every `open` re-checks the peer against it (docs/PROTOCOL.md §8.1 step 2). */
  readonly revocations?: RevocationChecker;
  /**
   * The agent's trust bundle (a live view when it follows the registry's, §15.9): every `open` looks the
   * peer certificate's issuer up in it, as the session did before the restart (docs/PROTOCOL.md §8.1
   * step 2). The sealed state holds the issuer's key id, never a copy of its `not_after_ms`.
   */
  readonly trustBundle: TrustBundle;
}

/**
 * Opens sealed state and rebuilds the session.
 * @throws SessionError `state_corrupt` when it does not open or parse, `identity_mismatch` for another local agent,
 *   `malformed` without a trust bundle
 */
export function importSessionState(crypto: ParleyCrypto, sealed: Uint8Array, localKey: SecretKey, options: ImportOptions): Session {
  if (!(options?.trustBundle instanceof TrustBundle)) throw new SessionError('malformed', 'importing a session needs the trust bundle its peer is checked against');
  if (!(sealed instanceof Uint8Array) || sealed.length < MAGIC.length + SALT + 16) throw new SessionError('state_corrupt', 'sealed state too short');
  if (!crypto.constantTimeEqual(sealed.subarray(0, MAGIC.length), MAGIC)) throw new SessionError('state_corrupt', 'not sealed session state');
  const header = sealed.subarray(0, MAGIC.length + SALT);
  const key = sealKey(crypto, localKey, sealed.subarray(MAGIC.length, MAGIC.length + SALT));
  let state: StateJson;
  let plaintext: Uint8Array | undefined;
  try {
    plaintext = crypto.aead.open(key, 0n, sealed.subarray(header.length), header);
    state = JSON.parse(new TextDecoder().decode(plaintext)) as StateJson;
  } catch (cause) {
    throw new SessionError('state_corrupt', 'sealed state does not open', { cause });
  } finally {
    key.wipe();
    if (plaintext !== undefined) crypto.wipe(plaintext);
  }
  let send: DirectionKeys | undefined;
  let receive: DirectionKeys | undefined;
  try {
    if (state.v !== SEALED_STATE_VERSION) throw new SessionError('state_corrupt', 'unsupported sealed state version');
    if (state.localId !== options.identity.agentId) throw new SessionError('identity_mismatch', 'state belongs to another local agent');
    // DirectionKeys.fromExport copies each key into a SecretKey; the decoded bytes are wiped after.
    const directionKeys = (list: EpochJson[]): DirectionKeys => {
      const epochs = list.map((e) => ({ epoch: e.epoch, key: fromBase64Url(e.key) }));
      try {
        return DirectionKeys.fromExport(crypto, state.threshold, epochs);
      } finally {
        for (const e of epochs) crypto.wipe(e.key);
      }
    };
    send = directionKeys(state.send);
    receive = directionKeys(state.receive);
    const ringBytes = fromBase64Url(state.window.ring);
    if (ringBytes.length !== RING_BLOCKS * 4) throw new SessionError('state_corrupt', 'bad replay window');
    const window = ReplayWindow.fromState({ top: state.window.top, ring: new Uint32Array(ringBytes.buffer.slice(ringBytes.byteOffset, ringBytes.byteOffset + ringBytes.byteLength)) });
    const peer: VerifiedCertificate = {
      agentId: state.peer.agentId,
      identityPublicKey: fromBase64Url(state.peer.identityPublicKey),
      agentType: state.peer.agentType,
      capabilities: state.peer.capabilities,
      validFromMs: state.peer.validFromMs,
      validUntilMs: state.peer.validUntilMs,
      serial: fromBase64Url(state.peer.serial),
      issuerKeyId: fromBase64Url(state.peer.issuerKeyId),
      didKey: state.peer.didKey,
    };
    const resumeAt =
      options.resumeSendCounter !== undefined
        ? Math.max(state.sendCounter, options.resumeSendCounter)
        : (Math.floor(state.sendCounter / state.threshold) + SEND_EPOCH_SKIP_ON_IMPORT) * state.threshold;
    return new Session(crypto, {
      sessionId: fromBase64Url(state.sessionId),
      role: state.role,
      local: options.identity,
      peer,
      peerCertificate: fromBinary(AgentCertificateSchema, fromBase64Url(state.peerCertificate)),
      handshakeHash: fromBase64Url(state.handshakeHash),
      send,
      receive,
      sendCounter: resumeAt,
      window,
      createdAtMs: state.createdAtMs,
      lastActivityMs: state.lastActivityMs,
      ...(options.clock === undefined ? {} : { clock: options.clock }),
      ...(options.events === undefined ? {} : { events: options.events }),
      ...(options.skew === undefined ? {} : { skew: options.skew }),
      ...(options.messageCache === undefined ? {} : { messageCache: options.messageCache }),
      ...(options.revocations === undefined ? {} : { revocations: options.revocations }),
      trustBundle: options.trustBundle,
    });
  } catch (cause) {
    // Keys rebuilt before the failure are wiped: no session will ever hold them.
    send?.wipe();
    receive?.wipe();
    if (cause instanceof SessionError) throw cause;
    throw new SessionError('state_corrupt', 'sealed state does not parse', { cause });
  }
}
