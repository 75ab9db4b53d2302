/**
 * Routing (docs/PROTOCOL.md §10.3, §17.6): the checks every relayed item
 * passes after authentication — shape, sender, size, rate, route and policy
 * (replies only to what went the other way; a recipient the gateway holds no
 * certificate of is judged by the registry-issued one its sender introduced, verified
 * and then remembered), an envelope's signature — in that order, then
 * the relay decision:
 * - live recipient with a free slot and no backlog: its audit entry is
 *   group-committed (awaited: nothing is relayed unaudited), then it is written
 *   to the stream and held in memory until acked (./delivery.ts) — no mailbox write;
 * - recipient connected to another live instance: the same, except that the item
 *   is forwarded to that instance (a notification sent with its audit entry; for an
 *   item without one, with the next group of audit entries, ./cluster.ts), which
 *   writes it to the stream — no mailbox write either;
 * - otherwise: quota check, audit entry (group commit; an item whose entry
 *   cannot be written is refused), and only then the mailbox insert (group
 *   commit: a committed row can be delivered at once, so it never exists
 *   before its entry), then the recipient's stream drains it, or another
 *   instance is woken (batched NOTIFY, ./storage.ts), or it waits.
 * Receipts and SessionRejects get no audit entry of their own: they are the
 * recipient's signed answers to an audited envelope, re-derivable end to end (§17.1).
 * The gateway holds no session key: it sees headers, never plaintext.
 */
import { toHex } from '@parley/crypto-core';
import type { AuditLog, AuditNotification } from '@parley/audit';
import { MAX_CERTIFICATE_BYTES, encodeCertificate, verifyCertificate } from '@parley/identity';
import { DeliveryStatus, MessageType, type AgentCertificate, type DeliveryReceipt, type Outbound, type SendRequest, type SessionReject } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import { SESSION_ID_BYTES, assertEnvelopeShape, assertFrameShape, isAgentId, messageHashOf, verifyEnvelopeDigestWith, type EnvelopeDigest } from '@parley/session';
import type { Accepted } from './accepted.js';
import type { GatewayContext, Sender } from './context.js';
import type { RevocationChecker, VerifiedCertificate } from '@parley/identity';
import type { Delivery } from './delivery.js';
import { ITEM_HASH_BYTES, SIGNATURE_BYTES, itemDigest, type RelayItem } from '@parley/protocol';
import type { ReplyGuard } from './reply-guard.js';
import type { Storage } from './storage.js';
import { encodeForward, forwardChannel } from './cluster.js';
import { encodeItem } from './mailbox.js';
import { Policy, type PolicySubject } from './policy.js';
import { RateLimiter, type RateLimitOptions } from '@parley/rpc';

/** Where an item came in, for the security log and metrics. */
export interface RouteSource {
  readonly requestId?: bigint;
  readonly stage: string;
}

/** The outcome of a routed item: its hash (§10.3) and whether it was written to a live stream. */
export interface Routed {
  readonly itemHash: Uint8Array;
  readonly status: DeliveryStatus;
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
  assertSignerCertificateShape(r.signerCertificate, 'receipt');
}

/** A reply's `signer_certificate` (§17.8), when present: a well-formed certificate of at most 4096 bytes encoded. */
function assertSignerCertificateShape(cert: DeliveryReceipt['signerCertificate'], what: string): void {
  if (cert === undefined) return;
  let size: number;
  try {
    size = encodeCertificate(cert).length;
  } catch {
    return reject('malformed', `${what} signer_certificate is not a well-formed certificate`);
  }
  if (size > MAX_CERTIFICATE_BYTES) reject('malformed', `${what} signer_certificate exceeds ${MAX_CERTIFICATE_BYTES} bytes`);
}

/** The checks of the session-reject shape (§17.4): version, lengths, ids, time range. */
function assertSessionRejectShape(r: SessionReject): void {
  if (r.version !== 1) reject('unsupported_version', `session reject version ${r.version} is not supported`);
  if (r.sessionId.length !== SESSION_ID_BYTES) reject('malformed', `session reject session_id must be ${SESSION_ID_BYTES} bytes`);
  if (r.messageHash.length !== ITEM_HASH_BYTES) reject('malformed', `session reject message_hash must be ${ITEM_HASH_BYTES} bytes`);
  if (r.signature.length !== SIGNATURE_BYTES) reject('malformed', `session reject signature must be ${SIGNATURE_BYTES} bytes`);
  if (!isAgentId(r.senderId) || !isAgentId(r.recipientId)) reject('malformed', 'session reject agent ids are not valid');
  if (r.senderId === r.recipientId) reject('malformed', 'session reject sender and recipient are the same agent');
  if (r.rejectedAtMs < 0n || r.rejectedAtMs > BigInt(Number.MAX_SAFE_INTEGER)) reject('malformed', 'session reject rejected_at_ms out of range');
  assertSignerCertificateShape(r.signerCertificate, 'session reject');
}

/**
 * Shape checks of an item, before anything else (§10.3 step 1).
 * @throws RpcError `malformed` or `unsupported_version`
 */
