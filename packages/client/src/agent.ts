/**
 * The agent SDK: `connect()` returns an {@link Agent} that keeps one
 * authenticated stream to a gateway (reconnecting with backoff), establishes
 * Noise sessions through it on demand, and keeps the delivery contract of
 * docs/PROTOCOL.md §17 end to end:
 *
 * - sending: the message is in the durable outbox once its first record is written, within the `send`
 *   call, before anything of it leaves the process or the call waits on the network (§17.2 item 2), the counter is durably reserved before sealing
 *   (§13), the sealed envelope waits in the outbox until the recipient's verified
 *   receipt, and is resent after reconnects, restarts and a silent interval; a
 *   verified SessionReject reseals it in a new session;
 * - receiving: an opened message is written to a durable inbox (the same record
 *   marks its counter and hash in the replay window), handed to the application,
 *   and only the application's `ack()` signs the receipt and acks the gateway's
 *   delivery; after a crash, unacknowledged messages are handed over again,
 *   flagged `redelivered`.
 *
 * This file is the facade that wires the parts together: `gateway-link.ts` (the stream and reconnection),
 * `outbox.ts` (sending), `inbox.ts` (receiving and the application's ack), `handshakes.ts` (session
 * establishment and held envelopes), `durable-state.ts` (the journal), `registry-follow.ts` (the trust
 * bundle), `revocation-follow.ts` (the agent's own revocation list, §8.4), `first-contact.ts` (a recipient the gateway
 * never saw, looked up in the registry, §10.3), `events.ts` (onEvent). The public
 * types are in `agent-options.ts`.
 */
import { createCrypto, fromBase64Url, fromHex, toBase64Url, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle } from '@parley/identity';
import { MemoryClient } from '@parley/memory';
import { DeliveryStatus, RegistryService, type AgentCertificate, type Delivery, type DeliveryReceipt, type JsonValue, type MessageType } from '@parley/proto';
import { DEFAULT_TIMEOUTS, SessionManager, type FrameTransport, type SecurityEvent, type Session } from '@parley/session';
import { Channel } from '@parley/async';
import { signAgentRequest, type TrustBundleFollower, type TrustBundleFollowerState } from '@parley/protocol';
import { isLoopbackAddress } from '@parley/rpc';
import { maxAgeMs, type ConnectOptions, type ReceivedMessage, type SendOptions } from './agent-options.js';
import { checkConnectOptions, checkSendArguments } from './arguments.js';
import type { GatewayConnection } from './connection.js';
import { DurableState, isStateClosedRefusal } from './durable-state.js';
import { ClientError, isTransientConnectRefusal } from './errors.js';
import { AgentEvents } from './events.js';
import { FirstContact } from './first-contact.js';
import { GatewayLink, backoffDelayMs, gatewayCredentials } from './gateway-link.js';
import { Handshakes } from './handshakes.js';
import { Inbox } from './inbox.js';
import { Journal, type JournalRecord } from './journal.js';
import { Lifecycle } from './lifecycle.js';
import { Outbox, type OutboxEntry, type PendingSend, type SendWaiter } from './outbox.js';
import { SessionSnapshots } from './session-snapshots.js';
import { createRegistryFollow, startFollowing, type RegistryFollow } from './registry-follow.js';
import { RegistryRevocations, closeRevokedSessions, keptFromJournal, keptRecords, type KeptRevocations, type RevocationListStatus } from './revocation-follow.js';

export type { TlsOptions, RegistryFollowOptions, ConnectOptions, SendOptions, ReceivedMessage, ReceiptSecurityEvent, SendOutcome, AgentEvent } from './agent-options.js';
export type { DirectorySecurityEvent, FirstContactLookupEvent } from './first-contact.js';
export type { RevocationListEvent, RevocationListState, RevocationListStatus, RevocationSecurityEvent, RevokedSubject } from './revocation-follow.js';

/** The registry method an agent signs itself (§15.3): the recipient lookup of a first contact. */
const GET_AGENT_PATH = `/${RegistryService.typeName}/${RegistryService.method.getAgent.name}`;

/** How long one registry lookup of a recipient may take. */
const LOOKUP_TIMEOUT_MS = 5_000;

/** How long `connect` keeps trying while the gateway answers what time fixes (ConnectOptions.connectTimeoutMs). */
const DEFAULT_CONNECT_TIMEOUT_MS = 60_000;


