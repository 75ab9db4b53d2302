/**
 * Trust bundles (DESIGN.md "Identity"): the issuer public keys a verifier pins,
 * indexed by key id. Certificates are verified offline against one.
 *
 * Issuer key rotation: a rotated-out issuer stays in the bundle (optionally
 * with `notAfterMs`) so the certificates it issued keep verifying until they
 * expire; the new issuer is added beside it. `notAfterMs` bounds the issuer
 * key itself: from that instant nothing it signed verifies (`expired`).
 *
 * Every entry's key id must equal `keyId(publicKey)`; a mismatched, duplicated
 * or ill-typed entry rejects the whole bundle (`malformed`), never just itself.
 *
 * JSON form (strict: no unknown keys, canonical encodings):
 *   { "version": 1,
 *     "issuers": [ { "key_id": "<32 lowercase hex>", "public_key": "<43 base64url>", "not_after_ms"?: <int> } ] }
 */
import { fromBase64Url, fromHex, toBase64Url, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { asMalformed, assertBytes, assertCrypto, assertObject, assertSafeInt, copyBytes, describe, malformed } from './assert.js';
import { IdentityError } from './errors.js';
import { KEY_ID_BYTES, PUBLIC_KEY_BYTES, keyId as computeKeyId } from './key-id.js';

/** Version of the trust-bundle JSON form. */
export const TRUST_BUNDLE_VERSION = 1;
/** Most issuers one bundle may hold (bounds a hostile JSON document). */
export const MAX_TRUST_BUNDLE_ISSUERS = 256;

/** One trusted issuer key. */
export interface TrustBundleEntry {
  /** 16-byte key id, equal to `keyId(crypto, publicKey)`. */
  readonly keyId: Uint8Array;
  /** 32-byte Ed25519 public key of the issuer. */
  readonly publicKey: Uint8Array;
  /** When present: from this instant (ms since the epoch) the issuer key is no longer trusted. */
  readonly notAfterMs?: number;
}

/** Input to {@link TrustBundle.from}: `keyId` may be omitted and is then computed. */
export interface TrustBundleEntryInit {
  readonly keyId?: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly notAfterMs?: number;
}

/** The JSON form of one issuer. */
export interface TrustBundleIssuerJson {
  key_id: string;
  public_key: string;
  not_after_ms?: number;
}

/** The JSON form of a trust bundle. */
export interface TrustBundleJson {
  version: 1;
  issuers: TrustBundleIssuerJson[];
}

const KEY_ID_HEX_RE = /^[0-9a-f]{32}$/;
const BUNDLE_KEYS = new Set(['version', 'issuers']);
const ISSUER_KEYS = new Set(['key_id', 'public_key', 'not_after_ms']);

/**
 * A set of trusted issuer keys: an immutable snapshot ({@link TrustBundle.from},
 * {@link TrustBundle.fromJSON}), or a live view of whatever bundle a follower
 * holds now ({@link TrustBundle.live}), which every verifier reads at each lookup.
 */
export class TrustBundle {
  readonly #read: () => ReadonlyMap<string, TrustBundleEntry>;

  private constructor(read: () => ReadonlyMap<string, TrustBundleEntry>) {
    this.#read = read;
  }

  get #byKeyId(): ReadonlyMap<string, TrustBundleEntry> {
    return this.#read();
  }

  /**
   * A live view: every lookup reads the bundle `current()` returns at that moment, so a session,
   * gateway or verifier given the view follows a trust bundle that a follower replaces over time
   * (docs/PROTOCOL.md §15.9) without being rebuilt.
   *
   * @param current returns the bundle to use now (a snapshot; called at every lookup, so keep it cheap)
   * @returns a TrustBundle whose contents are always `current()`'s
   * @throws IdentityError `malformed` when `current` is not a function
   * @example
   * const view = TrustBundle.live(() => follower.trustBundle);
   */
  static live(current: () => TrustBundle): TrustBundle {
    if (typeof current !== 'function') malformed(`current must be a function, got ${describe(current)}`);
    return new TrustBundle(() => {
      const bundle = current();
      if (!(bundle instanceof TrustBundle)) malformed(`a live trust bundle's source returned ${describe(bundle)}, not a TrustBundle`);
      return bundle.#byKeyId;
    });
  }

  /**
   * Builds a bundle, checking every entry.
   *
   * @param crypto the ParleyCrypto instance (to recompute each key id)
   * @param entries issuer keys; `keyId`, when given, must match the public key
   * @returns the bundle
   * @throws IdentityError `malformed` on a wrong type or length, a key id that is
   *   not `keyId(publicKey)`, a duplicate key id, or more than 256 entries
   * @example
   * const bundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
   */
  static from(crypto: ParleyCrypto, entries: Iterable<TrustBundleEntryInit>): TrustBundle {
    assertCrypto(crypto);
    if (typeof entries !== 'object' || entries === null || typeof (entries as Iterable<unknown>)[Symbol.iterator] !== 'function') {
      malformed(`entries must be an iterable, got ${describe(entries)}`);
    }
    const map = new Map<string, TrustBundleEntry>();
    let i = 0;
    for (const raw of entries as Iterable<unknown>) {
      const name = `entries[${i++}]`;
      if (map.size >= MAX_TRUST_BUNDLE_ISSUERS) malformed(`a trust bundle holds at most ${MAX_TRUST_BUNDLE_ISSUERS} issuers`);
      const init = assertObject(raw, name);
      const publicKey = copyBytes(assertBytes(init['publicKey'], `${name}.publicKey`, PUBLIC_KEY_BYTES));
      const computed = computeKeyId(crypto, publicKey);
      if (init['keyId'] !== undefined) {
        const given = assertBytes(init['keyId'], `${name}.keyId`, KEY_ID_BYTES);
        if (!crypto.constantTimeEqual(given, computed)) malformed(`${name}.keyId does not match keyId(publicKey)`);
      }
      const notAfterMs = init['notAfterMs'] === undefined ? undefined : assertSafeInt(init['notAfterMs'], `${name}.notAfterMs`);
      const hex = toHex(computed);
      if (map.has(hex)) malformed(`${name} duplicates issuer key id ${hex}`);
      map.set(hex, Object.freeze(notAfterMs === undefined ? { keyId: computed, publicKey } : { keyId: computed, publicKey, notAfterMs }));
    }
    return new TrustBundle(() => map);
  }

  /**
   * Parses the JSON form strictly.
   *
   * @param crypto the ParleyCrypto instance (to recompute each key id)
   * @param json the JSON text, or the value `JSON.parse` returned for it
   * @returns the bundle
   * @throws IdentityError `unsupported_version` for an integer version other than 1;
   *   `malformed` for invalid JSON, unknown or missing keys, non-canonical hex or
   *   base64url, wrong lengths, a key id that does not match its key, or duplicates
   */
  static fromJSON(crypto: ParleyCrypto, json: unknown): TrustBundle {
    assertCrypto(crypto);
    let value = json;
    if (typeof value === 'string') {
      try {
        value = JSON.parse(value) as unknown;
      } catch (cause) {
        malformed('trust bundle is not valid JSON', cause);
      }
    }
    const doc = assertObject(value, 'trust bundle');
    for (const key of Object.keys(doc)) if (!BUNDLE_KEYS.has(key)) malformed(`trust bundle has an unknown key '${key}'`);
    const version = assertSafeInt(doc['version'], 'trust bundle version', 0, 0xffff_ffff);
    if (version !== TRUST_BUNDLE_VERSION) {
      throw new IdentityError('unsupported_version', `trust bundle version ${version} is not supported (expected ${TRUST_BUNDLE_VERSION})`);
    }
    const issuers = doc['issuers'];
    if (!Array.isArray(issuers)) malformed(`trust bundle issuers must be an array, got ${describe(issuers)}`);
    if (issuers.length > MAX_TRUST_BUNDLE_ISSUERS) malformed(`a trust bundle holds at most ${MAX_TRUST_BUNDLE_ISSUERS} issuers`);
    const entries = (issuers as unknown[]).map((raw, i): TrustBundleEntryInit => {
      const name = `issuers[${i}]`;
      const issuer = assertObject(raw, name);
      for (const key of Object.keys(issuer)) if (!ISSUER_KEYS.has(key)) malformed(`${name} has an unknown key '${key}'`);
      const keyIdHex = issuer['key_id'];
      if (typeof keyIdHex !== 'string' || !KEY_ID_HEX_RE.test(keyIdHex)) malformed(`${name}.key_id must be 32 lowercase hex digits`);
      const publicKeyText = issuer['public_key'];
      if (typeof publicKeyText !== 'string') malformed(`${name}.public_key must be a string, got ${describe(publicKeyText)}`);
      const publicKey = asMalformed(`${name}.public_key base64url decoding`, () => fromBase64Url(publicKeyText));
      const keyIdBytes = asMalformed(`${name}.key_id hex decoding`, () => fromHex(keyIdHex));
      const notAfter = issuer['not_after_ms'];
      return notAfter === undefined
        ? { keyId: keyIdBytes, publicKey }
        : { keyId: keyIdBytes, publicKey, notAfterMs: assertSafeInt(notAfter, `${name}.not_after_ms`) };
    });
    return TrustBundle.from(crypto, entries);
  }

  /** Number of issuers. */
  get size(): number {
    return this.#byKeyId.size;
  }

  /**
   * The issuer with this key id.
   *
   * @param keyId 16-byte key id (any other value simply finds nothing)
   * @returns a copy of the entry, or undefined when the bundle does not hold it
   */
  get(keyId: Uint8Array): TrustBundleEntry | undefined {
    if (!(keyId instanceof Uint8Array) || keyId.length !== KEY_ID_BYTES) return undefined;
    const entry = this.#byKeyId.get(toHex(keyId));
    return entry === undefined ? undefined : copyEntry(entry);
  }

  /**
   * Every issuer, in insertion order.
   * @returns copies of the entries
   */
  entries(): TrustBundleEntry[] {
    return [...this.#byKeyId.values()].map(copyEntry);
  }

  /**
   * The JSON form (so `JSON.stringify(bundle)` works); {@link TrustBundle.fromJSON} reads it back.
   * @returns `{ version: 1, issuers: [...] }`
   */
  toJSON(): TrustBundleJson {
    return {
      version: TRUST_BUNDLE_VERSION,
      issuers: [...this.#byKeyId.values()].map((e) => {
        const out: TrustBundleIssuerJson = { key_id: toHex(e.keyId), public_key: toBase64Url(e.publicKey) };
        if (e.notAfterMs !== undefined) out.not_after_ms = e.notAfterMs;
        return out;
      }),
    };
  }
}

function copyEntry(e: TrustBundleEntry): TrustBundleEntry {
  const base = { keyId: copyBytes(e.keyId), publicKey: copyBytes(e.publicKey) };
  return Object.freeze(e.notAfterMs === undefined ? base : { ...base, notAfterMs: e.notAfterMs });
}
