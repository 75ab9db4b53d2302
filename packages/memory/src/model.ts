/**
 * The shared-memory model (docs/PROTOCOL.md §18.4–§18.7), the same code on
 * both sides: the shape rules of every signed record, the membership log
 * folded into a member list (who may sign what), and the verification of
 * epoch records, key wraps and write records against it.
 *
 * The store applies these rules to what callers send before it accepts
 * anything; a client applies them again to everything the store returns,
 * because the store is trusted to enforce access, not for integrity: it can
 * refuse or withhold, but whatever it forges or alters is detected here.
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { MembershipChange, MemoryAccess, type EpochRecord, type KeyWrap, type MembershipEntry, type WriteRecord } from '@parley/proto';
import { fail } from './errors.js';
import { epochLayout, keyWrapLayout, memoryIdOf, membershipEntryHash, membershipLayout, writeLayout, ZERO_HASH } from './layouts.js';
import {
  BACK_LINK_BYTES,
  CREATION_NONCE_BYTES,
  HASH_BYTES,
  MAX_MEMBERSHIP_ENTRIES,
  MAX_SEALED_KEY_BYTES,
  MAX_SEGMENT_CIPHERTEXT_BYTES,
  PUBLIC_KEY_BYTES,
  SIGNATURE_BYTES,
  isAgentIdString,
  isSegmentId,
} from './names.js';

const MAX_U53 = BigInt(Number.MAX_SAFE_INTEGER);
const XAEAD_OVERHEAD = 40;

function isBytes(value: unknown, length?: number): value is Uint8Array {
  return value instanceof Uint8Array && (length === undefined || value.length === length);
}

function hasUnknownFields(message: unknown): boolean {
  const unknown = (message as { $unknown?: unknown } | null)?.$unknown;
  return Array.isArray(unknown) && unknown.length > 0;
}

function timeOk(value: unknown): value is bigint {
  return typeof value === 'bigint' && value >= 0n && value <= MAX_U53;
}

function constantTimeEqual(crypto: ParleyCrypto, a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && crypto.constantTimeEqual(a, b);
}

const hexOf = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');

// ---------------------------------------------------------------------------
// Shapes (lengths, ranges, patterns, no unknown fields): `malformed`

/** @throws MemoryError `malformed` */
export function assertMembershipEntryShape(e: MembershipEntry | undefined, name = 'entry'): MembershipEntry {
  if (e === undefined) return fail('malformed', `${name} is missing`);
  if (typeof e.version !== 'bigint' || e.version < 1n || e.version > BigInt(MAX_MEMBERSHIP_ENTRIES)) fail('malformed', `${name}.version must be 1..${MAX_MEMBERSHIP_ENTRIES}`);
  if (!isBytes(e.previousHash, HASH_BYTES)) fail('malformed', `${name}.previous_hash must be ${HASH_BYTES} bytes`);
  if (e.change !== MembershipChange.CREATE && e.change !== MembershipChange.GRANT && e.change !== MembershipChange.REVOKE) fail('malformed', `${name}.change is not defined`);
  if (!isAgentIdString(e.memberId)) fail('malformed', `${name}.member_id must be an agent id`);
  if (e.access !== MemoryAccess.UNSPECIFIED && e.access !== MemoryAccess.READ && e.access !== MemoryAccess.WRITE && e.access !== MemoryAccess.ADMIN) {
    fail('malformed', `${name}.access is not defined`);
  }
  if (!isBytes(e.memberPublicKey, PUBLIC_KEY_BYTES)) fail('malformed', `${name}.member_public_key must be ${PUBLIC_KEY_BYTES} bytes`);
  if (!timeOk(e.expiresAtMs) || !timeOk(e.timestampMs)) fail('malformed', `${name} times must be 0..2^53-1 ms`);
  if (!isAgentIdString(e.signerId)) fail('malformed', `${name}.signer_id must be an agent id`);
  const nonceBytes = e.change === MembershipChange.CREATE ? CREATION_NONCE_BYTES : 0;
  if (!isBytes(e.creationNonce, nonceBytes)) fail('malformed', `${name}.creation_nonce must be ${nonceBytes} bytes for this change`);
  if (!isBytes(e.signature, SIGNATURE_BYTES)) fail('malformed', `${name}.signature must be ${SIGNATURE_BYTES} bytes`);
  if (hasUnknownFields(e)) fail('malformed', `${name} carries fields v1 does not define`);
  return e;
}

