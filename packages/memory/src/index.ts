/**
 * @parley/memory — shared memory between agents (docs/PROTOCOL.md §18):
 * segments with versions that only members can read or write, encrypted end to
 * end under epoch keys the store never sees, a signed and hash-chained
 * membership log, signed compare-and-set writes, and the client of
 * parley.v1.MemoryService. The store itself is @parley/memory-server.
 */

// For agents
export { MemoryClient } from './client.js';
export type {
  MemoryClientOptions,
  MemoryInfo,
  MemoryKeyFault,
  MemoryMemberInfo,
  MemoryUsageInfo,
  MemoryListing,
  SegmentInfo,
  ReadResult,
  WriteResult,
  WriteOptions,
  UpdateOptions,
  GrantOptions,
} from './client.js';
export { MemoryError, isMemoryError } from './errors.js';
export type { MemoryErrorCode } from './errors.js';
export type { AccessLevel } from './names.js';

// For the store (packages/memory-server), other implementations and the conformance vectors
export {
  MEMORY_ID_PATTERN,
  SEGMENT_ID_PATTERN,
  CREATION_NONCE_BYTES,
  EPOCH_KEY_BYTES,
  HASH_BYTES,
  PUBLIC_KEY_BYTES,
  SIGNATURE_BYTES,
  BACK_LINK_BYTES,
  MAX_SEALED_KEY_BYTES,
  MAX_SEGMENT_PLAINTEXT_BYTES,
  MAX_SEGMENT_CIPHERTEXT_BYTES,
  MAX_MEMBERSHIP_ENTRIES,
  MAX_MEMBERS,
  GRANT_LIMIT,
  ADMIN_GRANT_LIMIT,
  MAX_EPOCHS,
  isMemoryId,
  isSegmentId,
  assertMemoryId,
  assertSegmentId,
  accessOf,
  levelOf,
} from './names.js';
export {
  MAX_MEMBERSHIP_ENTRY_BYTES,
  MAX_EPOCH_RECORD_BYTES,
  MAX_KEY_WRAP_BYTES,
  MAX_MEMORY_MEMBER_BYTES,
  MAX_EPOCH_RECORDS,
  MAX_GET_MEMORY_RESPONSE_BYTES,
  MEMORY_MAX_RECEIVE_BYTES,
  MEMORY_MAX_SEND_BYTES,
  MAX_LISTED_MEMORIES,
} from './limits.js';
export {
  MEMORY_DOMAINS,
  REQUEST_NONCE_BYTES,
  ZERO_HASH,
  memoryIdOf,
  membershipLayout,
  membershipEntryHash,
  keyCommitment,
  backLinkAd,
  epochLayout,
  wrapPlaintext,
  keyFromWrapPlaintext,
  keyWrapLayout,
  segmentAd,
  writeLayout,
  memoryRequestLayout,
} from './layouts.js';
export type { MemoryRequestTarget, MemoryRequestFields } from './layouts.js';
export {
  Membership,
  isActive,
  sameWrite,
  verifyEpochRecord,
  verifyCurrentEpoch,
  isCutEpoch,
  verifyKeyWrap,
  verifyWriteRecord,
  assertMembershipEntryShape,
  assertEpochRecordShape,
  assertKeyWrapShape,
  assertWriteRecordShape,
} from './model.js';
export type { Member } from './model.js';
export { createEntry, changeEntry, newEpoch, newCutEpoch, followBackLink, wrapKey, openWrap, isCommitmentMismatch, sealWrite, openWrite } from './records.js';
export type { Signer, EpochKey, SealedWrite } from './records.js';
export { MEMORY_METADATA_KEYS, signMemoryRequest, memoryRequestSigner, parseMemoryMetadata, verifyMemoryRequest } from './request-auth.js';
export type { MemoryRequestAuth, MemoryIdentity } from './request-auth.js';
