// The harness against the REAL programs: a registry (init, serve, trust-bundle,
// agent register) and a gateway (serve) from their CLIs on ephemeral loopback
// ports; an agent authenticates over gRPC; both stop cleanly on SIGTERM.
import { createCrypto } from '@parley/crypto-core';
import { afterAll, describe, expect, it } from 'vitest';
import { gatewayEnv, rawConnect, startGatewayProcess, startRegistry, tempDir, type TestRegistry } from '../../src/index.js';

const dir = tempDir('test-support');
let registry: TestRegistry | undefined;

afterAll(async () => {
  await registry?.cleanup();
  dir.remove();
});

describe('a registry and a gateway from their CLIs', () => {
  it('start, serve an agent, and stop cleanly', async () => {
    const crypto = await createCrypto();
    registry = await startRegistry(['--heartbeat-ms', '1000']);
    expect(registry.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const gateway = await startGatewayProcess(gatewayEnv({ gatewayId: 'gw-harness.test', registryAddress: registry.address, trustBundleFile: registry.trustBundleFile, dir: dir.path }));
    try {
      expect(gateway.address).toBe(`127.0.0.1:${gateway.port}`);
      const agent = await registry.register(crypto, 'worker-h', 'worker');
      const stream = await rawConnect(crypto, gateway.address, 'gw-harness.test', agent);
      expect(stream.responses.some((r) => r.kind.case === 'welcome')).toBe(true);
      stream.close();
    } finally {
      expect(await gateway.stop()).toBe(0);
    }
    expect(gateway.logs.some((l) => l['msg'] === 'stopped')).toBe(true);
    await registry.stop();
    expect(await registry.process.exited).toBe(0);
  }, 180_000);
});
