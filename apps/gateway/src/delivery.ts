/**
 * Delivery (docs/PROTOCOL.md §10.4, §10.8, §17.6): writing items to
 * recipients' streams as Deliveries, holding each in memory until the
 * recipient acks it, spilling to the durable mailbox what is not acked in
 * time or is left when a stream ends, draining a stream's mailbox backlog in
 * pages as the stream drains, taking acks, re-checking the sender of every
 * stored item before it is delivered, and the mailbox TTL sweep.
 *
 * Bounded: a stream holds at most `maxInFlight` deliveries not yet acked
 * (like JetStream's max_ack_pending) and `maxInFlightBytes` of them, and all
 * streams together at most `maxHeldBytes` (a stream holding nothing always
 * takes one item, whatever its size, so every stream makes progress); an item
 * for a recipient at a bound, or with a mailbox backlog, goes to the mailbox
 * instead, and the backlog is read one page at a time, never more than the
 * free slots, and written only while the bytes fit.
 */
import type { RevocationChecker } from '@parley/identity';
import { linkSubject } from './authentication.js';
import { RpcError, type ResponseSink } from '@parley/rpc';
import type { Accepted } from './accepted.js';
import type { ConnectResponseInit, DeliveryInit, GatewayContext, InFlight, Link } from './context.js';
import { BatchingSink, deliveryFrame, encodeDelivery } from './delivery-batch.js';
import { MAILBOX_CHANNEL, itemKey, type MailboxItem, type NewMailboxItem } from './mailbox.js';
import type { ReplyGuard } from './reply-guard.js';
import type { Storage } from './storage.js';

/**
 * Puts a Delivery on a recipient's stream; false when the stream is closed. `encoded`, when given, is the
 * same Delivery already encoded (a mailbox item framed around its stored bytes), and `delivery.item` is
 * then decoded only if read. The gateway's is {@link pushDelivery}; another can be injected
 * (GatewayOptions.deliveryWriter) — the tests inject one that plays a malicious relay — so the delivery
 * path itself has no test branch.
 */
export type DeliveryWriter = (stream: ResponseSink<ConnectResponseInit>, delivery: DeliveryInit, encoded: Uint8Array | undefined) => boolean;

/** Writes the Delivery as it is: its encoding when there is one, else the message. */
export const pushDelivery: DeliveryWriter = (stream, delivery, encoded) => {
  if (encoded === undefined) return stream.push({ kind: { case: 'delivery', value: delivery } });
  // A batching stream takes the Delivery's bytes as they are (no frame to wrap them in and take apart again).
  return stream instanceof BatchingSink ? stream.pushDeliveryBytes(encoded) : stream.pushEncoded(deliveryFrame(encoded));
};

/** Default bound of deliveries written to one stream and not acked yet. */
export const DEFAULT_MAX_IN_FLIGHT = 256;
/** Default bound of the bytes of those deliveries (encoded items), per stream. */
export const DEFAULT_MAX_IN_FLIGHT_BYTES = 8 * 1024 * 1024;
/** Default bound of the bytes held for all streams together. */
export const DEFAULT_MAX_HELD_BYTES = 256 * 1024 * 1024;
/** Most rows one backlog page reads. */
const PAGE_ROWS = 128;
/** Most items remembered as written-and-not-acked, to count redeliveries (the oldest are forgotten first). */
const MAX_REMEMBERED_WRITES = 50_000;

/** Default time a live delivery may stay un-acked before it is written to the mailbox, ms. */
export const DEFAULT_ACK_TIMEOUT_MS = 5_000;


/** Settings of {@link Delivery}. */
export interface DeliveryOptions {
  readonly storage: Storage;
  readonly replies: ReplyGuard;
  readonly revocations: RevocationChecker;
  readonly maxInFlight: number;
  /** Bytes of held deliveries per stream (a stream holding nothing takes one item of any size). */
  readonly maxInFlightBytes: number;
  /** Bytes of held deliveries of all streams together (the same exception). */
  readonly maxHeldBytes: number;
  readonly ackTimeoutMs: number;
  /** Audits an item dropped because its sender is revoked or expired (never throws). */
  readonly auditDrop: (itemHash: Uint8Array, senderId: string, recipientId: string, outcome: string) => Promise<void>;
  /** How a Delivery reaches the stream ({@link pushDelivery}). */
  readonly write: DeliveryWriter;
}

