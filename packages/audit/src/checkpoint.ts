/**
 * Audit checkpoints (docs/PROTOCOL.md §9.6): a writer's signed statement of
 * its log's state at `tree_size` entries — the log it is (the entry hash of
 * entry 0), the Merkle root, the entry hash of the last entry, the keys that
 * signed the entries it covers, and the peaks that continue the root — so
 * that a writer reopening its log adopts the entries before it on the
 * strength of its own signature instead of reading and verifying every one of
 * them again.
 *
 *   checkpoint_layout = layout('parley/v1/audit-checkpoint')
 *                         .u64(tree_size).fixed(first_entry_hash, 32).fixed(root_hash, 32)
 *                         .fixed(last_entry_hash, 32).i64(timestamp_ms).fixed(signer_key_id, 16)
 *                         .u32(entry_signer_count).fixed(key_id, 16) … (ascending, distinct)
 *                         .u32(peak_count).fixed(peak, 32) … (the peaks, largest subtree first)
 *   signature         = Ed25519(writer key, checkpoint_layout)
 */
import { layout, toHex, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { asMalformed, assertBytes, assertCrypto, assertIterable, assertKeyPair, assertObject, assertSafeInt, describe, malformed } from './assert.js';
import { AuditError } from './errors.js';
import { HASH_BYTES, KEY_ID_BYTES, SIGNATURE_BYTES, WriterKeys } from './entry.js';
import { RootAccumulator, type TreeHasher } from './merkle.js';

/** Domain tag of the checkpoint layout. */
export const CHECKPOINT_DOMAIN = 'parley/v1/audit-checkpoint';
/** Most distinct keys a checkpoint may name as signers of its entries. */
export const MAX_CHECKPOINT_SIGNERS = 256;
/** Most peaks a checkpoint holds: one per set bit of a tree size below 2^53. */
export const MAX_CHECKPOINT_PEAKS = 53;

/** A signed checkpoint (see the module comment). */
export interface AuditCheckpoint {
  /** Entries the checkpoint covers (0 < tree_size). */
  readonly treeSize: number;
  /** Entry hash (§9.2) of entry 0: which log this is a checkpoint of. */
  readonly firstEntryHash: Uint8Array;
  /** MTH of those entries. */
  readonly rootHash: Uint8Array;
  /** Entry hash (§9.2) of entry `treeSize − 1`: what entry `treeSize` links to. */
  readonly lastEntryHash: Uint8Array;
  /** When the writer signed, ms since the Unix epoch. */
  readonly timestampMs: number;
  /** Key id of the writer key that signed. */
  readonly signerKeyId: Uint8Array;
  /** Key ids of every key that signed one of the entries covered: ascending, distinct. */
  readonly entrySigners: readonly Uint8Array[];
  /** The peaks (RootAccumulator.peaks): one per set bit of `treeSize`, largest first. */
  readonly peaks: readonly Uint8Array[];
  /** Ed25519 over the checkpoint layout. */
  readonly signature: Uint8Array;
}

/** Byte order of key ids (the order `entry_signers` are listed in). */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/**
 * The signed bytes of a checkpoint.
 * @throws AuditError `malformed`
 */
export function checkpointLayout(c: Omit<AuditCheckpoint, 'signature'>): Uint8Array {
  const o = assertObject(c, 'checkpoint');
  const treeSize = assertSafeInt(o['treeSize'], 'checkpoint.treeSize', 1);
  const peaks = o['peaks'];
  if (!Array.isArray(peaks) || peaks.length > MAX_CHECKPOINT_PEAKS) malformed(`checkpoint.peaks must be an array of at most ${MAX_CHECKPOINT_PEAKS} hashes`);
  const signers = o['entrySigners'];
  if (!Array.isArray(signers) || signers.length === 0 || signers.length > MAX_CHECKPOINT_SIGNERS) malformed(`checkpoint.entrySigners must be an array of 1..${MAX_CHECKPOINT_SIGNERS} key ids`);
  const l = layout(CHECKPOINT_DOMAIN)
    .u64(treeSize)
    .fixed(assertBytes(o['firstEntryHash'], 'checkpoint.firstEntryHash', HASH_BYTES), HASH_BYTES)
    .fixed(assertBytes(o['rootHash'], 'checkpoint.rootHash', HASH_BYTES), HASH_BYTES)
    .fixed(assertBytes(o['lastEntryHash'], 'checkpoint.lastEntryHash', HASH_BYTES), HASH_BYTES)
    .i64(assertSafeInt(o['timestampMs'], 'checkpoint.timestampMs'))
    .fixed(assertBytes(o['signerKeyId'], 'checkpoint.signerKeyId', KEY_ID_BYTES), KEY_ID_BYTES)
    .u32(signers.length);
  (signers as unknown[]).forEach((k, i) => {
    const id = assertBytes(k, `checkpoint.entrySigners[${i}]`, KEY_ID_BYTES);
    if (i > 0 && compareBytes(signers[i - 1] as Uint8Array, id) >= 0) malformed('checkpoint.entrySigners must be ascending and distinct');
    l.fixed(id, KEY_ID_BYTES);
  });
  l.u32(peaks.length);
  (peaks as unknown[]).forEach((p, i) => l.fixed(assertBytes(p, `checkpoint.peaks[${i}]`, HASH_BYTES), HASH_BYTES));
  return l.bytes();
}

/** What a writer knows of its log when it signs a checkpoint. */
export interface CheckpointState {
  readonly tree: RootAccumulator;
  readonly firstEntryHash: Uint8Array;
  readonly lastEntryHash: Uint8Array;
  /** Key ids of the keys that signed its entries (any order, distinct). */
  readonly entrySigners: Iterable<Uint8Array>;
}

/**
 * Signs a checkpoint of a writer's log state.
 * @throws AuditError `malformed` (any argument), `key_wiped` (the writer key was wiped)
 */
export function signCheckpoint(crypto: ParleyCrypto, writer: Ed25519KeyPair, signerKeyId: Uint8Array, state: CheckpointState, timestampMs: number): AuditCheckpoint {
  assertCrypto(crypto);
  assertKeyPair(writer, 'writer');
  assertBytes(signerKeyId, 'signerKeyId', KEY_ID_BYTES);
  const s = assertObject(state, 'state');
  const tree = s['tree'];
  if (!(tree instanceof RootAccumulator)) malformed(`state.tree must be a RootAccumulator, got ${describe(tree)}`);
  const signers = assertIterable<unknown>(s['entrySigners'], 'state.entrySigners');
  if (typeof signers === 'string' || !(Symbol.iterator in signers)) malformed('state.entrySigners must be an iterable of key ids');
  const unsigned = {
    treeSize: tree.size,
    firstEntryHash: new Uint8Array(assertBytes(s['firstEntryHash'], 'state.firstEntryHash', HASH_BYTES)),
    rootHash: tree.root(),
    lastEntryHash: new Uint8Array(assertBytes(s['lastEntryHash'], 'state.lastEntryHash', HASH_BYTES)),
    timestampMs,
    signerKeyId: new Uint8Array(signerKeyId),
    entrySigners: [...signers].map((k, i) => new Uint8Array(assertBytes(k, `state.entrySigners[${i}]`, KEY_ID_BYTES))).sort(compareBytes),
    peaks: tree.peaks(),
  };
  const bytes = checkpointLayout(unsigned);
  return { ...unsigned, signature: asMalformed('checkpoint signature', () => crypto.ed25519.sign(bytes, writer.secretKey)) };
}

/**
 * The accumulator a checkpoint continues, if it checks on its own: signed by a trusted key, naming only trusted
 * keys as its entries' signers (a key no longer trusted means its entries must be read and refused), and its
 * peaks folding to its root. What it says about the store (entry 0, entry tree_size − 1) is the caller's to check.
 * @throws AuditError `bad_signature` (untrusted or invalid signature, an untrusted entry signer), `malformed`
 */
export function openCheckpoint(crypto: ParleyCrypto, hasher: TreeHasher, keys: WriterKeys, c: AuditCheckpoint): RootAccumulator {
  assertCrypto(crypto);
  const h = assertObject(hasher, 'hasher');
  if (typeof h['hashChildren'] !== 'function' || typeof h['emptyRoot'] !== 'function') malformed(`hasher must be a TreeHasher, got ${describe(hasher)}`);
  if (!(keys instanceof WriterKeys)) malformed(`keys must be WriterKeys (WriterKeys.from), got ${describe(keys)}`);
  assertBytes(assertObject(c, 'checkpoint')['signature'], 'checkpoint.signature', SIGNATURE_BYTES);
  const bytes = checkpointLayout(c);
  const pk = keys.get(c.signerKeyId);
  if (pk === undefined || !crypto.ed25519.verify(c.signature, bytes, pk)) {
    throw new AuditError('bad_signature', `the checkpoint at ${c.treeSize} entries is not signed by the writer key or a trusted key`);
  }
  for (const id of c.entrySigners) {
    if (keys.get(id) === undefined) throw new AuditError('bad_signature', `the checkpoint at ${c.treeSize} entries covers entries signed by key ${toHex(id)}, which is not trusted now`);
  }
  const acc = RootAccumulator.fromPeaks(hasher, c.treeSize, c.peaks);
  if (!crypto.constantTimeEqual(acc.root(), c.rootHash)) malformed(`the checkpoint at ${c.treeSize} entries has peaks that do not fold to its root`);
  return acc;
}
