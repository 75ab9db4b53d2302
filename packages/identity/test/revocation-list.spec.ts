// The revocation list layouts and its follower: layouts byte for byte, and
// every way a batch can be wrong (gap, repeat, broken chain, wrong head, wrong
// registry, unknown or retired issuer, bad signature).
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { RevocationListEntrySchema, SignedRevocationHeadSchema, create, type RevocationListEntry } from '@parley/proto';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  EMPTY_CHAIN_HASH,
  MemoryRevocationSet,
  RevocationListFollower,
  TrustBundle,
  createIssuerKey,
  isIdentityError,
  revocationEntryHash,
  revocationHeadLayout,
  type IdentityErrorCode,
  type IssuerKey,
} from '../src/index.js';

describe('revocation list', () => {
  let crypto: ParleyCrypto;
  let issuer: IssuerKey;
  const registryId = new Uint8Array(16).fill(9);
  beforeAll(async () => {
    crypto = await createCrypto();
    issuer = createIssuerKey(crypto, crypto.ed25519.keyPairFromSeed(new Uint8Array(32).fill(4)));
  });

  function chain(n: number): RevocationListEntry[] {
    let prev = EMPTY_CHAIN_HASH;
    const out: RevocationListEntry[] = [];
    for (let v = 1; v <= n; v++) {
      const fields = v % 2 === 1
        ? { version: v, kind: 'agent' as const, agentId: `agent-${v}`, serial: new Uint8Array(0), reason: 1, reasonText: '', revokedAtMs: 1000 + v }
        : { version: v, kind: 'serial' as const, agentId: '', serial: new Uint8Array(16).fill(v), reason: 0, reasonText: 'why', revokedAtMs: 1000 + v };
      const entryHash = revocationEntryHash(crypto, registryId, prev, fields);
      out.push(
        create(RevocationListEntrySchema, {
          version: BigInt(v),
          subject: fields.kind === 'agent' ? { case: 'agentId', value: fields.agentId } : { case: 'serial', value: fields.serial },
          reason: fields.reason,
          reasonText: fields.reasonText,
          revokedAtMs: BigInt(fields.revokedAtMs),
          entryHash,
        }),
      );
      prev = entryHash;
    }
    return out;
  }

  function head(version: number, hash: Uint8Array, signer: IssuerKey = issuer, id = registryId, issuedAtMs = 5000) {
    const fields = { registryId: id, version: BigInt(version), headHash: hash, issuedAtMs: BigInt(issuedAtMs), issuerKeyId: signer.keyId };
    return create(SignedRevocationHeadSchema, { ...fields, signature: crypto.ed25519.sign(revocationHeadLayout(fields), signer.secretKey) });
  }

  const follower = (bundle?: TrustBundle) =>
    new RevocationListFollower(crypto, { registryId, trustBundle: bundle ?? TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]) });

  function code(fn: () => unknown): IdentityErrorCode | undefined {
    try {
      fn();
    } catch (error) {
      if (isIdentityError(error)) return error.code;
      throw error;
    }
    return undefined;
  }

  it('accepts a list in batches and heartbeats, producing identity deltas', () => {
    const entries = chain(5);
    const f = follower();
    const first = f.apply(entries.slice(0, 3), head(3, entries[2]!.entryHash));
    expect(first.version).toBe(3);
    expect(first.entries[0]).toEqual({ kind: 'agent', agentId: 'agent-1', reason: 'key_compromise', revokedAtMs: 1001 });
    expect(first.entries[1]).toMatchObject({ kind: 'serial', reason: 'why' });
    expect(f.apply([], head(3, entries[2]!.entryHash, issuer, registryId, 6000)).version).toBe(3);
    expect(f.apply(entries.slice(3), head(5, entries[4]!.entryHash, issuer, registryId, 7000)).version).toBe(5);
    expect(f.headHash).toEqual(entries[4]!.entryHash);
  });

  it('refuses gaps, repeats, broken chains, wrong heads and foreign signers, changing nothing', () => {
    const entries = chain(4);
    const f = follower();
    f.apply(entries.slice(0, 2), head(2, entries[1]!.entryHash));
    expect(code(() => f.apply(entries.slice(3), head(4, entries[3]!.entryHash)))).toBe('revocation_stale');
    expect(code(() => f.apply(entries.slice(1, 3), head(3, entries[2]!.entryHash)))).toBe('malformed');
    const broken = structuredClone(entries[2]!);
    broken.revokedAtMs += 1n;
    expect(code(() => f.apply([broken], head(3, entries[2]!.entryHash)))).toBe('malformed');
    expect(code(() => f.apply([entries[2]!], head(4, entries[2]!.entryHash)))).toBe('malformed');
    expect(code(() => f.apply([entries[2]!], head(3, entries[1]!.entryHash)))).toBe('malformed');
    expect(code(() => f.apply([entries[2]!], head(3, entries[2]!.entryHash, issuer, new Uint8Array(16))))).toBe('identity_mismatch');
    const stranger = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    expect(code(() => f.apply([entries[2]!], head(3, entries[2]!.entryHash, stranger)))).toBe('unknown_issuer');
    const forged = head(3, entries[2]!.entryHash);
    forged.signature[0]! ^= 1;
    expect(code(() => f.apply([entries[2]!], forged))).toBe('bad_signature');
    expect(code(() => f.apply([entries[2]!], undefined))).toBe('malformed');
    expect(f.version).toBe(2);
    const retired = follower(TrustBundle.from(crypto, [{ publicKey: issuer.publicKey, notAfterMs: 10 }]));
    expect(code(() => retired.apply(entries.slice(0, 1), head(1, entries[0]!.entryHash), 11))).toBe('expired');
  });

  it('takes freshness from the signed issued_at_ms: a replayed old heartbeat refreshes nothing, a future one is capped', () => {
    const entries = chain(2);
    const f = follower();
    const now = 1_000_000;
    const set = new MemoryRevocationSet({ maxAgeMs: 60_000 });
    const first = f.apply(entries.slice(0, 1), head(1, entries[0]!.entryHash, issuer, registryId, now - 10), now);
    expect(first.issuedAtMs).toBe(now - 10);
    set.apply(first.entries, first.version, first.issuedAtMs);
    const heartbeat = head(1, entries[0]!.entryHash, issuer, registryId, now);
    expect(f.apply([], heartbeat, now).issuedAtMs).toBe(now);
    // The same signed heartbeat replayed an hour later: accepted (no throw), but the copy stays as old as it was.
    const replayed = f.apply([], heartbeat, now + 3_600_000);
    expect(replayed.issuedAtMs).toBe(now);
    set.apply(replayed.entries, replayed.version, replayed.issuedAtMs);
    expect(set.isFresh(now + 3_600_000)).toBe(false);
    // An older head with new entries: the entries count, the freshness does not go back.
    const older = f.apply(entries.slice(1), head(2, entries[1]!.entryHash, issuer, registryId, now - 500), now + 10);
    expect(older).toMatchObject({ version: 2, issuedAtMs: now });
    // A head from the far future counts as now + skew.
    expect(f.apply([], head(2, entries[1]!.entryHash, issuer, registryId, now + 10 * 3_600_000), now + 20).issuedAtMs).toBe(now + 20 + 60_000);
  });
});
