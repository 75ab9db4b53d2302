import { openDatabase } from '@parley/db';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Readiness } from './readiness.js';
import { ServerMetrics, buildInfo } from './server-metrics.js';

describe('ServerMetrics', () => {
  it('exports build info, requests by method and code, readiness and statement latency of a real database', async () => {
    const registry = new Registry();
    const db = await openDatabase();
    const readiness = new Readiness();
    readiness.set('storage', { ok: true });
    readiness.set('revocation', { ok: false, detail: 'stale' });
    const build = buildInfo('parley-test', new URL('../package.json', import.meta.url));
    expect(build).toMatchObject({ program: 'parley-test', version: '0.1.0' });
    expect(build.commit).toMatch(/^([0-9a-f]{40}|unknown)$/);
    const metrics = new ServerMetrics({ registry, build, database: db, readiness });
    try {
      await db.query('SELECT 1');
      await db.transaction(async (tx) => void (await tx.query('SELECT 2')));
      metrics.onCallEnd({ path: '/parley.v1.RegistryService/GetAgent', peer: 'ipv4:127.0.0.1:1', grpcCode: 5, code: 'not_found', durationMs: 2 });
      metrics.onCallEnd({ path: '/parley.v1.RegistryService/GetAgent', peer: 'ipv4:127.0.0.1:1', grpcCode: 0, durationMs: 1 });
      const text = await registry.metrics();
      expect(text).toContain(`parley_build_info{program="parley-test",version="0.1.0",commit="${build.commit}",node="${process.version}"} 1`);
      expect(text).toContain('parley_rpc_requests_total{service="parley.v1.RegistryService",method="GetAgent",code="not_found"} 1');
      expect(text).toContain('parley_rpc_requests_total{service="parley.v1.RegistryService",method="GetAgent",code="ok"} 1');
      expect(text).toMatch(/^parley_rpc_request_duration_seconds_count\{service="parley.v1.RegistryService",method="GetAgent"\} 2$/m);
      expect(text).toMatch(/^parley_ready 0$/m);
      expect(text).toContain('parley_readiness_check_ok{check="storage"} 1');
      expect(text).toContain('parley_readiness_check_ok{check="revocation"} 0');
      expect(text).toMatch(/^parley_db_query_duration_seconds_count\{engine="pglite",kind="query",ok="true"\} [1-9]/m);
      expect(text).toMatch(/^parley_db_query_duration_seconds_count\{engine="pglite",kind="transaction",ok="true"\} 1$/m);
      expect(text).not.toContain('parley_db_pool_connections'); // PostgreSQL only
      expect(text).not.toContain('process_cpu_seconds_total'); // process metrics are opt-in
    } finally {
      metrics.close();
      await db.close();
    }
  });

  it('takes the commit from PARLEY_BUILD_COMMIT when set', () => {
    const before = process.env['PARLEY_BUILD_COMMIT'];
    process.env['PARLEY_BUILD_COMMIT'] = 'abcdef1234567';
    try {
      expect(buildInfo('p', new URL('../package.json', import.meta.url)).commit).toBe('abcdef1234567');
    } finally {
      if (before === undefined) delete process.env['PARLEY_BUILD_COMMIT'];
      else process.env['PARLEY_BUILD_COMMIT'] = before;
    }
  });
});
