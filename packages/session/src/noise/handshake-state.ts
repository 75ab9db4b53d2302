/**
 * Noise HandshakeState (Noise spec rev. 34, §5.3), driven by a pattern held as
 * data (patterns.ts). A handshake exposes only writeMessage/readMessage; the
 * transport CipherStates exist only in the HandshakeResult returned by the
 * final message, so a transport call on a handshake cannot compile.
 *
 * Failure policy (poisoning): any error while reading or writing a message —
 * bad length, failed decryption, a low-order key, a wrong turn — wipes every
 * key this state holds and marks it failed; every later call throws
 * `handshake_failed`. There is no rollback: a peer that sent a bad message must
 * start a new handshake. (flynn/noise and snow document the same choice.)
 */
import { SecretKey, type ParleyCrypto, type X25519KeyPair } from '@parley/crypto-core';
import { assertCrypto, check, malformed } from '../assert.js';
import { SessionError, isSessionError } from '../errors.js';
import { CipherState } from './cipher-state.js';
import type { Token } from './patterns.js';
import { assertNoiseProtocol, type NoiseProtocol } from './protocol.js';
import { SymmetricState } from './symmetric-state.js';

/** §3: every Noise message is at most 65535 bytes. */
export const NOISE_MAX_MESSAGE_BYTES = 65535;
const DHLEN = 32;
const TAGLEN = 16;

export interface HandshakeOptions {
  readonly protocol: NoiseProtocol;
  readonly initiator: boolean;
  readonly prologue: Uint8Array;
  /** Local static key pair (s). */
  readonly staticKeyPair: X25519KeyPair;
  /**
   * Test vectors only: the ephemeral key pair to use instead of a random one.
   * Never set this in production: a reused ephemeral key destroys forward secrecy.
   */
  readonly fixedEphemeralKeyForTestingOnly?: X25519KeyPair;
}

/** What a completed handshake yields. */
export interface HandshakeResult {
  /** CipherState for messages this side sends (c1 for the initiator, c2 for the responder). */
  readonly send: CipherState;
  /** CipherState for messages this side receives. */
  readonly receive: CipherState;
  /** h after the last handshake message: a unique channel binding. */
  readonly handshakeHash: Uint8Array;
  /** The peer's static public key (rs). */
  readonly remoteStaticKey: Uint8Array;
}

export interface WriteResult {
  readonly message: Uint8Array;
  /** Set when this was the last handshake message. */
  readonly result?: HandshakeResult;
}

export interface ReadResult {
  readonly payload: Uint8Array;
  readonly result?: HandshakeResult;
}

export type HandshakeStatus = 'in_progress' | 'complete' | 'failed';

/** Asserts an X25519 key pair: a 32-byte public key and its SecretKey. */
function assertKeyPair(value: unknown, name: string): X25519KeyPair {
  const pair = check.object(value, name);
  check.bytes(pair['publicKey'], `${name}.publicKey`, DHLEN);
  if (!(pair['secretKey'] instanceof SecretKey)) malformed(`${name}.secretKey must be a SecretKey`);
  return value as X25519KeyPair;
}

export class HandshakeState {
  readonly #crypto: ParleyCrypto;
  readonly #protocol: NoiseProtocol;
  readonly #initiator: boolean;
  readonly #ss: SymmetricState;
  readonly #s: X25519KeyPair;
  #e: X25519KeyPair | undefined;
  #rs: Uint8Array | undefined;
  #re: Uint8Array | undefined;
  #fixedE: X25519KeyPair | undefined;
  #index = 0;
  #status: HandshakeStatus = 'in_progress';

