/**
 * The bidirectional Connect stream (docs/PROTOCOL.md §10.2–§10.4): within the
 * auth timeout, authenticate (./authentication.ts), send Welcome, make the
 * Link visible to routing (replacing an older stream of the same agent with
 * GoAway `replaced`), drain the backlog (./delivery.ts), then take Send
 * frames (routed one at a time, in order, by ./routing.ts) and Ack frames.
 *
 * A gateway holds one stream per connected agent, most of them idle, so after
 * authentication a stream is driven by its frames (@parley/rpc's listener form):
 * an idle one is its StreamLink and the rpc call object, with no pending promise,
 * async frame, generator or timer of its own.
 */
import { OutboundSchema, toBinary, type ConnectRequest, type Outbound } from '@parley/proto';
import { RpcError, requestBytesOf, type RequestListener, type ResponseSink, type ServerDuplex } from '@parley/rpc';
import type { VerifiedCertificate } from '@parley/identity';
import { authenticate, linkSubject } from './authentication.js';
import { SETTLED, peerAddress, type ConnectResponseInit, type GatewayContext, type InFlight, type Link } from './context.js';
import type { Delivery } from './delivery.js';
import { BatchingSink } from './delivery-batch.js';
import type { Router } from './routing.js';

/** Most items of one stream being routed at once. */
export const MAX_PIPELINED = 64;
/**
 * Default bound of streams authenticating at once: before hello → auth completes nothing says who opened a
 * stream, so each holds a call, a timer and a pending read on the strength of a TCP connection alone.
 */
export const DEFAULT_MAX_AUTHENTICATING = 10_000;
/**
 * Default bound of streams authenticating at once from one network address: one connection (HTTP/2 multiplexes
 * thousands of streams over it) must not take every slot of {@link DEFAULT_MAX_AUTHENTICATING} from the others.
 */
export const DEFAULT_MAX_AUTHENTICATING_PER_ADDRESS = 1_000;

/** Most ids an Ack frame carries besides its first (Ack.more_delivery_ids). */
export const MAX_ACKS_PER_FRAME = 1024;

/** A Connect call as the gateway drives it. */
export type ConnectCall = ServerDuplex<ConnectRequest, ConnectResponseInit>;

/** Whether a stream error only means that the agent closed its side or the connection dropped. */
function closedByClient(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET' || code === 'EPIPE') return true;
  return error instanceof RpcError && error.code === 'cancelled';
}

/** What every stream of one gateway shares (one object, referenced by each StreamLink). */
interface Parts {
  readonly ctx: GatewayContext;
  readonly router: Router;
  readonly delivery: Delivery;
  /** Counts the Deliveries of each frame a BatchingSink sends (one function for every stream). */
  readonly onDeliveriesFrame: (items: number) => void;
}

/** How a stream's frames are being read. */
const READING = 0;
/** Reading paused: MAX_PIPELINED sends are being routed (HTTP/2 flow control pushes back on the agent). */
const STALLED = 1;
/** No more frames are read (the agent half-closed, the stream failed or ended): it ends once its sends are answered. */
const STOPPED = 2;

/**
 * An authenticated stream: the Link that routing and delivery see, and the listener of the stream's frames
 * after authentication. Its methods live on the prototype: besides what grpc-js holds for any call, a connected
 * agent costs this object, its certificate and the rpc call object.
 */
class StreamLink implements Link, RequestListener<ConnectRequest> {
  readonly cert: VerifiedCertificate;
  /** Where responses go: the call, or a BatchingSink over it when the agent reads Deliveries frames. */
  readonly out: ResponseSink<ConnectResponseInit>;
  /** The call itself (reading is paused and resumed on it). */
  readonly #call: ConnectCall;
  readonly remote: string;
  lastDeliveryId = 0n;
  inflight: Map<bigint, InFlight> | undefined = undefined;
  inflightBytes = 0;
  storing = 0;
  rows: Set<bigint> | undefined = undefined;
  backlog = true;
  cursor = 0n;
  rescan = false;
  pumping = false;
  dirty = false;
  turn: Promise<void> = SETTLED;
  /** The `seen_at_ms` of this stream's recorded presence (./cluster.ts); undefined when none was recorded. */
  presenceMs: number | undefined = undefined;
  /** Send frames being routed (at most MAX_PIPELINED). */
  #pipelined = 0;
  #reading = READING;
  readonly #parts: Parts;

