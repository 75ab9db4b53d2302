/**
 * Building and opening the signed and sealed records of shared memory
 * (docs/PROTOCOL.md §18.4–§18.7) on the member's side: membership entries,
 * key epochs with their back links, key copies sealed to members' identity
 * keys, and encrypted, signed segment writes. Everything that touches an
 * epoch key is here; the store never runs any of it.
 */
import { SecretKey, type ParleyCrypto } from '@parley/crypto-core';
import {
  MembershipChange,
  MemoryAccess,
  create,
  EpochRecordSchema,
  KeyWrapSchema,
  MembershipEntrySchema,
  WriteRecordSchema,
  type EpochRecord,
  type KeyWrap,
  type MembershipEntry,
  type WriteRecord,
} from '@parley/proto';
import { MemoryError, fail } from './errors.js';
import {
  backLinkAd,
  epochLayout,
  keyCommitment,
  keyFromWrapPlaintext,
  keyWrapLayout,
  memoryIdOf,
  membershipLayout,
  segmentAd,
  wrapPlaintext,
  writeLayout,
  ZERO_HASH,
} from './layouts.js';
import type { Membership } from './model.js';
import { CREATION_NONCE_BYTES, EPOCH_KEY_BYTES, MAX_SEGMENT_PLAINTEXT_BYTES } from './names.js';

/** What signs: an agent id and its Ed25519 identity secret key (a session `LocalIdentity` fits). */
export interface Signer {
  readonly agentId: string;
  readonly signingKey: SecretKey;
}

function constantTimeEqual(crypto: ParleyCrypto, a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && crypto.constantTimeEqual(a, b);
}

// ---------------------------------------------------------------------------
// Membership entries (§18.4)

/** The CREATE entry of a new memory, and the memory id it derives. */
export function createEntry(
  crypto: ParleyCrypto,
  owner: Signer,
  ownerPublicKey: Uint8Array,
  options: { readonly nowMs: number; readonly expiresAtMs?: number; readonly creationNonce?: Uint8Array },
): { memoryId: string; entry: MembershipEntry } {
  const creationNonce = options.creationNonce ?? crypto.randomBytes(CREATION_NONCE_BYTES);
  const memoryId = memoryIdOf(crypto, owner.agentId, ownerPublicKey, creationNonce);
  const entry = create(MembershipEntrySchema, {
    version: 1n,
    previousHash: ZERO_HASH,
    change: MembershipChange.CREATE,
    memberId: owner.agentId,
    access: MemoryAccess.ADMIN,
    memberPublicKey: ownerPublicKey,
    expiresAtMs: BigInt(options.expiresAtMs ?? 0),
    timestampMs: BigInt(options.nowMs),
    signerId: owner.agentId,
    creationNonce,
  });
  entry.signature = crypto.ed25519.sign(membershipLayout(memoryId, entry), owner.signingKey);
  return { memoryId, entry };
}

/** A GRANT or REVOKE entry at the head of `log` + 1. */
export function changeEntry(
  crypto: ParleyCrypto,
  signer: Signer,
  log: Membership,
  change: { readonly kind: 'grant'; readonly memberId: string; readonly access: MemoryAccess; readonly publicKey: Uint8Array; readonly expiresAtMs: number } | { readonly kind: 'revoke'; readonly memberId: string; readonly publicKey: Uint8Array },
  nowMs: number,
): MembershipEntry {
  const entry = create(MembershipEntrySchema, {
    version: log.version + 1n,
    previousHash: log.head,
    change: change.kind === 'grant' ? MembershipChange.GRANT : MembershipChange.REVOKE,
    memberId: change.memberId,
    access: change.kind === 'grant' ? change.access : MemoryAccess.UNSPECIFIED,
    memberPublicKey: change.publicKey,
    expiresAtMs: BigInt(change.kind === 'grant' ? change.expiresAtMs : 0),
    // Never before the head's: timestamps do not go back along the log (§18.4), whatever this clock says.
    timestampMs: BigInt(Math.max(nowMs, log.headTimestampMs)),
    signerId: signer.agentId,
    creationNonce: new Uint8Array(0),
  });
  entry.signature = crypto.ed25519.sign(membershipLayout(log.memoryId, entry), signer.signingKey);
  return entry;
}

// ---------------------------------------------------------------------------
// Epochs (§18.5)

/** An epoch key with its verified record. */
export interface EpochKey {
  readonly record: EpochRecord;
  readonly key: SecretKey;
}

/**
 * A new epoch: a fresh random key, its commitment, the back link sealing the
 * previous key under it (none for epoch 1), signed by `creator`.
 */
