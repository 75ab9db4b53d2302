/**
 * Every byte string shared memory signs, seals, hashes or authenticates
 * (docs/PROTOCOL.md §18.3–§18.8), built with crypto-core's `layout()` (§2).
 * Nothing here signs or hashes protobuf bytes except the request digest of
 * §18.8, which hashes the exact request bytes the caller sent, as §15.3 does.
 * The store (packages/memory-server) and the client build the same bytes from
 * these functions.
 */
import { layout, type ParleyCrypto } from '@parley/crypto-core';
import type { EpochRecord, KeyWrap, MembershipEntry, WriteRecord } from '@parley/proto';
import { fail } from './errors.js';
import { CREATION_NONCE_BYTES, EPOCH_KEY_BYTES, HASH_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES } from './names.js';

/** §18.4 memory id derivation. */
export const MEMORY_ID_DOMAIN = 'parley/v1/memory-id';
/** §18.4 signed membership entry. */
export const MEMBERSHIP_DOMAIN = 'parley/v1/memory-membership';
/** §18.4 membership entry hash (the chain link). */
export const MEMBERSHIP_HASH_DOMAIN = 'parley/v1/memory-membership-hash';
/** §18.5 epoch key commitment. */
export const KEY_COMMITMENT_DOMAIN = 'parley/v1/memory-key-commitment';
/** §18.5 back link associated data. */
export const BACK_LINK_DOMAIN = 'parley/v1/memory-back-link';
/** §18.5 signed epoch record. */
export const EPOCH_DOMAIN = 'parley/v1/memory-epoch';
/** §18.6 the plaintext sealed in a key wrap. */
export const EPOCH_KEY_DOMAIN = 'parley/v1/memory-epoch-key';
/** §18.6 signed key wrap. */
export const KEY_WRAP_DOMAIN = 'parley/v1/memory-key-wrap';
/** §18.7 segment associated data. */
export const SEGMENT_DOMAIN = 'parley/v1/memory-segment';
/** §18.7 signed write record. */
export const WRITE_DOMAIN = 'parley/v1/memory-write';
/** §18.8 signed request. */
export const REQUEST_DOMAIN = 'parley/v1/memory-request';

/** Every domain tag of §18, for the conformance vectors and the tests. */
export const MEMORY_DOMAINS = Object.freeze({
  memoryId: MEMORY_ID_DOMAIN,
  membership: MEMBERSHIP_DOMAIN,
  membershipHash: MEMBERSHIP_HASH_DOMAIN,
  keyCommitment: KEY_COMMITMENT_DOMAIN,
  backLink: BACK_LINK_DOMAIN,
  epoch: EPOCH_DOMAIN,
  epochKey: EPOCH_KEY_DOMAIN,
  keyWrap: KEY_WRAP_DOMAIN,
  segment: SEGMENT_DOMAIN,
  write: WRITE_DOMAIN,
  request: REQUEST_DOMAIN,
} as const);

/** 32 zero bytes: previous_hash of membership entry 1. */
export const ZERO_HASH: Uint8Array = new Uint8Array(HASH_BYTES);

function hex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

/**
 * The memory id of a CREATE entry (§18.4):
 * `"mem-" ‖ hex(BLAKE3(str(domain) ‖ str(owner_id) ‖ fixed32(owner_key) ‖ fixed16(nonce))[0..16])`.
 * The id commits to the owner's key, so no one can present another owner for it.
 */
export function memoryIdOf(crypto: ParleyCrypto, ownerId: string, ownerPublicKey: Uint8Array, creationNonce: Uint8Array): string {
  const digest = crypto.blake3(
    layout(MEMORY_ID_DOMAIN)
      .str(ownerId)
      .fixed(ownerPublicKey, PUBLIC_KEY_BYTES, 'owner_public_key')
      .fixed(creationNonce, CREATION_NONCE_BYTES, 'creation_nonce')
      .bytes(),
  );
  return `mem-${hex(digest.subarray(0, 16))}`;
}

/** The signed membership layout (§18.4). Checks lengths, not semantics. */
export function membershipLayout(memoryId: string, e: Omit<MembershipEntry, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  return layout(MEMBERSHIP_DOMAIN)
    .str(memoryId)
    .u64(e.version)
    .fixed(e.previousHash, HASH_BYTES, 'previous_hash')
    .u8(e.change)
    .str(e.memberId)
    .u8(e.access)
    .fixed(e.memberPublicKey, PUBLIC_KEY_BYTES, 'member_public_key')
    .i64(e.expiresAtMs)
    .i64(e.timestampMs)
    .str(e.signerId)
    .var(e.creationNonce, 'creation_nonce')
    .bytes();
}

/** entry_hash (§18.4): BLAKE3(str(domain) ‖ var(membership layout) ‖ fixed64(signature)). */
export function membershipEntryHash(crypto: ParleyCrypto, memoryId: string, entry: MembershipEntry): Uint8Array {
  return crypto.blake3(
    layout(MEMBERSHIP_HASH_DOMAIN).var(membershipLayout(memoryId, entry)).fixed(entry.signature, SIGNATURE_BYTES, 'signature').bytes(),
  );
}

/**
 * The key commitment of an epoch key (§18.5): BLAKE3(str(domain) ‖ str(memory_id) ‖ u32(epoch) ‖ fixed32(key)).
 * The hashed bytes hold the key: the layout's buffer and the copy hashed are wiped.
 */
