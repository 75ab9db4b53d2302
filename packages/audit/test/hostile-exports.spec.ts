// Every export of the package, called with hostile arguments: the README promises that "every failure is an
// AuditError with a stable code; malformed input of any type is `malformed`, never a raw `TypeError`". The sweep
// (@parley/crypto-core/testing) enumerates the exports when it runs, so a new export is covered without
// touching this file; the allowlist below names the few where it means nothing, each with its reason.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sweepExports } from '@parley/crypto-core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as audit from '../src/index.js';
import { AuditError } from '../src/index.js';
import { crypto } from './fixtures.js';

const NOT_CALLED: Readonly<Record<string, string>> = {
  // Private constructor (TypeScript `private`): built only by AuditLog.open, which the sweep calls.
  'new AuditLog': 'private constructor',
  // Private constructor and its @internal builder: openFileStore checks the arguments and opens the file
  // handle they need; the sweep calls openFileStore.
  'new FileAuditStore': 'private constructor',
  'FileAuditStore.init': '@internal: called by openFileStore with checked arguments and an open file handle',
  // @internal constructor ("use openPostgresStore"), which checks the arguments; the sweep calls openPostgresStore.
  'new PostgresAuditStore': '@internal constructor',
  // The error class itself: constructing it is not an input check (its message is whatever the package says).
  'new AuditError': 'the error class',
};

// openFileStore(crypto, 'x') opens (creates) the audit file `x`: a valid call. Run where that is harmless.
const cwd = process.cwd();
let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'parley-audit-hostile-'));
  process.chdir(scratch);
});
afterAll(() => {
  process.chdir(cwd);
  rmSync(scratch, { recursive: true, force: true });
});

describe('every export, with hostile arguments', () => {
  it('returns (a verification: that it does not hold, verifyChain { ok: false }) or throws an AuditError — never a TypeError or RangeError', async () => {
    const result = await sweepExports({
      module: audit,
      notCalled: NOT_CALLED,
      isOwnError: (e) => e instanceof AuditError,
      genuine: { crypto },
      // Whatever opened (a store on the file `x`): closed again.
      afterReturn: async (opened) => {
        const close = (opened as { close?: unknown } | null)?.close;
        if (typeof close === 'function') await (close as () => Promise<void>).call(opened);
      },
    });
    expect(result.swept).toBeGreaterThan(40); // the sweep found the exports
    expect(result.failures).toEqual([]);
    expect(result.unknownNotCalled).toEqual([]); // the allowlist names only exports that exist
  });
});
