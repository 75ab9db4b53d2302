/**
 * @parley/ops — operations plumbing shared by Parley's servers (registry,
 * gateway): readiness checks that drive gRPC health, the HTTP listener with
 * `/healthz` (liveness), `/readyz` (readiness) and `/metrics` (Prometheus),
 * and the Prometheus series every server exports (build info, process
 * defaults, gRPC requests, readiness, database).
 */

// Readiness (gRPC health and /readyz)
export { Readiness, SHUTDOWN_CHECK, logReadiness } from './readiness.js';
export type { CheckResult, CheckState, Probe, ProbeOptions, ReadinessChange, ReadinessLog, ReadinessOptions, ReadinessReport } from './readiness.js';

// The operations listener
export { startOpsServer, readyzBody, probeReadyz, formatReadyz, ReadyzUnavailableError, OPS_MAX_CONNECTIONS, OPS_REQUEST_TIMEOUT_MS } from './ops-server.js';
export type { HealthzBody, OpsRequestRecord, OpsServer, OpsServerOptions, ReadyzBody, ReadyzProbe } from './ops-server.js';

// Standard metrics
export { ServerMetrics, buildInfo } from './server-metrics.js';
export type { BuildInfo, ServerMetricsOptions } from './server-metrics.js';
