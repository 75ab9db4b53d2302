/**
 * The agent's link to its gateway (docs/PROTOCOL.md §10): one authenticated stream at a time, reopened
 * with backoff and "equal jitter" when it drops; a go-away or a refusal that retrying cannot fix stops the
 * agent. Items relayed while the stream is down wait for the next one.
 */
import { credentials as grpcCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import type { ParleyCrypto } from '@parley/crypto-core';
import type { Delivery } from '@parley/proto';
import type { AgentEvent, ConnectOptions, TlsOptions } from './agent-options.js';
import { GatewayConnection } from './connection.js';
import { ClientError, type ClientErrorCode } from './errors.js';
import type { Lifecycle } from './lifecycle.js';

/**
 * Failures at (re)connection that retrying cannot fix: the gateway's verdict on this agent's certificate or
 * proof. Not `malformed`: an answer that breaks the protocol (a frame of the wrong kind, a bad challenge, a
 * go-away `malformed`) says more about the gateway instance than about this agent — a broken instance behind a
 * load balancer, or one forged frame, must not stop the agent for good — so it is retried with backoff.
 */
const FATAL_CODES: ReadonlySet<ClientErrorCode> = new Set<ClientErrorCode>([
  'bad_signature',
  'bad_certificate',
  'unknown_issuer',
  'revoked',
  'expired',
  'not_yet_valid',
  'identity_mismatch',
  'unsupported_version',
  'unauthenticated',
]);

/**
 * Go-away codes after which the agent stops: another stream took over, or this
 * agent's certificate is no longer good. Everything else (`revocation_stale`
 * — the gateway's revocation copy is stale, not this agent's certificate —,
 * `shutting_down`, `unavailable`) is retried with backoff.
 */
const FATAL_GO_AWAY = new Set(['replaced', 'revoked', 'expired']);

/** The channel credentials for the gateway: TLS when `tls` is given, plaintext otherwise (loopback only, checked by `connect`). */
export function gatewayCredentials(tls: TlsOptions | undefined): ChannelCredentials {
  if (tls === undefined) return grpcCredentials.createInsecure();
  return grpcCredentials.createSsl(tls.rootCerts ?? null, tls.privateKey ?? null, tls.certChain ?? null);
}

interface Waiter {
  readonly resolve: (conn: GatewayConnection) => void;
  readonly reject: (error: ClientError) => void;
}

/** What the link works with. */
export interface GatewayLinkDeps {
  readonly crypto: ParleyCrypto;
  readonly options: ConnectOptions;
  readonly lifecycle: Lifecycle;
  readonly emit: (event: AgentEvent) => void;
  /** An item the gateway delivered on `conn`, in order (acked by the handler, or left for redelivery); a returned promise holds the next one back until it settles. */
  readonly onDelivery: (delivery: Delivery, conn: GatewayConnection) => void | Promise<void>;
  /** A new stream is up (after `connected` was emitted and relays waiting for it were released). */
  readonly onConnected: (conn: GatewayConnection) => void;
  /** Stops the agent for good with `error`. */
  readonly stop: (error: ClientError) => void;
}

/**
 * The wait before reconnection attempt `attempt` (1, 2, …) — also `connect`'s retries: "equal jitter" below a
 * ceiling doubling from `initialDelayMs` (100 ms) to `maxDelayMs` (10 s).
 */
export function backoffDelayMs(backoff: { readonly initialDelayMs?: number; readonly maxDelayMs?: number } | undefined, attempt: number): number {
  const initial = Math.max(1, backoff?.initialDelayMs ?? 100);
  const max = Math.max(initial, backoff?.maxDelayMs ?? 10_000);
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt - 1, 30));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

export class GatewayLink {
  readonly #deps: GatewayLinkDeps;
  #conn: GatewayConnection | undefined;
  #waiters: Waiter[] = [];
  #sleep: { timer: NodeJS.Timeout; resolve: () => void } | undefined;

  constructor(deps: GatewayLinkDeps) {
    this.#deps = deps;
  }

  /** The stream right now (possibly closing), if any. */
  get current(): GatewayConnection | undefined {
    return this.#conn;
  }

  /** Whether a stream is up right now. */
  get connected(): boolean {
    return this.#conn?.isOpen === true;
  }

  /** Opens the first stream. @throws ClientError the gateway's refusal, or `cancelled` / the fatal error if the agent stopped meanwhile */
  async connect(): Promise<void> {
    this.#attach(await this.#open());
    this.#deps.lifecycle.assertUsable();
  }

