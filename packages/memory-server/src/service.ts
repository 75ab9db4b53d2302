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
 *
 * This class is the service's face; the work is in one module per concern: call.ts (the per-call
 * pipeline: authentication, rate limit, nonce, audit), access.ts (membership checks and key epochs),
 * memories.ts, segments.ts and membership.ts (the operations), sweep.ts (expiry), rows.ts (stored shapes).
 */
import type { AuditLog } from '@parley/audit';
import type { ParleyCrypto } from '@parley/crypto-core';
import type { Database } from '@parley/db';
import type { RevocationChecker, TrustBundle } from '@parley/identity';
import { MAX_EPOCHS, MAX_MEMBERS } from '@parley/memory';
import {
  MembershipChange,
  type AgentCertificate,
  type CreateMemoryRequest,
  type CreateMemoryResponseSchema,
  type GetAgentCertificateRequest,
  type GetAgentCertificateResponseSchema,
  type GetMemoryRequest,
  type GetMemoryResponseSchema,
  type ListMemoriesRequest,
  type ListMemoriesResponseSchema,
  type ListSegmentsRequest,
  type ListSegmentsResponseSchema,
  type ReadSegmentRequest,
  type ReadSegmentResponseSchema,
  type RotateEpochRequest,
  type RotateEpochResponseSchema,
  type UpdateMembershipRequest,
  type UpdateMembershipResponseSchema,
  type WriteSegmentRequest,
  type WriteSegmentResponseSchema,
} from '@parley/proto';
import { RateLimiter, type CallContext } from '@parley/rpc';
import { CallPipeline, type Init, type OpContext } from './call.js';
import { createMemory, derivedMemoryId, getAgentCertificate, getMemory, listMemories } from './memories.js';
import { rotateEpoch, updateMembership } from './membership.js';
import { migrateMemorySchema } from './schema.js';
import { listSegments, readSegment, writeSegment } from './segments.js';
import { sweep } from './sweep.js';
import { DEFAULT_MEMORY_QUOTAS, type MemoryLogger, type MemoryQuotas } from './settings.js';

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

/**
 * parley.v1.MemoryService over a database. Create with {@link MemoryStore.open};
 * call {@link close} before closing the audit log and the database.
 */
export class MemoryStore {
  readonly #c: OpContext;
  readonly #clock: () => number;
  readonly #quotas: MemoryQuotas;
  readonly #limiter: RateLimiter;
  readonly #log: MemoryLogger;
  readonly #calls: CallPipeline;
  readonly #timer: NodeJS.Timeout;

  private constructor(options: MemoryServiceOptions) {
    const crypto = options.crypto;
    const db = options.database;
    this.#clock = options.clock ?? Date.now;
    const skewMs = options.maxClockSkewMs ?? 60_000;
    this.#quotas = { ...DEFAULT_MEMORY_QUOTAS, ...options.quotas };
    for (const [k, v] of Object.entries(this.#quotas)) if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`memory quota ${k} must be a positive integer`);
    if (this.#quotas.maxMembersPerMemory > MAX_MEMBERS) throw new RangeError(`maxMembersPerMemory must be at most ${MAX_MEMBERS}`);
    if (this.#quotas.maxEpochsPerMemory > MAX_EPOCHS) throw new RangeError(`maxEpochsPerMemory must be at most ${MAX_EPOCHS}`);
    this.#limiter = new RateLimiter({ ...(options.rateLimit ?? { ratePerSecond: 200, burst: 400 }), clock: this.#clock });
    this.#log = options.logger;
    this.#c = { crypto, db, skewMs, quotas: this.#quotas, trustBundle: options.trustBundle, revocations: options.revocations, directory: options.directory };
    this.#calls = new CallPipeline({
      crypto,
      db,
      audit: options.audit,
      serviceId: options.serviceId,
      trustBundle: options.trustBundle,
      revocations: options.revocations,
      logger: options.logger,
      clock: this.#clock,
      skewMs,
      limiter: this.#limiter,
    });
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

  /** Calls refused with `rate_limited` since the store opened (they write no nonce and no audit entry, §18.8). */
  get rateLimitedCalls(): number {
    return this.#calls.rateLimitedCalls;
  }

  /** Calls refused before authentication beyond their audit bound (§18.10): refused, counted, not audited. */
  get unauditedRefusals(): number {
    return this.#calls.unauditedRefusals;
  }

  /** Stops the sweep and waits for calls in flight (then close the audit log and the database). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#calls.drain();
  }

  // ---------------------------------------------------------------------------
  // The methods: each one call through the pipeline (memories.ts, segments.ts, membership.ts)

  createMemory(req: CreateMemoryRequest, ctx: CallContext): Promise<Init<typeof CreateMemoryResponseSchema>> {
    return this.#calls.handle('create', ctx, derivedMemoryId(this.#c.crypto, req.entry), (caller, now) => createMemory(this.#c, req, caller, now));
  }

  getMemory(req: GetMemoryRequest, ctx: CallContext): Promise<Init<typeof GetMemoryResponseSchema>> {
    return this.#calls.handle('get', ctx, req.memoryId, (caller, now) => getMemory(this.#c, req, caller, now));
  }

  listMemories(req: ListMemoriesRequest, ctx: CallContext): Promise<Init<typeof ListMemoriesResponseSchema>> {
    return this.#calls.handle('list', ctx, 'memory-service', (caller, now) => listMemories(this.#c, req, caller, now));
  }

  listSegments(req: ListSegmentsRequest, ctx: CallContext): Promise<Init<typeof ListSegmentsResponseSchema>> {
    return this.#calls.handle('list_segments', ctx, req.memoryId, (caller, now) => listSegments(this.#c, req, caller, now));
  }

  readSegment(req: ReadSegmentRequest, ctx: CallContext): Promise<Init<typeof ReadSegmentResponseSchema>> {
    return this.#calls.handle('read', ctx, req.memoryId, (caller, now) => readSegment(this.#c, req, caller, now));
  }

  writeSegment(req: WriteSegmentRequest, ctx: CallContext): Promise<Init<typeof WriteSegmentResponseSchema>> {
    return this.#calls.handle('write', ctx, req.memoryId, (caller, now) => writeSegment(this.#c, req, caller, now));
  }

  updateMembership(req: UpdateMembershipRequest, ctx: CallContext): Promise<Init<typeof UpdateMembershipResponseSchema>> {
    const op = req.entry?.change === MembershipChange.REVOKE ? 'revoke' : 'grant';
    return this.#calls.handle(op, ctx, req.memoryId, (caller, now) => updateMembership(this.#c, req, caller, now));
  }

  rotateEpoch(req: RotateEpochRequest, ctx: CallContext): Promise<Init<typeof RotateEpochResponseSchema>> {
    return this.#calls.handle('rotate', ctx, req.memoryId, (caller, now) => rotateEpoch(this.#c, req, caller, now));
  }

  getAgentCertificate(req: GetAgentCertificateRequest, ctx: CallContext): Promise<Init<typeof GetAgentCertificateResponseSchema>> {
    return this.#calls.handle('get_certificate', ctx, req.agentId, (caller) => getAgentCertificate(this.#c, req, caller));
  }

  /**
   * Deletes expired memories (with everything in them), expired segments and
   * used request nonces past the skew window; runs every `sweepIntervalMs`.
   * Each memory is swept in its own transaction, its usage and its owner's kept exact.
   */
  sweep(): Promise<{ memories: number; segments: number; nonces: number }> {
    return sweep({ db: this.#c.db, clock: this.#clock, limiter: this.#limiter, logger: this.#log, track: (p) => this.#calls.track(p) });
  }
}
