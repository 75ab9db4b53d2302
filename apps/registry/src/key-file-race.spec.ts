// "Never overwrite" is atomic: two writers racing on one key file path. The race is made deterministic
// by fault injection into node:fs: the second writer runs whole at the moment the first one puts its
// file in place (after the first one's existence check).
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { isRpcError } from '@parley/rpc';
import { tempDir } from '@parley/test-support';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readKeyFile, writeKeyFile, writeSecretFile } from './key-file.js';

const race = vi.hoisted(() => ({ target: undefined as string | undefined, other: undefined as (() => void) | undefined }));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  /** Runs the other writer once, just before the first one's file takes the name `to`. */
  const interleave = (to: import('node:fs').PathLike): void => {
    if (race.other !== undefined && String(to) === race.target) {
      const other = race.other;
      race.other = undefined;
      other();
    }
  };
  return {
    ...fs,
    renameSync: (from: import('node:fs').PathLike, to: import('node:fs').PathLike): void => {
      interleave(to);
      fs.renameSync(from, to);
    },
    linkSync: (existing: import('node:fs').PathLike, to: import('node:fs').PathLike): void => {
      interleave(to);
      fs.linkSync(existing, to);
    },
  };
});

function outcome(fn: () => void): string {
  try {
    fn();
    return 'ok';
  } catch (error) {
    if (isRpcError(error)) return error.code;
    throw error;
  }
}

describe('key files: never overwrite, atomically', () => {
  let crypto: ParleyCrypto;
  const dir = tempDir('keys-race');
  beforeAll(async () => {
    crypto = await createCrypto();
  });
  afterAll(() => dir.remove());

  it('lets exactly one of two writers racing on one path win; the other gets already_exists and the file holds the winner key', () => {
    const sub = join(dir.path, 'race');
    mkdirSync(sub);
    const path = join(sub, 'agent-key.json');
    const first = crypto.ed25519.generateKeyPair();
    const second = crypto.ed25519.generateKeyPair();
    let secondOutcome: string | undefined;
    race.target = path;
    race.other = () => {
      secondOutcome = outcome(() => writeKeyFile(crypto, path, 'parley-agent-key', second));
    };
    const firstOutcome = outcome(() => writeKeyFile(crypto, path, 'parley-agent-key', first));
    expect(race.other).toBeUndefined(); // the race happened
    expect([firstOutcome, secondOutcome].sort()).toEqual(['already_exists', 'ok']);
    const winner = firstOutcome === 'ok' ? first : second;
    expect(readKeyFile(crypto, path, 'parley-agent-key').publicKey).toEqual(winner.publicKey);
    expect(readdirSync(sub)).toEqual(['agent-key.json']);
  });

  it('still replaces the file when asked to overwrite', () => {
    const sub = join(dir.path, 'overwrite');
    mkdirSync(sub);
    const path = join(sub, 'secret');
    writeSecretFile(path, 'one');
    expect(outcome(() => writeSecretFile(path, 'two'))).toBe('already_exists');
    writeSecretFile(path, 'three', true);
    expect(readdirSync(sub)).toEqual(['secret']);
    expect(outcome(() => writeSecretFile(path, 'four', true))).toBe('ok');
  });
});
