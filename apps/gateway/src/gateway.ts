/**
 * The agent gateway (DESIGN.md "Gateway"; docs/PROTOCOL.md §10): an
 * implementation of parley.v1.AgentGatewayService that authenticates agents
 * by certificate and identity key, checks every item it relays (shape,
 * sender, size, rate, policy, signature) and relays it to the recipient's
 * live stream. It never holds a session key: it sees headers, never plaintext.
 *
 * This class composes the parts, one module each:
 * - ./authentication.ts — hello → challenge → auth, and live re-checks of certificates (§10.2);
 * - ./routing.ts — the §10.3 checks and the relay decision (mailbox, audit, live stream);
 * - ./delivery.ts — mailbox backlog drains, Deliveries written to streams, acks (§10.4);
 * - ./send.ts — unary Send (§10.6);
 * - ./connect-stream.ts — the Connect stream that ties authentication, routing and delivery together;
 * - ./context.ts — what they share (the live Links, metrics, work in flight, the security log).
 *
 * The delivery contract (§17.6): an item for a live recipient is written to
 * its stream as soon as its group-committed audit entry is durable, and held in
 * memory until acked (the sender's outbox holds it until the receipt); what is
 * not acked in time, is left when a stream ends, or is for an offline or
 * backed-up recipient goes to the durable mailbox (./mailbox.ts, group-committed
 * by ./storage.ts) and is delivered from there. Every routed envelope and
 * handshake frame gets one audit entry (packages/audit), and an item whose
 * entry cannot be written is refused (fail closed).
 */
import { availableParallelism } from 'node:os';
import { createVerifyPool, type ParleyCrypto, type VerifyPool } from '@parley/crypto-core';
import type { AuditLog } from '@parley/audit';
import type { RevocationChecker, TrustBundle } from '@parley/identity';
import type { SendRequest } from '@parley/proto';
import type { CallContext } from '@parley/rpc';
import { MAX_ENVELOPE_BYTES } from '@parley/session';
import type { Logger } from 'pino';
import { closeRevokedLinks, recheckLinks } from './authentication.js';
import { ConnectStreams, DEFAULT_MAX_AUTHENTICATING, DEFAULT_MAX_AUTHENTICATING_PER_ADDRESS, type ConnectCall } from './connect-stream.js';
import type { Accepted } from './accepted.js';
import { GatewayContext } from './context.js';
import { decodeForward, type Cluster } from './cluster.js';
import { DEFAULT_ACK_TIMEOUT_MS, DEFAULT_MAX_HELD_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_BYTES, Delivery, pushDelivery, toNewItem, type DeliveryWriter } from './delivery.js';
import type { Mailbox } from './mailbox.js';
import { ReplyGuard } from './reply-guard.js';
import { Storage, type MailboxQuota } from './storage.js';
import type { GatewayMetrics } from './metrics.js';
import { Policy } from './policy.js';
import type { RateLimitOptions } from '@parley/rpc';
import { Router } from './routing.js';
import { UnarySend } from './send.js';

export type { DeliveryInit } from './context.js';
export type { DeliveryWriter } from './delivery.js';
export { pushDelivery } from './delivery.js';

const GATEWAY_ID_RE = /^[a-z0-9._:-]{1,128}$/;
/** Most items forwarded by other instances being stored here at once (their recipient's stream could not take them). */
export const MAX_FORWARDS_STORING = 10_000;
/** Default receiver max_age (§8.3): the mailbox TTL must not exceed it. */
export const DEFAULT_RECEIVER_MAX_AGE_MS = 3_600_000;
/** Largest encoded Outbound accepted by default: the largest envelope plus room for the wrapper. */
export const DEFAULT_MAX_FRAME_BYTES = MAX_ENVELOPE_BYTES + 1024;

