/**
 * The agent's own revocation data (docs/PROTOCOL.md §8.4, §15.6–§15.7): with `registry` and no `revocations`,
 * `connect()` follows that registry's signed revocation list as the gateway does (apps/gateway's
 * revocation-feed.ts) — the full list with GetRevocationList (paged), then WatchRevocations from the version
 * verified — and checks every peer against it at the handshake and for every message it opens.
 *
 * Every batch goes through @parley/identity's RevocationListFollower (gapless versions, the hash chain, a head
 * signed by an issuer key of the followed trust bundle) before it reaches the MemoryRevocationSet, whose
 * freshness is the signed head's `issued_at_ms`, never the receive time. Data older than `maxAgeMs` answers
 * `revocation_stale` (fail closed) until a fresh head arrives: nothing here needs a timer for that, the set
 * measures its own age. A registry that stops answering is retried with backoff from the version verified; a
 * gap, a batch that does not verify, or a version the registry no longer has starts over with a full list,
 * and a list older than the one verified (a registry restored from a backup) is refused (the newer one is kept
 * and goes stale). A watch the registry refuses while its list answers (its bound of watches per address,
 * §15.7) is replaced by polling GetRevocationList, which signs a fresh head at every call.
 *
 * Nothing is un-revoked across a restart either (§15.6; the gateway's `gateway_revocation_floor` and
 * `gateway_revocations_kept`, §10.7): with a durable state store the agent journals what it verified — the
 * highest list version and every revocation held ({@link KeptRevocations}, the journal's `revocations` record,
 * written only when either changes) — and a restarted agent {@link RegistryRevocations.restore}s it before it
 * follows again: those subjects stay revoked whatever the registry serves (a full list lacking one is a fork,
 * taken with them kept and reported `fork`), and a list older than that version is refused `rollback`. The
 * freshness is never restored: checks fail closed (`revocation_stale`) until a fresh signed head arrives.
 * Without a state store nothing is kept: a restart loads whatever list the registry serves.
 *
 * {@link closeRevokedSessions} is the "when its revocation data changes" rule of §8.4: every session whose
 * peer the data now revokes is closed (run when a batch brings revocations, and every second for a checker
 * the caller gave, whose changes the agent cannot see).
 */
import { IdleWatchdog, sleep } from '@parley/async';
import type { ParleyCrypto } from '@parley/crypto-core';
import { IdentityError, MemoryRevocationSet, isIdentityError, RevocationListFollower, type RevocationChecker, type RevocationEntry, type RevocationStatus, type RevocationSubject, type TrustBundle } from '@parley/identity';
import { fromHex, toHex } from '@parley/crypto-core';
import type { GetRevocationListResponse, WatchRevocationsResponse } from '@parley/proto';
import type { SessionManager } from '@parley/session';
import type { JournalRecord, JournalState } from './journal.js';

/**
 * Where the list comes from: the registry's GetRevocationList and WatchRevocations (a `@parley/rpc` client of
 * RegistryService has this shape). Errors should carry a Parley `code` (`unavailable`, …).
 */
