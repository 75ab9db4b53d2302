// The LISTEN connection of an instance that went silent (a failover or a network cut without a reset: no error,
// no FIN). Review finding: nothing noticed it until the kernel gave up on the socket (TCP keepalive at its
// defaults: about 11 min); meanwhile the instance went on recording heartbeats on its pool connections, so the
// others kept forwarding items to it, and every forward was lost (its senders' outboxes resend, but to the same
// silent listener). Now the connection must answer a query every probe period or is made again (server.ts).
// Two real instances on PostgreSQL, the second one's database connections through a TCP relay that can cut the
// LISTEN connection alone.
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate } from '@parley/identity';
import pino from 'pino';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecureMessageSchema, create, type SecureMessage } from '@parley/proto';
import { envelopeSignedBytes } from '@parley/session';
import { Policy } from '../src/policy.js';
import { startGateway, type RunningGateway } from '../src/server.js';
import { rawConnect, within, type RawStream, type RegisteredAgent } from '@parley/test-support';

const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const REQUIRE_POSTGRES = process.env['CI'] === 'true' || process.env['CI'] === '1';
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
  it.runIf(DATABASE_URL === undefined && REQUIRE_POSTGRES)('needs DATABASE_URL under CI', () => {
    throw new Error('CI=true but DATABASE_URL is not set: this suite must run on PostgreSQL');
  });
  if (DATABASE_URL === undefined) return;
  const url = DATABASE_URL;
  const schema = `t_gw_listen_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
  let crypto: ParleyCrypto;
  let relay: Relay;
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
    planner = agent('planner-l', 'planner');
    worker = agent('worker-l', 'worker');
    relay = await pgRelay(new URL(url));
    const relayed = new URL(url);
    relayed.hostname = '127.0.0.1';
    relayed.port = String(relay.port);
    const logger = pino({ level: 'silent' });
    const policy = Policy.parse({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] });
    const common = { crypto, gatewayId: GATEWAY_ID, trustBundle, revocations, policy, logger, metrics: false as const, heartbeatMs: 200 };
    gw1 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair(), database: { url, schema } });
    gw2 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair(), database: { url: relayed.toString(), schema }, listenProbe: { everyMs: 200, timeoutMs: 500 } });
    await within(10_000, () => gw1.gateway.othersListening && gw2.gateway.othersListening, 'the instances see each other');
  }, 60_000);

  afterAll(async () => {
    await gw1?.close();
    await gw2?.close();
    await relay?.close();
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
  const deliveredTo = (stream: RawStream, e: SecureMessage): boolean =>
    stream.responses.some((r) => r.kind.case === 'delivery' && r.kind.value.item.case === 'envelope' && Buffer.from(r.kind.value.item.value.sessionId).equals(Buffer.from(e.sessionId)));

  it('is made again within its probe timeout, and items for agents on that instance reach them again', async () => {
    const w = await rawConnect(crypto, gw2.address, GATEWAY_ID, worker);
    const p = await rawConnect(crypto, gw1.address, GATEWAY_ID, planner);
    await within(5_000, () => gw1.gateway.instanceOf(worker.agentId) === gw2.instanceId, 'instance 1 heard where the worker is');
    const before = envelope();
    p.send({ case: 'envelope', value: before }, 1n);
    await within(5_000, () => deliveredTo(w, before), 'a forward before the cut');
    expect(relay.listens()).toBe(1);
    relay.cutListeners();
    await within(10_000, () => relay.listens() === 2, 'a new LISTEN connection');
    const after = envelope();
    p.send({ case: 'envelope', value: after }, 2n);
    await within(10_000, () => deliveredTo(w, after), 'an item for the worker after the LISTEN connection was made again');
    for (const s of [w, p]) s.close();
    await Promise.all([w.ended, p.ended]);
  }, 60_000);
});
