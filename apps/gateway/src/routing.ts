/**
 * Routing (docs/PROTOCOL.md §10.3): the checks every relayed item passes after
 * authentication — shape, sender, size, rate, route and policy, signatures —
 * in that order, then the relay decision: store in the mailbox, audit (fail
 * closed: an item whose audit entry cannot be written is withdrawn and
 * refused), then hand it to the recipient's live stream, or wake another
 * instance, or leave it queued. The gateway holds no session key: it sees
 * headers, never plaintext.
 */
import { toHex } from '@parley/crypto-core';
import type { AuditLog } from '@parley/audit';
import { verifyCertificate } from '@parley/identity';
import { DeliveryStatus, MessageType, type DeliveryReceipt, type Outbound, type SendRequest, type SessionReject } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import { SESSION_ID_BYTES, assertEnvelopeShape, assertFrameShape, isAgentId, verifyEnvelopeSignature } from '@parley/session';
import { subjectOf, type GatewayContext, type Sender } from './context.js';
import type { Delivery } from './delivery.js';
import { ITEM_HASH_BYTES, SIGNATURE_BYTES, deliveryReceiptLayout, itemDigest, sessionRejectLayout, type RelayItem } from './layouts.js';
import type { MailboxItem } from './mailbox.js';
import { Policy, type PolicySubject } from './policy.js';
import { RateLimiter, type RateLimitOptions } from './rate-limit.js';

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
}

/**
 * Shape checks of an item, before anything else (§10.3 step 1).
 * @throws RpcError `malformed` or `unsupported_version`
 */