export interface RevocationSource {
  getRevocationList(request: { afterVersion: bigint }, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<GetRevocationListResponse>;
  watchRevocations(request: { afterVersion: bigint }, options?: { signal?: AbortSignal }): AsyncIterable<WatchRevocationsResponse>;
}

/** Where the followed revocation list stands. */
export type RevocationListState = 'starting' | 'current' | 'unreachable' | 'refusing';

/** A subject revoked by a new entry: an agent id, or a certificate serial (hex). */
export type RevokedSubject = { readonly agentId: string; readonly reason: string } | { readonly serial: string; readonly reason: string };

/**
 * What the revocation list follower reports (as `{ kind: 'revocation_list', event }`). Never key material.
 * - `synced`: a full list verified and loaded (at start, or after a gap or a refused batch);
 * - `updated`: a batch brought new revocations (their peers' sessions are closed at once);
 * - `unreachable` / `refused`: the registry cannot be reached, or sent something that does not verify (reported
 *   when the state or the code changes, not at every retry);
 * - `stale`: the copy is older than `maxAgeMs` (or was never loaded): every check fails closed with `revocation_stale`;
 * - `fresh`: a fresh signed head arrived after `stale`: checks answer again;
 * - `fork`: a full list at or past the version verified lacks `kept` revocations verified before (kept across a
 *   restart, or in this run): they stay revoked here; the registry's operator should re-issue them (at most once a
 *   minute, as the gateway's `revocation_fork`).
 */
export type RevocationListEvent =
  | { readonly kind: 'synced'; readonly version: number; readonly revocations: number; readonly asOfMs: number }
  | { readonly kind: 'updated'; readonly from: number; readonly to: number; readonly revoked: readonly RevokedSubject[] }
  | { readonly kind: 'unreachable'; readonly code: string; readonly version: number; readonly detail: string }
  | { readonly kind: 'refused'; readonly code: string; readonly version: number; readonly detail: string }
  | { readonly kind: 'stale'; readonly version: number; readonly asOfMs: number | undefined; readonly maxAgeMs: number }
  | { readonly kind: 'fresh'; readonly version: number; readonly asOfMs: number }
  | { readonly kind: 'fork'; readonly code: 'revocation_fork'; readonly version: number; readonly kept: number; readonly detail: string };

/**
 * What a follower verified, kept across a restart (the journal's `revocations` record): the registry, the highest
 * list version verified, and the revocations held. In {@link RegistryRevocationsOptions.onKept}: the version now
 * verified and only the revocations newly held.
 */
export interface KeptRevocations {
  readonly registryId: Uint8Array;
  readonly version: number;
  readonly entries: readonly RevocationEntry[];
}

/** What `Agent.revocationStatus()` returns. */
export interface RevocationListStatus {
  /** The verified list version held (0: none, or the empty list). */
  readonly version: number;
  readonly state: RevocationListState;
  /** Whether checks answer now (the newest signed head is within `maxAgeMs`); false: they fail closed. */
  readonly fresh: boolean;
  /** The newest signed `issued_at_ms` accepted (what freshness is measured from), if any. */
  readonly asOfMs: number | undefined;
  readonly maxAgeMs: number;
  /** Revoked agent ids plus revoked serials held. */
  readonly revocations: number;
}

/** Settings of a {@link RegistryRevocations}. */
export interface RegistryRevocationsOptions {
  readonly crypto: ParleyCrypto;
  /** What heads must be signed by: the followed trust bundle (a live view). */
  readonly trustBundle: TrustBundle;
  /** Freshness bound, ms, from the signed `issued_at_ms`. Default 60 000. */
  readonly maxAgeMs?: number;
  /** The registry id, when known (the option, or the trust bundle follower's); otherwise the first verified head's. */
  readonly registryId?: () => Uint8Array | undefined;
  readonly onEvent?: (event: RevocationListEvent) => void;
  /**
   * Called when the revocations held or the version verified change (not at a heartbeat), with the version and the
   * revocations newly held: what a durable store journals (see {@link RegistryRevocations.restore}). Must not throw.
   */
  readonly onKept?: (change: KeptRevocations) => void;
  /** Called with the entries newly held (after the set has them). */
  readonly onRevoked?: (entries: readonly RevocationEntry[]) => void;
  /** A watch batch's `trust_bundle_version` hint (§15.9), awaited before the batch is checked. Must not throw. */
  readonly onTrustBundleVersion?: (version: bigint) => Promise<void>;
  /** A head signed by a key outside the trust bundle: fetch the registry's bundle before trying again. Must not throw. */
  readonly onUnknownIssuer?: () => Promise<void>;
  /** First retry delay, ms (doubles up to `maxBackoffMs`). Default 500. */
  readonly minBackoffMs?: number;
  /** Default 5 000. */
  readonly maxBackoffMs?: number;
  /** A watch silent this long is opened again. Default min(40 000, maxAgeMs): a registry heartbeats every 15 s. */
  readonly idleTimeoutMs?: number;
  /** Poll interval while the registry refuses a watch. Default maxAgeMs / 4, within 1 000 .. 15 000. */
  readonly pollIntervalMs?: number;
  /** How long to poll before asking for a watch again. Default 60 000. */
  readonly watchRetryMs?: number;
  readonly clock?: () => number;
}

/** Pages of one full list at the most (the registry sends at least one entry a page while behind). */
const MAX_LIST_PAGES = 100_000;
/** Failures retrying cannot change only by waiting: anything else starts over with a full list. */
const TRANSIENT = new Set(['unavailable', 'deadline_exceeded', 'cancelled', 'rate_limited', 'resource_exhausted', 'internal']);

/** A failure's stable code and one line. */
function describeError(error: unknown): { code: string; detail: string } {
  const code = (error as { code?: unknown } | null)?.code;
  const localDetails = (error as { localDetails?: unknown } | null)?.localDetails;
  const detail = typeof localDetails === 'string' ? localDetails : error instanceof Error ? error.message.replace(/^\[[a-z_]+\] /, '') : String(error);
  return { code: typeof code === 'string' && /^[a-z_]+$/.test(code) ? code : 'internal', detail: detail.split('\n')[0]! };
}

class SourceError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A registry's signed revocation list, followed until closed; the RevocationChecker an agent checks peers against. */
export class RegistryRevocations implements RevocationChecker {
  readonly #o: RegistryRevocationsOptions;
  #set: MemoryRevocationSet;
  /** Every revocation held (the set's, by subject), and the version and registry they were last kept at. */
  readonly #held = new Map<string, RevocationEntry>();
  #keptVersion = 0;
  #registryId: Uint8Array | undefined;
  /** The version verified before a restart (restored): a list older than it is refused `rollback`. */
  #floor = 0;
  #forkReportedAt: number | undefined;
  readonly #clock: () => number;
  readonly #abort = new AbortController();
  #source: RevocationSource | undefined;
  #follower: RevocationListFollower | undefined;
  #loop: Promise<void> | undefined;
  #state: RevocationListState = 'starting';
  #reported: string | undefined;
  #freshness: 'unknown' | 'fresh' | 'stale' = 'unknown';
  #monitor: NodeJS.Timeout | undefined;
  #synced!: () => void;
  /** Resolves once the first full list is loaded. */
  readonly synced: Promise<void>;

