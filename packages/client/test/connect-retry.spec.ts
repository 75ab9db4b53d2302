// `connect()` against a stand-in gateway that first answers what time fixes. New-user walkthrough finding: the
// first `connect` threw `revocation_stale` (an uncaught ClientError) while the gateway's revocation copy was stale
// — the registry down, or just restarted — although an agent already connected reconnects with backoff through
// the same answers. Now `connect` retries, with the reconnect backoff and `connect_retry` events, the answers the
// GATEWAY gives that time fixes (revocation_stale, a go-away shutting_down, unavailable, rate_limited: a go-away frame or
// the call's status with the gateway's code) until `connectTimeoutMs`; a verdict on the agent, and a connection
// that could not be made (nothing listening: a wrong address), still reject at once.
import { createServer } from 'node:net';
import { RpcError } from '@parley/rpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, isClientError, type AgentEvent, type ConnectOptions } from '../src/index.js';
import { CHALLENGE, standInGateway, type StandIn } from './stand-in-gateway.js';
import { testWorld, type TestWorld } from './world.js';

let world: TestWorld;
const stands: StandIn[] = [];

beforeAll(async () => {
  world = await testWorld();
});

afterAll(() => {
  for (const s of stands) s.close();
});

function options(gateway: string, events: AgentEvent[], more: Partial<ConnectOptions> = {}): ConnectOptions {
  return {
    gateway,
    expectedGatewayId: 'gw-1',
    identity: world.agent('worker-1'),
    trustBundle: world.trustBundle,
    revocations: world.revocations,
    crypto: world.crypto,
    reconnect: { initialDelayMs: 5, maxDelayMs: 40 },
    onEvent: (e) => void events.push(e),
    ...more,
  };
}

const retries = (events: AgentEvent[]) => events.flatMap((e) => (e.kind === 'connect_retry' ? [e] : []));

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('connect() retries what time fixes, as the gateway says it', () => {
  it('revocation_stale (call status and go-away), shutting_down, unavailable and rate_limited from the gateway are retried with backoff until the welcome', async () => {
    const gw = await standInGateway({
      hello: (stream, push, fail) => {
        if (stream === 0) fail(new RpcError('revocation_stale', 'revocation data is stale')); // what a real gateway does at connect
        else if (stream === 1) push({ kind: { case: 'goAway', value: { code: 'revocation_stale', message: 'stale' } } });
        else if (stream === 2) push({ kind: { case: 'goAway', value: { code: 'shutting_down', message: 'gateway is shutting down' } } });
        else if (stream === 3) fail(new RpcError('unavailable', 'too many streams authenticating'));
        else if (stream === 4) fail(new RpcError('rate_limited', 'slow down'));
        else push(CHALLENGE);
      },
    });
    stands.push(gw);
    const events: AgentEvent[] = [];
    const agent = await connect(options(gw.address, events));
    try {
      expect(agent.connected).toBe(true);
      expect(gw.streams()).toBe(6);
      const r = retries(events);
      // A go-away `shutting_down` (not a stable code) arrives as `unavailable`, its message the gateway's.
      expect(r.map((e) => e.error.code)).toEqual(['revocation_stale', 'revocation_stale', 'unavailable', 'unavailable', 'rate_limited']);
      expect(r[2]!.error.message).toContain('gateway is shutting down');
      expect(r.map((e) => e.attempt)).toEqual([1, 2, 3, 4, 5]);
      for (const e of r) {
        expect(e.delayMs).toBeGreaterThanOrEqual(2);
        expect(e.delayMs).toBeLessThanOrEqual(40);
        expect(e.remainingMs).toBeGreaterThan(50_000); // default deadline 60 s
      }
      expect(events.findIndex((e) => e.kind === 'connected')).toBeGreaterThan(events.indexOf(r.at(-1)!));
    } finally {
      await agent.close();
    }
  });

  it('rejects with the last answer at connectTimeoutMs, having retried meanwhile', async () => {
    const gw = await standInGateway({ hello: (_stream, _push, fail) => fail(new RpcError('revocation_stale', 'revocation data is stale')) });
    stands.push(gw);
    const events: AgentEvent[] = [];
    const started = Date.now();
    const error = await connect(options(gw.address, events, { connectTimeoutMs: 1_000 })).catch((e: unknown) => e);
    const took = Date.now() - started;
    expect(isClientError(error, 'revocation_stale')).toBe(true);
    expect(took).toBeGreaterThanOrEqual(980);
    expect(took).toBeLessThan(5_000);
    expect(retries(events).length).toBeGreaterThanOrEqual(1); // retried meanwhile (how often depends on the load: two shared cores)
    expect(gw.streams()).toBe(retries(events).length + 1);
  });

  it('connectTimeoutMs 0 and reconnect false: one attempt', async () => {
    for (const more of [{ connectTimeoutMs: 0 }, { reconnect: false as const }]) {
      const gw = await standInGateway({ hello: (_stream, push) => push({ kind: { case: 'goAway', value: { code: 'shutting_down', message: 'bye' } } }) });
      stands.push(gw);
      const events: AgentEvent[] = [];
      const error = await connect(options(gw.address, events, more)).catch((e: unknown) => e);
      expect(isClientError(error, 'unavailable')).toBe(true);
      expect(gw.streams()).toBe(1);
      expect(retries(events)).toEqual([]);
    }
  });

  it('a verdict on the agent (revoked, bad_certificate) rejects at once', async () => {
    for (const code of ['revoked', 'bad_certificate'] as const) {
      const gw = await standInGateway({ hello: (_stream, _push, fail) => fail(new RpcError(code, 'no')) });
      stands.push(gw);
      const events: AgentEvent[] = [];
      const error = await connect(options(gw.address, events)).catch((e: unknown) => e);
      expect(isClientError(error, code)).toBe(true);
      expect(gw.streams()).toBe(1);
      expect(retries(events)).toEqual([]);
    }
  });

  it('a connection that cannot be made (nothing listening: a wrong address) rejects unavailable at once, not retried', async () => {
    const events: AgentEvent[] = [];
    const started = Date.now();
    const error = await connect(options(`127.0.0.1:${await closedPort()}`, events)).catch((e: unknown) => e);
    expect(isClientError(error, 'unavailable')).toBe(true);
    expect(retries(events)).toEqual([]);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('refuses a bad connectTimeoutMs (malformed)', async () => {
    const error = await connect(options('127.0.0.1:1', [], { connectTimeoutMs: -1 })).catch((e: unknown) => e);
    expect(isClientError(error, 'malformed')).toBe(true);
  });
});
