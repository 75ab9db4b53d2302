/**
 * A registry's signed revocation list (docs/PROTOCOL.md §15.6), shared by the
 * registry that writes it and everything that follows it (the gateway's
 * revocation feed, the registry CLI's `revocations`):
 *
 * - the list's hash chain and its signed head;
 * - {@link RevocationListFollower}, which checks batches from
 *   GetRevocationList / WatchRevocations (gapless versions, chain, issuer
 *   signature) and turns them into RevocationEntry deltas for a
 *   MemoryRevocationSet.
 *
 * It lives beside the revocation set it feeds and the trust bundle it checks
 * against, so that following a registry needs no gRPC library.
 */
import { layout, type ParleyCrypto } from '@parley/crypto-core';
import { RevocationReason, type RevocationListEntry, type SignedRevocationHead } from '@parley/proto';
import { asMalformed, assertBytes, assertCrypto, assertObject, assertSafeInt, describe, malformed } from './assert.js';
import { IdentityError } from './errors.js';
import type { RevocationEntry } from './revocation.js';
import { TrustBundle } from './trust-bundle.js';

/** Length of a registry id. */
export const REGISTRY_ID_BYTES = 16;
/** Length of a revocation chain hash. */
export const CHAIN_HASH_BYTES = 32;
/** The chain hash "before entry 1". */
export const EMPTY_CHAIN_HASH: Uint8Array = new Uint8Array(CHAIN_HASH_BYTES);

/** Domain tags of the revocation list layouts. */
export const REVOCATION_DOMAINS = Object.freeze({
  revocationEntry: 'parley/v1/revocation-entry',
  revocationHead: 'parley/v1/revocation-head',
} as const);

/** Revocation subject kinds as encoded in the entry layout. */
export const REVOCATION_KIND = Object.freeze({ agent: 1, serial: 2 } as const);

/** The hashed fields of one revocation list entry. */
export interface RevocationEntryFields {
  readonly version: bigint | number;
  readonly kind: 'agent' | 'serial';
  /** Set for kind `agent`, else empty. */
  readonly agentId: string;
  /** 16 bytes for kind `serial`, else empty. */
  readonly serial: Uint8Array;
  readonly reason: number;
  readonly reasonText: string;
  readonly revokedAtMs: bigint | number;
}

/**
 * The chain hash of an entry (§15.6):
 * `BLAKE3(layout('parley/v1/revocation-entry').fixed16(registry_id).fixed32(previous_hash).u64(version).u8(kind)
 *   .str(agent_id).var(serial).u32(reason).str(reason_text).i64(revoked_at_ms))`.
 *
 * @param crypto the ParleyCrypto instance
 * @param registryId the registry's 16-byte id
 * @param previousHash the previous entry's hash, or {@link EMPTY_CHAIN_HASH} for version 1
 * @param entry the entry's fields
 * @returns 32 bytes
 */
export function revocationEntryHash(crypto: ParleyCrypto, registryId: Uint8Array, previousHash: Uint8Array, entry: RevocationEntryFields): Uint8Array {
  assertCrypto(crypto);
  assertObject(entry, 'entry');
  const kind = entry.kind === 'agent' || entry.kind === 'serial' ? REVOCATION_KIND[entry.kind] : malformed(`entry.kind must be 'agent' or 'serial', got ${describe(entry.kind)}`);
  const bytes = asMalformed('revocation entry layout', () =>
    layout(REVOCATION_DOMAINS.revocationEntry)
      .fixed(registryId, REGISTRY_ID_BYTES, 'registryId')
      .fixed(previousHash, CHAIN_HASH_BYTES, 'previousHash')
      .u64(entry.version)
      .u8(kind)
      .str(entry.agentId)
      .var(entry.serial, 'serial')
      .u32(entry.reason)
      .str(entry.reasonText)
      .i64(entry.revokedAtMs)
      .bytes(),
  );
  return crypto.blake3(bytes);
}

/** The signed fields of a revocation head. */
export interface RevocationHeadFields {
  readonly registryId: Uint8Array;
  readonly version: bigint | number;
  readonly headHash: Uint8Array;
  readonly issuedAtMs: bigint | number;
  readonly issuerKeyId: Uint8Array;
}

/**
 * What the issuer signs for a revocation list head (§15.6).
 * @returns `layout('parley/v1/revocation-head').fixed16(registry_id).u64(version).fixed32(head_hash).i64(issued_at_ms).fixed16(issuer_key_id)`
 */
