// Readiness, metrics and alerting with REAL PROCESSES on loopback: a registry
// process, a `parley-gateway serve` process (on PostgreSQL when DATABASE_URL
// is set, in a database of its own), and a real Prometheus (Debian's
// `prometheus`) scraping both every second and evaluating the example rules
// deploy/prometheus/parley-alerts.yml every second.
//
// 1. The registry down, then back: the gateway's gRPC health (Health.Watch)
//    goes NOT_SERVING then SERVING by itself, `parley-gateway check` exits 9
//    then 0, the feed-age metric (as Prometheus scraped it) rises then resets,
//    and the alert ParleyRevocationFeedStale fires, then resolves.
// 2. (PostgreSQL) the gateway's database refusing connections (ALLOW_CONNECTIONS
//    false, sessions terminated): NOT_SERVING, /readyz names `storage`, check
//    exits 9, ParleyNotReady{check="storage"} goes pending; connections allowed
//    again: SERVING, check 0, the alert gone.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { AgentGatewayService, Health } from '@parley/proto';
import { ServingStatus, createClient } from '@parley/rpc';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/cli.js';
import { appDir, gatewayReady, onLines, runApp, startApp, startRegistry, tempDir, type RunningProcess, type TestRegistry } from '@parley/test-support';

const GATEWAY_ID = 'gw-observe.test';
const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const REQUIRE = process.env['CI'] === 'true' || process.env['CI'] === '1';
const RULES = join(appDir('gateway'), '..', '..', 'deploy', 'prometheus', 'parley-alerts.yml');
const MAX_AGE_MS = 3_000;

const prometheusAvailable = await new Promise<boolean>((resolve) => {
  const p = spawn('prometheus', ['--version'], { stdio: 'ignore' });
  p.on('error', () => resolve(false));
  p.on('exit', (code) => resolve(code === 0));
});
if (!prometheusAvailable && REQUIRE) throw new Error('prometheus is required under CI=true (Debian package prometheus; .ci/run installs it)');
if (DATABASE_URL === undefined && REQUIRE) throw new Error('DATABASE_URL is required under CI=true');

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function until<T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface PromAlert {
  readonly labels: Record<string, string>;
  readonly state: 'pending' | 'firing';
  readonly annotations: Record<string, string>;
}

