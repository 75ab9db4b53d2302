// Test fixtures: an issuer, a trust bundle and agents with certificates, plus
// a helper that runs a full identity-bound handshake in memory.
import { createCrypto, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate, type IssuerKey } from '@parley/identity';
import type { AgentCertificate } from '@parley/proto';
import { InitiatorHandshake, ResponderHandshake, type HandshakeConfig, type LocalIdentity, type Session } from '../src/index.js';

export const NOW = 1_800_000_000_000;
export const DAY = 86_400_000;

export interface Agent extends LocalIdentity {
  readonly keyPair: Ed25519KeyPair;
}

export interface World {
  readonly crypto: ParleyCrypto;
  readonly issuer: IssuerKey;
  readonly trustBundle: TrustBundle;
  readonly revocations: MemoryRevocationSet;
  readonly clock: { now: number; (): number };
  agent(agentId: string, overrides?: Partial<{ validFromMs: number; validUntilMs: number; issuer: IssuerKey; agentType: string }>): Agent;
  config(agent: LocalIdentity, extra?: Partial<HandshakeConfig>): HandshakeConfig;
}

export async function createWorld(): Promise<World> {
  const crypto = await createCrypto();
  const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
  const revocations = new MemoryRevocationSet({ maxAgeMs: 60_000 });
  const clock = Object.assign(() => clock.now, { now: NOW });
  revocations.apply([], 0, NOW);
  return {
    crypto,
    issuer,
    trustBundle,
    revocations,
    clock,
    agent(agentId, overrides = {}) {
      const keyPair = crypto.ed25519.generateKeyPair();
      const certificate: AgentCertificate = issueCertificate(crypto, overrides.issuer ?? issuer, {
        agentId,
        identityPublicKey: keyPair.publicKey,
        agentType: overrides.agentType ?? 'worker',
        capabilities: ['tasks:read', 'tasks:write'],
        validFromMs: overrides.validFromMs ?? NOW - DAY,
        validUntilMs: overrides.validUntilMs ?? NOW + 30 * DAY,
      });
      return { agentId, signingKey: keyPair.secretKey, certificate, keyPair };
    },
    config(agent, extra = {}) {
      return { identity: agent, trustBundle, revocations, clock, ...extra };
    },
  };
}

/** Runs a whole handshake between two configs; returns both sessions. */
export function handshake(crypto: ParleyCrypto, initiator: HandshakeConfig, responder: HandshakeConfig): { a: Session; b: Session } {
  const { handshake: i, frame: f1 } = InitiatorHandshake.start(crypto, initiator, responder.identity.agentId);
  const { handshake: r, frame: f2 } = ResponderHandshake.accept(crypto, responder, f1);
  const { frame: f3, session: a } = i.receive(f2);
  const b = r.receive(f3);
  return { a, b };
}
