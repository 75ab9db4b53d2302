// The gateway side of the delivery contract (docs/PROTOCOL.md §17.6) and the
// gateway findings of the security review (issue 13: items 2, 3, 4, 7, 8, 10),
// over real gRPC on 127.0.0.1 with a real database (PGlite in a directory, so
// a restarted gateway reopens it). Each issue-13 test failed on the gateway
// before these fixes (noted per test).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GatewayConnection } from '@parley/client';
import { buildSendRequest, signReceipt } from '@parley/protocol';
import { credentials } from '@grpc/grpc-js';
import { AgentGatewayService, DeliveryStatus, type Delivery, type SecureMessage } from '@parley/proto';
import { createClient } from '@parley/rpc';
import { InitiatorHandshake, ResponderHandshake, envelopeSignedBytes } from '@parley/session';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Policy } from '../../src/policy.js';
import type { RunningGateway, StartGatewayOptions } from '../../src/server.js';
import { waitFor } from '@parley/test-support';
import { GATEWAY_ID, createWorld, fakeEnvelope, type Agent, type World } from '../fixtures.js';

let world: World;
let dir: string;
let n = 0;
const running = new Set<RunningGateway>();
const conns: GatewayConnection[] = [];

beforeAll(async () => {
  world = await createWorld();
  dir = mkdtempSync(join(tmpdir(), 'parley-gw-delivery-'));
});

afterAll(async () => {
  for (const c of conns) c.close();
  for (const gw of running) await gw.close();
  rmSync(dir, { recursive: true, force: true });
});

async function start(overrides: Partial<StartGatewayOptions> = {}, dataDir = join(dir, `db${n++}`)): Promise<RunningGateway & { dataDir: string }> {
  const gw = await world.start({ database: { dataDir }, metrics: false, ...overrides });
  running.add(gw);
  return Object.assign(gw, { dataDir });
}

async function stop(gw: RunningGateway): Promise<void> {
  running.delete(gw);
  await gw.close();
}

interface Open {
  readonly conn: GatewayConnection;
  readonly deliveries: Delivery[];
}

/** A raw connection; with `ack: false` deliveries are recorded, never acked. */
async function open(gw: RunningGateway, agent: Agent, ack = true): Promise<Open> {
  const deliveries: Delivery[] = [];
  const conn = await GatewayConnection.open({
    address: gw.address,
    crypto: world.crypto,
    identity: agent,
    expectedGatewayId: GATEWAY_ID,
    manualAck: !ack,
    onDelivery: (d) => void deliveries.push(d),
  });
  conns.push(conn);
  return { conn, deliveries };
}