  constructor(parts: Parts, cert: VerifiedCertificate, call: ConnectCall, remote: string, batches: boolean) {
    this.#parts = parts;
    this.cert = cert;
    this.#call = call;
    this.out = batches ? new BatchingSink(call, parts.onDeliveriesFrame) : call;
    this.remote = remote;
  }

  /** A frame after Welcome: Send (routed, answered with Accepted or Rejected; it may carry an ack) or Ack. */
  message(request: ConnectRequest): void {
    if (this.out.closed) {
      this.#stop();
      return;
    }
    try {
      switch (request.kind.case) {
        case 'send': {
          // An ack carried by the item (a receipt answering its delivery, §10.3): taken first, as an Ack frame.
          if (request.kind.value.ackDeliveryId !== 0n) this.#parts.delivery.ack(this, request.kind.value.ackDeliveryId);
          this.#pipelined++;
          if (this.#pipelined >= MAX_PIPELINED) {
            this.#reading = STALLED;
            this.#call.pause();
          }
          void this.#onOutbound(request.kind.value, requestBytesOf(request)?.length).finally(() => this.#routed());
          break;
        }
        case 'ack': {
          const { deliveryId, moreDeliveryIds } = request.kind.value;
          const delivery = this.#parts.delivery;
          if (moreDeliveryIds.length > MAX_ACKS_PER_FRAME) {
            this.#parts.ctx.security('ack', 'malformed', linkSubject(this), `an ack frame with ${moreDeliveryIds.length + 1} ids`);
            this.out.push({ kind: { case: 'rejected', value: { requestId: 0n, code: 'malformed', message: `an ack frame carries at most ${MAX_ACKS_PER_FRAME + 1} ids` } } });
            break;
          }
          delivery.ack(this, deliveryId, moreDeliveryIds);
          break;
        }
        default:
          this.#parts.ctx.security('connect', 'malformed', linkSubject(this), `unexpected ${request.kind.case ?? 'empty'} frame`);
          this.#reading = STOPPED;
          this.#call.pause();
          this.out.fail(new RpcError('malformed', 'only send and ack frames are allowed after welcome'));
      }
    } catch (error) {
      this.error(error);
    }
  }

  /** The agent half-closed its side: the stream ends once the sends already read are answered. */
  end(): void {
    this.#stop();
  }

  /** The frames stopped with an error (the agent went away, an undecodable frame). */
  error(error: unknown): void {
    this.#reading = STOPPED;
    this.#call.pause();
    streamFailed(this.#parts.ctx, this.out, this.remote, this.cert.agentId, error);
  }

  /**
   * The stream is over: the link leaves the table if it is still the agent's current one, and what was written
   * and not acked, and is only in memory, goes to the mailbox (§17.6).
   */
  finished(): void {
    const ctx = this.#parts.ctx;
    if (ctx.links.get(this.cert.agentId) === this) ctx.links.delete(this.cert.agentId);
    this.#parts.delivery.streamEnded(this);
    // Its presence is cleared unless a newer stream of the agent is here (that one recorded its own).
    if (this.presenceMs !== undefined && !ctx.links.has(this.cert.agentId)) ctx.streamLeft(this.cert.agentId, this.presenceMs);
  }

  abort(): void {
    this.#call.abort(new RpcError('unavailable', 'the stream did not end within its go-away grace period'));
  }

  /** No more frames: end the stream once the sends being routed are answered. */
  #stop(): void {
    this.#reading = STOPPED;
    this.#call.pause();
    if (this.#pipelined === 0) this.out.end();
  }

  /** A send was answered: read on below the bound; a stopped stream ends after its last one. */
  #routed(): void {
    this.#pipelined--;
    if (this.#reading === STOPPED) {
      if (this.#pipelined === 0) this.out.end();
    } else if (this.#reading === STALLED && this.#pipelined < MAX_PIPELINED) {
      this.#reading = READING;
      this.#call.resume();
    }
  }

  /** A Send frame: routed, answered with Accepted (unless quiet) or Rejected (never ends the stream). */
  async #onOutbound(outbound: Outbound, wireBytes: number | undefined): Promise<void> {
    const { ctx, router } = this.#parts;
    const requestId = outbound.requestId;
    try {
      const size = wireBytes ?? toBinary(OutboundSchema, outbound).length;
      const { itemHash, status } = await ctx.track(router.route(this, outbound.item, size, { requestId, stage: 'outbound' }, outbound.recipientCertificate));
      if (this.out.closed || outbound.quiet) return;
      this.out.push({ kind: { case: 'accepted', value: { requestId, itemHash, status } } });
    } catch (error) {
      const e = RpcError.from(error);
      if (e.code === 'internal') ctx.log.error({ err: error, agent: this.cert.agentId }, 'relaying failed');
      this.out.push({ kind: { case: 'rejected', value: { requestId, code: e.code, message: e.details } } });
    }
  }
}

