// The chain verifier: tampering of every field at a random index of a
// 1,000-entry chain (10,000 in test/load/chain.spec.ts), each structural break (removed, inserted, reordered,
// bad signature, bad link), signed-head checks, and a property test that the
// verifier always names the first position where a tampered log differs.
import { AuditMessageSchema, clone, toBinary, type AuditMessage } from '@parley/proto';
import { layout, toHex } from '@parley/crypto-core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AuditError,
  chainError,
  digestEntryForTest,
  encodeEntry,
  merkleHasher,
  MerkleTree,
  signEntry,
  signTreeHead,
  verifyChain,
  type BreakReason,
} from './internal.js';
import { describeTamperingAnyField, expectBreak, KEYS, verify } from './chain-tampering.js';
import { buildChain, crypto, extendChain, fieldsFor, hashOf, writerA, writerB, WRONG } from './fixtures.js';

// The 10,000-entry chain is test/load/chain.spec.ts's; the same suite here on 1,000 entries.
describeTamperingAnyField(1000);

describe('structural breaks', () => {
  const chain = buildChain(40);

  it('a removed entry → removed at its index', async () => {
    const copy = chain.filter((_, i) => i !== 17);
    const result = await verify(copy);
    expectBreak(result, 17, 'removed');
    expect(!result.ok && result.entryIndex).toBe(18);
  });

  it('a removed run of entries → removed at the first', async () => {
    expectBreak(await verify([...chain.slice(0, 5), ...chain.slice(12)]), 5, 'removed');
  });

  it('a removed first entry → removed at 0', async () => {
    expectBreak(await verify(chain.slice(1)), 0, 'removed');
  });

  it('a forged entry put between two → inserted', async () => {
    const forged = clone(AuditMessageSchema, chain[9]!);
    forged.outcome = 'forged';
    expectBreak(await verify([...chain.slice(0, 10), forged, ...chain.slice(10)]), 10, 'inserted');
  });

  it('an entry signed by an untrusted writer put between two → inserted', async () => {
    const rogue = signEntry(crypto, writerB, { ...fieldsFor(10), index: 10, previousHash: hashOf(chain[9]!) });
    expectBreak(await verify([...chain.slice(0, 10), rogue, ...chain.slice(10)]), 10, 'inserted');
  });

  it('a copy of an earlier entry → inserted', async () => {
    expectBreak(await verify([...chain.slice(0, 20), chain[3]!, ...chain.slice(20)]), 20, 'inserted');
  });

  it('a copy of an entry directly after itself → inserted at the copy', async () => {
    expectBreak(await verify([...chain.slice(0, 21), chain[20]!, ...chain.slice(21)]), 21, 'inserted');
  });

  it('a copy of a later entry placed early → inserted', async () => {
    expectBreak(await verify([...chain.slice(0, 8), chain[30]!, ...chain.slice(8)]), 8, 'inserted');
  });

  it('two adjacent entries swapped → reordered at the first', async () => {
    const copy = chain.slice();
    [copy[11], copy[12]] = [copy[12]!, copy[11]!];
    expectBreak(await verify(copy), 11, 'reordered');
  });

  it('an entry moved later → reordered where it is missing', async () => {
    const copy = chain.slice();
    const [moved] = copy.splice(6, 1);
    copy.splice(25, 0, moved!);
    expectBreak(await verify(copy), 6, 'reordered');
  });

  it('an entry moved earlier → reordered where it lands', async () => {
    const copy = chain.slice();
    const [moved] = copy.splice(30, 1);
    copy.splice(4, 0, moved!);
    expectBreak(await verify(copy), 4, 'reordered');
  });

  it('content the chain committed to but signed with the wrong key → bad_signature', async () => {
    // The writer (by mistake, or a rotated-out key) signed entry 15 with key B but stamped key A's id;
    // entry 16, properly signed, links to exactly those bytes.
    const head = chain.slice(0, 15);
    const bad = signEntry(crypto, writerB, { ...fieldsFor(15), index: 15, previousHash: hashOf(chain[14]!) });
    bad.signerKeyId = chain[14]!.signerKeyId;
    const rest = extendChain(10, 16, hashOf(bad));
    expectBreak(await verify([...head, bad, ...rest]), 15, 'bad_signature');
  });

  it('an entry by a key nobody trusts, vouched for by the next → bad_signature', async () => {
    const bad = signEntry(crypto, writerB, { ...fieldsFor(15), index: 15, previousHash: hashOf(chain[14]!) });
    const rest = extendChain(3, 16, hashOf(bad));
    const result = await verify([...chain.slice(0, 15), bad, ...rest]);
    expectBreak(result, 15, 'bad_signature');
    expect(!result.ok && result.detail).toMatch(/no trusted writer key/);
  });

  it('a forked writer (two authentic entries 3) → bad_link at the entry that links to the other', async () => {
    const fork = signEntry(crypto, writerA, { ...fieldsFor(3), outcome: 'queued', index: 3, previousHash: hashOf(chain[2]!) });
    expectBreak(await verify([...chain.slice(0, 3), fork, ...chain.slice(4)]), 4, 'bad_link');
  });

  it('an authentic entry with a wrong previous_hash → bad_link', async () => {
    const wrongLink = signEntry(crypto, writerA, { ...fieldsFor(5), index: 5, previousHash: hashOf(chain[3]!) });
    expectBreak(await verify([...chain.slice(0, 5), wrongLink]), 5, 'bad_link');
  });

  it('entry 0 whose previous_hash is not zero → bad_link at 0', async () => {
    const e0 = signEntry(crypto, writerA, { ...fieldsFor(0), index: 0, previousHash: new Uint8Array(32).fill(1) });
    expectBreak(await verify([e0]), 0, 'bad_link');
  });

  it('a malformed entry → malformed at its position', async () => {
    const bad = clone(AuditMessageSchema, chain[7]!);
    bad.senderId = 'Not An Agent';
    expectBreak(await verify([...chain.slice(0, 7), bad]), 7, 'malformed');
    expectBreak(await verify([...chain.slice(0, 7).map((e) => encodeEntry(e)), new Uint8Array([0xff, 0xff])]), 7, 'malformed');
    expectBreak(await verify([...chain.slice(0, 2), 'text' as unknown as Uint8Array]), 2, 'malformed');
  });

  it('a source that fails with malformed → malformed there; other failures propagate', async () => {
    async function* failing(code: 'malformed' | 'storage_failure'): AsyncIterable<AuditMessage> {
      yield chain[0]!;
      yield chain[1]!;
      throw new AuditError(code, 'record 2 fails its checksum');
    }
    expectBreak(await verifyChain(crypto, failing('malformed'), { keys: KEYS }), 2, 'malformed');
    await expect(verifyChain(crypto, failing('storage_failure'), { keys: KEYS })).rejects.toMatchObject({ code: 'storage_failure' });
  });

  it('protobuf bytes and messages verify alike; an empty log is valid', async () => {
    const a = await verify(chain);
    const b = await verify(chain.map((e) => encodeEntry(e)));
    expect(a.ok && b.ok && toHex(a.rootHash) === toHex(b.rootHash)).toBe(true);
    const empty = await verify([]);
    expect(empty.ok && toHex(empty.rootHash)).toBe(toHex(crypto.blake3(new Uint8Array(0))));
  });

  it('several trusted writer keys (rotation)', async () => {
    const first = buildChain(10);
    const second = extendChain(10, 10, hashOf(first[9]!), writerB);
    expect((await verifyChain(crypto, [...first, ...second], { keys: [writerA.publicKey, writerB.publicKey] })).ok).toBe(true);
    expectBreak(await verify([...first, ...second]), 10, 'modified');
  });

  it('chainError turns a break into an AuditError with the reason as code', async () => {
    const result = await verify(chain.slice(1));
    expect(!result.ok && chainError(result)).toMatchObject({ code: 'removed', name: 'AuditError' });
  });
});

