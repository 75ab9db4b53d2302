// The delivery contract (docs/PROTOCOL.md §17) end to end, against a REAL
// gateway process (started by @parley/test-support) over gRPC on loopback, with agents as real processes where a crash
// is part of the test (SIGKILL, then a restart from the same state file):
// - a recipient killed before its application acked gets the message again after restart, once,
//   and the sender's receipt comes only after that ack;
// - a sender killed after `send` resends from its outbox after restart; the recipient's application
//   sees the message once; the sender gets the receipt;
// - an envelope that overtakes step 3 of its handshake is held and delivered, not dropped;
// - a recipient that lost the session answers with a SessionReject and the sender reseals.
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { buildSendRequest } from '@parley/protocol';
import { SecretKey, toBase64Url, toHex } from '@parley/crypto-core';
import { AgentCertificateSchema, AgentGatewayService, DeliveryStatus, HandshakeFrameSchema, MessageType, toBinary } from '@parley/proto';
import { createClient } from '@parley/rpc';
import { SessionManager } from '@parley/session';
import { onLines, sleep, spawnNode, tsxArgv, waitFor, type RunningGatewayProcess } from '@parley/test-support';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GatewayConnection,
  connect,
  isClientError,
  memoryStateStore,
  verifyReceiptSignature,
  type StateStore,
  type Agent as SdkAgent,
  type AgentEvent,
  type ConnectOptions,
  type ReceivedMessage,
} from '../../src/index.js';
import { GATEWAY_ID, createWorld, type Agent, type World } from './world.js';

const HERE = dirname(fileURLToPath(import.meta.url));

let world: World;
let gw: RunningGatewayProcess;
let tmp: string;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  world = await createWorld();
  tmp = world.dir;
  gw = await world.startGateway();
}, 180_000);

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await world?.close();
});

interface Running {
  readonly agent: SdkAgent;
  readonly events: AgentEvent[];
  readonly received: ReceivedMessage[];
}

async function startSdk(agent: Agent, extra: Partial<ConnectOptions> = {}, autoAck = true): Promise<Running> {
  const events: AgentEvent[] = [];
  const received: ReceivedMessage[] = [];
  const sdk = await connect({
    gateway: gw.address,
    identity: agent,
    trustBundle: world.trustBundle,
    expectedGatewayId: GATEWAY_ID,
    crypto: world.crypto,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    resendIntervalMs: 300,
    sendTimeoutMs: 30_000,
    onEvent: (e) => events.push(e),
    ...extra,
  });
  cleanup.push(() => sdk.close());
  void (async () => {
    try {
      for await (const m of sdk.messages()) {
        received.push(m);
        if (autoAck) await m.ack();
      }
    } catch {
      // stopped
    }
  })();
  return { agent: sdk, events, received };
}

/** An SDK agent in a child process (./agent-child.ts). */
interface Child {
  readonly lines: Record<string, unknown>[];
  readonly process: ChildProcess;
  command(cmd: Record<string, unknown>): void;
  kill(): Promise<void>;
}

