/**
 * Signed trust bundle documents (docs/PROTOCOL.md §15.9): the registry's
 * trust bundle as a versioned document, each version signed by the issuer key
 * that is ACTIVE in it, and the rule a follower applies to move from the
 * version it trusts to the next one. Pure verification: no I/O, no clock
 * other than the `nowMs` the caller passes.
 *
 * The follower rule (TUF's root rotation, applied to SPIRE's prepared →
 * active → retired issuer lifecycle): version v+1 is accepted from a follower
 * at version v only when
 *   - it names the same registry,
 *   - its version is exactly v+1 (an older or equal one is a rollback),
 *   - it is well-formed (one ACTIVE key, canonical order, …),
 *   - its signer (its ACTIVE key) is a key of version v, not past that
 *     version's `not_after_ms`, and the signature verifies with the key of v.
 * So a key can only become ACTIVE in a version signed by itself after an
 * earlier version published it: a new issuer key is always trusted before it
 * signs anything, and a follower that missed versions walks through them.
 *
 * Signed layout (offsets in bytes; n = number of issuers):
 *
 *   0    u32(22) ‖ "parley/v1/trust-bundle"   str(domain)
 *   26   fixed16(registry_id)
 *   42   u64(version)
 *   50   i64(issued_at_ms)
 *   58   fixed16(signer_key_id)
 *   74   u32(n)
 *   78   n × 57 bytes, ascending by key_id:
 *          +0 fixed16(key_id) ‖ +16 fixed32(public_key) ‖ +48 u8(state) ‖ +49 i64(not_after_ms)
 *   78 + 57n  end
 */
