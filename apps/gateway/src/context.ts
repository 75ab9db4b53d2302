/**
 * What the gateway's parts share (gateway.ts composes them; docs/PROTOCOL.md
 * §10): configuration, the table of authenticated streams (Links), metrics,
 * the tracking of database work in flight (awaited by `close()`), and the
 * structured security log.
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import { keyId, type RevocationChecker, type TrustBundle, type VerifiedCertificate } from '@parley/identity';
import type { ConnectResponseSchema, MessageInitShape } from '@parley/proto';
import type { ResponseSink } from '@parley/rpc';
import type { Logger } from 'pino';
import type { Accepted } from './accepted.js';
import type { Cluster } from './cluster.js';
import type { Mailbox } from './mailbox.js';
import { GatewayMetrics } from './metrics.js';
import { RateLimiter } from '@parley/rpc';

/**
 * How long a stream told to go away (replaced, revoked, expired, shutdown) may take to end before it is reset:
 * an agent reading its stream ends it within a round trip.
 */
export const GO_AWAY_GRACE_MS = 5_000;

/** The network address of a gRPC peer (`host:port`, `[v6]:port`): the host, without the port. */
export function peerAddress(peer: string): string {
  const m = /^(?:ipv[46]:)?\[?([^\]]*?)\]?:\d+$/.exec(peer);
  return m?.[1] ?? peer;
}

/**
 * Security events logged per subject (an agent, else a peer address): a flood of cheap refused frames (an ack of
 * an unknown id is ten bytes) must not turn into a flood of log lines. The metric counts every event; what is
 * not logged is counted and reported in the subject's next line (`suppressed`), or by {@link GatewayContext.sweep}.
 */
export const SECURITY_LOG_RATE = { ratePerSecond: 20, burst: 200 } as const;
/** Most subjects with a security log bucket; beyond it new ones share one. */
export const MAX_SECURITY_SUBJECTS = 100_000;

/** A server frame of the Connect stream, as the gateway writes it. */
export type ConnectResponseInit = MessageInitShape<typeof ConnectResponseSchema>;

/** A Delivery as the gateway writes it to a recipient's stream. */
export type DeliveryInit = Extract<ConnectResponseInit['kind'], { case: 'delivery' }>['value'];


/** An item written to a stream and not acked yet (§17.6: held in memory until the recipient acks it). */
export interface InFlight {
  /** The delivery id on this stream. */
  readonly deliveryId: bigint;
  /** The item, as accepted (or as read back from the mailbox). */
  readonly accepted: Accepted;
  /** When it was written to the stream (the ack timeout runs from here). */
  readonly writtenAtMs: number;
  /** The mailbox row holding it; undefined while it is in memory only. */
  rowId: bigint | undefined;
  /** The bytes that row counts in the quotas, when it was spilled (its stored encoding); else `accepted.size`. */
  rowSize?: number;
  /** Being written to the mailbox (spilled: ack timeout or stream end). */
  spilling: boolean;
  /** Acked while it was being spilled: delete the row once it exists. */
  ackedWhileSpilling: boolean;
}

/**
 * An authenticated stream (./connect-stream.ts's StreamLink). Kept small: a gateway holds one per connected
 * agent, most of them idle, so what only a busy stream needs (the in-flight map, the row set) is created on first use.
 */
