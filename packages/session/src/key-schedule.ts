/**
 * Per-direction key schedule (docs/PROTOCOL.md §7).
 *
 *   k(0)   = the CipherState key from Noise Split() for this direction
 *   k(e+1) = REKEY(k(e))       — Noise §4.2: ENCRYPT(k, 2^64−1, ε, 0^32)[0..32]
 *   mk(e)  = ENCRYPT(k(e), 2^64−2, "parley/v1/hmac-key", 0^32)[0..32]
 *   epoch(counter) = floor(counter / rekeyThreshold)
 *
 * Everything is derived through operations a standard Noise library exposes on
 * a CipherState (Rekey, and encryption at an explicit nonce), never from the
 * chaining key. Message counters stay below 2^53, so the two reserved nonces
 * never collide with a message nonce.
 *
 * REKEY is one-way, so wiping k(e) for every epoch below the oldest one still
 * needed makes those keys unrecoverable: forward secrecy inside a session.
 */
import { SecretKey, type ParleyCrypto } from '@parley/crypto-core';
import { assertCrypto, check, malformed } from './assert.js';
import { SessionError } from './errors.js';
import { CipherState } from './noise/cipher-state.js';

/** Nonce reserved for deriving the epoch's HMAC key. */
export const HMAC_KEY_NONCE = (1n << 64n) - 2n;
export const HMAC_KEY_AD = new TextEncoder().encode('parley/v1/hmac-key');
/** Default messages per epoch per direction. */
export const DEFAULT_REKEY_THRESHOLD = 1000;
export const MAX_REKEY_THRESHOLD = 1_000_000;
/** How many epochs a receiver will derive ahead in one step (bounds work per forged counter). */
export const MAX_EPOCH_SKIP = 4096;

const ZEROS_32 = new Uint8Array(32);

export interface EpochKeys {
  readonly epoch: number;
  readonly cipher: CipherState;
  readonly macKey: SecretKey;
}

function deriveMacKey(cipher: CipherState): SecretKey {
  const block = cipher.encryptAt(HMAC_KEY_NONCE, HMAC_KEY_AD, ZEROS_32);
  const key = SecretKey.adopt(block.slice(0, 32), 'mac');
  block.fill(0);
  return key;
}

function epochKeys(epoch: number, cipher: CipherState): EpochKeys {
  return { epoch, cipher, macKey: deriveMacKey(cipher) };
}

function wipeEpoch(keys: EpochKeys): void {
  keys.cipher.wipe();
  keys.macKey.wipe();
}

export function assertRekeyThreshold(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > MAX_REKEY_THRESHOLD) {
    throw new SessionError('malformed', `rekey threshold must be an integer in 1..${MAX_REKEY_THRESHOLD}`);
  }
  return value;
}

/**
 * The keys of one direction. A sender uses only the newest epoch; a receiver
 * keeps the contiguous range of epochs its replay window still covers.
 */
export class DirectionKeys {
  readonly #crypto: ParleyCrypto;
  readonly threshold: number;
  /** Epochs held, ascending and contiguous. Never empty. */
  #epochs: EpochKeys[];

  /** @throws SessionError `malformed` (crypto, a keyed CipherState, the threshold, the epoch) */
  constructor(crypto: ParleyCrypto, base: CipherState, threshold: number, baseEpoch = 0) {
    this.#crypto = assertCrypto(crypto);
    if (!(base instanceof CipherState) || !base.hasKey()) malformed('base must be a CipherState holding a key');
    this.threshold = assertRekeyThreshold(threshold);
    this.#epochs = [epochKeys(check.safeInt(baseEpoch, 'baseEpoch'), base)];
  }

  epochOf(counter: number): number {
    return Math.floor(counter / this.threshold);
  }

  /** Oldest epoch whose key is still held. */
  get oldestEpoch(): number {
    return this.#epochs[0]!.epoch;
  }

  get newestEpoch(): number {
    return this.#epochs[this.#epochs.length - 1]!.epoch;
  }