/** @throws MemoryError `malformed` */
export function assertEpochRecordShape(r: EpochRecord | undefined, name = 'epoch'): EpochRecord {
  if (r === undefined) return fail('malformed', `${name} is missing`);
  if (!Number.isSafeInteger(r.epoch) || r.epoch < 1 || r.epoch > 0xffff_ffff) fail('malformed', `${name}.epoch must be 1..2^32-1`);
  if (!isBytes(r.keyCommitment, HASH_BYTES)) fail('malformed', `${name}.key_commitment must be ${HASH_BYTES} bytes`);
  // Epoch 1 has no back link; a later epoch has one, or none when it is a cut (§18.5: only a REVOKE's epoch may
  // be one, which verifyEpochRecord checks against the log).
  if (r.epoch === 1 ? !isBytes(r.backLink, 0) : !isBytes(r.backLink, BACK_LINK_BYTES) && !isBytes(r.backLink, 0)) {
    fail('malformed', `${name}.back_link must be ${r.epoch === 1 ? '0 bytes for epoch 1' : `${BACK_LINK_BYTES} bytes (or empty for a cut) for epoch ${r.epoch}`}`);
  }
  if (typeof r.membershipVersion !== 'bigint' || r.membershipVersion < 1n || r.membershipVersion > BigInt(MAX_MEMBERSHIP_ENTRIES)) {
    fail('malformed', `${name}.membership_version must be 1..${MAX_MEMBERSHIP_ENTRIES}`);
  }
  if (!isBytes(r.membershipHash, HASH_BYTES)) fail('malformed', `${name}.membership_hash must be ${HASH_BYTES} bytes`);
  if (!timeOk(r.createdAtMs)) fail('malformed', `${name}.created_at_ms must be 0..2^53-1`);
  if (!isAgentIdString(r.creatorId)) fail('malformed', `${name}.creator_id must be an agent id`);
  if (!isBytes(r.signature, SIGNATURE_BYTES)) fail('malformed', `${name}.signature must be ${SIGNATURE_BYTES} bytes`);
  if (hasUnknownFields(r)) fail('malformed', `${name} carries fields v1 does not define`);
  return r;
}

/** @throws MemoryError `malformed` */
export function assertKeyWrapShape(w: KeyWrap | undefined, name = 'wrap'): KeyWrap {
  if (w === undefined) return fail('malformed', `${name} is missing`);
  if (!Number.isSafeInteger(w.epoch) || w.epoch < 1 || w.epoch > 0xffff_ffff) fail('malformed', `${name}.epoch must be 1..2^32-1`);
  if (!isAgentIdString(w.memberId)) fail('malformed', `${name}.member_id must be an agent id`);
  if (!isBytes(w.memberPublicKey, PUBLIC_KEY_BYTES)) fail('malformed', `${name}.member_public_key must be ${PUBLIC_KEY_BYTES} bytes`);
  if (!isBytes(w.sealedKey) || w.sealedKey.length < 48 + 32 || w.sealedKey.length > MAX_SEALED_KEY_BYTES) fail('malformed', `${name}.sealed_key has an impossible length`);
  if (!isAgentIdString(w.signerId)) fail('malformed', `${name}.signer_id must be an agent id`);
  if (!isBytes(w.signature, SIGNATURE_BYTES)) fail('malformed', `${name}.signature must be ${SIGNATURE_BYTES} bytes`);
  if (hasUnknownFields(w)) fail('malformed', `${name} carries fields v1 does not define`);
  return w;
}

