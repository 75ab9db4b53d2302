/**
 * Audit entries (docs/PROTOCOL.md §9.1–9.2): the signed entry layout, the entry
 * hash that links the chain, the Merkle leaf, and the rules every stored
 * `AuditMessage` (proto/parley/v1/audit.proto) must satisfy.
 *
 *   entry_layout = layout('parley/v1/audit-entry')
 *                    .u64(index).fixed(message_hash, 32).str(sender_id).str(recipient_id)
 *                    .i64(timestamp_ms).u32(message_type).str(outcome)
 *                    .fixed(previous_hash, 32).fixed(signer_key_id, 16)
 *   signature    = Ed25519(writer key, entry_layout)
 *   entry_hash   = BLAKE3(layout('parley/v1/audit-entry-hash').var(entry_layout).fixed(signature, 64))
 *   leaf_data    = var(entry_layout) ‖ fixed64(signature)         (RFC 9162 leaf input)
 *   leaf_hash    = BLAKE3(0x00 ‖ leaf_data)
 *
 * Nothing here hashes or signs protobuf bytes: the layout is rebuilt from the
 * decoded fields, so any protobuf encoder may store the entries.
 */
import { fromBinary, toBinary, create, AuditMessageSchema, MessageType, type AuditMessage } from '@parley/proto';
import { layout, toHex, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { AGENT_ID_PATTERN, keyId as identityKeyId } from '@parley/identity';
import { asMalformed, assertBytes, assertCrypto, assertIntLike, assertKeyPair, assertObject, describe, malformed } from './assert.js';

/** Domain tag of the signed entry layout. */
export const ENTRY_DOMAIN = 'parley/v1/audit-entry';
/** Domain tag of the entry-hash layout (the chain link). */
export const ENTRY_HASH_DOMAIN = 'parley/v1/audit-entry-hash';
/** BLAKE3 output length, and the length of message_hash and previous_hash. */
export const HASH_BYTES = 32;
/** Length of signer_key_id (docs/PROTOCOL.md §3.1). */
export const KEY_ID_BYTES = 16;
/** Length of an Ed25519 signature. */
export const SIGNATURE_BYTES = 64;
/** Length of an Ed25519 public key. */
export const PUBLIC_KEY_BYTES = 32;
/** `outcome`: 1..64 bytes of ASCII `[a-z0-9._:-]`. */
export const OUTCOME_PATTERN = /^[a-z0-9._:-]{1,64}$/;
/**
 * Largest protobuf encoding of an entry that a store accepts. The largest valid
 * entry (two 128-byte agent ids, a 64-byte outcome) encodes to about 500 bytes.
 */
export const MAX_ENTRY_BYTES = 1024;
/** previous_hash of entry 0. */
export const ZERO_HASH: Uint8Array = new Uint8Array(HASH_BYTES);

const MESSAGE_TYPES: ReadonlySet<number> = new Set(
  Object.values(MessageType).filter((v): v is number => typeof v === 'number'),
);
const MAX_U53 = BigInt(Number.MAX_SAFE_INTEGER);

/** What a writer supplies for one entry; index, previous_hash, key id and signature are the writer's. */
export interface AuditEntryFields {
  /** BLAKE3 message hash of the audited envelope (docs/PROTOCOL.md §6.6), 32 bytes. */
  readonly messageHash: Uint8Array;
  /** AgentId of the envelope's sender. */
  readonly senderId: string;
  /** AgentId of the envelope's recipient. */
  readonly recipientId: string;
  /** MessageType as seen by the writer; `UNSPECIFIED` when it cannot see it (a relay). */
  readonly messageType: MessageType;
  /** What happened, e.g. `routed`, `queued`, `rejected:replay`: 1..64 bytes of `[a-z0-9._:-]`. */
  readonly outcome: string;
  /** Milliseconds since the Unix epoch, 0..2^53−1; the writer's clock when omitted. */
  readonly timestampMs?: number | bigint;
}

/** The fields {@link signEntry} needs: the entry fields plus its place in the chain. */
export interface UnsignedEntry extends AuditEntryFields {
  readonly index: number | bigint;
  readonly timestampMs: number | bigint;
  readonly previousHash: Uint8Array;
}

/**
 * Why `entry` is not a well-formed v1 AuditMessage, or `undefined` when it is.
 * Checks types, lengths, the agent-id and outcome patterns, the MessageType
 * range and the absence of protobuf fields v1 does not define. Never throws.
 *
 * @param entry anything
 * @returns a description of the first problem (field name and rule, never contents), or undefined
 */
export function entryProblem(entry: unknown): string | undefined {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return `entry must be an AuditMessage, got ${describe(entry)}`;
  const e = entry as Partial<Record<keyof AuditMessage, unknown>> & { $unknown?: unknown };
  if (typeof e.index !== 'bigint' || e.index < 0n || e.index > MAX_U53) return 'index must be a bigint in 0..2^53-1';
  if (!isBytes(e.messageHash, HASH_BYTES)) return `message_hash must be ${HASH_BYTES} bytes`;
  if (typeof e.senderId !== 'string' || !AGENT_ID_PATTERN.test(e.senderId)) return 'sender_id must be an agent id';
  if (typeof e.recipientId !== 'string' || !AGENT_ID_PATTERN.test(e.recipientId)) return 'recipient_id must be an agent id';
  if (typeof e.timestampMs !== 'bigint' || e.timestampMs < 0n || e.timestampMs > MAX_U53) return 'timestamp_ms must be a bigint in 0..2^53-1';
  if (typeof e.messageType !== 'number' || !MESSAGE_TYPES.has(e.messageType)) return 'message_type must be a defined MessageType';
  if (typeof e.outcome !== 'string' || !OUTCOME_PATTERN.test(e.outcome)) return 'outcome must be 1..64 chars of [a-z0-9._:-]';
  if (!isBytes(e.previousHash, HASH_BYTES)) return `previous_hash must be ${HASH_BYTES} bytes`;
  if (!isBytes(e.signerKeyId, KEY_ID_BYTES)) return `signer_key_id must be ${KEY_ID_BYTES} bytes`;
  if (!isBytes(e.signature, SIGNATURE_BYTES)) return `signature must be ${SIGNATURE_BYTES} bytes`;
  if (Array.isArray(e.$unknown) && e.$unknown.length > 0) return 'entry carries fields that version 1 does not define';
  return undefined;
}

/**
 * Asserts a well-formed v1 AuditMessage (see {@link entryProblem}).
 *
 * @param entry the candidate
 * @param name parameter name for the error message
 * @returns `entry`
 * @throws AuditError `malformed`
 */
export function assertEntry(entry: unknown, name = 'entry'): AuditMessage {
  const problem = entryProblem(entry);
  if (problem !== undefined) malformed(`${name}: ${problem}`);
  return entry as AuditMessage;
}

/**
 * The signed entry layout (docs/PROTOCOL.md §9.1).
 *
 * @param entry a well-formed AuditMessage (its signature is not part of the layout)
 * @returns the bytes the writer signs
 * @throws AuditError `malformed`
 * @example
 * crypto.ed25519.verify(entry.signature, entryLayout(entry), writerPublicKey)
 */
export function entryLayout(entry: AuditMessage): Uint8Array {
  assertEntry(entry);
  return layoutOf(entry);
}

/**
 * The entry hash: the chain link that the next entry's previous_hash carries.
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param entry a well-formed, signed AuditMessage
 * @returns 32 bytes: BLAKE3(layout('parley/v1/audit-entry-hash').var(entry_layout).fixed(signature, 64))
 * @throws AuditError `malformed`
 */
export function entryHash(crypto: ParleyCrypto, entry: AuditMessage): Uint8Array {
  assertCrypto(crypto);
  assertEntry(entry);
  return digestEntry(crypto, entry).entryHash;
}

/**
 * The RFC 9162 leaf input of an entry: `var(entry_layout) ‖ fixed64(signature)`.
 *
 * @param entry a well-formed, signed AuditMessage
 * @returns the leaf data (hash it with {@link leafHash})
 * @throws AuditError `malformed`
 */
export function leafData(entry: AuditMessage): Uint8Array {
  assertEntry(entry);
  const body = layoutOf(entry);
  const out = new Uint8Array(4 + body.length + SIGNATURE_BYTES);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, 4);
  out.set(entry.signature, 4 + body.length);
  return out;
}

