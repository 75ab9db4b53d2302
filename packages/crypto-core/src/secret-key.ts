/**
 * SecretKey: an opaque holder for secret bytes (signing keys, DH private keys,
 * AEAD and MAC keys). It never prints its contents: `inspect`, `toString`,
 * `toJSON` and template literals all show a redacted label. `wipe()` zeroes the
 * bytes in place; any later use throws `key_wiped`.
 *
 * The bytes are reachable only through the loudly named `unsafeBytes()` (for
 * crypto-core backends and for sealed persistence) — grep for it in review.
 */
import { abytes, astring } from './assert.js';
import { CryptoError } from './errors.js';

const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/** What a secret key is for; checked where it is used so keys cannot be mixed up. */
export type SecretKeyKind = 'ed25519' | 'x25519' | 'aead' | 'mac' | 'generic';

/** Every {@link SecretKeyKind}. */
export const SECRET_KEY_KINDS: readonly SecretKeyKind[] = Object.freeze(['ed25519', 'x25519', 'aead', 'mac', 'generic'] as const);

/**
 * Asserts one of the {@link SECRET_KEY_KINDS}.
 * @throws CryptoError `invalid_type` (not a string), `invalid_value` (an unknown kind)
 */
export function assertKeyKind(value: unknown, name: string): SecretKeyKind {
  const kind = astring(value, name);
  if (!(SECRET_KEY_KINDS as readonly string[]).includes(kind)) {
    throw new CryptoError('invalid_value', `${name} must be one of ${SECRET_KEY_KINDS.join(', ')}`);
  }
  return kind as SecretKeyKind;
}

export class SecretKey {
  readonly #bytes: Uint8Array;
  readonly #kind: SecretKeyKind;
  #wiped = false;

  private constructor(bytes: Uint8Array, kind: SecretKeyKind) {
    this.#bytes = bytes;
    this.#kind = kind;
  }

  /**
   * Wraps a copy of `bytes`. The caller should wipe its own copy.
   * @param bytes secret bytes (copied)
   * @param kind what the key is for
   * @throws CryptoError `invalid_type` if bytes is not a Uint8Array or kind not a string, `invalid_value` for an
   *   unknown kind
   */
  static from(bytes: Uint8Array, kind: SecretKeyKind = 'generic'): SecretKey {
    abytes(bytes, 'bytes');
    return new SecretKey(new Uint8Array(bytes), assertKeyKind(kind, 'kind'));
  }

  /**
   * Wraps `bytes` without copying; crypto-core takes ownership (internal use).
   * @throws CryptoError as {@link SecretKey.from}
   */
  static adopt(bytes: Uint8Array, kind: SecretKeyKind): SecretKey {
    abytes(bytes, 'bytes');
    return new SecretKey(bytes, assertKeyKind(kind, 'kind'));
  }

  get kind(): SecretKeyKind {
    return this.#kind;
  }

  get length(): number {
    return this.#bytes.length;
  }

  get isWiped(): boolean {
    return this.#wiped;
  }

  /**
   * The raw secret bytes (a live view, not a copy). Named to stand out in
   * review: only backends and sealed-state serialisers should call it.
   * @throws CryptoError `key_wiped`
   */
  unsafeBytes(): Uint8Array {
    if (this.#wiped) throw new CryptoError('key_wiped', `${this.#kind} key was wiped`);
    return this.#bytes;
  }

  /** Zeroes the key in place. Idempotent. */
  wipe(): void {
    this.#bytes.fill(0);
    this.#wiped = true;
  }

  toString(): string {
    return `SecretKey(${this.#kind}, ${this.#bytes.length} bytes${this.#wiped ? ', wiped' : ''})`;
  }

  toJSON(): string {
    return '[redacted]';
  }

  [INSPECT](): string {
    return this.toString();
  }
}

/** Asserts a live SecretKey of the expected kind (one of several, when a list is given) and length. */
export function asecret(value: unknown, name: string, kind: SecretKeyKind | readonly SecretKeyKind[] | 'any', length?: number): Uint8Array {
  if (!(value instanceof SecretKey)) {
    throw new CryptoError('invalid_type', `${name} must be a SecretKey`);
  }
  if (kind !== 'any' && (typeof kind === 'string' ? value.kind !== kind : !kind.includes(value.kind))) {
    throw new CryptoError('invalid_type', `${name} must be a ${typeof kind === 'string' ? kind : kind.join(' or ')} SecretKey, got ${value.kind}`);
  }
  const bytes = value.unsafeBytes();
  if (length !== undefined && bytes.length !== length) {
    throw new CryptoError('invalid_length', `${name} must be ${length} bytes, got ${bytes.length}`);
  }
  return bytes;
}