describe('signed tree heads', () => {
  const chain = buildChain(30);
  const rootOf = (n: number): Uint8Array => {
    const tree = new MerkleTree(merkleHasher(crypto));
    for (const e of chain.slice(0, n)) tree.append(digestEntryForTest(e).leafHash);
    return tree.root();
  };
  const headFor = (n: number, rootHash = rootOf(n)) => signTreeHead(crypto, writerA, { treeSize: n, rootHash, timestampMs: 1 });

  it('a matching head (for the whole log or a prefix) verifies', async () => {
    expect((await verify(chain, { head: headFor(30) })).ok).toBe(true);
    expect((await verify(chain, { head: headFor(12) })).ok).toBe(true);
    expect((await verify([], { head: headFor(0) })).ok).toBe(true);
  });

  it('a cut tail → removed at the new end', async () => {
    expectBreak(await verify(chain.slice(0, 25), { head: headFor(30) }), 25, 'removed');
  });

  it('a rewritten history that still chains → head_mismatch', async () => {
    // The writer re-signed a different log of the same length.
    const other = extendChain(30, 0).map((e) => clone(AuditMessageSchema, e));
    const rewritten = [...chain.slice(0, 20)];
    let prev = hashOf(rewritten[19]!);
    for (let i = 20; i < 30; i++) {
      const e = signEntry(crypto, writerA, { ...fieldsFor(i), outcome: 'rewritten', index: i, previousHash: prev });
      prev = hashOf(e);
      rewritten.push(e);
    }
    expect(other.length).toBe(30);
    expectBreak(await verify(rewritten, { head: headFor(30) }), 30, 'head_mismatch');
  });

  it('a head not signed by a trusted key is refused up front', async () => {
    const forged = signTreeHead(crypto, writerB, { treeSize: 30, rootHash: rootOf(30), timestampMs: 1 });
    await expect(verify(chain, { head: forged })).rejects.toMatchObject({ code: 'bad_signature' });
    const tampered = { ...headFor(30), treeSize: 29 };
    await expect(verify(chain, { head: tampered })).rejects.toMatchObject({ code: 'bad_signature' });
  });
});

