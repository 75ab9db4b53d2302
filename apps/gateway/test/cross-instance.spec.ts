// Cross-instance routing (PROTOCOL §10.8): Gateway instances on ONE PostgreSQL
// schema. An item for an agent connected to another instance is forwarded to
// it (a notification on its `parley_fwd_<instance id>` channel) and written
// there as a live item; an item stored by one instance for an agent connected
// to another is announced with `NOTIFY parley_mailbox, '<agent id>'`, and that
// instance (LISTENing) delivers it at once. PostgreSQL only: PGlite is one
// process, so this suite is skipped without DATABASE_URL (and fails under
// CI=true without it).
import pino from 'pino';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeliveryReceiptSchema, DeliveryStatus, SecureMessageSchema, create, toBinary, type SecureMessage } from '@parley/proto';
import type { ParleyCrypto } from '@parley/crypto-core';
import { encodeForward } from '../src/cluster.js';
import { startGateway, type RunningGateway } from '../src/server.js';
import { rawConnect, within, type RawStream, type RegisteredAgent } from '@parley/test-support';
import { DATABASE_URL, clusterWorld, dropSchema, requirePostgres, schemaName, verdict, type ClusterWorld } from './cluster-fixture.js';

const GATEWAY_ID = 'gw-cluster.test';

