// Every export of the package, called with hostile arguments: malformed input of any type is a ProtocolError
// (`malformed`, or `unauthenticated` for request metadata), never a raw TypeError or RangeError, and a
// verification answers false. The exports are enumerated at test time, so a new export is covered without
// touching this file; the allowlist below names the few where the sweep means nothing, each with its reason.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { sweepExports } from '@parley/crypto-core/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import * as protocol from '../src/index.js';
import { ProtocolError } from '../src/index.js';

const NOT_CALLED: Readonly<Record<string, string>> = {
  // The error class itself: constructing it is not an input check (its message is whatever the package says).
  'new ProtocolError': 'the error class',
};

let crypto: ParleyCrypto;
beforeAll(async () => {
  crypto = await createCrypto();
});

describe('every export, with hostile arguments', () => {
  it('returns (a verification: that it does not hold) or throws a ProtocolError — never a TypeError or RangeError', async () => {
    const result = await sweepExports({ module: protocol, notCalled: NOT_CALLED, isOwnError: (e) => e instanceof ProtocolError, genuine: { crypto } });
    expect(result.swept).toBeGreaterThan(30); // the sweep found the exports
    expect(result.failures).toEqual([]);
    expect(result.unknownNotCalled).toEqual([]); // the allowlist names only exports that exist
  });
});
