// Generates test/vectors/audit-v1.json, the self-generated regression vector
// for the audit layouts (docs/PROTOCOL.md §9). Run only when a layout changes
// on purpose (which is a new protocol version):
//   npx tsx --conditions=@parley/source test/vectors/generate-audit-v1.ts
import { writeFileSync } from 'node:fs';
import { createCrypto, toHex } from '@parley/crypto-core';
import { MessageType } from '@parley/proto';
import {
  AuditLog,
  encodeEntry,
  entryHash,
  entryLayout,
  leafHash,
  merkleHasher,
  RootAccumulator,
  signCheckpoint,
  treeHeadToJson,
  writerKeyId,
  type AuditStore,
} from '../../src/index.js';
import type { AuditMessage } from '@parley/proto';

const crypto = await createCrypto();
const seed = new Uint8Array(32).map((_, i) => i);
const writer = crypto.ed25519.keyPairFromSeed(seed);

// An in-memory store: the vector does not depend on a backend.
const entries: AuditMessage[] = [];
const store: AuditStore = {
  kind: 'memory',
  size: async () => entries.length,
  append: async (e) => void entries.push(e),
  readEncoded: async function* (from, to) {
    for (const e of entries.slice(from, to)) yield encodeEntry(e);
  },
  read: async function* (from, to) {
    yield* entries.slice(from, to);
  },
  close: async () => undefined,
};
const log = await AuditLog.open(crypto, { store, writer, clock: () => 1_767_225_600_000 });
const fields = [
  { messageHash: new Uint8Array(32).fill(0x11), senderId: 'planner-1', recipientId: 'coder-2', messageType: MessageType.TASK_ASSIGNMENT, outcome: 'routed', timestampMs: 1_767_225_600_001 },
  { messageHash: new Uint8Array(32).fill(0x22), senderId: 'coder-2', recipientId: 'planner-1', messageType: MessageType.UNSPECIFIED, outcome: 'queued', timestampMs: 1_767_225_600_002 },
  { messageHash: new Uint8Array(32).fill(0x33), senderId: 'gate.keeper:eu-1', recipientId: 'planner-1', messageType: MessageType.SECURITY_ALERT, outcome: 'rejected:replay', timestampMs: 1_767_225_600_003 },
];
for (const f of fields) await log.append(f);
const head = log.treeHead();
const accumulator = new RootAccumulator(merkleHasher(crypto));
for (const e of entries) accumulator.append(leafHash(crypto, e));
const checkpoint = signCheckpoint(
  crypto,
  writer,
  writerKeyId(crypto, writer.publicKey),
  { tree: accumulator, firstEntryHash: entryHash(crypto, entries[0]!), lastEntryHash: entryHash(crypto, entries[2]!), entrySigners: [writerKeyId(crypto, writer.publicKey)] },
  1_767_225_600_004,
);

const vector = {
  source:
    'Self-generated regression vector (not independent): @parley/audit test/vectors/generate-audit-v1.ts with the writer seed below. It pins the v1 byte layouts of docs/PROTOCOL.md §9; test/vectors.spec.ts rebuilds every byte by hand.',
  writer_seed: toHex(seed),
  writer_public_key: toHex(writer.publicKey),
  writer_key_id: toHex(writerKeyId(crypto, writer.publicKey)),
  entries: entries.map((e) => ({
    index: Number(e.index),
    message_hash: toHex(e.messageHash),
    sender_id: e.senderId,
    recipient_id: e.recipientId,
    timestamp_ms: Number(e.timestampMs),
    message_type: e.messageType,
    outcome: e.outcome,
    previous_hash: toHex(e.previousHash),
    layout: toHex(entryLayout(e)),
    signature: toHex(e.signature),
    entry_hash: toHex(entryHash(crypto, e)),
    leaf_hash: toHex(leafHash(crypto, e)),
    protobuf: toHex(encodeEntry(e)),
  })),
  empty_root: toHex(log.rootHash(0)),
  roots: [1, 2, 3].map((n) => toHex(log.rootHash(n))),
  inclusion_1_of_3: log.inclusionProof(1, 3).path.map((h) => toHex(h)),
  consistency_1_to_3: log.consistencyProof(1, 3).path.map((h) => toHex(h)),
  consistency_2_to_3: log.consistencyProof(2, 3).path.map((h) => toHex(h)),
  tree_head: treeHeadToJson(head),
  checkpoint: {
    tree_size: checkpoint.treeSize,
    first_entry_hash: toHex(checkpoint.firstEntryHash),
    root_hash: toHex(checkpoint.rootHash),
    last_entry_hash: toHex(checkpoint.lastEntryHash),
    timestamp_ms: checkpoint.timestampMs,
    signer_key_id: toHex(checkpoint.signerKeyId),
    entry_signers: checkpoint.entrySigners.map((k) => toHex(k)),
    peaks: checkpoint.peaks.map((p) => toHex(p)),
    signature: toHex(checkpoint.signature),
  },
};
writeFileSync(new URL('./audit-v1.json', import.meta.url), `${JSON.stringify(vector, null, 2)}\n`);
console.log('wrote audit-v1.json');
