// The revocation feed against a REAL registry process (apps/registry's CLI:
// init, serve, agent register / revoke, trust-bundle): an in-process gateway
// follows the registry's signed revocation list; revoking a connected agent
// through the registry CLI closes its stream with GoAway `revoked` within 2 s;
// a stopped registry makes the set go stale (fail closed) and a restarted one
// is followed again — with gRPC health (Health.Watch) going NOT_SERVING then
// SERVING by itself, /readyz naming the failing check, and the feed-age metric
// rising then reset.
import { credentials } from '@grpc/grpc-js';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle } from '@parley/identity';
import { AgentGatewayService, Health, RegistryService } from '@parley/proto';
import { ServingStatus, createClient } from '@parley/rpc';
import pino from 'pino';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Policy } from '../../src/policy.js';
import { RevocationFeed } from '../../src/revocation-feed.js';
import { startGateway, type RunningGateway } from '../../src/server.js';
import { rawConnect, startRegistry, within, type TestRegistry } from '@parley/test-support';

const GATEWAY_ID = 'gw-feed.test';
const POLICY = Policy.parse({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] });

describe('revocation feed against a real registry process', () => {
  let crypto: ParleyCrypto;
  let registry: TestRegistry;
  let gw: RunningGateway;
  let feed: RevocationFeed;
  let revocations: MemoryRevocationSet;
  let client: ReturnType<typeof createClient<typeof RegistryService>>;
  const logs: Record<string, unknown>[] = [];

  beforeAll(async () => {
    crypto = await createCrypto();
    // Heartbeats every 300 ms, so a 2 s freshness bound is kept while connected.
    registry = await startRegistry(['--heartbeat-ms', '300']);
    const trustBundle = TrustBundle.fromJSON(crypto, readFileSync(registry.trustBundleFile, 'utf8'));
    const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
    revocations = new MemoryRevocationSet({ maxAgeMs: 2_000 });
    gw = await startGateway({ crypto, gatewayId: GATEWAY_ID, trustBundle, revocations, policy: POLICY, logger });
    client = createClient(RegistryService, registry.address, credentials.createInsecure());
    const { registryId } = await client.getTrustBundle({});
    const gateway = gw.gateway;
    feed = new RevocationFeed({
      crypto,
      client,
      registryId,
      trustBundle,
      revocations,
      logger,
      minBackoffMs: 100,
      maxBackoffMs: 300,
      onRevoked: (e) => void (e.kind === 'agent' ? gateway.onRevocation({ agentId: e.agentId }) : gateway.onRevocation({ serial: e.serial })),
    });
    gw.gateway.metrics.watchFeed(feed);
    feed.start();
    await feed.synced;
  }, 120_000);

  /** Every status a Health.Watch of the agent gateway service sees, until `stop()`. */
  function watchHealth(): { statuses: ServingStatus[]; stop: () => void } {
    const health = createClient(Health, gw.address, credentials.createInsecure());
    const abort = new AbortController();
    const statuses: ServingStatus[] = [];
    void (async () => {
      try {
        for await (const r of health.watch({ service: AgentGatewayService.typeName }, { signal: abort.signal })) statuses.push(r.status);
      } catch {
        // cancelled
      }
    })();
    return { statuses, stop: () => (abort.abort(), health.close()) };
  }

  async function metric(name: string): Promise<number> {
    const text = await (await fetch(gw.metricsUrl!)).text();
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    if (m === null) throw new Error(`no ${name} in /metrics`);
    return Number(m[1]);
  }

  afterAll(async () => {
    await feed?.close();
    client?.close();
    await gw?.close();
    await registry?.cleanup();
  }, 60_000);

  it('loads the list, then closes a revoked agent\'s stream within 2 s of the registry CLI revoking it', async () => {
    expect(revocations.isFresh(Date.now())).toBe(true);
    const victim = await registry.register(crypto, 'worker-victim', 'worker');
    const bystander = await registry.register(crypto, 'worker-bystander', 'worker');
    const a = await rawConnect(crypto, gw.address, GATEWAY_ID, victim);
    const b = await rawConnect(crypto, gw.address, GATEWAY_ID, bystander);
    expect(gw.gateway.connectedAgents().sort()).toEqual(['worker-bystander', 'worker-victim']);
    const before = revocations.version;
    await registry.revoke('worker-victim');
    const tookMs = await within(2_000, () => a.goAway() !== undefined, 'GoAway to the revoked agent');
    expect(a.goAway()).toBe('revoked');
    expect(tookMs).toBeLessThan(2_000);
    await a.ended;
    expect(revocations.version).toBe(before + 1);
    expect(revocations.check({ agentId: 'worker-victim', serial: victim.certificate.serial }, Date.now()).revoked).toBe(true);
    expect(b.goAway()).toBeUndefined();
    expect(gw.gateway.connectedAgents()).toEqual(['worker-bystander']);
    // A revoked agent cannot come back.
    await expect(rawConnect(crypto, gw.address, GATEWAY_ID, victim)).rejects.toThrow();
    b.close();
    await b.ended;
  }, 60_000);

  it('goes stale and fails closed while the registry is down (health NOT_SERVING), and follows it again after a restart (SERVING)', async () => {
    const agent = await registry.register(crypto, 'worker-stale', 'worker');
    const s = await rawConnect(crypto, gw.address, GATEWAY_ID, agent);
    const connects = feed.connects;
    const watch = watchHealth();
    await within(5_000, () => watch.statuses.length > 0, 'the first Health.Watch answer');
    expect(watch.statuses).toEqual([ServingStatus.SERVING]);
    expect(await metric('parley_gateway_revocation_feed_connected')).toBe(1);
    expect(await metric('parley_ready')).toBe(1);
    await registry.stop();
    // No heartbeat refreshes the set: after the 2 s bound the re-check closes the stream (fail closed).
    await within(6_000, () => s.goAway() !== undefined, 'GoAway after the freshness bound');
    expect(s.goAway()).toBe('revocation_stale');
    expect(logs.some((l) => l['event'] === 'revocation_feed_disconnected')).toBe(true);
    // grpc-js's empty "Resolution note:" tail is not repeated in every warning.
    expect(logs.filter((l) => String(l['detail']).includes('Resolution note'))).toEqual([]);
    await expect(rawConnect(crypto, gw.address, GATEWAY_ID, agent)).rejects.toThrow();
    // Health and readiness say so (within one 500 ms probe), and name the check.
    await within(3_000, () => watch.statuses.at(-1) === ServingStatus.NOT_SERVING, 'Health.Watch NOT_SERVING');
    const readyz = await fetch(`${gw.opsUrl}/readyz`);
    expect(readyz.status).toBe(503);
    const body = (await readyz.json()) as { failing: string[]; checks: { name: string; detail: string }[] };
    expect(body.failing).toEqual(['revocation']);
    expect(body.checks.find((c) => c.name === 'revocation')?.detail).toMatch(/s old \(bound 2 s\).*agents are refused/);
    expect(await metric('parley_gateway_revocation_feed_connected')).toBe(0);
    expect(await metric('parley_ready')).toBe(0);
    const age1 = await metric('parley_gateway_revocation_age_seconds');
    expect(age1).toBeGreaterThan(2);
    await new Promise((r) => setTimeout(r, 1_100));
    expect(await metric('parley_gateway_revocation_age_seconds')).toBeGreaterThan(age1);
    expect(await metric('parley_gateway_revocation_max_age_seconds')).toBe(2);

    await registry.restart();
    await within(10_000, () => feed.connects > connects && revocations.isFresh(Date.now()), 'the feed to reconnect and refresh');
    await within(3_000, () => watch.statuses.at(-1) === ServingStatus.SERVING, 'Health.Watch SERVING again');
    expect(watch.statuses).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING, ServingStatus.SERVING]);
    watch.stop();
    expect((await fetch(`${gw.opsUrl}/readyz`)).status).toBe(200);
    expect(await metric('parley_gateway_revocation_age_seconds')).toBeLessThan(2);
    expect(await metric('parley_gateway_revocation_feed_connected')).toBe(1);
    const again = await rawConnect(crypto, gw.address, GATEWAY_ID, agent);
    await registry.revoke('worker-stale');
    await within(2_000, () => again.goAway() === 'revoked', 'GoAway revoked after the reconnect');
    await again.ended;
  }, 90_000);

  it('cancels a watch that stays silent (a stopped registry whose connection lives on) and follows the registry again once it answers', async () => {
    // A second feed, with a 1 s idle bound (the registry's heartbeats come every 300 ms).
    const silentLogs: Record<string, unknown>[] = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => void silentLogs.push(JSON.parse(line) as Record<string, unknown>) });
    const set = new MemoryRevocationSet({ maxAgeMs: 60_000 });
    const trustBundle = TrustBundle.fromJSON(crypto, readFileSync(registry.trustBundleFile, 'utf8'));
    const { registryId } = await client.getTrustBundle({});
    const watcher = new RevocationFeed({ crypto, client, registryId, trustBundle, revocations: set, logger, minBackoffMs: 100, maxBackoffMs: 300, idleTimeoutMs: 1_000, onRevoked: () => undefined });
    watcher.start();
    try {
      await watcher.synced;
      const connects = watcher.connects;
      // SIGSTOP: the process sends nothing, but its TCP connection stays up (the kernel still acknowledges).
      process.kill(registry.process.pid, 'SIGSTOP');
      try {
        await within(5_000, () => silentLogs.some((l) => l['event'] === 'revocation_feed_disconnected' && l['code'] === 'deadline_exceeded'), 'the silent watch cancelled');
      } finally {
        process.kill(registry.process.pid, 'SIGCONT');
      }
      await within(10_000, () => watcher.connects > connects && watcher.connected, 'the feed to follow the registry again');
    } finally {
      await watcher.close();
    }
  }, 30_000);
});
