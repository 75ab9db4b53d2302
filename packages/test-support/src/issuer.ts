/**
 * A test issuer: agents with certificates on the real clock, without a
 * registry round trip per agent. A gateway trusts them when its pinned trust
 * bundle carries the test issuer and it does not follow the registry's bundle
 * (`trust_bundle_follow: false`, PROTOCOL §15.9), which would drop it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Ed25519KeyPair, ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, createIssuerKey, issueCertificate, type IssuerKey } from '@parley/identity';
import type { AgentCertificate } from '@parley/proto';

export const DAY = 86_400_000;

/** An agent's identity as the SDK and the session layer take it (`LocalIdentity`), with its key pair. */
export interface TestAgent {
  readonly agentId: string;
  readonly signingKey: Ed25519KeyPair['secretKey'];
  readonly certificate: AgentCertificate;
  readonly keyPair: Ed25519KeyPair;
}

/** What an agent's certificate may differ in. */
export interface AgentOverrides {
  readonly agentType?: string;
  readonly capabilities?: readonly string[];
  readonly validFromMs?: number;
  readonly validUntilMs?: number;
  /** Another issuer (e.g. one no bundle trusts). */
  readonly issuer?: IssuerKey;
}

/** An issuer key, the trust bundle of it alone, and agents it certifies. */
export interface TestIssuer {
  readonly issuer: IssuerKey;
  readonly trustBundle: TrustBundle;
  /** A new agent (fresh key pair): type worker, capabilities tasks:read/tasks:write, valid from a day ago for 30 days. */
  agent(agentId: string, overrides?: AgentOverrides): TestAgent;
}

/** Mints a certificate for a fresh key pair. */
export function certifyAgent(crypto: ParleyCrypto, issuer: IssuerKey, agentId: string, overrides: AgentOverrides = {}): TestAgent {
  const keyPair = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, overrides.issuer ?? issuer, {
    agentId,
    identityPublicKey: keyPair.publicKey,
    agentType: overrides.agentType ?? 'worker',
    capabilities: [...(overrides.capabilities ?? ['tasks:read', 'tasks:write'])],
    validFromMs: overrides.validFromMs ?? now - DAY,
    validUntilMs: overrides.validUntilMs ?? now + 30 * DAY,
  });
  return { agentId, signingKey: keyPair.secretKey, certificate, keyPair };
}

/** A new test issuer. */
export function createTestIssuer(crypto: ParleyCrypto): TestIssuer {
  const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  return {
    issuer,
    trustBundle: TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]),
    agent: (agentId, overrides) => certifyAgent(crypto, issuer, agentId, overrides),
  };
}

/**
 * The registry's trust bundle (its `trust-bundle` file) plus `extra` issuers, written to `outFile`
 * for a gateway that does not follow the registry's bundle.
 * @returns the combined bundle (what agents should trust too)
 */
export function pinCombinedTrustBundle(crypto: ParleyCrypto, registryBundleFile: string, extra: readonly IssuerKey[], outFile: string): TrustBundle {
  const registryBundle = TrustBundle.fromJSON(crypto, readFileSync(registryBundleFile, 'utf8')).toJSON();
  const extraBundle = TrustBundle.from(crypto, extra.map((i) => ({ publicKey: i.publicKey }))).toJSON();
  const combined = TrustBundle.fromJSON(crypto, { ...registryBundle, issuers: [...registryBundle.issuers, ...extraBundle.issuers] });
  writeFileSync(outFile, JSON.stringify(combined.toJSON()));
  return combined;
}
