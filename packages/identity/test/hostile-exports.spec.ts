// Every export of the package, called with hostile arguments: the README promises that every rejection is an
// IdentityError with a stable code ("malformed input of any type is `malformed`, never a raw `TypeError`").
// The sweep (@parley/crypto-core/testing) enumerates the exports when it runs, so a new export is covered
// without touching this file; the allowlist below names the few where it means nothing, each with its reason.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { sweepExports } from '@parley/crypto-core/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import * as identity from '../src/index.js';
import { IdentityError } from '../src/index.js';

const NOT_CALLED: Readonly<Record<string, string>> = {
  // A private constructor (TypeScript `private`): built only by TrustBundleChain.fromPinned / fromSaved,
  // which the sweep calls.
  'new TrustBundleChain': 'private constructor',
  // The error class itself: constructing it is not an input check (its message is whatever the package says).
  'new IdentityError': 'the error class',
};

let crypto: ParleyCrypto;
beforeAll(async () => {
  crypto = await createCrypto();
});

describe('every export, with hostile arguments', () => {
  it('returns (a verification: that it does not hold) or throws a IdentityError — never a TypeError or RangeError', async () => {
    const result = await sweepExports({ module: identity, notCalled: NOT_CALLED, isOwnError: (e) => e instanceof IdentityError, genuine: { crypto } });
    expect(result.swept).toBeGreaterThan(30); // the sweep found the exports
    expect(result.failures).toEqual([]);
    expect(result.unknownNotCalled).toEqual([]); // the allowlist names only exports that exist
  });
});
