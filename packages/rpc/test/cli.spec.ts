import { parseArgs } from 'node:util';
import { describe, expect, it } from 'vitest';
import { EXIT_CODES, RPC_ERROR_CODES, UsageError, exitCodeOf, isUsageError } from '../src/index.js';

describe('CLI support', () => {
  it('maps every error code to a documented exit code', () => {
    const documented = new Set<number>(Object.values(EXIT_CODES));
    for (const code of RPC_ERROR_CODES) expect(documented.has(exitCodeOf(code))).toBe(true);
    expect(exitCodeOf('not_found')).toBe(3);
    expect(exitCodeOf('already_exists')).toBe(4);
    expect(exitCodeOf('bad_certificate')).toBe(5);
    expect(exitCodeOf('malformed')).toBe(6);
    expect(exitCodeOf('unavailable')).toBe(7);
    expect(exitCodeOf('revocation_stale')).toBe(8);
    expect(exitCodeOf('internal')).toBe(1);
  });

  it('recognises usage errors, including parseArgs refusals, and nothing else', () => {
    expect(isUsageError(new UsageError('missing FILE'))).toBe(true);
    let refusal: unknown;
    try {
      parseArgs({ args: ['--bogus'], options: {}, strict: true });
    } catch (e) {
      refusal = e;
    }
    expect(isUsageError(refusal)).toBe(true);
    expect(isUsageError(new Error('boom'))).toBe(false);
    expect(isUsageError(null)).toBe(false);
    expect(isUsageError({ code: 'malformed' })).toBe(false);
  });
});
