/**
 * The agent gateway (DESIGN.md "Gateway"; docs/PROTOCOL.md §10): an
 * implementation of parley.v1.AgentGatewayService that authenticates agents
 * by certificate and identity key, checks every item it relays (shape,
 * sender, size, rate, policy, signature) and relays it to the recipient's
 * live stream. It never holds a session key: it sees headers, never plaintext.
 *
 * Every routed item goes through the durable mailbox (./mailbox.ts) before it
 * is written to a live stream, and stays there until the recipient acks it
 * (at-least-once; duplicates are dropped by the recipient's replay
 * protection). Every routed item gets one audit entry (packages/audit), and
 * an item whose audit entry cannot be written is rejected (fail closed).
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { toHex } from '@parley/crypto-core';
import type { AuditLog } from '@parley/audit';
import { verifyCertificate, type RevocationChecker, type TrustBundle, type VerifiedCertificate } from '@parley/identity';
import {
  DeliveryStatus,
  MessageType,
  OutboundSchema,
  type AgentCertificate,
  toBinary,
  type ConnectRequest,
  type ConnectResponseSchema,
  type DeliveryReceipt,
  type MessageInitShape,
  type Outbound,
  type SendRequest,
  type SendResponseSchema,
  type SessionReject,
} from '@parley/proto';
import { RpcError, requestBytesOf, type CallContext } from '@parley/rpc';
import { assertEnvelopeShape, assertFrameShape, isAgentId, MAX_ENVELOPE_BYTES, SESSION_ID_BYTES, verifyEnvelopeSignature } from '@parley/session';
import type { Logger } from 'pino';
import { Channel } from '@parley/rpc';
import {
  CHALLENGE_NONCE_BYTES,
  ITEM_HASH_BYTES,
  SEND_NONCE_BYTES,
  SIGNATURE_BYTES,
  deliveryReceiptLayout,
  sessionRejectLayout,
  gatewayAuthLayout,
  gatewaySendLayout,
  itemDigest,
  type RelayItem,
} from './layouts.js';
import type { Mailbox, MailboxItem } from './mailbox.js';
import { GatewayMetrics } from './metrics.js';
import { Policy, type PolicySubject } from './policy.js';
import { RateLimiter, type RateLimitOptions } from './rate-limit.js';

type ConnectResponseInit = MessageInitShape<typeof ConnectResponseSchema>;
type SendResponseInit = MessageInitShape<typeof SendResponseSchema>;
/** A Delivery as the gateway writes it (what the test-only tamper hook may change). */
export type DeliveryInit = Extract<ConnectResponseInit['kind'], { case: 'delivery' }>['value'];

const GATEWAY_ID_RE = /^[a-z0-9._:-]{1,128}$/;
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
  /** Largest encoded Outbound (or SendRequest) accepted, bytes. Default {@link DEFAULT_MAX_FRAME_BYTES}. */
  readonly maxFrameBytes?: number;
  /** Check envelope and receipt signatures before relaying. Default true. */
  readonly verifySignatures?: boolean;
  /** A stream must authenticate within this many ms. Default 10 000. */
  readonly authTimeoutMs?: number;
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
   * Called after an item is stored for a recipient with no stream on this
   * instance, so other instances sharing the database can deliver it
   * (startGateway wires it to PostgreSQL `NOTIFY parley_mailbox`; see {@link Gateway.mailboxNotified}).
   */
  readonly notifyStored?: (recipientId: string) => void;
}

/** An authenticated stream. */
interface Link {
  readonly cert: VerifiedCertificate;
  readonly certificate: AgentCertificate;
  readonly subject: PolicySubject;
  readonly out: Channel<ConnectResponseInit>;
  readonly remote: string;
  /** Highest delivery id written to this stream (acks above it are refused). */
  lastDeliveryId: bigint;
  /** Delivery ids written to this stream and not acked yet (never written twice to one stream). */
  readonly sent: Set<bigint>;
  /** The mailbox backlog has been drained: new items are written directly. */
  ready: boolean;
  /** A backlog drain is running. */
  pumping: boolean;
  /** Something was stored while draining: drain again. */
  dirty: boolean;
}