/**
 * A stream that failed while authenticating or reading: an agent that went away (or a gateway stopping, whose
 * GoAway cut the stream) is routine (§10.10) and the stream just ends; anything else ends it with its code.
 */
function streamFailed(ctx: GatewayContext, out: ResponseSink<ConnectResponseInit>, remote: string, agent: string | undefined, error: unknown): void {
  if (closedByClient(error)) {
    ctx.log.info({ agent, remote }, ctx.closing ? 'stream closed (gateway shutting down)' : 'stream closed by the agent');
    out.end();
    return;
  }
  const e = RpcError.from(error);
  if (e.code === 'internal') ctx.log.error({ err: error, remote }, 'connect stream failed');
  out.fail(e);
}

/** Serves Connect streams. */
export class ConnectStreams {
  readonly #ctx: GatewayContext;
  readonly #parts: Parts;
  readonly #authTimeoutMs: number;
  readonly #maxAuthenticating: number;
  readonly #maxPerAddress: number;
  /** Streams authenticating, by peer address (an entry only while its count is above 0: at most #maxAuthenticating). */
  readonly #authenticatingBy = new Map<string, number>();
  /** Streams between their start and the end of authentication. */
  #authenticating = 0;

  constructor(ctx: GatewayContext, router: Router, delivery: Delivery, authTimeoutMs: number, maxAuthenticating: number, maxPerAddress: number) {
    this.#maxPerAddress = maxPerAddress;
    this.#ctx = ctx;
    this.#maxAuthenticating = maxAuthenticating;
    this.#parts = { ctx, router, delivery, onDeliveriesFrame: (items) => ctx.metrics.deliveriesPerFrame.observe(items) };
    this.#authTimeoutMs = authTimeoutMs;
  }

  /** One Connect stream: authenticated, then driven by its frames until either side ends it. */
  serve(call: ConnectCall): void {
    if (this.#ctx.closing) {
      call.fail(new RpcError('unavailable', 'gateway is shutting down'));
      return;
    }
    if (this.#authenticating >= this.#maxAuthenticating) {
      this.#ctx.metrics.authRefusals.inc({ code: 'unavailable' });
      this.#ctx.security('connect', 'unavailable', { remote: call.peer }, `${this.#authenticating} streams are authenticating already`);
      call.fail(new RpcError('unavailable', 'too many streams authenticating: retry later'));
      return;
    }
    const address = peerAddress(call.peer);
    const fromAddress = this.#authenticatingBy.get(address) ?? 0;
    if (fromAddress >= this.#maxPerAddress) {
      this.#ctx.metrics.authRefusals.inc({ code: 'unavailable' });
      this.#ctx.security('connect', 'unavailable', { remote: call.peer }, `${fromAddress} streams from this address are authenticating already`);
      call.fail(new RpcError('unavailable', 'too many streams authenticating: retry later'));
      return;
    }
    void this.#open(call);
  }

