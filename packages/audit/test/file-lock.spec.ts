// The lock of a writable file store under concurrent takeovers. Every
// node:fs/promises call gets a random delay before and after it, so the
// openers interleave differently on each round: a takeover that is "read
// pid, unlink, create" lets two of them in; an atomic one never does.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { isAuditError, openFileStore } from '../src/index.js';
import { crypto, tempDir } from './fixtures.js';

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<Record<string, unknown>>();
  const jitter = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.random() * 4));
  const wrapped: Record<string, unknown> = { ...real };
  for (const [name, value] of Object.entries(real)) {
    if (typeof value !== 'function' || name === 'constants') continue;
    const fn = value as (...args: unknown[]) => Promise<unknown>;
    wrapped[name] = async (...args: unknown[]) => {
      await jitter();
      try {
        return await fn(...args);
      } finally {
        await jitter();
      }
    };
  }
  return { ...wrapped, default: wrapped };
});

const dir = tempDir();

describe('one writer per file: concurrent takeovers', () => {
  it('several processes taking over one stale lock at once: exactly one wins', async () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    for (let round = 0; round < 25; round++) {
      const path = join(dir, `race-${round}.log`);
      writeFileSync(`${path}.lock`, `${dead}\n`);
      const results = await Promise.allSettled(Array.from({ length: 4 }, () => openFileStore(crypto, path)));
      const winners = results.filter((r) => r.status === 'fulfilled');
      expect(winners.length, `round ${round}`).toBe(1);
      for (const r of results) if (r.status === 'rejected') expect(isAuditError(r.reason, 'storage_failure'), String(r.reason)).toBe(true);
      expect(readFileSync(`${path}.lock`, 'utf8')).toBe(`${process.pid}\n`);
      for (const r of winners) await r.value.close();
    }
  });
});
