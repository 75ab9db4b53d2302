// An agent that moved to another instance while its old stream here was still open (its connection here went
// silent: no frames, no FIN — a network cut, a load balancer that dropped the path). Review finding: an item
// for it accepted here was written to the old stream, spilled to the mailbox at its ack timeout — a row whose
// insert woke no other instance, since the agent was connected here then — and stayed there after the old
// stream ended, until its TTL, while the agent was connected and reading on the other instance. Now the end of
// a stream that held stored items wakes the other instances for its agent (§10.8), and the gateway's keepalive
// ends a silent stream within about 40 s (server.ts). Two real gateway instances on PostgreSQL, raw streams.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate } from '@parley/identity';
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
import pino from 'pino';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeliveryStatus, SecureMessageSchema, create, type ConnectResponse, type SecureMessage } from '@parley/proto';
import { envelopeSignedBytes } from '@parley/session';
import { Policy } from '../src/policy.js';
import { startGateway, type RunningGateway } from '../src/server.js';
import { rawConnect, within, type RawStream, type RegisteredAgent } from '@parley/test-support';

const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const REQUIRE_POSTGRES = process.env['CI'] === 'true' || process.env['CI'] === '1';
const GATEWAY_ID = 'gw-moved.test';

describe('an agent that moved to another instance while its old stream here stayed open', () => {
  it.runIf(DATABASE_URL === undefined && REQUIRE_POSTGRES)('needs DATABASE_URL under CI', () => {
    throw new Error('CI=true but DATABASE_URL is not set: this suite must run on PostgreSQL');
  });
  if (DATABASE_URL === undefined) return;
  const url = DATABASE_URL;
  const schema = `t_gw_moved_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
  let crypto: ParleyCrypto;
  let gw1: RunningGateway;
  let gw2: RunningGateway;
  let planner: RegisteredAgent;
  let worker: RegisteredAgent;

  beforeAll(async () => {
    crypto = await createCrypto();
    const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
    const revocations = new MemoryRevocationSet({ maxAgeMs: 600_000 });
    revocations.apply([], 0, Date.now());
    const agent = (agentId: string, agentType: string): RegisteredAgent => {
      const keyPair = crypto.ed25519.generateKeyPair();
      const now = Date.now();
      const certificate = issueCertificate(crypto, issuer, { agentId, identityPublicKey: keyPair.publicKey, agentType, capabilities: [], validFromMs: now - 60_000, validUntilMs: now + 86_400_000 });
      return { agentId, certificate, secretKey: keyPair.secretKey };
    };
    planner = agent('planner-m', 'planner');
    worker = agent('worker-m', 'worker');
    const logger = pino({ level: 'silent' });
    const policy = Policy.parse({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] });
    const common = { crypto, gatewayId: GATEWAY_ID, trustBundle, revocations, policy, logger, metrics: false as const, database: { url, schema } };
    gw1 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair(), heartbeatMs: 200, ackTimeoutMs: 300, keepalive: { timeMs: 500, timeoutMs: 500 } });
    gw2 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair(), heartbeatMs: 200, ackTimeoutMs: 300 });
    await within(10_000, () => gw1.gateway.othersListening && gw2.gateway.othersListening, 'the instances see each other');
  }, 60_000);

  afterAll(async () => {
    await gw1?.close();
    await gw2?.close();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  }, 60_000);

  function envelope(): SecureMessage {
    const e = create(SecureMessageSchema, {
      version: 1,
      senderId: planner.agentId,
      recipientId: worker.agentId,
      sessionId: crypto.randomBytes(16),
      nonce: 0n,
      timestampMs: BigInt(Date.now()),
      payloadCommitment: crypto.randomBytes(32),
      encryptedPayload: crypto.randomBytes(96),
      authTag: crypto.randomBytes(32),
    });
    e.signature = crypto.ed25519.sign(envelopeSignedBytes(crypto, e, e.encryptedPayload, e.authTag), planner.secretKey);
    return e;
  }
  async function verdict(stream: RawStream, requestId: bigint): Promise<ConnectResponse['kind']> {
    const find = () => stream.responses.find((r) => (r.kind.case === 'accepted' || r.kind.case === 'rejected') && r.kind.value.requestId === requestId);
    await within(5_000, () => find() !== undefined, `the verdict on request ${requestId}`);
    return find()!.kind;
  }
  const deliveredTo = (stream: RawStream, e: SecureMessage): boolean =>
    stream.responses.some((r) => r.kind.case === 'delivery' && r.kind.value.item.case === 'envelope' && Buffer.from(r.kind.value.item.value.sessionId).equals(Buffer.from(e.sessionId)));

  it('an item spilled from the old stream reaches the agent on the other instance once that stream ends', async () => {
    const p = await rawConnect(crypto, gw1.address, GATEWAY_ID, planner);
    const old = await rawConnect(crypto, gw1.address, GATEWAY_ID, worker);
    await within(5_000, () => gw2.gateway.instanceOf(worker.agentId) === gw1.instanceId, 'instance 2 heard where the worker is');
    old.stopReading(); // its path went silent: the stream stays open on instance 1
    const moved = await rawConnect(crypto, gw2.address, GATEWAY_ID, worker); // it reconnected to instance 2
    await within(5_000, () => gw1.gateway.instanceOf(worker.agentId) === gw2.instanceId, 'instance 1 heard the worker moved');
    const e = envelope();
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
      const silent = await rawConnect(crypto, `127.0.0.1:${port}`, GATEWAY_ID, worker);
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
