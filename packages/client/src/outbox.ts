/**
 * The durable outbox (docs/PROTOCOL.md §13, §17.1–§17.2): a send is sealed on a durably reserved counter,
 * recorded, relayed, resent after reconnects and silent intervals, resealed in a new session when the
 * recipient refuses the session (a verified SessionReject), and settled by the recipient's verified
 * receipt, by expiry or by a permanent refusal.
 */
import { fromBase64Url, toBase64Url, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { DeliveryStatus, SecureMessageSchema, fromBinary, toBinary, type DeliveryReceipt, type JsonValue, type MessageType, type SecureMessage, type SessionReject } from '@parley/proto';
import type { OutgoingMessage, Session, SessionManager } from '@parley/session';
import { verifyCertificate, type TrustBundle } from '@parley/identity';
import { verifyReceiptSignature, verifySessionRejectSignature } from '@parley/protocol';
import { maxAgeMs, resendBaseMs, type AgentEvent, type ConnectOptions, type ReceiptSecurityEvent, type SendOptions } from './agent-options.js';
import type { GatewayConnection } from './connection.js';
import { ClientError, type ClientErrorCode } from './errors.js';
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
  envelope: SecureMessage;
  hashHex: string;
  sessionIdHex: string;
  /** The recipient's certified identity key for this session (verifies receipts and rejects). */
  peerKey: Uint8Array;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
  reseals: number;
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
   * The record of its new seal while #reseal writes it: the new envelope replaces the current one only once
   * that record is durable, and a compaction meanwhile writes this record (the one being written may go to
   * the file the compaction replaces).
   */
  staged: Extract<JournalRecord, { t: 'out' }> | undefined;
  /**
   * Being moved to a new session right now (#reseal awaits a handshake): no second reseal may pick it up
   * meanwhile — two reseals would seal the message twice, in two envelopes that the recipient cannot tell
   * are one message (different session, counter and hash), and its application would see it twice.
   */
  resealing: boolean;
  readonly waiters: Set<SendWaiter>;
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

type Settlement = { outcome: 'delivered'; receipt: DeliveryReceipt } | { outcome: 'expired' | 'failed'; error: ClientError };

export class Outbox {
  readonly #deps: OutboxDeps;
  readonly #entries = new Map<string, OutboxEntry>();
  readonly #byHash = new Map<string, OutboxEntry>();

  constructor(deps: OutboxDeps) {
    this.#deps = deps;
  }

  /** The pending send with this id (idempotency key), if any. */
  get(id: string): OutboxEntry | undefined {
    return this.#entries.get(id);
  }

  /** Sends waiting for a receipt. */
  pending(): { id: string; to: string; createdAtMs: number; expiresAtMs: number }[] {
    return [...this.#entries.values()].map((e) => ({ id: e.id, to: e.to, createdAtMs: e.createdAtMs, expiresAtMs: e.expiresAtMs }));
  }

  /** Fails every waiting `send()` with `error` (the entries stay, for the next run). */
  rejectWaiters(error: ClientError): void {
    for (const e of this.#entries.values()) for (const w of e.waiters) w.reject(error);
  }

  /** Takes back the sends a previous process left pending (sessions already restored). */
  restore(state: JournalState): void {
    const { manager, options } = this.#deps;
    for (const r of state.outbox.values()) {
      const envelope = fromBinary(SecureMessageSchema, fromBase64Url(r.env));
      const session = manager.sessionById(r.sid);
      const entry: OutboxEntry = {
        id: r.id,
        to: r.to,
        msg: r.msg,
        envelope,
        hashHex: r.hash,
        sessionIdHex: r.sid,
        // Kept in the record, so that its receipt or SessionReject verifies without the session (a record of
        // an older version has none: without its session, such a send settles only by expiry).
        peerKey: r.peer !== undefined ? fromBase64Url(r.peer) : (session?.peer.identityPublicKey ?? new Uint8Array(0)),
        createdAtMs: r.at,
        expiresAtMs: r.exp,
        reseals: r.reseals,
        status: undefined,
        nextAttemptAtMs: 0,
        backoffMs: resendBaseMs(options),
        inFlight: false,
        durable: true,
        staged: undefined,
        resealing: false,
        waiters: new Set(),
      };
      this.#entries.set(entry.id, entry);
      this.#byHash.set(entry.hashHex, entry);
      // Resent as sealed once the stream is up, whether or not its session survived (see onConnected).
    }
  }

  /** The journal records of every pending send (for compaction), each with the seal being recorded, if any. */
  records(): JournalRecord[] {
    return [...this.#entries.values()].map((e) => e.staged ?? outRecord(e));
  }

  /** Seals a new send, records it durably and relays it. */
  async enqueue(to: string, type: MessageType, content: JsonValue, options: SendOptions): Promise<OutboxEntry> {
    const deps = this.#deps;
    if (this.#entries.size >= (deps.options.maxPendingSends ?? 10_000)) throw new ClientError('rate_limited', 'too many sends waiting for a receipt');
    const msg: OutboxMessage = {
      type,
      content,
      ...(options.handoffHash === undefined ? {} : { handoffHash: toBase64Url(options.handoffHash) }),
      ...(options.parentMessageHash === undefined ? {} : { parentMessageHash: toBase64Url(options.parentMessageHash) }),
    };
    const now = Date.now();
    const id = options.id ?? toHex(deps.crypto.randomBytes(16));
    const { session, sealed } = await this.#seal(to, msg);
    deps.lifecycle.assertUsable();
    const existing = this.#entries.get(id);
    if (existing !== undefined) return existing; // the same id raced in meanwhile: the first one stands
    const entry: OutboxEntry = {
      id,
      to,
      msg,
      envelope: sealed.envelope,
      hashHex: toHex(sealed.messageHash),
      sessionIdHex: session.idHex,
      peerKey: session.peer.identityPublicKey,
      createdAtMs: now,
      expiresAtMs: Number(sealed.envelope.timestampMs) + maxAgeMs(deps.options),
      reseals: 0,
      status: undefined,
      nextAttemptAtMs: now + resendBaseMs(deps.options),
      backoffMs: resendBaseMs(deps.options),
      inFlight: false,
      durable: !deps.durable,
      staged: undefined,
      resealing: false,
      waiters: new Set(),
    };
    this.#entries.set(id, entry);
    this.#byHash.set(entry.hashHex, entry);
    if (deps.durable) {
      try {
        // Durable before it leaves this process: a crash from here on resends it after restart.
        await deps.record([outRecord(entry)]);
      } catch (error) {
        this.#forget(entry);
        throw error;
      }
      entry.durable = true;
    }
    void this.#transmit(entry);
    return entry;
  }

  /**
   * A new stream is up: everything not yet confirmed goes out again, as it was sealed (the recipient drops
   * duplicates), whether or not its session is still open here (§17.2: only a verified SessionReject reseals).
   */
  onConnected(): void {
    const { options } = this.#deps;
    for (const entry of this.#entries.values()) {
      if (entry.resealing) continue; // its reseal relays it once it is sealed again and recorded
      entry.status = undefined;
      entry.backoffMs = resendBaseMs(options);
      if (entry.sessionIdHex !== '') void this.#transmit(entry);
      else entry.nextAttemptAtMs = 0;
    }
  }

  /**
   * The periodic pass: expire, resend what got no receipt, seal (when `connected`) what is not sealed — a send
   * whose reseal failed and waits to be retried. A sealed envelope is resent as it is even when its session has
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
    void this.#reseal(pending.to, pending.sessionIdHex, pending);
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
   * Seals a message in the current session with `to` (establishing one if needed). A session that ends while
   * its counters are being reserved (idle expiry, a SessionReject, the per-peer bound) sealed nothing: the
   * message is sealed in a new one.
   * @throws the handshake's or the reservation's failure; `unavailable` if session after session ended meanwhile
   */
  async #seal(to: string, msg: OutboxMessage): Promise<{ session: Session; sealed: Awaited<ReturnType<SessionManager['sealIn']>> }> {
    const { manager, lifecycle } = this.#deps;
    const outgoing: OutgoingMessage = {
      type: msg.type as MessageType,
      content: msg.content as JsonValue,
      ...(msg.handoffHash === undefined ? {} : { handoffHash: fromBase64Url(msg.handoffHash) }),
      ...(msg.parentMessageHash === undefined ? {} : { parentMessageHash: fromBase64Url(msg.parentMessageHash) }),
    };
    for (let attempt = 1; ; attempt++) {
      const session = await manager.session(to);
      try {
        return { session, sealed: await manager.sealIn(session, outgoing) };
      } catch (error) {
        if (!session.isClosed || lifecycle.stopped) throw error;
        if (attempt >= MAX_SEAL_ATTEMPTS) throw new ClientError('unavailable', `${MAX_SEAL_ATTEMPTS} sessions with '${to}' ended while a message was being sealed`, { cause: error });
      }
    }
  }

  /** Relays an outbox entry on the live stream (if any); the tick and reconnects call it again. */
  async #transmit(entry: OutboxEntry): Promise<void> {
    const conn = this.#deps.connection();
    if (!entry.durable || conn === undefined || !conn.isOpen || entry.inFlight || this.#deps.lifecycle.stopped) return;
    entry.inFlight = true;
    const hash = entry.hashHex;
    try {
      const accepted = await conn.sendEnvelope(entry.envelope);
      if (entry.hashHex !== hash) return; // resealed meanwhile
      entry.status = accepted.status;
      // QUEUED: the gateway holds it durably until the recipient acks; DELIVERED: it may hold it only in memory.
      entry.nextAttemptAtMs = accepted.status === DeliveryStatus.QUEUED ? Number.POSITIVE_INFINITY : Date.now() + entry.backoffMs;
      entry.backoffMs = Math.min(entry.backoffMs * 2, 60_000);
    } catch (error) {
      const e = ClientError.from(error);
      if (!conn.isOpen) return; // the stream ended: resent after reconnection
      if (PERMANENT_REFUSALS.has(e.code)) {
        this.#settle(entry, { outcome: 'failed', error: e });
        return;
      }
      entry.nextAttemptAtMs = Date.now() + entry.backoffMs; // rate_limited, unavailable, …: try again later
      entry.backoffMs = Math.min(entry.backoffMs * 2, 60_000);
    } finally {
      entry.inFlight = false;
    }
  }

  #settle(entry: OutboxEntry, result: Settlement): void {
    if (this.#entries.get(entry.id) !== entry) return;
    this.#forget(entry);
    // Not awaited: if this record is lost in a crash, the next run resends and the recipient re-sends the receipt.
    if (this.#deps.durable) void this.#deps.record([{ t: 'out_done', id: entry.id, outcome: result.outcome }]).catch(() => undefined);
    for (const w of entry.waiters) {
      if (result.outcome === 'delivered') w.resolve(result.receipt);
      else w.reject(result.error);
    }
    entry.waiters.clear();
    this.#deps.emit(result.outcome === 'delivered' ? { kind: 'send_settled', id: entry.id, to: entry.to, outcome: 'delivered', receipt: result.receipt } : { kind: 'send_settled', id: entry.id, to: entry.to, outcome: result.outcome, error: result.error });
  }

  #forget(entry: OutboxEntry): void {
    this.#entries.delete(entry.id);
    if (this.#byHash.get(entry.hashHex) === entry) this.#byHash.delete(entry.hashHex);
  }

  /**
   * Moves to a new session with its peer (§17.2) the send a verified SessionReject names (`only`: the session
   * it names is closed here too), or, with `sessionIdHex` empty, every unsealed send to `peerId`.
   */
  async #reseal(peerId: string, sessionIdHex: string, only?: OutboxEntry): Promise<void> {
    const { manager, options, lifecycle } = this.#deps;
    const dead = manager.sessionById(sessionIdHex);
    if (dead !== undefined) manager.closeSession(dead);
    // Claimed all at once, before the first await: a SessionReject, the tick and a reconnect can each ask
    // for the same sends while a new session's handshake runs.
    const candidates = only === undefined ? [...this.#entries.values()] : [only];
    const entries = candidates.filter((e) => e.sessionIdHex === sessionIdHex && (sessionIdHex !== '' || e.to === peerId) && !e.resealing);
    if (entries.length === 0) return;
    for (const entry of entries) entry.resealing = true;
    this.#deps.emit({ kind: 'resealed', peerId, sessionIdHex, messages: entries.length });
    try {
      for (const entry of entries) {
        if (this.#entries.get(entry.id) !== entry) continue;
        if (entry.reseals >= MAX_RESEALS) {
          this.#settle(entry, { outcome: 'failed', error: new ClientError('unknown_session', `'${entry.to}' refused ${MAX_RESEALS + 1} sessions in a row`) });
          continue;
        }
        try {
          const { session, sealed } = await this.#seal(entry.to, entry.msg);
          if (this.#entries.get(entry.id) !== entry) continue;
          const next = { envelope: sealed.envelope, hashHex: toHex(sealed.messageHash), sessionIdHex: session.idHex, peerKey: session.peer.identityPublicKey, reseals: entry.reseals + 1 };
          if (this.#deps.durable) {
            // Recorded before the new envelope replaces the old one: until then nothing can relay it (§17.2 item 2).
            entry.staged = outRecord({ ...entry, ...next });
            try {
              await this.#deps.record([entry.staged]);
            } finally {
              entry.staged = undefined;
            }
            if (this.#entries.get(entry.id) !== entry) continue; // settled meanwhile (expired, a receipt of the old envelope)
          }
          this.#byHash.delete(entry.hashHex);
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
          const e = ClientError.from(error);
          if (lifecycle.stopped) return;
          if (e.code === 'handshake_failed' || e.code === 'unavailable' || e.code === 'rate_limited') {
            entry.nextAttemptAtMs = Date.now() + entry.backoffMs; // the tick retries the reseal
            entry.status = undefined;
            entry.sessionIdHex = '';
          } else this.#settle(entry, { outcome: 'failed', error: e });
        }
      }
    } finally {
      for (const entry of entries) entry.resealing = false;
    }
  }
}

/** The journal record of an outbox entry (or of its next seal). */
function outRecord(e: Pick<OutboxEntry, 'id' | 'to' | 'msg' | 'envelope' | 'hashHex' | 'sessionIdHex' | 'peerKey' | 'createdAtMs' | 'expiresAtMs' | 'reseals'>): Extract<JournalRecord, { t: 'out' }> {
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
