// The audit regression vector (self-generated; see its "source" field): every
// byte rebuilt here by hand from PROTOCOL §2 / §9 — not through layout() —
// so a change to any layout, hash input or encoding fails this test.
import { readFileSync } from 'node:fs';
import { concatBytes, fromHex, i64be, toHex, u32be, u64be, utf8 } from '@parley/crypto-core';
import { describe, expect, it } from 'vitest';
import { WriterKeys, checkpointLayout, decodeEntry, encodeEntry, merkleHasher, openCheckpoint, treeHeadFromJson, verifyTreeHead } from '../src/index.js';
import { crypto } from './fixtures.js';

interface EntryVector {
  index: number;
  message_hash: string;
  sender_id: string;
  recipient_id: string;
  timestamp_ms: number;
  message_type: number;
  outcome: string;
  previous_hash: string;
  layout: string;
  signature: string;
  entry_hash: string;
  leaf_hash: string;
  protobuf: string;
}
interface AuditVector {
  writer_seed: string;
  writer_public_key: string;
  writer_key_id: string;
  entries: EntryVector[];
  empty_root: string;
  roots: string[];
  inclusion_1_of_3: string[];
  consistency_1_to_3: string[];
  consistency_2_to_3: string[];
  tree_head: { treeSize: number; rootHash: string; timestampMs: number; signerKeyId: string; signature: string };
  checkpoint: { tree_size: number; first_entry_hash: string; root_hash: string; last_entry_hash: string; timestamp_ms: number; signer_key_id: string; entry_signers: string[]; peaks: string[]; signature: string };
}

const V = JSON.parse(readFileSync(new URL('./vectors/audit-v1.json', import.meta.url), 'utf8')) as AuditVector;
const str = (s: string) => concatBytes(u32be(utf8(s).length), utf8(s));
const h = (...parts: Uint8Array[]) => crypto.blake3(concatBytes(...parts));
const node = (l: Uint8Array, r: Uint8Array) => h(Uint8Array.of(1), l, r);

describe('audit v1 regression vector', () => {
  it('writer key and key id (PROTOCOL §3.1)', () => {
    const kp = crypto.ed25519.keyPairFromSeed(fromHex(V.writer_seed));
    expect(toHex(kp.publicKey)).toBe(V.writer_public_key);
    expect(toHex(h(str('parley/v1/key-id'), kp.publicKey).subarray(0, 16))).toBe(V.writer_key_id);
  });

  it('entry layout, signature, entry hash, leaf hash and chain links (§9.1–9.3)', () => {
    let prev: Uint8Array = new Uint8Array(32);
    const pk = fromHex(V.writer_public_key);
    for (const e of V.entries) {
      expect(e.previous_hash).toBe(toHex(prev));
      const body = concatBytes(
        str('parley/v1/audit-entry'),
        u64be(e.index),
        fromHex(e.message_hash),
        str(e.sender_id),
        str(e.recipient_id),
        i64be(e.timestamp_ms),
        u32be(e.message_type),
        str(e.outcome),
        prev,
        fromHex(V.writer_key_id),
      );
      expect(toHex(body)).toBe(e.layout);
      const sig = fromHex(e.signature);
      expect(crypto.ed25519.verify(sig, body, pk)).toBe(true);
      const tail = concatBytes(u32be(body.length), body, sig);
      expect(toHex(h(str('parley/v1/audit-entry-hash'), tail))).toBe(e.entry_hash);
      expect(toHex(h(Uint8Array.of(0), tail))).toBe(e.leaf_hash);
      const decoded = decodeEntry(fromHex(e.protobuf));
      expect(toHex(encodeEntry(decoded))).toBe(e.protobuf);
      expect(decoded.outcome).toBe(e.outcome);
      prev = fromHex(e.entry_hash);
    }
  });

  it('Merkle roots and proofs (§9.3, RFC 9162)', () => {
    const [l0, l1, l2] = V.entries.map((e) => fromHex(e.leaf_hash)) as [Uint8Array, Uint8Array, Uint8Array];
    expect(V.empty_root).toBe(toHex(crypto.blake3(new Uint8Array(0))));
    expect(V.roots).toEqual([toHex(l0), toHex(node(l0, l1)), toHex(node(node(l0, l1), l2))]);
    expect(V.inclusion_1_of_3).toEqual([toHex(l0), toHex(l2)]);
    expect(V.consistency_1_to_3).toEqual([toHex(l1), toHex(l2)]);
    expect(V.consistency_2_to_3).toEqual([toHex(l2)]);
  });

  it('signed tree head (§9.4)', () => {
    const t = V.tree_head;
    const body = concatBytes(str('parley/v1/tree-head'), u64be(t.treeSize), fromHex(t.rootHash), i64be(t.timestampMs), fromHex(t.signerKeyId));
    expect(crypto.ed25519.verify(fromHex(t.signature), body, fromHex(V.writer_public_key))).toBe(true);
    expect(t.rootHash).toBe(V.roots[2]);
    expect(verifyTreeHead(crypto, treeHeadFromJson(t), fromHex(V.writer_public_key))).toBe(true);
  });

  it('checkpoint (§9.6)', () => {
    const c = V.checkpoint;
    const [l0, l1, l2] = V.entries.map((e) => fromHex(e.leaf_hash)) as [Uint8Array, Uint8Array, Uint8Array];
    // Three leaves: the peaks are the 2-leaf subtree's root and the third leaf, largest first; they fold to the root.
    expect(c.peaks).toEqual([toHex(node(l0, l1)), toHex(l2)]);
    expect(c.root_hash).toBe(V.roots[2]);
    expect(c.last_entry_hash).toBe(V.entries[2]!.entry_hash);
    expect(c.first_entry_hash).toBe(V.entries[0]!.entry_hash);
    expect(c.entry_signers).toEqual([V.writer_key_id]);
    const body = concatBytes(
      str('parley/v1/audit-checkpoint'),
      u64be(c.tree_size),
      fromHex(c.first_entry_hash),
      fromHex(c.root_hash),
      fromHex(c.last_entry_hash),
      i64be(c.timestamp_ms),
      fromHex(c.signer_key_id),
      u32be(c.entry_signers.length),
      ...c.entry_signers.map((k) => fromHex(k)),
      u32be(c.peaks.length),
      ...c.peaks.map((p) => fromHex(p)),
    );
    expect(crypto.ed25519.verify(fromHex(c.signature), body, fromHex(V.writer_public_key))).toBe(true);
    const checkpoint = {
      treeSize: c.tree_size,
      firstEntryHash: fromHex(c.first_entry_hash),
      rootHash: fromHex(c.root_hash),
      lastEntryHash: fromHex(c.last_entry_hash),
      timestampMs: c.timestamp_ms,
      signerKeyId: fromHex(c.signer_key_id),
      entrySigners: c.entry_signers.map((k) => fromHex(k)),
      peaks: c.peaks.map((p) => fromHex(p)),
      signature: fromHex(c.signature),
    };
    expect(toHex(checkpointLayout(checkpoint))).toBe(toHex(body));
    expect(toHex(openCheckpoint(crypto, merkleHasher(crypto), WriterKeys.from(crypto, fromHex(V.writer_public_key)), checkpoint).root())).toBe(c.root_hash);
  });
});