export interface Link {
  /** The verified certificate; also the agent's policy subject (agent id, type, capabilities). */
  readonly cert: VerifiedCertificate;
  /** The stream's server side (@parley/rpc's call): push, end, fail, closed. */
  readonly out: ResponseSink<ConnectResponseInit>;
  /** Ends the stream now, dropping what it has not sent: for an agent that stopped reading (see `goAway`). */
  abort(): void;
  readonly remote: string;
  /** Highest delivery id written to this stream (acks above it are refused). Ids are per stream: 1, 2, 3, … */
  lastDeliveryId: bigint;
  /** Deliveries written to this stream and not acked, by delivery id, in write order (at most `maxInFlight`); created by the first write. */
  inflight: Map<bigint, InFlight> | undefined;
  /** Bytes (encoded items) of `inflight`: at most `maxInFlightBytes`, or one item of any size. */
  inflightBytes: number;
  /** Mailbox row ids written to this stream and not yet deleted (never written twice to one stream); created on first use. */
  rows: Set<bigint> | undefined;
  /** The mailbox may hold items for this agent that were not written to this stream yet. */
  backlog: boolean;
  /** Items for this agent being stored (queued at their check, row not yet inserted): the backlog stays while any is. */
  storing: number;
  /**
   * Highest mailbox row id the backlog drain has read (0n: read from the start). The drain reads pages
   * after it, so a page costs the same at the end of a long backlog as at its start (rows acked and
   * deleted before it are never scanned again).
   */
  cursor: bigint;
  /**
   * Rows were stored since the drain last read from the start: its next page is read from the start. Row
   * ids are taken at insert, not at commit, so a row that committed late can sit below the cursor; every
   * commit is followed by a wake-up (a local store, a NOTIFY, a re-drain after missed notifications) that
   * sets this, so the read after it finds the row.
   */
  rescan: boolean;
  /** A backlog drain is running. */
  pumping: boolean;
  /** Something was stored while draining: drain again. */
  dirty: boolean;
  /** Items from this stream are checked one at a time, in order (the tail of that chain; {@link SETTLED} at first). */
  turn: Promise<void>;
}

/** An already settled turn: where a stream's chain of checks starts (one promise shared by every Link). */
export const SETTLED: Promise<void> = Promise.resolve();

/** Who sent an item: a stream's agent or a unary Send's verified certificate. */
export interface Sender {
  /** The verified certificate; also the sender's policy subject. */
  readonly cert: VerifiedCertificate;
  readonly remote: string;
  /** A stream's items are checked in order (Link.turn); a unary Send has none. */
  turn?: Promise<void>;
  /** Items waiting for their turn whose rate is charged at it (not at arrival); undefined when none. */
  uncharged?: number | undefined;
}

/** Who a security event is about: ids and addresses only. */
export interface SecuritySubject {
  /** The agent id (verified, or as claimed by a certificate that did not verify). */
  agent?: string;
  /** The agent's identity public key (logged as its key id, never itself). */
  identityKey?: Uint8Array;
  /** The agent's certificate serial. */
  serial?: Uint8Array;
  /** The other agent of the item (its addressee). */
  peer?: string;
  /**
   * A certificate the agent attached that is about someone else (a `recipient_certificate`, §10.3 step 5): the
   * agent id it names (when it is one) and its serial. The fields above stay the actor's.
   */
  certificateAgent?: string;
  certificateSerial?: Uint8Array;
  /** The remote address as gRPC reports it (`ipv4:127.0.0.1:51234`). */
  remote?: string;
  requestId?: bigint;
}

/** The state and helpers every part of one gateway shares. */
export class GatewayContext {
  readonly crypto: ParleyCrypto;
  /** The gateway's name, bound into every auth proof and send signature. */
  readonly gatewayId: string;
  readonly trustBundle: TrustBundle;
  readonly revocations: RevocationChecker;
  readonly clock: () => number;
  readonly log: Logger;
  readonly mailbox: Mailbox;
  /** Largest encoded Outbound (or SendRequest) accepted, bytes. */
  readonly maxFrameBytes: number;
  /** Authenticated streams by agent id: at most one per agent. */
  readonly links = new Map<string, Link>();
  /** Prometheus instruments. */
  readonly metrics: GatewayMetrics;
  /** `close()` has begun: no new streams or sends. */
  closing = false;
  /**
   * The instances sharing this database (./cluster.ts), once startGateway has joined them: streams' presence is
   * recorded, and items for agents on another instance are forwarded to it. Undefined alone (PGlite, or off).
   */
  cluster: Cluster | undefined = undefined;
  /** A stream whose presence was recorded ended, and its agent has no stream here any more (set with {@link cluster}). */
  streamLeft: (agentId: string, seenAtMs: number) => void = () => undefined;
  /** Operations touching the database, awaited by `drain()`. */
  readonly #inflight = new Set<Promise<unknown>>();
  /** Security log lines per subject ({@link SECURITY_LOG_RATE}). */
  readonly #securityLog: RateLimiter;
  /** Security events not logged, per subject, since its last line (at most one entry per subject with a bucket). */
  readonly #suppressed = new Map<string, number>();

