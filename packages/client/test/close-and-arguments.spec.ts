// Parity checks from the Python SDK's walkthrough, for this SDK: (a) close() right after a receipt leaves the
// settled send out of the state store (a restart neither resends it nor reports `send_settled` again); (b)
// messages() hands nothing over once close() has begun (its ack could only fail); (c) wrong-typed arguments of
// connect() and send() — a caller without TypeScript — are refused `malformed` with a message naming the
// argument, before anything is opened, recorded or sent (a NaN or negative `timeoutMs` used to reject the call
// `deadline_exceeded` at once while the send went out anyway); (e) a send that close() or a stop for good ends
// after the outbox took it says so (`heldSendId`: a restart resumes it), one not taken is in no snapshot.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SecretKey } from '@parley/crypto-core';
import { MessageType } from '@parley/proto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Journal, connect, fileStateStore, isClientError, memoryStateStore, replay, type Agent, type AgentEvent, type ConnectOptions, type ReceivedMessage, type StateStore } from '../src/index.js';
import { standInGateway } from './stand-in-gateway.js';
import { standInRelay, type StandInRelay } from './stand-in-relay.js';
import { testWorld, type TestAgent, type TestWorld } from './world.js';

let world: TestWorld;
let dir: string;
let relay: StandInRelay;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  world = await testWorld();
  dir = mkdtempSync(join(tmpdir(), 'parley-client-close-'));
  relay = await standInRelay();
});

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

