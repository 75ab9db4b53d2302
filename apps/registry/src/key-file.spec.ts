// Key files: mode 0600, plain and sealed round trips, and every refusal
// (wrong passphrase, tampered seal, group-readable file, wrong type, mismatch).
import { chmodSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { isRpcError, type RpcErrorCode } from '@parley/rpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@parley/test-support';
import { isSealedKeyFile, readKeyFile, readPublicKey, writeKeyFile, writeSecretFile } from './key-file.js';

function code(fn: () => unknown): RpcErrorCode | undefined {
  try {
    fn();
  } catch (error) {
    if (isRpcError(error)) return error.code;
    throw error;
  }
  return undefined;
}

describe('key files', () => {
  let crypto: ParleyCrypto;
  const dir = tempDir('keys');
  beforeAll(async () => {
    crypto = await createCrypto();
  });
  afterAll(() => dir.remove());

  it('writes mode 0600 and reads back a plain key', () => {
    const path = join(dir.path, 'plain.json');
    const kp = crypto.ed25519.generateKeyPair();
    writeKeyFile(crypto, path, 'parley-operator-key', kp);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(isSealedKeyFile(path)).toBe(false);
    const loaded = readKeyFile(crypto, path, 'parley-operator-key');
    expect(loaded.publicKey).toEqual(kp.publicKey);
    expect(code(() => writeKeyFile(crypto, path, 'parley-operator-key', kp))).toBe('already_exists');
    expect(code(() => readKeyFile(crypto, path, 'parley-agent-key'))).toBe('malformed');
    chmodSync(path, 0o644);
    expect(code(() => readKeyFile(crypto, path, 'parley-operator-key'))).toBe('permission_denied');
    expect(readPublicKey(crypto, path).publicKey).toEqual(kp.publicKey); // the public half needs no secrecy
    expect(code(() => readKeyFile(crypto, join(dir.path, 'missing.json'), 'parley-operator-key'))).toBe('not_found');
  });

  it('seals under a passphrase; refuses a wrong passphrase and any tampering', () => {
    const path = join(dir.path, 'sealed.json');
    const kp = crypto.ed25519.generateKeyPair();
    writeKeyFile(crypto, path, 'parley-registry-issuer-key', kp, { passphrase: 'pw', kdf: 'interactive' });
    const text = readFileSync(path, 'utf8');
    expect(text).not.toContain(Buffer.from(crypto.ed25519.exportSeed(kp.secretKey)).toString('base64url'));
    expect(isSealedKeyFile(path)).toBe(true);
    expect(readKeyFile(crypto, path, 'parley-registry-issuer-key', 'pw').publicKey).toEqual(kp.publicKey);
    expect(code(() => readKeyFile(crypto, path, 'parley-registry-issuer-key'))).toBe('permission_denied');
    expect(code(() => readKeyFile(crypto, path, 'parley-registry-issuer-key', 'pW'))).toBe('permission_denied');
    // Swapping in another public key breaks the seal's associated data.
    const json = JSON.parse(text) as Record<string, unknown>;
    json['public_key'] = Buffer.from(crypto.ed25519.generateKeyPair().publicKey).toString('base64url');
    writeFileSync(path, JSON.stringify(json), { mode: 0o600 });
    expect(code(() => readKeyFile(crypto, path, 'parley-registry-issuer-key', 'pw'))).toBe('permission_denied');
    // Absurd cost parameters are refused before any work.
    json['public_key'] = Buffer.from(kp.publicKey).toString('base64url');
    (json['sealed'] as Record<string, unknown>)['mem_limit'] = 2 ** 40;
    writeFileSync(path, JSON.stringify(json), { mode: 0o600 });
    expect(code(() => readKeyFile(crypto, path, 'parley-registry-issuer-key', 'pw'))).toBe('malformed');
  });

  it('wipes the passphrase bytes it hands to Argon2id, on write and on read', () => {
    const path = join(dir.path, 'wiped-passphrase.json');
    const kp = crypto.ed25519.generateKeyPair();
    // ParleyCrypto is frozen: wrap it and record the password argument of each pwhash call.
    const passwords: Uint8Array[] = [];
    const recording: ParleyCrypto = {
      ...crypto,
      pwhash: (password, salt, options) => {
        passwords.push(password);
        return crypto.pwhash(password, salt, options);
      },
    };
    const zero = (bytes: Uint8Array): boolean => bytes.every((b) => b === 0);
    writeKeyFile(recording, path, 'parley-operator-key', kp, { passphrase: 'correct horse', kdf: 'interactive' });
    expect(passwords).toHaveLength(1);
    expect(passwords[0]!.length).toBe('correct horse'.length);
    expect(zero(passwords[0]!)).toBe(true);
    expect(readKeyFile(recording, path, 'parley-operator-key', 'correct horse').publicKey).toEqual(kp.publicKey);
    expect(code(() => readKeyFile(recording, path, 'parley-operator-key', 'wrong horse'))).toBe('permission_denied');
    // Also when Argon2id refuses the file's cost parameters.
    const json = JSON.parse(readFileSync(path, 'utf8')) as { sealed: Record<string, unknown> };
    json.sealed['mem_limit'] = 2 ** 40;
    writeFileSync(path, JSON.stringify(json), { mode: 0o600 });
    expect(code(() => readKeyFile(recording, path, 'parley-operator-key', 'correct horse'))).toBe('malformed');
    expect(passwords).toHaveLength(4);
    for (const password of passwords) expect(zero(password)).toBe(true);
  });

  it('refuses a seed that does not match the recorded public key', () => {
    const path = join(dir.path, 'mismatch.json');
    writeKeyFile(crypto, path, 'parley-agent-key', crypto.ed25519.generateKeyPair());
    const json = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    json['seed'] = Buffer.from(new Uint8Array(32).fill(1)).toString('base64url');
    writeFileSync(path, JSON.stringify(json), { mode: 0o600 });
    expect(code(() => readKeyFile(crypto, path, 'parley-agent-key'))).toBe('malformed');
  });

  it('leaves no temporary file behind when a write fails', () => {
    const sub = join(dir.path, 'fail');
    mkdirSync(sub);
    const target = join(sub, 'target.json');
    mkdirSync(target); // renaming a file over a non-empty directory fails
    writeFileSync(join(target, 'inside'), 'x');
    expect(() => writeSecretFile(target, 'secret', true)).toThrow();
    writeFileSync(join(sub, 'existing.json'), '{}');
    expect(code(() => writeSecretFile(join(sub, 'existing.json'), 'secret'))).toBe('already_exists');
    expect(readdirSync(sub).sort()).toEqual(['existing.json', 'target.json']);
  });
});
