// The agent SDK (@parley/client) end to end against a REAL gateway process (and
// the registry it follows), started from their CLIs by @parley/test-support, over
// gRPC on 127.0.0.1: sessions through the gateway, verified receipts both ways,
// the mailbox for offline recipients, persisted sessions across a client
// restart, reconnection across a gateway restart, and forged receipts.
import { join } from 'node:path';
import { deliveryReceiptLayout, signReceipt, buildSendRequest } from '@parley/protocol';
import { SecretKey, toHex, type Ed25519KeyPair } from '@parley/crypto-core';
import { AgentGatewayService, MessageType, type DeliveryReceipt } from '@parley/proto';
import { createClient } from '@parley/rpc';
import { credentials } from '@grpc/grpc-js';
import { sleep, waitFor, type RunningGatewayProcess } from '@parley/test-support';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, fileStateStore, isClientError, type Agent as SdkAgent, type AgentEvent, type ConnectOptions, type ReceivedMessage } from '../../src/index.js';
import { GATEWAY_ID, connectAgent, createWorld, type Agent, type World } from './world.js';

interface Running {
  readonly agent: SdkAgent;
  readonly events: AgentEvent[];
  readonly received: ReceivedMessage[];
}

let world: World;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  world = await createWorld();
});

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await world?.close();
});

async function start(agent: Agent, address: string, extra: Partial<ConnectOptions> = {}): Promise<Running> {
  const events: AgentEvent[] = [];
  const received: ReceivedMessage[] = [];
  const sdk = await connect({
    gateway: address,
    identity: agent,
    trustBundle: world.trustBundle,
    expectedGatewayId: GATEWAY_ID,
    crypto: world.crypto,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    sendTimeoutMs: 10_000,
    onEvent: (e) => events.push(e),
    ...extra,
  });
  cleanup.push(() => sdk.close());
  void (async () => {
    try {
      for await (const m of sdk.messages()) {
        received.push(m);
        await m.ack();
      }
    } catch {
      // stopped
    }
  })();
  return { agent: sdk, events, received };
}

function expectVerifiedReceipt(receipt: DeliveryReceipt, signer: Agent, senderId: string, message: ReceivedMessage | undefined): void {
  expect(receipt.recipientId).toBe(signer.agentId);
  expect(receipt.senderId).toBe(senderId);
  expect(world.crypto.ed25519.verify(receipt.signature, deliveryReceiptLayout(receipt), signer.keyPair.publicKey)).toBe(true);
  if (message !== undefined) expect(toHex(receipt.messageHash)).toBe(toHex(message.messageHash));
}

const security = (events: AgentEvent[]) => events.filter((e) => e.kind === 'security');

