// The trust bundle follower against registries that answer wrongly (§15.9): oversized or non-advancing
// pages, a first answer from another (or a half-started) registry, documents short of the announced version.
import { createCrypto, fromHex, layout, toBase64Url, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, createIssuerKey, signTrustBundleDocument, type IssuerKey } from '@parley/identity';
import { GetTrustBundleResponseSchema, SignedTrustBundleSchema, create, toBinary, type SignedTrustBundle } from '@parley/proto';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  FOLLOWED_TRUST_BUNDLE_DOMAIN,
  TrustBundleFollower,
  pinnedTrustBundleHash,
  type TrustBundleFollowerEvent,
  type TrustBundleFollowerOptions,
  type TrustBundleStore,
} from './trust-bundle-follower.js';

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

// A changed pin (§15.9): the pinned bundle is the operator's root; a state saved while following another one is not used.
describe('TrustBundleFollower with a saved state and a pinned bundle', () => {
  const DAY = 86_400_000;
  const pinOf = (...keys: IssuerKey[]): TrustBundle => TrustBundle.from(crypto, keys.map((k) => ({ publicKey: k.publicKey })));
  const memoryStore = (initial?: Uint8Array): { store: TrustBundleStore; saves: Uint8Array[]; bytes: () => Uint8Array | undefined } => {
    let bytes = initial;
    const saves: Uint8Array[] = [];
    return {
      store: {
        load: async () => bytes,
        save: async (encoded: Uint8Array) => {
          bytes = encoded;
          saves.push(encoded);
        },
      },
      saves,
      bytes: () => bytes,
    };
  };
  const registry = (registryId: Uint8Array, docs: SignedTrustBundle[]): Answer => (after) => ({ registryId, documents: docs.filter((d) => d.version > after), currentVersion: BigInt(docs.length) });
  const run = async (answer: Answer, store: TrustBundleStore, pin: TrustBundle, more: Partial<TrustBundleFollowerOptions> = {}): Promise<{ f: TrustBundleFollower; events: TrustBundleFollowerEvent[] }> => {
    const events: TrustBundleFollowerEvent[] = [];
    const { f } = follower(answer, { pinned: pin, store, onEvent: (e) => void events.push(e), ...more });
    await f.restore();
    return { f, events };
  };
  const followedPrefix = (): Uint8Array => layout(FOLLOWED_TRUST_BUNDLE_DOMAIN).bytes();
  const startsWith = (bytes: Uint8Array | undefined, prefix: Uint8Array): boolean => bytes !== undefined && prefix.every((b, i) => bytes[i] === b);
  const bare = (d: SignedTrustBundle): Uint8Array => toBinary(SignedTrustBundleSchema, d);

  it('the pin hash is of the keys and their validity: not of the JSON spelling or order (a vector shared with the Python SDK)', () => {
    const pk1 = '3e5fd8a797fe81f606996c663f556cf3d47e8d1e792b75aba4d6c58eaeabe848';
    const pk2 = '38af9f52e2c4a8ca33534fc9e2ba692d12da9dd95d2882172ebc386caa493d98';
    const a = TrustBundle.from(crypto, [{ publicKey: fromHex(pk1), notAfterMs: 1_800_000_000_000 }, { publicKey: fromHex(pk2) }]);
    expect(toHex(pinnedTrustBundleHash(crypto, a))).toBe('2fb5aa835ec387f08f0dd18d673320925b8e614baee580c0348808a458bce17d');
    // The same bundle as JSON, reordered and re-spaced.
    const json = JSON.stringify({ issuers: [...a.toJSON().issuers].reverse(), version: 1 }, null, 3);
    expect(toHex(pinnedTrustBundleHash(crypto, TrustBundle.fromJSON(crypto, json)))).toBe(toHex(pinnedTrustBundleHash(crypto, a)));
    // Another validity, or one key fewer, is another pin.
    const otherValidity = TrustBundle.from(crypto, [{ publicKey: fromHex(pk1), notAfterMs: 1_800_000_000_001 }, { publicKey: fromHex(pk2) }]);
    const noValidity = TrustBundle.from(crypto, [{ publicKey: fromHex(pk1) }, { publicKey: fromHex(pk2) }]);
    const oneKey = TrustBundle.from(crypto, [{ publicKey: fromHex(pk2) }]);
    const hashes = new Set([a, otherValidity, noValidity, oneKey].map((b) => toHex(pinnedTrustBundleHash(crypto, b))));
    expect(hashes.size).toBe(4);
  });

  it('the same pin (spelled differently): the saved state, which records the pin, is restored as before', async () => {
    const k2 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const docs = [doc(A, 1, k1), doc(A, 2, k1, [k2])];
    const mem = memoryStore();
    const first = await run(registry(A, docs), mem.store, pinned);
    await first.f.refresh();
    expect(mem.saves).toHaveLength(1);
    // The saved state records the pin it was followed from.
    const saved = mem.bytes()!;
    const prefix = followedPrefix();
    expect(startsWith(saved, prefix)).toBe(true);
    expect(toHex(saved.subarray(prefix.length, prefix.length + 32))).toBe(toHex(pinnedTrustBundleHash(crypto, pinned)));
    // A restart with the same pinned bundle, read from JSON written otherwise.
    const samePin = TrustBundle.fromJSON(crypto, `{ "issuers": ${JSON.stringify(pinned.toJSON().issuers)},\n  "version": 1 }`);
    const again = await run(registry(A, docs), mem.store, samePin);
    expect(again.events).toEqual([{ kind: 'restored', version: 2 }]);
    expect(again.f.version).toBe(2);
    expect(again.f.trustBundle.get(k2.keyId)).toBeDefined();
    expect(await codeOf(again.f.refresh())).toBe('ok');
    expect(mem.saves).toHaveLength(1); // nothing new: the saved state stays
  });

  it("a changed pin (another registry's bundle): the saved state is not used, pin_changed is reported, the follower follows from the new pin and saves over it", async () => {
    const k2 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const kb = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const mem = memoryStore();
    const first = await run(registry(A, [doc(A, 1, k1), doc(A, 2, k1, [k2])]), mem.store, pinned);
    await first.f.refresh();
    expect(first.f.version).toBe(2);
    // The agent is moved to registry B: a new pin, no registry id given (the saved one must not be adopted).
    const pinB = pinOf(kb);
    const atB = await run(registry(B, [doc(B, 1, kb)]), mem.store, pinB);
    expect(atB.events).toEqual([
      {
        kind: 'pin_changed',
        version: 2,
        from: toHex(pinnedTrustBundleHash(crypto, pinned)),
        to: toHex(pinnedTrustBundleHash(crypto, pinB)),
        detail: expect.stringContaining('another pinned bundle') as unknown as string,
      },
    ]);
    // Never key material.
    const text = JSON.stringify(atB.events);
    for (const k of [k1, k2, kb]) for (const form of [toHex(k.publicKey), toBase64Url(k.publicKey)]) expect(text).not.toContain(form);
    expect(atB.f.version).toBe(0);
    expect(atB.f.registryId).toBeUndefined();
    expect(atB.f.trustBundle.get(k1.keyId)).toBeUndefined();
    expect(atB.f.trustBundle.get(kb.keyId)).toBeDefined();
    expect(await codeOf(atB.f.refresh())).toBe('ok');
    expect(atB.f.version).toBe(1);
    expect(toHex(atB.f.registryId!)).toBe(toHex(B));
    // The next accepted document replaced the saved state: a restart with the new pin restores it.
    expect(mem.saves).toHaveLength(2);
    const restarted = await run(registry(B, [doc(B, 1, kb)]), mem.store, pinB);
    expect(restarted.events).toEqual([{ kind: 'restored', version: 1 }]);
  });

  it("an operator's new pin after an incident at the same registry: the saved chain does not outrank it", async () => {
    const k3 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const mem = memoryStore();
    const first = await run(registry(A, [doc(A, 1, k1)]), mem.store, pinned, { registryId: A });
    await first.f.refresh();
    // k1 is compromised: the operator pins k3, and the registry publishes version 2 signed by k3 alone.
    const docs = [doc(A, 1, k1), doc(A, 2, k3)];
    const pin3 = pinOf(k3);
    const after = await run(registry(A, docs), mem.store, pin3, { registryId: A });
    expect(after.events.map((e) => e.kind)).toEqual(['pin_changed']);
    expect(after.f.trustBundle.get(k1.keyId)).toBeUndefined();
    expect(await codeOf(after.f.refresh())).toBe('ok');
    expect(after.f.version).toBe(2);
    expect(after.f.trustBundle.get(k1.keyId)).toBeUndefined();
  });

  it('a state saved before the pin was recorded: used (and saved again with the pin) when a pinned key signed it; otherwise treated as a changed pin', async () => {
    const k2 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const v1 = doc(A, 1, k1);
    const v2 = doc(A, 2, k1, [k2]);
    const v3 = signTrustBundleDocument(
      crypto,
      { registryId: A, version: 3, issuedAtMs: Date.now(), issuers: [{ publicKey: k2.publicKey, state: 'active' }, { publicKey: k1.publicKey, state: 'retired', notAfterMs: Date.now() + DAY }] },
      k2,
    );
    // Signed by a pinned key: what a fresh follow would accept as its anchor.
    const signedByPin = memoryStore(bare(v2));
    const kept = await run(registry(A, [v1, v2]), signedByPin.store, pinned);
    expect(kept.events).toEqual([{ kind: 'restored', version: 2 }]);
    expect(kept.f.version).toBe(2);
    expect(signedByPin.saves).toHaveLength(1);
    expect(startsWith(signedByPin.bytes(), followedPrefix())).toBe(true);
    expect((await run(registry(A, [v1, v2]), signedByPin.store, pinned)).events).toEqual([{ kind: 'restored', version: 2 }]);
    // Signed by a key the pin does not hold (after a rotation, or another registry's): where its chain was
    // anchored cannot be told from the newest document alone, so it starts from the pin and says so.
    const rotated = memoryStore(bare(v3));
    const fresh = await run(registry(A, [v1, v2, v3]), rotated.store, pinned);
    expect(fresh.events).toEqual([{ kind: 'pin_changed', version: 3, from: null, to: toHex(pinnedTrustBundleHash(crypto, pinned)), detail: expect.stringContaining('records no pinned bundle') as unknown as string }]);
    expect(fresh.f.version).toBe(0);
    expect(rotated.saves).toHaveLength(0);
    expect(await codeOf(fresh.f.refresh())).toBe('ok'); // walks from the pinned k1 to version 3 again
    expect(fresh.f.version).toBe(3);
    expect(startsWith(rotated.bytes(), followedPrefix())).toBe(true);
    // Another registry's key pinned: the bare state is not used either.
    const kb = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const elsewhere = await run(registry(B, [doc(B, 1, kb)]), memoryStore(bare(v2)).store, pinOf(kb));
    expect(elsewhere.events.map((e) => e.kind)).toEqual(['pin_changed']);
    expect(elsewhere.f.version).toBe(0);
  });

  it('trusting on first use the "pin" is what the registry sent at this start: the saved state keeps precedence (and records that pin)', async () => {
    const k2 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const mem = memoryStore();
    const first = await run(registry(A, [doc(A, 1, k1)]), mem.store, pinned, { trustOnFirstUse: true });
    await first.f.refresh();
    expect(startsWith(mem.bytes(), followedPrefix())).toBe(true);
    const later = await run(registry(A, [doc(A, 1, k1)]), mem.store, pinOf(k2), { trustOnFirstUse: true });
    expect(later.events).toEqual([{ kind: 'restored', version: 1 }]);
    expect(later.f.trustBundle.get(k1.keyId)).toBeDefined();
  });

  it('a saved state with the pin recorded but cut short is reported and not used', async () => {
    const mem = memoryStore();
    const first = await run(registry(A, [doc(A, 1, k1)]), mem.store, pinned);
    await first.f.refresh();
    const cut = memoryStore(mem.bytes()!.slice(0, -1));
    const again = await run(registry(A, [doc(A, 1, k1)]), cut.store, pinned);
    expect(again.events).toEqual([{ kind: 'restore_failed', code: 'malformed', detail: expect.stringContaining('truncated') as unknown as string }]);
    expect(again.f.version).toBe(0);
  });
});