/** Who sent an item: a stream's agent or a unary Send's verified certificate. */
interface Sender {
  readonly cert: VerifiedCertificate;
  readonly subject: PolicySubject;
  readonly remote: string;
}

function subjectOf(cert: VerifiedCertificate): PolicySubject {
  return { agentId: cert.agentId, agentType: cert.agentType, capabilities: cert.capabilities };
}

function reject(code: RpcError['code'], message: string): never {
  throw new RpcError(code, message);
}

/** The checks of the receipt shape (§10.5): version, lengths, ids, time range. */
function assertReceiptShape(r: DeliveryReceipt): void {
  if (r.version !== 1) reject('unsupported_version', `receipt version ${r.version} is not supported`);
  if (r.messageHash.length !== ITEM_HASH_BYTES) reject('malformed', `receipt message_hash must be ${ITEM_HASH_BYTES} bytes`);
  if (r.signature.length !== SIGNATURE_BYTES) reject('malformed', `receipt signature must be ${SIGNATURE_BYTES} bytes`);
  if (!isAgentId(r.senderId) || !isAgentId(r.recipientId)) reject('malformed', 'receipt agent ids are not valid');
  if (r.senderId === r.recipientId) reject('malformed', 'receipt sender and recipient are the same agent');
  if (r.receivedAtMs < 0n || r.receivedAtMs > BigInt(Number.MAX_SAFE_INTEGER)) reject('malformed', 'receipt received_at_ms out of range');
}

/** The checks of the session-reject shape (§17.4): version, lengths, ids, time range. */
function assertSessionRejectShape(r: SessionReject): void {
  if (r.version !== 1) reject('unsupported_version', `session reject version ${r.version} is not supported`);
  if (r.sessionId.length !== SESSION_ID_BYTES) reject('malformed', `session reject session_id must be ${SESSION_ID_BYTES} bytes`);
  if (r.messageHash.length !== ITEM_HASH_BYTES) reject('malformed', `session reject message_hash must be ${ITEM_HASH_BYTES} bytes`);
  if (r.signature.length !== SIGNATURE_BYTES) reject('malformed', `session reject signature must be ${SIGNATURE_BYTES} bytes`);
  if (!isAgentId(r.senderId) || !isAgentId(r.recipientId)) reject('malformed', 'session reject agent ids are not valid');
  if (r.senderId === r.recipientId) reject('malformed', 'session reject sender and recipient are the same agent');
  if (r.rejectedAtMs < 0n || r.rejectedAtMs > BigInt(Number.MAX_SAFE_INTEGER)) reject('malformed', 'session reject rejected_at_ms out of range');
}

/** Shape checks of an item, before anything else (§10.3 step 1). */
function assertItemShape(item: Outbound['item'] | SendRequest['item']): RelayItem {
  try {
    switch (item.case) {
      case 'handshake': {
        const step = item.value.step;
        if (step !== 1 && step !== 2 && step !== 3) reject('malformed', 'handshake step must be 1, 2 or 3');
        assertFrameShape(item.value, step);
        return item;
      }
      case 'envelope':
        assertEnvelopeShape(item.value);
        return item;
      case 'receipt':
        assertReceiptShape(item.value);
        return item;
      case 'sessionReject':
        assertSessionRejectShape(item.value);
        return item;
      default:
        return reject('malformed', 'no item to relay');
    }
  } catch (error) {
    throw RpcError.from(error);
  }
}

/** The agent an item must come from (the authenticated one), and the agent it goes to. */
function routeOf(item: RelayItem): { from: string; to: string } {
  switch (item.case) {
    case 'handshake':
    case 'envelope':
      return { from: item.value.senderId, to: item.value.recipientId };
    case 'receipt':
    case 'sessionReject':
      // Signed by the envelope's recipient, addressed to the envelope's sender.
      return { from: item.value.recipientId, to: item.value.senderId };
  }
}

/**
 * The gateway service. Register it with `addService(server, AgentGatewayService, gateway)`
 * (startGateway in server.ts does), and call `close()` on shutdown.
 */
