// The README's example (test/readme-example.ts, shown verbatim by README.md) runs as written: against a
// REAL registry and gateway started from their CLIs, with planner-1 and worker-1 enrolled by
// `parley-registry agent register … --json` and the trust bundle from `parley-registry trust-bundle`. It runs
// twice, unchanged: the second run continues from the state files (under the key stateKeyFile kept).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatewayEnv, startGatewayProcess, startRegistry, tempDir, type RunningGatewayProcess, type TestRegistry } from '@parley/test-support';
import { afterAll, describe, expect, it, vi } from 'vitest';

const dir = tempDir('client-readme');
let registry: TestRegistry | undefined;
let gateway: RunningGatewayProcess | undefined;

afterAll(async () => {
  try {
    await gateway?.stop();
    await registry?.cleanup();
  } finally {
    dir.remove();
  }
});

describe('README example', () => {
  it('runs against a real gateway and registry', async () => {
    registry = await startRegistry(['--heartbeat-ms', '1000']);
    const policy = join(dir.path, 'policy.json');
    writeFileSync(policy, JSON.stringify({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }));
    gateway = await startGatewayProcess(
      gatewayEnv({ gatewayId: 'gw-1', registryAddress: registry.address, trustBundleFile: registry.trustBundleFile, dir: dir.path, env: { PARLEY_GATEWAY_POLICY: policy } }),
    );
    for (const [agentId, type] of [['planner-1', 'planner'], ['worker-1', 'worker']]) {
      const registered = await registry.cli(['agent', 'register', agentId!, '--type', type!, '--json']);
      expect(registered.code, registered.stderr).toBe(0);
      writeFileSync(join(dir.path, `${agentId}.json`), registered.stdout);
    }
    vi.stubEnv('PARLEY_GATEWAY', gateway.address);
    vi.stubEnv('PARLEY_GATEWAY_ID', 'gw-1');
    vi.stubEnv('PARLEY_REGISTRY', registry.address);
    vi.stubEnv('PARLEY_AGENTS_DIR', dir.path);
    vi.stubEnv('PARLEY_TRUST_BUNDLE', registry.trustBundleFile);
    vi.stubEnv('PARLEY_STATE_KEY_FILE', join(dir.path, 'keys', 'state.key'));
    const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      for (const run of [1, 2]) {
        log.mockClear();
        vi.resetModules(); // the example's module runs again, as a restarted program would
        await import('../readme-example.js');
        expect(log.mock.calls.map((c) => String(c[0])), `run ${run}`).toEqual([
          'planner-1 → worker-1: {"task":"reindex"}',
          expect.stringMatching(/^receipt: worker-1 at \d{4}-\d\d-\d\dT/),
        ]);
      }
    } finally {
      log.mockRestore();
      vi.unstubAllEnvs();
    }
  }, 240_000);
});