export function assertItemShape(item: Outbound['item'] | SendRequest['item']): RelayItem {
  try {
    // Fields version 1 does not define are covered by no signature or digest: relayed, they would be bytes a sender
    // adds at will (past the size estimates of batches, outside the audited item hash). Refused.
    const unknown = (item.value as { $unknown?: readonly unknown[] } | undefined)?.$unknown;
    if (unknown !== undefined && unknown.length > 0) reject('malformed', `${item.case ?? 'item'} carries fields version 1 does not define`);
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
      case 'sessionReject':
        assertSessionRejectShape(item.value);
        return item;
      default:
        return reject('malformed', 'no item to relay');
    }
  } catch (error) {
    throw RpcError.from(error);
  }
}

/** Authenticated Connect streams per agent: sustained and burst (a restart loop, a flapping network stay within it). */
export const CONNECT_RATE = { ratePerSecond: 2, burst: 20 } as const;

/**
 * The security-event stage of a refused `recipient_certificate` (§10.3 step 5): a certificate the sender attached for
 * its addressee, not the sender's own — so an alert on (`stage`, `code`) or on `agent` for the sender's certificate
 * being refused (`send`/`outbound`, `revoked`) never fires for an honest sender that introduced a revoked recipient.
 */
export const RECIPIENT_CERTIFICATE_STAGE = 'recipient_certificate';

/** The certificate named by a recipient_certificate refusal's security event (`certificate_agent`, `certificate_serial`). */
interface RecipientCertificateRefusal {
  /** The agent id it names, when it is one. */
  readonly agentId?: string;
  /** Its serial, when 16 bytes. */
  readonly serial?: Uint8Array;
}

/** What a sender is told when the route is refused (§10.3 step 5), whether or not the addressee exists. */
const ROUTE_DENIED = 'the route to this recipient is not allowed';

/**
 * Checks an item's `recipient_certificate` (§10.3 step 5, first contact), read only when the gateway holds no
 * certificate of the addressee `to`: at most {@link MAX_CERTIFICATE_BYTES} encoded and well-formed, then §3.3 with
 * the gateway's trust bundle, now, and the FULL revocation checker — not the serial-only relaxation of stored
 * certificates (Router#offline): a sender gets the current certificate from the registry, so a superseded or
 * revoked one has no business here —, and it must be a certificate of `to`.
 * @returns the verified certificate
 * @throws RpcError with the certificate's own code (`malformed`, `unsupported_version`, `unknown_issuer`,
 *   `bad_certificate`, `not_yet_valid`, `expired`, `identity_mismatch`, `revoked`, `revocation_stale`): the peer
 *   line speaks of the supplied certificate only; `localDetails` is the full reason, for the security log
 */
export function verifyRecipientCertificate(
  ctx: Pick<GatewayContext, 'crypto' | 'trustBundle' | 'revocations'>,
  certificate: AgentCertificate,
  to: string,
  nowMs: number,
): VerifiedCertificate {
  const refused = (error: unknown, answer?: string): never => {
    const e = RpcError.from(error);
    throw new RpcError(e.code, `recipient_certificate refused: ${answer ?? e.details}`, { cause: error, localDetails: `recipient_certificate refused: ${e.localDetails}` });
  };
  let encoded: Uint8Array;
  try {
    encoded = encodeCertificate(certificate); // its fields and version, no unknown fields, at most MAX_CERTIFICATE_BYTES
  } catch (error) {
    return refused(error, `not a well-formed certificate of at most ${MAX_CERTIFICATE_BYTES} bytes`);
  }
  if (encoded.length > MAX_CERTIFICATE_BYTES) return refused(new RpcError('malformed', `recipient_certificate exceeds ${MAX_CERTIFICATE_BYTES} bytes`));
  try {
    return verifyCertificate(ctx.crypto, certificate, { trustBundle: ctx.trustBundle, nowMs, revocations: ctx.revocations, expectedAgentId: to });
  } catch (error) {
    return refused(error, RpcError.from(error).code === 'identity_mismatch' ? "not a certificate of the item's recipient" : undefined);
  }
}

/** The agent an item must come from (the authenticated one), and the agent it goes to. */
function routeOf(item: RelayItem): { from: string; to: string } {
  switch (item.case) {
    case 'handshake':
    case 'envelope':
      return { from: item.value.senderId, to: item.value.recipientId };
    case 'receipt':
    case 'sessionReject':
      // Signed by the envelope's recipient, addressed to the envelope's sender.
      return { from: item.value.recipientId, to: item.value.senderId };
  }
}

/** An envelope's checks started before its turn (Router#early). */
type Early =
  | { readonly item: RelayItem; readonly charged: false; readonly digest?: undefined; readonly verified?: undefined }
  | { readonly item: RelayItem; readonly charged: true; readonly digest: EnvelopeDigest; readonly verified: Promise<boolean> };

/** Settings of the {@link Router}. */
export interface RouterOptions {
  readonly policy: Policy;
  /** Per-agent item bucket. */
  readonly rateLimit: Omit<RateLimitOptions, 'clock'>;
  /** Per-agent byte bucket (encoded item bytes). */
  readonly byteRateLimit: Omit<RateLimitOptions, 'clock'>;
  /** Handshake step 1 per (initiator, responder) pair. */
  readonly handshakeRateLimit: Omit<RateLimitOptions, 'clock'>;
  readonly verifySignatures: boolean;
  /** The Ed25519 check of step 6 (a crypto-core VerifyPool's: off the event loop). */
  readonly verify: (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array) => Promise<boolean>;
  readonly audit: AuditLog;
  readonly delivery: Delivery;
  readonly storage: Storage;
  readonly replies: ReplyGuard;
}

