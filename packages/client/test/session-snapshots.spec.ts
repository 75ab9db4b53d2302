// A session restored after a crash must carry on, however many epochs it went through since it was
// established (docs/PROTOCOL.md §7, §13): the journal keeps each session's snapshot close to its live state
// (session-snapshots.ts). Two real agents (`connect`, real file state stores) talk through a stand-in gateway
// on loopback that relays and keeps unacknowledged items in per-agent mailboxes, as a gateway does; a crash
// is a copy of the agent's state file taken while it runs, which the restarted agent loads.
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ParleyCrypto, SecretKey } from '@parley/crypto-core';
import type { MemoryRevocationSet, TrustBundle } from '@parley/identity';
import { AgentGatewayService, DeliveryStatus, MessageType, type ConnectRequest, type ConnectResponseSchema, type Delivery, type MessageInitShape } from '@parley/proto';
import { addService, type ServerDuplex } from '@parley/rpc';
import { serveOnLoopback, type LoopbackServer } from '@parley/test-support';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Journal, connect, fileStateStore, isClientError, parseRecords, replay, type Agent, type JournalRecord } from '../src/index.js';
import { snapshotStep } from '../src/session-snapshots.js';
import { testWorld, type TestAgent } from './world.js';

const GATEWAY_ID = 'gw-snapshots.test';

let crypto: ParleyCrypto;
let trustBundle: TrustBundle;
let revocations: MemoryRevocationSet;
let alice: TestAgent;
let bob: TestAgent;
let dir: string;