describe('@parley/client through a gateway', () => {
  let gw: RunningGatewayProcess;
  beforeAll(async () => {
    gw = await world.startGateway();
  });

  it('two agents send both ways and get verified receipts', async () => {
    const plannerId = world.agent('planner-a', { agentType: 'planner' });
    const workerId = world.agent('worker-a');
    const planner = await start(plannerId, gw.address);
    const worker = await start(workerId, gw.address);

    const r1 = await planner.agent.send('worker-a', MessageType.TASK_ASSIGNMENT, { task: 'x' });
    await waitFor(() => worker.received.length === 1, 5_000, 'worker receives');
    const m1 = worker.received[0]!;
    expect(m1).toMatchObject({ from: 'planner-a', type: MessageType.TASK_ASSIGNMENT, content: { task: 'x' } });
    expect(m1.senderCertificate.agentId).toBe('planner-a');
    expectVerifiedReceipt(r1, workerId, 'planner-a', m1);

    const r2 = await worker.agent.send('planner-a', MessageType.TASK_ASSIGNMENT, { done: true }, { parentMessageHash: m1.messageHash });
    await waitFor(() => planner.received.length === 1, 5_000, 'planner receives');
    expect(planner.received[0]!.content).toEqual({ done: true });
    expect(toHex(planner.received[0]!.payload.parentMessageHash)).toBe(toHex(m1.messageHash));
    expectVerifiedReceipt(r2, plannerId, 'worker-a', planner.received[0]);

    // Several in flight at once, one session.
    const many = await Promise.all([1, 2, 3, 4, 5].map((n) => planner.agent.send('worker-a', MessageType.TASK_ASSIGNMENT, { n })));
    expect(new Set(many.map((r) => toHex(r.messageHash))).size).toBe(5);
    await waitFor(() => worker.received.length === 6, 5_000, 'all received');
    expect(planner.agent.sessions.sessions()).toHaveLength(1);
    expect(security(planner.events)).toEqual([]);
    expect(security(worker.events)).toEqual([]);
  });

  it('requires the gateway id and checks it: a look-alike endpoint relaying another gateway\'s challenge gets no proof', async () => {
    const id = world.agent('worker-gid');
    const base = { gateway: gw.address, identity: id, trustBundle: world.trustBundle, crypto: world.crypto, reconnect: false as const };
    await expect(connect({ ...base } as unknown as ConnectOptions)).rejects.toSatisfy((e) => isClientError(e, 'malformed'));
    // An agent that meant to reach 'gw-elsewhere' is shown this gateway's challenge: it refuses to sign.
    await expect(connect({ ...base, expectedGatewayId: 'gw-elsewhere' })).rejects.toSatisfy((e) => isClientError(e, 'identity_mismatch'));
    expect(gw.logs.some((l) => l['agent'] === 'worker-gid' && l['msg'] === 'agent connected')).toBe(false);
  });

  it('refuses plaintext to a gateway that is not on loopback', async () => {
    const id = world.agent('worker-tls');
    for (const gateway of ['10.1.2.3:7443', 'gw.example.net:443', '[2001:db8::1]:443']) {
      await expect(connect({ gateway, expectedGatewayId: GATEWAY_ID, identity: id, trustBundle: world.trustBundle, crypto: world.crypto })).rejects.toSatisfy(
        (e) => isClientError(e, 'malformed') && /plaintext/.test((e as Error).message),
      );
    }
  });

  it('refusals by the gateway fail the send with the gateway code', async () => {
    const a = await start(world.agent('worker-deny-a'), gw.address);
    world.agent('worker-deny-b');
    await expect(a.agent.send('worker-deny-b', MessageType.TASK_ASSIGNMENT, {})).rejects.toSatisfy((e) => isClientError(e, 'handshake_failed') || isClientError(e, 'policy_denied'));
  });

  it('an offline recipient gets the message when it connects, once', async () => {
    const plannerId = world.agent('planner-o', { agentType: 'planner' });
    const workerId = world.agent('worker-o');
    const first = await start(workerId, gw.address); // the gateway learns the worker's certificate
    await first.agent.close();
    const planner = await start(plannerId, gw.address);
    const sending = planner.agent.send('worker-o', MessageType.TASK_ASSIGNMENT, { queued: true });
    await sleep(300);
    const worker = await start(workerId, gw.address);
    const receipt = await sending;
    await waitFor(() => worker.received.length === 1, 5_000, 'delivered');
    expectVerifiedReceipt(receipt, workerId, 'planner-o', worker.received[0]);
    await sleep(300);
    expect(worker.received).toHaveLength(1);
  });

  it('a receipt that does not verify is relayed by the gateway (§10.3 step 6) and rejected by the sender; the genuine one resolves the send', async () => {
    const relay = await world.startGateway();
    const plannerId = world.agent('planner-f', { agentType: 'planner' });
    const workerId = world.agent('worker-f');
    const planner = await start(plannerId, relay.address);
    const worker = await connectAgent(world, relay.address, workerId); // a raw client that sends its own receipts
    cleanup.push(() => worker.close());

    let settled: DeliveryReceipt | undefined;
    const sending = planner.agent.send('worker-f', MessageType.TASK_ASSIGNMENT, { secret: 1 }).then((r) => (settled = r));
    await waitFor(() => worker.opened.length === 1, 5_000, 'worker opens');
    const opened = worker.opened[0]!;
    const impostor: Ed25519KeyPair = world.crypto.ed25519.generateKeyPair();
    const forged = signReceipt(world.crypto, { ...workerId, signingKey: impostor.secretKey }, { messageHash: opened.messageHash, senderId: 'planner-f', receivedAtMs: Date.now() });
    await worker.conn.sendReceipt(forged);
    await waitFor(() => security(planner.events).length === 1, 5_000, 'forgery reported');
    expect(security(planner.events)[0]).toMatchObject({ stage: 'receipt', code: 'bad_signature', senderId: 'worker-f' });
    expect(settled).toBeUndefined();

    const genuine = signReceipt(world.crypto, workerId, { messageHash: opened.messageHash, senderId: 'planner-f', receivedAtMs: Date.now() });
    await worker.conn.sendReceipt(genuine);
    const receipt = await sending;
    expectVerifiedReceipt(receipt, workerId, 'planner-f', undefined);
    expect(toHex(receipt.signature)).toBe(toHex(genuine.signature));
  });

  it('a restarted client continues its persisted session, and replays stay rejected', async () => {
    const plannerId = world.agent('planner-p', { agentType: 'planner' });
    const workerId = world.agent('worker-p');
    const stateKey = SecretKey.from(world.crypto.randomBytes(32));
    const store = fileStateStore(join(world.dir, 'worker-p', 'agent.state'));
    const planner = await start(plannerId, gw.address);
    const worker1 = await start(workerId, gw.address, { stateStore: store, stateKey });
    await planner.agent.send('worker-p', MessageType.TASK_ASSIGNMENT, { n: 1 });
    await waitFor(() => worker1.received.length === 1, 5_000, 'first message');
    const m1 = worker1.received[0]!;
    await worker1.agent.close();
    expect((await store.load()).length).toBeGreaterThan(0);

    const worker2 = await start(workerId, gw.address, { stateStore: store, stateKey });
    expect(worker2.agent.sessions.sessions()).toHaveLength(1);
    // The same session carries on both ways: no new handshake.
    const r2 = await planner.agent.send('worker-p', MessageType.TASK_ASSIGNMENT, { n: 2 });
    await waitFor(() => worker2.received.length === 1, 5_000, 'second message');
    expectVerifiedReceipt(r2, workerId, 'planner-p', worker2.received[0]);
    expect(toHex(worker2.received[0]!.envelope.sessionId)).toBe(toHex(m1.envelope.sessionId));
    await worker2.agent.send('planner-p', MessageType.TASK_ASSIGNMENT, { reply: true });
    await waitFor(() => planner.received.length === 1, 5_000, 'reply');
    expect(planner.events.filter((e) => e.kind === 'established')).toHaveLength(1);

    // The restarted worker's imported window rejects the first envelope ...
    expect(() => worker2.agent.sessions.open(m1.envelope)).toThrow(/replay/);
    const reported = security(worker2.events).length; // that direct call reports its replay, as the session layer does
    // ... and one replayed through the gateway is dropped without reaching the application.
    const client = createClient(AgentGatewayService, gw.address, credentials.createInsecure());
    try {
      await client.send(buildSendRequest(world.crypto, plannerId, GATEWAY_ID, { case: 'envelope', value: m1.envelope }));
    } finally {
      client.close();
    }
    await waitFor(() => worker2.events.some((e) => e.kind === 'duplicate' && e.item === 'envelope'), 5_000, 'duplicate dropped');
    expect(worker2.received).toHaveLength(1);
    expect(security(worker2.events)).toHaveLength(reported); // the redelivery is a silent duplicate
  });
});