/** @throws MemoryError `malformed` */
export function assertWriteRecordShape(r: WriteRecord | undefined, name = 'record'): WriteRecord {
  if (r === undefined) return fail('malformed', `${name} is missing`);
  if (!isSegmentId(r.segmentId)) fail('malformed', `${name}.segment_id must be 1..128 chars of [a-z0-9._:/-] starting with [a-z0-9]`);
  if (typeof r.previousVersion !== 'bigint' || r.previousVersion < 0n || r.previousVersion >= MAX_U53) fail('malformed', `${name}.previous_version out of range`);
  if (r.version !== r.previousVersion + 1n) fail('malformed', `${name}.version must be previous_version + 1`);
  if (!Number.isSafeInteger(r.keyEpoch) || r.keyEpoch < 1 || r.keyEpoch > 0xffff_ffff) fail('malformed', `${name}.key_epoch must be 1..2^32-1`);
  if (!isBytes(r.ciphertextDigest, HASH_BYTES)) fail('malformed', `${name}.ciphertext_digest must be ${HASH_BYTES} bytes`);
  if (typeof r.ciphertextBytes !== 'bigint' || r.ciphertextBytes < BigInt(XAEAD_OVERHEAD) || r.ciphertextBytes > BigInt(MAX_SEGMENT_CIPHERTEXT_BYTES)) {
    fail('malformed', `${name}.ciphertext_bytes must be ${XAEAD_OVERHEAD}..${MAX_SEGMENT_CIPHERTEXT_BYTES}`);
  }
  if (!isAgentIdString(r.writerId)) fail('malformed', `${name}.writer_id must be an agent id`);
  if (!timeOk(r.timestampMs) || !timeOk(r.expiresAtMs)) fail('malformed', `${name} times must be 0..2^53-1 ms`);
  if (!isBytes(r.signature, SIGNATURE_BYTES)) fail('malformed', `${name}.signature must be ${SIGNATURE_BYTES} bytes`);
  if (hasUnknownFields(r)) fail('malformed', `${name} carries fields v1 does not define`);
  return r;
}

// ---------------------------------------------------------------------------
// The membership log

/** One member as the log makes it. */
export interface Member {
  readonly memberId: string;
  readonly access: MemoryAccess;
  /** The Ed25519 identity key its key copies are sealed to and its signatures verify under. */
  readonly publicKey: Uint8Array;
  /** Grant expiry, ms; 0: never. */
  readonly expiresAtMs: number;
  /** The log version of the entry that made it what it is. */
  readonly version: bigint;
}

/** Whether a member's grant is in force at `nowMs` (the owner's never expires). */
export function isActive(member: Member, nowMs: number): boolean {
  return member.expiresAtMs === 0 || nowMs < member.expiresAtMs;
}

/** One change of an agent's membership: what it became at `version` (undefined: revoked). */
interface Change {
  readonly version: bigint;
  readonly member: Member | undefined;
}

/**
 * A verified membership log and the member list it folds to (§18.4). Entry 1
 * is the owner's CREATE; each later entry is a GRANT or REVOKE signed by an
 * admin whose grant was in force at the entry's timestamp (admin grants and
 * revocations: by the owner), chained by hash. `append` verifies before it
 * changes anything: a rejected entry leaves the log as it was.
 *
 * Folding is linear in the log: the member list at the head is one map changed in place, and the
 * list as of an earlier version is read from each agent's own history of changes (one item per
 * entry that names it), so no entry copies the member list.
 */
export class Membership {
  readonly memoryId: string;
  readonly ownerId: string;
  readonly ownerPublicKey: Uint8Array;
  /** Memory expiry from the CREATE entry, ms; 0: never. */
  readonly expiresAtMs: number;
  readonly createdAtMs: number;
  readonly #crypto: ParleyCrypto;
  readonly #entries: MembershipEntry[] = [];
  readonly #hashes: Uint8Array[] = [];
  /** The member list at the head. */
  readonly #members = new Map<string, Member>();
  /** Per agent, every change the log made to its membership, in log order. */
  readonly #history = new Map<string, Change[]>();
  /** Every key each agent has held in the log, with the highest level it had under that key. */
  readonly #keys = new Map<string, Map<string, { key: Uint8Array; access: MemoryAccess }>>();
  #lastRevoke = 0n;