  /** @throws IdentityError `malformed` when `maxAgeMs` is not a positive safe integer */
  constructor(options: RegistryRevocationsOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
    this.#set = new MemoryRevocationSet(options.maxAgeMs === undefined ? {} : { maxAgeMs: options.maxAgeMs });
    this.synced = new Promise((resolve) => (this.#synced = resolve));
  }

  get maxAgeMs(): number {
    return this.#set.maxAgeMs;
  }

  /** §3.3 step 6 against the followed list: `revocation_stale` (IdentityError) when it is older than `maxAgeMs`. */
  check(subject: RevocationSubject, nowMs: number): RevocationStatus {
    return this.#set.check(subject, nowMs);
  }

  status(): RevocationListStatus {
    return {
      version: Math.max(this.#floor, this.#set.version),
      state: this.#state,
      fresh: this.#set.isFresh(this.#clock()),
      asOfMs: this.#set.lastUpdatedMs,
      maxAgeMs: this.#set.maxAgeMs,
      revocations: this.#set.size,
    };
  }

  /**
   * Before {@link start}: takes what was verified before a restart (the journal's `revocations` record). Its
   * revocations are held at once (they stay revoked whatever the registry serves), and a list older than its
   * version is refused `rollback`; the freshness is not restored, so checks still fail closed until a fresh
   * signed head arrives. Kept data of another registry than the one followed is dropped at the first list.
   * @throws IdentityError `malformed` when an entry is malformed (then nothing is taken)
   */
  restore(kept: KeptRevocations): void {
    if (this.#loop !== undefined) return;
    this.#set.keep(kept.entries);
    for (const e of kept.entries) if (!this.#held.has(keyOf(e))) this.#held.set(keyOf(e), e);
    this.#floor = Math.max(this.#floor, kept.version);
    this.#keptVersion = Math.max(this.#keptVersion, kept.version);
    this.#registryId = kept.registryId.slice();
  }

  /** Everything held now (what a compaction journals), or undefined before anything was verified or restored. */
  kept(): KeptRevocations | undefined {
    if (this.#registryId === undefined) return undefined;
    return { registryId: this.#registryId, version: this.#keptVersion, entries: [...this.#held.values()] };
  }

  /** Starts following `source` (once). */
  start(source: RevocationSource): void {
    if (this.#loop !== undefined || this.#abort.signal.aborted) return;
    this.#source = source;
    this.#loop = this.#run();
  }

  /**
   * From now on, reports `stale` when the copy is (or becomes) older than its bound, and `fresh` when it recovers
   * (checked every second and at every batch). Called once connecting stopped waiting for the first list.
   */
  watchFreshness(): void {
    if (this.#monitor !== undefined || this.#abort.signal.aborted) return;
    this.#monitor = setInterval(() => this.#checkFreshness(), 1_000);
    this.#monitor.unref();
    this.#checkFreshness();
  }

  /** Stops following (a call in flight is cancelled) and waits for the loop to end. */
  async close(): Promise<void> {
    this.#abort.abort();
    if (this.#monitor !== undefined) clearInterval(this.#monitor);
    await this.#loop;
  }

  get #maxBackoffMs(): number {
    return this.#o.maxBackoffMs ?? 5_000;
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    const minBackoff = this.#o.minBackoffMs ?? 500;
    let backoff = minBackoff;
    while (!signal.aborted) {
      let delivered = false;
      try {
        if (this.#follower === undefined) await this.#loadFull();
        if (signal.aborted) break;
        await this.#watch(() => {
          delivered = true;
          backoff = minBackoff;
        });
        throw new SourceError('unavailable', 'the revocation watch ended');
      } catch (error) {
        if (signal.aborted) break;
        const e = describeError(error);
        const transient = TRANSIENT.has(e.code);
        // A gap, a broken chain, a bad signature, a version the registry no longer has: start over from a full list.
        if (!transient) this.#follower = undefined;
        this.#fail(transient ? 'unreachable' : 'refusing', e);
        if (e.code === 'unknown_issuer') await this.#o.onUnknownIssuer?.().catch(() => undefined);
        // A watch refused at once while the list answers (too many watches from this address, §15.7): poll the list.
        if (transient && !delivered && this.#follower !== undefined && (await this.#catchUp())) {
          backoff = minBackoff;
          await this.#poll();
          continue;
        }
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, this.#maxBackoffMs);
      }
    }
  }

  /** Fetches and verifies the whole list (paged), takes it as the copy, reports the new revocations. */
  async #loadFull(): Promise<void> {
    const { crypto, trustBundle } = this.#o;
    const source = this.#source!;
    let follower: RevocationListFollower | undefined;
    let registryId: Uint8Array | undefined;
    const all: RevocationEntry[] = [];
    let issuedAtMs = 0;
    for (let pages = 1; ; pages++) {
      const res = await source.getRevocationList({ afterVersion: BigInt(follower?.version ?? 0) }, { signal: this.#abort.signal, timeoutMs: 15_000 });
      if (follower === undefined) {
        // Without a known id the head's own is taken: its signature (by a key of the trust bundle) covers it.
        registryId = this.#o.registryId?.() ?? res.head?.registryId;
        if (registryId === undefined || registryId.length !== 16) throw new IdentityError('malformed', 'the revocation list head names no 16-byte registry id');
        follower = new RevocationListFollower(crypto, { registryId, trustBundle });
      }
      const accepted = follower.apply(res.entries, res.head, this.#clock());
      all.push(...accepted.entries);
      issuedAtMs = accepted.issuedAtMs;
      if (BigInt(follower.version) >= res.currentVersion) break;
      if (accepted.entries.length === 0) throw new IdentityError('malformed', `the registry's revocation list page after version ${follower.version} brought no entries, but its current version is ${res.currentVersion}`);
      if (pages >= MAX_LIST_PAGES) throw new IdentityError('malformed', `the registry's revocation list took more than ${MAX_LIST_PAGES} pages`);
    }
    if (registryId === undefined) throw new IdentityError('malformed', 'the revocation list named no registry id');
    if (this.#registryId !== undefined && !sameBytes(this.#registryId, registryId)) {
      // What was kept is another registry's (the agent now follows a different one): it does not apply here.
      this.#set = new MemoryRevocationSet({ maxAgeMs: this.#set.maxAgeMs });
      this.#held.clear();
      this.#floor = 0;
      this.#keptVersion = 0;
    }
    this.#registryId = registryId.slice();
    const held = Math.max(this.#floor, this.#set.version);
    if (follower.version < held) {
      throw new IdentityError(
        'rollback',
        `the registry's revocation list is at version ${follower.version}, older than version ${held} verified here (its database restored from an older backup?): the newer list is kept, and goes stale`,
      );
    }
    const { added, lacking } = this.#set.replace(all, follower.version, issuedAtMs);
    this.#keep(all, follower.version);
    this.#follower = follower;
    this.#current();
    this.#emit({ kind: 'synced', version: follower.version, revocations: this.#set.size, asOfMs: this.#set.lastUpdatedMs ?? issuedAtMs });
    const now = this.#clock();
    if (lacking > 0 && (this.#forkReportedAt === undefined || now - this.#forkReportedAt >= 60_000)) {
      this.#forkReportedAt = now;
      this.#emit({
        kind: 'fork',
        code: 'revocation_fork',
        version: follower.version,
        kept: lacking,
        detail:
          `the registry's revocation list at version ${follower.version} lacks ${lacking} revocation(s) verified here before (its database restored from a backup?):` +
          ' they stay revoked for this agent. Operator: re-issue them on the registry (`parley-registry agent revoke`)',
      });
    }
    this.#synced();
    this.#checkFreshness();
    this.#revoked(added);
  }

  /** Follows WatchRevocations from the version held until it fails (or the follower closes). */
  async #watch(onBatch: () => void): Promise<void> {
    const follower = this.#follower!;
    const signal = this.#abort.signal;
    const idleMs = this.#o.idleTimeoutMs ?? Math.min(40_000, this.#set.maxAgeMs);
    const watchdog = new IdleWatchdog(signal, idleMs);
    try {
      for await (const batch of this.#source!.watchRevocations({ afterVersion: BigInt(follower.version) }, { signal: watchdog.signal })) {
        watchdog.touch();
        if (batch.trustBundleVersion > 0n) await this.#o.onTrustBundleVersion?.(batch.trustBundleVersion);
        this.#take(follower, batch);
        onBatch();
      }
    } catch (error) {
      if (watchdog.timedOut && !signal.aborted) throw new SourceError('deadline_exceeded', `the revocation watch sent nothing for ${idleMs} ms`);
      throw error;
    } finally {
      watchdog.dispose();
    }
  }

  /** One batch (a watch batch, or a poll's page after the version held): verified, applied, reported. */
  #take(follower: RevocationListFollower, batch: Pick<WatchRevocationsResponse, 'entries' | 'head'>): void {
    const from = this.#set.version;
    const accepted = follower.apply(batch.entries, batch.head, this.#clock());
    this.#set.apply(accepted.entries, accepted.version, accepted.issuedAtMs);
    this.#keep(accepted.entries, accepted.version);
    this.#current();
    this.#checkFreshness();
    if (accepted.entries.length > 0) this.#emit({ kind: 'updated', from, to: accepted.version, revoked: accepted.entries.map(subjectOf) });
    this.#revoked(accepted.entries);
  }

  /** Brings the copy up to the registry's current version with GetRevocationList; false (reported) when that fails. */
  async #catchUp(): Promise<boolean> {
    const follower = this.#follower;
    if (follower === undefined) return false;
    try {
      for (let pages = 1; ; pages++) {
        const res = await this.#source!.getRevocationList({ afterVersion: BigInt(follower.version) }, { signal: this.#abort.signal, timeoutMs: 15_000 });
        this.#take(follower, res);
        if (BigInt(follower.version) >= res.currentVersion) return true;
        if (res.entries.length === 0 || pages >= MAX_LIST_PAGES) throw new IdentityError('malformed', `the registry's revocation list page after version ${follower.version} brought no entries, but its current version is ${res.currentVersion}`);
      }
    } catch (error) {
      if (this.#abort.signal.aborted) return false;
      const e = describeError(error);
      if (!TRANSIENT.has(e.code)) this.#follower = undefined;
      this.#fail(TRANSIENT.has(e.code) ? 'unreachable' : 'refusing', e);
      return false;
    }
  }

  /** Polls the list every poll interval for `watchRetryMs`, or until a poll fails. */
  async #poll(): Promise<void> {
    const signal = this.#abort.signal;
    const interval = this.#o.pollIntervalMs ?? Math.max(1_000, Math.min(15_000, Math.floor(this.#set.maxAgeMs / 4)));
    const until = this.#clock() + (this.#o.watchRetryMs ?? 60_000);
    while (!signal.aborted && this.#clock() < until) {
      await sleep(interval, signal);
      if (signal.aborted || !(await this.#catchUp())) return;
    }
  }

  /** Holds `entries` (verified, now in the set) at `version`; reports a change of either to `onKept`. */
  #keep(entries: readonly RevocationEntry[], version: number): void {
    const added: RevocationEntry[] = [];
    for (const e of entries) {
      const key = keyOf(e);
      if (this.#held.has(key)) continue; // the first revocation of a subject stands, as in the set
      this.#held.set(key, e);
      added.push(e);
    }
    if (added.length === 0 && version <= this.#keptVersion) return; // a heartbeat, or nothing new
    this.#keptVersion = Math.max(this.#keptVersion, version);
    try {
      this.#o.onKept?.({ registryId: this.#registryId!, version: this.#keptVersion, entries: added });
    } catch {
      // A handler's failure never stops the follower.
    }
  }

  #current(): void {
    this.#state = 'current';
    this.#reported = undefined;
  }

  #fail(state: 'unreachable' | 'refusing', e: { code: string; detail: string }): void {
    this.#state = state;
    const key = `${state}:${e.code}`;
    if (this.#reported === key) return; // said once per state and code, not at every retry
    this.#reported = key;
    this.#emit({ kind: state === 'unreachable' ? 'unreachable' : 'refused', code: e.code, version: this.#set.version, detail: e.detail });
  }

  #checkFreshness(): void {
    if (this.#monitor === undefined) return; // not yet: connecting is still waiting for the first list
    const fresh = this.#set.isFresh(this.#clock());
    if (fresh && this.#freshness !== 'fresh') {
      if (this.#freshness === 'stale') this.#emit({ kind: 'fresh', version: this.#set.version, asOfMs: this.#set.lastUpdatedMs! });
      this.#freshness = 'fresh';
    } else if (!fresh && this.#freshness !== 'stale') {
      this.#freshness = 'stale';
      this.#emit({ kind: 'stale', version: this.#set.version, asOfMs: this.#set.lastUpdatedMs, maxAgeMs: this.#set.maxAgeMs });
    }
  }

  #revoked(entries: readonly RevocationEntry[]): void {
    if (entries.length === 0) return;
    try {
      this.#o.onRevoked?.(entries);
    } catch {
      // A handler's failure never stops the follower.
    }
  }

  #emit(event: RevocationListEvent): void {
    try {
      this.#o.onEvent?.(event);
    } catch {
      // A listener's failure never changes what the follower does.
    }
  }
}

/** One key per revoked subject (as the set keys them). */
const keyOf = (e: RevocationEntry): string => (e.kind === 'agent' ? `agent:${e.agentId}` : `serial:${toHex(e.serial)}`);

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Revocations a `revocations` journal record holds at the most. Bound relied on: the record holds one entry per
 * subject the followed registry revoked (operator-signed, §15.3; a peer or the network adds none), i.e. no more
 * than the follower already holds in memory; it is split into records of this many entries so that no record
 * grows with the list.
 */
export const KEPT_RECORD_ENTRIES = 1_000;

/** `kept` as journal records (`revocations`, at most {@link KEPT_RECORD_ENTRIES} entries each; one when none). */
export function keptRecords(kept: KeptRevocations | undefined): JournalRecord[] {
  if (kept === undefined) return [];
  const registry = toHex(kept.registryId);
  const out: JournalRecord[] = [];
  for (let i = 0; i === 0 || i < kept.entries.length; i += KEPT_RECORD_ENTRIES) {
    const chunk = kept.entries.slice(i, i + KEPT_RECORD_ENTRIES);
    out.push({
      t: 'revocations',
      registry,
      version: kept.version,
      kept: chunk.map((e) => (e.kind === 'agent' ? { agent: e.agentId, reason: e.reason, at: e.revokedAtMs } : { serial: toHex(e.serial), reason: e.reason, at: e.revokedAtMs })),
    });
  }
  return out;
}

/** What the journal kept of the followed revocation list (undefined in a journal without `revocations` records). */
export function keptFromJournal(state: JournalState): KeptRevocations | undefined {
  const r = state.revocations;
  if (r === undefined) return undefined;
  return {
    registryId: fromHex(r.registry),
    version: r.version,
    entries: [...r.kept.values()].map((k): RevocationEntry => ('agent' in k ? { kind: 'agent', agentId: k.agent, reason: k.reason, revokedAtMs: k.at } : { kind: 'serial', serial: fromHex(k.serial), reason: k.reason, revokedAtMs: k.at })),
  };
}

function subjectOf(e: RevocationEntry): RevokedSubject {
  return e.kind === 'agent' ? { agentId: e.agentId, reason: e.reason } : { serial: Buffer.from(e.serial).toString('hex'), reason: e.reason };
}

/** A session closed because its peer is revoked (§8.4: the agent's revocation data changed). */
export interface RevocationSecurityEvent {
  readonly kind: 'security';
  readonly stage: 'revocation';
  readonly code: 'revoked';
  readonly sessionId: string;
  /** The revoked peer. */
  readonly senderId: string;
  readonly recipientId: string;
  readonly atMs: number;
  readonly detail: string;
}

/**
 * Closes every session whose peer `checker` now says is revoked (§8.4), reporting each; a checker that cannot
 * answer (stale data) closes nothing — fresher data may clear the peer, and every message is refused meanwhile.
 * @returns how many sessions were closed
 */
export function closeRevokedSessions(manager: SessionManager, checker: RevocationChecker, emit: (event: RevocationSecurityEvent) => void, nowMs: number = Date.now()): number {
  let closed = 0;
  for (const session of manager.sessions()) {
    if (session.isClosed) continue;
    let status: RevocationStatus;
    try {
      status = checker.check({ agentId: session.peer.agentId, serial: session.peer.serial.slice() }, nowMs);
    } catch (error) {
      // As the session's own check (§8.1 step 2): a checker may say "revoked" by throwing it.
      if (!isIdentityError(error, 'revoked')) continue;
      status = { revoked: true, by: 'agent', reason: 'revoked', revokedAtMs: nowMs };
    }
    if (status?.revoked !== true) continue;
    manager.closeSession(session);
    closed++;
    emit({
      kind: 'security',
      stage: 'revocation',
      code: 'revoked',
      sessionId: session.idHex,
      senderId: session.peerId,
      recipientId: manager.agentId,
      atMs: nowMs,
      detail: `the peer's certificate is revoked (by ${status.by}: ${status.reason}); session closed`,
    });
  }
  return closed;
}