/** Offline recipients' certificates, verified once, checked for validity and revocation at each use. */
const DIRECTORY_CACHE_MS = 30_000;
const DIRECTORY_CACHE_ENTRIES = 10_000;

/** A cached directory lookup (#offline). */
interface DirectoryEntry {
  /** The certificate that verified; undefined: none stored, or none that verifies ("never seen"). */
  readonly cert: VerifiedCertificate | undefined;
  readonly atMs: number;
  /**
   * Another instance was known to hold the agent's stream when the lookup began (so its row, written in the
   * statement that announced it, was read). A "never seen" entry read before that is not trusted once one is.
   */
  readonly holderKnown: boolean;
}

/** The §10.3 checks and the relay decision, shared by the Connect stream and unary Send. */
export class Router {
  readonly #ctx: GatewayContext;
  readonly #limiter: RateLimiter;
  /** Unary Sends per agent (the item rate), taken before a Send's nonce is written (a row per Send). */
  readonly #unarySends: RateLimiter;
  readonly #bytes: RateLimiter;
  readonly #handshakes: RateLimiter;
  /** Authenticated streams per agent ({@link CONNECT_RATE}). */
  readonly #connects: RateLimiter;
  readonly #verifySignatures: boolean;
  readonly #verify: RouterOptions['verify'];
  readonly #audit: AuditLog;
  readonly #delivery: Delivery;
  readonly #storage: Storage;
  readonly #replies: ReplyGuard;
  readonly #directory = new Map<string, DirectoryEntry>();
  /**
   * The revocation check of stored certificates (#offline): a certificate revoked by its serial alone (the agent id
   * is not) still routes (§17.8).
   */
  readonly #seenRevocations: RevocationChecker;
  #policy: Policy;

