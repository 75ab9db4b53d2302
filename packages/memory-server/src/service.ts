/**
 * The shared-memory store (docs/PROTOCOL.md §18): an implementation of
 * parley.v1.MemoryService over PostgreSQL or PGlite. It authenticates every
 * call by its request signature (§18.8), enforces the membership list the
 * signed log folds to (default deny), quotas and expiry, checks every record
 * it is given by the rules of @parley/memory's model before it stores it, and
 * appends one audit entry per call, allowed or refused (§18.10). It never
 * holds a key: it stores ciphertext, sealed key copies, digests and signatures.
 *
 * Register it with `addService(server, MemoryService, store)`; the gateway does
 * (apps/gateway/src/server.ts).
 */
import type { AuditLog } from '@parley/audit';
import { toHex, type ParleyCrypto } from '@parley/crypto-core';
import { bytes, int, type Database, type Queryable } from '@parley/db';
import { isAgentId, verifyCertificate, type RevocationChecker, type TrustBundle, type VerifiedCertificate } from '@parley/identity';
import {
  MAX_EPOCHS,
  MAX_MEMBERS,
  Membership,
  MemoryError,
  assertEpochRecordShape,
  assertKeyWrapShape,
  assertMembershipEntryShape,
  assertWriteRecordShape,
  isMemoryId,
  isSegmentId,
  membershipEntryHash,
  memoryIdOf,
  parseMemoryMetadata,
  sameWrite,
  verifyEpochRecord,
  verifyKeyWrap,
  verifyMemoryRequest,
  writeLayout,
  type Member,
} from '@parley/memory';
import {
  AgentCertificateSchema,
  EpochRecordSchema,
  KeyWrapSchema,
  MembershipChange,
  MembershipEntrySchema,
  MessageType,
  MemoryAccess,
  WriteRecordSchema,
  fromBinary,
  toBinary,
  type AgentCertificate,
  type CreateMemoryRequest,
  type CreateMemoryResponseSchema,
  type EpochRecord,
  type GetAgentCertificateRequest,
  type GetAgentCertificateResponseSchema,
  type GetMemoryRequest,
  type GetMemoryResponseSchema,
  type KeyWrap,
  type ListMemoriesRequest,
  type ListMemoriesResponseSchema,
  type ListSegmentsRequest,
  type ListSegmentsResponseSchema,
  type MembershipEntry,
  type MessageInitShape,
  type ReadSegmentRequest,
  type ReadSegmentResponseSchema,
  type RotateEpochRequest,
  type RotateEpochResponseSchema,
  type UpdateMembershipRequest,
  type UpdateMembershipResponseSchema,
  type WriteRecord,
  type WriteSegmentRequest,
  type WriteSegmentResponseSchema,
} from '@parley/proto';
import { RpcError, type CallContext, type RpcErrorCode } from '@parley/rpc';
import { RateLimiter } from './rate-limit.js';
import { migrateMemorySchema } from './schema.js';

type Init<S extends Parameters<typeof toBinary>[0]> = MessageInitShape<S>;

/** Quotas of one memory and of one owner (all its memories). */
export interface MemoryQuotas {
  /** Ciphertext bytes of one memory's current segment versions. Default 64 MiB. */
  readonly maxBytesPerMemory: number;
  /** Segments of one memory. Default 10 000. */
  readonly maxSegmentsPerMemory: number;
  /** Ciphertext bytes of all of one owner's memories. Default 256 MiB. */
  readonly maxBytesPerOwner: number;
  /** Segments of all of one owner's memories. Default 100 000. */
  readonly maxSegmentsPerOwner: number;
  /** Memories one agent may own. Default 1000. */
  readonly maxMemoriesPerOwner: number;
  /** Members of one memory (owner and expired grants included), at most 256. Default 256. */
  readonly maxMembersPerMemory: number;
}

export const DEFAULT_MEMORY_QUOTAS: MemoryQuotas = Object.freeze({
  maxBytesPerMemory: 64 * 1024 * 1024,
  maxSegmentsPerMemory: 10_000,
  maxBytesPerOwner: 256 * 1024 * 1024,
  maxSegmentsPerOwner: 100_000,
  maxMemoriesPerOwner: 1000,
  maxMembersPerMemory: MAX_MEMBERS,
});

/** The logging calls the store makes (pino's Logger fits). Never given key material or data. */
export interface MemoryLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** Everything a {@link MemoryStore} needs. */
export interface MemoryServiceOptions {
  readonly crypto: ParleyCrypto;
  /** Where memories live; migrated by {@link MemoryStore.open}. */
  readonly database: Database;
  /** One entry per call goes here (the gateway passes its own audit log). */
  readonly audit: AuditLog;
  /** The store's name, bound into every request signature: the gateway id. */
  readonly serviceId: string;
  readonly trustBundle: TrustBundle;
  readonly revocations: RevocationChecker;
  readonly logger: MemoryLogger;
  readonly clock?: () => number;
  /** Allowed skew of request and record timestamps, ms. Default 60 000. */
  readonly maxClockSkewMs?: number;
  readonly quotas?: Partial<MemoryQuotas>;
  /** Per-agent calls. Default 200/s, burst 400. */
  readonly rateLimit?: { readonly ratePerSecond: number; readonly burst: number };
  /** How often expired memories, segments and nonces are deleted, ms. Default 60 000. */
  readonly sweepIntervalMs?: number;
  /** Another directory of certificates (the gateway's agents) for GetAgentCertificate. */
  readonly directory?: (agentId: string) => Promise<AgentCertificate | undefined>;
}

/** An authenticated caller. */
interface Caller {
  readonly cert: VerifiedCertificate;
  readonly certificate: AgentCertificate;
  /** The request nonce, claimed inside the call's transaction (one commit per call, §18.8). */
  readonly nonce: Uint8Array;
  readonly nonceExpiresAtMs: number;
}

interface Outcome<T> {
  readonly response: T;
  /** The audit outcome's detail when not plain `ok` (e.g. `conflict`, `already_applied`). */
  readonly outcome?: string;
}

interface MemoryRow {
  readonly memoryId: string;
  readonly ownerId: string;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
  readonly membershipVersion: bigint;
  readonly head: Uint8Array;
  readonly currentEpoch: number;
  readonly usedBytes: number;
  readonly usedSegments: number;
}

interface MemberRow {
  readonly memberId: string;
  readonly access: MemoryAccess;
  readonly publicKey: Uint8Array;
  readonly expiresAtMs: number;
  readonly certificate: Uint8Array;
}

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

