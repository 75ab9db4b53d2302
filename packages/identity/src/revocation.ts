/**
 * Revocation (DESIGN.md "Identity"): the registry keeps an append-only,
 * versioned, signed revocation list; consumers hold a cached copy with a
 * freshness bound and receive deltas through a watch stream. When the copy is
 * older than the bound, the safe default is to refuse (fail closed).
 *
 * `RevocationChecker` is the interface sessions and gateways consult;
 * `MemoryRevocationSet` is the in-memory cache of the (already verified) list.
 * Verifying the list's signature belongs to whoever fetches it (the registry
 * client), not to this cache.
 *
 * Versions are gapless: every revocation is exactly one version step, so the
 * list at version v holds v entries, and a delta that brings v to v+n carries
 * exactly n entries. An empty delta at the current version is a heartbeat:
 * "nothing new as of then", and refreshes the copy.
 *
 * Freshness is "as of" a time the source vouches for (the registry's signed
 * head `issued_at_ms`, §15.6), never the time a delta was received: a replayed
 * old heartbeat must not keep a copy fresh. The copy keeps the newest as-of
 * time it was given, so an older one refreshes nothing.
 */
import { toHex } from '@parley/crypto-core';
import { assertBytes, assertObject, assertSafeInt, describe, malformed } from './assert.js';
import { IdentityError } from './errors.js';
import { assertAgentId } from './names.js';
import { SERIAL_BYTES } from './serial.js';

/** What a revocation check is asked about: the certificate's agent id and serial. */
export interface RevocationSubject {
  readonly agentId: string;
  readonly serial: Uint8Array;
}

/** The answer of a revocation check. */
export type RevocationStatus =
  | { readonly revoked: false }
  | { readonly revoked: true; readonly reason: string; readonly revokedAtMs: number; readonly by: 'agent' | 'serial' };

/** The revocation-set interface used by sessions and gateways. */
export interface RevocationChecker {
  /**
   * Whether `subject` is revoked.
   * Throws IdentityError('revocation_stale') when the data is older than its freshness bound (fail closed), unless configured to fail open.
   */
  check(subject: RevocationSubject, nowMs: number): RevocationStatus;
}

/**
 * One revocation. Revoking an agent id revokes every certificate issued for
 * it (past and future ones alike: re-admitting an agent means a new agent id);
 * revoking a serial revokes exactly that certificate.
 */
export type RevocationEntry =
  | { readonly kind: 'agent'; readonly agentId: string; readonly reason: string; readonly revokedAtMs: number }
  | { readonly kind: 'serial'; readonly serial: Uint8Array; readonly reason: string; readonly revokedAtMs: number };

/** Settings of a {@link MemoryRevocationSet}. */
export interface MemoryRevocationSetOptions {
  /** Freshness bound: data older than this (ms since the last update) is stale. Default 60 000. */
  readonly maxAgeMs?: number;
  /** When true, stale data is still used instead of refusing. Default false (fail closed). */
  readonly failOpen?: boolean;
}

/** Default freshness bound of a revocation cache (60 s). */
export const DEFAULT_REVOCATION_MAX_AGE_MS = 60_000;
/** Longest accepted revocation reason, in UTF-16 code units. */
export const MAX_REVOCATION_REASON_LENGTH = 1024;

interface Revocation {
  readonly reason: string;
  readonly revokedAtMs: number;
}

const NOT_REVOKED: RevocationStatus = Object.freeze({ revoked: false });

/** An in-memory revocation list cache, at one version, with a freshness bound. */
export class MemoryRevocationSet implements RevocationChecker {
  /** Freshness bound in milliseconds. */
  readonly maxAgeMs: number;
  /** Whether stale data is used rather than refused. */
  readonly failOpen: boolean;
  readonly #byAgent = new Map<string, Revocation>();
  readonly #bySerial = new Map<string, Revocation>();
  #version = 0;
  #lastUpdatedMs: number | undefined;

  /**
   * An empty set at version 0 that has never been updated, so it is stale
   * (and refuses, unless `failOpen`) until the first {@link apply} or {@link replace}.
   *
   * @param options freshness bound and fail-open switch
   * @throws IdentityError `malformed` when `maxAgeMs` is not a positive safe integer or `failOpen` not a boolean
   */
  constructor(options: MemoryRevocationSetOptions = {}) {
    const o = assertObject(options, 'options');
    this.maxAgeMs = o['maxAgeMs'] === undefined ? DEFAULT_REVOCATION_MAX_AGE_MS : assertSafeInt(o['maxAgeMs'], 'maxAgeMs', 1);
    if (o['failOpen'] !== undefined && typeof o['failOpen'] !== 'boolean') {
      malformed(`failOpen must be a boolean, got ${describe(o['failOpen'])}`);
    }
    this.failOpen = o['failOpen'] === true;
  }

