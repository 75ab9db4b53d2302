import assert from 'node:assert/strict';
import { createCrypto } from '@parley/crypto-core';
import {
  MemoryRevocationSet,
  TrustBundle,
  createIssuerKey,
  decodeCertificate,
  encodeCertificate,
  isIdentityError,
  issueCertificate,
  verifyCertificate,
} from '../src/index.js';

const crypto = await createCrypto();
const now = Date.now();

// Registry: an issuer key signs a certificate for an agent's identity key,
// and publishes its trust bundle.
const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
const agent = crypto.ed25519.generateKeyPair();
const cert = issueCertificate(crypto, issuer, {
  agentId: 'planner-1',
  identityPublicKey: agent.publicKey,
  agentType: 'planner',
  capabilities: ['task:delegate', 'msg:send'], // any order: stored sorted
  validFromMs: now,
  validUntilMs: now + 24 * 60 * 60 * 1000,
});
const wire = encodeCertificate(cert); // protobuf bytes, at most 4096
const bundleJson = JSON.stringify(TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]));

// Verifier (a peer agent, a gateway): pins the bundle, keeps a fresh revocation copy.
const trustBundle = TrustBundle.fromJSON(crypto, bundleJson);
const revocations = new MemoryRevocationSet({ maxAgeMs: 60_000 });
revocations.apply([], 0, now); // heartbeat: list version 0, nothing revoked, fresh as of now

const verified = verifyCertificate(crypto, decodeCertificate(wire), {
  trustBundle,
  nowMs: now,
  revocations,
  expectedAgentId: 'planner-1',
});
assert.deepEqual(verified.capabilities, ['msg:send', 'task:delegate']);
assert.ok(verified.didKey.startsWith('did:key:z6Mk'));

// Revoking the agent id revokes every certificate it holds, with a stable code.
revocations.apply([{ kind: 'agent', agentId: 'planner-1', reason: 'key compromised', revokedAtMs: now }], 1, now);
assert.throws(
  () => verifyCertificate(crypto, cert, { trustBundle, nowMs: now, revocations }),
  (error) => isIdentityError(error, 'revoked'),
);
