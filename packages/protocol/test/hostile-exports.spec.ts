// Every export of the package, called with hostile arguments: malformed input of any type is a ProtocolError
// (`malformed`, or `unauthenticated` for request metadata), never a raw TypeError or RangeError, and a
// verification answers false. The exports are enumerated at test time, so a new export is covered without
// touching this file; the allowlist below names the few where the sweep means nothing, each with its reason.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { beforeAll, describe, expect, it } from 'vitest';
import * as protocol from '../src/index.js';
import { ProtocolError } from '../src/index.js';

/**
 * What a caller may pass by mistake: nothing, a value of the wrong type, an empty object or array, too few
 * bytes. (Not a Symbol: every position gets the same value, and a Symbol in a template literal is a TypeError of
 * the caller's making, not an input anyone passes.)
 */
const HOSTILE: readonly unknown[] = [null, undefined, 42, 'x', {}, [], new Uint8Array(3), -1, 1n, true, () => 1, new ArrayBuffer(32)];

/**
 * Exports the sweep does not call, and why. Everything else that is a function is called (classes with `new`,
 * and each of their static methods); constants are not functions and have nothing to call.
 */
const NOT_CALLED: Readonly<Record<string, string>> = {
  // The error class itself: constructing it is not an input check (its message is whatever the package says).
  'new ProtocolError': 'the error class',
};

/** Verifications answer a boolean: a hostile argument must never verify, and they never throw. */
const isVerification = (name: string): boolean => /^(?:[A-Za-z]+\.)?verify/.test(name);

let crypto: ParleyCrypto;
beforeAll(async () => {
  crypto = await createCrypto();
});

type Callable = (...args: unknown[]) => unknown;

/** Every callable the package exports: functions, constructors (`new X`) and static methods (`X.from`). */
function callables(module: Record<string, unknown>): { name: string; arity: number; call: Callable }[] {
  const out: { name: string; arity: number; call: Callable }[] = [];
  for (const [name, value] of Object.entries(module)) {
    if (typeof value !== 'function') continue; // constants: nothing to call
    if (!/^class\b/.test(Function.prototype.toString.call(value))) {
      out.push({ name, arity: value.length, call: value as Callable });
      continue;
    }
    const cls = value as (new (...args: unknown[]) => unknown) & Record<string, unknown>;
    out.push({ name: `new ${name}`, arity: cls.length, call: (...args) => new cls(...args) });
    for (const key of Object.getOwnPropertyNames(cls)) {
      const member = cls[key];
      if (['length', 'name', 'prototype'].includes(key) || typeof member !== 'function') continue;
      out.push({ name: `${name}.${key}`, arity: member.length, call: (...args) => (member as Callable).apply(cls, args) });
    }
  }
  return out;
}

/** Argument lists: each hostile value alone, in every position, with and without a genuine crypto first. */
function argumentLists(arity: number): unknown[][] {
  const lists: unknown[][] = [[]];
  for (const h of HOSTILE) {
    for (let n = 1; n <= Math.max(arity, 1) + 1; n++) {
      lists.push(Array<unknown>(n).fill(h));
      lists.push([crypto, ...Array<unknown>(n - 1).fill(h)]);
    }
  }
  return lists;
}

function show(args: readonly unknown[]): string {
  const one = (a: unknown): string => {
    if (a === crypto) return 'crypto';
    if (a instanceof Uint8Array) return `Uint8Array(${a.length})`;
    if (a instanceof ArrayBuffer) return `ArrayBuffer(${a.byteLength})`;
    if (typeof a === 'bigint') return `${a}n`;
    if (typeof a === 'function') return String(a);
    return JSON.stringify(a) ?? 'undefined';
  };
  return args.map(one).join(', ');
}

describe('every export, with hostile arguments', () => {
  it('returns (false, for a verification) or throws a ProtocolError — never a TypeError or RangeError', async () => {
    const failures: string[] = [];
    const swept = callables(protocol as unknown as Record<string, unknown>).filter((c) => NOT_CALLED[c.name] === undefined);
    for (const { name, arity, call } of swept) {
      for (const args of argumentLists(arity)) {
        const where = `${name}(${show(args)})`;
        try {
          let result = call(...args);
          if (result instanceof Promise) result = await result;
          if (isVerification(name) && result !== false) failures.push(`${where} answered ${String(result)}`);
        } catch (error) {
          if (isVerification(name)) failures.push(`${where} threw ${(error as Error)?.name}: ${(error as Error)?.message}`);
          else if (!(error instanceof ProtocolError)) failures.push(`${where} threw ${(error as Error)?.name}: ${(error as Error)?.message}`);
        }
      }
    }
    expect(swept.length).toBeGreaterThan(30); // the sweep found the exports
    expect(failures).toEqual([]);
  });

  it('the allowlist names only exports that exist', () => {
    const names = new Set(callables(protocol as unknown as Record<string, unknown>).map((c) => c.name));
    for (const name of Object.keys(NOT_CALLED)) expect(names, name).toContain(name);
  });
});
