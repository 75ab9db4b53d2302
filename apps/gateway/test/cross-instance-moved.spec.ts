// An agent that moved to another instance while its old stream here was still open (its connection here went
// silent: no frames, no FIN — a network cut, a load balancer that dropped the path). Review finding: an item
// for it accepted here was written to the old stream, spilled to the mailbox at its ack timeout — a row whose
// insert woke no other instance, since the agent was connected here then — and stayed there after the old
// stream ended, until its TTL, while the agent was connected and reading on the other instance. Now the end of
// a stream that held stored items wakes the other instances for its agent (§10.8), and the gateway's keepalive
// ends a silent stream within about 40 s (server.ts). Two real gateway instances on PostgreSQL, raw streams.
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeliveryStatus } from '@parley/proto';
import { startGateway, type RunningGateway } from '../src/server.js';
import { rawConnect, within, type RegisteredAgent } from '@parley/test-support';
import { DATABASE_URL, clusterWorld, deliveredTo, dropSchema, requirePostgres, schemaName, verdict, type ClusterWorld } from './cluster-fixture.js';

const GATEWAY_ID = 'gw-moved.test';

describe('an agent that moved to another instance while its old stream here stayed open', () => {
  requirePostgres();
  if (DATABASE_URL === undefined) return;
  const url = DATABASE_URL;
  const schema = schemaName('moved');
  let world: ClusterWorld;
  let gw1: RunningGateway;
  let gw2: RunningGateway;
  let planner: RegisteredAgent;
  let worker: RegisteredAgent;

  beforeAll(async () => {
    world = await clusterWorld(GATEWAY_ID);
    planner = world.agent('planner-m', 'planner');
    worker = world.agent('worker-m', 'worker');
    const { crypto } = world;
    const common = { ...world.common, logger: pino({ level: 'silent' }), metrics: false as const, database: { url, schema }, heartbeatMs: 200, ackTimeoutMs: 300 };
    gw1 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair(), keepalive: { timeMs: 500, timeoutMs: 500 } });
    gw2 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair() });
    await within(10_000, () => gw1.gateway.othersListening && gw2.gateway.othersListening, 'the instances see each other');
  }, 60_000);

  afterAll(async () => {
    await gw1?.close();
    await gw2?.close();
    await dropSchema(url, schema);
  }, 60_000);

  it('an item spilled from the old stream reaches the agent on the other instance once that stream ends', async () => {
    const { crypto } = world;
    const p = await rawConnect(crypto, gw1.address, GATEWAY_ID, planner);
    const old = await rawConnect(crypto, gw1.address, GATEWAY_ID, worker);
    await within(5_000, () => gw2.gateway.instanceOf(worker.agentId) === gw1.instanceId, 'instance 2 heard where the worker is');
    old.stopReading(); // its path went silent: the stream stays open on instance 1
    const moved = await rawConnect(crypto, gw2.address, GATEWAY_ID, worker); // it reconnected to instance 2
    await within(5_000, () => gw1.gateway.instanceOf(worker.agentId) === gw2.instanceId, 'instance 1 heard the worker moved');
    const e = world.envelope(planner, worker.agentId);
    p.send({ case: 'envelope', value: e }, 1n);
    const v = await verdict(p, 1n);
    // Instance 1 still holds a stream for the worker: written to it, answered DELIVERED, spilled at the ack timeout.
    expect(v.case === 'accepted' ? DeliveryStatus[v.value.status] : v.case).toBe('DELIVERED');
    await within(5_000, async () => Number((await gw1.database.query<{ n: unknown }>('SELECT count(*) AS n FROM gateway_mailbox'))[0]!.n) === 1, 'the spilled row');
    expect(deliveredTo(moved, e)).toBe(false);
    old.close(); // the old stream ends (as the keepalive ends a silent one)
    await within(10_000, () => deliveredTo(moved, e), 'the item delivered on instance 2 after the old stream ended');
    for (const s of [p, moved]) s.close();
    await Promise.all([p.ended, moved.ended]);
  }, 60_000);

  it('a stream whose connection went silent (no answer to the keepalive ping) ends, and its agent leaves', async () => {
    // A TCP relay to instance 1 that can be cut without closing anything: from then on nothing passes either way,
    // as on a path a network cut or a load balancer dropped.
    const sockets: Socket[] = [];
    let cut = false;
    const relay = createServer((down) => {
      const up = tcpConnect(Number(gw1.address.split(':').pop()), '127.0.0.1');
      sockets.push(down, up);
      down.on('data', (b: Buffer) => void (cut || up.write(b)));
      up.on('data', (b: Buffer) => void (cut || down.write(b)));
      for (const s of [down, up]) s.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    try {
      const port = (relay.address() as { port: number }).port;
      const silent = await rawConnect(world.crypto, `127.0.0.1:${port}`, GATEWAY_ID, worker);
      await within(5_000, () => gw1.gateway.connectedAgents().includes(worker.agentId), 'the worker connected through the relay');
      cut = true;
      // Pinged after 500 ms idle, dropped 500 ms later without an answer (the defaults: 30 s and 10 s).
      await within(10_000, () => !gw1.gateway.connectedAgents().includes(worker.agentId), 'the silent stream ended on instance 1');
      silent.close();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => relay.close(resolve));
    }
  }, 60_000);
});