  constructor(init: {
    readonly crypto: ParleyCrypto;
    readonly gatewayId: string;
    readonly trustBundle: TrustBundle;
    readonly revocations: RevocationChecker;
    readonly clock: () => number;
    readonly log: Logger;
    readonly mailbox: Mailbox;
    readonly maxFrameBytes: number;
  }) {
    this.crypto = init.crypto;
    this.gatewayId = init.gatewayId;
    this.trustBundle = init.trustBundle;
    this.revocations = init.revocations;
    this.clock = init.clock;
    this.log = init.log;
    this.mailbox = init.mailbox;
    this.maxFrameBytes = init.maxFrameBytes;
    this.#securityLog = new RateLimiter({ ...SECURITY_LOG_RATE, clock: init.clock });
    this.metrics = new GatewayMetrics({ connectedAgents: () => this.links.size, mailboxDepth: () => this.mailbox.depth(), mailboxTotals: () => this.mailbox.totals(), clock: this.clock });
  }

  /** Registers database work in flight, so `drain()` waits for it. */
  track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    const done = (): void => void this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  /** Waits until no tracked work is in flight. */
  async drain(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  /** Sends GoAway and ends the stream; the link leaves the table if it is still the agent's current one. */
  goAway(link: Link, code: string, message: string): void {
    if (this.links.get(link.cert.agentId) === link) this.links.delete(link.cert.agentId);
    this.metrics.goAways.inc({ code });
    link.out.push({ kind: { case: 'goAway', value: { code, message } } });
    link.out.end();
    // The stream ends once the agent has read what was sent before the go-away. One that stopped reading would never
    // end (its status waits behind unsent data), holding its deliveries and buffers for as long as it keeps the
    // connection — and an agent reconnecting over and over would leave one such stream each time (§12): after a
    // grace period it is reset, and what it held goes back to the mailbox.
    setTimeout(() => link.abort(), GO_AWAY_GRACE_MS).unref();
  }

  /**
   * A structured security event (the stable fields are tabled in the README):
   * `event: "security"`, `stage`, `code`, `agent`, `key_id`, `serial`, `peer`,
   * `certificate_agent`, `certificate_serial`, `remote`, `request_id`, `detail` — ids, codes and addresses only, never key
   * material or payload. Counted in `parley_gateway_security_events_total`.
   */
  security(stage: string, code: string, who: SecuritySubject, detail: string): void {
    this.metrics.securityEvents.inc({ stage, code });
    let subject = who.agent ?? (who.remote === undefined ? '-' : peerAddress(who.remote));
    if (this.#securityLog.size >= MAX_SECURITY_SUBJECTS && !this.#securityLog.has(subject)) subject = '*'; // bounded: the rest share one
    if (!this.#securityLog.take(subject)) {
      this.#suppressed.set(subject, (this.#suppressed.get(subject) ?? 0) + 1);
      return;
    }
    const suppressed = this.#suppressed.get(subject);
    if (suppressed !== undefined) this.#suppressed.delete(subject);
    let id: string | undefined;
    try {
      id = who.identityKey === undefined ? undefined : Buffer.from(keyId(this.crypto, who.identityKey)).toString('hex');
    } catch {
      id = undefined; // a claimed key of the wrong length: there is no key id to give
    }
    this.log.warn(
      {
        event: 'security',
        stage,
        code,
        agent: who.agent,
        key_id: id,
        serial: who.serial === undefined ? undefined : Buffer.from(who.serial).toString('hex'),
        peer: who.peer,
        certificate_agent: who.certificateAgent,
        certificate_serial: who.certificateSerial === undefined ? undefined : Buffer.from(who.certificateSerial).toString('hex'),
        remote: who.remote,
        request_id: who.requestId?.toString(),
        detail,
        ...(suppressed === undefined ? {} : { suppressed }),
      },
      'security event',
    );
  }

  /** Reports the security events not logged since (one line per subject) and drops idle log buckets. */
  sweep(): void {
    for (const [subject, n] of this.#suppressed) {
      this.log.warn({ event: 'security', code: 'suppressed', subject, suppressed: n }, 'security events not logged (too many from one subject)');
    }
    this.#suppressed.clear();
    this.#securityLog.sweep();
  }
}
