// The export sweep the packages' hostile-input tests share (@parley/crypto-core/testing) catches what it is
// for: a verification that holds for a hostile argument, a raw TypeError from a function or a static method,
// another package's error, and an allowlist entry that names no export.
import { expect, it } from 'vitest';
import { createCrypto } from '../src/index.js';
import { sweepExports } from '../src/testing.js';

class OwnError extends Error {}

it('reports a verification that holds, a raw TypeError, a foreign error and an unknown allowlist entry — and nothing for a well-behaved export', async () => {
  const crypto = await createCrypto();
  const module = {
    verifyLoose: (a: unknown) => (a === null ? undefined : false), // returns normally for null: "verified"
    verifyStrict: (a: unknown) => (a instanceof Uint8Array && a.length === 32 ? true : false),
    field: (a: unknown) => (a as { x: number }).x, // TypeError on null
    foreign: () => {
      throw new RangeError('not ours');
    },
    checked: (a: unknown) => {
      if (typeof a !== 'string') throw new OwnError('malformed');
      return a.length;
    },
    Codec: class {
      static decode(v: unknown): number {
        return (v as string).length;
      }
    },
    CONSTANT: 3,
  };
  const result = await sweepExports({ module, notCalled: { 'new Gone': 'renamed' }, isOwnError: (e) => e instanceof OwnError, genuine: { crypto } });
  const named = (prefix: string) => result.failures.filter((f) => f.startsWith(prefix));
  expect(named('verifyLoose(null) verified')).toHaveLength(1);
  expect(named('verifyStrict(')).toEqual([]);
  expect(named('field(null) threw TypeError')).toHaveLength(1);
  expect(named('field(crypto, null) threw')).toEqual([]); // crypto.x is undefined: returns
  expect(named('foreign() threw RangeError: not ours')).toHaveLength(1);
  expect(named('checked(')).toEqual([]);
  expect(named('Codec.decode(null) threw TypeError')).toHaveLength(1);
  expect(result.unknownNotCalled).toEqual(['new Gone']);
  expect(result.swept).toBe(7); // five functions, the constructor and its static method; not the constant
});
