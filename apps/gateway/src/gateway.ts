/**
 * The agent gateway (DESIGN.md "Gateway"; docs/PROTOCOL.md §10): an
 * implementation of parley.v1.AgentGatewayService that authenticates agents
 * by certificate and identity key, checks every item it relays (shape,
 * sender, size, rate, policy, signature) and relays it to the recipient's
 * live stream. It never holds a session key: it sees headers, never plaintext.
 *
 * Not here yet: the durable mailbox (offline recipients are refused with
 * `unavailable`), the audit trail, metrics.
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { toHex } from '@parley/crypto-core';
import { verifyCertificate, type RevocationChecker, type TrustBundle, type VerifiedCertificate } from '@parley/identity';
import {
  DeliveryStatus,
  OutboundSchema,
  toBinary,
  type ConnectRequest,
  type ConnectResponseSchema,
  type DeliveryReceipt,
  type MessageInitShape,
  type Outbound,
  type SendRequest,
  type SendResponseSchema,
} from '@parley/proto';
import { RpcError, requestBytesOf, type CallContext } from '@parley/rpc';
import { assertEnvelopeShape, assertFrameShape, isAgentId, MAX_ENVELOPE_BYTES, verifyEnvelopeSignature } from '@parley/session';
import type { Logger } from 'pino';
import { Channel } from './channel.js';
import {
  CHALLENGE_NONCE_BYTES,
  ITEM_HASH_BYTES,
  SEND_NONCE_BYTES,
  SIGNATURE_BYTES,
  deliveryReceiptLayout,
  gatewayAuthLayout,
  gatewaySendLayout,
  itemDigest,
  type RelayItem,
} from './layouts.js';
import { Policy, type PolicySubject } from './policy.js';
import { RateLimiter, type RateLimitOptions } from './rate-limit.js';

type ConnectResponseInit = MessageInitShape<typeof ConnectResponseSchema>;
type SendResponseInit = MessageInitShape<typeof SendResponseSchema>;
/** A Delivery as the gateway writes it (what the test-only tamper hook may change). */
export type DeliveryInit = Extract<ConnectResponseInit['kind'], { case: 'delivery' }>['value'];

const GATEWAY_ID_RE = /^[a-z0-9._:-]{1,128}$/;
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
}

/** An authenticated stream. */
interface Link {
  readonly cert: VerifiedCertificate;
  readonly subject: PolicySubject;
  readonly out: Channel<ConnectResponseInit>;
  readonly remote: string;
  /** Highest delivery id written to this stream (acks above it are refused). */
  lastDeliveryId: bigint;
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
  /** Next delivery id per recipient (unique per recipient for the gateway's lifetime). */
  readonly #deliveryIds = new Map<string, bigint>();
  /** Unary Send nonces in use: key → expiry ms. */
  readonly #sendNonces = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;
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
    this.#timer = setInterval(() => this.recheckLiveStreams(), options.revocationCheckIntervalMs ?? 500);
    this.#timer.unref();
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

