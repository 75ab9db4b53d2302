// A SessionReject reseals only the envelope it names (§17.4): a gateway that drops a receipt and holds a later
// envelope of the same session until the recipient's copy of the session idles out must not make the recipient's
// application take the first message twice. Review finding: every pending send of the session was resealed,
// including one the recipient had already taken (its receipt dropped), so its application got it again, unflagged.
import { fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import type { MemoryRevocationSet, TrustBundle } from '@parley/identity';
import { DeliveryStatus, MessageType, type DeliveryReceipt, type HandshakeFrame, type SecureMessage, type SessionReject } from '@parley/proto';
import { SessionManager, type LocalIdentity } from '@parley/session';
import { signReceipt } from '@parley/protocol';
import { beforeAll, expect, it } from 'vitest';
import type { AgentEvent, ConnectOptions, ReceivedMessage } from '../src/agent-options.js';
import type { GatewayConnection } from '../src/connection.js';
import { Inbox } from '../src/inbox.js';
import { Lifecycle } from '../src/lifecycle.js';
import { Outbox } from '../src/outbox.js';
import { testWorld } from './world.js';

let crypto: ParleyCrypto;
let alice: LocalIdentity;
let bob: LocalIdentity;
let trustBundle: TrustBundle;
let revocations: MemoryRevocationSet;

beforeAll(async () => {
  const world = await testWorld();
  ({ crypto, trustBundle, revocations } = world);
  alice = world.agent('alice');
  bob = world.agent('bob');
});

it('a verified SessionReject reseals the envelope it names, not the session\'s others (one taken before the session ended is not delivered twice)', async () => {
  let bobOffset = 0;
  const bobClock = () => Date.now() + bobOffset;
  const m: { a?: SessionManager; b?: SessionManager } = {};
  m.a = new SessionManager({ crypto, handshake: { identity: alice, trustBundle, revocations }, transport: { sendFrame: (f: HandshakeFrame) => void m.b!.handleFrame(f).catch(() => undefined) } });
  m.b = new SessionManager({ crypto, clock: bobClock, handshake: { identity: bob, trustBundle, revocations }, transport: { sendFrame: (f: HandshakeFrame) => void m.a!.handleFrame(f).catch(() => undefined) } });

  // The gateway: what Alice relays is queued here; it decides what reaches Bob.
  const toBob: SecureMessage[] = [];
  const aliceConn = { isOpen: true, sendEnvelope: (e: SecureMessage) => (toBob.push(e), Promise.resolve({ status: DeliveryStatus.DELIVERED })) } as unknown as GatewayConnection;
  const receiptsToAlice: DeliveryReceipt[] = [];
  const rejectsToAlice: SessionReject[] = [];
  const bobConn = {
    isOpen: true,
    ack: () => undefined,
    sendReply: (item: { case: string; value: unknown }) => {
      if (item.case === 'receipt') receiptsToAlice.push(item.value as DeliveryReceipt);
      if (item.case === 'sessionReject') rejectsToAlice.push(item.value as SessionReject);
    },
  } as unknown as GatewayConnection;

  const aliceEvents: AgentEvent[] = [];
  const outbox = new Outbox({ crypto, options: { identity: alice } as unknown as ConnectOptions, manager: m.a, lifecycle: new Lifecycle(), record: () => Promise.resolve(), durable: true, emit: (e) => void aliceEvents.push(e), connection: () => aliceConn });
  const handed: ReceivedMessage[] = [];
  const inbox = new Inbox({
    crypto, lifecycle: new Lifecycle(), options: { identity: bob } as unknown as ConnectOptions, manager: m.b, record: () => Promise.resolve(), durable: false,
    emit: () => undefined, captured: (fn) => (fn(), []), connection: () => bobConn, deliver: (x) => void handed.push(x), hold: () => true,
  });

  // 1. Alice sends M2; the gateway delivers it; Bob's application acks; the gateway DROPS Bob's receipt.
  const e2 = await outbox.enqueue('bob', MessageType.STATUS_UPDATE, { m: 'M2: transfer $100' }, {});
  await new Promise((r) => setTimeout(r, 10));
  inbox.onEnvelope(toBob.shift()!, bobConn, 1n);
  await inbox.handedOver();
  await handed[0]!.ack();
  expect(receiptsToAlice).toHaveLength(1);
  receiptsToAlice.length = 0; // dropped by the gateway

  // 2. Alice sends M1 in the same session; the gateway holds it.
  const e1 = await outbox.enqueue('bob', MessageType.STATUS_UPDATE, { m: 'M1' }, {});
  await new Promise((r) => setTimeout(r, 10));
  const heldE1 = toBob.splice(0).find((e) => toHex(e.sessionId) === e1.sessionIdHex)!;
  expect(e1.sessionIdHex).toBe(e2.sessionIdHex);

  // 3. Bob's copy of the session idles out (no traffic reached him for 31 min: the gateway dropped/delayed it).
  bobOffset = 31 * 60_000;
  m.b.tick();
  expect(m.b.sessionById(e1.sessionIdHex)).toBeUndefined();

  // 4. The gateway releases E1: Bob answers with a genuine, signed SessionReject; it reaches Alice.
  inbox.onEnvelope(heldE1, bobConn, 2n);
  expect(rejectsToAlice).toHaveLength(1);
  outbox.onSessionReject(rejectsToAlice[0]!);
  await new Promise((r) => setTimeout(r, 200)); // handshake + reseal of every pending send of the session

  // 5. Only M1 is resealed; M2 keeps its envelope. Deliver what Alice relayed.
  expect(aliceEvents.filter((e) => e.kind === 'resealed').map((e) => (e as { messages: number }).messages)).toEqual([1]);
  for (const [i, e] of toBob.splice(0).entries()) inbox.onEnvelope(e, bobConn, 10n + BigInt(i));
  await inbox.handedOver();
  expect(handed.map((x) => (x.content as { m: string }).m)).toEqual(['M2: transfer $100', 'M1']);
  await handed[1]!.ack();
  // 6. M2's resend (the same bytes, as the outbox's timer sends it) reaches Bob: his receipt store answers with the
  // receipt again, which settles M2 at Alice; M1's receipt settles M1.
  outbox.onTick(Date.now() + 120_000, true);
  await new Promise((r) => setTimeout(r, 20));
  const resent = toBob.splice(0);
  expect(resent.map((e) => toHex(e.sessionId))).toContain(e2.sessionIdHex);
  for (const [i, e] of resent.entries()) inbox.onEnvelope(e, bobConn, 20n + BigInt(i));
  await inbox.handedOver();
  expect(handed).toHaveLength(2); // nothing handed over twice
  for (const r of receiptsToAlice.splice(0)) outbox.onReceipt(r);
  const settled = aliceEvents.filter((e) => e.kind === 'send_settled') as { id: string; outcome: string }[];
  expect(new Set(settled.filter((e) => e.outcome === 'delivered').map((e) => e.id))).toEqual(new Set([e1.id, e2.id]));
  m.a.close();
  m.b.close();
});

it('an envelope of an unknown session no younger than a receipt the full store dropped gets no SessionReject (it may have been taken); a later one does', async () => {
  let bobOffset = 0;
  const m: { a?: SessionManager; b?: SessionManager } = {};
  m.a = new SessionManager({ crypto, handshake: { identity: alice, trustBundle, revocations }, transport: { sendFrame: (f: HandshakeFrame) => void m.b!.handleFrame(f).catch(() => undefined) } });
  m.b = new SessionManager({ crypto, clock: () => Date.now() + bobOffset, handshake: { identity: bob, trustBundle, revocations }, transport: { sendFrame: (f: HandshakeFrame) => void m.a!.handleFrame(f).catch(() => undefined) } });
  const toBob: SecureMessage[] = [];
  const aliceConn = { isOpen: true, sendEnvelope: (e: SecureMessage) => (toBob.push(e), Promise.resolve({ status: DeliveryStatus.DELIVERED })) } as unknown as GatewayConnection;
  const replies: { case: string; value: unknown }[] = [];
  const bobConn = { isOpen: true, ack: () => undefined, sendReply: (item: { case: string; value: unknown }) => void replies.push(item) } as unknown as GatewayConnection;
  const bobEvents: AgentEvent[] = [];
  const outbox = new Outbox({ crypto, options: { identity: alice } as unknown as ConnectOptions, manager: m.a, lifecycle: new Lifecycle(), record: () => Promise.resolve(), durable: true, emit: () => undefined, connection: () => aliceConn });
  const handed: ReceivedMessage[] = [];
  const inbox = new Inbox({
    crypto, lifecycle: new Lifecycle(), options: { identity: bob, skew: { maxAgeMs: 3_600_000, maxFutureSkewMs: 0 } } as unknown as ConnectOptions, manager: m.b, record: () => Promise.resolve(), durable: false,
    emit: (e) => void bobEvents.push(e), captured: (fn) => (fn(), []), connection: () => bobConn, deliver: (x) => void handed.push(x), hold: () => true, receiptStoreSize: 1,
  });
  // Bob takes A1 and A2 and acks both; the gateway drops both receipts.
  await outbox.enqueue('bob', MessageType.STATUS_UPDATE, { m: 'A1' }, {});
  await outbox.enqueue('bob', MessageType.STATUS_UPDATE, { m: 'A2' }, {});
  await new Promise((r) => setTimeout(r, 10));
  const [a1, a2] = toBob.splice(0);
  inbox.onEnvelope(a1!, bobConn, 1n);
  inbox.onEnvelope(a2!, bobConn, 2n);
  await inbox.handedOver();
  for (const h of handed) await h.ack();
  replies.length = 0;
  inbox.pruneReceipts(Date.now()); // the store holds one: A1's receipt goes, still within the message lifetime
  bobOffset = 31 * 60_000; // Bob's copy of the session idles out
  m.b.tick();
  // A1 again (its sender's resend): it may have been taken — no reject (a reseal would deliver it twice), acked.
  inbox.onEnvelope(a1!, bobConn, 3n);
  expect(replies).toEqual([]);
  expect(bobEvents.some((e) => e.kind === 'duplicate' && e.detail.includes('without a SessionReject'))).toBe(true);
  // A2 again: its receipt is still held and sent again.
  inbox.onEnvelope(a2!, bobConn, 4n);
  expect(replies.map((r) => r.case)).toEqual(['receipt']);
  // A3, sealed after the dropped receipt: it cannot have been taken — a SessionReject, and Alice reseals it.
  await new Promise((r) => setTimeout(r, 5));
  await outbox.enqueue('bob', MessageType.STATUS_UPDATE, { m: 'A3' }, {});
  await new Promise((r) => setTimeout(r, 10));
  inbox.onEnvelope(toBob.splice(0)[0]!, bobConn, 5n);
  expect(replies.map((r) => r.case)).toEqual(['receipt', 'sessionReject']);
  expect(handed.map((x) => (x.content as { m: string }).m)).toEqual(['A1', 'A2']);
  m.a.close();
  m.b.close();
});

it('a receipt or SessionReject signed under the recipient\'s rotated key verifies by the certificate it carries (same agent, trusted, valid), never by another agent\'s', async () => {
  const world = await testWorld();
  const alice2 = world.agent('alice');
  const bob2 = world.agent('bob');
  const bobRotated = world.agent('bob'); // the same agent id, a new key and certificate
  const mallory = world.agent('mallory');
  const m: { a?: SessionManager; b?: SessionManager } = {};
  m.a = new SessionManager({ crypto: world.crypto, handshake: { identity: alice2, trustBundle: world.trustBundle, revocations: world.revocations }, transport: { sendFrame: (f: HandshakeFrame) => void m.b!.handleFrame(f).catch(() => undefined) } });
  m.b = new SessionManager({ crypto: world.crypto, handshake: { identity: bob2, trustBundle: world.trustBundle, revocations: world.revocations }, transport: { sendFrame: (f: HandshakeFrame) => void m.a!.handleFrame(f).catch(() => undefined) } });
  const toBob: SecureMessage[] = [];
  const conn = { isOpen: true, sendEnvelope: (e: SecureMessage) => (toBob.push(e), Promise.resolve({ status: DeliveryStatus.DELIVERED })) } as unknown as GatewayConnection;
  const events: AgentEvent[] = [];
  const outbox = new Outbox({ crypto: world.crypto, options: { identity: alice2, trustBundle: world.trustBundle } as unknown as ConnectOptions, manager: m.a, lifecycle: new Lifecycle(), record: () => Promise.resolve(), durable: true, emit: (e) => void events.push(e), connection: () => conn });
  const entry = await outbox.enqueue('bob', MessageType.STATUS_UPDATE, { m: 'x' }, {});
  await new Promise((r) => setTimeout(r, 10));
  const receiptBy = (signer: typeof bob2, cert?: typeof bob2.certificate) => {
    const r = signReceipt(world.crypto, signer, { messageHash: fromHex(entry.hashHex), senderId: 'alice', receivedAtMs: Date.now() });
    if (cert !== undefined) r.signerCertificate = cert;
    return r;
  };
  const settled = () => events.filter((e) => e.kind === 'send_settled');
  outbox.onReceipt(receiptBy(bobRotated)); // the new key, no certificate: the session's key does not verify it
  outbox.onReceipt(receiptBy(bobRotated, mallory.certificate)); // another agent's certificate
  outbox.onReceipt(receiptBy(mallory, mallory.certificate));
  expect(settled()).toEqual([]);
  expect(events.filter((e) => e.kind === 'security').map((e) => (e as { code: string }).code)).toEqual(['bad_signature', 'bad_signature', 'identity_mismatch']);
  outbox.onReceipt(receiptBy(bobRotated, bobRotated.certificate)); // bob's current certificate: accepted
  expect(settled().map((e) => (e as { outcome: string }).outcome)).toEqual(['delivered']);
  m.a.close();
  m.b.close();
});
