// Test vectors: the W3C CCG did:key vectors (independent), and the
// certificate regression vector (self-generated; see its "source" field).
import { readFileSync } from 'node:fs';
import { concatBytes, createCrypto, fromHex, i64be, toHex, u32be, utf8, type ParleyCrypto } from '@parley/crypto-core';
import { base58 } from '@scure/base';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  TrustBundle,
  certificateTbs,
  createIssuerKey,
  decodeCertificate,
  encodeCertificate,
  fromDidKey,
  issueCertificate,
  keyId,
  toDidKey,
  verifyCertificate,
} from '../src/index.js';

function load<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`./vectors/${name}`, import.meta.url), 'utf8')) as T;
}

interface DidKeyVector { seed: string; public_key_base58: string; did: string }
interface CertificateVector {
  source: string;
  issuer_seed: string;
  issuer_public_key: string;
  issuer_key_id: string;
  agent_seed: string;
  agent_public_key: string;
  agent_did_key: string;
  agent_id: string;
  agent_type: string;
  capabilities_in: string[];
  capabilities: string[];
  valid_from_ms: number;
  valid_until_ms: number;
  serial: string;
  tbs: string;
  signature: string;
  encoded: string;
}

let crypto: ParleyCrypto;
beforeAll(async () => {
  crypto = await createCrypto();
});

describe('did:key (W3C CCG did-method-key test vectors, Ed25519)', () => {
  const { vectors } = load<{ vectors: DidKeyVector[] }>('did-key-ed25519.json');

  it.each(vectors)('$did', (v) => {
    const { publicKey } = crypto.ed25519.keyPairFromSeed(fromHex(v.seed));
    expect(toHex(publicKey)).toBe(toHex(base58.decode(v.public_key_base58)));
    expect(toDidKey(publicKey)).toBe(v.did);
    expect(toHex(fromDidKey(v.did))).toBe(toHex(publicKey));
  });
});

describe('agent certificate (self-generated regression vector)', () => {
  const v = load<CertificateVector>('agent-certificate.json');

  it('is labelled as self-generated', () => {
    expect(v.source.startsWith('self-generated regression vector')).toBe(true);
  });

  it('the TBS layout matches a by-hand encoding of docs/PROTOCOL.md §3.2', () => {
    const str = (s: string) => concatBytes(u32be(utf8(s).length), utf8(s));
    const byHand = concatBytes(
      str('parley/v1/agent-certificate'),
      u32be(1),
      str(v.agent_id),
      fromHex(v.agent_public_key),
      str(v.agent_type),
      u32be(v.capabilities.length),
      ...v.capabilities.map(str),
      i64be(BigInt(v.valid_from_ms)),
      i64be(BigInt(v.valid_until_ms)),
      fromHex(v.serial),
      fromHex(v.issuer_key_id),
    );
    expect(toHex(byHand)).toBe(v.tbs);
  });

  it('issuing reproduces the key id, TBS, signature and encoding', () => {
    const issuer = createIssuerKey(crypto, crypto.ed25519.keyPairFromSeed(fromHex(v.issuer_seed)));
    const agent = crypto.ed25519.keyPairFromSeed(fromHex(v.agent_seed));
    expect(toHex(issuer.publicKey)).toBe(v.issuer_public_key);
    expect(toHex(issuer.keyId)).toBe(v.issuer_key_id);
    expect(toHex(keyId(crypto, issuer.publicKey))).toBe(v.issuer_key_id);
    expect(toHex(agent.publicKey)).toBe(v.agent_public_key);
    expect(toDidKey(agent.publicKey)).toBe(v.agent_did_key);

    const cert = issueCertificate(crypto, issuer, {
      agentId: v.agent_id,
      identityPublicKey: agent.publicKey,
      agentType: v.agent_type,
      capabilities: v.capabilities_in,
      validFromMs: v.valid_from_ms,
      validUntilMs: v.valid_until_ms,
      serial: fromHex(v.serial),
    });
    expect(cert.capabilities).toEqual(v.capabilities);
    expect(toHex(certificateTbs(cert))).toBe(v.tbs);
    expect(toHex(cert.signature)).toBe(v.signature);
    expect(toHex(encodeCertificate(cert))).toBe(v.encoded);
  });

  it('the encoded certificate verifies against a bundle of the issuer key', () => {
    const bundle = TrustBundle.from(crypto, [{ keyId: fromHex(v.issuer_key_id), publicKey: fromHex(v.issuer_public_key) }]);
    const verified = verifyCertificate(crypto, decodeCertificate(fromHex(v.encoded)), { trustBundle: bundle, nowMs: v.valid_from_ms });
    expect(verified.didKey).toBe(v.agent_did_key);
    expect(verified.capabilities).toEqual(v.capabilities);
    expect(crypto.ed25519.verify(fromHex(v.signature), fromHex(v.tbs), fromHex(v.issuer_public_key))).toBe(true);
  });
});
