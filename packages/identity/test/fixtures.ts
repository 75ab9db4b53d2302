// Shared test fixtures: one crypto instance, deterministic issuer and agent
// keys, and an `expectCode` helper that insists on an IdentityError with the
// given code (never a raw TypeError).
import { createCrypto, fromHex, type ParleyCrypto } from '@parley/crypto-core';
import type { AgentCertificate } from '@parley/proto';
import { expect } from 'vitest';
import {
  IdentityError,
  TrustBundle,
  createIssuerKey,
  issueCertificate,
  type CertificateFields,
  type IdentityErrorCode,
  type IssuerKey,
} from '../src/index.js';

/** Values of every wrong JavaScript type, fed to each public function. */
export const WRONG_TYPES: unknown[] = [undefined, null, 0, -1, 1.5, 1n, 'NOT valid', true, [], [1, 2], {}, new ArrayBuffer(32), () => 1, Symbol('s')];

/** Fixed times: validity is [T0, T0 + DAY). */
export const T0 = 1_700_000_000_000;
export const DAY = 86_400_000;

export interface World {
  crypto: ParleyCrypto;
  issuer: IssuerKey;
  agent: { publicKey: Uint8Array };
  bundle: TrustBundle;
  fields: CertificateFields;
  issue(overrides?: Partial<CertificateFields>): AgentCertificate;
}

export async function createWorld(): Promise<World> {
  const crypto = await createCrypto();
  const issuer = createIssuerKey(crypto, crypto.ed25519.keyPairFromSeed(fromHex('11'.repeat(32))));
  const agent = crypto.ed25519.keyPairFromSeed(fromHex('22'.repeat(32)));
  const fields: CertificateFields = {
    agentId: 'worker-7',
    identityPublicKey: agent.publicKey,
    agentType: 'worker',
    capabilities: ['msg:send', 'task:run'],
    validFromMs: T0,
    validUntilMs: T0 + DAY,
    serial: fromHex('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf'),
  };
  return {
    crypto,
    issuer,
    agent: { publicKey: agent.publicKey },
    bundle: TrustBundle.from(crypto, [{ keyId: issuer.keyId, publicKey: issuer.publicKey }]),
    fields,
    issue: (overrides = {}) => issueCertificate(crypto, issuer, { ...fields, ...overrides }),
  };
}

/** Runs `fn` and asserts it throws an IdentityError with `code`, the code in the message. */
export function expectCode(fn: () => unknown, code: IdentityErrorCode): IdentityError {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown, `expected an IdentityError [${code}], got ${String(thrown)}`).toBeInstanceOf(IdentityError);
  const e = thrown as IdentityError;
  expect(e.code, e.message).toBe(code);
  expect(e.name).toBe('IdentityError');
  expect(e.message.startsWith(`[${code}] `)).toBe(true);
  return e;
}

/** WRONG_TYPES without the values that are valid millisecond times / counts (0). */
export const NOT_MS: unknown[] = WRONG_TYPES.filter((v) => !(typeof v === 'number' && Number.isSafeInteger(v) && v >= 0));
