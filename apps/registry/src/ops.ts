/**
 * What the CLI commands `serve` and `check` use of @parley/ops, loaded on
 * demand by them (prom-client with it), so that client commands start quickly.
 */
export { startOpsServer, probeReadyz, formatReadyz, ReadyzUnavailableError } from '@parley/ops';
