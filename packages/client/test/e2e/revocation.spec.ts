// The agent's own revocation checks end to end (PROTOCOL §8.4, §15.7, §17.5), against REAL registry and gateway
// processes. New-user review finding: agents connected as the README shows (`registry`, no `revocations`) checked
// no revocation at all — only the gateway did. Here two agents connect with `registry` only; one is revoked with
// the registry CLI (`agent revoke`), and the other closes its session and refuses it `revoked` by its own data;
// with its registry stopped longer than `revocationMaxAgeMs` it refuses messages `revocation_stale` (fail closed)
// and resumes by itself once the registry is back.
//
// So that the refusals are the agents' own, the agents follow a registry of their own (where they are registered
// and revoked) and the gateway follows the world's registry, whose list never names them: the gateway lets every
// item through (it trusts the agents' issuer, pinned), and never hears of the revocation.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TrustBundle } from '@parley/identity';
import { MessageType } from '@parley/proto';
import type { LocalIdentity } from '@parley/session';
import { startRegistry, waitFor, type RunningGatewayProcess, type TestRegistry } from '@parley/test-support';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type AgentEvent, type RevocationListEvent } from '../../src/index.js';
import { GATEWAY_ID, createWorld, onlineSdkAgent, registeredIdentity, type RunningSdkAgent, type World } from './world.js';

const MAX_AGE_MS = 3_000;

let world: World;
let agentsRegistry: TestRegistry;
let gw: RunningGatewayProcess;
let trustBundle: TrustBundle;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  world = await createWorld();
  agentsRegistry = await startRegistry(['--heartbeat-ms', '500']);
  // The gateway pins the world registry's issuer and the agents' registry's; it follows the world registry's list.
  const issuersOf = (file: string): unknown[] => (JSON.parse(readFileSync(file, 'utf8')) as { issuers: unknown[] }).issuers;
  const gatewayBundle = join(world.dir, 'gateway-bundle.json');
  writeFileSync(gatewayBundle, JSON.stringify({ version: 1, issuers: [...issuersOf(world.registry.trustBundleFile), ...issuersOf(agentsRegistry.trustBundleFile)] }));
  gw = await world.startGateway({ env: { PARLEY_GATEWAY_TRUST_BUNDLE: gatewayBundle } });
  trustBundle = TrustBundle.fromJSON(world.crypto, readFileSync(agentsRegistry.trustBundleFile, 'utf8'));
}, 180_000);

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await agentsRegistry?.cleanup();
  await world?.close();
}, 60_000);

type Running = RunningSdkAgent;

const registered = (agentId: string, type: string): Promise<LocalIdentity> => registeredIdentity(agentsRegistry, world.crypto, agentId, type);

/** An agent connected with `registry` only (no `revocations`), its application acking every message. */
const online = (identity: LocalIdentity): Promise<Running> =>
  onlineSdkAgent(
    {
      gateway: gw.address,
      expectedGatewayId: GATEWAY_ID,
      identity,
      trustBundle,
      registry: { address: agentsRegistry.address },
      revocationMaxAgeMs: MAX_AGE_MS,
      crypto: world.crypto,
      handshakeTimeoutMs: 3_000,
      resendIntervalMs: 500,
      reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    },
    cleanup,
  );

const security = (r: Running, stage: string, code: string, peer: string): AgentEvent[] =>
  r.events.filter((e) => e.kind === 'security' && e.stage === stage && e.code === code && 'senderId' in e && e.senderId === peer);
const listEvents = (r: Running, kind: RevocationListEvent['kind']): RevocationListEvent[] =>
  r.events.flatMap((e) => (e.kind === 'revocation_list' && e.event.kind === kind ? [e.event] : []));

