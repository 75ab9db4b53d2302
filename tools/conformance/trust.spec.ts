// The TypeScript implementation checked against the committed trust lifecycle vectors
// (docs/conformance/parley-v1-trust.json, docs/PROTOCOL.md §15.3, §15.9, §15.11). Every expectation
// comes from the FILE; the generator is only used to check that the file is current.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCrypto, fromHex, layout, toBase64Url, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, TrustBundleChain, checkTrustBundleDocument, decodeTrustBundleDocument, isIdentityError, keyId, trustBundleLayout } from '@parley/identity';
import { SignedTrustBundleSchema, toBinary } from '@parley/proto';
import { AGENT_METADATA_KEYS, agentRequestLayout, enrolmentLayout, joinTokenHash, parseAgentMetadata, parseJoinToken, verifyAgentRequest } from '@parley/protocol';
import { beforeAll, describe, expect, it } from 'vitest';
import { renderVectors } from './vectors.js';
import { TRUST_VECTOR_FILE, buildTrustVectors } from './trust-vectors.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- the vector file is untyped JSON, checked field by field */
const ROOT = join(import.meta.dirname, '..', '..');
const TEXT = readFileSync(join(ROOT, TRUST_VECTOR_FILE), 'utf8');
const V = JSON.parse(TEXT) as any;
const h = (s: string): Uint8Array => fromHex(s);
const CHECKED = ['format', 'version', 'protocol', 'section', 'generated_by', 'notes', 'now_ms', 'keys', 'registry_id', 'trust_bundles', 'extra_documents', 'trust_bundle_checks', 'enrolment', 'agent_request'];
const STATE: Record<string, number> = { prepared: 1, active: 2, retired: 3 };

let crypto: ParleyCrypto;
beforeAll(async () => {
  crypto = await createCrypto();
});