  private constructor(crypto: ParleyCrypto, memoryId: string, create: MembershipEntry) {
    this.#crypto = crypto;
    this.memoryId = memoryId;
    this.ownerId = create.memberId;
    this.ownerPublicKey = create.memberPublicKey.slice();
    this.expiresAtMs = Number(create.expiresAtMs);
    this.createdAtMs = Number(create.timestampMs);
  }

  /**
   * Verifies a CREATE entry (version 1, the owner signing its own grant, the memory id derived from it) and starts the log.
   * @param memoryId the id the caller expects, or undefined to take the derived one
   * @throws MemoryError `malformed`, `bad_signature`, `identity_mismatch` (the entry derives another memory id)
   */
  static create(crypto: ParleyCrypto, entry: MembershipEntry, memoryId?: string): Membership {
    return Membership.#start(crypto, entry, memoryId, true);
  }

  /**
   * Rebuilds a log from entries its holder verified when it accepted them (the
   * store's own table): the same rules and chain checks, without re-verifying
   * each signature, and with each entry's hash taken from `hashes` (the entry_hash
   * the holder stored with it) when given, instead of computed again, and without the check that
   * timestamps do not go back (applied when each entry arrived). Never use it on entries from anyone else.
   * @throws MemoryError as {@link create} and {@link append}
   */
  static restore(crypto: ParleyCrypto, memoryId: string, entries: readonly MembershipEntry[], hashes?: readonly Uint8Array[]): Membership {
    const [first, ...rest] = entries;
    if (first === undefined) fail('internal', 'stored membership log is empty');
    if (hashes !== undefined && hashes.length !== entries.length) fail('internal', 'stored membership log has another number of hashes than entries');
    const log = Membership.#start(crypto, first, memoryId, false, hashes?.[0]);
    rest.forEach((e, i) => log.#append(e, false, hashes?.[i + 1]));
    return log;
  }

  static #start(crypto: ParleyCrypto, entry: MembershipEntry, memoryId: string | undefined, verify: boolean, hash?: Uint8Array): Membership {
    const e = assertMembershipEntryShape(entry);
    if (e.version !== 1n || e.change !== MembershipChange.CREATE) fail('malformed', 'membership entry 1 must be CREATE');
    if (!constantTimeEqual(crypto, e.previousHash, ZERO_HASH)) fail('malformed', 'entry 1 previous_hash must be 32 zero bytes');
    if (e.access !== MemoryAccess.ADMIN) fail('malformed', 'CREATE must give the owner ADMIN');
    if (e.signerId !== e.memberId) fail('malformed', 'CREATE must be signed by the owner');
    if (e.expiresAtMs !== 0n && e.expiresAtMs <= e.timestampMs) fail('malformed', 'memory expiry must be after its creation');
    const derived = memoryIdOf(crypto, e.memberId, e.memberPublicKey, e.creationNonce);
    if (memoryId !== undefined && derived !== memoryId) fail('identity_mismatch', 'CREATE entry derives another memory id');
    const id = memoryId ?? derived;
    if (verify && !crypto.ed25519.verify(e.signature, membershipLayout(id, e), e.memberPublicKey)) fail('bad_signature', 'CREATE entry signature does not verify');
    const log = new Membership(crypto, id, e);
    const owner: Member = { memberId: e.memberId, access: MemoryAccess.ADMIN, publicKey: e.memberPublicKey.slice(), expiresAtMs: 0, version: 1n };
    log.#commit(e, owner.memberId, owner, hash);
    return log;
  }

