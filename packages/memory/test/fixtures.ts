// Test fixtures: one crypto instance, a test issuer and certified agents.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, createIssuerKey, issueCertificate, type IssuerKey } from '@parley/identity';
import { expect } from 'vitest';
import { MemoryError, type MemoryErrorCode, type MemoryIdentity } from '../src/index.js';

export const DAY = 86_400_000;

export interface TestAgent extends MemoryIdentity {
  readonly publicKey: Uint8Array;
}

export interface World {
  readonly crypto: ParleyCrypto;
  readonly issuer: IssuerKey;
  readonly trustBundle: TrustBundle;
  agent(agentId: string, agentType?: string): TestAgent;
}

export async function createWorld(): Promise<World> {
  const crypto = await createCrypto();
  const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
  return {
    crypto,
    issuer,
    trustBundle,
    agent(agentId, agentType = 'worker') {
      const kp = crypto.ed25519.generateKeyPair();
      const now = Date.now();
      const certificate = issueCertificate(crypto, issuer, {
        agentId,
        identityPublicKey: kp.publicKey,
        agentType,
        capabilities: [],
        validFromMs: now - DAY,
        validUntilMs: now + 30 * DAY,
      });
      return { agentId, signingKey: kp.secretKey, certificate, publicKey: kp.publicKey };
    },
  };
}

/** Runs `fn` and insists on a MemoryError with `code`. */
export async function expectCode(fn: () => unknown, code: MemoryErrorCode): Promise<MemoryError> {
  let thrown: unknown;
  try {
    await fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, `expected a MemoryError ${code}`).toBeInstanceOf(MemoryError);
  expect((thrown as MemoryError).code, (thrown as Error).message).toBe(code);
  return thrown as MemoryError;
}
