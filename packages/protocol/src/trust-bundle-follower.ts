/**
 * Follows a registry's signed trust bundle (docs/PROTOCOL.md §15.9) for a
 * gateway or an agent: polls GetTrustBundle for the documents after the
 * version it holds (and is told of a new version sooner by a hint, e.g. the
 * revocation watch's `trust_bundle_version`), checks each one against the
 * version before it with @parley/identity's TrustBundleChain (version
 * monotonic, signed by a key it already trusts, never a rollback), saves the
 * newest accepted document where the follower keeps its state, and exposes a
 * live TrustBundle view that every verifier reads.
 *
 * When the registry cannot be reached, or sends something that does not
 * verify, it keeps the last verified bundle: nothing it trusts goes away and
 * nothing new is trusted (a retired key still stops at its own not_after_ms,
 * which the verifiers check themselves). Each poll also asks for the version
 * it holds, so a registry that serves another document at that version (a
 * fork) or an older current version (a restored backup) is refused and
 * reported, not followed.
 *
 * The saved state records the pinned bundle it was followed from
 * ({@link pinnedTrustBundleHash}); a restart with another pinned bundle does not
 * use it (`pin_changed`): the pin is the operator's root, and a saved chain
 * never outranks it. Saved state layout (`parley/v1/followed-trust-bundle`):
 *
 *   0    u32(31) ‖ "parley/v1/followed-trust-bundle"   str(domain)
 *   35   fixed32(pin hash)                             pinnedTrustBundleHash of the pinned bundle
 *   67   u32(m) ‖ m bytes                              the newest accepted SignedTrustBundle
 *
 * A state saved before the pin was recorded is the bare SignedTrustBundle
 * (which never starts with a 0 byte: protobuf has no field 0) and is still read.
 */
