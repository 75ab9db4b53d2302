/**
 * Every MemoryService call (docs/PROTOCOL.md §18.8, §18.10): authenticate the request signature, rate-limit
 * the caller, run the operation in one transaction that first claims the request nonce, and append one
 * audit entry — allowed or refused; nothing is answered without its audit entry (fail closed). A call
 * refused by the rate limit writes nothing (no nonce, no audit entry): it is counted, and reported as a
 * sampled security event. Also the small checks every operation shares and what operations get to work with.
 */
import type { AuditLog } from '@parley/audit';
import { toHex, type ParleyCrypto } from '@parley/crypto-core';
import type { Database, Queryable } from '@parley/db';
import { isAgentId, verifyCertificate, type RevocationChecker, type TrustBundle, type VerifiedCertificate } from '@parley/identity';
import { MemoryError, parseMemoryMetadata, verifyMemoryRequest } from '@parley/memory';
import { AgentCertificateSchema, MessageType, toBinary, type AgentCertificate, type MessageInitShape } from '@parley/proto';
import { LogThrottle, RateLimiter, RpcError, type CallContext, type RateLimitOptions, type RpcErrorCode } from '@parley/rpc';
import type { MemoryLogger, MemoryQuotas } from './settings.js';

export type Init<S extends Parameters<typeof toBinary>[0]> = MessageInitShape<S>;

/** An authenticated caller. */
export interface Caller {
  readonly cert: VerifiedCertificate;
  readonly certificate: AgentCertificate;
  /** The request nonce, claimed inside the call's transaction (one commit per call, §18.8). */
  readonly nonce: Uint8Array;
  readonly nonceExpiresAtMs: number;
}

/** What an operation answers, and how its audit entry reads. */
export interface Outcome<T> {
  readonly response: T;
  /** The audit outcome's detail when not plain `ok` (e.g. `conflict`, `already_applied`). */
  readonly outcome?: string;
}

/** What the operations work with. */
export interface OpContext {
  readonly crypto: ParleyCrypto;
  readonly db: Database;
  /** Allowed skew of request and record timestamps, ms. */
  readonly skewMs: number;
  readonly quotas: MemoryQuotas;
  readonly trustBundle: TrustBundle;
  readonly revocations: RevocationChecker;
  /** Another directory of certificates (the gateway's agents) for GetAgentCertificate. */
  readonly directory: ((agentId: string) => Promise<AgentCertificate | undefined>) | undefined;
}

/** At most one `rate_limited` security event per this many ms (the rest are counted in the next one). */
const RATE_LIMIT_EVENT_INTERVAL_MS = 1000;
/** Audit entries of calls refused before authentication, for all callers together (§18.10). */
export const UNAUTHENTICATED_AUDIT_RATE: RateLimitOptions = Object.freeze({ ratePerSecond: 10, burst: 100 });

const AUTH_CODES: ReadonlySet<string> = new Set([
  'unauthenticated',
  'bad_signature',
  'bad_certificate',
  'unknown_issuer',
  'revoked',
  'expired',
  'not_yet_valid',
  'revocation_stale',
  'replay',
  'stale_timestamp',
  'future_timestamp',
  'malformed',
  'identity_mismatch',
  'permission_denied',
  'rate_limited',
]);

export function refuse(code: RpcErrorCode, message: string): never {
  throw new RpcError(code, message);
}

/** A MemoryError from the model becomes the RpcError of the same code (its messages name fields, never contents). */
function toRpc(error: unknown): RpcError {
  if (error instanceof MemoryError) return new RpcError(error.code, error.message.replace(/^\[[a-z_]+\] /, ''), { cause: error });
  return RpcError.from(error);
}

/** A record's timestamp within `skewMs` of `now`. @throws RpcError `stale_timestamp`, `future_timestamp` */
export function assertTime(skewMs: number, ms: bigint, what: string, now: number): void {
  if (ms < BigInt(now - skewMs)) refuse('stale_timestamp', `${what} timestamp too old`);
  if (ms > BigInt(now + skewMs)) refuse('future_timestamp', `${what} timestamp in the future`);
}

