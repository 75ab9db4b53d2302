// `parley-gateway serve` as a real process, next to a real registry process:
// the one-line ready JSON on stdout, /metrics, the revocation feed closing a
// revoked agent's stream within 2 s, SIGHUP with a bad policy file (kept),
// refusals at start (no pinned trust bundle), and a graceful SIGTERM
// (GoAway `shutting_down`, exit 0).
import { writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../src/cli.js';
import { duplicateKeys, rawConnect, runApp, startApp, startRegistry, tempDir, within, type RunningProcess, type TestRegistry } from '@parley/test-support';

const GATEWAY_ID = 'gw-cli.test';

describe('parley-gateway serve (process)', () => {
  let crypto: ParleyCrypto;
  let registry: TestRegistry;
  const dir = tempDir('serve');
  let env: Record<string, string>;

  beforeAll(async () => {
    crypto = await createCrypto();
    registry = await startRegistry(['--heartbeat-ms', '500']);
    const policyFile = join(dir.path, 'policy.json');
    writeFileSync(policyFile, JSON.stringify({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }));
    env = {
      PARLEY_GATEWAY_ID: GATEWAY_ID,
      PARLEY_GATEWAY_LISTEN: '127.0.0.1:0',
      PARLEY_GATEWAY_METRICS_LISTEN: '127.0.0.1:0',
      PARLEY_GATEWAY_DATA_DIR: join(dir.path, 'pgdata'),
      PARLEY_GATEWAY_AUDIT_KEY: join(dir.path, 'audit-key.json'),
      PARLEY_GATEWAY_REGISTRY: registry.address,
      PARLEY_GATEWAY_TRUST_BUNDLE: registry.trustBundleFile,
      PARLEY_GATEWAY_POLICY: policyFile,
    };
  }, 120_000);

  afterAll(async () => {
    await registry?.cleanup();
    dir.remove();
  }, 60_000);

  it('refuses to start without a pinned trust bundle, in one line, exit 8', async () => {
    const r = await runApp('gateway', ['serve'], { env: { ...env, PARLEY_GATEWAY_TRUST_BUNDLE: undefined } });
    expect(r.code).toBe(8);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^parley-gateway: error: no pinned trust bundle/);
    expect(r.stdout).toBe('');
  }, 60_000);

  it('a SIGHUP while starting neither kills it nor is lost, and a policy file changed while starting is applied once the watch runs', async () => {
    const policyFile = join(dir.path, 'policy-starting.json');
    writeFileSync(policyFile, JSON.stringify({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }));
    // An unreachable registry (bundle and id pinned) keeps it starting for up to 5 s: the window of the review's repro.
    const gw = await startApp('gateway', ['serve'], {
      env: { ...env, PARLEY_GATEWAY_POLICY: policyFile, PARLEY_GATEWAY_REGISTRY: '127.0.0.1:1', PARLEY_GATEWAY_REGISTRY_ID: '00'.repeat(16), PARLEY_GATEWAY_DATA_DIR: join(dir.path, 'pgdata-3'), PARLEY_GATEWAY_AUDIT_KEY: join(dir.path, 'audit-3.json') },
      ready: (line, stream) => stream === 'stderr' && line['msg'] === 'starting',
    });
    try {
      writeFileSync(policyFile, JSON.stringify({ version: 1, rules: [] })); // deny-all, before the watch exists
      gw.signal('SIGHUP');
      const ready = await gw.waitFor((l) => l['ready'] === true, 30_000);
      expect(ready['revocations_synced']).toBe(false);
      const loaded = await gw.waitFor((l) => l['msg'] === 'policy file loaded', 5_000);
      expect(loaded).toMatchObject({ rules: 0 });
      expect(['SIGHUP while starting', 'watch started']).toContain(loaded['reason']);
      expect(gw.isRunning()).toBe(true);
    } finally {
      expect(await gw.stop()).toBe(0);
    }
  }, 60_000);

  it('starts without the registry when the bundle and registry id are pinned, refusing agents until it loads', async () => {
    const gw = await startApp('gateway', ['serve'], { env: { ...env, PARLEY_GATEWAY_REGISTRY: '127.0.0.1:1', PARLEY_GATEWAY_REGISTRY_ID: '00'.repeat(16), PARLEY_GATEWAY_DATA_DIR: join(dir.path, 'pgdata-2'), PARLEY_GATEWAY_AUDIT_KEY: join(dir.path, 'audit-2.json') }, ready: (line, stream) => stream === 'stdout' && line['ready'] === true });
    try {
      expect(gw.readyLine['revocations_synced']).toBe(false);
      const agent = await registry.register(crypto, 'worker-early', 'worker');
      await expect(rawConnect(crypto, gw.readyLine['address'] as string, GATEWAY_ID, agent)).rejects.toThrow();
      // The refusal's security event: the child's stderr may reach this process after the refused stream does.
      await within(5_000, () => gw.stderr.some((l) => l.includes('revocation_stale')), 'the revocation_stale security event');
      // `check`: the gateway answers, and is not ready (exit 9), naming the failing check.
      const readinessUrl = gw.readyLine['readiness_url'] as string;
      expect(readinessUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/readyz$/);
      const notReady = await runApp('gateway', ['check', '--url', readinessUrl.replace('/readyz', '')]);
      expect(notReady.code, notReady.stderr).toBe(EXIT_CODES.notReady);
      expect(notReady.stdout).toMatch(/^NOT READY: http:\/\/127\.0\.0\.1:\d+\/readyz\n {2}revocation +FAIL +revocation list not loaded yet; agents are refused \(fail closed\)\n {2}storage +ok +pglite answers\n {2}trust_bundle +ok +version \d+ \([a-z]+[^)]*\)\n$/);
      expect(notReady.stderr).toBe('parley-gateway: error: not ready: revocation (revocation list not loaded yet; agents are refused (fail closed))\n');
      const json = await runApp('gateway', ['check', '--url', readinessUrl, '--json']);
      expect(json.code).toBe(EXIT_CODES.notReady);
      expect(JSON.parse(json.stdout)).toMatchObject({ url: readinessUrl, ready: false, failing: ['revocation'] });
    } finally {
      expect(await gw.stop()).toBe(0);
    }
  }, 60_000);

  it('serves: ready line, metrics, revocation within 2 s, SIGHUP, graceful SIGTERM', async () => {
    let gw: RunningProcess | undefined;
    try {
      gw = await startApp('gateway', ['serve'], { env, ready: (line, stream) => stream === 'stdout' && line['ready'] === true });
      const ready = gw.readyLine;
      expect(ready).toMatchObject({ ready: true, gateway_id: GATEWAY_ID, revocations_synced: true });
      expect(gw.stdout).toHaveLength(1);
      const address = ready['address'] as string;
      const metricsUrl = ready['metrics_url'] as string;
      expect(address).toMatch(/^127\.0\.0\.1:\d+$/);

      const victim = await registry.register(crypto, 'worker-cli-victim', 'worker');
      const other = await registry.register(crypto, 'worker-cli-other', 'worker');
      const a = await rawConnect(crypto, address, GATEWAY_ID, victim);
      const b = await rawConnect(crypto, address, GATEWAY_ID, other);
      const metrics = await (await fetch(metricsUrl)).text();
      expect(metrics).toMatch(/parley_gateway_connected_agents 2/);
      expect(metrics).toMatch(/^parley_build_info\{program="parley-gateway",version="[^"]+",commit="[0-9a-f]{40}|unknown",node="v[\d.]+"\} 1$/m);
      expect(metrics).toMatch(/^process_cpu_seconds_total \d/m); // process defaults, in the CLI
      expect(metrics).toMatch(/^parley_gateway_revocation_feed_connected 1$/m);

      // `check` against the running gateway: ready (exit 0); unreachable (7); usage (2).
      const opsBase = (ready['readiness_url'] as string).replace('/readyz', '');
      const ok = await runApp('gateway', ['check', '--url', opsBase]);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toMatch(/^ready: http:\/\/127\.0\.0\.1:\d+\/readyz\n {2}revocation +ok +revocation list version \d+, \d+ s old \(bound 60 s\)\n {2}storage +ok +pglite answers\n {2}trust_bundle +ok +version \d+ \([a-z]+[^)]*\)\n$/);
      expect(ok.stderr).toBe('');
      const closedPort = await new Promise<number>((resolve) => {
        const s = createServer().listen(0, '127.0.0.1', () => {
          const port = (s.address() as AddressInfo).port;
          s.close(() => resolve(port));
        });
      });
      const [unreachable, badUrl, portZero, off] = await Promise.all([
        runApp('gateway', ['check', '--url', `http://127.0.0.1:${closedPort}`, '--timeout-ms', '3000']),
        runApp('gateway', ['check', '--url', 'nope']),
        runApp('gateway', ['check'], { env: env }), // metrics_listen 127.0.0.1:0: nothing to find
        runApp('gateway', ['check'], { env: { ...env, PARLEY_GATEWAY_METRICS_LISTEN: 'off' } }),
      ]);
      expect(unreachable.code, unreachable.stderr).toBe(EXIT_CODES.unavailable);
      expect(unreachable.stderr).toBe(`parley-gateway: error: http://127.0.0.1:${closedPort}/readyz unreachable (ECONNREFUSED)\n`);
      expect(badUrl.code).toBe(EXIT_CODES.usage);
      expect(portZero.code).toBe(EXIT_CODES.usage);
      expect(portZero.stderr).toMatch(/metrics_listen has port 0/);
      expect(off.code).toBe(EXIT_CODES.usage);
      expect(off.stderr).toMatch(/metrics_listen is "off"/);

      await registry.revoke('worker-cli-victim');
      await within(2_000, () => a.goAway() === 'revoked', 'GoAway revoked from the serve process');

      // A bad policy file on SIGHUP is logged and the old policy kept.
      writeFileSync(env['PARLEY_GATEWAY_POLICY']!, '{ not json');
      gw.process.kill('SIGHUP');
      await within(3_000, () => gw!.stderr.some((l) => l.includes('policy file rejected')), 'the rejected policy log line');
      expect(gw.process.exitCode).toBeNull();

      const code = await gw.stop();
      expect(code).toBe(0);
      await b.ended;
      expect(b.goAway()).toBe('shutting_down');
      const logs = gw.stderr.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(logs.some((l) => l['msg'] === 'stopped')).toBe(true);
      // Log hygiene: no line with a key twice; health probes at debug (not at this info level); a SIGTERM with
      // agents connected logs no error (level 50+).
      for (const line of gw.stderr) expect(duplicateKeys(line), line).toEqual([]);
      expect(logs.filter((l) => String(l['method']).startsWith('/grpc.health.v1.Health/') || String(l['path']).startsWith('/readyz'))).toEqual([]);
      expect(logs.filter((l) => (l['level'] as number) >= 50 && l['msg'] !== 'policy file rejected: keeping the previous policy').map((l) => l['msg'])).toEqual([]);
      // No secrets in the logs.
      expect(gw.stderr.join('\n')).not.toMatch(/"seed"|secret_key|password/);
    } finally {
      await gw?.stop();
    }
  }, 90_000);
});
