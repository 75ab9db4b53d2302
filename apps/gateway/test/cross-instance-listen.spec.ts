// The LISTEN connection of an instance that went silent (a failover or a network cut without a reset: no error,
// no FIN). Review finding: nothing noticed it until the kernel gave up on the socket (TCP keepalive at its
// defaults: about 11 min); meanwhile the instance went on recording heartbeats on its pool connections, so the
// others kept forwarding items to it, and every forward was lost (its senders' outboxes resend, but to the same
// silent listener). Now the connection must answer a query every probe period or is made again (server.ts).
// Two real instances on PostgreSQL, the second one's database connections through a TCP relay that can cut the
// LISTEN connection alone.
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../src/server.js';
import { rawConnect, within, type RegisteredAgent } from '@parley/test-support';
import { DATABASE_URL, clusterWorld, deliveredTo, dropSchema, requirePostgres, schemaName, type ClusterWorld } from './cluster-fixture.js';

const GATEWAY_ID = 'gw-listen.test';

/** A TCP relay to PostgreSQL that knows which of its connections LISTENs, and can cut those (nothing passes, nothing closes). */
interface Relay {
  readonly port: number;
  /** LISTEN connections seen so far. */
  listens(): number;
  cutListeners(): void;
  close(): Promise<void>;
}

async function pgRelay(target: URL): Promise<Relay> {
  const sockets: Socket[] = [];
  const pairs: { listen: boolean; cut: boolean }[] = [];
  const server = createServer((down) => {
    const up = tcpConnect(Number(target.port || 5432), target.hostname);
    const pair = { listen: false, cut: false };
    pairs.push(pair);
    sockets.push(down, up);
    down.on('data', (b: Buffer) => {
      if (!pair.listen && b.includes('LISTEN parley_mailbox')) pair.listen = true;
      if (!pair.cut) up.write(b);
    });
    up.on('data', (b: Buffer) => void (pair.cut || down.write(b)));
    for (const s of [down, up]) s.on('error', () => undefined);
    down.on('close', () => up.destroy());
    up.on('close', () => down.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    listens: () => pairs.filter((p) => p.listen).length,
    cutListeners: () => {
      for (const p of pairs) if (p.listen) p.cut = true;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('a LISTEN connection that went silent', () => {
  requirePostgres();
  if (DATABASE_URL === undefined) return;
  const url = DATABASE_URL;
  const schema = schemaName('listen');
  let world: ClusterWorld;
  let relay: Relay;
  let gw1: RunningGateway;
  let gw2: RunningGateway;
  let planner: RegisteredAgent;
  let worker: RegisteredAgent;

  beforeAll(async () => {
    world = await clusterWorld(GATEWAY_ID);
    planner = world.agent('planner-l', 'planner');
    worker = world.agent('worker-l', 'worker');
    relay = await pgRelay(new URL(url));
    const relayed = new URL(url);
    relayed.hostname = '127.0.0.1';
    relayed.port = String(relay.port);
    const { crypto } = world;
    const common = { ...world.common, logger: pino({ level: 'silent' }), metrics: false as const, heartbeatMs: 200 };
    gw1 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair(), database: { url, schema } });
    gw2 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair(), database: { url: relayed.toString(), schema }, listenProbe: { everyMs: 200, timeoutMs: 500 } });
    await within(10_000, () => gw1.gateway.othersListening && gw2.gateway.othersListening, 'the instances see each other');
  }, 60_000);

  afterAll(async () => {
    await gw1?.close();
    await gw2?.close();
    await relay?.close();
    await dropSchema(url, schema);
  }, 60_000);

  it('is made again within its probe timeout, and items for agents on that instance reach them again', async () => {
    const { crypto } = world;
    const w = await rawConnect(crypto, gw2.address, GATEWAY_ID, worker);
    const p = await rawConnect(crypto, gw1.address, GATEWAY_ID, planner);
    await within(5_000, () => gw1.gateway.instanceOf(worker.agentId) === gw2.instanceId, 'instance 1 heard where the worker is');
    const before = world.envelope(planner, worker.agentId);
    p.send({ case: 'envelope', value: before }, 1n);
    await within(5_000, () => deliveredTo(w, before), 'a forward before the cut');
    expect(relay.listens()).toBe(1);
    relay.cutListeners();
    await within(10_000, () => relay.listens() === 2, 'a new LISTEN connection');
    const after = world.envelope(planner, worker.agentId);
    p.send({ case: 'envelope', value: after }, 2n);
    await within(10_000, () => deliveredTo(w, after), 'an item for the worker after the LISTEN connection was made again');
    for (const s of [w, p]) s.close();
    await Promise.all([w.ended, p.ended]);
  }, 60_000);
});
