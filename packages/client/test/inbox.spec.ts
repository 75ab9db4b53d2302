// The inbox on its own (no gateway): two SessionManagers wired back to back seal real envelopes, a
// stand-in for the gateway stream records acks and receipts. Covers the back-pressure bound
// (`maxUnacked`), the hand-over with and without a journal, and duplicates.
import { toHex, type ParleyCrypto } from '@parley/crypto-core';
import type { MemoryRevocationSet, TrustBundle } from '@parley/identity';
import { MessageType, type DeliveryReceipt, type HandshakeFrame, type SecureMessage } from '@parley/proto';
import { SessionManager, type LocalIdentity, type Session } from '@parley/session';
import { beforeAll, describe, expect, it } from 'vitest';
import type { AgentEvent, ConnectOptions, ReceivedMessage } from '../src/agent-options.js';
import type { GatewayConnection } from '../src/connection.js';
import { Inbox } from '../src/inbox.js';
import type { JournalRecord } from '../src/journal.js';
import { Lifecycle } from '../src/lifecycle.js';
import { isClientError, verifyReceiptSignature } from '../src/index.js';
import { testWorld } from './world.js';

let crypto: ParleyCrypto;
let alice: LocalIdentity & { publicKey: Uint8Array };
let bob: LocalIdentity & { publicKey: Uint8Array };
let trustBundle: TrustBundle;
let revocations: MemoryRevocationSet;

beforeAll(async () => {
  const world = await testWorld();
  ({ crypto, trustBundle, revocations } = world);
  alice = world.agent('alice');
  bob = world.agent('bob');
});

/** Alice's session to Bob and Bob's manager (the one the inbox opens with). */
async function pair(): Promise<{ session: Session; sender: SessionManager; recipient: SessionManager }> {
  const managers: { a?: SessionManager; b?: SessionManager } = {};
  const make = (identity: LocalIdentity, peer: () => SessionManager): SessionManager =>
    new SessionManager({
      crypto,
      handshake: { identity, trustBundle, revocations },
      transport: { sendFrame: (frame: HandshakeFrame) => void peer().handleFrame(frame).catch(() => undefined) },
    });
  managers.a = make(alice, () => managers.b!);
  managers.b = make(bob, () => managers.a!);
  const session = await managers.a.session(bob.agentId);
  return { session, sender: managers.a, recipient: managers.b };
}

/** The gateway stream, as the inbox uses it: acks (on their own or carried by a reply) and receipts are recorded. */
function stream(): { conn: GatewayConnection; acked: bigint[]; receipts: DeliveryReceipt[] } {
  const acked: bigint[] = [];
  const receipts: DeliveryReceipt[] = [];
  const conn = {
    isOpen: true,
    ack: (id: bigint) => void acked.push(id),
    // A receipt or session reject with the ack of its delivery in the same frame (§10.3).
    sendReply: (item: { case: string; value: unknown }, deliveryId?: bigint) => {
      if (item.case === 'receipt') receipts.push(item.value as DeliveryReceipt);
      if (deliveryId !== undefined) acked.push(deliveryId);
    },
  } as unknown as GatewayConnection;
  return { conn, acked, receipts };
}

function inbox(recipient: SessionManager, conn: GatewayConnection, options: { maxUnacked?: number; durable?: boolean; record?: (r: JournalRecord[]) => Promise<void> } = {}) {
  const handed: ReceivedMessage[] = [];
  const events: AgentEvent[] = [];
  const records: JournalRecord[][] = [];
  const lifecycle = new Lifecycle();
  const box = new Inbox({
    crypto,
    lifecycle,
    options: { identity: bob, ...(options.maxUnacked === undefined ? {} : { maxUnacked: options.maxUnacked }) } as unknown as ConnectOptions,
    manager: recipient,
    record:
      options.record ??
      ((r) => {
        records.push(r);
        return Promise.resolve();
      }),
    durable: options.durable ?? false,
    emit: (e) => void events.push(e),
    captured: (fn) => {
      fn();
      return [];
    },
    connection: () => conn,
    deliver: (m) => void handed.push(m),
    hold: () => true,
  });
  return { box, handed, events, records, lifecycle };
}