/**
 * The Merkle leaf hash of an entry: BLAKE3(0x00 ‖ leaf_data) (RFC 9162 §2.1.1).
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param entry a well-formed, signed AuditMessage
 * @returns 32 bytes
 * @throws AuditError `malformed`
 */
export function leafHash(crypto: ParleyCrypto, entry: AuditMessage): Uint8Array {
  assertCrypto(crypto);
  assertEntry(entry);
  return digestEntry(crypto, entry).leafHash;
}

/** Layout, entry hash and leaf hash of one entry, computed from one layout. */
export interface EntryDigest {
  readonly layout: Uint8Array;
  readonly entryHash: Uint8Array;
  readonly leafHash: Uint8Array;
}

/** str('parley/v1/audit-entry-hash'): the fixed prefix of the entry-hash layout. */
const ENTRY_HASH_PREFIX = layout(ENTRY_HASH_DOMAIN).bytes();

/**
 * Internal fast path (the entry must already be checked): builds the layout
 * once and hashes both `prefix ‖ var(layout) ‖ sig` and `0x00 ‖ var(layout) ‖ sig`
 * from one buffer. Equivalence with the layout() form is pinned by a test.
 */
export function digestEntry(crypto: ParleyCrypto, entry: AuditMessage): EntryDigest {
  return digestLayout(crypto, layoutOf(entry), entry.signature);
}

