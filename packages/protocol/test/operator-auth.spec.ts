// Operator request signatures: what is covered, and that malformed metadata
// is `unauthenticated` rather than an exception of another kind.
import { createCrypto, layout, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { keyId } from '@parley/identity';
import { beforeAll, describe, expect, it } from 'vitest';
import { OPERATOR_METADATA_KEYS, isProtocolError, operatorRequestLayout, parseOperatorMetadata, signOperatorRequest, verifyOperatorRequest } from '../src/index.js';

describe('operator request signatures', () => {
  let crypto: ParleyCrypto;
  beforeAll(async () => {
    crypto = await createCrypto();
  });

  const target = () => ({ registryId: new Uint8Array(16).fill(1), path: '/parley.v1.RegistryService/RevokeAgent', body: new Uint8Array([1, 2, 3]) });

  it('builds the documented layout byte for byte', () => {
    const t = target();
    const auth = { keyId: new Uint8Array(16).fill(2), timestampMs: 1_800_000_000_000, nonce: new Uint8Array(16).fill(3) };
    const expected = layout('parley/v1/operator-request')
      .fixed(t.registryId, 16)
      .str(t.path)
      .fixed(crypto.blake3(t.body), 32)
      .i64(auth.timestampMs)
      .fixed(auth.nonce, 16)
      .fixed(auth.keyId, 16)
      .bytes();
    expect(toHex(operatorRequestLayout(crypto, t, auth))).toBe(toHex(expected));
  });

  it('verifies its own signature and nothing that changes a covered field', () => {
    const op = crypto.ed25519.generateKeyPair();
    const metadata = signOperatorRequest(crypto, op, target(), 1_800_000_000_000);
    const auth = parseOperatorMetadata((k) => metadata[k])!;
    expect(auth.keyId).toEqual(keyId(crypto, op.publicKey));
    expect(verifyOperatorRequest(crypto, op.publicKey, auth, target())).toBe(true);
    expect(verifyOperatorRequest(crypto, op.publicKey, auth, { ...target(), body: new Uint8Array([1, 2, 4]) })).toBe(false);
    expect(verifyOperatorRequest(crypto, op.publicKey, auth, { ...target(), path: '/parley.v1.RegistryService/AddOperator' })).toBe(false);
    expect(verifyOperatorRequest(crypto, op.publicKey, auth, { ...target(), registryId: new Uint8Array(16) })).toBe(false);
    expect(verifyOperatorRequest(crypto, op.publicKey, { ...auth, timestampMs: auth.timestampMs + 1 }, target())).toBe(false);
    expect(verifyOperatorRequest(crypto, op.publicKey, { ...auth, nonce: new Uint8Array(16) }, target())).toBe(false);
    expect(verifyOperatorRequest(crypto, crypto.ed25519.generateKeyPair().publicKey, auth, target())).toBe(false);
    expect(verifyOperatorRequest(crypto, op.publicKey, { ...auth, keyId: new Uint8Array(3) }, target())).toBe(false);
  });

  it('parses metadata strictly', () => {
    const op = crypto.ed25519.generateKeyPair();
    const good = signOperatorRequest(crypto, op, target());
    expect(parseOperatorMetadata(() => undefined)).toBeUndefined();
    const bad = (changes: Record<string, string | undefined>) => {
      const m: Record<string, string | undefined> = { ...good, ...changes };
      try {
        parseOperatorMetadata((k) => m[k]);
      } catch (error) {
        return isProtocolError(error, 'unauthenticated');
      }
      return false;
    };
    expect(bad({ [OPERATOR_METADATA_KEYS.signature]: undefined })).toBe(true);
    expect(bad({ [OPERATOR_METADATA_KEYS.keyId]: 'ABCDEF' })).toBe(true);
    expect(bad({ [OPERATOR_METADATA_KEYS.keyId]: 'A'.repeat(32) })).toBe(true);
    expect(bad({ [OPERATOR_METADATA_KEYS.timestamp]: '-1' })).toBe(true);
    expect(bad({ [OPERATOR_METADATA_KEYS.timestamp]: '01' })).toBe(true);
    expect(bad({ [OPERATOR_METADATA_KEYS.timestamp]: '99999999999999999' })).toBe(true);
    expect(bad({ [OPERATOR_METADATA_KEYS.nonce]: '00' })).toBe(true);
    expect(bad({ [OPERATOR_METADATA_KEYS.signature]: 'AAAA' })).toBe(true);
    expect(bad({ [OPERATOR_METADATA_KEYS.signature]: '!!!' })).toBe(true);
  });
});