export function revocationHeadLayout(head: RevocationHeadFields): Uint8Array {
  assertObject(head, 'head');
  return asMalformed('revocation head layout', () =>
    layout(REVOCATION_DOMAINS.revocationHead)
      .fixed(head.registryId, REGISTRY_ID_BYTES, 'registryId')
      .u64(head.version)
      .fixed(head.headHash, CHAIN_HASH_BYTES, 'headHash')
      .i64(head.issuedAtMs)
      .fixed(head.issuerKeyId, 16, 'issuerKeyId')
      .bytes(),
  );
}

/** The fields of a proto entry, checked, for hashing. */
export function entryFields(entry: RevocationListEntry): RevocationEntryFields {
  const s = assertObject(assertObject(entry, 'entry')['subject'], 'entry.subject') as RevocationListEntry['subject'];
  if (s.case === 'agentId') {
    return { version: entry.version, kind: 'agent', agentId: s.value, serial: new Uint8Array(0), reason: entry.reason, reasonText: entry.reasonText, revokedAtMs: entry.revokedAtMs };
  }
  if (s.case === 'serial' && s.value.length === 16) {
    return { version: entry.version, kind: 'serial', agentId: '', serial: s.value, reason: entry.reason, reasonText: entry.reasonText, revokedAtMs: entry.revokedAtMs };
  }
  throw new IdentityError('malformed', `revocation entry ${entry.version} has no valid subject`);
}

/** The reason string an identity RevocationEntry carries: the text, else the reason's name. */
export function reasonString(reason: number, text: string): string {
  if (text !== '') return text;
  const name = RevocationReason[reason];
  return typeof name === 'string' ? name.toLowerCase() : `reason_${reason}`;
}

/** What {@link RevocationListFollower.apply} returns for one accepted batch. */
export interface AcceptedBatch {
  /**
   * The batch as `@parley/identity` entries, for
   * `MemoryRevocationSet.apply(entries, version, issuedAtMs)`: pass {@link issuedAtMs}
   * as the freshness, never the time the batch was received (a replayed, old
   * signed heartbeat would otherwise keep a cache "fresh" forever).
   */
  readonly entries: RevocationEntry[];
  /** The list version after the batch. */
  readonly version: number;
  /**
   * How fresh the copy is: the newest signed `issued_at_ms` accepted so far
   * (this head's, unless an earlier head was newer), capped at receipt time +
   * the allowed clock skew. An old head therefore never moves it back, and a
   * replayed one never moves it forward.
   */
  readonly issuedAtMs: number;
}

/** Default allowance for a registry clock ahead of ours when capping a head's `issued_at_ms`. */
export const DEFAULT_REVOCATION_CLOCK_SKEW_MS = 60_000;

/**
 * Follows a registry's revocation list batch by batch, accepting a batch only
 * when its versions continue the list without a gap or repeat, every entry's
 * chain hash links to the previous one, and the head is signed by an issuer
 * key of the trust bundle over exactly that version and hash. A rejected
 * batch changes nothing.
 */
export class RevocationListFollower {
  readonly #crypto: ParleyCrypto;
  readonly #registryId: Uint8Array;
  readonly #trustBundle: TrustBundle;
  #version: bigint;
  #headHash: Uint8Array;
  readonly #maxClockSkewMs: number;
  #issuedAtMs = 0;

  /**
   * @param crypto the ParleyCrypto instance
   * @param options the registry id and trust bundle to check against; the
   *   version and chain hash already held (default: the empty list); how far
   *   ahead of our clock a head's `issued_at_ms` may be (default 60 000; later
   *   ones count as now + skew)
   */
  constructor(
    crypto: ParleyCrypto,
    options: {
      readonly registryId: Uint8Array;
      readonly trustBundle: TrustBundle;
      readonly version?: number;
      readonly headHash?: Uint8Array;
      readonly maxClockSkewMs?: number;
    },
  ) {
    this.#crypto = assertCrypto(crypto);
    const o = assertObject(options, 'options');
    this.#maxClockSkewMs = o['maxClockSkewMs'] === undefined ? DEFAULT_REVOCATION_CLOCK_SKEW_MS : assertSafeInt(o['maxClockSkewMs'], 'options.maxClockSkewMs');
    this.#registryId = new Uint8Array(assertBytes(o['registryId'], 'options.registryId', REGISTRY_ID_BYTES));
    if (!(o['trustBundle'] instanceof TrustBundle)) malformed(`options.trustBundle must be a TrustBundle, got ${describe(o['trustBundle'])}`);
    this.#trustBundle = o['trustBundle'];
    this.#version = BigInt(o['version'] === undefined ? 0 : assertSafeInt(o['version'], 'options.version'));
    this.#headHash = new Uint8Array(o['headHash'] === undefined ? EMPTY_CHAIN_HASH : assertBytes(o['headHash'], 'options.headHash', CHAIN_HASH_BYTES));
  }

