import { describe, expect, it } from 'vitest';
import { IDENTITY_ERROR_CODES, IdentityError, isIdentityError } from './errors.js';

describe('IdentityError', () => {
  it('carries its code in the message and keeps the cause', () => {
    const cause = new Error('inner');
    const e = new IdentityError('revoked', 'certificate revoked by agent', { cause });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('IdentityError');
    expect(e.code).toBe('revoked');
    expect(e.message).toBe('[revoked] certificate revoked by agent');
    expect(e.cause).toBe(cause);
    expect('cause' in new IdentityError('expired', 'x')).toBe(false);
  });

  it('isIdentityError checks the class and, optionally, the code', () => {
    const e = new IdentityError('expired', 'x');
    expect(isIdentityError(e)).toBe(true);
    expect(isIdentityError(e, 'expired')).toBe(true);
    expect(isIdentityError(e, 'revoked')).toBe(false);
    expect(isIdentityError(new Error('[expired] x'))).toBe(false);
    expect(isIdentityError({ code: 'expired', name: 'IdentityError' })).toBe(false);
  });

  it('lists each code once', () => {
    expect(new Set(IDENTITY_ERROR_CODES).size).toBe(IDENTITY_ERROR_CODES.length);
    expect(IDENTITY_ERROR_CODES).toContain('revocation_stale');
    expect(Object.isFrozen(IDENTITY_ERROR_CODES)).toBe(true);
  });
});
