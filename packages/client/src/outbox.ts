/**
 * The durable outbox (docs/PROTOCOL.md §13, §17.1–§17.2): a send is recorded the moment it is made — unsealed,
 * before the agent waits for a session —, sealed on a durably reserved counter once the session exists (its
 * sealed record replacing the unsealed one in one append), relayed, resent after reconnects and silent
 * intervals, resealed in a new session when the recipient refuses the session (a verified SessionReject),
 * and settled by the recipient's verified receipt, by expiry or by a permanent refusal — of the gateway, or
 * of the handshake it waited for (§17.2 item 6). Every outcome is one `send_settled` event.
 */
import { fromBase64Url, toBase64Url, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { DeliveryStatus, SecureMessageSchema, fromBinary, toBinary, type DeliveryReceipt, type JsonValue, type MessageType, type SecureMessage, type SessionReject } from '@parley/proto';
import { encodePayload, isAgentId, type OutgoingMessage, type Session, type SessionManager } from '@parley/session';
import { verifyCertificate, type TrustBundle } from '@parley/identity';
import { verifyReceiptSignature, verifySessionRejectSignature } from '@parley/protocol';
import { maxAgeMs, resendBaseMs, type AgentEvent, type ConnectOptions, type ReceiptSecurityEvent, type SendOptions } from './agent-options.js';
import type { GatewayConnection } from './connection.js';
import { isStateClosedRefusal } from './durable-state.js';
import { ClientError, heldSendError, type ClientErrorCode } from './errors.js';
import type { JournalRecord, JournalState, OutboxMessage } from './journal.js';
import type { Lifecycle } from './lifecycle.js';

/** Gateway refusals of an envelope that retrying cannot change: the send fails for good. */
const PERMANENT_REFUSALS: ReadonlySet<ClientErrorCode> = new Set<ClientErrorCode>([
  'policy_denied',
  'too_large',
  'malformed',
  'unsupported_version',
  'identity_mismatch',
  'bad_signature',
  'revoked',
  'expired',
  'nonce_exhausted',
]);

/**
 * Handshake outcomes that retrying cannot change (§17.2 item 6): every send waiting for a session with that peer
 * settles with the code. Every other failure of a handshake (a timeout, the gateway unavailable, reconnecting or
 * rate limiting, stale revocation data, a peer certificate not yet valid, …) is retried with backoff until the
 * message expires. Nothing of a send waiting for a session was sealed, so either answer is truthful about
 * delivery; a wrong one would cost only liveness.
 */
export const PERMANENT_HANDSHAKE_FAILURES: ReadonlySet<ClientErrorCode> = new Set<ClientErrorCode>([
  // the gateway's word (its policy, also for a recipient it does not know; its limits; the protocol)
  'policy_denied',
  'too_large',
  'malformed',
  'unsupported_version',
  // the peer's certificate and identity, as the registry and the trust bundle say
  'revoked',
  'expired',
  'bad_certificate',
  'unknown_issuer',
  'identity_mismatch',
  'bad_binding',
]);

/** Whether a failure to get a session for waiting sends ends them (true) or is retried until they expire (false). */
export function isPermanentHandshakeFailure(code: ClientErrorCode): boolean {
  return PERMANENT_HANDSHAKE_FAILURES.has(code);
}

/** Longest delay between two attempts at a session for waiting sends (and between resends). */
const MAX_BACKOFF_MS = 60_000;

const MAX_RESEALS = 5;
/** Sessions tried for one seal when each ends while its counters are being reserved. */
const MAX_SEAL_ATTEMPTS = 5;

/** Someone waiting for a send's outcome (a `send()` call). */
export interface SendWaiter {
  readonly resolve: (r: DeliveryReceipt) => void;
  readonly reject: (e: ClientError) => void;
}

/** One message in the outbox. */
export interface OutboxEntry {
  readonly id: string;
  readonly to: string;
  readonly msg: OutboxMessage;
  /** The sealed envelope; undefined until the message is first sealed (it waits for a session). */
  envelope: SecureMessage | undefined;
  /** Its message hash (hex); '' until first sealed. */
  hashHex: string;
  /** The session it is sealed in; '' while it waits for a (new) session to be sealed in. */
  sessionIdHex: string;
  /** The recipient's certified identity key for this session (verifies receipts and rejects). */
  peerKey: Uint8Array;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
  /** Seals after the first one (SessionRejects). */
  reseals: number;
  /**
   * Before this time (ms) its next reseal may not start: set when a reseal of it was refused too ({@link
   * Outbox#resealLater}, §17.2 item 4). Neither a new send to the peer (whose reseal takes every other send
   * waiting for a session), nor the tick for another send, nor a reconnect starts it earlier. 0: no such wait.
   */
  refusedUntilMs: number;
  /** The gateway's last answer: DELIVERED (live, may be lost with the gateway) or QUEUED (durable). */
  status: DeliveryStatus | undefined;
  /** When to relay again if no receipt came (DELIVERED or not yet accepted). */
  nextAttemptAtMs: number;
  backoffMs: number;
  inFlight: boolean;
  /**
   * Its outbox record is durable (or there is no journal): only then may its envelope leave this process
   * (§17.2 item 2) — `#transmit` checks it, whoever calls it (enqueue, a reconnect, the tick).
   */
  durable: boolean;
  /**
   * The record being written for it — its first one (unsealed, or sealed by #sealNow), or the one of its new seal
   * while #reseal writes it: the new envelope replaces the current one only once that record is durable, and a
   * compaction meanwhile writes this record (the one being written may go to the file the compaction replaces).
   * A send neither durable nor staged is in no snapshot: nothing of it was passed to the journal yet.
   */
  staged: Extract<JournalRecord, { t: 'out' | 'out_unsealed' }> | undefined;
  /**
   * Settles once its first record is written (the send is held from then on; at once for a restored send or
   * without a journal); rejects with that record's failure (nothing of the send was kept).
   */
  readonly written: Promise<void>;
  /**
   * Being moved to a new session right now (#reseal awaits a handshake): no second reseal may pick it up
   * meanwhile — two reseals would seal the message twice, in two envelopes that the recipient cannot tell
   * are one message (different session, counter and hash), and its application would see it twice.
   */
  resealing: boolean;
  readonly waiters: Set<SendWaiter>;
  /** How it ended, once it did (a `send()` that attaches later gets it at once). */
  settled: Settlement | undefined;
}

/** Where a pending send stands (`Agent.pendingSends()`). */
export interface PendingSend {
  readonly id: string;
  readonly to: string;
  /**
   * `unsealed`: waiting for a session with the recipient — a first contact, or a reseal after a SessionReject
   * (its handshake in progress, or retried with backoff, §17.2 item 6); nothing of it sealed in a session that
   * can carry it. `sealed`: its envelope is recorded and relayed, resent until its receipt.
   */
  readonly state: 'unsealed' | 'sealed';
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
}

/** What the outbox works with. */
export interface OutboxDeps {
  readonly crypto: ParleyCrypto;
  readonly options: ConnectOptions;
  readonly manager: SessionManager;
  readonly lifecycle: Lifecycle;
  /** Appends journal records (fail closed). */
  readonly record: (records: JournalRecord[]) => Promise<void>;
  /** Whether there is a journal: without one no record is built (`record` would drop it). */
  readonly durable: boolean;
  readonly emit: (event: AgentEvent) => void;
  /** The gateway stream right now, if any. */
  readonly connection: () => GatewayConnection | undefined;
  /** The trust bundle peers' certificates must chain to now (the followed one, when the agent follows its registry). */
  readonly trustBundle?: () => TrustBundle;
}

export type Settlement = { outcome: 'delivered'; receipt: DeliveryReceipt } | { outcome: 'expired' | 'failed'; error: ClientError };

export class Outbox {
  readonly #deps: OutboxDeps;
  readonly #entries = new Map<string, OutboxEntry>();
  readonly #byHash = new Map<string, OutboxEntry>();
  /** The `written` of every send whose first record is being written (enqueue in progress). */
  readonly #taking = new Set<Promise<void>>();

  constructor(deps: OutboxDeps) {
    this.#deps = deps;
  }

  /** The pending send with this id (idempotency key), if any. */
  get(id: string): OutboxEntry | undefined {
    return this.#entries.get(id);
  }

  /** Sends waiting for a receipt, sealed or still waiting for a session. */
  pending(): PendingSend[] {
    return [...this.#entries.values()].map((e) => ({ id: e.id, to: e.to, state: waitsForSession(e) ? 'unsealed' : 'sealed', createdAtMs: e.createdAtMs, expiresAtMs: e.expiresAtMs }));
  }

  /**
   * Until when a handshake with `peerId` whose step 1 is stored for the offline peer is worth waiting for
   * (§5.4): the latest expiry of the sends waiting for a session with it; undefined when none does.
   */
  waitingUntil(peerId: string): number | undefined {
    let until: number | undefined;
    for (const e of this.#entries.values()) if (e.to === peerId && waitsForSession(e) && (until === undefined || e.expiresAtMs > until)) until = e.expiresAtMs;
    return until;
  }

  /**
   * Waits for the outcome of `entry` with `waiter`: at once if it has one already (a handshake can fail before
   * the caller that made the send got to wait), else when it comes.
   */
  attach(entry: OutboxEntry, waiter: SendWaiter): void {
    const done = entry.settled;
    if (done === undefined) entry.waiters.add(waiter);
    else if (done.outcome === 'delivered') waiter.resolve(done.receipt);
    else waiter.reject(done.error);
  }

  /**
   * Fails every waiting `send()` with `error` (close or a stop for good; the entries stay, for the next run) — as
   * {@link endedError} says it for each.
   */
  rejectWaiters(error: ClientError): void {
    for (const e of this.#entries.values()) {
      if (e.waiters.size === 0) continue;
      const told = this.endedError(e, error);
      for (const w of e.waiters) w.reject(told);
    }
  }

  /**
   * What a `send()` of `entry` ended by close() or a stop for good (`error`) rejects with: with a journal, the send
   * is held there (its first record is written) and a restart resumes it — `error`'s code with that said and
   * {@link ClientError.heldSendId}; without one (nothing outlives the process) `error` itself.
   */
  endedError(entry: OutboxEntry, error: ClientError): ClientError {
    return this.#deps.durable && entry.durable ? heldSendError(error, entry.id) : error;
  }

  /** Resolves once no send's first record is being written any more (each written, or failed and forgotten). */
  async firstRecords(): Promise<void> {
    while (this.#taking.size > 0) await Promise.allSettled([...this.#taking]);
  }

  /**
   * Takes back the sends a previous process left pending (sessions already restored): sealed ones are resent as
   * they were sealed once the stream is up; unsealed ones wait for a session again (a new handshake).
   */
  restore(state: JournalState): void {
    const { manager, options } = this.#deps;
    for (const r of state.outbox.values()) {
      const base = { id: r.id, to: r.to, msg: r.msg, createdAtMs: r.at, expiresAtMs: r.exp, status: undefined, nextAttemptAtMs: 0, refusedUntilMs: 0, backoffMs: resendBaseMs(options), inFlight: false, durable: true, staged: undefined, written: Promise.resolve(), resealing: false, waiters: new Set<SendWaiter>(), settled: undefined };
      if (r.t === 'out_unsealed') {
        this.#entries.set(r.id, { ...base, envelope: undefined, hashHex: '', sessionIdHex: '', peerKey: new Uint8Array(0), reseals: 0 });
        continue; // the tick starts its handshake once the stream is up
      }
      const session = manager.sessionById(r.sid);
      const entry: OutboxEntry = {
        ...base,
        envelope: fromBinary(SecureMessageSchema, fromBase64Url(r.env)),
        hashHex: r.hash,
        sessionIdHex: r.sid,
        // Kept in the record, so that its receipt or SessionReject verifies without the session (a record of
        // an older version has none: without its session, such a send settles only by expiry).
        peerKey: r.peer !== undefined ? fromBase64Url(r.peer) : (session?.peer.identityPublicKey ?? new Uint8Array(0)),
        reseals: r.reseals,
      };
      this.#entries.set(entry.id, entry);
      this.#byHash.set(entry.hashHex, entry);
      // Resent as sealed once the stream is up, whether or not its session survived (see onConnected).
    }
  }

  /**
   * The journal records of every pending send (for compaction), each with the record being written, if any. A
   * send whose first record was not passed to the journal yet is left out: if that record is never written
   * (refused once the state store closed, or failed) the send was not taken, and a restart must not resume it.
   */
  records(): JournalRecord[] {
    return [...this.#entries.values()].flatMap((e) => e.staged ?? (!e.durable ? [] : e.envelope === undefined ? unsealedRecord(e) : outRecord({ ...e, envelope: e.envelope })));
  }

  /**
   * Takes a new send: records it durably before anything else (unsealed, §17.2 item 2), then has it sealed
   * once a session with `to` exists, and relayed. Resolves once it is recorded; its outcome is one
   * `send_settled` (and the waiters {@link attach}ed).
   * With the id of a send whose first record is still being written, resolves (or fails) with that record.
   * @throws ClientError `malformed` (recipient, content), `too_large`, `rate_limited`: refused, no send exists;
   *   the journal's failure (the agent stops; the send's outcome is that failure); the journal's refusal once
   *   the agent closed (isStateClosedRefusal, `cancelled`): nothing was kept, no event
   */
  async enqueue(to: string, type: MessageType, content: JsonValue, options: SendOptions): Promise<OutboxEntry> {
    const deps = this.#deps;
    if (!isAgentId(to)) throw new ClientError('malformed', `recipient '${String(to).slice(0, 128)}' is not a valid agent id`);
    if (to === deps.options.identity.agentId) throw new ClientError('malformed', `'${to}' is this agent itself: an agent does not send to itself`);
    if (this.#entries.size >= (deps.options.maxPendingSends ?? 10_000)) throw new ClientError('rate_limited', 'too many sends waiting for a receipt');
    const msg: OutboxMessage = {
      type,
      content,
      ...(options.handoffHash === undefined ? {} : { handoffHash: toBase64Url(options.handoffHash) }),
      ...(options.parentMessageHash === undefined ? {} : { parentMessageHash: toBase64Url(options.parentMessageHash) }),
    };
    const now = Date.now();
    try {
      // Checked now, before it is recorded: content that is no JSON value, or too large, is the caller's error, and
      // one that cannot be written as JSON must never reach the journal (a failed append stops the agent).
      encodePayload(outgoing(msg), now);
    } catch (error) {
      throw ClientError.from(error);
    }
    const id = options.id ?? toHex(deps.crypto.randomBytes(16));
    const existing = this.#entries.get(id);
    if (existing !== undefined) {
      await existing.written; // the same id came in meanwhile: the first one stands, once it is held
      return existing;
    }
    let wrote!: () => void;
    let failed!: (error: unknown) => void;
    const written = new Promise<void>((resolve, reject) => {
      wrote = resolve;
      failed = reject;
    });
    written.catch(() => undefined);
    const entry: OutboxEntry = {
      id,
      to,
      msg,
      envelope: undefined,
      hashHex: '',
      sessionIdHex: '',
      peerKey: new Uint8Array(0),
      createdAtMs: now,
      expiresAtMs: now + maxAgeMs(deps.options),
      reseals: 0,
      status: undefined,
      nextAttemptAtMs: 0,
      refusedUntilMs: 0,
      backoffMs: resendBaseMs(deps.options),
      inFlight: false,
      durable: !deps.durable,
      staged: undefined,
      written,
      resealing: false,
      waiters: new Set(),
      settled: undefined,
    };
    this.#entries.set(id, entry);
    this.#taking.add(written);
    try {
      // With a session to the recipient there is nothing to wait for: sealed at once, its sealed record its only
      // one (the live path writes no more than before).
      if (await this.#sealNow(entry)) {
        wrote();
        return entry;
      }
      if (deps.durable) {
        // Held from now on: a crash, a restart or a caller's timeout while the handshake runs loses nothing.
        entry.staged = unsealedRecord(entry); // a compaction meanwhile writes it too
        try {
          await deps.record([entry.staged]);
        } finally {
          entry.staged = undefined;
        }
        entry.durable = true;
      }
    } catch (error) {
      failed(error);
      if (isStateClosedRefusal(error)) {
        // Refused once the agent closed: nothing of it was written (nor is it in a snapshot) — it was not taken.
        this.#forget(entry);
        throw error;
      }
      // Not held anywhere (the journal failed: the agent stops, fail closed): this failure is the send's outcome.
      this.#settle(entry, { outcome: 'failed', error: ClientError.from(error) });
      throw error;
    } finally {
      this.#taking.delete(written);
    }
    wrote();
    void this.#reseal(to, '');
    return entry;
  }

  /**
   * Seals a new send in the current session with its recipient, if there is one, records it and relays it.
   * @returns false when there is no session, or it ended while its counters were being reserved (nothing was
   *   sealed): the send then waits for a session like a first contact
   * @throws the reservation's or the record's failure (the agent stops)
   */
  async #sealNow(entry: OutboxEntry): Promise<boolean> {
    const { manager, durable, lifecycle } = this.#deps;
    const session = manager.current(entry.to);
    if (session === undefined || session.isClosed) return false;
    entry.resealing = true; // claimed: no tick, reconnect or other send seals it meanwhile
    try {
      let sealed: Awaited<ReturnType<SessionManager['sealIn']>>;
      try {
        sealed = await manager.sealIn(session, { ...outgoing(entry.msg), timestampMs: entry.createdAtMs });
      } catch (error) {
        if (session.isClosed && !lifecycle.stopped) return false;
        throw error;
      }
      if (this.#entries.get(entry.id) !== entry) return true; // settled meanwhile (the agent stopped)
      const next = { envelope: sealed.envelope, hashHex: toHex(sealed.messageHash), sessionIdHex: session.idHex, peerKey: session.peer.identityPublicKey };
      if (durable) {
        entry.staged = outRecord({ ...entry, ...next });
        try {
          await this.#deps.record([entry.staged]); // durable before it leaves this process
        } finally {
          entry.staged = undefined;
        }
      }
      Object.assign(entry, next, { durable: true, nextAttemptAtMs: Date.now() + entry.backoffMs });
      this.#byHash.set(entry.hashHex, entry);
      void this.#transmit(entry);
      return true;
    } finally {
      entry.resealing = false;
    }
  }

  /**
   * A new stream is up: everything not yet confirmed goes out again, as it was sealed (the recipient drops
   * duplicates), whether or not its session is still open here (§17.2: only a verified SessionReject reseals).
   * What waits for a session is due at once — except a send whose reseal was refused: it keeps its backoff (a
   * reconnect changes nothing about a recipient that refuses sessions, §17.2 item 4).
   */
  onConnected(): void {
    const { options } = this.#deps;
    for (const entry of this.#entries.values()) {
      if (entry.resealing) continue; // its reseal relays it once it is sealed again and recorded
      entry.status = undefined;
      entry.backoffMs = resendBaseMs(options);
      if (entry.sessionIdHex !== '') void this.#transmit(entry);
      else entry.nextAttemptAtMs = entry.refusedUntilMs;
    }
  }

  /**
   * The periodic pass: expire, resend what got no receipt, seal (when `connected`) what waits for a session and
   * is due — a send restored unsealed, or one whose handshake or reseal failed and waits for its next attempt. A sealed envelope is resent as it is even when its session has
   * ended here (idle, past its lifetime, not restored after a restart): the recipient may hold it already, unacked
   * by its application, and a new seal would be a new message to it. If the recipient cannot open it, its
   * SessionReject reseals it (§17.2, §17.4).
   */
  onTick(now: number, connected: boolean): void {
    const unsealed = new Set<string>();
    for (const entry of this.#entries.values()) {
      if (now >= entry.expiresAtMs) {
        this.#settle(entry, { outcome: 'expired', error: new ClientError('expired', `no verified receipt from '${entry.to}' before the message expired`) });
        continue;
      }
      if (entry.resealing) continue; // its reseal is under way (a failed one is retried by a later tick)
      if (entry.sessionIdHex === '') {
        if (now >= entry.nextAttemptAtMs) unsealed.add(entry.to);
        continue;
      }
      if (now >= entry.nextAttemptAtMs) void this.#transmit(entry);
    }
    if (connected) for (const to of unsealed) void this.#reseal(to, '');
  }

  /** A delivery receipt came (§10.5): settles the send it names once its signature verifies. */
  onReceipt(receipt: DeliveryReceipt): void {
    const { crypto, emit } = this.#deps;
    const agentId = this.#deps.options.identity.agentId;
    const hash = toHex(receipt.messageHash);
    const pending = this.#byHash.get(hash);
    if (pending === undefined) {
      emit({ kind: 'duplicate', item: 'receipt', senderId: receipt.recipientId, detail: 'receipt for no pending send' });
      return;
    }
    const reject = (code: ReceiptSecurityEvent['code'], detail: string): void =>
      emit({ kind: 'security', stage: 'receipt', code, senderId: receipt.recipientId, recipientId: agentId, messageHash: hash, atMs: Date.now(), detail });
    if (receipt.senderId !== agentId || receipt.recipientId !== pending.to) {
      reject('identity_mismatch', `receipt names ${receipt.recipientId} → ${receipt.senderId}, expected ${pending.to} → ${agentId}`);
      return;
    }
    if (!verifyReceiptSignature(crypto, receipt, pending.peerKey) && !this.#byNewerCertificate(pending, receipt.signerCertificate, (key) => verifyReceiptSignature(crypto, receipt, key))) {
      reject('bad_signature', "receipt signature does not verify with the recipient's certified key");
      return;
    }
    this.#settle(pending, { outcome: 'delivered', receipt });
  }

  /** A SessionReject came (§17.4): once it verifies, the sends of that session move to a new one. */
  onSessionReject(r: SessionReject): void {
    const { crypto, emit } = this.#deps;
    const agentId = this.#deps.options.identity.agentId;
    const hash = toHex(r.messageHash);
    const pending = this.#byHash.get(hash);
    if (pending === undefined) return; // nothing pending under that hash (already resealed or settled)
    const bad = (code: ReceiptSecurityEvent['code'], detail: string): void =>
      emit({ kind: 'security', stage: 'receipt', code, senderId: r.recipientId, recipientId: agentId, messageHash: hash, atMs: Date.now(), detail });
    if (r.senderId !== agentId || r.recipientId !== pending.to || toHex(r.sessionId) !== pending.sessionIdHex) {
      bad('identity_mismatch', 'session reject does not name this pending send');
      return;
    }
    if (!verifySessionRejectSignature(crypto, r, pending.peerKey) && !this.#byNewerCertificate(pending, r.signerCertificate, (key) => verifySessionRejectSignature(crypto, r, key))) {
      bad('bad_signature', "session reject signature does not verify with the recipient's certified key");
      return;
    }
    // Only the envelope it names: a reject proves the recipient cannot open that one, not that it never opened the
    // others of the session — one it took before the session ended (its receipt lost) resealed would be a second
    // message to its application. The others are resent as they are: a receipt, or each its own reject (§17.4).
    if (pending.reseals === 0 || pending.reseals >= MAX_RESEALS || pending.resealing) {
      void this.#reseal(pending.to, pending.sessionIdHex, pending); // the first reseal at once; past the budget, settled
      return;
    }
    this.#resealLater(pending);
  }

  /**
   * A reject of a send already resealed: the new session was refused too. Its next reseal waits for the resend
   * backoff (the resend interval doubling per reseal, at most 60 s, §17.2 item 4) instead of starting a handshake at
   * once: a recipient that refuses session after session within milliseconds would otherwise burn the reseal budget
   * before anything could change. The refused session is closed now; the send waits for a session like one whose
   * handshake failed (the tick reseals it when due). Its old envelope is out of `#byHash`: the recipient refused
   * it, so no receipt can come for it, and its further rejects (one per resend) are not this send's any more.
   */
  #resealLater(entry: OutboxEntry): void {
    const { manager, options } = this.#deps;
    const dead = manager.sessionById(entry.sessionIdHex);
    if (dead !== undefined) manager.closeSession(dead);
    if (this.#byHash.get(entry.hashHex) === entry) this.#byHash.delete(entry.hashHex);
    entry.sessionIdHex = '';
    entry.status = undefined;
    entry.backoffMs = Math.min(resendBaseMs(options) * 2 ** (entry.reseals - 1), MAX_BACKOFF_MS);
    entry.nextAttemptAtMs = entry.refusedUntilMs = Date.now() + entry.backoffMs;
  }

  /**
   * A reply signed under another certificate of its signer (§17.8): an agent that rotated its identity key signs
   * with the new one, which the session (established with the old certificate) does not know. Accepted when the
   * certificate it carries is for the same agent, chains to this agent's trust bundle now, is valid and not
   * revoked (when this agent has revocation data), and its key verifies the signature: it proves no less than
   * the session's certificate would (both are the registry's word for that agent id).
   */
  #byNewerCertificate(pending: OutboxEntry, attached: DeliveryReceipt['signerCertificate'], verify: (key: Uint8Array) => boolean): boolean {
    if (attached === undefined || attached.agentId !== pending.to) return false;
    const { crypto, options } = this.#deps;
    try {
      const cert = verifyCertificate(crypto, attached, {
        trustBundle: this.#deps.trustBundle?.() ?? options.trustBundle,
        nowMs: Date.now(),
        expectedAgentId: pending.to,
        ...(options.revocations === undefined ? {} : { revocations: options.revocations }),
      });
      return verify(cert.identityPublicKey);
    } catch {
      return false;
    }
  }

  /**
   * Seals a message in the current session with `to` (establishing one if needed), stamped with its creation
   * time (§17.2 item 7). A session that ends while its counters are being reserved (idle expiry, a
   * SessionReject, the per-peer bound) sealed nothing: the message is sealed in a new one.
   * @throws the handshake's or the reservation's failure; `unavailable` if session after session ended meanwhile
   */
  async #seal(to: string, msg: OutboxMessage, timestampMs: number): Promise<{ session: Session; sealed: Awaited<ReturnType<SessionManager['sealIn']>> }> {
    const { manager, lifecycle } = this.#deps;
    const message: OutgoingMessage = { ...outgoing(msg), timestampMs };
    for (let attempt = 1; ; attempt++) {
      const session = await manager.session(to);
      try {
        return { session, sealed: await manager.sealIn(session, message) };
      } catch (error) {
        if (!session.isClosed || lifecycle.stopped) throw error;
        if (attempt >= MAX_SEAL_ATTEMPTS) throw new ClientError('unavailable', `${MAX_SEAL_ATTEMPTS} sessions with '${to}' ended while a message was being sealed`, { cause: error });
      }
    }
  }

  /** Relays an outbox entry on the live stream (if any); the tick and reconnects call it again. */
  async #transmit(entry: OutboxEntry): Promise<void> {
    const conn = this.#deps.connection();
    const envelope = entry.envelope;
    if (envelope === undefined || !entry.durable || conn === undefined || !conn.isOpen || entry.inFlight || this.#deps.lifecycle.stopped) return;
    entry.inFlight = true;
    const hash = entry.hashHex;
    try {
      const accepted = await conn.sendEnvelope(envelope);
      if (entry.hashHex !== hash) return; // resealed meanwhile
      entry.status = accepted.status;
      // QUEUED: the gateway holds it durably until the recipient acks; DELIVERED: it may hold it only in memory.
      entry.nextAttemptAtMs = accepted.status === DeliveryStatus.QUEUED ? Number.POSITIVE_INFINITY : Date.now() + entry.backoffMs;
      entry.backoffMs = Math.min(entry.backoffMs * 2, MAX_BACKOFF_MS);
    } catch (error) {
      const e = ClientError.from(error);
      if (!conn.isOpen) return; // the stream ended: resent after reconnection
      if (PERMANENT_REFUSALS.has(e.code)) {
        this.#settle(entry, { outcome: 'failed', error: e });
        return;
      }
      entry.nextAttemptAtMs = Date.now() + entry.backoffMs; // rate_limited, unavailable, …: try again later
      entry.backoffMs = Math.min(entry.backoffMs * 2, MAX_BACKOFF_MS);
    } finally {
      entry.inFlight = false;
    }
  }

  /**
   * Ends a send: out of the outbox at once (nothing resends, reseals or settles it again; a snapshot leaves it
   * out), and its `out_done` record written (none for a send never recorded). A `failed` or `expired` outcome —
   * "not delivered" — is told (waiters, `send_settled`) only once that record is durable: told first, a crash
   * before it would restore the send and the next run would seal and deliver it (§17.7). If the record cannot
   * be written, the journal's failure stops the agent (`state_error`): the waiters get that error, no
   * `send_settled` is emitted, and the send stays pending in the journal for the next run. `delivered` is told
   * at once (the receipt proves it whatever happens next); a crash before its record is durable makes the
   * next run resend, get the receipt again and report `delivered` once more (§17.7).
   */
  #settle(entry: OutboxEntry, result: Settlement): void {
    if (this.#entries.get(entry.id) !== entry) return;
    this.#forget(entry);
    const tell = (): void => {
      entry.settled = result;
      for (const w of entry.waiters) {
        if (result.outcome === 'delivered') w.resolve(result.receipt);
        else w.reject(result.error);
      }
      entry.waiters.clear();
      this.#deps.emit(result.outcome === 'delivered' ? { kind: 'send_settled', id: entry.id, to: entry.to, outcome: 'delivered', receipt: result.receipt } : { kind: 'send_settled', id: entry.id, to: entry.to, outcome: result.outcome, error: result.error });
    };
    // None for a send never recorded (nothing of it is in the journal to end).
    if (!(this.#deps.durable && entry.durable)) return tell();
    const written = this.#deps.record([{ t: 'out_done', id: entry.id, outcome: result.outcome }]);
    if (result.outcome === 'delivered') {
      written.catch(() => undefined); // a failure stops the agent (state_error); the receipt stands
      return tell();
    }
    written.then(tell, (error: unknown) => {
      const failure = ClientError.from(error);
      for (const w of entry.waiters) w.reject(failure);
      entry.waiters.clear();
    });
  }

  #forget(entry: OutboxEntry): void {
    this.#entries.delete(entry.id);
    if (entry.hashHex !== '' && this.#byHash.get(entry.hashHex) === entry) this.#byHash.delete(entry.hashHex);
  }

  /**
   * Seals in a (new) session with its peer (§17.2) the send a verified SessionReject names (`only`: the session
   * it names is closed here too), or, with `sessionIdHex` empty, every send to `peerId` that waits for a session
   * — new ones (their first seal) and ones whose reseal waits to be retried —, except one whose reseal was refused
   * and waits for its backoff (§17.2 item 4: the tick takes it when due; a new send to the peer does not cut the wait
   * short). They share one handshake: its failure is theirs, permanent (settled with its code) or retried with backoff
   * until they expire (§17.2 item 6).
   */
  async #reseal(peerId: string, sessionIdHex: string, only?: OutboxEntry): Promise<void> {
    const { manager, options, lifecycle } = this.#deps;
    const dead = sessionIdHex === '' ? undefined : manager.sessionById(sessionIdHex);
    if (dead !== undefined) manager.closeSession(dead);
    // Claimed all at once, before the first await: a SessionReject, the tick, a reconnect and new sends can each
    // ask for the same sends while a handshake runs. Only recorded ones: a send is sealed once it is held.
    const candidates = only === undefined ? [...this.#entries.values()] : [only];
    const nowMs = Date.now();
    const claimed = candidates.filter(
      (e) => e.sessionIdHex === sessionIdHex && (sessionIdHex !== '' || e.to === peerId) && !e.resealing && e.durable && (only !== undefined || e.refusedUntilMs <= nowMs),
    );
    const entries: OutboxEntry[] = [];
    for (const entry of claimed) {
      if (entry.envelope !== undefined && entry.reseals >= MAX_RESEALS) {
        this.#settle(entry, { outcome: 'failed', error: new ClientError('unknown_session', `'${entry.to}' refused ${MAX_RESEALS + 1} sessions in a row`) });
      } else entries.push(entry);
    }
    if (entries.length === 0) return;
    for (const entry of entries) entry.resealing = true;
    const moved = entries.filter((e) => e.envelope !== undefined).length;
    if (moved > 0) this.#deps.emit({ kind: 'resealed', peerId, sessionIdHex, messages: moved });
    try {
      try {
        await manager.session(peerId); // one handshake for them all (and for every other send to the peer)
      } catch (error) {
        if (!lifecycle.stopped) this.#noSession(peerId, entries, ClientError.from(error), true);
        return;
      }
      for (const entry of entries) {
        if (this.#entries.get(entry.id) !== entry) continue;
        const now = Date.now();
        if (now >= entry.expiresAtMs) {
          this.#settle(entry, { outcome: 'expired', error: new ClientError('expired', `no verified receipt from '${entry.to}' before the message expired`) });
          continue;
        }
        try {
          const { session, sealed } = await this.#seal(entry.to, entry.msg, Math.min(now, entry.expiresAtMs - maxAgeMs(options)));
          if (this.#entries.get(entry.id) !== entry) continue;
          const next = {
            envelope: sealed.envelope,
            hashHex: toHex(sealed.messageHash),
            sessionIdHex: session.idHex,
            peerKey: session.peer.identityPublicKey,
            reseals: entry.envelope === undefined ? entry.reseals : entry.reseals + 1,
          };
          if (this.#deps.durable) {
            // Recorded before the new envelope replaces the old one: until then nothing can relay it (§17.2 item 2).
            // For a first seal this one record replaces the unsealed one (same id): a crash leaves one of the two.
            entry.staged = outRecord({ ...entry, ...next });
            try {
              await this.#deps.record([entry.staged]);
            } finally {
              entry.staged = undefined;
            }
            if (this.#entries.get(entry.id) !== entry) continue; // settled meanwhile (expired, a receipt of the old envelope)
          }
          if (entry.hashHex !== '' && this.#byHash.get(entry.hashHex) === entry) this.#byHash.delete(entry.hashHex);
          entry.envelope = next.envelope;
          entry.hashHex = next.hashHex;
          entry.sessionIdHex = next.sessionIdHex;
          entry.peerKey = next.peerKey;
          entry.reseals = next.reseals;
          entry.status = undefined;
          entry.backoffMs = resendBaseMs(options);
          entry.nextAttemptAtMs = Date.now() + entry.backoffMs;
          this.#byHash.set(entry.hashHex, entry);
          void this.#transmit(entry);
        } catch (error) {
          if (lifecycle.stopped) return;
          // This message's own failure (or a later session's): it ends this one only.
          this.#noSession(peerId, [entry], ClientError.from(error), false);
        }
      }
    } finally {
      for (const entry of entries) entry.resealing = false;
    }
  }

  /**
   * Sends waiting for a session with `peerId` did not get one, or could not be sealed in it (§17.2 item 6).
   * Permanent: they settle with the failure's code — with `handshake`, every send to the peer that waits for a
   * session, also those waiting for their next attempt. Otherwise they are tried again after their backoff
   * (doubling), until they expire.
   */
  #noSession(peerId: string, entries: readonly OutboxEntry[], error: ClientError, handshake: boolean): void {
    if (isPermanentHandshakeFailure(error.code)) {
      const waiting = handshake ? [...this.#entries.values()].filter((e) => e.to === peerId && e.sessionIdHex === '' && !e.resealing && e.durable) : [];
      for (const entry of new Set([...entries, ...waiting])) this.#settle(entry, { outcome: 'failed', error });
      return;
    }
    const now = Date.now();
    for (const entry of entries) {
      if (this.#entries.get(entry.id) !== entry) continue;
      entry.nextAttemptAtMs = now + entry.backoffMs; // the tick tries again
      entry.backoffMs = Math.min(entry.backoffMs * 2, MAX_BACKOFF_MS);
      entry.status = undefined;
      entry.sessionIdHex = '';
    }
  }
}

/** The message as the session layer takes it. */
function outgoing(msg: OutboxMessage): OutgoingMessage {
  return {
    type: msg.type as MessageType,
    content: msg.content as JsonValue,
    ...(msg.handoffHash === undefined ? {} : { handoffHash: fromBase64Url(msg.handoffHash) }),
    ...(msg.parentMessageHash === undefined ? {} : { parentMessageHash: fromBase64Url(msg.parentMessageHash) }),
  };
}

/** Whether a send waits for a session: never sealed, or its reseal is under way or waits to be retried. */
function waitsForSession(e: OutboxEntry): boolean {
  return e.envelope === undefined || e.sessionIdHex === '' || e.resealing;
}

/** The journal record of a send not sealed yet. */
function unsealedRecord(e: Pick<OutboxEntry, 'id' | 'to' | 'msg' | 'createdAtMs' | 'expiresAtMs'>): Extract<JournalRecord, { t: 'out_unsealed' }> {
  return { t: 'out_unsealed', id: e.id, to: e.to, msg: e.msg, at: e.createdAtMs, exp: e.expiresAtMs };
}

/** The journal record of an outbox entry (or of its next seal). */
function outRecord(e: Pick<OutboxEntry, 'id' | 'to' | 'msg' | 'hashHex' | 'sessionIdHex' | 'peerKey' | 'createdAtMs' | 'expiresAtMs' | 'reseals'> & { readonly envelope: SecureMessage }): Extract<JournalRecord, { t: 'out' }> {
  return {
    t: 'out',
    id: e.id,
    to: e.to,
    msg: e.msg,
    env: toBase64Url(toBinary(SecureMessageSchema, e.envelope)),
    hash: e.hashHex,
    sid: e.sessionIdHex,
    ...(e.peerKey.length === 0 ? {} : { peer: toBase64Url(e.peerKey) }),
    at: e.createdAtMs,
    exp: e.expiresAtMs,
    reseals: e.reseals,
  };
}