export class Gateway {
  readonly #o: GatewayOptions;
  readonly #crypto: ParleyCrypto;
  readonly #clock: () => number;
  readonly #log: Logger;
  readonly #limiter: RateLimiter;
  readonly #maxFrameBytes: number;
  readonly #links = new Map<string, Link>();
  /** Unary Send nonces in use: key → expiry ms. */
  readonly #sendNonces = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;
  readonly #sweepTimer: NodeJS.Timeout;
  readonly #mailbox: Mailbox;
  readonly #audit: AuditLog;
  /** Operations touching the database, awaited by `close()`. */
  readonly #inflight = new Set<Promise<unknown>>();
  /** Prometheus instruments (served by startGateway's metrics listener). */
  readonly metrics: GatewayMetrics;
  #policy: Policy;
  #closing = false;

  /**
   * TEST-ONLY: called on every Delivery just before it is written, so a test
   * can play a malicious relay. Never set this outside tests.
   */
  tamperWithRelayedFramesForTestingOnly: ((delivery: DeliveryInit) => void) | undefined;

  constructor(options: GatewayOptions) {
    if (!GATEWAY_ID_RE.test(options.gatewayId)) throw new RangeError('gatewayId must be 1..128 characters of [a-z0-9._:-]');
    this.#o = options;
    this.#crypto = options.crypto;
    this.#clock = options.clock ?? Date.now;
    this.#log = options.logger;
    this.#policy = options.policy ?? Policy.denyAll();
    this.#limiter = new RateLimiter({ ...(options.rateLimit ?? { ratePerSecond: 100, burst: 200 }), clock: this.#clock });
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.#mailbox = options.mailbox;
    this.#audit = options.audit;
    const maxAge = options.receiverMaxAgeMs ?? DEFAULT_RECEIVER_MAX_AGE_MS;
    if (this.#mailbox.ttlMs > maxAge) throw new RangeError(`mailbox TTL ${this.#mailbox.ttlMs} ms exceeds the receivers' max_age ${maxAge} ms (§8.3)`);
    this.metrics = new GatewayMetrics({ connectedAgents: () => this.#links.size, mailboxDepth: () => this.#mailbox.depth() });
    this.#timer = setInterval(() => this.recheckLiveStreams(), options.revocationCheckIntervalMs ?? 500);
    this.#timer.unref();
    this.#sweepTimer = setInterval(() => void this.sweepMailbox().catch(() => undefined), options.mailboxSweepIntervalMs ?? 60_000);
    this.#sweepTimer.unref();
  }

  /**
   * Deletes expired mailbox items now (also runs every `mailboxSweepIntervalMs`).
   * @returns how many were dropped
   */
  async sweepMailbox(): Promise<number> {
    try {
      const n = await this.#track(this.#mailbox.sweep());
      if (n > 0) {
        this.metrics.expired.inc(n);
        this.#log.info({ expired: n }, 'mailbox items expired');
      }
      return n;
    } catch (error) {
      this.#log.error({ err: error }, 'mailbox sweep failed');
      throw error;
    }
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    const done = (): void => void this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  get gatewayId(): string {
    return this.#o.gatewayId;
  }

  /** Largest encoded Outbound accepted. */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  /** Agent ids with a live authenticated stream. */
  connectedAgents(): string[] {
    return [...this.#links.keys()];
  }

  /**
   * Another instance stored items for `recipientId` (a `parley_mailbox`
   * notification): if that agent has a stream here, deliver what is pending.
   * @returns whether the agent is connected here
   */
  mailboxNotified(recipientId: string): boolean {
    const link = this.#links.get(recipientId);
    if (link === undefined || this.#closing) return false;
    this.#pump(link);
    return true;
  }

  /** Re-drains every connected agent's mailbox (after notifications may have been missed). */
  pumpAll(): void {
    for (const link of this.#links.values()) this.#pump(link);
  }

  /** Swaps in a new routing policy; applies to the next item checked. */
  setPolicy(policy: Policy): void {
    this.#policy = policy;
    this.#log.info({ rules: policy.document.rules.length }, 'policy reloaded');
  }

  /**
   * Closes, with GoAway `revoked`, every live stream of a revoked agent id or
   * certificate serial (call it when the registry announces a revocation; the
   * periodic re-check catches the rest).
   * @returns how many streams were closed
   */
  onRevocation(subject: { readonly agentId: string } | { readonly serial: Uint8Array }): number {
    let closed = 0;
    for (const link of [...this.#links.values()]) {
      const hit = 'agentId' in subject ? link.cert.agentId === subject.agentId : this.#crypto.constantTimeEqual(link.cert.serial, subject.serial);
      if (hit) {
        this.#security('revocation', 'revoked', { agent: link.cert.agentId, remote: link.remote }, 'certificate revoked while connected');
        this.#goAway(link, 'revoked', 'certificate revoked');
        closed++;
      }
    }
    return closed;
  }

  /** Re-checks every live stream's certificate (revocation, expiry); runs every 500 ms. */
  recheckLiveStreams(): void {
    const now = this.#clock();
    for (const link of [...this.#links.values()]) {
      let code: RpcError['code'] | undefined;
      try {
        if (now >= link.cert.validUntilMs) code = 'expired';
        else if (this.#o.revocations.check({ agentId: link.cert.agentId, serial: link.cert.serial }, now).revoked) code = 'revoked';
      } catch (error) {
        code = RpcError.from(error).code === 'revocation_stale' ? 'revocation_stale' : 'internal';
      }
      if (code !== undefined) {
        this.#security('revocation', code, { agent: link.cert.agentId, remote: link.remote }, 'live stream certificate no longer valid');
        this.#goAway(link, code, code === 'revoked' ? 'certificate revoked' : 'certificate no longer valid');
      }
    }
    this.#limiter.sweep();
    for (const [key, expiry] of this.#sendNonces) if (expiry <= now) this.#sendNonces.delete(key);
  }

  /**
   * Sends GoAway `shutting_down` to every stream, stops the timers and waits
   * for the database work in flight (the caller then closes the audit log and database).
   */
  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#timer);
    clearInterval(this.#sweepTimer);
    for (const link of [...this.#links.values()]) this.#goAway(link, 'shutting_down', 'gateway is shutting down');
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  // -------------------------------------------------------------------------
  // Connect

  /** The bidirectional Connect stream (§10.2, §10.3). */
  async *connect(requests: AsyncIterable<ConnectRequest>, ctx: CallContext): AsyncGenerator<ConnectResponseInit> {
    if (this.#closing) throw new RpcError('unavailable', 'gateway is shutting down');
    const out = new Channel<ConnectResponseInit>();
    const state: { link: Link | undefined } = { link: undefined };
    void this.#drive(requests, ctx, out, state);
    try {
      yield* out;
    } finally {
      out.end();
      const link = state.link;
      if (link !== undefined && this.#links.get(link.cert.agentId) === link) this.#links.delete(link.cert.agentId);
    }
  }

  async #drive(requests: AsyncIterable<ConnectRequest>, ctx: CallContext, out: Channel<ConnectResponseInit>, state: { link: Link | undefined }): Promise<void> {
    const it = requests[Symbol.asyncIterator]();
    const remote = ctx.peer;
    const authTimer = setTimeout(() => {
      this.#security('connect', 'unauthenticated', { remote }, 'stream did not authenticate in time');
      out.fail(new RpcError('unauthenticated', 'stream did not authenticate in time'));
    }, this.#o.authTimeoutMs ?? 10_000);
    authTimer.unref();
    try {
      const link = await this.#authenticate(it, out, remote);
      clearTimeout(authTimer);
      if (link === undefined) return;
      state.link = link;
      await this.#track(this.#mailbox.rememberAgent(link.certificate));
      const depth = await this.#track(this.#mailbox.depth(link.cert.agentId));
      // Welcome goes out before the link is visible to routing, so no delivery can
      // precede it; anything stored meanwhile is in the mailbox and the pump below
      // drains it.
      out.push({ kind: { case: 'welcome', value: { agentId: link.cert.agentId, mailboxDepth: BigInt(depth), maxFrameBytes: this.#maxFrameBytes } } });
      const previous = this.#links.get(link.cert.agentId);
      this.#links.set(link.cert.agentId, link);
      if (previous !== undefined) this.#goAway(previous, 'replaced', 'a newer stream authenticated as this agent');
      this.#log.info({ agent: link.cert.agentId, remote, mailbox_depth: depth }, 'agent connected');
      // The backlog first, in delivery-id order; items routed meanwhile join it (see #pump).
      this.#pump(link);

      for (;;) {
        const next = await it.next();
        if (next.done === true || out.closed) break;
        const request = next.value;
        switch (request.kind.case) {
          case 'send':
            // One at a time, in order: items from one stream keep their order through the mailbox.
            await this.#onOutbound(link, request.kind.value, requestBytesOf(request)?.length);
            break;
          case 'ack': {
            const id = request.kind.value.deliveryId;
            if (id < 1n || id > link.lastDeliveryId) {
              this.#security('ack', 'malformed', { agent: link.cert.agentId, remote }, `ack of unknown delivery_id ${id}`);
              out.push({ kind: { case: 'rejected', value: { requestId: 0n, code: 'malformed', message: 'ack of an unknown delivery_id' } } });
              break;
            }
            link.sent.delete(id);
            try {
              await this.#track(this.#mailbox.ack(link.cert.agentId, id)); // an already-deleted id (a duplicate ack) is fine
            } catch (error) {
              this.#log.error({ err: error, agent: link.cert.agentId }, 'mailbox ack failed (the item will be redelivered)');
            }
            break;
          }
          default:
            this.#security('connect', 'malformed', { agent: link.cert.agentId, remote }, `unexpected ${request.kind.case ?? 'empty'} frame`);
            out.fail(new RpcError('malformed', 'only send and ack frames are allowed after welcome'));
            return;
        }
      }
      out.end();
    } catch (error) {
      clearTimeout(authTimer);
      const e = RpcError.from(error);
      if (e.code === 'internal') this.#log.error({ err: error, remote }, 'connect stream failed');
      out.fail(e);
    }
  }

  /** hello → challenge → auth → (welcome by the caller). Undefined when the stream ended first. */
  async #authenticate(it: AsyncIterator<ConnectRequest>, out: Channel<ConnectResponseInit>, remote: string): Promise<Link | undefined> {
    const refuse = (code: RpcError['code'], message: string, agent?: string): never => {
      this.#security('connect', code, { remote, ...(agent === undefined ? {} : { agent }) }, message);
      throw new RpcError(code, message);
    };
    const first = await it.next();
    if (first.done === true || out.closed) return undefined;
    const hello = first.value.kind;
    if (hello.case !== 'hello') return refuse('unauthenticated', 'the first frame must be hello');
    if (hello.value.version !== 1) return refuse('unsupported_version', `hello version ${hello.value.version} is not supported`);
    if (hello.value.certificate === undefined) return refuse('malformed', 'hello carries no certificate');
    let cert: VerifiedCertificate;
    try {
      cert = verifyCertificate(this.#crypto, hello.value.certificate, {
        trustBundle: this.#o.trustBundle,
        nowMs: this.#clock(),
        revocations: this.#o.revocations,
      });
    } catch (error) {
      const e = RpcError.from(error);
      return refuse(e.code, e.details, isAgentId(hello.value.certificate.agentId) ? hello.value.certificate.agentId : undefined);
    }
    const nonce = this.#crypto.randomBytes(CHALLENGE_NONCE_BYTES);
    out.push({ kind: { case: 'challenge', value: { gatewayId: this.#o.gatewayId, nonce, serverTimeMs: BigInt(this.#clock()) } } });

    const second = await it.next();
    if (second.done === true || out.closed) return undefined;
    const auth = second.value.kind;
    if (auth.case !== 'auth') return refuse('unauthenticated', 'the second frame must be auth', cert.agentId);
    const signed = gatewayAuthLayout(this.#o.gatewayId, nonce, cert.agentId, cert.serial);
    if (auth.value.signature.length !== SIGNATURE_BYTES || !this.#crypto.ed25519.verify(auth.value.signature, signed, cert.identityPublicKey)) {
      return refuse('bad_signature', 'auth proof does not verify', cert.agentId);
    }
    return {
      cert,
      certificate: hello.value.certificate,
      subject: subjectOf(cert),
      out,
      remote,
      lastDeliveryId: 0n,
      sent: new Set(),
      ready: false,
      pumping: false,
      dirty: false,
    };
  }

  /**
   * Drains a stream's mailbox backlog in delivery-id order, again while items
   * arrive during the drain, then marks the stream ready (new items are then
   * written directly by #route). Never writes one delivery id twice to a stream.
   */
  #pump(link: Link): void {
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
            const batch = await this.#mailbox.pending(agent, after, 100);
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
        this.#log.error({ err: error, agent }, 'mailbox drain failed');
      } finally {
        link.pumping = false;
      }
    };
    void this.#track(run());
  }

  /** Writes one stored item to a stream as a Delivery (unless already written to this stream). */
  #deliver(link: Link, stored: MailboxItem): void {
    if (link.sent.has(stored.deliveryId) || link.out.closed) return;
    const delivery: DeliveryInit = { deliveryId: stored.deliveryId, acceptedAtMs: BigInt(stored.acceptedAtMs), item: cloneItem(stored.item) };
    this.tamperWithRelayedFramesForTestingOnly?.(delivery);
    if (!link.out.push({ kind: { case: 'delivery', value: delivery } })) return;
    link.sent.add(stored.deliveryId);
    if (stored.deliveryId > link.lastDeliveryId) link.lastDeliveryId = stored.deliveryId;
    this.metrics.redelivered.inc();
  }

  async #onOutbound(link: Link, outbound: Outbound, wireBytes: number | undefined): Promise<void> {
    const requestId = outbound.requestId;
    try {
      const size = wireBytes ?? toBinary(OutboundSchema, outbound).length;
      const { itemHash, status } = await this.#track(this.#measured(link, outbound.item, size, { requestId, stage: 'outbound' }));
      link.out.push({ kind: { case: 'accepted', value: { requestId, itemHash, status } } });
    } catch (error) {
      const e = RpcError.from(error);
      if (e.code === 'internal') this.#log.error({ err: error, agent: link.cert.agentId }, 'relaying failed');
      link.out.push({ kind: { case: 'rejected', value: { requestId, code: e.code, message: e.details } } });
    }
  }

  /** #route with metrics: latency, routed by kind and status, rejected by code. */
  async #measured(
    sender: Sender,
    rawItem: Outbound['item'] | SendRequest['item'],
    size: number,
    where: { readonly requestId?: bigint; readonly stage: string },
  ): Promise<{ itemHash: Uint8Array; status: DeliveryStatus }> {
    const stop = this.metrics.latency.startTimer();
    try {
      const result = await this.#route(sender, rawItem, size, where);
      stop();
      this.metrics.routed.inc({ kind: rawItem.case ?? 'none', status: result.status === DeliveryStatus.DELIVERED ? 'delivered' : 'queued' });
      if (rawItem.case === 'handshake') this.metrics.handshakes.inc({ step: String(rawItem.value.step) });
      return result;
    } catch (error) {
      this.metrics.rejected.inc({ code: RpcError.from(error).code });
      throw error;
    }
  }

  /** The subject of an offline recipient: its last certificate seen, if that still verifies now. */
  async #offlineSubject(agentId: string): Promise<PolicySubject | undefined> {
    const certificate = await this.#mailbox.lastCertificate(agentId);
    if (certificate === undefined) return undefined;
    try {
      const cert = verifyCertificate(this.#crypto, certificate, { trustBundle: this.#o.trustBundle, nowMs: this.#clock(), revocations: this.#o.revocations });
      return cert.agentId === agentId ? subjectOf(cert) : undefined;
    } catch {
      return undefined; // revoked, expired, or no longer trusted: treated like a never-seen agent
    }
  }

  /** One audit entry; false (logged, counted) when it could not be written. */
  async #auditEntry(itemHash: Uint8Array, senderId: string, recipientId: string, outcome: string): Promise<boolean> {
    try {
      await this.#audit.append({ messageHash: itemHash, senderId, recipientId, messageType: MessageType.UNSPECIFIED, outcome });
      return true;
    } catch (error) {
      this.metrics.auditFailures.inc();
      this.#log.error({ err: error, agent: senderId, peer: recipientId, outcome }, 'audit append failed');
      return false;
    }
  }

  /**
   * The checks of §10.3 after authentication, in order, then the relay.
   * @throws RpcError with the stable code of the first failing check (already logged)
   */
  async #route(
    sender: Sender,
    rawItem: Outbound['item'] | SendRequest['item'],
    size: number,
    where: { readonly requestId?: bigint; readonly stage: string },
  ): Promise<{ itemHash: Uint8Array; status: DeliveryStatus }> {
    const agent = sender.cert.agentId;
    const routed: { peer?: string } = {};
    const fail = (code: RpcError['code'], message: string): never => {
      this.#security(
        where.stage,
        code,
        { agent, remote: sender.remote, ...(routed.peer === undefined ? {} : { peer: routed.peer }), ...(where.requestId === undefined ? {} : { requestId: where.requestId }) },
        message,
      );
      throw new RpcError(code, message);
    };
    // 1. shape
    let item: RelayItem;
    try {
      item = assertItemShape(rawItem);
    } catch (error) {
      const e = RpcError.from(error);
      return fail(e.code, e.details);
    }
    const { from, to } = routeOf(item);
    routed.peer = to;
    // 2. sender is the authenticated agent
    if (from !== agent) return fail('identity_mismatch', `${item.case} is not from the authenticated agent`);
    // 3. size
    if (size > this.#maxFrameBytes) return fail('too_large', `item of ${size} bytes exceeds ${this.#maxFrameBytes}`);
    // 4. rate
    if (!this.#limiter.take(agent)) return fail('rate_limited', 'rate limit exceeded');
    const itemHash = itemDigest(this.#crypto, item);
    // Refusals past the rate limit are audited too (cheap refusals before it are not: that would let a
    // flood amplify into signatures and database writes).
    const refuse = async (code: RpcError['code'], message: string): Promise<never> => {
      await this.#auditEntry(itemHash, agent, to, `rejected:${code}`);
      return fail(code, message);
    };
    // 5. route: the recipient's certificate (live stream, else the last one seen) and policy, in the
    //    direction of the conversation. Never seen (or no longer valid) reads as policy_denied, so a
    //    sender cannot probe which agent ids exist.
    const live = this.#links.get(to);
    let recipient: PolicySubject | undefined;
    try {
      recipient = live?.subject ?? (await this.#offlineSubject(to));
    } catch (error) {
      this.#log.error({ err: error, agent, peer: to }, 'agent directory lookup failed');
      return fail('unavailable', 'gateway storage unavailable');
    }
    if (recipient === undefined) return refuse('policy_denied', `recipient ${to} was never seen or its last certificate no longer verifies`);
    const initiatorToResponder = item.case === 'receipt' || item.case === 'sessionReject' || (item.case === 'handshake' && item.value.step === 2);
    const allowed = initiatorToResponder ? this.#policy.allows(recipient, sender.subject) : this.#policy.allows(sender.subject, recipient);
    if (!allowed) return refuse('policy_denied', 'policy does not allow this route');
    // 6. signatures (the gateway holds no session key; these need none)
    if (this.#o.verifySignatures !== false) {
      if (item.case === 'envelope' && !verifyEnvelopeSignature(this.#crypto, item.value, sender.cert.identityPublicKey)) {
        return refuse('bad_signature', 'envelope signature does not verify');
      }
      if (item.case === 'receipt' && !this.#crypto.ed25519.verify(item.value.signature, deliveryReceiptLayout(item.value), sender.cert.identityPublicKey)) {
        return refuse('bad_signature', 'receipt signature does not verify');
      }
      if (item.case === 'sessionReject' && !this.#crypto.ed25519.verify(item.value.signature, sessionRejectLayout(item.value), sender.cert.identityPublicKey)) {
        return refuse('bad_signature', 'session reject signature does not verify');
      }
    }
    // 7. store in the mailbox, audit (fail closed), then deliver live if the recipient is connected.
    let stored: MailboxItem;
    try {
      stored = await this.#mailbox.put(to, agent, item, itemHash);
    } catch (error) {
      this.#log.error({ err: error, agent, peer: to }, 'mailbox write failed');
      return fail('unavailable', 'gateway storage unavailable');
    }
    const status = this.#links.has(to) ? DeliveryStatus.DELIVERED : DeliveryStatus.QUEUED;
    if (!(await this.#auditEntry(itemHash, agent, to, status === DeliveryStatus.DELIVERED ? 'delivered' : 'queued'))) {
      await this.#mailbox.remove(to, stored.deliveryId).catch((error: unknown) => this.#log.error({ err: error }, 'could not withdraw an unaudited item'));
      return fail('unavailable', 'audit log unavailable: item not accepted');
    }
    const link = this.#links.get(to);
    if (link !== undefined) {
      if (link.ready) this.#deliver(link, stored);
      else this.#pump(link);
    } else if (this.#o.notifyStored !== undefined) {
      try {
        this.#o.notifyStored(to);
      } catch (error) {
        this.#log.warn({ err: error, peer: to }, 'cross-instance notification failed (delivered on reconnect)');
      }
    }
    this.#log.debug(
      { agent, peer: to, item: item.case, delivery_id: stored.deliveryId.toString(), item_hash: toHex(itemHash), status: DeliveryStatus[status] },
      'routed',
    );
    return { itemHash, status };
  }

  // -------------------------------------------------------------------------
  // Send (unary)

  /** Unary Send (§10.6): one item, authenticated by a signature over the send layout. */
  async send(request: SendRequest, ctx: CallContext): Promise<SendResponseInit> {
    if (this.#closing) throw new RpcError('unavailable', 'gateway is shutting down');
    const remote = ctx.peer;
    const refuse = (code: RpcError['code'], message: string, agent?: string): never => {
      this.#security('send', code, { remote, ...(agent === undefined ? {} : { agent }) }, message);
      this.metrics.rejected.inc({ code });
      throw new RpcError(code, message);
    };
    if (request.certificate === undefined) return refuse('malformed', 'send carries no certificate');
    if (request.nonce.length !== SEND_NONCE_BYTES) return refuse('malformed', `nonce must be ${SEND_NONCE_BYTES} bytes`);
    if (request.signature.length !== SIGNATURE_BYTES) return refuse('malformed', `signature must be ${SIGNATURE_BYTES} bytes`);
    const now = this.#clock();
    let cert: VerifiedCertificate;
    try {
      cert = verifyCertificate(this.#crypto, request.certificate, { trustBundle: this.#o.trustBundle, nowMs: now, revocations: this.#o.revocations });
    } catch (error) {
      const e = RpcError.from(error);
      return refuse(e.code, e.details);
    }
    const agent = cert.agentId;
    const skew = this.#o.maxClockSkewMs ?? 60_000;
    const ts = request.timestampMs;
    if (ts < BigInt(now - skew)) return refuse('stale_timestamp', 'send timestamp too old', agent);
    if (ts > BigInt(now + skew)) return refuse('future_timestamp', 'send timestamp in the future', agent);
    let item: RelayItem;
    try {
      item = assertItemShape(request.item);
    } catch (error) {
      const e = RpcError.from(error);
      return refuse(e.code, e.details, agent);
    }
    const signed = gatewaySendLayout(this.#o.gatewayId, ts, request.nonce, itemDigest(this.#crypto, item));
    if (!this.#crypto.ed25519.verify(request.signature, signed, cert.identityPublicKey)) return refuse('bad_signature', 'send signature does not verify', agent);
    const nonceKey = `${agent}/${toHex(request.nonce)}`;
    if (this.#sendNonces.has(nonceKey)) return refuse('replay', 'send nonce already used', agent);
    this.#sendNonces.set(nonceKey, Number(ts) + skew + 1000);
    const size = requestBytesOf(request)?.length ?? ctx.requestBytes.length;
    const sender: Sender = { cert, subject: subjectOf(cert), remote };
    return this.#track(this.#measured(sender, request.item, size, { stage: 'send' }));
  }

  // -------------------------------------------------------------------------

  #goAway(link: Link, code: string, message: string): void {
    if (this.#links.get(link.cert.agentId) === link) this.#links.delete(link.cert.agentId);
    link.out.push({ kind: { case: 'goAway', value: { code, message } } });
    link.out.end();
  }

  /** A structured security event: codes and names only, never key material or payload. */
  #security(stage: string, code: string, who: { agent?: string; peer?: string; remote?: string; requestId?: bigint }, detail: string): void {
    this.#log.warn(
      {
        event: 'security',
        stage,
        code,
        agent: who.agent,
        peer: who.peer,
        remote: who.remote,
        request_id: who.requestId?.toString(),
        detail,
      },
      'security event',
    );
  }
}

/** A shallow copy of the item (so a test hook cannot change what the sender's Accepted hashed). */
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
