// First contact with an agent the gateway has never seen (PROTOCOL §10.3 step 5): the sender attaches the
// recipient's registry-issued certificate (`recipient_certificate` of Outbound and SendRequest). Real gateways
// over gRPC on 127.0.0.1, on PGlite and, when DATABASE_URL is set, on PostgreSQL (two instances sharing a schema).
import { credentials } from '@grpc/grpc-js';
import { createIssuerKey } from '@parley/identity';
import { AgentGatewayService, DeliveryStatus, type AgentCertificate, type ConnectResponse, type HandshakeFrame } from '@parley/proto';
import { buildSendRequest } from '@parley/protocol';
import { RpcError, createClient } from '@parley/rpc';
import { InitiatorHandshake, ResponderHandshake } from '@parley/session';
import { BACKENDS, DATABASE_URL, DAY, dropSchema, freshSchema, sleep, tempDir, waitFor, type RawStream, type TempDir } from '@parley/test-support';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { encodeItem } from '../src/mailbox.js';
import type { RunningGateway } from '../src/server.js';
import { GATEWAY_ID, createWorld, rawStream, signedFakeEnvelope, type Agent, type World } from './fixtures.js';

let world: World;
const dirs: TempDir[] = [];
const schemas: string[] = [];

beforeAll(async () => {
  world = await createWorld();
});
// The world's revocation copy goes stale after 60 s (as a gateway's would).
beforeEach(() => world.refresh());
afterAll(async () => {
  for (const dir of dirs) dir.remove();
  await dropSchema(...schemas);
});

/** What a stream was answered for one request: `accepted` (with its status) or the rejection's code and message. */
interface Verdict {
  readonly code: string;
  readonly message: string;
  readonly status?: DeliveryStatus;
}

async function verdict(s: RawStream, requestId: bigint): Promise<Verdict> {
  const answer = (r: ConnectResponse): boolean => (r.kind.case === 'accepted' || r.kind.case === 'rejected') && r.kind.value.requestId === requestId;
  await waitFor(() => s.responses.some(answer), 10_000, `answer ${requestId}`);
  const r = s.responses.find(answer)!;
  if (r.kind.case === 'rejected') return { code: r.kind.value.code, message: r.kind.value.message };
  return r.kind.case === 'accepted' ? { code: 'accepted', message: '', status: r.kind.value.status } : { code: 'accepted', message: '' };
}

const QUEUED = { code: 'accepted', message: '', status: DeliveryStatus.QUEUED };
const ROUTE_DENIED = { code: 'policy_denied', message: 'the route to this recipient is not allowed' };

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

