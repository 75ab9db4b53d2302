/**
 * The bidirectional Connect stream (docs/PROTOCOL.md §10.2–§10.4): within the
 * auth timeout, authenticate (./authentication.ts), send Welcome, make the
 * Link visible to routing (replacing an older stream of the same agent with
 * GoAway `replaced`), drain the backlog (./delivery.ts), then take Send
 * frames (routed one at a time, in order, by ./routing.ts) and Ack frames.
 */
import { OutboundSchema, toBinary, type ConnectRequest, type Outbound } from '@parley/proto';
import { RpcError, requestBytesOf, type CallContext } from '@parley/rpc';
import { Channel } from '@parley/async';
import { authenticate, linkSubject } from './authentication.js';
import type { ConnectResponseInit, GatewayContext, Link } from './context.js';
import type { Delivery } from './delivery.js';
import type { Router } from './routing.js';

/** Most items of one stream being routed at once. */
export const MAX_PIPELINED = 64;

/** Whether a stream error only means that the agent closed its side or the connection dropped. */
function closedByClient(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET' || code === 'EPIPE') return true;
  return error instanceof RpcError && error.code === 'cancelled';
}

/** Serves Connect streams. */
export class ConnectStreams {
  readonly #ctx: GatewayContext;
  readonly #router: Router;
  readonly #delivery: Delivery;
  readonly #authTimeoutMs: number;

  constructor(ctx: GatewayContext, router: Router, delivery: Delivery, authTimeoutMs: number) {
    this.#ctx = ctx;
    this.#router = router;
    this.#delivery = delivery;
    this.#authTimeoutMs = authTimeoutMs;
  }

