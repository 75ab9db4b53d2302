// Every export of the package, called with hostile arguments: the README promises that every rejection is a
// SessionError with a stable code — never a raw TypeError or RangeError, nor another package's error.
// The sweep (@parley/crypto-core/testing) enumerates the exports when it runs, so a new export is covered
// without touching this file; the allowlist below names the few where it means nothing, each with its reason.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { sweepExports } from '@parley/crypto-core/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import * as session from '../src/index.js';
import { SessionError } from '../src/index.js';

const NOT_CALLED: Readonly<Record<string, string>> = {
  // Private constructors (TypeScript `private`): built only by InitiatorHandshake.start and
  // ResponderHandshake.accept, which the sweep calls.
  'new InitiatorHandshake': 'private constructor',
  'new ResponderHandshake': 'private constructor',
  // Built only by a completed handshake or importSessionState from checked parts (its constructor takes
  // the handshake's internals, not caller input); both entry points are swept.
  'new Session': 'internal constructor',
  // The error class itself: constructing it is not an input check (its message is whatever the package says).
  'new SessionError': 'the error class',
};

let crypto: ParleyCrypto;
beforeAll(async () => {
  crypto = await createCrypto();
});

describe('every export, with hostile arguments', () => {
  it('returns (a verification: that it does not hold) or throws a SessionError — never a TypeError or RangeError', async () => {
    const result = await sweepExports({ module: session, notCalled: NOT_CALLED, isOwnError: (e) => e instanceof SessionError, genuine: { crypto } });
    expect(result.swept).toBeGreaterThan(30); // the sweep found the exports
    expect(result.failures).toEqual([]);
    expect(result.unknownNotCalled).toEqual([]); // the allowlist names only exports that exist
  });
});
