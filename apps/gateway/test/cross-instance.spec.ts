// Cross-instance routing (PROTOCOL §10.8): two Gateway instances on ONE
// PostgreSQL schema. An item stored by instance 1 for an agent connected to
// instance 2 is announced with `NOTIFY parley_mailbox, '<agent id>'`, and
// instance 2 (LISTENing) delivers it at once. PostgreSQL only: PGlite is one
// process, so this suite is skipped without DATABASE_URL (and fails under
// CI=true without it).
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate } from '@parley/identity';
import pino from 'pino';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecureMessageSchema, create, toBinary, type SecureMessage } from '@parley/proto';
import { envelopeSignedBytes } from '@parley/session';
import { Policy } from '../src/policy.js';
import { startGateway, type RunningGateway } from '../src/server.js';
import { rawConnect, within, type RegisteredAgent } from '@parley/test-support';

const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const REQUIRE_POSTGRES = process.env['CI'] === 'true' || process.env['CI'] === '1';
const GATEWAY_ID = 'gw-cluster.test';

describe('cross-instance routing over LISTEN/NOTIFY', () => {
  it.runIf(DATABASE_URL === undefined && REQUIRE_POSTGRES)('needs DATABASE_URL under CI', () => {
    throw new Error('CI=true but DATABASE_URL is not set: the cross-instance suite must run on PostgreSQL');
  });
  if (DATABASE_URL === undefined) return;
  const url = DATABASE_URL;
  const schema = `t_gw_cluster_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
  let crypto: ParleyCrypto;
  let gw1: RunningGateway;
  let gw2: RunningGateway;
  let agentA: RegisteredAgent;
  let agentB: RegisteredAgent;
  const logs: Record<string, unknown>[] = [];

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
    agentA = agent('planner-a', 'planner');
    agentB = agent('worker-b', 'worker');
    const logger = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) });
    const policy = Policy.parse({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] });
    const auditKeys = [crypto.ed25519.generateKeyPair(), crypto.ed25519.generateKeyPair()];
    const common = { crypto, gatewayId: GATEWAY_ID, trustBundle, revocations, policy, logger, metrics: false as const, database: { url, schema } };
    // One audit chain per instance: neither needs to trust the other's key.
    gw1 = await startGateway({ ...common, auditKey: auditKeys[0]!, heartbeatMs: 200 });
    gw2 = await startGateway({ ...common, auditKey: auditKeys[1]!, heartbeatMs: 200 });
    await within(5_000, () => gw1.gateway.othersListening && gw2.gateway.othersListening, 'instances see each other');
  }, 60_000);

  /** A signed envelope (the gateway checks its signature, not its session). */
  function signedEnvelope(senderId: string, recipientId: string): SecureMessage {
    const envelope = create(SecureMessageSchema, {
      version: 1,
      senderId,
      recipientId,
      sessionId: crypto.randomBytes(16),
      nonce: 0n,
      timestampMs: BigInt(Date.now()),
      payloadCommitment: crypto.randomBytes(32),
      encryptedPayload: crypto.randomBytes(96),
      authTag: crypto.randomBytes(32),
    });
    envelope.signature = crypto.ed25519.sign(envelopeSignedBytes(crypto, envelope, envelope.encryptedPayload, envelope.authTag), agentA.secretKey);
    return envelope;
  }

  afterAll(async () => {
    await gw1?.close();
    await gw2?.close();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  }, 60_000);

  it('delivers an item stored by one instance to the recipient connected to the other, at once', async () => {
    const b = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
    const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
    expect(gw1.gateway.connectedAgents()).toEqual(['planner-a']);
    expect(gw2.gateway.connectedAgents()).toEqual(['worker-b']);
    // A signed envelope from planner-a to worker-b, routed by gw1 (the gateway checks its signature, not its session).
    a.send({ case: 'envelope', value: signedEnvelope('planner-a', 'worker-b') }, 7n);
    await within(5_000, () => a.responses.some((r) => r.kind.case === 'accepted' || r.kind.case === 'rejected'), 'Accepted from gw1');
    const verdict = a.responses.find((r) => r.kind.case === 'accepted' || r.kind.case === 'rejected')!;
    expect(verdict.kind.case).toBe('accepted');
    // Far below the reconnect path: delivered by the NOTIFY wake-up.
    await within(2_000, () => b.responses.some((r) => r.kind.case === 'delivery'), 'delivery on gw2');
    const delivery = b.responses.find((r) => r.kind.case === 'delivery')!;
    expect(delivery.kind.case === 'delivery' && delivery.kind.value.item.case).toBe('envelope');
    // Each instance audited on its own chain: gw1 routed the envelope.
    // (NOTIFY: counted in the next test.)
    expect(gw1.audit.size).toBe(1);
    expect(gw2.audit.size).toBe(0);
    a.close();
    b.close();
    await Promise.all([a.ended, b.ended]);
  }, 30_000);

  it('a row whose transaction took its id first and committed last is still delivered by a drain that read past it', async () => {
    // The drain reads pages after the highest row id it has read (Link.cursor). Row ids are taken at
    // INSERT, not at COMMIT: this row sits below the cursor once it commits, and only the drain's read
    // from the start before it declares the backlog empty finds it.
    const b = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
    const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
    const late = new pg.Client({ connectionString: url });
    await late.connect();
    try {
      const early = signedEnvelope('planner-a', 'worker-b');
      const next = signedEnvelope('planner-a', 'worker-b');
      const delivered = (e: SecureMessage): boolean =>
        b.responses.some((r) => r.kind.case === 'delivery' && r.kind.value.item.case === 'envelope' && Buffer.from(r.kind.value.item.value.sessionId).equals(Buffer.from(e.sessionId)));
      await late.query('BEGIN');
      const [{ id }] = (
        await late.query<{ id: string }>(
          `INSERT INTO ${schema}.gateway_mailbox (recipient_id, item_kind, item, item_hash, sender_id, sender_serial, sender_valid_until_ms, accepted_at_ms, expires_at_ms)
           VALUES ('worker-b', 2, $1, $2, 'planner-a', $3, $4, $5, $6) RETURNING delivery_id AS id`,
          [toBinary(SecureMessageSchema, early), crypto.randomBytes(32), agentA.certificate.serial, Date.now() + 3_600_000, Date.now(), Date.now() + 3_600_000],
        )
      ).rows as [{ id: string }];
      // A later row, committed first: gw1 stores it and wakes gw2, whose drain reads it (its cursor passes `id`).
      a.send({ case: 'envelope', value: next }, 300n);
      await within(5_000, () => delivered(next), 'the later row delivered on gw2');
      expect(delivered(early)).toBe(false);
      await late.query(`SELECT pg_notify('parley_mailbox', 'worker-b')`);
      await late.query('COMMIT');
      await within(5_000, () => delivered(early), `row ${id}, committed last, delivered on gw2`);
    } finally {
      await late.end();
      a.close();
      b.close();
      await Promise.all([a.ended, b.ended]);
    }
  }, 30_000);

  it('NOTIFY only while another instance is alive, and once per recipient per batch, not per item', async () => {
    const listener = new pg.Client({ connectionString: url });
    await listener.connect();
    const heard: string[] = [];
    listener.on('notification', (n) => void heard.push(n.payload ?? ''));
    await listener.query('LISTEN parley_mailbox');
    const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
    const b = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB); // seen, then offline
    b.close();
    await b.ended;
    await within(2_000, () => !gw2.gateway.connectedAgents().includes('worker-b'), 'worker-b offline');
    // 20 items pipelined for the offline worker: far fewer notifications than items.
    for (let i = 0; i < 20; i++) a.send({ case: 'envelope', value: signedEnvelope('planner-a', 'worker-b') }, BigInt(100 + i));
    await within(5_000, () => a.responses.filter((r) => r.kind.case === 'accepted').length >= 20, '20 accepted');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const withTwo = heard.filter((h) => h === 'worker-b').length;
    expect(withTwo).toBeGreaterThanOrEqual(1);
    expect(withTwo).toBeLessThan(20);
    // gw2 gone: gw1 is alone and stops notifying (after its heartbeat notices).
    await gw2.close();
    await within(5_000, () => !gw1.gateway.othersListening, 'gw1 alone');
    heard.length = 0;
    a.send({ case: 'envelope', value: signedEnvelope('planner-a', 'worker-b') }, 200n);
    await within(5_000, () => a.responses.filter((r) => r.kind.case === 'accepted').length >= 21, 'accepted alone');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(heard).toEqual([]);
    a.close();
    await a.ended;
    await listener.end();
  }, 30_000);
});
