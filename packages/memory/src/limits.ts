/**
 * Encoded-size bounds of MemoryService answers (docs/PROTOCOL.md §18.2), derived from the per-item maxima
 * every boundary enforces (the shape checks of model.ts, names.ts and @parley/identity's certificate cap),
 * so that a client's receive limit admits the largest answer a valid memory can produce: a memory at every
 * limit at once must stay readable.
 *
 * Protobuf sizes: every field number here is ≤ 15, so each tag is one byte; a varint field holding at most
 * `max` takes 1 + varint(max) bytes; a string, bytes or message field of at most `n` bytes takes
 * 1 + varint(n) + n. Times are 0..2^53−1 (8-byte varints), versions 1..4096 (2 bytes), epochs 1..2^32−1
 * (5 bytes), enums 0..3 (1 byte), uint64 usage counters any value (10 bytes).
 */
import { MAX_CERTIFICATE_BYTES } from '@parley/identity';
import {
  BACK_LINK_BYTES,
  CREATION_NONCE_BYTES,
  HASH_BYTES,
  MAX_EPOCHS,
  MAX_MEMBERS,
  MAX_MEMBERSHIP_ENTRIES,
  MAX_SEALED_KEY_BYTES,
  MAX_SEGMENT_CIPHERTEXT_BYTES,
  PUBLIC_KEY_BYTES,
  SIGNATURE_BYTES,
} from './names.js';

/** Bytes of the varint encoding of `value` (≥ 0). */
function varintBytes(value: number): number {
  let n = 1;
  for (let v = value; v >= 128; v = Math.floor(v / 128)) n++;
  return n;
}

/** A varint field (tag ≤ 15) holding at most `max`. */
const scalar = (max: number): number => 1 + varintBytes(max);
/** A length-delimited field (tag ≤ 15): string, bytes or embedded message of at most `length` bytes. */
const delimited = (length: number): number => 1 + varintBytes(length) + length;

const AGENT_ID = 128; // @parley/identity AGENT_ID_PATTERN: 1..128 bytes
const MEMORY_ID = 36; // "mem-" and 32 hex digits
const TIME = Number.MAX_SAFE_INTEGER; // every *_ms field: 0..2^53−1 (8-byte varint)
const U32 = 0xffff_ffff; // epoch numbers (5-byte varint)
const ENUM = 3; // MemoryAccess, MembershipChange
const U64_FIELD = 1 + 10; // a uint64 usage counter: any value

/**
 * Largest MembershipEntry other than the CREATE (which adds its 16-byte creation nonce): version 3,
 * previous_hash 34, change 2, member_id 131, access 2, member_public_key 34, expires_at_ms 9,
 * timestamp_ms 9, signer_id 131, signature 66 = **421** bytes (CREATE: 439).
 */
export const MAX_MEMBERSHIP_ENTRY_BYTES =
  scalar(MAX_MEMBERSHIP_ENTRIES) +
  delimited(HASH_BYTES) +
  scalar(ENUM) +
  delimited(AGENT_ID) +
  scalar(ENUM) +
  delimited(PUBLIC_KEY_BYTES) +
  scalar(TIME) +
  scalar(TIME) +
  delimited(AGENT_ID) +
  delimited(SIGNATURE_BYTES);

/** The CREATE entry: {@link MAX_MEMBERSHIP_ENTRY_BYTES} and creation_nonce 18 = 439 bytes. */
const MAX_CREATE_ENTRY_BYTES = MAX_MEMBERSHIP_ENTRY_BYTES + delimited(CREATION_NONCE_BYTES);

/**
 * Largest EpochRecord: epoch 6, key_commitment 34, back_link 74, membership_version 3, membership_hash 34,
 * created_at_ms 9, creator_id 131, signature 66 = **357** bytes.
 */
export const MAX_EPOCH_RECORD_BYTES =
  scalar(U32) + delimited(HASH_BYTES) + delimited(BACK_LINK_BYTES) + scalar(MAX_MEMBERSHIP_ENTRIES) + delimited(HASH_BYTES) + scalar(TIME) + delimited(AGENT_ID) + delimited(SIGNATURE_BYTES);

/**
 * Largest KeyWrap: epoch 6, member_id 131, member_public_key 34, sealed_key 289 (at most
 * {@link MAX_SEALED_KEY_BYTES} = 286), signer_id 131, signature 66 = **657** bytes.
 */
export const MAX_KEY_WRAP_BYTES = scalar(U32) + delimited(AGENT_ID) + delimited(PUBLIC_KEY_BYTES) + delimited(MAX_SEALED_KEY_BYTES) + delimited(AGENT_ID) + delimited(SIGNATURE_BYTES);

/**
 * Largest MemoryMember: member_id 131, access 2, member_public_key 34, expires_at_ms 9, and the
 * certificate of its grant, at most MAX_CERTIFICATE_BYTES (4096; the store refuses a grant with a larger
 * one, and a caller's certificate in the request metadata is capped the same, §18.8): 4099 = **4275** bytes.
 */
export const MAX_MEMORY_MEMBER_BYTES = delimited(AGENT_ID) + scalar(ENUM) + delimited(PUBLIC_KEY_BYTES) + scalar(TIME) + delimited(MAX_CERTIFICATE_BYTES);