/** Internal: the digest of an already-built layout and its signature. */
function digestLayout(crypto: ParleyCrypto, body: Uint8Array, signature: Uint8Array): EntryDigest {
  const p = ENTRY_HASH_PREFIX.length;
  const buf = new Uint8Array(p + 4 + body.length + SIGNATURE_BYTES);
  buf.set(ENTRY_HASH_PREFIX, 0);
  new DataView(buf.buffer).setUint32(p, body.length, false);
  buf.set(body, p + 4);
  buf.set(signature, p + 4 + body.length);
  const hashOfEntry = crypto.blake3(buf);
  buf[p - 1] = 0x00; // RFC 9162 leaf prefix, directly before var(layout)
  const hashOfLeaf = crypto.blake3(buf.subarray(p - 1));
  return { layout: body, entryHash: hashOfEntry, leafHash: hashOfLeaf };
}

function layoutOf(e: AuditMessage): Uint8Array {
  return layout(ENTRY_DOMAIN)
    .u64(e.index)
    .fixed(e.messageHash, HASH_BYTES, 'message_hash')
    .str(e.senderId)
    .str(e.recipientId)
    .i64(e.timestampMs)
    .u32(e.messageType)
    .str(e.outcome)
    .fixed(e.previousHash, HASH_BYTES, 'previous_hash')
    .fixed(e.signerKeyId, KEY_ID_BYTES, 'signer_key_id')
    .bytes();
}

/**
 * The 16-byte key id of a writer's Ed25519 public key (docs/PROTOCOL.md §3.1).
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param publicKey 32 bytes
 * @returns first 16 bytes of BLAKE3(layout('parley/v1/key-id').fixed(publicKey, 32))
 * @throws AuditError `malformed`
 */
export function writerKeyId(crypto: ParleyCrypto, publicKey: Uint8Array): Uint8Array {
  assertCrypto(crypto);
  assertBytes(publicKey, 'publicKey', PUBLIC_KEY_BYTES);
  return asMalformed('key id', () => identityKeyId(crypto, publicKey));
}

/**
 * Validates the writer-supplied fields of an entry.
 *
 * @param fields the candidate
 * @param name parameter name for the error message
 * @returns `fields`
 * @throws AuditError `malformed`
 */
export function assertEntryFields(fields: unknown, name = 'fields'): AuditEntryFields {
  const f = assertObject(fields, name);
  assertBytes(f['messageHash'], `${name}.messageHash`, HASH_BYTES);
  for (const key of ['senderId', 'recipientId'] as const) {
    const v = f[key];
    if (typeof v !== 'string') malformed(`${name}.${key} must be a string, got ${describe(v)}`);
    if (!AGENT_ID_PATTERN.test(v)) malformed(`${name}.${key} must be an agent id (1..128 chars of [a-z0-9._:-] starting with [a-z0-9])`);
  }
  const t = f['messageType'];
  if (typeof t !== 'number' || !MESSAGE_TYPES.has(t)) malformed(`${name}.messageType must be a defined MessageType, got ${describe(t)}`);
  const o = f['outcome'];
  if (typeof o !== 'string') malformed(`${name}.outcome must be a string, got ${describe(o)}`);
  if (!OUTCOME_PATTERN.test(o)) malformed(`${name}.outcome must be 1..64 chars of [a-z0-9._:-] (got ${o.length} chars)`);
  if (f['timestampMs'] !== undefined) assertIntLike(f['timestampMs'], `${name}.timestampMs`);
  return fields as AuditEntryFields;
}

/**
 * Builds and signs one entry. Writers normally call `AuditLog.append`, which
 * fills in index and previous_hash; this is the building block (and what a
 * writer in another language reproduces).
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param writer the writer's Ed25519 key pair
 * @param fields entry fields, index, timestamp and previous_hash
 * @returns a signed AuditMessage
 * @throws AuditError `malformed` on any invalid field or key
 */
export function signEntry(crypto: ParleyCrypto, writer: Ed25519KeyPair, fields: UnsignedEntry): AuditMessage {
  assertCrypto(crypto);
  assertKeyPair(writer, 'writer');
  assertEntryFields(fields);
  const index = assertIntLike(fields.index, 'fields.index');
  const timestampMs = assertIntLike(fields.timestampMs, 'fields.timestampMs');
  assertBytes(fields.previousHash, 'fields.previousHash', HASH_BYTES);
  return signChecked(crypto, writer, writerKeyId(crypto, writer.publicKey), fields, index, timestampMs).entry;
}