  /** The list version this copy reflects (0 before any update). */
  get version(): number {
    return this.#version;
  }

  /** The newest time the copy was confirmed current as of (ms since the epoch), or undefined if never. */
  get lastUpdatedMs(): number | undefined {
    return this.#lastUpdatedMs;
  }

  /** Number of revoked agent ids plus revoked serials. */
  get size(): number {
    return this.#byAgent.size + this.#bySerial.size;
  }

  /**
   * Whether the copy is within its freshness bound at `nowMs`.
   * @param nowMs current time, ms since the epoch
   * @returns false when never updated or last updated more than `maxAgeMs` ago
   * @throws IdentityError `malformed` when `nowMs` is not a non-negative safe integer
   */
  isFresh(nowMs: number): boolean {
    assertSafeInt(nowMs, 'nowMs');
    return this.#lastUpdatedMs !== undefined && nowMs - this.#lastUpdatedMs <= this.maxAgeMs;
  }

  /**
   * Applies a delta that brings the list from the current version v to
   * `version` = v + entries.length (one version per revocation; gapless).
   * An empty delta at the current version is a heartbeat that only refreshes
   * `lastUpdatedMs`. All or nothing: on any error nothing changes.
   *
   * @param entries the revocations with versions v+1 … v+n, in order
   * @param version the list version after this delta
   * @param asOfMs the time the source vouches the list was current at, ms since the epoch: the signed
   *   head's `issued_at_ms` (as returned by the registry client's follower), NOT the receive time.
   *   `lastUpdatedMs` becomes max(lastUpdatedMs, asOfMs): an older as-of time refreshes nothing.
   * @throws IdentityError `revocation_stale` when `version` skips ahead (a gap: fetch a full list and {@link replace});
   *   `malformed` when it goes backwards (a replayed or reordered delta) or any entry is malformed
   */
  apply(entries: readonly RevocationEntry[], version: number, asOfMs: number): void {
    const checked = checkEntries(entries);
    assertSafeInt(version, 'version');
    assertSafeInt(asOfMs, 'asOfMs');
    const expected = this.#version + checked.length;
    if (version > expected) {
      throw new IdentityError(
        'revocation_stale',
        `revocation delta ends at version ${version} but this copy at ${this.#version} plus ${checked.length} entries reaches ${expected}: versions are missing, fetch a full list`,
      );
    }
    if (version < expected) {
      malformed(`revocation delta ends at version ${version}, expected ${expected} (replayed or reordered delta)`);
    }
    for (const entry of checked) this.#add(entry);
    this.#version = version;
    this.#refresh(asOfMs);
  }