export function keyCommitment(crypto: ParleyCrypto, memoryId: string, epoch: number, key: Uint8Array): Uint8Array {
  const input = layout(KEY_COMMITMENT_DOMAIN).str(memoryId).u32(epoch).fixed(key, EPOCH_KEY_BYTES, 'key').bytesAndWipe();
  try {
    return crypto.blake3(input);
  } finally {
    crypto.wipe(input);
  }
}

/** Associated data of the back link of `epoch` (which seals the key of `epoch − 1`). */
export function backLinkAd(memoryId: string, epoch: number): Uint8Array {
  return layout(BACK_LINK_DOMAIN).str(memoryId).u32(epoch).bytes();
}

/** The signed epoch layout (§18.5). */
export function epochLayout(memoryId: string, r: Omit<EpochRecord, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  return layout(EPOCH_DOMAIN)
    .str(memoryId)
    .u32(r.epoch)
    .fixed(r.keyCommitment, HASH_BYTES, 'key_commitment')
    .var(r.backLink, 'back_link')
    .u64(r.membershipVersion)
    .fixed(r.membershipHash, HASH_BYTES, 'membership_hash')
    .i64(r.createdAtMs)
    .str(r.creatorId)
    .bytes();
}

/**
 * The plaintext a key wrap seals (§18.6): it names what the key is for, so a copy cannot be moved to another memory, epoch or member.
 * It holds the key: the layout's buffer is wiped, and the caller wipes the bytes returned.
 */
export function wrapPlaintext(memoryId: string, epoch: number, memberId: string, key: Uint8Array): Uint8Array {
  return layout(EPOCH_KEY_DOMAIN).str(memoryId).u32(epoch).str(memberId).fixed(key, EPOCH_KEY_BYTES, 'key').bytesAndWipe();
}

/**
 * The key inside a wrap plaintext, after checking every other field against what was expected.
 * @throws MemoryError `decrypt_failed` when the plaintext is for another memory, epoch or member, or malformed
 */
export function keyFromWrapPlaintext(plaintext: Uint8Array, memoryId: string, epoch: number, memberId: string): Uint8Array {
  const expected = wrapPlaintext(memoryId, epoch, memberId, new Uint8Array(EPOCH_KEY_BYTES));
  const prefix = expected.length - EPOCH_KEY_BYTES;
  let same = plaintext.length === expected.length;
  for (let i = 0; same && i < prefix; i++) same = plaintext[i] === expected[i];
  if (!same) fail('decrypt_failed', 'key copy is not for this memory, epoch and member');
  return plaintext.slice(prefix);
}

/** The signed key-wrap layout (§18.6). */
export function keyWrapLayout(crypto: ParleyCrypto, memoryId: string, w: Omit<KeyWrap, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  return layout(KEY_WRAP_DOMAIN)
    .str(memoryId)
    .u32(w.epoch)
    .str(w.memberId)
    .fixed(w.memberPublicKey, PUBLIC_KEY_BYTES, 'member_public_key')
    .fixed(crypto.blake3(w.sealedKey), HASH_BYTES, 'sealed_key_digest')
    .str(w.signerId)
    .bytes();
}

/** Associated data of a segment ciphertext (§18.7). */
export function segmentAd(memoryId: string, r: Pick<WriteRecord, 'segmentId' | 'version' | 'keyEpoch' | 'writerId'>): Uint8Array {
  return layout(SEGMENT_DOMAIN).str(memoryId).str(r.segmentId).u64(r.version).u32(r.keyEpoch).str(r.writerId).bytes();
}

/** The signed write layout (§18.7). */
export function writeLayout(memoryId: string, r: Omit<WriteRecord, 'signature' | '$typeName' | '$unknown'>): Uint8Array {
  return layout(WRITE_DOMAIN)
    .str(memoryId)
    .str(r.segmentId)
    .u64(r.version)
    .u64(r.previousVersion)
    .u32(r.keyEpoch)
    .fixed(r.ciphertextDigest, HASH_BYTES, 'ciphertext_digest')
    .u64(r.ciphertextBytes)
    .str(r.writerId)
    .i64(r.timestampMs)
    .i64(r.expiresAtMs)
    .bytes();
}

/** What a request signature is over besides its own fields (§18.8). */
export interface MemoryRequestTarget {
  /** The store's name (the gateway id of the gateway that serves it). */
  readonly serviceId: string;
  /** gRPC method path, `/parley.v1.MemoryService/<Method>`. */
  readonly path: string;
  /** The exact request bytes. */
  readonly body: Uint8Array;
}

/** The request fields a signature covers. */
export interface MemoryRequestFields {
  readonly timestampMs: number;
  /** 16 random bytes, single use. */
  readonly nonce: Uint8Array;
  readonly agentId: string;
  /** The certificate's serial (16 bytes). */
  readonly serial: Uint8Array;
}

/** Bytes of a request nonce. */
export const REQUEST_NONCE_BYTES = 16;

/** The signed request layout (§18.8). */
export function memoryRequestLayout(crypto: ParleyCrypto, target: MemoryRequestTarget, f: MemoryRequestFields): Uint8Array {
  return layout(REQUEST_DOMAIN)
    .str(target.serviceId)
    .str(target.path)
    .fixed(crypto.blake3(target.body), HASH_BYTES, 'request_digest')
    .i64(f.timestampMs)
    .fixed(f.nonce, REQUEST_NONCE_BYTES, 'nonce')
    .str(f.agentId)
    .fixed(f.serial, 16, 'serial')
    .bytes();
}