/** MemorySummary: memory_id 38, owner_id 131, access 2, created_at_ms 9, expires_at_ms 9, membership_version 3, current_epoch 6 = 198 bytes. */
const MAX_SUMMARY_BYTES = delimited(MEMORY_ID) + delimited(AGENT_ID) + scalar(ENUM) + scalar(TIME) + scalar(TIME) + scalar(MAX_MEMBERSHIP_ENTRIES) + scalar(U32);

/** MemoryUsage: eight uint64 counters of 11 bytes = 88 bytes. */
const MAX_USAGE_BYTES = 8 * U64_FIELD;

/**
 * Most epoch records a memory keeps, hence GetMemory returns (§18.5): a rotation nobody needed is refused
 * at {@link MAX_EPOCHS} records, and every other one — a REVOKE's epoch, a rotation an expiring grant
 * made due — is paid for by one log entry, so at most {@link MAX_EPOCHS} + {@link MAX_MEMBERSHIP_ENTRIES}.
 */
export const MAX_EPOCH_RECORDS = MAX_EPOCHS + MAX_MEMBERSHIP_ENTRIES;

/**
 * The largest valid GetMemoryResponse, encoded: **5,781,963 bytes** (≈ 5.5 MiB).
 *
 * | field | count × (tag + length + largest item) | bytes |
 * | --- | --- | --- |
 * | memory (MemorySummary) | 1 × (1 + 2 + 198) | 201 |
 * | entries (MembershipEntry) | 1 CREATE × (1 + 2 + 439) + 4095 × (1 + 2 + 421) | 1,736,722 |
 * | members (MemoryMember, with certificate) | 256 × (1 + 2 + 4275) | 1,095,168 |
 * | epochs (EpochRecord) | 8192 × (1 + 2 + 357) | 2,949,120 |
 * | wrap (KeyWrap) | 1 × (1 + 2 + 657) | 660 |
 * | usage (MemoryUsage) | 1 × (1 + 1 + 88) | 90 |
 * | rotation_required | 1 × (1 + 1) | 2 |
 *
 * Counts: {@link MAX_MEMBERSHIP_ENTRIES} log entries (GetMemory with after_version 0 returns them all),
 * {@link MAX_MEMBERS} members (the owner included), {@link MAX_EPOCH_RECORDS} epoch records, one key copy.
 * It is larger than the largest ReadSegment answer (a 1,048,616-byte ciphertext and its record), so it
 * sets the receive limit of every MemoryService client ({@link MEMORY_MAX_RECEIVE_BYTES}).
 */
export const MAX_GET_MEMORY_RESPONSE_BYTES =
  delimited(MAX_SUMMARY_BYTES) +
  delimited(MAX_CREATE_ENTRY_BYTES) +
  (MAX_MEMBERSHIP_ENTRIES - 1) * delimited(MAX_MEMBERSHIP_ENTRY_BYTES) +
  MAX_MEMBERS * delimited(MAX_MEMORY_MEMBER_BYTES) +
  MAX_EPOCH_RECORDS * delimited(MAX_EPOCH_RECORD_BYTES) +
  delimited(MAX_KEY_WRAP_BYTES) +
  delimited(MAX_USAGE_BYTES) +
  scalar(1);

/**
 * The receive limit of a MemoryService client (`grpc.max_receive_message_length`): the largest answer
 * (GetMemory's, {@link MAX_GET_MEMORY_RESPONSE_BYTES}; a ReadSegment answer is at most one ciphertext and
 * its record) and 64 KiB of room: 5,847,499 bytes.
 */
export const MEMORY_MAX_RECEIVE_BYTES = Math.max(MAX_GET_MEMORY_RESPONSE_BYTES, 2 * MAX_SEGMENT_CIPHERTEXT_BYTES) + 65_536;

/**
 * The send limit of a MemoryService client: the largest request is a WriteSegment (one ciphertext, at most
 * {@link MAX_SEGMENT_CIPHERTEXT_BYTES}, and its record); twice that and 64 KiB of room.
 */
export const MEMORY_MAX_SEND_BYTES = 2 * MAX_SEGMENT_CIPHERTEXT_BYTES + 65_536;

/** Memories asked for per ListMemories page (the store's largest page, §18.2). */
export const LIST_MEMORIES_PAGE_SIZE = 500;
/**
 * Most memories `MemoryClient.list` takes from a store: 100,000 (200 pages of 500), then `malformed`.
 * A store is not trusted to end its listing: a page token it repeats, a page larger than asked for, or a
 * listing beyond this cap is refused rather than followed without end.
 */
export const MAX_LISTED_MEMORIES = 100_000;
/** Segments asked for per ListSegments page (the store's largest page, §18.2). */
export const LIST_SEGMENTS_PAGE_SIZE = 1000;
/**
 * The most segments a client lists of one memory whatever the store reports as its quota (1,000,000). The
 * listing is capped at the memory's segment quota (the usage the store reports, 10,000 by default, at most
 * this) and two pages of room, so the signature checks of one listing stay bounded.
 */
export const MAX_LISTED_SEGMENTS = 1_000_000;
/**
 * Memories whose highest verified state (log version and entry hash, epoch) a client remembers after
 * their keys left its cache, to detect a store rolling them back (§18.12): 100,000, oldest dropped first.
 */
export const MEMORY_SEEN_ENTRIES = 100_000;
