/**
 * MemoryClient: the agent's side of shared memory (docs/PROTOCOL.md §18). It
 * talks to a store (parley.v1.MemoryService, served by the gateway) over gRPC,
 * signing every request with the agent's identity key (§18.8), and does all
 * the cryptography itself: it verifies the membership log, key epochs, key
 * copies and write records the store returns (§18.4–§18.7), opens its copy of
 * the epoch key, encrypts and signs what it writes, and makes new epochs and
 * key copies when it grants, revokes or rotates. The store only ever sees
 * ciphertext, digests and signatures.
 *
 * Every mutating call sends a signed record the store recognises when it sees
 * it again, so a call that failed with `unavailable` or `deadline_exceeded` is
 * retried with the same record (a write acknowledged before a crash is never
 * applied twice, and one lost with the crash is applied once).
 */
import { credentials as grpcCredentials, type ChannelCredentials, type ChannelOptions } from '@grpc/grpc-js';
import { looksLikeParleyCrypto, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import { TrustBundle, assertLocalIdentity, verifyCertificate, type RevocationChecker } from '@parley/identity';
import {
  MemoryService,
  type AgentCertificate,
  type EpochRecord,
  type GetMemoryResponse,
  type KeyWrap,
  type MemoryUsage,
  type WriteRecord,
} from '@parley/proto';
import { createClient, parseHostPort, type Client } from '@parley/rpc';
import { MemoryError, fail, isMemoryError } from './errors.js';
import { membershipEntryHash } from './layouts.js';
import {
  LIST_MEMORIES_PAGE_SIZE,
  LIST_SEGMENTS_PAGE_SIZE,
  MAX_LISTED_MEMORIES,
  MAX_LISTED_SEGMENTS,
  MEMORY_MAX_RECEIVE_BYTES,
  MEMORY_MAX_SEND_BYTES,
  MEMORY_SEEN_ENTRIES,
} from './limits.js';
import { Membership, isCutEpoch, sameWrite, verifyCurrentEpoch, verifyEpochRecord, verifyKeyWrap, verifyWriteRecord, type Member } from './model.js';
import {
  accessOf,
  assertAgent,
  assertMemoryId,
  assertSegmentId,
  DEFAULT_MAX_SEGMENTS_PER_MEMORY,
  levelOf,
  MAX_SEGMENT_PLAINTEXT_BYTES,
  MEMORY_CLOCK_SKEW_MS,
  type AccessLevel,
} from './names.js';
import { changeEntry, createEntry, followBackLink, isCommitmentMismatch, newCutEpoch, newEpoch, openWrap, openWrite, sealWrite, wrapKey, type EpochKey, type SealedWrite } from './records.js';
import { memoryRequestSigner, type MemoryIdentity } from './request-auth.js';

/** Settings of a {@link MemoryClient}. */
export interface MemoryClientOptions {
  readonly crypto: ParleyCrypto;
  /** This agent: id, Ed25519 identity secret key, certificate (a session `LocalIdentity`). */
  readonly identity: MemoryIdentity;
  /** `host:port` of the store (the gateway). */
  readonly address: string;
  /** The store's name, bound into every request signature: the gateway id. */
  readonly serviceId: string;
  /** Issuer keys members' and owners' certificates must chain to. */
  readonly trustBundle: TrustBundle;
  /** When given, certificates are also checked against it before a key is sealed to them. */
  readonly revocations?: RevocationChecker;
  /** Default: plaintext (loopback only). */
  readonly credentials?: ChannelCredentials;
  readonly channelOptions?: ChannelOptions;
  /** Deadline of each call, ms. Default 30 000. */
  readonly timeoutMs?: number;
  /** How long a call is retried while the store is unavailable, ms (every call is idempotent, §18.10). Default 30 000; 0: no retry. */
  readonly retryUnavailableMs?: number;
  /** Memories whose verified state is cached (keys included, wiped on eviction). Default 64. */
  readonly cacheSize?: number;
  /**
   * Memories whose highest verified log version (and its entry hash) and epoch are remembered after they
   * leave the cache, so a store cannot roll them back unnoticed (`replay`). Default 100,000, oldest dropped.
   */
  readonly seenSize?: number;
  /** The clock skew the store allows (its `maxClockSkewMs`), ms. Default 60 000. */
  readonly maxClockSkewMs?: number;
  readonly clock?: () => number;
}

/** A member of a memory as the verified log says. */
export interface MemoryMemberInfo {
  readonly agentId: string;
  readonly access: AccessLevel;
  /** Grant expiry, ms since the epoch; undefined: never. */
  readonly expiresAtMs: number | undefined;
}

/** A memory as this agent sees it (from the verified membership log). */
export interface MemoryInfo {
  readonly memoryId: string;
  readonly ownerId: string;
  /** This agent's level. */
  readonly access: AccessLevel;
  readonly createdAtMs: number;
  readonly expiresAtMs: number | undefined;
  /** Active members (grants in force now), ordered by id. */
  readonly members: readonly MemoryMemberInfo[];
  readonly membershipVersion: bigint;
  readonly currentEpoch: number;
  readonly usage: MemoryUsageInfo;
  /**
   * Key copies and back links members made that did not open for this agent (§18.5), newest epoch first: what
   * needs those keys fails `decrypt_failed`. The owner or an admin repairs it by revoking the member (when its
   * own copy of the current epoch did not open, with a cut epoch: what was written before the cut stays out of
   * reach for this agent). Only a fault with `proven` is certainly the member's (see {@link MemoryKeyFault}).
   */
  readonly keyFaults: readonly MemoryKeyFault[];
}

/**
 * A key copy or back link a member signed that does not give this agent the key (§18.5). The store cannot check a
 * sealed key, so the answer is adopted and the rest of the memory stays usable; the member named is the one who
 * signed it — certainly at fault when `proven`, possibly when not (see `proven`).
 */
export interface MemoryKeyFault {
  /** The epoch whose key copy (for `keyCopy`) or back link (for `backLink`) does not open. */
  readonly epoch: number;
  /** The member named: the copy's signer, or the epoch's creator (the back link's). */
  readonly memberId: string;
  readonly kind: 'keyCopy' | 'backLink';
  /**
   * true: the member's fault, provably — the copy, sealed to this agent's identity key, does not open with it or
   * names another memory, epoch or member; or the back link does not open under the key its epoch commits to
   * (what the member signed is wrong whatever record it is paired with). false: it opens, to a key that does not
   * match the commitment of the epoch record the store served with it. Either the member sealed another key, or
   * the store paired genuine material with another genuine record of the epoch (a copy's signature does not cover
   * the commitment; for a back link, the record of the epoch before, which epoch records do not chain to): revoke
   * the member only if other evidence says it is at fault. Either way a `keyCopy` fault of the current epoch makes
   * this agent's next revocation a cut (§18.5).
   */
  readonly proven: boolean;
}

/** Quota usage of a memory and its owner. */
export interface MemoryUsageInfo {
  readonly bytes: number;
  readonly segments: number;
  readonly maxBytes: number;
  readonly maxSegments: number;
  readonly ownerBytes: number;
  readonly ownerSegments: number;
  readonly ownerMaxBytes: number;
  readonly ownerMaxSegments: number;
}

/** A memory in a listing (as the store reports it; `get` verifies it). */
export interface MemoryListing {
  readonly memoryId: string;
  readonly ownerId: string;
  readonly access: AccessLevel;
  readonly createdAtMs: number;
  readonly expiresAtMs: number | undefined;
}

/** A segment's current version, from its verified write record. */
export interface SegmentInfo {
  readonly segmentId: string;
  readonly version: bigint;
  readonly writerId: string;
  readonly writtenAtMs: number;
  readonly expiresAtMs: number | undefined;
  /** Ciphertext bytes (the plaintext is 40 fewer). */
  readonly bytes: number;
  readonly keyEpoch: number;
}

/** A segment read, decrypted and verified. */
export interface ReadResult extends SegmentInfo {
  readonly data: Uint8Array;
  /** The writer's signed record: with `ciphertext`, proof for a third party of who wrote what (§18.7). */
  readonly record: WriteRecord;
  readonly ciphertext: Uint8Array;
}

/** What a write did. */
export interface WriteResult {
  /** The segment's version now. */
  readonly version: bigint;
  /** The store had this exact write already (a retry after a lost answer). */
  readonly alreadyApplied: boolean;
}

/** Options of {@link MemoryClient.write}. */
export interface WriteOptions {
  /** The version this write replaces: 0 creates the segment. Required: every write is conditional (§18.7). */
  readonly previousVersion: bigint | number;
  /** When this version expires, ms since the epoch. */
  readonly expiresAtMs?: number;
}

/** Options of {@link MemoryClient.update}. */
export interface UpdateOptions {
  /** Attempts before giving up with `conflict`. Default 16. */
  readonly maxAttempts?: number;
  readonly expiresAtMs?: number;
}

/** Options of {@link MemoryClient.grant}. */
export interface GrantOptions {
  /** When the grant ends, ms since the epoch (then the member is refused and the key epoch rotates). */
  readonly expiresAtMs?: number;
  /**
   * The member's certificate. Default: the store's — the last one the member used with it, or, when the store has
   * a certificate directory (memory-server's `directory` option: the gateway's, of the agents connected to it),
   * the directory's; a store that knows neither refuses with `not_found`. Verified either way.
   */
  readonly certificate?: AgentCertificate;
}

/**
 * The highest state of a memory this client verified, kept when the state itself leaves the cache: a
 * fresh load must reach it (`replay` otherwise) and go through the same entry there.
 */
interface Seen {
  readonly version: bigint;
  readonly hash: Uint8Array;
  readonly epoch: number;
  /** The log version the current epoch was made for. */
  readonly epochVersion: bigint;
  /** This client's clock when it asked for the answer that showed the log at `version` (§18.4). */
  readonly atMs: number;
}

/** A memory's verified state, cached per memory. */
interface State {
  log: Membership;
  /** Verified epoch records, by epoch. */
  readonly epochs: Map<number, EpochRecord>;
  /** Epoch keys this agent has opened or derived. */
  readonly keys: Map<number, EpochKey>;
  /** Key copies and back links that did not open for this agent, by epoch, with the member at fault (§18.5). */
  readonly faults: Map<number, MemoryKeyFault>;
  currentEpoch: number;
  /** Certificates of the active members, from the store (verified before use). */
  certificates: Map<string, AgentCertificate>;
  rotationRequired: boolean;
  usage: MemoryUsage | undefined;
}

const RETRYABLE = new Set(['unavailable', 'deadline_exceeded']);

function toText(data: Uint8Array | string): Uint8Array {
  return typeof data === 'string' ? new TextEncoder().encode(data) : data;
}

function num(value: bigint): number {
  return Number(value);
}

function segmentInfo(r: WriteRecord): SegmentInfo {
  return {
    segmentId: r.segmentId,
    version: r.version,
    writerId: r.writerId,
    writtenAtMs: num(r.timestampMs),
    expiresAtMs: r.expiresAtMs === 0n ? undefined : num(r.expiresAtMs),
    bytes: num(r.ciphertextBytes),
    keyEpoch: r.keyEpoch,
  };
}

/**
 * The pages of one listing from a store that is not trusted to end it (§18.2): every page at most the size
 * asked for, no page token twice, at most `maxItems` items in all (so at most that many pages with items,
 * and one more). @throws MemoryError `malformed`
 */
class Pager {
  readonly #tokens = new Set<string>();
  #items = 0;
  #pages = 0;

  constructor(
    readonly what: string,
    readonly pageSize: number,
    readonly maxItems: number,
  ) {}

  take(items: number, nextPageToken: string): void {
    this.#pages++;
    this.#items += items;
    if (items > this.pageSize) fail('malformed', `the store answered a ${this.what} page of ${items} items, more than the ${this.pageSize} asked for`);
    if (this.#items > this.maxItems || this.#pages > Math.ceil(this.maxItems / this.pageSize) + 1) {
      fail('malformed', `the store's ${this.what} goes on beyond ${this.maxItems} items`);
    }
    if (nextPageToken !== '') {
      if (this.#tokens.has(nextPageToken)) fail('malformed', `the store repeated a page token of the ${this.what}`);
      this.#tokens.add(nextPageToken);
    }
  }
}

/**
 * Shared memory for one agent. Create one per agent (`agent.memory` in
 * @parley/client does), call {@link close} when done.
 *
 * @example
 * const memory = new MemoryClient({ crypto, identity, address, serviceId: 'gw-1', trustBundle });
 * const { memoryId } = await memory.create();
 * await memory.grant(memoryId, 'worker-7', 'write');
 * await memory.write(memoryId, 'plan', JSON.stringify(plan), { previousVersion: 0 });
 * const { data, version } = await memory.read(memoryId, 'plan');
 */
export class MemoryClient {
  readonly #o: MemoryClientOptions;
  readonly #crypto: ParleyCrypto;
  readonly #rpc: Client<typeof MemoryService>;
  readonly #clock: () => number;
  readonly #states = new Map<string, State>();
  readonly #loading = new Map<string, Promise<State>>();
  /** Per memory, the highest state verified (bounded, oldest first): rollback detection outlives the cache. */
  readonly #seen = new Map<string, Seen>();
  #closed = false;

  /**
   * Checks the options before any call: among them that `identity`'s signing key is the one its certificate
   * names and its agent id the certificate's (a client with another key signs entries and requests no store
   * accepts: `create()` used to fail with a misleading `bad_signature`), and that `address` is `host:port`.
   * @throws MemoryError `malformed` (a missing or ill-typed option: `crypto`, `identity`, `address`, `serviceId`,
   *   `trustBundle`, `clock`), `identity_mismatch` (the signing key or agent id is not the certificate's)
   */
  constructor(options: MemoryClientOptions) {
    if (typeof options !== 'object' || options === null) fail('malformed', 'options must be an object');
    this.#o = options;
    if (!looksLikeParleyCrypto(options.crypto)) fail('malformed', 'crypto must be the ParleyCrypto object from createCrypto()');
    this.#crypto = options.crypto;
    try {
      assertLocalIdentity(options.crypto, options.identity, 'identity');
      parseHostPort(options.address, 'address');
    } catch (error) {
      throw MemoryError.from(error);
    }
    if (typeof options.serviceId !== 'string' || options.serviceId === '') fail('malformed', 'serviceId must be the store’s name (the gateway id)');
    if (!(options.trustBundle instanceof TrustBundle)) fail('malformed', 'trustBundle must be a TrustBundle');
    if (options.clock !== undefined && typeof options.clock !== 'function') fail('malformed', 'clock must be a function');
    this.#clock = options.clock ?? Date.now;
    this.#rpc = createClient(MemoryService, options.address, options.credentials ?? grpcCredentials.createInsecure(), {
      signer: memoryRequestSigner(options.crypto, options.identity, options.serviceId, this.#clock),
      defaultTimeoutMs: options.timeoutMs ?? 30_000,
      channelOptions: {
        // The largest valid answer is GetMemory's for a memory at every limit (limits.ts), not a segment.
        'grpc.max_receive_message_length': MEMORY_MAX_RECEIVE_BYTES,
        'grpc.max_send_message_length': MEMORY_MAX_SEND_BYTES,
        ...options.channelOptions,
      },
    });
  }

  /** This agent's id. */
  get agentId(): string {
    return this.#o.identity.agentId;
  }

  /** Wipes every cached key and closes the channel. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const state of this.#states.values()) wipeState(state);
    this.#states.clear();
    this.#rpc.close();
  }

  // ---------------------------------------------------------------------------
  // The API

  /**
   * Creates a memory owned by this agent, with epoch 1 and the owner's key copy.
   * @throws MemoryError `quota_exceeded` (too many memories for this owner), `malformed`, the store's refusal
   */
  async create(options: { readonly expiresAtMs?: number } = {}): Promise<MemoryInfo> {
    this.#assertOpen();
    const now = this.#clock();
    const me = this.#o.identity;
    const publicKey = me.certificate.identityPublicKey;
    const { memoryId, entry } = createEntry(this.#crypto, me, publicKey, { nowMs: now, ...(options.expiresAtMs === undefined ? {} : { expiresAtMs: options.expiresAtMs }) });
    const log = Membership.create(this.#crypto, entry, memoryId); // checks our own entry by the same rules as the store
    const epoch = newEpoch(this.#crypto, me, memoryId, { version: 1n, hash: log.head }, undefined, now);
    const ownerWrap = wrapKey(this.#crypto, me, memoryId, epoch, { memberId: me.agentId, publicKey });
    epoch.key.wipe();
    await this.#call(() => this.#rpc.createMemory({ entry, epoch: epoch.record, ownerWrap }));
    return this.get(memoryId);
  }

  /**
   * The memory's verified state: members, epoch, usage.
   * @throws MemoryError `permission_denied` (not a member, or no such memory), `expired`, `bad_signature` / `replay` (the store's answer does not verify)
   */
  async get(memoryId: string): Promise<MemoryInfo> {
    assertMemoryId(memoryId);
    const state = await this.#refresh(memoryId);
    return this.#info(state);
  }

  /** Every memory this agent is an active member of (as the store lists them; {@link get} verifies one). */
  async list(): Promise<MemoryListing[]> {
    this.#assertOpen();
    const out: MemoryListing[] = [];
    const pages = new Pager('memory listing', LIST_MEMORIES_PAGE_SIZE, MAX_LISTED_MEMORIES);
    let pageToken = '';
    do {
      const page = await this.#call(() => this.#rpc.listMemories({ pageSize: LIST_MEMORIES_PAGE_SIZE, pageToken }));
      pages.take(page.memories.length, page.nextPageToken);
      for (const m of page.memories) {
        out.push({
          memoryId: m.memoryId,
          ownerId: m.ownerId,
          access: levelOf(m.access),
          createdAtMs: num(m.createdAtMs),
          expiresAtMs: m.expiresAtMs === 0n ? undefined : num(m.expiresAtMs),
        });
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    return out;
  }

  /** The segments of a memory, each from its verified write record. */
  async segments(memoryId: string): Promise<SegmentInfo[]> {
    assertMemoryId(memoryId);
    let state = await this.#state(memoryId);
    const out: SegmentInfo[] = [];
    // At most the memory's segment quota (as reported, within MAX_LISTED_SEGMENTS) and two pages of room.
    const reported = num(state.usage?.maxSegments ?? 0n);
    const quota = Math.min(reported > 0 ? reported : DEFAULT_MAX_SEGMENTS_PER_MEMORY, MAX_LISTED_SEGMENTS);
    const pages = new Pager('segment listing', LIST_SEGMENTS_PAGE_SIZE, quota + 2 * LIST_SEGMENTS_PAGE_SIZE);
    let pageToken = '';
    do {
      const page = await this.#call(() => this.#rpc.listSegments({ memoryId, pageSize: LIST_SEGMENTS_PAGE_SIZE, pageToken }));
      pages.take(page.segments.length, page.nextPageToken);
      for (const r of page.segments) {
        state = await this.#verifyFresh(state, r);
        out.push(segmentInfo(r));
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    return out;
  }

  /**
   * Reads and decrypts a segment's current version, verifying its writer's signature,
   * its ciphertext digest and its key epoch.
   * @throws MemoryError `not_found`, `permission_denied`, `expired`, `bad_signature`, `decrypt_failed`
   */
  async read(memoryId: string, segmentId: string): Promise<ReadResult> {
    assertMemoryId(memoryId);
    assertSegmentId(segmentId);
    let state = await this.#state(memoryId);
    const res = await this.#call(() => this.#rpc.readSegment({ memoryId, segmentId }));
    const record = res.record;
    if (record === undefined || record.segmentId !== segmentId) fail('bad_signature', 'the store answered with another segment');
    // A writer granted, or an epoch started, since the state was cached: verify against a fresh one.
    state = await this.#verifyFresh(state, record);
    let key: EpochKey;
    try {
      key = this.#keyFor(state, record.keyEpoch);
    } catch {
      state = await this.#refresh(memoryId);
      key = this.#keyFor(state, record.keyEpoch);
    }
    const data = openWrite(this.#crypto, memoryId, key, record, res.ciphertext);
    return { ...segmentInfo(record), data, record, ciphertext: res.ciphertext };
  }

  /**
   * Writes a segment version, conditional on the version it replaces.
   * @returns the new version (`alreadyApplied` when this exact write was stored before a retry)
   * @throws MemoryError `conflict` with `currentVersion` (and `current`) when the segment is elsewhere;
   *   `quota_exceeded`, `permission_denied` (read-only member), `expired`, `too_large`, …
   */
  async write(memoryId: string, segmentId: string, data: Uint8Array | string, options: WriteOptions): Promise<WriteResult> {
    assertMemoryId(memoryId);
    assertSegmentId(segmentId);
    if (typeof options !== 'object' || options === null) fail('malformed', 'options with previousVersion are required: every write is conditional');
    const bytes = toText(data);
    if (!(bytes instanceof Uint8Array)) fail('malformed', 'data must be a Uint8Array or a string');
    if (bytes.length > MAX_SEGMENT_PLAINTEXT_BYTES) fail('too_large', `segment data is ${bytes.length} bytes, more than ${MAX_SEGMENT_PLAINTEXT_BYTES}`);
    const previous = typeof options?.previousVersion === 'number' ? BigInt(options.previousVersion) : options?.previousVersion;
    if (typeof previous !== 'bigint' || previous < 0n || previous >= BigInt(Number.MAX_SAFE_INTEGER)) fail('malformed', 'previousVersion must be a non-negative integer (0 creates the segment)');
    const expiresAtMs = options.expiresAtMs ?? 0;
    if (!Number.isSafeInteger(expiresAtMs) || expiresAtMs < 0) fail('malformed', 'expiresAtMs must be a non-negative integer');
    let state = await this.#state(memoryId);
    // Without the current key (a member's copy or back link did not open, §18.5), the memory may have been
    // repaired since: load it again before failing.
    if (!state.keys.has(state.currentEpoch)) state = await this.#refresh(memoryId);
    for (let attempt = 0; ; attempt++) {
      if (this.#rotationNeeded(state)) state = await this.#rotate(state);
      if (this.#rotationNeeded(state)) fail('rotation_required', `the current epoch of ${memoryId} may be held by a member whose grant has expired, and no new epoch could be made`);
      const sealed = sealWrite(this.#crypto, this.#o.identity, memoryId, this.#currentKey(state), {
        segmentId,
        previousVersion: previous,
        data: bytes,
        expiresAtMs,
        nowMs: this.#clock(),
      });
      try {
        return await this.#sendWrite(state, memoryId, sealed);
      } catch (error) {
        const e = MemoryError.from(error);
        // The epoch moved, or a member's grant ended under us: reload (and rotate) once or twice, then give up.
        if (attempt < 3 && (e.code === 'rotation_required' || (e.code === 'conflict' && e.currentVersion === undefined))) {
          state = await this.#refresh(memoryId);
          if (e.code === 'rotation_required') state.rotationRequired = true;
          continue;
        }
        throw e;
      }
    }
  }

  /**
   * Read-modify-write with compare-and-set: calls `change` with the current
   * version (undefined when the segment does not exist) and writes its result
   * conditional on that version; on `conflict`, reads again and repeats.
   */
  async update(
    memoryId: string,
    segmentId: string,
    change: (current: ReadResult | undefined) => Uint8Array | string | Promise<Uint8Array | string>,
    options: UpdateOptions = {},
  ): Promise<WriteResult & { readonly attempts: number }> {
    const max = options.maxAttempts ?? 16;
    for (let attempt = 1; ; attempt++) {
      let current: ReadResult | undefined;
      try {
        current = await this.read(memoryId, segmentId);
      } catch (error) {
        if (!isMemoryError(error, 'not_found')) throw error;
      }
      const next = await change(current);
      try {
        const result = await this.write(memoryId, segmentId, next, {
          previousVersion: current?.version ?? 0n,
          ...(options.expiresAtMs === undefined ? {} : { expiresAtMs: options.expiresAtMs }),
        });
        return { ...result, attempts: attempt };
      } catch (error) {
        if (isMemoryError(error, 'conflict') && error.currentVersion !== undefined && attempt < max) continue;
        throw error;
      }
    }
  }

  /**
   * Grants `agentId` a level (or changes its level, expiry or key): appends a
   * GRANT entry and seals the current epoch key to its certified identity key.
   * A new member can read everything the memory holds (§18.5: back links).
   * @throws MemoryError `permission_denied` (not admin; admin level needs the owner), `not_found` (no certificate known),
   *   the certificate's code (`revoked`, `expired`, `unknown_issuer`, …), `quota_exceeded` (members, or the log's room for grants, §18.4)
   */
  async grant(memoryId: string, agentId: string, access: AccessLevel, options: GrantOptions = {}): Promise<MemoryInfo> {
    assertMemoryId(memoryId);
    assertAgent(agentId, 'agentId');
    const level = accessOf(access);
    const expiresAtMs = options.expiresAtMs ?? 0;
    if (!Number.isSafeInteger(expiresAtMs) || expiresAtMs < 0) fail('malformed', 'expiresAtMs must be a non-negative integer');
    const certificate = options.certificate ?? (await this.#call(() => this.#rpc.getAgentCertificate({ agentId }))).certificate;
    if (certificate === undefined) fail('not_found', `no certificate for ${agentId}`);
    const member = this.#verifyMemberCertificate(certificate, agentId);
    for (let attempt = 0; ; attempt++) {
      const state = await this.#refresh(memoryId);
      const entry = changeEntry(this.#crypto, this.#o.identity, state.log, { kind: 'grant', memberId: agentId, access: level, publicKey: member.identityPublicKey, expiresAtMs }, this.#clock());
      const wrap = wrapKey(this.#crypto, this.#o.identity, memoryId, this.#currentKey(state), { memberId: agentId, publicKey: member.identityPublicKey });
      try {
        await this.#call(() => this.#rpc.updateMembership({ memoryId, entry, memberCertificate: certificate, wraps: [wrap] }));
        return this.get(memoryId);
      } catch (error) {
        if (attempt < 3 && isMemoryError(error, 'conflict')) continue;
        throw error;
      }
    }
  }

  /**
   * Removes a member: appends a REVOKE entry and, in the same call, starts the
   * next key epoch, sealed to the remaining members only. The removed member keeps
   * whatever it read or could decrypt before; nothing written from now on is
   * under a key it ever had (§18.9).
   * @throws MemoryError `not_found` (not a member), `permission_denied`, a remaining member's certificate code
   */
  async revoke(memoryId: string, agentId: string): Promise<MemoryInfo> {
    assertMemoryId(memoryId);
    assertAgent(agentId, 'agentId');
    for (let attempt = 0; ; attempt++) {
      const state = await this.#refresh(memoryId);
      const target = state.log.member(agentId);
      if (target === undefined) fail('not_found', `${agentId} is not a member of ${memoryId}`);
      const now = this.#clock();
      const entry = changeEntry(this.#crypto, this.#o.identity, state.log, { kind: 'revoke', memberId: agentId, publicKey: target.publicKey }, now);
      const remaining = state.log.active(now).filter((m) => m.memberId !== agentId);
      // Without a key of the current epoch because the copy a member made for this agent did not open, the
      // revocation's epoch is a cut: no back link (§18.5). With the key, never; and not without a copy at all
      // (a store that withholds one must not be able to turn a revocation into a cut of history).
      const cut = !state.keys.has(state.currentEpoch) && state.faults.get(state.currentEpoch)?.kind === 'keyCopy';
      const { epoch, wraps } = this.#nextEpoch(state, { version: entry.version, hash: membershipEntryHash(this.#crypto, memoryId, entry) }, remaining, now, cut);
      try {
        await this.#call(() => this.#rpc.updateMembership({ memoryId, entry, epoch: epoch.record, wraps }));
        epoch.key.wipe();
        return this.get(memoryId);
      } catch (error) {
        epoch.key.wipe();
        if (attempt < 3 && isMemoryError(error, 'conflict')) continue;
        throw error;
      }
    }
  }

  /**
   * Starts the next key epoch for the active members (writes do this themselves when the store asks).
   * @returns the new epoch
   * @throws MemoryError `permission_denied` (a writer, when no rotation is required: only admins rotate at will, §18.5),
   *   `quota_exceeded` (an admin, when the memory keeps as many epochs in use as it may)
   */
  async rotate(memoryId: string): Promise<number> {
    assertMemoryId(memoryId);
    const state = await this.#rotate(await this.#refresh(memoryId));
    return state.currentEpoch;
  }

  // ---------------------------------------------------------------------------
  // Internals

  #assertOpen(): void {
    if (this.#closed) fail('cancelled', 'memory client closed');
  }

  /** One RPC, retried with backoff while the store is unavailable (every call here is idempotent: §18.10). */
  async #call<T>(fn: () => Promise<T>): Promise<T> {
    this.#assertOpen();
    const budget = this.#o.retryUnavailableMs ?? 30_000;
    const start = Date.now();
    let delay = 100;
    for (;;) {
      try {
        return await fn();
      } catch (error) {
        const e = MemoryError.from(error);
        if (!RETRYABLE.has(e.code) || this.#closed || Date.now() - start + delay > budget) throw e;
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 2_000);
      }
    }
  }

  async #sendWrite(state: State, memoryId: string, sealed: SealedWrite): Promise<WriteResult> {
    const res = await this.#call(() => this.#rpc.writeSegment({ memoryId, record: sealed.record, ciphertext: sealed.ciphertext }));
    const outcome = res.outcome;
    if (outcome.case === 'accepted') {
      if (outcome.value.version !== sealed.record.version) fail('bad_signature', 'the store acknowledged another version than written');
      return { version: outcome.value.version, alreadyApplied: outcome.value.alreadyApplied };
    }
    if (outcome.case !== 'conflict') return fail('malformed', 'write answer has no outcome');
    const current = outcome.value.current;
    if (current !== undefined) {
      if (current.segmentId !== sealed.record.segmentId || current.version !== outcome.value.currentVersion) fail('bad_signature', 'the store reported a conflict with another segment');
      await this.#verifyFresh(state, current);
      if (sameWrite(this.#crypto, current, sealed.record)) return { version: current.version, alreadyApplied: true };
    }
    return fail('conflict', `${sealed.record.segmentId} is at version ${outcome.value.currentVersion}, not ${sealed.record.previousVersion}`, {
      currentVersion: outcome.value.currentVersion,
      ...(current === undefined ? {} : { current }),
    });
  }

  /** Verifies a record against the cached log, or, when that fails (a writer granted since), against a fresh one. */
  async #verifyFresh(state: State, record: WriteRecord): Promise<State> {
    try {
      this.#verifyRecord(state, record);
      return state;
    } catch {
      const fresh = await this.#refresh(state.log.memoryId);
      this.#verifyRecord(fresh, record);
      return fresh;
    }
  }

  /**
   * A record under epoch E verifies only as a write its writer could make while E was current (from E's
   * log version to the next epoch's, §18.7): a removed writer cannot, with the store, date a new write
   * under an old epoch whose key it kept.
   */
  #verifyRecord(state: State, record: WriteRecord): void {
    try {
      const epoch = state.epochs.get(record.keyEpoch);
      if (epoch === undefined) fail('bad_signature', `the write record of ${record.segmentId} is under epoch ${record.keyEpoch}, which this client does not know`);
      const next = state.epochs.get(record.keyEpoch + 1);
      const to = next?.membershipVersion ?? (record.keyEpoch === state.currentEpoch ? state.log.version : undefined);
      if (to === undefined) fail('bad_signature', `epoch ${record.keyEpoch + 1} is not known`);
      verifyWriteRecord(state.log, record, { from: epoch.membershipVersion, to, skewMs: this.#skewMs });
    } catch (error) {
      const e = MemoryError.from(error);
      throw e.code === 'malformed' ? new MemoryError('bad_signature', `the store returned a malformed write record: ${e.message}`, { cause: e }) : e;
    }
  }

  get #skewMs(): number {
    return this.#o.maxClockSkewMs ?? MEMORY_CLOCK_SKEW_MS;
  }

  /**
   * Whether a rotation must come before the next write, decided here whatever the store says (§18.5): the
   * store asked for one, or a member on record whose grant has expired could hold the current epoch's key —
   * unless that epoch was made for its grant's version or later, at or after its expiry (then its maker
   * sealed it only to members in force).
   */
  #rotationNeeded(state: State): boolean {
    if (state.rotationRequired) return true;
    const current = state.epochs.get(state.currentEpoch);
    if (current === undefined) return true;
    const now = this.#clock();
    for (const m of state.log.members()) {
      if (m.expiresAtMs === 0 || m.expiresAtMs > now) continue;
      if (!(current.membershipVersion >= m.version && Number(current.createdAtMs) >= m.expiresAtMs)) return true;
    }
    return false;
  }

  /** The key of the current epoch, after checking the epoch against the state's log again (§18.5): nothing is sealed under another. */
  #currentKey(state: State): EpochKey {
    const current = state.epochs.get(state.currentEpoch);
    if (current === undefined) fail('bad_signature', `epoch ${state.currentEpoch} is not known`);
    try {
      verifyCurrentEpoch(state.log, current, state.epochs.values());
    } catch (error) {
      throw new MemoryError('bad_signature', `the current epoch of ${state.log.memoryId} does not verify against its log: ${MemoryError.from(error).message}`, { cause: error });
    }
    return this.#keyFor(state, state.currentEpoch);
  }

  /** Remembers the highest state verified of a memory (bounded: the oldest memory is dropped first). */
  #remember(memoryId: string, seen: Seen): void {
    this.#seen.delete(memoryId);
    this.#seen.set(memoryId, seen);
    const max = this.#o.seenSize ?? MEMORY_SEEN_ENTRIES;
    for (const id of this.#seen.keys()) {
      if (this.#seen.size <= max) break;
      this.#seen.delete(id);
    }
  }

  /** The cached state, or a fresh one. */
  #state(memoryId: string): Promise<State> {
    const cached = this.#states.get(memoryId);
    if (cached !== undefined) {
      // LRU: most recently used last.
      this.#states.delete(memoryId);
      this.#states.set(memoryId, cached);
      return Promise.resolve(cached);
    }
    return this.#refresh(memoryId);
  }

  /** Fetches what is new since the cached state and verifies it (one fetch at a time per memory). */
  #refresh(memoryId: string): Promise<State> {
    const running = this.#loading.get(memoryId);
    if (running !== undefined) return running;
    const p = (async () => {
      try {
        const cached = this.#states.get(memoryId);
        const askedAtMs = this.#clock();
        const res = await this.#call(() => this.#rpc.getMemory({ memoryId, afterVersion: cached?.log.version ?? 0n }));
        let state: State;
        try {
          state = this.#verifyState(memoryId, cached, res);
        } catch (error) {
          // A refused answer leaves nothing behind, and the state it came after is not used again: the
          // next call loads afresh (checked against what this client has seen).
          if (cached !== undefined && this.#states.get(memoryId) === cached) {
            this.#states.delete(memoryId);
            wipeState(cached);
          }
          throw error;
        }
        const current = state.epochs.get(state.currentEpoch)!;
        this.#remember(memoryId, { version: state.log.version, hash: state.log.head, epoch: state.currentEpoch, epochVersion: current.membershipVersion, atMs: askedAtMs });
        this.#states.delete(memoryId);
        this.#states.set(memoryId, state);
        const max = this.#o.cacheSize ?? 64;
        for (const [id, old] of this.#states) {
          if (this.#states.size <= max) break;
          if (id === memoryId) continue;
          this.#states.delete(id);
          wipeState(old);
        }
        return state;
      } finally {
        this.#loading.delete(memoryId);
      }
    })();
    this.#loading.set(memoryId, p);
    return p;
  }

  /**
   * Folds the store's answer into the verified state: the log continues the one
   * already seen (never shorter: `replay`), the owner's certificate is trusted, epochs
   * chain and are signed by members who could make them, and the key copy opens.
   */
  #verifyState(memoryId: string, cached: State | undefined, res: GetMemoryResponse): State {
    const summary = res.memory;
    if (summary === undefined || summary.memoryId !== memoryId) fail('bad_signature', 'the store answered for another memory');
    const seen = this.#seen.get(memoryId);
    try {
      // Appended to a copy: an answer refused below leaves the cached log as it was.
      let log = res.entries.length === 0 ? cached?.log : cached?.log.copy();
      if (cached !== undefined && summary.membershipVersion < cached.log.version) {
        fail('replay', `the store returned membership version ${summary.membershipVersion}, older than ${cached.log.version} already seen`);
      }
      if (seen !== undefined && summary.membershipVersion < seen.version) {
        fail('replay', `the store returned membership version ${summary.membershipVersion}, older than ${seen.version} already seen`);
      }
      const entries = [...res.entries];
      if (log === undefined) {
        const first = entries.shift();
        if (first === undefined) fail('bad_signature', 'the store returned no membership log');
        log = Membership.create(this.#crypto, first, memoryId);
        const owner = res.members.find((m) => m.memberId === log!.ownerId)?.certificate;
        if (owner === undefined) fail('bad_signature', "the store returned no owner's certificate");
        this.#verifyOwner(log, owner);
      }
      for (const e of entries) {
        // An entry after the head this client saw at `seen.atMs` was accepted by the store after then: its
        // signer's grant cannot have expired long before (the store takes entries dated within the skew
        // of its clock, and only from admins in force): an expired admin's backdated entry is refused (§18.4).
        const signer = log.member(e.signerId);
        if (seen !== undefined && e.version > seen.version && signer !== undefined && signer.expiresAtMs !== 0 && signer.expiresAtMs + 2 * this.#skewMs + 1000 <= seen.atMs) {
          fail('permission_denied', `membership entry ${e.version} is signed by ${e.signerId}, whose grant had expired before this client saw version ${seen.version}`);
        }
        log.append(e);
      }
      if (log.version !== summary.membershipVersion) fail('bad_signature', 'membership log does not reach the version the store reports');
      if (seen !== undefined) {
        const hash = log.hashAt(seen.version);
        if (hash === undefined || !this.#crypto.constantTimeEqual(hash, seen.hash)) fail('bad_signature', `the store returned another membership log than this client saw at version ${seen.version}`);
      }

      // Epochs: ascending, chained (to the ones already verified too), each made by a member who could,
      // while its grant was in force. Same records as any seen before.
      const epochs = new Map<number, EpochRecord>(cached?.epochs ?? []);
      let previous: EpochRecord | undefined;
      for (const r of res.epochs) {
        verifyEpochRecord(this.#crypto, log, r, previous ?? epochs.get(r.epoch - 1));
        const known = epochs.get(r.epoch);
        if (known !== undefined && !this.#crypto.constantTimeEqual(known.signature, r.signature)) fail('bad_signature', `the store returned a second epoch ${r.epoch}`);
        epochs.set(r.epoch, r);
        previous = r;
      }
      if (previous === undefined || previous.epoch !== summary.currentEpoch) fail('bad_signature', 'epochs do not reach the current epoch');
      if (cached !== undefined && summary.currentEpoch < cached.currentEpoch) fail('replay', 'the store returned an older key epoch than already seen');
      if (seen !== undefined && (summary.currentEpoch < seen.epoch || previous.membershipVersion < seen.epochVersion)) fail('replay', 'the store returned an older key epoch than already seen');
      // The epoch new writes go under: made for the last revocation or later, and not for an earlier log
      // version than any epoch already accepted (an epoch of a removed member is refused, §18.5).
      verifyCurrentEpoch(log, previous, epochs.values());

      const keys = new Map(cached?.keys ?? []);
      const faults = new Map(cached?.faults ?? []);
      const wrap = res.wrap;
      if (wrap !== undefined && !keys.has(wrap.epoch)) {
        const record = epochs.get(wrap.epoch);
        if (record === undefined || wrap.memberId !== this.agentId) fail('bad_signature', 'key copy is for an epoch or member the store did not describe');
        verifyKeyWrap(this.#crypto, log, wrap);
        // Sealed to this agent's identity key now, or the store's fault (an honest store serves a member only the
        // copy sealed to the key it calls with): a genuine copy sealed to an old key of this agent opens for no one
        // here, and is no member's fault (§18.5).
        const mine = this.#o.identity.certificate.identityPublicKey;
        if (wrap.memberPublicKey.length !== mine.length || !this.#crypto.constantTimeEqual(wrap.memberPublicKey, mine)) {
          fail('bad_signature', `the key copy of epoch ${wrap.epoch} is sealed to another key than this agent's identity key`);
        }
        // Opened last: nothing after it refuses the answer, so no key opened here is left unwiped.
        for (const k of this.#openCopy(memoryId, wrap, record, epochs, faults)) {
          if (keys.has(k.record.epoch)) k.key.wipe(); // already held (an earlier key this client kept)
          else keys.set(k.record.epoch, k);
        }
      }
      // A copy that did not open no longer keeps a key away once a later epoch's back link reached it.
      for (const [e, f] of faults) if (f.kind === 'keyCopy' && keys.has(e)) faults.delete(e);
      const certificates = new Map<string, AgentCertificate>();
      for (const m of res.members) if (m.certificate !== undefined) certificates.set(m.memberId, m.certificate);
      return { log, epochs, keys, faults, currentEpoch: summary.currentEpoch, certificates, rotationRequired: res.rotationRequired, usage: res.usage };
    } catch (error) {
      const e = MemoryError.from(error);
      // Anything the log rules reject in the store's answer is the store's fault, not ours.
      if (e.code === 'malformed' || e.code === 'conflict' || e.code === 'permission_denied' || e.code === 'identity_mismatch') {
        throw new MemoryError('bad_signature', `the store's answer for ${memoryId} does not verify: ${e.message}`, { cause: e });
      }
      throw e;
    }
  }

  /**
   * The owner's certificate binds the owner id to the key the memory id commits to. It must be issued by
   * the trust bundle for that id and key, not revoked now, and valid now or when the memory was created
   * (the store keeps the newest certificate the owner called with for the same key).
   */
  #verifyOwner(log: Membership, certificate: AgentCertificate): void {
    const revocations = this.#o.revocations;
    const at = (nowMs: number) =>
      verifyCertificate(this.#crypto, certificate, {
        trustBundle: this.#o.trustBundle,
        nowMs,
        expectedAgentId: log.ownerId,
        ...(revocations === undefined ? {} : { revocations: { check: (s) => revocations.check(s, this.#clock()) } }),
      });
    let cert;
    try {
      cert = at(this.#clock());
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code !== 'expired' && code !== 'not_yet_valid') throw error;
      cert = at(log.createdAtMs);
    }
    if (!this.#crypto.constantTimeEqual(cert.identityPublicKey, log.ownerPublicKey)) fail('identity_mismatch', "owner's certificate is for another key");
  }

  #verifyMemberCertificate(certificate: AgentCertificate, agentId: string): { identityPublicKey: Uint8Array } {
    try {
      return verifyCertificate(this.#crypto, certificate, {
        trustBundle: this.#o.trustBundle,
        nowMs: this.#clock(),
        expectedAgentId: agentId,
        ...(this.#o.revocations === undefined ? {} : { revocations: this.#o.revocations }),
      });
    } catch (error) {
      const e = MemoryError.from(error);
      throw new MemoryError(e.code, `certificate of ${agentId}: ${e.detail}`, { cause: error });
    }
  }

  /**
   * Opens this agent's verified key copy of `record`'s epoch (sealed to this agent's identity key: checked before)
   * and checks that epoch's back link (unless it is a cut) against the previous epoch's commitment, when that
   * record is kept (§18.5). A copy that does not give the key, or a back link that does not open to the previous
   * key, is recorded against the member who signed it (the copy's signer, the epoch's creator) and the answer
   * stands: `proven` when what it signed is wrong whatever record it is paired with (a copy that does not open or
   * names another memory, epoch or member; a back link that does not open), not when it opens to a key another
   * record of the epoch could commit to ({@link isCommitmentMismatch}). A copy that does not give the key leaves
   * no key of the epoch; with a bad back link the epoch's key (it matches the commitment) is kept.
   * @returns the keys opened: the epoch's, and the previous one through the back link when checked
   */
  #openCopy(memoryId: string, wrap: KeyWrap, record: EpochRecord, epochs: ReadonlyMap<number, EpochRecord>, faults: Map<number, MemoryKeyFault>): EpochKey[] {
    let key: EpochKey;
    try {
      key = openWrap(this.#crypto, this.#o.identity, memoryId, wrap, record);
    } catch (error) {
      if (!isMemoryError(error, 'decrypt_failed')) throw error;
      faults.set(record.epoch, { epoch: record.epoch, memberId: wrap.signerId, kind: 'keyCopy', proven: !isCommitmentMismatch(error) });
      return [];
    }
    const previous = isCutEpoch(record) ? undefined : epochs.get(record.epoch - 1);
    if (previous === undefined) {
      faults.delete(record.epoch);
      return [key];
    }
    try {
      const back = followBackLink(this.#crypto, memoryId, key, previous);
      faults.delete(record.epoch);
      return [key, back];
    } catch (error) {
      if (!isMemoryError(error, 'decrypt_failed')) {
        key.key.wipe();
        throw error;
      }
      // The key itself matches the commitment its creator signed: it is kept (the epoch's own data stays
      // readable and a revocation links back to it); only what lies before it is out of reach.
      faults.set(record.epoch, { epoch: record.epoch, memberId: record.creatorId, kind: 'backLink', proven: !isCommitmentMismatch(error) });
      return [key];
    }
  }

  /**
   * The key of an epoch: opened, or derived through back links from a later key this agent has. Back links
   * stop at a cut (§18.5). A key a member's fault keeps from this agent fails `decrypt_failed` naming the
   * epoch and the member.
   */
  #keyFor(state: State, epoch: number): EpochKey {
    const memoryId = state.log.memoryId;
    const known = state.keys.get(epoch);
    if (known !== undefined) return known;
    let later: EpochKey | undefined;
    for (const [e, k] of state.keys) if (e > epoch && (later === undefined || e < later.record.epoch)) later = k;
    if (later === undefined) {
      let fault: MemoryKeyFault | undefined;
      for (const f of state.faults.values()) if (f.epoch >= epoch && (fault === undefined || f.epoch > fault.epoch)) fault = f;
      if (fault !== undefined) fail('decrypt_failed', faultMessage(memoryId, fault, epoch));
      fail('permission_denied', `this agent holds no key of epoch ${epoch} or later`);
    }
    // Nothing before a cut is reachable from it or from any later epoch.
    for (let e = later.record.epoch; e > epoch; e--) {
      const record = e === later.record.epoch ? later.record : state.epochs.get(e);
      if (record !== undefined && isCutEpoch(record)) fail('decrypt_failed', `epoch ${epoch} of ${memoryId} is before the cut at epoch ${e}: no key this agent holds reaches it`);
    }
    while (later.record.epoch > epoch) {
      const record = state.epochs.get(later.record.epoch - 1);
      if (record === undefined) fail('decrypt_failed', `epoch ${later.record.epoch - 1} is not known`);
      try {
        later = followBackLink(this.#crypto, memoryId, later, record);
      } catch (error) {
        if (!isMemoryError(error, 'decrypt_failed')) throw error;
        const fault: MemoryKeyFault = { epoch: later.record.epoch, memberId: later.record.creatorId, kind: 'backLink', proven: !isCommitmentMismatch(error) };
        state.faults.set(fault.epoch, fault);
        fail('decrypt_failed', faultMessage(memoryId, fault, epoch), { cause: error });
      }
      state.keys.set(later.record.epoch, later);
      if (state.faults.get(later.record.epoch)?.kind === 'keyCopy') state.faults.delete(later.record.epoch);
    }
    return later;
  }

  /**
   * The next epoch after the current one, for `members`, with their key copies (their certificates verified
   * first). With `cut` (a REVOKE by a client whose copy of the current epoch did not open, §18.5), an epoch without
   * a back link; otherwise its back link seals the current key, which it needs.
   */
  #nextEpoch(state: State, membership: { version: bigint; hash: Uint8Array }, members: readonly Member[], now: number, cut = false): { epoch: EpochKey; wraps: KeyWrap[] } {
    const memoryId = state.log.memoryId;
    const epoch = cut
      ? newCutEpoch(this.#crypto, this.#o.identity, memoryId, membership, state.currentEpoch + 1, now)
      : newEpoch(this.#crypto, this.#o.identity, memoryId, membership, this.#keyFor(state, state.currentEpoch), now);
    try {
      const wraps: KeyWrap[] = [];
      for (const m of members) {
        if (m.memberId !== this.agentId) {
          const certificate = state.certificates.get(m.memberId);
          if (certificate === undefined) fail('not_found', `no certificate of member ${m.memberId}: cannot seal the new key to it`);
          const cert = this.#verifyMemberCertificate(certificate, m.memberId);
          if (!this.#crypto.constantTimeEqual(cert.identityPublicKey, m.publicKey)) fail('identity_mismatch', `certificate of ${m.memberId} is for another key than its grant`);
        }
        wraps.push(wrapKey(this.#crypto, this.#o.identity, memoryId, epoch, { memberId: m.memberId, publicKey: m.publicKey }));
      }
      return { epoch, wraps };
    } catch (error) {
      epoch.key.wipe();
      throw error;
    }
  }

  async #rotate(state: State): Promise<State> {
    const memoryId = state.log.memoryId;
    for (let attempt = 0; ; attempt++) {
      const now = this.#clock();
      const { epoch, wraps } = this.#nextEpoch(state, { version: state.log.version, hash: state.log.head }, state.log.active(now), now);
      try {
        await this.#call(() => this.#rpc.rotateEpoch({ memoryId, epoch: epoch.record, wraps }));
        epoch.key.wipe();
        return await this.#refresh(memoryId);
      } catch (error) {
        epoch.key.wipe();
        // Someone else rotated first (or the members changed): take the store's epoch.
        if (attempt < 3 && isMemoryError(error, 'conflict')) {
          state = await this.#refresh(memoryId);
          if (!this.#rotationNeeded(state)) return state;
          continue;
        }
        throw error;
      }
    }
  }

  #info(state: State): MemoryInfo {
    const log = state.log;
    const now = this.#clock();
    const me = log.member(this.agentId);
    if (me === undefined) fail('permission_denied', `${this.agentId} is not a member of ${log.memoryId}`);
    const u = state.usage;
    return {
      memoryId: log.memoryId,
      ownerId: log.ownerId,
      access: levelOf(me.access),
      createdAtMs: log.createdAtMs,
      expiresAtMs: log.expiresAtMs === 0 ? undefined : log.expiresAtMs,
      members: log.active(now).map((m) => ({ agentId: m.memberId, access: levelOf(m.access), expiresAtMs: m.expiresAtMs === 0 ? undefined : m.expiresAtMs })),
      membershipVersion: log.version,
      currentEpoch: state.currentEpoch,
      usage: {
        bytes: num(u?.bytes ?? 0n),
        segments: num(u?.segments ?? 0n),
        maxBytes: num(u?.maxBytes ?? 0n),
        maxSegments: num(u?.maxSegments ?? 0n),
        ownerBytes: num(u?.ownerBytes ?? 0n),
        ownerSegments: num(u?.ownerSegments ?? 0n),
        ownerMaxBytes: num(u?.ownerMaxBytes ?? 0n),
        ownerMaxSegments: num(u?.ownerMaxSegments ?? 0n),
      },
      keyFaults: [...state.faults.values()].sort((a, b) => b.epoch - a.epoch),
    };
  }
}

/**
 * Why a key is missing, for `decrypt_failed` (§18.5): the epoch, the member at fault, and the repair.
 * @param needed the epoch whose key was asked for (at or before the fault's)
 */
function faultMessage(memoryId: string, fault: MemoryKeyFault, needed: number): string {
  const { epoch: e, memberId: m } = fault;
  let why: string;
  if (fault.kind === 'keyCopy') {
    why = fault.proven
      ? `the key copy of epoch ${e} that member ${m} made for this agent does not open with this agent's identity key or names another memory, epoch or member`
      : `the key copy of epoch ${e} that ${m} signed does not match the key epoch ${e} commits to: either ${m} sealed another key, or the store paired the copy with another record of epoch ${e} (a copy's signature does not cover the commitment)`;
  } else {
    why = fault.proven
      ? `the back link of epoch ${e}, made by member ${m}, does not open under the key epoch ${e} commits to`
      : `the back link of epoch ${e}, made by member ${m}, does not open to the key of epoch ${e - 1}: either ${m} made a bad back link or the store served another record of epoch ${e - 1}`;
  }
  const what = needed === e ? `the key of epoch ${needed}` : `the key of epoch ${needed} (reached through epoch ${e})`;
  return `${what} of ${memoryId} is not available to this agent: ${why}; the owner or an admin can revoke ${m}${fault.proven ? '' : ' if it is at fault'} (§18.5)`;
}

function wipeState(state: State): void {
  for (const k of state.keys.values()) (k.key as SecretKey).wipe();
  state.keys.clear();
}

