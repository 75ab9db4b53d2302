/**
 * The gateway's durable mailbox (docs/PROTOCOL.md §10.8): every routed item
 * is written here before it is delivered, and deleted when the recipient acks
 * it, so delivery is at-least-once across disconnects and gateway restarts.
 * Items expire after a TTL (default 1 h, at most the receivers' max_age of
 * §8.3). Also the directory of agents the gateway has authenticated
 * (`gateway_agents`: the last certificate seen per agent), which the policy
 * check uses for recipients that are offline.
 *
 * Same SQL on PostgreSQL and PGlite (./db.ts). Migrations are versioned in
 * `gateway_migrations` and serialised with an advisory lock.
 */
import {
  AgentCertificateSchema,
  DeliveryReceiptSchema,
  HandshakeFrameSchema,
  SecureMessageSchema,
  SessionRejectSchema,
  fromBinary,
  toBinary,
  type AgentCertificate,
} from '@parley/proto';
import { RpcError } from '@parley/rpc';
import { bytes, int, type Database } from '@parley/db';
import type { RelayItem } from './layouts.js';

/** Default mailbox TTL: 1 h, the default receiver max_age (§8.3). */
export const DEFAULT_MAILBOX_TTL_MS = 3_600_000;

/** Advisory lock key serialising the gateway's migrations ("parleygw"). */
const MIGRATION_LOCK_KEY = 0x7061726c65796777n;

