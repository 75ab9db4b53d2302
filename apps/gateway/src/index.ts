/**
 * @parley/gateway — the agent gateway (in progress: routing policy and rate
 * limiting so far; the gRPC service, mailbox, receipts and audit follow).
 */
export { Policy, PolicyError, parsePolicy } from './policy.js';
export type { PolicyDocument, PolicyRule, PolicySubject, Matcher } from './policy.js';
export { RateLimiter } from './rate-limit.js';
export type { RateLimitOptions } from './rate-limit.js';