import { layout, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { IssuerKeyState, SignedTrustBundleSchema, TrustBundleIssuerSchema, create, fromBinary, toBinary, type SignedTrustBundle, type TrustBundleIssuer } from '@parley/proto';
import { asMalformed, assertArray, assertBytes, assertCrypto, assertObject, assertSafeInt, copyBytes, describe, malformed } from './assert.js';
import type { IssuerKey } from './certificate.js';
import { IdentityError } from './errors.js';
import { KEY_ID_BYTES, PUBLIC_KEY_BYTES, keyId as computeKeyId } from './key-id.js';
import { TrustBundle, type TrustBundleEntryInit } from './trust-bundle.js';

/** Domain tag of the trust bundle layout. */
export const TRUST_BUNDLE_DOMAIN = 'parley/v1/trust-bundle';
/** Most issuers one document holds. */
export const MAX_DOCUMENT_ISSUERS = 64;
/** Largest encoded document accepted, in bytes. */
export const MAX_TRUST_BUNDLE_DOCUMENT_BYTES = 8192;
/** Length of the registry id. */
export const REGISTRY_ID_LENGTH = 16;
/** Length of the document's Ed25519 signature. */
export const TRUST_BUNDLE_SIGNATURE_BYTES = 64;

/** An issuer key's lifecycle state, as the layout encodes it. */
export type IssuerLifecycleState = 'prepared' | 'active' | 'retired';

const STATE_CODE: Readonly<Record<IssuerLifecycleState, IssuerKeyState>> = Object.freeze({
  prepared: IssuerKeyState.PREPARED,
  active: IssuerKeyState.ACTIVE,
  retired: IssuerKeyState.RETIRED,
});

/** One issuer of a document, checked. */
export interface DocumentIssuer {
  readonly keyId: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly state: IssuerLifecycleState;
  /** Set for retired keys only: from this instant nothing the key signed verifies. */
  readonly notAfterMs?: number;
}

/** The signed fields of a document (what {@link signTrustBundleDocument} takes). */
export interface TrustBundleDocumentFields {
  readonly registryId: Uint8Array;
  readonly version: number;
  readonly issuedAtMs: number;
  /** Any order: they are sorted by key id. */
  readonly issuers: readonly { readonly publicKey: Uint8Array; readonly state: IssuerLifecycleState; readonly notAfterMs?: number }[];
}

/** A document whose structure has been checked (not its signature). */
export interface CheckedTrustBundleDocument {
  readonly registryId: Uint8Array;
  readonly version: number;
  readonly issuedAtMs: number;
  readonly issuers: readonly DocumentIssuer[];
  readonly signerKeyId: Uint8Array;
  readonly signature: Uint8Array;
  /** The ACTIVE issuer (= the signer). */
  readonly active: DocumentIssuer;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function stateOf(code: unknown, name: string): IssuerLifecycleState {
  if (code === IssuerKeyState.PREPARED) return 'prepared';
  if (code === IssuerKeyState.ACTIVE) return 'active';
  if (code === IssuerKeyState.RETIRED) return 'retired';
  return malformed(`${name}.state must be PREPARED, ACTIVE or RETIRED`);
}

function int64(value: unknown, name: string): number {
  if (typeof value !== 'bigint') malformed(`${name} must be a bigint, got ${typeof value}`);
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) malformed(`${name} must be in 0..2^53-1`);
  return Number(value);
}

function rejectUnknownFields(message: object, name: string): void {
  const unknown = (message as { $unknown?: unknown }).$unknown;
  if (Array.isArray(unknown) && unknown.length > 0) malformed(`${name} carries fields that version 1 does not define`);
}

/**
 * Checks a document's structure (§15.9): lengths, ranges, 1..64 issuers strictly ascending by key id,
 * each key id the §3.1 id of its key, states, `not_after_ms` set exactly for RETIRED keys, exactly one
 * ACTIVE key, at most one PREPARED, and the signer is the ACTIVE key. The signature is not checked here.
 *
 * @param crypto the ParleyCrypto instance (key ids)
 * @param doc the decoded document
 * @returns the checked fields
 * @throws IdentityError `malformed`
 */
export function checkTrustBundleDocument(crypto: ParleyCrypto, doc: SignedTrustBundle): CheckedTrustBundleDocument {
  assertCrypto(crypto);
  const d = assertObject(doc, 'document');
  rejectUnknownFields(d, 'document');
  const registryId = assertBytes(d['registryId'], 'document.registry_id', REGISTRY_ID_LENGTH);
  const version = int64(d['version'], 'document.version');
  if (version < 1) malformed('document.version must be at least 1');
  const issuedAtMs = int64(d['issuedAtMs'], 'document.issued_at_ms');
  const signerKeyId = assertBytes(d['signerKeyId'], 'document.signer_key_id', KEY_ID_BYTES);
  const signature = assertBytes(d['signature'], 'document.signature', TRUST_BUNDLE_SIGNATURE_BYTES);
  const raw = d['issuers'];
  if (!Array.isArray(raw)) malformed('document.issuers must be an array');
  if (raw.length < 1 || raw.length > MAX_DOCUMENT_ISSUERS) malformed(`document must hold 1..${MAX_DOCUMENT_ISSUERS} issuers, got ${raw.length}`);
  const issuers: DocumentIssuer[] = [];
  let previous: Uint8Array | undefined;
  (raw as unknown[]).forEach((value, i) => {
    const name = `document.issuers[${i}]`;
    const e = assertObject(value, name);
    rejectUnknownFields(e, name);
    const keyId = assertBytes(e['keyId'], `${name}.key_id`, KEY_ID_BYTES);
    const publicKey = assertBytes(e['publicKey'], `${name}.public_key`, PUBLIC_KEY_BYTES);
    if (!crypto.constantTimeEqual(keyId, computeKeyId(crypto, publicKey))) malformed(`${name}.key_id is not the key id of its public_key`);
    if (previous !== undefined && compareBytes(previous, keyId) >= 0) malformed('document.issuers must be strictly ascending by key_id');
    previous = keyId;
    const state = stateOf(e['state'], name);
    const notAfterMs = int64(e['notAfterMs'], `${name}.not_after_ms`);
    if (state === 'retired' && notAfterMs === 0) malformed(`${name} is RETIRED and must have a not_after_ms`);
    if (state !== 'retired' && notAfterMs !== 0) malformed(`${name} is ${state.toUpperCase()} and must not have a not_after_ms`);
    issuers.push(Object.freeze(state === 'retired' ? { keyId: copyBytes(keyId), publicKey: copyBytes(publicKey), state, notAfterMs } : { keyId: copyBytes(keyId), publicKey: copyBytes(publicKey), state }));
  });
  const active = issuers.filter((i) => i.state === 'active');
  if (active.length !== 1) malformed(`document must have exactly one ACTIVE issuer, has ${active.length}`);
  if (issuers.filter((i) => i.state === 'prepared').length > 1) malformed('document must have at most one PREPARED issuer');
  if (!crypto.constantTimeEqual(signerKeyId, active[0]!.keyId)) malformed('document.signer_key_id must be the ACTIVE issuer');
  return Object.freeze({
    registryId: copyBytes(registryId),
    version,
    issuedAtMs,
    issuers: Object.freeze(issuers),
    signerKeyId: copyBytes(signerKeyId),
    signature: copyBytes(signature),
    active: active[0]!,
  });
}

/**
 * The bytes the ACTIVE issuer signs (the layout in this module's comment).
 * @param doc checked fields (from {@link checkTrustBundleDocument})
 * @returns the layout
 */
export function trustBundleLayout(doc: Pick<CheckedTrustBundleDocument, 'registryId' | 'version' | 'issuedAtMs' | 'signerKeyId' | 'issuers'>): Uint8Array {
  const issuers = checkedIssuers(doc, 'doc');
  return asMalformed('trust bundle layout', () => {
    const l = layout(TRUST_BUNDLE_DOMAIN)
      .fixed(doc.registryId, REGISTRY_ID_LENGTH, 'registryId')
      .u64(doc.version)
      .i64(doc.issuedAtMs)
      .fixed(doc.signerKeyId, KEY_ID_BYTES, 'signerKeyId')
      .u32(issuers.length);
    for (const i of issuers) {
      const state = STATE_CODE[i.state] ?? malformed(`an issuer's state must be prepared, active or retired`);
      l.fixed(i.keyId, KEY_ID_BYTES, 'keyId').fixed(i.publicKey, PUBLIC_KEY_BYTES, 'publicKey').u8(state).i64(i.notAfterMs ?? 0);
    }
    return l.bytes();
  });
}

/**
 * The issuers of something shaped like a checked document (an object whose `issuers` is an array of
 * objects): what the functions taking a {@link CheckedTrustBundleDocument} read before anything else.
 * @throws IdentityError `malformed`
 */
function checkedIssuers(doc: unknown, name: string): readonly DocumentIssuer[] {
  const d = assertObject(doc, name);
  const issuers = assertArray(d['issuers'], `${name}.issuers`);
  issuers.forEach((i, n) => assertObject(i, `${name}.issuers[${n}]`));
  return issuers as readonly DocumentIssuer[];
}

/**
 * Builds and signs a document with the issuer key that is ACTIVE in it (the registry side).
 *
 * @param crypto the ParleyCrypto instance
 * @param fields registry id, version, time and the issuers (sorted here)
 * @param signer the ACTIVE issuer's key
 * @returns the signed document
 * @throws IdentityError `malformed` when the result would not pass {@link checkTrustBundleDocument}
 *   or `signer` is not its ACTIVE key
 */
export function signTrustBundleDocument(crypto: ParleyCrypto, fields: TrustBundleDocumentFields, signer: IssuerKey): SignedTrustBundle {
  assertCrypto(crypto);
  const f = assertObject(fields, 'fields');
  const issuers: TrustBundleIssuer[] = (Array.isArray(f['issuers']) ? (f['issuers'] as TrustBundleDocumentFields['issuers']) : malformed('fields.issuers must be an array'))
    .map((i, n) => {
      const publicKey = assertBytes(i.publicKey, `fields.issuers[${n}].publicKey`, PUBLIC_KEY_BYTES);
      return create(TrustBundleIssuerSchema, {
        keyId: computeKeyId(crypto, publicKey),
        publicKey: copyBytes(publicKey),
        state: STATE_CODE[i.state] ?? malformed(`fields.issuers[${n}].state must be prepared, active or retired`),
        notAfterMs: BigInt(i.notAfterMs === undefined ? 0 : assertSafeInt(i.notAfterMs, `fields.issuers[${n}].notAfterMs`)),
      });
    })
    .sort((a, b) => compareBytes(a.keyId, b.keyId));
  const unsigned = create(SignedTrustBundleSchema, {
    registryId: copyBytes(assertBytes(f['registryId'], 'fields.registryId', REGISTRY_ID_LENGTH)),
    version: BigInt(assertSafeInt(f['version'], 'fields.version', 1)),
    issuedAtMs: BigInt(assertSafeInt(f['issuedAtMs'], 'fields.issuedAtMs')),
    issuers,
    signerKeyId: copyBytes(signer.keyId),
    signature: new Uint8Array(TRUST_BUNDLE_SIGNATURE_BYTES),
  });
  const checked = checkTrustBundleDocument(crypto, unsigned);
  if (!crypto.constantTimeEqual(checked.active.publicKey, signer.publicKey)) malformed('the signer is not the ACTIVE issuer of the document');
  unsigned.signature = crypto.ed25519.sign(trustBundleLayout(checked), signer.secretKey);
  return unsigned;
}

/**
 * Encodes a document (checked first).
 * @throws IdentityError `malformed` (structure, or more than {@link MAX_TRUST_BUNDLE_DOCUMENT_BYTES})
 */
export function encodeTrustBundleDocument(crypto: ParleyCrypto, doc: SignedTrustBundle): Uint8Array {
  checkTrustBundleDocument(crypto, doc);
  const bytes = asMalformed('trust bundle document encoding', () => toBinary(SignedTrustBundleSchema, doc));
  if (bytes.length > MAX_TRUST_BUNDLE_DOCUMENT_BYTES) malformed(`trust bundle document is ${bytes.length} bytes, more than ${MAX_TRUST_BUNDLE_DOCUMENT_BYTES}`);
  return bytes;
}

/**
 * Decodes a document's protobuf bytes (size and protobuf syntax only; {@link checkTrustBundleDocument}
 * checks the rest).
 * @throws IdentityError `malformed`
 */
export function decodeTrustBundleDocument(bytes: Uint8Array): SignedTrustBundle {
  assertBytes(bytes, 'bytes');
  if (bytes.length > MAX_TRUST_BUNDLE_DOCUMENT_BYTES) malformed(`trust bundle document is ${bytes.length} bytes, more than ${MAX_TRUST_BUNDLE_DOCUMENT_BYTES}`);
  return asMalformed('trust bundle document decoding', () => fromBinary(SignedTrustBundleSchema, bytes));
}

/**
 * The verification set a document defines: every key it lists (PREPARED ones too: a follower trusts a
 * new key before it signs anything), RETIRED ones bounded by their `not_after_ms`.
 */
export function trustBundleOfDocument(crypto: ParleyCrypto, doc: CheckedTrustBundleDocument): TrustBundle {
  assertCrypto(crypto);
  return TrustBundle.from(
    crypto,
    checkedIssuers(doc, 'doc').map((i): TrustBundleEntryInit => (i.notAfterMs === undefined ? { keyId: i.keyId, publicKey: i.publicKey } : { keyId: i.keyId, publicKey: i.publicKey, notAfterMs: i.notAfterMs })),
  );
}

/**
 * Checks a document's signature against a set of trusted keys (the previous version's, or a pinned bundle):
 * the signer must be in `trusted`, not RETIRED in `previous` (when given) and not past its `notAfterMs`,
 * and the signature must verify with the key `trusted` holds.
 * @throws IdentityError `unknown_issuer`, `expired`, `bad_signature`
 */
export function verifyDocumentSignature(crypto: ParleyCrypto, doc: CheckedTrustBundleDocument, trusted: TrustBundle, nowMs: number, previous?: CheckedTrustBundleDocument): void {
  assertCrypto(crypto);
  checkedIssuers(doc, 'doc');
  assertBytes(doc.signerKeyId, 'doc.signerKeyId', KEY_ID_BYTES);
  if (!(trusted instanceof TrustBundle)) malformed(`trusted must be a TrustBundle, got ${describe(trusted)}`);
  assertSafeInt(nowMs, 'nowMs');
  if (previous !== undefined) checkedIssuers(previous, 'previous');
  const signer = trusted.get(doc.signerKeyId);
  if (signer === undefined) throw new IdentityError('unknown_issuer', `trust bundle version ${doc.version} is signed by key ${toHex(doc.signerKeyId)}, which the trusted bundle does not hold`);
  const state = previous?.issuers.find((i) => i.keyId instanceof Uint8Array && crypto.constantTimeEqual(i.keyId, doc.signerKeyId))?.state;
  if (state === 'retired') throw new IdentityError('expired', `trust bundle version ${doc.version} is signed by key ${toHex(doc.signerKeyId)}, RETIRED in version ${previous!.version}: a retired key signs nothing`);
  if (signer.notAfterMs !== undefined && nowMs >= signer.notAfterMs) {
    throw new IdentityError('expired', `trust bundle version ${doc.version} is signed by key ${toHex(doc.signerKeyId)}, past its not_after_ms in the trusted bundle`);
  }
  if (!crypto.ed25519.verify(doc.signature, trustBundleLayout(doc), signer.publicKey)) {
    throw new IdentityError('bad_signature', `trust bundle version ${doc.version}: the signature does not verify`);
  }
}

/** What {@link TrustBundleChain.advance} did. */
export interface ChainAdvance {
  /** Versions accepted by this call, in order (empty when nothing was new). */
  readonly accepted: readonly number[];
  /** The version held afterwards (0: only the pinned bundle). */
  readonly version: number;
}

/**
 * A follower's trusted trust bundle: a pinned bundle to start from (version 0), then the signed
 * documents it accepted, each checked against the one before. Only the newest document is kept.
 *
 * `trustBundle` is the current verification set (a snapshot); `live` is a {@link TrustBundle.live} view
 * of it for sessions, gateways and verifiers that must follow every change.
 */
export class TrustBundleChain {
  readonly #crypto: ParleyCrypto;
  readonly #registryId: Uint8Array;
  #current: CheckedTrustBundleDocument | undefined;
  #document: SignedTrustBundle | undefined;
  #bundle: TrustBundle;
  /** A live view of {@link trustBundle}: always the newest accepted version. */
  readonly live: TrustBundle;

  private constructor(crypto: ParleyCrypto, registryId: Uint8Array, pinned: TrustBundle | undefined, document: SignedTrustBundle | undefined, checked: CheckedTrustBundleDocument | undefined) {
    this.#crypto = crypto;
    this.#registryId = copyBytes(registryId);
    this.#document = document;
    this.#current = checked;
    this.#bundle = checked === undefined ? pinned! : trustBundleOfDocument(crypto, checked);
    this.live = TrustBundle.live(() => this.#bundle);
  }

  /**
   * Starts from a pinned bundle (the §3.3 JSON an operator copied out of band): the first document
   * accepted may have any version but must be signed by one of its keys; versions after it chain.
   * @throws IdentityError `malformed`
   */
  static fromPinned(crypto: ParleyCrypto, registryId: Uint8Array, pinned: TrustBundle): TrustBundleChain {
    assertCrypto(crypto);
    assertBytes(registryId, 'registryId', REGISTRY_ID_LENGTH);
    if (!(pinned instanceof TrustBundle)) malformed('pinned must be a TrustBundle');
    return new TrustBundleChain(crypto, registryId, pinned, undefined, undefined);
  }

  /**
   * Restores a follower's own saved state (the last document it accepted, from its database, file or
   * sealed state store): checked for structure, registry and its signature by its own ACTIVE key
   * (integrity of local state; its authority was checked when it was first accepted).
   * @throws IdentityError `malformed`, `identity_mismatch`, `bad_signature`
   */
  static fromSaved(crypto: ParleyCrypto, registryId: Uint8Array, encoded: Uint8Array): TrustBundleChain {
    assertCrypto(crypto);
    assertBytes(registryId, 'registryId', REGISTRY_ID_LENGTH);
    const doc = decodeTrustBundleDocument(encoded);
    const checked = checkTrustBundleDocument(crypto, doc);
    if (!crypto.constantTimeEqual(checked.registryId, registryId)) throw new IdentityError('identity_mismatch', 'the saved trust bundle is of another registry');
    if (!crypto.ed25519.verify(checked.signature, trustBundleLayout(checked), checked.active.publicKey)) {
      throw new IdentityError('bad_signature', 'the saved trust bundle does not verify under its own active key');
    }
    return new TrustBundleChain(crypto, registryId, undefined, doc, checked);
  }

  /** The version held: 0 while only the pinned bundle is. */
  get version(): number {
    return this.#current?.version ?? 0;
  }

  /** The current verification set (a snapshot: later versions replace it). */
  get trustBundle(): TrustBundle {
    return this.#bundle;
  }

  /** The newest accepted document, or undefined while only the pinned bundle is held. */
  get document(): SignedTrustBundle | undefined {
    return this.#document;
  }

  /** The newest accepted document's encoding, for the follower's saved state. */
  encoded(): Uint8Array | undefined {
    return this.#document === undefined ? undefined : toBinary(SignedTrustBundleSchema, this.#document);
  }

  /** The issuers of the newest document with their state (empty while only the pinned bundle is held). */
  issuers(): readonly DocumentIssuer[] {
    return this.#current?.issuers ?? [];
  }

  /**
   * Accepts documents in order, all or nothing. A document at the version held is ignored when it
   * is byte for byte the one held; any other document at or below that version is a rollback. While
   * only the pinned bundle is held, documents not signed by one of its keys, or signed by one past its
   * pinned not_after_ms, are skipped until one is signed by a pinned key still valid (the anchor), and
   * every later one must chain from it; if none anchors the call fails (`expired` when a pinned key past
   * its not_after_ms signed some of them, otherwise `unknown_issuer`).
   *
   * @param documents documents in ascending version order (as GetTrustBundle returns them)
   * @param nowMs the current time (a signer past its not_after_ms signs nothing)
   * @returns the versions accepted and the version now held
   * @throws IdentityError `rollback` for a document below the version held, or at it with other contents, `malformed` (structure, a gap, versions out of order), `identity_mismatch`
   *   (another registry), `unknown_issuer` / `expired` / `bad_signature` (signer not trusted by the previous
   *   version); nothing changes on any error
   */
  advance(documents: readonly SignedTrustBundle[], nowMs: number): ChainAdvance {
    assertSafeInt(nowMs, 'nowMs');
    if (!Array.isArray(documents)) malformed('documents must be an array');
    let current = this.#current;
    let currentDoc = this.#document;
    let trusted = this.#bundle;
    const accepted: number[] = [];
    let skippedExpired = false;
    for (const doc of documents) {
      const checked = checkTrustBundleDocument(this.#crypto, doc);
      if (!this.#crypto.constantTimeEqual(checked.registryId, this.#registryId)) {
        throw new IdentityError('identity_mismatch', `trust bundle version ${checked.version} is of another registry`);
      }
      if (current === undefined) {
        // Anchoring on the pinned bundle: any version, signed by a pinned key.
        // A document signed by a key the pinned bundle does not hold (before the pinned keys' time) or holds
        // past its not_after_ms (a bundle pinned during a rotation's grace period) is skipped, not fatal.
        const signer = trusted.get(checked.signerKeyId);
        if (signer === undefined) continue;
        if (signer.notAfterMs !== undefined && nowMs >= signer.notAfterMs) {
          skippedExpired = true;
          continue;
        }
        verifyDocumentSignature(this.#crypto, checked, trusted, nowMs);
      } else {
        if (checked.version <= current.version) {
          if (checked.version === current.version && sameDocument(currentDoc!, doc)) continue;
          throw new IdentityError(
            'rollback',
            checked.version === current.version
              ? `trust bundle version ${checked.version} differs from the version ${current.version} already held`
              : `trust bundle version ${checked.version} is older than the version ${current.version} already held`,
          );
        }
        if (checked.version !== current.version + 1) malformed(`trust bundle version ${checked.version} does not follow ${current.version}: versions are missing`);
        verifyDocumentSignature(this.#crypto, checked, trusted, nowMs, current);
      }
      current = checked;
      currentDoc = doc;
      trusted = trustBundleOfDocument(this.#crypto, checked);
      accepted.push(checked.version);
    }
    if (current === undefined && documents.length > 0) {
      if (skippedExpired) {
        throw new IdentityError('expired', 'no trust bundle version the registry sent is signed by a key of the pinned bundle still within its not_after_ms: pin its current bundle');
      }
      throw new IdentityError('unknown_issuer', 'no trust bundle version the registry sent is signed by a key of the pinned bundle: pin its current bundle');
    }
    if (accepted.length > 0) {
      this.#current = current;
      this.#document = currentDoc;
      this.#bundle = trusted;
    }
    return { accepted, version: this.#current?.version ?? 0 };
  }
}

function sameDocument(a: SignedTrustBundle, b: SignedTrustBundle): boolean {
  const x = toBinary(SignedTrustBundleSchema, a);
  const y = toBinary(SignedTrustBundleSchema, b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}