  /** The version accepted so far. */
  get version(): number {
    return Number(this.#version);
  }

  /** The chain hash at {@link version}. */
  get headHash(): Uint8Array {
    return new Uint8Array(this.#headHash);
  }

  /**
   * Checks and accepts one batch.
   *
   * @param entries the batch's entries (versions v+1 … head.version)
   * @param head the signed head after them
   * @param nowMs the current time (to check the issuer key's not-after bound and cap `issued_at_ms`)
   * @returns the accepted entries as identity deltas, with the freshness to give `MemoryRevocationSet.apply`
   * @throws IdentityError `revocation_stale` for a gap, `malformed` for a repeat or a broken chain,
   *   `unknown_issuer` / `bad_signature` / `expired` for a head that does not verify
   */
  apply(entries: readonly RevocationListEntry[], head: SignedRevocationHead | undefined, nowMs: number = Date.now()): AcceptedBatch {
    if (head === undefined) throw new IdentityError('malformed', 'revocation batch has no signed head');
    let version = this.#version;
    let hash = this.#headHash;
    const out: RevocationEntry[] = [];
    for (const entry of entries) {
      if (entry.version !== version + 1n) {
        throw entry.version > version + 1n
          ? new IdentityError('revocation_stale', `revocation entry ${entry.version} follows ${version}: versions are missing`)
          : new IdentityError('malformed', `revocation entry ${entry.version} repeats or reorders (have ${version})`);
      }
      const fields = entryFields(entry);
      const expected = revocationEntryHash(this.#crypto, this.#registryId, hash, fields);
      if (!this.#crypto.constantTimeEqual(expected, entry.entryHash)) {
        throw new IdentityError('malformed', `revocation entry ${entry.version} does not link to the chain`);
      }
      const revokedAtMs = Number(entry.revokedAtMs);
      const reason = reasonString(entry.reason, entry.reasonText);
      out.push(
        fields.kind === 'agent'
          ? { kind: 'agent', agentId: fields.agentId, reason, revokedAtMs }
          : { kind: 'serial', serial: new Uint8Array(fields.serial), reason, revokedAtMs },
      );
      version = entry.version;
      hash = expected;
    }
    if (head.version !== version) throw new IdentityError('malformed', `revocation head is at version ${head.version}, the entries end at ${version}`);
    if (!this.#crypto.constantTimeEqual(head.headHash, hash)) throw new IdentityError('malformed', 'revocation head hash does not match the chain');
    if (!this.#crypto.constantTimeEqual(head.registryId, this.#registryId)) throw new IdentityError('identity_mismatch', 'revocation head is from another registry');
    const issuer = this.#trustBundle.get(head.issuerKeyId);
    if (issuer === undefined) throw new IdentityError('unknown_issuer', 'revocation head is signed by a key outside the trust bundle');
    if (issuer.notAfterMs !== undefined && nowMs >= issuer.notAfterMs) throw new IdentityError('expired', 'revocation head issuer key is past its not-after time');
    const signed = revocationHeadLayout({
      registryId: this.#registryId,
      version: head.version,
      headHash: head.headHash,
      issuedAtMs: head.issuedAtMs,
      issuerKeyId: head.issuerKeyId,
    });
    if (!this.#crypto.ed25519.verify(head.signature, signed, issuer.publicKey)) {
      throw new IdentityError('bad_signature', 'revocation head signature does not verify');
    }
    // Freshness comes from the signed time, never from when the batch arrived. A head older than one
    // already accepted (a replay, or a slower registry process) still carries valid entries but
    // refreshes nothing; one from the future counts only as now + skew.
    const issuedAtMs = Math.max(this.#issuedAtMs, Math.min(Number(head.issuedAtMs), nowMs + this.#maxClockSkewMs));
    this.#version = version;
    this.#headHash = hash;
    this.#issuedAtMs = issuedAtMs;
    return { entries: out, version: Number(version), issuedAtMs };
  }
}
