// Every export of the package, called with hostile arguments: the README promises that "every failure is an
// AuditError with a stable code; malformed input of any type is `malformed`, never a raw `TypeError`". The
// exports are enumerated at test time, so a new export is covered without touching this file; the allowlist
// below names the few where the sweep means nothing, each with its reason.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as audit from '../src/index.js';
import { AuditError } from '../src/index.js';
import { crypto } from './fixtures.js';

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

/**
 * Verifications answer whether something holds: a hostile argument must never make one hold — a boolean one
 * answers false (or throws AuditError), verifyChain an `{ ok: false, … }` (or throws AuditError).
 */
const isVerification = (name: string): boolean => /^(?:[A-Za-z]+\.)?verify/.test(name);

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

/** A promise that never settles would hang the sweep: it is a failure of its own. */
async function settle(value: unknown): Promise<unknown> {
  if (!(value instanceof Promise)) return value;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('did not settle within 10 s')), 10_000);
  });
  try {
    return await Promise.race([value, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

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
  it('returns (never a verification that holds) or throws an AuditError — never a TypeError or RangeError', async () => {
    const failures: string[] = [];
    const swept = callables(audit as unknown as Record<string, unknown>).filter((c) => NOT_CALLED[c.name] === undefined);
    for (const { name, arity, call } of swept) {
      for (const args of argumentLists(arity)) {
        const where = `${name}(${show(args)})`;
        try {
          const result = await settle(call(...args));
          if (isVerification(name) && (result === true || (result as { ok?: unknown } | null)?.ok === true)) failures.push(`${where} verified`);
          // Whatever opened (a store on the file `x`): closed again.
          const close = (result as { close?: unknown } | null)?.close;
          if (typeof close === 'function') await (close as () => Promise<void>).call(result);
        } catch (error) {
          if (!(error instanceof AuditError)) failures.push(`${where} threw ${(error as Error)?.name}: ${(error as Error)?.message}`);
        }
      }
    }
    expect(swept.length).toBeGreaterThan(40); // the sweep found the exports
    expect(failures).toEqual([]);
  });

  it('the allowlist names only exports that exist', () => {
    const names = new Set(callables(audit as unknown as Record<string, unknown>).map((c) => c.name));
    for (const name of Object.keys(NOT_CALLED)) expect(names, name).toContain(name);
  });
});