  /**
   * Takes a full list (a snapshot fetched after a gap or at start-up) as the copy's version. The version
   * may not go backwards, and the list must hold exactly `version` entries (one version per revocation):
   * an older or shortened list could un-revoke. A subject this copy already holds as revoked stays revoked
   * even when the list lacks it — revocations are never undone (§15.6), so a list without one is a fork
   * (a registry restored from an older backup that went on revoking others), never a correction. All or nothing.
   *
   * @param entries every revocation in the list (versions 1 … version)
   * @param version the list's version (>= the current one; = entries.length)
   * @param asOfMs the time the source vouches the list was current at (the signed head's `issued_at_ms`);
   *   `lastUpdatedMs` becomes max(lastUpdatedMs, asOfMs)
   * @returns `added`: the entries whose subject this copy did not hold as revoked, in list order;
   *   `lacking`: how many subjects revoked in this copy the list lacks (0 unless the list forked from the copy's)
   * @throws IdentityError `malformed` when `version` is older than the current one, does not equal the
   *   number of entries, or any entry is malformed
   */
  replace(entries: readonly RevocationEntry[], version: number, asOfMs: number): { readonly added: readonly RevocationEntry[]; readonly lacking: number } {
    const checked = checkEntries(entries);
    assertSafeInt(version, 'version');
    assertSafeInt(asOfMs, 'asOfMs');
    if (version < this.#version) malformed(`revocation list version ${version} is older than this copy's ${this.#version}`);
    if (checked.length !== version) malformed(`revocation list at version ${version} must hold ${version} entries (one per version), got ${checked.length}`);
    const listed = new Set(checked.map((e) => `${e.kind}:${e.key}`));
    let lacking = 0;
    for (const key of this.#byAgent.keys()) if (!listed.has(`agent:${key}`)) lacking++;
    for (const key of this.#bySerial.keys()) if (!listed.has(`serial:${key}`)) lacking++;
    const added: RevocationEntry[] = [];
    checked.forEach((entry, i) => {
      if (this.#add(entry)) added.push(entries[i]!);
    });
    this.#version = version;
    this.#refresh(asOfMs);
    return { added, lacking };
  }

  /**
   * Adds revocations verified earlier (by this holder, kept across a restart) without changing the
   * version or the freshness: a subject once revoked stays revoked, even if the list the source serves
   * later lacks it (see {@link replace}).
   * @throws IdentityError `malformed` when an entry is malformed (then nothing is added)
   */
  keep(entries: readonly RevocationEntry[]): void {
    for (const entry of checkEntries(entries)) this.#add(entry);
  }

  #refresh(asOfMs: number): void {
    if (this.#lastUpdatedMs === undefined || asOfMs > this.#lastUpdatedMs) this.#lastUpdatedMs = asOfMs;
  }

  /**
   * Whether a certificate is revoked. A revoked agent id is reported before a revoked serial.
   *
   * @param subject the certificate's agent id and 16-byte serial
   * @param nowMs current time, ms since the epoch
   * @returns `{ revoked: false }` or the revocation with its reason, time and kind
   * @throws IdentityError `revocation_stale` when the copy is not fresh and `failOpen` is false;
   *   `malformed` on a malformed subject or time
   */
  check(subject: RevocationSubject, nowMs: number): RevocationStatus {
    const s = assertObject(subject, 'subject');
    const agentId = assertAgentId(s['agentId'], 'subject.agentId');
    const serial = assertBytes(s['serial'], 'subject.serial', SERIAL_BYTES);
    if (!this.isFresh(nowMs) && !this.failOpen) {
      throw new IdentityError(
        'revocation_stale',
        this.#lastUpdatedMs === undefined
          ? 'revocation data was never loaded'
          : `revocation data is ${nowMs - this.#lastUpdatedMs} ms old, more than the ${this.maxAgeMs} ms bound`,
      );
    }
    const byAgent = this.#byAgent.get(agentId);
    if (byAgent !== undefined) return Object.freeze({ revoked: true, by: 'agent', ...byAgent });
    const bySerial = this.#bySerial.get(toHex(serial));
    if (bySerial !== undefined) return Object.freeze({ revoked: true, by: 'serial', ...bySerial });
    return NOT_REVOKED;
  }

  /** Adds a revocation; false when its subject was revoked already (the first revocation of a subject stands). */
  #add(entry: CheckedEntry): boolean {
    const map = entry.kind === 'agent' ? this.#byAgent : this.#bySerial;
    if (map.has(entry.key)) return false;
    map.set(entry.key, Object.freeze({ reason: entry.reason, revokedAtMs: entry.revokedAtMs }));
    return true;
  }
}

interface CheckedEntry {
  readonly kind: 'agent' | 'serial';
  readonly key: string;
  readonly reason: string;
  readonly revokedAtMs: number;
}

function checkEntries(entries: unknown): CheckedEntry[] {
  if (!Array.isArray(entries)) malformed(`entries must be an array, got ${describe(entries)}`);
  return (entries as unknown[]).map((raw, i): CheckedEntry => {
    const name = `entries[${i}]`;
    const e = assertObject(raw, name);
    const reason = e['reason'];
    if (typeof reason !== 'string') malformed(`${name}.reason must be a string, got ${describe(reason)}`);
    if (reason.length > MAX_REVOCATION_REASON_LENGTH) malformed(`${name}.reason must be at most ${MAX_REVOCATION_REASON_LENGTH} chars`);
    const revokedAtMs = assertSafeInt(e['revokedAtMs'], `${name}.revokedAtMs`);
    if (e['kind'] === 'agent') {
      return { kind: 'agent', key: assertAgentId(e['agentId'], `${name}.agentId`), reason, revokedAtMs };
    }
    if (e['kind'] === 'serial') {
      return { kind: 'serial', key: toHex(assertBytes(e['serial'], `${name}.serial`, SERIAL_BYTES)), reason, revokedAtMs };
    }
    return malformed(`${name}.kind must be 'agent' or 'serial'`);
  });
}
