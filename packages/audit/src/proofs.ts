/**
 * Checking proofs against signed tree heads (docs/PROTOCOL.md §9.3–9.4): what
 * a third party runs with only a proof, a signed head (or two) and the
 * writer's public key. Also the JSON forms the CLI prints and reads.
 */
import type { AuditMessage } from '@parley/proto';
import { fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { asMalformed, assertBytes, assertCrypto, assertHashPath, assertObject, assertSafeInt, describe, malformed } from './assert.js';
import { AuditError } from './errors.js';
import { assertEntry, decodeEntry, digestEntry, encodeEntry, HASH_BYTES, WriterKeys } from './entry.js';
import { checkConsistencyProof, MAX_PROOF_HASHES, merkleHasher, rootFromInclusionProof, type ConsistencyProof, type InclusionProof } from './merkle.js';
import { assertSignedTreeHead, treeHeadFromJson, treeHeadToJson, type SignedTreeHead, type SignedTreeHeadJson } from './tree-head.js';

type KeysInput = Uint8Array | readonly Uint8Array[] | WriterKeys;

/** What {@link checkInclusion} needs: the proof, a head, and the entry (or just its leaf hash). */
export interface InclusionCheck {
  readonly proof: InclusionProof;
  readonly head: SignedTreeHead;
  /** The entry; its own signature and index are checked too. */
  readonly entry?: AuditMessage;
  /** Or only its leaf hash (32 bytes). */
  readonly leafHash?: Uint8Array;
  /** Trusted writer public key(s). */
  readonly keys: KeysInput;
}

/**
 * Checks that an entry is in the log a signed head describes.
 *
 * Order: head signature → entry (signature, index = leaf index) → sizes → RFC 9162 §2.1.3.2.
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param check proof, head, entry or leaf hash, trusted keys
 * @throws AuditError `bad_signature` (head or entry not signed by a trusted key), `bad_proof`, `malformed`
 */
export function checkInclusion(crypto: ParleyCrypto, check: InclusionCheck): void {
  assertCrypto(crypto);
  const c = assertObject(check, 'check');
  const keys = WriterKeys.from(crypto, c['keys'] as KeysInput);
  const head = assertSignedTreeHead(crypto, c['head'], keys, 'check.head');
  const proof = assertObject(c['proof'], 'check.proof') as unknown as InclusionProof;
  assertSafeInt(proof.leafIndex, 'check.proof.leafIndex');
  assertSafeInt(proof.treeSize, 'check.proof.treeSize');
  let leaf: Uint8Array;
  if (c['entry'] !== undefined) {
    const entry = assertEntry(c['entry'], 'check.entry');
    const digest = digestEntry(crypto, entry);
    const pk = keys.get(entry.signerKeyId);
    if (pk === undefined || !crypto.ed25519.verify(entry.signature, digest.layout, pk)) {
      throw new AuditError('bad_signature', `entry ${entry.index} is not signed by a trusted writer key`);
    }
    if (BigInt(proof.leafIndex) !== entry.index) throw new AuditError('bad_proof', `the proof is for index ${proof.leafIndex}, the entry has index ${entry.index}`);
    if (c['leafHash'] !== undefined && !crypto.constantTimeEqual(assertBytes(c['leafHash'], 'check.leafHash', HASH_BYTES), digest.leafHash)) {
      throw new AuditError('bad_proof', 'leafHash is not the leaf hash of the entry');
    }
    leaf = digest.leafHash;
  } else {
    leaf = assertBytes(c['leafHash'], 'check.leafHash', HASH_BYTES);
  }
  if (proof.treeSize !== head.treeSize) throw new AuditError('bad_proof', `the proof is for size ${proof.treeSize}, the head for ${head.treeSize}`);
  const root = rootFromInclusionProof(merkleHasher(crypto), proof, leaf);
  if (!crypto.constantTimeEqual(root, head.rootHash)) throw new AuditError('bad_proof', 'the inclusion path does not lead to the signed root');
}

/** What {@link checkConsistency} needs. */
export interface ConsistencyCheck {
  readonly proof: ConsistencyProof;
  readonly oldHead: SignedTreeHead;
  readonly newHead: SignedTreeHead;
  readonly keys: KeysInput;
}

/**
 * Checks that the log of `oldHead` is a prefix of the log of `newHead`
 * (nothing was rewritten between them).
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param check proof, both heads, trusted keys
 * @throws AuditError `bad_signature` (a head), `bad_proof`, `malformed`
 */
export function checkConsistency(crypto: ParleyCrypto, check: ConsistencyCheck): void {
  assertCrypto(crypto);
  const c = assertObject(check, 'check');
  const keys = WriterKeys.from(crypto, c['keys'] as KeysInput);
  const oldHead = assertSignedTreeHead(crypto, c['oldHead'], keys, 'check.oldHead');
  const newHead = assertSignedTreeHead(crypto, c['newHead'], keys, 'check.newHead');
  const proof = assertObject(c['proof'], 'check.proof') as unknown as ConsistencyProof;
  assertSafeInt(proof.oldSize, 'check.proof.oldSize');
  assertSafeInt(proof.newSize, 'check.proof.newSize');
  if (proof.oldSize !== oldHead.treeSize || proof.newSize !== newHead.treeSize) {
    throw new AuditError('bad_proof', `the proof is for sizes ${proof.oldSize}→${proof.newSize}, the heads for ${oldHead.treeSize}→${newHead.treeSize}`);
  }
  checkConsistencyProof(merkleHasher(crypto), proof, oldHead.rootHash, newHead.rootHash);
}

/** JSON of an inclusion proof, optionally with the entry and the signed head: all a third party needs. */
export interface InclusionProofJson {
  readonly type: 'parley-audit-inclusion';
  readonly leafIndex: number;
  readonly treeSize: number;
  readonly path: readonly string[];
  readonly leafHash: string;
  readonly rootHash: string;
  /** Protobuf AuditMessage, hex. */
  readonly entry?: string;
  readonly head?: SignedTreeHeadJson;
}

/** JSON of a consistency proof, optionally with both signed heads. */
export interface ConsistencyProofJson {
  readonly type: 'parley-audit-consistency';
  readonly oldSize: number;
  readonly newSize: number;
  readonly path: readonly string[];
  readonly oldRoot: string;
  readonly newRoot: string;
  readonly oldHead?: SignedTreeHeadJson;
  readonly newHead?: SignedTreeHeadJson;
}

/**
 * Builds the JSON form of an inclusion proof (shapes checked, not the proof: that is {@link checkInclusion}'s).
 * @throws AuditError `malformed`
 */
export function inclusionProofToJson(
  proof: InclusionProof,
  extra: { readonly leafHash: Uint8Array; readonly rootHash: Uint8Array; readonly entry?: AuditMessage; readonly head?: SignedTreeHead },
): InclusionProofJson {
  const p = assertObject(proof, 'proof');
  const x = assertObject(extra, 'extra');
  return {
    type: 'parley-audit-inclusion',
    leafIndex: assertSafeInt(p['leafIndex'], 'proof.leafIndex'),
    treeSize: assertSafeInt(p['treeSize'], 'proof.treeSize'),
    path: assertHashPath(p['path'], 'proof.path', MAX_PROOF_HASHES).map((h) => toHex(h)),
    leafHash: toHex(assertBytes(x['leafHash'], 'extra.leafHash', HASH_BYTES)),
    rootHash: toHex(assertBytes(x['rootHash'], 'extra.rootHash', HASH_BYTES)),
    ...(extra.entry === undefined ? {} : { entry: toHex(encodeEntry(extra.entry)) }),
    ...(extra.head === undefined ? {} : { head: treeHeadToJson(extra.head) }),
  };
}

/**
 * Builds the JSON form of a consistency proof (shapes checked, not the proof: that is {@link checkConsistency}'s).
 * @throws AuditError `malformed`
 */
export function consistencyProofToJson(
  proof: ConsistencyProof,
  extra: { readonly oldRoot: Uint8Array; readonly newRoot: Uint8Array; readonly oldHead?: SignedTreeHead; readonly newHead?: SignedTreeHead },
): ConsistencyProofJson {
  const p = assertObject(proof, 'proof');
  const x = assertObject(extra, 'extra');
  return {
    type: 'parley-audit-consistency',
    oldSize: assertSafeInt(p['oldSize'], 'proof.oldSize'),
    newSize: assertSafeInt(p['newSize'], 'proof.newSize'),
    path: assertHashPath(p['path'], 'proof.path', MAX_PROOF_HASHES).map((h) => toHex(h)),
    oldRoot: toHex(assertBytes(x['oldRoot'], 'extra.oldRoot', HASH_BYTES)),
    newRoot: toHex(assertBytes(x['newRoot'], 'extra.newRoot', HASH_BYTES)),
    ...(extra.oldHead === undefined ? {} : { oldHead: treeHeadToJson(extra.oldHead) }),
    ...(extra.newHead === undefined ? {} : { newHead: treeHeadToJson(extra.newHead) }),
  };
}

function hexField(o: Record<string, unknown>, key: string, length?: number): Uint8Array {
  const v = o[key];
  if (typeof v !== 'string') malformed(`${key} must be a hex string, got ${describe(v)}`);
  const bytes = asMalformed(key, () => fromHex(v));
  return length === undefined ? bytes : assertBytes(bytes, key, length);
}

function hexPath(o: Record<string, unknown>): Uint8Array[] {
  const path = o['path'];
  if (!Array.isArray(path)) malformed(`path must be an array of hex strings, got ${describe(path)}`);
  return path.map((h: unknown, i) => {
    if (typeof h !== 'string') malformed(`path[${i}] must be a hex string`);
    return assertBytes(asMalformed(`path[${i}]`, () => fromHex(h)), `path[${i}]`, HASH_BYTES);
  });
}

/** A parsed proof bundle (JSON from the CLI or an API). */
export type ProofBundle =
  | {
      readonly type: 'inclusion';
      readonly proof: InclusionProof;
      readonly leafHash: Uint8Array;
      readonly rootHash: Uint8Array;
      readonly entry?: AuditMessage;
      readonly head?: SignedTreeHead;
    }
  | {
      readonly type: 'consistency';
      readonly proof: ConsistencyProof;
      readonly oldRoot: Uint8Array;
      readonly newRoot: Uint8Array;
      readonly oldHead?: SignedTreeHead;
      readonly newHead?: SignedTreeHead;
    };

/**
 * Parses {@link InclusionProofJson} or {@link ConsistencyProofJson} (an object or its JSON text).
 * @throws AuditError `malformed`
 */
export function proofFromJson(json: unknown): ProofBundle {
  const value = typeof json === 'string' ? asMalformed('proof JSON', () => JSON.parse(json) as unknown) : json;
  const o = assertObject(value, 'proof');
  const int = (key: string): number => {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) malformed(`${key} must be a non-negative integer`);
    return v;
  };
  if (o['type'] === 'parley-audit-inclusion') {
    const entry = o['entry'] === undefined ? undefined : decodeEntry(hexField(o, 'entry'));
    const head = o['head'] === undefined ? undefined : treeHeadFromJson(o['head']);
    return {
      type: 'inclusion',
      proof: { leafIndex: int('leafIndex'), treeSize: int('treeSize'), path: hexPath(o) },
      leafHash: hexField(o, 'leafHash', HASH_BYTES),
      rootHash: hexField(o, 'rootHash', HASH_BYTES),
      ...(entry === undefined ? {} : { entry }),
      ...(head === undefined ? {} : { head }),
    };
  }
  if (o['type'] === 'parley-audit-consistency') {
    const oldHead = o['oldHead'] === undefined ? undefined : treeHeadFromJson(o['oldHead']);
    const newHead = o['newHead'] === undefined ? undefined : treeHeadFromJson(o['newHead']);
    return {
      type: 'consistency',
      proof: { oldSize: int('oldSize'), newSize: int('newSize'), path: hexPath(o) },
      oldRoot: hexField(o, 'oldRoot', HASH_BYTES),
      newRoot: hexField(o, 'newRoot', HASH_BYTES),
      ...(oldHead === undefined ? {} : { oldHead }),
      ...(newHead === undefined ? {} : { newHead }),
    };
  }
  return malformed("proof.type must be 'parley-audit-inclusion' or 'parley-audit-consistency'");
}