/** Everything a Gateway needs. */
export interface GatewayOptions {
  readonly crypto: ParleyCrypto;
  /** The gateway's name, bound into every auth proof and send signature: 1..128 of [a-z0-9._:-]. */
  readonly gatewayId: string;
  readonly trustBundle: TrustBundle;
  readonly revocations: RevocationChecker;
  /** Routing policy; default deny-all. Replace with `setPolicy()`. */
  readonly policy?: Policy;
  /** Per-agent token bucket. Default 100/s, burst 200. */
  readonly rateLimit?: Omit<RateLimitOptions, 'clock'>;
  /** Per-agent byte bucket (encoded item bytes). Default 8 MiB/s, burst 16 MiB. */
  readonly byteRateLimit?: Omit<RateLimitOptions, 'clock'>;
  /** Handshake step 1 per (initiator, responder) pair. Default 1/s, burst 10. */
  readonly handshakeRateLimit?: Omit<RateLimitOptions, 'clock'>;
  /** Mailbox quotas per recipient and per sender (items, bytes). */
  readonly mailboxQuota?: MailboxQuota;
  /** Deliveries written to one stream and not acked yet; beyond it items wait in the mailbox. Default 256. */
  readonly maxInFlight?: number;
  /** Bytes (encoded items) of those deliveries per stream; beyond it items wait in the mailbox. Default 8 MiB (a stream holding nothing takes one item of any size). */
  readonly maxInFlightBytes?: number;
  /** Bytes of deliveries held (written, not acked) for all streams together; beyond it items wait in the mailbox. Default 256 MiB (the same exception). */
  readonly maxHeldBytes?: number;
  /** A live delivery not acked within this long is written to the mailbox, ms. Default 5 000. */
  readonly ackTimeoutMs?: number;
  /** Largest encoded Outbound (or SendRequest) accepted, bytes. Default {@link DEFAULT_MAX_FRAME_BYTES}. */
  readonly maxFrameBytes?: number;
  /** Check envelope and receipt signatures before relaying. Default true. */
  readonly verifySignatures?: boolean;
  /**
   * Worker threads that check envelope signatures (Ed25519), off the event loop; 0 checks them on it.
   * Default {@link defaultVerifyThreads}: none below 4 cores, else one per core but two, at most 4.
   */
  readonly verifyThreads?: number;
  /** A stream must authenticate within this many ms. Default 10 000. */
  readonly authTimeoutMs?: number;
  /** Most Connect streams authenticating at once (hello → auth, before the agent is known); more are refused with `unavailable`. Default 10 000. */
  readonly maxAuthenticating?: number;
  /** Most of those from one network address (the peer's host; behind an L7 proxy, the proxy's). Default 1 000. */
  readonly maxAuthenticatingPerAddress?: number;
  /** How often live streams' certificates are re-checked against revocation and expiry, ms. Default 500. */
  readonly revocationCheckIntervalMs?: number;
  /** Allowed clock skew of a unary Send timestamp, ms. Default 60 000. */
  readonly maxClockSkewMs?: number;
  readonly clock?: () => number;
  readonly logger: Logger;
  /** The durable mailbox (and agent directory): every routed item is stored here until acked. */
  readonly mailbox: Mailbox;
  /** The audit log: one entry per routed item (and per item refused by policy or signature). */
  readonly audit: AuditLog;
  /**
   * The receivers' max_age (§8.3), ms; the mailbox TTL must not exceed it (the
   * constructor throws otherwise). Default {@link DEFAULT_RECEIVER_MAX_AGE_MS}.
   */
  readonly receiverMaxAgeMs?: number;
  /** How often expired mailbox items are deleted, ms. Default 60 000. */
  readonly mailboxSweepIntervalMs?: number;
  /**
   * How a Delivery reaches a recipient's stream. Default {@link pushDelivery}: as it is. Tests inject one
   * that plays a malicious relay (flipping bits in what it forwards); the configuration file and the CLI
   * cannot set it.
   */
  readonly deliveryWriter?: DeliveryWriter;
}

/**
 * Signature-check threads by default: none below 4 cores, else one per core but two (the event loop's, and one
 * for GC, I/O and a co-located database), at most 4. Measured on 2 cores with everything busy, one thread took
 * a quarter of the event loop's time per envelope but added no throughput (there was no idle core to run it
 * on), and the lighter loop group-committed in smaller groups (more statements per message).
 */
export function defaultVerifyThreads(): number {
  const cores = availableParallelism();
  return cores < 4 ? 0 : Math.min(4, cores - 2);
}

/**
 * The gateway service. Register it with `addService(server, AgentGatewayService, gateway)`
 * (startGateway in server.ts does), and call `close()` on shutdown.
 */
export class Gateway {
  readonly #ctx: GatewayContext;
  readonly #storage: Storage;
  readonly #router: Router;
  readonly #delivery: Delivery;
  readonly #streams: ConnectStreams;
  readonly #unary: UnarySend;
  readonly #timer: NodeJS.Timeout;
  readonly #sweepTimer: NodeJS.Timeout;
  readonly #verifyPool: VerifyPool;
  /** Forwarded items being stored (./cluster.ts): bounded by {@link MAX_FORWARDS_STORING}. */
  #forwardsStoring = 0;
  /** Prometheus instruments (served by startGateway's metrics listener). */
  readonly metrics: GatewayMetrics;

