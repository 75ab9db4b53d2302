/**
 * The durable inbox and the application's acknowledgement (docs/PROTOCOL.md §10.5, §17.3–§17.5): an
 * opened envelope is recorded (the same record marks its counter and hash in the replay window), handed
 * to the application in arrival order, and only the application's `ack()` signs the receipt, records it
 * and acks the gateway's deliveries. Receipts signed before are sent again when an envelope comes again;
 * an envelope that can never open is answered with a signed SessionReject.
 */
import { fromBase64Url, fromHex, toBase64Url, toHex, type ParleyCrypto } from '@parley/crypto-core';
import {
  AgentCertificateSchema,
  DeliveryReceiptSchema,
  MessagePayloadSchema,
  SecureMessageSchema,
  ValueSchema,
  fromBinary,
  toBinary,
  toJson,
  type AgentCertificate,
  type DeliveryReceipt,
  type JsonValue,
  type MessagePayload,
  type SecureMessage,
  type SessionReject,
} from '@parley/proto';
import {
  DEFAULT_SKEW,
  isSessionError,
  messageHash as computeMessageHash,
  messageHashOf,
  type EnvelopeDigest,
  type LocalIdentity,
  type OpenedMessage,
  type SessionManager,
  type SessionManagerEvent,
} from '@parley/session';
import { signReceipt, signSessionReject } from '@parley/protocol';
import { maxAgeMs, type AgentEvent, type ConnectOptions, type ReceivedMessage } from './agent-options.js';
import type { GatewayConnection } from './connection.js';
import { ClientError } from './errors.js';
import type { JournalRecord, JournalState } from './journal.js';
import type { Lifecycle } from './lifecycle.js';

const RECEIPT_STORE_SIZE = 100_000;
/** Most deliveries waiting to be tried again (beyond it, only a reconnect brings one back). */
const MAX_DEFERRED = 4096;
/** Most streams whose delivery of one unacknowledged message is kept to ack with the application's ack. */
const MAX_DELIVERIES_PER_MESSAGE = 16;

/** An envelope as the gateway delivered it on one stream (acked there once it is settled). */
export interface DeliveredEnvelope {
  readonly envelope: SecureMessage;
  readonly conn: GatewayConnection;
  readonly deliveryId: bigint;
}

/** One message in the inbox: opened, durable, handed to the application, not yet acknowledged. */
interface InboxEntry {
  readonly message: ReceivedMessage;
  readonly hashHex: string;
  /** Gateway deliveries of this envelope to ack once the application acks: one per open stream, at most MAX_DELIVERIES_PER_MESSAGE. */
  deliveries: { conn: GatewayConnection; id: bigint }[];
  acked: boolean;
  /** The receipt signed when the application acked, while its record is being written (a snapshot keeps it). */
  receipt: DeliveryReceipt | undefined;
}

/** What the inbox works with. */
export interface InboxDeps {
  readonly crypto: ParleyCrypto;
  readonly options: ConnectOptions;
  readonly manager: SessionManager;
  readonly lifecycle: Lifecycle;
  /** Appends journal records (fail closed). */
  readonly record: (records: JournalRecord[]) => Promise<void>;
  /** Whether there is a journal: without one no record is built and messages are handed over at once. */
  readonly durable: boolean;
  readonly emit: (event: AgentEvent) => void;
  /** Runs `fn`, returning the session events it emitted instead of forwarding them. */
  readonly captured: (fn: () => void) => SessionManagerEvent[];
  /** The gateway stream right now, if any. */
  readonly connection: () => GatewayConnection | undefined;
  /** Hands a message to the application (`messages()`). */
  readonly deliver: (message: ReceivedMessage) => void;
  /** Keeps an envelope that overtook step 3 of a handshake this agent is responding to (§17.3); false when that handshake holds its most. */
  readonly hold: (sessionIdHex: string, item: DeliveredEnvelope) => boolean;
  /** Most receipts kept (tests); default {@link RECEIPT_STORE_SIZE}. */
  readonly receiptStoreSize?: number;
  /** This agent's certificate, to attach to the receipts and SessionRejects it signs after a key rotation (§17.8). */
  readonly signerCertificate?: () => AgentCertificate | undefined;
}

