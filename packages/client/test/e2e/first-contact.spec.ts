// A first contact with an agent the gateway has never seen (PROTOCOL §10.3, §17.2 item 6), against REAL registry and
// gateway processes: the worker is registered but has never connected. Before, the gateway refused the planner's step 1
// `policy_denied` (it routes by the certificates of agents it has seen), so every recipient had to be started once
// before anyone could write to it. Now the planner, given `registry`, looks the worker up (GetAgent signed as the
// planner, §15.3), relays the same step 1 with the worker's certificate attached, the gateway stores it (QUEUED),
// and the worker, started seconds later for the first time, answers it from its mailbox: its application gets both
// messages once, and the planner both verified receipts. Without `registry` the refusal stays, and says what is missing.
import { readFileSync } from 'node:fs';
import { TrustBundle } from '@parley/identity';
import { MessageType, type DeliveryReceipt } from '@parley/proto';
import type { LocalIdentity } from '@parley/session';
import { waitFor, type RunningGatewayProcess } from '@parley/test-support';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isClientError, verifyReceiptSignature, type ConnectOptions } from '../../src/index.js';
import { GATEWAY_ID, createWorld, onlineSdkAgent, registeredIdentity, type RunningSdkAgent, type World } from './world.js';

let world: World;
let gw: RunningGatewayProcess;
let trustBundle: TrustBundle;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  // The world's gateway follows the world's registry (its revocation list) and pins its issuer: agents registered
  // there are agents it can verify — but knows nothing of until they connect.
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

/** An agent connected to the world's gateway, its application acking every message. */
const online = (identity: LocalIdentity, extra: Partial<ConnectOptions> = {}): Promise<Running> =>
  onlineSdkAgent(
    {
      gateway: gw.address,
      expectedGatewayId: GATEWAY_ID,
      identity,
      trustBundle,
      crypto: world.crypto,
      handshakeTimeoutMs: 5_000,
      resendIntervalMs: 500,
      reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
      ...extra,
    },
    cleanup,
  );

it('with `registry`: two messages to a registered worker that never connected are delivered once it starts, seconds later; both receipts verify', async () => {
  const plannerId = await registered('planner-fc', 'planner');
  const workerId = await registered('worker-fc', 'worker');
  const planner = await online(plannerId, { registry: { address: world.registry.address } });
  const outcomes: (DeliveryReceipt | Error)[] = [];
  const sends = [1, 2].map((n) =>
    planner.agent.send('worker-fc', MessageType.TASK_ASSIGNMENT, { n }, { id: `first-contact-${n}`, timeoutMs: 90_000 }).then(
      (r) => void outcomes.push(r),
      (e: Error) => void outcomes.push(e),
    ),
  );
  // The step 1 is stored for the offline worker: the sends wait for it, unsealed, and nothing fails.
  await new Promise((resolve) => setTimeout(resolve, 6_000));
  expect(outcomes).toEqual([]);
  expect(planner.agent.pendingSends().map((p) => [p.id, p.state])).toEqual([
    ['first-contact-1', 'unsealed'],
    ['first-contact-2', 'unsealed'],
  ]);
  expect(planner.events.filter((e) => e.kind === 'send_settled')).toEqual([]);

  // The worker connects for the first time: its mailbox holds the planner's step 1.
  const worker = await online(workerId);
  await Promise.all(sends);
  expect(outcomes.every((o) => !(o instanceof Error)), String(outcomes.find((o) => o instanceof Error))).toBe(true);
  const receipts = outcomes as DeliveryReceipt[];
  for (const r of receipts) {
    expect(r.recipientId).toBe('worker-fc');
    expect(verifyReceiptSignature(world.crypto, r, workerId.certificate.identityPublicKey)).toBe(true);
  }
  await new Promise((resolve) => setTimeout(resolve, 1_500)); // nothing more comes: each once
  expect(worker.received.map((m) => m.content).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))).toEqual([{ n: 1 }, { n: 2 }]);
  expect(worker.received.every((m) => m.from === 'planner-fc' && !m.redelivered)).toBe(true);
  const hashes = new Set(worker.received.map((m) => Buffer.from(m.messageHash).toString('hex')));
  expect(new Set(receipts.map((r) => Buffer.from(r.messageHash).toString('hex')))).toEqual(hashes);
  expect(planner.events.filter((e) => e.kind === 'send_settled').map((e) => e.kind === 'send_settled' && e.outcome)).toEqual(['delivered', 'delivered']);
  expect(planner.events.filter((e) => e.kind === 'security')).toEqual([]);
}, 180_000);

it('with `registry`: a recipient the registry does not know fails `policy_denied`, saying so', async () => {
  const planner = await online(await registered('planner-fc2', 'planner'), { registry: { address: world.registry.address } });
  const error = await planner.agent.send('worker-nobody', MessageType.TASK_ASSIGNMENT, { n: 1 }, { timeoutMs: 30_000 }).catch((e: unknown) => e);
  expect(isClientError(error, 'policy_denied'), String(error)).toBe(true);
  expect((error as Error).message).toMatch(/the registry has no agent with that id/);
}, 120_000);

it('without `registry`: `policy_denied` at once, as before, the message saying that `registry` (or the recipient connecting once) is needed', async () => {
  const plannerId = await registered('planner-fc3', 'planner');
  await registered('worker-fc3', 'worker');
  const planner = await online(plannerId);
  const started = Date.now();
  const error = await planner.agent.send('worker-fc3', MessageType.TASK_ASSIGNMENT, { n: 1 }, { timeoutMs: 30_000 }).catch((e: unknown) => e);
  expect(isClientError(error, 'policy_denied'), String(error)).toBe(true);
  expect((error as Error).message).toMatch(/needs this agent's `registry` option/);
  expect(Date.now() - started).toBeLessThan(5_000);
  await waitFor(() => planner.agent.pendingSends().length === 0, 5_000, 'the send settled');
}, 120_000);