describe.each(BACKENDS)('first contact with a recipient the gateway never saw (%s)', (engine) => {
  let gw: RunningGateway;
  let requestId = 0n;
  /** Another instance on the same PostgreSQL schema (undefined on PGlite). */
  let gw2: RunningGateway | undefined;

  beforeAll(async () => {
    if (engine === 'postgres') {
      const schema = freshSchema('gw_first_contact');
      schemas.push(schema);
      const database = { url: DATABASE_URL!, schema };
      gw = await world.start({ database, heartbeatMs: 200 });
      gw2 = await world.start({ database, heartbeatMs: 200 });
    } else {
      const dir = tempDir('gw-first-contact');
      dirs.push(dir);
      gw = await world.start({ database: { dataDir: dir.path } });
    }
  });
  afterAll(async () => {
    await gw2?.close();
    await gw?.close();
  });

  const id = (name: string): string => `${name}-${engine}`;
  const raw = (a: Agent, target: RunningGateway = gw): Promise<RawStream> => rawStream(world.crypto, target.address, a);
  const step1 = (from: Agent, to: string): HandshakeFrame => InitiatorHandshake.start(world.crypto, { identity: from, trustBundle: world.trustBundle }, to).frame;

  /** Sends a step 1 from `s`'s agent to `to`, with `certificate` as its recipient_certificate; its verdict. */
  async function sendStep1(s: RawStream, from: Agent, to: string, certificate?: AgentCertificate): Promise<Verdict> {
    const rid = ++requestId;
    // RawStream.send spreads its `extra` into the Outbound: the recipient_certificate rides along.
    const extra = { quiet: false, ...(certificate === undefined ? {} : { recipientCertificate: certificate }) };
    s.send({ case: 'handshake', value: step1(from, to) }, rid, extra);
    return verdict(s, rid);
  }

  /** The serial of the certificate `gateway_agents` holds for `agentId` (hex), or undefined. */
  async function storedSerial(agentId: string, target: RunningGateway = gw): Promise<string | undefined> {
    const cert = await target.mailbox.lastCertificate(agentId);
    return cert === undefined ? undefined : hex(cert.serial);
  }

  /** The audit outcomes recorded for items to `recipientId`. */
  async function auditOutcomes(recipientId: string): Promise<string[]> {
    const outcomes: string[] = [];
    for (let i = 0; i < gw.audit.size; i++) {
      const e = await gw.audit.entry(i);
      if (e.recipientId === recipientId) outcomes.push(e.outcome);
    }
    return outcomes;
  }

  /** Deliveries that reached `s` so far. */
  function deliveries(s: RawStream): ConnectResponse[] {
    return s.responses.filter((r) => r.kind.case === 'delivery');
  }

  it('a never-seen recipient without a certificate is policy_denied, as before', async () => {
    const planner = world.agent(id('planner-a'), { agentType: 'planner' });
    const p = await raw(planner);
    try {
      expect(await sendStep1(p, planner, id('worker-a'))).toEqual(ROUTE_DENIED);
      expect(await storedSerial(id('worker-a'))).toBeUndefined();
    } finally {
      p.close();
    }
  });

  it('with its valid certificate: queued, remembered (a second item needs none), delivered when the recipient first connects', async () => {
    const planner = world.agent(id('planner-b'), { agentType: 'planner' });
    const worker = world.agent(id('worker-b'));
    const p = await raw(planner);
    try {
      expect(await sendStep1(p, planner, worker.agentId, worker.certificate)).toEqual(QUEUED);
      // Remembered: the registry's certificate is the recipient's last one, with no presence recorded.
      expect(await storedSerial(worker.agentId)).toBe(hex(worker.certificate.serial));
      // Its info line names who introduced it (the actor: agent, serial) and the certificate recorded.
      expect(world.logs.find((l) => l['msg'] === 'recipient certificate introduced by a sender recorded' && l['peer'] === worker.agentId)).toMatchObject({
        agent: planner.agentId,
        serial: hex(planner.certificate.serial),
        certificate_agent: worker.agentId,
        certificate_serial: hex(worker.certificate.serial),
      });
      expect((await gw.mailbox.presence('none', 1000)).map((x) => x.agentId)).not.toContain(worker.agentId);
      // A second item without the certificate is accepted too.
      const rid = ++requestId;
      p.send({ case: 'envelope', value: signedFakeEnvelope(world.crypto, planner, worker.agentId) }, rid);
      expect(await verdict(p, rid)).toEqual(QUEUED);
      expect(await gw.mailbox.depth(worker.agentId)).toBe(2);
      // The recipient connects for the first time and gets both, in order.
      const w = await raw(worker);
      try {
        await waitFor(() => deliveries(w).length === 2, 10_000, 'both items delivered');
        expect(deliveries(w).map((r) => (r.kind.case === 'delivery' ? r.kind.value.item.case : undefined))).toEqual(['handshake', 'envelope']);
        for (const r of deliveries(w)) if (r.kind.case === 'delivery') w.ack(r.kind.value.deliveryId);
        await waitFor(async () => (await gw.mailbox.depth(worker.agentId)) === 0, 5_000, 'acked');
      } finally {
        w.close();
      }
      expect(await auditOutcomes(worker.agentId)).toEqual(['queued', 'queued']);
    } finally {
      p.close();
    }
  });

  it('a certificate of another agent, of an untrusted issuer, expired, revoked or damaged: refused with its own code, nothing stored', async () => {
    const planner = world.agent(id('planner-c'), { agentType: 'planner' });
    const p = await raw(planner);
    const now = Date.now();
    const revokedBySerial = world.agent(id('worker-c-revoked'));
    const revokedById = world.agent(id('worker-c-gone'));
    world.revoke(
      { kind: 'serial', serial: revokedBySerial.certificate.serial, reason: 'key compromise', revokedAtMs: now },
      { kind: 'agent', agentId: revokedById.agentId, reason: 'retired', revokedAtMs: now },
    );
    const damaged = world.agent(id('worker-c-damaged')).certificate;
    const cases: { to: string; certificate: AgentCertificate; code: string; message: string }[] = [
      {
        to: id('worker-c-other'),
        certificate: world.agent(id('worker-c-someone-else')).certificate,
        code: 'identity_mismatch',
        message: "recipient_certificate refused: not a certificate of the item's recipient",
      },
      {
        to: id('worker-c-foreign'),
        certificate: world.agent(id('worker-c-foreign'), { issuer: createIssuerKey(world.crypto, world.crypto.ed25519.generateKeyPair()) }).certificate,
        code: 'unknown_issuer',
        message: 'recipient_certificate refused: certificate issuer not trusted',
      },
      {
        to: id('worker-c-expired'),
        certificate: world.agent(id('worker-c-expired'), { validFromMs: now - 2 * DAY, validUntilMs: now - DAY }).certificate,
        code: 'expired',
        message: 'recipient_certificate refused: certificate expired',
      },
      { to: revokedBySerial.agentId, certificate: revokedBySerial.certificate, code: 'revoked', message: 'recipient_certificate refused: certificate revoked' },
      { to: revokedById.agentId, certificate: revokedById.certificate, code: 'revoked', message: 'recipient_certificate refused: certificate revoked' },
      {
        to: damaged.agentId,
        certificate: { ...damaged, signature: damaged.signature.map((b, i) => (i === 0 ? b ^ 1 : b)) },
        code: 'bad_certificate',
        message: 'recipient_certificate refused: certificate invalid',
      },
      {
        to: id('worker-c-malformed'),
        certificate: { ...world.agent(id('worker-c-malformed')).certificate, serial: new Uint8Array(3) },
        code: 'malformed',
        message: 'recipient_certificate refused: not a well-formed certificate of at most 4096 bytes',
      },
    ];
    try {
      for (const c of cases) {
        expect(await sendStep1(p, planner, c.to, c.certificate), c.code).toEqual({ code: c.code, message: c.message });
        expect(await storedSerial(c.to), c.code).toBeUndefined();
        // Logged as a security event of its own stage: the sender is the actor (agent, key, serial: its own, which is
        // fine), the refused certificate is named apart (certificate_agent, certificate_serial); audited like refusals
        // past the rate limit.
        const line = world.logs.find((l) => l['event'] === 'security' && l['code'] === c.code && l['peer'] === c.to);
        expect(line, c.code).toMatchObject({
          stage: 'recipient_certificate',
          agent: planner.agentId,
          serial: hex(planner.certificate.serial),
          detail: expect.stringContaining('recipient_certificate refused') as unknown,
        });
        expect(line?.['certificate_agent'], c.code).toBe(c.certificate.agentId);
        expect(line?.['certificate_serial'], c.code).toBe(c.certificate.serial.length === 16 ? hex(c.certificate.serial) : undefined);
        expect(await auditOutcomes(c.to), c.code).toEqual([`rejected:${c.code}`]);
      }
      // Nothing was remembered either: the same recipients without a certificate are still unknown.
      for (const c of cases) expect(await sendStep1(p, planner, c.to), c.to).toEqual(ROUTE_DENIED);
    } finally {
      p.close();
    }
  });

  it('the policy still applies: a valid certificate of an agent type the policy does not allow is policy_denied, nothing stored', async () => {
    const planner = world.agent(id('planner-d'), { agentType: 'planner' });
    const auditor = world.agent(id('auditor-d'), { agentType: 'auditor' });
    const p = await raw(planner);
    try {
      expect(await sendStep1(p, planner, auditor.agentId, auditor.certificate)).toEqual(ROUTE_DENIED);
      expect(await storedSerial(auditor.agentId)).toBeUndefined();
      expect(await auditOutcomes(auditor.agentId)).toEqual(['rejected:policy_denied']);
    } finally {
      p.close();
    }
  });

  it('a recipient the gateway knows (live, or seen and offline): a damaged certificate attached is ignored, unverified', async () => {
    const planner = world.agent(id('planner-e'), { agentType: 'planner' });
    const worker = world.agent(id('worker-e'));
    const other = world.agent(id('worker-e-other'));
    const damaged = { ...worker.certificate, signature: new Uint8Array(64) };
    const p = await raw(planner);
    try {
      const w = await raw(worker);
      // Accepted and relayed (DELIVERED, or QUEUED while the new stream's backlog drain has not finished yet).
      expect((await sendStep1(p, planner, worker.agentId, damaged)).code).toBe('accepted');
      expect((await sendStep1(p, planner, worker.agentId, other.certificate)).code).toBe('accepted');
      await waitFor(() => deliveries(w).length === 2, 10_000, 'both step 1 frames');
      for (const r of deliveries(w)) if (r.kind.case === 'delivery') w.ack(r.kind.value.deliveryId);
      w.close();
      await w.ended;
      await waitFor(() => !gw.gateway.connectedAgents().includes(worker.agentId), 5_000, 'worker gone');
      expect(await sendStep1(p, planner, worker.agentId, damaged)).toEqual(QUEUED);
      expect(await sendStep1(p, planner, worker.agentId, other.certificate)).toEqual(QUEUED);
      expect(await storedSerial(worker.agentId)).toBe(hex(worker.certificate.serial)); // its own, untouched
      expect(world.logs.some((l) => l['event'] === 'security' && l['peer'] === worker.agentId)).toBe(false);
    } finally {
      p.close();
    }
  });

  it('the agent’s own certificate wins: its connect replaces an introduced one, which is never written over its own', async () => {
    const planner = world.agent(id('planner-f'), { agentType: 'planner' });
    const introduced = world.agent(id('worker-f')); // the certificate the sender got from the registry
    const own = world.agent(id('worker-f')); // the agent's newer one (a re-issue, a rotation)
    const p = await raw(planner);
    try {
      expect(await sendStep1(p, planner, introduced.agentId, introduced.certificate)).toEqual(QUEUED);
      expect(await storedSerial(own.agentId)).toBe(hex(introduced.certificate.serial));
      const w = await raw(own);
      expect(await storedSerial(own.agentId)).toBe(hex(own.certificate.serial));
      await waitFor(() => deliveries(w).length === 1, 10_000, 'the queued step 1');
      for (const r of deliveries(w)) if (r.kind.case === 'delivery') w.ack(r.kind.value.deliveryId);
      w.close();
      await w.ended;
      await waitFor(() => !gw.gateway.connectedAgents().includes(own.agentId), 5_000, 'worker gone');
      // Offline again: the older certificate attached is ignored (the gateway knows the agent), its own stays.
      expect(await sendStep1(p, planner, own.agentId, introduced.certificate)).toEqual(QUEUED);
      expect(await storedSerial(own.agentId)).toBe(hex(own.certificate.serial));
    } finally {
      p.close();
    }
  });

  it('a stored certificate that no longer verifies (expired) is replaced by a valid one introduced; its presence is left alone', async () => {
    const planner = world.agent(id('planner-g'), { agentType: 'planner' });
    const shortLived = world.agent(id('worker-g'), { validUntilMs: Date.now() + 1_500 });
    const renewed = world.agent(id('worker-g'));
    const w = await raw(shortLived);
    w.close();
    await w.ended;
    const p = await raw(planner);
    try {
      await sleep(Math.max(0, Number(shortLived.certificate.validUntilMs) - Date.now() + 100));
      await waitFor(async () => (await gw.mailbox.presence('none', 1000)).every((x) => x.agentId !== shortLived.agentId), 5_000, 'presence cleared');
      expect(await sendStep1(p, planner, renewed.agentId)).toEqual(ROUTE_DENIED); // its last certificate expired
      expect(await sendStep1(p, planner, renewed.agentId, renewed.certificate)).toEqual(QUEUED);
      expect(await storedSerial(renewed.agentId)).toBe(hex(renewed.certificate.serial));
      expect((await gw.mailbox.presence('none', 1000)).map((x) => x.agentId)).not.toContain(renewed.agentId);
    } finally {
      p.close();
    }
  });

  it('unary Send carries it the same way (recipient_certificate is outside the signed layout)', async () => {
    const planner = world.agent(id('planner-h'), { agentType: 'planner' });
    const worker = world.agent(id('worker-h'));
    const expired = world.agent(id('worker-h-expired'), { validFromMs: Date.now() - 2 * DAY, validUntilMs: Date.now() - DAY });
    const client = createClient(AgentGatewayService, gw.address, credentials.createInsecure());
    const send = (to: string, certificate?: AgentCertificate) =>
      client.send({ ...buildSendRequest(world.crypto, planner, GATEWAY_ID, { case: 'handshake', value: step1(planner, to) }), ...(certificate === undefined ? {} : { recipientCertificate: certificate }) });
    const refusal = async (promise: Promise<unknown>): Promise<RpcError> => {
      const error = await promise.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(RpcError);
      return error as RpcError;
    };
    try {
      expect((await refusal(send(worker.agentId))).code).toBe('policy_denied');
      const expiredRefusal = await refusal(send(expired.agentId, expired.certificate));
      expect(expiredRefusal.code).toBe('expired');
      expect(expiredRefusal.details).toContain('recipient_certificate refused: certificate expired');
      expect(await storedSerial(expired.agentId)).toBeUndefined();
      expect((await refusal(send(worker.agentId, world.agent(id('worker-h-other')).certificate))).code).toBe('identity_mismatch');
      expect((await send(worker.agentId, worker.certificate)).status).toBe(DeliveryStatus.QUEUED);
      expect(await storedSerial(worker.agentId)).toBe(hex(worker.certificate.serial));
      expect((await send(worker.agentId)).status).toBe(DeliveryStatus.QUEUED); // remembered
      expect(world.logs.some((l) => l['event'] === 'security' && l['stage'] === 'recipient_certificate' && l['code'] === 'expired' && l['peer'] === expired.agentId)).toBe(true);
    } finally {
      client.close();
    }
  });

  it('a refused recipient_certificate is told apart from a refusal of the sender’s own certificate: its own stage, the certificate in fields of its own', async () => {
    const honest = world.agent(id('planner-j'), { agentType: 'planner' });
    const revokedRecipient = world.agent(id('worker-j'));
    const revokedSender = world.agent(id('planner-j-revoked'), { agentType: 'planner' });
    const now = Date.now();
    world.revoke(
      { kind: 'serial', serial: revokedRecipient.certificate.serial, reason: 'key compromise', revokedAtMs: now },
      { kind: 'serial', serial: revokedSender.certificate.serial, reason: 'key compromise', revokedAtMs: now },
    );
    const client = createClient(AgentGatewayService, gw.address, credentials.createInsecure());
    const send = (from: Agent, to: string, certificate?: AgentCertificate): Promise<string> =>
      client
        .send({ ...buildSendRequest(world.crypto, from, GATEWAY_ID, { case: 'handshake', value: step1(from, to) }), ...(certificate === undefined ? {} : { recipientCertificate: certificate }) })
        .then(
          () => 'accepted',
          (e: unknown) => RpcError.from(e).code,
        );
    const counted = async (stage: string, code: string): Promise<number> =>
      (await gw.gateway.metrics.securityEvents.get()).values.find((v) => v.labels['stage'] === stage && v.labels['code'] === code)?.value ?? 0;
    const before = { introduced: await counted('recipient_certificate', 'revoked'), own: await counted('send', 'revoked') };
    try {
      expect(await send(honest, revokedRecipient.agentId, revokedRecipient.certificate)).toBe('revoked');
      expect(await send(revokedSender, revokedRecipient.agentId)).toBe('revoked');
      const revoked = (agent: Agent) => world.logs.filter((l) => l['event'] === 'security' && l['code'] === 'revoked' && l['agent'] === agent.agentId);
      // The honest sender is the actor of a line of the recipient_certificate stage, which names the certificate apart.
      expect(revoked(honest)).toHaveLength(1);
      expect(revoked(honest)[0]).toMatchObject({
        stage: 'recipient_certificate',
        serial: hex(honest.certificate.serial),
        peer: revokedRecipient.agentId,
        certificate_agent: revokedRecipient.agentId,
        certificate_serial: hex(revokedRecipient.certificate.serial),
      });
      // The sender whose own certificate is revoked: stage `send`, its own fields, no certificate_* fields.
      expect(revoked(revokedSender)).toHaveLength(1);
      expect(revoked(revokedSender)[0]).toMatchObject({ stage: 'send', serial: hex(revokedSender.certificate.serial) });
      expect(revoked(revokedSender)[0]).not.toHaveProperty('certificate_agent');
      // The metric tells them apart too.
      expect((await counted('recipient_certificate', 'revoked')) - before.introduced).toBe(1);
      expect((await counted('send', 'revoked')) - before.own).toBe(1);
    } finally {
      client.close();
    }
  });

  it.runIf(engine === 'postgres')('a "never seen" answer cached on one instance gives way when the recipient connects on another: an item without the certificate is forwarded', async () => {
    const planner = world.agent(id('planner-k'), { agentType: 'planner' });
    const worker = world.agent(id('worker-k'));
    const p1 = await raw(planner, gw);
    const p2 = await raw(planner, gw2!);
    try {
      // The SDK's first step 1 carries no certificate: gw2 caches "never seen" (30 s). Its resend with the
      // certificate reaches gw, which records it.
      expect(await sendStep1(p2, planner, worker.agentId)).toEqual(ROUTE_DENIED);
      expect(await sendStep1(p1, planner, worker.agentId, worker.certificate)).toEqual(QUEUED);
      const w = await raw(worker, gw);
      try {
        await waitFor(() => gw2!.gateway.instanceOf(worker.agentId) !== undefined, 10_000, 'gw2 hears that the worker is live on gw');
        // Within the 30 s: an envelope without the certificate through gw2 is forwarded to gw, not policy_denied
        // (which the SDK takes as final for an envelope).
        const rid = ++requestId;
        p2.send({ case: 'envelope', value: signedFakeEnvelope(world.crypto, planner, worker.agentId) }, rid);
        expect(await verdict(p2, rid)).toEqual({ code: 'accepted', message: '', status: DeliveryStatus.DELIVERED });
        await waitFor(() => deliveries(w).some((r) => r.kind.case === 'delivery' && r.kind.value.item.case === 'envelope'), 10_000, 'the envelope delivered');
      } finally {
        w.close();
      }
    } finally {
      p1.close();
      p2.close();
    }
  });

  it.runIf(engine === 'postgres')('another instance sharing the database routes to the introduced recipient without the certificate', async () => {
    const planner = world.agent(id('planner-i'), { agentType: 'planner' });
    const worker = world.agent(id('worker-i'));
    const p1 = await raw(planner, gw);
    const p2 = await raw(planner, gw2!);
    try {
      expect(await sendStep1(p1, planner, worker.agentId, worker.certificate)).toEqual(QUEUED);
      expect(await storedSerial(worker.agentId, gw2!)).toBe(hex(worker.certificate.serial));
      // gw2 never looked this recipient up: it reads the certificate gw recorded, and needs none attached.
      expect(await sendStep1(p2, planner, worker.agentId)).toEqual(QUEUED);
      // A recipient gw2 has just answered as never seen (and cached so for up to 30 s): with the certificate attached it
      // is verified there, and the row gw records meanwhile is kept as it is.
      const fresh = world.agent(id('worker-i2'));
      expect(await sendStep1(p2, planner, fresh.agentId)).toEqual(ROUTE_DENIED);
      expect(await sendStep1(p1, planner, fresh.agentId, fresh.certificate)).toEqual(QUEUED);
      expect(await sendStep1(p2, planner, fresh.agentId, fresh.certificate)).toEqual(QUEUED);
      expect(await sendStep1(p2, planner, fresh.agentId)).toEqual(QUEUED);
      expect(await storedSerial(fresh.agentId)).toBe(hex(fresh.certificate.serial));
      // The recipient connects to gw2 and gets what gw stored.
      const w = await raw(fresh, gw2!);
      try {
        await waitFor(() => deliveries(w).length === 3, 10_000, 'the three step 1 frames');
      } finally {
        w.close();
      }
    } finally {
      p1.close();
      p2.close();
    }
  });
});