describe('cross-instance routing over LISTEN/NOTIFY', () => {
  requirePostgres();
  if (DATABASE_URL === undefined) return;
  const url = DATABASE_URL;
  const schema = schemaName('cluster');
  let world: ClusterWorld;
  let crypto: ParleyCrypto;
  let gw1: RunningGateway;
  let gw2: RunningGateway;
  let agentA: RegisteredAgent;
  let agentB: RegisteredAgent;
  let common: Parameters<typeof startGateway>[0];
  const logs: Record<string, unknown>[] = [];

  beforeAll(async () => {
    world = await clusterWorld(GATEWAY_ID);
    crypto = world.crypto;
    const agent = world.agent;
    agentA = agent('planner-a', 'planner');
    agentB = agent('worker-b', 'worker');
    const logger = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) });
    const auditKeys = [crypto.ed25519.generateKeyPair(), crypto.ed25519.generateKeyPair()];
    common = { ...world.common, logger, metrics: false as const, database: { url, schema } };
    // One audit chain per instance: neither needs to trust the other's key.
    gw1 = await startGateway({ ...common, auditKey: auditKeys[0]!, heartbeatMs: 200 });
    gw2 = await startGateway({ ...common, auditKey: auditKeys[1]!, heartbeatMs: 200 });
    await within(5_000, () => gw1.gateway.othersListening && gw2.gateway.othersListening, 'instances see each other');
  }, 60_000);

  /** An envelope signed by the planner (the gateway checks its signature, not its session). */
  const signedEnvelope = (_senderId: 'planner-a', recipientId: string, payloadBytes?: number): SecureMessage => world.envelope(agentA, recipientId, payloadBytes);

  afterAll(async () => {
    await gw1?.close();
    await gw2?.close();
    await dropSchema(url, schema);
  }, 60_000);

  /** The Deliveries of envelopes (by session id) or receipts written to a stream so far. */
  const deliveries = (stream: RawStream) => stream.responses.flatMap((r) => (r.kind.case === 'delivery' ? [r.kind.value] : []));
  const delivered = (stream: RawStream, e: SecureMessage) =>
    deliveries(stream).find((d) => d.item.case === 'envelope' && Buffer.from(d.item.value.sessionId).equals(Buffer.from(e.sessionId)));
  const mailboxRows = async (): Promise<number> => Number((await gw1.database.query<{ n: unknown }>('SELECT count(*) AS n FROM gateway_mailbox'))[0]!.n);
  const forwarded = async (gw: RunningGateway, direction: 'in' | 'out', result: string): Promise<number> =>
    (await gw.gateway.metrics.forwarded.get()).values.find((v) => v.labels['direction'] === direction && v.labels['result'] === result)?.value ?? 0;

  const forwardStatements = async (gw: RunningGateway): Promise<number> =>
    (await gw.gateway.metrics.batch.get()).values.find((v) => v.labels['kind'] === 'forward' && v.metricName?.endsWith('_count') === true)?.value ?? 0;

  it('forwards an item for an agent on the other instance to it: DELIVERED, written live there, no mailbox row; the receipt comes back the same way', async () => {
    const b = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
    const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
    expect(gw1.gateway.connectedAgents()).toEqual(['planner-a']);
    expect(gw2.gateway.connectedAgents()).toEqual(['worker-b']);
    await within(5_000, () => gw1.gateway.instanceOf('worker-b') === gw2.instanceId && gw2.gateway.instanceOf('planner-a') === gw1.instanceId, 'presence heard');
    const audited = [gw1.audit.size, gw2.audit.size];
    const sent = [await forwarded(gw1, 'out', 'sent'), await forwarded(gw2, 'out', 'sent')];
    const live = [await forwarded(gw1, 'in', 'live'), await forwarded(gw2, 'in', 'live')];
    const statements = [await forwardStatements(gw1), await forwardStatements(gw2)];
    const envelope = signedEnvelope('planner-a', 'worker-b');
    a.send({ case: 'envelope', value: envelope }, 7n);
    const accepted = await verdict(a, 7n);
    expect(accepted.case === 'accepted' && accepted.value.status).toBe(DeliveryStatus.DELIVERED);
    await within(2_000, () => delivered(b, envelope) !== undefined, 'delivery on gw2');
    expect(await mailboxRows()).toBe(0);
    // The receipt (the gateway checks its shape and that it answers what it relayed; its signature is the sender's to check).
    const receipt = create(DeliveryReceiptSchema, {
      version: 1,
      messageHash: accepted.case === 'accepted' ? accepted.value.itemHash : new Uint8Array(32),
      senderId: 'planner-a',
      recipientId: 'worker-b',
      receivedAtMs: BigInt(Date.now()),
      signature: crypto.randomBytes(64),
    });
    b.send({ case: 'receipt', value: receipt }, 8n, { ackDeliveryId: delivered(b, envelope)!.deliveryId });
    const answered = await verdict(b, 8n);
    expect(answered.case === 'accepted' && answered.value.status).toBe(DeliveryStatus.DELIVERED);
    await within(2_000, () => deliveries(a).some((d) => d.item.case === 'receipt'), 'receipt delivered on gw1');
    a.ack(deliveries(a).find((d) => d.item.case === 'receipt')!.deliveryId);
    expect(await mailboxRows()).toBe(0);
    expect([await forwarded(gw1, 'out', 'sent'), await forwarded(gw2, 'out', 'sent')]).toEqual([sent[0]! + 1, sent[1]! + 1]);
    expect([await forwarded(gw1, 'in', 'live'), await forwarded(gw2, 'in', 'live')]).toEqual([live[0]! + 1, live[1]! + 1]);
    // The envelope's forward went in its audit entry's statement; the receipt (no entry) through gw2's audit group
    // commit (a statement of notifications, as nothing else was being written): no forward statement on either.
    expect([await forwardStatements(gw1), await forwardStatements(gw2)]).toEqual([statements[0]!, statements[1]!]);
    // One audit entry, on the chain of the instance that accepted the envelope; none for the receipt.
    expect([gw1.audit.size, gw2.audit.size]).toEqual([audited[0]! + 1, audited[1]!]);
    a.close();
    b.close();
    await Promise.all([a.ended, b.ended]);
  }, 30_000);

  it('a forwarded item not acked within the ack timeout is spilled to the mailbox by the instance that wrote it, and redelivered from there', async () => {
    // gw3 holds the recipient with a short ack timeout; gw1 forwards to it.
    const gw3 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair(), heartbeatMs: 200, ackTimeoutMs: 300 });
    try {
      await within(5_000, () => gw1.gateway.othersListening && gw3.instanceId !== undefined, 'gw3 alive');
      const b = await rawConnect(crypto, gw3.address, GATEWAY_ID, agentB);
      const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
      await within(5_000, () => gw1.gateway.instanceOf('worker-b') === gw3.instanceId, 'presence heard');
      const envelope = signedEnvelope('planner-a', 'worker-b');
      a.send({ case: 'envelope', value: envelope }, 9n);
      expect((await verdict(a, 9n)).case).toBe('accepted');
      await within(2_000, () => delivered(b, envelope) !== undefined, 'delivery on gw3');
      // Not acked: spilled after 300 ms (one row), still held on the stream.
      await within(5_000, async () => (await mailboxRows()) === 1, 'spilled');
      b.close();
      await b.ended;
      // The next stream of the agent, on any instance, gets it from the mailbox.
      const b2 = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
      await within(5_000, () => delivered(b2, envelope) !== undefined, 'redelivered from the mailbox');
      b2.ack(delivered(b2, envelope)!.deliveryId);
      await within(5_000, async () => (await mailboxRows()) === 0, 'acked and deleted');
      a.close();
      b2.close();
      await Promise.all([a.ended, b2.ended]);
    } finally {
      await gw3.close();
    }
  }, 30_000);

  it('presence follows the stream: once it ends, items are stored (QUEUED) and delivered when the agent connects again', async () => {
    const b = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
    const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
    await within(5_000, () => gw1.gateway.instanceOf('worker-b') === gw2.instanceId, 'presence heard');
    b.close();
    await b.ended;
    await within(5_000, () => gw1.gateway.instanceOf('worker-b') === undefined, 'departure heard');
    const envelope = signedEnvelope('planner-a', 'worker-b');
    a.send({ case: 'envelope', value: envelope }, 10n);
    const answer = await verdict(a, 10n);
    expect(answer.case === 'accepted' && answer.value.status).toBe(DeliveryStatus.QUEUED);
    expect(await mailboxRows()).toBe(1);
    const b2 = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
    await within(5_000, () => delivered(b2, envelope) !== undefined, 'delivered from the mailbox');
    b2.ack(delivered(b2, envelope)!.deliveryId);
    await within(5_000, async () => (await mailboxRows()) === 0, 'acked and deleted');
    a.close();
    b2.close();
    await Promise.all([a.ended, b2.ended]);
  }, 30_000);

  it('an out-of-date announcement costs no item: one forwarded to an instance without the stream is stored there; an instance not seen alive gets none', async () => {
    const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      // worker-b is offline, but gw1 is told it is on gw2.
      await admin.query(`SELECT pg_notify('parley_presence', $1)`, [`worker-b ${gw2.instanceId}`]);
      await within(5_000, () => gw1.gateway.instanceOf('worker-b') === gw2.instanceId, 'stale presence heard');
      const stored = await forwarded(gw2, 'in', 'stored');
      const first = signedEnvelope('planner-a', 'worker-b');
      a.send({ case: 'envelope', value: first }, 11n);
      const answer = await verdict(a, 11n);
      expect(answer.case === 'accepted' && answer.value.status).toBe(DeliveryStatus.DELIVERED); // forwarded
      await within(5_000, async () => (await forwarded(gw2, 'in', 'stored')) === stored + 1 && (await mailboxRows()) === 1, 'stored by gw2');
      // Told it is on an instance that no heartbeat shows: not forwarded, stored at once.
      await admin.query(`SELECT pg_notify('parley_presence', 'worker-b g1_gone_instance')`);
      await within(5_000, () => gw1.gateway.instanceOf('worker-b') === undefined, 'unknown instance ignored');
      const second = signedEnvelope('planner-a', 'worker-b');
      a.send({ case: 'envelope', value: second }, 12n);
      const queued = await verdict(a, 12n);
      expect(queued.case === 'accepted' && queued.value.status).toBe(DeliveryStatus.QUEUED);
      expect(await mailboxRows()).toBe(2);
      const b = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
      await within(5_000, () => delivered(b, first) !== undefined && delivered(b, second) !== undefined, 'both delivered');
      b.ack(delivered(b, first)!.deliveryId, [delivered(b, second)!.deliveryId]);
      await within(5_000, async () => (await mailboxRows()) === 0, 'acked and deleted');
      b.close();
      await b.ended;
    } finally {
      await admin.end();
      a.close();
      await a.ended;
    }
  }, 30_000);

  it('a forward that does not decode is dropped and counted, and the instance goes on; an item too large for a notification crosses through the mailbox', async () => {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const dropped = await forwarded(gw2, 'in', 'dropped');
    await admin.query(`SELECT pg_notify($1, 'bm90IGEgZm9yd2FyZA==')`, [`parley_fwd_${gw2.instanceId}`]);
    await admin.end();
    await within(5_000, async () => (await forwarded(gw2, 'in', 'dropped')) === dropped + 1, 'dropped');
    const b = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
    const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
    await within(5_000, () => gw1.gateway.instanceOf('worker-b') === gw2.instanceId, 'presence heard');
    const large = signedEnvelope('planner-a', 'worker-b', 7_000);
    a.send({ case: 'envelope', value: large }, 13n);
    const answer = await verdict(a, 13n);
    expect(answer.case === 'accepted' && answer.value.status).toBe(DeliveryStatus.QUEUED);
    await within(2_000, () => delivered(b, large) !== undefined, 'delivered on gw2 (its NOTIFY wake-up)');
    b.ack(delivered(b, large)!.deliveryId);
    await within(5_000, async () => (await mailboxRows()) === 0, 'acked and deleted');
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
      for (const r of b.responses) if (r.kind.case === 'delivery') b.ack(r.kind.value.deliveryId);
      await within(5_000, async () => (await mailboxRows()) === 0, 'acked and deleted');
    } finally {
      await late.end();
      a.close();
      b.close();
      await Promise.all([a.ended, b.ended]);
    }
  }, 30_000);

  it('a forward whose handshake frame does not decode is dropped and counted, not a crash', async () => {
    const b = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
    const dropped = await forwarded(gw2, 'in', 'dropped');
    const bad = encodeForward(
      {
        recipientId: 'worker-b',
        item: undefined as never,
        itemHash: new Uint8Array(32),
        senderId: 'planner-a',
        senderSerial: new Uint8Array(16),
        senderValidUntilMs: Date.now() + 60_000,
        acceptedAtMs: Date.now(),
        size: 3,
      },
      { kind: 'handshake', bytes: new Uint8Array([0xff, 0xff, 0xff]) },
    )!;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query('SELECT pg_notify($1, $2)', [`parley_fwd_${gw2.instanceId}`, bad]);
    await admin.end();
    await within(5_000, async () => (await forwarded(gw2, 'in', 'dropped')) === dropped + 1, 'dropped');
    expect(deliveries(b).filter((d) => d.item.case === 'handshake')).toEqual([]);
    // Still serving: the next forward reaches the stream.
    const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
    await within(5_000, () => gw1.gateway.instanceOf('worker-b') === gw2.instanceId, 'presence heard');
    const envelope = signedEnvelope('planner-a', 'worker-b');
    a.send({ case: 'envelope', value: envelope }, 20n);
    await within(5_000, () => delivered(b, envelope) !== undefined, 'delivered');
    b.ack(delivered(b, envelope)!.deliveryId);
    a.close();
    b.close();
    await Promise.all([a.ended, b.ended]);
  }, 30_000);

  it('forwards that the holding instance cannot write at once are stored there within its mailbox quotas; beyond them refused and counted', async () => {
    // gw3 holds the recipient with one delivery in flight at most and a mailbox of 3 items per recipient.
    expect(await mailboxRows()).toBe(0);
    const gw3 = await startGateway({ ...common, auditKey: crypto.ed25519.generateKeyPair(), heartbeatMs: 200, maxInFlight: 1, mailboxQuota: { perRecipientItems: 3 } });
    try {
      const b = await rawConnect(crypto, gw3.address, GATEWAY_ID, agentB);
      const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
      await within(5_000, () => gw1.gateway.instanceOf('worker-b') === gw3.instanceId, 'presence heard');
      for (let i = 0; i < 6; i++) a.send({ case: 'envelope', value: signedEnvelope('planner-a', 'worker-b') }, BigInt(30 + i));
      for (let i = 0; i < 6; i++) expect((await verdict(a, BigInt(30 + i))).case).toBe('accepted');
      await within(5_000, async () => (await forwarded(gw3, 'in', 'live')) + (await forwarded(gw3, 'in', 'stored')) + (await forwarded(gw3, 'in', 'refused')) === 6, 'all six handled');
      expect(await forwarded(gw3, 'in', 'live')).toBe(1);
      expect(await forwarded(gw3, 'in', 'stored')).toBe(3);
      expect(await forwarded(gw3, 'in', 'refused')).toBe(2);
      expect(await mailboxRows()).toBe(3);
      // The recipient drains them as it acks.
      for (let n = 1; n <= 4; n++) {
        await within(5_000, () => deliveries(b).length >= n, `delivery ${n}`);
        b.ack(deliveries(b)[n - 1]!.deliveryId);
      }
      await within(5_000, async () => (await mailboxRows()) === 0, 'drained');
      a.close();
      b.close();
      await Promise.all([a.ended, b.ended]);
    } finally {
      await gw3.close();
    }
  }, 30_000);

  it('after its LISTEN connection is cut, an instance listens again on one connection: presence read again, each forward delivered once', async () => {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const listeners = async (gw: RunningGateway): Promise<number[]> =>
      (await admin.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE query LIKE $1`, [`%LISTEN parley_fwd_${gw.instanceId}%`])).rows.map((r) => r.pid);
    try {
      const before = await listeners(gw2);
      expect(before).toHaveLength(1);
      await admin.query('SELECT pg_terminate_backend($1)', [before[0]]);
      // Reconnected (one new connection), and seen alive again by gw1.
      await within(10_000, async () => {
        const now = await listeners(gw2);
        return now.length === 1 && now[0] !== before[0];
      }, 'gw2 listening again');
      const b = await rawConnect(crypto, gw2.address, GATEWAY_ID, agentB);
      const a = await rawConnect(crypto, gw1.address, GATEWAY_ID, agentA);
      await within(10_000, () => gw1.gateway.instanceOf('worker-b') === gw2.instanceId && gw2.gateway.instanceOf('planner-a') === gw1.instanceId, 'presence heard both ways');
      const envelope = signedEnvelope('planner-a', 'worker-b');
      a.send({ case: 'envelope', value: envelope }, 40n);
      const answer = await verdict(a, 40n);
      expect(answer.case === 'accepted' && answer.value.status).toBe(DeliveryStatus.DELIVERED);
      await within(5_000, () => delivered(b, envelope) !== undefined, 'delivered');
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(deliveries(b).filter((d) => d.item.case === 'envelope' && Buffer.from(d.item.value.sessionId).equals(Buffer.from(envelope.sessionId)))).toHaveLength(1);
      expect(await listeners(gw2)).toHaveLength(1);
      b.ack(delivered(b, envelope)!.deliveryId);
      a.close();
      b.close();
      await Promise.all([a.ended, b.ended]);
    } finally {
      await admin.end();
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