/**
 * Claims the caller's request nonce: the first statement of every call's transaction, so the
 * nonce and the call's effects commit together (one commit per call). A call refused later
 * rolls its transaction back; the pipeline then records the nonce on its own, so every authenticated
 * request's nonce is persisted either way.
 * @throws RpcError `replay` when the nonce was used before
 */
async function claimNonce(q: Queryable, caller: Caller): Promise<void> {
  const rows = await q.query(
    'INSERT INTO memory_request_nonces (agent_id, nonce, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING agent_id',
    [caller.cert.agentId, caller.nonce, caller.nonceExpiresAtMs],
  );
  if (rows.length === 0) refuse('replay', 'request nonce already used');
}

/**
 * Runs `fn` in one transaction that starts by claiming the caller's nonce. A read-only call's
 * transaction writes nothing but that nonce and commits it without waiting for the WAL flush
 * (`synchronous_commit = off`, §18.10): only a PostgreSQL crash in the next few hundred ms could
 * forget it, and a read replayed then returns ciphertext to its replayer and is audited. Every call
 * that changes state commits synchronously.
 */
export function callTx<T>(db: Database, caller: Caller, fn: (tx: Queryable) => Promise<T>, readOnly = false): Promise<T> {
  return db.transaction(async (tx) => {
    if (readOnly) await tx.exec('SET LOCAL synchronous_commit = off');
    await claimNonce(tx, caller);
    return fn(tx);
  });
}

export interface CallPipelineOptions {
  readonly crypto: ParleyCrypto;
  readonly db: Database;
  readonly audit: AuditLog;
  /** The store's name, bound into every request signature: the gateway id. */
  readonly serviceId: string;
  readonly trustBundle: TrustBundle;
  readonly revocations: RevocationChecker;
  readonly logger: MemoryLogger;
  readonly clock: () => number;
  readonly skewMs: number;
  readonly limiter: RateLimiter;
}

/** Runs calls (and tracks them, so `drain` can wait for those in flight). */
export class CallPipeline {
  readonly #o: CallPipelineOptions;
  readonly #inflight = new Set<Promise<unknown>>();
  /** agent id → hex serial of the certificate last recorded for it (bounded). */
  readonly #seen = new Map<string, string>();
  #closing = false;
  #rateLimitedTotal = 0;
  #rateLimitedUnreported = 0;
  #rateLimitedLoggedAt: number | undefined;
  /**
   * Audit entries of calls refused before their caller authenticated (§18.10): at most
   * {@link UNAUTHENTICATED_AUDIT_RATE} a second for everyone together. Such a call costs its sender no key,
   * so without this bound anyone reaching the port could grow the append-only audit log at request speed.
   */
  readonly #unauthenticatedAudit: RateLimiter;
  #unaudited = 0;
  /** Security lines of refusals before authentication, one a second per error code (a fixed, small set of keys). */
  readonly #authLogged = new Map<string, LogThrottle>();

  constructor(options: CallPipelineOptions) {
    this.#o = options;
    this.#unauthenticatedAudit = new RateLimiter({ ...UNAUTHENTICATED_AUDIT_RATE, clock: options.clock });
  }

