/**
 * The gateway's durable writes, group-committed (docs/PROTOCOL.md §10.8,
 * §17.6): mailbox inserts (offline recipients, backlogs, spills) and deletes
 * (acks, drops) each go through a {@link GroupCommit} — one statement and
 * one commit for every item that arrived while the previous batch was being
 * written — and the mailbox quotas (items and bytes per recipient and per
 * sender) are checked before an insert.
 *
 * Cross-instance wake-ups: when another instance shares the database (seen by
 * heartbeat), an insert batch carries one `pg_notify` per distinct recipient
 * that is not connected here, in the same statement; never one per item, and
 * none at all with a single instance.
 */
import { RpcError } from '@parley/rpc';
import type { GatewayMetrics } from './metrics.js';
import { GroupCommit } from './group-commit.js';
import { MAILBOX_BATCH, MAILBOX_BATCH_BYTES, encodeItem, type Mailbox, type PageRequest, type MailboxItem, type StoredItem, type MailboxUsage, type NewMailboxItem } from './mailbox.js';

/** Mailbox quotas (§10.8); 0 disables one. */
export interface MailboxQuota {
  /** Most items stored for one recipient. Default 10 000. */
  readonly perRecipientItems?: number;
  /** Most bytes stored for one recipient. Default 64 MiB. */
  readonly perRecipientBytes?: number;
  /** Most items stored from one sender (for all its recipients). Default 10 000. */
  readonly perSenderItems?: number;
  /** Most bytes stored from one sender. Default 64 MiB. */
  readonly perSenderBytes?: number;
  /** Most items in the whole mailbox (every recipient, every instance on the database). Default 1 000 000. */
  readonly totalItems?: number;
  /** Most bytes of items in the whole mailbox. Default 4 GiB. */
  readonly totalBytes?: number;
}

export const DEFAULT_MAILBOX_QUOTA: Required<MailboxQuota> = Object.freeze({
  perRecipientItems: 10_000,
  perRecipientBytes: 64 * 1024 * 1024,
  perSenderItems: 10_000,
  perSenderBytes: 64 * 1024 * 1024,
  totalItems: 1_000_000,
  totalBytes: 4 * 1024 * 1024 * 1024,
});

/** Which quota refused an item (the `limit` label of `parley_gateway_mailbox_quota_refusals_total`). */
export type QuotaLimit = 'recipient_items' | 'recipient_bytes' | 'sender_items' | 'sender_bytes' | 'total_items' | 'total_bytes';

/** How long a usage figure read from the database is trusted before it is read again (other instances write too). */
const USAGE_REFRESH_MS = 30_000;
/** How long the whole mailbox's figure (one small read: a row per shard) is trusted before it is read again. */
const TOTAL_REFRESH_MS = 1_000;
/** Most backlog pages read in one statement (each at most 128 rows and its excluded ids). */
const PAGE_READS_BATCH = 64;
/** Most notifications in one forward statement. */
const FORWARD_BATCH = 256;
/** Most usage figures cached (beyond it the idlest are dropped and read again when needed). */
const MAX_USAGE_ENTRIES = 50_000;

interface Usage extends MailboxUsage {
  loadedAtMs: number;
}

/**
 * Items and bytes in the mailbox per recipient and per sender, read from the
 * database on first use (and every 30 s, since other instances store too),
 * then kept up to date by this instance's own inserts and deletes. A check
 * reserves what it admits at once, so concurrent items cannot overshoot.
 * With k instances a recipient can exceed its quota by what the others
 * stored within one refresh interval.
 *
 * The whole mailbox (all recipients, all instances) is bounded too: its items
 * and bytes are kept exact in the database by the statements that change them
 * (`gateway_mailbox_totals`), read again every second, plus this instance's
 * own changes since; it can overshoot by what is being written at a re-read.
 */
export class Quotas {
  readonly #mailbox: Mailbox;
  readonly #limits: Required<MailboxQuota>;
  readonly #clock: () => number;
  readonly #recipients = new Map<string, Usage>();
  readonly #senders = new Map<string, Usage>();
  #total: Usage | undefined;
  #totalLoading: Promise<Usage> | undefined;