  /** Initialize(handshake_pattern, initiator, prologue, s, e, rs, re) (§5.3). */
  constructor(crypto: ParleyCrypto, options: HandshakeOptions) {
    this.#crypto = assertCrypto(crypto);
    check.object(options, 'options');
    this.#protocol = assertNoiseProtocol(options.protocol, 'options.protocol');
    if (typeof options.initiator !== 'boolean') malformed('options.initiator must be a boolean');
    this.#initiator = options.initiator;
    check.bytes(options.prologue, 'options.prologue');
    this.#s = assertKeyPair(options.staticKeyPair, 'options.staticKeyPair');
    this.#fixedE = options.fixedEphemeralKeyForTestingOnly === undefined ? undefined : assertKeyPair(options.fixedEphemeralKeyForTestingOnly, 'options.fixedEphemeralKeyForTestingOnly');
    this.#ss = new SymmetricState(crypto, options.protocol.hash, options.protocol.name);
    this.#ss.mixHash(options.prologue);
    // XX has no pre-messages; a pattern with them would mix the public keys here (§5.3).
    if (options.protocol.pattern.initiatorPreMessage.length > 0 || options.protocol.pattern.responderPreMessage.length > 0) {
      throw new SessionError('malformed', 'pre-message patterns are not supported');
    }
  }

  get status(): HandshakeStatus {
    return this.#status;
  }

  get isInitiator(): boolean {
    return this.#initiator;
  }

  /** True when the next message is ours to write. */
  isMyTurn(): boolean {
    return this.#status === 'in_progress' && this.#index % 2 === (this.#initiator ? 0 : 1);
  }

  /** The peer's static key once received (before completion, e.g. after XX message 2 on the initiator). */
  get remoteStaticKey(): Uint8Array | undefined {
    return this.#rs?.slice();
  }

  /** The running handshake hash h (for channel binding; final after the last message). */
  handshakeHash(): Uint8Array {
    return this.#ss.handshakeHash();
  }

