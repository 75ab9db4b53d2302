/**
 * Prometheus metrics of the gateway (prom-client), on a registry of its own
 * (so several gateways in one process do not collide), served with
 * `/healthz` and `/readyz` by the operations listener of @parley/ops
 * (loopback by default). The series every Parley server has (build info,
 * process, gRPC requests, readiness, database) come from @parley/ops's
 * ServerMetrics on the same registry; the table of all names is in the README.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** What the revocation gauges read (a MemoryRevocationSet, and the feed that fills it). */
export interface RevocationSource {
  /** The list version applied (0 before the first load). */
  readonly version: number;
  /** When the copy was last confirmed current (signed head `issued_at_ms`), or undefined if never. */
  readonly lastUpdatedMs: number | undefined;
  /** Its freshness bound, ms. */
  readonly maxAgeMs: number;
}

/** What the feed gauges read (./revocation-feed.ts). */
export interface FeedSource {
  /** Whether the watch stream is open and verified batches arrive. */
  readonly connected: boolean;
  /** Times the watch was (re)opened. */
  readonly connects: number;
}

/** The gateway's instruments. */
export class GatewayMetrics {
  readonly registry = new Registry();
  /** Items routed (written to the recipient's live stream, or stored in the mailbox). */
  readonly routed = new Counter({ name: 'parley_gateway_items_routed_total', help: 'Items routed, by kind and status (delivered or queued)', labelNames: ['kind', 'status'] as const, registers: [this.registry] });
  readonly rejected = new Counter({ name: 'parley_gateway_items_rejected_total', help: 'Items rejected, by code', labelNames: ['code'] as const, registers: [this.registry] });
  readonly handshakes = new Counter({ name: 'parley_gateway_handshake_frames_relayed_total', help: 'Handshake frames routed, by step', labelNames: ['step'] as const, registers: [this.registry] });
  /** Every Delivery written to a stream: `live` (straight from the sender) or `mailbox` (read back from storage). */
  readonly deliveries = new Counter({ name: 'parley_gateway_deliveries_total', help: 'Deliveries written to agents\' streams, by source (live, mailbox)', labelNames: ['source'] as const, registers: [this.registry] });
  /**
   * Deliveries of an item this instance had already written to a stream once
   * (not acked in time, or the stream ended first). Items another instance or
   * an earlier process delivered are not known here: they count as first deliveries.
   */
  readonly redelivered = new Counter({ name: 'parley_gateway_redeliveries_total', help: 'Deliveries of an item this instance had written to a stream before (not acked in time, or the stream ended first)', registers: [this.registry] });
  readonly expired = new Counter({ name: 'parley_gateway_mailbox_expired_total', help: 'Mailbox items dropped by the TTL sweep', registers: [this.registry] });
  readonly quotaRefusals = new Counter({
    name: 'parley_gateway_mailbox_quota_refusals_total',
    help: 'Items refused because a mailbox quota was reached, by limit (recipient_items, recipient_bytes, sender_items, sender_bytes, total_items, total_bytes)',
    labelNames: ['limit'] as const,
    registers: [this.registry],
  });
  readonly batch = new Histogram({
    name: 'parley_gateway_group_commit_size',
    help: 'Items per group-committed statement, by kind (audit, mailbox_insert, mailbox_delete, mailbox_read, forward: items forwarded without an audit entry of their own)',
    labelNames: ['kind'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    registers: [this.registry],
  });
  /** Deliveries per frame written to agents that read Deliveries frames (1: a lone `delivery` frame). */
  readonly deliveriesPerFrame = new Histogram({
    name: 'parley_gateway_deliveries_per_frame',
    help: 'Deliveries per frame written to agents that asked for deliveries frames (1: a lone delivery frame)',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
    registers: [this.registry],
  });
  readonly spilled = new Counter({ name: 'parley_gateway_spilled_total', help: 'Live deliveries written to the mailbox, by reason (ack_timeout, stream_end, backlog)', labelNames: ['reason'] as const, registers: [this.registry] });
  /**
   * Items forwarded between instances (§10.8): `out` `sent`; `in` written to the recipient's stream (`live`), stored
   * because no stream here could take it (`stored`), refused by the mailbox quotas (`refused`), or dropped
   * (`dropped`: it did not decode or check, too many were being stored, or its store failed). The sender of a
   * refused or dropped item resends it (§17.2).
   */
  readonly forwarded = new Counter({
    name: 'parley_gateway_forwarded_total',
    help: 'Items forwarded to or from another instance, by direction (out, in) and result (sent; live, stored, refused, dropped)',
    labelNames: ['direction', 'result'] as const,
    registers: [this.registry],
  });
  readonly dropped = new Counter({ name: 'parley_gateway_mailbox_dropped_total', help: 'Mailbox items dropped instead of delivered: sender revoked or expired, or stored bytes that do not decode (reason)', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly auditFailures = new Counter({ name: 'parley_gateway_audit_failures_total', help: 'Audit appends that failed (the items were refused: fail closed)', registers: [this.registry] });
  /** Connect streams refused during authentication (hello → challenge → auth, or the auth timeout). */
  readonly authRefusals = new Counter({ name: 'parley_gateway_stream_auth_refusals_total', help: 'Connect streams refused during authentication, by code', labelNames: ['code'] as const, registers: [this.registry] });
  readonly goAways = new Counter({ name: 'parley_gateway_go_aways_total', help: 'GoAway frames sent (a stream closed by the gateway), by code', labelNames: ['code'] as const, registers: [this.registry] });
  readonly securityEvents = new Counter({ name: 'parley_gateway_security_events_total', help: 'Security events logged (refused security checks), by stage and code', labelNames: ['stage', 'code'] as const, registers: [this.registry] });
  readonly latency = new Histogram({
    name: 'parley_gateway_relay_latency_seconds',
    help: 'Time from an item arriving to its Accepted (checks, group-committed audit append or mailbox write, live write)',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly connected: Gauge;
  readonly mailboxDepth: Gauge;
  #revocations: RevocationSource | undefined;
  #feed: FeedSource | undefined;
  #held: (() => number) | undefined;
  readonly #startedAtMs: number;

  constructor(sources: { connectedAgents: () => number; mailboxDepth: () => Promise<number>; mailboxTotals?: () => Promise<{ items: number; bytes: number }>; clock?: () => number }) {
    const clock = sources.clock ?? Date.now;
    this.#startedAtMs = clock();
    this.connected = new Gauge({
      name: 'parley_gateway_connected_agents',
      help: 'Agents with a live authenticated stream',
      registers: [this.registry],
      collect() {
        this.set(sources.connectedAgents());
      },
    });
    let lastDepth = 0;
    this.mailboxDepth = new Gauge({
      name: 'parley_gateway_mailbox_depth',
      help: 'Unexpired items waiting in the mailbox (delivered but not yet acked, or queued); the last value read while the database does not answer',
      registers: [this.registry],
      async collect() {
        // A scrape must not fail because the database is down: that is what the storage readiness check is for.
        lastDepth = await sources.mailboxDepth().catch(() => lastDepth);
        this.set(lastDepth);
      },
    });
    // One read of the totals row serves both gauges of a scrape: a read in flight, or one finished within the last
    // second, is shared (the totals are re-read every second for the quota anyway).
    let lastTotals = { items: 0, bytes: 0 };
    let totalsRead: { promise: Promise<{ items: number; bytes: number }>; at: number } | undefined;
    const totals = (): Promise<{ items: number; bytes: number }> => {
      if (totalsRead === undefined || clock() - totalsRead.at >= 1_000) {
        const promise = (async () => (lastTotals = (await sources.mailboxTotals?.().catch(() => lastTotals)) ?? lastTotals))();
        totalsRead = { promise, at: clock() };
      }
      return totalsRead.promise;
    };
    new Gauge({
      name: 'parley_gateway_mailbox_bytes',
      help: 'Bytes of items in the whole mailbox (every recipient and instance; expired items until the sweep deletes them), bounded by the mailbox_max_bytes quota',
      registers: [this.registry],
      async collect() {
        this.set((await totals()).bytes);
      },
    });
    new Gauge({
      name: 'parley_gateway_mailbox_items',
      help: 'Items in the whole mailbox (as parley_gateway_mailbox_bytes), bounded by the mailbox_max_items quota',
      registers: [this.registry],
      async collect() {
        this.set((await totals()).items);
      },
    });
    const self = (): GatewayMetrics => this;
    new Gauge({
      name: 'parley_gateway_held_bytes',
      help: 'Bytes of deliveries written to streams and not acked yet, held in memory (bounded by max_held_bytes)',
      registers: [this.registry],
      collect() {
        const h = self().#held;
        if (h !== undefined) this.set(h());
      },
    });
    new Gauge({
      name: 'parley_gateway_revocation_age_seconds',
      help: 'Age of the revocation copy: now minus the issued_at of the last verified signed head (since start when none was loaded yet)',
      registers: [this.registry],
      collect() {
        const r = self().#revocations;
        if (r === undefined) return;
        this.set(Math.max(0, clock() - (r.lastUpdatedMs ?? self().#startedAtMs)) / 1000);
      },
    });
    new Gauge({
      name: 'parley_gateway_revocation_max_age_seconds',
      help: 'Freshness bound of the revocation copy (revocation_max_age_ms): older than this, agents are refused (fail closed)',
      registers: [this.registry],
      collect() {
        const r = self().#revocations;
        if (r !== undefined) this.set(r.maxAgeMs / 1000);
      },
    });
    new Gauge({
      name: 'parley_gateway_revocation_version',
      help: 'Version of the revocation list applied (0 before the first load)',
      registers: [this.registry],
      collect() {
        const r = self().#revocations;
        if (r !== undefined) this.set(r.version);
      },
    });
    new Gauge({
      name: 'parley_gateway_revocation_feed_connected',
      help: 'Whether the revocation feed\'s watch stream to the registry is open (1) or reconnecting (0)',
      registers: [this.registry],
      collect() {
        const f = self().#feed;
        if (f !== undefined) this.set(f.connected ? 1 : 0);
      },
    });
    new Counter({
      name: 'parley_gateway_revocation_feed_connects_total',
      help: 'Times the revocation feed opened its watch stream (more than one: it reconnected)',
      registers: [this.registry],
      collect() {
        const f = self().#feed;
        if (f === undefined) return;
        this.reset();
        this.inc(f.connects);
      },
    });
  }

  /** Exports the revocation copy's age, bound and version. */
  watchRevocations(source: RevocationSource): void {
    this.#revocations = source;
  }

  /** Exports the bytes of held deliveries. */
  watchHeld(source: () => number): void {
    this.#held = source;
  }

  /** Exports the revocation feed's connection state. */
  watchFeed(source: FeedSource): void {
    this.#feed = source;
  }
}