  constructor(options: GatewayOptions) {
    if (!GATEWAY_ID_RE.test(options.gatewayId)) throw new RangeError('gatewayId must be 1..128 characters of [a-z0-9._:-]');
    const maxAge = options.receiverMaxAgeMs ?? DEFAULT_RECEIVER_MAX_AGE_MS;
    if (options.mailbox.ttlMs > maxAge) throw new RangeError(`mailbox TTL ${options.mailbox.ttlMs} ms exceeds the receivers' max_age ${maxAge} ms (§8.3)`);
    const ctx = new GatewayContext({
      crypto: options.crypto,
      gatewayId: options.gatewayId,
      trustBundle: options.trustBundle,
      revocations: options.revocations,
      clock: options.clock ?? Date.now,
      log: options.logger,
      mailbox: options.mailbox,
      maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    });
    this.#ctx = ctx;
    this.metrics = ctx.metrics;
    const maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (!Number.isSafeInteger(maxInFlight) || maxInFlight < 1) throw new RangeError('maxInFlight must be a positive integer');
    const maxInFlightBytes = options.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES;
    if (!Number.isSafeInteger(maxInFlightBytes) || maxInFlightBytes < 1) throw new RangeError('maxInFlightBytes must be a positive integer');
    const maxHeldBytes = options.maxHeldBytes ?? DEFAULT_MAX_HELD_BYTES;
    if (!Number.isSafeInteger(maxHeldBytes) || maxHeldBytes < 1) throw new RangeError('maxHeldBytes must be a positive integer');
    const storage = new Storage(options.mailbox, { ...(options.mailboxQuota === undefined ? {} : { quota: options.mailboxQuota }), clock: ctx.clock, metrics: ctx.metrics, isLocal: (id) => ctx.links.has(id) });
    this.#storage = storage;
    const replies = new ReplyGuard(ctx.clock);
    const audit = options.audit;
    this.#delivery = new Delivery(ctx, {
      storage,
      replies,
      revocations: options.revocations,
      maxInFlight,
      maxInFlightBytes,
      maxHeldBytes,
      ackTimeoutMs: options.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS,
      auditDrop: (itemHash, senderId, recipientId, outcome) => this.#router.auditEntry(itemHash, senderId, recipientId, outcome).then(() => undefined),
      write: options.deliveryWriter ?? pushDelivery,
    });
    this.#verifyPool = createVerifyPool(options.crypto, {
      threads: options.verifyThreads ?? defaultVerifyThreads(),
      onWorkerError: (err) => ctx.log.error({ err }, 'a signature-check worker failed: its checks ran on the event loop, and it was replaced'),
    });
    ctx.metrics.watchHeld(() => this.#delivery.heldBytes);
    this.#router = new Router(ctx, {
      policy: options.policy ?? Policy.denyAll(),
      rateLimit: options.rateLimit ?? { ratePerSecond: 100, burst: 200 },
      byteRateLimit: options.byteRateLimit ?? { ratePerSecond: 8 * 1024 * 1024, burst: 16 * 1024 * 1024 },
      handshakeRateLimit: options.handshakeRateLimit ?? { ratePerSecond: 1, burst: 10 },
      verifySignatures: options.verifySignatures !== false,
      verify: this.#verifyPool.verify,
      audit,
      delivery: this.#delivery,
      storage,
      replies,
    });
    this.#streams = new ConnectStreams(ctx, this.#router, this.#delivery, options.authTimeoutMs ?? 10_000, options.maxAuthenticating ?? DEFAULT_MAX_AUTHENTICATING, options.maxAuthenticatingPerAddress ?? DEFAULT_MAX_AUTHENTICATING_PER_ADDRESS);
    this.#unary = new UnarySend(ctx, this.#router, options.maxClockSkewMs ?? 60_000);
    this.#timer = setInterval(() => this.recheckLiveStreams(), options.revocationCheckIntervalMs ?? 500);
    this.#timer.unref();
    this.#sweepTimer = setInterval(() => void this.sweepMailbox().catch(() => undefined), options.mailboxSweepIntervalMs ?? 60_000);
    this.#sweepTimer.unref();
  }

  /**
   * Deletes expired mailbox items now (also runs every `mailboxSweepIntervalMs`).
   * @returns how many were dropped
   */
  sweepMailbox(): Promise<number> {
    return this.#delivery.sweep();
  }

  get gatewayId(): string {
    return this.#ctx.gatewayId;
  }

  /** Largest encoded Outbound accepted. */
  get maxFrameBytes(): number {
    return this.#ctx.maxFrameBytes;
  }

  /** Agent ids with a live authenticated stream. */
  connectedAgents(): string[] {
    return [...this.#ctx.links.keys()];
  }

  /**
   * Another instance stored items for `recipientId` (a `parley_mailbox`
   * notification): if that agent has a stream here, deliver what is pending.
   * @returns whether the agent is connected here
   */
  mailboxNotified(recipientId: string): boolean {
    const link = this.#ctx.links.get(recipientId);
    if (link === undefined || this.#ctx.closing) return false;
    this.#delivery.stored(link);
    return true;
  }

  /**
   * Joins the instances sharing this database (startGateway does, on PostgreSQL): each stream's presence is
   * recorded from now on, and items for agents on another live instance are forwarded to it (§10.8).
   */
  joinCluster(cluster: Cluster): void {
    const ctx = this.#ctx;
    ctx.cluster = cluster;
    // An agent that connected on any instance has a directory row newer than what this instance cached about it
    // (a "never seen" entry above all: items for it would be refused for up to 30 s while it is live elsewhere).
    cluster.onConnected = (agentId) => this.#router.forget(agentId);
    ctx.streamLeft = (agentId, seenAtMs) =>
      this.#storage.left(cluster.instanceId, agentId, seenAtMs, (err) => ctx.log.warn({ err, agent: agentId }, 'clearing a stream\'s presence failed (items forwarded here meanwhile are stored)'));
  }

  /**
   * An item another instance forwarded here (§10.8, its channel's notification): written to its recipient's
   * stream as a live item of this instance (held until acked, spilled on ack timeout or stream end), or stored
   * when no stream here can take it now — within the mailbox quotas, as any stored item. Never throws (it runs in
   * the LISTEN connection's event handler): a payload that does not decode or check, an item the quotas refuse,
   * one beyond {@link MAX_FORWARDS_STORING} stores in flight, or one whose store fails is dropped and counted —
   * the instance that forwarded it answered `DELIVERED`, so its sender's outbox resends it (§17.2).
   */
  forwarded(payload: string): void {
    const ctx = this.#ctx;
    const metrics = ctx.metrics.forwarded;
    try {
      const accepted = decodeForward(payload);
      const link = ctx.links.get(accepted.recipientId);
      if (link !== undefined && !ctx.closing && this.#delivery.writeLive(link, accepted)) {
        metrics.inc({ direction: 'in', result: 'live' });
        return;
      }
      if (this.#forwardsStoring >= MAX_FORWARDS_STORING) {
        metrics.inc({ direction: 'in', result: 'dropped' });
        ctx.log.warn({ agent: accepted.senderId, peer: accepted.recipientId }, 'too many forwarded items being stored: dropped (its sender resends it)');
        return;
      }
      this.#forwardsStoring++;
      void ctx.track(this.#storeForwarded(accepted)).finally(() => void this.#forwardsStoring--);
    } catch (error) {
      metrics.inc({ direction: 'in', result: 'dropped' });
      ctx.log.error({ err: error }, 'a forwarded item does not decode or check: dropped');
    }
  }

  /** Stores a forwarded item that no stream here could take (quotas checked, the insert queue bounded); never rejects. */
  async #storeForwarded(accepted: Accepted): Promise<void> {
    const ctx = this.#ctx;
    const metrics = ctx.metrics.forwarded;
    const storage = this.#storage;
    const { recipientId, senderId, size } = accepted;
    try {
      await storage.quotas.admit(recipientId, senderId, size);
    } catch (error) {
      metrics.inc({ direction: 'in', result: 'refused' });
      ctx.log.warn({ err: error, agent: senderId, peer: recipientId }, 'a forwarded item the mailbox quotas refuse: dropped (its sender resends it)');
      return;
    }
    try {
      await storage.store(toNewItem(accepted), size, true);
    } catch (error) {
      metrics.inc({ direction: 'in', result: 'dropped' });
      ctx.log.warn({ err: error, agent: senderId, peer: recipientId }, 'storing a forwarded item failed: dropped (its sender resends it)');
      return;
    }
    metrics.inc({ direction: 'in', result: 'stored' });
    const now = ctx.links.get(recipientId);
    if (now !== undefined) this.#delivery.stored(now);
  }

  /** The other live instance that holds `agentId`'s stream, as this one last heard (./cluster.ts); undefined: here, nowhere, or unknown. */
  instanceOf(agentId: string): string | undefined {
    return this.#ctx.cluster?.holder(agentId);
  }

  /** Re-drains every connected agent's mailbox (after notifications may have been missed). */
  pumpAll(): void {
    for (const link of this.#ctx.links.values()) {
      link.backlog = true;
      link.rescan = true;
      this.#delivery.pump(link);
    }
  }

  /**
   * Whether another instance shares the database and may be listening (set by
   * startGateway's heartbeat): stored items for agents not connected here are then announced with a
   * batched NOTIFY; with a single instance none is sent.
   */
  set othersListening(value: boolean) {
    this.#storage.othersListening = value;
  }

  get othersListening(): boolean {
    return this.#storage.othersListening;
  }

  /** Swaps in a new routing policy; applies to the next item checked. */
  setPolicy(policy: Policy): void {
    this.#router.setPolicy(policy);
    this.#ctx.log.info({ rules: policy.document.rules.length }, 'policy reloaded');
  }

  /**
   * Closes, with GoAway `revoked`, every live stream of a revoked agent id or
   * certificate serial (call it when the registry announces a revocation; the
   * periodic re-check catches the rest).
   * @returns how many streams were closed
   */
  onRevocation(subject: { readonly agentId: string } | { readonly serial: Uint8Array }): number {
    if ('agentId' in subject) this.#router.forget(subject.agentId);
    void this.#ctx.track(this.dropRevokedItems(subject)).catch(() => undefined);
    return closeRevokedLinks(this.#ctx, subject);
  }

  /**
   * Deletes every mailbox item of a revoked sender (by agent id or serial) and
   * audits each as `dropped:revoked` (§10.8); items stored by another instance
   * meanwhile are caught when they are delivered.
   * @returns how many were dropped
   */
  async dropRevokedItems(subject: { readonly agentId: string } | { readonly serial: Uint8Array }): Promise<number> {
    const ctx = this.#ctx;
    try {
      const gone = await this.#storage.mailbox.dropFromSender(subject);
      for (const g of gone) {
        this.#storage.quotas.removed(g.recipientId, g.senderId, g.size);
        ctx.metrics.dropped.inc({ reason: 'revoked' });
        await this.#router.auditEntry(g.itemHash, g.senderId, g.recipientId, 'dropped:revoked');
      }
      if (gone.length > 0) ctx.security('revocation', 'revoked', { agent: gone[0]!.senderId }, `${gone.length} stored items of a revoked sender dropped`);
      return gone.length;
    } catch (error) {
      ctx.log.error({ err: error }, 'dropping a revoked sender\'s mailbox items failed (they are re-checked at delivery)');
      throw error;
    }
  }

  /**
   * Re-checks every live stream's certificate (revocation, expiry); runs every 500 ms. Also spills live
   * deliveries not acked within the ack timeout, and sweeps rate-limit buckets and reply entries.
   */
  recheckLiveStreams(): void {
    recheckLinks(this.#ctx, this.#ctx.clock());
    this.#delivery.spillOverdue();
    this.#router.sweep();
    this.#ctx.sweep();
  }

  /**
   * Sends GoAway `shutting_down` to every stream, stops the timers and waits
   * for the database work in flight (the caller then closes the audit log and database).
   */
  async close(): Promise<void> {
    this.#ctx.closing = true;
    clearInterval(this.#timer);
    clearInterval(this.#sweepTimer);
    for (const link of [...this.#ctx.links.values()]) {
      this.#ctx.goAway(link, 'shutting_down', 'gateway is shutting down');
      this.#delivery.streamEnded(link); // un-acked live deliveries go to the mailbox before the database closes
    }
    await this.#ctx.drain();
    await this.#storage.idle();
    await this.#ctx.drain();
    await this.#verifyPool.close();
  }

  /**
   * The bidirectional Connect stream (§10.2, §10.3), in @parley/rpc's listener form: it drives the call (also
   * its context) and returns nothing.
   */
  connect(call: ConnectCall): void {
    this.#streams.serve(call);
  }

  /** Unary Send (§10.6): one item, authenticated by a signature over the send layout. */
  send(request: SendRequest, ctx: CallContext): ReturnType<UnarySend['send']> {
    return this.#unary.send(request, ctx);
  }
}
