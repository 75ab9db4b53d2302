/**
 * Delivery (docs/PROTOCOL.md §10.4): writing mailbox items to recipients'
 * streams as Deliveries, draining a stream's backlog in delivery-id order,
 * taking acks, and the mailbox TTL sweep. Every routed item is stored in the
 * durable mailbox (./mailbox.ts) before it is written to a live stream and
 * stays there until the recipient acks it (at-least-once; duplicates are
 * dropped by the recipient's replay protection).
 */
import type { RelayItem } from './layouts.js';
import type { MailboxItem } from './mailbox.js';
import type { ConnectResponseInit, GatewayContext, Link } from './context.js';

/** A Delivery as the gateway writes it (what the test-only tamper hook may change). */
export type DeliveryInit = Extract<ConnectResponseInit['kind'], { case: 'delivery' }>['value'];

/**
 * TEST-ONLY: called on every Delivery just before it is written, so a test can
 * play a malicious relay (GatewayOptions.tamperWithRelayedFramesForTestingOnly).
 */
export type DeliveryTamperForTestingOnly = (delivery: DeliveryInit) => void;

/** How a stored item becomes the Delivery written to a stream. */
type DeliveryOf = (stored: MailboxItem) => DeliveryInit;

const deliveryOf: DeliveryOf = (stored) => ({ deliveryId: stored.deliveryId, acceptedAtMs: BigInt(stored.acceptedAtMs), item: stored.item });

/**
 * TEST-ONLY: Deliveries on a copy of the stored item, handed to `tamper` before
 * they are written (the copy keeps the hook from changing what the sender's
 * Accepted hashed, or what the mailbox redelivers).
 */
function tamperedDeliveryOf(tamper: DeliveryTamperForTestingOnly): DeliveryOf {
  return (stored) => {
    const delivery: DeliveryInit = { deliveryId: stored.deliveryId, acceptedAtMs: BigInt(stored.acceptedAtMs), item: cloneItem(stored.item) };
    tamper(delivery);
    return delivery;
  };
}

/** Writes mailbox items to streams, drains backlogs, takes acks. */
export class Delivery {
  readonly #ctx: GatewayContext;
  readonly #deliveryOf: DeliveryOf;

  /**
   * @param tamperForTestingOnly TEST-ONLY (see {@link DeliveryTamperForTestingOnly}); production never passes it,
   *   so the production path carries no test branch
   */
  constructor(ctx: GatewayContext, tamperForTestingOnly?: DeliveryTamperForTestingOnly) {
    this.#ctx = ctx;
    this.#deliveryOf = tamperForTestingOnly === undefined ? deliveryOf : tamperedDeliveryOf(tamperForTestingOnly);
  }

  /** A newly stored item for a connected recipient: written now if its backlog is drained, else the drain picks it up. */
  offer(link: Link, stored: MailboxItem): void {
    if (link.ready) this.#deliver(link, stored);
    else this.pump(link);
  }

  /**
   * Drains a stream's mailbox backlog in delivery-id order, again while items
   * arrive during the drain, then marks the stream ready (new items are then
   * written directly by {@link offer}). Never writes one delivery id twice to a stream.
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
        do {
          link.dirty = false;
          let after = 0n;
          for (;;) {
            if (link.out.closed) return;
            const batch = await this.#ctx.mailbox.pending(agent, after, 100);
            for (const item of batch) {
              after = item.deliveryId;
              this.#deliver(link, item);
            }
            if (batch.length < 100) break;
          }
        } while (link.dirty);
        link.ready = true;
      } catch (error) {
        // The items stay in the mailbox; the next routed item or reconnect retries.
        this.#ctx.log.error({ err: error, agent }, 'mailbox drain failed');
      } finally {
        link.pumping = false;
      }
    };
    void this.#ctx.track(run());
  }

  /** An Ack frame (§10.4): the item leaves the mailbox. An id never written to this stream is refused. */
  async ack(link: Link, id: bigint): Promise<void> {
    if (id < 1n || id > link.lastDeliveryId) {
      this.#ctx.security('ack', 'malformed', { agent: link.cert.agentId, remote: link.remote }, `ack of unknown delivery_id ${id}`);
      link.out.push({ kind: { case: 'rejected', value: { requestId: 0n, code: 'malformed', message: 'ack of an unknown delivery_id' } } });
      return;
    }
    link.sent.delete(id);
    try {
      await this.#ctx.track(this.#ctx.mailbox.ack(link.cert.agentId, id)); // an already-deleted id (a duplicate ack) is fine
    } catch (error) {
      this.#ctx.log.error({ err: error, agent: link.cert.agentId }, 'mailbox ack failed (the item will be redelivered)');
    }
  }

  /**
   * Deletes expired mailbox items now.
   * @returns how many were dropped
   */
  async sweep(): Promise<number> {
    try {
      const n = await this.#ctx.track(this.#ctx.mailbox.sweep());
      if (n > 0) {
        this.#ctx.metrics.expired.inc(n);
        this.#ctx.log.info({ expired: n }, 'mailbox items expired');
      }
      return n;
    } catch (error) {
      this.#ctx.log.error({ err: error }, 'mailbox sweep failed');
      throw error;
    }
  }

  /** Writes one stored item to a stream as a Delivery (unless already written to this stream). */
  #deliver(link: Link, stored: MailboxItem): void {
    if (link.sent.has(stored.deliveryId) || link.out.closed) return;
    if (!link.out.push({ kind: { case: 'delivery', value: this.#deliveryOf(stored) } })) return;
    link.sent.add(stored.deliveryId);
    if (stored.deliveryId > link.lastDeliveryId) link.lastDeliveryId = stored.deliveryId;
    this.#ctx.metrics.redelivered.inc();
  }
}

/** A shallow copy of the item with its byte fields copied (TEST-ONLY tampering works on it). */
function cloneItem(item: RelayItem): NonNullable<DeliveryInit['item']> {
  switch (item.case) {
    case 'envelope':
      return { case: 'envelope', value: { ...item.value, encryptedPayload: item.value.encryptedPayload.slice() } };
    case 'handshake':
      return { case: 'handshake', value: { ...item.value, noiseMessage: item.value.noiseMessage.slice() } };
    case 'receipt':
      return { case: 'receipt', value: { ...item.value } };
    case 'sessionReject':
      return { case: 'sessionReject', value: { ...item.value } };
  }
}