  /** Refuses new calls (`unavailable`) and waits for those in flight. */
  async drain(): Promise<void> {
    this.#closing = true;
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  /** Keeps `p` in the set `drain` waits for (calls, and the sweep's transactions). */
  track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    const done = (): void => void this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  /** One call of operation `op` on `target` (a memory id, an agent id, or `memory-service`). */
  handle<T>(op: string, ctx: CallContext, target: string, fn: (caller: Caller, now: number) => Promise<Outcome<T>>): Promise<T> {
    return this.track(this.#run(op, ctx, target, fn));
  }

  async #run<T>(op: string, ctx: CallContext, target: string, fn: (caller: Caller, now: number) => Promise<Outcome<T>>): Promise<T> {
    const digest = this.#o.crypto.blake3(ctx.requestBytes);
    const recipient = isAgentId(target) ? target : 'memory-service';
    let sender = 'unknown';
    let audited = false;
    let caller: Caller | undefined;
    let limited = false;
    try {
      if (this.#closing) refuse('unavailable', 'memory service is shutting down');
      caller = await this.#authenticate(ctx, (claimed) => {
        if (isAgentId(claimed)) sender = claimed;
      });
      sender = caller.cert.agentId;
      if (!this.#o.limiter.take(sender)) {
        // §18.8: refused before anything is written — no nonce, no audit entry (a flood must not turn
        // into database writes); counted, and reported as a sampled security event.
        limited = true;
        this.#rateLimited(op, sender, recipient, ctx.peer);
        refuse('rate_limited', 'memory call rate limit exceeded');
      }
      await this.#remember(caller);
      const result = await fn(caller, this.#o.clock());
      audited = true;
      if (!(await this.#audit(digest, sender, recipient, `memory.${op}:${result.outcome ?? 'ok'}`))) {
        // Fail closed: nothing is answered without its audit entry (a write stays stored; its retry is recognised, §18.10).
        refuse('unavailable', 'audit log unavailable');
      }
      return result.response;
    } catch (error) {
      const e = toRpc(error);
      if (limited) throw e;
      if (caller !== undefined && e.code !== 'replay') {
        // The call's transaction (and its nonce claim) rolled back: the nonce is still spent.
        await this.#o.db
          .query('INSERT INTO memory_request_nonces (agent_id, nonce, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [caller.cert.agentId, caller.nonce, caller.nonceExpiresAtMs])
          .catch((err: unknown) => this.#o.logger.error({ err, agent: sender }, 'could not record a refused request nonce'));
      }
      if (e.code === 'internal') this.#o.logger.error({ err: e.cause ?? e, op, agent: sender, memory: recipient }, 'memory call failed');
      else if (AUTH_CODES.has(e.code)) {
        if (caller !== undefined) {
          this.#o.logger.warn({ event: 'security', stage: `memory.${op}`, code: e.code, agent: sender, memory: recipient, remote: ctx.peer, detail: e.localDetails }, 'security event');
        } else this.#unauthenticatedEvent(op, e, sender, recipient, ctx.peer);
      }
      if (!audited) {
        if (caller !== undefined || this.#unauthenticatedAudit.take('*')) await this.#audit(digest, sender, recipient, `memory.${op}:${e.code}`);
        else this.#unaudited++;
      }
      throw e;
    }
  }

  /** Counts a rate-limited call and logs at most one security event a second for all of them, with the count since the last. */
  #rateLimited(op: string, agent: string, memory: string, remote: string): void {
    this.#rateLimitedTotal++;
    this.#rateLimitedUnreported++;
    const now = this.#o.clock();
    if (this.#rateLimitedLoggedAt !== undefined && Math.abs(now - this.#rateLimitedLoggedAt) < RATE_LIMIT_EVENT_INTERVAL_MS) return;
    this.#rateLimitedLoggedAt = now;
    this.#o.logger.warn(
      { event: 'security', stage: `memory.${op}`, code: 'rate_limited', agent, memory, remote, refused: this.#rateLimitedUnreported, refused_total: this.#rateLimitedTotal },
      'security event',
    );
    this.#rateLimitedUnreported = 0;
  }

  /**
   * A refusal before authentication: one security line per code a second at most, with the number held back
   * since the last (`suppressed`); `agent` is only what the certificate claims (`claimed`).
   */
  #unauthenticatedEvent(op: string, e: RpcError, claimed: string, memory: string, remote: string): void {
    let throttle = this.#authLogged.get(e.code);
    if (throttle === undefined) this.#authLogged.set(e.code, (throttle = new LogThrottle(RATE_LIMIT_EVENT_INTERVAL_MS)));
    const admitted = throttle.admit(this.#o.clock());
    if (admitted === undefined) return;
    this.#o.logger.warn(
      { event: 'security', stage: `memory.${op}`, code: e.code, agent: claimed, claimed: true, memory, remote, detail: e.localDetails, suppressed: admitted.suppressed, unaudited_total: this.#unaudited },
      'security event',
    );
  }

  /** Calls refused before authentication beyond the audit bound (refused all the same, not audited). */
  get unauditedRefusals(): number {
    return this.#unaudited;
  }

  /** Calls refused with `rate_limited` since the pipeline started (none of them wrote anything). */
  get rateLimitedCalls(): number {
    return this.#rateLimitedTotal;
  }

  async #audit(messageHash: Uint8Array, senderId: string, recipientId: string, outcome: string): Promise<boolean> {
    try {
      await this.#o.audit.append({ messageHash, senderId, recipientId, messageType: MessageType.UNSPECIFIED, outcome });
      return true;
    } catch (error) {
      this.#o.logger.error({ err: error, agent: senderId, memory: recipientId, outcome }, 'memory audit append failed');
      return false;
    }
  }

  /** §18.8: certificate, timestamp, signature, then the nonce (recorded only once the signature verified). */
  async #authenticate(ctx: CallContext, claim: (agentId: string) => void): Promise<Caller> {
    const auth = parseMemoryMetadata((key) => {
      const value = ctx.metadata.get(key)[0];
      return typeof value === 'string' ? value : undefined;
    });
    claim(auth.certificate.agentId);
    const now = this.#o.clock();
    const cert = verifyCertificate(this.#o.crypto, auth.certificate, { trustBundle: this.#o.trustBundle, nowMs: now, revocations: this.#o.revocations });
    if (auth.timestampMs < now - this.#o.skewMs) refuse('stale_timestamp', 'request timestamp too old');
    if (auth.timestampMs > now + this.#o.skewMs) refuse('future_timestamp', 'request timestamp in the future');
    if (!verifyMemoryRequest(this.#o.crypto, auth, { serviceId: this.#o.serviceId, path: ctx.path, body: ctx.requestBytes }, cert)) {
      refuse('bad_signature', 'request signature does not verify');
    }
    // Kept until the timestamp is out of every instance's window: an instance whose clock is behind the
    // sweeper's by up to the skew still accepts timestamps down to the sweeper's now − 2 × skew (§18.8).
    return { cert, certificate: auth.certificate, nonce: auth.nonce, nonceExpiresAtMs: auth.timestampMs + 2 * this.#o.skewMs + 1000 };
  }

  /** Records the certificate an agent called with (GetAgentCertificate), and refreshes its grants' certificates for the same key. */
  async #remember(caller: Caller): Promise<void> {
    const serial = toHex(caller.cert.serial);
    if (this.#seen.get(caller.cert.agentId) === serial) return;
    try {
      const encoded = toBinary(AgentCertificateSchema, caller.certificate);
      await this.#o.db.query(
        `INSERT INTO memory_agents (agent_id, serial, certificate, seen_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (agent_id) DO UPDATE SET serial = EXCLUDED.serial, certificate = EXCLUDED.certificate, seen_at_ms = EXCLUDED.seen_at_ms`,
        [caller.cert.agentId, caller.cert.serial, encoded, this.#o.clock()],
      );
      await this.#o.db.query('UPDATE memory_members SET certificate = $1 WHERE member_id = $2 AND public_key = $3', [encoded, caller.cert.agentId, caller.cert.identityPublicKey]);
      this.#seen.delete(caller.cert.agentId);
      this.#seen.set(caller.cert.agentId, serial);
      if (this.#seen.size > 10_000) this.#seen.delete(this.#seen.keys().next().value!);
    } catch (error) {
      this.#o.logger.warn({ err: error, agent: caller.cert.agentId }, 'could not record an agent certificate');
    }
  }
}
