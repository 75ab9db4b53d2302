// Builds the trust lifecycle conformance vectors (docs/conformance/parley-v1-trust.json,
// docs/PROTOCOL.md §15.3, §15.9, §15.11), in their own file so the v1 vector file and its
// checkers (TypeScript, Go, Python) are untouched.
//
// Every value is built by the production code (@parley/identity's signed trust bundle documents and
// follower rule, @parley/protocol's enrolment and agent request layouts) AND recomputed here from raw
// primitives and the layouts of §15.9 / §15.11 / §15.3; the build fails if the two disagree, and every
// follower check is run through the production TrustBundleChain, which must give exactly the code
// written here. Covered: a whole issuer rotation (v1 active K1 → v2 K2 prepared → v3 K2 active, K1
// retired → v4 K1 dropped), the follower's acceptance and refusal cases (rollback, fork, a key activated
// without being published, a gap, a forged signature, another registry, a retired signer, a pinned
// bundle that skips earlier versions), a join token with its hash and an enrolment proof, and an
// agent-signed GetAgent request with its metadata.
import { createCrypto, layout, toHex, type ParleyCrypto } from '@parley/crypto-core';
import {
  TrustBundle,
  TrustBundleChain,
  createIssuerKey,
  encodeTrustBundleDocument,
  isIdentityError,
  keyId,
  signTrustBundleDocument,
  trustBundleLayout,
  checkTrustBundleDocument,
  type IssuerKey,
  type IssuerLifecycleState,
} from '@parley/identity';
import { GetAgentRequestSchema, SignedTrustBundleSchema, clone, create, toBinary, type SignedTrustBundle } from '@parley/proto';
import { AGENT_METADATA_KEYS, agentRequestLayout, enrolmentLayout, formatJoinToken, joinTokenHash, signAgentRequest } from '@parley/protocol';
import { BASE_MS, NOW_MS, PlannedCrypto } from './vectors.js';

export const TRUST_VECTOR_FILE = 'docs/conformance/parley-v1-trust.json';
const DAY = 86_400_000;

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** A labelled value: BLAKE3(str("parley/v1/conformance-input") ‖ str(label) ‖ u32(n)), truncated to n bytes (as in parley-v1.json). */
function derive(crypto: ParleyCrypto, label: string, length = 32): Uint8Array {
  return crypto.blake3(layout('parley/v1/conformance-input').str(label).u32(length).bytes()).slice(0, length);
}

function same(what: string, a: Uint8Array, b: Uint8Array): Uint8Array {
  if (toHex(a) !== toHex(b)) throw new Error(`trust conformance: ${what} differs between the production code and the spec layout`);
  return a;
}

const STATE_CODE: Record<IssuerLifecycleState, number> = { prepared: 1, active: 2, retired: 3 };

type Entry = readonly [IssuerKey, IssuerLifecycleState, number?];