describe('parley-v1-trust.json', () => {
  it('is what the generator produces, and has no group this checker does not know', async () => {
    expect(renderVectors(await buildTrustVectors())).toBe(TEXT);
    for (const key of Object.keys(V)) expect(CHECKED, `unknown top-level key ${key}`).toContain(key);
  });

  it('keys: the public key and §3.1 key id of each seed', () => {
    for (const k of Object.values(V.keys) as any[]) {
      const pair = crypto.ed25519.keyPairFromSeed(h(k.ed25519_seed));
      expect(toHex(pair.publicKey)).toBe(k.ed25519_public_key);
      expect(toHex(keyId(crypto, pair.publicKey))).toBe(k.key_id);
    }
  });

  it('trust_bundles and extra_documents: the §15.9 layout from the fields (offsets included), the signature, the encoding', () => {
    for (const [name, d] of Object.entries({ ...V.trust_bundles, ...V.extra_documents }) as [string, any][]) {
      const raw = layout('parley/v1/trust-bundle').fixed(h(d.registry_id), 16).u64(d.version).i64(d.issued_at_ms).fixed(h(d.signer_key_id), 16).u32(d.issuers.length);
      for (const i of d.issuers) raw.fixed(h(i.key_id), 16).fixed(h(i.public_key), 32).u8(STATE[i.state]!).i64(i.not_after_ms);
      const bytes = raw.bytes();
      expect(toHex(bytes), name).toBe(d.layout);
      expect(bytes.length).toBe(78 + 57 * d.issuers.length);
      expect(toHex(bytes.subarray(58, 74))).toBe(d.signer_key_id);
      const decoded = decodeTrustBundleDocument(h(d.encoded));
      expect(toHex(toBinary(SignedTrustBundleSchema, decoded))).toBe(d.encoded);
      expect(toHex(trustBundleLayout(checkTrustBundleDocument(crypto, decoded)))).toBe(d.layout);
      const signer = V.keys[d.signer];
      const ok = crypto.ed25519.verify(h(d.signature), bytes, h(signer.ed25519_public_key));
      expect(ok, name).toBe(name !== 'forged_v2'); // the forged one no longer verifies
    }
  });

  it('trust_bundle_checks: the follower rule gives the listed code and version', () => {
    const documents: Record<string, any> = { ...V.trust_bundles, ...V.extra_documents };
    const doc = (n: string) => decodeTrustBundleDocument(h(documents[n].encoded));
    for (const c of V.trust_bundle_checks as any[]) {
      const pinned = TrustBundle.from(crypto, (c.pinned as string[]).map((k) => ({ publicKey: h(V.keys[k].ed25519_public_key) })));
      const chain = TrustBundleChain.fromPinned(crypto, h(V.registry_id), pinned);
      if (c.accept_first.length > 0) chain.advance((c.accept_first as string[]).map(doc), V.now_ms);
      let got = 'ok';
      try {
        chain.advance((c.documents as string[]).map(doc), V.now_ms);
      } catch (error) {
        if (!isIdentityError(error)) throw error;
        got = error.code;
      }
      expect({ name: c.name, got, version: chain.version }).toEqual({ name: c.name, got: c.expect, version: c.version });
    }
  });

  it('enrolment: the stored token hash, the text form, the layout and the new key\'s signature', () => {
    const e = V.enrolment;
    const hash = crypto.blake3(layout('parley/v1/join-token').fixed(h(e.token_id), 16).fixed(h(e.token_secret), 32).bytes());
    expect(toHex(hash)).toBe(e.token_hash);
    expect(toHex(joinTokenHash(crypto, h(e.token_id), h(e.token_secret)))).toBe(e.token_hash);
    expect(e.token_text).toBe(`pjt1.${e.token_id}.${toBase64Url(h(e.token_secret))}`);
    const parsed = parseJoinToken(e.token_text);
    expect([toHex(parsed.tokenId), toHex(parsed.tokenSecret)]).toEqual([e.token_id, e.token_secret]);
    const pair = crypto.ed25519.keyPairFromSeed(h(e.identity_seed));
    expect(toHex(pair.publicKey)).toBe(e.identity_public_key);
    const raw = layout('parley/v1/registry-enrolment').fixed(h(e.registry_id), 16).fixed(h(e.token_id), 16).fixed(hash, 32).str(e.agent_id).fixed(pair.publicKey, 32).i64(e.timestamp_ms).bytes();
    expect(toHex(raw)).toBe(e.layout);
    expect(toHex(enrolmentLayout({ registryId: h(e.registry_id), tokenId: h(e.token_id), tokenHash: hash, agentId: e.agent_id, identityPublicKey: pair.publicKey, timestampMs: e.timestamp_ms }))).toBe(e.layout);
    expect(crypto.ed25519.verify(h(e.signature), raw, pair.publicKey)).toBe(true);
  });

  it('agent_request: the layout over the request digest, the five metadata entries, the signature', () => {
    const a = V.agent_request;
    const body = h(a.request);
    expect(toHex(crypto.blake3(body))).toBe(a.request_digest);
    const raw = layout('parley/v1/agent-request').fixed(h(a.registry_id), 16).str(a.path).fixed(crypto.blake3(body), 32).i64(a.timestamp_ms).fixed(h(a.nonce), 16).str(a.agent_id).fixed(h(a.serial), 16).bytes();
    expect(toHex(raw)).toBe(a.layout);
    const auth = parseAgentMetadata((k) => a.metadata[k] as string | undefined)!;
    expect(Object.keys(a.metadata).sort()).toEqual(Object.values(AGENT_METADATA_KEYS).sort());
    expect(toHex(agentRequestLayout(crypto, { registryId: h(a.registry_id), path: a.path, body }, auth))).toBe(a.layout);
    const pair = crypto.ed25519.keyPairFromSeed(h(a.signer_seed));
    expect(verifyAgentRequest(crypto, pair.publicKey, auth, { registryId: h(a.registry_id), path: a.path, body })).toBe(true);
    expect(verifyAgentRequest(crypto, pair.publicKey, auth, { registryId: h(a.registry_id), path: '/parley.v1.RegistryService/ListAgents', body })).toBe(false);
  });
});
