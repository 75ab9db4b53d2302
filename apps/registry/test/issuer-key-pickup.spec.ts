// Two registry processes on one database; `issuer rotate` ran against the first, and the second's data
// directory lacks the prepared key's file. At activation the second logs that it cannot sign — and must
// not then log that it signs with the new key (an operator review found both lines, one after the
// other) — and it signs again as soon as the key file is copied into its directory: no restart.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createCrypto, toHex } from '@parley/crypto-core';
import { createIssuerKey, keyId } from '@parley/identity';
import { tempDir } from '@parley/test-support';
import { pino, type Logger } from 'pino';
import { afterAll, expect, it } from 'vitest';
import { IssuerKeyFiles } from '../src/issuer-keys.js';
import { IssuerKeyRing } from '../src/service/issuer-lifecycle.js';
import { RegistryStore, applyMigrations, openDatabase, writeKeyFile } from '../src/index.js';

const dir = tempDir('registry-key-pickup');
afterAll(() => dir.remove());

function recordingLogger(): { logger: Logger; lines: { level: number; msg: string }[] } {
  const lines: { level: number; msg: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as { level: number; msg: string });
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

async function until(what: string, condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

it('a process without the new active key says so once (no "signing with" line), and picks the key file up when it appears', async () => {
  const crypto = await createCrypto();
  const db = await openDatabase({});
  const rings: IssuerKeyRing[] = [];
  try {
    await applyMigrations(db);
    const store = new RegistryStore(db, crypto);
    const k1 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const operator = crypto.ed25519.generateKeyPair();
    await store.initialise({ registryId: crypto.randomBytes(16), issuer: k1, operator: { publicKey: operator.publicKey, keyId: keyId(crypto, operator.publicKey), name: 'admin' }, nowMs: Date.now() });
    const ring = (name: string) => {
      const path = join(dir.path, name);
      mkdirSync(path, { recursive: true });
      const keyFiles = new IssuerKeyFiles(crypto, path, undefined);
      writeKeyFile(crypto, keyFiles.activePath, 'parley-registry-issuer-key', k1);
      const log = recordingLogger();
      const r = new IssuerKeyRing({ crypto, store, keyFiles, logger: log.logger, onBundleVersion: () => undefined, keyFileRecheckMs: 0 });
      rings.push(r);
      return { ring: r, keyFiles, lines: log.lines };
    };
    const first = ring('first');
    const second = ring('second');
    await first.ring.load();
    await second.ring.load();

    // `issuer rotate` against the first process: k2 prepared (its file only in the first's directory), due now.
    const k2 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    first.keyFiles.writePrepared(k2);
    const { version } = await store.prepareIssuer(k2, { activatesAtMs: Date.now(), retireGraceMs: 60_000 }, (id) => first.ring.key(id), Date.now());
    first.ring.adoptPrepared(k2, version);
    first.ring.schedule();
    await until('the first process activates k2', () => toHex(first.ring.activeKeyId ?? new Uint8Array()) === toHex(k2.keyId));
    expect(toHex(first.ring.active().keyId)).toBe(toHex(k2.keyId));

    // The second follows the database: k2 is active, and it does not hold it.
    second.ring.schedule();
    await until('the second process follows', () => toHex(second.ring.activeKeyId ?? new Uint8Array()) === toHex(k2.keyId));
    await until('its error line', () => second.lines.some((l) => l.level === 50));
    const error = second.lines.find((l) => l.level === 50)!;
    expect(error.msg).toMatch(/the active issuer key is not in this data directory: .*no restart needed/);
    // It says what stops working — the revocation list too (gateways following this process fail closed), which
    // the operations guide once left out (it listed register, enrol, key rotation and revoke).
    expect(error.msg).toMatch(/refuses register, enrol, key rotation and the revocation list \(GetRevocationList, WatchRevocations.*gateways following it fail closed/);
    expect(second.lines.map((l) => l.msg)).not.toContain('signing with the new active issuer key');
    expect(() => second.ring.active()).toThrow(/does not hold the active issuer key .*picked up within seconds, no restart needed/);

    // The operator copies the key file over (the first process has already renamed it to issuer-key.json):
    // the next call signs, with no restart.
    copyFileSync(first.keyFiles.activePath, second.keyFiles.preparedPath(k2.keyId));
    expect(toHex(second.ring.active().keyId)).toBe(toHex(k2.keyId));
    expect(toHex(second.keyFiles.keyIdOf(second.keyFiles.activePath)!)).toBe(toHex(k2.keyId)); // promoted over the retired key's file
    expect(second.lines.filter((l) => l.level === 30).map((l) => l.msg).join('\n')).toMatch(/signing with the active issuer key/);
  } finally {
    for (const r of rings) {
      await r.stop();
      r.wipe();
    }
    await db.close();
  }
});