  /** One Connect stream: the server frames, until either side ends it. */
  async *serve(requests: AsyncIterable<ConnectRequest>, call: CallContext): AsyncGenerator<ConnectResponseInit> {
    if (this.#ctx.closing) throw new RpcError('unavailable', 'gateway is shutting down');
    const out = new Channel<ConnectResponseInit>();
    const state: { link: Link | undefined } = { link: undefined };
    void this.#drive(requests, call, out, state);
    try {
      yield* out;
    } finally {
      out.end();
      const link = state.link;
      if (link !== undefined) {
        if (this.#ctx.links.get(link.cert.agentId) === link) this.#ctx.links.delete(link.cert.agentId);
        // What was written and not acked, and is only in memory, goes to the mailbox (§17.6).
        this.#delivery.streamEnded(link);
      }
    }
  }

  async #drive(requests: AsyncIterable<ConnectRequest>, call: CallContext, out: Channel<ConnectResponseInit>, state: { link: Link | undefined }): Promise<void> {
    const ctx = this.#ctx;
    const it = requests[Symbol.asyncIterator]();
    const remote = call.peer;
    try {
      const link = await this.#authenticate(it, out, remote, state);
      if (link === undefined) return;
      const depth = await ctx.track(ctx.mailbox.depth(link.cert.agentId));
      // Welcome goes out before the link is visible to routing, so no delivery can
      // precede it; anything stored meanwhile is in the mailbox and the pump below
      // drains it.
      out.push({ kind: { case: 'welcome', value: { agentId: link.cert.agentId, mailboxDepth: BigInt(depth), maxFrameBytes: ctx.maxFrameBytes } } });
      const previous = ctx.links.get(link.cert.agentId);
      ctx.links.set(link.cert.agentId, link);
      if (previous !== undefined) ctx.goAway(previous, 'replaced', 'a newer stream authenticated as this agent');
      ctx.log.info({ agent: link.cert.agentId, remote, mailbox_depth: depth }, 'agent connected');
      // The backlog first, in delivery-id order; items routed meanwhile join it (see Delivery.pump).
      this.#delivery.pump(link);

      // Up to MAX_PIPELINED items of this stream in flight at once: they are checked one at a time in order
      // (Router), and their writes overlap and are group-committed with other items. Beyond it, reading stops
      // (HTTP/2 flow control pushes back on the agent).
      // (Created by the first Send: an idle stream holds none.)
      let pipelined: Set<Promise<void>> | undefined;
      for (;;) {
        const next = await it.next();
        if (next.done === true || out.closed) break;
        const request = next.value;
        switch (request.kind.case) {
          case 'send': {
            const p = this.#onOutbound(link, request.kind.value, requestBytesOf(request)?.length);
            const inFlight = (pipelined ??= new Set());
            inFlight.add(p);
            void p.finally(() => inFlight.delete(p));
            if (inFlight.size >= MAX_PIPELINED) await Promise.race(inFlight);
            break;
          }
          case 'ack':
            this.#delivery.ack(link, request.kind.value.deliveryId);
            break;
          default:
            ctx.security('connect', 'malformed', linkSubject(link), `unexpected ${request.kind.case ?? 'empty'} frame`);
            out.fail(new RpcError('malformed', 'only send and ack frames are allowed after welcome'));
            return;
        }
      }
      if (pipelined !== undefined) await Promise.all(pipelined);
      out.end();
    } catch (error) {
      if (closedByClient(error)) {
        // The agent went away (closed its stream, or the connection dropped), or the gateway is stopping and the
        // stream was cut after its GoAway: routine, not an error (§10.10).
        ctx.log.info({ agent: state.link?.cert.agentId, remote }, ctx.closing ? 'stream closed (gateway shutting down)' : 'stream closed by the agent');
        out.end();
        return;
      }
      const e = RpcError.from(error);
      if (e.code === 'internal') ctx.log.error({ err: error, remote }, 'connect stream failed');
      out.fail(e);
    }
  }

  /**
   * Authenticates the stream within the auth timeout and records the agent's certificate in the directory. Its
   * own frame, so that neither the decoded certificate nor the timer is kept alive in the stream's long-lived
   * frame: a Link holds the verified view only.
   */
  async #authenticate(
    it: AsyncIterator<ConnectRequest>,
    out: Channel<ConnectResponseInit>,
    remote: string,
    state: { link: Link | undefined },
  ): Promise<Link | undefined> {
    const ctx = this.#ctx;
    const authTimer = setTimeout(() => {
      ctx.metrics.authRefusals.inc({ code: 'unauthenticated' });
      ctx.security('connect', 'unauthenticated', { remote }, 'stream did not authenticate in time');
      out.fail(new RpcError('unauthenticated', 'stream did not authenticate in time'));
    }, this.#authTimeoutMs);
    authTimer.unref();
    let authenticated: Awaited<ReturnType<typeof authenticate>>;
    try {
      authenticated = await authenticate(ctx, it, out, remote);
    } finally {
      clearTimeout(authTimer);
    }
    if (authenticated === undefined) return undefined;
    state.link = authenticated.link;
    await this.#ctx.track(this.#ctx.mailbox.rememberAgent(authenticated.certificate));
    return authenticated.link;
  }

  /** A Send frame: routed, answered with Accepted or Rejected (never ends the stream). */
  async #onOutbound(link: Link, outbound: Outbound, wireBytes: number | undefined): Promise<void> {
    const requestId = outbound.requestId;
    try {
      const size = wireBytes ?? toBinary(OutboundSchema, outbound).length;
      const { itemHash, status } = await this.#ctx.track(this.#router.route(link, outbound.item, size, { requestId, stage: 'outbound' }));
      if (link.out.closed) return;
      link.out.push({ kind: { case: 'accepted', value: { requestId, itemHash, status } } });
    } catch (error) {
      const e = RpcError.from(error);
      if (e.code === 'internal') this.#ctx.log.error({ err: error, agent: link.cert.agentId }, 'relaying failed');
      link.out.push({ kind: { case: 'rejected', value: { requestId, code: e.code, message: e.details } } });
    }
  }
}