/**
 * Connects an agent to its gateway: replays its saved state (if a
 * `stateStore` is given), authenticates the stream, resends what is pending
 * and starts receiving.
 * An answer time fixes — the gateway's revocation copy stale (`revocation_stale`: its registry down, or just
 * back), the gateway shutting down or busy — is tried again with the reconnect backoff for up to
 * `connectTimeoutMs` (default 60 s), each wait announced by a `connect_retry` event.
 * @throws ClientError with the gateway's code (`revoked`, `unknown_issuer`, …; or, at the deadline, the last answer
 *   time did not fix: `revocation_stale`, `unavailable`, …), `unavailable` at once when no connection could be
 *   made (a wrong address, TLS), `state_corrupt`, or `malformed` for bad options
 */
export async function connect(options: ConnectOptions): Promise<Agent> {
  checkConnectOptions(options); // the types, before anything is opened (a caller without TypeScript)
  const crypto = options.crypto ?? (await createCrypto());
  if (options.stateStore !== undefined && options.stateKey === undefined) throw new ClientError('malformed', 'stateStore needs a stateKey');
  if (typeof options.expectedGatewayId !== 'string' || options.expectedGatewayId.length === 0) {
    throw new ClientError('malformed', 'expectedGatewayId is required: the gateway id this agent means to reach (§10.2)');
  }
  if (options.tls === undefined && !isLoopbackAddress(options.gateway)) {
    throw new ClientError('malformed', `refusing plaintext to ${options.gateway}: give tls options (plaintext is for loopback gateways only)`);
  }
  const maxAge = options.revocationMaxAgeMs;
  if (maxAge !== undefined) {
    // It bounds only the list the agent follows itself: anywhere else it would silently bound nothing.
    if (options.registry === undefined || options.revocations !== undefined) {
      throw new ClientError('malformed', 'revocationMaxAgeMs bounds the revocation list followed from `registry`: give `registry` and no `revocations` (a checker given as `revocations` has its own bound)');
    }
    if (!Number.isSafeInteger(maxAge) || maxAge < 1_000) throw new ClientError('malformed', `revocationMaxAgeMs must be an integer of at least 1000, got ${String(maxAge)}`);
  }
  const connectTimeoutMs = options.connectTimeoutMs;
  if (connectTimeoutMs !== undefined && (!Number.isSafeInteger(connectTimeoutMs) || connectTimeoutMs < 0)) {
    throw new ClientError('malformed', `connectTimeoutMs must be a non-negative integer, got ${String(connectTimeoutMs)}`);
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
  /** This agent's identity public key, base64url (the journal's `identity` record). */
  readonly #identityKey: string;
  /** Set when this run's identity key is not the one the state was written under: attached to receipts and SessionRejects (§17.8). */
  #signerCertificate: AgentCertificate | undefined;
  /** When this run's identity key first replaced another (journaled with it), if it did. */
  #rotatedAtMs: number | undefined;
  readonly #lifecycle = new Lifecycle();
  readonly #events: AgentEvents;
  readonly #manager: SessionManager;
  readonly #state: DurableState;
  readonly #link: GatewayLink;
  readonly #outbox: Outbox;
  readonly #inbox: Inbox;
  readonly #handshakes: Handshakes;
  /** A first contact with an agent the gateway never saw: its certificate looked up in the registry (with `registry`). */
  readonly #firstContact: FirstContact;
  /** Journals a fresh snapshot of a session whenever it moved far enough past the last one (§13, §7). */
  readonly #snapshots = new SessionSnapshots(() => this.#manager);
  readonly #app = new Channel<ReceivedMessage>();
  #started = false;
  #tick: NodeJS.Timeout | undefined;
  /** Everything let go of (close(), or a stop for good): set once, by #release. */
  #releasing: Promise<void> | undefined;
  readonly #closeListeners = new Set<(error: ClientError) => void>();
  #memory: MemoryClient | undefined;
  /** What peers' certificates are verified against: the pinned bundle, or a live view of the followed one. */
  readonly #trust: TrustBundle;
  #registry: RegistryFollow | undefined;
  /** The registry's revocation list, followed by this agent (with `registry` and no `revocations`, §8.4). */
  readonly #revocationList: RegistryRevocations | undefined;
  /** With a caller's `revocations`, every second: closes the sessions of peers it now revokes (§8.4). */
  #revocationSweep: NodeJS.Timeout | undefined;
  /** The followed list's kept revocations as the journal had them (compacted as they were when no list is followed). */
  #keptRevocations: KeptRevocations | undefined;

  /** @internal use {@link connect} */
  constructor(crypto: ParleyCrypto, options: ConnectOptions) {
    this.#crypto = crypto;
    // With `registry` and no `revocations`, the agent follows that registry's signed revocation list itself (§8.4,
    // §15.7), and it becomes `revocations` for every part below: handshakes, opened messages, a rotated peer's
    // receipts, shared memory. Heads are verified with the followed trust bundle's keys.
    this.#revocationList =
      options.revocations === undefined && options.registry !== undefined
        ? new RegistryRevocations({
            crypto,
            trustBundle: TrustBundle.live(() => this.#trust),
            ...(options.revocationMaxAgeMs === undefined ? {} : { maxAgeMs: options.revocationMaxAgeMs }),
            registryId: () => options.registry?.registryId ?? this.#registry?.follower.registryId,
            onEvent: (event) => this.#events.emit({ kind: 'revocation_list', event }),
            onRevoked: () => this.#closeRevoked(),
            // With a state store: the version verified and the revocations held outlive a restart (§15.6, no-op without).
            onKept: (kept) => void this.#state.record(keptRecords(kept)).catch(() => undefined),
            onTrustBundleVersion: (version) => this.#registry?.follower.hint(version) ?? Promise.resolve(),
            onUnknownIssuer: async () => void (await this.#registry?.follower.refresh().catch(() => undefined)),
          })
        : undefined;
    if (this.#revocationList !== undefined) options = { ...options, revocations: this.#revocationList };
    this.#options = options;
    this.#identityKey = toBase64Url(options.identity.certificate.identityPublicKey);
    this.#events = new AgentEvents(options.onEvent);
    const emit = this.#events.emit.bind(this.#events);
    const captured = this.#events.captured.bind(this.#events);
    const journal = options.stateStore !== undefined && options.stateKey !== undefined ? new Journal(crypto, options.stateKey, options.stateStore) : undefined;
    this.#state = new DurableState(journal, {
      snapshot: () => this.#snapshot(),
      onFailure: (error) => {
        emit({ kind: 'state_error', error });
        this.#stop(error);
      },
    });
    // Every record that shows a session moving on (a reservation, a sent or a received message) brings the
    // session's fresh snapshot along when it is far enough past the one journaled (session-snapshots.ts).
    const record = (records: JournalRecord[]): Promise<void> => this.#state.record(this.#state.enabled ? this.#snapshots.refresh(records) : records);
    this.#trust = options.registry === undefined ? options.trustBundle : TrustBundle.live(() => this.#registry?.follower.trustBundle ?? options.trustBundle);
    const frameTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
    this.#firstContact = new FirstContact({
      crypto,
      agentId: options.identity.agentId,
      getAgent: options.registry === undefined ? undefined : (agentId) => this.#getAgent(agentId),
      trustBundle: () => this.#trust,
      ...(options.revocations === undefined ? {} : { revocations: options.revocations }),
      refreshTrustBundle: async () => void (await this.#registry?.follower.refresh()),
      emit,
    });
    const transport: FrameTransport = {
      // The gateway's answer to a frame sent while a delivery is handled (a responder's step 2, an initiator's step 3)
      // holds every later delivery behind it: a gateway that never answers must not hold them for good, so each of
      // its answers is awaited at most the handshake timeout (the handshake itself gives up then too). A first
      // contact's registry lookup between two answers is not the gateway's time: it has its own bound
      // (LOOKUP_TIMEOUT_MS, and the trust bundle refresh's call timeout), and holds the handshake's own timeout
      // meanwhile (SessionManager.holdHandshake), so a slow registry neither fails the handshake as a timeout nor
      // lets the second send reach the recipient for a handshake that already gave up.
      sendFrame: async (frame) => {
        const answer = async (certificate: AgentCertificate | undefined) => {
          let timer: NodeJS.Timeout | undefined;
          const late = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new ClientError('deadline_exceeded', `the gateway did not answer a handshake frame within ${frameTimeoutMs} ms`)), frameTimeoutMs);
          });
          try {
            return await Promise.race([this.#link.relay((conn) => conn.sendFrame(frame, certificate)), late]);
          } finally {
            clearTimeout(timer);
          }
        };
        const sessionIdHex = Buffer.from(frame.sessionId).toString('hex'); // as the manager names it
        const hold = (): (() => boolean) | undefined => {
          if (this.#lifecycle.stopped) return undefined;
          const release = this.#manager.holdHandshake(sessionIdHex);
          return release === undefined ? undefined : () => release() && !this.#lifecycle.stopped;
        };
        // A step 1 refused `policy_denied` for a recipient the gateway never saw goes again with its registry certificate.
        const accepted = await this.#firstContact.relay(frame, answer, hold);
        // QUEUED: stored for an offline recipient — a step 1 then waits for its answer while sends wait (§5.4).
        return { queued: accepted.status === DeliveryStatus.QUEUED };
      },
    };
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
      // A first contact whose step 1 the gateway stored for the offline recipient waits for its answer until the
      // latest expiry of the sends waiting for that peer (at most the message lifetime, §5.4).
      queuedHandshakeUntil: (peerId) => this.#outbox.waitingUntil(peerId),
      ...(options.stateKey === undefined ? {} : { stateKey: options.stateKey }),
      ...(options.acceptHandshake === undefined ? {} : { acceptHandshake: options.acceptHandshake }),
      onEvent: (event) => {
        if (event.kind === 'established') this.#firstContact.handshakeOver(event.session.idHex);
        this.#handshakes.onSessionEvent(event);
        this.#events.session(event);
      },
      ...(journal === undefined
        ? {}
        : {
            // Never seal on a counter that is not durably reserved (§13): the manager awaits this first. The session's
            // fresh snapshot, when due, goes in the same append. (Not the manager's onStateChange: it names no
            // session, says nothing of the receive side and exports at every send-epoch change, i.e. every message
            // at threshold 1.)
            reserveCounters: (session: Session, upTo: number) => record([{ t: 'reserve', id: session.idHex, upTo }]),
          }),
    });
    const manager = this.#manager;
    const lifecycle = this.#lifecycle;
    const connection = (): GatewayConnection | undefined => this.#link.current;
    this.#link = new GatewayLink({
      crypto,
      options,
      lifecycle,
      emit,
      onDelivery: (delivery, conn) => this.#onDelivery(delivery, conn),
      onConnected: () => this.#outbox.onConnected(),
      stop: (error) => this.#stop(error),
    });
    const durable = journal !== undefined;
    this.#outbox = new Outbox({ crypto, options, manager, lifecycle, record, durable, emit, connection, trustBundle: () => this.#trust });
    this.#inbox = new Inbox({
      crypto,
      options,
      manager,
      lifecycle,
      record,
      durable,
      emit,
      captured,
      connection,
      deliver: (message) => this.#app.push(message),
      hold: (sessionIdHex, item) => this.#handshakes.hold(sessionIdHex, item),
      signerCertificate: () => this.#signerCertificate,
    });
    this.#handshakes = new Handshakes({
      crypto,
      identity: options.identity,
      manager,
      lifecycle,
      state: this.#state,
      snapshots: this.#snapshots,
      emit,
      captured,
      openEnvelope: (item) => this.#inbox.onEnvelope(item.envelope, item.conn, item.deliveryId),
      signerCertificate: () => this.#signerCertificate,
    });
  }

  /** This agent's id. */
  get agentId(): string {
    return this.#options.identity.agentId;
  }

  /** Whether a gateway stream is up right now. */
  get connected(): boolean {
    return this.#link.connected;
  }

  /**
   * Shared memory on this agent's gateway (docs/PROTOCOL.md §18): `create`, `get`, `read`, `write`,
   * `update`, `grant`, `revoke`, `list`, `segments`. End to end encrypted: the gateway stores ciphertext
   * and enforces membership, and never holds a key. Created on first use; closed with the agent.
   * @throws ClientError `cancelled` after close
   */
  get memory(): MemoryClient {
    this.#lifecycle.assertUsable();
    if (this.#memory === undefined) {
      const o = this.#options;
      const serviceId = this.#link.current?.gatewayId ?? o.expectedGatewayId;
      if (serviceId === undefined) throw new ClientError('unavailable', 'no gateway connection yet: its id names the memory service');
      this.#memory = new MemoryClient({
        crypto: this.#crypto,
        identity: o.identity,
        address: o.gateway,
        serviceId,
        trustBundle: this.#trust,
        ...(o.revocations === undefined ? {} : { revocations: o.revocations }),
        credentials: gatewayCredentials(o.tls),
      });
    }
    return this.#memory;
  }

  /** The session manager (inspection, explicit `session(peerId)`, disclosure of sessions' peers). */
  get sessions(): SessionManager {
    return this.#manager;
  }

  /**
   * Sends waiting for a receipt, including ones restored from the state store: each with its id, recipient,
   * state (`unsealed`: waiting for a session with the recipient — first contact, or a reseal; `sealed`: relayed
   * and resent until its receipt), creation and expiry time.
   */
  pendingSends(): PendingSend[] {
    return this.#outbox.pending();
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

  /**
   * Where the revocation list this agent follows stands (§8.4, §15.7): its version, the follower's state, whether
   * checks answer now (`fresh`; false: they fail closed with `revocation_stale`), the signed time it is fresh as
   * of, the bound and how many revocations it holds. Undefined when the agent follows none (it was given
   * `revocations`, or has no `registry`).
   */
  revocationStatus(): RevocationListStatus | undefined {
    return this.#revocationList?.status();
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
    await this.#restore();
    const registry = this.#options.registry;
    if (registry !== undefined) {
      this.#registry = createRegistryFollow({
        crypto: this.#crypto,
        registry,
        pinned: this.#options.trustBundle,
        state: this.#state,
        emit: (e) => this.#events.emit(e),
        signer: (path, body) => this.#signDirectoryRead(path, body),
      });
      const revocations = this.#revocationList === undefined ? undefined : { list: this.#revocationList, source: this.#registry.client };
      await startFollowing(this.#registry.follower, revocations);
    }
    if (this.#options.revocations === undefined) {
      this.#events.emit({
        kind: 'revocation_unchecked',
        detail: "no `registry` and no `revocations`: this agent checks no peer's revocation itself (only the gateway does); PROTOCOL.md §8.4 requires it",
      });
    } else if (this.#revocationList === undefined) {
      // A checker the caller gave changes unseen: its revocations close sessions within a second (§8.4). The list
      // this agent follows closes them as each batch arrives (onRevoked), with no sweep over every session.
      this.#revocationSweep = setInterval(() => this.#closeRevoked(), 1_000);
      this.#revocationSweep.unref();
    }
    this.#started = true;
    await this.#connectLink();
    this.#tick = setInterval(() => this.#onTick(), 250);
    this.#tick.unref();
  }

  /**
   * Opens the first gateway stream. An answer time fixes, said by the gateway itself (its revocation copy stale,
   * shutting down, busy: {@link isTransientConnectRefusal}), is tried again with the reconnect backoff until
   * `connectTimeoutMs` (default 60 s) — fail closed, recover by itself, as an agent already connected does —,
   * each wait announced by a `connect_retry` event; then the last answer is thrown. Everything else (a verdict on
   * this agent, a connection that could not be made: a wrong address or TLS) is thrown at once.
   */
  async #connectLink(): Promise<void> {
    const { reconnect, connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS } = this.#options;
    const deadline = Date.now() + (reconnect === false ? 0 : connectTimeoutMs);
    for (let attempt = 1; ; attempt++) {
      let failure: ClientError;
      try {
        await this.#link.connect();
        return;
      } catch (error) {
        failure = ClientError.from(error);
      }
      const remainingMs = deadline - Date.now();
      if (this.#lifecycle.stopped || remainingMs <= 0 || !isTransientConnectRefusal(failure)) throw failure;
      // The same "equal jitter" backoff as GatewayLink's reconnection; the last wait ends at the deadline, for one more attempt.
      const delayMs = Math.min(remainingMs, backoffDelayMs(reconnect === false ? undefined : reconnect, attempt));
      this.#events.emit({ kind: 'connect_retry', attempt, delayMs, remainingMs, error: failure });
      await new Promise<void>((resolve) => setTimeout(resolve, delayMs));
      if (this.#lifecycle.stopped) throw this.#lifecycle.fatal ?? failure;
    }
  }

  /**
   * Sends one application message and waits for the recipient's verified receipt
   * — which the recipient signs only after its application acknowledged the message.
   * The message is in the outbox (durably, with a state store) once its first record is written, within this
   * call, before anything of it is sent or the call waits on the network (a crash before that leaves the call
   * unanswered: nothing was promised); sealed once a session exists, relayed again after reconnects and
   * restarts, resealed in a new session if the recipient refuses the session (§17). Its
   * outcome is always exactly one `send_settled` event, whether or not this call still waits.
   * @returns the DeliveryReceipt, its signature verified with the recipient's certified key
   * @throws ClientError: a permanent refusal by the gateway (`policy_denied`, `too_large`, …) or of the
   *   handshake (`revoked`, `unknown_issuer`, … — PROTOCOL §17.2 item 6): not delivered; `expired`: not
   *   delivered within the message's validity; `deadline_exceeded`: not confirmed within `timeoutMs` — the
   *   outbox keeps trying and reports the outcome as a `send_settled` event (never said before the send is
   *   held); refused before the outbox took it (no event): `malformed` (recipient, message type, content,
   *   options of the wrong type), `too_large`, `rate_limited` (too many sends
   *   pending), `cancelled` (agent closed) or the error that stopped the agent. `close()` (or a stop for good)
   *   while the call waits answers once the send's first record is written or failed: written — `cancelled`
   *   (or the stopping error's code) with {@link ClientError.heldSendId} set: the send is held in the state
   *   store, not lost, and a restart with the same state resumes it and reports its outcome as the
   *   `send_settled` event of that id (do not send it again under a new id); not taken (no `heldSendId`) —
   *   `cancelled` / the stopping error, no event; its write failed — that failure (the agent stops, the send's
   *   `send_settled` says the same). Without a state store nothing outlives the process: no `heldSendId`.
   */
  async send(to: string, type: MessageType, content: JsonValue, options: SendOptions = {}): Promise<DeliveryReceipt> {
    this.#lifecycle.assertUsable();
    // The arguments' types, before the outbox takes anything: a refused call sends nothing (no event).
    checkSendArguments(to, type, options);
    const timeoutMs = options.timeoutMs ?? this.#options.sendTimeoutMs ?? 30_000;
    let waiter: SendWaiter | undefined;
    let entry: OutboxEntry | undefined;
    // The send is held once its first record is written (enqueue resolved): only from then on may this call say
    // `deadline_exceeded` — "not confirmed yet, the outbox keeps trying". A timeout that passes while the record
    // is still being written waits for it (or rejects with its failure: then no send exists).
    // A send with the id of a pending one joins it once that one is held.
    const held = (async () => {
      const pending = options.id === undefined ? undefined : this.#outbox.get(options.id);
      if (pending !== undefined) await pending.written;
      entry = pending ?? (await this.#outbox.enqueue(to, type, content, options));
      return entry;
    })();
    held.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    let onClose: ((error: ClientError) => void) | undefined;
    const abort = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        held.then(
          (e) => reject(new ClientError('deadline_exceeded', `no verified receipt from '${to}' within ${timeoutMs} ms (still trying until it expires; its outcome comes as the send_settled event of send id '${e.id}')`)),
          (error: unknown) => reject(ClientError.from(error)),
        );
      }, timeoutMs);
      // close() or a stop for good: said once the first record is written or failed (close waits for it anyway).
      // Held: the send is in the state store and a restart resumes it — the error says so (heldSendId). Not
      // written: the send was not taken (the refusal of a closed store) — `error` itself; its write failed —
      // that failure, the send's outcome (its send_settled says the same).
      onClose = (error) => {
        held.then(
          (e) => {
            if (e.settled === undefined) reject(this.#outbox.endedError(e, error)); // settled: `work` tells the outcome
          },
          (failure: unknown) => reject(isStateClosedRefusal(failure) ? error : ClientError.from(failure)),
        );
      };
      this.#closeListeners.add(onClose);
    });
    const work = held.then(
      (e) =>
        new Promise<DeliveryReceipt>((resolve, reject) => {
          waiter = { resolve, reject };
          this.#outbox.attach(e, waiter); // at once if it ended already (a handshake refused before this call got here)
        }),
    );
    // When the timeout wins, the send goes on in the outbox: its outcome arrives as its send_settled event.
    work.catch(() => undefined);
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
   * One consumer. Acknowledge each with `await msg.ack()`. Ends as soon as `close()` is called (a message
   * not handed over yet stays in the state store: handed over again after a restart); throws the ClientError
   * that stopped the agent for good otherwise, once the agent released everything (the state file is free).
   */
  messages(): AsyncIterable<ReceivedMessage> {
    return { [Symbol.asyncIterator]: () => this.#messages() };
  }

  /** The application's messages; none once the agent closes or stops (their acks would fail: handed over again after a restart). */
  async *#messages(): AsyncGenerator<ReceivedMessage> {
    for await (const message of this.#app) {
      if (this.#lifecycle.stopped) break;
      yield message;
    }
    const fatal = this.#lifecycle.fatal;
    if (fatal !== undefined) {
      await this.#releasing?.catch(() => undefined); // thrown once everything is released (the state file free)
      throw fatal;
    }
  }

  /**
   * Closes every session and the stream, releases the state store (its lock) and every timer, follower and
   * channel; pending sends stay in the state store for the next run — a `send()` still waiting rejects `cancelled`
   * once its first record is written, with `heldSendId` when the send is held there (see {@link send}), and a
   * send whose first record is still being written is waited for (written: held; failed: not in the store).
   * Nothing is written after close() resolves (the store is closed for good, its lock free). `messages()` ends at once: nothing more is
   * handed over (its ack would fail). After the agent stopped for good by itself it released all that already;
   * close() then only waits for that to finish.
   */
  async close(): Promise<void> {
    if (this.#lifecycle.closed) return this.#release();
    this.#lifecycle.closed = true;
    this.#app.end(); // a consumer waiting in messages() ends now; what the inbox still hands over is dropped
    const error = new ClientError('cancelled', 'agent closed');
    for (const listener of this.#closeListeners) listener(error);
    this.#closeListeners.clear();
    this.#link.rejectWaiters(error);
    this.#outbox.rejectWaiters(error);
    await this.#release();
  }

  /**
   * Lets go of everything the agent holds, once: timers, the gateway stream and its channel, the registry
   * followers and their streams, shared memory, the sessions — after saving what must outlive the process
   * (the messages recorded handed over, a compact journal; never over state that failed) — and last the state
   * store, whose lock it releases. Run by close(), and by a stop for good (#stop): a program like the README's
   * then ends by itself, and a restart with the same state file opens it at once.
   */
  #release(): Promise<void> {
    this.#releasing ??= (async () => {
      this.#link.wake();
      if (this.#tick !== undefined) clearInterval(this.#tick);
      if (this.#revocationSweep !== undefined) clearInterval(this.#revocationSweep);
      // The sends whose first record is on its way: written (held, in the snapshot below) or failed (forgotten,
      // not in it) before the compaction — bounded, the store is waited for anyway.
      await this.#outbox.firstRecords();
      if (this.#started && this.#state.healthy) {
        await this.#inbox.handedOver().catch(() => undefined);
        await this.#state.compact().catch(() => undefined); // fresh snapshots; never over state that failed to load
      }
      await this.#follower?.close().catch(() => undefined);
      await this.#revocationList?.close().catch(() => undefined);
      this.#registry?.client.close();
      this.#manager.close();
      this.#memory?.close();
      this.#link.close();
      await this.#state.close();
    })();
    return this.#releasing;
  }

  /**
   * The recipient lookup of a first contact (§15.3): `GetAgent` signed as this agent — a registry takes an agent's
   * own signed directory read whatever its `directory_reads` setting.
   * @throws ClientError the registry's code; `unavailable` while the registry's id is not known yet (it never answered)
   */
  async #getAgent(agentId: string): Promise<Awaited<ReturnType<RegistryFollow['client']['getAgent']>>> {
    const registry = this.#registry;
    if (registry === undefined || this.#registryId() === undefined) throw new ClientError('unavailable', 'the registry has not answered yet: its id, which an agent request signs, is not known');
    try {
      return await registry.client.getAgent({ agentId }, { timeoutMs: LOOKUP_TIMEOUT_MS });
    } catch (error) {
      throw ClientError.from(error);
    }
  }

  /** The agent request signature of a GetAgent call (§15.3); nothing for every other call (they are open reads). */
  #signDirectoryRead(path: string, body: Uint8Array): Record<string, string> | undefined {
    const registryId = this.#registryId();
    if (path !== GET_AGENT_PATH || registryId === undefined) return undefined;
    const { identity } = this.#options;
    return signAgentRequest(this.#crypto, { agentId: identity.agentId, serial: identity.certificate.serial, secretKey: identity.signingKey }, { registryId, path, body });
  }

  #registryId(): Uint8Array | undefined {
    return this.#options.registry?.registryId ?? this.#registry?.follower.registryId;
  }

  get #follower(): TrustBundleFollower | undefined {
    return this.#registry?.follower;
  }

  /** Closes every session whose peer the revocation data now revokes (§8.4), each reported as a security event. */
  #closeRevoked(): void {
    const checker = this.#options.revocations;
    if (checker === undefined || this.#lifecycle.stopped) return;
    closeRevokedSessions(this.#manager, checker, (event) => this.#events.emit(event));
  }

  /** Replays the saved state (sessions with their replay marks, sends, unacknowledged messages), then compacts. */
  async #restore(): Promise<void> {
    const state = await this.#state.load();
    if (state === undefined) return; // no store
    this.#keptRevocations = keptFromJournal(state);
    if (this.#keptRevocations !== undefined) this.#revocationList?.restore(this.#keptRevocations);
    // Started with another identity key than the state was written under: the key was rotated (§17.8). The
    // sessions are not restored — the peers hold them under the old certificate, which no longer stands, and
    // nothing sealed or signed with the new key would verify in them — and every receipt and SessionReject this
    // agent signs carries its certificate, so that peers still in those sessions can verify them.
    const rotated = state.identityKey !== undefined && state.identityKey !== this.#identityKey;
    // Replies carry the certificate for a session lifetime after the rotation (and at least a message lifetime),
    // across restarts: peers may go on sending in their old sessions that long, and each such envelope needs a
    // reject they can verify.
    this.#rotatedAtMs = rotated ? Date.now() : state.identityKey === this.#identityKey ? state.rotatedAtMs : undefined;
    const attachFor = Math.max(maxAgeMs(this.#options), (this.#options.timeouts?.maxDurationMinutes ?? DEFAULT_TIMEOUTS.maxDurationMinutes) * 60_000);
    if (this.#rotatedAtMs !== undefined && Date.now() - this.#rotatedAtMs < attachFor) this.#signerCertificate = this.#options.identity.certificate;
    for (const [id, s] of rotated ? [] : state.sessions) {
      let session: Session;
      try {
        session = this.#manager.restore(fromBase64Url(s.sealed), s.reservedUpTo);
      } catch (error) {
        throw ClientError.from(error);
      }
      for (const m of state.marks.get(id) ?? []) session.markAccepted(m.n, fromHex(m.hash));
    }
    this.#outbox.restore(state);
    this.#inbox.restore(state);
    // Start the new run from a compact journal (drops a torn tail and settled records).
    await this.#state.compact();
  }

  /** The journal records of the live state: session snapshots and reservations, pending sends, messages and receipts. */
  #snapshot(): JournalRecord[] {
    const records: JournalRecord[] = [{ t: 'identity', key: this.#identityKey, ...(this.#rotatedAtMs === undefined ? {} : { rotatedAtMs: this.#rotatedAtMs }) }];
    for (const session of this.#manager.sessions()) {
      records.push(this.#snapshots.take(session));
      const reserved = this.#manager.reservedUpTo(session);
      if (reserved !== undefined) records.push({ t: 'reserve', id: session.idHex, upTo: reserved });
    }
    records.push(...this.#outbox.records(), ...this.#inbox.records());
    records.push(...keptRecords(this.#revocationList?.kept() ?? this.#keptRevocations));
    return records;
  }

  /** Every 250 ms: expire, resend what got no receipt, seal what is not sealed; forget old receipts. */
  #onTick(): void {
    if (this.#lifecycle.stopped) return;
    const now = Date.now();
    this.#outbox.onTick(now, this.connected);
    this.#inbox.retryDeferred();
    this.#inbox.pruneReceipts(now);
  }

  /** One delivery, in order; only a handshake frame returns a promise (the next delivery waits for it). */
  #onDelivery(delivery: Delivery, conn: GatewayConnection): void | Promise<void> {
    if (this.#lifecycle.stopped) return; // not acked: the gateway keeps it
    const item = delivery.item;
    const ack = (): void => conn.ack(delivery.deliveryId);
    switch (item.case) {
      case 'handshake':
        return this.#handshakes.onFrame(item.value, ack);
      case 'envelope':
        this.#inbox.onEnvelope(item.value, conn, delivery.deliveryId);
        return;
      case 'receipt':
        this.#outbox.onReceipt(item.value);
        ack();
        return;
      case 'sessionReject':
        this.#outbox.onSessionReject(item.value);
        ack();
        return;
      default:
        ack();
        return;
    }
  }

  /**
   * Stops for good (a go-away `revoked`/`expired`/`replaced`, a verdict at reconnection, a state store that
   * failed): pending and future operations fail with `error`; then everything is released as close() would
   * (#release) and `messages()` throws `error` — by then the state file is free for a restart.
   */
  #stop(error: ClientError): void {
    if (this.#lifecycle.stopped) return; // closed (close() releases) or stopped already
    this.#lifecycle.fatal = error;
    this.#link.rejectWaiters(error);
    for (const listener of this.#closeListeners) listener(error);
    this.#closeListeners.clear();
    this.#outbox.rejectWaiters(error);
    this.#link.current?.close();
    // Before connect() returned, it closes the agent itself (and so releases everything) when start() fails.
    if (this.#started) void this.#release().finally(() => this.#app.fail(error));
    else this.#app.fail(error);
  }
}

export type { SecurityEvent };