afterAll(() => {
  relay.close();
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function online(identity: TestAgent, extra: Partial<ConnectOptions> = {}): Promise<{ agent: Agent; events: AgentEvent[] }> {
  const events: AgentEvent[] = [];
  const agent = await connect({
    gateway: relay.address,
    expectedGatewayId: 'gw-1',
    identity,
    trustBundle: world.trustBundle,
    revocations: world.revocations,
    crypto: world.crypto,
    handshakeTimeoutMs: 2_000,
    resendIntervalMs: 300,
    reconnect: { initialDelayMs: 10, maxDelayMs: 100 },
    onEvent: (e) => void events.push(e),
    ...extra,
  });
  cleanup.push(() => agent.close());
  return { agent, events };
}

/** An application that acks every message it gets. */
function autoAck(agent: Agent): ReceivedMessage[] {
  const received: ReceivedMessage[] = [];
  void (async () => {
    for await (const m of agent.messages()) {
      received.push(m);
      await m.ack();
    }
  })().catch(() => undefined);
  return received;
}

const settled = (events: AgentEvent[]) => events.filter((e) => e.kind === 'send_settled');

describe('close() right after a receipt (a)', () => {
  it('the settled send is out of the state file once close() resolves: a restart does not resend it nor report send_settled again', async () => {
    const bobId = world.agent('bob-a');
    const bob = await online(bobId);
    const got = autoAck(bob.agent);
    const aliceId = world.agent('alice-a');
    const path = join(dir, 'alice-a.state');
    const stateKey = SecretKey.from(world.crypto.randomBytes(32), 'aead');
    const alice = await online(aliceId, { stateStore: fileStateStore(path), stateKey });
    const receipt = await alice.agent.send('bob-a', MessageType.TASK_ASSIGNMENT, { n: 1 }, { id: 'order-1' });
    expect(receipt.recipientId).toBe('bob-a');
    await alice.agent.close(); // at once: its out_done record may still be on its way to the disk

    // What a restart would read: no pending send.
    const journal = new Journal(world.crypto, stateKey, fileStateStore(path));
    const state = replay(await journal.load());
    await journal.close();
    expect([...state.outbox.keys()]).toEqual([]);

    const envelopes = relay.relayed('envelope');
    const again = await online(aliceId, { stateStore: fileStateStore(path), stateKey });
    expect(again.agent.pendingSends()).toEqual([]);
    await sleep(1_000); // several resend intervals and ticks
    expect(relay.relayed('envelope')).toBe(envelopes);
    expect(settled(again.events)).toEqual([]);
    expect(settled(alice.events).map((e) => e.id)).toEqual(['order-1']);
    expect(got.map((m) => m.content)).toEqual([{ n: 1 }]);
  });
});

describe('messages() once close() has begun (b)', () => {
  it('hands over nothing more — not even messages already queued for it — and ends', async () => {
    const bob = await online(world.agent('bob-b'), { stateStore: memoryStateStore(), stateKey: SecretKey.from(world.crypto.randomBytes(32), 'aead') });
    const alice = await online(world.agent('alice-b'));
    for (let n = 1; n <= 3; n++) void alice.agent.send('bob-b', MessageType.STATUS_UPDATE, { n }, { timeoutMs: 10_000 }).catch(() => undefined);
    await expect.poll(() => relay.relayed('envelope'), { timeout: 5_000 }).toBeGreaterThanOrEqual(3);
    await sleep(300); // opened, recorded and queued for the application, which has not asked yet

    const taken: ReceivedMessage[] = [];
    let closing: Promise<void> | undefined;
    let ended = false;
    for await (const m of bob.agent.messages()) {
      taken.push(m);
      closing ??= bob.agent.close(); // the application closes the agent while handling its first message
    }
    ended = true;
    await closing;
    expect(ended).toBe(true);
    expect(taken.map((m) => m.content)).toEqual([{ n: 1 }]);
    await expect(taken[0]!.ack()).rejects.toSatisfy((e) => isClientError(e, 'cancelled'));
  });

  it('a consumer waiting for the next message ends as soon as close() is called', async () => {
    const { agent } = await online(world.agent('bob-b2'));
    const done = (async () => {
      for await (const m of agent.messages()) void m;
      return 'ended';
    })();
    await sleep(50);
    const closing = agent.close();
    expect(await Promise.race([done, sleep(2_000).then(() => 'still waiting')])).toBe('ended');
    await closing;
  });
});

describe('a send is held from its first record on (d)', () => {
  it('a timeout that passes while the first record is being written answers only once it is written: `deadline_exceeded` never for a send not held', async () => {
    const inner = memoryStateStore();
    let stalled = false;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const store: StateStore = {
      load: () => inner.load(),
      rewrite: (r) => inner.rewrite(r),
      close: () => inner.close(),
      append: async (r) => {
        if (stalled) await gate;
        return inner.append(r);
      },
    };
    const alice = await online(world.agent('alice-d1'), { stateStore: store, stateKey: SecretKey.from(world.crypto.randomBytes(32), 'aead') });
    const before = inner.records.length;
    stalled = true; // the disk stalls
    let answer: unknown;
    const sent = alice.agent.send('bob-d1', MessageType.TASK_ASSIGNMENT, { n: 1 }, { id: 'slow-1', timeoutMs: 20 }).catch((e: unknown) => (answer = e));
    await sleep(300);
    expect(answer).toBeUndefined(); // not "still trying": nothing is held yet
    expect(inner.records.length).toBe(before);
    open();
    await sent;
    expect(isClientError(answer, 'deadline_exceeded')).toBe(true);
    expect((answer as Error).message).toContain("send id 'slow-1'");
    expect(alice.agent.pendingSends().map((p) => p.id)).toEqual(['slow-1']);
    expect(inner.records.length).toBeGreaterThan(before);
  });
});

describe('close() or a stop for good while a send waits (e)', () => {
  /** The state a restart would find in `store`. */
  async function restored(store: StateStore, stateKey: SecretKey): Promise<string[]> {
    const journal = new Journal(world.crypto, stateKey, store);
    const state = replay(await journal.load());
    await journal.close();
    return [...state.outbox.keys()];
  }

  it('send() then close() in the same turn: the send is held (its record written) — `cancelled` with heldSendId, and a restart delivers it and reports send_settled', async () => {
    const path = join(dir, 'alice-e1.state');
    const stateKey = SecretKey.from(world.crypto.randomBytes(32), 'aead');
    const alice = await online(world.agent('alice-e1'), { stateStore: fileStateStore(path), stateKey });
    let answer: unknown;
    const sent = alice.agent.send('bob-e1', MessageType.TASK_ASSIGNMENT, { n: 1 }, { id: 'e1-1', timeoutMs: 10_000 }).catch((e: unknown) => (answer = e));
    await alice.agent.close();
    await sent;
    expect(isClientError(answer, 'cancelled')).toBe(true);
    expect((answer as { heldSendId?: string }).heldSendId).toBe('e1-1'); // not "refused before the outbox took it"
    expect((answer as Error).message).toMatch(/held in the state store.*send_settled event of id 'e1-1'/);
    expect(settled(alice.events)).toEqual([]);
    expect(await restored(fileStateStore(path), stateKey)).toEqual(['e1-1']);
    const bob = await online(world.agent('bob-e1'));
    const got = autoAck(bob.agent);
    const again = await online(world.agent('alice-e1'), { stateStore: fileStateStore(path), stateKey });
    expect(again.agent.pendingSends().map((p) => p.id)).toEqual(['e1-1']);
    await expect.poll(() => got.map((m) => m.content), { timeout: 10_000 }).toEqual([{ n: 1 }]);
    await expect.poll(() => settled(again.events).map((e) => e.id), { timeout: 10_000 }).toEqual(['e1-1']);
  });

  it('close() while a held send waits for its recipient: `cancelled` with heldSendId (the send stays in the store)', async () => {
    const store = memoryStateStore();
    const stateKey = SecretKey.from(world.crypto.randomBytes(32), 'aead');
    const alice = await online(world.agent('alice-e2'), { stateStore: store, stateKey });
    let answer: unknown;
    const sent = alice.agent.send('bob-e2', MessageType.TASK_ASSIGNMENT, { n: 2 }, { id: 'e2-1', timeoutMs: 10_000 }).catch((e: unknown) => (answer = e));
    await sleep(100); // held, waiting for bob's step 2 (bob is not online)
    await alice.agent.close();
    await sent;
    expect(isClientError(answer, 'cancelled')).toBe(true);
    expect((answer as { heldSendId?: string }).heldSendId).toBe('e2-1');
    expect(await restored(store, stateKey)).toEqual(['e2-1']);
  });

  it('a send whose first record fails while close() runs was not taken: it rejects with that failure, no heldSendId, and is not in the store', async () => {
    const inner = memoryStateStore();
    let failing = false;
    const store: StateStore = {
      load: () => inner.load(),
      rewrite: (r) => inner.rewrite(r),
      close: () => inner.close(),
      append: async (r) => {
        await sleep(20);
        if (failing) throw new Error('disk full');
        return inner.append(r);
      },
    };
    const stateKey = SecretKey.from(world.crypto.randomBytes(32), 'aead');
    const alice = await online(world.agent('alice-e3'), { stateStore: store, stateKey });
    failing = true;
    let answer: unknown;
    const sent = alice.agent.send('bob-e3', MessageType.TASK_ASSIGNMENT, { n: 3 }, { id: 'e3-1', timeoutMs: 10_000 }).catch((e: unknown) => (answer = e));
    await alice.agent.close();
    await sent;
    expect(answer).toBeInstanceOf(Error);
    expect(isClientError(answer, 'cancelled')).toBe(false); // its outcome: the store's failure, as its send_settled says
    expect((answer as Error).message).toMatch(/disk full/);
    expect((answer as { heldSendId?: string }).heldSendId).toBeUndefined();
    expect(settled(alice.events).map((e) => e.id)).toEqual(['e3-1']);
    expect(await restored(inner, stateKey)).toEqual([]); // a restart does not send it (the compaction did not write it)
  });

  it('a stop for good (state_error) while a held send waits: the stopping error with heldSendId; the send stays in the store', async () => {
    const inner = memoryStateStore();
    let failing = false;
    const store: StateStore = {
      load: () => inner.load(),
      rewrite: (r) => inner.rewrite(r),
      close: () => inner.close(),
      append: (r) => (failing ? Promise.reject(new Error('disk gone')) : inner.append(r)),
    };
    const stateKey = SecretKey.from(world.crypto.randomBytes(32), 'aead');
    const alice = await online(world.agent('alice-e4'), { stateStore: store, stateKey });
    let answer: unknown;
    const sent = alice.agent.send('bob-e4', MessageType.TASK_ASSIGNMENT, { n: 4 }, { id: 'e4-1', timeoutMs: 10_000 }).catch((e: unknown) => (answer = e));
    await sleep(100); // held, waiting for bob (not online)
    failing = true;
    const second = await alice.agent.send('carol-e4', MessageType.TASK_ASSIGNMENT, { n: 5 }, { id: 'e4-2', timeoutMs: 10_000 }).catch((e: unknown) => e);
    await sent;
    const stopping = alice.events.find((e) => e.kind === 'state_error');
    expect(stopping).toBeDefined();
    expect((second as { heldSendId?: string }).heldSendId).toBeUndefined(); // its record failed: not taken
    expect(isClientError(answer, (second as { code: never }).code)).toBe(true);
    expect((answer as { heldSendId?: string }).heldSendId).toBe('e4-1');
    expect(await restored(inner, stateKey)).toEqual(['e4-1']);
  });
});

describe('wrong-typed arguments (c)', () => {
  it('send(): refused `malformed`, naming the argument, before anything is recorded or sent', async () => {
    const store = memoryStateStore();
    const alice = await online(world.agent('alice-c'), { stateStore: store, stateKey: SecretKey.from(world.crypto.randomBytes(32), 'aead') });
    const recordsBefore = store.records.length;
    const handshakesBefore = relay.relayed('handshake');
    const send = alice.agent.send.bind(alice.agent) as (...args: unknown[]) => Promise<unknown>;
    const cases: [unknown[], RegExp][] = [
      [['bob-c', 'TASK_ASSIGNMENT', { a: 1 }], /send message type must be a MessageType .* got the string "TASK_ASSIGNMENT"/],
      [['bob-c', null, { a: 1 }], /send message type .* got null/],
      [['bob-c', undefined, { a: 1 }], /send message type .* got undefined/],
      [['bob-c', 0, { a: 1 }], /send message type .* got the number 0/],
      [['bob-c', 99, { a: 1 }], /send message type .* got the number 99/],
      [['bob-c', 1.5, { a: 1 }], /send message type .* got the number 1.5/],
      [[42, MessageType.TASK_ASSIGNMENT, { a: 1 }], /send recipient must be an agent id string.* got the number 42/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, { timeoutMs: '100' }], /send timeoutMs must be an integer number of milliseconds .* got the string "100"/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, { timeoutMs: -1 }], /send timeoutMs .* got the number -1/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, { timeoutMs: Number.NaN }], /send timeoutMs .* got NaN/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, { timeoutMs: Number.POSITIVE_INFINITY }], /send timeoutMs .* got the number Infinity/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, { timeoutMs: 2 ** 31 }], /send timeoutMs .* got the number 2147483648/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, null], /send options must be an object .* got null/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, 'order-1'], /send options must be an object .* got the string "order-1"/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, { id: 42 }], /send id must be a string of 1..128 printable ASCII characters, got the number 42/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, { parentMessageHash: 'ab'.repeat(32) }], /send parentMessageHash must be a 32-byte Uint8Array/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, { handoffHash: new Uint8Array(31) }], /send handoffHash must be a 32-byte Uint8Array .* got 31 bytes/],
      [['bob-c', MessageType.TASK_ASSIGNMENT, undefined], /content must be a JSON value/],
    ];
    for (const [args, message] of cases) {
      const error = await send(...args).catch((e: unknown) => e);
      expect(isClientError(error, 'malformed'), `${String(error)} for ${JSON.stringify(args.slice(1), (_k, v: unknown) => (v === undefined ? 'undefined' : typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))}`).toBe(true);
      expect((error as Error).message).toMatch(message);
    }
    await sleep(400); // a tick or two: nothing was taken, so nothing goes out
    expect(alice.agent.pendingSends()).toEqual([]);
    expect(store.records.length).toBe(recordsBefore);
    expect(relay.relayed('handshake')).toBe(handshakesBefore);
    expect(settled(alice.events)).toEqual([]);
    // timeoutMs 0 is a send that does not wait (its outcome comes as send_settled): still taken.
    await expect(send('bob-c', MessageType.TASK_ASSIGNMENT, { a: 1 }, { timeoutMs: 0, id: 'no-wait' })).rejects.toSatisfy((e) => isClientError(e, 'deadline_exceeded'));
    expect(alice.agent.pendingSends().map((p) => p.id)).toEqual(['no-wait']);
  });

  it('connect(): refused `malformed`, naming the option, before any connection is opened', async () => {
    const gw = await standInGateway();
    cleanup.push(() => gw.close());
    const base: ConnectOptions = { gateway: gw.address, expectedGatewayId: 'gw-1', identity: world.agent('alice-d'), trustBundle: world.trustBundle, revocations: world.revocations, crypto: world.crypto };
    const cases: [unknown, RegExp][] = [
      [null, /connect options must be an object, got null/],
      ['127.0.0.1:7443', /connect options must be an object, got the string/],
      [{ ...base, gateway: 7443 }, /gateway must be a non-empty 'host:port' string, got the number 7443/],
      [{ ...base, expectedGatewayId: undefined }, /expectedGatewayId is required.* got undefined/],
      [{ ...base, identity: 'alice-d' }, /identity must be an object/],
      [{ ...base, identity: { ...base.identity, signingKey: new Uint8Array(64) } }, /identity.signingKey must be a SecretKey .* got 64 bytes/],
      [{ ...base, trustBundle: { issuers: [] } }, /trustBundle must be a TrustBundle .* got an object/],
      [{ ...base, registry: '127.0.0.1:50051' }, /registry must be an object .* got the string "127.0.0.1:50051"/],
      [{ ...base, registry: { address: 50051 } }, /registry.address must be a non-empty 'host:port' string, got the number 50051/],
      [{ ...base, revocations: [] }, /revocations must be a RevocationChecker/],
      [{ ...base, tls: true }, /tls must be an object .* got true/],
      [{ ...base, tls: { rootCerts: '-----BEGIN CERTIFICATE-----' } }, /tls.rootCerts must be a Buffer \(PEM\), got the string/],
      [{ ...base, stateStore: '/tmp/agent.state', stateKey: SecretKey.from(new Uint8Array(32), 'aead') }, /stateStore must be a StateStore .* got the string "\/tmp\/agent.state"/],
      [{ ...base, stateStore: memoryStateStore(), stateKey: new Uint8Array(32) }, /stateKey must be a 32-byte SecretKey .* got 32 bytes/],
      [{ ...base, sendTimeoutMs: '30000' }, /sendTimeoutMs must be an integer number of milliseconds .* got the string "30000"/],
      [{ ...base, sendTimeoutMs: Number.NaN }, /sendTimeoutMs .* got NaN/],
      [{ ...base, handshakeTimeoutMs: -5 }, /handshakeTimeoutMs .* got the number -5/],
      [{ ...base, resendIntervalMs: null }, /resendIntervalMs .* got null/],
      [{ ...base, authTimeoutMs: 0 }, /authTimeoutMs must be an integer number of milliseconds from 1 /],
      [{ ...base, keepaliveMs: 500 }, /keepaliveMs must be an integer number of milliseconds from 1000 .* got the number 500/],
      [{ ...base, maxUnacked: '10' }, /maxUnacked must be an integer of at least 1, got the string "10"/],
      [{ ...base, maxPendingSends: 0 }, /maxPendingSends must be an integer of at least 1, got the number 0/],
      [{ ...base, reconnect: true }, /reconnect must be false or an object .* got true/],
      [{ ...base, reconnect: { initialDelayMs: '10' } }, /reconnect.initialDelayMs .* got the string "10"/],
      [{ ...base, connectTimeoutMs: -1 }, /connectTimeoutMs .* got the number -1/],
      [{ ...base, onEvent: 'log' }, /onEvent must be a function, got the string "log"/],
      [{ ...base, acceptHandshake: true }, /acceptHandshake must be a function, got true/],
      [{ ...base, skew: 5 }, /skew must be an object, got the number 5/],
    ];
    for (const [options, message] of cases) {
      const error = await connect(options as ConnectOptions).catch((e: unknown) => e);
      expect(isClientError(error, 'malformed'), `${String(error)} for ${message}`).toBe(true);
      expect((error as Error).message).toMatch(message);
    }
    expect(gw.streams()).toBe(0);
    // The same options, well typed, connect.
    const agent = await connect(base);
    await agent.close();
    expect(gw.streams()).toBe(1);
  });
});