export class Inbox {
  readonly #deps: InboxDeps;
  readonly #entries = new Map<string, InboxEntry>();
  /** Entries not (yet) acknowledged by the application: the back-pressure count, kept as entries change. */
  #unacked = 0;
  /** Receipts this agent signed, by message hash (durable with a store): re-sent when the envelope comes again. */
  readonly #receipts = new Map<string, { receipt: DeliveryReceipt; at: number }>();
  /**
   * The newest `at` of a receipt dropped while still within the message lifetime (the store was full): an
   * envelope as old as that may have been taken here, so it gets no SessionReject (§17.4), whose reseal would
   * make it a second message; -∞ while none was.
   */
  #forgottenUntilMs = Number.NEGATIVE_INFINITY;
  /** Inbox records are handed to the application in the order their envelopes arrived. */
  #handover: Promise<void> = Promise.resolve();
  /**
   * Deliveries left unacknowledged because they cannot be taken now — the application holds its most
   * (back-pressure), revocation data is stale, their handshake holds its most — tried again every tick: a
   * gateway never writes a delivery to the same stream twice, so without this they would come back only
   * after a reconnect, each holding one of the stream's in-flight slots meanwhile (§17.3 item 6, §17.5).
   */
  #deferred: DeliveredEnvelope[] = [];
  /** Deferred deliveries waiting for the application's capacity: a new one waits behind them (arrival order). */
  #waitingCapacity = 0;
  /** A deferred delivery is being tried again: what it already reported is not reported again each tick. */
  #retrying = false;

  constructor(deps: InboxDeps) {
    this.#deps = deps;
  }

