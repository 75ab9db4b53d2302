import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Policy, PolicyError } from './policy.js';
import { RateLimiter } from '@parley/rpc';

const planner = { agentId: 'planner-1', agentType: 'planner', capabilities: ['tasks:assign'] };
const worker = { agentId: 'worker-1', agentType: 'worker', capabilities: ['tasks:run'] };
const desk = { agentId: 'security-desk', agentType: 'monitor', capabilities: [] };

describe('Policy', () => {
  it('denies everything by default', () => {
    expect(Policy.denyAll().allows(planner, worker)).toBe(false);
    expect(Policy.parse({ version: 1, rules: [] }).allows(planner, worker)).toBe(false);
  });

  it('allows by type, capability and id, in the rule direction (or both when bidirectional)', () => {
    const p = Policy.parse(
      JSON.stringify({
        version: 1,
        rules: [
          { from: { agent_type: 'planner' }, to: { agent_type: 'worker' } },
          { from: { capability: 'tasks:run' }, to: { agent_id: 'security-desk' }, bidirectional: true },
        ],
      }),
    );
    expect(p.allows(planner, worker)).toBe(true);
    expect(p.allows(worker, planner)).toBe(false);
    expect(p.allows(worker, desk)).toBe(true);
    expect(p.allows(desk, worker)).toBe(true);
    expect(p.allows(planner, desk)).toBe(false);
    expect(p.deprecations).toEqual([]);
  });

  it('still reads the old camelCase keys (agentId, agentType), noting each as deprecated; both spellings at once are refused', () => {
    const old = Policy.parse({ version: 1, rules: [{ from: { agentType: 'planner' }, to: { agentId: 'worker-1' } }, { from: { agentType: 'worker' }, to: {} }] });
    expect(old.allows(planner, worker)).toBe(true);
    expect(old.deprecations).toEqual(['"agentType" (now "agent_type")', '"agentId" (now "agent_id")']);
    expect(() => Policy.parse({ version: 1, rules: [{ from: { agentType: 'planner', agent_type: 'planner' }, to: {} }] })).toThrow('both "agent_type" and its old spelling "agentType"');
  });

  it('rejects malformed documents with a clear message', () => {
    const bad: [unknown, string][] = [
      ['{', 'not valid JSON'],
      [[], 'must be a JSON object'],
      [{ version: 2, rules: [] }, 'version must be 1'],
      [{ version: 1 }, 'rules must be an array'],
      [{ version: 1, rules: [{ from: {}, to: {}, extra: 1 }] }, 'unknown key "extra"'],
      [{ version: 1, rules: [{ from: { agent_type: 'Bad Type' }, to: {} }] }, 'rules[0].from.agent_type'],
      [{ version: 1, rules: [{ from: { agentKind: 'x' }, to: {} }] }, 'unknown key "agentKind"'],
      [{ version: 1, rules: [{ from: {}, to: 'x' }] }, 'rules[0].to must be an object'],
      [{ version: 1, rules: [{ from: {}, to: {}, bidirectional: 'yes' }] }, 'bidirectional must be a boolean'],
      [{ version: 1, rules: [], other: 1 }, 'unknown top-level key'],
    ];
    for (const [doc, message] of bad) {
      expect(() => Policy.parse(doc)).toThrow(PolicyError);
      expect(() => Policy.parse(doc)).toThrow(message);
    }
  });
});

describe('RateLimiter', () => {
  it('allows a burst, then the sustained rate, per agent', () => {
    let now = 0;
    const r = new RateLimiter({ ratePerSecond: 10, burst: 5, clock: () => now });
    for (let i = 0; i < 5; i++) expect(r.take('a')).toBe(true);
    expect(r.take('a')).toBe(false);
    expect(r.take('b')).toBe(true); // independent buckets
    now += 100; // one token back
    expect(r.take('a')).toBe(true);
    expect(r.take('a')).toBe(false);
    now += 10_000;
    r.sweep();
    expect(r.size).toBe(0);
  });

  it('validates its options', () => {
    expect(() => new RateLimiter({ ratePerSecond: 0, burst: 1 })).toThrow(RangeError);
    expect(() => new RateLimiter({ ratePerSecond: 1, burst: 0.5 })).toThrow(RangeError);
  });
});

describe('the policy example of apps/gateway/README.md ("Routing policy file")', () => {
  it('parses and decides as the README says', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('### Routing policy file'));
    const json = /```json\n([\s\S]*?)```/.exec(section)?.[1];
    expect(json).toBeDefined();
    const p = Policy.parse(json);
    expect(p.deprecations).toEqual([]);
    const alerter = { agentId: 'sensor-7', agentType: 'sensor', capabilities: ['alerts:raise'] };
    const securityDesk = { agentId: 'security-desk', agentType: 'monitor', capabilities: [] };
    const goWorker = { agentId: 'go-worker-1', agentType: 'worker', capabilities: [] };
    const delegator = { agentId: 'planner-2', agentType: 'planner', capabilities: ['task:delegate'] };
    expect(p.allows(planner, worker)).toBe(true);
    expect(p.allows(worker, planner)).toBe(true);
    expect(p.allows(alerter, securityDesk)).toBe(true);
    expect(p.allows(securityDesk, alerter)).toBe(false);
    expect(p.allows(goWorker, delegator)).toBe(true);
    expect(p.allows(goWorker, { ...delegator, capabilities: [] })).toBe(true); // goWorker is a worker: rule 1 still allows it
    expect(p.allows({ ...goWorker, agentType: 'sensor' }, { ...delegator, capabilities: [] })).toBe(false);
  });
});
