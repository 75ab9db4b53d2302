// SessionManager.revocationStale (docs/PROTOCOL.md §17.3 item 7): the probe an agent uses to leave a handshake frame
// unacknowledged while its revocation data cannot answer. Review finding (Low): it took any value the checker
// returned as an answer — an async checker (a Promise) or one returning undefined looked "fresh" —, while the
// certificate check at step 3 (identity's checkRevocation) fails such a checker closed `revocation_stale`: the
// frame was processed and the handshake failed for a reason the probe existed to avoid. Both now agree.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IdentityError, type RevocationChecker } from '@parley/identity';
import { SessionManager } from '../src/index.js';
import { createWorld, type World } from './fixtures.js';

let w: World;
let managers: SessionManager[];

beforeEach(async () => {
  w = await createWorld();
  managers = [];
});
afterEach(() => {
  for (const m of managers) m.close();
});

function manager(revocations: RevocationChecker | undefined): SessionManager {
  const m = new SessionManager({
    crypto: w.crypto,
    handshake: { identity: w.agent('bob'), trustBundle: w.trustBundle, ...(revocations === undefined ? {} : { revocations }) },
    transport: { sendFrame: () => undefined },
    clock: w.clock,
  });
  managers.push(m);
  return m;
}

const checker = (check: () => unknown): RevocationChecker => ({ check } as unknown as RevocationChecker);

describe('SessionManager.revocationStale', () => {
  it('is false without revocation data, and when the checker answers revoked or not revoked (the handshake decides then)', () => {
    expect(manager(undefined).revocationStale('alice')).toBe(false);
    expect(manager(checker(() => ({ revoked: false }))).revocationStale('alice')).toBe(false);
    expect(manager(checker(() => ({ revoked: true, by: 'serial' }))).revocationStale('alice')).toBe(false);
    expect(manager(checker(() => { throw new IdentityError('revoked', 'revoked'); })).revocationStale('alice')).toBe(false);
  });

  it('is true when the checker reports revocation_stale or fails', () => {
    expect(manager(checker(() => { throw new IdentityError('revocation_stale', 'stale'); })).revocationStale('alice')).toBe(true);
    expect(manager(checker(() => { throw new Error('boom'); })).revocationStale('alice')).toBe(true);
  });

  it('is true when the checker returns no answer (a Promise of an async checker, undefined, a status without a boolean `revoked`), as the certificate check fails closed on it', () => {
    expect(manager(checker(() => Promise.resolve({ revoked: false }))).revocationStale('alice')).toBe(true);
    expect(manager(checker(async () => ({ revoked: false }))).revocationStale('alice')).toBe(true);
    expect(manager(checker(() => undefined)).revocationStale('alice')).toBe(true);
    expect(manager(checker(() => null)).revocationStale('alice')).toBe(true);
    expect(manager(checker(() => ({ revoked: 'no' }))).revocationStale('alice')).toBe(true);
    expect(manager(checker(() => ({}))).revocationStale('alice')).toBe(true);
  });
});
