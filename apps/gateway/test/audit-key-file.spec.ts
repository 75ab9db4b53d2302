/**
 * The audit key file is created whole or not at all (fault injection into node:fs): a failed or
 * interrupted write leaves nothing at the key file's path, and an existing file is never replaced.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { tempDir } from '@parley/test-support';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadOrCreateAuditKey } from '../src/config.js';
import { createWorld } from './fixtures.js';

const fault = vi.hoisted(() => ({ partialWrite: false, hide: undefined as string | undefined }));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  return {
    ...fs,
    // Writes a few bytes, then fails: what a crash or a full disk in the middle of the write leaves.
    writeSync: (fd: number, data: string | NodeJS.ArrayBufferView, ...rest: unknown[]): number => {
      if (fault.partialWrite) {
        fault.partialWrite = false;
        fs.writeSync(fd, String(data).slice(0, 10));
        throw Object.assign(new Error('ENOSPC: no space left on device (injected)'), { code: 'ENOSPC' });
      }
      return (fs.writeSync as (...a: unknown[]) => number)(fd, data, ...rest);
    },
    // Reports `hide` as absent once: another process creates the file between the check and the creation.
    existsSync: (path: import('node:fs').PathLike): boolean => {
      if (fault.hide !== undefined && String(path) === fault.hide) {
        fault.hide = undefined;
        return false;
      }
      return fs.existsSync(path);
    },
  };
});

const dir = tempDir('gw-audit-key');
let crypto: ParleyCrypto;
beforeAll(async () => {
  crypto = await createCrypto();
});
afterAll(() => dir.remove());

describe('audit key file creation', () => {
  it('leaves no file (and no temporary file) when the write fails, so the next start creates a complete 0600 one', () => {
    const keys = join(dir.path, 'crash');
    const file = join(keys, 'audit-key.json');
    fault.partialWrite = true;
    expect(() => loadOrCreateAuditKey(crypto, file)).toThrow(/cannot create audit key file/);
    expect(existsSync(file)).toBe(false);
    expect(readdirSync(keys)).toEqual([]);
    const created = loadOrCreateAuditKey(crypto, file);
    expect(created.created).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(keys)).toEqual(['audit-key.json']);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ version: 1, type: 'parley-gateway-audit-key' });
    expect(loadOrCreateAuditKey(crypto, file).keyPair.publicKey).toEqual(created.keyPair.publicKey);
  });

  it('never replaces a file another process created meanwhile', () => {
    const keys = join(dir.path, 'race');
    mkdirSync(keys, { mode: 0o700 });
    const file = join(keys, 'audit-key.json');
    writeFileSync(file, 'theirs', { mode: 0o600 });
    fault.hide = file;
    expect(() => loadOrCreateAuditKey(crypto, file)).toThrow(/created by another process meanwhile/);
    expect(readFileSync(file, 'utf8')).toBe('theirs');
    expect(readdirSync(keys)).toEqual(['audit-key.json']);
  });
});

describe('audit key material is wiped', () => {
  it('the seed decoded from the file is zeroed once the key pair is made; a key whose public key does not match is wiped too', () => {
    const file = join(dir.path, 'wipe', 'audit-key.json');
    const created = loadOrCreateAuditKey(crypto, file).keyPair;
    const seeds: Uint8Array[] = [];
    const made: { secretKey: { isWiped: boolean } }[] = [];
    const recording: ParleyCrypto = {
      ...crypto,
      ed25519: {
        ...crypto.ed25519,
        keyPairFromSeed: (seed: Uint8Array) => {
          seeds.push(seed);
          const pair = crypto.ed25519.keyPairFromSeed(seed);
          made.push(pair);
          return pair;
        },
      },
    };
    const loaded = loadOrCreateAuditKey(recording, file).keyPair;
    expect(Buffer.from(loaded.publicKey).equals(Buffer.from(created.publicKey))).toBe(true);
    expect(seeds).toHaveLength(1);
    expect(seeds[0]!.every((b) => b === 0)).toBe(true);
    expect(loaded.secretKey.isWiped).toBe(false);
    // The same seed under another public key: refused, and the key pair made from it wiped.
    const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...json, public_key: '00'.repeat(32) }), { mode: 0o600 });
    expect(() => loadOrCreateAuditKey(recording, file)).toThrow(/does not match the seed/);
    expect(seeds[1]!.every((b) => b === 0)).toBe(true);
    expect(made[1]!.secretKey.isWiped).toBe(true);
  });

  it('a gateway wipes the audit key it generated itself once it has closed, and leaves a given key to its owner', async () => {
    const world = await createWorld();
    const generated: { secretKey: { isWiped: boolean } }[] = [];
    const recording: ParleyCrypto = {
      ...world.crypto,
      ed25519: {
        ...world.crypto.ed25519,
        generateKeyPair: () => {
          const pair = world.crypto.ed25519.generateKeyPair();
          generated.push(pair);
          return pair;
        },
      },
    };
    const own = await world.start({ crypto: recording });
    expect(generated.length).toBeGreaterThanOrEqual(1);
    expect(generated.some((k) => k.secretKey.isWiped)).toBe(false);
    await own.close();
    expect(generated.filter((k) => k.secretKey.isWiped)).toHaveLength(1);
    const given = crypto.ed25519.generateKeyPair();
    const g = await world.start({ auditKey: given });
    await g.close();
    expect(given.secretKey.isWiped).toBe(false);
  });
});