describe('@parley/client across a gateway restart', () => {
  it('reconnects with backoff and messages continue; a send during the outage completes', async () => {
    // The same database and audit key after the restart (the gateway's directory), on the same port.
    let gw = await world.startGateway({ name: 'gw-restart' });
    const port = gw.port;
    const plannerId = world.agent('planner-r', { agentType: 'planner' });
    const workerId = world.agent('worker-r');
    const planner = await start(plannerId, gw.address);
    const worker = await start(workerId, gw.address);
    await planner.agent.send('worker-r', MessageType.TASK_ASSIGNMENT, { before: true });

    expect(await gw.stop()).toBe(0);
    await waitFor(() => !planner.agent.connected && !worker.agent.connected, 5_000, 'both disconnected');
    const during = planner.agent.send('worker-r', MessageType.TASK_ASSIGNMENT, { during: true });
    await sleep(200);
    gw = await world.startGateway({ name: 'gw-restart', port });

    const r2 = await during;
    const r3 = await worker.agent.send('planner-r', MessageType.TASK_ASSIGNMENT, { after: true });
    await waitFor(() => worker.received.length === 2 && planner.received.length === 1, 5_000, 'messages after restart');
    expect(worker.received.map((m) => m.content)).toEqual([{ before: true }, { during: true }]);
    expectVerifiedReceipt(r2, workerId, 'planner-r', worker.received[1]);
    expectVerifiedReceipt(r3, plannerId, 'worker-r', planner.received[0]);
    expect(planner.events.some((e) => e.kind === 'reconnecting')).toBe(true);
    expect(planner.events.filter((e) => e.kind === 'connected')).toHaveLength(2);
    expect(planner.agent.sessions.sessions()).toHaveLength(1);
  });

  it('a send times out with deadline_exceeded when no gateway comes back', async () => {
    const gw = await world.startGateway();
    const planner = await start(world.agent('planner-t', { agentType: 'planner' }), gw.address);
    world.agent('worker-t');
    expect(await gw.stop()).toBe(0);
    await expect(planner.agent.send('worker-t', MessageType.TASK_ASSIGNMENT, {}, { timeoutMs: 300 })).rejects.toSatisfy((e) => isClientError(e, 'deadline_exceeded'));
  });
});
