// The trust bundle follower against registries that answer wrongly (§15.9): oversized or non-advancing
// pages, a first answer from another (or a half-started) registry, documents short of the announced version.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, createIssuerKey, signTrustBundleDocument, type IssuerKey } from '@parley/identity';
import { GetTrustBundleResponseSchema, create, type SignedTrustBundle } from '@parley/proto';
import { beforeAll, describe, expect, it } from 'vitest';
import { TrustBundleFollower, type TrustBundleFollowerOptions } from './trust-bundle-follower.js';

let crypto: ParleyCrypto;
let k1: IssuerKey;
let pinned: TrustBundle;
const A = new Uint8Array(16).fill(7);
const B = new Uint8Array(16).fill(9);

beforeAll(async () => {
  crypto = await createCrypto();
  k1 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  pinned = TrustBundle.from(crypto, [{ keyId: k1.keyId, publicKey: k1.publicKey }]);
});

const doc = (registryId: Uint8Array, version: number, key: IssuerKey, extra: IssuerKey[] = []): SignedTrustBundle =>
  signTrustBundleDocument(crypto, { registryId, version, issuedAtMs: Date.now(), issuers: [{ publicKey: key.publicKey, state: 'active' }, ...extra.map((k) => ({ publicKey: k.publicKey, state: 'prepared' as const }))] }, key);

type Answer = (afterVersion: bigint) => { registryId: Uint8Array; documents: SignedTrustBundle[]; currentVersion: bigint };
function follower(answer: Answer, more: Partial<TrustBundleFollowerOptions> = {}): { f: TrustBundleFollower; calls: () => number } {
  let calls = 0;
  const client = {
    getTrustBundle: async (r: { afterVersion: bigint }) => {
      calls++;
      return create(GetTrustBundleResponseSchema, answer(r.afterVersion));
    },
  } as unknown as TrustBundleFollowerOptions['client'];
  return { f: new TrustBundleFollower({ crypto, pinned, client, ...more }), calls: () => calls };
}

const codeOf = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: { code?: string }) => e.code ?? String(e));

describe('TrustBundleFollower against a registry that answers wrongly', () => {
  it('refuses a page of more than 64 documents, or one that does not move forward, at once: no hundred calls, nothing kept', async () => {
    const v1 = doc(A, 1, k1);
    const flood = follower(() => ({ registryId: A, documents: Array.from({ length: 65 }, () => v1), currentVersion: 2n }));
    expect(await codeOf(flood.f.refresh())).toBe('malformed');
    expect(flood.calls()).toBe(1);
    // Version 1 again and again, "version 2 is current": the page does not hold the versions after the one asked for.
    const stuck = follower(() => ({ registryId: A, documents: [v1], currentVersion: 2n }));
    expect(await codeOf(stuck.f.refresh())).toBe('malformed');
    expect(stuck.calls()).toBe(2); // the first page (version 1) was right; the second repeats it
    expect(stuck.f.version).toBe(0);
  });

  it('does not bind itself to the registry id of a first answer that did not verify: it recovers when the right registry answers', async () => {
    let wrong = true;
    const other = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const a = follower(() => (wrong ? { registryId: B, documents: [doc(B, 1, other)], currentVersion: 1n } : { registryId: A, documents: [doc(A, 1, k1)], currentVersion: 1n }));
    expect(await codeOf(a.f.refresh())).not.toBe('ok');
    wrong = false;
    expect(await codeOf(a.f.refresh())).toBe('ok');
    expect(a.f.version).toBe(1);
    // A half-started registry first: an empty id.
    let empty = true;
    const b = follower(() => (empty ? { registryId: new Uint8Array(0), documents: [], currentVersion: 0n } : { registryId: A, documents: [doc(A, 1, k1)], currentVersion: 1n }));
    expect(await codeOf(b.f.refresh())).toBe('malformed');
    empty = false;
    expect(await codeOf(b.f.refresh())).toBe('ok');
    expect(b.f.state).toBe('current');
  });

  it('documents that verified are reported and saved even when the registry announced more than it sent', async () => {
    const k2 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const docs = [doc(A, 1, k1), doc(A, 2, k1, [k2])];
    const saved: number[] = [];
    const events: string[] = [];
    const { f } = follower((after) => ({ registryId: A, documents: docs.filter((d) => d.version > after), currentVersion: 3n }), {
      registryId: A,
      store: { load: async () => undefined, save: async (_e: Uint8Array, v: number) => void saved.push(v) },
      onEvent: (e) => void events.push(e.kind),
    });
    expect(await codeOf(f.refresh())).toBe('malformed');
    expect(f.version).toBe(2);
    expect(f.trustBundle.get(k2.keyId)).toBeDefined();
    expect(saved).toEqual([2]);
    expect(events).toEqual(['updated', 'refused']);
  });
});