beforeAll(async () => {
  const world = await testWorld();
  ({ crypto, trustBundle, revocations } = world);
  alice = world.agent('alice');
  bob = world.agent('bob');
  dir = mkdtempSync(join(tmpdir(), 'parley-session-snapshots-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Item = Delivery['item'];
type Response = MessageInitShape<typeof ConnectResponseSchema>;

/**
 * A stand-in gateway: authenticates nobody (the agents' code is under test, not the gateway's), relays each
 * item to its addressee's stream and keeps it in the addressee's mailbox until acked; a new stream gets the
 * whole mailbox again (at-least-once, §10.3).
 */
async function relay(): Promise<LoopbackServer> {
  const mailboxes = new Map<string, Set<{ item: Item }>>();
  const streams = new Map<string, { deliver: (entry: { item: Item }) => void }>();
  const mailbox = (agentId: string): Set<{ item: Item }> => {
    let box = mailboxes.get(agentId);
    if (box === undefined) mailboxes.set(agentId, (box = new Set()));
    return box;
  };
  return serveOnLoopback((server) =>
    addService(server, AgentGatewayService, {
      connect(call: ServerDuplex<ConnectRequest, Response>) {
        let agentId = '';
        let nextId = 1n;
        const inFlight = new Map<bigint, { item: Item }>();
        const stream = {
          deliver: (entry: { item: Item }) => {
            const deliveryId = nextId++;
            inFlight.set(deliveryId, entry);
            call.push({ kind: { case: 'delivery', value: { deliveryId, acceptedAtMs: BigInt(Date.now()), item: entry.item } } });
          },
        };
        const ack = (id: bigint): void => {
          const entry = inFlight.get(id);
          inFlight.delete(id);
          if (entry !== undefined) mailbox(agentId).delete(entry);
        };
        const ended = (): void => {
          if (streams.get(agentId) === stream) streams.delete(agentId);
        };
        call.listen({
          message(request: ConnectRequest) {
            const kind = request.kind;
            if (kind.case === 'hello') {
              agentId = kind.value.certificate?.agentId ?? '';
              call.push({ kind: { case: 'challenge', value: { gatewayId: GATEWAY_ID, nonce: crypto.randomBytes(32), serverTimeMs: BigInt(Date.now()) } } });
            } else if (kind.case === 'auth') {
              call.push({ kind: { case: 'welcome', value: { agentId, mailboxDepth: BigInt(mailbox(agentId).size), maxFrameBytes: 4 << 20, outboundAcks: true } } });
              streams.set(agentId, stream);
              for (const entry of mailbox(agentId)) stream.deliver(entry);
            } else if (kind.case === 'ack') {
              for (const id of [kind.value.deliveryId, ...kind.value.moreDeliveryIds]) ack(id);
            } else if (kind.case === 'send') {
              const out = kind.value;
              if (out.ackDeliveryId !== 0n) ack(out.ackDeliveryId);
              const item = out.item as Item;
              const to =
                item.case === 'handshake' || item.case === 'envelope' ? item.value.recipientId : item.case === 'receipt' || item.case === 'sessionReject' ? item.value.senderId : '';
              const entry = { item };
              mailbox(to).add(entry);
              streams.get(to)?.deliver(entry);
              if (!out.quiet) call.push({ kind: { case: 'accepted', value: { requestId: out.requestId, itemHash: new Uint8Array(32), status: DeliveryStatus.QUEUED } } });
            }
          },
          end() {
            ended();
            call.end();
          },
          error() {
            ended();
          },
          finished() {
            ended();
          },
        });
      },
      send() {
        throw new Error('not used');
      },
    } as never),
  );
}

/** A running agent and what its application received (each message acked as it comes). */
interface Running {
  readonly agent: Agent;
  readonly received: unknown[];
  /** Resolves once the application has received `content`. */
  receivedNow(content: unknown, timeoutMs: number): Promise<boolean>;
}

async function start(identity: TestAgent, address: string, statePath: string, stateKey: SecretKey): Promise<Running> {
  const agent = await connect({
    gateway: address,
    expectedGatewayId: GATEWAY_ID,
    identity,
    trustBundle,
    revocations,
    crypto,
    stateStore: fileStateStore(statePath),
    stateKey,
    rekeyThreshold: 1, // every message its own epoch: valid (§5.1), and the fastest way past 4096 epochs
    reconnect: { initialDelayMs: 10, maxDelayMs: 100 },
  });
  const received: unknown[] = [];
  const waiters = new Set<() => void>();
  void (async () => {
    try {
      for await (const m of agent.messages()) {
        received.push(m.content);
        await m.ack();
        for (const w of waiters) w();
      }
    } catch {
      // closed
    }
  })();
  const receivedNow = async (content: unknown, timeoutMs: number): Promise<boolean> => {
    const has = (): boolean => received.some((c) => JSON.stringify(c) === JSON.stringify(content));
    const deadline = Date.now() + timeoutMs;
    while (!has() && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        waiters.add(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      waiters.clear();
    }
    return has();
  };
  return { agent, received, receivedNow };
}

/** How a send ended: `delivered` (verified receipt) or the ClientError code. */
const outcome = (p: Promise<unknown>): Promise<string> => p.then(
  () => 'delivered',
  (e: unknown) => (isClientError(e) ? e.code : String(e)),
);

/** The journal records in a state file, read as it is: its agent runs (and holds the file's lock). */
const records = async (path: string, stateKey: SecretKey): Promise<JournalRecord[]> =>
  new Journal(crypto, stateKey, {
    load: () => Promise.resolve(parseRecords(readFileSync(path), 4).records), // after the "PAJ1" header
    append: () => Promise.reject(new Error('read only')),
    rewrite: () => Promise.reject(new Error('read only')),
    close: () => Promise.resolve(),
  }).load();

describe('session snapshots across a crash', () => {
  it('threshold 1, 4200 messages without a compaction, then a crash of each side: a new message each way reaches the application', async () => {
    const MESSAGES = 4200; // more than 4096 epochs (MAX_EPOCH_SKIP, §7) past the session's first snapshot
    const server = await relay();
    const aliceKey = crypto.randomKey('aead');
    const bobKey = crypto.randomKey('aead');
    const alicePath = join(dir, 'alice.state');
    const bobPath = join(dir, 'bob.state');
    const alice1 = await start(alice, server.address, alicePath, aliceKey);
    const bob1 = await start(bob, server.address, bobPath, bobKey);
    const running = new Set<Agent>([alice1.agent, bob1.agent]);
    try {
      for (let i = 0; i < MESSAGES; i += 300) {
        const batch = [];
        for (let n = i; n < Math.min(i + 300, MESSAGES); n++) batch.push(alice1.agent.send('bob', MessageType.STATUS_UPDATE, { n }, { timeoutMs: 60_000 }));
        await Promise.all(batch);
      }
      expect(bob1.received).toHaveLength(MESSAGES);

      // Far fewer records than a compaction needs (20 000): what a restart finds is what was appended. Its
      // session was snapshotted again as it went, about once per 256 epochs — not once per message.
      const step = snapshotStep(1);
      for (const path of [alicePath, bobPath]) {
        const journal = await records(path, path === alicePath ? aliceKey : bobKey);
        expect(journal.length).toBeLessThan(20_000);
        const snapshots = journal.filter((r) => r.t === 'session').length;
        expect.soft(snapshots).toBeGreaterThanOrEqual(Math.floor(MESSAGES / step) - 1);
        expect.soft(snapshots).toBeLessThanOrEqual(Math.ceil(MESSAGES / step) + 2);
      }

      // Bob crashes (his state file as it is now) and restarts from it; Alice carries on.
      copyFileSync(bobPath, `${bobPath}.crash`);
      running.delete(bob1.agent);
      await bob1.agent.close();
      const bob2 = await start(bob, server.address, `${bobPath}.crash`, bobKey);
      running.add(bob2.agent);
      expect.soft(await outcome(alice1.agent.send('bob', MessageType.STATUS_UPDATE, { after: 'bob restarted' }, { timeoutMs: 5_000 }))).toBe('delivered');
      expect.soft(await bob2.receivedNow({ after: 'bob restarted' }, 1_000)).toBe(true);

      // Alice crashes and restarts from hers: she seals at her reserved mark, Bob opens it; and back.
      copyFileSync(alicePath, `${alicePath}.crash`);
      running.delete(alice1.agent);
      await alice1.agent.close();
      const alice2 = await start(alice, server.address, `${alicePath}.crash`, aliceKey);
      running.add(alice2.agent);
      expect.soft(await outcome(alice2.agent.send('bob', MessageType.STATUS_UPDATE, { after: 'alice restarted' }, { timeoutMs: 5_000 }))).toBe('delivered');
      expect.soft(await bob2.receivedNow({ after: 'alice restarted' }, 1_000)).toBe(true);
      expect.soft(await outcome(bob2.agent.send('alice', MessageType.STATUS_UPDATE, { reply: 'both restarted' }, { timeoutMs: 5_000 }))).toBe('delivered');
      expect.soft(await alice2.receivedNow({ reply: 'both restarted' }, 1_000)).toBe(true);
      // Nothing the application took before the crash came again.
      expect(bob2.received.filter((c) => typeof (c as { n?: unknown }).n === 'number')).toEqual([]);
    } finally {
      for (const agent of running) await agent.close();
      server.close();
    }
  }, 180_000);
});

describe('journal replay of session snapshots', () => {
  it('an older snapshot never replaces a newer one, whatever the order of the records; a reservation is kept either way', () => {
    const state = replay([
      { t: 'session', id: 's', sealed: 'first', ep: 10 },
      { t: 'reserve', id: 's', upTo: 512 },
      { t: 'session', id: 's', sealed: 'newest', ep: 10 }, // as new as the one held: the later one stands
      { t: 'session', id: 's', sealed: 'old', ep: 4 },
    ]);
    expect(state.sessions.get('s')).toEqual({ sealed: 'newest', reservedUpTo: 512 });
    // Records without `ep` (written before it existed) replace as they always did; after a `closed`, anything goes.
    expect(replay([{ t: 'session', id: 's', sealed: 'a', ep: 9 }, { t: 'session', id: 's', sealed: 'b' }]).sessions.get('s')?.sealed).toBe('b');
    expect(replay([{ t: 'session', id: 's', sealed: 'a', ep: 9 }, { t: 'closed', id: 's' }, { t: 'session', id: 's', sealed: 'c', ep: 1 }]).sessions.get('s')?.sealed).toBe('c');
  });
});