const MEMORY_COLUMNS = 'memory_id, owner_id, created_at_ms, expires_at_ms, membership_version, membership_head, current_epoch, used_bytes, used_segments';

function memoryRow(r: Record<string, unknown>): MemoryRow {
  return {
    memoryId: String(r['memory_id']),
    ownerId: String(r['owner_id']),
    createdAtMs: int(r['created_at_ms']),
    expiresAtMs: int(r['expires_at_ms']),
    membershipVersion: BigInt(int(r['membership_version'])),
    head: bytes(r['membership_head']),
    currentEpoch: int(r['current_epoch']),
    usedBytes: int(r['used_bytes']),
    usedSegments: int(r['used_segments']),
  };
}

function memberRow(r: Record<string, unknown>): MemberRow {
  return {
    memberId: String(r['member_id']),
    access: int(r['access']) as MemoryAccess,
    publicKey: bytes(r['public_key']),
    expiresAtMs: int(r['expires_at_ms']),
    certificate: bytes(r['certificate']),
  };
}

const live = (expiresAtMs: number, now: number): boolean => expiresAtMs === 0 || now < expiresAtMs;

function refuse(code: RpcErrorCode, message: string): never {
  throw new RpcError(code, message);
}

/** A MemoryError from the model becomes the RpcError of the same code (its messages name fields, never contents). */
function toRpc(error: unknown): RpcError {
  if (error instanceof MemoryError) return new RpcError(error.code, error.message.replace(/^\[[a-z_]+\] /, ''), { cause: error });
  return RpcError.from(error);
}

/** Same set of ids, each with the key on record. */
function sameMembers(crypto: ParleyCrypto, wraps: readonly KeyWrap[], members: readonly Member[]): boolean {
  if (wraps.length !== members.length) return false;
  const byId = new Map(members.map((m) => [m.memberId, m]));
  const seen = new Set<string>();
  for (const w of wraps) {
    const m = byId.get(w.memberId);
    if (m === undefined || seen.has(w.memberId) || !crypto.constantTimeEqual(m.publicKey, w.memberPublicKey)) return false;
    seen.add(w.memberId);
  }
  return true;
}

/**
 * parley.v1.MemoryService over a database. Create with {@link MemoryStore.open};
 * call {@link close} before closing the audit log and the database.
 */
export class MemoryStore {
  readonly #o: MemoryServiceOptions;
  readonly #crypto: ParleyCrypto;
  readonly #db: Database;
  readonly #clock: () => number;
  readonly #skew: number;
  readonly #quotas: MemoryQuotas;
  readonly #limiter: RateLimiter;
  readonly #log: MemoryLogger;
  readonly #timer: NodeJS.Timeout;
  readonly #inflight = new Set<Promise<unknown>>();
  /** agent id → hex serial of the certificate last recorded for it (bounded). */
  readonly #seen = new Map<string, string>();
  #closing = false;

