// The durable mailbox, the audit trail and the metrics, end to end over real
// gRPC on 127.0.0.1: on PGlite (a data directory, so a restarted gateway
// reopens it) and, when DATABASE_URL is set, on PostgreSQL in a fresh schema
// per run of this file (dropped afterwards). Under CI=true a missing
// DATABASE_URL fails instead of skipping the PostgreSQL suite.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyChain } from '@parley/audit';
import type { Ed25519KeyPair } from '@parley/crypto-core';
import { DeliveryStatus, MessageType, type AuditMessage, type Delivery, type HandshakeFrame } from '@parley/proto';
import { InitiatorHandshake, SessionManager, isSessionError, type OpenedMessage } from '@parley/session';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { GatewayConnection } from '@parley/client';
import type { DatabaseOptions } from '@parley/db';
import { handshakeFrameDigest } from '@parley/protocol';
import type { RunningGateway, StartGatewayOptions } from '../../src/server.js';
import { waitFor } from '@parley/test-support';
import { GATEWAY_ID, createWorld, type Agent, type World } from '../fixtures.js';

const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const REQUIRE_POSTGRES = process.env['CI'] === 'true' || process.env['CI'] === '1';
const BACKENDS: readonly ('pglite' | 'postgres')[] = DATABASE_URL === undefined ? ['pglite'] : ['pglite', 'postgres'];

it('runs the PostgreSQL suite in CI (DATABASE_URL must be set)', () => {
  if (REQUIRE_POSTGRES) expect(DATABASE_URL, 'CI=true requires DATABASE_URL: the PostgreSQL suite must not be skipped').toBeDefined();
});

/** An agent whose SessionManager outlives its connections (reconnects keep the session). */
interface Peer {
  readonly agent: Agent;
  readonly manager: SessionManager;
  readonly opened: OpenedMessage[];
  readonly failures: unknown[];
  readonly deliveries: Delivery[];
  conn: GatewayConnection | undefined;
  /** Connects; with `ack: false` deliveries are never acknowledged, with `process: false` only recorded. */
  connect(gw: RunningGateway, options?: { ack?: boolean; process?: boolean }): Promise<GatewayConnection>;
  disconnect(gw: RunningGateway): Promise<void>;
}

function makePeer(world: World, agent: Agent): Peer {
  const peer: Peer = {
    agent,
    opened: [],
    failures: [],
    deliveries: [],
    conn: undefined,
    manager: new SessionManager({
      crypto: world.crypto,
      handshake: { identity: agent, trustBundle: world.trustBundle, revocations: world.revocations },
      transport: {
        sendFrame: async (frame) => {
          if (peer.conn === undefined) throw new Error('offline');
          await peer.conn.sendFrame(frame);
        },
      },
    }),
    async connect(gw, options = {}) {
      const handle = async (d: Delivery): Promise<void> => {
        peer.deliveries.push(d);
        if (options.process === false) return;
        if (d.item.case === 'handshake') await peer.manager.handleFrame(d.item.value);
        else if (d.item.case === 'envelope') {
          try {
            peer.opened.push(peer.manager.open(d.item.value));
          } catch (error) {
            peer.failures.push(error);
          }
        }
      };
      const ack = options.ack ?? true;
      const conn = await GatewayConnection.open({
        address: gw.address,
        crypto: world.crypto,
        identity: agent,
        expectedGatewayId: GATEWAY_ID,
        ...(ack ? { onDelivery: handle } : {}),
      });
      if (!ack) {
        void (async () => {
          for await (const d of conn.deliveries()) await handle(d).catch(() => undefined);
        })();
      }
      peer.conn = conn;
      return conn;
    },
    async disconnect(gw) {
      peer.conn?.close();
      peer.conn = undefined;
      await waitFor(() => !gw.gateway.connectedAgents().includes(agent.agentId), 5_000, `${agent.agentId} to go offline`);
    },
  };
  return peer;
}

