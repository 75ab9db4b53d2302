/**
 * Replies only to what went the other way (docs/PROTOCOL.md §10.3 step 5):
 * the policy is evaluated in the conversation's direction for replies (step-2
 * frames, receipts, SessionRejects), so without this table a one-way
 * planner → worker policy would let any worker send any planner step-2 frames
 * and receipts of its choosing, with no conversation at all.
 *
 * - A step 2 is allowed once per step 1 relayed the other way through this
 *   gateway (same session id, initiator and responder swapped).
 * - A receipt or SessionReject is allowed for an envelope relayed the other
 *   way (same message hash, sender and recipient swapped), a few times (a
 *   recipient re-sends its receipt for every copy it gets).
 *
 * An item is recorded when it is routed and again when it is written to a
 * stream (the recipient's instance may not be the one that routed it; a
 * mailbox item may be delivered long after it was routed). Both tables are
 * bounded (the oldest entry goes first) and entries expire; a reply refused
 * because its entry was lost (a restart, eviction) heals itself: the sender's
 * outbox resends the envelope, its delivery is recorded, and the recipient
 * answers again.
 */
import { toHex } from '@parley/crypto-core';
import type { HandshakeFrame } from '@parley/proto';

/** How long a relayed step 1 or envelope stays answerable, ms. */
export const REPLY_WINDOW_MS = 10 * 60_000;
/** Most entries per table. */
export const MAX_REPLY_ENTRIES = 100_000;
/** Replies (receipts, rejects) allowed per relayed envelope copy. */
const REPLIES_PER_ENVELOPE = 4;

interface Entry {
  readonly from: string;
  readonly to: string;
  expiresAtMs: number;
  uses: number;
  /** (Envelopes) its audit entry is known to be committed: written here, or delivered here (only ever after it). */
  audited: boolean;
}

class Table {
  readonly #entries = new Map<string, Entry>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  /**
   * Records (or refreshes) an entry; with `accumulate`, the uses left add up (to at most 4 × `uses`). `audited`
   * is kept once set for the same direction.
   */
  record(key: string, from: string, to: string, expiresAtMs: number, uses: number, accumulate: boolean, audited = false): void {
    const old = this.#entries.get(key);
    this.#entries.delete(key);
    const same = old?.from === from && old.to === to;
    const left = accumulate && same ? old!.uses : 0;
    this.#entries.set(key, { from, to, expiresAtMs, uses: Math.min(uses + left, 4 * uses), audited: audited || (same && old!.audited) });
    if (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value!);
  }

  /** Consumes one use of an entry recorded in the other direction (`from` answered `to`). */
  take(key: string, replier: string, addressee: string, now: number): boolean {
    const e = this.#entries.get(key);
    if (e === undefined || e.expiresAtMs <= now || e.from !== addressee || e.to !== replier || e.uses <= 0) return false;
    e.uses--;
    return true;
  }

  /** Notes that an entry's audit entry committed (its uses and expiry unchanged); nothing when it is gone. */
  markAudited(key: string, from: string, to: string): void {
    const e = this.#entries.get(key);
    if (e !== undefined && e.from === from && e.to === to) e.audited = true;
  }

  /** Whether an unexpired entry from `from` to `to` exists (uses left or not) whose audit entry is committed. */
  audited(key: string, from: string, to: string, now: number): boolean {
    const e = this.#entries.get(key);
    return e !== undefined && e.expiresAtMs > now && e.from === from && e.to === to && e.audited;
  }

  sweep(now: number): void {
    for (const [k, e] of this.#entries) if (e.expiresAtMs <= now) this.#entries.delete(k);
  }

  get size(): number {
    return this.#entries.size;
  }
}

/** The two tables. */
export class ReplyGuard {
  readonly #handshakes: Table;
  readonly #envelopes: Table;
  readonly #clock: () => number;

  constructor(clock: () => number, maxEntries = MAX_REPLY_ENTRIES) {
    this.#clock = clock;
    this.#handshakes = new Table(maxEntries);
    this.#envelopes = new Table(maxEntries);
  }

  /** A step 1 relayed from its initiator (sender_id) to its responder. */
  step1(frame: HandshakeFrame): void {
    this.#handshakes.record(toHex(frame.sessionId), frame.senderId, frame.recipientId, this.#clock() + REPLY_WINDOW_MS, 1, false);
  }

  /**
   * An envelope relayed (by message hash): when it is routed (`audited` false; {@link envelopeAudited} once its
   * audit entry committed) and when it is written to a stream (`audited` true: nothing is written before its
   * entry commits).
   */
  envelope(messageHash: Uint8Array, senderId: string, recipientId: string, audited: boolean): void {
    this.#envelopes.record(toHex(messageHash), senderId, recipientId, this.#clock() + REPLY_WINDOW_MS, REPLIES_PER_ENVELOPE, true, audited);
  }

  /** The audit entry of an envelope recorded by {@link envelope} committed (a resend needs no second one). */
  envelopeAudited(messageHash: Uint8Array, senderId: string, recipientId: string): void {
    this.#envelopes.markAudited(toHex(messageHash), senderId, recipientId);
  }

  /** Whether a step 2 from `frame.senderId` answers a step 1 relayed the other way (consumes it). */
  allowStep2(frame: HandshakeFrame): boolean {
    return this.#handshakes.take(toHex(frame.sessionId), frame.senderId, frame.recipientId, this.#clock());
  }

  /**
   * Whether, within the window, this instance wrote the audit entry of an envelope with this hash from `senderId`
   * to `recipientId`, or delivered it (a resend of it needs no second entry).
   */
  audited(messageHash: Uint8Array, senderId: string, recipientId: string): boolean {
    return this.#envelopes.audited(toHex(messageHash), senderId, recipientId, this.#clock());
  }

  /** Whether a receipt or SessionReject signed by `signer` for `addressee` answers an envelope relayed the other way. */
  allowReply(messageHash: Uint8Array, signer: string, addressee: string): boolean {
    return this.#envelopes.take(toHex(messageHash), signer, addressee, this.#clock());
  }

  sweep(): void {
    const now = this.#clock();
    this.#handshakes.sweep(now);
    this.#envelopes.sweep(now);
  }

  get size(): number {
    return this.#handshakes.size + this.#envelopes.size;
  }
}
