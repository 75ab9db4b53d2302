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
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { IdentityError, TrustBundle, TrustBundleChain, type ChainAdvance } from '@parley/identity';
import { SignedTrustBundleSchema, fromBinary, type GetTrustBundleResponse, type SignedTrustBundle } from '@parley/proto';
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

/** What a follower reports. Never key material. */
export type TrustBundleFollowerEvent =
  | { readonly kind: 'restored'; readonly version: number }
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
  /** The pinned bundle (§3.3 JSON): the anchor while no document was ever accepted. */
  readonly pinned: TrustBundle;
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
  /** The live view: always the newest accepted version (the pinned bundle before any). */
  readonly trustBundle: TrustBundle;

  constructor(options: TrustBundleFollowerOptions) {
    if (!(options.pinned instanceof TrustBundle)) throw new IdentityError('malformed', 'pinned must be a TrustBundle');
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

  /**
   * Loads the saved document, if any (a bad one is reported and the pinned bundle used instead).
   * Call once before {@link start}.
   */
  async restore(): Promise<void> {
    const store = this.#o.store;
    if (store === undefined) return;
    let encoded: Uint8Array | undefined;
    try {
      encoded = await store.load();
      if (encoded === undefined) return;
      const registryId = this.#registryId ?? savedRegistryId(encoded);
      this.#chain = TrustBundleChain.fromSaved(this.#o.crypto, registryId, encoded);
      this.#registryId = registryId;
      this.#emit({ kind: 'restored', version: this.#chain.version });
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
    const encoded = this.#chain?.encoded();
    if (store === undefined || encoded === undefined) return;
    try {
      await store.save(encoded, this.version);
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
