import { connect, type Socket } from 'node:net';
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

  describe('bounds', () => {
    /** A raw TCP client: resolves `closed` when the server closes the socket, with what it answered. */
    const raw = (port: number): Promise<{ socket: Socket; received: () => string; closed: Promise<number> }> =>
      new Promise((resolve, reject) => {
        const socket = connect(port, '127.0.0.1');
        let data = '';
        const t0 = performance.now();
        const closed = new Promise<number>((done) => socket.once('close', () => done(performance.now() - t0)));
        socket.on('data', (d: Buffer) => (data += d.toString('latin1')));
        socket.on('error', () => undefined);
        socket.once('connect', () => resolve({ socket, received: () => data, closed }));
        socket.once('error', reject);
      });

    it('closes a socket that sends nothing, or trickles its headers, once the request timeout passes', async () => {
      const ops = await startOpsServer({ requestTimeoutMs: 500 });
      try {
        const idle = await raw(ops.port);
        const trickle = await raw(ops.port);
        trickle.socket.write('GET /healthz HTTP/1.1\r\n');
        const drip = setInterval(() => trickle.socket.write('x-drip: 1\r\n'), 100); // active, never complete
        try {
          expect(await idle.closed).toBeLessThan(5_000);
          expect(await trickle.closed).toBeLessThan(5_000);
        } finally {
          clearInterval(drip);
        }
        expect(trickle.received()).toMatch(/^HTTP\/1\.1 408|^$/);
      } finally {
        await ops.close();
      }
    });

    it('keeps at most maxConnections sockets open (more are closed on accept) and still answers once they go', async () => {
      const ops = await startOpsServer({ maxConnections: 3 });
      const sockets: Awaited<ReturnType<typeof raw>>[] = [];
      try {
        for (let i = 0; i < 5; i++) sockets.push(await raw(ops.port));
        const extra = await Promise.race([Promise.all([sockets[3]!.closed, sockets[4]!.closed]).then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 3_000))]);
        expect(extra).toBe('closed');
        for (const s of sockets.slice(0, 3)) expect(s.socket.destroyed).toBe(false);
        for (const s of sockets) s.socket.destroy();
        await new Promise((r) => setTimeout(r, 100));
        expect((await fetch(`${ops.baseUrl}/healthz`)).status).toBe(200);
      } finally {
        for (const s of sockets) s.socket.destroy();
        await ops.close();
      }
    });

    it('refuses a request that announces a body with 413 and closes the connection', async () => {
      const ops = await startOpsServer({});
      try {
        const c = await raw(ops.port);
        c.socket.write('GET /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\nx');
        await c.closed;
        expect(c.received()).toMatch(/^HTTP\/1\.1 413/);
      } finally {
        await ops.close();
      }
    });
  });
});