  /** Authentication and Welcome (the only part of a stream that awaits), then the stream's link listens. */
  async #open(call: ConnectCall): Promise<void> {
    const ctx = this.#ctx;
    const remote = call.peer;
    let link: StreamLink | undefined;
    let registered = false;
    try {
      link = await this.#authenticate(call, remote);
      if (link === undefined) return;
      const depth = await ctx.track(ctx.mailbox.depth(link.cert.agentId));
      if (call.closed) return;
      registered = true;
      // Welcome goes out before the link is visible to routing, so no delivery can
      // precede it; anything stored meanwhile is in the mailbox and the pump below
      // drains it.
      call.push({ kind: { case: 'welcome', value: { agentId: link.cert.agentId, mailboxDepth: BigInt(depth), maxFrameBytes: ctx.maxFrameBytes, outboundAcks: true } } });
      const previous = ctx.links.get(link.cert.agentId);
      ctx.links.set(link.cert.agentId, link);
      if (previous !== undefined) ctx.goAway(previous, 'replaced', 'a newer stream authenticated as this agent');
      ctx.log.info({ agent: link.cert.agentId, remote, mailbox_depth: depth }, 'agent connected');
      // The backlog first, in delivery-id order; items routed meanwhile join it (see Delivery.pump).
      this.#parts.delivery.pump(link);
      // Then the frames, as they arrive: up to MAX_PIPELINED items of this stream in flight at once, checked one
      // at a time in order (Router), their writes overlapping and group-committed with other items.
      call.listen(link);
    } catch (error) {
      streamFailed(ctx, call, remote, link?.cert.agentId, error);
    } finally {
      // Its presence was recorded, but the stream ended before it was registered (so it never finishes): cleared.
      if (!registered && link?.presenceMs !== undefined && !ctx.links.has(link.cert.agentId)) ctx.streamLeft(link.cert.agentId, link.presenceMs);
    }
  }

  /**
   * hello → challenge → auth within the auth timeout, then the agent's certificate is recorded in the directory
   * (the link keeps the verified view only).
   * @returns the stream's link, or undefined when the stream ended first
   */
  async #authenticate(call: ConnectCall, remote: string): Promise<StreamLink | undefined> {
    const ctx = this.#ctx;
    const authTimer = setTimeout(() => {
      // deadline_exceeded, not unauthenticated: an agent retries it (a reconnect storm, a stalled connection), while
      // unauthenticated (frames out of order) stops it — nothing a well-behaved agent would see (§10.2).
      ctx.metrics.authRefusals.inc({ code: 'deadline_exceeded' });
      ctx.security('connect', 'deadline_exceeded', { remote }, 'stream did not authenticate in time');
      call.fail(new RpcError('deadline_exceeded', 'stream did not authenticate in time'));
    }, this.#authTimeoutMs);
    authTimer.unref();
    let authenticated: Awaited<ReturnType<typeof authenticate>>;
    const address = peerAddress(remote);
    this.#authenticating++;
    this.#authenticatingBy.set(address, (this.#authenticatingBy.get(address) ?? 0) + 1);
    try {
      authenticated = await authenticate(ctx, call, call, remote);
    } finally {
      this.#authenticating--;
      const left = this.#authenticatingBy.get(address)! - 1;
      if (left > 0) this.#authenticatingBy.set(address, left);
      else this.#authenticatingBy.delete(address);
      clearTimeout(authTimer);
    }
    if (authenticated === undefined) return undefined;
    if (!this.#parts.router.takeConnect(authenticated.cert.agentId)) {
      ctx.metrics.authRefusals.inc({ code: 'rate_limited' });
      ctx.security('connect', 'rate_limited', { agent: authenticated.cert.agentId, serial: authenticated.cert.serial, remote }, 'this agent opened too many streams');
      call.fail(new RpcError('rate_limited', 'this agent connects too often: retry later'));
      return undefined;
    }
    const link = new StreamLink(this.#parts, authenticated.cert, call, remote, authenticated.deliveryBatches);
    const instanceId = ctx.cluster?.instanceId;
    const seenAtMs = await ctx.track(ctx.mailbox.rememberAgent(authenticated.certificate, instanceId));
    // Its own certificate replaces whatever stood for it (one seen before, or one a sender introduced, §10.3 step 5):
    // while connected the link's certificate is used, and after that the row just written, not a cached one.
    this.#parts.router.forget(authenticated.cert.agentId);
    if (instanceId !== undefined) link.presenceMs = seenAtMs;
    return link;
  }
}
