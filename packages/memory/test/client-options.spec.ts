// MemoryClient refuses a configuration that cannot work when it is built, with a MemoryError, rather than
// failing later with a misleading code or another package's error: a signing key that is not the
// certificate's (create() used to fail with `[bad_signature] CREATE entry signature does not verify`), a
// signing key that is bytes rather than a SecretKey (a CryptoError at the first call), an address that is
// not host:port (grpc-js's plain `Error: Could not parse target name ""`), a missing crypto (a TypeError).
import { beforeAll, describe, expect, it } from 'vitest';
import { MemoryClient, MemoryError, type MemoryClientOptions, type MemoryErrorCode } from '../src/index.js';
import { createWorld, type TestAgent, type World } from './fixtures.js';

let w: World;
let me: TestAgent;

beforeAll(async () => {
  w = await createWorld();
  me = w.agent('worker-3');
});

/** The code the constructor refuses `patch` with, or 'constructed' (the client is closed at once). */
function construction(patch: Record<string, unknown>): MemoryErrorCode | 'constructed' {
  const options = { crypto: w.crypto, identity: me, address: '127.0.0.1:1', serviceId: 'gw-1', trustBundle: w.trustBundle, ...patch } as MemoryClientOptions;
  try {
    new MemoryClient(options).close();
    return 'constructed';
  } catch (error) {
    expect(error, String(error)).toBeInstanceOf(MemoryError);
    return (error as MemoryError).code;
  }
}

describe('MemoryClient construction', () => {
  it('refuses a signing key that is not the certificate’s, and an agent id that is not the certificate’s: identity_mismatch', () => {
    expect(construction({ identity: { ...me, signingKey: w.crypto.ed25519.generateKeyPair().secretKey } })).toBe('identity_mismatch');
    expect(construction({ identity: { ...me, agentId: 'worker-4' } })).toBe('identity_mismatch');
    expect(construction({})).toBe('constructed');
  });

  it('refuses a signing key given as bytes, a missing crypto or identity: malformed (a MemoryError, not a CryptoError or TypeError)', () => {
    expect(construction({ identity: { ...me, signingKey: new Uint8Array(64) } })).toBe('malformed');
    expect(construction({ crypto: undefined })).toBe('malformed');
    expect(construction({ identity: undefined })).toBe('malformed');
    expect(construction({ identity: { ...me, certificate: undefined } })).toBe('malformed');
    expect(construction({ trustBundle: undefined })).toBe('malformed');
    expect(construction({ serviceId: undefined })).toBe('malformed');
    expect(() => new MemoryClient(null as never)).toThrow(MemoryError);
  });

  it('refuses an address that is not host:port: malformed', () => {
    for (const address of ['', 'localhost', ':50051', '127.0.0.1:99999', 42, undefined]) expect(construction({ address }), String(address)).toBe('malformed');
    for (const address of ['localhost:50051', '[::1]:50051', 'gateway.example:443']) expect(construction({ address }), address).toBe('constructed');
  });
});
