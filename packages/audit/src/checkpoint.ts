/**
 * Audit checkpoints (docs/PROTOCOL.md §9.6): a writer's signed statement of
 * its log's state at `tree_size` entries — the Merkle root, the entry hash of
 * the last entry and the peaks that continue the root — so that a writer
 * reopening its log adopts the entries before it on the strength of its own
 * signature instead of reading and verifying every one of them again.
 *
 *   checkpoint_layout = layout('parley/v1/audit-checkpoint')
 *                         .u64(tree_size).fixed(root_hash, 32).fixed(last_entry_hash, 32)
 *                         .i64(timestamp_ms).fixed(signer_key_id, 16)
 *                         .u32(peak_count).fixed(peak, 32) … (the peaks, largest subtree first)
 *   signature         = Ed25519(writer key, checkpoint_layout)
 */
import { layout, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { assertBytes, assertObject, assertSafeInt, malformed } from './assert.js';
import { AuditError } from './errors.js';
import { HASH_BYTES, KEY_ID_BYTES, SIGNATURE_BYTES, type WriterKeys } from './entry.js';
import { RootAccumulator, type TreeHasher } from './merkle.js';

/** Domain tag of the checkpoint layout. */
export const CHECKPOINT_DOMAIN = 'parley/v1/audit-checkpoint';

/** A signed checkpoint (see the module comment). */
export interface AuditCheckpoint {
  /** Entries the checkpoint covers (0 < tree_size). */
  readonly treeSize: number;
  /** MTH of those entries. */
  readonly rootHash: Uint8Array;
  /** Entry hash (§9.2) of entry `treeSize − 1`: what entry `treeSize` links to. */
  readonly lastEntryHash: Uint8Array;
  /** When the writer signed, ms since the Unix epoch. */
  readonly timestampMs: number;
  /** Key id of the writer key that signed. */
  readonly signerKeyId: Uint8Array;
  /** The peaks (RootAccumulator.peaks): one per set bit of `treeSize`, largest first. */
  readonly peaks: readonly Uint8Array[];
  /** Ed25519 over the checkpoint layout. */
  readonly signature: Uint8Array;
}

/**
 * The signed bytes of a checkpoint.
 * @throws AuditError `malformed`
 */
export function checkpointLayout(c: Omit<AuditCheckpoint, 'signature'>): Uint8Array {
  const o = assertObject(c, 'checkpoint');
  const treeSize = assertSafeInt(o['treeSize'], 'checkpoint.treeSize', 1);
  const peaks = o['peaks'];
  if (!Array.isArray(peaks) || peaks.length > 53) malformed('checkpoint.peaks must be an array of at most 53 hashes');
  const l = layout(CHECKPOINT_DOMAIN)
    .u64(treeSize)
    .fixed(assertBytes(o['rootHash'], 'checkpoint.rootHash', HASH_BYTES), HASH_BYTES)
    .fixed(assertBytes(o['lastEntryHash'], 'checkpoint.lastEntryHash', HASH_BYTES), HASH_BYTES)
    .i64(assertSafeInt(o['timestampMs'], 'checkpoint.timestampMs'))
    .fixed(assertBytes(o['signerKeyId'], 'checkpoint.signerKeyId', KEY_ID_BYTES), KEY_ID_BYTES)
    .u32(peaks.length);
  (peaks as unknown[]).forEach((p, i) => l.fixed(assertBytes(p, `checkpoint.peaks[${i}]`, HASH_BYTES), HASH_BYTES));
  return l.bytes();
}

/** Signs a checkpoint of `tree` (its size, root and peaks) whose last entry hashes to `lastEntryHash`. */
export function signCheckpoint(
  crypto: ParleyCrypto,
  writer: Ed25519KeyPair,
  signerKeyId: Uint8Array,
  tree: RootAccumulator,
  lastEntryHash: Uint8Array,
  timestampMs: number,
): AuditCheckpoint {
  const unsigned = { treeSize: tree.size, rootHash: tree.root(), lastEntryHash: new Uint8Array(lastEntryHash), timestampMs, signerKeyId: new Uint8Array(signerKeyId), peaks: tree.peaks() };
  return { ...unsigned, signature: crypto.ed25519.sign(checkpointLayout(unsigned), writer.secretKey) };
}

/**
 * The accumulator a checkpoint continues: its signature verifies under a trusted key and its peaks fold
 * to its root.
 * @throws AuditError `bad_signature` (untrusted or invalid signature), `malformed` (shape, peaks that do not fold to the root)
 */
export function openCheckpoint(crypto: ParleyCrypto, hasher: TreeHasher, keys: WriterKeys, c: AuditCheckpoint): RootAccumulator {
  assertBytes(c.signature, 'checkpoint.signature', SIGNATURE_BYTES);
  const bytes = checkpointLayout(c);
  const pk = keys.get(c.signerKeyId);
  if (pk === undefined || !crypto.ed25519.verify(c.signature, bytes, pk)) {
    throw new AuditError('bad_signature', `the checkpoint at ${c.treeSize} entries is not signed by the writer key or a trusted key`);
  }
  const acc = RootAccumulator.fromPeaks(hasher, c.treeSize, c.peaks);
  if (!crypto.constantTimeEqual(acc.root(), c.rootHash)) malformed(`the checkpoint at ${c.treeSize} entries has peaks that do not fold to its root`);
  return acc;
}
