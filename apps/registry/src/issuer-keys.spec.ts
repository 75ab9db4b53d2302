import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCrypto, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey, type IssuerKey } from '@parley/identity';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IssuerKeyFiles } from './issuer-keys.js';
import { writeKeyFile } from './key-file.js';
import type { IssuerRow } from './store.js';

let crypto: ParleyCrypto;
let dir: string;
beforeAll(async () => {
  crypto = await createCrypto();
  dir = mkdtempSync(join(tmpdir(), 'parley-issuer-keys-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const row = (key: IssuerKey, state: IssuerRow['state']): IssuerRow => ({
  keyId: key.keyId,
  publicKey: key.publicKey,
  createdAtMs: 0,
  notAfterMs: state === 'retired' ? 1 : null,
  active: state === 'active',
  state,
  activatesAtMs: null,
  retireGraceMs: null,
});

describe('IssuerKeyFiles (docs/PROTOCOL.md §15.9)', () => {
  it('loads the active and the prepared key; finishes an activation whose rename was interrupted; refuses a data directory without the active key', () => {
    const files = new IssuerKeyFiles(crypto, dir, undefined);
    const k1 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const k2 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    writeKeyFile(crypto, files.activePath, 'parley-registry-issuer-key', k1);
    files.writePrepared(k2);
    // k2 prepared: both held.
    let loaded = files.loadFor([row(k1, 'active'), row(k2, 'prepared')]);
    expect(loaded.keys.map((k) => toHex(k.keyId))).toEqual([toHex(k1.keyId), toHex(k2.keyId)]);
    expect(loaded.notes).toEqual([]);
    // The activation committed (k2 active) but the process stopped before the rename: the next start finishes it.
    loaded = files.loadFor([row(k1, 'retired'), row(k2, 'active')]);
    expect(loaded.keys.map((k) => toHex(k.keyId))).toEqual([toHex(k2.keyId)]);
    expect(loaded.notes.join(' ')).toMatch(/finished an interrupted issuer activation/);
    expect(existsSync(files.preparedPath(k2.keyId))).toBe(false);
    expect(toHex(files.keyIdOf(files.activePath)!)).toBe(toHex(k2.keyId)); // the retired key's secret file is gone
    // promote is idempotent once done.
    files.promote(k2.keyId);
    // A leftover prepared file the database never named is reported, not used.
    const stray = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    files.writePrepared(stray);
    loaded = files.loadFor([row(k2, 'active')]);
    expect(loaded.keys).toHaveLength(1);
    expect(loaded.notes.join(' ')).toMatch(/has not prepared/);
    files.removePrepared(stray.keyId);
    // A prepared key whose file is elsewhere (another registry process made it) is reported.
    const elsewhere = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    loaded = files.loadFor([row(k2, 'active'), row(elsewhere, 'prepared')]);
    expect(loaded.notes.join(' ')).toMatch(/cannot sign once it is active/);
    // The database names an active key this directory does not hold.
    copyFileSync(files.activePath, join(dir, 'backup.json'));
    expect(() => files.loadFor([row(k1, 'active')])).toThrow(/is not the registry's active issuer key/);
    expect(() => files.promote(k1.keyId)).toThrow(/neither/);
  });

  it('keeps one file per prepared key: a failed rotation removes only its own, loading and activation find the prepared key by its key id; the file name of earlier releases is still read', () => {
    const sub = mkdtempSync(join(dir, 'per-key-'));
    const files = new IssuerKeyFiles(crypto, sub, undefined);
    const k1 = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const winner = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const loser = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    writeKeyFile(crypto, files.activePath, 'parley-registry-issuer-key', k1);
    // Two rotations at once (two processes sharing the data directory): both write, the loser's commit fails.
    files.writePrepared(winner);
    files.writePrepared(loser);
    files.removePrepared(loser.keyId);
    expect(existsSync(files.preparedPath(winner.keyId))).toBe(true);
    let loaded = files.loadFor([row(k1, 'active'), row(winner, 'prepared')]);
    expect(loaded.keys.map((k) => toHex(k.keyId))).toEqual([toHex(k1.keyId), toHex(winner.keyId)]);
    expect(loaded.notes).toEqual([]);
    // The activation promotes the winner's own file.
    files.promote(winner.keyId);
    expect(toHex(files.keyIdOf(files.activePath)!)).toBe(toHex(winner.keyId));
    expect(files.preparedFiles()).toEqual([]);

    // A data directory of an earlier release: the prepared key in `issuer-key.json.next`.
    const legacy = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    writeKeyFile(crypto, files.legacyNextPath, 'parley-registry-issuer-key', legacy);
    loaded = files.loadFor([row(winner, 'active'), row(legacy, 'prepared')]);
    expect(loaded.keys.map((k) => toHex(k.keyId))).toEqual([toHex(winner.keyId), toHex(legacy.keyId)]);
    expect(loaded.notes).toEqual([]);
    // Its activation committed, the rename did not happen: the next start finishes it from the old name.
    loaded = files.loadFor([row(winner, 'retired'), row(legacy, 'active')]);
    expect(loaded.keys.map((k) => toHex(k.keyId))).toEqual([toHex(legacy.keyId)]);
    expect(existsSync(files.legacyNextPath)).toBe(false);
  });
});
