// Operating the registry, with real processes: the operations listener
// (`serve --metrics-listen`: /metrics, /healthz, /readyz), `check` and its exit
// codes, gRPC health following readiness when the database refuses
// connections (PostgreSQL) and recovering by itself, security events with
// stable fields, log hygiene, and registry.json validation (unknown keys
// refused, every problem at once).
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { Health, RegistryService } from '@parley/proto';
import { ServingStatus, createClient } from '@parley/rpc';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/cli.js';
import { DATABASE_URL, duplicateKeys, initRegistry, REQUIRE_POSTGRES, runRegistryCli, serveRegistry, tempDir, type RegistryFixture, type RunningRegistry } from '@parley/test-support';

if (DATABASE_URL === undefined && REQUIRE_POSTGRES) throw new Error('DATABASE_URL is required under CI=true');

async function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('registry operations listener and check (PGlite)', () => {
  let fixture: RegistryFixture;
  let registry: RunningRegistry;
  let ops: string;

  beforeAll(async () => {
    fixture = await initRegistry('pglite', 'ops');
    registry = await serveRegistry(fixture, ['--metrics-listen', '127.0.0.1:0']);
    const listening = registry.logs.find((l) => l['msg'] === 'listening')!;
    ops = (listening['readiness_url'] as string).replace('/readyz', '');
  }, 60_000);

  afterAll(async () => {
    await registry?.stop();
    await fixture?.cleanup();
  });

  it('serves /metrics, /healthz, /readyz; check exits 0 ready, 7 unreachable, 2 usage', async () => {
    const listening = registry.logs.find((l) => l['msg'] === 'listening')!;
    expect(listening).toMatchObject({ ready: true, metrics_url: `${ops}/metrics` });
    expect((await fetch(`${ops}/healthz`)).status).toBe(200);
    const readyz = await fetch(`${ops}/readyz`);
    expect(readyz.status).toBe(200);
    expect(await readyz.json()).toMatchObject({ ready: true, failing: [], checks: [{ name: 'storage', ok: true, detail: 'pglite answers' }] });

    const cli = (args: string[]) => runRegistryCli([...args, '--data-dir', fixture.dataDir, '--server', registry.address]);
    expect((await cli(['agent', 'register', 'worker-ops', '--type', 'worker'])).code).toBe(0);
    expect((await cli(['agent', 'revoke', 'worker-ops', '--reason', 'key-compromise'])).code).toBe(0);
    const metrics = await (await fetch(`${ops}/metrics`)).text();
    expect(metrics).toMatch(/^parley_registry_certificates_issued_total\{reason="register"\} 1$/m);
    expect(metrics).toMatch(/^parley_registry_revocations_total\{subject="agent",via="revoke"\} 1$/m);
    expect(metrics).toMatch(/^parley_registry_revocation_version 1$/m);
    expect(metrics).toMatch(/^parley_rpc_requests_total\{service="parley.v1.RegistryService",method="RegisterAgent",code="ok"\} 1$/m);
    expect(metrics).toMatch(/^parley_build_info\{program="parley-registry",version="[^"]+",commit="(?:[0-9a-f]{40}|unknown)",node="v[\d.]+"\} 1$/m);
    expect(metrics).toMatch(/^parley_ready 1$/m);
    expect(metrics).toMatch(/^parley_db_query_duration_seconds_count\{engine="pglite",kind="transaction",ok="true"\} [1-9]/m);
    expect(metrics).toMatch(/^process_resident_memory_bytes \d/m);

    const ok = await runRegistryCli(['check', '--url', ops]);
    expect(ok.code, ok.stderr).toBe(EXIT_CODES.ok);
    expect(ok.stdout).toMatch(/^ready: http:\/\/127\.0\.0\.1:\d+\/readyz\n {2}storage +ok +pglite answers\n$/);
    const json = await runRegistryCli(['check', '--url', ops, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ ready: true, failing: [], url: `${ops}/readyz` });
    const port = await closedPort();
    const [unreachable, off, badUrl] = await Promise.all([
      runRegistryCli(['check', '--url', `http://127.0.0.1:${port}`]),
      runRegistryCli(['check', '--data-dir', fixture.dataDir]), // registry.json: metrics_listen off
      runRegistryCli(['check', '--url', 'ftp:x']),
    ]);
    expect(unreachable.code, unreachable.stderr).toBe(EXIT_CODES.unavailable);
    expect(unreachable.stderr).toBe(`parley-registry: error: http://127.0.0.1:${port}/readyz unreachable (ECONNREFUSED)\n`);
    expect(off.code).toBe(EXIT_CODES.usage);
    expect(off.stderr).toMatch(/the operations listener is off/);
    expect(badUrl.code).toBe(EXIT_CODES.usage);
  }, 90_000);

  it('a refused operator call is a security event with stable fields; health probes log at debug; no key twice in a line', async () => {
    const stranger = tempDir('ops-stranger');
    try {
      // A key nobody listed signs a write: refused, logged as a security event with its key id.
      const key = join(stranger.path, 'k.json');
      await runRegistryCli(['operator', 'add', 'zed', '--key-file', key, '--data-dir', fixture.dataDir, '--server', '127.0.0.1:1']);
      const denied = await runRegistryCli(['agent', 'register', 'worker-x', '--type', 'worker', '--operator-key', key, '--data-dir', fixture.dataDir, '--server', registry.address]);
      expect(denied.code).toBe(EXIT_CODES.permissionDenied);
      const health = createClient(Health, registry.address, credentials.createInsecure());
      expect((await health.check({ service: RegistryService.typeName })).status).toBe(ServingStatus.SERVING);
      health.close();
      await until(() => registry.logs.some((l) => l['event'] === 'security' && l['code'] === 'permission_denied'), 5_000, 'the security event');
      const event = registry.logs.find((l) => l['event'] === 'security' && l['code'] === 'permission_denied')!;
      expect(event).toMatchObject({ level: 40, msg: 'security event', stage: 'registry.RegisterAgent', code: 'permission_denied', key_id: expect.stringMatching(/^[0-9a-f]{32}$/), remote: expect.any(String) });
      expect(event['detail']).toMatch(/not a listed operator/);
      const metrics = await (await fetch(`${ops}/metrics`)).text();
      expect(metrics).toMatch(/^parley_registry_auth_refusals_total\{code="permission_denied"\} 1$/m);
      // Probes are not logged at info (the default level here).
      expect(registry.logs.some((l) => String(l['method']).startsWith('/grpc.health.v1.Health/') || l['path'] === '/readyz')).toBe(false);
      for (const l of registry.logs) expect(duplicateKeys(JSON.stringify(l))).toEqual([]);
    } finally {
      stranger.remove();
    }
  }, 60_000);
});

describe('registry.json validation', () => {
  it('refuses unknown keys and reports every problem at once, in one line', async () => {
    const fixture = await initRegistry('pglite', 'cfg');
    try {
      const path = join(fixture.dataDir, 'registry.json');
      const written = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
      expect(written).toMatchObject({ version: 1, metrics_listen: 'off' });
      writeFileSync(path, JSON.stringify({ ...written, heartbeatMs: 500, heartbeat_ms: 60_000, listen: 'nowhere', challenge_ttl_ms: -1, metrics_listen: 'everywhere', colour: 'blue' }));
      const r = await runRegistryCli(['serve', '--data-dir', fixture.dataDir]);
      expect(r.code).toBe(EXIT_CODES.invalidArgument);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toBe(
        `parley-registry: error: 6 problems in ${path}: unknown key 'heartbeatMs' (did you mean 'heartbeat_ms'?); unknown key 'colour'; ` +
          'listen must be "host:port", got "nowhere"; metrics_listen must be "off" or "host:port", got "everywhere"; challenge_ttl_ms must be an integer ≥ 1000; ' +
          'heartbeat_ms must be at most 20000 (gateways reopen a watch silent for 40 s)',
      );
      // A bad --metrics-listen is a usage error.
      writeFileSync(path, JSON.stringify(written));
      const flag = await runRegistryCli(['serve', '--data-dir', fixture.dataDir, '--listen', '127.0.0.1:0', '--metrics-listen', 'x']);
      expect(flag.code).toBe(EXIT_CODES.usage);
      expect(flag.stderr).toMatch(/--metrics-listen must be "off" or host:port, got 'x'/);
      const slow = await runRegistryCli(['serve', '--data-dir', fixture.dataDir, '--listen', '127.0.0.1:0', '--heartbeat-ms', '60000']);
      expect(slow.code).toBe(EXIT_CODES.usage);
      expect(slow.stderr).toMatch(/--heartbeat-ms must be an integer from 100 to 20000/);
    } finally {
      await fixture.cleanup();
    }
  }, 60_000);
});

describe.skipIf(DATABASE_URL === undefined)('PostgreSQL refusing connections: health NOT_SERVING, check 9, then back by itself', () => {
  it('follows the database', async () => {
    const admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
    const name = `parley_reg_ops_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(DATABASE_URL!);
    url.pathname = `/${name}`;
    const dir = tempDir('ops-pg');
    let registry: RunningRegistry | undefined;
    const health = { statuses: [] as ServingStatus[], abort: new AbortController() };
    try {
      const init = await runRegistryCli(['init', '--data-dir', dir.path, '--database-url', url.toString()]);
      expect(init.code, init.stderr).toBe(0);
      registry = await serveRegistry({ dataDir: dir.path, env: { DATABASE_URL: url.toString() } }, ['--metrics-listen', '127.0.0.1:0']);
      const ops = (registry.logs.find((l) => l['msg'] === 'listening')!['readiness_url'] as string).replace('/readyz', '');
      const client = createClient(Health, registry.address, credentials.createInsecure());
      void (async () => {
        try {
          for await (const r of client.watch({ service: RegistryService.typeName }, { signal: health.abort.signal })) health.statuses.push(r.status);
        } catch {
          // cancelled
        }
      })();
      await until(() => health.statuses.length > 0, 5_000, 'the first Health.Watch answer');
      expect(health.statuses).toEqual([ServingStatus.SERVING]);
      const metrics = await (await fetch(`${ops}/metrics`)).text();
      expect(metrics).toMatch(/^parley_db_pool_connections\{state="max"\} 10$/m);

      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name]);
      await until(() => health.statuses.at(-1) === ServingStatus.NOT_SERVING, 15_000, 'Health.Watch NOT_SERVING');
      const down = await runRegistryCli(['check', '--url', ops]);
      expect(down.code, down.stdout).toBe(EXIT_CODES.notReady);
      expect(down.stdout).toMatch(/^NOT READY: .*\n {2}storage +FAIL +database (?:unreachable )?at postgres:\/\/postgres@127\.0\.0\.1:5432\/parley_reg_ops_\w+ .*\n$/);
      expect(down.stderr).toMatch(/^parley-registry: error: not ready: storage \(database/);

      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
      await until(() => health.statuses.at(-1) === ServingStatus.SERVING, 15_000, 'Health.Watch SERVING again');
      expect(health.statuses).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING, ServingStatus.SERVING]);
      expect((await runRegistryCli(['check', '--url', ops])).code).toBe(EXIT_CODES.ok);
      health.abort.abort();
      client.close();
      // Readiness transitions are logged: a failure at warn, the recovery at info.
      expect(registry.logs.filter((l) => l['check'] === 'storage').map((l) => [l['level'], l['msg']])).toEqual([
        [30, 'readiness check passes'],
        [40, 'readiness check fails'],
        [30, 'readiness check passes again'],
      ]);
    } finally {
      health.abort.abort();
      await registry?.stop();
      dir.remove();
      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`).catch(() => undefined);
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  }, 120_000);
});