export function newEpoch(
  crypto: ParleyCrypto,
  creator: Signer,
  memoryId: string,
  membership: { readonly version: bigint; readonly hash: Uint8Array },
  previous: EpochKey | undefined,
  nowMs: number,
): EpochKey {
  const key = crypto.randomKey('aead', EPOCH_KEY_BYTES);
  const epoch = previous === undefined ? 1 : previous.record.epoch + 1;
  const backLink = previous === undefined ? new Uint8Array(0) : crypto.xaead.seal(key, previous.key.unsafeBytes(), backLinkAd(memoryId, epoch));
  return signEpoch(crypto, creator, memoryId, epoch, key, backLink, membership, nowMs);
}

/**
 * A cut epoch (§18.5): epoch `epoch` (> 1) with a fresh random key and no back link, so no earlier key is
 * reachable from it. Only the epoch of a REVOKE, made by the admin who signs that entry, and only when it
 * holds no key of the current epoch because the key copy a member made for it does not open.
 */
export function newCutEpoch(
  crypto: ParleyCrypto,
  creator: Signer,
  memoryId: string,
  membership: { readonly version: bigint; readonly hash: Uint8Array },
  epoch: number,
  nowMs: number,
): EpochKey {
  if (!Number.isSafeInteger(epoch) || epoch < 2) fail('internal', 'a cut is an epoch after the first');
  return signEpoch(crypto, creator, memoryId, epoch, crypto.randomKey('aead', EPOCH_KEY_BYTES), new Uint8Array(0), membership, nowMs);
}

function signEpoch(
  crypto: ParleyCrypto,
  creator: Signer,
  memoryId: string,
  epoch: number,
  key: SecretKey,
  backLink: Uint8Array,
  membership: { readonly version: bigint; readonly hash: Uint8Array },
  nowMs: number,
): EpochKey {
  const record = create(EpochRecordSchema, {
    epoch,
    keyCommitment: keyCommitment(crypto, memoryId, epoch, key.unsafeBytes()),
    backLink,
    membershipVersion: membership.version,
    membershipHash: membership.hash,
    createdAtMs: BigInt(nowMs),
    creatorId: creator.agentId,
  });
  record.signature = crypto.ed25519.sign(epochLayout(memoryId, record), creator.signingKey);
  return { record, key };
}

/** Errors of {@link openWrap} and {@link followBackLink} for a key that opened but does not match the record's commitment. */
const uncommitted = new WeakSet<object>();

function commitmentMismatch(message: string): never {
  const error = new MemoryError('decrypt_failed', message);
  uncommitted.add(error);
  throw error;
}

/**
 * Whether `error`, from {@link openWrap} or {@link followBackLink}, is a key copy or back link that opened to a
 * key of the right length and names that does not match the commitment of the epoch record it was checked
 * against — rather than one that does not open at all (or names another memory, epoch or member). Only the
 * latter is provably its signer's fault (§18.5): a copy's signature does not cover the epoch's commitment, and
 * epoch records are not chained, so a store can pair a genuine copy or back link with another genuine record of
 * the same epoch (of a rotation that lost, say) that it does not match.
 */
export function isCommitmentMismatch(error: unknown): boolean {
  return typeof error === 'object' && error !== null && uncommitted.has(error);
}

/**
 * The key of `record`'s epoch from the key of the epoch after it (its back link).
 * @throws MemoryError `decrypt_failed` when the link does not open or the key does not match its commitment
 *   (then {@link isCommitmentMismatch})
 */
export function followBackLink(crypto: ParleyCrypto, memoryId: string, later: EpochKey, record: EpochRecord): EpochKey {
  if (later.record.epoch !== record.epoch + 1) fail('internal', 'back links go one epoch at a time');
  if (later.record.backLink.length === 0) fail('decrypt_failed', `epoch ${record.epoch} is before the cut at epoch ${later.record.epoch}: no back link leads to it`);
  let bytes: Uint8Array;
  try {
    bytes = crypto.xaead.open(later.key, later.record.backLink, backLinkAd(memoryId, later.record.epoch));
  } catch (cause) {
    return fail('decrypt_failed', `back link of epoch ${later.record.epoch} does not open`, { cause });
  }
  try {
    if (bytes.length !== EPOCH_KEY_BYTES) fail('decrypt_failed', `the back link of epoch ${later.record.epoch} does not hold a key`);
    if (!constantTimeEqual(crypto, keyCommitment(crypto, memoryId, record.epoch, bytes), record.keyCommitment)) {
      commitmentMismatch(`the key behind epoch ${later.record.epoch}'s back link does not match epoch ${record.epoch}'s commitment`);
    }
    return { record, key: SecretKey.from(bytes, 'aead') };
  } finally {
    crypto.wipe(bytes);
  }
}

// ---------------------------------------------------------------------------
// Key copies (§18.6)

