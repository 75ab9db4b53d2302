/**
 * The storage interface that both backends implement (an append-only file and
 * PostgreSQL), and the rules they share. One test suite (test/store-suite.ts)
 * runs against every backend.
 *
 * A store is deliberately dumb about cryptography: it keeps entries in index
 * order, refuses an append that would not extend its tip (wrong index →
 * `conflict`, previous_hash ≠ the tip's entry hash → `bad_link`), and returns
 * what it holds. Signatures are the writer's and the verifier's business.
 */
import type { AuditCheckpoint } from './checkpoint.js';
import type { AuditMessage } from '@parley/proto';
import { assertSafeInt } from './assert.js';
import { AuditError } from './errors.js';
import { decodeEntry } from './entry.js';

/** A notification sent with a group of entries (PostgreSQL `NOTIFY channel, payload`; see {@link AuditStore.notifies}). */
export interface AuditNotification {
  /** 1..63 characters of [a-z0-9_], starting with a letter or `_`. */
  readonly channel: string;
  /** Text, fewer than 8 000 bytes. */
  readonly payload: string;
}

const CHANNEL_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Checks a notification's channel and payload (what PostgreSQL accepts, without quoting).
 * @throws AuditError `malformed`
 */
export function assertNotification(n: AuditNotification): void {
  if (typeof n?.channel !== 'string' || !CHANNEL_RE.test(n.channel)) throw new AuditError('malformed', 'a notification channel is 1..63 characters of [a-z0-9_]');
  if (typeof n.payload !== 'string' || Buffer.byteLength(n.payload) >= 8_000) throw new AuditError('malformed', 'a notification payload is text of fewer than 8 000 bytes');
}

/** An append-only store of audit entries. */
export interface AuditStore {
  /** `'file'`, `'postgres'`, … (for logs and messages). */
  readonly kind: string;
  /** Number of entries (the next index). */
  size(): Promise<number>;
  /**
   * Appends the entry at index `size()`.
   * @throws AuditError `malformed` (not a valid entry), `conflict` (index ≠ size: another writer was first),
   *   `bad_link` (previous_hash is not the tip's entry hash), `storage_failure`
   */
  append(entry: AuditMessage): Promise<void>;
  /**
   * Optional: appends consecutive entries (indices `size()…`, each linking to the one before) atomically —
   * all of them or none. A writer with many concurrent appends then pays one round trip per batch
   * instead of one per entry (group commit); stores without it get one `append` per entry.
   * @throws as {@link AuditStore.append}, for the batch as a whole
   */
  appendMany?(entries: readonly AuditMessage[], notifications?: readonly AuditNotification[]): Promise<void>;
  /**
   * Optional: `appendMany` also sends `notifications` (at most twice as many as entries it can take), in the same
   * transaction as the entries — sent if and only if they are stored (PostgreSQL `NOTIFY`). A store without it
   * leaves this unset.
   */
  readonly notifies?: boolean;
  /** With `notifies`: sends notifications in a statement of their own (at most twice `appendMany`'s entries). */
  notify?(notifications: readonly AuditNotification[]): Promise<void>;
  /**
   * Protobuf bytes of entries `from` (inclusive) to `to` (exclusive), in index order.
   * @throws AuditError `not_found` when the range is not within 0..size, `malformed` for a record that fails its checksum,
   *   `storage_failure`
   */
  readEncoded(from: number, to: number): AsyncIterable<Uint8Array>;
  /** Decoded entries, as {@link AuditStore.readEncoded}; a record that does not decode throws `malformed`. */
  read(from: number, to: number): AsyncIterable<AuditMessage>;
  /**
   * Optional: stores a checkpoint (§9.6) of this store's log, as given (the writer signed it). A second one for
   * the same tree size is ignored.
   * @throws AuditError `storage_failure`
   */
  saveCheckpoint?(checkpoint: AuditCheckpoint): Promise<void>;
  /**
   * Optional: the stored checkpoints (with `atMost`: of at most that tree size), largest tree size first, at most `limit`, unchecked (the writer checks each
   * before it adopts anything: AuditLog.open); none when there are none.
   * @throws AuditError `storage_failure`
   */
  checkpoints?(limit: number, atMost?: number): Promise<AuditCheckpoint[]>;
  /** Flushes and releases the store; later calls throw `storage_failure`. Idempotent. */
  close(): Promise<void>;
}

/** Checks a read range against the store size. */
export function checkRange(from: number, to: number, size: number): void {
  assertSafeInt(from, 'from');
  assertSafeInt(to, 'to');
  if (from > to) throw new AuditError('malformed', `from ${from} exceeds to ${to}`);
  if (to > size) throw new AuditError('not_found', `to ${to} exceeds the log size ${size}`);
}

/** Decodes a stream of protobuf records (a shared `read` for backends). */
export async function* decodeStream(records: AsyncIterable<Uint8Array>, from: number): AsyncIterable<AuditMessage> {
  let i = from;
  for await (const bytes of records) {
    try {
      yield decodeEntry(bytes);
    } catch (cause) {
      throw new AuditError('malformed', `stored entry ${i} does not decode`, { cause });
    }
    i++;
  }
}