  constructor(ctx: GatewayContext, options: RouterOptions) {
    this.#ctx = ctx;
    this.#seenRevocations = {
      check: (subject, nowMs) => {
        const status = ctx.revocations.check(subject, nowMs);
        return status.revoked && status.by === 'serial' ? { revoked: false } : status;
      },
    };
    this.#policy = options.policy;
    this.#limiter = new RateLimiter({ ...options.rateLimit, clock: ctx.clock });
    this.#unarySends = new RateLimiter({ ...options.rateLimit, clock: ctx.clock });
    this.#bytes = new RateLimiter({ ...options.byteRateLimit, clock: ctx.clock });
    this.#handshakes = new RateLimiter({ ...options.handshakeRateLimit, clock: ctx.clock });
    this.#connects = new RateLimiter({ ...CONNECT_RATE, clock: ctx.clock });
    this.#verifySignatures = options.verifySignatures;
    this.#verify = options.verify;
    this.#audit = options.audit;
    this.#delivery = options.delivery;
    this.#storage = options.storage;
    this.#replies = options.replies;
  }

  /**
   * One unary Send of an authenticated agent, charged before its nonce is written (§10.6): the nonce table
   * holds a row per Send for minutes, so its growth per agent is bounded by this rate, not by how fast the
   * gateway can verify. Its item is charged again as any item when it is routed (§10.3 step 4).
   */
  takeUnarySend(agentId: string): boolean {
    return this.#unarySends.take(agentId);
  }

  /**
   * One authenticated Connect stream of an agent, charged before its directory row is written and its mailbox
   * counted (§10.2): an agent reconnecting in a loop would otherwise cost two statements per stream at network speed.
   */
  takeConnect(agentId: string): boolean {
    return this.#connects.take(agentId);
  }

  /** Swaps in a new routing policy; applies to the next item checked. */
  setPolicy(policy: Policy): void {
    this.#policy = policy;
  }

  /** Drops idle rate-limit buckets, expired reply entries and stale directory entries. */
  sweep(): void {
    this.#limiter.sweep();
    this.#unarySends.sweep();
    this.#bytes.sweep();
    this.#handshakes.sweep();
    this.#connects.sweep();
    this.#replies.sweep();
    const old = this.#ctx.clock() - DIRECTORY_CACHE_MS;
    for (const [k, v] of this.#directory) if (v.atMs < old) this.#directory.delete(k);
  }

  /**
   * Routes one item, with metrics: latency, routed by kind and status, rejected by code.
   * `recipientCertificate`: the item's `recipient_certificate` (Outbound, SendRequest), read only when the gateway
   * holds no certificate of the addressee (§10.3 step 5); otherwise ignored, unverified.
   * @throws RpcError with the stable code of the first failing check (already logged)
   */
  async route(sender: Sender, rawItem: Outbound['item'] | SendRequest['item'], size: number, where: RouteSource, recipientCertificate?: AgentCertificate): Promise<Routed> {
    const metrics = this.#ctx.metrics;
    const stop = metrics.latency.startTimer();
    try {
      const result = await this.#route(sender, rawItem, size, where, recipientCertificate);
      stop();
      metrics.routed.inc({ kind: rawItem.case ?? 'none', status: result.status === DeliveryStatus.DELIVERED ? 'delivered' : 'queued' });
      if (rawItem.case === 'handshake') metrics.handshakes.inc({ step: String(rawItem.value.step) });
      return result;
    } catch (error) {
      metrics.rejected.inc({ code: RpcError.from(error).code });
      throw error;
    }
  }

  /**
   * The certificate of an offline recipient: its last one seen, if that still verifies now. A certificate revoked
   * by its serial alone (the agent id is not) still routes (§17.8): an agent whose key was rotated (its old
   * certificate superseded) or re-issued is offline until it connects with its new certificate, and what is sent
   * to it meanwhile waits in the mailbox; an agent id revoked refuses, as one never seen.
   */
  async #offline(agentId: string): Promise<VerifiedCertificate | undefined> {
    const ctx = this.#ctx;
    const now = ctx.clock();
    const entry = this.#directory.get(agentId);
    // A "never seen" entry is not trusted while the cluster knows an instance holding the agent's stream, unless it
    // was read when that was already known (§10.8): its presence announcement drops the entry (Cluster.onConnected),
    // but one cached by a lookup that overlapped the announcement would otherwise stand for up to 30 s.
    const stale = entry !== undefined && entry.cert === undefined && !entry.holderKnown && ctx.cluster?.holder(agentId) !== undefined;
    if (entry === undefined || now - entry.atMs > DIRECTORY_CACHE_MS || stale) {
      const holderKnown = ctx.cluster?.holder(agentId) !== undefined;
      const certificate = await ctx.mailbox.lastCertificate(agentId);
      return this.#cache(agentId, certificate === undefined ? undefined : this.#verifiesAsSeen(certificate, agentId, now), now, holderKnown).cert;
    }
    const cert = entry.cert;
    if (cert === undefined || now >= cert.validUntilMs || now < cert.validFromMs) return undefined;
    try {
      return this.#seenRevocations.check({ agentId, serial: cert.serial }, now).revoked ? undefined : cert;
    } catch {
      return undefined;
    }
  }

  /** A stored certificate of `agentId` verified as #offline does (serial-only revocation relaxed); undefined when it does not verify. */
  #verifiesAsSeen(certificate: AgentCertificate, agentId: string, now: number): VerifiedCertificate | undefined {
    const ctx = this.#ctx;
    try {
      const cert = verifyCertificate(ctx.crypto, certificate, { trustBundle: ctx.trustBundle, nowMs: now, revocations: this.#seenRevocations });
      return cert.agentId === agentId ? cert : undefined;
    } catch {
      return undefined; // revoked, expired, or no longer trusted: treated like a never-seen agent
    }
  }

  /** Records a directory entry (bounded: the oldest goes first). */
  #cache(agentId: string, cert: VerifiedCertificate | undefined, now: number, holderKnown = false): DirectoryEntry {
    const entry: DirectoryEntry = { cert, atMs: now, holderKnown };
    this.#directory.delete(agentId); // re-inserted last: the newest entry is the last one evicted
    this.#directory.set(agentId, entry);
    if (this.#directory.size > DIRECTORY_CACHE_ENTRIES) this.#directory.delete(this.#directory.keys().next().value!);
    return entry;
  }

  /**
   * Remembers a certificate a sender introduced for a recipient the gateway held none of (§10.3 step 5):
   * stored as its last certificate (`gateway_agents`: inserted, or replacing a stored one that no longer verifies
   * — never one that does, which the agent presented itself or another sender introduced meanwhile: the agent's
   * own connect always wins, it upserts its row), its presence untouched; and cached here, so the next item is
   * not verified again. A failed write is logged, not refused: the item was checked in full, and a later item
   * without the certificate then finds none, as before. `introducer`: the sender's certificate, named in the log line.
   */
  async #remember(agentId: string, cert: VerifiedCertificate, certificate: AgentCertificate, introducer: VerifiedCertificate): Promise<void> {
    const ctx = this.#ctx;
    try {
      // Read again, not from the cache: the agent may have connected (on any instance) since #offline looked.
      const stored = await ctx.track(ctx.mailbox.lastCertificate(agentId));
      if (stored !== undefined && this.#verifiesAsSeen(stored, agentId, ctx.clock()) !== undefined) {
        this.#directory.delete(agentId); // the next item reads that one
        return;
      }
      if (!(await ctx.track(ctx.mailbox.rememberCertificate(certificate, stored)))) {
        this.#directory.delete(agentId); // written meanwhile by someone else: the next item reads it
        return;
      }
    } catch (error) {
      ctx.log.warn({ err: error, agent: introducer.agentId, peer: agentId }, 'recording an introduced certificate failed');
      return;
    }
    // `agent` and `serial` name the sender who introduced it (the actor, as in security lines); the certificate recorded is `certificate_*`.
    ctx.log.info(
      { agent: introducer.agentId, serial: toHex(introducer.serial), peer: agentId, certificate_agent: agentId, certificate_serial: toHex(cert.serial) },
      'recipient certificate introduced by a sender recorded',
    );
    this.#cache(agentId, cert, ctx.clock());
  }

  /** Forgets a cached directory entry (the agent authenticated again, here or on another instance, or was revoked). */
  forget(agentId: string): void {
    this.#directory.delete(agentId);
  }

  /**
   * One audit entry (group-committed by the AuditLog); false (logged, counted) when it could not be written.
   * `notify`: a notification sent in the same transaction, if and only if the entry is stored (a forward).
   */
  async auditEntry(itemHash: Uint8Array, senderId: string, recipientId: string, outcome: string, notify?: AuditNotification): Promise<boolean> {
    try {
      await this.#audit.append({ messageHash: itemHash, senderId, recipientId, messageType: MessageType.UNSPECIFIED, outcome }, notify === undefined ? undefined : { notify });
      return true;
    } catch (error) {
      this.#ctx.metrics.auditFailures.inc();
      this.#ctx.log.error({ err: error, agent: senderId, peer: recipientId, outcome }, 'audit append failed');
      return false;
    }
  }

  /**
   * The checks of §10.3 after authentication, in order, then the relay. Items
   * of one stream are checked one at a time in arrival order (their mailbox
   * rows and audit entries are queued in that order); the writes that follow
   * overlap with the next item's checks.
   * @throws RpcError with the stable code of the first failing check (already logged)
   */
  async #route(sender: Sender, rawItem: Outbound['item'] | SendRequest['item'], size: number, where: RouteSource, recipientCertificate: AgentCertificate | undefined): Promise<Routed> {
    const previous = sender.turn;
    let release!: () => void;
    if (previous !== undefined) sender.turn = new Promise<void>((resolve) => (release = resolve));
    let commit: () => Promise<Routed>;
    let early: Early | undefined;
    /** This item counts in `sender.uncharged` until its rate is charged (step 4), or it fails before. */
    let counted = false;
    const charged = (): void => {
      if (!counted) return;
      counted = false;
      if (sender.uncharged !== undefined && --sender.uncharged === 0) sender.uncharged = undefined;
    };
    try {
      // Started before this item's turn: an envelope's signature check runs while earlier items are checked. Only
      // when every item ahead of it has been charged already (its rate is charged at arrival: charges stay in
      // arrival order, so a later envelope never takes the token of an earlier handshake or reply).
      early = previous === undefined || sender.uncharged !== undefined ? undefined : this.#early(sender, rawItem, size);
      if (previous !== undefined && early === undefined) {
        sender.uncharged = (sender.uncharged ?? 0) + 1;
        counted = true;
      }
      if (previous !== undefined) await previous;
      commit = await this.#check(sender, rawItem, size, where, recipientCertificate, early, charged);
    } finally {
      charged();
      release?.();
    }
    return commit();
  }

  /**
   * What an envelope waiting for its turn can start at once: steps 1–4 pass (shape, sender, size, and its
   * rate charged now), then its digest and the step 6 signature check, on the verify pool while the items
   * before it are checked. Undefined when anything of steps 1–3 fails (#check then finds and reports it, in
   * order); `charged: false` when the rate limit refused it (#check reports that without charging again).
   * The result is taken in order, after step 5: the check of a policy-denied envelope is wasted work, but
   * bounded by the rate limit that was charged before it started.
   */
  #early(sender: Sender, rawItem: Outbound['item'] | SendRequest['item'], size: number): Early | undefined {
    if (rawItem.case !== 'envelope' || !this.#verifySignatures) return undefined;
    const agent = sender.cert.agentId;
    let item: RelayItem;
    try {
      item = assertItemShape(rawItem);
    } catch {
      return undefined;
    }
    if (item.case !== 'envelope' || routeOf(item).from !== agent || size > this.#ctx.maxFrameBytes) return undefined;
    if (!this.#limiter.take(agent) || !this.#bytes.take(agent, size)) return { item, charged: false };
    const digest = messageHashOf(this.#ctx.crypto, item.value);
    const verified = verifyEnvelopeDigestWith(digest, sender.cert.identityPublicKey, this.#verify);
    return { item, charged: true, digest, verified };
  }

  /** Steps 1–6 and the start of step 7 (queued in order); returns the rest of step 7. */
  async #check(
    sender: Sender,
    rawItem: Outbound['item'] | SendRequest['item'],
    size: number,
    where: RouteSource,
    recipientCertificate: AgentCertificate | undefined,
    early?: Early,
    charged?: () => void,
  ): Promise<() => Promise<Routed>> {
    const ctx = this.#ctx;
    const agent = sender.cert.agentId;
    const routed: { peer?: string } = {};
    /**
     * Logs the refusal (a security event, with `message`) and throws it — with `answer` on the wire when given.
     * `about`: a refused `recipient_certificate` — its own stage and the certificate's fields, the sender's
     * fields staying the actor's (not the sender's certificate that was refused, §10.3 step 5).
     */
    const fail = (code: RpcError['code'], message: string, answer: string = message, about?: RecipientCertificateRefusal): never => {
      ctx.security(
        about === undefined ? where.stage : RECIPIENT_CERTIFICATE_STAGE,
        code,
        {
          agent,
          identityKey: sender.cert.identityPublicKey,
          serial: sender.cert.serial,
          remote: sender.remote,
          ...(routed.peer === undefined ? {} : { peer: routed.peer }),
          ...(about?.agentId === undefined ? {} : { certificateAgent: about.agentId }),
          ...(about?.serial === undefined ? {} : { certificateSerial: about.serial }),
          ...(where.requestId === undefined ? {} : { requestId: where.requestId }),
        },
        message,
      );
      throw new RpcError(code, answer);
    };
    // 1. shape
    let item: RelayItem;
    if (early !== undefined) item = early.item;
    else {
      try {
        item = assertItemShape(rawItem);
      } catch (error) {
        const e = RpcError.from(error);
        return fail(e.code, e.details);
      }
    }
    const { from, to } = routeOf(item);
    routed.peer = to;
    // 2. sender is the authenticated agent
    if (from !== agent) return fail('identity_mismatch', `${item.case} is not from the authenticated agent`);
    // 3. size
    if (size > ctx.maxFrameBytes) return fail('too_large', `item of ${size} bytes exceeds ${ctx.maxFrameBytes}`);
    // 4. rate. A reply (step 2, receipt, SessionReject) is charged to nobody when it answers what was relayed the
    //    other way (step 5 checks that; its count is bounded by what the other agent sent); anything else is
    //    charged to the sender's item and byte buckets, and a step 1 also to its (initiator, responder) pair.
    //    An uncharged reply uses up its allowance here, before any later check, whatever they answer: a reply
    //    refused past this step (policy, the database, its signer_certificate, the quotas) is one the replier
    //    cannot send again for free — it was charged to nobody, so repeating it would cost the gateway a check,
    //    a security line and an audit entry each time with no bucket in the way (§10.3 step 5). Taken in one step
    //    (no await between the check and the use): two unary Sends of one reply cannot both pass.
    const isReply = item.case === 'receipt' || item.case === 'sessionReject' || (item.case === 'handshake' && item.value.step === 2);
    const answers = isReply && this.#useReply(item);
    if (!answers) {
      const taken = early !== undefined ? early.charged : this.#limiter.take(agent) && this.#bytes.take(agent, size);
      charged?.(); // charged (or refused) in arrival order: the envelopes behind it may start early again
      if (!taken) return fail('rate_limited', 'rate limit exceeded');
      if (item.case === 'handshake' && item.value.step === 1 && !this.#handshakes.take(`${agent}\n${to}`)) return fail('rate_limited', 'too many handshakes with this agent');
    }
    charged?.();
    // An unsolicited reply is refused before anything is written (a cheap refusal, not audited: no amplification).
    if (isReply && !answers) return fail('policy_denied', `${item.case === 'handshake' ? 'step 2' : item.case} answers nothing relayed the other way`);
    // An envelope's signed bytes are encoded once: its message hash and the signature check of step 6 share them.
    const digest = early?.digest ?? (item.case === 'envelope' ? messageHashOf(ctx.crypto, item.value) : undefined);
    const itemHash = digest?.hash ?? itemDigest(ctx.crypto, item);
    // Refusals past the rate limit are audited too (cheap refusals before it are not: that would let a
    // flood amplify into signatures and database writes).
    const refuse = async (code: RpcError['code'], message: string, answer: string = message, about?: RecipientCertificateRefusal): Promise<never> => {
      await this.auditEntry(itemHash, agent, to, `rejected:${code}`);
      return fail(code, message, answer, about);
    };
    // 5. route: the recipient's certificate (live stream, else the last one seen) and policy, in the
    //    direction of the conversation. Never seen (or no longer valid) reads as policy_denied, so a
    //    sender cannot probe which agent ids exist.
    let recipient: PolicySubject | undefined = ctx.links.get(to)?.cert;
    if (recipient === undefined) {
      try {
        const cert = await this.#offline(to);
        recipient = cert;
      } catch (error) {
        ctx.log.error({ err: error, agent, peer: to }, 'agent directory lookup failed');
        return fail('unavailable', 'gateway storage unavailable');
      }
    }
    // First contact: the gateway holds no certificate of the recipient, and the sender attached the one the
    // registry issued (`recipient_certificate`, read only now: for a recipient the gateway knows it is ignored
    // unverified, so the fast path pays nothing for it). It is verified fully — a certificate that fails is
    // refused with its own code and a line about that certificate alone — and then stands for the recipient
    // exactly as a certificate it authenticated would (the policy below), and is remembered once the item passes.
    let introduced: { readonly cert: VerifiedCertificate; readonly certificate: AgentCertificate } | undefined;
    // Never for a reply: its addressee sent what it answers through this gateway, so the gateway knows it (or it is
    // an agent that only ever used unary Send, which has no stream to be answered on); the SDK attaches the
    // certificate to a step 1 only. Read for a reply, it would be a certificate check on an item charged to nobody.
    if (recipient === undefined && recipientCertificate !== undefined && !isReply) {
      try {
        const cert = verifyRecipientCertificate(ctx, recipientCertificate, to, ctx.clock());
        introduced = { cert, certificate: recipientCertificate };
        recipient = cert;
      } catch (error) {
        const e = RpcError.from(error);
        const claimed = isAgentId(recipientCertificate.agentId) ? recipientCertificate.agentId : undefined;
        const serial = recipientCertificate.serial.length === 16 ? recipientCertificate.serial : undefined;
        const about: RecipientCertificateRefusal = { ...(claimed === undefined ? {} : { agentId: claimed }), ...(serial === undefined ? {} : { serial }) };
        const via = where.stage === 'send' ? 'a unary Send' : where.stage === 'outbound' ? 'an Outbound' : where.stage;
        const named = `certificate of ${claimed ?? '(not an agent id)'}, serial ${serial === undefined ? '(not a serial)' : toHex(serial)}`;
        return refuse(e.code, `${e.localDetails} (${named}, attached by the sender to ${via})`, e.details, about);
      }
    }
    // The same answer on the wire for both (the detail is in the security log only): which ids exist is not told.
    if (recipient === undefined) return refuse('policy_denied', `recipient ${to} was never seen or its last certificate no longer verifies`, ROUTE_DENIED);
    const allowed = isReply ? this.#policy.allows(recipient, sender.cert) : this.#policy.allows(sender.cert, recipient);
    if (!allowed) return refuse('policy_denied', 'policy does not allow this route', ROUTE_DENIED);
    // 6. signature of an envelope (the gateway holds no session key; it needs none). Receipts and SessionRejects
    //    are verified by their addressee, the only party they act on (§10.3 step 6): checking them here too would
    //    add a second Ed25519 verification to every message's fast path for nothing the end does not check.
    //    Ed25519 runs on the verify pool's threads (the gateway's largest single cost per envelope); this
    //    sender's next item waits for it (§10.3: one sender's items are checked in arrival order).
    if (this.#verifySignatures && digest !== undefined && !(await (early?.verified ?? verifyEnvelopeDigestWith(digest, sender.cert.identityPublicKey, this.#verify)))) {
      return refuse('bad_signature', 'envelope signature does not verify');
    }
    // A reply's signer_certificate (§17.8) is bytes no signature covers: relayed only when it is the certificate
    // its signer authenticated this stream with (the addressee verifies it again, against its own trust).
    if ((item.case === 'receipt' || item.case === 'sessionReject') && item.value.signerCertificate !== undefined) {
      const attached = item.value.signerCertificate;
      if (attached.agentId !== agent || toHex(attached.serial) !== toHex(sender.cert.serial)) {
        return refuse('identity_mismatch', `${item.case} signer_certificate is not the certificate this stream authenticated`);
      }
    }
    // Every check passed: a certificate introduced above is now the recipient's last one seen (the database and
    // this instance's directory), so that the next item needs none.
    if (introduced !== undefined) await this.#remember(to, introduced.cert, introduced.certificate, sender.cert);
    // A resend of an envelope whose audit entry this instance wrote (or that it delivered, which it does only
    // after that entry committed: the sender's outbox, §17.2) gets no second entry. One whose entry failed does.
    const resent = item.case === 'envelope' && this.#replies.audited(itemHash, agent, to);
    // What the recipient may answer (recorded again where it is delivered).
    if (item.case === 'envelope') this.#replies.envelope(itemHash, agent, to, false);
    else if (item.case === 'handshake' && item.value.step === 1) this.#replies.step1(item.value);

    // 7. relay
    const accepted: Accepted = {
      recipientId: to,
      item,
      itemHash,
      senderId: agent,
      senderSerial: sender.cert.serial,
      senderValidUntilMs: sender.cert.validUntilMs,
      acceptedAtMs: ctx.clock(),
      size,
    };
    const audited = (item.case === 'envelope' && !resent) || item.case === 'handshake';
    const log = (status: DeliveryStatus): Routed => {
      ctx.log.debug({ agent, peer: to, item: item.case, item_hash: toHex(itemHash), status: DeliveryStatus[status] }, 'routed');
      return { itemHash, status };
    };
    /** The item's audit entry, queued now (in order); false when it could not be written (the item is then refused). */
    const entry = async (outcome: 'delivered' | 'queued', notify?: AuditNotification): Promise<boolean> => {
      if (!audited) return true;
      if (!(await this.auditEntry(itemHash, agent, to, outcome, notify))) return false;
      if (item.case === 'envelope') this.#replies.envelopeAudited(itemHash, agent, to);
      return true;
    };
    const link = ctx.links.get(to);
    if (link !== undefined && this.#delivery.canWriteLive(link, size)) {
      // Live: written once its audit entry has committed (§10.9: nothing is delivered whose entry a crash could lose).
      const written = entry('delivered');
      return async () => {
        if (!(await written)) return fail('unavailable', 'audit log unavailable: item not accepted');
        const now = ctx.links.get(to);
        if (now !== undefined && this.#delivery.writeLive(now, accepted)) return log(DeliveryStatus.DELIVERED);
        // The stream went away or filled up meanwhile: the item is accepted (and audited), so it is kept durably,
        // like a spill (counted in the quota, never refused by it), and answered as what it now is: queued. Its
        // stream has a backlog from now on, so that no later item is written live before this one's row.
        if (now !== undefined) {
          now.backlog = true;
          now.storing++;
        }
        ctx.metrics.spilled.inc({ reason: 'backlog' });
        try {
          await this.#store(accepted, false, fail);
        } finally {
          if (now !== undefined) now.storing--;
        }
        return log(DeliveryStatus.QUEUED);
      };
    }
    // Another live instance holds the recipient's stream (./cluster.ts, §10.8): the item is forwarded to it, and that
    // instance writes it to the stream as a live item of its own — no mailbox row here. An audited item's forward is
    // sent in its audit entry's own statement (sent if and only if the entry commits: never before it, and no
    // statement of its own); anything else (a receipt, a reject, a resend) through the audit log's group commit: with
    // the next group of entries, or with the other such forwards in a statement of their own when no entry comes.
    // The quotas are checked first: what the holder cannot write at once it stores, within them.
    const holder = link === undefined ? ctx.cluster?.holder(to) : undefined;
    // What a mailbox row of this item holds, here or at the holder, and so what the quotas count (§10.8): the item's
    // own encoding — not the request around it (its request id; a recipient_certificate, up to 4 KiB; a unary Send's
    // certificate and signature), which the row never holds and its delete (or expiry) never releases. Encoded
    // once: the forward and the insert use these bytes.
    const asStored = (): Accepted => {
      const encoded = encodeItem(item);
      return { ...accepted, encoded, size: encoded.bytes.length };
    };
    const forwarded = holder === undefined ? undefined : asStored();
    const forward = forwarded === undefined ? undefined : encodeForward(forwarded);
    /** The mailbox quotas (§10.8) for `row`: `reserve` for an item stored here, else only checked. */
    const quotas = async (row: Accepted, reserve: boolean): Promise<void> => {
      try {
        await (reserve ? this.#storage.quotas.admit(to, agent, row.size) : this.#storage.quotas.check(to, agent, row.size));
      } catch (error) {
        const e = RpcError.from(error);
        if (e.code === 'quota_exceeded') return fail('quota_exceeded', e.details);
        ctx.log.error({ err: error, agent, peer: to }, 'mailbox quota lookup failed');
        return fail('unavailable', 'gateway storage unavailable');
      }
    };
    if (forwarded !== undefined && holder !== undefined && forward !== undefined) {
      await quotas(forwarded, false);
      const notify: AuditNotification = { channel: forwardChannel(holder), payload: forward };
      const withEntry = audited && this.#audit.store.notifies === true;
      const written = entry('delivered', withEntry ? notify : undefined);
      return async () => {
        if (!(await written)) return fail('unavailable', 'audit log unavailable: item not accepted');
        if (!withEntry) {
          try {
            // With the next audit group when one is waiting (no statement of its own while the gateway is busy),
            // else in a group-committed statement of forwards.
            const sent = this.#audit.store.notifies === true ? this.#audit.notify(notify) : undefined;
            await (sent ?? this.#storage.forward(notify.channel, notify.payload));
          } catch (error) {
            // Not audited here (a reply, a reject, a resend): nothing to keep; its author sends it again.
            ctx.log.warn({ err: error, agent, peer: to }, 'forwarding to another instance failed');
            return fail('unavailable', 'gateway storage unavailable');
          }
        }
        ctx.metrics.forwarded.inc({ direction: 'out', result: 'sent' });
        return log(DeliveryStatus.DELIVERED);
      };
    }
    // Stored: quota first (reserves). The audit entry is queued now (in order) and the row is written only once the
    // entry has committed: a committed row can be read and delivered at once by any instance's drain (a NOTIFY, a
    // reconnect), so it must not exist before its entry (§10.9, §17.7). A connected recipient's stream has a
    // backlog from this moment (not from the insert): a later, smaller item that its bounds would let through
    // must not be written live before this one (delivery in the order the gateway accepted them, §17.6).
    // Until its row is inserted (or the item refused), no drain clears that backlog (Link.storing).
    let storing = link;
    const stored = (): void => {
      if (storing !== undefined) storing.storing--;
      storing = undefined;
    };
    if (link !== undefined) {
      link.backlog = true;
      link.storing++;
    }
    const row = forwarded ?? asStored();
    try {
      await quotas(row, true);
    } catch (error) {
      stored();
      throw error;
    }
    const queued = entry('queued');
    return async () => {
      try {
        if (!(await queued)) {
          this.#storage.quotas.removed(to, agent, row.size); // the reservation
          return fail('unavailable', 'audit log unavailable: item not accepted');
        }
        await this.#store(row, true, fail);
      } finally {
        stored();
      }
      return log(DeliveryStatus.QUEUED);
    };
  }

  /** Stores an accepted item (group commit) and wakes the recipient's stream if it is connected here. */
  async #store(accepted: Accepted, admitted: boolean, fail: (code: RpcError['code'], message: string) => never): Promise<bigint> {
    const ctx = this.#ctx;
    let row: bigint;
    try {
      row = (await this.#storage.store(accepted, accepted.size, admitted)).deliveryId;
    } catch (error) {
      ctx.log.error({ err: error, agent: accepted.senderId, peer: accepted.recipientId }, 'mailbox write failed');
      return fail('unavailable', 'gateway storage unavailable');
    }
    const link = ctx.links.get(accepted.recipientId);
    if (link !== undefined) this.#delivery.stored(link);
    return row;
  }

  /** Whether a reply answers an item relayed the other way; if so, one use of that allowance is taken. */
  #useReply(item: RelayItem): boolean {
    switch (item.case) {
      case 'handshake':
        return this.#replies.allowStep2(item.value);
      case 'receipt':
      case 'sessionReject':
        return this.#replies.allowReply(item.value.messageHash, item.value.recipientId, item.value.senderId);
      default:
        return false;
    }
  }
}
