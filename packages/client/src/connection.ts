/**
 * The low-level gateway connection (moved here from apps/gateway): opens a Connect stream, authenticates with the agent's identity key
 * (docs/PROTOCOL.md §10.2), sends items and hands over deliveries. Its
 * `frameTransport` plugs into a SessionManager, which then runs handshakes through it.
 */
import { credentials as grpcCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import type { ParleyCrypto } from '@parley/crypto-core';
import {
  AgentGatewayService,
  type Accepted,
  type AgentCertificate,
  type ConnectRequestSchema,
  type ConnectResponse,
  type Delivery,
  type DeliveryReceipt,
  type GoAway,
  type HandshakeFrame,
  type MessageInitShape,
  type SecureMessage,
  type SessionReject,
  type Welcome,
} from '@parley/proto';
import { RpcError, createClient, isRpcErrorCode, type Client } from '@parley/rpc';
import type { FrameTransport, LocalIdentity } from '@parley/session';
import { Channel } from '@parley/async';
import { gatewayAuthLayout, type RelayItem } from '@parley/protocol';

type ConnectRequestInit = MessageInitShape<typeof ConnectRequestSchema>;

/**
 * HTTP/2 keepalive: a PING every `keepaliveMs` (default 20 s), the connection dropped when one is not answered
 * within 10 s (at most `keepaliveMs`) — so that a gateway, or a path to it, that went silent behind an open TCP
 * connection is noticed in about 30 s and the agent reconnects, even while it has nothing to send (TCP keepalive
 * takes hours; the Python SDK pings every 20 s too). The gateway permits pings on idle connections.
 */
function gatewayChannelOptions(keepaliveMs = 20_000): Record<string, number> {
  return { 'grpc.keepalive_time_ms': keepaliveMs, 'grpc.keepalive_timeout_ms': Math.min(10_000, keepaliveMs), 'grpc.keepalive_permit_without_calls': 1 };
}

/** Settings of {@link GatewayConnection.open}. */
export interface GatewayConnectionOptions {
  /** `host:port` of the gateway. */
  readonly address: string;
  readonly crypto: ParleyCrypto;
  readonly identity: LocalIdentity;
  /** Default: plaintext (loopback only). */
  readonly credentials?: ChannelCredentials;
  /** When given, the challenge must name this gateway. */
  readonly expectedGatewayId?: string;
  /**
   * Called for each delivery, one at a time, in order (not on the stream's
   * reading path, so it may send and await Accepted). Without it, read
   * `deliveries()`. A delivery is acknowledged after the callback returns,
   * unless `manualAck` is set (then the caller acks with {@link GatewayConnection.ack}).
   */
  readonly onDelivery?: (delivery: Delivery, connection: GatewayConnection) => void | Promise<void>;
  /** The caller acks each delivery itself (the SDK acks an envelope only after its application did). */
  readonly manualAck?: boolean;
  /** Authentication must finish within this many ms. Default 10 000. */
  readonly timeoutMs?: number;
  /** HTTP/2 keepalive PING interval, ms (an unanswered one drops the connection). Default 20 000. */
  readonly keepaliveMs?: number;
}

/** Most items sent on one stream and not answered yet: above the outbox's pending sends (10 000) and their replies. */
export const MAX_UNANSWERED = 16_384;

/** How long the oldest of {@link MAX_UNANSWERED} unanswered items waits before the stream is taken for stalled. */
const UNANSWERED_STALL_MS = 30_000;

/** How long `close` waits for the gateway to end the call before cancelling it. */
const CLOSE_GRACE_MS = 2_000;

/** Most delivery ids in one Ack frame (the gateway takes up to 1 + 1024, §10.3). */
const MAX_ACK_IDS = 1024;

interface Pending {
  readonly resolve: (accepted: Accepted) => void;
  readonly reject: (error: RpcError) => void;
  /** When it was written (the map keeps insertion order: the first is the oldest). */
  readonly atMs: number;
}

/** Most deliveries waiting to be handled on one stream: far above any gateway's in-flight bound (default 256). */
export const MAX_QUEUED_DELIVERIES = 65_536;
/** Most bytes of deliveries waiting to be handled on one stream: far above a gateway's in-flight bytes (default 8 MiB). */
export const MAX_QUEUED_DELIVERY_BYTES = 64 * 1024 * 1024;

/** The bytes a delivery holds, near enough to bound a queue (its variable-length fields, plus a fixed part). */
function deliveryBytes(d: Delivery): number {
  const item = d.item;
  switch (item.case) {
    case 'envelope':
      return 256 + item.value.encryptedPayload.length + item.value.senderId.length + item.value.recipientId.length;
    case 'handshake':
      return 256 + item.value.noiseMessage.length + item.value.senderId.length + item.value.recipientId.length;
    default:
      return 512;
  }
}

/** An authenticated Connect stream to a gateway. */
export class GatewayConnection {
  readonly welcome: Welcome;
  readonly gatewayId: string;
  /** Resolves when the stream ends: with the GoAway the gateway sent, if any. */
  readonly closed: Promise<GoAway | RpcError | undefined>;
  readonly #client: Client<typeof AgentGatewayService>;
  /** Cancels the call: `close` half-closes it, and cancels it if the gateway has not ended it within {@link CLOSE_GRACE_MS}. */
  readonly #cancel: AbortController;
  readonly #requests: Channel<ConnectRequestInit>;
  readonly #deliveries = new Channel<Delivery>();
  readonly #pending = new Map<bigint, Pending>();
  #nextRequestId = 1n;
  #ended: RpcError | undefined;
  /** With `onDelivery`: deliveries waiting for the one in progress, and whether one is. */
  readonly #onDelivery: GatewayConnectionOptions['onDelivery'];
  readonly #manualAck: boolean;
  readonly #queue: Delivery[] = [];
  #queuedBytes = 0;
  #dispatching = false;
  /** Acks of this turn not sent yet (with Welcome.outbound_acks). */
  #acks: bigint[] | undefined;

  private constructor(
    client: Client<typeof AgentGatewayService>,
    requests: Channel<ConnectRequestInit>,
    responses: AsyncIterator<ConnectResponse>,
    welcome: Welcome,
    gatewayId: string,
    onDelivery: GatewayConnectionOptions['onDelivery'],
    manualAck: boolean,
    cancel: AbortController,
  ) {
    this.#cancel = cancel;
    this.#client = client;
    this.#requests = requests;
    this.welcome = welcome;
    this.gatewayId = gatewayId;
    this.#onDelivery = onDelivery;
    this.#manualAck = manualAck;
    this.closed = this.#read(responses);
  }

  /**
   * Connects and authenticates: hello → challenge → auth → welcome.
   * @throws RpcError with the gateway's code (`bad_signature`, `unknown_issuer`, `expired`, `revoked`, …)
   */
  static async open(options: GatewayConnectionOptions): Promise<GatewayConnection> {
    const { crypto, identity } = options;
    const client = createClient(AgentGatewayService, options.address, options.credentials ?? grpcCredentials.createInsecure(), { channelOptions: gatewayChannelOptions(options.keepaliveMs) });
    const requests = new Channel<ConnectRequestInit>();
    const cancel = new AbortController();
    const responses = client.connect(requests, { signal: cancel.signal })[Symbol.asyncIterator]();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new RpcError('deadline_exceeded', 'gateway authentication timed out')), options.timeoutMs ?? 10_000);
    });
    const next = async (expected: 'challenge' | 'welcome'): Promise<ConnectResponse['kind']> => {
      const r = await Promise.race([responses.next(), timeout]);
      if (r.done === true) throw new RpcError('unavailable', `gateway closed the stream before ${expected}`);
      if (r.value.kind.case === 'goAway') throw new RpcError(isRpcErrorCode(r.value.kind.value.code) ? r.value.kind.value.code : 'unavailable', r.value.kind.value.message);
      if (r.value.kind.case !== expected) throw new RpcError('malformed', `expected ${expected}, got ${r.value.kind.case ?? 'nothing'}`);
      return r.value.kind;
    };
    try {
      requests.push({ kind: { case: 'hello', value: { version: 1, certificate: identity.certificate, deliveryBatches: true } } });
      const challenge = await next('challenge');
      if (challenge.case !== 'challenge') throw new RpcError('malformed', 'expected challenge');
      const { gatewayId, nonce } = challenge.value;
      if (options.expectedGatewayId !== undefined && gatewayId !== options.expectedGatewayId) {
        throw new RpcError('identity_mismatch', `connected to gateway '${gatewayId}', expected '${options.expectedGatewayId}'`);
      }
      const signature = crypto.ed25519.sign(gatewayAuthLayout(gatewayId, nonce, identity.agentId, identity.certificate.serial), identity.signingKey);
      requests.push({ kind: { case: 'auth', value: { signature } } });
      const welcome = await next('welcome');
      if (welcome.case !== 'welcome') throw new RpcError('malformed', 'expected welcome');
      if (welcome.value.agentId !== identity.agentId) throw new RpcError('identity_mismatch', `gateway welcomed '${welcome.value.agentId}', not this agent`);
      return new GatewayConnection(client, requests, responses, welcome.value, gatewayId, options.onDelivery, options.manualAck === true, cancel);
    } catch (error) {
      requests.end();
      void responses.return?.();
      client.close();
      throw RpcError.from(error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Whether the stream is still up (false once it ended, for whatever reason). */
  get isOpen(): boolean {
    return this.#ended === undefined;
  }

  /** This connection as a SessionManager's FrameTransport (a rejected frame rejects the handshake step). */
  get frameTransport(): FrameTransport {
    return {
      sendFrame: async (frame) => {
        await this.sendFrame(frame);
      },
    };
  }

  /**
   * Relays a handshake frame; a step 1 may carry the recipient's registry certificate (`Outbound.recipient_certificate`),
   * for a recipient the gateway may never have seen (docs/PROTOCOL.md §10.3).
   */
  sendFrame(frame: HandshakeFrame, recipientCertificate?: AgentCertificate): Promise<Accepted> {
    return this.#send({ case: 'handshake', value: frame }, recipientCertificate);
  }

  /** Relays an envelope. */
  sendEnvelope(envelope: SecureMessage): Promise<Accepted> {
    return this.#send({ case: 'envelope', value: envelope });
  }

  /** Relays a delivery receipt to the envelope's sender. */
  sendReceipt(receipt: DeliveryReceipt): Promise<Accepted> {
    return this.#send({ case: 'receipt', value: receipt });
  }

  /**
   * Sends a receipt (or a session reject) that needs no Accepted, with the ack of `deliveryId` on
   * this stream: one frame where the gateway takes both (Welcome.outbound_acks, §10.3), else the
   * item and an Ack frame. Nothing to await: a lost reply is re-sent on the envelope's redelivery.
   */
  sendReply(item: Extract<RelayItem, { case: 'receipt' | 'sessionReject' }>, deliveryId?: bigint): void {
    if (this.#ended !== undefined) return;
    if (this.welcome.outboundAcks) {
      const requestId = this.#nextRequestId++;
      this.#requests.push({ kind: { case: 'send', value: { requestId, item, quiet: true, ackDeliveryId: deliveryId ?? 0n } } });
      return;
    }
    void this.#send(item).catch(() => undefined);
    if (deliveryId !== undefined) this.ack(deliveryId);
  }

  /** Relays a session reject to the envelope's sender (§17.4). */
  sendSessionReject(reject: SessionReject): Promise<Accepted> {
    return this.#send({ case: 'sessionReject', value: reject });
  }

  /**
   * Acknowledges a delivery (done automatically after `onDelivery` unless `manualAck`). Ignored once the
   * stream ended. Where the gateway takes several ids in one Ack frame (Welcome.outbound_acks), the acks of
   * one turn go out together at its end (at most MAX_ACK_IDS a frame).
   */
  ack(deliveryId: bigint): void {
    if (this.#ended !== undefined) return;
    if (!this.welcome.outboundAcks) {
      this.#requests.push({ kind: { case: 'ack', value: { deliveryId } } });
      return;
    }
    const acks = (this.#acks ??= []);
    acks.push(deliveryId);
    if (acks.length === 1) queueMicrotask(() => this.#flushAcks());
  }

  /** Sends the acks collected in this turn, MAX_ACK_IDS to a frame. */
  #flushAcks(): void {
    const acks = this.#acks;
    this.#acks = undefined;
    if (acks === undefined || this.#ended !== undefined) return;
    for (let i = 0; i < acks.length; i += MAX_ACK_IDS) {
      const ids = acks.slice(i, i + MAX_ACK_IDS);
      this.#requests.push({ kind: { case: 'ack', value: { deliveryId: ids[0]!, moreDeliveryIds: ids.slice(1) } } });
    }
  }

  /** Deliveries, in order (use either this or `onDelivery`). Ends when the stream ends. */
  deliveries(): AsyncIterable<Delivery> {
    return this.#deliveries;
  }

  /**
   * Half-closes the stream and the channel (after the acks of this turn). A gateway ends its side then; one that
   * does not (broken, or hostile) has the call cancelled after {@link CLOSE_GRACE_MS}, so that nothing keeps the
   * stream — or the process — alive.
   */
  close(): void {
    this.#flushAcks();
    this.#requests.end();
    this.#client.close();
    if (this.#ended !== undefined) return;
    const timer = setTimeout(() => this.#cancel.abort(), CLOSE_GRACE_MS);
    timer.unref();
    void this.closed.finally(() => clearTimeout(timer));
  }

  #send(item: RelayItem, recipientCertificate?: AgentCertificate): Promise<Accepted> {
    if (this.#ended !== undefined) return Promise.reject(this.#ended);
    if (this.#pending.size >= MAX_UNANSWERED) {
      // The gateway answers every item (Accepted or Rejected). This many waiting is refused (the outbox sends it
      // again later); when the oldest has waited UNANSWERED_STALL_MS as well, the gateway stopped answering: the
      // stream is cancelled (every waiting item fails and is sent again on the next one). A burst alone, answered
      // as fast as the gateway can, is not a reason to drop a healthy stream.
      const oldest = this.#pending.values().next().value;
      if (oldest !== undefined && Date.now() - oldest.atMs >= UNANSWERED_STALL_MS) {
        this.#cancel.abort();
        return Promise.reject(new RpcError('unavailable', `the gateway left ${MAX_UNANSWERED} items unanswered for ${UNANSWERED_STALL_MS / 1000} s: reconnecting`));
      }
      return Promise.reject(new RpcError('unavailable', `${MAX_UNANSWERED} items wait for the gateway's answer: try again later`));
    }
    const requestId = this.#nextRequestId++;
    return new Promise<Accepted>((resolve, reject) => {
      this.#pending.set(requestId, { resolve, reject, atMs: Date.now() });
      this.#requests.push({ kind: { case: 'send', value: { requestId, item, ...(recipientCertificate === undefined ? {} : { recipientCertificate }) } } });
    });
  }

  /** A delivery off the stream: to `onDelivery` (one at a time, in order) or to `deliveries()`. */
  #deliver(delivery: Delivery): void {
    if (this.#onDelivery === undefined) {
      this.#deliveries.push(delivery);
      return;
    }
    this.#queue.push(delivery);
    this.#queuedBytes += deliveryBytes(delivery);
    if (!this.#dispatching) this.#dispatch();
  }

  /**
   * Runs `onDelivery` for the queued deliveries in order, the next only once the previous
   * one's promise (if it returned one) has settled. A callback that returns nothing is done
   * when it returns, so deliveries it handles synchronously cost no promise round trip.
   * Deliveries queued when the stream ends are still handed over, as before.
   */
  #dispatch(): void {
    const onDelivery = this.#onDelivery!;
    this.#dispatching = true;
    for (let delivery = this.#queue.shift(); delivery !== undefined; delivery = this.#queue.shift()) {
      this.#queuedBytes -= deliveryBytes(delivery);
      let result: unknown;
      try {
        result = onDelivery(delivery, this);
      } catch {
        result = undefined; // the callback's own failure (a rejected frame, say) is its business; keep delivering
      }
      if (isThenable(result)) {
        const d = delivery;
        const next = (): void => {
          this.#done(d);
          this.#dispatch();
        };
        result.then(next, next);
        return; // still dispatching: the rest waits for this one
      }
      this.#done(delivery);
    }
    this.#dispatching = false;
  }

  /**
   * Bounds what a gateway can make this agent queue: deliveries wait here only while earlier ones are being
   * handled, and a gateway writes at most its in-flight bound (default 256) not yet acked, so more than
   * {@link MAX_QUEUED_DELIVERIES} (or {@link MAX_QUEUED_DELIVERY_BYTES}) waiting is a gateway breaking the
   * protocol: the stream ends (`malformed`), and the agent reconnects.
   */
  #admit(deliveries: readonly Delivery[]): void {
    if (this.#onDelivery === undefined) return;
    if (this.#queue.length + deliveries.length > MAX_QUEUED_DELIVERIES) {
      throw new RpcError('malformed', `the gateway sent more than ${MAX_QUEUED_DELIVERIES} deliveries not yet handled`);
    }
    let bytes = this.#queuedBytes;
    for (const d of deliveries) bytes += deliveryBytes(d);
    if (bytes > MAX_QUEUED_DELIVERY_BYTES) throw new RpcError('malformed', `the gateway sent more than ${MAX_QUEUED_DELIVERY_BYTES} bytes of deliveries not yet handled`);
  }

  #done(delivery: Delivery): void {
    if (!this.#manualAck && this.#ended === undefined) this.ack(delivery.deliveryId);
  }

  async #read(responses: AsyncIterator<ConnectResponse>): Promise<GoAway | RpcError | undefined> {
    let goAway: GoAway | undefined;
    let failure: RpcError | undefined;
    try {
      for (;;) {
        const r = await responses.next();
        if (r.done === true) break;
        const kind = r.value.kind;
        switch (kind.case) {
          case 'accepted':
          case 'rejected': {
            const pending = this.#pending.get(kind.value.requestId);
            if (pending === undefined) break;
            this.#pending.delete(kind.value.requestId);
            if (kind.case === 'accepted') pending.resolve(kind.value);
            else pending.reject(new RpcError(isRpcErrorCode(kind.value.code) ? kind.value.code : 'internal', kind.value.message));
            break;
          }
          case 'delivery':
            this.#admit([kind.value]);
            this.#deliver(kind.value);
            break;
          case 'deliveries':
            this.#admit(kind.value.items);
            for (const d of kind.value.items) this.#deliver(d);
            break;
          case 'goAway':
            goAway = kind.value;
            break;
          default:
            break;
        }
      }
    } catch (error) {
      failure = RpcError.from(error);
    }
    const code = goAway !== undefined && isRpcErrorCode(goAway.code) ? goAway.code : 'unavailable';
    this.#ended = failure ?? new RpcError(code, goAway?.message ?? 'gateway stream ended');
    for (const p of this.#pending.values()) p.reject(this.#ended);
    this.#pending.clear();
    this.#deliveries.end();
    this.#requests.end();
    this.#client.close();
    return goAway ?? failure;
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as { then?: unknown }).then === 'function';
}