  /** The head version (number of entries). */
  get version(): bigint {
    return BigInt(this.#entries.length);
  }

  /** entry_hash of the head entry. */
  get head(): Uint8Array {
    return this.#hashes[this.#hashes.length - 1]!;
  }

  /** The version of the last REVOKE entry, 0n when there is none: every epoch in use is made for this version or a later one (§18.5). */
  get lastRevokeVersion(): bigint {
    return this.#lastRevoke;
  }

  /** The verified entries, in order. */
  get entries(): readonly MembershipEntry[] {
    return this.#entries;
  }

  /** The verified entry at `version`, or undefined beyond the head. */
  entryAt(version: bigint): MembershipEntry | undefined {
    return version >= 1n && version <= this.version ? this.#entries[Number(version) - 1] : undefined;
  }

  /** entry_hash of `version`, or undefined beyond the head. */
  hashAt(version: bigint): Uint8Array | undefined {
    return version >= 1n && version <= this.version ? this.#hashes[Number(version) - 1] : undefined;
  }

  /** A member at the head (expired grants included), or undefined. */
  member(memberId: string): Member | undefined {
    return this.#members.get(memberId);
  }

  /** A member as of `version` (a binary search in that agent's history). */
  memberAt(memberId: string, version: bigint): Member | undefined {
    if (version < 1n || version > this.version) return undefined;
    const history = this.#history.get(memberId);
    if (history === undefined) return undefined;
    let lo = 0;
    let hi = history.length - 1;
    let found: Change | undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const change = history[mid]!;
      if (change.version <= version) {
        found = change;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found?.member;
  }

  /** Every member on record at the head, expired grants included. */
  members(): Member[] {
    return [...this.#members.values()];
  }

  /** The members whose grants are in force at `nowMs` (the owner always), ordered by id. */
  active(nowMs: number): Member[] {
    return this.members()
      .filter((m) => isActive(m, nowMs))
      .sort((a, b) => (a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0));
  }

  /**
   * What `agentId` was at each stretch of the log: one span per entry that changed it, from that entry's
   * version to the version before the next change (`to` = the head for the last one), with the entry
   * that ended it (undefined while it lasts). Revoked stretches are left out.
   */
  spansOf(agentId: string): { readonly member: Member; readonly from: bigint; readonly to: bigint; readonly endedBy: MembershipEntry | undefined }[] {
    const history = this.#history.get(agentId) ?? [];
    const out: { member: Member; from: bigint; to: bigint; endedBy: MembershipEntry | undefined }[] = [];
    history.forEach((change, i) => {
      if (change.member === undefined) return;
      const next = history[i + 1];
      out.push({ member: change.member, from: change.version, to: next === undefined ? this.version : next.version - 1n, endedBy: next === undefined ? undefined : this.#entries[Number(next.version) - 1] });
    });
    return out;
  }

  /** The timestamp of the head entry, ms. */
  get headTimestampMs(): number {
    return Number(this.#entries[this.#entries.length - 1]!.timestampMs);
  }

  /**
   * An independent copy of this log (the same verified entries and hashes, nothing verified again), so a
   * caller can append to it and drop it when what follows does not verify.
   */
  copy(): Membership {
    return Membership.restore(this.#crypto, this.memoryId, this.#entries, this.#hashes);
  }

  /** Every key `agentId` has held in this log at `minAccess` or above. */
  keysOf(agentId: string, minAccess: MemoryAccess = MemoryAccess.READ): Uint8Array[] {
    return [...(this.#keys.get(agentId)?.values() ?? [])].filter((k) => k.access >= minAccess).map((k) => k.key);
  }

  /** Whether `signature` over `message` verifies under `publicKey`. */
  verifies(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
    return this.#crypto.ed25519.verify(signature, message, publicKey);
  }

  /** Whether `signature` over `message` verifies under a key `agentId` held at `minAccess` or above. */
  verifiesAs(agentId: string, minAccess: MemoryAccess, signature: Uint8Array, message: Uint8Array): boolean {
    return this.keysOf(agentId, minAccess).some((key) => this.#crypto.ed25519.verify(signature, message, key));
  }

  /**
   * Verifies and appends the next entry (GRANT or REVOKE).
   * @throws MemoryError `malformed` (shape or rule), `conflict` (not the next version or another previous hash),
   *   `permission_denied` (the signer may not make this change), `bad_signature`
   */
  append(entry: MembershipEntry): void {
    this.#append(entry, true);
  }

  #append(entry: MembershipEntry, verify: boolean, hash?: Uint8Array): void {
    const e = assertMembershipEntryShape(entry);
    if (e.version !== this.version + 1n) fail('conflict', `membership entry has version ${e.version}, the log is at ${this.version}`);
    if (!constantTimeEqual(this.#crypto, e.previousHash, this.head)) fail('conflict', 'membership entry does not follow the head of the log');
    if (e.change === MembershipChange.CREATE) fail('malformed', 'only entry 1 may be CREATE');
    // Timestamps never go back along the log: once an entry dated after an admin's expiry is on record,
    // that admin can no longer add one dated inside its grant (§18.4). Checked on what arrives, not on
    // what the holder's own table restores.
    if (verify && e.timestampMs < this.#entries[this.#entries.length - 1]!.timestampMs) fail('malformed', 'membership entry is dated before the head of the log');
    const signer = this.#members.get(e.signerId);
    const ts = Number(e.timestampMs);
    if (signer === undefined || signer.access !== MemoryAccess.ADMIN || !isActive(signer, ts)) fail('permission_denied', `${e.signerId} is not an admin of this memory`);
    if (e.memberId === this.ownerId) fail('permission_denied', 'the owner cannot be granted or revoked');
    const current = this.#members.get(e.memberId);
    let changed: Member | undefined;
    if (e.change === MembershipChange.GRANT) {
      if (e.access === MemoryAccess.UNSPECIFIED) fail('malformed', 'GRANT needs an access level');
      if (e.expiresAtMs !== 0n && e.expiresAtMs <= e.timestampMs) fail('malformed', 'grant expiry must be after the entry');
      if ((e.access === MemoryAccess.ADMIN || current?.access === MemoryAccess.ADMIN) && e.signerId !== this.ownerId) {
        fail('permission_denied', 'only the owner grants or changes admin');
      }
      changed = { memberId: e.memberId, access: e.access, publicKey: e.memberPublicKey.slice(), expiresAtMs: Number(e.expiresAtMs), version: e.version };
    } else {
      if (current === undefined) fail('malformed', `${e.memberId} is not a member`);
      if (e.access !== MemoryAccess.UNSPECIFIED || e.expiresAtMs !== 0n) fail('malformed', 'REVOKE carries no access level or expiry');
      if (!constantTimeEqual(this.#crypto, e.memberPublicKey, current.publicKey)) fail('malformed', "REVOKE must name the member's key on record");
      if (current.access === MemoryAccess.ADMIN && e.signerId !== this.ownerId) fail('permission_denied', 'only the owner revokes an admin');
    }
    if (verify && !this.#crypto.ed25519.verify(e.signature, membershipLayout(this.memoryId, e), signer.publicKey)) {
      fail('bad_signature', 'membership entry signature does not verify');
    }
    this.#commit(e, e.memberId, changed, hash);
  }

  /** Applies a verified entry: `member` is what `memberId` becomes (undefined: revoked). Nothing here can fail. */
  #commit(e: MembershipEntry, memberId: string, member: Member | undefined, hash: Uint8Array | undefined): void {
    this.#entries.push(e);
    this.#hashes.push(hash ?? membershipEntryHash(this.#crypto, this.memoryId, e));
    if (member === undefined) {
      this.#members.delete(memberId);
      this.#lastRevoke = e.version;
    } else this.#members.set(memberId, member);
    const history = this.#history.get(memberId);
    if (history === undefined) this.#history.set(memberId, [{ version: e.version, member }]);
    else history.push({ version: e.version, member });
    if (member !== undefined) {
      const keys = this.#keys.get(memberId) ?? new Map<string, { key: Uint8Array; access: MemoryAccess }>();
      const hex = hexOf(member.publicKey);
      const known = keys.get(hex);
      keys.set(hex, { key: member.publicKey, access: known === undefined || known.access < member.access ? member.access : known.access });
      this.#keys.set(memberId, keys);
    }
  }
}

// ---------------------------------------------------------------------------
// Epochs, wraps and writes, verified against a log

/**
 * Verifies an epoch record against the log: shape, chain (`previous` is the
 * record before it), the membership version it names (hash and existence), its
 * creator (the owner for epoch 1; otherwise a writer or admin at that version whose
 * grant was in force at the record's `created_at_ms`) and the creator's signature. A cut (an epoch after the
 * first without a back link, §18.5) is accepted only as the epoch of a REVOKE entry, made by that entry's signer.
 * @throws MemoryError `malformed`, `conflict` (out of sequence, or a membership version the log does not have), `permission_denied`,
 *   `bad_signature` (also: a cut that is not a revocation's epoch by its signer)
 */
export function verifyEpochRecord(crypto: ParleyCrypto, log: Membership, record: EpochRecord, previous: EpochRecord | undefined): void {
  const r = assertEpochRecordShape(record);
  if (previous !== undefined && r.epoch !== previous.epoch + 1) fail('conflict', `epoch ${r.epoch} does not follow epoch ${previous.epoch}`);
  if (previous !== undefined && r.membershipVersion < previous.membershipVersion) fail('malformed', 'epochs must not go back in the membership log');
  const hash = log.hashAt(r.membershipVersion);
  if (hash === undefined) fail('conflict', `epoch ${r.epoch} names membership version ${r.membershipVersion}, beyond the log`);
  if (!constantTimeEqual(crypto, hash, r.membershipHash)) fail('bad_signature', `epoch ${r.epoch} names another membership log`);
  const creator = log.memberAt(r.creatorId, r.membershipVersion);
  if (r.epoch === 1 && (r.membershipVersion !== 1n || r.creatorId !== log.ownerId)) fail('malformed', 'epoch 1 is made by the owner for membership version 1');
  if (isCutEpoch(r)) {
    // A cut (no back link) destroys history for clients that hold no older key: only the epoch of a REVOKE, made
    // by the admin who signed it (§18.5).
    const entry = log.entryAt(r.membershipVersion);
    if (entry === undefined || entry.change !== MembershipChange.REVOKE || entry.signerId !== r.creatorId) {
      fail('bad_signature', `epoch ${r.epoch} is a cut (no back link) but is not the epoch of a revocation its creator ${r.creatorId} signed`);
    }
  }
  if (creator === undefined || creator.access < MemoryAccess.WRITE) fail('permission_denied', `${r.creatorId} could not start epoch ${r.epoch}`);
  if (!isActive(creator, Number(r.createdAtMs))) fail('permission_denied', `${r.creatorId}'s grant had expired when epoch ${r.epoch} was made`);
  if (!crypto.ed25519.verify(r.signature, epochLayout(log.memoryId, r), creator.publicKey)) fail('bad_signature', `epoch ${r.epoch} signature does not verify`);
}

/** Whether an epoch record is a cut (§18.5): an epoch after the first with no back link, so no earlier key is reachable from it. */
export function isCutEpoch(record: Pick<EpochRecord, 'epoch' | 'backLink'>): boolean {
  return record.epoch > 1 && record.backLink.length === 0;
}

/**
 * Checks that `current` (verified with {@link verifyEpochRecord}) may be the epoch new writes use:
 * it is made for the log's last REVOKE or later — every revocation starts an epoch made for its
 * own version, so an older one is an epoch a removed member could have made (§18.5) — and for no
 * earlier log version than any epoch already accepted (`known`).
 * @throws MemoryError `conflict`
 */
export function verifyCurrentEpoch(log: Membership, current: EpochRecord, known: Iterable<EpochRecord> = []): void {
  if (current.membershipVersion < log.lastRevokeVersion) {
    fail('conflict', `epoch ${current.epoch} is made for membership version ${current.membershipVersion}, before the revocation at version ${log.lastRevokeVersion}`);
  }
  for (const k of known) {
    if (k.membershipVersion > current.membershipVersion) fail('conflict', `epoch ${current.epoch} goes back in the membership log from epoch ${k.epoch}`);
  }
}

/**
 * Verifies a key wrap's shape, that it is for a key its member held in the log,
 * and its signature by a member on record at the head (not removed) with write or admin
 * access, under a key it held with write access (the epoch's creator, or an admin granting).
 * It does not open it (only the member can).
 * @throws MemoryError `malformed`, `permission_denied` (sealed to a key its member never held), `bad_signature` (signer)
 */
export function verifyKeyWrap(crypto: ParleyCrypto, log: Membership, wrap: KeyWrap): void {
  const w = assertKeyWrapShape(wrap);
  if (!log.keysOf(w.memberId).some((k) => constantTimeEqual(crypto, k, w.memberPublicKey))) fail('permission_denied', `key copy for ${w.memberId} is sealed to a key it never held here`);
  const signer = log.member(w.signerId);
  if (signer === undefined || signer.access < MemoryAccess.WRITE) fail('bad_signature', `key copy is signed by ${w.signerId}, not a writer of this memory now`);
  if (!log.verifiesAs(w.signerId, MemoryAccess.WRITE, w.signature, keyWrapLayout(crypto, log.memoryId, w))) fail('bad_signature', 'key copy signature does not verify');
}

/**
 * Where a write record under epoch E may come from (§18.7): the log versions while E was current, from
 * E's `membership_version` to the next epoch's (`to`: the head while E is current), and the allowed clock
 * skew between the store and its callers.
 */
export interface WriteWindow {
  readonly from: bigint;
  readonly to: bigint;
  readonly skewMs: number;
}

/**
 * Verifies a write record's shape and its writer's signature under a key the
 * writer held with write access in the log (a writer revoked later still signed
 * its earlier writes validly).
 *
 * With `window` (the versions while the record's epoch was current, {@link WriteWindow}), the writer
 * must have held write under the signing key at some version in that window — an honest store takes a
 * write only under the current epoch from a writer in force, so a legitimate record always passes — and
 * the record's timestamp must fit that grant: before its expiry plus the skew, and no later than the
 * entry that ended it (a REVOKE, a lower level, another key) plus twice the skew. A removed writer
 * signing, with the store, a new write under an old epoch it still has the key of is refused.
 * @throws MemoryError `malformed`, `bad_signature`
 */
export function verifyWriteRecord(log: Membership, record: WriteRecord, window?: WriteWindow): void {
  const r = assertWriteRecordShape(record);
  const message = writeLayout(log.memoryId, r);
  if (window === undefined) {
    if (!log.verifiesAs(r.writerId, MemoryAccess.WRITE, r.signature, message)) {
      fail('bad_signature', `write record of ${r.segmentId} v${r.version} does not verify as ${r.writerId}'s`);
    }
    return;
  }
  const ts = Number(r.timestampMs);
  for (const span of log.spansOf(r.writerId)) {
    if (span.member.access < MemoryAccess.WRITE || span.to < window.from || span.from > window.to) continue;
    if (span.member.expiresAtMs !== 0 && ts >= span.member.expiresAtMs + window.skewMs) continue;
    if (span.endedBy !== undefined && ts > Number(span.endedBy.timestampMs) + 2 * window.skewMs) continue;
    if (log.verifies(r.signature, message, span.member.publicKey)) return;
  }
  fail('bad_signature', `write record of ${r.segmentId} v${r.version} does not verify as a write ${r.writerId} could make under epoch ${r.keyEpoch}`);
}

/** Whether two write records are the same signed write (a retry of one write). */
export function sameWrite(crypto: ParleyCrypto, a: WriteRecord, b: WriteRecord): boolean {
  return constantTimeEqual(crypto, a.signature, b.signature) && constantTimeEqual(crypto, a.ciphertextDigest, b.ciphertextDigest) && a.version === b.version;
}
