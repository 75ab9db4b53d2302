/**
 * The agent SDK's public option, message and event types (docs/PROTOCOL.md §10, §13, §15.9, §17):
 * what `connect()` takes, what `send()` and `messages()` give, and what `onEvent` receives.
 */
import type { ParleyCrypto, SecretKey } from '@parley/crypto-core';
import type { RevocationChecker, TrustBundle } from '@parley/identity';
import type { AgentCertificate, DeliveryReceipt, JsonValue, MessagePayload, MessageType, SecureMessage } from '@parley/proto';
import type { Disclosure, LocalIdentity, SessionManagerEvent, SessionTimeouts, SkewLimits } from '@parley/session';
import type { TrustBundleFollowerEvent } from '@parley/protocol';
import type { ClientError } from './errors.js';
import type { DirectorySecurityEvent, FirstContactLookupEvent } from './first-contact.js';
import type { RevocationListEvent, RevocationSecurityEvent } from './revocation-follow.js';
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
  /**
   * Revocation data checked for every peer at the handshake and for every message opened (§8.4, §17.5); a peer
   * it comes to revoke has its sessions closed within a second. Default: with `registry`, that registry's signed
   * revocation list, followed by the agent (a revocation closes the peer's sessions as it arrives; see
   * `revocationMaxAgeMs`); without `registry`, none — the agent checks no revocation itself (only the gateway
   * does) and says so at connect with a `revocation_unchecked` event.
   */
  readonly revocations?: RevocationChecker;
  /**
   * With `registry` and no `revocations`: the freshness bound of the followed revocation list, ms, measured from
   * its newest signed head (§15.6 `issued_at_ms`). Older data refuses every handshake and message with
   * `revocation_stale` (fail closed: a message stays unacked at the gateway and is tried again) until a fresh
   * head arrives. Default 60 000; at least 1 000. Refused (`malformed`) in any other configuration.
   */
  readonly revocationMaxAgeMs?: number;
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
  /** Backoff when the stream drops, and between `connect`'s attempts; `false`: no reconnection (and one attempt). Default 100 ms .. 10 s. */
  readonly reconnect?: false | { readonly initialDelayMs?: number; readonly maxDelayMs?: number };
  /**
   * How long `connect` keeps trying, ms, while the gateway answers what time fixes: its revocation copy is stale
   * (`revocation_stale`, e.g. its registry is down), it is shutting down (a go-away `shutting_down`, reported as
   * `unavailable`) or busy (`unavailable`, `rate_limited`) — each said by the gateway itself (a go-away, or the Connect call's status carrying the
   * gateway's code), never a connection that could not be made (a wrong address, refused, TLS): that rejects at
   * once, as does every verdict on this agent (`revoked`, `bad_certificate`, `unknown_issuer`, …). Attempts
   * follow the `reconnect` backoff, each announced by a `connect_retry` event; at the deadline `connect` rejects
   * with the last answer. Default 60 000; 0 (or `reconnect: false`): one attempt.
   */
  readonly connectTimeoutMs?: number;
  /** Default per-send timeout, ms: `send()` rejects with `deadline_exceeded` (the outbox keeps trying). Default 30 000. */
  readonly sendTimeoutMs?: number;
  /** A send relayed live with no receipt is resent after this long, doubling up to 60 s. Default 5 000. */
  readonly resendIntervalMs?: number;
  /**
   * Handshake timeout, ms. Default 10 000. A first contact whose step 1 the gateway stored for an offline
   * recipient (`QUEUED`) waits for its answer longer: while sends to that peer wait, at most the message
   * lifetime (PROTOCOL §5.4).
   */
  readonly handshakeTimeoutMs?: number;
  /** Gateway authentication timeout per attempt, ms. Default 10 000. */
  readonly authTimeoutMs?: number;
  /**
   * HTTP/2 keepalive PING interval to the gateway, ms: a gateway or a network path that goes silent behind an
   * open connection is noticed within this plus 10 s (an unanswered PING drops the connection and the agent
   * reconnects). Default 20 000; at least 1 000.
   */
  readonly keepaliveMs?: number;
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
   * An idempotency key (1..128 printable ASCII), while that send is pending: a send with the id of a send still
   * in the outbox — before or after a restart — waits for that one's receipt instead of sending again. Once it
   * settled (`send_settled`) the id is forgotten, and the same id sends a new message: a program that re-runs its
   * sends after a crash keeps its own record of the settled ids (`pendingSends()` lists the pending ones).
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
 * - `connect_retry`: `connect` got an answer time fixes (`revocation_stale`, a go-away `shutting_down`, …) and tries again
 *   after `delayMs` (it gives up `remainingMs` from now);
 * - `state_error`: saving agent state failed — the agent stops (fail closed);
 * - `trust_bundle`: the followed trust bundle was restored, updated, or a version was refused (with `registry`);
 * - `revocation_list`: the followed revocation list was loaded, brought revocations, became unreachable or was
 *   refused, went stale (every check fails closed) or fresh again (with `registry` and no `revocations`);
 * - `security` with stage `revocation`: a session closed because the agent's revocation data now revokes its peer;
 * - `security` with stage `directory`: the certificate the registry returned for a first contact's recipient (an agent
 *   the gateway never saw) does not verify against the agent's trust bundle; the sends to it fail `policy_denied`;
 * - `first_contact`: a first contact's registry lookup of `peerId` failed in a way time fixes (`code`: the registry
 *   unreachable `unavailable`, `rate_limited`, the agent's revocation data `revocation_stale`, …): the sends to that
 *   peer wait and the lookup is tried again on their backoff (with `registry`);
 * - `revocation_unchecked`: once at connect, when the agent has no revocation data (no `registry`, no `revocations`).
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
  | { readonly kind: 'connect_retry'; readonly attempt: number; readonly delayMs: number; readonly remainingMs: number; readonly error: ClientError }
  | { readonly kind: 'state_error'; readonly error: ClientError }
  | { readonly kind: 'trust_bundle'; readonly event: TrustBundleFollowerEvent }
  | RevocationSecurityEvent
  | DirectorySecurityEvent
  | FirstContactLookupEvent
  | { readonly kind: 'revocation_list'; readonly event: RevocationListEvent }
  | { readonly kind: 'revocation_unchecked'; readonly detail: string };

/** How long a message stays valid (the skew's `maxAgeMs`): it bounds retries of a send and the receipts kept. */
export function maxAgeMs(options: ConnectOptions): number {
  return options.skew?.maxAgeMs ?? 3_600_000;
}

/** The first resend interval of a send relayed live with no receipt (doubles up to 60 s). */
export function resendBaseMs(options: ConnectOptions): number {
  return Math.max(50, options.resendIntervalMs ?? 5_000);
}
