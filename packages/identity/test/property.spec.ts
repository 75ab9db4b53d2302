// Property tests: a single flipped bit anywhere in the signed contents (any
// TBS field, or the signature) makes verification fail; a flipped bit in the
// protobuf encoding never yields a certificate that vouches for anything else.
import { createCrypto, fromHex, utf8, type ParleyCrypto } from '@parley/crypto-core';
import type { AgentCertificate } from '@parley/proto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  IdentityError,
  TrustBundle,
  createIssuerKey,
  encodeCertificate,
  decodeCertificate,
  issueCertificate,
  verifyCertificate,
  type IdentityErrorCode,
  AGENT_ID_PATTERN,
  AGENT_TYPE_PATTERN,
  CAPABILITY_PATTERN,
} from '../src/index.js';

const T0 = 1_700_000_000_000;
const PRE_SIGNATURE_CODES: IdentityErrorCode[] = ['malformed', 'unsupported_version', 'unknown_issuer', 'bad_certificate'];
const FIELDS = [
  'version',
  'agentId',
  'identityPublicKey',
  'agentType',
  'capabilities',
  'validFromMs',
  'validUntilMs',
  'serial',
  'issuerKeyId',
  'signature',
] as const;

let crypto: ParleyCrypto;
let cert: AgentCertificate;
let bundle: TrustBundle;

beforeAll(async () => {
  crypto = await createCrypto();
  const issuer = createIssuerKey(crypto, crypto.ed25519.keyPairFromSeed(fromHex('44'.repeat(32))));
  bundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
  cert = issueCertificate(crypto, issuer, {
    agentId: 'gateway-3.eu:prod',
    identityPublicKey: crypto.ed25519.keyPairFromSeed(fromHex('55'.repeat(32))).publicKey,
    agentType: 'gateway',
    capabilities: ['msg:relay', 'msg:send', 'audit/write', 'task:run'],
    validFromMs: T0,
    validUntilMs: T0 + 86_400_000,
  });
});

function flipBytes(bytes: Uint8Array, bit: number): Uint8Array {
  const out = bytes.slice();
  const i = Math.floor(bit / 8) % out.length;
  out[i]! ^= 1 << (bit % 8);
  return out;
}

/** Flips one bit of a string's UTF-8 encoding (lenient decoding, as a careless peer would). */
function flipString(s: string, bit: number): string {
  return new TextDecoder().decode(flipBytes(utf8(s), bit));
}

function flipField(c: AgentCertificate, field: (typeof FIELDS)[number], bit: number, index: number): AgentCertificate {
  switch (field) {
    case 'version':
      return { ...c, version: (c.version ^ (1 << (bit % 32))) >>> 0 };
    case 'agentId':
    case 'agentType':
      return { ...c, [field]: flipString(c[field], bit) };
    case 'capabilities': {
      const caps = [...c.capabilities];
      const i = index % caps.length;
      caps[i] = flipString(caps[i]!, bit);
      return { ...c, capabilities: caps };
    }
    case 'validFromMs':
    case 'validUntilMs':
      return { ...c, [field]: BigInt.asIntN(64, c[field] ^ (1n << BigInt(bit % 64))) };
    default:
      return { ...c, [field]: flipBytes(c[field], bit) };
  }
}

describe('single-bit flips', () => {
  it('any bit flipped in any TBS field or the signature makes verification fail', () => {
    expect(verifyCertificate(crypto, cert, { trustBundle: bundle, nowMs: T0 }).agentType).toBe('gateway');
    fc.assert(
      fc.property(fc.constantFrom(...FIELDS), fc.nat({ max: 8 * 64 - 1 }), fc.nat(), (field, bit, index) => {
        const tampered = flipField(cert, field, bit, index);
        let thrown: unknown;
        try {
          verifyCertificate(crypto, tampered, { trustBundle: bundle, nowMs: T0 });
        } catch (error) {
          thrown = error;
        }
        expect(thrown).toBeInstanceOf(IdentityError);
        expect(PRE_SIGNATURE_CODES).toContain((thrown as IdentityError).code);
      }),
      { numRuns: 2000 },
    );
  });

  it('the same holds for random certificates', () => {
    const issuer = createIssuerKey(crypto, crypto.ed25519.keyPairFromSeed(fromHex('66'.repeat(32))));
    const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
    const arbCert = fc
      .record({
        agentId: fc.stringMatching(AGENT_ID_PATTERN),
        agentType: fc.stringMatching(AGENT_TYPE_PATTERN),
        capabilities: fc.uniqueArray(fc.stringMatching(CAPABILITY_PATTERN), { minLength: 1, maxLength: 8 }),
        identityPublicKey: fc.uint8Array({ minLength: 32, maxLength: 32 }),
        serial: fc.uint8Array({ minLength: 16, maxLength: 16 }),
        validFromMs: fc.integer({ min: 0, max: T0 }),
        lifetime: fc.integer({ min: 1, max: 10 * 86_400_000 }),
      })
      .map(({ lifetime, ...f }) => issueCertificate(crypto, issuer, { ...f, validUntilMs: f.validFromMs + lifetime }));
    fc.assert(
      fc.property(arbCert, fc.constantFrom(...FIELDS), fc.nat({ max: 8 * 128 - 1 }), fc.nat(), (c, field, bit, index) => {
        const nowMs = Number(c.validFromMs);
        expect(verifyCertificate(crypto, c, { trustBundle, nowMs }).agentId).toBe(c.agentId);
        const tampered = flipField(c, field, bit, index);
        let thrown: unknown;
        try {
          verifyCertificate(crypto, tampered, { trustBundle, nowMs });
        } catch (error) {
          thrown = error;
        }
        expect(thrown).toBeInstanceOf(IdentityError);
        expect(PRE_SIGNATURE_CODES).toContain((thrown as IdentityError).code);
      }),
      { numRuns: 500 },
    );
  });

  it('every bit flipped in the protobuf encoding either fails or verifies to the same contents (exhaustive)', () => {
    const bytes = encodeCertificate(cert);
    const original = verifyCertificate(crypto, cert, { trustBundle: bundle, nowMs: T0 });
    let rejected = 0;
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      let verified;
      try {
        verified = verifyCertificate(crypto, decodeCertificate(flipBytes(bytes, bit)), { trustBundle: bundle, nowMs: T0 });
      } catch (error) {
        expect(error).toBeInstanceOf(IdentityError);
        rejected++;
        continue;
      }
      expect(verified).toEqual(original);
    }
    expect(rejected).toBeGreaterThan(bytes.length * 8 * 0.9);
  });
});
