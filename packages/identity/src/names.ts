/**
 * Validation of the names a certificate carries (proto/parley/v1/identity.proto,
 * AgentCertificate fields 2, 4 and 5): agent ids, agent types and capability
 * lists. All are lowercase ASCII, so a string's length is its byte length and
 * JavaScript's `<` on them is comparison by byte value.
 *
 * Issuers call {@link normaliseCapabilities} (sort, dedupe); verifiers call
 * {@link assertCapabilities}, which requires the canonical order that the
 * certificate TBS layout signs, so one capability set has exactly one encoding.
 */
import { describe, malformed } from './assert.js';

/** AgentId: 1..128 bytes of ASCII `[a-z0-9._:-]`, starting with `[a-z0-9]`. */
export const AGENT_ID_PATTERN = /^[a-z0-9][a-z0-9._:-]{0,127}$/;
/** Agent type: 1..64 bytes of ASCII `[a-z0-9._-]`, starting with `[a-z0-9]`. */
export const AGENT_TYPE_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
/** Capability: 1..128 bytes of ASCII `[a-z0-9._:/-]`, starting with `[a-z0-9]`. */
export const CAPABILITY_PATTERN = /^[a-z0-9][a-z0-9._:/-]{0,127}$/;
/** Most capabilities one certificate may carry. */
export const MAX_CAPABILITIES = 64;

/**
 * Whether `value` is a well-formed AgentId.
 * @param value anything
 * @returns true for a string matching {@link AGENT_ID_PATTERN}
 */
export function isAgentId(value: unknown): value is string {
  return typeof value === 'string' && AGENT_ID_PATTERN.test(value);
}

/**
 * Asserts a well-formed AgentId.
 * @param value the candidate
 * @param name parameter name for the error message
 * @returns `value`
 * @throws IdentityError `malformed` when it is not a string matching {@link AGENT_ID_PATTERN}
 */
export function assertAgentId(value: unknown, name = 'agentId'): string {
  return assertPattern(value, name, AGENT_ID_PATTERN, '1..128 chars of [a-z0-9._:-] starting with [a-z0-9]');
}

/**
 * Asserts a well-formed agent type.
 * @param value the candidate
 * @param name parameter name for the error message
 * @returns `value`
 * @throws IdentityError `malformed` when it is not a string matching {@link AGENT_TYPE_PATTERN}
 */
export function assertAgentType(value: unknown, name = 'agentType'): string {
  return assertPattern(value, name, AGENT_TYPE_PATTERN, '1..64 chars of [a-z0-9._-] starting with [a-z0-9]');
}

/**
 * Asserts a well-formed capability.
 * @param value the candidate
 * @param name parameter name for the error message
 * @returns `value`
 * @throws IdentityError `malformed` when it is not a string matching {@link CAPABILITY_PATTERN}
 */
export function assertCapability(value: unknown, name = 'capability'): string {
  return assertPattern(value, name, CAPABILITY_PATTERN, '1..128 chars of [a-z0-9._:/-] starting with [a-z0-9]');
}

/**
 * Asserts a capability list in canonical form: an array of 0..64 valid
 * capabilities, strictly ascending by byte value (so sorted, no duplicates).
 * This is what a verifier requires; issuers normalise first.
 *
 * @param value the candidate
 * @param name parameter name for the error message
 * @returns `value`
 * @throws IdentityError `malformed` on a wrong type, too many entries, an invalid entry, or non-canonical order
 */
export function assertCapabilities(value: unknown, name = 'capabilities'): readonly string[] {
  if (!Array.isArray(value)) malformed(`${name} must be an array, got ${describe(value)}`);
  const list = value as unknown[];
  if (list.length > MAX_CAPABILITIES) malformed(`${name} must have at most ${MAX_CAPABILITIES} entries, got ${list.length}`);
  for (let i = 0; i < list.length; i++) {
    const item = assertCapability(list[i], `${name}[${i}]`);
    if (i > 0 && !((list[i - 1] as string) < item)) {
      malformed(`${name} must be sorted ascending by byte value without duplicates (entry ${i})`);
    }
  }
  return list as string[];
}

/**
 * The canonical form of a capability list, for issuers: validates each entry,
 * sorts ascending by byte value and removes duplicates.
 *
 * @param values capabilities in any order, duplicates allowed
 * @returns a new sorted, de-duplicated array
 * @throws IdentityError `malformed` on a wrong type, an invalid entry, or more than 64 distinct entries
 */
export function normaliseCapabilities(values: Iterable<string>): string[] {
  if (typeof values !== 'object' || values === null || typeof (values as Iterable<unknown>)[Symbol.iterator] !== 'function') {
    malformed(`capabilities must be an iterable of strings, got ${describe(values)}`);
  }
  const set = new Set<string>();
  let i = 0;
  for (const item of values as Iterable<unknown>) {
    set.add(assertCapability(item, `capabilities[${i++}]`));
    // Bound the work on hostile input before sorting.
    if (set.size > MAX_CAPABILITIES) malformed(`capabilities must have at most ${MAX_CAPABILITIES} distinct entries`);
  }
  // ASCII only, so the default UTF-16 order is byte order.
  return [...set].sort();
}

function assertPattern(value: unknown, name: string, pattern: RegExp, rule: string): string {
  if (typeof value !== 'string') malformed(`${name} must be a string, got ${describe(value)}`);
  if (!pattern.test(value)) malformed(`${name} must be ${rule} (got ${value.length} chars)`);
  return value;
}