/** Internal: signs fields that are already checked, with a precomputed key id; returns the digest too. */
export function signChecked(
  crypto: ParleyCrypto,
  writer: Ed25519KeyPair,
  signerKeyId: Uint8Array,
  fields: AuditEntryFields & { readonly previousHash: Uint8Array },
  index: number,
  timestampMs: number,
): { entry: AuditMessage; digest: EntryDigest } {
  const entry = create(AuditMessageSchema, {
    index: BigInt(index),
    messageHash: new Uint8Array(fields.messageHash),
    senderId: fields.senderId,
    recipientId: fields.recipientId,
    timestampMs: BigInt(timestampMs),
    messageType: fields.messageType,
    outcome: fields.outcome,
    previousHash: new Uint8Array(fields.previousHash),
    signerKeyId: new Uint8Array(signerKeyId),
  });
  const body = layoutOf(entry);
  entry.signature = asMalformed('entry signature', () => crypto.ed25519.sign(body, writer.secretKey));
  return { entry, digest: digestLayout(crypto, body, entry.signature) };
}

/**
 * Trusted writer public keys, indexed by key id. A verifier holds one per
 * writer key it accepts (several after a writer key rotation, or one per
 * gateway instance sharing a PostgreSQL log).
 */
export class WriterKeys {
  readonly #byId = new Map<string, Uint8Array>();

  private constructor() {}

  /**
   * @param crypto ParleyCrypto from `createCrypto()`
   * @param keys one 32-byte Ed25519 public key, or a non-empty list of them
   * @returns the key set
   * @throws AuditError `malformed`
   */
  static from(crypto: ParleyCrypto, keys: Uint8Array | readonly Uint8Array[] | WriterKeys): WriterKeys {
    if (keys instanceof WriterKeys) return keys;
    assertCrypto(crypto);
    const list = keys instanceof Uint8Array ? [keys] : keys;
    if (!Array.isArray(list) || list.length === 0) malformed('writer keys must be a public key or a non-empty array of them');
    const out = new WriterKeys();
    list.forEach((k: unknown, i) => {
      const pk = new Uint8Array(assertBytes(k, `keys[${i}]`, PUBLIC_KEY_BYTES));
      out.#byId.set(toHex(writerKeyId(crypto, pk)), pk);
    });
    return out;
  }

  /** The public key with this key id, if trusted. */
  get(keyId: Uint8Array): Uint8Array | undefined {
    return keyId instanceof Uint8Array && keyId.length === KEY_ID_BYTES ? this.#byId.get(toHex(keyId)) : undefined;
  }

  /** Number of keys. */
  get size(): number {
    return this.#byId.size;
  }
}

/**
 * Whether an entry's signature verifies under the trusted key its
 * signer_key_id names. False (never throws) for a malformed entry or an
 * untrusted key id.
 *
 * @param crypto ParleyCrypto from `createCrypto()`
 * @param entry the entry
 * @param keys trusted writer keys
 * @returns true only for a valid signature by a trusted key
 */
export function verifyEntrySignature(crypto: ParleyCrypto, entry: AuditMessage, keys: WriterKeys): boolean {
  if (entryProblem(entry) !== undefined || !(keys instanceof WriterKeys)) return false;
  const pk = keys.get(entry.signerKeyId);
  return pk !== undefined && crypto.ed25519.verify(entry.signature, layoutOf(entry), pk);
}

/**
 * Protobuf encoding of a well-formed entry (what the stores keep).
 *
 * @param entry the entry
 * @returns protobuf bytes, at most {@link MAX_ENTRY_BYTES}
 * @throws AuditError `malformed`
 */
export function encodeEntry(entry: AuditMessage): Uint8Array {
  assertEntry(entry);
  const bytes = asMalformed('entry encoding', () => toBinary(AuditMessageSchema, entry));
  if (bytes.length > MAX_ENTRY_BYTES) malformed(`encoded entry is ${bytes.length} bytes, more than ${MAX_ENTRY_BYTES}`);
  return bytes;
}

/**
 * Parses and checks an entry's protobuf bytes (well-formedness only; the
 * signature and the chain are the verifier's).
 *
 * @param bytes protobuf encoding of an AuditMessage
 * @returns the entry
 * @throws AuditError `malformed` when the bytes exceed {@link MAX_ENTRY_BYTES}, do not parse, or break a field rule
 */
export function decodeEntry(bytes: Uint8Array): AuditMessage {
  assertBytes(bytes, 'bytes');
  if (bytes.length > MAX_ENTRY_BYTES) malformed(`entry is ${bytes.length} bytes, more than ${MAX_ENTRY_BYTES}`);
  const entry = asMalformed('entry decoding', () => fromBinary(AuditMessageSchema, bytes));
  return assertEntry(entry);
}

function isBytes(value: unknown, length: number): value is Uint8Array {
  return value instanceof Uint8Array && value.length === length;
}
