/**
 * @parley/audit — the hash-chained, signed audit trail with a Merkle tree,
 * signed tree heads and inclusion / consistency proofs (DESIGN.md "Audit",
 * docs/PROTOCOL.md §9), stored in an append-only file or PostgreSQL. All
 * cryptography goes through the ParleyCrypto object the caller passes in.
 */

// For users: write, verify, prove
export { AuditError, isAuditError, AUDIT_ERROR_CODES } from './errors.js';
export type { AuditErrorCode } from './errors.js';
export { AuditLog, treeFromEntries, MAX_CHECKPOINTS_TRIED } from './audit-log.js';
export type { AuditLogOptions, AuditLogOpening } from './audit-log.js';
export { checkpointLayout, signCheckpoint, openCheckpoint, CHECKPOINT_DOMAIN, MAX_CHECKPOINT_SIGNERS } from './checkpoint.js';
export type { AuditCheckpoint, CheckpointState } from './checkpoint.js';
export { verifyChain, chainError, BREAK_REASONS } from './verify.js';
export type { ChainVerification, ChainSource, VerifyChainOptions, BreakReason } from './verify.js';
export { checkInclusion, checkConsistency, inclusionProofToJson, consistencyProofToJson, proofFromJson } from './proofs.js';
export type { InclusionCheck, ConsistencyCheck, InclusionProofJson, ConsistencyProofJson, ProofBundle } from './proofs.js';
export { signTreeHead, verifyTreeHead, assertSignedTreeHead, treeHeadToJson, treeHeadFromJson, TREE_HEAD_DOMAIN } from './tree-head.js';
export type { SignedTreeHead, SignedTreeHeadJson } from './tree-head.js';

// Storage
export type { AuditNotification, AuditStore } from './store.js';
export { openFileStore, FileAuditStore, FILE_MAGIC, RECORD_OVERHEAD } from './file-store.js';
export type { FileStoreOptions, FsyncPolicy, FileStoreEvent, FileDamage, DamageCause } from './file-store.js';
export { openPostgresStore, PostgresAuditStore, MAX_CHECKPOINTED_TABLE_NAME } from './postgres-store.js';
export type { SqlClient, PostgresStoreOptions } from './postgres-store.js';

// Entries, layouts and the Merkle tree (for other implementations, gateways and tests)
export {
  signEntry,
  entryLayout,
  entryHash,
  leafData,
  leafHash,
  encodeEntry,
  decodeEntry,
  entryProblem,
  assertEntry,
  assertEntryFields,
  verifyEntrySignature,
  writerKeyId,
  WriterKeys,
  ENTRY_DOMAIN,
  ENTRY_HASH_DOMAIN,
  HASH_BYTES,
  KEY_ID_BYTES,
  SIGNATURE_BYTES,
  PUBLIC_KEY_BYTES,
  OUTCOME_PATTERN,
  MAX_ENTRY_BYTES,
  ZERO_HASH,
} from './entry.js';
export type { AuditEntryFields, UnsignedEntry } from './entry.js';
export {
  MerkleTree,
  RootAccumulator,
  merkleHasher,
  createTreeHasher,
  rootFromInclusionProof,
  verifyInclusionProof,
  checkConsistencyProof,
  verifyConsistencyProof,
  MAX_PROOF_HASHES,
} from './merkle.js';
export type { TreeHasher, InclusionProof, ConsistencyProof } from './merkle.js';