export function assertItemShape(item: Outbound['item'] | SendRequest['item']): RelayItem {
  try {
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

/** Settings of the {@link Router}. */
export interface RouterOptions {
  readonly policy: Policy;
  readonly rateLimit: Omit<RateLimitOptions, 'clock'>;
  readonly verifySignatures: boolean;
  readonly audit: AuditLog;
  readonly delivery: Delivery;
  readonly notifyStored: ((recipientId: string) => void) | undefined;
}

/** The §10.3 checks and the relay decision, shared by the Connect stream and unary Send. */
export class Router {
  readonly #ctx: GatewayContext;
  readonly #limiter: RateLimiter;
  readonly #verifySignatures: boolean;
  readonly #audit: AuditLog;
  readonly #delivery: Delivery;
  readonly #notifyStored: ((recipientId: string) => void) | undefined;
  #policy: Policy;

  constructor(ctx: GatewayContext, options: RouterOptions) {
    this.#ctx = ctx;
    this.#policy = options.policy;
    this.#limiter = new RateLimiter({ ...options.rateLimit, clock: ctx.clock });
    this.#verifySignatures = options.verifySignatures;
    this.#audit = options.audit;
    this.#delivery = options.delivery;
    this.#notifyStored = options.notifyStored;
  }

  /** Swaps in a new routing policy; applies to the next item checked. */
  setPolicy(policy: Policy): void {
    this.#policy = policy;
  }

  /** Drops idle rate-limit buckets. */
  sweep(): void {
    this.#limiter.sweep();
  }

  /**
   * Routes one item, with metrics: latency, routed by kind and status, rejected by code.
   * @throws RpcError with the stable code of the first failing check (already logged)
   */
  async route(sender: Sender, rawItem: Outbound['item'] | SendRequest['item'], size: number, where: RouteSource): Promise<Routed> {
    const metrics = this.#ctx.metrics;
    const stop = metrics.latency.startTimer();
    try {
      const result = await this.#route(sender, rawItem, size, where);
      stop();
      metrics.routed.inc({ kind: rawItem.case ?? 'none', status: result.status === DeliveryStatus.DELIVERED ? 'delivered' : 'queued' });
      if (rawItem.case === 'handshake') metrics.handshakes.inc({ step: String(rawItem.value.step) });
      return result;
    } catch (error) {
      metrics.rejected.inc({ code: RpcError.from(error).code });
      throw error;
    }
  }

  /** The subject of an offline recipient: its last certificate seen, if that still verifies now. */
  async #offlineSubject(agentId: string): Promise<PolicySubject | undefined> {
    const ctx = this.#ctx;
    const certificate = await ctx.mailbox.lastCertificate(agentId);
    if (certificate === undefined) return undefined;
    try {
      const cert = verifyCertificate(ctx.crypto, certificate, { trustBundle: ctx.trustBundle, nowMs: ctx.clock(), revocations: ctx.revocations });
      return cert.agentId === agentId ? subjectOf(cert) : undefined;
    } catch {
      return undefined; // revoked, expired, or no longer trusted: treated like a never-seen agent
    }
  }

  /** One audit entry; false (logged, counted) when it could not be written. */
  async #auditEntry(itemHash: Uint8Array, senderId: string, recipientId: string, outcome: string): Promise<boolean> {
    try {
      await this.#audit.append({ messageHash: itemHash, senderId, recipientId, messageType: MessageType.UNSPECIFIED, outcome });
      return true;
    } catch (error) {
      this.#ctx.metrics.auditFailures.inc();
      this.#ctx.log.error({ err: error, agent: senderId, peer: recipientId, outcome }, 'audit append failed');
      return false;
    }
  }

  /**
   * The checks of §10.3 after authentication, in order, then the relay.
   * @throws RpcError with the stable code of the first failing check (already logged)
   */
  async #route(sender: Sender, rawItem: Outbound['item'] | SendRequest['item'], size: number, where: RouteSource): Promise<Routed> {
    const ctx = this.#ctx;
    const agent = sender.cert.agentId;
    const routed: { peer?: string } = {};
    const fail = (code: RpcError['code'], message: string): never => {
      ctx.security(
        where.stage,
        code,
        { agent, remote: sender.remote, ...(routed.peer === undefined ? {} : { peer: routed.peer }), ...(where.requestId === undefined ? {} : { requestId: where.requestId }) },
        message,
      );
      throw new RpcError(code, message);
    };
    // 1. shape
    let item: RelayItem;
    try {
      item = assertItemShape(rawItem);
    } catch (error) {
      const e = RpcError.from(error);
      return fail(e.code, e.details);
    }
    const { from, to } = routeOf(item);
    routed.peer = to;
    // 2. sender is the authenticated agent
    if (from !== agent) return fail('identity_mismatch', `${item.case} is not from the authenticated agent`);
    // 3. size
    if (size > ctx.maxFrameBytes) return fail('too_large', `item of ${size} bytes exceeds ${ctx.maxFrameBytes}`);
    // 4. rate
    if (!this.#limiter.take(agent)) return fail('rate_limited', 'rate limit exceeded');
    const itemHash = itemDigest(ctx.crypto, item);
    // Refusals past the rate limit are audited too (cheap refusals before it are not: that would let a
    // flood amplify into signatures and database writes).
    const refuse = async (code: RpcError['code'], message: string): Promise<never> => {
      await this.#auditEntry(itemHash, agent, to, `rejected:${code}`);
      return fail(code, message);
    };
    // 5. route: the recipient's certificate (live stream, else the last one seen) and policy, in the
    //    direction of the conversation. Never seen (or no longer valid) reads as policy_denied, so a
    //    sender cannot probe which agent ids exist.
    const live = ctx.links.get(to);
    let recipient: PolicySubject | undefined;
    try {
      recipient = live?.subject ?? (await this.#offlineSubject(to));
    } catch (error) {
      ctx.log.error({ err: error, agent, peer: to }, 'agent directory lookup failed');
      return fail('unavailable', 'gateway storage unavailable');
    }
    if (recipient === undefined) return refuse('policy_denied', `recipient ${to} was never seen or its last certificate no longer verifies`);
    const initiatorToResponder = item.case === 'receipt' || item.case === 'sessionReject' || (item.case === 'handshake' && item.value.step === 2);
    const allowed = initiatorToResponder ? this.#policy.allows(recipient, sender.subject) : this.#policy.allows(sender.subject, recipient);
    if (!allowed) return refuse('policy_denied', 'policy does not allow this route');
    // 6. signatures (the gateway holds no session key; these need none)
    if (this.#verifySignatures) {
      if (item.case === 'envelope' && !verifyEnvelopeSignature(ctx.crypto, item.value, sender.cert.identityPublicKey)) {
        return refuse('bad_signature', 'envelope signature does not verify');
      }
      if (item.case === 'receipt' && !ctx.crypto.ed25519.verify(item.value.signature, deliveryReceiptLayout(item.value), sender.cert.identityPublicKey)) {
        return refuse('bad_signature', 'receipt signature does not verify');
      }
      if (item.case === 'sessionReject' && !ctx.crypto.ed25519.verify(item.value.signature, sessionRejectLayout(item.value), sender.cert.identityPublicKey)) {
        return refuse('bad_signature', 'session reject signature does not verify');
      }
    }
    // 7. store in the mailbox, audit (fail closed), then deliver live if the recipient is connected.
    let stored: MailboxItem;
    try {
      stored = await ctx.mailbox.put(to, agent, item, itemHash);
    } catch (error) {
      ctx.log.error({ err: error, agent, peer: to }, 'mailbox write failed');
      return fail('unavailable', 'gateway storage unavailable');
    }
    const status = ctx.links.has(to) ? DeliveryStatus.DELIVERED : DeliveryStatus.QUEUED;
    if (!(await this.#auditEntry(itemHash, agent, to, status === DeliveryStatus.DELIVERED ? 'delivered' : 'queued'))) {
      await ctx.mailbox.remove(to, stored.deliveryId).catch((error: unknown) => ctx.log.error({ err: error }, 'could not withdraw an unaudited item'));
      return fail('unavailable', 'audit log unavailable: item not accepted');
    }
    const link = ctx.links.get(to);
    if (link !== undefined) {
      this.#delivery.offer(link, stored);
    } else if (this.#notifyStored !== undefined) {
      try {
        this.#notifyStored(to);
      } catch (error) {
        ctx.log.warn({ err: error, peer: to }, 'cross-instance notification failed (delivered on reconnect)');
      }
    }
    ctx.log.debug(
      { agent, peer: to, item: item.case, delivery_id: stored.deliveryId.toString(), item_hash: toHex(itemHash), status: DeliveryStatus[status] },
      'routed',
    );
    return { itemHash, status };
  }
}
