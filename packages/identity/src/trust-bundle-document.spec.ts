import { createCrypto, layout, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { IssuerKeyState, SignedTrustBundleSchema, clone, create, toBinary, type SignedTrustBundle } from '@parley/proto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createIssuerKey, issueCertificate, verifyCertificate, type IssuerKey } from './certificate.js';
import { isIdentityError, type IdentityErrorCode } from './errors.js';
import { keyId } from './key-id.js';
import { TrustBundle } from './trust-bundle.js';
import {
  TrustBundleChain,
  checkTrustBundleDocument,
  decodeTrustBundleDocument,
  encodeTrustBundleDocument,
  signTrustBundleDocument,
  trustBundleLayout,
  type IssuerLifecycleState,
} from './trust-bundle-document.js';

let crypto: ParleyCrypto;
let k1: IssuerKey;
let k2: IssuerKey;
let k3: IssuerKey;
const REGISTRY = new Uint8Array(16).fill(7);
const T0 = 1_700_000_000_000;
const DAY = 86_400_000;

beforeAll(async () => {
  crypto = await createCrypto();
  k1 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  k2 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  k3 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
});

type Entry = [IssuerKey, IssuerLifecycleState, number?];
function doc(version: number, entries: Entry[], signer: IssuerKey, registryId = REGISTRY): SignedTrustBundle {
  return signTrustBundleDocument(
    crypto,
    { registryId, version, issuedAtMs: T0 + version, issuers: entries.map(([k, state, notAfterMs]) => (notAfterMs === undefined ? { publicKey: k.publicKey, state } : { publicKey: k.publicKey, state, notAfterMs })) },
    signer,
  );
}

/** A rotation K1 → K2 as the registry publishes it: v1 K1 active; v2 K2 prepared; v3 K2 active, K1 retired; v4 K1 dropped. */
function rotation(): SignedTrustBundle[] {
  return [
    doc(1, [[k1, 'active']], k1),
    doc(2, [[k1, 'active'], [k2, 'prepared']], k1),
    doc(3, [[k1, 'retired', T0 + 10 * DAY], [k2, 'active']], k2),
    doc(4, [[k2, 'active']], k2),
  ];
}

function expectCode(fn: () => unknown, code: IdentityErrorCode): void {
  try {
    fn();
  } catch (error) {
    if (isIdentityError(error, code)) return;
    throw new Error(`expected ${code}, got ${String(error)}`);
  }
  throw new Error(`expected ${code}, nothing thrown`);
}

describe('trust bundle document layout (PROTOCOL §15.9)', () => {
  it('has the documented offsets: domain, registry id, version, time, signer, count, 57 bytes per issuer', () => {
    const d = doc(2, [[k1, 'active'], [k2, 'prepared']], k1);
    const c = checkTrustBundleDocument(crypto, d);
    const bytes = trustBundleLayout(c);
    expect(bytes.length).toBe(78 + 57 * 2);
    const view = new DataView(bytes.buffer);
    expect(view.getUint32(0)).toBe(22);
    expect(new TextDecoder().decode(bytes.subarray(4, 26))).toBe('parley/v1/trust-bundle');
    expect(toHex(bytes.subarray(26, 42))).toBe(toHex(REGISTRY));
    expect(view.getBigUint64(42)).toBe(2n);
    expect(view.getBigInt64(50)).toBe(BigInt(T0 + 2));
    expect(toHex(bytes.subarray(58, 74))).toBe(toHex(k1.keyId));
    expect(view.getUint32(74)).toBe(2);
    const first = c.issuers[0]!;
    expect(toHex(bytes.subarray(78, 94))).toBe(toHex(first.keyId));
    expect(toHex(bytes.subarray(94, 126))).toBe(toHex(first.publicKey));
    expect(bytes[126]).toBe(first.state === 'active' ? IssuerKeyState.ACTIVE : IssuerKeyState.PREPARED);
    expect(view.getBigInt64(127)).toBe(0n);
    // The same bytes from raw layout calls (§2 notation), independently of the module.
    const raw = layout('parley/v1/trust-bundle').fixed(REGISTRY, 16).u64(2).i64(T0 + 2).fixed(k1.keyId, 16).u32(2);
    for (const i of c.issuers) raw.fixed(i.keyId, 16).fixed(i.publicKey, 32).u8(i.state === 'active' ? 2 : 1).i64(0);
    expect(toHex(raw.bytes())).toBe(toHex(bytes));
    expect(crypto.ed25519.verify(d.signature, bytes, k1.publicKey)).toBe(true);
  });

  it('sorts issuers by key id and encodes / decodes within 8 KiB', () => {
    const d = doc(1, [[k2, 'prepared'], [k1, 'active'], [k3, 'retired', T0]], k1);
    const ids = d.issuers.map((i) => toHex(i.keyId));
    expect(ids).toEqual([...ids].sort());
    const bytes = encodeTrustBundleDocument(crypto, d);
    expect(toHex(toBinary(SignedTrustBundleSchema, decodeTrustBundleDocument(bytes)))).toBe(toHex(bytes));
    expectCode(() => decodeTrustBundleDocument(new Uint8Array(8193)), 'malformed');
  });

  it.each([
    ['no ACTIVE key', (d: SignedTrustBundle) => d.issuers.forEach((i) => i.state === IssuerKeyState.ACTIVE && (i.state = IssuerKeyState.PREPARED))],
    ['two ACTIVE keys', (d: SignedTrustBundle) => d.issuers.forEach((i) => (i.state = IssuerKeyState.ACTIVE))],
    ['an unknown state', (d: SignedTrustBundle) => (d.issuers[0]!.state = 9 as IssuerKeyState)],
    ['a RETIRED key without not_after_ms', (d: SignedTrustBundle) => d.issuers.forEach((i) => i.state === IssuerKeyState.PREPARED && (i.state = IssuerKeyState.RETIRED))],
    ['an ACTIVE key with a not_after_ms', (d: SignedTrustBundle) => d.issuers.forEach((i) => i.state === IssuerKeyState.ACTIVE && (i.notAfterMs = 5n))],
    ['issuers out of order', (d: SignedTrustBundle) => d.issuers.reverse()],
    ['a key id that is not its key\'s', (d: SignedTrustBundle) => (d.issuers[0]!.keyId = new Uint8Array(16))],
    ['a signer that is not the ACTIVE key', (d: SignedTrustBundle) => (d.signerKeyId = keyId(crypto, k2.publicKey))],
    ['version 0', (d: SignedTrustBundle) => (d.version = 0n)],
    ['a short registry id', (d: SignedTrustBundle) => (d.registryId = new Uint8Array(15))],
    ['a short signature', (d: SignedTrustBundle) => (d.signature = new Uint8Array(63))],
    ['no issuers', (d: SignedTrustBundle) => (d.issuers = [])],
    ['an unknown field', (d: SignedTrustBundle) => ((d as { $unknown?: unknown }).$unknown = [{ no: 99, wireType: 0, data: new Uint8Array([1]) }])],
  ])('refuses a document with %s (malformed)', (_name, mutate) => {
    const d = clone(SignedTrustBundleSchema, doc(2, [[k1, 'active'], [k2, 'prepared']], k1));
    mutate(d);
    expectCode(() => checkTrustBundleDocument(crypto, d), 'malformed');
  });

  it('refuses to sign with a key that is not the ACTIVE one', () => {
    expectCode(() => doc(1, [[k1, 'active']], k2), 'malformed');
  });
});

describe('TrustBundleChain (PROTOCOL §15.9 follower rule)', () => {
  const pinned = (): TrustBundle => TrustBundle.from(crypto, [{ publicKey: k1.publicKey }]);

  it('walks a whole rotation from a pinned bundle: the new key is trusted before it signs, the retired one until its not_after_ms', () => {
    const chain = TrustBundleChain.fromPinned(crypto, REGISTRY, pinned());
    expect(chain.version).toBe(0);
    const [v1, v2, v3, v4] = rotation();
    expect(chain.advance([v1!, v2!], T0).accepted).toEqual([1, 2]);
    // v2: K2 is PREPARED and already verifies what it will sign.
    expect(chain.trustBundle.get(k2.keyId)).toBeDefined();
    expect(chain.advance([v3!], T0).accepted).toEqual([3]);
    expect(chain.trustBundle.get(k1.keyId)?.notAfterMs).toBe(T0 + 10 * DAY);
    expect(chain.advance([v4!], T0).version).toBe(4);
    expect(chain.trustBundle.get(k1.keyId)).toBeUndefined();
  });

  it('lets a follower that missed versions catch up through them, and skips versions before its pinned keys', () => {
    const chain = TrustBundleChain.fromPinned(crypto, REGISTRY, pinned());
    expect(chain.advance(rotation(), T0)).toEqual({ accepted: [1, 2, 3, 4], version: 4 });
    // A follower pinned at K2 only: v1 and v2 (signed by K1) are before its time.
    const late = TrustBundleChain.fromPinned(crypto, REGISTRY, TrustBundle.from(crypto, [{ publicKey: k2.publicKey }]));
    expect(late.advance(rotation(), T0).accepted).toEqual([3, 4]);
  });

  it('refuses a rollback: an older version, or another document at the version held; the held one again is a no-op', () => {
    const chain = TrustBundleChain.fromPinned(crypto, REGISTRY, pinned());
    const docs = rotation();
    chain.advance(docs.slice(0, 3), T0);
    expectCode(() => chain.advance([docs[1]!], T0), 'rollback');
    const forked = doc(3, [[k1, 'retired', T0 + 1], [k2, 'active']], k2);
    expectCode(() => chain.advance([forked], T0), 'rollback');
    expect(chain.advance([docs[2]!], T0).accepted).toEqual([]);
    expect(chain.version).toBe(3);
  });

  it('refuses a key made ACTIVE without having been published first (unknown_issuer), a gap, a forged signature, another registry, an expired signer', () => {
    const chain = TrustBundleChain.fromPinned(crypto, REGISTRY, pinned());
    chain.advance([rotation()[0]!], T0);
    expectCode(() => chain.advance([doc(2, [[k1, 'retired', T0 + DAY], [k3, 'active']], k3)], T0), 'unknown_issuer');
    expectCode(() => chain.advance([doc(3, [[k1, 'active']], k1)], T0), 'malformed');
    const forged = clone(SignedTrustBundleSchema, doc(2, [[k1, 'active'], [k3, 'prepared']], k1));
    forged.issuedAtMs += 1n;
    expectCode(() => chain.advance([forged], T0), 'bad_signature');
    expectCode(() => chain.advance([doc(2, [[k1, 'active']], k1, new Uint8Array(16).fill(8))], T0), 'identity_mismatch');
    expect(chain.version).toBe(1);
    // A RETIRED key signs nothing (even within its grace period), and neither does a key past its not_after_ms.
    const retiredChain = TrustBundleChain.fromPinned(crypto, REGISTRY, pinned());
    retiredChain.advance(rotation().slice(0, 3), T0);
    expectCode(() => retiredChain.advance([doc(4, [[k1, 'active']], k1)], T0), 'expired');
    const stale = TrustBundleChain.fromPinned(crypto, REGISTRY, TrustBundle.from(crypto, [{ publicKey: k1.publicKey, notAfterMs: T0 }]));
    expectCode(() => stale.advance([rotation()[0]!], T0), 'expired');
  });

  it('is all or nothing: a bad document after good ones changes nothing', () => {
    const chain = TrustBundleChain.fromPinned(crypto, REGISTRY, pinned());
    const docs = rotation();
    const bad = clone(SignedTrustBundleSchema, docs[2]!);
    bad.signature[0]! ^= 1;
    expectCode(() => chain.advance([docs[0]!, docs[1]!, bad], T0), 'bad_signature');
    expect(chain.version).toBe(0);
  });

  it('anchors past documents signed by a pinned key beyond its not_after_ms (bundle pinned during a grace period)', () => {
    // Pinned during the grace period of v3: K1 RETIRED with not_after_ms, K2 active; the follower starts after it.
    const grace = TrustBundle.from(crypto, [{ publicKey: k1.publicKey, notAfterMs: T0 + 10 * DAY }, { publicKey: k2.publicKey }]);
    const chain = TrustBundleChain.fromPinned(crypto, REGISTRY, grace);
    expect(chain.advance(rotation(), T0 + 11 * DAY)).toEqual({ accepted: [3, 4], version: 4 });
    expect(chain.trustBundle.get(k1.keyId)).toBeUndefined();
    // Nothing signed by a still-valid pinned key: still refused, as expired, and nothing changes.
    const onlyK1 = TrustBundleChain.fromPinned(crypto, REGISTRY, TrustBundle.from(crypto, [{ publicKey: k1.publicKey, notAfterMs: T0 + DAY }]));
    expectCode(() => onlyK1.advance(rotation().slice(0, 2), T0 + 2 * DAY), 'expired');
    expect(onlyK1.version).toBe(0);
  });

  it('refuses when no document is signed by a pinned key', () => {
    const chain = TrustBundleChain.fromPinned(crypto, REGISTRY, TrustBundle.from(crypto, [{ publicKey: k3.publicKey }]));
    expectCode(() => chain.advance(rotation(), T0), 'unknown_issuer');
  });

  it('restores its saved state, and refuses a tampered one or one of another registry', () => {
    const chain = TrustBundleChain.fromPinned(crypto, REGISTRY, pinned());
    chain.advance(rotation().slice(0, 3), T0);
    const saved = chain.encoded()!;
    const restored = TrustBundleChain.fromSaved(crypto, REGISTRY, saved);
    expect(restored.version).toBe(3);
    expect(restored.advance([rotation()[3]!], T0).accepted).toEqual([4]);
    expectCode(() => TrustBundleChain.fromSaved(crypto, new Uint8Array(16), saved), 'identity_mismatch');
    const tampered = clone(SignedTrustBundleSchema, chain.document!);
    tampered.issuedAtMs += 1n;
    expectCode(() => TrustBundleChain.fromSaved(crypto, REGISTRY, toBinary(SignedTrustBundleSchema, tampered)), 'bad_signature');
  });

  it('gives a live TrustBundle view that certificate verification follows', () => {
    const chain = TrustBundleChain.fromPinned(crypto, REGISTRY, pinned());
    const agent = crypto.ed25519.generateKeyPair();
    const cert = issueCertificate(crypto, k2, { agentId: 'a-1', identityPublicKey: agent.publicKey, agentType: 'worker', capabilities: [], validFromMs: T0 - DAY, validUntilMs: T0 + DAY });
    const verify = (): unknown => verifyCertificate(crypto, cert, { trustBundle: chain.live, nowMs: T0 });
    expectCode(verify, 'unknown_issuer');
    chain.advance(rotation().slice(0, 2), T0);
    expect(verify()).toMatchObject({ agentId: 'a-1' });
    const later = TrustBundle.live(() => chain.trustBundle);
    expect(later.size).toBe(2);
    expectCode(() => TrustBundle.live(() => 'x' as unknown as TrustBundle).size, 'malformed');
  });

  it('builds documents only through create (no stray fields)', () => {
    const d = create(SignedTrustBundleSchema, {});
    expectCode(() => checkTrustBundleDocument(crypto, d), 'malformed');
  });
});
