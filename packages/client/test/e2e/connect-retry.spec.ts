// The first `connect()` while the gateway's revocation copy is stale, against REAL registry and gateway processes.
// New-user walkthrough finding: with the registry down longer than the gateway's `revocation_max_age_ms` (and for
// a few seconds after it came back) `connect()` threw `revocation_stale` at once — an uncaught ClientError in the
// program — while an agent already connected reconnected with backoff by itself. Fail closed, recover by itself:
// `connect` now retries that answer (with `connect_retry` events) until `connectTimeoutMs`, and succeeds once the
// gateway is fresh again; at the deadline it rejects with the gateway's last answer.
import { waitFor, type RunningGatewayProcess } from '@parley/test-support';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect, isClientError, type AgentEvent, type ConnectOptions } from '../../src/index.js';
import { GATEWAY_ID, createWorld, type World } from './world.js';

/** The gateway's freshness bound: its copy is stale this long after the registry stopped (heartbeats every second). */
const GATEWAY_MAX_AGE_MS = 2_000;

let world: World;
let gw: RunningGatewayProcess;

beforeAll(async () => {
  world = await createWorld();
  gw = await world.startGateway({ env: { PARLEY_GATEWAY_REVOCATION_MAX_AGE_MS: String(GATEWAY_MAX_AGE_MS) } });
}, 180_000);

afterAll(async () => {
  await world?.close();
}, 60_000);

function options(agentId: string, events: AgentEvent[], more: Partial<ConnectOptions> = {}): ConnectOptions {
  return {
    gateway: gw.address,
    expectedGatewayId: GATEWAY_ID,
    identity: world.agent(agentId),
    trustBundle: world.trustBundle,
    crypto: world.crypto,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    onEvent: (e) => void events.push(e),
    ...more,
  };
}

const retries = (events: AgentEvent[]) => events.flatMap((e) => (e.kind === 'connect_retry' ? [e] : []));

it('with the registry down, connect() retries revocation_stale until connectTimeoutMs; started before the registry is back, it connects once the gateway is fresh', async () => {
  const fresh = await connect(options('worker-cr0', []));
  await fresh.close(); // the gateway takes agents while its copy is fresh

  await world.registry.stop();
  // One attempt (connectTimeoutMs 0, what connect() always did): refused revocation_stale once the gateway's copy is stale.
  await waitFor(
    async () => isClientError(await connect(options('worker-cr1', [], { connectTimeoutMs: 0 })).then((a) => a.close().then(() => undefined), (e: unknown) => e), 'revocation_stale'),
    GATEWAY_MAX_AGE_MS + 15_000,
    "the gateway's revocation copy going stale",
    200,
  );

  // A deadline: the gateway's answer, retried meanwhile, then thrown.
  const late: AgentEvent[] = [];
  const started = Date.now();
  const error = await connect(options('worker-cr2', late, { connectTimeoutMs: 1_500 })).catch((e: unknown) => e);
  expect(isClientError(error, 'revocation_stale'), String(error)).toBe(true);
  expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
  expect(retries(late).length).toBeGreaterThanOrEqual(2);
  expect(retries(late).every((e) => e.error.code === 'revocation_stale')).toBe(true);

  // The default deadline (60 s): connect() waits while the registry is down, and succeeds by itself once it is back.
  const events: AgentEvent[] = [];
  const pending = connect(options('worker-cr3', events));
  await waitFor(() => retries(events).length > 0, 10_000, 'a connect_retry event');
  expect(retries(events)[0]!.error.code).toBe('revocation_stale');
  await world.registry.restart();
  const agent = await pending;
  try {
    expect(agent.connected).toBe(true);
    expect(events.some((e) => e.kind === 'connected')).toBe(true);
    expect(retries(events).every((e) => e.error.code === 'revocation_stale')).toBe(true);
  } finally {
    await agent.close();
  }
});