export async function buildTrustVectors(): Promise<Record<string, Json>> {
  const base = await createCrypto();
  const registryId = derive(base, 'trust/registry-id', 16);
  const otherRegistryId = derive(base, 'trust/other-registry-id', 16);
  const seeds = { k1: derive(base, 'trust/ed25519/issuer-1'), k2: derive(base, 'trust/ed25519/issuer-2'), k3: derive(base, 'trust/ed25519/issuer-3') };
  const key = (seed: Uint8Array): IssuerKey => createIssuerKey(base, base.ed25519.keyPairFromSeed(seed));
  const k1 = key(seeds.k1);
  const k2 = key(seeds.k2);
  const k3 = key(seeds.k3);
  const names = new Map([toHex(k1.keyId), toHex(k2.keyId), toHex(k3.keyId)].map((id, i) => [id, `k${i + 1}`]));

  /** A document by the production signer, checked against the §15.9 layout built by hand. */
  const doc = (version: number, entries: readonly Entry[], signer: IssuerKey, registry = registryId, issuedAtMs = BASE_MS + version * 1000): SignedTrustBundle => {
    const d = signTrustBundleDocument(
      base,
      { registryId: registry, version, issuedAtMs, issuers: entries.map(([k, state, notAfterMs]) => (notAfterMs === undefined ? { publicKey: k.publicKey, state } : { publicKey: k.publicKey, state, notAfterMs })) },
      signer,
    );
    const sorted = [...entries].sort((a, b) => (toHex(a[0].keyId) < toHex(b[0].keyId) ? -1 : 1));
    const raw = layout('parley/v1/trust-bundle').fixed(registry, 16).u64(version).i64(issuedAtMs).fixed(signer.keyId, 16).u32(sorted.length);
    for (const [k, state, notAfterMs] of sorted) raw.fixed(keyId(base, k.publicKey), 16).fixed(k.publicKey, 32).u8(STATE_CODE[state]).i64(notAfterMs ?? 0);
    const bytes = same(`trust bundle v${version} layout`, trustBundleLayout(checkTrustBundleDocument(base, d)), raw.bytes());
    if (bytes.length !== 78 + 57 * sorted.length) throw new Error('trust conformance: layout length');
    if (!base.ed25519.verify(d.signature, bytes, signer.publicKey)) throw new Error('trust conformance: document signature');
    return d;
  };
  const docJson = (d: SignedTrustBundle): Json => {
    const c = checkTrustBundleDocument(base, d);
    return {
      version: Number(d.version),
      registry_id: toHex(d.registryId),
      issued_at_ms: Number(d.issuedAtMs),
      issuers: c.issuers.map((i) => ({ key: names.get(toHex(i.keyId)) ?? 'unknown', key_id: toHex(i.keyId), public_key: toHex(i.publicKey), state: i.state, not_after_ms: i.notAfterMs ?? 0 })),
      signer: names.get(toHex(d.signerKeyId)) ?? 'unknown',
      signer_key_id: toHex(d.signerKeyId),
      layout: toHex(trustBundleLayout(c)),
      signature: toHex(d.signature),
      encoded: toHex(encodeTrustBundleDocument(base, d)),
    };
  };

  // ---- §15.9 a rotation K1 → K2 -------------------------------------------
  const notAfter = BASE_MS + 30 * DAY;
  const v1 = doc(1, [[k1, 'active']], k1);
  const v2 = doc(2, [[k1, 'active'], [k2, 'prepared']], k1);
  const v3 = doc(3, [[k1, 'retired', notAfter], [k2, 'active']], k2);
  const v4 = doc(4, [[k2, 'active']], k2);
  const rotation = [v1, v2, v3, v4];
  const byName: Record<string, SignedTrustBundle> = { v1, v2, v3, v4 };

  // ---- the follower's checks (each run through the production TrustBundleChain) ------------------
  const forged = clone(SignedTrustBundleSchema, doc(2, [[k1, 'active'], [k3, 'prepared']], k1));
  forged.issuedAtMs += 1n; // the signature no longer covers the fields
  const extra: Record<string, SignedTrustBundle> = {
    fork_v3: doc(3, [[k1, 'retired', notAfter + 1], [k2, 'active']], k2),
    unpublished_active_v2: doc(2, [[k1, 'retired', notAfter], [k3, 'active']], k3),
    gap_v3: doc(3, [[k1, 'active']], k1),
    forged_v2: forged,
    other_registry_v2: doc(2, [[k1, 'active'], [k2, 'prepared']], k1, otherRegistryId),
    retired_signer_v4: doc(4, [[k1, 'active']], k1),
  };
  const all: Record<string, SignedTrustBundle> = { ...byName, ...extra };
  const pinnedOf = (names: readonly string[]): TrustBundle => TrustBundle.from(base, names.map((n) => ({ publicKey: { k1, k2, k3 }[n as 'k1']!.publicKey })));
  const checks: { name: string; pinned: string[]; accept_first: string[]; documents: string[]; expect: string; version: number }[] = [
    { name: 'rotation_in_one_batch', pinned: ['k1'], accept_first: [], documents: ['v1', 'v2', 'v3', 'v4'], expect: 'ok', version: 4 },
    { name: 'rotation_step_by_step', pinned: ['k1'], accept_first: ['v1', 'v2', 'v3'], documents: ['v4'], expect: 'ok', version: 4 },
    { name: 'pinned_new_key_skips_older_versions', pinned: ['k2'], accept_first: [], documents: ['v1', 'v2', 'v3', 'v4'], expect: 'ok', version: 4 },
    { name: 'same_document_again_is_a_no_op', pinned: ['k1'], accept_first: ['v1', 'v2', 'v3'], documents: ['v3'], expect: 'ok', version: 3 },
    { name: 'older_version_is_a_rollback', pinned: ['k1'], accept_first: ['v1', 'v2', 'v3'], documents: ['v2'], expect: 'rollback', version: 3 },
    { name: 'other_document_at_the_same_version', pinned: ['k1'], accept_first: ['v1', 'v2', 'v3'], documents: ['fork_v3'], expect: 'rollback', version: 3 },
    { name: 'key_activated_without_being_published', pinned: ['k1'], accept_first: ['v1'], documents: ['unpublished_active_v2'], expect: 'unknown_issuer', version: 1 },
    { name: 'gap', pinned: ['k1'], accept_first: ['v1'], documents: ['gap_v3'], expect: 'malformed', version: 1 },
    { name: 'forged_signature', pinned: ['k1'], accept_first: ['v1'], documents: ['forged_v2'], expect: 'bad_signature', version: 1 },
    { name: 'another_registry', pinned: ['k1'], accept_first: ['v1'], documents: ['other_registry_v2'], expect: 'identity_mismatch', version: 1 },
    { name: 'retired_key_signs_nothing', pinned: ['k1'], accept_first: ['v1', 'v2', 'v3'], documents: ['retired_signer_v4'], expect: 'expired', version: 3 },
    { name: 'all_or_nothing', pinned: ['k1'], accept_first: [], documents: ['v1', 'v2', 'forged_v2'], expect: 'rollback', version: 0 },
    { name: 'no_document_signed_by_a_pinned_key', pinned: ['k3'], accept_first: [], documents: ['v1', 'v2', 'v3', 'v4'], expect: 'unknown_issuer', version: 0 },
  ];
  for (const c of checks) {
    const chain = TrustBundleChain.fromPinned(base, registryId, pinnedOf(c.pinned));
    if (c.accept_first.length > 0) chain.advance(c.accept_first.map((n) => all[n]!), NOW_MS);
    let got = 'ok';
    try {
      chain.advance(c.documents.map((n) => all[n]!), NOW_MS);
    } catch (error) {
      if (!isIdentityError(error)) throw error;
      got = error.code;
    }
    if (got !== c.expect || chain.version !== c.version) throw new Error(`trust conformance: check ${c.name} gives ${got} at version ${chain.version}, expected ${c.expect} at ${c.version}`);
  }

  // ---- §15.11 a join token and an enrolment proof -----------------------------------------------
  const planned = new PlannedCrypto(base);
  const crypto = planned.crypto;
  const tokenId = derive(base, 'trust/join-token/id', 16);
  const tokenSecret = derive(base, 'trust/join-token/secret', 32);
  const tokenHash = same('join token hash', joinTokenHash(base, tokenId, tokenSecret), base.blake3(layout('parley/v1/join-token').fixed(tokenId, 16).fixed(tokenSecret, 32).bytes()));
  const agentSeed = derive(base, 'trust/ed25519/worker-7');
  const agent = base.ed25519.keyPairFromSeed(agentSeed);
  const enrolFields = { registryId, tokenId, tokenHash, agentId: 'worker-7', identityPublicKey: agent.publicKey, timestampMs: NOW_MS };
  const enrolBytes = same(
    'enrolment layout',
    enrolmentLayout(enrolFields),
    layout('parley/v1/registry-enrolment').fixed(registryId, 16).fixed(tokenId, 16).fixed(tokenHash, 32).str('worker-7').fixed(agent.publicKey, 32).i64(NOW_MS).bytes(),
  );

  // ---- §15.3 an agent-signed GetAgent -------------------------------------------------------------
  const serial = derive(base, 'trust/serial/worker-7', 16);
  const request = toBinary(GetAgentRequestSchema, create(GetAgentRequestSchema, { agentId: 'planner-1' }));
  const path = '/parley.v1.RegistryService/GetAgent';
  const nonce = derive(base, 'trust/agent-request-nonce', 16);
  planned.plan(nonce);
  const metadata = signAgentRequest(crypto, { agentId: 'worker-7', serial, secretKey: agent.secretKey }, { registryId, path, body: request }, NOW_MS);
  planned.assertDrained();
  const requestLayout = same(
    'agent request layout',
    agentRequestLayout(base, { registryId, path, body: request }, { agentId: 'worker-7', serial, timestampMs: NOW_MS, nonce }),
    layout('parley/v1/agent-request').fixed(registryId, 16).str(path).fixed(base.blake3(request), 32).i64(NOW_MS).fixed(nonce, 16).str('worker-7').fixed(serial, 16).bytes(),
  );
  if (!base.ed25519.verify(Buffer.from(metadata[AGENT_METADATA_KEYS.signature]!, 'base64url'), requestLayout, agent.publicKey)) {
    throw new Error('trust conformance: agent request signature does not cover the spec layout');
  }

  return {
    format: 'parley-conformance-vectors',
    version: 1,
    protocol: 'parley/v1',
    section: 'trust bundle lifecycle, enrolment and agent request signatures (docs/PROTOCOL.md §15.3, §15.9, §15.11)',
    generated_by: 'tools/conformance/generate.ts (tools/conformance/trust-vectors.ts)',
    notes: [
      'Normative text: docs/PROTOCOL.md §15.9 (signed trust bundle documents and the follower rule), §15.11 (join tokens and enrolment) and §15.3 (agent request signatures). Byte strings are lowercase hex; integers are JSON numbers below 2^53. A checker MUST fail on a top-level group it does not know.',
      'Every seed and value is derived from a label: BLAKE3(str("parley/v1/conformance-input") ‖ str(label) ‖ u32(length)) truncated to length (labels start with "trust/"). In production, issuer keys, token ids and secrets and nonces are fresh OS randomness.',
      'trust_bundles: a whole issuer rotation by one registry, K1 → K2: v1 K1 active; v2 K2 prepared (signed by K1); v3 K2 active and K1 retired (signed by K2); v4 K1 dropped. Each document: its fields, the §15.9 layout (issuers sorted by key id), the signature by the ACTIVE key, and the SignedTrustBundle encoding.',
      'trust_bundle_checks: a follower starting from the pinned bundle `pinned` (issuer names of `keys`) accepts the documents `accept_first` (each from trust_bundles or extra_documents), then the documents `documents` in one call at now_ms → `expect` (ok or the first failing code of §15.9; a call is all or nothing) and holds `version` afterwards (0: only the pinned bundle).',
      'enrolment: the join token hash the registry stores, the token text form, and the enrolment layout the new identity key signs (Ed25519 over `layout`).',
      'agent_request: GetAgent signed by the agent itself: request is the exact protobuf bytes sent; only their BLAKE3 digest is in the layout; metadata are the five entries sent.',
    ],
    now_ms: NOW_MS,
    keys: {
      k1: { ed25519_seed: toHex(seeds.k1), ed25519_public_key: toHex(k1.publicKey), key_id: toHex(k1.keyId) },
      k2: { ed25519_seed: toHex(seeds.k2), ed25519_public_key: toHex(k2.publicKey), key_id: toHex(k2.keyId) },
      k3: { ed25519_seed: toHex(seeds.k3), ed25519_public_key: toHex(k3.publicKey), key_id: toHex(k3.keyId) },
    },
    registry_id: toHex(registryId),
    trust_bundles: Object.fromEntries(rotation.map((d) => [`v${d.version}`, docJson(d)])),
    extra_documents: Object.fromEntries(Object.entries(extra).map(([n, d]) => [n, { ...(docJson(d) as Record<string, Json>), ...(n === 'forged_v2' ? { note: 'issued_at_ms changed after signing' } : {}) }])),
    trust_bundle_checks: checks,
    enrolment: {
      registry_id: toHex(registryId),
      token_id: toHex(tokenId),
      token_secret: toHex(tokenSecret),
      token_text: formatJoinToken(tokenId, tokenSecret),
      token_hash: toHex(tokenHash),
      agent_id: 'worker-7',
      identity_seed: toHex(agentSeed),
      identity_public_key: toHex(agent.publicKey),
      timestamp_ms: NOW_MS,
      layout: toHex(enrolBytes),
      signature: toHex(base.ed25519.sign(enrolBytes, agent.secretKey)),
    },
    agent_request: {
      registry_id: toHex(registryId),
      path,
      request: toHex(request),
      request_digest: toHex(base.blake3(request)),
      agent_id: 'worker-7',
      serial: toHex(serial),
      timestamp_ms: NOW_MS,
      nonce: toHex(nonce),
      layout: toHex(requestLayout),
      signer_seed: toHex(agentSeed),
      metadata: { ...metadata },
    },
  };
}
