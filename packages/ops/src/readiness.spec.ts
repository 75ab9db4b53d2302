import { ServingStatus, type HealthReporter } from '@parley/rpc';
import { describe, expect, it } from 'vitest';
import { Readiness, SHUTDOWN_CHECK, type ReadinessChange } from './readiness.js';

/** A HealthReporter that records statuses (the gRPC one is exercised by the servers' process tests). */
function recordingHealth(): HealthReporter & { history: [string, ServingStatus][] } {
  const statuses = new Map<string, ServingStatus>();
  const history: [string, ServingStatus][] = [];
  return {
    history,
    setStatus(service, status) {
      statuses.set(service, status);
      history.push([service, status]);
    },
    getStatus: (service) => statuses.get(service),
    shutdown() {
      for (const k of statuses.keys()) statuses.set(k, ServingStatus.NOT_SERVING);
    },
  };
}

describe('Readiness', () => {
  it('is ready only when every check is ok; a probe counts as failing until it answers', async () => {
    const r = new Readiness();
    expect(r.ready).toBe(true); // no checks
    let up = true;
    r.addProbe('storage', () => ({ ok: up, detail: up ? 'answers' : 'refused' }), { intervalMs: 10_000 });
    expect(r.report()).toMatchObject({ ready: false, failing: ['storage'], checks: [{ name: 'storage', ok: false, detail: 'not checked yet' }] });
    await r.start();
    expect(r.ready).toBe(true);
    r.set('revocation', { ok: false, detail: 'revocation list 75 s old (bound 60 s)' });
    expect(r.report()).toMatchObject({ ready: false, failing: ['revocation'] });
    up = false;
    await r.runProbes();
    expect(r.report().failing).toEqual(['storage', 'revocation']);
    r.set('revocation', { ok: true });
    up = true;
    await r.runProbes();
    expect(r.ready).toBe(true);
    r.close();
  });

  it('a probe that throws or hangs fails with a one-line detail; it is never run twice at once', async () => {
    const r = new Readiness();
    let calls = 0;
    r.addProbe('thrower', () => {
      throw new Error('database unreachable at postgres://u@db/x (ECONNREFUSED)\nsecond line');
    });
    r.addProbe('hang', () => {
      calls++;
      return new Promise(() => undefined);
    }, { timeoutMs: 50 });
    await Promise.all([r.runProbes(), r.runProbes()]);
    const checks = Object.fromEntries(r.report().checks.map((c) => [c.name, c.detail]));
    expect(checks).toEqual({ thrower: 'database unreachable at postgres://u@db/x (ECONNREFUSED) second line', hang: 'no answer within 50 ms' });
    expect(calls).toBe(1);
    r.close();
  });

  it('reports transitions (not repeats) and drives health statuses both ways; shutdown is final', async () => {
    let now = 1_000;
    const r = new Readiness({ clock: () => now });
    const changes: ReadinessChange[] = [];
    r.onChange((c) => changes.push(c));
    const health = recordingHealth();
    r.set('revocation', { ok: true });
    r.bindHealth(health, ['', 'parley.v1.AgentGatewayService']);
    expect(health.getStatus('parley.v1.AgentGatewayService')).toBe(ServingStatus.SERVING);
    now = 2_000;
    r.set('revocation', { ok: false, detail: 'stale' });
    r.set('revocation', { ok: false, detail: 'still stale' });
    expect(health.getStatus('')).toBe(ServingStatus.NOT_SERVING);
    expect(r.report().checks[0]).toMatchObject({ detail: 'still stale', sinceMs: 2_000 });
    now = 3_000;
    r.set('revocation', { ok: true });
    expect(health.getStatus('')).toBe(ServingStatus.SERVING);
    expect(changes.map((c) => [c.check.ok, c.ready, c.readyChanged])).toEqual([
      [true, true, false],
      [false, false, true],
      [true, true, true],
    ]);
    expect(health.history.filter(([s]) => s === '').map(([, st]) => st)).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING, ServingStatus.SERVING]);
    r.shutdown();
    expect(r.report()).toMatchObject({ ready: false, failing: [SHUTDOWN_CHECK] });
    r.set('revocation', { ok: true });
    expect(r.ready).toBe(false);
  });

  it('refuses bad names, duplicates and intervals', () => {
    const r = new Readiness();
    expect(() => r.set('Bad Name', { ok: true })).toThrow(RangeError);
    r.addProbe('db', () => ({ ok: true }));
    expect(() => r.addProbe('db', () => ({ ok: true }))).toThrow(/already exists/);
    expect(() => r.addProbe('x', () => ({ ok: true }), { intervalMs: 0 })).toThrow(RangeError);
    r.close();
  });
});