/** The schema, in order. Never edit an applied migration: add one. */
export const GATEWAY_MIGRATIONS: readonly { readonly version: number; readonly name: string; readonly sql: string }[] = Object.freeze([
  {
    version: 1,
    name: 'mailbox and agents',
    sql: `
      CREATE TABLE gateway_mailbox (
        recipient_id   text     NOT NULL,
        delivery_id    bigserial NOT NULL,
        item_kind      smallint NOT NULL CHECK (item_kind IN (1, 2, 3)),
        item           bytea    NOT NULL,
        item_hash      bytea    NOT NULL CHECK (length(item_hash) = 32),
        sender_id      text     NOT NULL,
        accepted_at_ms bigint   NOT NULL,
        expires_at_ms  bigint   NOT NULL,
        PRIMARY KEY (recipient_id, delivery_id)
      );
      CREATE INDEX gateway_mailbox_expiry ON gateway_mailbox (expires_at_ms);

      -- The last certificate the gateway authenticated for each agent (policy for offline recipients).
      CREATE TABLE gateway_agents (
        agent_id       text   PRIMARY KEY,
        certificate    bytea  NOT NULL,
        seen_at_ms     bigint NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'session rejects in the mailbox',
    sql: `
      ALTER TABLE gateway_mailbox DROP CONSTRAINT gateway_mailbox_item_kind_check;
      ALTER TABLE gateway_mailbox ADD CONSTRAINT gateway_mailbox_item_kind_check CHECK (item_kind IN (1, 2, 3, 4));
    `,
  },
]);

/** Item kinds as stored (`item_kind`). */
const KIND_CODE = { handshake: 1, envelope: 2, receipt: 3, sessionReject: 4 } as const;

/** One stored item. */
export interface MailboxItem {
  readonly recipientId: string;
  readonly deliveryId: bigint;
  readonly item: RelayItem;
  readonly itemHash: Uint8Array;
  readonly senderId: string;
  readonly acceptedAtMs: number;
  readonly expiresAtMs: number;
}

/** Protobuf bytes of an item and its kind code. */
export function encodeItem(item: RelayItem): { kind: number; bytes: Uint8Array } {
  switch (item.case) {
    case 'handshake':
      return { kind: KIND_CODE.handshake, bytes: toBinary(HandshakeFrameSchema, item.value) };
    case 'envelope':
      return { kind: KIND_CODE.envelope, bytes: toBinary(SecureMessageSchema, item.value) };
    case 'receipt':
      return { kind: KIND_CODE.receipt, bytes: toBinary(DeliveryReceiptSchema, item.value) };
    case 'sessionReject':
      return { kind: KIND_CODE.sessionReject, bytes: toBinary(SessionRejectSchema, item.value) };
  }
}

/** The inverse of {@link encodeItem}. */
export function decodeItem(kind: number, data: Uint8Array): RelayItem {
  switch (kind) {
    case KIND_CODE.handshake:
      return { case: 'handshake', value: fromBinary(HandshakeFrameSchema, data) };
    case KIND_CODE.envelope:
      return { case: 'envelope', value: fromBinary(SecureMessageSchema, data) };
    case KIND_CODE.receipt:
      return { case: 'receipt', value: fromBinary(DeliveryReceiptSchema, data) };
    case KIND_CODE.sessionReject:
      return { case: 'sessionReject', value: fromBinary(SessionRejectSchema, data) };
    default:
      throw new RpcError('internal', `mailbox holds an item of unknown kind ${kind}`);
  }
}

/**
 * Applies the gateway migrations not yet recorded (idempotent; safe from several processes at once).
 * @throws RpcError `failed_precondition` when the database records a version newer than this build knows
 */
export async function migrateGatewaySchema(db: Database): Promise<void> {
  const known = GATEWAY_MIGRATIONS[GATEWAY_MIGRATIONS.length - 1]!.version;
  for (const migration of GATEWAY_MIGRATIONS) {
    await db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY.toString()]);
      await tx.exec('CREATE TABLE IF NOT EXISTS gateway_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at_ms bigint NOT NULL)');
      const rows = await tx.query<{ v: unknown }>('SELECT COALESCE(MAX(version), 0) AS v FROM gateway_migrations');
      const current = int(rows[0]?.v ?? 0);
      if (current > known) throw new RpcError('failed_precondition', `gateway schema is at version ${current}, newer than this build (${known})`);
      if (current >= migration.version) return;
      await tx.exec(migration.sql);
      await tx.query('INSERT INTO gateway_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)', [migration.version, migration.name, Date.now()]);
    });
  }
}

/** Settings of {@link Mailbox}. */
export interface MailboxOptions {
  /** How long an item waits for its ack, ms. Default {@link DEFAULT_MAILBOX_TTL_MS}. */
  readonly ttlMs?: number;
  readonly clock?: () => number;
}

/** Mailbox and agent directory over one database (migrate first: {@link Mailbox.open}). */
export class Mailbox {
  readonly #db: Database;
  readonly #clock: () => number;
  readonly ttlMs: number;

  private constructor(db: Database, options: MailboxOptions) {
    this.#db = db;
    this.#clock = options.clock ?? Date.now;
    this.ttlMs = options.ttlMs ?? DEFAULT_MAILBOX_TTL_MS;
    if (!Number.isSafeInteger(this.ttlMs) || this.ttlMs <= 0) throw new RangeError('mailbox ttlMs must be a positive integer');
  }

  /** Migrates the schema and returns the mailbox. */
  static async open(db: Database, options: MailboxOptions = {}): Promise<Mailbox> {
    const mailbox = new Mailbox(db, options);
    await migrateGatewaySchema(db);
    return mailbox;
  }

  /** Stores an item for `recipientId`; returns it with its delivery id (unique per recipient, increasing). */
  async put(recipientId: string, senderId: string, item: RelayItem, itemHash: Uint8Array): Promise<MailboxItem> {
    const { kind, bytes: data } = encodeItem(item);
    const acceptedAtMs = this.#clock();
    const expiresAtMs = acceptedAtMs + this.ttlMs;
    const rows = await this.#db.query<{ delivery_id: unknown }>(
      `INSERT INTO gateway_mailbox (recipient_id, item_kind, item, item_hash, sender_id, accepted_at_ms, expires_at_ms)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING delivery_id`,
      [recipientId, kind, data, itemHash, senderId, acceptedAtMs, expiresAtMs],
    );
    return { recipientId, deliveryId: BigInt(int(rows[0]?.delivery_id)), item, itemHash, senderId, acceptedAtMs, expiresAtMs };
  }

  /** Removes one item (the audit write failed, so it must not be delivered). */
  async remove(recipientId: string, deliveryId: bigint): Promise<void> {
    await this.#db.query('DELETE FROM gateway_mailbox WHERE recipient_id = $1 AND delivery_id = $2', [recipientId, deliveryId.toString()]);
  }

  /** Unexpired items for a recipient with delivery id above `afterId`, oldest first. */
  async pending(recipientId: string, afterId = 0n, limit = 100): Promise<MailboxItem[]> {
    const rows = await this.#db.query<Record<string, unknown>>(
      `SELECT delivery_id, item_kind, item, item_hash, sender_id, accepted_at_ms, expires_at_ms FROM gateway_mailbox
       WHERE recipient_id = $1 AND delivery_id > $2 AND expires_at_ms > $3 ORDER BY delivery_id LIMIT $4`,
      [recipientId, afterId.toString(), this.#clock(), limit],
    );
    return rows.map((r) => ({
      recipientId,
      deliveryId: BigInt(int(r['delivery_id'])),
      item: decodeItem(int(r['item_kind']), bytes(r['item'])),
      itemHash: bytes(r['item_hash']),
      senderId: String(r['sender_id']),
      acceptedAtMs: int(r['accepted_at_ms']),
      expiresAtMs: int(r['expires_at_ms']),
    }));
  }

  /** Deletes an acknowledged item; true when it was there. */
  async ack(recipientId: string, deliveryId: bigint): Promise<boolean> {
    const rows = await this.#db.query('DELETE FROM gateway_mailbox WHERE recipient_id = $1 AND delivery_id = $2 RETURNING delivery_id', [
      recipientId,
      deliveryId.toString(),
    ]);
    return rows.length > 0;
  }

  /** Unexpired items waiting for one recipient, or for everyone. */
  async depth(recipientId?: string): Promise<number> {
    const now = this.#clock();
    const rows =
      recipientId === undefined
        ? await this.#db.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM gateway_mailbox WHERE expires_at_ms > $1', [now])
        : await this.#db.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM gateway_mailbox WHERE recipient_id = $1 AND expires_at_ms > $2', [recipientId, now]);
    return int(rows[0]?.n ?? 0);
  }

  /** Deletes expired items; returns how many. */
  async sweep(): Promise<number> {
    const rows = await this.#db.query('DELETE FROM gateway_mailbox WHERE expires_at_ms <= $1 RETURNING delivery_id', [this.#clock()]);
    return rows.length;
  }

  /** Records the certificate an agent just authenticated with. */
  async rememberAgent(certificate: AgentCertificate): Promise<void> {
    await this.#db.query(
      `INSERT INTO gateway_agents (agent_id, certificate, seen_at_ms) VALUES ($1, $2, $3)
       ON CONFLICT (agent_id) DO UPDATE SET certificate = EXCLUDED.certificate, seen_at_ms = EXCLUDED.seen_at_ms`,
      [certificate.agentId, toBinary(AgentCertificateSchema, certificate), this.#clock()],
    );
  }

  /** The last certificate seen for an agent, if any. */
  async lastCertificate(agentId: string): Promise<AgentCertificate | undefined> {
    const rows = await this.#db.query<{ certificate: unknown }>('SELECT certificate FROM gateway_agents WHERE agent_id = $1', [agentId]);
    const row = rows[0];
    return row === undefined ? undefined : fromBinary(AgentCertificateSchema, bytes(row.certificate));
  }
}