  private constructor(options: MemoryServiceOptions) {
    this.#o = options;
    this.#crypto = options.crypto;
    this.#db = options.database;
    this.#clock = options.clock ?? Date.now;
    this.#skew = options.maxClockSkewMs ?? 60_000;
    this.#quotas = { ...DEFAULT_MEMORY_QUOTAS, ...options.quotas };
    for (const [k, v] of Object.entries(this.#quotas)) if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`memory quota ${k} must be a positive integer`);
    if (this.#quotas.maxMembersPerMemory > MAX_MEMBERS) throw new RangeError(`maxMembersPerMemory must be at most ${MAX_MEMBERS}`);
    this.#limiter = new RateLimiter(options.rateLimit ?? { ratePerSecond: 200, burst: 400 }, this.#clock);
    this.#log = options.logger;
    this.#timer = setInterval(() => void this.sweep().catch(() => undefined), options.sweepIntervalMs ?? 60_000);
    this.#timer.unref();
  }

  /** Migrates the schema and returns the store. */
  static async open(options: MemoryServiceOptions): Promise<MemoryStore> {
    await migrateMemorySchema(options.database);
    return new MemoryStore(options);
  }

  /** The quotas in force. */
  get quotas(): MemoryQuotas {
    return this.#quotas;
  }

  /** Stops the sweep and waits for calls in flight (then close the audit log and the database). */
  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#timer);
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    const done = (): void => void this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  // ---------------------------------------------------------------------------
  // Every call: authenticate, rate-limit, run, audit (§18.8, §18.10)

  #handle<T>(op: string, ctx: CallContext, target: string, fn: (caller: Caller, now: number) => Promise<Outcome<T>>): Promise<T> {
    return this.#track(this.#run(op, ctx, target, fn));
  }

  async #run<T>(op: string, ctx: CallContext, target: string, fn: (caller: Caller, now: number) => Promise<Outcome<T>>): Promise<T> {
    const digest = this.#crypto.blake3(ctx.requestBytes);
    const recipient = isAgentId(target) ? target : 'memory-service';
    let sender = 'unknown';
    let audited = false;
    let caller: Caller | undefined;
    try {
      if (this.#closing) refuse('unavailable', 'memory service is shutting down');
      caller = await this.#authenticate(ctx, (claimed) => {
        if (isAgentId(claimed)) sender = claimed;
      });
      sender = caller.cert.agentId;
      if (!this.#limiter.take(sender)) refuse('rate_limited', 'memory call rate limit exceeded');
      await this.#remember(caller);
      const result = await fn(caller, this.#clock());
      audited = true;
      if (!(await this.#audit(digest, sender, recipient, `memory.${op}:${result.outcome ?? 'ok'}`))) {
        // Fail closed: nothing is answered without its audit entry (a write stays stored; its retry is recognised, §18.10).
        refuse('unavailable', 'audit log unavailable');
      }
      return result.response;
    } catch (error) {
      const e = toRpc(error);
      if (caller !== undefined && e.code !== 'replay') {
        // The call's transaction (and its nonce claim) rolled back: the nonce is still spent.
        await this.#db
          .query('INSERT INTO memory_request_nonces (agent_id, nonce, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [caller.cert.agentId, caller.nonce, caller.nonceExpiresAtMs])
          .catch((err: unknown) => this.#log.error({ err, agent: sender }, 'could not record a refused request nonce'));
      }
      if (e.code === 'internal') this.#log.error({ err: e.cause ?? e, op, agent: sender, memory: recipient }, 'memory call failed');
      else if (AUTH_CODES.has(e.code)) {
        this.#log.warn({ event: 'security', stage: `memory.${op}`, code: e.code, agent: sender, memory: recipient, remote: ctx.peer, detail: e.localDetails }, 'security event');
      }
      if (!audited) await this.#audit(digest, sender, recipient, `memory.${op}:${e.code}`);
      throw e;
    }
  }

  async #audit(messageHash: Uint8Array, senderId: string, recipientId: string, outcome: string): Promise<boolean> {
    try {
      await this.#o.audit.append({ messageHash, senderId, recipientId, messageType: MessageType.UNSPECIFIED, outcome });
      return true;
    } catch (error) {
      this.#log.error({ err: error, agent: senderId, memory: recipientId, outcome }, 'memory audit append failed');
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
    const now = this.#clock();
    const cert = verifyCertificate(this.#crypto, auth.certificate, { trustBundle: this.#o.trustBundle, nowMs: now, revocations: this.#o.revocations });
    if (auth.timestampMs < now - this.#skew) refuse('stale_timestamp', 'request timestamp too old');
    if (auth.timestampMs > now + this.#skew) refuse('future_timestamp', 'request timestamp in the future');
    if (!verifyMemoryRequest(this.#crypto, auth, { serviceId: this.#o.serviceId, path: ctx.path, body: ctx.requestBytes }, cert)) {
      refuse('bad_signature', 'request signature does not verify');
    }
    return { cert, certificate: auth.certificate, nonce: auth.nonce, nonceExpiresAtMs: auth.timestampMs + this.#skew + 1000 };
  }

  /**
   * Claims the caller's request nonce: the first statement of every call's transaction, so the
   * nonce and the call's effects commit together (one commit per call). A call refused later
   * rolls its transaction back; #run then records the nonce on its own, so every authenticated
   * request's nonce is persisted either way.
   * @throws RpcError `replay` when the nonce was used before
   */
  async #claim(q: Queryable, caller: Caller): Promise<void> {
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
  #tx<T>(caller: Caller, fn: (tx: Queryable) => Promise<T>, readOnly = false): Promise<T> {
    return this.#db.transaction(async (tx) => {
      if (readOnly) await tx.exec('SET LOCAL synchronous_commit = off');
      await this.#claim(tx, caller);
      return fn(tx);
    });
  }

  /** Records the certificate an agent called with (GetAgentCertificate), and refreshes its grants' certificates for the same key. */
  async #remember(caller: Caller): Promise<void> {
    const serial = toHex(caller.cert.serial);
    if (this.#seen.get(caller.cert.agentId) === serial) return;
    try {
      const encoded = toBinary(AgentCertificateSchema, caller.certificate);
      await this.#db.query(
        `INSERT INTO memory_agents (agent_id, serial, certificate, seen_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (agent_id) DO UPDATE SET serial = EXCLUDED.serial, certificate = EXCLUDED.certificate, seen_at_ms = EXCLUDED.seen_at_ms`,
        [caller.cert.agentId, caller.cert.serial, encoded, this.#clock()],
      );
      await this.#db.query('UPDATE memory_members SET certificate = $1 WHERE member_id = $2 AND public_key = $3', [encoded, caller.cert.agentId, caller.cert.identityPublicKey]);
      this.#seen.delete(caller.cert.agentId);
      this.#seen.set(caller.cert.agentId, serial);
      if (this.#seen.size > 10_000) this.#seen.delete(this.#seen.keys().next().value!);
    } catch (error) {
      this.#log.warn({ err: error, agent: caller.cert.agentId }, 'could not record an agent certificate');
    }
  }

  #assertTime(ms: bigint, what: string, now: number): void {
    if (ms < BigInt(now - this.#skew)) refuse('stale_timestamp', `${what} timestamp too old`);
    if (ms > BigInt(now + this.#skew)) refuse('future_timestamp', `${what} timestamp in the future`);
  }

  // ---------------------------------------------------------------------------
  // Access control: the member list, default deny

  /**
   * The memory and the caller's membership, or a refusal: unknown or expired memory and
   * non-member alike are `permission_denied` (no existence oracle); an expired grant is `expired`;
   * a member calling with another identity key than its grant's is `identity_mismatch`.
   */
  async #access(q: Queryable, memoryId: string, caller: Caller, now: number, min: MemoryAccess, lock: '' | 'share' | 'update'): Promise<{ memory: MemoryRow; member: MemberRow }> {
    if (!isMemoryId(memoryId)) refuse('malformed', 'memory_id must be "mem-" and 32 lowercase hex digits');
    const rows = await q.query<Record<string, unknown>>(
      `SELECT ${MEMORY_COLUMNS.split(', ').map((c) => `m.${c}`).join(', ')}, mm.member_id, mm.access, mm.public_key, mm.expires_at_ms AS member_expires_at_ms, mm.certificate
       FROM memories m LEFT JOIN memory_members mm ON mm.memory_id = m.memory_id AND mm.member_id = $2
       WHERE m.memory_id = $1${lock === '' ? '' : lock === 'share' ? ' FOR SHARE OF m' : ' FOR UPDATE OF m'}`,
      [memoryId, caller.cert.agentId],
    );
    const row = rows[0];
    const memory = row === undefined ? undefined : memoryRow(row);
    const denied = (): never => refuse('permission_denied', 'not a member of this memory, or no such memory');
    if (row === undefined || memory === undefined || !live(memory.expiresAtMs, now) || row['member_id'] === null || row['member_id'] === undefined) return denied();
    const member = memberRow({ ...row, expires_at_ms: row['member_expires_at_ms'] });
    if (!live(member.expiresAtMs, now)) refuse('expired', 'membership grant has expired');
    if (!this.#crypto.constantTimeEqual(member.publicKey, caller.cert.identityPublicKey)) refuse('identity_mismatch', 'the grant is for another identity key of this agent: ask an admin to grant again');
    if (member.access < min) refuse('permission_denied', `this operation needs ${MemoryAccess[min]!.toLowerCase()} access`);
    return { memory, member };
  }

  /** The stored log, rebuilt (without re-verifying signatures it checked on acceptance) and checked against the head. */
  async #loadLog(q: Queryable, memory: MemoryRow): Promise<Membership> {
    const rows = await q.query<{ entry: unknown }>('SELECT entry FROM memory_membership_log WHERE memory_id = $1 ORDER BY version', [memory.memoryId]);
    const log = Membership.restore(
      this.#crypto,
      memory.memoryId,
      rows.map((r) => fromBinary(MembershipEntrySchema, bytes(r.entry))),
    );
    if (log.version !== memory.membershipVersion || !this.#crypto.constantTimeEqual(log.head, memory.head)) refuse('state_corrupt', 'stored membership log does not match its head');
    return log;
  }

  async #currentEpoch(q: Queryable, memory: MemoryRow): Promise<EpochRecord> {
    const rows = await q.query<{ record: unknown }>('SELECT record FROM memory_epochs WHERE memory_id = $1 AND epoch = $2', [memory.memoryId, memory.currentEpoch]);
    if (rows[0] === undefined) refuse('state_corrupt', 'current epoch record missing');
    return fromBinary(EpochRecordSchema, bytes(rows[0].record));
  }

  /** Whether a holder of the current epoch key is no longer an active member (§18.5). */
  async #rotationRequired(q: Queryable, memory: MemoryRow, now: number): Promise<boolean> {
    const rows = await q.query(
      `SELECT 1 FROM memory_key_wraps w LEFT JOIN memory_members m ON m.memory_id = w.memory_id AND m.member_id = w.member_id
       WHERE w.memory_id = $1 AND w.epoch = $2 AND (m.member_id IS NULL OR (m.expires_at_ms > 0 AND m.expires_at_ms <= $3)) LIMIT 1`,
      [memory.memoryId, memory.currentEpoch, now],
    );
    return rows.length > 0;
  }

  /** Checks a new epoch and its key copies (exactly the active members) and stores them (§18.5, §18.6). */
  async #installEpoch(q: Queryable, memory: MemoryRow, log: Membership, epoch: EpochRecord, wraps: readonly KeyWrap[], caller: Caller, now: number): Promise<void> {
    assertEpochRecordShape(epoch);
    if (epoch.epoch !== memory.currentEpoch + 1) refuse('conflict', `epoch ${epoch.epoch} does not follow the current epoch ${memory.currentEpoch}`);
    if (epoch.membershipVersion !== log.version) refuse('conflict', `epoch is for membership version ${epoch.membershipVersion}, the log is at ${log.version}`);
    if (epoch.creatorId !== caller.cert.agentId) refuse('identity_mismatch', 'epoch creator is not the caller');
    this.#assertTime(epoch.createdAtMs, 'epoch', now);
    verifyEpochRecord(this.#crypto, log, epoch, await this.#currentEpoch(q, memory));
    const active = log.active(now);
    for (const w of wraps) {
      assertKeyWrapShape(w);
      if (w.epoch !== epoch.epoch || w.signerId !== caller.cert.agentId) refuse('malformed', 'key copies must be of the new epoch, signed by the caller');
      verifyKeyWrap(this.#crypto, log, w);
    }
    if (!sameMembers(this.#crypto, wraps, active)) refuse('conflict', 'the new epoch must be sealed to exactly the active members, each under its key on record');
    const count = await q.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM memory_epochs WHERE memory_id = $1', [memory.memoryId]);
    if (int(count[0]?.n ?? 0) >= MAX_EPOCHS) refuse('quota_exceeded', `a memory keeps at most ${MAX_EPOCHS} key epochs`);
    await q.query('INSERT INTO memory_epochs (memory_id, epoch, record) VALUES ($1, $2, $3)', [memory.memoryId, epoch.epoch, toBinary(EpochRecordSchema, epoch)]);
    // Older copies are no longer needed: the new key opens the earlier ones through back links.
    await q.query('DELETE FROM memory_key_wraps WHERE memory_id = $1 AND epoch < $2', [memory.memoryId, epoch.epoch]);
    for (const w of wraps) {
      await q.query('INSERT INTO memory_key_wraps (memory_id, member_id, epoch, wrap) VALUES ($1, $2, $3, $4)', [memory.memoryId, w.memberId, w.epoch, toBinary(KeyWrapSchema, w)]);
    }
    // Epochs no segment uses any more, below the oldest one a segment uses, are no longer needed.
    await q.query(
      `DELETE FROM memory_epochs WHERE memory_id = $1 AND epoch < COALESCE((SELECT MIN(key_epoch) FROM memory_segments WHERE memory_id = $1), $2)`,
      [memory.memoryId, epoch.epoch],
    );
    await q.query('UPDATE memories SET current_epoch = $2 WHERE memory_id = $1', [memory.memoryId, epoch.epoch]);
  }

  // ---------------------------------------------------------------------------
  // The methods

  createMemory(req: CreateMemoryRequest, ctx: CallContext): Promise<Init<typeof CreateMemoryResponseSchema>> {
    return this.#handle('create', ctx, derivedMemoryId(this.#crypto, req.entry), async (caller, now) => {
      const entry = assertMembershipEntryShape(req.entry);
      if (entry.memberId !== caller.cert.agentId || !this.#crypto.constantTimeEqual(entry.memberPublicKey, caller.cert.identityPublicKey)) {
        refuse('identity_mismatch', 'a memory is created by its owner, for its own identity key');
      }
      const log = Membership.create(this.#crypto, entry);
      const memoryId = log.memoryId;
      this.#assertTime(entry.timestampMs, 'entry', now);
      if (entry.expiresAtMs !== 0n && entry.expiresAtMs <= BigInt(now)) refuse('malformed', 'memory expiry is in the past');
      const epoch = assertEpochRecordShape(req.epoch);
      if (epoch.epoch !== 1) refuse('malformed', 'a memory starts at epoch 1');
      this.#assertTime(epoch.createdAtMs, 'epoch', now);
      verifyEpochRecord(this.#crypto, log, epoch, undefined);
      const wrap = assertKeyWrapShape(req.ownerWrap, 'owner_wrap');
      if (wrap.epoch !== 1 || wrap.memberId !== entry.memberId || wrap.signerId !== entry.memberId || !this.#crypto.constantTimeEqual(wrap.memberPublicKey, entry.memberPublicKey)) {
        refuse('malformed', "owner_wrap must be the owner's own copy of the epoch 1 key");
      }
      verifyKeyWrap(this.#crypto, log, wrap);
      const outcome = await this.#tx(caller, async (tx) => {
        await tx.query('INSERT INTO memory_owners (owner_id) VALUES ($1) ON CONFLICT DO NOTHING', [entry.memberId]);
        const owner = await tx.query<{ memories: unknown }>('SELECT memories FROM memory_owners WHERE owner_id = $1 FOR UPDATE', [entry.memberId]);
        const existing = await tx.query<{ entry: unknown }>('SELECT entry FROM memory_membership_log WHERE memory_id = $1 AND version = 1', [memoryId]);
        if (existing[0] !== undefined) {
          const stored = fromBinary(MembershipEntrySchema, bytes(existing[0].entry));
          if (this.#crypto.constantTimeEqual(stored.signature, entry.signature)) return 'already_applied';
          refuse('already_exists', 'a memory with this id exists');
        }
        if (int(owner[0]?.memories ?? 0) >= this.#quotas.maxMemoriesPerOwner) refuse('quota_exceeded', `an agent may own at most ${this.#quotas.maxMemoriesPerOwner} memories`);
        await tx.query(`INSERT INTO memories (${MEMORY_COLUMNS}) VALUES ($1, $2, $3, $4, 1, $5, 1, 0, 0)`, [
          memoryId,
          entry.memberId,
          Number(entry.timestampMs),
          Number(entry.expiresAtMs),
          log.head,
        ]);
        await tx.query('INSERT INTO memory_membership_log (memory_id, version, entry, entry_hash) VALUES ($1, 1, $2, $3)', [memoryId, toBinary(MembershipEntrySchema, entry), log.head]);
        await tx.query('INSERT INTO memory_members (memory_id, member_id, access, public_key, expires_at_ms, certificate) VALUES ($1, $2, $3, $4, 0, $5)', [
          memoryId,
          entry.memberId,
          MemoryAccess.ADMIN,
          entry.memberPublicKey,
          toBinary(AgentCertificateSchema, caller.certificate),
        ]);
        await tx.query('INSERT INTO memory_epochs (memory_id, epoch, record) VALUES ($1, 1, $2)', [memoryId, toBinary(EpochRecordSchema, epoch)]);
        await tx.query('INSERT INTO memory_key_wraps (memory_id, member_id, epoch, wrap) VALUES ($1, $2, 1, $3)', [memoryId, entry.memberId, toBinary(KeyWrapSchema, wrap)]);
        await tx.query('UPDATE memory_owners SET memories = memories + 1 WHERE owner_id = $1', [entry.memberId]);
        return 'ok';
      });
      return { response: { memoryId }, outcome };
    });
  }

  getMemory(req: GetMemoryRequest, ctx: CallContext): Promise<Init<typeof GetMemoryResponseSchema>> {
    return this.#handle('get', ctx, req.memoryId, async (caller, now) => {
      if (req.afterVersion < 0n) refuse('malformed', 'after_version must not be negative');
      return this.#tx(caller, async (tx) => {
        const { memory, member } = await this.#access(tx, req.memoryId, caller, now, MemoryAccess.READ, 'share');
        const entries = await tx.query<{ entry: unknown }>('SELECT entry FROM memory_membership_log WHERE memory_id = $1 AND version > $2 ORDER BY version', [
          memory.memoryId,
          req.afterVersion.toString(),
        ]);
        const members = await tx.query<Record<string, unknown>>(
          'SELECT member_id, access, public_key, expires_at_ms, certificate FROM memory_members WHERE memory_id = $1 AND (expires_at_ms = 0 OR expires_at_ms > $2) ORDER BY member_id',
          [memory.memoryId, now],
        );
        const epochs = await tx.query<{ record: unknown }>('SELECT record FROM memory_epochs WHERE memory_id = $1 ORDER BY epoch', [memory.memoryId]);
        const wrap = await tx.query<{ wrap: unknown }>('SELECT wrap FROM memory_key_wraps WHERE memory_id = $1 AND member_id = $2 ORDER BY epoch DESC LIMIT 1', [
          memory.memoryId,
          caller.cert.agentId,
        ]);
        const owner = await tx.query<Record<string, unknown>>('SELECT used_bytes, used_segments FROM memory_owners WHERE owner_id = $1', [memory.ownerId]);
        return {
          response: {
            memory: this.#summary(memory, member.access),
            entries: entries.map((r) => fromBinary(MembershipEntrySchema, bytes(r.entry))),
            members: members.map((r) => {
              const m = memberRow(r);
              return { memberId: m.memberId, access: m.access, memberPublicKey: m.publicKey, expiresAtMs: BigInt(m.expiresAtMs), certificate: fromBinary(AgentCertificateSchema, m.certificate) };
            }),
            epochs: epochs.map((r) => fromBinary(EpochRecordSchema, bytes(r.record))),
            ...(wrap[0] === undefined ? {} : { wrap: fromBinary(KeyWrapSchema, bytes(wrap[0].wrap)) }),
            usage: {
              bytes: BigInt(memory.usedBytes),
              segments: BigInt(memory.usedSegments),
              maxBytes: BigInt(this.#quotas.maxBytesPerMemory),
              maxSegments: BigInt(this.#quotas.maxSegmentsPerMemory),
              ownerBytes: BigInt(int(owner[0]?.['used_bytes'] ?? 0)),
              ownerSegments: BigInt(int(owner[0]?.['used_segments'] ?? 0)),
              ownerMaxBytes: BigInt(this.#quotas.maxBytesPerOwner),
              ownerMaxSegments: BigInt(this.#quotas.maxSegmentsPerOwner),
            },
            rotationRequired: await this.#rotationRequired(tx, memory, now),
          },
        };
      }, true);
    });
  }

  listMemories(req: ListMemoriesRequest, ctx: CallContext): Promise<Init<typeof ListMemoriesResponseSchema>> {
    return this.#handle('list', ctx, 'memory-service', async (caller, now) => {
      const size = req.pageSize === 0 ? 100 : req.pageSize;
      if (size < 1 || size > 500) refuse('malformed', 'page_size must be 1..500');
      if (req.pageToken !== '' && !isMemoryId(req.pageToken)) refuse('malformed', 'page_token is not one this service issued');
      const rows = await this.#tx(caller, (tx) => tx.query<Record<string, unknown>>(
        `SELECT ${MEMORY_COLUMNS.split(', ').map((c) => `m.${c}`).join(', ')}, mm.access FROM memories m JOIN memory_members mm ON mm.memory_id = m.memory_id
         WHERE mm.member_id = $1 AND mm.public_key = $2 AND (mm.expires_at_ms = 0 OR mm.expires_at_ms > $3) AND (m.expires_at_ms = 0 OR m.expires_at_ms > $3) AND m.memory_id > $4
         ORDER BY m.memory_id LIMIT $5`,
        [caller.cert.agentId, caller.cert.identityPublicKey, now, req.pageToken, size + 1],
      ), true);
      const page = rows.slice(0, size);
      return {
        response: {
          memories: page.map((r) => this.#summary(memoryRow(r), int(r['access']) as MemoryAccess)),
          nextPageToken: rows.length > size ? String(page[page.length - 1]!['memory_id']) : '',
        },
      };
    });
  }

  listSegments(req: ListSegmentsRequest, ctx: CallContext): Promise<Init<typeof ListSegmentsResponseSchema>> {
    return this.#handle('list_segments', ctx, req.memoryId, async (caller, now) => {
      const size = req.pageSize === 0 ? 100 : req.pageSize;
      if (size < 1 || size > 1000) refuse('malformed', 'page_size must be 1..1000');
      if (req.pageToken !== '' && !isSegmentId(req.pageToken)) refuse('malformed', 'page_token is not one this service issued');
      const rows = await this.#tx(caller, async (tx) => {
        await this.#access(tx, req.memoryId, caller, now, MemoryAccess.READ, '');
        return tx.query<{ record: unknown; segment_id: unknown }>(
          `SELECT segment_id, record FROM memory_segments WHERE memory_id = $1 AND segment_id > $2 AND (expires_at_ms = 0 OR expires_at_ms > $3)
           ORDER BY segment_id LIMIT $4`,
          [req.memoryId, req.pageToken, now, size + 1],
        );
      }, true);
      const page = rows.slice(0, size);
      return {
        response: {
          segments: page.map((r) => fromBinary(WriteRecordSchema, bytes(r.record))),
          nextPageToken: rows.length > size ? String(page[page.length - 1]!.segment_id) : '',
        },
      };
    });
  }

  readSegment(req: ReadSegmentRequest, ctx: CallContext): Promise<Init<typeof ReadSegmentResponseSchema>> {
    return this.#handle('read', ctx, req.memoryId, async (caller, now) => {
      if (!isSegmentId(req.segmentId)) refuse('malformed', 'segment_id must be 1..128 chars of [a-z0-9._:/-] starting with [a-z0-9]');
      const rows = await this.#tx(caller, async (tx) => {
        await this.#access(tx, req.memoryId, caller, now, MemoryAccess.READ, '');
        return tx.query<{ record: unknown; ciphertext: unknown }>(
          'SELECT record, ciphertext FROM memory_segments WHERE memory_id = $1 AND segment_id = $2 AND (expires_at_ms = 0 OR expires_at_ms > $3)',
          [req.memoryId, req.segmentId, now],
        );
      }, true);
      if (rows[0] === undefined) refuse('not_found', 'no such segment');
      return { response: { record: fromBinary(WriteRecordSchema, bytes(rows[0].record)), ciphertext: bytes(rows[0].ciphertext) } };
    });
  }

  writeSegment(req: WriteSegmentRequest, ctx: CallContext): Promise<Init<typeof WriteSegmentResponseSchema>> {
    return this.#handle('write', ctx, req.memoryId, async (caller, now) => {
      const record = assertWriteRecordShape(req.record);
      if (record.writerId !== caller.cert.agentId) refuse('identity_mismatch', 'the writer must be the caller');
      if (BigInt(req.ciphertext.length) !== record.ciphertextBytes || !this.#crypto.constantTimeEqual(this.#crypto.blake3(req.ciphertext), record.ciphertextDigest)) {
        refuse('malformed', 'ciphertext does not match the digest and length in its record');
      }
      if (!isMemoryId(req.memoryId)) refuse('malformed', 'memory_id must be "mem-" and 32 lowercase hex digits');
      if (!this.#crypto.ed25519.verify(record.signature, writeLayout(req.memoryId, record), caller.cert.identityPublicKey)) refuse('bad_signature', 'write record signature does not verify');
      return this.#tx(caller, async (tx): Promise<Outcome<Init<typeof WriteSegmentResponseSchema>>> => {
        const { memory } = await this.#access(tx, req.memoryId, caller, now, MemoryAccess.WRITE, 'update');
        const rows = await tx.query<{ record: unknown; size: unknown; expires_at_ms: unknown }>(
          'SELECT record, size, expires_at_ms FROM memory_segments WHERE memory_id = $1 AND segment_id = $2 FOR UPDATE',
          [memory.memoryId, record.segmentId],
        );
        const stored = rows[0];
        const current: WriteRecord | undefined = stored === undefined || !live(int(stored.expires_at_ms), now) ? undefined : fromBinary(WriteRecordSchema, bytes(stored.record));
        const currentVersion = current?.version ?? 0n;
        if (currentVersion !== record.previousVersion) {
          // A retry of a write that was stored (its answer lost) is recognised by its signature.
          if (current !== undefined && sameWrite(this.#crypto, current, record)) {
            return { response: { outcome: { case: 'accepted', value: { version: current.version, alreadyApplied: true } } }, outcome: 'already_applied' };
          }
          return { response: { outcome: { case: 'conflict', value: { currentVersion, ...(current === undefined ? {} : { current }) } } }, outcome: 'cas_conflict' };
        }
        // Record times are checked after the compare-and-set, so an old write retried late is still recognised above.
        this.#assertTime(record.timestampMs, 'write', now);
        if (record.expiresAtMs !== 0n && record.expiresAtMs <= BigInt(now)) refuse('malformed', 'segment expiry is in the past');
        if (record.keyEpoch !== memory.currentEpoch) refuse('conflict', `key epoch ${record.keyEpoch} is not the current epoch ${memory.currentEpoch}`);
        if (await this.#rotationRequired(tx, memory, now)) refuse('rotation_required', 'a holder of the current key left: start the next epoch first');
        const oldSize = stored === undefined ? 0 : int(stored.size);
        const dBytes = req.ciphertext.length - oldSize;
        const dSegments = stored === undefined ? 1 : 0;
        if (memory.usedBytes + dBytes > this.#quotas.maxBytesPerMemory) refuse('quota_exceeded', `the memory would hold more than ${this.#quotas.maxBytesPerMemory} bytes`);
        if (memory.usedSegments + dSegments > this.#quotas.maxSegmentsPerMemory) refuse('quota_exceeded', `the memory would hold more than ${this.#quotas.maxSegmentsPerMemory} segments`);
        const owner = await tx.query<Record<string, unknown>>('SELECT used_bytes, used_segments FROM memory_owners WHERE owner_id = $1 FOR UPDATE', [memory.ownerId]);
        if (int(owner[0]?.['used_bytes'] ?? 0) + dBytes > this.#quotas.maxBytesPerOwner) refuse('quota_exceeded', `the owner's memories would hold more than ${this.#quotas.maxBytesPerOwner} bytes`);
        if (int(owner[0]?.['used_segments'] ?? 0) + dSegments > this.#quotas.maxSegmentsPerOwner) {
          refuse('quota_exceeded', `the owner's memories would hold more than ${this.#quotas.maxSegmentsPerOwner} segments`);
        }
        await tx.query(
          `INSERT INTO memory_segments (memory_id, segment_id, version, key_epoch, record, ciphertext, size, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (memory_id, segment_id) DO UPDATE SET version = EXCLUDED.version, key_epoch = EXCLUDED.key_epoch, record = EXCLUDED.record,
             ciphertext = EXCLUDED.ciphertext, size = EXCLUDED.size, expires_at_ms = EXCLUDED.expires_at_ms`,
          [memory.memoryId, record.segmentId, record.version.toString(), record.keyEpoch, toBinary(WriteRecordSchema, record), req.ciphertext, req.ciphertext.length, Number(record.expiresAtMs)],
        );
        await tx.query('UPDATE memories SET used_bytes = used_bytes + $2, used_segments = used_segments + $3 WHERE memory_id = $1', [memory.memoryId, dBytes, dSegments]);
        await tx.query('UPDATE memory_owners SET used_bytes = used_bytes + $2, used_segments = used_segments + $3 WHERE owner_id = $1', [memory.ownerId, dBytes, dSegments]);
        return { response: { outcome: { case: 'accepted', value: { version: record.version, alreadyApplied: false } } } };
      });
    });
  }

  updateMembership(req: UpdateMembershipRequest, ctx: CallContext): Promise<Init<typeof UpdateMembershipResponseSchema>> {
    const op = req.entry?.change === MembershipChange.REVOKE ? 'revoke' : 'grant';
    return this.#handle(op, ctx, req.memoryId, async (caller, now) => {
      const entry = assertMembershipEntryShape(req.entry);
      if (entry.signerId !== caller.cert.agentId) refuse('identity_mismatch', 'the entry must be signed by the caller');
      return this.#tx(caller, async (tx): Promise<Outcome<Init<typeof UpdateMembershipResponseSchema>>> => {
        const { memory } = await this.#access(tx, req.memoryId, caller, now, MemoryAccess.ADMIN, 'update');
        const log = await this.#loadLog(tx, memory);
        if (entry.version <= log.version) {
          const stored = log.entries[Number(entry.version) - 1];
          if (stored !== undefined && this.#crypto.constantTimeEqual(stored.signature, entry.signature)) {
            return { response: { membershipVersion: log.version, currentEpoch: memory.currentEpoch }, outcome: 'already_applied' };
          }
        }
        log.append(entry); // version, chain, signer rights, signature
        this.#assertTime(entry.timestampMs, 'entry', now);
        const hash = membershipEntryHash(this.#crypto, memory.memoryId, entry);
        if (entry.change === MembershipChange.GRANT) {
          if (entry.expiresAtMs !== 0n && entry.expiresAtMs <= BigInt(now)) refuse('malformed', 'grant expiry is in the past');
          if (log.members().length > this.#quotas.maxMembersPerMemory) refuse('quota_exceeded', `a memory has at most ${this.#quotas.maxMembersPerMemory} members`);
          const certificate = req.memberCertificate;
          if (certificate === undefined) refuse('malformed', "a grant carries the member's certificate");
          const cert = verifyCertificate(this.#crypto, certificate, { trustBundle: this.#o.trustBundle, nowMs: now, revocations: this.#o.revocations, expectedAgentId: entry.memberId });
          if (!this.#crypto.constantTimeEqual(cert.identityPublicKey, entry.memberPublicKey)) refuse('identity_mismatch', "the grant is not for the key in the member's certificate");
          if (req.wraps.length !== 1 || req.epoch !== undefined) refuse('malformed', "a grant carries exactly the member's copy of the current epoch key");
          const wrap = assertKeyWrapShape(req.wraps[0]);
          if (wrap.epoch !== memory.currentEpoch) refuse('conflict', `the key copy is of epoch ${wrap.epoch}, the current epoch is ${memory.currentEpoch}`);
          if (wrap.memberId !== entry.memberId || wrap.signerId !== caller.cert.agentId || !this.#crypto.constantTimeEqual(wrap.memberPublicKey, entry.memberPublicKey)) {
            refuse('malformed', "the key copy must be the granted member's, sealed to the granted key, signed by the caller");
          }
          verifyKeyWrap(this.#crypto, log, wrap);
          await tx.query(
            `INSERT INTO memory_members (memory_id, member_id, access, public_key, expires_at_ms, certificate) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (memory_id, member_id) DO UPDATE SET access = EXCLUDED.access, public_key = EXCLUDED.public_key, expires_at_ms = EXCLUDED.expires_at_ms, certificate = EXCLUDED.certificate`,
            [memory.memoryId, entry.memberId, entry.access, entry.memberPublicKey, Number(entry.expiresAtMs), toBinary(AgentCertificateSchema, certificate)],
          );
          await tx.query('DELETE FROM memory_key_wraps WHERE memory_id = $1 AND member_id = $2', [memory.memoryId, entry.memberId]);
          await tx.query('INSERT INTO memory_key_wraps (memory_id, member_id, epoch, wrap) VALUES ($1, $2, $3, $4)', [memory.memoryId, entry.memberId, wrap.epoch, toBinary(KeyWrapSchema, wrap)]);
        } else {
          if (req.epoch === undefined) refuse('malformed', 'a revocation carries the next key epoch');
          if (req.memberCertificate !== undefined) refuse('malformed', 'a revocation carries no certificate');
          await tx.query('DELETE FROM memory_members WHERE memory_id = $1 AND member_id = $2', [memory.memoryId, entry.memberId]);
          await tx.query('DELETE FROM memory_key_wraps WHERE memory_id = $1 AND member_id = $2', [memory.memoryId, entry.memberId]);
          await this.#installEpoch(tx, memory, log, req.epoch, req.wraps, caller, now);
        }
        await tx.query('INSERT INTO memory_membership_log (memory_id, version, entry, entry_hash) VALUES ($1, $2, $3, $4)', [
          memory.memoryId,
          entry.version.toString(),
          toBinary(MembershipEntrySchema, entry),
          hash,
        ]);
        await tx.query('UPDATE memories SET membership_version = $2, membership_head = $3 WHERE memory_id = $1', [memory.memoryId, entry.version.toString(), hash]);
        const epoch = entry.change === MembershipChange.REVOKE ? memory.currentEpoch + 1 : memory.currentEpoch;
        return { response: { membershipVersion: entry.version, currentEpoch: epoch } };
      });
    });
  }

  rotateEpoch(req: RotateEpochRequest, ctx: CallContext): Promise<Init<typeof RotateEpochResponseSchema>> {
    return this.#handle('rotate', ctx, req.memoryId, async (caller, now) => {
      const epoch = assertEpochRecordShape(req.epoch);
      return this.#tx(caller, async (tx): Promise<Outcome<Init<typeof RotateEpochResponseSchema>>> => {
        const { memory } = await this.#access(tx, req.memoryId, caller, now, MemoryAccess.WRITE, 'update');
        if (epoch.epoch <= memory.currentEpoch) {
          const stored = await tx.query<{ record: unknown }>('SELECT record FROM memory_epochs WHERE memory_id = $1 AND epoch = $2', [memory.memoryId, epoch.epoch]);
          if (stored[0] !== undefined && this.#crypto.constantTimeEqual(fromBinary(EpochRecordSchema, bytes(stored[0].record)).signature, epoch.signature)) {
            return { response: { currentEpoch: memory.currentEpoch }, outcome: 'already_applied' };
          }
        }
        const log = await this.#loadLog(tx, memory);
        await this.#installEpoch(tx, memory, log, epoch, req.wraps, caller, now);
        return { response: { currentEpoch: epoch.epoch } };
      });
    });
  }

  getAgentCertificate(req: GetAgentCertificateRequest, ctx: CallContext): Promise<Init<typeof GetAgentCertificateResponseSchema>> {
    return this.#handle('get_certificate', ctx, req.agentId, async (caller) => {
      if (!isAgentId(req.agentId)) refuse('malformed', 'agent_id must be an agent id');
      const rows = await this.#tx(caller, (tx) => tx.query<{ certificate: unknown }>('SELECT certificate FROM memory_agents WHERE agent_id = $1', [req.agentId]), true);
      let certificate = rows[0] === undefined ? undefined : fromBinary(AgentCertificateSchema, bytes(rows[0].certificate));
      if (certificate === undefined && this.#o.directory !== undefined) certificate = await this.#o.directory(req.agentId);
      if (certificate === undefined) refuse('not_found', 'no certificate known for this agent');
      return { response: { certificate } };
    });
  }