/** A member's copy of an epoch key: sealed to its identity key, signed by `signer`. */
export function wrapKey(crypto: ParleyCrypto, signer: Signer, memoryId: string, epoch: EpochKey, member: { readonly memberId: string; readonly publicKey: Uint8Array }): KeyWrap {
  const plaintext = wrapPlaintext(memoryId, epoch.record.epoch, member.memberId, epoch.key.unsafeBytes());
  try {
    const wrap = create(KeyWrapSchema, {
      epoch: epoch.record.epoch,
      memberId: member.memberId,
      memberPublicKey: member.publicKey,
      sealedKey: crypto.sealedBox.seal(plaintext, member.publicKey),
      signerId: signer.agentId,
    });
    wrap.signature = crypto.ed25519.sign(keyWrapLayout(crypto, memoryId, wrap), signer.signingKey);
    return wrap;
  } finally {
    crypto.wipe(plaintext);
  }
}

/**
 * Opens this member's copy of an epoch key with its identity secret key and
 * checks the key against the epoch's signed commitment.
 * @throws MemoryError `decrypt_failed` (not sealed to this key, for another memory/epoch/member, or not the committed
 *   key: then {@link isCommitmentMismatch})
 */
export function openWrap(crypto: ParleyCrypto, member: Signer, memoryId: string, wrap: KeyWrap, record: EpochRecord): EpochKey {
  if (wrap.epoch !== record.epoch || wrap.memberId !== member.agentId) fail('decrypt_failed', 'key copy is for another epoch or member');
  let plaintext: Uint8Array;
  try {
    plaintext = crypto.sealedBox.open(wrap.sealedKey, member.signingKey);
  } catch (cause) {
    return fail('decrypt_failed', `key copy of epoch ${wrap.epoch} does not open with this agent's identity key`, { cause });
  }
  try {
    const bytes = keyFromWrapPlaintext(plaintext, memoryId, wrap.epoch, member.agentId);
    try {
      if (!constantTimeEqual(crypto, keyCommitment(crypto, memoryId, record.epoch, bytes), record.keyCommitment)) {
        commitmentMismatch(`key copy of epoch ${wrap.epoch} does not match the epoch's commitment`);
      }
      return { record, key: SecretKey.from(bytes, 'aead') };
    } finally {
      crypto.wipe(bytes);
    }
  } finally {
    crypto.wipe(plaintext);
  }
}

// ---------------------------------------------------------------------------
// Segment writes (§18.7)

/** A segment version ready to send: its signed record and ciphertext. */
export interface SealedWrite {
  readonly record: WriteRecord;
  readonly ciphertext: Uint8Array;
}

/** Encrypts `data` under the epoch key (fresh random nonce) and signs the write record. */
export function sealWrite(
  crypto: ParleyCrypto,
  writer: Signer,
  memoryId: string,
  epoch: EpochKey,
  w: { readonly segmentId: string; readonly previousVersion: bigint; readonly data: Uint8Array; readonly expiresAtMs: number; readonly nowMs: number },
): SealedWrite {
  if (w.data.length > MAX_SEGMENT_PLAINTEXT_BYTES) fail('too_large', `segment data is ${w.data.length} bytes, more than ${MAX_SEGMENT_PLAINTEXT_BYTES}`);
  const version = w.previousVersion + 1n;
  const ciphertext = crypto.xaead.seal(epoch.key, w.data, segmentAd(memoryId, { segmentId: w.segmentId, version, keyEpoch: epoch.record.epoch, writerId: writer.agentId }));
  const record = create(WriteRecordSchema, {
    segmentId: w.segmentId,
    version,
    previousVersion: w.previousVersion,
    keyEpoch: epoch.record.epoch,
    ciphertextDigest: crypto.blake3(ciphertext),
    ciphertextBytes: BigInt(ciphertext.length),
    writerId: writer.agentId,
    timestampMs: BigInt(w.nowMs),
    expiresAtMs: BigInt(w.expiresAtMs),
  });
  record.signature = crypto.ed25519.sign(writeLayout(memoryId, record), writer.signingKey);
  return { record, ciphertext };
}

/**
 * Decrypts a segment version whose record was verified: checks the ciphertext
 * against the signed digest and length, then opens it under its epoch key.
 * @throws MemoryError `bad_signature` (ciphertext is not the one the writer signed), `decrypt_failed`
 */
export function openWrite(crypto: ParleyCrypto, memoryId: string, epoch: EpochKey, record: WriteRecord, ciphertext: Uint8Array): Uint8Array {
  if (BigInt(ciphertext.length) !== record.ciphertextBytes || !constantTimeEqual(crypto, crypto.blake3(ciphertext), record.ciphertextDigest)) {
    fail('bad_signature', `ciphertext of ${record.segmentId} v${record.version} is not the one its writer signed`);
  }
  if (epoch.record.epoch !== record.keyEpoch) fail('internal', 'wrong epoch key');
  try {
    return crypto.xaead.open(epoch.key, ciphertext, segmentAd(memoryId, record));
  } catch (cause) {
    return fail('decrypt_failed', `${record.segmentId} v${record.version} does not open under epoch ${record.keyEpoch}`, { cause });
  }
}
