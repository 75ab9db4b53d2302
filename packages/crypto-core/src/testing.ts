/**
 * `@parley/crypto-core/testing` — for the packages' own tests, not for production code: a sweep that calls
 * every function a module exports with hostile arguments and collects what broke the promise each package
 * README makes — every rejection is the package's typed error with a stable code, never a raw TypeError or
 * RangeError from inside, and a verification never holds for such input. The exports are enumerated when the
 * sweep runs, so a new export is covered without touching its test. It lives here because every package
 * that validates input (with {@link createAssertions}) depends on crypto-core already, and it imports nothing.
 */

/**
 * What a caller may pass by mistake: nothing, a value of the wrong type, an empty object or array, too few
 * bytes. (Not a Symbol: every position gets the same value, and a Symbol in a template literal is a TypeError
 * of the caller's making, not an input anyone passes.)
 */
export const HOSTILE_VALUES: readonly unknown[] = Object.freeze([null, undefined, 42, 'x', {}, [], new Uint8Array(3), -1, 1n, true, () => 1, new ArrayBuffer(32)]);

/** Settings of {@link sweepExports}. */
export interface ExportSweep {
  /** The module namespace (`import * as pkg from '../src/index.js'`). */
  readonly module: object;
  /**
   * Callables not called, each with its reason: `'new X'` (a constructor), `'X.method'` (a static method) or a
   * function's name — private constructors, @internal builders, the error class itself.
   */
  readonly notCalled: Readonly<Record<string, string>>;
  /** Whether a thrown value is the package's own typed error. */
  readonly isOwnError: (error: unknown) => boolean;
  /**
   * Genuine values to put in first position before the hostile ones (e.g. a ParleyCrypto), so that checks
   * after the first argument are reached too; named in failure messages by their key.
   */
  readonly genuine?: Readonly<Record<string, unknown>>;
  /** Called with what a call returned (e.g. to close a store it opened). */
  readonly afterReturn?: (result: unknown) => unknown;
  /** How long a returned promise may take to settle (a promise that never settles is a failure). Default 10 s. */
  readonly settleMs?: number;
}

/** What {@link sweepExports} found. */
export interface ExportSweepResult {
  /** The callables swept (not counting those in `notCalled`). */
  readonly swept: number;
  /** Each broken promise: the call, with its arguments, and what it did. */
  readonly failures: readonly string[];
  /** Names in `notCalled` that are not callables of the module (a renamed or removed export). */
  readonly unknownNotCalled: readonly string[];
}

type Callable = (...args: unknown[]) => unknown;

/** Verifications answer whether something holds: `verify…` functions and static methods. */
const isVerification = (name: string): boolean => /^(?:[A-Za-z]+\.)?verify/.test(name);

/** Calls every exported function, constructor (`new X`) and static method with hostile arguments. */
export async function sweepExports(options: ExportSweep): Promise<ExportSweepResult> {
  const all = callables(options.module as Record<string, unknown>);
  const names = new Set(all.map((c) => c.name));
  const genuine = Object.entries(options.genuine ?? {});
  const show = (args: readonly unknown[]): string => args.map((a) => describeValue(a, genuine)).join(', ');
  const failures: string[] = [];
  const swept = all.filter((c) => options.notCalled[c.name] === undefined);
  for (const { name, arity, call } of swept) {
    for (const args of argumentLists(arity, genuine.map(([, v]) => v))) {
      const where = `${name}(${show(args)})`;
      try {
        const result = await settle(call(...args), options.settleMs ?? 10_000);
        // A verification that returns must answer "does not hold": false, or `{ ok: false, … }` (one that throws
        // on failure and returns on success has verified when it returns).
        if (isVerification(name) && result !== false && (result as { ok?: unknown } | null)?.ok !== false) failures.push(`${where} verified (returned ${describeValue(result, genuine)})`);
        await options.afterReturn?.(result);
      } catch (error) {
        if (!options.isOwnError(error)) failures.push(`${where} threw ${(error as Error | null)?.name}: ${(error as Error | null)?.message}`);
      }
    }
  }
  return { swept: swept.length, failures, unknownNotCalled: Object.keys(options.notCalled).filter((n) => !names.has(n)) };
}

/** Every callable a module exports: functions, constructors (`new X`) and static methods (`X.from`). */
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

/** Argument lists: none; each hostile value alone, in every position up to arity + 1; and after each genuine value. */
function argumentLists(arity: number, genuine: readonly unknown[]): unknown[][] {
  const lists: unknown[][] = [[]];
  for (const h of HOSTILE_VALUES) {
    for (let n = 1; n <= Math.max(arity, 1) + 1; n++) {
      lists.push(Array<unknown>(n).fill(h));
      for (const g of genuine) lists.push([g, ...Array<unknown>(n - 1).fill(h)]);
    }
  }
  return lists;
}

function describeValue(a: unknown, genuine: readonly (readonly [string, unknown])[]): string {
  const known = genuine.find(([, v]) => v === a);
  if (known !== undefined) return known[0];
  if (a instanceof Uint8Array) return `Uint8Array(${a.length})`;
  if (a instanceof ArrayBuffer) return `ArrayBuffer(${a.byteLength})`;
  if (typeof a === 'bigint') return `${a}n`;
  if (typeof a === 'function') return String(a);
  return JSON.stringify(a) ?? 'undefined';
}

/** A promise that never settles would hang the sweep: it is a failure of its own. */
async function settle(value: unknown, ms: number): Promise<unknown> {
  if (!(value instanceof Promise)) return value;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([value, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