  readonly #onRefusal: (limit: QuotaLimit) => void;

  constructor(mailbox: Mailbox, limits: MailboxQuota | undefined, clock: () => number, onRefusal: (limit: QuotaLimit) => void = () => undefined) {
    this.#mailbox = mailbox;
    this.#onRefusal = onRefusal;
    this.#limits = { ...DEFAULT_MAILBOX_QUOTA, ...limits };
    for (const [k, v] of Object.entries(this.#limits)) if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`mailboxQuota.${k} must be a non-negative integer`);
    this.#clock = clock;
  }

  async #usage(map: Map<string, Usage>, by: 'recipient' | 'sender', agentId: string): Promise<Usage> {
    const now = this.#clock();
    const cached = map.get(agentId);
    if (cached !== undefined && now - cached.loadedAtMs <= USAGE_REFRESH_MS) return cached;
    const read = await this.#mailbox.usage(by, agentId);
    const raced = map.get(agentId);
    if (raced !== undefined && raced !== cached) return raced; // a concurrent check loaded (and may have reserved) meanwhile
    const fresh: Usage = { items: read.items, bytes: read.bytes, loadedAtMs: now };
    map.delete(agentId);
    map.set(agentId, fresh);
    if (map.size > MAX_USAGE_ENTRIES) map.delete(map.keys().next().value!);
    return fresh;
  }

  async #totals(): Promise<Usage> {
    const cached = this.#total;
    if (cached !== undefined && this.#clock() - cached.loadedAtMs <= TOTAL_REFRESH_MS) return cached;
    this.#totalLoading ??= (async () => {
      try {
        const now = this.#clock();
        const read = await this.#mailbox.totals();
        this.#total = { items: read.items, bytes: read.bytes, loadedAtMs: now };
        return this.#total;
      } finally {
        this.#totalLoading = undefined;
      }
    })();
    return this.#totalLoading;
  }

  /** The whole mailbox as this instance counts it now (`undefined` before its first check). */
  get total(): MailboxUsage | undefined {
    return this.#total === undefined ? undefined : { items: this.#total.items, bytes: this.#total.bytes };
  }

  /**
   * Admits one item of `size` bytes from `senderId` for `recipientId`, reserving it.
   * @throws RpcError `quota_exceeded` (nothing reserved)
   */
  async admit(recipientId: string, senderId: string, size: number): Promise<void> {
    const r = await this.#usage(this.#recipients, 'recipient', recipientId);
    const s = await this.#usage(this.#senders, 'sender', senderId);
    const t = await this.#totals();
    const l = this.#limits;
    const refuse = (limit: QuotaLimit, message: string): never => {
      this.#onRefusal(limit);
      throw new RpcError('quota_exceeded', message);
    };
    if (l.perRecipientItems > 0 && r.items + 1 > l.perRecipientItems) refuse('recipient_items', `the mailbox of ${recipientId} holds ${r.items} items, its limit`);
    if (l.perRecipientBytes > 0 && r.bytes + size > l.perRecipientBytes) refuse('recipient_bytes', `the mailbox of ${recipientId} is at its byte limit`);
    if (l.perSenderItems > 0 && s.items + 1 > l.perSenderItems) refuse('sender_items', 'this sender has its limit of items waiting in mailboxes');
    if (l.perSenderBytes > 0 && s.bytes + size > l.perSenderBytes) refuse('sender_bytes', 'this sender has its byte limit waiting in mailboxes');
    if (l.totalItems > 0 && t.items + 1 > l.totalItems) refuse('total_items', `the gateway's mailbox holds ${t.items} items, its limit for all recipients`);
    if (l.totalBytes > 0 && t.bytes + size > l.totalBytes) refuse('total_bytes', "the gateway's mailbox is at its byte limit for all recipients");
    this.added(recipientId, senderId, size);
  }

  /**
   * Checks, without reserving, that one item of `size` bytes from `senderId` for `recipientId` would be admitted:
   * an item forwarded to another instance is stored there only if its stream cannot take it, and admitted there.
   * @throws RpcError `quota_exceeded`
   */
  async check(recipientId: string, senderId: string, size: number): Promise<void> {
    await this.admit(recipientId, senderId, size);
    this.removed(recipientId, senderId, size);
  }

  /** Counts an item stored without a check (a spilled live item, already accepted) or reserved by {@link admit}. */
  added(recipientId: string, senderId: string, size: number): void {
    this.#change(this.#recipients.get(recipientId), 1, size);
    this.#change(this.#senders.get(senderId), 1, size);
    this.#change(this.#total, 1, size);
  }

  /** Un-counts an item deleted (acked, expired, dropped) or a reservation whose insert failed. */
  removed(recipientId: string, senderId: string, size: number): void {
    this.#change(this.#recipients.get(recipientId), -1, -size);
    this.#change(this.#senders.get(senderId), -1, -size);
    this.#change(this.#total, -1, -size);
  }

  #change(u: Usage | undefined, items: number, bytes: number): void {
    if (u === undefined) return; // not cached: the next check reads the database
    u.items = Math.max(0, u.items + items);
    u.bytes = Math.max(0, u.bytes + bytes);
  }

  /** Forgets figures not refreshed for a while (bounded memory). */
  sweep(): void {
    const old = this.#clock() - 2 * USAGE_REFRESH_MS;
    for (const map of [this.#recipients, this.#senders]) for (const [k, u] of map) if (u.loadedAtMs < old) map.delete(k);
  }
}

/** A row to delete. */
export interface RowKey {
  readonly recipientId: string;
  readonly deliveryId: bigint;
  readonly senderId: string;
  readonly size: number;
}

/** Group-committed mailbox inserts and deletes, with quotas and batched cross-instance notifications. */
export class Storage {
  readonly mailbox: Mailbox;
  readonly quotas: Quotas;
  readonly #inserts: GroupCommit<{ readonly row: NewMailboxItem; readonly size: number }, StoredItem>;
  readonly #deletes: GroupCommit<RowKey, boolean>;
  readonly #reads: GroupCommit<PageRequest, MailboxItem[]>;
  /** Items forwarded to other instances without an audit entry to ride with (./cluster.ts): one statement of notifications per batch. */
  readonly #forwards: GroupCommit<{ readonly channel: string; readonly payload: string }, undefined>;
  /** Presence of streams that ended, cleared in batches; bound to one instance id. */
  #left: GroupCommit<{ readonly agentId: string; readonly seenAtMs: number }, undefined> | undefined;
  /** Another instance shares the database (heartbeat): wake it for recipients not connected here. */
  othersListening = false;

  constructor(mailbox: Mailbox, options: { readonly quota?: MailboxQuota; readonly clock: () => number; readonly metrics: GatewayMetrics; readonly isLocal: (agentId: string) => boolean }) {
    this.mailbox = mailbox;
    const { metrics, isLocal } = options;
    this.quotas = new Quotas(mailbox, options.quota, options.clock, (limit) => metrics.quotaRefusals.inc({ limit }));
    this.#inserts = new GroupCommit({
      maxBatch: MAILBOX_BATCH,
      maxBatchWeight: MAILBOX_BATCH_BYTES,
      weigh: (x) => x.size,
      onBatch: (n) => metrics.batch.observe({ kind: 'mailbox_insert' }, n),
      write: (batch) =>
        mailbox.putMany(
          batch.map((x) => x.row),
          this.othersListening ? [...new Set(batch.map((x) => x.row.recipientId))].filter((r) => !isLocal(r)) : [],
        ),
    });
    // Backlog pages asked for while one read runs are read together (one statement, §10.8).
    this.#reads = new GroupCommit({
      maxBatch: PAGE_READS_BATCH,
      onBatch: (n) => metrics.batch.observe({ kind: 'mailbox_read' }, n),
      write: (batch) => mailbox.pendingMany(batch),
    });
    this.#forwards = new GroupCommit({
      maxBatch: FORWARD_BATCH,
      onBatch: (n) => metrics.batch.observe({ kind: 'forward' }, n),
      write: async (batch) => {
        await mailbox.notifyMany(batch);
        return batch.map(() => undefined);
      },
    });
    this.#deletes = new GroupCommit({
      maxBatch: MAILBOX_BATCH,
      onBatch: (n) => metrics.batch.observe({ kind: 'mailbox_delete' }, n),
      write: (batch) => mailbox.removeEach(batch),
    });
  }

  /**
   * Stores an item (group commit).
   * @param size the bytes its quota reservation counted (`admitted`); an item not admitted is counted now with its
   *   stored encoding's size instead, the size its delete or expiry releases (§10.8)
   * @param admitted whether the quota check already reserved it (a new item: refused with `unavailable` while too
   *   many inserts wait); else it is an item already accepted and held (a spill), counted now and never refused
   *   for the queue's length (held items are bounded by the streams' in-flight bound, and refusing one would lose it)
   */
  async store(item: NewMailboxItem, size: number, admitted: boolean): Promise<StoredItem> {
    if (!admitted) {
      // Encoded here (the insert uses these bytes): a held item's size is its request's, a few bytes more.
      if (item.encoded === undefined) item = { ...item, encoded: encodeItem(item.item) };
      size = item.encoded!.bytes.length;
      this.quotas.added(item.recipientId, item.senderId, size);
    }
    let stored: StoredItem;
    try {
      stored = await this.#inserts.add({ row: item, size }, admitted);
    } catch (error) {
      this.quotas.removed(item.recipientId, item.senderId, size);
      throw error;
    }
    // Held already (a resend): counted when its row was added, so not again (§10.8).
    if (stored.duplicate) this.quotas.removed(item.recipientId, item.senderId, size);
    return stored;
  }

  /** A backlog page (see {@link Mailbox.pending}), read together with the pages other streams ask for meanwhile. */
  page(request: PageRequest): Promise<MailboxItem[]> {
    return this.#reads.add(request);
  }

  /**
   * Deletes a row (group commit); the quota counts drop once it is gone — only if this delete removed it (two
   * deliveries can hold one row: a spill or a resend stored while the row was in flight). Failures are the
   * caller's to log.
   */
  async delete(key: RowKey): Promise<void> {
    if (await this.#deletes.add(key)) this.quotas.removed(key.recipientId, key.senderId, key.size);
  }

  /**
   * Sends an item to the instance that holds its recipient's stream (a notification on that instance's
   * channel, group-committed); resolves once the statement that carries it has completed.
   * @throws RpcError `unavailable` while too many forwards wait; whatever the statement threw
   */
  async forward(channel: string, payload: string): Promise<void> {
    await this.#forwards.add({ channel, payload });
  }

  /** Clears, in batches, the presence that `instanceId` recorded for streams that ended (./cluster.ts). */
  left(instanceId: string, agentId: string, seenAtMs: number, onError: (error: unknown) => void = () => undefined): void {
    const mailbox = this.mailbox;
    const left = (this.#left ??= new GroupCommit({
      maxBatch: MAILBOX_BATCH,
      write: async (batch) => {
        await mailbox.leftMany(batch, instanceId);
        return batch.map(() => undefined);
      },
    }));
    // A lost clear leaves the agent announced on a live instance: items for it are forwarded there and stored
    // by it (its stream is gone), so they are delivered all the same, through the mailbox.
    left.add({ agentId, seenAtMs }).catch(onError);
  }

  /** Waits until nothing is queued or being written. */
  async idle(): Promise<void> {
    const all = () => [this.#inserts.idle(), this.#deletes.idle(), this.#reads.idle(), this.#forwards.idle(), this.#left?.idle()];
    await Promise.all(all());
    await Promise.all(all());
  }
}
