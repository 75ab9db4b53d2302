/**
 * Default-deny routing policy (docs/PROTOCOL.md §10): who may talk to whom,
 * by agent id, agent type and capability — the only things a relay can see,
 * since message types travel encrypted.
 *
 * Policy file (JSON, snake_case keys like every Parley configuration file):
 *
 *   {
 *     "version": 1,
 *     "rules": [
 *       { "from": { "agent_type": "planner" }, "to": { "agent_type": "worker" }, "bidirectional": true },
 *       { "from": { "capability": "alerts:raise" }, "to": { "agent_id": "security-desk" } }
 *     ]
 *   }
 *
 * The earlier camelCase spellings `agentId` and `agentType` are still read, with
 * a deprecation note (`Policy.deprecations`, logged and shown by `policy check`).
 *
 * A matcher holds any of agent_id, agent_type, capability (all given must hold;
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

/** Deprecated spellings of matcher keys (camelCase, before every file went snake_case) → the key. */
export const DEPRECATED_POLICY_KEYS: Readonly<Record<string, string>> = Object.freeze({ agentId: 'agent_id', agentType: 'agent_type' });

function parseMatcher(value: unknown, where: string, deprecated: Set<string>): Matcher {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new PolicyError(`${where} must be an object`);
  const given = value as Record<string, unknown>;
  const m: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(given)) {
    const name = DEPRECATED_POLICY_KEYS[key] ?? key;
    if (name !== 'agent_id' && name !== 'agent_type' && name !== 'capability') throw new PolicyError(`${where} has unknown key "${key}"`);
    if (name !== key) {
      if (given[name] !== undefined) throw new PolicyError(`${where} has both "${name}" and its old spelling "${key}"`);
      deprecated.add(key);
    }
    m[name] = v;
  }
  const check = (key: string, re: RegExp) => {
    const v = m[key];
    if (v !== undefined && (typeof v !== 'string' || !re.test(v))) throw new PolicyError(`${where}.${key} is not a valid ${key}`);
  };
  check('agent_id', ID_RE);
  check('agent_type', TYPE_RE);
  check('capability', CAP_RE);
  return {
    ...(m['agent_id'] === undefined ? {} : { agentId: m['agent_id'] as string }),
    ...(m['agent_type'] === undefined ? {} : { agentType: m['agent_type'] as string }),
    ...(m['capability'] === undefined ? {} : { capability: m['capability'] as string }),
  };
}

/**
 * Parses and validates a policy document (JSON text or value).
 * @throws PolicyError naming the first offending field
 */
export function parsePolicy(input: unknown): PolicyDocument {
  return parsePolicyNoting(input).document;
}

/**
 * {@link parsePolicy}, also returning the deprecated key spellings it read
 * (`agentId` for `agent_id`, …), each once, as `"agentId" (now "agent_id")`.
 */
export function parsePolicyNoting(input: unknown): { document: PolicyDocument; deprecations: string[] } {
  const deprecated = new Set<string>();
  const document = parseDocument(input, deprecated);
  return { document, deprecations: [...deprecated].map((k) => `"${k}" (now "${DEPRECATED_POLICY_KEYS[k]}")`) };
}

function parseDocument(input: unknown, deprecated: Set<string>): PolicyDocument {
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
        from: parseMatcher(rule['from'], `rules[${i}].from`, deprecated),
        to: parseMatcher(rule['to'], `rules[${i}].to`, deprecated),
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
  /** Deprecated key spellings the document used (empty for a current one): warn the operator. */
  readonly deprecations: readonly string[];

  constructor(document: PolicyDocument, deprecations: readonly string[] = []) {
    this.document = document;
    this.deprecations = deprecations;
  }

  /** The policy that denies everything (the default when none is configured). */
  static denyAll(): Policy {
    return new Policy({ version: 1, rules: [] });
  }

  /**
   * Parses a policy document (JSON text or value).
   * @throws PolicyError naming the first offending field
   */
  static parse(input: unknown): Policy {
    const { document, deprecations } = parsePolicyNoting(input);
    return new Policy(document, deprecations);
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
