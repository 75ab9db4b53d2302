import { fromHex } from '@parley/crypto-core';
import { describe, expect, it } from 'vitest';
import { NOT_MS, WRONG_TYPES, expectCode } from '../test/fixtures.js';
import { DEFAULT_REVOCATION_MAX_AGE_MS, MemoryRevocationSet, type RevocationEntry } from './revocation.js';

const S1 = fromHex('01'.repeat(16));
const S2 = fromHex('02'.repeat(16));
const T = 1_700_000_000_000;

function revokeAgent(agentId: string, reason = 'compromised'): Extract<RevocationEntry, { kind: 'agent' }> {
  return { kind: 'agent', agentId, reason, revokedAtMs: T - 10 };
}
function revokeSerial(serial: Uint8Array, reason = 'key rotated'): Extract<RevocationEntry, { kind: 'serial' }> {
  return { kind: 'serial', serial, reason, revokedAtMs: T - 20 };
}

describe('MemoryRevocationSet', () => {
  it('defaults: version 0, never updated, 60 s bound, fail closed', () => {
    const set = new MemoryRevocationSet();
    expect(set.version).toBe(0);
    expect(set.lastUpdatedMs).toBeUndefined();
    expect(set.maxAgeMs).toBe(DEFAULT_REVOCATION_MAX_AGE_MS);
    expect(set.maxAgeMs).toBe(60_000);
    expect(set.failOpen).toBe(false);
    expect(set.isFresh(T)).toBe(false);
    expectCode(() => set.check({ agentId: 'a', serial: S1 }, T), 'revocation_stale');
  });

  it('revokes all certificates of an agent id, or one serial', () => {
    const set = new MemoryRevocationSet();
    set.apply([revokeAgent('mallory'), revokeSerial(S1)], 2, T);
    expect(set.version).toBe(2);
    expect(set.size).toBe(2);
    expect(set.check({ agentId: 'mallory', serial: S2 }, T)).toEqual({ revoked: true, by: 'agent', reason: 'compromised', revokedAtMs: T - 10 });
    expect(set.check({ agentId: 'alice', serial: S1 }, T)).toEqual({ revoked: true, by: 'serial', reason: 'key rotated', revokedAtMs: T - 20 });
    expect(set.check({ agentId: 'alice', serial: S2 }, T)).toEqual({ revoked: false });
    // Agent revocation is reported before serial revocation.
    expect(set.check({ agentId: 'mallory', serial: S1 }, T)).toMatchObject({ by: 'agent' });
  });

  it('copies serials it is given', () => {
    const set = new MemoryRevocationSet();
    const serial = S1.slice();
    set.apply([revokeSerial(serial)], 1, T);
    serial.fill(9);
    expect(set.check({ agentId: 'a', serial: S1 }, T).revoked).toBe(true);
  });

  it('applies deltas gaplessly: one version per entry; empty delta is a heartbeat', () => {
    const set = new MemoryRevocationSet({ maxAgeMs: 1000 });
    set.apply([revokeAgent('a')], 1, T);
    set.apply([revokeAgent('b'), revokeAgent('c')], 3, T + 10);
    expect(set.version).toBe(3);
    expect(set.lastUpdatedMs).toBe(T + 10);
    // gap: versions 4..5 missing
    expectCode(() => set.apply([revokeAgent('f')], 6, T + 20), 'revocation_stale');
    // backwards: replayed delta
    expectCode(() => set.apply([revokeAgent('c')], 3, T + 20), 'malformed');
    expectCode(() => set.apply([], 2, T + 20), 'malformed');
    expect(set.version).toBe(3);
    expect(set.lastUpdatedMs).toBe(T + 10);
    expect(set.check({ agentId: 'f', serial: S1 }, T + 20)).toEqual({ revoked: false });
    // heartbeat
    set.apply([], 3, T + 5000);
    expect(set.lastUpdatedMs).toBe(T + 5000);
    expect(set.isFresh(T + 6000)).toBe(true);
  });

  it('is all-or-nothing: a bad entry changes nothing', () => {
    const set = new MemoryRevocationSet();
    set.apply([], 0, T);
    expectCode(() => set.apply([revokeAgent('ok'), revokeAgent('NOT OK')], 2, T + 1), 'malformed');
    expect(set.version).toBe(0);
    expect(set.size).toBe(0);
    expect(set.lastUpdatedMs).toBe(T);
  });

  it('keeps the first revocation of a subject', () => {
    const set = new MemoryRevocationSet();
    set.apply([revokeAgent('a', 'first'), revokeAgent('a', 'second')], 2, T);
    expect(set.check({ agentId: 'a', serial: S1 }, T)).toMatchObject({ reason: 'first' });
  });

  it('replace loads a full list, never an older one, and never un-revokes: a list lacking a revoked subject (a fork) leaves it revoked', () => {
    const set = new MemoryRevocationSet();
    set.apply([revokeAgent('a'), revokeAgent('b')], 2, T);
    const full = [revokeSerial(S2), revokeAgent('c'), revokeAgent('b')];
    const { added, lacking } = set.replace(full, 3, T + 1);
    expect(set.version).toBe(3);
    expect(added).toEqual([revokeSerial(S2), revokeAgent('c')]);
    expect(lacking).toBe(1); // 'a'
    expect(set.check({ agentId: 'a', serial: S1 }, T + 1).revoked).toBe(true);
    expect(set.check({ agentId: 'x', serial: S2 }, T + 1).revoked).toBe(true);
    expectCode(() => set.replace([revokeSerial(S2)], 1, T + 2), 'malformed');
    expect(set.replace(full, 3, T + 3)).toEqual({ added: [], lacking: 1 }); // same version: a refresh
    expect(set.lastUpdatedMs).toBe(T + 3);
  });

  it('keep adds revocations verified before without changing the version or the freshness', () => {
    const set = new MemoryRevocationSet({ maxAgeMs: 1000 });
    set.keep([revokeAgent('k'), revokeSerial(S2)]);
    expect(set.version).toBe(0);
    expect(set.lastUpdatedMs).toBeUndefined();
    expectCode(() => set.check({ agentId: 'k', serial: S1 }, T), 'revocation_stale'); // still fails closed until fresh
    set.replace([revokeAgent('z')], 1, T);
    expect(set.check({ agentId: 'k', serial: S1 }, T).revoked).toBe(true);
    expect(set.check({ agentId: 'y', serial: S2 }, T).revoked).toBe(true);
    expectCode(() => set.keep([{ kind: 'agent', agentId: '', reason: 'x', revokedAtMs: 1 } as never]), 'malformed');
  });

  it('replace refuses a list whose entry count is not its version (a shortened list would un-revoke)', () => {
    const set = new MemoryRevocationSet();
    set.apply([revokeAgent('a'), revokeAgent('b')], 2, T);
    expectCode(() => set.replace([revokeAgent('a')], 2, T + 1), 'malformed'); // same version, fewer entries
    expectCode(() => set.replace([], 2, T + 1), 'malformed');
    expectCode(() => set.replace([revokeAgent('a')], 5, T + 1), 'malformed'); // newer version, too few entries
    expect(set.check({ agentId: 'b', serial: S1 }, T).revoked).toBe(true);
    expect(set.lastUpdatedMs).toBe(T);
  });

  it('freshness is the newest as-of time given: an older one (a replayed heartbeat) refreshes nothing', () => {
    const set = new MemoryRevocationSet({ maxAgeMs: 1000 });
    set.apply([revokeAgent('a')], 1, T + 500);
    set.apply([], 1, T); // older: accepted, no throw, but no refresh
    expect(set.lastUpdatedMs).toBe(T + 500);
    set.apply([revokeAgent('b')], 2, T + 100); // entries count, freshness does not go back
    expect(set.version).toBe(2);
    expect(set.lastUpdatedMs).toBe(T + 500);
    set.replace([revokeAgent('a'), revokeAgent('b')], 2, T + 200);
    expect(set.lastUpdatedMs).toBe(T + 500);
    expectCode(() => set.check({ agentId: 'z', serial: S1 }, T + 1501), 'revocation_stale');
  });

  it('stale data fails closed, or open when configured (known revocations still count)', () => {
    const closed = new MemoryRevocationSet({ maxAgeMs: 1000 });
    const open = new MemoryRevocationSet({ maxAgeMs: 1000, failOpen: true });
    for (const set of [closed, open]) set.apply([revokeAgent('mallory')], 1, T);
    expect(closed.check({ agentId: 'alice', serial: S1 }, T + 1000)).toEqual({ revoked: false }); // exactly at the bound: fresh
    expectCode(() => closed.check({ agentId: 'alice', serial: S1 }, T + 1001), 'revocation_stale');
    expect(open.check({ agentId: 'alice', serial: S1 }, T + 1001)).toEqual({ revoked: false });
    expect(open.check({ agentId: 'mallory', serial: S1 }, T + 1001).revoked).toBe(true);
    expect(new MemoryRevocationSet({ failOpen: true }).check({ agentId: 'a', serial: S1 }, T)).toEqual({ revoked: false });
  });

  it('rejects wrong types everywhere as malformed', () => {
    const set = new MemoryRevocationSet();
    set.apply([], 0, T);
    for (const v of WRONG_TYPES) {
      if (v !== undefined && (typeof v !== 'object' || v === null || Array.isArray(v))) expectCode(() => new MemoryRevocationSet(v as never), 'malformed');
      if (v !== undefined) expectCode(() => new MemoryRevocationSet({ maxAgeMs: v as number }), 'malformed');
      if (v !== undefined && typeof v !== 'boolean') expectCode(() => new MemoryRevocationSet({ failOpen: v as boolean }), 'malformed');
      expectCode(() => set.check(v as never, T), 'malformed');
      expectCode(() => set.check({ agentId: v as string, serial: S1 }, T), 'malformed');
      expectCode(() => set.check({ agentId: 'a', serial: v as Uint8Array }, T), 'malformed');
      if (!Array.isArray(v)) expectCode(() => set.apply(v as never, 0, T), 'malformed');
      expectCode(() => set.apply([v as never], 1, T), 'malformed');
      if (typeof v !== 'string') expectCode(() => set.apply([{ ...revokeAgent('a'), reason: v as string }], 1, T), 'malformed');
      expectCode(() => set.apply([{ ...revokeSerial(S1), serial: v as Uint8Array }], 1, T), 'malformed');
      expectCode(() => set.apply([{ ...revokeAgent('a'), kind: v as 'agent' }], 1, T), 'malformed');
    }
    for (const v of NOT_MS) {
      expectCode(() => set.check({ agentId: 'a', serial: S1 }, v as number), 'malformed');
      expectCode(() => set.apply([], v as number, T), 'malformed');
      expectCode(() => set.apply([], 0, v as number), 'malformed');
      expectCode(() => set.replace([], v as number, T), 'malformed');
      expectCode(() => set.replace([], 0, v as number), 'malformed');
      expectCode(() => set.apply([{ ...revokeAgent('a'), revokedAtMs: v as number }], 1, T), 'malformed');
      expectCode(() => set.isFresh(v as number), 'malformed');
    }
    expectCode(() => new MemoryRevocationSet({ maxAgeMs: 0 }), 'malformed');
    expectCode(() => set.check({ agentId: 'a', serial: new Uint8Array(15) }, T), 'malformed');
    expectCode(() => set.apply([{ ...revokeAgent('a'), reason: 'x'.repeat(1025) }], 1, T), 'malformed');
    expectCode(() => set.apply([revokeAgent('a')], 1, -1), 'malformed');
    expect(set.version).toBe(0);
  });
});