  /** Relays an item on the live stream; if the stream ends first, waits for the next one and tries again. */
  async relay<T>(op: (conn: GatewayConnection) => Promise<T>): Promise<T> {
    for (;;) {
      const conn = await this.#live();
      try {
        return await op(conn);
      } catch (error) {
        if (conn.isOpen || this.#deps.lifecycle.closed) throw ClientError.from(error); // refused by the gateway
      }
    }
  }

  /** Fails every relay waiting for a stream. */
  rejectWaiters(error: ClientError): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(error);
  }

  /** Ends a reconnection delay now (on close). */
  wake(): void {
    if (this.#sleep !== undefined) {
      clearTimeout(this.#sleep.timer);
      this.#sleep.resolve();
    }
  }

  /** Closes the stream (the agent is closing). */
  close(): void {
    this.#conn?.close();
    this.#conn = undefined;
  }

  /** The live connection, or the next one. */
  #live(): Promise<GatewayConnection> {
    const { lifecycle } = this.#deps;
    if (lifecycle.closed) return Promise.reject(new ClientError('cancelled', 'agent closed'));
    if (lifecycle.fatal !== undefined) return Promise.reject(lifecycle.fatal);
    if (this.#conn?.isOpen === true) return Promise.resolve(this.#conn);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  async #open(): Promise<GatewayConnection> {
    const o = this.#deps.options;
    return GatewayConnection.open({
      address: o.gateway,
      crypto: this.#deps.crypto,
      identity: o.identity,
      credentials: gatewayCredentials(o.tls),
      manualAck: true,
      onDelivery: (delivery, conn) => this.#deps.onDelivery(delivery, conn),
      expectedGatewayId: o.expectedGatewayId,
      ...(o.authTimeoutMs === undefined ? {} : { timeoutMs: o.authTimeoutMs }),
      ...(o.keepaliveMs === undefined ? {} : { keepaliveMs: o.keepaliveMs }),
    });
  }

  /** Takes a newly authenticated stream — unless the agent was closed or stopped for good while it was being opened. */
  #attach(conn: GatewayConnection): void {
    if (this.#deps.lifecycle.stopped) {
      conn.close();
      return;
    }
    this.#conn = conn;
    this.#deps.emit({ kind: 'connected', gatewayId: conn.gatewayId, mailboxDepth: Number(conn.welcome.mailboxDepth) });
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.resolve(conn);
    void conn.closed.then((end) => this.#onStreamEnd(conn, end));
    this.#deps.onConnected(conn);
  }

  async #onStreamEnd(conn: GatewayConnection, end: Awaited<GatewayConnection['closed']>): Promise<void> {
    const { lifecycle, options, emit, stop } = this.#deps;
    if (this.#conn === conn) this.#conn = undefined;
    if (lifecycle.stopped) return;
    const goAwayCode = end !== undefined && !(end instanceof Error) ? end.code : undefined;
    const error = end instanceof Error ? ClientError.from(end) : new ClientError(goAwayCode !== undefined && FATAL_GO_AWAY.has(goAwayCode) ? (goAwayCode as ClientErrorCode) : 'unavailable', describeEnd(end));
    emit({ kind: 'disconnected', error });
    if ((goAwayCode !== undefined && FATAL_GO_AWAY.has(goAwayCode)) || options.reconnect === false) {
      stop(error);
      return;
    }
    for (let attempt = 1; !lifecycle.stopped; attempt++) {
      const delayMs = backoffDelayMs(options.reconnect, attempt);
      emit({ kind: 'reconnecting', attempt, delayMs });
      await new Promise<void>((resolve) => {
        this.#sleep = { timer: setTimeout(resolve, delayMs), resolve };
      });
      this.#sleep = undefined;
      if (lifecycle.stopped) return;
      try {
        const next = await this.#open();
        this.#attach(next);
        return;
      } catch (e) {
        const failure = ClientError.from(e);
        if (FATAL_CODES.has(failure.code)) {
          emit({ kind: 'disconnected', error: failure });
          stop(failure);
          return;
        }
      }
    }
  }
}

function describeEnd(end: Awaited<GatewayConnection['closed']>): string {
  if (end === undefined) return 'gateway stream ended';
  if (end instanceof Error) return end.message;
  if (end.code === 'revocation_stale') return "gateway's revocation data is stale (its registry is unreachable); reconnecting until it is fresh again";
  return `gateway sent go_away '${end.code}': ${end.message}`;
}