  /** Epoch numbers currently held (for tests and diagnostics). */
  heldEpochs(): number[] {
    return this.#epochs.map((e) => e.epoch);
  }

  /**
   * Keys for `epoch` without changing what is held: existing keys, or a chain
   * of fresh REKEYs beyond the newest (returned in `derived`, to be committed
   * with {@link commit} only once a message authenticates).
   */
  lookup(epoch: number): { keys: EpochKeys; derived: EpochKeys[] } {
    const oldest = this.oldestEpoch;
    const newest = this.newestEpoch;
    if (epoch < oldest) throw new SessionError('replay', 'epoch key already discarded');
    if (epoch <= newest) return { keys: this.#epochs[epoch - oldest]!, derived: [] };
    if (epoch - newest > MAX_EPOCH_SKIP) throw new SessionError('replay', 'counter too far ahead');
    const derived: EpochKeys[] = [];
    let cipher = this.#epochs[this.#epochs.length - 1]!.cipher;
    for (let e = newest + 1; e <= epoch; e++) {
      cipher = cipher.rekeyed();
      derived.push(epochKeys(e, cipher));
    }
    return { keys: derived[derived.length - 1]!, derived };
  }

  /** Discards (wipes) derived keys that were not committed. */
  discard(derived: EpochKeys[]): void {
    for (const d of derived) wipeEpoch(d);
  }

  /** Adds derived epochs (in order) and wipes every epoch below `keepFrom`. */
  commit(derived: EpochKeys[], keepFrom: number): void {
    this.#epochs.push(...derived);
    this.prune(keepFrom);
  }

  /** Wipes every held epoch below `keepFrom`, always keeping the newest one. */
  prune(keepFrom: number): void {
    while (this.#epochs.length > 1 && this.#epochs[0]!.epoch < keepFrom) wipeEpoch(this.#epochs.shift()!);
  }

  /** Sender side: the keys for `counter`, rekeying forward (and wiping older epochs) as needed. */
  forSend(counter: number): EpochKeys {
    const epoch = this.epochOf(counter);
    const { keys, derived } = this.lookup(epoch);
    if (derived.length > 0) this.commit(derived, epoch);
    return keys;
  }

  /** Raw epoch keys, oldest first, for sealed export only. */
  unsafeExport(): { epoch: number; key: Uint8Array }[] {
    return this.#epochs.map((e) => ({ epoch: e.epoch, key: e.cipher.unsafeKey()!.unsafeBytes().slice() }));
  }

  /** Rebuilds from exported epoch keys (contiguous, ascending). */
  static fromExport(crypto: ParleyCrypto, threshold: number, epochs: { epoch: number; key: Uint8Array }[]): DirectionKeys {
    assertCrypto(crypto);
    if (!Array.isArray(epochs) || epochs.length === 0) throw new SessionError('state_corrupt', 'no epoch keys');
    for (const e of epochs as unknown[]) {
      const { epoch, key } = (e ?? {}) as { epoch?: unknown; key?: unknown };
      if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) throw new SessionError('state_corrupt', 'an epoch number is not a non-negative integer');
      if (!(key instanceof Uint8Array) || key.length !== 32) throw new SessionError('state_corrupt', 'an epoch key is not 32 bytes');
    }
    const first = epochs[0]!;
    const dk = new DirectionKeys(crypto, new CipherState(crypto, SecretKey.from(first.key, 'aead')), threshold, first.epoch);
    for (let i = 1; i < epochs.length; i++) {
      const e = epochs[i]!;
      if (e.epoch !== first.epoch + i) throw new SessionError('state_corrupt', 'epoch keys not contiguous');
      dk.#epochs.push(epochKeys(e.epoch, new CipherState(crypto, SecretKey.from(e.key, 'aead'))));
    }
    return dk;
  }

  wipe(): void {
    for (const e of this.#epochs) wipeEpoch(e);
  }

  toString(): string {
    return `DirectionKeys(epochs ${this.oldestEpoch}..${this.newestEpoch}, threshold ${this.threshold})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}