  #summary(m: MemoryRow, access: MemoryAccess): Init<typeof ListMemoriesResponseSchema>['memories'] extends (infer S)[] | undefined ? S : never {
    return {
      memoryId: m.memoryId,
      ownerId: m.ownerId,
      access,
      createdAtMs: BigInt(m.createdAtMs),
      expiresAtMs: BigInt(m.expiresAtMs),
      membershipVersion: m.membershipVersion,
      currentEpoch: m.currentEpoch,
    };
  }

  // ---------------------------------------------------------------------------
  // Expiry (§18.10)

  /**
   * Deletes expired memories (with everything in them), expired segments and
   * used request nonces past the skew window; runs every `sweepIntervalMs`.
   * Each memory is swept in its own transaction, its usage and its owner's kept exact.
   */
  async sweep(): Promise<{ memories: number; segments: number; nonces: number }> {
    const now = this.#clock();
    let memories = 0;
    let segments = 0;
    try {
      const expired = await this.#db.query<{ memory_id: unknown }>('SELECT memory_id FROM memories WHERE expires_at_ms > 0 AND expires_at_ms <= $1 ORDER BY memory_id LIMIT 1000', [now]);
      for (const r of expired) {
        memories += await this.#track(
          this.#db.transaction(async (tx) => {
            const rows = await tx.query<Record<string, unknown>>(`SELECT ${MEMORY_COLUMNS} FROM memories WHERE memory_id = $1 AND expires_at_ms > 0 AND expires_at_ms <= $2 FOR UPDATE`, [
              String(r.memory_id),
              now,
            ]);
            if (rows[0] === undefined) return 0;
            const m = memoryRow(rows[0]);
            await tx.query('SELECT 1 FROM memory_owners WHERE owner_id = $1 FOR UPDATE', [m.ownerId]);
            await tx.query('DELETE FROM memories WHERE memory_id = $1', [m.memoryId]);
            await tx.query('UPDATE memory_owners SET memories = memories - 1, used_bytes = used_bytes - $2, used_segments = used_segments - $3 WHERE owner_id = $1', [
              m.ownerId,
              m.usedBytes,
              m.usedSegments,
            ]);
            return 1;
          }),
        );
      }
      const withExpired = await this.#db.query<{ memory_id: unknown }>(
        'SELECT DISTINCT memory_id FROM memory_segments WHERE expires_at_ms > 0 AND expires_at_ms <= $1 ORDER BY memory_id LIMIT 1000',
        [now],
      );
      for (const r of withExpired) {
        segments += await this.#track(
          this.#db.transaction(async (tx) => {
            const rows = await tx.query<Record<string, unknown>>(`SELECT ${MEMORY_COLUMNS} FROM memories WHERE memory_id = $1 FOR UPDATE`, [String(r.memory_id)]);
            if (rows[0] === undefined) return 0;
            const m = memoryRow(rows[0]);
            await tx.query('SELECT 1 FROM memory_owners WHERE owner_id = $1 FOR UPDATE', [m.ownerId]);
            const gone = await tx.query<{ size: unknown }>('DELETE FROM memory_segments WHERE memory_id = $1 AND expires_at_ms > 0 AND expires_at_ms <= $2 RETURNING size', [m.memoryId, now]);
            const freed = gone.reduce((n, g) => n + int(g.size), 0);
            await tx.query('UPDATE memories SET used_bytes = used_bytes - $2, used_segments = used_segments - $3 WHERE memory_id = $1', [m.memoryId, freed, gone.length]);
            await tx.query('UPDATE memory_owners SET used_bytes = used_bytes - $2, used_segments = used_segments - $3 WHERE owner_id = $1', [m.ownerId, freed, gone.length]);
            return gone.length;
          }),
        );
      }
      const nonces = await this.#track(this.#db.query('DELETE FROM memory_request_nonces WHERE expires_at_ms <= $1 RETURNING agent_id', [now]));
      this.#limiter.sweep();
      if (memories + segments > 0) this.#log.info({ expired_memories: memories, expired_segments: segments }, 'memory sweep');
      return { memories, segments, nonces: nonces.length };
    } catch (error) {
      this.#log.error({ err: error }, 'memory sweep failed');
      throw error;
    }
  }
}

/** The memory id a CREATE entry derives, for its audit entry ('memory-service' when it derives none). */
function derivedMemoryId(crypto: ParleyCrypto, entry: MembershipEntry | undefined): string {
  try {
    const e = assertMembershipEntryShape(entry);
    return memoryIdOf(crypto, e.memberId, e.memberPublicKey, e.creationNonce);
  } catch {
    return 'memory-service';
  }
}