  /** WriteMessage(payload, message_buffer) (§5.3). */
  writeMessage(payload: Uint8Array): WriteResult {
    this.#checkTurn(true);
    return this.#guard(() => {
      const parts: Uint8Array[] = [];
      for (const token of this.#tokens()) {
        switch (token) {
          case 'e': {
            // -> e: e = GENERATE_KEYPAIR(); append e.public; MixHash(e.public)
            this.#e = this.#fixedE ?? this.#crypto.x25519.generateKeyPair();
            this.#fixedE = undefined;
            parts.push(this.#e.publicKey);
            this.#ss.mixHash(this.#e.publicKey);
            break;
          }
          case 's':
            // -> s: append EncryptAndHash(s.public)
            parts.push(this.#ss.encryptAndHash(this.#s.publicKey));
            break;
          default:
            this.#mixDh(token);
        }
      }
      parts.push(this.#ss.encryptAndHash(payload));
      const message = concat(parts);
      if (message.length > NOISE_MAX_MESSAGE_BYTES) {
        throw new SessionError('too_large', `Noise message of ${message.length} bytes exceeds ${NOISE_MAX_MESSAGE_BYTES}`);
      }
      this.#index += 1;
      const result = this.#finishIfDone();
      return result === undefined ? { message } : { message, result };
    });
  }

  /** ReadMessage(message, payload_buffer) (§5.3). */
  readMessage(message: Uint8Array): ReadResult {
    this.#checkTurn(false);
    return this.#guard(() => {
      if (!(message instanceof Uint8Array)) throw new SessionError('malformed', 'handshake message must be bytes');
      if (message.length > NOISE_MAX_MESSAGE_BYTES) {
        throw new SessionError('too_large', `Noise message of ${message.length} bytes exceeds ${NOISE_MAX_MESSAGE_BYTES}`);
      }
      let offset = 0;
      const take = (n: number, what: string): Uint8Array => {
        if (message.length - offset < n) throw new SessionError('malformed', `handshake message too short for ${what}`);
        const out = message.subarray(offset, offset + n);
        offset += n;
        return out;
      };
      for (const token of this.#tokens()) {
        switch (token) {
          case 'e': {
            // <- e: re = next DHLEN bytes; MixHash(re.public)
            this.#re = take(DHLEN, 'e').slice();
            this.#ss.mixHash(this.#re);
            break;
          }
          case 's': {
            // <- s: rs = DecryptAndHash(next DHLEN + 16 bytes if k is set, else DHLEN)
            const len = this.#ss.cipherState.hasKey() ? DHLEN + TAGLEN : DHLEN;
            this.#rs = this.#ss.decryptAndHash(take(len, 's'));
            break;
          }
          default:
            this.#mixDh(token);
        }
      }
      const payload = this.#ss.decryptAndHash(message.subarray(offset));
      this.#index += 1;
      const result = this.#finishIfDone();
      return result === undefined ? { payload } : { payload, result };
    });
  }

  /** Abandons the handshake and wipes its keys. */
  destroy(): void {
    this.#fail();
  }

  toString(): string {
    return `HandshakeState(${this.#protocol.name}, ${this.#initiator ? 'initiator' : 'responder'}, message ${this.#index}, ${this.#status})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  #tokens(): readonly Token[] {
    const tokens = this.#protocol.pattern.messages[this.#index];
    if (tokens === undefined) throw new SessionError('handshake_failed', 'handshake already complete');
    return tokens;
  }

  #checkTurn(writing: boolean): void {
    if (this.#status !== 'in_progress') {
      throw new SessionError('handshake_failed', `handshake is ${this.#status}`);
    }
    if (this.isMyTurn() !== writing) {
      this.#fail();
      throw new SessionError('handshake_failed', writing ? 'not our turn to write' : 'not our turn to read');
    }
  }

  /** ee / es / se / ss: MixKey(DH(...)) with the roles of §5.3. */
  #mixDh(token: Token): void {
    const need = <T>(v: T | undefined, what: string): T => {
      if (v === undefined) throw new SessionError('handshake_failed', `missing ${what} for ${token}`);
      return v;
    };
    let local: SecretKey;
    let remote: Uint8Array;
    switch (token) {
      case 'ee':
        local = need(this.#e, 'e').secretKey;
        remote = need(this.#re, 're');
        break;
      case 'es': // initiator: DH(e, rs); responder: DH(s, re)
        [local, remote] = this.#initiator ? [need(this.#e, 'e').secretKey, need(this.#rs, 'rs')] : [this.#s.secretKey, need(this.#re, 're')];
        break;
      case 'se': // initiator: DH(s, re); responder: DH(e, rs)
        [local, remote] = this.#initiator ? [this.#s.secretKey, need(this.#re, 're')] : [need(this.#e, 'e').secretKey, need(this.#rs, 'rs')];
        break;
      case 'ss':
        local = this.#s.secretKey;
        remote = need(this.#rs, 'rs');
        break;
      default:
        throw new SessionError('handshake_failed', `unexpected token ${token}`);
    }
    const shared = this.#crypto.x25519.dh(local, remote);
    try {
      this.#ss.mixKey(shared);
    } finally {
      shared.wipe();
    }
  }

  #finishIfDone(): HandshakeResult | undefined {
    if (this.#index < this.#protocol.pattern.messages.length) return undefined;
    const [c1, c2] = this.#ss.split(this.#crypto);
    const handshakeHash = this.#ss.handshakeHash();
    const remoteStaticKey = this.#rs;
    this.#status = 'complete';
    this.#ss.wipe();
    this.#e?.secretKey.wipe();
    if (remoteStaticKey === undefined) throw new SessionError('handshake_failed', 'no remote static key');
    return {
      send: this.#initiator ? c1 : c2,
      receive: this.#initiator ? c2 : c1,
      handshakeHash,
      remoteStaticKey,
    };
  }

  #guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (cause) {
      this.#fail();
      if (isSessionError(cause)) throw cause;
      const code = (cause as { code?: string }).code;
      if (code === 'weak_public_key') throw new SessionError('handshake_failed', 'peer sent a low-order key', { cause });
      throw new SessionError('handshake_failed', 'handshake message rejected', { cause });
    }
  }

  #fail(): void {
    this.#status = this.#status === 'complete' ? 'complete' : 'failed';
    this.#ss.wipe();
    this.#e?.secretKey.wipe();
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
