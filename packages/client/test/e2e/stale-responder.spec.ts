// The new-user walkthrough's HIGH finding, end to end against REAL registry and gateway processes (PROTOCOL §17.3
// item 7): a planner queues three sends to a worker that never connected (first contact through the registry
// lookup, the step 1 stored for the worker); the registry stops; the worker starts for the first time — its own
// revocation list never loaded, so it cannot check the planner — and the registry comes back seconds later. Before,
// the worker acked and dropped each step 3 (`revocation_stale`), answered every envelope with a SessionReject, and
// the planner resealed six times within 200 ms and failed all three sends `unknown_session`: nothing was delivered.
// Now the worker leaves the frames unacknowledged until its list is fresh: its application gets the three messages
// once, and the planner three verified receipts.
import { readFileSync } from 'node:fs';
import { TrustBundle } from '@parley/identity';
import { MessageType, type DeliveryReceipt } from '@parley/proto';
import type { LocalIdentity } from '@parley/session';
import type { RunningGatewayProcess } from '@parley/test-support';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { verifyReceiptSignature, type ConnectOptions } from '../../src/index.js';
import { GATEWAY_ID, createWorld, onlineSdkAgent, registeredIdentity, type RunningSdkAgent, type World } from './world.js';

let world: World;
let gw: RunningGatewayProcess;
let trustBundle: TrustBundle;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  world = await createWorld();
  gw = await world.startGateway();
  trustBundle = TrustBundle.fromJSON(world.crypto, readFileSync(world.registry.trustBundleFile, 'utf8'));
}, 180_000);

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await world?.close();
}, 60_000);

type Running = RunningSdkAgent;

const registered = (agentId: string, type: string): Promise<LocalIdentity> => registeredIdentity(world.registry, world.crypto, agentId, type);

/** An agent on the world's gateway that follows the world's registry, its application acking every message. */
const online = (identity: LocalIdentity, extra: Partial<ConnectOptions> = {}): Promise<Running> =>
  onlineSdkAgent(
    {
      gateway: gw.address,
      expectedGatewayId: GATEWAY_ID,
      identity,
      trustBundle,
      crypto: world.crypto,
      registry: { address: world.registry.address },
      handshakeTimeoutMs: 5_000,
      resendIntervalMs: 500,
      reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
      ...extra,
    },
    cleanup,
  );

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

it('a worker started for the first time while the registry is down gets the three messages queued for it once the registry is back; the planner gets three receipts', async () => {
  const plannerId = await registered('planner-st', 'planner');
  const workerId = await registered('worker-st', 'worker');
  const planner = await online(plannerId);
  const outcomes: (DeliveryReceipt | Error)[] = [];
  const sends = [1, 2, 3].map((n) =>
    planner.agent.send('worker-st', MessageType.TASK_ASSIGNMENT, { n }, { id: `st-${n}`, timeoutMs: 120_000 }).then(
      (r) => void outcomes.push(r),
      (e: Error) => void outcomes.push(e),
    ),
  );
  // The step 1 is stored for the offline worker (after the planner's registry lookup): the sends wait, unsealed.
  await sleep(3_000);
  expect(planner.agent.pendingSends().map((p) => p.state)).toEqual(['unsealed', 'unsealed', 'unsealed']);

  await world.registry.stop();
  const outage = Date.now();
  const worker = await online(workerId); // its revocation list cannot load: stale from the start
  await sleep(Math.max(0, 8_000 - (Date.now() - outage)));
  expect(worker.received).toEqual([]); // fail closed: nothing taken unchecked …
  expect(outcomes).toEqual([]); // … and nothing refused: the sends still wait
  expect(worker.events.some((e) => e.kind === 'security' && e.code === 'revocation_stale' && e.stage === 'handshake')).toBe(true);

  await world.registry.restart();
  await Promise.race([Promise.all(sends), sleep(60_000)]);
  expect(outcomes.every((o) => !(o instanceof Error)), String(outcomes.find((o) => o instanceof Error))).toBe(true);
  expect(outcomes).toHaveLength(3);
  for (const r of outcomes as DeliveryReceipt[]) expect(verifyReceiptSignature(world.crypto, r, workerId.certificate.identityPublicKey)).toBe(true);
  await sleep(1_500); // nothing more comes: each once
  expect(worker.received.map((m) => (m.content as { n: number }).n).sort()).toEqual([1, 2, 3]);
  expect(worker.received.every((m) => m.from === 'planner-st' && !m.redelivered)).toBe(true);
  expect(planner.events.filter((e) => e.kind === 'send_settled').map((e) => e.kind === 'send_settled' && e.outcome)).toEqual(['delivered', 'delivered', 'delivered']);
  expect(planner.events.filter((e) => e.kind === 'resealed')).toEqual([]); // no SessionReject ever came
  expect(worker.events.filter((e) => e.kind === 'security' && e.code === 'unknown_session')).toEqual([]);
}, 180_000);