  get #receiptStoreSize(): number {
    return this.#deps.receiptStoreSize ?? RECEIPT_STORE_SIZE;
  }

  /** Settles once every message recorded so far has been handed to the application (or failed to record). */
  handedOver(): Promise<void> {
    return this.#handover;
  }

  /** Takes back the recent receipts and the messages a previous process did not get acknowledged (`redelivered`). */
  restore(state: JournalState): void {
    const now = Date.now();
    const maxAge = maxAgeMs(this.#deps.options);
    for (const [hash, r] of state.receipts) {
      if (r.at >= now - maxAge) this.#receipts.set(hash, { receipt: fromBinary(DeliveryReceiptSchema, fromBase64Url(r.receipt)), at: r.at });
    }
    // A full store may have dropped receipts before the restart (the journal keeps what the store held): anything
    // up to the oldest one kept may have been taken.
    if (this.#receipts.size >= this.#receiptStoreSize) {
      let oldest = Number.POSITIVE_INFINITY;
      for (const r of this.#receipts.values()) oldest = Math.min(oldest, r.at);
      this.#forgottenUntilMs = oldest;
    }
    for (const r of state.inbox.values()) {
      const payload = fromBinary(MessagePayloadSchema, fromBase64Url(r.payload));
      const message = this.#received({
        envelope: fromBinary(SecureMessageSchema, fromBase64Url(r.env)),
        hash: fromHex(r.hash),
        payload,
        payloadBytes: fromBase64Url(r.payload),
        salt: fromBase64Url(r.salt),
        certificate: fromBinary(AgentCertificateSchema, fromBase64Url(r.cert)),
        receivedAtMs: r.at,
        redelivered: true,
      });
      this.#entries.set(r.hash, { message, hashHex: r.hash, deliveries: [], acked: false, receipt: undefined });
      this.#unacked += 1;
      this.#deps.deliver(message);
    }
  }

  /**
   * The journal records of unacknowledged messages and of the receipts still within the message lifetime (for
   * compaction) — including the receipt of an ack whose record is being written: the compaction replaces it.
   */
  records(): JournalRecord[] {
    const records: JournalRecord[] = [];
    for (const e of this.#entries.values()) {
      if (!e.acked) records.push(inRecord(e.message, e.hashHex));
      else if (e.receipt !== undefined) records.push(inDoneRecord(e.hashHex, e.receipt, e.message.receivedAtMs));
    }
    const floor = Date.now() - maxAgeMs(this.#deps.options);
    for (const [hash, r] of this.#receipts) {
      if (r.at >= floor) records.push(inDoneRecord(hash, r.receipt, r.at));
    }
    return records;
  }

  /** Tries the deferred deliveries again, in arrival order: those of streams still open (the tick). */
  retryDeferred(): void {
    if (this.#deferred.length === 0) return;
    const items = this.#deferred;
    this.#deferred = [];
    this.#waitingCapacity = 0;
    this.#retrying = true;
    try {
      for (const d of items) if (d.conn.isOpen) this.onEnvelope(d.envelope, d.conn, d.deliveryId);
    } finally {
      this.#retrying = false;
    }
  }

  /** Keeps a delivery to be tried again (at most MAX_DEFERRED); false when it was left for the next stream. */
  #defer(item: DeliveredEnvelope): boolean {
    if (this.#deferred.length >= MAX_DEFERRED) return false;
    this.#deferred.push(item);
    return true;
  }

  /** Drops receipts older than a message's lifetime, and the oldest beyond the store's size. */
  pruneReceipts(now: number): void {
    for (const [hash, r] of this.#receipts) {
      const young = r.at >= now - maxAgeMs(this.#deps.options);
      if (young && this.#receipts.size <= this.#receiptStoreSize) break;
      if (young) this.#forgottenUntilMs = Math.max(this.#forgottenUntilMs, r.at);
      this.#receipts.delete(hash);
    }
  }

  /** An envelope delivered by the gateway: opened, recorded and handed over — or dropped, held, or refused. */
  onEnvelope(envelope: SecureMessage, conn: GatewayConnection, deliveryId: bigint): void {
    const deps = this.#deps;
    const ack = (): void => conn.ack(deliveryId);
    let digest: EnvelopeDigest;
    let hashHex: string;
    try {
      digest = messageHashOf(deps.crypto, envelope); // taken once: the lookups below and open() share it
      hashHex = toHex(digest.hash);
    } catch {
      ack(); // not even a well-formed envelope: nothing will ever open it
      return;
    }
    // Already taken and not yet acknowledged by the application: ack this copy with it — one delivery per open
    // stream is enough (the gateway holds it until then); further copies (the sender's resends) are acked now.
    const held = this.#entries.get(hashHex);
    if (held !== undefined) {
      if (held.acked) {
        ack();
        return;
      }
      held.deliveries = held.deliveries.filter((d) => d.conn.isOpen); // an ended stream's deliveries come again on the next
      if (held.deliveries.length >= MAX_DELIVERIES_PER_MESSAGE || held.deliveries.some((d) => d.conn === conn)) ack();
      else held.deliveries.push({ conn, id: deliveryId });
      return;
    }
    // Acknowledged before: the receipt may have been lost; send it again.
    const receipt = this.#receipts.get(hashHex);
    if (receipt !== undefined) {
      deps.emit({ kind: 'duplicate', item: 'envelope', senderId: envelope.senderId, detail: 'envelope already acknowledged: receipt sent again' });
      conn.sendReply({ case: 'receipt', value: this.#sendable(receipt) }, deliveryId);
      return;
    }
    // Back-pressure: not acked, tried again once the application acks; a new delivery also waits while older ones
    // wait for capacity, so that the application gets them in arrival order.
    if (this.#unacked >= (deps.options.maxUnacked ?? 1024) || (!this.#retrying && this.#waitingCapacity > 0)) {
      if (this.#defer({ envelope, conn, deliveryId })) this.#waitingCapacity += 1;
      return;
    }
    const sidHex = envelope.sessionId instanceof Uint8Array && envelope.sessionId.length === 16 ? toHex(envelope.sessionId) : '';
    let opened: OpenedMessage | undefined;
    let failure: unknown;
    const events = deps.captured(() => {
      try {
        opened = deps.manager.open(envelope, digest);
      } catch (error) {
        failure = error;
      }
    });
    if (opened === undefined) {
      if (isSessionError(failure, 'unknown_session')) {
        if (deps.manager.isResponding(sidHex)) {
          // Overtook step 3 of a handshake this agent is responding to: hold it (§17.3), or try it again later.
          if (!deps.hold(sidHex, { envelope, conn, deliveryId })) this.#defer({ envelope, conn, deliveryId });
          return;
        }
        for (const e of events) deps.emit(e);
        // Its receipt may be among those a full store dropped (a message is taken at `at` only if its timestamp
        // is at most `at` + the future skew): acked without a reject; its sender reports `expired`, never a duplicate.
        if (Number(envelope.timestampMs) <= this.#forgottenUntilMs + (deps.options.skew?.maxFutureSkewMs ?? DEFAULT_SKEW.maxFutureSkewMs)) {
          deps.emit({ kind: 'duplicate', item: 'envelope', senderId: envelope.senderId, detail: 'envelope of an unknown session no younger than a dropped receipt: acked without a SessionReject' });
          ack();
          return;
        }
        rejectSession(deps.crypto, deps.options.identity, envelope, conn, deliveryId, deps.signerCertificate?.());
        return;
      }
      if (isSessionError(failure, 'revocation_stale')) {
        // The session checks the peer's revocation for every message (§8.4, §17.5); with stale data it fails
        // closed: the envelope stays unacknowledged at the gateway and opens once the data is fresh again.
        if (!this.#retrying) for (const e of events) deps.emit(e);
        this.#defer({ envelope, conn, deliveryId });
        return;
      }
      if (isSessionError(failure, 'replay')) {
        deps.emit({ kind: 'duplicate', item: 'envelope', senderId: envelope.senderId, detail: 'replayed envelope dropped' });
      } else for (const e of events) deps.emit(e); // revoked or expired peer (session closed), forgeries, …
      ack(); // it will never open
      return;
    }
    for (const e of events) deps.emit(e);
    const live = deps.manager.sessionById(sidHex);
    if (live === undefined) return;
    const message = this.#received({
      envelope,
      hash: opened.messageHash,
      hashHex,
      payload: opened.payload,
      content: opened.content,
      payloadBytes: opened.disclosure.payload,
      salt: opened.disclosure.salt,
      certificate: live.peerCertificate,
      receivedAtMs: Date.now(),
      redelivered: false,
    });
    const entry: InboxEntry = { message, hashHex, deliveries: [{ conn, id: deliveryId }], acked: false, receipt: undefined };
    this.#entries.set(hashHex, entry);
    this.#unacked += 1;
    if (!deps.durable) {
      // Nothing to make durable: handed over now, in arrival order (every message takes this path).
      deps.deliver(message);
      return;
    }
    // Durable before the application sees it (one record: inbox entry and replay mark), then handed over in order.
    const durable = deps.record([inRecord(message, hashHex)]);
    durable.catch(() => undefined);
    this.#handover = this.#handover.then(async () => {
      try {
        await durable;
      } catch {
        return; // the agent stopped (fail closed); the gateway still holds the delivery
      }
      deps.deliver(message);
    });
  }

  /** Builds the application's view of an opened message, with its ack. */
  #received(m: {
    envelope: SecureMessage;
    hash: Uint8Array;
    /** toHex(hash), when the caller has it. */
    hashHex?: string;
    payload: MessagePayload;
    /** payload.content as JSON, when the caller has it (the session's open converts it). */
    content?: JsonValue;
    payloadBytes: Uint8Array;
    salt: Uint8Array;
    certificate: AgentCertificate;
    receivedAtMs: number;
    redelivered: boolean;
  }): ReceivedMessage {
    const hashHex = m.hashHex ?? toHex(m.hash);
    const ack = (): Promise<void> => this.#ackMessage(hashHex);
    return {
      from: m.envelope.senderId,
      type: m.payload.type,
      content: m.content !== undefined ? m.content : m.payload.content === undefined ? null : (toJson(ValueSchema, m.payload.content) as JsonValue),
      messageHash: m.hash,
      envelope: m.envelope,
      payload: m.payload,
      disclosure: { payload: m.payloadBytes, salt: m.salt },
      senderCertificate: m.certificate,
      receivedAtMs: m.receivedAtMs,
      redelivered: m.redelivered,
      ack,
    };
  }

  /**
   * A stored receipt as it can be sent again now. One carrying a certificate this agent no longer authenticates
   * with (its key was rotated again since it signed it, §17.8) is signed anew — the same message, sender and
   * time — with the current key and carries the current certificate: the gateway relays only the certificate
   * the stream authenticated with, and the superseded one would not stand with the peer either. Kept in memory
   * (the journal's copy is signed again at its next resend after a restart).
   */
  #sendable(stored: { receipt: DeliveryReceipt; at: number }): DeliveryReceipt {
    const attached = stored.receipt.signerCertificate;
    const identity = this.#deps.options.identity;
    if (attached === undefined || (attached.agentId === identity.certificate.agentId && toHex(attached.serial) === toHex(identity.certificate.serial))) return stored.receipt;
    const r = stored.receipt;
    const again = signReceipt(this.#deps.crypto, identity, { messageHash: r.messageHash, senderId: r.senderId, receivedAtMs: Number(r.receivedAtMs) });
    again.signerCertificate = identity.certificate;
    stored.receipt = again;
    return again;
  }

  /**
   * The application took the message: sign and record the receipt, send it, ack the gateway's deliveries.
   * @throws ClientError `cancelled` once the agent is closed, or the error that stopped it: nothing is signed
   *   or recorded, and the message is handed over again after a restart (`redelivered`)
   */
  async #ackMessage(hashHex: string): Promise<void> {
    const entry = this.#entries.get(hashHex);
    if (entry === undefined || entry.acked) return;
    this.#deps.lifecycle.assertUsable();
    const m = entry.message;
    const receipt = signReceipt(this.#deps.crypto, this.#deps.options.identity, { messageHash: m.messageHash, senderId: m.from, receivedAtMs: m.receivedAtMs });
    const certificate = this.#deps.signerCertificate?.();
    if (certificate !== undefined) receipt.signerCertificate = certificate; // after a key rotation (§17.8)
    entry.acked = true;
    this.#unacked -= 1;
    if (this.#deps.durable) {
      entry.receipt = receipt; // a compaction meanwhile keeps it: its record may be written to the file being replaced
      try {
        await this.#deps.record([inDoneRecord(hashHex, receipt, m.receivedAtMs)]);
      } catch (error) {
        entry.acked = false;
        entry.receipt = undefined;
        this.#unacked += 1;
        throw ClientError.from(error);
      }
    }
    this.#entries.delete(hashHex);
    this.#receipts.set(hashHex, { receipt, at: m.receivedAtMs });
    // The receipt carries the ack of this envelope's delivery on the stream it goes out on (§10.3), the
    // other deliveries (older streams, redeliveries) are acked on their own. Lost with the stream: re-sent
    // on redelivery.
    const conn = this.#deps.connection();
    const carried = conn?.isOpen === true ? entry.deliveries.find((d) => d.conn === conn) : undefined;
    if (conn?.isOpen === true) conn.sendReply({ case: 'receipt', value: receipt }, carried?.id);
    for (const d of entry.deliveries) if (d !== carried) d.conn.ack(d.id);
  }
}

/**
 * Answers an envelope this agent can never open with a signed SessionReject (§17.4), quiet and carrying
 * the ack of its delivery (§10.3); an envelope that cannot be answered is only acked.
 */
export function rejectSession(crypto: ParleyCrypto, identity: LocalIdentity, envelope: SecureMessage, conn: GatewayConnection, deliveryId: bigint, signerCertificate?: AgentCertificate): void {
  let reject: SessionReject | undefined;
  if (envelope.sessionId instanceof Uint8Array && envelope.sessionId.length === 16 && envelope.recipientId === identity.agentId) {
    try {
      reject = signSessionReject(crypto, identity, {
        sessionId: envelope.sessionId,
        messageHash: computeMessageHash(crypto, envelope),
        senderId: envelope.senderId,
        rejectedAtMs: Date.now(),
      });
      if (signerCertificate !== undefined) reject.signerCertificate = signerCertificate; // after a key rotation (§17.8)
    } catch {
      reject = undefined;
    }
  }
  if (reject === undefined) conn.ack(deliveryId);
  else conn.sendReply({ case: 'sessionReject', value: reject }, deliveryId); // lost: the sender's next resend gets another
}

/** The journal record of a receipt this agent signed. */
function inDoneRecord(hashHex: string, receipt: DeliveryReceipt, at: number): JournalRecord {
  return { t: 'in_done', hash: hashHex, receipt: toBase64Url(toBinary(DeliveryReceiptSchema, receipt)), at };
}

/** The journal record of a received message (also its replay-window mark). */
function inRecord(m: ReceivedMessage, hashHex: string): JournalRecord {
  return {
    t: 'in',
    hash: hashHex,
    sid: toHex(m.envelope.sessionId),
    n: Number(m.envelope.nonce),
    from: m.from,
    env: toBase64Url(toBinary(SecureMessageSchema, m.envelope)),
    payload: toBase64Url(m.disclosure.payload),
    salt: toBase64Url(m.disclosure.salt),
    cert: toBase64Url(toBinary(AgentCertificateSchema, m.senderCertificate)),
    at: m.receivedAtMs,
  };
}
