/**
 * The agent SDK: `connect()` returns an {@link Agent} that keeps one
 * authenticated stream to a gateway (reconnecting with backoff), establishes
 * Noise sessions through it on demand, sends SecureMessages and resolves each
 * send with the recipient's verified, signed DeliveryReceipt, and yields every
 * received application message once.
 */
import { credentials as grpcCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import { createCrypto, toHex, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import type { RevocationChecker, TrustBundle } from '@parley/identity';
import { MemoryClient } from '@parley/memory';
import type { AgentCertificate, Delivery, DeliveryReceipt, HandshakeFrame, JsonValue, MessagePayload, MessageType, SecureMessage } from '@parley/proto';
import {
  SessionManager,
  isSessionError,
  messageHash as computeMessageHash,
  type Disclosure,
  type FrameTransport,
  type LocalIdentity,
  type OpenedMessage,
  type SecurityEvent,
  type SessionManagerEvent,
  type SessionTimeouts,
  type SkewLimits,
} from '@parley/session';
import { Channel } from '@parley/rpc';
import { GatewayConnection, signReceipt, verifyReceiptSignature } from './connection.js';
import { ClientError, type ClientErrorCode } from './errors.js';
import type { StateStore } from './state-store.js';

/** TLS to the gateway (TLS 1.3 on the gateway side); omit for plaintext on loopback. */
export interface TlsOptions {
  /** PEM CA certificates to trust (default: the system roots). */
  readonly rootCerts?: Buffer;
  /** PEM client key and certificate chain, for gateways that require mTLS. */
  readonly privateKey?: Buffer;
  readonly certChain?: Buffer;
}

/** Settings of {@link connect}. */
export interface ConnectOptions {
  /** `host:port` of the gateway. */
  readonly gateway: string;
  /** This agent: id, Ed25519 identity secret key, certificate. */
  readonly identity: LocalIdentity;
  /** Issuer keys that peers' certificates must chain to. */
  readonly trustBundle: TrustBundle;
  /** Revocation data checked for every peer at handshake time. */
  readonly revocations?: RevocationChecker;
  readonly tls?: TlsOptions;
  /** When given, the gateway's challenge must name this gateway id. */
  readonly expectedGatewayId?: string;
  /** Where sealed session state is kept across restarts (needs `stateKey`). */
  readonly stateStore?: StateStore;
  /** 32-byte key sealing the session state (docs/PROTOCOL.md §13). */
  readonly stateKey?: SecretKey;
  /** Session lifetimes (SessionManager's). */
  readonly timeouts?: Partial<SessionTimeouts>;
  /** Messages per epoch proposed for sessions this agent initiates. Default 1000. */
  readonly rekeyThreshold?: number;
  /** Timestamp skew accepted on received envelopes. */
  readonly skew?: SkewLimits;
  /** Backoff when the stream drops; `false`: no reconnection. Default 100 ms .. 10 s. */
  readonly reconnect?: false | { readonly initialDelayMs?: number; readonly maxDelayMs?: number };
  /** Default per-send timeout (session, relay and receipt), ms. Default 30 000. */
  readonly sendTimeoutMs?: number;
  /** Handshake timeout, ms. Default 10 000. */
  readonly handshakeTimeoutMs?: number;
  /** Gateway authentication timeout per attempt, ms. Default 10 000. */
  readonly authTimeoutMs?: number;
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
}

/** A received application message (opened, verified, seen for the first time). */
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
}

/** A rejected delivery receipt (it does not resolve the send; a genuine one still can). */
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

/**
 * What `onEvent` receives:
 * - session events (`security` with stage handshake/message/state, `established`, `expiring`, `expired`, `renewed`, `closed`);
 * - `security` with stage `receipt`: a receipt that does not verify;
 * - `duplicate`: an item the mailbox redelivered and that was dropped (a replayed
 *   envelope, a handshake frame of a finished handshake, a receipt already settled);
 * - `connected`, `disconnected`, `reconnecting`: the gateway stream;
 * - `state_error`: saving session state failed.
 */
export type AgentEvent =
  | SessionManagerEvent
  | ReceiptSecurityEvent
  | { readonly kind: 'duplicate'; readonly item: 'envelope' | 'handshake' | 'receipt'; readonly senderId: string; readonly detail: string }
  | { readonly kind: 'connected'; readonly gatewayId: string; readonly mailboxDepth: number }
  | { readonly kind: 'disconnected'; readonly error: ClientError }
  | { readonly kind: 'reconnecting'; readonly attempt: number; readonly delayMs: number }
  | { readonly kind: 'state_error'; readonly error: ClientError };

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

/** Go-away codes after which the agent stops (another stream took over, or the certificate is no longer good). */
const FATAL_GO_AWAY = new Set(['replaced', 'revoked', 'expired', 'revocation_stale']);

const RECEIPT_CACHE_SIZE = 10_000;

interface PendingSend {
  readonly recipient: string;
  readonly peerKey: Uint8Array;
  readonly resolve: (receipt: DeliveryReceipt) => void;
}

interface Waiter {
  readonly resolve: (conn: GatewayConnection) => void;
  readonly reject: (error: ClientError) => void;
}

/**
 * Connects an agent to its gateway: imports saved session state (if a
 * `stateStore` is given), authenticates the stream and starts receiving.
 * @throws ClientError with the gateway's code (`revoked`, `unknown_issuer`, `unavailable`, …) or `state_corrupt`
 */
export async function connect(options: ConnectOptions): Promise<Agent> {
  const crypto = options.crypto ?? (await createCrypto());
  if (options.stateStore !== undefined && options.stateKey === undefined) throw new ClientError('malformed', 'stateStore needs a stateKey');
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
  readonly #inbox = new Channel<ReceivedMessage>();
  readonly #pending = new Map<string, PendingSend>();
  /** Receipts this agent signed, by message hash: re-sent when the envelope is redelivered. */
  readonly #receipts = new Map<string, DeliveryReceipt>();
  #conn: GatewayConnection | undefined;
  #waiters: Waiter[] = [];
  #closed = false;
  #started = false;
  #fatal: ClientError | undefined;
  #capture: SessionManagerEvent[] | undefined;
  #saveChain: Promise<void> = Promise.resolve();
  #sleep: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  readonly #closeListeners = new Set<(error: ClientError) => void>();
  #memory: MemoryClient | undefined;

  /** @internal use {@link connect} */
  constructor(crypto: ParleyCrypto, options: ConnectOptions) {
    this.#crypto = crypto;
    this.#options = options;
    const transport: FrameTransport = { sendFrame: (frame) => this.#relayFrame(frame) };
    this.#manager = new SessionManager({
      crypto,
      handshake: {
        identity: options.identity,
        trustBundle: options.trustBundle,
        ...(options.revocations === undefined ? {} : { revocations: options.revocations }),
        ...(options.rekeyThreshold === undefined ? {} : { rekeyThreshold: options.rekeyThreshold }),
        ...(options.skew === undefined ? {} : { skew: options.skew }),
      },
      transport,
      ...(options.timeouts === undefined ? {} : { timeouts: options.timeouts }),
      ...(options.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: options.handshakeTimeoutMs }),
      ...(options.stateKey === undefined ? {} : { stateKey: options.stateKey }),
      onEvent: (event) => {
        if (this.#capture !== undefined) this.#capture.push(event);
        else this.#emit(event);
      },
      ...(options.stateStore === undefined ? {} : { onStateChange: () => void this.#persist() }),
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
        trustBundle: o.trustBundle,
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

  /** @internal called once by {@link connect} */
  async start(): Promise<void> {
    if (this.#options.stateStore !== undefined) {
      const sealed = await this.#options.stateStore.load();
      if (sealed.length > 0) this.#manager.importState(sealed);
    }
    this.#started = true;
    const conn = await this.#open();
    this.#attach(conn);
  }

  /**
   * Sends one application message and waits for the recipient's receipt.
   * Establishes a session first if needed; if the stream drops, the envelope is
   * relayed again after reconnection (the recipient drops duplicates).
   * @returns the DeliveryReceipt, its signature verified with the recipient's certified key
   * @throws ClientError: the gateway's refusal (`policy_denied`, `rate_limited`, `too_large`, …),
   *   the handshake's (`handshake_failed`, `revoked`, …), `deadline_exceeded` (no receipt in time),
   *   `cancelled` (agent closed), or the fatal connection error
   */
  async send(to: string, type: MessageType, content: JsonValue, options: SendOptions = {}): Promise<DeliveryReceipt> {
    this.#assertUsable();
    const timeoutMs = options.timeoutMs ?? this.#options.sendTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    let onClose: ((error: ClientError) => void) | undefined;
    let hashHex: string | undefined;
    const abort = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ClientError('deadline_exceeded', `no verified receipt from '${to}' within ${timeoutMs} ms`)), timeoutMs);
      onClose = reject;
      this.#closeListeners.add(onClose);
    });
    const work = this.#send(to, type, content, options, (h) => {
      hashHex = h;
    });
    work.catch(() => undefined); // when the timeout wins, a later failure is nobody's business
    try {
      return await Promise.race([abort, work]);
    } catch (error) {
      throw ClientError.from(error);
    } finally {
      clearTimeout(timer);
      if (onClose !== undefined) this.#closeListeners.delete(onClose);
      if (hashHex !== undefined) this.#pending.delete(hashHex);
    }
  }

  /**
   * Received application messages, each once, in delivery order. One consumer.
   * Ends when the agent closes; throws the ClientError that stopped the agent otherwise.
   */
  messages(): AsyncIterable<ReceivedMessage> {
    return this.#inbox;
  }

  /** Saves session state (if a store is configured), closes every session and the stream. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const error = new ClientError('cancelled', 'agent closed');
    for (const listener of this.#closeListeners) listener(error);
    this.#closeListeners.clear();
    this.#rejectWaiters(error);
    if (this.#sleep !== undefined) {
      clearTimeout(this.#sleep.timer);
      this.#sleep.resolve();
    }
    if (this.#started) await this.#persist(); // never overwrite state that failed to load
    await this.#saveChain;
    this.#manager.close();
    this.#memory?.close();
    this.#conn?.close();
    this.#conn = undefined;
    this.#inbox.end();
  }

  // --- sending ------------------------------------------------------------------------

  async #send(to: string, type: MessageType, content: JsonValue, options: SendOptions, named: (hashHex: string) => void): Promise<DeliveryReceipt> {
    const session = await this.#manager.session(to);
    const sealed = await this.#manager.seal(to, {
      type,
      content,
      ...(options.handoffHash === undefined ? {} : { handoffHash: options.handoffHash }),
      ...(options.parentMessageHash === undefined ? {} : { parentMessageHash: options.parentMessageHash }),
    });
    const hashHex = toHex(sealed.messageHash);
    named(hashHex);
    const receipt = new Promise<DeliveryReceipt>((resolve) => {
      this.#pending.set(hashHex, { recipient: to, peerKey: session.peerCertificate.identityPublicKey, resolve });
    });
    await this.#relay((conn) => conn.sendEnvelope(sealed.envelope));
    return receipt;
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
      onDelivery: (delivery) => this.#onDelivery(delivery),
      ...(o.expectedGatewayId === undefined ? {} : { expectedGatewayId: o.expectedGatewayId }),
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
  }

  async #onStreamEnd(conn: GatewayConnection, end: Awaited<GatewayConnection['closed']>): Promise<void> {
    if (this.#conn === conn) this.#conn = undefined;
    if (this.#closed) return;
    const goAwayCode = end !== undefined && !(end instanceof Error) ? end.code : undefined;
    const error =
      end instanceof Error
        ? ClientError.from(end)
        : new ClientError(goAwayCode === 'revoked' || goAwayCode === 'expired' || goAwayCode === 'revocation_stale' ? goAwayCode : 'unavailable', end === undefined ? 'gateway stream ended' : `gateway sent go_away '${end.code}': ${end.message}`);
    this.#emit({ kind: 'disconnected', error });
    if ((goAwayCode !== undefined && FATAL_GO_AWAY.has(goAwayCode)) || this.#options.reconnect === false) {
      this.#stop(error);
      return;
    }
    const backoff = this.#options.reconnect;
    const initial = Math.max(1, backoff?.initialDelayMs ?? 100);
    const max = Math.max(initial, backoff?.maxDelayMs ?? 10_000);
    for (let attempt = 1; !this.#closed; attempt++) {
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
    this.#fatal = error;
    this.#rejectWaiters(error);
    for (const listener of this.#closeListeners) listener(error);
    this.#closeListeners.clear();
    this.#inbox.fail(error);
  }

  #rejectWaiters(error: ClientError): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(error);
  }

  // --- receiving -------------------------------------------------------------------------

  async #onDelivery(delivery: Delivery): Promise<void> {
    const item = delivery.item;
    switch (item.case) {
      case 'handshake': {
        let done: Promise<unknown> | undefined;
        const events = this.#captured(() => {
          done = this.#manager.handleFrame(item.value);
        });
        // A frame of a handshake already finished (or a step 1 already answered) is a mailbox redelivery.
        for (const e of events) {
          if (e.kind === 'security' && e.stage === 'handshake' && (e.code === 'replay' || (e.code === 'unknown_session' && item.value.step !== 1))) {
            this.#emit({ kind: 'duplicate', item: 'handshake', senderId: item.value.senderId, detail: e.detail });
          } else this.#emit(e);
        }
        await done?.catch(() => undefined);
        return;
      }
      case 'envelope':
        await this.#onEnvelope(item.value);
        return;
      case 'receipt':
        this.#onReceipt(item.value);
        return;
      default:
        return;
    }
  }

  async #onEnvelope(envelope: SecureMessage): Promise<void> {
    let opened: OpenedMessage | undefined;
    let failure: unknown;
    const events = this.#captured(() => {
      try {
        opened = this.#manager.open(envelope);
      } catch (error) {
        failure = error;
      }
    });
    if (opened === undefined) {
      if (isSessionError(failure, 'replay')) {
        // A redelivery: drop it; if this agent accepted it before, its receipt may have been lost, so send it again.
        const hash = toHex(computeMessageHash(this.#crypto, envelope));
        this.#emit({ kind: 'duplicate', item: 'envelope', senderId: envelope.senderId, detail: 'replayed envelope dropped' });
        const receipt = this.#receipts.get(hash);
        if (receipt !== undefined) await this.#conn?.sendReceipt(receipt).catch(() => undefined);
      } else {
        for (const e of events) this.#emit(e);
      }
      return;
    }
    for (const e of events) this.#emit(e);
    const receivedAtMs = Date.now();
    // Persist the replay window before acknowledging, so a restart never accepts this envelope again.
    await this.#persist();
    const session = this.#manager.sessions().find((s) => s.idHex === toHex(envelope.sessionId));
    if (session === undefined) return; // cannot happen: the envelope just opened in it
    this.#inbox.push({
      from: envelope.senderId,
      type: opened.payload.type,
      content: opened.content,
      messageHash: opened.messageHash,
      envelope,
      payload: opened.payload,
      disclosure: opened.disclosure,
      senderCertificate: session.peerCertificate,
      receivedAtMs,
    });
    const receipt = signReceipt(this.#crypto, this.#options.identity, { messageHash: opened.messageHash, senderId: envelope.senderId, receivedAtMs });
    this.#receipts.set(toHex(opened.messageHash), receipt);
    if (this.#receipts.size > RECEIPT_CACHE_SIZE) this.#receipts.delete(this.#receipts.keys().next().value as string);
    await this.#conn?.sendReceipt(receipt).catch(() => undefined); // lost with the stream: re-sent on redelivery
  }

  #onReceipt(receipt: DeliveryReceipt): void {
    const hash = toHex(receipt.messageHash);
    const pending = this.#pending.get(hash);
    if (pending === undefined) {
      this.#emit({ kind: 'duplicate', item: 'receipt', senderId: receipt.recipientId, detail: 'receipt for no pending send' });
      return;
    }
    const reject = (code: ReceiptSecurityEvent['code'], detail: string): void =>
      this.#emit({ kind: 'security', stage: 'receipt', code, senderId: receipt.recipientId, recipientId: this.agentId, messageHash: hash, atMs: Date.now(), detail });
    if (receipt.senderId !== this.agentId || receipt.recipientId !== pending.recipient) {
      reject('identity_mismatch', `receipt names ${receipt.recipientId} → ${receipt.senderId}, expected ${pending.recipient} → ${this.agentId}`);
      return;
    }
    if (!verifyReceiptSignature(this.#crypto, receipt, pending.peerKey)) {
      reject('bad_signature', "receipt signature does not verify with the recipient's certified key");
      return;
    }
    this.#pending.delete(hash);
    pending.resolve(receipt);
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

  // --- state ---------------------------------------------------------------------------------

  /** Saves every session's sealed state; saves run one at a time, each exporting the latest state. Never rejects. */
  #persist(): Promise<void> {
    const store = this.#options.stateStore;
    if (store === undefined) return Promise.resolve();
    const run = this.#saveChain.then(async () => {
      try {
        await store.save(this.#manager.exportState());
      } catch (error) {
        this.#emit({ kind: 'state_error', error: ClientError.from(error) });
      }
    });
    this.#saveChain = run;
    return run;
  }

  #emit(event: AgentEvent): void {
    try {
      this.#options.onEvent?.(event);
    } catch {
      // A listener's failure must not break the agent.
    }
  }
}

export type { SecurityEvent };
