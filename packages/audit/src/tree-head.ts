/**
 * Signed tree heads (docs/PROTOCOL.md §9.4): the writer's signed statement
 * that its log had `tree_size` entries with Merkle root `root_hash`.
 *
 *   tree_head_layout = layout('parley/v1/tree-head')
 *                        .u64(tree_size).fixed(root_hash, 32).i64(timestamp_ms).fixed(signer_key_id, 16)
 *   signature        = Ed25519(writer key, tree_head_layout)
 *
 * Inclusion and consistency proofs are checked against heads, so a third
 * party needs only the proof, the head and the writer's public key.
 */
import { layout, toHex, fromHex, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { asMalformed, assertBytes, assertCrypto, assertKeyPair, assertObject, assertSafeInt, describe, malformed } from './assert.js';
import { AuditError } from './errors.js';
import { HASH_BYTES, KEY_ID_BYTES, SIGNATURE_BYTES, WriterKeys, writerKeyId } from './entry.js';

/** Domain tag of the tree-head layout. */
export const TREE_HEAD_DOMAIN = 'parley/v1/tree-head';

/** A signed tree head. */
export interface SignedTreeHead {
  /** Number of entries the head covers. */
  readonly treeSize: number;
  /** MTH of those entries (RFC 9162 §2.1.1, BLAKE3). */
  readonly rootHash: Uint8Array;
  /** When the writer signed, ms since the Unix epoch. */
  readonly timestampMs: number;
  /** Key id of the writer key that signed. */
  readonly signerKeyId: Uint8Array;
  /** Ed25519 over the tree-head layout. */
  readonly signature: Uint8Array;
}

/** JSON form of a {@link SignedTreeHead}: byte fields as lowercase hex. */
export interface SignedTreeHeadJson {
  readonly treeSize: number;
  readonly rootHash: string;
  readonly timestampMs: number;
  readonly signerKeyId: string;
  readonly signature: string;
}

/**
 * Asserts a structurally valid signed tree head (not its signature).
 * @throws AuditError `malformed`
 */
export function assertTreeHead(value: unknown, name = 'head'): SignedTreeHead {
  const h = assertObject(value, name);
  assertSafeInt(h['treeSize'], `${name}.treeSize`);
  assertBytes(h['rootHash'], `${name}.rootHash`, HASH_BYTES);
  assertSafeInt(h['timestampMs'], `${name}.timestampMs`);
  assertBytes(h['signerKeyId'], `${name}.signerKeyId`, KEY_ID_BYTES);
  assertBytes(h['signature'], `${name}.signature`, SIGNATURE_BYTES);
  return value as SignedTreeHead;
}

/**
 * The signed bytes of a tree head.
 *
 * @param head tree size, root, timestamp and signer key id
 * @returns the tree-head layout
 * @throws AuditError `malformed`
 */
export function treeHeadLayout(head: Omit<SignedTreeHead, 'signature'>): Uint8Array {
  const h = assertObject(head, 'head');
  const treeSize = assertSafeInt(h['treeSize'], 'head.treeSize');
  const rootHash = assertBytes(h['rootHash'], 'head.rootHash', HASH_BYTES);
  const timestampMs = assertSafeInt(h['timestampMs'], 'head.timestampMs');
  const signerKeyId = assertBytes(h['signerKeyId'], 'head.signerKeyId', KEY_ID_BYTES);
  return layout(TREE_HEAD_DOMAIN).u64(treeSize).fixed(rootHash, HASH_BYTES).i64(timestampMs).fixed(signerKeyId, KEY_ID_BYTES).bytes();
}

/**
 * Signs a tree head with the writer key.
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param writer the writer's Ed25519 key pair
 * @param head tree size, root hash and timestamp
 * @returns the signed head
 * @throws AuditError `malformed`
 */
export function signTreeHead(
  crypto: ParleyCrypto,
  writer: Ed25519KeyPair,
  head: { readonly treeSize: number; readonly rootHash: Uint8Array; readonly timestampMs: number },
): SignedTreeHead {
  assertCrypto(crypto);
  assertKeyPair(writer, 'writer');
  const unsigned = { ...assertObject(head, 'head'), signerKeyId: writerKeyId(crypto, writer.publicKey) } as Omit<SignedTreeHead, 'signature'>;
  const bytes = treeHeadLayout(unsigned);
  const signature = asMalformed('tree head signature', () => crypto.ed25519.sign(bytes, writer.secretKey));
  return Object.freeze({
    treeSize: unsigned.treeSize,
    rootHash: new Uint8Array(unsigned.rootHash),
    timestampMs: unsigned.timestampMs,
    signerKeyId: unsigned.signerKeyId,
    signature,
  });
}

/**
 * Whether a head is well formed and signed by a trusted writer key. False
 * (never throws) for anything else.
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param head the head
 * @param keys trusted writer public key(s)
 * @returns true for a valid signature by a trusted key
 */
export function verifyTreeHead(crypto: ParleyCrypto, head: SignedTreeHead, keys: Uint8Array | readonly Uint8Array[] | WriterKeys): boolean {
  try {
    assertCrypto(crypto);
    const ring = WriterKeys.from(crypto, keys);
    assertTreeHead(head);
    const pk = ring.get(head.signerKeyId);
    return pk !== undefined && crypto.ed25519.verify(head.signature, treeHeadLayout(head), pk);
  } catch {
    return false;
  }
}

/**
 * Asserts a head signed by a trusted writer key.
 * @throws AuditError `malformed` for a malformed head, `bad_signature` otherwise
 */
export function assertSignedTreeHead(crypto: ParleyCrypto, head: unknown, keys: Uint8Array | readonly Uint8Array[] | WriterKeys, name = 'head'): SignedTreeHead {
  assertCrypto(crypto);
  const ring = WriterKeys.from(crypto, keys);
  const h = assertTreeHead(head, name);
  if (!verifyTreeHead(crypto, h, ring)) {
    throw new AuditError('bad_signature', `${name} is not signed by a trusted writer key (size ${h.treeSize})`);
  }
  return h;
}

/** JSON form of a head (hex bytes). */
export function treeHeadToJson(head: SignedTreeHead): SignedTreeHeadJson {
  const h = assertTreeHead(head);
  return {
    treeSize: h.treeSize,
    rootHash: toHex(h.rootHash),
    timestampMs: h.timestampMs,
    signerKeyId: toHex(h.signerKeyId),
    signature: toHex(h.signature),
  };
}

/**
 * Parses the JSON form of a head (an object, or its JSON text).
 * @throws AuditError `malformed`
 */
export function treeHeadFromJson(json: unknown): SignedTreeHead {
  let value = json;
  if (typeof json === 'string') value = asMalformed('tree head JSON', () => JSON.parse(json) as unknown);
  const o = assertObject(value, 'head');
  const hex = (key: string): Uint8Array => {
    const v = o[key];
    if (typeof v !== 'string') malformed(`head.${key} must be a hex string, got ${describe(v)}`);
    return asMalformed(`head.${key}`, () => fromHex(v));
  };
  return assertTreeHead(
    Object.freeze({
      treeSize: o['treeSize'],
      rootHash: hex('rootHash'),
      timestampMs: o['timestampMs'],
      signerKeyId: hex('signerKeyId'),
      signature: hex('signature'),
    }),
  );
}
