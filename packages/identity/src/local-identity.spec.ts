import { fromHex } from '@parley/crypto-core';
import type { AgentCertificate } from '@parley/proto';
import { beforeAll, describe, expect, it } from 'vitest';
import { createWorld, expectCode, type World } from '../test/fixtures.js';
import { assertLocalIdentity } from './local-identity.js';

describe('assertLocalIdentity', () => {
  let w: World;
  let cert: AgentCertificate;
  beforeAll(async () => {
    w = await createWorld();
    cert = w.issue();
  });
  // The fixtures' agent key (seed 22…22) is the one the certificate names.
  const key = () => w.crypto.ed25519.keyPairFromSeed(fromHex('22'.repeat(32))).secretKey;

  it('accepts the key the certificate names, under the certificate’s agent id', () => {
    const identity = { agentId: 'worker-7', signingKey: key(), certificate: cert };
    expect(assertLocalIdentity(w.crypto, identity)).toBe(identity);
    expect(assertLocalIdentity(w.crypto, identity)).toBe(identity); // again, from the derived key it remembers
  });

  it('refuses a signing key that is not the certificate’s: identity_mismatch', () => {
    const other = w.crypto.ed25519.generateKeyPair().secretKey;
    const e = expectCode(() => assertLocalIdentity(w.crypto, { agentId: 'worker-7', signingKey: other, certificate: cert }), 'identity_mismatch');
    expect(e.message).toMatch(/signingKey does not belong to the certificate of worker-7/);
  });

  it('refuses another agent id than the certificate’s: identity_mismatch', () => {
    expectCode(() => assertLocalIdentity(w.crypto, { agentId: 'worker-8', signingKey: key(), certificate: cert }), 'identity_mismatch');
  });

  it('refuses what is not an identity: malformed, naming the field', () => {
    const good = { agentId: 'worker-7', signingKey: key(), certificate: cert };
    expect(expectCode(() => assertLocalIdentity(undefined as never, good), 'malformed').message).toMatch(/crypto/);
    expectCode(() => assertLocalIdentity(w.crypto, null as never), 'malformed');
    expect(expectCode(() => assertLocalIdentity(w.crypto, { ...good, signingKey: new Uint8Array(64) as never }), 'malformed').message).toMatch(/signingKey must be a SecretKey/);
    expectCode(() => assertLocalIdentity(w.crypto, { ...good, signingKey: w.crypto.x25519.generateKeyPair().secretKey }), 'malformed');
    expectCode(() => assertLocalIdentity(w.crypto, { ...good, agentId: 'Not An Id' }), 'malformed');
    expectCode(() => assertLocalIdentity(w.crypto, { ...good, certificate: { ...cert, identityPublicKey: new Uint8Array(31) } }), 'malformed');
    const wiped = key();
    wiped.wipe();
    expect(expectCode(() => assertLocalIdentity(w.crypto, { ...good, signingKey: wiped }), 'malformed').message).toMatch(/wiped/);
  });
});