/** A shape-valid envelope correctly signed by `from` (the gateway checks signatures, not sessions). */
function envelope(from: Agent, to: string, bytes = 64): SecureMessage {
  const e = fakeEnvelope(world.crypto, from.agentId, to, bytes);
  e.signature = world.crypto.ed25519.sign(envelopeSignedBytes(world.crypto, e, e.encryptedPayload, e.authTag), from.keyPair.secretKey);
  return e;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A planner and a worker, each with an open stream on `gw` (deliveries recorded and acked). */
async function plannerAndWorker(gw: RunningGateway, suffix: string): Promise<{ planner: Agent; worker: Agent; p: Open; w: Open }> {
  const planner = world.agent(`planner-${suffix}`, { agentType: 'planner' });
  const worker = world.agent(`worker-${suffix}`);
  return { planner, worker, p: await open(gw, planner), w: await open(gw, worker) };
}

/** A planner with an open stream on `gw`, and a worker that `gw` has seen (its directory entry) and that is now offline. */
async function plannerAndOfflineWorker(gw: RunningGateway, suffix: string): Promise<{ planner: Agent; worker: Agent; p: Open }> {
  const planner = world.agent(`planner-${suffix}`, { agentType: 'planner' });
  const worker = world.agent(`worker-${suffix}`);
  const p = await open(gw, planner);
  (await open(gw, worker)).conn.close();
  await sleep(100);
  return { planner, worker, p };
}

describe('live delivery without a mailbox write (§17.6)', () => {
  it('a live item is audited, written and held in memory until acked; one not acked in time is spilled to the mailbox', async () => {
    const gw = await start({ ackTimeoutMs: 300, revocationCheckIntervalMs: 100 });
    const planner = world.agent('planner-l1', { agentType: 'planner' });
    const worker = world.agent('worker-l1');
    const p = await open(gw, planner);
    const w = await open(gw, worker, false);
    const e = envelope(planner, 'worker-l1');
    expect((await p.conn.sendEnvelope(e)).status).toBe(DeliveryStatus.DELIVERED);
    await waitFor(() => w.deliveries.length === 1, 5_000, 'delivery');
    expect(gw.audit.size).toBe(1); // audited before it was written
    expect(await gw.mailbox.depth('worker-l1')).toBe(0); // no mailbox row on the live path
    // The sender's outbox resending the same envelope: relayed again, not audited again.
    expect((await p.conn.sendEnvelope(e)).status).toBe(DeliveryStatus.DELIVERED);
    await waitFor(() => w.deliveries.length === 2, 5_000, 'resend delivered');
    expect(gw.audit.size).toBe(1);
    w.conn.ack(w.deliveries[1]!.deliveryId);
    // Not acked within the ack timeout: written to the mailbox (and still held on the stream).
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-l1')).toBe(1), { timeout: 5_000 });
    w.conn.ack(w.deliveries[0]!.deliveryId);
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-l1')).toBe(0), { timeout: 5_000 });
    // An acked live item never touches the mailbox.
    const w2 = await open(gw, worker, true); // replaces the stream
    await p.conn.sendEnvelope(envelope(planner, 'worker-l1'));
    await waitFor(() => w2.deliveries.length === 1, 5_000, 'second delivery');
    await sleep(500);
    expect(await gw.mailbox.depth('worker-l1')).toBe(0);
    await stop(gw);
  });

  it('at most maxInFlight un-acked deliveries per stream; the rest wait in the mailbox and are drained page by page as acks come', async () => {
    const gw = await start({ maxInFlight: 4, ackTimeoutMs: 60_000 });
    const planner = world.agent('planner-l2', { agentType: 'planner' });
    const worker = world.agent('worker-l2');
    const p = await open(gw, planner);
    const w = await open(gw, worker, false);
    const statuses = await Promise.all(Array.from({ length: 10 }, () => p.conn.sendEnvelope(envelope(planner, 'worker-l2')).then((a) => a.status)));
    expect(statuses.filter((s) => s === DeliveryStatus.DELIVERED)).toHaveLength(4);
    expect(statuses.filter((s) => s === DeliveryStatus.QUEUED)).toHaveLength(6);
    await sleep(300);
    expect(w.deliveries).toHaveLength(4); // never more than the bound in the stream
    for (const d of w.deliveries.slice(0, 2)) w.conn.ack(d.deliveryId);
    await waitFor(() => w.deliveries.length === 6, 5_000, 'two more after two acks');
    await sleep(200);
    expect(w.deliveries).toHaveLength(6);
    for (const d of w.deliveries.slice(2)) w.conn.ack(d.deliveryId);
    await waitFor(() => w.deliveries.length === 10, 5_000, 'the rest');
    for (const d of w.deliveries.slice(6)) w.conn.ack(d.deliveryId);
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-l2')).toBe(0), { timeout: 5_000 });
    await stop(gw);
  });
});

describe('issue 13 (gateway findings)', () => {
  it('(3) quotas per recipient with quota_exceeded, a byte budget in the rate limiter, and a backlog read no further than the stream drains', async () => {
    // Before: 300 × 1 MB for one offline agent were all accepted, and a connecting recipient that read nothing
    // had its whole backlog read into memory. Here: refused beyond the quota; only maxInFlight items leave the database.
    const gw = await start({ mailboxQuota: { perRecipientItems: 5, perRecipientBytes: 50_000 }, maxInFlight: 3, byteRateLimit: { ratePerSecond: 1, burst: 150_000 } });
    const planner = world.agent('planner-q1', { agentType: 'planner' });
    const worker = world.agent('worker-q1');
    const p = await open(gw, planner);
    (await open(gw, worker)).conn.close(); // seen, then offline
    await sleep(100);
    for (let i = 0; i < 5; i++) expect((await p.conn.sendEnvelope(envelope(planner, 'worker-q1'))).status).toBe(DeliveryStatus.QUEUED);
    await expect(p.conn.sendEnvelope(envelope(planner, 'worker-q1'))).rejects.toMatchObject({ code: 'quota_exceeded' });
    // Bytes: a big envelope beyond the recipient's byte quota.
    const other = world.agent('worker-q2');
    (await open(gw, other)).conn.close();
    await sleep(100);
    await expect(p.conn.sendEnvelope(envelope(planner, 'worker-q2', 60_000))).rejects.toMatchObject({ code: 'quota_exceeded' });
    expect((await p.conn.sendEnvelope(envelope(planner, 'worker-q2', 40_000))).status).toBe(DeliveryStatus.QUEUED);
    await expect(p.conn.sendEnvelope(envelope(planner, 'worker-q2', 40_000))).rejects.toMatchObject({ code: 'quota_exceeded' });
    // The byte bucket (150 000 bytes of burst) is spent, though few items were sent: refused by bytes.
    await expect(p.conn.sendEnvelope(envelope(planner, 'worker-q2', 40_000))).rejects.toMatchObject({ code: 'rate_limited' });
    // The recipient connects and reads nothing: 3 deliveries written, not 5.
    const w = await open(gw, worker, false);
    await sleep(500);
    expect(w.deliveries).toHaveLength(3);
    await stop(gw);
  });

  it('a resend of a stored item is answered QUEUED from the row that holds it: one row, counted once by the quota, delivered once (§10.8)', async () => {
    // Before: each resend (an outbox after a reconnect, a queued step 1 on its backoff: every 60 s for a message's
    // lifetime) added a row, counted by the quotas and delivered again — the third copy below was refused
    // quota_exceeded, and the recipient got three.
    const gw = await start({ mailboxQuota: { perRecipientItems: 2 } });
    const { planner, worker, p } = await plannerAndOfflineWorker(gw, 'dup');
    const e = envelope(planner, 'worker-dup');
    for (let i = 0; i < 3; i++) expect((await p.conn.sendEnvelope(e)).status).toBe(DeliveryStatus.QUEUED);
    expect((await p.conn.sendEnvelope(envelope(planner, 'worker-dup'))).status).toBe(DeliveryStatus.QUEUED);
    expect(await gw.mailbox.depth('worker-dup')).toBe(2);
    await expect(p.conn.sendEnvelope(envelope(planner, 'worker-dup'))).rejects.toMatchObject({ code: 'quota_exceeded' });
    const w = await open(gw, worker);
    await waitFor(() => w.deliveries.length === 2, 5_000, 'the two items');
    await sleep(300);
    expect(w.deliveries).toHaveLength(2);
    expect(w.deliveries[0]!.item).toMatchObject({ case: 'envelope', value: { nonce: e.nonce } });
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-dup')).toBe(0), { timeout: 5_000 });
    // Acked and gone: the quota counted each row once, so both slots are free again.
    w.conn.close();
    await sleep(100);
    for (let i = 0; i < 2; i++) expect((await p.conn.sendEnvelope(envelope(planner, 'worker-dup'))).status).toBe(DeliveryStatus.QUEUED);
    await stop(gw);
  });

  it('the whole mailbox is bounded too: beyond mailbox_max_items for all recipients, quota_exceeded (counted by limit)', async () => {
    // Per-recipient and per-sender quotas alone bound the mailbox only by the number of agents times a quota.
    const gw = await start({ mailboxQuota: { totalItems: 4 } });
    const planners = [world.agent('planner-t1', { agentType: 'planner' }), world.agent('planner-t2', { agentType: 'planner' })];
    const workers = ['worker-t1', 'worker-t2', 'worker-t3'].map((id) => world.agent(id));
    const ps = await Promise.all(planners.map((a) => open(gw, a)));
    for (const w of workers) (await open(gw, w)).conn.close(); // seen, then offline
    await sleep(100);
    for (let i = 0; i < 4; i++) expect((await ps[i % 2]!.conn.sendEnvelope(envelope(planners[i % 2]!, workers[i % 3]!.agentId))).status).toBe(DeliveryStatus.QUEUED);
    await expect(ps[1]!.conn.sendEnvelope(envelope(planners[1]!, 'worker-t3'))).rejects.toMatchObject({ code: 'quota_exceeded' });
    expect(await gw.gateway.metrics.registry.getSingleMetricAsString('parley_gateway_mailbox_quota_refusals_total')).toContain('limit="total_items"} 1');
    expect(await gw.gateway.metrics.registry.getSingleMetricAsString('parley_gateway_mailbox_items')).toMatch(/parley_gateway_mailbox_items 4\b/);
    // A recipient that drains frees room for everyone.
    const w = await open(gw, workers[0]!, false);
    await waitFor(() => w.deliveries.length === 2, 5_000, 'worker-t1 backlog');
    for (const d of w.deliveries) w.conn.ack(d.deliveryId);
    await vi.waitFor(async () => expect((await gw.mailbox.totals()).items).toBe(2), { timeout: 5_000 });
    await vi.waitFor(async () => expect((await ps[1]!.conn.sendEnvelope(envelope(planners[1]!, 'worker-t3'))).status).toBe(DeliveryStatus.QUEUED), { timeout: 5_000 });
    await stop(gw);
  });

  it('(2) a revoked sender’s stored items are dropped and audited on revocation, and re-checked at delivery', async () => {
    // Before: the drain never re-checked the sender; a recipient that connected after the revocation got all 3.
    const gw = await start();
    const thief = world.agent('planner-r1', { agentType: 'planner' });
    const thief2 = world.agent('planner-r2', { agentType: 'planner' });
    const worker = world.agent('worker-r1');
    const t = await open(gw, thief);
    const t2 = await open(gw, thief2);
    (await open(gw, worker)).conn.close();
    await sleep(100);
    for (let i = 0; i < 3; i++) await t.conn.sendEnvelope(envelope(thief, 'worker-r1'));
    for (let i = 0; i < 2; i++) await t2.conn.sendEnvelope(envelope(thief2, 'worker-r1'));
    expect(await gw.mailbox.depth('worker-r1')).toBe(5);
    // planner-r1 revoked through the feed (onRevocation): its items are dropped at once, each audited.
    world.revoke({ kind: 'agent', agentId: 'planner-r1', revokedAtMs: Date.now(), reason: 'key-compromise' });
    gw.gateway.onRevocation({ agentId: 'planner-r1' });
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-r1')).toBe(2), { timeout: 5_000 });
    // planner-r2 revoked by serial, but this instance never heard of it (no onRevocation): caught at delivery.
    world.revoke({ kind: 'serial', serial: thief2.certificate.serial, revokedAtMs: Date.now(), reason: 'key-compromise' });
    const w = await open(gw, worker);
    await sleep(500);
    expect(w.deliveries).toHaveLength(0);
    expect(await gw.mailbox.depth('worker-r1')).toBe(0);
    const outcomes: string[] = [];
    for (let i = 0; i < gw.audit.size; i++) outcomes.push((await gw.audit.entry(i)).outcome);
    expect(outcomes.filter((o) => o === 'dropped:revoked')).toHaveLength(5);
    await stop(gw);
  });

  it('(4) step 1 is rate-limited per (initiator, responder); step 2 and receipts are not charged to the replier', async () => {
    // Before: each unsolicited step 1 made the victim answer on its own bucket; two attackers made its own sends fail.
    const gw = await start({ rateLimit: { ratePerSecond: 0.1, burst: 6 }, handshakeRateLimit: { ratePerSecond: 0.1, burst: 2 } });
    const attacker = world.agent('planner-h1', { agentType: 'planner' });
    const victim = world.agent('worker-h1');
    const a = await open(gw, attacker);
    const v = await open(gw, victim);
    const frames = Array.from({ length: 3 }, () => InitiatorHandshake.start(world.crypto, { identity: attacker, trustBundle: world.trustBundle }, 'worker-h1'));
    await a.conn.sendFrame(frames[0]!.frame);
    await a.conn.sendFrame(frames[1]!.frame);
    await expect(a.conn.sendFrame(frames[2]!.frame)).rejects.toMatchObject({ code: 'rate_limited' }); // per pair
    await waitFor(() => v.deliveries.length === 2, 5_000, 'two step 1 frames');
    // The victim answers both, and sends 6 envelopes of its own: its bucket (burst 6) is untouched by the answers.
    for (const d of v.deliveries) {
      if (d.item.case !== 'handshake') continue;
      const responder = ResponderHandshake.accept(world.crypto, { identity: victim, trustBundle: world.trustBundle }, d.item.value);
      expect((await v.conn.sendFrame(responder.frame)).status).toBe(DeliveryStatus.DELIVERED);
    }
    for (let i = 0; i < 6; i++) await v.conn.sendEnvelope(envelope(victim, 'planner-h1'));
    await stop(gw);
  });

  it('(7) a step 2 only answers a step 1 relayed the other way; a receipt only an envelope relayed the other way', async () => {
    // Before: under a one-way planner → worker policy a worker could put any step-2 frame or receipt into a planner's stream.
    const gw = await start({ policy: Policy.parse({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' } }] }) });
    const planner = world.agent('planner-c1', { agentType: 'planner' });
    const worker = world.agent('worker-c1');
    const p = await open(gw, planner);
    const w = await open(gw, worker);
    // Unsolicited: refused.
    const other = InitiatorHandshake.start(world.crypto, { identity: planner, trustBundle: world.trustBundle }, 'worker-c1');
    const stray = ResponderHandshake.accept(world.crypto, { identity: worker, trustBundle: world.trustBundle }, other.frame);
    await expect(w.conn.sendFrame(stray.frame)).rejects.toMatchObject({ code: 'policy_denied' });
    const receipt = signReceipt(world.crypto, worker, { messageHash: world.crypto.randomBytes(32), senderId: 'planner-c1', receivedAtMs: Date.now() });
    await expect(w.conn.sendReceipt(receipt)).rejects.toMatchObject({ code: 'policy_denied' });
    // Solicited: allowed (step 2 once per step 1).
    const hs = InitiatorHandshake.start(world.crypto, { identity: planner, trustBundle: world.trustBundle }, 'worker-c1');
    await p.conn.sendFrame(hs.frame);
    await waitFor(() => w.deliveries.some((d) => d.item.case === 'handshake'), 5_000, 'step 1');
    const answer = ResponderHandshake.accept(world.crypto, { identity: worker, trustBundle: world.trustBundle }, hs.frame);
    expect((await w.conn.sendFrame(answer.frame)).status).toBe(DeliveryStatus.DELIVERED);
    await expect(w.conn.sendFrame(answer.frame)).rejects.toMatchObject({ code: 'policy_denied' });
    const e = envelope(planner, 'worker-c1');
    await p.conn.sendEnvelope(e);
    await waitFor(() => w.deliveries.some((d) => d.item.case === 'envelope'), 5_000, 'envelope');
    const good = signReceipt(world.crypto, worker, { messageHash: (await p.conn.sendEnvelope(e)).itemHash, senderId: 'planner-c1', receivedAtMs: Date.now() });
    expect((await w.conn.sendReceipt(good)).status).toBe(DeliveryStatus.DELIVERED);
    await stop(gw);
  });

  it('(8) a captured unary Send does not replay after a gateway restart', async () => {
    // Before: nonces lived in memory; after a restart the same request was accepted again (two mailbox copies).
    const gw1 = await start();
    const planner = world.agent('planner-n1', { agentType: 'planner' });
    const worker = world.agent('worker-n1');
    (await open(gw1, worker)).conn.close();
    await sleep(100);
    const request = buildSendRequest(world.crypto, planner, GATEWAY_ID, { case: 'envelope', value: envelope(planner, 'worker-n1') });
    const send = async (gw: RunningGateway): Promise<unknown> => {
      const client = createClient(AgentGatewayService, gw.address, credentials.createInsecure());
      try {
        return await client.send(request);
      } finally {
        client.close();
      }
    };
    expect(await send(gw1)).toMatchObject({ status: DeliveryStatus.QUEUED });
    await expect(send(gw1)).rejects.toMatchObject({ code: 'replay' });
    await stop(gw1);
    const gw2 = await start({}, gw1.dataDir);
    await expect(send(gw2)).rejects.toMatchObject({ code: 'replay' });
    expect(await gw2.mailbox.depth('worker-n1')).toBe(1);
    await stop(gw2);
  });

  it('unary Sends beyond the agent\'s rate are refused before their nonce is written (the nonce table grows at that rate at most)', async () => {
    // Before: every Send that verified wrote its nonce row, and only its item was refused by the rate limit after.
    const gw = await start({ rateLimit: { ratePerSecond: 0.01, burst: 2 } });
    const { planner } = await plannerAndOfflineWorker(gw, 'u1');
    const client = createClient(AgentGatewayService, gw.address, credentials.createInsecure());
    try {
      const send = (): Promise<unknown> => client.send(buildSendRequest(world.crypto, planner, GATEWAY_ID, { case: 'envelope', value: envelope(planner, 'worker-u1') }));
      for (let i = 0; i < 2; i++) expect(await send()).toMatchObject({ status: DeliveryStatus.QUEUED });
      for (let i = 0; i < 3; i++) await expect(send()).rejects.toMatchObject({ code: 'rate_limited' });
    } finally {
      client.close();
    }
    const rows = await gw.database.query<{ n: unknown }>('SELECT count(*) AS n FROM gateway_send_nonces');
    expect(Number(rows[0]!.n)).toBe(2);
    await stop(gw);
  });

  it('(10) an agent closing its stream is not logged at error level', async () => {
    // Before: "connect stream failed" at level 50 with ERR_STREAM_PREMATURE_CLOSE and a stack.
    const gw = await start();
    const worker = world.agent('worker-x1');
    const before = world.logs.length;
    const w = await open(gw, worker);
    w.conn.close();
    await sleep(500);
    const errors = world.logs.slice(before).filter((l) => (l['level'] as number) >= 50);
    expect(errors).toEqual([]);
    await stop(gw);
  });
});

describe('stored items relayed as stored (§10.8)', () => {
  it('a stored item whose bytes do not decode costs its recipient one failed stream; then it is dropped and audited, and the rest is delivered', async () => {
    // Stored items are relayed without being decoded (§10.8). Without the redelivery check, the damaged row failed
    // the recipient's stream at every reconnect and nothing behind it was ever delivered.
    const gw = await start();
    const { planner, worker, p } = await plannerAndOfflineWorker(gw, 'm1');
    const sent = [envelope(planner, 'worker-m1'), envelope(planner, 'worker-m1')];
    for (const e of sent) expect((await p.conn.sendEnvelope(e)).status).toBe(DeliveryStatus.QUEUED);
    // The first row damaged in the database: 0xff 0xff is a varint that never ends.
    await gw.database.query(
      `UPDATE gateway_mailbox SET item = $1 WHERE delivery_id = (SELECT min(delivery_id) FROM gateway_mailbox WHERE recipient_id = 'worker-m1')`,
      [new Uint8Array([0xff, 0xff])],
    );
    const first = await open(gw, worker);
    expect(await first.conn.closed).toMatchObject({ code: 'internal' }); // the agent could not decode the frame
    expect(first.deliveries).toHaveLength(0);
    const second = await open(gw, worker);
    await waitFor(() => second.deliveries.length === 1, 5_000, 'the intact item');
    const d = second.deliveries[0]!;
    expect(d.item.case === 'envelope' && Buffer.from(d.item.value.signature).equals(Buffer.from(sent[1]!.signature))).toBe(true);
    await vi.waitFor(async () => expect(await gw.mailbox.depth('worker-m1')).toBe(0), { timeout: 5_000 });
    const outcomes: string[] = [];
    for (let i = 0; i < gw.audit.size; i++) outcomes.push((await gw.audit.entry(i)).outcome);
    expect(outcomes).toEqual(['queued', 'queued', 'dropped:malformed']);
    await sleep(300);
    expect(second.deliveries).toHaveLength(1);
    await stop(gw);
  });
});

describe('nothing is delivered before its audit entry has committed (§10.9, §17.7)', () => {
  /** Holds every audit append until the returned function is called. */
  function gateAudit(gw: RunningGateway): { open: () => void; restore: () => void } {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const real = gw.audit.append.bind(gw.audit);
    const spy = vi.spyOn(gw.audit, 'append').mockImplementation(async (fields) => {
      await gate;
      return real(fields);
    });
    return { open, restore: () => spy.mockRestore() };
  }

  it('a stored item has no mailbox row until its entry commits: a recipient that connects meanwhile gets it after, never before', async () => {
    // Before: the row was inserted beside the entry, so a drain (this reconnect, another instance's NOTIFY) could deliver it first.
    const gw = await start();
    const { planner, worker, p } = await plannerAndOfflineWorker(gw, 'a1');
    const gate = gateAudit(gw);
    const accepted = p.conn.sendEnvelope(envelope(planner, 'worker-a1'));
    await sleep(200);
    expect(await gw.mailbox.depth('worker-a1')).toBe(0);
    const w = await open(gw, worker);
    await sleep(300);
    expect(w.deliveries).toHaveLength(0);
    gate.open();
    expect((await accepted).status).toBe(DeliveryStatus.QUEUED);
    gate.restore();
    await waitFor(() => w.deliveries.length === 1, 5_000, 'the item, once audited');
    expect(gw.audit.size).toBe(1);
    await stop(gw);
  });

  it('an item whose live stream went away before its entry committed is stored and answered QUEUED, not DELIVERED', async () => {
    const gw = await start();
    const { planner, worker, p, w } = await plannerAndWorker(gw, 'a2');
    const gate = gateAudit(gw);
    const accepted = p.conn.sendEnvelope(envelope(planner, 'worker-a2'));
    await sleep(200);
    w.conn.close();
    await sleep(200);
    gate.open();
    expect((await accepted).status).toBe(DeliveryStatus.QUEUED);
    gate.restore();
    expect(await gw.mailbox.depth('worker-a2')).toBe(1);
    const again = await open(gw, worker);
    await waitFor(() => again.deliveries.length === 1, 5_000, 'the stored item');
    await stop(gw);
  });

  it('a resend of an envelope whose entry could not be written is audited (the first attempt left no entry)', async () => {
    // Before: the first attempt marked the envelope as relayed at its check, so the resend was taken for a resend of
    // an audited envelope and delivered with no entry at all.
    const gw = await start();
    const { planner, p, w } = await plannerAndWorker(gw, 'a3');
    const e = envelope(planner, 'worker-a3');
    const append = vi.spyOn(gw.audit, 'append').mockRejectedValueOnce(new Error('disk full'));
    await expect(p.conn.sendEnvelope(e)).rejects.toMatchObject({ code: 'unavailable' });
    append.mockRestore();
    expect(w.deliveries).toHaveLength(0);
    expect((await p.conn.sendEnvelope(e)).status).toBe(DeliveryStatus.DELIVERED);
    await waitFor(() => w.deliveries.length === 1, 5_000, 'the resend');
    const outcomes: string[] = [];
    for (let i = 0; i < gw.audit.size; i++) outcomes.push((await gw.audit.entry(i)).outcome);
    expect(outcomes).toEqual(['delivered']);
    // A second resend of the now audited envelope gets no second entry.
    expect((await p.conn.sendEnvelope(e)).status).toBe(DeliveryStatus.DELIVERED);
    await waitFor(() => w.deliveries.length === 2, 5_000, 'the second resend');
    expect(gw.audit.size).toBe(1);
    await stop(gw);
  });
});
