// The issuer keys a registry process holds are wiped once it has stopped (every call ended): a stopped
// server keeps no signing key in memory.
import { createCrypto } from '@parley/crypto-core';
import { createIssuerKey, keyId, type IssuerKey } from '@parley/identity';
import { tempDir } from '@parley/test-support';
import { pino } from 'pino';
import { afterAll, expect, it } from 'vitest';
import { IssuerKeyFiles } from '../src/issuer-keys.js';
import { DEFAULT_SETTINGS, RegistryServer, RegistryStore, applyMigrations, openDatabase, writeKeyFile } from '../src/index.js';

const dir = tempDir('registry-key-wipe');
afterAll(() => dir.remove());

it('wipes every issuer key it loaded when the server stops', async () => {
  const crypto = await createCrypto();
  const db = await openDatabase({});
  try {
    await applyMigrations(db);
    const store = new RegistryStore(db, crypto);
    const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const loaded: IssuerKey[] = [];
    class RecordingKeyFiles extends IssuerKeyFiles {
      override read(path: string): IssuerKey {
        const key = super.read(path);
        loaded.push(key);
        return key;
      }
    }
    const keyFiles = new RecordingKeyFiles(crypto, dir.path, undefined);
    writeKeyFile(crypto, keyFiles.activePath, 'parley-registry-issuer-key', issuer);
    const operator = crypto.ed25519.generateKeyPair();
    await store.initialise({ registryId: crypto.randomBytes(16), issuer, operator: { publicKey: operator.publicKey, keyId: keyId(crypto, operator.publicKey), name: 'admin' }, nowMs: Date.now() });
    const server = new RegistryServer({ crypto, store, keyFiles, logger: pino({ level: 'silent' }), settings: DEFAULT_SETTINGS });
    await server.start('127.0.0.1:0');
    expect(loaded.length).toBeGreaterThanOrEqual(1);
    expect(loaded.every((k) => !k.secretKey.isWiped)).toBe(true);
    await server.stop(0);
    expect(loaded.every((k) => k.secretKey.isWiped)).toBe(true);
  } finally {
    await db.close();
  }
});