async function startChild(agent: Agent, name: string, autoAck: boolean, rekeyThreshold?: number): Promise<Child> {
  const configPath = join(tmp, `${name}.json`);
  writeFileSync(
    configPath,
    JSON.stringify({
      gateway: gw.address,
      gatewayId: GATEWAY_ID,
      agentId: agent.agentId,
      signingKey: toBase64Url(agent.keyPair.secretKey.unsafeBytes()),
      certificate: toBase64Url(toBinary(AgentCertificateSchema, agent.certificate)),
      issuerPublicKey: toBase64Url(world.issuer.publicKey),
      stateFile: join(tmp, `${name}.state`),
      stateKey: toBase64Url(new Uint8Array(32).fill(7)),
      autoAck,
      rekeyThreshold,
    }),
  );
  const child = spawnNode(tsxArgv(join(HERE, 'agent-child.ts'), [configPath]), { cwd: HERE, stdin: 'pipe' });
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  onLines(child.stdout!, (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  cleanup.push(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  await waitFor(() => lines.some((l) => l['ev'] === 'ready') || child.exitCode !== null, 60_000, `child ${name} ready`).catch((error: unknown) => {
    throw new Error(`${String(error)}\n${stderr}`);
  });
  if (child.exitCode !== null) throw new Error(`child ${name} exited: ${stderr}`);
  return {
    lines,
    process: child,
    command: (cmd) => child.stdin!.write(`${JSON.stringify(cmd)}\n`),
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

const receivedLines = (c: Child) => c.lines.filter((l) => l['ev'] === 'received');

describe('delivery contract (§17)', () => {
  it('a recipient killed before its application acked gets the message again after restart, once; the receipt waits for the ack', async () => {
    const plannerId = world.agent('planner-k1', { agentType: 'planner' });
    const workerId = world.agent('worker-k1');
    const planner = await startSdk(plannerId);
    const worker = await startChild(workerId, 'worker-k1', false);
    let receipt: unknown;
    const sending = planner.agent.send('worker-k1', MessageType.TASK_ASSIGNMENT, { task: 'résumé 🚀' }).then((r) => (receipt = r));
    await waitFor(() => receivedLines(worker).length === 1, 20_000, 'worker application has the message');
    expect(receivedLines(worker)[0]).toMatchObject({ content: { task: 'résumé 🚀' }, redelivered: false });
    await sleep(700); // two resend intervals: no receipt without the application's ack
    expect(receipt).toBeUndefined();

    await worker.kill();
    const restarted = await startChild(workerId, 'worker-k1', false);
    await waitFor(() => receivedLines(restarted).length >= 1, 20_000, 'handed over again after restart');
    await sleep(700); // resends and redeliveries arrive meanwhile
    expect(receivedLines(restarted)).toHaveLength(1);
    expect(receivedLines(restarted)[0]).toMatchObject({ content: { task: 'résumé 🚀' }, redelivered: true });
    expect(receipt).toBeUndefined();

    restarted.command({ op: 'ack' });
    const r = await sending;
    expect(r.recipientId).toBe('worker-k1');
    expect(toHex(r.messageHash)).toBe(receivedLines(restarted)[0]!['hash']);
    await sleep(700);
    expect(receivedLines(restarted)).toHaveLength(1);
  }, 120_000);

  it('a sender killed after send resends from its outbox after restart; the recipient sees it once; the sender gets the receipt', async () => {
    const plannerId = world.agent('planner-k2', { agentType: 'planner' });
    const workerId = world.agent('worker-k2');
    const worker = await startSdk(workerId, {}, false); // holds messages unacked until told
    const planner = await startChild(plannerId, 'planner-k2', true);
    planner.command({ op: 'send', to: 'worker-k2', content: { n: 1 }, id: 'order-1' });
    await waitFor(() => worker.received.length === 1, 20_000, 'worker has it');
    await planner.kill(); // before any receipt could exist (the worker has not acked)

    const restarted = await startChild(plannerId, 'planner-k2', true);
    expect(restarted.lines.find((l) => l['ev'] === 'ready')).toMatchObject({ pending: 1 });
    await sleep(800); // the outbox resends; the worker drops the copies
    expect(worker.received).toHaveLength(1);
    await worker.received[0]!.ack();
    await waitFor(() => restarted.lines.some((l) => l['ev'] === 'settled' && l['id'] === 'order-1' && l['outcome'] === 'delivered'), 20_000, 'restarted sender settles the send');
    await sleep(500);
    expect(worker.received).toHaveLength(1);
    expect(worker.events.some((e) => e.kind === 'security')).toBe(false);
  }, 120_000);

  it('an envelope that overtakes step 3 (a unary Send racing the stream) is held and delivered', async () => {
    const plannerId = world.agent('planner-s3', { agentType: 'planner' });
    const workerId = world.agent('worker-s3');
    const worker = await startSdk(workerId);
    // A hand-driven initiator whose step 3 is held back 300 ms while its first envelope goes by unary Send.
    const conn = await GatewayConnection.open({
      address: gw.address,
      crypto: world.crypto,
      identity: plannerId,
      expectedGatewayId: GATEWAY_ID,
      onDelivery: async (d) => {
        if (d.item.case === 'handshake') await manager.handleFrame(d.item.value);
      },
    });
    cleanup.push(() => conn.close());
    const manager: SessionManager = new SessionManager({
      crypto: world.crypto,
      handshake: { identity: plannerId, trustBundle: world.trustBundle },
      transport: {
        sendFrame: async (frame) => {
          if (frame.step === 3) await sleep(300);
          await conn.sendFrame(frame);
        },
      },
    });
    cleanup.push(() => manager.close());
    const session = await manager.session('worker-s3'); // resolves when step 2 is read, before step 3 leaves
    const sealed = session.seal({ type: MessageType.STATUS_UPDATE, content: { early: true } });
    const client = createClient(AgentGatewayService, gw.address, credentials.createInsecure());
    try {
      await client.send(buildSendRequest(world.crypto, plannerId, GATEWAY_ID, { case: 'envelope', value: sealed.envelope }));
    } finally {
      client.close();
    }
    await waitFor(() => worker.received.length === 1, 10_000, 'early envelope delivered after step 3');
    expect(worker.received[0]!.content).toEqual({ early: true });
    expect(worker.events.filter((e) => e.kind === 'security')).toEqual([]);
  }, 60_000);

  it('a recipient that lost the session answers with a SessionReject; the sender reseals in a new session', async () => {
    const plannerId = world.agent('planner-sr', { agentType: 'planner' });
    const workerId = world.agent('worker-sr');
    const planner = await startSdk(plannerId);
    const worker1 = await startSdk(workerId);
    await planner.agent.send('worker-sr', MessageType.TASK_ASSIGNMENT, { n: 1 });
    const firstSession = planner.agent.sessions.current('worker-sr')!.idHex;
    await worker1.agent.close(); // no state store: the session is gone with it
    const worker2 = await startSdk(workerId);
    const r = await planner.agent.send('worker-sr', MessageType.TASK_ASSIGNMENT, { n: 2 });
    expect(r.recipientId).toBe('worker-sr');
    await waitFor(() => worker2.received.length === 1, 10_000, 'delivered in the new session');
    expect(worker2.received[0]!.content).toEqual({ n: 2 });
    // Moved once: the tick (every 250 ms) must not start a second reseal of the same send while the new
    // handshake runs — that sealed it twice and the application saw it twice (1 run in 3 before the fix).
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(worker2.received.map((m) => m.content)).toEqual([{ n: 2 }]);
    expect(planner.events.filter((e) => e.kind === 'resealed' && e.sessionIdHex === firstSession)).toHaveLength(1);
    expect(planner.agent.sessions.current('worker-sr')!.idHex).not.toBe(firstSession);
  }, 60_000);

  it('a send whose session ended on the sender\'s side only is resent as sealed, not resealed: the application sees it once', async () => {
    // Before: the tick resealed every send whose session was gone locally (idle, past its lifetime, not restored):
    // a new message hash, so a recipient still holding the first one unacked handed the application both.
    const plannerId = world.agent('planner-se', { agentType: 'planner' });
    const workerId = world.agent('worker-se');
    const planner = await startSdk(plannerId);
    const worker = await startSdk(workerId, {}, false); // its application has not acked yet
    const sent = planner.agent.send('worker-se', MessageType.TASK_ASSIGNMENT, { n: 1 });
    await waitFor(() => worker.received.length === 1, 10_000, 'delivered');
    planner.agent.sessions.closeSession(planner.agent.sessions.current('worker-se')!);
    await sleep(1_500); // ticks (250 ms) and resend intervals (300 ms) pass
    expect(planner.events.filter((e) => e.kind === 'resealed')).toEqual([]);
    await worker.received[0]!.ack();
    expect((await sent).recipientId).toBe('worker-se');
    await sleep(500);
    expect(worker.received.map((m) => m.content)).toEqual([{ n: 1 }]);
  }, 60_000);

  it('a full state disk stops the sender before it seals on an unreserved counter; a restart never reuses a (session, counter)', async () => {
    const plannerId = world.agent('planner-df', { agentType: 'planner' });
    const workerId = world.agent('worker-df');
    const worker = await startSdk(workerId);
    const backing = memoryStateStore();
    let full = false;
    const store: StateStore = {
      load: () => backing.load(),
      append: (records) => (full ? Promise.reject(Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })) : backing.append(records)),
      rewrite: (records) => (full ? Promise.reject(new Error('ENOSPC: no space left on device')) : backing.rewrite(records)),
      close: () => Promise.resolve(),
    };
    const stateKey = SecretKey.from(world.crypto.randomBytes(32), 'aead');
    const planner1 = await startSdk(plannerId, { stateStore: store, stateKey, rekeyThreshold: 2 });
    await planner1.agent.send('worker-df', MessageType.STATUS_UPDATE, { n: 0 });
    full = true; // the disk fills up after the session snapshot
    const outcomes = await Promise.allSettled(Array.from({ length: 12 }, (_, n) => planner1.agent.send('worker-df', MessageType.STATUS_UPDATE, { n: n + 1 }, { timeoutMs: 5_000 })));
    const sentBefore = worker.received.length;
    expect(outcomes.every((o) => o.status === 'rejected')).toBe(true);
    expect(planner1.events.some((e) => e.kind === 'state_error')).toBe(true);
    await planner1.agent.close();

    full = false;
    const planner2 = await startSdk(plannerId, { stateStore: store, stateKey, rekeyThreshold: 2 });
    for (let n = 100; n < 112; n++) await planner2.agent.send('worker-df', MessageType.STATUS_UPDATE, { n });
    await waitFor(() => worker.received.length === sentBefore + 12, 10_000, 'sends after restart');
    const pairs = worker.received.map((m) => `${toHex(m.envelope.sessionId)}/${m.envelope.nonce}`);
    expect(new Set(pairs).size).toBe(pairs.length);
    expect(worker.events.filter((e) => e.kind === 'security')).toEqual([]);
  }, 60_000);

  it('a sender killed in the middle of a burst (rekey every 2 messages) never seals a (session, counter) twice, and delivers each send at most once', async () => {
    const plannerId = world.agent('planner-kb', { agentType: 'planner' });
    const workerId = world.agent('worker-kb');
    const worker = await startSdk(workerId);
    for (let round = 0; round < 3; round++) {
      const planner = await startChild(plannerId, 'planner-kb', true, 2);
      const before = worker.received.length;
      planner.command({ op: 'burst', to: 'worker-kb', content: { n: 40, tag: `round-${round}` } });
      await waitFor(() => worker.received.length >= before + 5, 20_000, 'part of the burst arrived');
      await planner.kill(); // mid-burst: reservations, outbox records and relays in flight
    }
    const last = await startChild(plannerId, 'planner-kb', true, 2);
    // Every send whose outbox record was durable is delivered after the restart; then nothing is pending.
    await waitFor(
      () => {
        last.command({ op: 'pending' });
        const reports = last.lines.filter((l) => l['ev'] === 'pending');
        return reports.length > 0 && reports[reports.length - 1]!['n'] === 0;
      },
      60_000,
      'the outbox drained',
    );
    await sleep(1000);
    const pairs = worker.received.map((m) => `${toHex(m.envelope.sessionId)}/${m.envelope.nonce}`);
    expect(new Set(pairs).size).toBe(pairs.length);
    const contents = worker.received.map((m) => JSON.stringify(m.content));
    expect(new Set(contents).size).toBe(contents.length);
    expect(worker.received.length).toBeGreaterThanOrEqual(15);
    expect(worker.events.filter((e) => e.kind === 'security')).toEqual([]);
  }, 180_000);
});

// First contact (PROTOCOL §5.4, §17.2 items 2, 6–8): the message is held from the moment `send` is called,
// before any handshake; a step 1 stored for an offline recipient waits for its answer; a refusal keeps its code.
describe('first contact (§17.2 items 6–8)', () => {
  const settledOf = (events: AgentEvent[], id: string) => events.filter((e): e is Extract<AgentEvent, { kind: 'send_settled' }> => e.kind === 'send_settled' && e.id === id);

  it('an offline recipient (seen before) started 15 s later gets both sends once — one with the default timeout, one whose caller gave up after 2 s', async () => {
    const plannerId = world.agent('planner-fc', { agentType: 'planner' });
    const workerId = world.agent('worker-fc');
    const seen = await startSdk(workerId); // the gateway learns the worker's certificate
    await seen.agent.close();
    const planner = await startSdk(plannerId);
    const started = Date.now();
    const waiting = planner.agent.send('worker-fc', MessageType.TASK_ASSIGNMENT, { which: 'default' }, { id: 'fc-default' });
    const impatient = planner.agent.send('worker-fc', MessageType.TASK_ASSIGNMENT, { which: '2s' }, { id: 'fc-2s', timeoutMs: 2_000 });
    waiting.catch(() => undefined);
    await expect(impatient).rejects.toSatisfy((e) => isClientError(e, 'deadline_exceeded'));
    // Not confirmed yet, and not forgotten: both are held, waiting for a session.
    expect(planner.agent.pendingSends().map((p) => [p.id, p.state]).sort()).toEqual([
      ['fc-2s', 'unsealed'],
      ['fc-default', 'unsealed'],
    ]);
    await sleep(15_000 - (Date.now() - started)); // well past the 10 s handshake timeout
    expect(planner.agent.pendingSends()).toHaveLength(2);
    expect(planner.events.filter((e) => e.kind === 'send_settled')).toEqual([]);
    const worker = await startSdk(workerId);
    const receipt = await waiting;
    await waitFor(() => worker.received.length === 2 && settledOf(planner.events, 'fc-2s').length === 1, 20_000, 'both delivered and settled');
    expect(verifyReceiptSignature(world.crypto, receipt, workerId.keyPair.publicKey)).toBe(true);
    const byContent = new Map(worker.received.map((m) => [JSON.stringify(m.content), m]));
    expect(toHex(receipt.messageHash)).toBe(toHex(byContent.get(JSON.stringify({ which: 'default' }))!.messageHash));
    const late = settledOf(planner.events, 'fc-2s')[0]!;
    expect(late.outcome).toBe('delivered');
    if (late.outcome !== 'delivered') throw new Error('unreachable');
    expect(verifyReceiptSignature(world.crypto, late.receipt, workerId.keyPair.publicKey)).toBe(true);
    expect(toHex(late.receipt.messageHash)).toBe(toHex(byContent.get(JSON.stringify({ which: '2s' }))!.messageHash));
    await sleep(1_000); // resends, redeliveries
    expect(worker.received.map((m) => m.content).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))).toEqual([{ which: '2s' }, { which: 'default' }]);
    expect(settledOf(planner.events, 'fc-default')).toEqual([expect.objectContaining({ outcome: 'delivered' })]);
    expect(settledOf(planner.events, 'fc-2s')).toHaveLength(1);
    expect(planner.agent.pendingSends()).toEqual([]);
    expect(worker.events.filter((e) => e.kind === 'security')).toEqual([]);
  }, 120_000);

  it('a sender killed while its first handshake waits for the offline recipient resumes the send after restart: delivered once', async () => {
    const plannerId = world.agent('planner-fk', { agentType: 'planner' });
    const workerId = world.agent('worker-fk');
    const seen = await startSdk(workerId);
    await seen.agent.close();
    const planner = await startChild(plannerId, 'planner-fk', true);
    planner.command({ op: 'send', to: 'worker-fk', content: { first: 'contact' }, id: 'fk-1' });
    await waitFor(
      () => {
        planner.command({ op: 'pending' });
        return planner.lines.some((l) => l['ev'] === 'pending' && (l['states'] as string[]).includes('fk-1:unsealed'));
      },
      10_000,
      'the send is held, unsealed',
    );
    await sleep(500);
    await planner.kill(); // SIGKILL while the handshake waits for step 2
    const worker = await startSdk(workerId); // gets the dead process's step 1 and answers it; that answer goes nowhere
    const restarted = await startChild(plannerId, 'planner-fk', true);
    expect(restarted.lines.find((l) => l['ev'] === 'ready')).toMatchObject({ pending: 1 });
    await waitFor(() => restarted.lines.some((l) => l['ev'] === 'settled' && l['id'] === 'fk-1'), 30_000, 'the restarted sender settles the send');
    expect(restarted.lines.filter((l) => l['ev'] === 'settled')).toEqual([{ ev: 'settled', id: 'fk-1', outcome: 'delivered' }]);
    await sleep(1_000);
    expect(worker.received.map((m) => m.content)).toEqual([{ first: 'contact' }]);
    expect(worker.events.filter((e) => e.kind === 'security')).toEqual([]);
  }, 120_000);

  it('the real gateway relays byte-identical copies of a queued step 1 (§5.4): each accepted QUEUED, the recipient answers once, silently', async () => {
    const plannerId = world.agent('planner-rs', { agentType: 'planner' });
    const workerId = world.agent('worker-rs');
    const seen = await startSdk(workerId);
    await seen.agent.close();
    const answers: string[] = [];
    const copies: string[] = [];
    const conn = await GatewayConnection.open({
      address: gw.address,
      crypto: world.crypto,
      identity: plannerId,
      expectedGatewayId: GATEWAY_ID,
      onDelivery: async (d) => {
        if (d.item.case === 'handshake') await manager.handleFrame(d.item.value);
      },
    });
    cleanup.push(() => conn.close());
    const manager: SessionManager = new SessionManager({
      crypto: world.crypto,
      handshake: { identity: plannerId, trustBundle: world.trustBundle },
      handshakeTimeoutMs: 200,
      queuedHandshakeResendMs: 300,
      queuedHandshakeUntil: () => Date.now() + 60_000,
      transport: {
        sendFrame: async (frame) => {
          if (frame.step === 1) copies.push(toHex(toBinary(HandshakeFrameSchema, frame)));
          const accepted = await conn.sendFrame(frame).catch((e: unknown) => {
            answers.push(`refused ${(e as { code?: string }).code}`);
            throw e;
          });
          if (frame.step === 1) answers.push(DeliveryStatus[accepted.status]);
          return { queued: accepted.status === DeliveryStatus.QUEUED };
        },
      },
    });
    cleanup.push(() => manager.close());
    const session = manager.session('worker-rs');
    session.catch(() => undefined);
    await waitFor(() => answers.length >= 3, 10_000, 'two resends');
    expect(answers.slice(0, 3)).toEqual(['QUEUED', 'QUEUED', 'QUEUED']);
    expect(new Set(copies).size).toBe(1);
    const worker = await startSdk(workerId); // drains every copy: answers the first, drops the others
    expect((await session).peerId).toBe('worker-rs');
    await sleep(1_000);
    expect(worker.events.filter((e) => e.kind === 'security')).toEqual([]);
  }, 60_000);

  it('policy_denied on first contact (a peer the policy forbids, an unknown recipient) rejects policy_denied, and send_settled says so', async () => {
    const sender = await startSdk(world.agent('worker-pd-a'));
    const forbidden = await startSdk(world.agent('worker-pd-b')); // known to the gateway; worker → worker is not allowed
    for (const [to, id] of [
      ['worker-pd-b', 'pd-known'],
      ['worker-pd-nobody', 'pd-unknown'],
    ] as const) {
      const error = await sender.agent.send(to, MessageType.TASK_ASSIGNMENT, { hi: true }, { id }).catch((e: unknown) => e);
      expect(isClientError(error, 'policy_denied')).toBe(true);
      expect((error as Error).message.match(/\[policy_denied\]/g)).toHaveLength(1);
      const settled = settledOf(sender.events, id);
      expect(settled).toHaveLength(1);
      expect(settled[0]).toMatchObject({ outcome: 'failed', error: { code: 'policy_denied' } });
    }
    expect(sender.agent.pendingSends()).toEqual([]);
    expect(forbidden.received).toEqual([]);
  }, 60_000);
});
