// SIGTERM with revocation watchers attached, on a real `parley-registry serve` process. New-user walkthrough
// finding: the registry logged `stopping` at once but exited ~5 s later — the WatchRevocations streams (which never
// end by themselves) held the graceful shutdown for its whole grace period. Now the server ends them at once
// (`unavailable`: watch again), and the process exits promptly.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isRpcError } from '@parley/rpc';
import { initRegistry, serveRegistry, type RegistryFixture, type RunningRegistry } from '@parley/test-support';
import { plainClient } from '../clients.js';

let fixture: RegistryFixture;
let registry: RunningRegistry | undefined;

beforeAll(async () => {
  fixture = await initRegistry('pglite', 'shutdown');
  registry = await serveRegistry(fixture, ['--heartbeat-ms', '300']);
}, 60_000);

afterAll(async () => {
  registry?.kill();
  await fixture?.cleanup();
});

it('SIGTERM ends the revocation watches at once (unavailable) and the process exits well within the 5 s grace period', async () => {
  const proc = registry!;
  const clients = [plainClient(proc), plainClient(proc)];
  const watches = clients.map(async (client) => {
    let batches = 0;
    try {
      for await (const _batch of client.watchRevocations({ afterVersion: 0n }, { timeoutMs: 60_000 })) batches++;
      return { batches, code: 'ok' as string };
    } catch (error) {
      return { batches, code: isRpcError(error) ? error.code : String(error), message: String(error) };
    }
  });
  // Both watches are live: each got its "you are current" batch, and heartbeats follow.
  await proc.waitFor((l) => l['msg'] === 'listening');
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const started = Date.now();
  proc.signal('SIGTERM');
  const ended = await Promise.all(watches);
  const watchesEndedMs = Date.now() - started;
  expect(await proc.exited).toBe(0);
  const exitedMs = Date.now() - started;
  for (const w of ended) {
    expect(w.batches).toBeGreaterThanOrEqual(1);
    expect(w.code).toBe('unavailable');
  }
  expect(watchesEndedMs).toBeLessThan(2_000);
  expect(exitedMs).toBeLessThan(3_500); // was 5 s and more: the grace period, waiting for the watches
  expect(proc.logs.some((l) => l['msg'] === 'stopped')).toBe(true);
  for (const c of clients) c.close();
  registry = undefined;
});