describe.skipIf(!prometheusAvailable)('observability with a real Prometheus', () => {
  const dir = tempDir('observe');
  let registry: TestRegistry;
  let gateway: RunningProcess;
  let prometheus: ChildProcess | undefined;
  let promUrl: string;
  let opsUrl: string;
  let database: string | undefined;
  let admin: pg.Client | undefined;
  const health = { statuses: [] as ServingStatus[], abort: new AbortController() };

  async function query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await res.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    expect(body.status).toBe('success');
    return body.data.result;
  }

  async function alerts(): Promise<PromAlert[]> {
    const body = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: PromAlert[] } };
    return body.data.alerts;
  }

  async function feedAge(): Promise<number | undefined> {
    const r = await query('parley_gateway_revocation_age_seconds{job="parley-gateway"}');
    return r.length === 1 ? Number(r[0]!.value[1]) : undefined;
  }

  beforeAll(async () => {
    const [gatewayOps, registryOps, promPort] = [await freePort(), await freePort(), await freePort()];
    registry = await startRegistry(['--heartbeat-ms', '500', '--metrics-listen', `127.0.0.1:${registryOps}`]);
    const db: Record<string, string> = {};
    if (DATABASE_URL !== undefined) {
      admin = new pg.Client({ connectionString: DATABASE_URL });
      await admin.connect();
      database = `parley_gw_observe_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
      await admin.query(`CREATE DATABASE ${database}`);
      const url = new URL(DATABASE_URL);
      url.pathname = `/${database}`;
      db['DATABASE_URL'] = url.toString();
    } else db['PARLEY_GATEWAY_DATA_DIR'] = join(dir.path, 'pgdata');
    gateway = await startApp('gateway', ['serve'], {
      env: {
        PARLEY_GATEWAY_ID: GATEWAY_ID,
        PARLEY_GATEWAY_LISTEN: '127.0.0.1:0',
        PARLEY_GATEWAY_METRICS_LISTEN: `127.0.0.1:${gatewayOps}`,
        PARLEY_GATEWAY_AUDIT_KEY: join(dir.path, 'audit-key.json'),
        PARLEY_GATEWAY_REGISTRY: registry.address,
        PARLEY_GATEWAY_TRUST_BUNDLE: registry.trustBundleFile,
        PARLEY_GATEWAY_REVOCATION_MAX_AGE_MS: String(MAX_AGE_MS),
        ...db,
      },
      ready: gatewayReady(),
      timeoutMs: 60_000,
    });
    opsUrl = `http://127.0.0.1:${gatewayOps}`;

    const promDir = join(dir.path, 'prometheus');
    mkdirSync(promDir);
    writeFileSync(
      join(promDir, 'prometheus.yml'),
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms }',
        `rule_files: ['${RULES}']`,
        'scrape_configs:',
        `  - { job_name: parley-gateway, static_configs: [{ targets: ['127.0.0.1:${gatewayOps}'] }] }`,
        `  - { job_name: parley-registry, static_configs: [{ targets: ['127.0.0.1:${registryOps}'] }] }`,
        '',
      ].join('\n'),
    );
    promUrl = `http://127.0.0.1:${promPort}`;
    const p = spawn(
      'prometheus',
      [`--config.file=${join(promDir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(promDir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus = p;
    const promLog: string[] = [];
    onLines(p.stderr!, (l) => promLog.push(l));
    onLines(p.stdout!, (l) => promLog.push(l));
    let exited: string | undefined;
    p.on('exit', (code, signal) => (exited = `exited ${code ?? signal}`));
    // Two shared cores running the other load suites beside this one: Prometheus may take a while to start.
    try {
      await until(async () => (await fetch(`${promUrl}/-/ready`).catch(() => undefined))?.ok, 120_000, 'Prometheus ready');
    } catch (error) {
      throw new Error(`${(error as Error).message} (Prometheus ${exited ?? 'running'}; its last lines: ${promLog.slice(-5).join(' | ') || 'none'})`, { cause: error });
    }

    const client = createClient(Health, gateway.readyLine['address'] as string, credentials.createInsecure());
    void (async () => {
      try {
        for await (const r of client.watch({ service: AgentGatewayService.typeName }, { signal: health.abort.signal })) health.statuses.push(r.status);
      } catch {
        // cancelled
      } finally {
        client.close();
      }
    })();
  }, 300_000);

  afterAll(async () => {
    health.abort.abort();
    if (prometheus !== undefined && prometheus.exitCode === null) {
      const exited = new Promise((r) => prometheus!.once('exit', r));
      prometheus.kill('SIGTERM');
      await exited;
    }
    await gateway?.stop();
    await registry?.cleanup();
    if (admin !== undefined && database !== undefined) {
      await admin.query(`ALTER DATABASE ${database} ALLOW_CONNECTIONS true`).catch(() => undefined);
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    }
    await admin?.end();
    dir.remove();
  }, 60_000);

  it('registry down then back: health NOT_SERVING then SERVING, check 9 then 0, feed age rising then reset, ParleyRevocationFeedStale firing then resolved', async () => {
    // Steady state, as Prometheus sees it: both targets up, the gateway ready, no alert.
    await until(async () => (await query('up{job=~"parley.*"} == 1')).length === 2 || undefined, 30_000, 'both targets scraped');
    await until(async () => (await query('parley_ready{job="parley-gateway"} == 1')).length === 1 || undefined, 30_000, 'the gateway ready in Prometheus');
    expect(health.statuses.at(-1)).toBe(ServingStatus.SERVING);
    expect((await alerts()).filter((a) => a.labels['alertname'] === 'ParleyRevocationFeedStale')).toEqual([]);
    expect((await runApp('gateway', ['check', '--url', opsUrl])).code).toBe(EXIT_CODES.ok);
    const before = (await feedAge())!;
    expect(before).toBeLessThan(MAX_AGE_MS / 1000);

    await registry.stop();
    await until(() => health.statuses.at(-1) === ServingStatus.NOT_SERVING || undefined, 20_000, 'Health.Watch NOT_SERVING');
    const down = await runApp('gateway', ['check', '--url', opsUrl]);
    expect(down.code, down.stdout).toBe(EXIT_CODES.notReady);
    expect(down.stdout).toMatch(/ {2}revocation +FAIL +revocation list version \d+ is \d+ s old \(bound 3 s\): registry unreachable\?; agents are refused \(fail closed\)/);
    // The feed age rises, scrape after scrape…
    const a1 = await until(async () => ((await feedAge()) ?? 0) > MAX_AGE_MS / 1000 ? feedAge() : undefined, 30_000, 'the scraped feed age past its bound');
    const a2 = await until(async () => {
      const a = await feedAge();
      return a !== undefined && a > a1! + 1 ? a : undefined;
    }, 30_000, 'the scraped feed age rising');
    expect(a2).toBeGreaterThan(a1!);
    // …and the rule fires, with its annotations filled from the real series.
    const stale = await until(async () => (await alerts()).find((a) => a.labels['alertname'] === 'ParleyRevocationFeedStale' && a.state === 'firing'), 30_000, 'ParleyRevocationFeedStale firing');
    expect(stale.labels).toMatchObject({ severity: 'critical', job: 'parley-gateway', instance: opsUrl.replace('http://', '') });
    expect(stale.annotations['summary']).toBe(`Gateway ${opsUrl.replace('http://', '')}: revocation data stale, every agent is refused`);
    // The registry's own target is down: that rule matches too (pending for its minute).
    await until(async () => (await alerts()).find((a) => a.labels['alertname'] === 'ParleyTargetDown' && a.labels['job'] === 'parley-registry'), 30_000, 'ParleyTargetDown pending for the registry');

    await registry.restart();
    await until(() => health.statuses.at(-1) === ServingStatus.SERVING || undefined, 30_000, 'Health.Watch SERVING again');
    expect(health.statuses.slice(-3)).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING, ServingStatus.SERVING]);
    const up = await runApp('gateway', ['check', '--url', opsUrl]);
    expect(up.code, up.stdout).toBe(EXIT_CODES.ok);
    await until(async () => ((await feedAge()) ?? Infinity) < MAX_AGE_MS / 1000 || undefined, 30_000, 'the scraped feed age reset');
    await until(async () => !(await alerts()).some((a) => a.labels['alertname'] === 'ParleyRevocationFeedStale') || undefined, 30_000, 'ParleyRevocationFeedStale resolved');
    // The whole episode in Prometheus: the age went past the bound, then came back under it.
    const range = await query(`max_over_time(parley_gateway_revocation_age_seconds{job="parley-gateway"}[2m])`);
    expect(Number(range[0]!.value[1])).toBeGreaterThan(a2!);
  }, 240_000);

  it.skipIf(DATABASE_URL === undefined)('the gateway database refusing connections: NOT_SERVING, /readyz names storage, check 9, ParleyNotReady pending; then back by itself', async () => {
    await until(() => health.statuses.at(-1) === ServingStatus.SERVING || undefined, 30_000, 'SERVING to begin with');
    await admin!.query(`ALTER DATABASE ${database} ALLOW_CONNECTIONS false`);
    await admin!.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [database]);
    await until(() => health.statuses.at(-1) === ServingStatus.NOT_SERVING || undefined, 30_000, 'Health.Watch NOT_SERVING');
    const readyz = await fetch(`${opsUrl}/readyz`);
    expect(readyz.status).toBe(503);
    expect(await readyz.json()).toMatchObject({ ready: false, failing: ['storage'] });
    const down = await runApp('gateway', ['check', '--url', opsUrl]);
    expect(down.code).toBe(EXIT_CODES.notReady);
    expect(down.stderr).toMatch(/^parley-gateway: error: not ready: storage \(database .*\)\n$/);
    // /metrics still answers while the database does not (the scrape must not fail with it).
    expect((await fetch(`${opsUrl}/metrics`)).status).toBe(200);
    const pending = await until(
      async () => (await alerts()).find((a) => a.labels['alertname'] === 'ParleyNotReady' && a.labels['check'] === 'storage'),
      30_000,
      'ParleyNotReady{check="storage"} pending',
    );
    expect(pending).toMatchObject({ state: 'pending', labels: { job: 'parley-gateway', severity: 'critical' } });
    expect((await query('up{job="parley-gateway"}'))[0]!.value[1]).toBe('1');

    await admin!.query(`ALTER DATABASE ${database} ALLOW_CONNECTIONS true`);
    await until(() => health.statuses.at(-1) === ServingStatus.SERVING || undefined, 30_000, 'Health.Watch SERVING again');
    expect((await runApp('gateway', ['check', '--url', opsUrl])).code).toBe(EXIT_CODES.ok);
    await until(async () => !(await alerts()).some((a) => a.labels['alertname'] === 'ParleyNotReady') || undefined, 30_000, 'ParleyNotReady gone');
    // The gateway logged the episode once each way, at warn then info (not once per probe).
    const logs = gateway.stderr.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['check'] === 'storage');
    expect(logs.map((l) => l['msg'])).toEqual(['readiness check passes', 'readiness check fails', 'readiness check passes again']);
  }, 180_000);
});
