/**
 * A real gateway for tests: `parley-gateway serve` configured through its
 * environment variables (`PARLEY_GATEWAY_*`), on an ephemeral loopback port,
 * ready at its `ready` line on stdout (which carries the address).
 */
import { join } from 'node:path';
import type { AppBuild } from './apps.js';
import { startApp, type Env, type LogLine, type RunningProcess } from './processes.js';

/** What a test gateway needs; everything else has a test-friendly default (see {@link gatewayEnv}). */
export interface GatewayProcessOptions {
  readonly gatewayId: string;
  /** The registry it follows revocations (and, unless `followTrustBundle` is false, the trust bundle) from. */
  readonly registryAddress: string;
  /** Pinned trust bundle JSON. */
  readonly trustBundleFile: string;
  /** A directory for its PGlite data and audit key (`<dir>/pgdata`, `<dir>/audit-key.json`) unless `env` says otherwise. */
  readonly dir: string;
  /** false: the pinned bundle as is (agents certified by a test issuer the registry does not know). Default true. */
  readonly followTrustBundle?: boolean;
  /** More settings (`PARLEY_GATEWAY_*`, `DATABASE_URL`); they win over the defaults. */
  readonly env?: Env;
}

/** The environment that configures a test gateway: loopback on port 0, no metrics listener, high rate limits. */
export function gatewayEnv(options: GatewayProcessOptions): Env {
  return {
    PARLEY_GATEWAY_ID: options.gatewayId,
    PARLEY_GATEWAY_LISTEN: '127.0.0.1:0',
    PARLEY_GATEWAY_METRICS_LISTEN: 'off',
    PARLEY_GATEWAY_DATA_DIR: join(options.dir, 'pgdata'),
    PARLEY_GATEWAY_AUDIT_KEY: join(options.dir, 'audit-key.json'),
    PARLEY_GATEWAY_REGISTRY: options.registryAddress,
    PARLEY_GATEWAY_TRUST_BUNDLE: options.trustBundleFile,
    PARLEY_GATEWAY_TRUST_BUNDLE_FOLLOW: options.followTrustBundle === false ? 'false' : 'true',
    PARLEY_GATEWAY_RATE_PER_SECOND: '100000',
    PARLEY_GATEWAY_RATE_BURST: '100000',
    PARLEY_GATEWAY_LOG_LEVEL: 'info',
    ...options.env,
  };
}

/** A running gateway process. */
export interface RunningGatewayProcess extends RunningProcess {
  /** host:port it listens on (from its ready line). */
  readonly address: string;
  readonly port: number;
  /** The environment it was started with. */
  readonly env: Env;
}

/** Ready: the `ready` line on stdout, and (by default) the revocation list loaded from the registry. */
export function gatewayReady(requireRevocations = true): (line: LogLine, stream: 'stdout' | 'stderr') => boolean {
  return (line, stream) => stream === 'stdout' && line['ready'] === true && (!requireRevocations || line['revocations_synced'] === true);
}

/**
 * Starts `parley-gateway serve` with exactly `env` (plus the harness's clean environment) and waits for it to be ready.
 * @param options.ready another readiness test (default {@link gatewayReady}())
 */
export async function startGatewayProcess(
  env: Env,
  options: { readonly build?: AppBuild; readonly ready?: (line: LogLine, stream: 'stdout' | 'stderr') => boolean; readonly timeoutMs?: number } = {},
): Promise<RunningGatewayProcess> {
  const proc = await startApp('gateway', ['serve'], {
    env,
    build: options.build ?? 'source',
    ready: options.ready ?? gatewayReady(),
    timeoutMs: options.timeoutMs ?? 60_000,
  });
  const address = proc.readyLine['address'] as string;
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return { ...proc, address, port, env };
}
