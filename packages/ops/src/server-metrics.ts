/**
 * The Prometheus series every Parley server exports, whatever it serves
 * (names in the apps' READMEs): build info, process defaults, gRPC requests
 * by method and code, readiness, and the database (pg pool figures,
 * statement latency). Registered on the server's own prom-client registry.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';
import type { Database } from '@parley/db';
import type { CallRecord } from '@parley/rpc';
import type { Readiness } from './readiness.js';

/** What `parley_build_info` says. */
export interface BuildInfo {
  /** The executable, e.g. `parley-gateway`. */
  readonly program: string;
  /** The package version. */
  readonly version: string;
  /** The source commit, or `unknown`. */
  readonly commit: string;
}

const commits = new Map<string, string>();

/**
 * The build of a package: its `package.json` version, and the commit from
 * `PARLEY_BUILD_COMMIT` or, in a git checkout, `git rev-parse HEAD` (once per
 * directory and process); `unknown` when neither is known.
 * @param program the executable's name
 * @param packageJson URL or path of the package's package.json
 */
export function buildInfo(program: string, packageJson: URL | string): BuildInfo {
  const path = packageJson instanceof URL ? fileURLToPath(packageJson) : packageJson;
  let version = 'unknown';
  try {
    const v = (JSON.parse(readFileSync(path, 'utf8')) as { version?: unknown }).version;
    if (typeof v === 'string') version = v;
  } catch {
    // a missing package.json leaves it unknown
  }
  const fromEnv = process.env['PARLEY_BUILD_COMMIT'];
  if (fromEnv !== undefined && /^[0-9a-f]{7,40}$/.test(fromEnv)) return { program, version, commit: fromEnv };
  const dir = dirname(path);
  let commit = commits.get(dir);
  if (commit === undefined) {
    try {
      commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: dir, encoding: 'utf8', timeout: 2_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      if (!/^[0-9a-f]{40}$/.test(commit)) commit = 'unknown';
    } catch {
      commit = 'unknown';
    }
    commits.set(dir, commit);
  }
  return { program, version, commit };
}

/** Settings of {@link ServerMetrics}. */
export interface ServerMetricsOptions {
  readonly registry: Registry;
  readonly build: BuildInfo;
  /**
   * prom-client's process and Node.js defaults (`process_*`, `nodejs_*`). One
   * set per process: turn it on for the process's main server only (the CLIs
   * do; a test running several servers in one process leaves it off).
   */
  readonly processMetrics?: boolean;
  readonly database?: Database;
  readonly readiness?: Readiness;
}

/** Buckets of request and statement durations, seconds. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The common series of a Parley server; feed `onCallEnd` from `addService`. */
export class ServerMetrics {
  readonly #requests: Counter<'service' | 'method' | 'code'>;
  readonly #duration: Histogram<'service' | 'method'>;
  readonly #unobserve: (() => void) | undefined;

  constructor(options: ServerMetricsOptions) {
    const registers = [options.registry];
    const { build, database, readiness } = options;
    new Gauge({ name: 'parley_build_info', help: 'Build of this server: program, version, commit (always 1)', labelNames: ['program', 'version', 'commit', 'node'] as const, registers }).set(
      { program: build.program, version: build.version, commit: build.commit, node: process.version },
      1,
    );
    if (options.processMetrics === true) collectDefaultMetrics({ register: options.registry });
    this.#requests = new Counter({ name: 'parley_rpc_requests_total', help: 'gRPC calls finished, by service, method and Parley code (ok when it succeeded)', labelNames: ['service', 'method', 'code'] as const, registers });
    this.#duration = new Histogram({ name: 'parley_rpc_request_duration_seconds', help: 'gRPC call duration, by service and method (streams: their whole life)', labelNames: ['service', 'method'] as const, buckets: DURATION_BUCKETS, registers });
    if (readiness !== undefined) {
      new Gauge({
        name: 'parley_ready',
        help: 'Whether the server is ready (every readiness check ok; gRPC health SERVING)',
        registers,
        collect() {
          this.set(readiness.ready ? 1 : 0);
        },
      });
      new Gauge({
        name: 'parley_readiness_check_ok',
        help: 'Readiness checks, 1 ok, 0 failing (the failing ones are named on /readyz)',
        labelNames: ['check'] as const,
        registers,
        collect() {
          this.reset();
          for (const c of readiness.report().checks) this.set({ check: c.name }, c.ok ? 1 : 0);
        },
      });
    }
    if (database !== undefined) {
      const engine = database.engine;
      const latency = new Histogram({ name: 'parley_db_query_duration_seconds', help: 'Database statements (a transaction counts as one), by engine, kind and outcome', labelNames: ['engine', 'kind', 'ok'] as const, buckets: DURATION_BUCKETS, registers });
      this.#unobserve = database.observe((e) => latency.observe({ engine, kind: e.kind, ok: e.ok ? 'true' : 'false' }, e.seconds));
      if (engine === 'postgres') {
        new Gauge({
          name: 'parley_db_pool_connections',
          help: 'PostgreSQL pool connections: total open, idle, and requests waiting for one; max is the pool size',
          labelNames: ['state'] as const,
          registers,
          collect() {
            const pool = database.stats().pool;
            if (pool === undefined) return;
            this.set({ state: 'total' }, pool.total);
            this.set({ state: 'idle' }, pool.idle);
            this.set({ state: 'waiting' }, pool.waiting);
            this.set({ state: 'max' }, pool.max);
          },
        });
      }
    }
  }

  /** Counts a finished call (pass it as, or call it from, `addService`'s `onCallEnd`). */
  onCallEnd(record: CallRecord): void {
    const [, service = 'unknown', method = 'unknown'] = /^\/([^/]+)\/([^/]+)$/.exec(record.path) ?? [];
    this.#requests.inc({ service, method, code: record.code ?? 'ok' });
    this.#duration.observe({ service, method }, record.durationMs / 1000);
  }

  /** Stops observing the database. */
  close(): void {
    this.#unobserve?.();
  }
}
