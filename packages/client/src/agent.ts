/**
 * The agent SDK: `connect()` returns an {@link Agent} that keeps one
 * authenticated stream to a gateway (reconnecting with backoff), establishes
 * Noise sessions through it on demand, and keeps the delivery contract of
 * docs/PROTOCOL.md §17 end to end:
 *
 * - sending: the counter is durably reserved before sealing (§13), the sealed
 *   envelope waits in a durable outbox until the recipient's verified receipt,
 *   and is resent after reconnects, restarts and a silent interval; a verified
 *   SessionReject reseals it in a new session;
 * - receiving: an opened message is written to a durable inbox (the same record
 *   marks its counter and hash in the replay window), handed to the application,
 *   and only the application's `ack()` signs the receipt and acks the gateway's
 *   delivery; after a crash, unacknowledged messages are handed over again,
 *   flagged `redelivered`.
 */
import { credentials as grpcCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import { createCrypto, fromBase64Url, fromHex, toBase64Url, toHex, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import { TrustBundle, type RevocationChecker } from '@parley/identity';
import { MemoryClient } from '@parley/memory';
import {
  AgentCertificateSchema,
  DeliveryReceiptSchema,
  RegistryService,
  DeliveryStatus,
  MessagePayloadSchema,
  SecureMessageSchema,
  ValueSchema,
  fromBinary,
  toBinary,
  toJson,
  type AgentCertificate,
  type Delivery,
  type DeliveryReceipt,
  type HandshakeFrame,
  type JsonValue,
  type MessagePayload,
  type MessageType,
  type SecureMessage,
  type SessionReject,
} from '@parley/proto';
import {
  SessionManager,
  isSessionError,
  messageHash as computeMessageHash,
  messageHashOf,
  type Disclosure,
  type EnvelopeDigest,
  type FrameTransport,
  type LocalIdentity,
  type OpenedMessage,
  type OutgoingMessage,
  type SecurityEvent,
  type Session,
  type SessionManagerEvent,
  type SessionTimeouts,
  type SkewLimits,
} from '@parley/session';
import { Channel } from '@parley/async';
import { TrustBundleFollower, signReceipt, signSessionReject, verifyReceiptSignature, verifySessionRejectSignature, type TrustBundleFollowerEvent, type TrustBundleFollowerState } from '@parley/protocol';
import { createClient, isLoopbackAddress, type Client } from '@parley/rpc';
import { GatewayConnection } from './connection.js';
import { ClientError, type ClientErrorCode } from './errors.js';
import { Journal, replay, type JournalRecord, type OutboxMessage } from './journal.js';
import type { StateStore } from './state-store.js';

/** TLS to the gateway (TLS 1.3 on the gateway side); omit for plaintext on loopback. */
export interface TlsOptions {
  /** PEM CA certificates to trust (default: the system roots). */
  readonly rootCerts?: Buffer;
  /** PEM client key and certificate chain, for gateways that require mTLS. */
  readonly privateKey?: Buffer;
  readonly certChain?: Buffer;
}

/**
 * The registry whose signed trust bundle an agent follows (docs/PROTOCOL.md §15.9): every new version is
 * checked against the one before (starting from `trustBundle`, the pinned one), the newest is kept in the
 * state store, and an online issuer rotation reaches the agent before the new key signs anything.
 */
export interface RegistryFollowOptions {
  /** `host:port` of the registry. */
  readonly address: string;
  /** PEM CA certificates of the registry's TLS certificate (required unless the registry is on loopback). */
  readonly rootCerts?: Buffer;
  /** The registry id (16 bytes); default: the saved state's, else the registry's own (its documents must still verify under the pinned keys). */
  readonly registryId?: Uint8Array;
  /** Poll interval, ms. Default 60 000. */
  readonly pollIntervalMs?: number;
}

/** Settings of {@link connect}. */
export interface ConnectOptions {
  /** `host:port` of the gateway. */
  readonly gateway: string;
  /**
   * The gateway id this agent means to reach: its challenge must name it
   * (§10.2; the TLS name authenticates the host, the gateway id the relay the
   * proof is for). Required: without it a look-alike endpoint could relay the
   * real gateway's challenge and log in as this agent.
   */
  readonly expectedGatewayId: string;
  /** This agent: id, Ed25519 identity secret key, certificate. */
  readonly identity: LocalIdentity;
  /** Issuer keys that peers' certificates must chain to (the pinned bundle, when `registry` is given). */
  readonly trustBundle: TrustBundle;
  /** Follow this registry's signed trust bundle from `trustBundle` on (§15.9). Without it the bundle never changes. */
  readonly registry?: RegistryFollowOptions;
  /** Revocation data checked for every peer at handshake time and for every message opened (§17). */
  readonly revocations?: RevocationChecker;
  /** Required unless the gateway is on loopback. */
  readonly tls?: TlsOptions;
  /**
   * Where the agent's durable state is kept (sessions, counter reservations,
   * outbox, inbox, receipts; needs `stateKey`). Without it nothing survives a
   * restart: unacknowledged messages and unconfirmed sends are lost with the process.
   */
  readonly stateStore?: StateStore;
  /** 32-byte key sealing the state (docs/PROTOCOL.md §13). */
  readonly stateKey?: SecretKey;
  /** Session lifetimes (SessionManager's). */
  readonly timeouts?: Partial<SessionTimeouts>;
  /** Messages per epoch proposed for sessions this agent initiates. Default 1000. */
  readonly rekeyThreshold?: number;
  /** Timestamp skew accepted on received envelopes. `maxAgeMs` also bounds how long a send is retried. */
  readonly skew?: SkewLimits;
  /** Backoff when the stream drops; `false`: no reconnection. Default 100 ms .. 10 s. */
  readonly reconnect?: false | { readonly initialDelayMs?: number; readonly maxDelayMs?: number };
  /** Default per-send timeout, ms: `send()` rejects with `deadline_exceeded` (the outbox keeps trying). Default 30 000. */
  readonly sendTimeoutMs?: number;
  /** A send relayed live with no receipt is resent after this long, doubling up to 60 s. Default 5 000. */
  readonly resendIntervalMs?: number;
  /** Handshake timeout, ms. Default 10 000. */
  readonly handshakeTimeoutMs?: number;
  /** Gateway authentication timeout per attempt, ms. Default 10 000. */
  readonly authTimeoutMs?: number;
  /**
   * Most received messages held for the application and not yet acknowledged.
   * Beyond it, deliveries are left unacknowledged at the gateway (back-pressure;
   * they come again). Default 1024.
   */
  readonly maxUnacked?: number;
  /** Most sends waiting for a receipt (`send` refuses beyond it with `rate_limited`). Default 10 000. */
  readonly maxPendingSends?: number;
  /** Whether to answer a handshake from `peerId`. Default: every peer (the gateway's policy applies first). */
  readonly acceptHandshake?: (peerId: string) => boolean;
  /** Security and lifecycle events (never key material). */
  readonly onEvent?: (event: AgentEvent) => void;
  /** Default: a fresh `createCrypto()`. */
  readonly crypto?: ParleyCrypto;
}

/** Options of {@link Agent.send}. */
export interface SendOptions {
  /** 32-byte message hash of the message this answers. */
  readonly parentMessageHash?: Uint8Array;
  /** 32-byte message hash of the handoff this refers to. */
  readonly handoffHash?: Uint8Array;
  /** Overrides `sendTimeoutMs` for this send. */
  readonly timeoutMs?: number;
  /**
   * An idempotency key (1..128 printable ASCII). A send with the id of a send
   * still in the outbox — before or after a restart — waits for that one's
   * receipt instead of sending again.
   */
  readonly id?: string;
}

/** A received application message. Call {@link ReceivedMessage.ack} once the application has taken it. */
export interface ReceivedMessage {
  readonly from: string;
  readonly type: MessageType;
  /** The payload's content as plain JSON. */
  readonly content: JsonValue;
  readonly messageHash: Uint8Array;
  readonly envelope: SecureMessage;
  readonly payload: MessagePayload;
  /** The opening that proves, with `envelope` and `senderCertificate`, what the sender sent (verifyDisclosure). */
  readonly disclosure: Disclosure;
  readonly senderCertificate: AgentCertificate;
  readonly receivedAtMs: number;
  /** Handed over before, by a process that stopped before the application acknowledged it. */
  readonly redelivered: boolean;
  /**
   * Acknowledges the message: signs the receipt (§10.5), records it durably,
   * sends it to the sender and acks the gateway's delivery. Until then the
   * message is kept and handed over again after a restart. Idempotent.
   */
  ack(): Promise<void>;
}

/** A rejected delivery receipt or session reject (it does not settle the send; a genuine one still can). */
export interface ReceiptSecurityEvent {
  readonly kind: 'security';
  readonly stage: 'receipt';
  readonly code: 'bad_signature' | 'identity_mismatch';
  readonly senderId: string;
  readonly recipientId: string;
  readonly messageHash: string;
  readonly atMs: number;
  readonly detail: string;
}

/** How a send ended (also for sends whose `send()` call timed out, or that a previous process made). */
export type SendOutcome =
  | { readonly kind: 'send_settled'; readonly id: string; readonly to: string; readonly outcome: 'delivered'; readonly receipt: DeliveryReceipt }
  | { readonly kind: 'send_settled'; readonly id: string; readonly to: string; readonly outcome: 'expired' | 'failed'; readonly error: ClientError };

/**
 * What `onEvent` receives:
 * - session events (`security` with stage handshake/message/state, `established`, `expiring`, `expired`, `renewed`, `closed`);
 * - `security` with stage `receipt`: a receipt or session reject that does not verify;
 * - `duplicate`: an item that came again and was dropped (a replayed envelope, a handshake frame of a
 *   finished handshake, a receipt already settled);
 * - `send_settled`: the final outcome of a send;
 * - `resealed`: the recipient refused a session (SessionReject) and pending sends moved to a new one;
 * - `connected`, `disconnected`, `reconnecting`: the gateway stream;
 * - `state_error`: saving agent state failed — the agent stops (fail closed);
 * - `trust_bundle`: the followed trust bundle was restored, updated, or a version was refused (with `registry`).
 */
export type AgentEvent =
  | SessionManagerEvent
  | ReceiptSecurityEvent
  | SendOutcome
  | { readonly kind: 'duplicate'; readonly item: 'envelope' | 'handshake' | 'receipt'; readonly senderId: string; readonly detail: string }
  | { readonly kind: 'resealed'; readonly peerId: string; readonly sessionIdHex: string; readonly messages: number }
  | { readonly kind: 'connected'; readonly gatewayId: string; readonly mailboxDepth: number }
  | { readonly kind: 'disconnected'; readonly error: ClientError }
  | { readonly kind: 'reconnecting'; readonly attempt: number; readonly delayMs: number }
  | { readonly kind: 'state_error'; readonly error: ClientError }
  | { readonly kind: 'trust_bundle'; readonly event: TrustBundleFollowerEvent };

/** Failures at (re)connection that retrying cannot fix. */
const FATAL_CODES: ReadonlySet<ClientErrorCode> = new Set<ClientErrorCode>([
  'bad_signature',
  'bad_certificate',
  'unknown_issuer',
  'revoked',
  'expired',
  'not_yet_valid',
  'identity_mismatch',
  'unsupported_version',
  'malformed',
  'unauthenticated',
]);

/**
 * Go-away codes after which the agent stops: another stream took over, or this
 * agent's certificate is no longer good. Everything else (`revocation_stale`
 * — the gateway's revocation copy is stale, not this agent's certificate —,
 * `shutting_down`, `unavailable`) is retried with backoff.
 */
const FATAL_GO_AWAY = new Set(['replaced', 'revoked', 'expired']);

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
const HELD_PER_HANDSHAKE = 64;
const RECEIPT_STORE_SIZE = 100_000;
const COMPACT_AFTER_RECORDS = 20_000;
const SEND_ID_RE = /^[\x21-\x7e]{1,128}$/;

/** One message in the outbox. */
interface OutboxEntry {
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
  readonly waiters: Set<{ resolve: (r: DeliveryReceipt) => void; reject: (e: ClientError) => void }>;
}

/** One message in the inbox: opened, durable, handed to the application, not yet acknowledged. */
interface InboxEntry {
  readonly message: ReceivedMessage;
  readonly hashHex: string;
  /** Gateway deliveries of this envelope to ack once the application acks (per stream). */
  readonly deliveries: { conn: GatewayConnection; id: bigint }[];
  acked: boolean;
}

/** Envelopes held for a session this agent is still responding to (§17.3). */
interface Held {
  readonly items: { envelope: SecureMessage; conn: GatewayConnection; deliveryId: bigint }[];
}

interface Waiter {
  readonly resolve: (conn: GatewayConnection) => void;
  readonly reject: (error: ClientError) => void;
}

/**
 * Connects an agent to its gateway: replays its saved state (if a
 * `stateStore` is given), authenticates the stream, resends what is pending
 * and starts receiving.
 * @throws ClientError with the gateway's code (`revoked`, `unknown_issuer`, `unavailable`, …), `state_corrupt`,
 *   or `malformed` for bad options
 */
export async function connect(options: ConnectOptions): Promise<Agent> {
  const crypto = options.crypto ?? (await createCrypto());
  if (options.stateStore !== undefined && options.stateKey === undefined) throw new ClientError('malformed', 'stateStore needs a stateKey');
  if (typeof options.expectedGatewayId !== 'string' || options.expectedGatewayId.length === 0) {
    throw new ClientError('malformed', 'expectedGatewayId is required: the gateway id this agent means to reach (§10.2)');
  }
  if (options.tls === undefined && !isLoopbackAddress(options.gateway)) {
    throw new ClientError('malformed', `refusing plaintext to ${options.gateway}: give tls options (plaintext is for loopback gateways only)`);
  }
  const agent = new Agent(crypto, options);
  try {
    await agent.start();
  } catch (error) {
    await agent.close();
    throw ClientError.from(error);
  }
  return agent;
}

/** A connected agent. Create with {@link connect}. */
export class Agent {
  readonly #crypto: ParleyCrypto;
  readonly #options: ConnectOptions;
  readonly #manager: SessionManager;
  readonly #journal: Journal | undefined;
  readonly #app = new Channel<ReceivedMessage>();
  readonly #outbox = new Map<string, OutboxEntry>();
  readonly #outboxByHash = new Map<string, OutboxEntry>();
  readonly #inbox = new Map<string, InboxEntry>();
  /** Inbox entries not (yet) acknowledged by the application: the back-pressure count, kept as entries change. */
  #unacked = 0;
  /** Receipts this agent signed, by message hash (durable with a store): re-sent when the envelope comes again. */
  readonly #receipts = new Map<string, { receipt: DeliveryReceipt; at: number }>();
  readonly #held = new Map<string, Held>();
  #conn: GatewayConnection | undefined;
  #waiters: Waiter[] = [];
  #closed = false;
  #started = false;
  #fatal: ClientError | undefined;
  #capture: SessionManagerEvent[] | undefined;
  #sleep: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  #tick: NodeJS.Timeout | undefined;
  /** Inbox records are handed to the application in the order their envelopes arrived. */
  #handover: Promise<void> = Promise.resolve();
  #recordsSinceCompaction = 0;
  #compacting: Promise<void> | undefined;
  readonly #closeListeners = new Set<(error: ClientError) => void>();
  #memory: MemoryClient | undefined;
  /** What peers' certificates are verified against: the pinned bundle, or a live view of the followed one. */
  readonly #trust: TrustBundle;
  #follower: TrustBundleFollower | undefined;
  #registry: Client<typeof RegistryService> | undefined;
  /** The trust bundle document the journal held at start. */
  #savedBundle: { version: number; doc: string } | undefined;

  /** @internal use {@link connect} */
  constructor(crypto: ParleyCrypto, options: ConnectOptions) {
    this.#crypto = crypto;
    this.#options = options;
    this.#journal = options.stateStore !== undefined && options.stateKey !== undefined ? new Journal(crypto, options.stateKey, options.stateStore) : undefined;
    this.#trust = options.registry === undefined ? options.trustBundle : TrustBundle.live(() => this.#follower?.trustBundle ?? options.trustBundle);
    const transport: FrameTransport = { sendFrame: (frame) => this.#relayFrame(frame) };
    const journal = this.#journal;
    this.#manager = new SessionManager({
      crypto,
      handshake: {
        identity: options.identity,
        trustBundle: this.#trust,
        ...(options.revocations === undefined ? {} : { revocations: options.revocations }),
        ...(options.rekeyThreshold === undefined ? {} : { rekeyThreshold: options.rekeyThreshold }),
        ...(options.skew === undefined ? {} : { skew: options.skew }),
      },
      transport,
      ...(options.timeouts === undefined ? {} : { timeouts: options.timeouts }),
      ...(options.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: options.handshakeTimeoutMs }),
      ...(options.stateKey === undefined ? {} : { stateKey: options.stateKey }),
      ...(options.acceptHandshake === undefined ? {} : { acceptHandshake: options.acceptHandshake }),
      onEvent: (event) => this.#onSessionEvent(event),
      ...(journal === undefined
        ? {}
        : {
            // Never seal on a counter that is not durably reserved (§13): the manager awaits this first.
            reserveCounters: (session: Session, upTo: number) => this.#record([{ t: 'reserve', id: session.idHex, upTo }]),
            // Fresher snapshots (new sessions, send-epoch changes) keep restores close to the live state.
            onStateChange: () => undefined,
          }),
    });
  }

  /** This agent's id. */
  get agentId(): string {
    return this.#options.identity.agentId;
  }

  /** Whether a gateway stream is up right now. */
  get connected(): boolean {
    return this.#conn?.isOpen === true;
  }

  /**
   * Shared memory on this agent's gateway (docs/PROTOCOL.md §18): `create`, `get`, `read`, `write`,
   * `update`, `grant`, `revoke`, `list`, `segments`. End to end encrypted: the gateway stores ciphertext
   * and enforces membership, and never holds a key. Created on first use; closed with the agent.
   * @throws ClientError `cancelled` after close
   */
  get memory(): MemoryClient {
    this.#assertUsable();
    if (this.#memory === undefined) {
      const o = this.#options;
      const serviceId = this.#conn?.gatewayId ?? o.expectedGatewayId;
      if (serviceId === undefined) throw new ClientError('unavailable', 'no gateway connection yet: its id names the memory service');
      this.#memory = new MemoryClient({
        crypto: this.#crypto,
        identity: o.identity,
        address: o.gateway,
        serviceId,
        trustBundle: this.#trust,
        ...(o.revocations === undefined ? {} : { revocations: o.revocations }),
        credentials: o.tls === undefined ? grpcCredentials.createInsecure() : grpcCredentials.createSsl(o.tls.rootCerts ?? null, o.tls.privateKey ?? null, o.tls.certChain ?? null),
      });
    }
    return this.#memory;
  }

  /** The session manager (inspection, explicit `session(peerId)`, disclosure of sessions' peers). */
  get sessions(): SessionManager {
    return this.#manager;
  }

  /** Sends waiting for a receipt (ids), including ones restored from the state store. */
  pendingSends(): { id: string; to: string; createdAtMs: number; expiresAtMs: number }[] {
    return [...this.#outbox.values()].map((e) => ({ id: e.id, to: e.to, createdAtMs: e.createdAtMs, expiresAtMs: e.expiresAtMs }));
  }

  /** The trust bundle peers are verified against now (a live view when the agent follows its registry). */
  get trustBundle(): TrustBundle {
    return this.#trust;
  }

  /**
   * Where the followed trust bundle stands (§15.9): its version (0: the pinned bundle), the follower's
   * state and when a poll last confirmed it current; undefined without `registry`.
   */
  trustBundleStatus(): { version: number; state: TrustBundleFollowerState; lastVerifiedAtMs: number | undefined } | undefined {
    const f = this.#follower;
    return f === undefined ? undefined : { version: f.version, state: f.state, lastVerifiedAtMs: f.lastVerifiedAtMs };
  }

  /** Fetches the registry's trust bundle now (with `registry`); rejects when it is unreachable or refused. */
  async refreshTrustBundle(): Promise<number> {
    if (this.#follower === undefined) throw new ClientError('failed_precondition', 'this agent follows no registry (connect without `registry`)');
    try {
      return (await this.#follower.refresh()).version;
    } catch (error) {
      throw ClientError.from(error);
    }
  }

  /** @internal called once by {@link connect} */
  async start(): Promise<void> {
    if (this.#journal !== undefined) await this.#restore(this.#journal);
    if (this.#options.registry !== undefined) await this.#followRegistry(this.#options.registry);
    this.#started = true;
    const conn = await this.#open();
    this.#attach(conn);
    this.#tick = setInterval(() => this.#onTick(), 250);
    this.#tick.unref();
  }

  /**
   * Sends one application message and waits for the recipient's verified receipt
   * — which the recipient signs only after its application acknowledged the message.
   * The sealed envelope stays in the outbox until then: it is relayed again after
   * reconnects and restarts, and resealed in a new session if the recipient
   * refuses the session (§17).
   * @returns the DeliveryReceipt, its signature verified with the recipient's certified key
   * @throws ClientError: a permanent refusal by the gateway (`policy_denied`, `too_large`, …) or the
   *   handshake (`handshake_failed`, `revoked`, …): not delivered; `expired`: not delivered within the
   *   message's validity; `deadline_exceeded`: not confirmed within `timeoutMs` — the outbox keeps trying
   *   and reports the outcome as a `send_settled` event; `rate_limited`: too many sends pending;
   *   `cancelled` (agent closed) or the error that stopped the agent
   */
  async send(to: string, type: MessageType, content: JsonValue, options: SendOptions = {}): Promise<DeliveryReceipt> {
    this.#assertUsable();
    if (options.id !== undefined && !SEND_ID_RE.test(options.id)) throw new ClientError('malformed', 'send id must be 1..128 printable ASCII characters');
    const timeoutMs = options.timeoutMs ?? this.#options.sendTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    let onClose: ((error: ClientError) => void) | undefined;
    const abort = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ClientError('deadline_exceeded', `no verified receipt from '${to}' within ${timeoutMs} ms (still trying until it expires)`)), timeoutMs);
      onClose = reject;
      this.#closeListeners.add(onClose);
    });
    let waiter: { resolve: (r: DeliveryReceipt) => void; reject: (e: ClientError) => void } | undefined;
    let entry: OutboxEntry | undefined;
    const work = (async () => {
      entry = (options.id === undefined ? undefined : this.#outbox.get(options.id)) ?? (await this.#enqueue(to, type, content, options));
      const e = entry;
      return new Promise<DeliveryReceipt>((resolve, reject) => {
        waiter = { resolve, reject };
        e.waiters.add(waiter);
      });
    })();
    work.catch(() => undefined); // when the timeout wins, a later failure is nobody's business
    try {
      return await Promise.race([abort, work]);
    } catch (error) {
      throw ClientError.from(error);
    } finally {
      clearTimeout(timer);
      if (onClose !== undefined) this.#closeListeners.delete(onClose);
      if (entry !== undefined && waiter !== undefined) entry.waiters.delete(waiter);
    }
  }

  /**
   * Received application messages, in delivery order; after a restart, first the ones a
   * previous process received and the application did not acknowledge (`redelivered`).
   * One consumer. Acknowledge each with `await msg.ack()`. Ends when the agent closes;
   * throws the ClientError that stopped the agent otherwise.
   */
  messages(): AsyncIterable<ReceivedMessage> {
    return this.#app;
  }

  /** Closes every session and the stream; pending sends stay in the state store for the next run. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const error = new ClientError('cancelled', 'agent closed');
    for (const listener of this.#closeListeners) listener(error);
    this.#closeListeners.clear();
    this.#rejectWaiters(error);
    for (const e of this.#outbox.values()) for (const w of e.waiters) w.reject(error);
    if (this.#sleep !== undefined) {
      clearTimeout(this.#sleep.timer);
      this.#sleep.resolve();
    }
    if (this.#tick !== undefined) clearInterval(this.#tick);
    if (this.#started && this.#journal !== undefined && this.#journal.failure === undefined) {
      await this.#handover.catch(() => undefined);
      await this.#compact().catch(() => undefined); // fresh snapshots; never over state that failed to load
    }
    await this.#follower?.close();
    this.#registry?.close();
    this.#manager.close();
    this.#memory?.close();
    this.#conn?.close();
    this.#conn = undefined;
    await this.#journal?.close().catch(() => undefined);
    this.#app.end();
  }

  /** Starts following the registry's trust bundle, from the journal's saved version or the pinned one. */
  async #followRegistry(r: RegistryFollowOptions): Promise<void> {
    if (r.rootCerts === undefined && !isLoopbackAddress(r.address)) {
      throw new ClientError('malformed', `refusing plaintext to registry ${r.address}: give registry.rootCerts (plaintext is for loopback registries only)`);
    }
    this.#registry = createClient(RegistryService, r.address, r.rootCerts === undefined ? grpcCredentials.createInsecure() : grpcCredentials.createSsl(r.rootCerts), {
      channelOptions: { 'grpc.initial_reconnect_backoff_ms': 250, 'grpc.max_reconnect_backoff_ms': 5_000 },
    });
    const journal = this.#journal;
    this.#follower = new TrustBundleFollower({
      crypto: this.#crypto,
      client: this.#registry,
      pinned: this.#options.trustBundle,
      ...(r.registryId === undefined ? {} : { registryId: r.registryId }),
      ...(r.pollIntervalMs === undefined ? {} : { pollIntervalMs: r.pollIntervalMs }),
      callTimeoutMs: 5_000,
      ...(journal === undefined
        ? {}
        : {
            store: {
              load: () => Promise.resolve(this.#savedBundle === undefined ? undefined : fromBase64Url(this.#savedBundle.doc)),
              save: async (encoded: Uint8Array, version: number) => {
                this.#savedBundle = { version, doc: toBase64Url(encoded) };
                await this.#record([{ t: 'bundle', ...this.#savedBundle }]);
              },
            },
          }),
      onEvent: (event) => this.#emit({ kind: 'trust_bundle', event }),
    });
    await this.#follower.restore();
    // The first poll runs now, but connecting does not wait long for it: an unreachable registry leaves the
    // last verified bundle in force (§15.9), and the next poll tries again.
    const first = this.#follower.refresh().catch(() => undefined);
    await Promise.race([first, new Promise((resolve) => setTimeout(resolve, 3_000).unref())]);
    this.#follower.start();
  }

  // --- state -------------------------------------------------------------------------------

  async #restore(journal: Journal): Promise<void> {
    const state = replay(await journal.load());
    this.#savedBundle = state.bundle;
    for (const [id, s] of state.sessions) {
      let session: Session;
      try {
        session = this.#manager.restore(fromBase64Url(s.sealed), s.reservedUpTo);
      } catch (error) {
        throw ClientError.from(error);
      }
      for (const m of state.marks.get(id) ?? []) session.markAccepted(m.n, fromHex(m.hash));
    }
    const now = Date.now();
    const maxAge = this.#maxAgeMs();
    for (const [hash, r] of state.receipts) {
      if (r.at >= now - maxAge) this.#receipts.set(hash, { receipt: fromBinary(DeliveryReceiptSchema, fromBase64Url(r.receipt)), at: r.at });
    }
    for (const r of state.outbox.values()) {
      const envelope = fromBinary(SecureMessageSchema, fromBase64Url(r.env));
      const session = this.#manager.sessionById(r.sid);
      const entry: OutboxEntry = {
        id: r.id,
        to: r.to,
        msg: r.msg,
        envelope,
        hashHex: r.hash,
        sessionIdHex: r.sid,
        peerKey: session?.peer.identityPublicKey ?? new Uint8Array(0),
        createdAtMs: r.at,
        expiresAtMs: r.exp,
        reseals: r.reseals,
        status: undefined,
        nextAttemptAtMs: 0,
        backoffMs: this.#resendBase(),
        inFlight: false,
        waiters: new Set(),
      };
      this.#outbox.set(entry.id, entry);
      this.#outboxByHash.set(entry.hashHex, entry);
      // A send whose session did not survive is resealed once the stream is up (see #attach).
    }
    for (const r of state.inbox.values()) {
      const payload = fromBinary(MessagePayloadSchema, fromBase64Url(r.payload));
      const message = this.#received({
        envelope: fromBinary(SecureMessageSchema, fromBase64Url(r.env)),
        hash: fromHex(r.hash),
        payload,
        payloadBytes: fromBase64Url(r.payload),
        salt: fromBase64Url(r.salt),
        certificate: fromBinary(AgentCertificateSchema, fromBase64Url(r.cert)),
        receivedAtMs: r.at,
        redelivered: true,
      });
      this.#inbox.set(r.hash, { message, hashHex: r.hash, deliveries: [], acked: false });
      this.#unacked += 1;
      this.#app.push(message);
    }
    // Start the new run from a compact journal (drops a torn tail and settled records).
    await this.#compact();
  }

  /** Appends journal records (no-op without a store). A failure stops the agent (fail closed). */
  async #record(records: JournalRecord[]): Promise<void> {
    if (this.#journal === undefined) return;
    try {
      await this.#journal.append(records);
    } catch (error) {
      const e = ClientError.from(error);
      this.#emit({ kind: 'state_error', error: e });
      this.#stop(e);
      throw e;
    }
    this.#recordsSinceCompaction += records.length;
    if (this.#recordsSinceCompaction >= COMPACT_AFTER_RECORDS && this.#compacting === undefined) void this.#compact().catch(() => undefined);
  }

  /** Rewrites the journal as the current state: fresh session snapshots, pending sends and messages, recent receipts. */
  #compact(): Promise<void> {
    const journal = this.#journal;
    if (journal === undefined) return Promise.resolve();
    if (this.#compacting !== undefined) return this.#compacting;
    const records: JournalRecord[] = [];
    for (const session of this.#manager.sessions()) {
      records.push({ t: 'session', id: session.idHex, sealed: toBase64Url(this.#manager.exportSession(session)) });
      const reserved = this.#manager.reservedUpTo(session);
      if (reserved !== undefined) records.push({ t: 'reserve', id: session.idHex, upTo: reserved });
    }
    for (const e of this.#outbox.values()) records.push(this.#outRecord(e));
    for (const e of this.#inbox.values()) if (!e.acked) records.push(this.#inRecord(e.message, e.hashHex));
    const floor = Date.now() - this.#maxAgeMs();
    for (const [hash, r] of this.#receipts) {
      if (r.at >= floor) records.push({ t: 'in_done', hash, receipt: toBase64Url(toBinary(DeliveryReceiptSchema, r.receipt)), at: r.at });
    }
    if (this.#savedBundle !== undefined) records.push({ t: 'bundle', ...this.#savedBundle });
    this.#recordsSinceCompaction = 0;
    const run = journal.rewrite(records).finally(() => {
      this.#compacting = undefined;
    });
    this.#compacting = run;
    return run;
  }

  #outRecord(e: OutboxEntry): JournalRecord {
    return {
      t: 'out',
      id: e.id,
      to: e.to,
      msg: e.msg,
      env: toBase64Url(toBinary(SecureMessageSchema, e.envelope)),
      hash: e.hashHex,
      sid: e.sessionIdHex,
      at: e.createdAtMs,
      exp: e.expiresAtMs,
      reseals: e.reseals,
    };
  }

  #inRecord(m: ReceivedMessage, hashHex: string): JournalRecord {
    return {
      t: 'in',
      hash: hashHex,
      sid: toHex(m.envelope.sessionId),
      n: Number(m.envelope.nonce),
      from: m.from,
      env: toBase64Url(toBinary(SecureMessageSchema, m.envelope)),
      payload: toBase64Url(m.disclosure.payload),
      salt: toBase64Url(m.disclosure.salt),
      cert: toBase64Url(toBinary(AgentCertificateSchema, m.senderCertificate)),
      at: m.receivedAtMs,
    };
  }

  #maxAgeMs(): number {
    return this.#options.skew?.maxAgeMs ?? 3_600_000;
  }

  #resendBase(): number {
    return Math.max(50, this.#options.resendIntervalMs ?? 5_000);
  }

  // --- sending ------------------------------------------------------------------------

  async #enqueue(to: string, type: MessageType, content: JsonValue, options: SendOptions): Promise<OutboxEntry> {
    if (this.#outbox.size >= (this.#options.maxPendingSends ?? 10_000)) throw new ClientError('rate_limited', 'too many sends waiting for a receipt');
    const msg: OutboxMessage = {
      type,
      content,
      ...(options.handoffHash === undefined ? {} : { handoffHash: toBase64Url(options.handoffHash) }),
      ...(options.parentMessageHash === undefined ? {} : { parentMessageHash: toBase64Url(options.parentMessageHash) }),
    };
    const now = Date.now();
    const id = options.id ?? toHex(this.#crypto.randomBytes(16));
    const { session, sealed } = await this.#seal(to, msg);
    this.#assertUsable();
    const existing = this.#outbox.get(id);
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
      expiresAtMs: Number(sealed.envelope.timestampMs) + this.#maxAgeMs(),
      reseals: 0,
      status: undefined,
      nextAttemptAtMs: now + this.#resendBase(),
      backoffMs: this.#resendBase(),
      inFlight: false,
      waiters: new Set(),
    };
    this.#outbox.set(id, entry);
    this.#outboxByHash.set(entry.hashHex, entry);
    if (this.#journal !== undefined) {
      try {
        // Durable before it leaves this process: a crash from here on resends it after restart.
        await this.#record([this.#outRecord(entry)]);
      } catch (error) {
        this.#forget(entry);
        throw error;
      }
    }
    void this.#transmit(entry);
    return entry;
  }

  async #seal(to: string, msg: OutboxMessage): Promise<{ session: Session; sealed: Awaited<ReturnType<SessionManager['sealIn']>> }> {
    const session = await this.#manager.session(to);
    const outgoing: OutgoingMessage = {
      type: msg.type as MessageType,
      content: msg.content as JsonValue,
      ...(msg.handoffHash === undefined ? {} : { handoffHash: fromBase64Url(msg.handoffHash) }),
      ...(msg.parentMessageHash === undefined ? {} : { parentMessageHash: fromBase64Url(msg.parentMessageHash) }),
    };
    return { session, sealed: await this.#manager.sealIn(session, outgoing) };
  }

  /** Relays an outbox entry on the live stream (if any); the tick and reconnects call it again. */
  async #transmit(entry: OutboxEntry): Promise<void> {
    const conn = this.#conn;
    if (conn === undefined || !conn.isOpen || entry.inFlight || this.#closed) return;
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

  #settle(entry: OutboxEntry, result: { outcome: 'delivered'; receipt: DeliveryReceipt } | { outcome: 'expired' | 'failed'; error: ClientError }): void {
    if (this.#outbox.get(entry.id) !== entry) return;
    this.#forget(entry);
    // Not awaited: if this record is lost in a crash, the next run resends and the recipient re-sends the receipt.
    if (this.#journal !== undefined) void this.#record([{ t: 'out_done', id: entry.id, outcome: result.outcome }]).catch(() => undefined);
    for (const w of entry.waiters) {
      if (result.outcome === 'delivered') w.resolve(result.receipt);
      else w.reject(result.error);
    }
    entry.waiters.clear();
    this.#emit(result.outcome === 'delivered' ? { kind: 'send_settled', id: entry.id, to: entry.to, outcome: 'delivered', receipt: result.receipt } : { kind: 'send_settled', id: entry.id, to: entry.to, outcome: result.outcome, error: result.error });
  }

  #forget(entry: OutboxEntry): void {
    this.#outbox.delete(entry.id);
    if (this.#outboxByHash.get(entry.hashHex) === entry) this.#outboxByHash.delete(entry.hashHex);
  }

  /** Moves every pending send of a dead session to a new session with its peer (§17.2). */
  async #reseal(peerId: string, sessionIdHex: string): Promise<void> {
    const dead = this.#manager.sessionById(sessionIdHex);
    if (dead !== undefined) this.#manager.closeSession(dead);
    const entries = [...this.#outbox.values()].filter((e) => e.sessionIdHex === sessionIdHex);
    if (entries.length === 0) return;
    this.#emit({ kind: 'resealed', peerId, sessionIdHex, messages: entries.length });
    for (const entry of entries) {
      if (this.#outbox.get(entry.id) !== entry) continue;
      if (entry.reseals >= MAX_RESEALS) {
        this.#settle(entry, { outcome: 'failed', error: new ClientError('unknown_session', `'${entry.to}' refused ${MAX_RESEALS + 1} sessions in a row`) });
        continue;
      }
      try {
        const { session, sealed } = await this.#seal(entry.to, entry.msg);
        if (this.#outbox.get(entry.id) !== entry) continue;
        this.#outboxByHash.delete(entry.hashHex);
        entry.envelope = sealed.envelope;
        entry.hashHex = toHex(sealed.messageHash);
        entry.sessionIdHex = session.idHex;
        entry.peerKey = session.peer.identityPublicKey;
        entry.reseals += 1;
        entry.status = undefined;
        entry.backoffMs = this.#resendBase();
        entry.nextAttemptAtMs = Date.now() + entry.backoffMs;
        this.#outboxByHash.set(entry.hashHex, entry);
        if (this.#journal !== undefined) await this.#record([this.#outRecord(entry)]);
        void this.#transmit(entry);
      } catch (error) {
        const e = ClientError.from(error);
        if (this.#fatal !== undefined || this.#closed) return;
        if (e.code === 'handshake_failed' || e.code === 'unavailable' || e.code === 'rate_limited') {
          entry.nextAttemptAtMs = Date.now() + entry.backoffMs; // the tick retries the reseal
          entry.status = undefined;
          entry.sessionIdHex = '';
        } else this.#settle(entry, { outcome: 'failed', error: e });
      }
    }
  }

  /** Every 250 ms: expire, resend what got no receipt, reseal what lost its session. */
  #onTick(): void {
    if (this.#closed || this.#fatal !== undefined) return;
    const now = Date.now();
    const orphans = new Map<string, string>();
    for (const entry of this.#outbox.values()) {
      if (now >= entry.expiresAtMs) {
        this.#settle(entry, { outcome: 'expired', error: new ClientError('expired', `no verified receipt from '${entry.to}' before the message expired`) });
        continue;
      }
      if (entry.sessionIdHex === '' || this.#manager.sessionById(entry.sessionIdHex) === undefined) {
        if (now >= entry.nextAttemptAtMs || entry.sessionIdHex !== '') orphans.set(entry.sessionIdHex, entry.to);
        continue;
      }
      if (now >= entry.nextAttemptAtMs) void this.#transmit(entry);
    }
    if (this.connected) for (const [sid, to] of orphans) void this.#reseal(to, sid);
    for (const [hash, r] of this.#receipts) {
      if (r.at >= now - this.#maxAgeMs() && this.#receipts.size <= RECEIPT_STORE_SIZE) break;
      this.#receipts.delete(hash);
    }
  }

  async #relayFrame(frame: HandshakeFrame): Promise<void> {
    await this.#relay((conn) => conn.sendFrame(frame));
  }

  /** Relays an item on the live stream; if the stream ends first, waits for the next one and tries again. */
  async #relay<T>(op: (conn: GatewayConnection) => Promise<T>): Promise<T> {
    for (;;) {
      const conn = await this.#live();
      try {
        return await op(conn);
      } catch (error) {
        if (conn.isOpen || this.#closed) throw ClientError.from(error); // refused by the gateway
      }
    }
  }

  /** The live connection, or the next one. */
  #live(): Promise<GatewayConnection> {
    if (this.#closed) return Promise.reject(new ClientError('cancelled', 'agent closed'));
    if (this.#fatal !== undefined) return Promise.reject(this.#fatal);
    if (this.#conn?.isOpen === true) return Promise.resolve(this.#conn);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  #assertUsable(): void {
    if (this.#closed) throw new ClientError('cancelled', 'agent closed');
    if (this.#fatal !== undefined) throw this.#fatal;
  }

  // --- connection -----------------------------------------------------------------------

  async #open(): Promise<GatewayConnection> {
    const o = this.#options;
    let credentials: ChannelCredentials = grpcCredentials.createInsecure();
    if (o.tls !== undefined) credentials = grpcCredentials.createSsl(o.tls.rootCerts ?? null, o.tls.privateKey ?? null, o.tls.certChain ?? null);
    return GatewayConnection.open({
      address: o.gateway,
      crypto: this.#crypto,
      identity: o.identity,
      credentials,
      manualAck: true,
      onDelivery: (delivery, conn) => this.#onDelivery(delivery, conn),
      expectedGatewayId: o.expectedGatewayId,
      ...(o.authTimeoutMs === undefined ? {} : { timeoutMs: o.authTimeoutMs }),
    });
  }

  #attach(conn: GatewayConnection): void {
    if (this.#closed) {
      conn.close();
      return;
    }
    this.#conn = conn;
    this.#emit({ kind: 'connected', gatewayId: conn.gatewayId, mailboxDepth: Number(conn.welcome.mailboxDepth) });
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.resolve(conn);
    void conn.closed.then((end) => this.#onStreamEnd(conn, end));
    // Everything not yet confirmed goes out again on the new stream (the recipient drops duplicates).
    for (const entry of this.#outbox.values()) {
      entry.status = undefined;
      entry.backoffMs = this.#resendBase();
      if (entry.sessionIdHex !== '' && this.#manager.sessionById(entry.sessionIdHex) !== undefined) void this.#transmit(entry);
      else entry.nextAttemptAtMs = 0;
    }
  }

  async #onStreamEnd(conn: GatewayConnection, end: Awaited<GatewayConnection['closed']>): Promise<void> {
    if (this.#conn === conn) this.#conn = undefined;
    if (this.#closed || this.#fatal !== undefined) return;
    const goAwayCode = end !== undefined && !(end instanceof Error) ? end.code : undefined;
    const error = end instanceof Error ? ClientError.from(end) : new ClientError(goAwayCode !== undefined && FATAL_GO_AWAY.has(goAwayCode) ? (goAwayCode as ClientErrorCode) : 'unavailable', describeEnd(end));
    this.#emit({ kind: 'disconnected', error });
    if ((goAwayCode !== undefined && FATAL_GO_AWAY.has(goAwayCode)) || this.#options.reconnect === false) {
      this.#stop(error);
      return;
    }
    const backoff = this.#options.reconnect;
    const initial = Math.max(1, backoff?.initialDelayMs ?? 100);
    const max = Math.max(initial, backoff?.maxDelayMs ?? 10_000);
    for (let attempt = 1; !this.#closed && this.#fatal === undefined; attempt++) {
      const ceiling = Math.min(max, initial * 2 ** Math.min(attempt - 1, 30));
      const delayMs = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2); // "equal jitter"
      this.#emit({ kind: 'reconnecting', attempt, delayMs });
      await new Promise<void>((resolve) => {
        this.#sleep = { timer: setTimeout(resolve, delayMs), resolve };
      });
      this.#sleep = undefined;
      if (this.#closed) return;
      try {
        const next = await this.#open();
        this.#attach(next);
        return;
      } catch (e) {
        const failure = ClientError.from(e);
        if (FATAL_CODES.has(failure.code)) {
          this.#emit({ kind: 'disconnected', error: failure });
          this.#stop(failure);
          return;
        }
      }
    }
  }

  /** Stops for good: pending and future operations fail with `error`, `messages()` throws it. */
  #stop(error: ClientError): void {
    if (this.#fatal !== undefined) return;
    this.#fatal = error;
    this.#rejectWaiters(error);
    for (const listener of this.#closeListeners) listener(error);
    this.#closeListeners.clear();
    for (const e of this.#outbox.values()) for (const w of e.waiters) w.reject(error);
    this.#conn?.close();
    this.#app.fail(error);
  }

  #rejectWaiters(error: ClientError): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(error);
  }

  // --- receiving -------------------------------------------------------------------------

  /** One delivery, in order; only a handshake frame returns a promise (the next delivery waits for it). */
  #onDelivery(delivery: Delivery, conn: GatewayConnection): void | Promise<void> {
    if (this.#fatal !== undefined || this.#closed) return; // not acked: the gateway keeps it
    const item = delivery.item;
    const ack = (): void => conn.ack(delivery.deliveryId);
    switch (item.case) {
      case 'handshake':
        return this.#onHandshakeFrame(item.value, ack);
      case 'envelope':
        this.#onEnvelope(item.value, conn, delivery.deliveryId);
        return;
      case 'receipt':
        this.#onReceipt(item.value);
        ack();
        return;
      case 'sessionReject':
        this.#onSessionReject(item.value);
        ack();
        return;
      default:
        ack();
        return;
    }
  }

  async #onHandshakeFrame(frame: HandshakeFrame, ack: () => void): Promise<void> {
    let done: Promise<Session | undefined> | undefined;
    const events = this.#captured(() => {
      done = this.#manager.handleFrame(frame);
    });
    // A frame of a handshake already finished (or a step 1 already answered) is a redelivery.
    for (const e of events) {
      if (e.kind === 'security' && e.stage === 'handshake' && (e.code === 'replay' || (e.code === 'unknown_session' && frame.step !== 1))) {
        this.#emit({ kind: 'duplicate', item: 'handshake', senderId: frame.senderId, detail: e.detail });
      } else this.#emit(e);
    }
    const session = await done?.catch(() => undefined);
    ack();
    if (session !== undefined) this.#releaseHeld(session.idHex);
  }

  #onEnvelope(envelope: SecureMessage, conn: GatewayConnection, deliveryId: bigint): void {
    const ack = (): void => conn.ack(deliveryId);
    let digest: EnvelopeDigest;
    let hashHex: string;
    try {
      digest = messageHashOf(this.#crypto, envelope); // taken once: the lookups below and open() share it
      hashHex = toHex(digest.hash);
    } catch {
      ack(); // not even a well-formed envelope: nothing will ever open it
      return;
    }
    // Already taken and not yet acknowledged by the application: ack this copy with it.
    const held = this.#inbox.get(hashHex);
    if (held !== undefined) {
      if (held.acked) ack();
      else held.deliveries.push({ conn, id: deliveryId });
      return;
    }
    // Acknowledged before: the receipt may have been lost; send it again.
    const receipt = this.#receipts.get(hashHex);
    if (receipt !== undefined) {
      this.#emit({ kind: 'duplicate', item: 'envelope', senderId: envelope.senderId, detail: 'envelope already acknowledged: receipt sent again' });
      void conn.sendReceipt(receipt.receipt).catch(() => undefined);
      ack();
      return;
    }
    if (this.#unacked >= (this.#options.maxUnacked ?? 1024)) return; // back-pressure: not acked, it comes again
    const sidHex = envelope.sessionId instanceof Uint8Array && envelope.sessionId.length === 16 ? toHex(envelope.sessionId) : '';
    let opened: OpenedMessage | undefined;
    let failure: unknown;
    const events = this.#captured(() => {
      try {
        opened = this.#manager.open(envelope, digest);
      } catch (error) {
        failure = error;
      }
    });
    if (opened === undefined) {
      if (isSessionError(failure, 'unknown_session')) {
        if (this.#manager.isResponding(sidHex)) {
          // Overtook step 3 of a handshake this agent is responding to: hold it (§17.3).
          let h = this.#held.get(sidHex);
          if (h === undefined) this.#held.set(sidHex, (h = { items: [] }));
          if (h.items.length < HELD_PER_HANDSHAKE) h.items.push({ envelope, conn, deliveryId });
          return;
        }
        for (const e of events) this.#emit(e);
        this.#rejectSession(envelope, conn);
        ack();
        return;
      }
      if (isSessionError(failure, 'revocation_stale')) {
        // The session checks the peer's revocation for every message (§8.4, §17.5); with stale data it fails
        // closed: the envelope stays unacknowledged at the gateway and opens once the data is fresh again.
        for (const e of events) this.#emit(e);
        return;
      }
      if (isSessionError(failure, 'replay')) {
        this.#emit({ kind: 'duplicate', item: 'envelope', senderId: envelope.senderId, detail: 'replayed envelope dropped' });
      } else for (const e of events) this.#emit(e); // revoked or expired peer (session closed), forgeries, …
      ack(); // it will never open
      return;
    }
    for (const e of events) this.#emit(e);
    const live = this.#manager.sessionById(sidHex);
    if (live === undefined) return;
    const message = this.#received({
      envelope,
      hash: opened.messageHash,
      hashHex,
      payload: opened.payload,
      content: opened.content,
      payloadBytes: opened.disclosure.payload,
      salt: opened.disclosure.salt,
      certificate: live.peerCertificate,
      receivedAtMs: Date.now(),
      redelivered: false,
    });
    const entry: InboxEntry = { message, hashHex, deliveries: [{ conn, id: deliveryId }], acked: false };
    this.#inbox.set(hashHex, entry);
    this.#unacked += 1;
    if (this.#journal === undefined) {
      // Nothing to make durable: handed over now, in arrival order (every message takes this path).
      this.#app.push(message);
      return;
    }
    // Durable before the application sees it (one record: inbox entry and replay mark), then handed over in order.
    const durable = this.#record([this.#inRecord(message, hashHex)]);
    durable.catch(() => undefined);
    this.#handover = this.#handover.then(async () => {
      try {
        await durable;
      } catch {
        return; // the agent stopped (fail closed); the gateway still holds the delivery
      }
      this.#app.push(message);
    });
  }

  /** Builds the application's view of an opened message, with its ack. */
  #received(m: {
    envelope: SecureMessage;
    hash: Uint8Array;
    /** toHex(hash), when the caller has it. */
    hashHex?: string;
    payload: MessagePayload;
    /** payload.content as JSON, when the caller has it (the session's open converts it). */
    content?: JsonValue;
    payloadBytes: Uint8Array;
    salt: Uint8Array;
    certificate: AgentCertificate;
    receivedAtMs: number;
    redelivered: boolean;
  }): ReceivedMessage {
    const hashHex = m.hashHex ?? toHex(m.hash);
    const ack = (): Promise<void> => this.#ackMessage(hashHex);
    return {
      from: m.envelope.senderId,
      type: m.payload.type,
      content: m.content !== undefined ? m.content : m.payload.content === undefined ? null : (toJson(ValueSchema, m.payload.content) as JsonValue),
      messageHash: m.hash,
      envelope: m.envelope,
      payload: m.payload,
      disclosure: { payload: m.payloadBytes, salt: m.salt },
      senderCertificate: m.certificate,
      receivedAtMs: m.receivedAtMs,
      redelivered: m.redelivered,
      ack,
    };
  }

  async #ackMessage(hashHex: string): Promise<void> {
    const entry = this.#inbox.get(hashHex);
    if (entry === undefined || entry.acked) return;
    const m = entry.message;
    const receipt = signReceipt(this.#crypto, this.#options.identity, { messageHash: m.messageHash, senderId: m.from, receivedAtMs: m.receivedAtMs });
    entry.acked = true;
    this.#unacked -= 1;
    if (this.#journal !== undefined) {
      try {
        await this.#record([{ t: 'in_done', hash: hashHex, receipt: toBase64Url(toBinary(DeliveryReceiptSchema, receipt)), at: m.receivedAtMs }]);
      } catch (error) {
        entry.acked = false;
        this.#unacked += 1;
        throw ClientError.from(error);
      }
    }
    this.#inbox.delete(hashHex);
    this.#receipts.set(hashHex, { receipt, at: m.receivedAtMs });
    const conn = this.#conn;
    if (conn?.isOpen === true) void conn.sendReceipt(receipt).catch(() => undefined); // lost with the stream: re-sent on redelivery
    for (const d of entry.deliveries) d.conn.ack(d.id);
  }

  /** Processes envelopes held for a handshake that just completed, in arrival order. */
  #releaseHeld(sessionIdHex: string): void {
    const h = this.#held.get(sessionIdHex);
    if (h === undefined) return;
    this.#held.delete(sessionIdHex);
    for (const item of h.items) this.#onEnvelope(item.envelope, item.conn, item.deliveryId);
  }

  /** Answers an envelope this agent can never open with a signed SessionReject (§17.4). */
  #rejectSession(envelope: SecureMessage, conn: GatewayConnection): void {
    if (!(envelope.sessionId instanceof Uint8Array) || envelope.sessionId.length !== 16 || envelope.recipientId !== this.agentId) return;
    let reject: SessionReject;
    try {
      reject = signSessionReject(this.#crypto, this.#options.identity, {
        sessionId: envelope.sessionId,
        messageHash: computeMessageHash(this.#crypto, envelope),
        senderId: envelope.senderId,
        rejectedAtMs: Date.now(),
      });
    } catch {
      return;
    }
    void conn.sendSessionReject(reject).catch(() => undefined); // lost: the sender's next resend gets another
  }

  #onReceipt(receipt: DeliveryReceipt): void {
    const hash = toHex(receipt.messageHash);
    const pending = this.#outboxByHash.get(hash);
    if (pending === undefined) {
      this.#emit({ kind: 'duplicate', item: 'receipt', senderId: receipt.recipientId, detail: 'receipt for no pending send' });
      return;
    }
    const reject = (code: ReceiptSecurityEvent['code'], detail: string): void =>
      this.#emit({ kind: 'security', stage: 'receipt', code, senderId: receipt.recipientId, recipientId: this.agentId, messageHash: hash, atMs: Date.now(), detail });
    if (receipt.senderId !== this.agentId || receipt.recipientId !== pending.to) {
      reject('identity_mismatch', `receipt names ${receipt.recipientId} → ${receipt.senderId}, expected ${pending.to} → ${this.agentId}`);
      return;
    }
    if (!verifyReceiptSignature(this.#crypto, receipt, pending.peerKey)) {
      reject('bad_signature', "receipt signature does not verify with the recipient's certified key");
      return;
    }
    this.#settle(pending, { outcome: 'delivered', receipt });
  }

  #onSessionReject(r: SessionReject): void {
    const hash = toHex(r.messageHash);
    const pending = this.#outboxByHash.get(hash);
    if (pending === undefined) return; // nothing pending under that hash (already resealed or settled)
    const bad = (code: ReceiptSecurityEvent['code'], detail: string): void =>
      this.#emit({ kind: 'security', stage: 'receipt', code, senderId: r.recipientId, recipientId: this.agentId, messageHash: hash, atMs: Date.now(), detail });
    if (r.senderId !== this.agentId || r.recipientId !== pending.to || toHex(r.sessionId) !== pending.sessionIdHex) {
      bad('identity_mismatch', 'session reject does not name this pending send');
      return;
    }
    if (!verifySessionRejectSignature(this.#crypto, r, pending.peerKey)) {
      bad('bad_signature', "session reject signature does not verify with the recipient's certified key");
      return;
    }
    void this.#reseal(pending.to, pending.sessionIdHex);
  }

  #onSessionEvent(event: SessionManagerEvent): void {
    if (event.kind === 'responder_abandoned') {
      // The handshake will never complete: whatever was held for it can never open.
      const h = this.#held.get(event.sessionIdHex);
      this.#held.delete(event.sessionIdHex);
      for (const item of h?.items ?? []) {
        this.#rejectSession(item.envelope, item.conn);
        item.conn.ack(item.deliveryId);
      }
    }
    if (event.kind === 'established' && this.#journal !== undefined) {
      // The session's first snapshot; reservations follow before anything is sealed in it.
      void this.#record([{ t: 'session', id: event.session.idHex, sealed: toBase64Url(this.#manager.exportSession(event.session)) }]).catch(() => undefined);
    }
    if ((event.kind === 'closed' || event.kind === 'expired') && this.#journal !== undefined && this.#fatal === undefined && !this.#closed) {
      void this.#record([{ t: 'closed', id: event.session.idHex }]).catch(() => undefined);
    }
    if (this.#capture !== undefined) this.#capture.push(event);
    else this.#emit(event);
  }

  /** Runs `fn`, collecting the session events it emits synchronously instead of forwarding them. */
  #captured(fn: () => void): SessionManagerEvent[] {
    const events: SessionManagerEvent[] = [];
    const outer = this.#capture;
    this.#capture = events;
    try {
      fn();
    } finally {
      this.#capture = outer;
    }
    return events;
  }

  #emit(event: AgentEvent): void {
    try {
      this.#options.onEvent?.(event);
    } catch {
      // A listener's failure must not break the agent.
    }
  }
}

function describeEnd(end: Awaited<GatewayConnection['closed']>): string {
  if (end === undefined) return 'gateway stream ended';
  if (end instanceof Error) return end.message;
  if (end.code === 'revocation_stale') return "gateway's revocation data is stale (its registry is unreachable); reconnecting until it is fresh again";
  return `gateway sent go_away '${end.code}': ${end.message}`;
}

export type { SecurityEvent };
