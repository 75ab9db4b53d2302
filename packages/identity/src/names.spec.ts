import { describe, expect, it } from 'vitest';
import { WRONG_TYPES, expectCode } from '../test/fixtures.js';
import {
  MAX_CAPABILITIES,
  assertAgentId,
  assertAgentType,
  assertCapabilities,
  assertCapability,
  isAgentId,
  normaliseCapabilities,
} from './names.js';

describe('agent ids', () => {
  it('accepts 1..128 chars of [a-z0-9._:-] starting with [a-z0-9]', () => {
    for (const id of ['a', '0', 'planner-1', 'acme:eu.worker_7', 'a'.repeat(128), '9:-._']) {
      expect(assertAgentId(id)).toBe(id);
      expect(isAgentId(id)).toBe(true);
    }
  });

  it('rejects everything else as malformed', () => {
    const bad = ['', 'a'.repeat(129), 'Planner', '-a', '.a', ':a', '_a', 'a b', 'a/b', 'a\n', '\na', 'é', 'a\u0000', 'ａ'];
    for (const id of bad) {
      expect(isAgentId(id)).toBe(false);
      expectCode(() => assertAgentId(id), 'malformed');
    }
    for (const v of WRONG_TYPES) {
      expect(isAgentId(v)).toBe(false);
      expectCode(() => assertAgentId(v), 'malformed');
    }
  });

  it('names the parameter, not the value, in the message', () => {
    const e = expectCode(() => assertAgentId('SECRET-looking', 'peerId'), 'malformed');
    expect(e.message).toContain('peerId');
    expect(e.message).not.toContain('SECRET');
  });
});

describe('agent types and capabilities', () => {
  it('agent type: 1..64 chars of [a-z0-9._-]', () => {
    expect(assertAgentType('planner')).toBe('planner');
    expect(assertAgentType('a'.repeat(64))).toBe('a'.repeat(64));
    for (const t of ['', 'a'.repeat(65), 'a:b', 'a/b', 'Planner', '-a']) expectCode(() => assertAgentType(t), 'malformed');
    for (const v of WRONG_TYPES) expectCode(() => assertAgentType(v), 'malformed');
  });

  it('capability: 1..128 chars of [a-z0-9._:/-]', () => {
    expect(assertCapability('files/read:all')).toBe('files/read:all');
    expect(assertCapability('a'.repeat(128))).toBe('a'.repeat(128));
    for (const c of ['', 'a'.repeat(129), '/a', 'A', 'a b', 'a*']) expectCode(() => assertCapability(c), 'malformed');
    for (const v of WRONG_TYPES) expectCode(() => assertCapability(v), 'malformed');
  });

  it('assertCapabilities requires canonical order (ascending by byte value, no duplicates)', () => {
    expect(assertCapabilities([])).toEqual([]);
    expect(assertCapabilities(['a', 'a.b', 'a/b', 'a:b', 'b'])).toEqual(['a', 'a.b', 'a/b', 'a:b', 'b']);
    expectCode(() => assertCapabilities(['b', 'a']), 'malformed');
    expectCode(() => assertCapabilities(['a', 'a']), 'malformed');
    expectCode(() => assertCapabilities(['a', 'B']), 'malformed');
    const max = Array.from({ length: MAX_CAPABILITIES }, (_, i) => `c${String(i).padStart(3, '0')}`);
    expect(assertCapabilities(max)).toHaveLength(MAX_CAPABILITIES);
    expectCode(() => assertCapabilities([...max, 'z']), 'malformed');
    for (const v of WRONG_TYPES) if (!Array.isArray(v) || v.length > 0) expectCode(() => assertCapabilities(v), 'malformed');
    expectCode(() => assertCapabilities([1]), 'malformed');
    expectCode(() => assertCapabilities(['a', undefined]), 'malformed');
  });

  it('normaliseCapabilities sorts, dedupes and validates', () => {
    expect(normaliseCapabilities(['task:run', 'msg:send', 'task:run', 'files/read'])).toEqual(['files/read', 'msg:send', 'task:run']);
    expect(normaliseCapabilities(new Set(['b', 'a']))).toEqual(['a', 'b']);
    expect(normaliseCapabilities([])).toEqual([]);
    const many = Array.from({ length: MAX_CAPABILITIES }, (_, i) => `c${i}`);
    expect(normaliseCapabilities([...many, ...many])).toHaveLength(MAX_CAPABILITIES);
    expectCode(() => normaliseCapabilities([...many, 'z']), 'malformed');
    expectCode(() => normaliseCapabilities(['ok', 'NOT OK']), 'malformed');
    for (const v of [undefined, null, 0, 1n, true, {}, 'abc']) expectCode(() => normaliseCapabilities(v as never), 'malformed');
  });
});
