// The chain-tampering suite, shared by the fast loop (test/chain.spec.ts: a 1,000-entry chain) and the
// test-load target (test/load/chain.spec.ts: 10,000 entries): every field of a random entry tampered,
// each named `modified` at its index. The seed is in the test names; AUDIT_TAMPER_SEED replays one.
import { AuditMessageSchema, clone, MessageType, type AuditMessage } from '@parley/proto';
import { toHex } from '@parley/crypto-core';
import { describe, expect, it } from 'vitest';
import { merkleHasher, MerkleTree, verifyChain, type BreakReason, type ChainVerification } from './internal.js';
import { buildChain, crypto, hashOf, writerA } from './fixtures.js';

export const KEYS = writerA.publicKey;

export async function verify(entries: readonly (AuditMessage | Uint8Array)[], options: Record<string, unknown> = {}): Promise<ChainVerification> {
  return verifyChain(crypto, entries, { keys: KEYS, ...options });
}

export function expectBreak(result: ChainVerification, index: number, reason: BreakReason): void {
  expect(result.ok ? 'ok' : `${result.reason}@${result.index}`, result.ok ? '' : result.detail).toBe(`${reason}@${index}`);
}

/** A seeded PRNG (mulberry32), so a failure names the seed that reproduces it. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Registers the tampering tests on a chain of `N` entries. */
export function describeTamperingAnyField(N: number): void {
  describe(`${N.toLocaleString('en')}-entry chain: tampering any field of a random entry`, () => {
    const chain = buildChain(N);
    const seed = Number(process.env['AUDIT_TAMPER_SEED'] ?? Date.now() % 1_000_000);
    const random = rng(seed);

    const flip = (b: Uint8Array): Uint8Array => {
      const c = new Uint8Array(b);
      c[Math.floor(random() * c.length)]! ^= 1 << Math.floor(random() * 8);
      return c;
    };
    // Each tamper keeps the entry well formed: only the verifier's signature check can notice it.
    const TAMPERS: Record<string, (e: AuditMessage) => void> = {
      index: (e) => void (e.index += 1n + BigInt(Math.floor(random() * 5))),
      message_hash: (e) => void (e.messageHash = flip(e.messageHash)),
      sender_id: (e) => void (e.senderId = `${e.senderId}x`),
      recipient_id: (e) => void (e.recipientId = 'mallory'),
      timestamp_ms: (e) => void (e.timestampMs -= 1n),
      message_type: (e) => void (e.messageType = e.messageType === MessageType.SECURITY_ALERT ? MessageType.UNSPECIFIED : MessageType.SECURITY_ALERT),
      outcome: (e) => void (e.outcome = e.outcome === 'routed' ? 'dropped' : 'routed'),
      previous_hash: (e) => void (e.previousHash = flip(e.previousHash)),
      signer_key_id: (e) => void (e.signerKeyId = flip(e.signerKeyId)),
      signature: (e) => void (e.signature = flip(e.signature)),
    };

    it(`verifies untouched (seed ${seed})`, async () => {
      const tree = new MerkleTree(merkleHasher(crypto));
      const result = await verify(chain, { tree });
      expect(result.ok).toBe(true);
      if (result.ok) {
        expect(result.size).toBe(N);
        expect(toHex(result.rootHash)).toBe(toHex(tree.root()));
        expect(toHex(result.lastEntryHash)).toBe(toHex(hashOf(chain[N - 1]!)));
      }
    });

    for (const [field, tamper] of Object.entries(TAMPERS)) {
      it(`${field} → modified at that index (seed ${seed})`, async () => {
        const i = Math.floor(random() * N);
        const copy = chain.slice();
        const e = clone(AuditMessageSchema, chain[i]!);
        tamper(e);
        copy[i] = e;
        const result = await verify(copy);
        expectBreak(result, i, 'modified');
      });
    }

    it('the last entry tampered → modified at N−1 (no later link vouches for it)', async () => {
      const copy = chain.slice();
      const e = clone(AuditMessageSchema, chain[N - 1]!);
      e.outcome = 'forged';
      copy[N - 1] = e;
      expectBreak(await verify(copy), N - 1, 'modified');
    });
  });
}