describe.each(BACKENDS)('mailbox, audit and metrics on %s', (backend) => {
  let world: World;
  let auditKey: Ed25519KeyPair;
  let dataDir: string;
  const schema = `gw_test_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
  const running = new Set<RunningGateway>();
  const peers: Peer[] = [];
  let n = 0;

  /** Each test its own database (PGlite directory or PostgreSQL schema), reused by restarts in that test. */
  function freshDatabase(): DatabaseOptions {
    n++;
    return backend === 'postgres' ? { url: DATABASE_URL!, schema: `${schema}_${n}` } : { dataDir: join(dataDir, `db${n}`) };
  }

  async function start(database: DatabaseOptions, overrides: Partial<StartGatewayOptions> = {}): Promise<RunningGateway> {
    const gw = await world.start({ database, auditKey, ...overrides });
    running.add(gw);
    return gw;
  }

  async function stop(gw: RunningGateway): Promise<void> {
    running.delete(gw);
    await gw.close();
  }

  function peer(agentId: string, agentType = 'worker'): Peer {
    const p = makePeer(world, world.agent(agentId, { agentType }));
    peers.push(p);
    return p;
  }

  function step1(from: Peer, to: string): HandshakeFrame {
    return InitiatorHandshake.start(world.crypto, { identity: from.agent, trustBundle: world.trustBundle }, to).frame;
  }

  async function auditEntries(gw: RunningGateway): Promise<AuditMessage[]> {
    const entries: AuditMessage[] = [];
    for (let i = 0; i < gw.audit.size; i++) entries.push(await gw.audit.entry(i));
    return entries;
  }

  beforeAll(async () => {
    world = await createWorld();
    auditKey = world.crypto.ed25519.generateKeyPair();
    dataDir = mkdtempSync(join(tmpdir(), 'parley-gateway-mailbox-'));
  });

  afterAll(async () => {
    for (const p of peers) {
      p.conn?.close();
      p.manager.close();
    }
    for (const gw of running) await gw.close();
    rmSync(dataDir, { recursive: true, force: true });
    if (backend === 'postgres') {
      const client = new pg.Client({ connectionString: DATABASE_URL });
      await client.connect();
      try {
        for (let i = 1; i <= n; i++) await client.query(`DROP SCHEMA IF EXISTS ${schema}_${i} CASCADE`);
      } finally {
        await client.end();
      }
    }
  });

  it('queues for an offline recipient (even a whole handshake) and delivers once when it connects; the ack empties the mailbox', async () => {
    const gw = await start(freshDatabase());
    const planner = peer('planner-m1', 'planner');
    const worker = peer('worker-m1');
    await planner.connect(gw);
    await worker.connect(gw); // seen once: the gateway now knows its certificate
    await worker.disconnect(gw);

    // The handshake's step 1 is queued; the planner's seal waits for step 2.
    const sealing = planner.manager.seal('worker-m1', { type: MessageType.HANDOFF_REQUEST, content: { task: 'offline', n: 1 } });
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-m1')).toBe(1), { timeout: 5_000 });

    const conn = await worker.connect(gw);
    expect(conn.welcome.mailboxDepth).toBe(1n);
    const sealed = await sealing; // step 2 and step 3 went through the live streams
    const accepted = await planner.conn!.sendEnvelope(sealed.envelope);
    expect(accepted.status).toBe(DeliveryStatus.DELIVERED);
    await waitFor(() => worker.opened.length === 1, 5_000, 'worker to open');
    expect(worker.opened[0]!.content).toEqual({ task: 'offline', n: 1 });

    // Now offline again: the envelope is QUEUED, then delivered on reconnect, exactly once.
    await worker.disconnect(gw);
    const second = await planner.manager.seal('worker-m1', { type: MessageType.HANDOFF_REQUEST, content: { n: 2 } });
    expect((await planner.conn!.sendEnvelope(second.envelope)).status).toBe(DeliveryStatus.QUEUED);
    expect((await worker.connect(gw)).welcome.mailboxDepth).toBe(1n);
    await waitFor(() => worker.opened.length === 2, 5_000, 'queued envelope');
    expect(worker.opened[1]!.content).toEqual({ n: 2 });
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-m1')).toBe(0), { timeout: 5_000 });
    expect(worker.failures).toEqual([]);
    await stop(gw);
  });

  it('holds live deliveries in memory, spills the un-acked ones when the stream ends and redelivers them after a reconnect; the duplicate is dropped by replay protection', async () => {
    const gw = await start(freshDatabase());
    const planner = peer('planner-m2', 'planner');
    const worker = peer('worker-m2');
    await planner.connect(gw);
    await worker.connect(gw, { ack: false });
    await planner.manager.session('worker-m2');
    const sealed = await planner.manager.seal('worker-m2', { type: MessageType.CONSENSUS_VOTE, content: { vote: 'yes' } });
    expect((await planner.conn!.sendEnvelope(sealed.envelope)).status).toBe(DeliveryStatus.DELIVERED);
    await waitFor(() => worker.opened.length === 1, 5_000, 'first delivery');
    // §17.6: a live delivery is held in memory only, no mailbox row, until it is acked… (a handshake frame
    // routed while the fresh stream's backlog was still being read may have been stored: that is the backlog path)
    expect((await gw.mailbox.pending('worker-m2')).filter((r) => r.item.case === 'envelope')).toEqual([]);

    // …or its stream ends: then what was not acked is written to the mailbox.
    await worker.disconnect(gw);
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-m2')).toBeGreaterThanOrEqual(1), { timeout: 5_000 });
    await worker.connect(gw); // acks this time
    await waitFor(() => worker.failures.length === 1, 5_000, 'redelivery');
    const again = worker.deliveries.filter((d) => d.item.case === 'envelope');
    expect(again).toHaveLength(2);
    expect(worker.opened).toHaveLength(1); // the application saw it once
    expect(isSessionError(worker.failures[0]) && worker.failures[0].code).toBe('replay');
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-m2')).toBe(0), { timeout: 5_000 });
    // The metrics tell first deliveries from redeliveries: the worker got steps 1 and 3 and the envelope (the
    // planner step 2), none acked by the worker; after the reconnect those three came again, from the mailbox.
    const text = await gw.gateway.metrics.registry.metrics();
    const count = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
    const live = count(/^parley_gateway_deliveries_total\{source="live"\} (\d+)$/m);
    const stored = count(/^parley_gateway_deliveries_total\{source="mailbox"\} (\d+)$/m);
    expect(live + stored).toBe(7);
    expect(stored).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/^parley_gateway_redeliveries_total 3$/m);
    await stop(gw);
  });

  it('drops expired items (TTL sweep) and refuses a TTL above the receivers’ max age', async () => {
    await expect(start(freshDatabase(), { mailboxTtlMs: 2 * 3_600_000 })).rejects.toThrow(/max_age/);
    const gw = await start(freshDatabase(), { mailboxTtlMs: 300 });
    const planner = peer('planner-m3', 'planner');
    const worker = peer('worker-m3');
    await planner.connect(gw);
    await worker.connect(gw);
    await worker.disconnect(gw);
    expect((await planner.conn!.sendFrame(step1(planner, 'worker-m3'))).status).toBe(DeliveryStatus.QUEUED);
    expect(await gw.mailbox.depth('worker-m3')).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await gw.mailbox.depth('worker-m3')).toBe(0); // expired items are not counted or delivered…
    expect(await gw.gateway.sweepMailbox()).toBe(1); // …and the sweep deletes them
    const conn = await worker.connect(gw);
    expect(conn.welcome.mailboxDepth).toBe(0n);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(worker.deliveries).toHaveLength(0);
    await stop(gw);
  });

  it('refuses a never-seen recipient with policy_denied, and fails closed when the audit write fails', async () => {
    const gw = await start(freshDatabase());
    const planner = peer('planner-m4', 'planner');
    const worker = peer('worker-m4');
    await planner.connect(gw);
    await expect(planner.conn!.sendFrame(step1(planner, 'worker-never-seen'))).rejects.toMatchObject({ code: 'policy_denied' });
    await worker.connect(gw);
    await worker.disconnect(gw);
    const append = vi.spyOn(gw.audit, 'append').mockRejectedValueOnce(new Error('disk full'));
    try {
      await expect(planner.conn!.sendFrame(step1(planner, 'worker-m4'))).rejects.toMatchObject({ code: 'unavailable' });
    } finally {
      append.mockRestore();
    }
    expect(await gw.mailbox.depth('worker-m4')).toBe(0); // never stored: a row exists only once its audit entry has committed
    expect((await planner.conn!.sendFrame(step1(planner, 'worker-m4'))).status).toBe(DeliveryStatus.QUEUED);
    const outcomes = (await auditEntries(gw)).map((e) => e.outcome);
    expect(outcomes).toEqual(['rejected:policy_denied', 'queued']);
    await stop(gw);
  });

  it('queued items survive a gateway restart, in order; the audit log has one verified entry per routed item; metrics show it', async () => {
    const database = freshDatabase();
    let gw = await start(database);
    const planner = peer('planner-m5', 'planner');
    const worker = peer('worker-m5');
    await planner.connect(gw);
    await worker.connect(gw);
    await worker.disconnect(gw);
    const frames = [step1(planner, 'worker-m5'), step1(planner, 'worker-m5'), step1(planner, 'worker-m5')];
    for (const f of frames) expect((await planner.conn!.sendFrame(f)).status).toBe(DeliveryStatus.QUEUED);
    await expect(planner.conn!.sendFrame(step1(planner, 'auditor-x'))).rejects.toMatchObject({ code: 'policy_denied' });
    planner.conn?.close();
    planner.conn = undefined;
    await stop(gw);

    gw = await start(database); // a new Gateway over the same database
    const conn = await worker.connect(gw, { ack: false, process: false });
    expect(conn.welcome.mailboxDepth).toBe(3n);
    await waitFor(() => worker.deliveries.length === 3, 5_000, 'queued items after restart');
    expect(worker.deliveries.map((d) => Buffer.from(handshakeFrameDigest(world.crypto, d.item.value as HandshakeFrame)).toString('hex'))).toEqual(
      frames.map((f) => Buffer.from(handshakeFrameDigest(world.crypto, f)).toString('hex')),
    );
    const ids = worker.deliveries.map((d) => d.deliveryId);
    expect([...ids].sort((a, b) => (a < b ? -1 : 1))).toEqual(ids);
    for (const id of ids) conn.ack(id);
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-m5')).toBe(0), { timeout: 5_000 });

    const entries = await auditEntries(gw);
    expect(entries.map((e) => e.outcome)).toEqual(['queued', 'queued', 'queued', 'rejected:policy_denied']);
    expect(entries.map((e) => Buffer.from(e.messageHash).toString('hex')).slice(0, 3)).toEqual(
      frames.map((f) => Buffer.from(handshakeFrameDigest(world.crypto, f)).toString('hex')),
    );
    expect(entries.every((e) => e.senderId === 'planner-m5' && e.messageType === MessageType.UNSPECIFIED)).toBe(true);
    const verified = await verifyChain(world.crypto, entries, { keys: auditKey.publicKey });
    expect(verified).toMatchObject({ ok: true, size: 4 });

    // Metrics of this instance: one more routed item, then a scrape.
    await planner.connect(gw);
    expect((await planner.conn!.sendFrame(step1(planner, 'worker-m5'))).status).toBe(DeliveryStatus.DELIVERED);
    await expect(planner.conn!.sendFrame(step1(planner, 'nobody-here'))).rejects.toMatchObject({ code: 'policy_denied' });
    const res = await fetch(gw.metricsUrl!);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toMatch(/parley_gateway_items_routed_total\{kind="handshake",status="delivered"\} 1\b/);
    expect(text).toMatch(/parley_gateway_items_rejected_total\{code="policy_denied"\} 1\b/);
    expect(text).toMatch(/parley_gateway_handshake_frames_relayed_total\{step="1"\} 1\b/);
    expect(text).toMatch(/parley_gateway_connected_agents 2\b/);
    expect(text).toMatch(/parley_gateway_mailbox_depth 0\b/); // the live frame, not acked (ack: false), is held in memory
    expect(text).toMatch(/parley_gateway_relay_latency_seconds_count 1\b/);
    expect((await fetch(gw.metricsUrl!.replace('/metrics', '/other'))).status).toBe(404);
    await stop(gw);
  });
});
