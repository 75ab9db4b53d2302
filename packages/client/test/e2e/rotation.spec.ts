// An agent's identity key rotated (`parley-registry agent rotate`) while a peer is talking to it, end to end
// against a real registry and gateway (PROTOCOL §17.8). Operator review finding: the rotated agent came back
// with its old sessions, signed receipts with the new key that its peer checked against the old certificate
// (bad_signature, resent for an hour), and what the peer sent while it was down was refused as policy_denied.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SecretKey, fromBase64Url } from '@parley/crypto-core';
import { decodeCertificate } from '@parley/identity';
import { MessageType } from '@parley/proto';
import { waitFor, type RunningGatewayProcess } from '@parley/test-support';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect, fileStateStore, memoryStateStore, type Agent, type AgentEvent, type ReceivedMessage, type StateStore } from '../../src/index.js';
import type { LocalIdentity } from '@parley/session';
import { GATEWAY_ID, createWorld, type World } from './world.js';

let world: World;
let gw: RunningGatewayProcess;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  world = await createWorld();
  gw = await world.startGateway();
}, 180_000);

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await world?.close();
});

async function start(identity: LocalIdentity, store: StateStore, stateKey: SecretKey, autoAck: boolean): Promise<{ agent: Agent; events: AgentEvent[]; received: ReceivedMessage[] }> {
  const events: AgentEvent[] = [];
  const received: ReceivedMessage[] = [];
  const agent = await connect({
    gateway: gw.address,
    identity,
    trustBundle: world.trustBundle,
    expectedGatewayId: GATEWAY_ID,
    crypto: world.crypto,
    stateStore: store,
    stateKey,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    resendIntervalMs: 300,
    onEvent: (e) => events.push(e),
  });
  cleanup.push(() => agent.close());
  void (async () => {
    try {
      for await (const m of agent.messages()) {
        received.push(m);
        if (autoAck) await m.ack();
      }
    } catch {
      // stopped
    }
  })();
  return { agent, events, received };
}

it('a rotated agent comes back under its new key: what it held is acked and verified, what was sent meanwhile is queued and resealed, new sends go through', async () => {
  const { crypto } = world;
  const registered = await world.registry.register(crypto, 'worker-rot', 'worker');
  const oldIdentity: LocalIdentity = { agentId: 'worker-rot', signingKey: registered.secretKey, certificate: registered.certificate };
  const planner = await start(world.agent('planner-rot', { agentType: 'planner' }), memoryStateStore(), SecretKey.from(crypto.randomBytes(32)), true);
  const workerStore = fileStateStore(join(world.dir, 'worker-rot-state'));
  const workerKey = SecretKey.from(crypto.randomBytes(32));
  const w1 = await start(oldIdentity, workerStore, workerKey, false); // the application acks by hand
  const m1 = planner.agent.send('worker-rot', MessageType.TASK_ASSIGNMENT, { n: 1 });
  await waitFor(() => w1.received.length === 1, 10_000, 'M1 taken');
  await w1.received[0]!.ack();
  await m1;
  const m2 = planner.agent.send('worker-rot', MessageType.TASK_ASSIGNMENT, { n: 2 }, { timeoutMs: 120_000 });
  await waitFor(() => w1.received.length === 2, 10_000, 'M2 taken, not acked');

  // The rotation: a new key and certificate; the old certificate revoked (superseded) — the gateway sends the
  // running agent away (revoked), and it stops; its state stays on disk.
  const rotated = await world.registry.cli(['agent', 'rotate', 'worker-rot', '--json']);
  expect(rotated.code, rotated.stderr).toBe(0);
  const out = JSON.parse(rotated.stdout) as { certificate: { encoded: string }; key_file: string };
  const seed = (JSON.parse(readFileSync(out.key_file, 'utf8')) as { seed: string }).seed;
  const newIdentity: LocalIdentity = { agentId: 'worker-rot', signingKey: crypto.ed25519.keyPairFromSeed(fromBase64Url(seed)).secretKey, certificate: decodeCertificate(fromBase64Url(out.certificate.encoded)) };
  await waitFor(() => w1.events.some((e) => e.kind === 'disconnected'), 20_000, 'the old key sent away');
  await w1.agent.close();

  // Sent while the agent is away: queued for it (its certificate was superseded, its id stands), not refused.
  const m3 = planner.agent.send('worker-rot', MessageType.TASK_ASSIGNMENT, { n: 3 }, { timeoutMs: 120_000 });

  // Back under the new key, from the same state: M2 is handed over again (redelivered) and acked — its receipt,
  // signed with the new key, carries the new certificate; M3 (an envelope of a session the agent no longer
  // restores) gets a SessionReject with the certificate, and the planner reseals it in a new session.
  // It restarts once more before acking anything: the certificate is still attached (for a message lifetime after
  // the rotation, across restarts), or its peer could verify none of its replies.
  const w2 = await start(newIdentity, workerStore, workerKey, false);
  await waitFor(() => w2.received.length >= 1, 10_000, 'M2 handed over again under the new key');
  await w2.agent.close();
  const w3 = await start(newIdentity, workerStore, workerKey, true);
  await m2;
  await m3;
  const m4 = await planner.agent.send('worker-rot', MessageType.TASK_ASSIGNMENT, { n: 4 });
  expect(m4.recipientId).toBe('worker-rot');
  await waitFor(() => w3.received.length >= 3, 10_000, 'M2 again, M3, M4');
  expect(w3.received.map((m) => [(m.content as { n: number }).n, m.redelivered])).toEqual([
    [2, true],
    [3, false],
    [4, false],
  ]);
  expect(planner.events.filter((e) => e.kind === 'security')).toEqual([]);
}, 180_000);