it('agents with `registry` only: a revoked peer is refused `revoked` by the agent itself within seconds; a stopped registry fails closed `revocation_stale`, and a restarted one resumes by itself', async () => {
  const planner = await online(await registered('planner-rv', 'planner'));
  const worker = await online(await registered('worker-rv', 'worker'));
  const other = await online(await registered('worker-rv2', 'worker'));
  for (const r of [planner, worker, other]) expect(r.events.filter((e) => e.kind === 'revocation_unchecked')).toEqual([]);
  await worker.agent.send('planner-rv', MessageType.STATUS_UPDATE, { n: 1 }, { timeoutMs: 20_000 });
  await other.agent.send('planner-rv', MessageType.STATUS_UPDATE, { n: 'a' }, { timeoutMs: 20_000 });
  const session = planner.agent.sessions.sessions().find((s) => s.peerId === 'worker-rv')!;
  expect(session).toBeDefined();

  // 1. `parley-registry agent revoke worker-rv`: the planner's own list brings it within seconds and the session
  // closes; the gateway (following another registry) never refuses the worker, whose stream stays up.
  const revokedAt = Date.now();
  await agentsRegistry.revoke('worker-rv');
  await waitFor(() => security(planner, 'revocation', 'revoked', 'worker-rv').length === 1, 10_000, "the planner closing worker-rv's session");
  expect(Date.now() - revokedAt).toBeLessThan(10_000);
  expect(session.isClosed).toBe(true);
  expect(planner.events.some((e) => e.kind === 'closed' && e.session === session)).toBe(true);
  expect(planner.agent.revocationStatus()).toMatchObject({ state: 'current', fresh: true, maxAgeMs: MAX_AGE_MS, revocations: 1 });
  expect(listEvents(planner, 'updated').some((e) => e.kind === 'updated' && e.revoked.some((s) => 'agentId' in s && s.agentId === 'worker-rv'))).toBe(true);
  // The worker, still welcome at the gateway, sends again: the planner no longer has the session (SessionReject),
  // and refuses the handshake the worker reseals in — `revoked`, by its own data.
  await expect(worker.agent.send('planner-rv', MessageType.STATUS_UPDATE, { n: 2 }, { timeoutMs: 8_000 })).rejects.toBeDefined();
  await waitFor(() => security(planner, 'handshake', 'revoked', 'worker-rv').length > 0, 10_000, 'the planner refusing the handshake of worker-rv');
  expect(worker.agent.connected).toBe(true);
  expect(worker.events.some((e) => e.kind === 'disconnected' && e.error.code === 'revoked')).toBe(false);
  expect(planner.received.map((m) => m.content)).toEqual([{ n: 1 }, { n: 'a' }]);

  // 2. The agents' registry stops for longer than the bound: the planner's list goes stale, and a message from
  // worker-rv2 (in its live session) is refused `revocation_stale` and left unacked: fail closed.
  await agentsRegistry.stop();
  await waitFor(() => listEvents(planner, 'stale').length === 1, MAX_AGE_MS + 10_000, "the planner's list going stale");
  expect(planner.agent.revocationStatus()).toMatchObject({ fresh: false });
  const sent = other.agent.send('planner-rv', MessageType.STATUS_UPDATE, { n: 'b' }, { timeoutMs: 120_000 });
  await waitFor(() => security(planner, 'message', 'revocation_stale', 'worker-rv2').length > 0, 10_000, 'the planner refusing a message revocation_stale');
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  expect(planner.received.map((m) => m.content)).toEqual([{ n: 1 }, { n: 'a' }]);

  // 3. The registry back: the planner follows it again by itself, its list is fresh, the message left unacked opens.
  await agentsRegistry.restart();
  const receipt = await sent;
  expect(receipt.recipientId).toBe('planner-rv');
  expect(planner.received.map((m) => m.content)).toEqual([{ n: 1 }, { n: 'a' }, { n: 'b' }]);
  expect(listEvents(planner, 'fresh').length).toBeGreaterThan(0);
  expect(planner.agent.revocationStatus()).toMatchObject({ fresh: true, state: 'current' });
  expect(planner.agent.revocationStatus()!.version).toBeGreaterThanOrEqual(1);
}, 240_000);
