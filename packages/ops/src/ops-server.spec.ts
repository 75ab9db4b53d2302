import { Registry, Counter } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { startOpsServer, type OpsRequestRecord } from './ops-server.js';
import { Readiness } from './readiness.js';

describe('startOpsServer (real HTTP on loopback)', () => {
  it('serves /metrics, /healthz and /readyz; /readyz follows the checks and names the failing one', async () => {
    const registry = new Registry();
    new Counter({ name: 'parley_test_total', help: 'a test counter', registers: [registry] }).inc(3);
    const readiness = new Readiness();
    readiness.set('storage', { ok: true, detail: 'answers' });
    const requests: OpsRequestRecord[] = [];
    const ops = await startOpsServer({ metrics: registry, readiness, onRequest: (r) => requests.push(r) });
    try {
      expect(ops.metricsUrl).toBe(`${ops.baseUrl}/metrics`);
      const metrics = await fetch(ops.metricsUrl);
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toMatch(/^parley_test_total 3$/m);

      const healthz = await fetch(`${ops.baseUrl}/healthz`);
      expect(healthz.status).toBe(200);
      expect(await healthz.json()).toMatchObject({ status: 'ok', uptime_s: expect.any(Number), event_loop_lag_ms: expect.any(Number) });

      let readyz = await fetch(`${ops.baseUrl}/readyz`);
      expect(readyz.status).toBe(200);
      expect(await readyz.json()).toMatchObject({ ready: true, failing: [], checks: [{ name: 'storage', ok: true, detail: 'answers' }] });

      readiness.set('revocation', { ok: false, detail: 'revocation list 90 s old (bound 60 s)' });
      readyz = await fetch(`${ops.baseUrl}/readyz`);
      expect(readyz.status).toBe(503);
      expect(await readyz.json()).toMatchObject({ ready: false, failing: ['revocation'], checks: [{ name: 'storage', ok: true }, { name: 'revocation', ok: false, detail: 'revocation list 90 s old (bound 60 s)' }] });

      expect((await fetch(`${ops.baseUrl}/nope`)).status).toBe(404);
      expect((await fetch(`${ops.baseUrl}/readyz`, { method: 'POST' })).status).toBe(405);
      expect(requests.map((r) => [r.path, r.status])).toEqual([
        ['/metrics', 200],
        ['/healthz', 200],
        ['/readyz', 200],
        ['/readyz', 503],
        ['/nope', 404],
        ['/readyz', 405],
      ]);
    } finally {
      await ops.close();
    }
  });

  it('without readiness, /readyz answers like /healthz; without metrics, /metrics is 404', async () => {
    const ops = await startOpsServer({});
    try {
      expect((await fetch(`${ops.baseUrl}/readyz`)).status).toBe(200);
      expect((await fetch(ops.metricsUrl)).status).toBe(404);
    } finally {
      await ops.close();
    }
  });

  it('/healthz fails while the event loop was blocked longer than its bound', async () => {
    const ops = await startOpsServer({ maxEventLoopLagMs: 300 });
    try {
      const until = Date.now() + 700;
      while (Date.now() < until) {
        // block the event loop
      }
      const res = await fetch(`${ops.baseUrl}/healthz`);
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ status: 'event_loop_stalled' });
    } finally {
      await ops.close();
    }
  });

  it('a port in use is one clear error', async () => {
    const first = await startOpsServer({});
    try {
      await expect(startOpsServer({ port: first.port })).rejects.toThrow(/cannot listen on 127\.0\.0\.1:\d+ .*EADDRINUSE/);
    } finally {
      await first.close();
    }
  });
});
