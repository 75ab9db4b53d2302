/**
 * @parley/gateway — the agent gateway: authenticated gRPC relay with
 * default-deny policy, per-agent rate limits, revocation, a durable
 * at-least-once mailbox, an audit entry per routed item and Prometheus
 * metrics (docs/PROTOCOL.md §10).
 */
export { Gateway, DEFAULT_MAX_FRAME_BYTES, DEFAULT_RECEIVER_MAX_AGE_MS, defaultVerifyThreads } from './gateway.js';
export { Mailbox, DEFAULT_MAILBOX_TTL_MS, GATEWAY_MIGRATIONS, migrateGatewaySchema } from './mailbox.js';
export type { MailboxItem, MailboxOptions } from './mailbox.js';
export { openDatabase } from '@parley/db';
export type { Database, DatabaseOptions } from '@parley/db';
export { GatewayMetrics } from './metrics.js';
export type { FeedSource, RevocationSource } from './metrics.js';
export { Readiness } from '@parley/ops';
export type { CheckResult, ReadinessReport } from '@parley/ops';
export type { GatewayOptions, DeliveryInit, DeliveryWriter } from './gateway.js';
export { pushDelivery } from './gateway.js';
export { startGateway, GATEWAY_PROGRAM } from './server.js';
export type { StartGatewayOptions, RunningGateway } from './server.js';
export { Policy, PolicyError, parsePolicy } from './policy.js';
export type { PolicyDocument, PolicyRule, PolicySubject, Matcher } from './policy.js';
export { RateLimiter } from '@parley/rpc';
export type { RateLimitOptions } from '@parley/rpc';