const seal = async (sender: SessionManager, session: Session, n: number): Promise<SecureMessage> =>
  (await sender.sealIn(session, { type: MessageType.STATUS_UPDATE, content: { n } })).envelope;

describe('inbox', () => {
  it('holds at most maxUnacked messages for the application: beyond it a delivery is left unacknowledged and tried again once one is acked', async () => {
    const { session, sender, recipient } = await pair();
    const { conn, acked, receipts } = stream();
    const { box, handed } = inbox(recipient, conn, { maxUnacked: 2 });
    const envelopes = [await seal(sender, session, 0), await seal(sender, session, 1), await seal(sender, session, 2)];
    envelopes.forEach((e, i) => box.onEnvelope(e, conn, BigInt(i)));
    await box.handedOver();
    // Handed over in order; the third is refused (back-pressure): not acked, and kept to be tried again (a gateway
    // never writes a delivery to the same stream twice).
    expect(handed.map((m) => m.content)).toEqual([{ n: 0 }, { n: 1 }]);
    expect(acked).toEqual([]);
    box.retryDeferred(); // the tick: still no room
    await box.handedOver();
    expect(handed).toHaveLength(2);
    await handed[0]!.ack();
    expect(acked).toEqual([0n]);
    expect(receipts).toHaveLength(1);
    expect(verifyReceiptSignature(crypto, receipts[0]!, bob.publicKey)).toBe(true);
    expect(toHex(receipts[0]!.messageHash)).toBe(toHex(handed[0]!.messageHash));
    // The next tick: now there is room.
    box.retryDeferred();
    await box.handedOver();
    expect(handed.map((m) => m.content)).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }]);
    // A second ack of the same message changes nothing; the bound counts only unacknowledged ones.
    await handed[0]!.ack();
    expect(receipts).toHaveLength(1);
    box.onEnvelope(await seal(sender, session, 3), conn, 4n);
    await box.handedOver();
    expect(handed).toHaveLength(3); // two unacknowledged again
    await handed[1]!.ack();
    await handed[2]!.ack();
    box.retryDeferred();
    await box.handedOver();
    expect(handed.map((m) => m.content)).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }, { n: 3 }]);
    await handed[3]!.ack();
    expect(acked).toEqual([0n, 1n, 2n, 4n]); // each delivery acked once, on the stream it came on
    sender.close();
    recipient.close();
  });

  it('a delivery arriving while older ones wait for capacity waits behind them: the application gets them in arrival order', async () => {
    const { session, sender, recipient } = await pair();
    const { conn } = stream();
    const { box, handed } = inbox(recipient, conn, { maxUnacked: 1 });
    box.onEnvelope(await seal(sender, session, 0), conn, 1n);
    box.onEnvelope(await seal(sender, session, 1), conn, 2n); // no room: deferred
    await box.handedOver();
    await handed[0]!.ack(); // room again, before the tick tries the deferred one
    box.onEnvelope(await seal(sender, session, 2), conn, 3n);
    await box.handedOver();
    expect(handed.map((m) => m.content)).toEqual([{ n: 0 }]); // not handed over ahead of n = 1
    box.retryDeferred();
    await box.handedOver();
    expect(handed.map((m) => m.content)).toEqual([{ n: 0 }, { n: 1 }]);
    await handed[1]!.ack();
    box.retryDeferred();
    await box.handedOver();
    expect(handed.map((m) => m.content)).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }]);
    sender.close();
    recipient.close();
  });

  it('a deferred delivery of a stream that has closed is not tried again (the next stream gets it again)', async () => {
    const { session, sender, recipient } = await pair();
    const first = stream();
    const { box, handed } = inbox(recipient, first.conn, { maxUnacked: 1 });
    box.onEnvelope(await seal(sender, session, 0), first.conn, 1n);
    box.onEnvelope(await seal(sender, session, 1), first.conn, 2n);
    await box.handedOver();
    expect(handed).toHaveLength(1);
    (first.conn as { isOpen: boolean }).isOpen = false;
    await handed[0]!.ack();
    box.retryDeferred();
    await box.handedOver();
    expect(handed).toHaveLength(1);
    sender.close();
    recipient.close();
  });

  it('a delivery of a message already handed over is acked with it; one already acknowledged gets its receipt again', async () => {
    const { session, sender, recipient } = await pair();
    const { conn, acked, receipts } = stream();
    const other = stream();
    const { box, handed, events } = inbox(recipient, conn);
    const envelope = await seal(sender, session, 7);
    box.onEnvelope(envelope, conn, 1n);
    box.onEnvelope(envelope, other.conn, 2n); // the same envelope again on another stream before the application acked
    await box.handedOver();
    expect(handed).toHaveLength(1);
    expect(acked).toEqual([]);
    expect(other.acked).toEqual([]);
    await handed[0]!.ack();
    expect(acked).toEqual([1n]); // carried by the receipt
    expect(other.acked).toEqual([2n]);
    box.onEnvelope(envelope, conn, 3n); // and after
    expect(acked).toEqual([1n, 3n]);
    expect(receipts).toHaveLength(2);
    expect(events.some((e) => e.kind === 'duplicate' && e.item === 'envelope')).toBe(true);
    expect(handed).toHaveLength(1);
    sender.close();
    recipient.close();
  });

  it('builds journal records only with a journal, and then hands a message over only once its record is written', async () => {
    const { session, sender, recipient } = await pair();
    const { conn } = stream();
    const plain = inbox(recipient, conn);
    plain.box.onEnvelope(await seal(sender, session, 1), conn, 1n);
    await plain.box.handedOver();
    await plain.handed[0]!.ack();
    expect(plain.records).toEqual([]);

    const second = await pair();
    let release!: () => void;
    const written = new Promise<void>((resolve) => (release = resolve));
    const records: JournalRecord[][] = [];
    const durable = inbox(second.recipient, conn, {
      durable: true,
      record: (r) => {
        records.push(r);
        return r[0]!.t === 'in' ? written : Promise.resolve();
      },
    });
    durable.box.onEnvelope(await seal(second.sender, second.session, 2), conn, 2n);
    expect(records.map((r) => r[0]!.t)).toEqual(['in']);
    await Promise.resolve();
    expect(durable.handed).toHaveLength(0); // not before its record is durable
    release();
    await durable.box.handedOver();
    expect(durable.handed.map((m) => m.content)).toEqual([{ n: 2 }]);
    await durable.handed[0]!.ack();
    expect(records.map((r) => r[0]!.t)).toEqual(['in', 'in_done']);
    for (const m of [sender, recipient, second.sender, second.recipient]) m.close();
  });

  it('keeps one delivery per stream of a message not yet acknowledged: further copies on that stream are acked at once, ended streams are dropped', async () => {
    const { session, sender, recipient } = await pair();
    const first = stream();
    const second = stream();
    const { box, handed } = inbox(recipient, first.conn);
    const envelope = await seal(sender, session, 8);
    box.onEnvelope(envelope, first.conn, 1n);
    await box.handedOver();
    // The sender resends while the application holds the message: each copy is a new delivery on the stream.
    const resends = Array.from({ length: 50 }, (_, i) => BigInt(i + 2));
    for (const id of resends) box.onEnvelope(envelope, first.conn, id);
    expect(first.acked).toEqual(resends); // the first delivery stays unacknowledged until the application acks
    (first.conn as { isOpen: boolean }).isOpen = false; // the stream ends; the next one gets the envelope again
    box.onEnvelope(envelope, second.conn, 100n);
    box.onEnvelope(envelope, second.conn, 101n);
    expect(second.acked).toEqual([101n]);
    // At most 16 streams' deliveries are kept: a copy beyond them is acked at once.
    const more = Array.from({ length: 20 }, () => stream());
    more.forEach((s, i) => box.onEnvelope(envelope, s.conn, BigInt(200 + i)));
    expect(more.filter((s) => s.acked.length > 0)).toHaveLength(5);
    await handed[0]!.ack();
    expect(second.acked).toEqual([101n, 100n]);
    expect(first.acked).toEqual(resends); // nothing more on the stream that ended
    expect(more.every((s) => s.acked.length === 1)).toBe(true);
    expect(handed).toHaveLength(1);
    sender.close();
    recipient.close();
  });

  it('an ack after the agent closed is refused (cancelled) and records nothing: the message stays in the journal for the next run', async () => {
    const { session, sender, recipient } = await pair();
    const { conn, acked, receipts } = stream();
    const { box, handed, records, lifecycle } = inbox(recipient, conn, { durable: true });
    box.onEnvelope(await seal(sender, session, 9), conn, 1n);
    await box.handedOver();
    lifecycle.closed = true;
    await expect(handed[0]!.ack()).rejects.toSatisfy((e) => isClientError(e, 'cancelled'));
    expect(records.map((r) => r[0]!.t)).toEqual(['in']);
    expect(acked).toEqual([]);
    expect(receipts).toEqual([]);
    expect(box.records().map((r) => r.t)).toEqual(['in']); // still unacknowledged: the last compaction keeps it
    sender.close();
    recipient.close();
  });

  it('a message whose ack is being recorded is in a compaction snapshot as acknowledged (with its receipt), not dropped', async () => {
    const { session, sender, recipient } = await pair();
    const { conn } = stream();
    const written = deferred();
    const { box, handed } = inbox(recipient, conn, { durable: true, record: (r) => (r[0]!.t === 'in_done' ? written.promise : Promise.resolve()) });
    box.onEnvelope(await seal(sender, session, 10), conn, 1n);
    await box.handedOver();
    const hash = toHex(handed[0]!.messageHash);
    const acking = handed[0]!.ack();
    expect(box.records()).toEqual([expect.objectContaining({ t: 'in_done', hash })]);
    written.resolve();
    await acking;
    expect(box.records()).toEqual([expect.objectContaining({ t: 'in_done', hash })]);
    sender.close();
    recipient.close();
  });

  it('a receipt sent again after a second key rotation is signed with the current key and carries the current certificate (the gateway relays only that one, §17.8)', async () => {
    const world = await testWorld();
    const { session, sender, recipient } = await pair();
    const { conn, receipts } = stream();
    // Bob after one rotation: its receipts carry that certificate. Then rotated again (and restarted): the stored
    // receipt's certificate is neither the stream's nor standing.
    const first = world.agent('bob');
    const second = world.agent('bob');
    let identity: typeof first = first;
    const options = {
      get identity() {
        return identity;
      },
    } as unknown as ConnectOptions;
    const handed: ReceivedMessage[] = [];
    const box = new Inbox({
      crypto,
      lifecycle: new Lifecycle(),
      options,
      manager: recipient,
      record: () => Promise.resolve(),
      durable: false,
      emit: () => undefined,
      captured: (fn) => (fn(), []),
      connection: () => conn,
      deliver: (m) => void handed.push(m),
      hold: () => true,
      signerCertificate: () => identity.certificate,
    });
    const envelope = await seal(sender, session, 0);
    box.onEnvelope(envelope, conn, 1n);
    await box.handedOver();
    await handed[0]!.ack();
    expect(toHex(receipts[0]!.signerCertificate!.serial)).toBe(toHex(first.certificate.serial));
    box.onEnvelope(envelope, conn, 2n); // the sender's resend, the receipt lost: sent again as it was
    expect(receipts[1]).toBe(receipts[0]);
    identity = second;
    box.onEnvelope(envelope, conn, 3n);
    const again = receipts[2]!;
    expect(toHex(again.signerCertificate!.serial)).toBe(toHex(second.certificate.serial));
    expect(verifyReceiptSignature(crypto, again, second.publicKey)).toBe(true);
    expect([toHex(again.messageHash), again.senderId, again.receivedAtMs]).toEqual([toHex(receipts[0]!.messageHash), receipts[0]!.senderId, receipts[0]!.receivedAtMs]);
    box.onEnvelope(envelope, conn, 4n); // signed again once, then kept
    expect(receipts[3]).toBe(again);
    sender.close();
    recipient.close();
  });
});

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