describe('first contact costs what it may: replies and the quotas', () => {
  let gw: RunningGateway;
  let requestId = 0n;
  beforeAll(async () => {
    const dir = tempDir('gw-first-contact-bounds');
    dirs.push(dir);
    // A tight per-agent rate: 1 item/s, burst 3.
    gw = await world.start({ database: { dataDir: dir.path }, rateLimit: { ratePerSecond: 1, burst: 3 } });
  });
  afterAll(async () => {
    await gw?.close();
  });

  const step1 = (from: Agent, to: string): HandshakeFrame => InitiatorHandshake.start(world.crypto, { identity: from, trustBundle: world.trustBundle }, to).frame;

  /** The audit outcomes recorded for items to `recipientId`. */
  async function auditOutcomes(recipientId: string): Promise<string[]> {
    const outcomes: string[] = [];
    for (let i = 0; i < gw.audit.size; i++) {
      const e = await gw.audit.entry(i);
      if (e.recipientId === recipientId) outcomes.push(e.outcome);
    }
    return outcomes;
  }

  /** Sends `frame` `n` times on `s` (with `extra` spread into each Outbound); how many of each answer. */
  async function sendMany(s: RawStream, frame: HandshakeFrame, n: number, extra: object = {}): Promise<Record<string, number>> {
    const first = requestId + 1n;
    for (let i = 0; i < n; i++) s.send({ case: 'handshake', value: frame }, ++requestId, { quiet: false, ...extra });
    const last = requestId;
    const mine = (r: ConnectResponse): boolean => (r.kind.case === 'accepted' || r.kind.case === 'rejected') && r.kind.value.requestId >= first && r.kind.value.requestId <= last;
    await waitFor(() => s.responses.filter(mine).length === n, 20_000, `${n} answers`);
    const codes: Record<string, number> = {};
    for (const r of s.responses.filter(mine)) {
      const code = r.kind.case === 'rejected' ? r.kind.value.code : 'accepted';
      codes[code] = (codes[code] ?? 0) + 1;
    }
    return codes;
  }

  it('a reply, charged to nobody, never has a recipient_certificate read, and a refused one cannot be sent again for free', async () => {
    // Agents that only ever use unary Send: the gateway holds no certificate of them, so a reply to them is refused.
    const u1 = world.agent('planner-bounds-u1', { agentType: 'planner' });
    const u2 = world.agent('planner-bounds-u2', { agentType: 'planner' });
    const v = world.agent('worker-bounds-v');
    const vs = await rawStream(world.crypto, gw.address, v);
    const client = createClient(AgentGatewayService, gw.address, credentials.createInsecure());
    const N = 30;
    try {
      for (const [u, extra] of [
        // A step 2 with a certificate of someone else attached (identity_mismatch, after an Ed25519 check, if read).
        [u1, { recipientCertificate: world.agent('someone-else-bounds').certificate }],
        // The same without one: refused policy_denied past the rate-limit step.
        [u2, {}],
      ] as const) {
        const frame = step1(u, v.agentId);
        expect((await client.send(buildSendRequest(world.crypto, u, GATEWAY_ID, { case: 'handshake', value: frame }))).status).toBe(DeliveryStatus.DELIVERED);
        await waitFor(() => vs.responses.some((r) => r.kind.case === 'delivery' && r.kind.value.item.case === 'handshake' && r.kind.value.item.value.senderId === u.agentId), 5_000, 'step 1 delivered');
        const { frame: f2 } = ResponderHandshake.accept(world.crypto, { identity: v, trustBundle: world.trustBundle }, frame);
        const codes = await sendMany(vs, f2, N, extra);
        // The first answers the step 1 (uncharged) and uses up its allowance although it is refused; the others answer
        // nothing, so they are charged (3 tokens at most, a cheap refusal) and then rate_limited.
        expect(codes['identity_mismatch'], JSON.stringify(codes)).toBeUndefined();
        expect(codes['policy_denied'], JSON.stringify(codes)).toBeLessThanOrEqual(5);
        expect(codes['rate_limited'], JSON.stringify(codes)).toBeGreaterThanOrEqual(N - 5);
        // One audit entry for the refusals (the uncharged one), not one per copy (the step 1's own is addressed to v).
        expect(await auditOutcomes(u.agentId)).toEqual(['rejected:policy_denied']);
      }
      expect(world.logs.some((l) => l['event'] === 'security' && l['stage'] === 'recipient_certificate' && l['agent'] === v.agentId)).toBe(false);
    } finally {
      client.close();
      vs.close();
    }
  });

  it('the mailbox quotas count what is stored: the item, not the recipient_certificate (nor the request) around it', async () => {
    const planner = world.agent('planner-bounds-q', { agentType: 'planner' });
    const worker = world.agent('worker-bounds-q');
    const size = encodeItem({ case: 'handshake', value: step1(planner, worker.agentId) }).bytes.length; // every step 1 of the pair
    const dir = tempDir('gw-first-contact-quota');
    dirs.push(dir);
    // Room for exactly two step 1 frames of this pair.
    const q = await world.start({ database: { dataDir: dir.path }, mailboxQuota: { perRecipientBytes: 2 * size, perSenderBytes: 2 * size } });
    const p = await rawStream(world.crypto, q.address, planner);
    const send = async (certificate?: AgentCertificate): Promise<string> => {
      const rid = ++requestId;
      p.send({ case: 'handshake', value: step1(planner, worker.agentId) }, rid, { quiet: false, ...(certificate === undefined ? {} : { recipientCertificate: certificate }) });
      const answer = (r: ConnectResponse): boolean => (r.kind.case === 'accepted' || r.kind.case === 'rejected') && r.kind.value.requestId === rid;
      await waitFor(() => p.responses.some(answer), 10_000, `answer ${rid}`);
      const r = p.responses.find(answer)!;
      return r.kind.case === 'rejected' ? r.kind.value.code : 'accepted';
    };
    try {
      expect(await send(worker.certificate)).toBe('accepted'); // first contact: stored with the certificate attached
      expect(await send()).toBe('accepted'); // remembered: the second fits exactly
      expect(await send()).toBe('quota_exceeded');
      expect(await q.mailbox.usage('recipient', worker.agentId)).toEqual({ items: 2, bytes: 2 * size });
    } finally {
      p.close();
      await q.close();
    }
  });
});