/** Writes items to streams, holds them until acked, spills, drains backlogs, takes acks. */
export class Delivery {
  readonly #ctx: GatewayContext;
  readonly #o: DeliveryOptions;

  /** Free slots that make a backlog page worth reading. */
  readonly #lowWater: number;
  /** Items (recipient, item hash) written to a stream and not acked yet: a second write is a redelivery. Bounded. */
  readonly #written = new Set<string>();
  /** Bytes held for all streams (the sum of their `inflightBytes`). */
  #heldBytes = 0;

  constructor(ctx: GatewayContext, options: DeliveryOptions) {
    this.#ctx = ctx;
    this.#o = options;
    this.#lowWater = Math.max(1, Math.min(PAGE_ROWS, Math.floor(options.maxInFlight / 4)));
  }

  get maxInFlight(): number {
    return this.#o.maxInFlight;
  }

  /** Bytes held for all streams now (deliveries written and not acked). */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  /** Whether a new item of `size` bytes for this stream may be written live now (no backlog, a free slot, its bytes fit). */
  canWriteLive(link: Link, size: number): boolean {
    return !link.backlog && !link.out.closed && inFlightCount(link) < this.#o.maxInFlight && this.#fits(link, size);
  }

  /** Whether `size` more bytes fit the stream's and the gateway's bounds (always, for a stream holding nothing). */
  #fits(link: Link, size: number): boolean {
    if (inFlightCount(link) === 0) return true;
    return link.inflightBytes + size <= this.#o.maxInFlightBytes && this.#heldBytes + size <= this.#o.maxHeldBytes;
  }

  /**
   * Writes an accepted item to a live stream and holds it in memory until acked (§17.6).
   * @returns false when the stream cannot take it now (the caller stores it)
   */
  writeLive(link: Link, item: Accepted): boolean {
    if (!this.canWriteLive(link, item.size)) return false;
    return this.#write(link, item, undefined);
  }

  /** An item was stored for a connected recipient: drain its mailbox (the item is in it). */
  stored(link: Link): void {
    link.backlog = true;
    link.rescan = true;
    this.pump(link);
  }

  /**
   * Drains a stream's mailbox backlog in row order, one page at a time and
   * never more than the stream's free slots; again while items arrive during
   * the drain. Never writes one row twice to a stream. Items whose sender is
   * revoked or expired are dropped (and audited), not delivered.
   */
  pump(link: Link): void {
    if (link.pumping) {
      link.dirty = true;
      return;
    }
    link.pumping = true;
    const agent = link.cert.agentId;
    const run = async (): Promise<void> => {
      try {
        for (;;) {
          link.dirty = false;
          const held = inFlightCount(link);
          const free = this.#o.maxInFlight - held;
          // Read a page only when a useful number of slots is free (or the stream is idle): one query per
          // ack, one row each, would make the drain a round trip per item. An ack pumps again.
          if (link.out.closed || free <= 0 || (free < this.#lowWater && held > 0)) return;
          const want = Math.min(free, PAGE_ROWS);
          if (link.rescan) {
            link.rescan = false;
            link.cursor = 0n;
          }
          const page = await this.#o.storage.page({ recipientId: agent, exclude: link.rows === undefined ? [] : [...link.rows], limit: want, after: link.cursor });
          for (const stored of page) {
            if (link.out.closed) return;
            // Bytes full: the rest of the page is read again after acks free some (the cursor stays before it).
            if (!link.rows?.has(stored.deliveryId) && !this.#fits(link, stored.size)) return;
            if (stored.deliveryId > link.cursor) link.cursor = stored.deliveryId;
            if (link.rows?.has(stored.deliveryId) === true) continue;
            if (!(await this.#senderStillValid(link, stored))) continue;
            const key = itemKey(stored.recipientId, stored.itemHash);
            if (!(await this.#redeliverable(link, stored, key))) continue;
            this.#write(link, storedToAccepted(stored), stored.deliveryId, key);
          }
          if (page.length < want && !link.dirty && !link.rescan) {
            // An item queued at its check whose row is not inserted yet keeps the backlog (its insert drains again).
            if (link.storing === 0) link.backlog = false;
            return;
          }
        }
      } catch (error) {
        // The items stay in the mailbox; the next ack, stored item or reconnect retries.
        if (RpcError.from(error).code !== 'revocation_stale') this.#ctx.log.error({ err: error, agent }, 'mailbox drain failed');
      } finally {
        link.pumping = false;
      }
    };
    void this.#ctx.track(run());
  }

  /** §10.8: a stored item's sender is re-checked at delivery; a revoked or expired one's items are dropped and audited. */
  async #senderStillValid(link: Link, stored: MailboxItem): Promise<boolean> {
    const now = this.#ctx.clock();
    let reason: 'revoked' | 'expired' | undefined;
    if (stored.senderValidUntilMs !== undefined && now >= stored.senderValidUntilMs) reason = 'expired';
    // Throws revocation_stale (fail closed): the drain stops and the items stay.
    else if (this.#o.revocations.check({ agentId: stored.senderId, serial: stored.senderSerial ?? new Uint8Array(16) }, now).revoked) reason = 'revoked';
    if (reason === undefined) return true;
    this.#ctx.security('delivery', reason, { agent: stored.senderId, peer: stored.recipientId }, `stored item of a ${reason} sender dropped`);
    await this.#drop(link, stored, reason);
    return false;
  }

  /**
   * §10.8: a stored item is relayed without being decoded; one written before and not acked (a redelivery)
   * is decoded first, so that a row whose bytes do not decode is dropped and audited instead of failing its
   * recipient's stream at every reconnect until it expires.
   */
  async #redeliverable(link: Link, stored: MailboxItem, key: string): Promise<boolean> {
    if (!this.#written.has(key)) return true;
    try {
      void stored.item;
      return true;
    } catch {
      this.#ctx.log.error({ agent: stored.recipientId, deliveryId: stored.deliveryId }, 'a stored item does not decode: dropped');
      await this.#drop(link, stored, 'malformed');
      return false;
    }
  }

  /** Drops a stored item instead of delivering it: deleted, never read again by this stream, counted and audited (`dropped:<reason>`). */
  async #drop(link: Link, stored: MailboxItem, reason: 'revoked' | 'expired' | 'malformed'): Promise<void> {
    this.#ctx.metrics.dropped.inc({ reason });
    (link.rows ??= new Set()).add(stored.deliveryId); // never read again by this stream, even if the delete below fails
    await this.#o.storage.delete({ recipientId: stored.recipientId, deliveryId: stored.deliveryId, senderId: stored.senderId, size: stored.size }).then(
      () => void link.rows?.delete(stored.deliveryId), // gone: no page reads it again
      () => undefined,
    );
    await this.#o.auditDrop(stored.itemHash, stored.senderId, stored.recipientId, `dropped:${reason}`);
  }

  /**
   * An Ack frame (§10.3), or the ack an item carries: each item is released; a stored one leaves the
   * mailbox. Ids never written to this stream are refused: one security event and one `rejected` for the
   * frame, whatever its number of such ids; the others are taken.
   */
  ack(link: Link, id: bigint, more: readonly bigint[] = []): void {
    let unknown: bigint | undefined;
    for (let i = -1; i < more.length; i++) {
      const x = i < 0 ? id : more[i]!;
      if (x < 1n || x > link.lastDeliveryId) unknown ??= x;
      else this.#release(link, x);
    }
    if (unknown === undefined) return;
    this.#ctx.security('ack', 'malformed', linkSubject(link), `ack of unknown delivery_id ${unknown}${more.length > 0 ? ` (in a frame of ${more.length + 1} ids)` : ''}`);
    link.out.push({ kind: { case: 'rejected', value: { requestId: 0n, code: 'malformed', message: 'ack of an unknown delivery_id' } } });
  }

  /** Releases one delivery written to this stream (a duplicate ack is no error). */
  #release(link: Link, id: bigint): void {
    const inflight = link.inflight;
    const held = inflight?.get(id);
    if (inflight === undefined || held === undefined) return; // a duplicate ack
    inflight.delete(id);
    this.#unhold(link, held);
    this.#written.delete(itemKey(held.accepted.recipientId, held.accepted.itemHash));
    if (held.spilling) held.ackedWhileSpilling = true;
    else if (held.rowId !== undefined) this.#deleteRow(link, held, held.rowId);
    const left = inFlightCount(link);
    if (link.backlog && ((this.#o.maxInFlight - left >= this.#lowWater && link.inflightBytes <= this.#o.maxInFlightBytes / 2) || left === 0)) this.pump(link);
  }

  /** A held delivery left its stream: its bytes no longer count. */
  #unhold(link: Link, held: InFlight): void {
    link.inflightBytes -= held.accepted.size;
    this.#heldBytes -= held.accepted.size;
  }

  /**
   * The stream ended: everything written and not acked that is only in memory goes to the mailbox (§17.6). When
   * what it held had mailbox rows already (drained, or spilled at its ack timeout) and the agent has no stream here
   * any more, the other instances are woken for it (§10.8): it may be connected to one of them by now — an agent
   * whose connection here went silent reconnects elsewhere before this stream ends — and the insert of a row
   * spilled while its stream was here woke none (the recipient was local then). The spills below wake them as
   * they insert.
   */
  streamEnded(link: Link): void {
    const inflight = link.inflight;
    if (inflight === undefined) return;
    let stored = false;
    for (const held of inflight.values()) {
      if (held.rowId === undefined && !held.spilling) this.#spill(link, held, 'stream_end');
      else stored = true;
      this.#unhold(link, held);
    }
    inflight.clear();
    const agent = link.cert.agentId;
    if (stored && !this.#ctx.links.has(agent) && this.#o.storage.othersListening) {
      this.#ctx.track(this.#o.storage.forward(MAILBOX_CHANNEL, agent)).catch((error: unknown) =>
        this.#ctx.log.warn({ err: error, agent }, 'waking the other instances for a stream\'s stored items failed (they drain them at their next wake-up)'),
      );
    }
  }

  /** Spills live deliveries not acked within the ack timeout (call periodically). */
  spillOverdue(): void {
    const due = this.#ctx.clock() - this.#o.ackTimeoutMs;
    for (const link of this.#ctx.links.values()) {
      if (link.inflight === undefined) continue;
      for (const held of link.inflight.values()) {
        if (held.writtenAtMs > due) break; // write order: the rest are younger
        if (held.rowId === undefined && !held.spilling) this.#spill(link, held, 'ack_timeout');
      }
    }
  }

  /**
   * Deletes expired mailbox items now.
   * @returns how many were dropped
   */
  async sweep(): Promise<number> {
    try {
      const gone = await this.#ctx.track(this.#o.storage.mailbox.sweep());
      for (const g of gone) this.#o.storage.quotas.removed(g.recipientId, g.senderId, g.size);
      this.#o.storage.quotas.sweep();
      if (gone.length > 0) {
        this.#ctx.metrics.expired.inc(gone.length);
        this.#ctx.log.info({ expired: gone.length }, 'mailbox items expired');
      }
      return gone.length;
    } catch (error) {
      this.#ctx.log.error({ err: error }, 'mailbox sweep failed');
      throw error;
    }
  }

  /** Writes one item to a stream as a Delivery with the stream's next delivery id, and holds it (`key`: its {@link itemKey}, if already made). */
  #write(link: Link, item: Accepted, rowId: bigint | undefined, key = itemKey(item.recipientId, item.itemHash)): boolean {
    if (link.out.closed) return false;
    const deliveryId = link.lastDeliveryId + 1n;
    const acceptedAtMs = BigInt(item.acceptedAtMs);
    const encoded = item.encoded;
    // A stored item goes out framed around its stored bytes; its decoded form only for a writer that reads it.
    const delivery: DeliveryInit =
      encoded === undefined
        ? { deliveryId, acceptedAtMs, item: item.item }
        : {
            deliveryId,
            acceptedAtMs,
            get item() {
              return item.item;
            },
          };
    if (!this.#o.write(link.out, delivery, encoded === undefined ? undefined : encodeDelivery(deliveryId, acceptedAtMs, encoded))) return false;
    link.lastDeliveryId = deliveryId;
    const held: InFlight = { deliveryId, accepted: item, writtenAtMs: this.#ctx.clock(), rowId, spilling: false, ackedWhileSpilling: false };
    (link.inflight ??= new Map()).set(deliveryId, held);
    link.inflightBytes += item.size;
    this.#heldBytes += item.size;
    if (rowId !== undefined) (link.rows ??= new Set()).add(rowId);
    // The recipient may answer what it was handed (§10.3 step 5): record it on the delivering instance too.
    const kind = encoded?.kind ?? item.item.case;
    if (kind === 'envelope') this.#o.replies.envelope(item.itemHash, item.senderId, item.recipientId, true);
    else if (kind === 'handshake' && item.item.case === 'handshake' && item.item.value.step === 1) this.#o.replies.step1(item.item.value);
    const metrics = this.#ctx.metrics;
    metrics.deliveries.inc({ source: rowId === undefined ? 'live' : 'mailbox' });
    if (this.#written.has(key)) metrics.redelivered.inc();
    else {
      this.#written.add(key);
      if (this.#written.size > MAX_REMEMBERED_WRITES) this.#written.delete(this.#written.values().next().value!);
    }
    return true;
  }

  /** Writes a held item to the mailbox (group commit); it stays held on its stream until acked. */
  #spill(link: Link, held: InFlight, reason: 'ack_timeout' | 'stream_end'): void {
    held.spilling = true;
    this.#ctx.metrics.spilled.inc({ reason });
    const a = held.accepted;
    const store = this.#o.storage.store(toNewItem(a), a.size, false);
    void this.#ctx.track(
      store.then(
        (stored) => {
          held.spilling = false;
          held.rowId = stored.deliveryId;
          held.rowSize = stored.size;
          if (held.ackedWhileSpilling) this.#deleteRow(link, held, stored.deliveryId);
          else if (link.inflight?.get(held.deliveryId) === held) (link.rows ??= new Set()).add(stored.deliveryId);
          else {
            // Its stream is gone: if the agent has reconnected here meanwhile, its new stream drains it.
            const current = this.#ctx.links.get(a.recipientId);
            if (current !== undefined && current !== link) this.stored(current);
          }
        },
        (error: unknown) => {
          held.spilling = false;
          // Still held (if the stream is up); the sender's outbox resends it in any case (§17.2).
          this.#ctx.log.warn({ err: error, agent: link.cert.agentId, reason }, 'spilling a live delivery to the mailbox failed');
        },
      ),
    );
  }

  #deleteRow(link: Link, held: InFlight, rowId: bigint): void {
    void this.#ctx.track(
      this.#o.storage.delete({ recipientId: link.cert.agentId, deliveryId: rowId, senderId: held.accepted.senderId, size: held.rowSize ?? held.accepted.size }).then(
        () => void link.rows?.delete(rowId),
        (error: unknown) => {
          link.rows?.delete(rowId);
          this.#ctx.log.error({ err: error, agent: link.cert.agentId }, 'mailbox ack failed (the item will be redelivered)');
        },
      ),
    );
  }
}

/** An accepted item as a mailbox row to write (its encoding, when it has one, is stored as it is). */
export function toNewItem(a: Accepted): NewMailboxItem {
  return {
    recipientId: a.recipientId,
    get item() {
      return a.item;
    },
    ...(a.encoded === undefined ? {} : { encoded: a.encoded }),
    itemHash: a.itemHash,
    senderId: a.senderId,
    senderSerial: a.senderSerial,
    senderValidUntilMs: a.senderValidUntilMs,
    acceptedAtMs: a.acceptedAtMs,
  };
}

function storedToAccepted(stored: MailboxItem): Accepted {
  return {
    recipientId: stored.recipientId,
    get item() {
      return stored.item; // decoded when first read
    },
    encoded: stored.encoded,
    itemHash: stored.itemHash,
    senderId: stored.senderId,
    senderSerial: stored.senderSerial ?? new Uint8Array(16),
    senderValidUntilMs: stored.senderValidUntilMs ?? Number.MAX_SAFE_INTEGER,
    acceptedAtMs: stored.acceptedAtMs,
    size: stored.size,
  };
}

/** Deliveries held on a stream (written, not acked). */
function inFlightCount(link: Link): number {
  return link.inflight?.size ?? 0;
}
