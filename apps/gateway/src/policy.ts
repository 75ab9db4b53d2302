/**
 * Default-deny routing policy (docs/PROTOCOL.md §10): who may talk to whom,
 * by agent id, agent type and capability — the only things a relay can see,
 * since message types travel encrypted.
 *
 * Policy file (JSON):
 *
 *   {
 *     "version": 1,
 *     "rules": [
 *       { "from": { "agentType": "planner" }, "to": { "agentType": "worker" }, "bidirectional": true },
 *       { "from": { "capability": "alerts:raise" }, "to": { "agentId": "security-desk" } }
 *     ]
 *   }
 *
 * A matcher holds any of agentId, agentType, capability (all given must hold;
 * an empty matcher `{}` matches any authenticated agent). A message from A to
 * B is allowed when some rule's `from` matches A and `to` matches B (or, for a
 * bidirectional rule, the other way round). Nothing matches → denied.
 */

/** What the gateway knows about an authenticated agent (from its verified certificate). */
export interface PolicySubject {
  readonly agentId: string;
  readonly agentType: string;
  readonly capabilities: readonly string[];
}

export interface Matcher {
  readonly agentId?: string;
  readonly agentType?: string;
  readonly capability?: string;
}

export interface PolicyRule {
  readonly from: Matcher;
  readonly to: Matcher;
  readonly bidirectional?: boolean;
}

export interface PolicyDocument {
  readonly version: 1;
  readonly rules: readonly PolicyRule[];
}

export class PolicyError extends Error {
  override readonly name = 'PolicyError';
  constructor(message: string) {
    super(`[invalid_policy] ${message}`);
  }
}

const ID_RE = /^[a-z0-9][a-z0-9._:-]{0,127}$/;
const TYPE_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const CAP_RE = /^[a-z0-9][a-z0-9._:/-]{0,127}$/;
const MAX_RULES = 10_000;

function parseMatcher(value: unknown, where: string): Matcher {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new PolicyError(`${where} must be an object`);
  const m = value as Record<string, unknown>;
  for (const key of Object.keys(m)) {
    if (key !== 'agentId' && key !== 'agentType' && key !== 'capability') throw new PolicyError(`${where} has unknown key "${key}"`);
  }
  const check = (key: string, re: RegExp) => {
    const v = m[key];
    if (v !== undefined && (typeof v !== 'string' || !re.test(v))) throw new PolicyError(`${where}.${key} is not a valid ${key}`);
  };
  check('agentId', ID_RE);
  check('agentType', TYPE_RE);
  check('capability', CAP_RE);
  return {
    ...(m['agentId'] === undefined ? {} : { agentId: m['agentId'] as string }),
    ...(m['agentType'] === undefined ? {} : { agentType: m['agentType'] as string }),
    ...(m['capability'] === undefined ? {} : { capability: m['capability'] as string }),
  };
}

/**
 * Parses and validates a policy document (JSON text or value).
 * @throws PolicyError naming the first offending field
 */
export function parsePolicy(input: unknown): PolicyDocument {
  let value = input;
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value) as unknown;
    } catch {
      throw new PolicyError('policy is not valid JSON');
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new PolicyError('policy must be a JSON object');
  const doc = value as Record<string, unknown>;
  for (const key of Object.keys(doc)) if (key !== 'version' && key !== 'rules') throw new PolicyError(`unknown top-level key "${key}"`);
  if (doc['version'] !== 1) throw new PolicyError('version must be 1');
  const rules = doc['rules'];
  if (!Array.isArray(rules)) throw new PolicyError('rules must be an array');
  if (rules.length > MAX_RULES) throw new PolicyError(`at most ${MAX_RULES} rules`);
  return {
    version: 1,
    rules: rules.map((r: unknown, i): PolicyRule => {
      if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new PolicyError(`rules[${i}] must be an object`);
      const rule = r as Record<string, unknown>;
      for (const key of Object.keys(rule)) {
        if (key !== 'from' && key !== 'to' && key !== 'bidirectional') throw new PolicyError(`rules[${i}] has unknown key "${key}"`);
      }
      if (rule['bidirectional'] !== undefined && typeof rule['bidirectional'] !== 'boolean') {
        throw new PolicyError(`rules[${i}].bidirectional must be a boolean`);
      }
      return {
        from: parseMatcher(rule['from'], `rules[${i}].from`),
        to: parseMatcher(rule['to'], `rules[${i}].to`),
        ...(rule['bidirectional'] === true ? { bidirectional: true } : {}),
      };
    }),
  };
}

function matches(m: Matcher, s: PolicySubject): boolean {
  return (
    (m.agentId === undefined || m.agentId === s.agentId) &&
    (m.agentType === undefined || m.agentType === s.agentType) &&
    (m.capability === undefined || s.capabilities.includes(m.capability))
  );
}

/** A compiled policy. Immutable: reloading swaps in a new one. */
export class Policy {
  readonly document: PolicyDocument;

  constructor(document: PolicyDocument) {
    this.document = document;
  }

  /** The policy that denies everything (the default when none is configured). */
  static denyAll(): Policy {
    return new Policy({ version: 1, rules: [] });
  }

  static parse(input: unknown): Policy {
    return new Policy(parsePolicy(input));
  }

  /** May `from` send to `to`? Default deny. */
  allows(from: PolicySubject, to: PolicySubject): boolean {
    for (const rule of this.document.rules) {
      if (matches(rule.from, from) && matches(rule.to, to)) return true;
      if (rule.bidirectional === true && matches(rule.from, to) && matches(rule.to, from)) return true;
    }
    return false;
  }
}
