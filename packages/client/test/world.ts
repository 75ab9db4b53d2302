// What the inbox, outbox and durable-state tests share: one issuer, its trust bundle, a fresh revocation
// set, and agents whose certificates are valid a day either side of now.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate } from '@parley/identity';
import type { LocalIdentity } from '@parley/session';

const DAY = 86_400_000;

export type TestAgent = LocalIdentity & { readonly publicKey: Uint8Array };

export interface TestWorld {
  readonly crypto: ParleyCrypto;
  readonly trustBundle: TrustBundle;
  readonly revocations: MemoryRevocationSet;
  /** A worker agent with a fresh key pair and a certificate of the world's issuer. */
  agent(agentId: string): TestAgent;
}

export async function testWorld(): Promise<TestWorld> {
  const crypto = await createCrypto();
  const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
  const revocations = new MemoryRevocationSet({ maxAgeMs: 60 * 60_000 });
  revocations.apply([], 0, Date.now());
  const agent = (agentId: string): TestAgent => {
    const keyPair = crypto.ed25519.generateKeyPair();
    const now = Date.now();
    const certificate = issueCertificate(crypto, issuer, { agentId, identityPublicKey: keyPair.publicKey, agentType: 'worker', capabilities: [], validFromMs: now - DAY, validUntilMs: now + DAY });
    return { agentId, signingKey: keyPair.secretKey, certificate, publicKey: keyPair.publicKey };
  };
  return { crypto, trustBundle, revocations, agent };
}