import { layout, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { IdentityError, TrustBundle, TrustBundleChain, checkTrustBundleDocument, verifyDocumentSignature, type ChainAdvance } from '@parley/identity';
import { SignedTrustBundleSchema, fromBinary, type GetTrustBundleResponse, type SignedTrustBundle } from '@parley/proto';
import { assertCrypto, check, malformed } from './assert.js';
import { ProtocolError } from './errors.js';

/**
 * Where the documents come from: the registry's GetTrustBundle (a `@parley/rpc` client of
 * RegistryService has this shape). Errors it throws should carry a Parley `code` (`unavailable`, …).
 */
export interface TrustBundleSource {
  getTrustBundle(request: { afterVersion: bigint }, options?: { timeoutMs?: number }): Promise<GetTrustBundleResponse>;
}

/** A failure's stable code and one line: the error's own `code` when it has one, else `internal`. */
function describeError(error: unknown): { code: string; detail: string } {
  const code = (error as { code?: unknown } | null)?.code;
  const localDetails = (error as { localDetails?: unknown } | null)?.localDetails;
  const detail = typeof localDetails === 'string' ? localDetails : error instanceof Error ? error.message.replace(/^\[[a-z_]+\] /, '') : String(error);
  return { code: typeof code === 'string' && /^[a-z_]+$/.test(code) ? code : 'internal', detail };
}

/** Where a follower keeps the newest document it accepted (its database, a file, a sealed state store). */
export interface TrustBundleStore {
  /** The saved document's encoding, or undefined when nothing was saved. */
  load(): Promise<Uint8Array | undefined>;
  /** Saves a newly accepted document (durably, replacing the previous one). */
  save(encoded: Uint8Array, version: number): Promise<void>;
}

/**
 * What a follower reports. Never key material. `pin_changed`: the saved state was followed from another
 * pinned bundle (`from`, its pin hash in hex; null when a state saved before the pin was recorded is not signed
 * by a pinned key) than the one given now (`to`), so it is not used: the follower starts from the pinned bundle
 * and the next document it accepts replaces the saved state of version `version`.
 */
export type TrustBundleFollowerEvent =
  | { readonly kind: 'restored'; readonly version: number }
  | { readonly kind: 'pin_changed'; readonly version: number; readonly from: string | null; readonly to: string; readonly detail: string }
  | { readonly kind: 'restore_failed'; readonly code: string; readonly detail: string }
  | { readonly kind: 'updated'; readonly from: number; readonly to: number; readonly accepted: readonly number[] }
  | { readonly kind: 'refused'; readonly code: string; readonly version: number; readonly detail: string }
  | { readonly kind: 'unreachable'; readonly code: string; readonly version: number; readonly detail: string }
  | { readonly kind: 'save_failed'; readonly version: number; readonly detail: string };

/** Settings of a {@link TrustBundleFollower}. */
export interface TrustBundleFollowerOptions {
  readonly crypto: ParleyCrypto;
  /** The registry (a `@parley/rpc` client of RegistryService; GetTrustBundle needs no signature). */
  readonly client: TrustBundleSource;
  /** The registry's id; when omitted, the saved state's, else the registry's own answer. */
  readonly registryId?: Uint8Array;
  /**
   * The pinned bundle (§3.3 JSON): the anchor while no document was ever accepted. It is the operator's root: a
   * state saved while following another pinned bundle is not restored (`pin_changed`).
   */
  readonly pinned: TrustBundle;
  /**
   * The pinned bundle is only what the registry sent at this start (a gateway's `--trust-on-first-use`), not an
   * operator's pin: a saved state is restored whatever pin it recorded (the first use it followed from stands).
   */
  readonly trustOnFirstUse?: boolean;
  /** Where the newest accepted document is saved (none: memory only). */
  readonly store?: TrustBundleStore;
  /** Interval between polls, ms. Default 60 000. */
  readonly pollIntervalMs?: number;
  /** Deadline of one GetTrustBundle call, ms. Default 10 000. */
  readonly callTimeoutMs?: number;
  readonly onEvent?: (event: TrustBundleFollowerEvent) => void;
  readonly clock?: () => number;
}

/** Where a follower stands (for readiness and metrics). */
export type TrustBundleFollowerState = 'starting' | 'current' | 'unreachable' | 'refusing';

/** Most GetTrustBundle pages one refresh reads. */
const MAX_PAGES = 100;
/** Most documents one GetTrustBundle page may carry (§15.10; the registry sends at most this many). */
const MAX_PAGE_DOCUMENTS = 64;

/** Follows one registry's trust bundle until closed. */
export class TrustBundleFollower {
  readonly #o: TrustBundleFollowerOptions;
  readonly #clock: () => number;
  #registryId: Uint8Array | undefined;
  #chain: TrustBundleChain | undefined;
  #state: TrustBundleFollowerState = 'starting';
  #lastVerifiedAtMs: number | undefined;
  #refreshing: Promise<ChainAdvance> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #lastHint: number | undefined;
  #pinHash: Uint8Array | undefined;
  /** The live view: always the newest accepted version (the pinned bundle before any). */
  readonly trustBundle: TrustBundle;

  /** @throws ProtocolError `malformed` (options not an object, `crypto` or `pinned` missing) */
  constructor(options: TrustBundleFollowerOptions) {
    check.object(options, 'options');
    assertCrypto(options.crypto);
    if (!(options.pinned instanceof TrustBundle)) malformed('options.pinned must be a TrustBundle');
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
    this.#registryId = options.registryId === undefined ? undefined : new Uint8Array(options.registryId);
    this.trustBundle = TrustBundle.live(() => this.#chain?.trustBundle ?? options.pinned);
  }

  /** The trust bundle version held (0: only the pinned bundle). */
  get version(): number {
    return this.#chain?.version ?? 0;
  }

  /** The registry id followed, once known. */
  get registryId(): Uint8Array | undefined {
    return this.#registryId === undefined ? undefined : new Uint8Array(this.#registryId);
  }

  /** The newest accepted document, if any. */
  get document(): SignedTrustBundle | undefined {
    return this.#chain?.document;
  }

  /** `current` after a poll that verified what the registry serves; `unreachable` / `refusing` after one that failed. */
  get state(): TrustBundleFollowerState {
    return this.#state;
  }

  /** When a poll last confirmed the held version is the registry's current one (ms since the epoch), if ever. */
  get lastVerifiedAtMs(): number | undefined {
    return this.#lastVerifiedAtMs;
  }

  /** {@link pinnedTrustBundleHash} of the pinned bundle (computed once). */
  get #pin(): Uint8Array {
    this.#pinHash ??= pinnedTrustBundleHash(this.#o.crypto, this.#o.pinned);
    return this.#pinHash;
  }

  /**
   * Loads the saved document, if any (a bad one is reported and the pinned bundle used instead). A state
   * followed from another pinned bundle is not used (`pin_changed`): the follower starts from the pinned
   * bundle. A state saved before the pin was recorded is used only when a key of the pinned bundle, still
   * within its not_after_ms, signed it (the anchor a fresh follow would accept), and is saved again with the
   * pin; otherwise it is reported as `pin_changed` (from null) and not used.
   * Call once before {@link start}.
   */
  async restore(): Promise<void> {
    const store = this.#o.store;
    if (store === undefined) return;
    let encoded: Uint8Array | undefined;
    try {
      encoded = await store.load();
      if (encoded === undefined) return;
      const saved = decodeFollowedState(encoded);
      const pin = this.#pin;
      const tofu = this.#o.trustOnFirstUse === true;
      if (!tofu && saved.pin !== undefined && !this.#o.crypto.constantTimeEqual(saved.pin, pin)) {
        const version = savedVersion(saved.document);
        this.#emit({
          kind: 'pin_changed',
          version,
          from: toHex(saved.pin),
          to: toHex(pin),
          detail: `the saved trust bundle (version ${version}) was followed from another pinned bundle: starting from the pinned one`,
        });
        return;
      }
      const registryId = this.#registryId ?? savedRegistryId(saved.document);
      const chain = TrustBundleChain.fromSaved(this.#o.crypto, registryId, saved.document);
      if (saved.pin === undefined && !tofu) {
        // Saved before the pin was recorded, and only the newest document was: it can be related to the pin only
        // when a pinned key signed it itself (a chain anchored further back cannot be checked from it).
        try {
          verifyDocumentSignature(this.#o.crypto, checkTrustBundleDocument(this.#o.crypto, chain.document!), this.#o.pinned, this.#clock());
        } catch (error) {
          this.#emit({
            kind: 'pin_changed',
            version: chain.version,
            from: null,
            to: toHex(pin),
            detail: `the saved trust bundle (version ${chain.version}) records no pinned bundle and is not signed by a key of the pinned one (${describeError(error).code}): starting from the pinned one`,
          });
          return;
        }
      }
      this.#chain = chain;
      this.#registryId = registryId;
      this.#emit({ kind: 'restored', version: chain.version });
      if (saved.pin === undefined) await this.#save(); // records the pin it is now followed from
    } catch (error) {
      const e = describeError(error);
      this.#emit({ kind: 'restore_failed', code: e.code, detail: e.detail });
    }
  }

  /** Polls every `pollIntervalMs` until {@link close}. */
  start(): void {
    if (this.#closed || this.#timer !== undefined) return;
    const interval = this.#o.pollIntervalMs ?? 60_000;
    const tick = (): void => {
      this.#timer = setTimeout(() => {
        void this.refresh()
          .catch(() => undefined)
          .finally(() => {
            if (!this.#closed) tick();
          });
      }, interval);
      this.#timer.unref();
    };
    tick();
  }

  /**
   * A hint that the registry holds `version` (e.g. from a revocation watch batch): refreshes now when
   * it differs from the version held — a newer one is fetched and checked, an older one (a registry
   * restored from a backup) is refused and reported at once — unless that same hint was just acted on.
   * Never throws.
   * @returns once the refresh (if any) is done
   */
  async hint(version: number | bigint): Promise<void> {
    const v = Number(version);
    if (v === this.version || v === this.#lastHint) return;
    this.#lastHint = v;
    await this.refresh().catch(() => undefined);
  }

  /**
   * Fetches and verifies the documents after the version held (one refresh at a time: concurrent calls share it).
   * @returns what was accepted
   * @throws the source's error when the registry is unreachable (`unavailable`, …), IdentityError when what it sent was
   *   refused (`rollback`, `unknown_issuer`, `bad_signature`, …); the held version is unchanged
   */
  refresh(): Promise<ChainAdvance> {
    this.#refreshing ??= this.#refresh().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  /** Stops polling (a refresh in flight finishes). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    await this.#refreshing?.catch(() => undefined);
  }

  async #refresh(): Promise<ChainAdvance> {
    const { client } = this.#o;
    const before = this.version;
    // Ask from the version before the one held, so the registry's copy of it comes back and is compared.
    let after = Math.max(0, before - 1);
    const documents: SignedTrustBundle[] = [];
    let current = 0;
    // The registry id of this refresh: the one of the chain held, or (none anchored yet) this answer's — adopted
    // only once a document signed by a pinned key verifies, so a wrong or broken first answer (another
    // registry, a half-started one) does not bind the follower for good.
    let registryId = this.#registryId;
    try {
      for (let page = 0; page < MAX_PAGES; page++) {
        let res: Awaited<ReturnType<typeof client.getTrustBundle>>;
        try {
          res = await client.getTrustBundle({ afterVersion: BigInt(after) }, { timeoutMs: this.#o.callTimeoutMs ?? 10_000 });
        } catch (error) {
          const e = describeError(error);
          this.#state = 'unreachable';
          this.#emit({ kind: 'unreachable', code: e.code, version: before, detail: e.detail });
          throw new Unreachable(error);
        }
        registryId ??= new Uint8Array(res.registryId);
        current = Number(res.currentVersion);
        // Checked before anything is kept: a page is at most 64 documents, of the consecutive versions after the
        // one asked for — a registry cannot make one refresh hold more than MAX_PAGES pages of them, nor ask again
        // without moving forward.
        if (res.documents.length > MAX_PAGE_DOCUMENTS) throw new IdentityError('malformed', `a trust bundle page of ${res.documents.length} documents (at most ${MAX_PAGE_DOCUMENTS})`);
        res.documents.forEach((d, i) => {
          if (Number(d.version) !== after + 1 + i) throw new IdentityError('malformed', `trust bundle page after version ${after} holds version ${d.version} at position ${i + 1}`);
        });
        documents.push(...res.documents);
        const last = res.documents.at(-1);
        if (last === undefined || Number(last.version) >= current) break;
        after = Number(last.version);
      }
      if (current < before) {
        throw new IdentityError('rollback', `the registry's current trust bundle version ${current} is older than the version ${before} already held (a restored backup?)`);
      }
      if (registryId === undefined || registryId.length !== 16) throw new IdentityError('malformed', `the registry's id must be 16 bytes, got ${registryId?.length ?? 0}`);
      const chain = this.#chain ?? TrustBundleChain.fromPinned(this.#o.crypto, registryId, this.#o.pinned);
      const result = chain.advance(documents, this.#clock());
      // Anchored: from now on this chain and its registry id are the follower's.
      this.#chain = chain;
      this.#registryId = registryId;
      if (result.accepted.length > 0) {
        // Reported and saved even when the check below refuses the rest: these documents verified and are trusted now.
        this.#emit({ kind: 'updated', from: before, to: result.version, accepted: result.accepted });
        await this.#save();
      }
      if (result.version < current) throw new IdentityError('malformed', `the registry announced trust bundle version ${current} but sent documents up to ${result.version}`);
      this.#state = 'current';
      this.#lastVerifiedAtMs = this.#clock();
      return result;
    } catch (error) {
      if (error instanceof Unreachable) throw error.cause;
      const e = describeError(error);
      this.#state = 'refusing';
      this.#emit({ kind: 'refused', code: e.code, version: this.version, detail: e.detail });
      throw error;
    }
  }

  async #save(): Promise<void> {
    const store = this.#o.store;
    const document = this.#chain?.encoded();
    if (store === undefined || document === undefined) return;
    try {
      await store.save(encodeFollowedState(this.#pin, document), this.version);
    } catch (error) {
      this.#emit({ kind: 'save_failed', version: this.version, detail: error instanceof Error ? error.message : String(error) });
    }
  }

  #emit(event: TrustBundleFollowerEvent): void {
    try {
      this.#o.onEvent?.(event);
    } catch {
      // A reporting hook never changes what the follower does.
    }
  }
}

/** Domain tag of {@link pinnedTrustBundleHash}. */
export const PINNED_TRUST_BUNDLE_DOMAIN = 'parley/v1/pinned-trust-bundle';
/** Domain tag of a follower's saved state (the module comment has its layout). */
export const FOLLOWED_TRUST_BUNDLE_DOMAIN = 'parley/v1/followed-trust-bundle';
const PIN_HASH_BYTES = 32;

/**
 * What identifies a pinned bundle (§15.9): its issuer keys and their validity, not the spelling or order of its
 * JSON. BLAKE3(str("parley/v1/pinned-trust-bundle") ‖ u32(n) ‖ n × [fixed16(key_id) ‖ fixed32(public_key) ‖
 * u8(1 when not_after_ms is set, else 0) ‖ i64(not_after_ms, else 0)]), issuers ascending by key_id.
 * @returns 32 bytes
 * @throws ProtocolError `malformed` unless `pinned` is a TrustBundle
 */
export function pinnedTrustBundleHash(crypto: ParleyCrypto, pinned: TrustBundle): Uint8Array {
  assertCrypto(crypto);
  if (!(pinned instanceof TrustBundle)) malformed('pinned must be a TrustBundle');
  const entries = pinned.entries().sort((a, b) => compareBytes(a.keyId, b.keyId));
  const l = layout(PINNED_TRUST_BUNDLE_DOMAIN).u32(entries.length);
  for (const e of entries) l.fixed(e.keyId, 16, 'keyId').fixed(e.publicKey, 32, 'publicKey').u8(e.notAfterMs === undefined ? 0 : 1).i64(e.notAfterMs ?? 0);
  return crypto.blake3(l.bytes());
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function encodeFollowedState(pin: Uint8Array, document: Uint8Array): Uint8Array {
  return layout(FOLLOWED_TRUST_BUNDLE_DOMAIN).fixed(pin, PIN_HASH_BYTES, 'pin').var(document, 'document').bytes();
}

/** The saved state: the pin it was followed from (undefined: saved before the pin was recorded) and the document. */
function decodeFollowedState(encoded: Uint8Array): { pin: Uint8Array | undefined; document: Uint8Array } {
  const prefix = layout(FOLLOWED_TRUST_BUNDLE_DOMAIN).bytes();
  if (encoded.length < prefix.length || prefix.some((b, i) => encoded[i] !== b)) return { pin: undefined, document: encoded };
  const at = prefix.length + PIN_HASH_BYTES;
  const length = encoded.length >= at + 4 ? new DataView(encoded.buffer, encoded.byteOffset + at, 4).getUint32(0) : -1;
  if (length < 0 || encoded.length !== at + 4 + length) throw new ProtocolError('malformed', 'the saved trust bundle state is truncated or has trailing bytes');
  return { pin: encoded.slice(prefix.length, at), document: encoded.slice(at + 4) };
}

/** The saved document's version, for a report (0 when it does not decode). */
function savedVersion(document: Uint8Array): number {
  try {
    return Number(fromBinary(SignedTrustBundleSchema, document).version);
  } catch {
    return 0;
  }
}

function savedRegistryId(encoded: Uint8Array): Uint8Array {
  try {
    const doc = fromBinary(SignedTrustBundleSchema, encoded);
    if (doc.registryId.length !== 16) throw new Error('registry id must be 16 bytes');
    return doc.registryId;
  } catch (cause) {
    throw new ProtocolError('malformed', 'the saved trust bundle does not decode', { cause });
  }
}

/** A transport failure of GetTrustBundle, already reported as `unreachable` (rethrown as its cause). */
class Unreachable extends Error {
  constructor(override readonly cause: unknown) {
    super('unreachable');
  }
}