describe('verifyChain input validation', () => {
  it('wrong options and sources throw AuditError malformed, never a TypeError', async () => {
    for (const bad of WRONG) {
      await expect(verifyChain(crypto, [], bad as never)).rejects.toMatchObject({ code: 'malformed' });
      await expect(verifyChain(crypto, [], { keys: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      if (bad !== undefined) await expect(verifyChain(crypto, [], { keys: KEYS, head: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      if (bad !== undefined) await expect(verifyChain(crypto, [], { keys: KEYS, tree: bad } as never)).rejects.toMatchObject({ code: 'malformed' });
      await expect(verifyChain(bad as never, [], { keys: KEYS })).rejects.toMatchObject({ code: 'malformed' });
      if (typeof bad !== 'string' && !Array.isArray(bad) && !(bad instanceof Uint8Array)) {
        await expect(verifyChain(crypto, bad as never, { keys: KEYS })).rejects.toMatchObject({ code: 'malformed' });
      }
    }
  });
});

describe('property: the verifier names the first position where a tampered log differs', () => {
  const base = buildChain(40);
  const encoded = base.map((e) => encodeEntry(e));
  const same = (a: Uint8Array | undefined, b: Uint8Array | undefined): boolean =>
    a !== undefined && b !== undefined && toHex(a) === toHex(b);

  type Op =
    | { kind: 'delete'; i: number }
    | { kind: 'swap'; i: number; j: number }
    | { kind: 'copy'; from: number; to: number }
    | { kind: 'flip'; i: number; byte: number; bit: number };

  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant('delete' as const), i: fc.nat(39) }),
    fc.record({ kind: fc.constant('swap' as const), i: fc.nat(39), j: fc.nat(39) }).filter((o) => o.i !== o.j),
    fc.record({ kind: fc.constant('copy' as const), from: fc.nat(39), to: fc.nat(40) }),
    fc.record({ kind: fc.constant('flip' as const), i: fc.nat(39), byte: fc.nat(600), bit: fc.nat(7) }),
  );

  it('for deletes, swaps, copies and bit flips', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 40 }), op, async (n, o) => {
        const log = encoded.slice(0, n);
        let expected: BreakReason[];
        if (o.kind === 'delete') {
          if (o.i >= n) return;
          log.splice(o.i, 1);
          expected = ['removed'];
        } else if (o.kind === 'swap') {
          if (o.i >= n || o.j >= n) return;
          [log[o.i], log[o.j]] = [log[o.j]!, log[o.i]!];
          expected = ['reordered'];
        } else if (o.kind === 'copy') {
          if (o.from >= n || o.to > n) return;
          log.splice(o.to, 0, log[o.from]!);
          expected = ['inserted'];
        } else {
          if (o.i >= n) return;
          const rec = new Uint8Array(log[o.i]!);
          rec[o.byte % rec.length]! ^= 1 << o.bit;
          log[o.i] = rec;
          expected = ['modified', 'malformed'];
        }
        // First position whose entry (canonically re-encoded) differs from the original log.
        const canonical = (b: Uint8Array): Uint8Array | undefined => {
          try {
            return toBinary(AuditMessageSchema, digestEntryForTest.decode(b));
          } catch {
            return undefined;
          }
        };
        let first = log.findIndex((b, i) => !same(canonical(b), encoded[i]));
        if (first === -1 && log.length > n) first = n;
        const result = await verify(log);
        if (first === -1) {
          expect(result.ok).toBe(true); // a prefix of the original (e.g. the last entry deleted)
        } else {
          expect(result.ok).toBe(false);
          if (!result.ok) {
            expect(result.index).toBe(first);
            expect(expected).toContain(result.reason);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('entry layouts are the PROTOCOL §9 definitions', () => {
  it('digest fast path equals the layout() spelling of entry hash and leaf hash', () => {
    for (const e of buildChain(5)) {
      const body = layout('parley/v1/audit-entry')
        .u64(e.index)
        .fixed(e.messageHash, 32)
        .str(e.senderId)
        .str(e.recipientId)
        .i64(e.timestampMs)
        .u32(e.messageType)
        .str(e.outcome)
        .fixed(e.previousHash, 32)
        .fixed(e.signerKeyId, 16)
        .bytes();
      const d = digestEntryForTest(e);
      expect(toHex(d.layout)).toBe(toHex(body));
      expect(toHex(d.entryHash)).toBe(toHex(crypto.blake3(layout('parley/v1/audit-entry-hash').var(body).fixed(e.signature, 64).bytes())));
      const leaf = new Uint8Array(1 + 4 + body.length + 64);
      new DataView(leaf.buffer).setUint32(1, body.length);
      leaf.set(body, 5);
      leaf.set(e.signature, 5 + body.length);
      expect(toHex(d.leafHash)).toBe(toHex(crypto.blake3(leaf)));
      expect(crypto.ed25519.verify(e.signature, body, writerA.publicKey)).toBe(true);
    }
  });
});