  /** Sends GoAway `shutting_down` to every stream and stops the timers. */
  close(): void {
    this.#closing = true;
    clearInterval(this.#timer);
    for (const link of [...this.#links.values()]) this.#goAway(link, 'shutting_down', 'gateway is shutting down');
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
      const previous = this.#links.get(link.cert.agentId);
      this.#links.set(link.cert.agentId, link);
      if (previous !== undefined) this.#goAway(previous, 'replaced', 'a newer stream authenticated as this agent');
      this.#log.info({ agent: link.cert.agentId, remote }, 'agent connected');
      out.push({ kind: { case: 'welcome', value: { agentId: link.cert.agentId, mailboxDepth: 0n, maxFrameBytes: this.#maxFrameBytes } } });

      for (;;) {
        const next = await it.next();
        if (next.done === true || out.closed) break;
        const request = next.value;
        switch (request.kind.case) {
          case 'send':
            this.#onOutbound(link, request.kind.value, requestBytesOf(request)?.length);
            break;
          case 'ack': {
            const id = request.kind.value.deliveryId;
            if (id < 1n || id > link.lastDeliveryId) {
              this.#security('ack', 'malformed', { agent: link.cert.agentId, remote }, `ack of unknown delivery_id ${id}`);
              out.push({ kind: { case: 'rejected', value: { requestId: 0n, code: 'malformed', message: 'ack of an unknown delivery_id' } } });
            }
            break; // no mailbox yet: a valid ack has nothing to drop
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
    return { cert, subject: subjectOf(cert), out, remote, lastDeliveryId: 0n };
  }

  #onOutbound(link: Link, outbound: Outbound, wireBytes: number | undefined): void {
    const requestId = outbound.requestId;
    try {
      const size = wireBytes ?? toBinary(OutboundSchema, outbound).length;
      const { itemHash, status } = this.#route(link, outbound.item, size, { requestId, stage: 'outbound' });
      link.out.push({ kind: { case: 'accepted', value: { requestId, itemHash, status } } });
    } catch (error) {
      const e = RpcError.from(error);
      if (e.code === 'internal') this.#log.error({ err: error, agent: link.cert.agentId }, 'relaying failed');
      link.out.push({ kind: { case: 'rejected', value: { requestId, code: e.code, message: e.details } } });
    }
  }

  /**
   * The checks of §10.3 after authentication, in order, then the relay.
   * @throws RpcError with the stable code of the first failing check (already logged)
   */
  #route(
    sender: Sender,
    rawItem: Outbound['item'] | SendRequest['item'],
    size: number,
    where: { readonly requestId?: bigint; readonly stage: string },
  ): { itemHash: Uint8Array; status: DeliveryStatus } {
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
    // 5. recipient known (connected) and policy, in the direction of the conversation
    const recipient = this.#links.get(to);
    if (recipient === undefined) return fail('unavailable', `recipient ${to} is not connected (no mailbox yet)`);
    const initiatorToResponder = item.case === 'receipt' || (item.case === 'handshake' && item.value.step === 2);
    const allowed = initiatorToResponder ? this.#policy.allows(recipient.subject, sender.subject) : this.#policy.allows(sender.subject, recipient.subject);
    if (!allowed) return fail('policy_denied', 'policy does not allow this route');
    // 6. signatures (the gateway holds no session key; these need none)
    if (this.#o.verifySignatures !== false) {
      if (item.case === 'envelope' && !verifyEnvelopeSignature(this.#crypto, item.value, sender.cert.identityPublicKey)) {
        return fail('bad_signature', 'envelope signature does not verify');
      }
      if (item.case === 'receipt' && !this.#crypto.ed25519.verify(item.value.signature, deliveryReceiptLayout(item.value), sender.cert.identityPublicKey)) {
        return fail('bad_signature', 'receipt signature does not verify');
      }
    }
    const itemHash = itemDigest(this.#crypto, item);
    // 7. relay
    const deliveryId = (this.#deliveryIds.get(to) ?? 0n) + 1n;
    this.#deliveryIds.set(to, deliveryId);
    const delivery: DeliveryInit = { deliveryId, acceptedAtMs: BigInt(this.#clock()), item: cloneItem(item) };
    this.tamperWithRelayedFramesForTestingOnly?.(delivery);
    recipient.lastDeliveryId = deliveryId;
    if (!recipient.out.push({ kind: { case: 'delivery', value: delivery } })) return fail('unavailable', `recipient ${to} disconnected`);
    this.#log.debug({ agent, peer: to, item: item.case, delivery_id: deliveryId.toString(), item_hash: toHex(itemHash) }, 'relayed');
    return { itemHash, status: DeliveryStatus.DELIVERED };
  }

  // -------------------------------------------------------------------------
  // Send (unary)

  /** Unary Send (§10.6): one item, authenticated by a signature over the send layout. */
  send(request: SendRequest, ctx: CallContext): SendResponseInit {
    if (this.#closing) throw new RpcError('unavailable', 'gateway is shutting down');
    const remote = ctx.peer;
    const refuse = (code: RpcError['code'], message: string, agent?: string): never => {
      this.#security('send', code, { remote, ...(agent === undefined ? {} : { agent }) }, message);
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
    return this.#route(sender, request.item, size, { stage: 'send' });
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
  }
}
