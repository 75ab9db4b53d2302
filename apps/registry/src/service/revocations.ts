/**
 * The revocation list (docs/PROTOCOL.md §15.6–§15.7): RevokeAgent (an agent or one certificate serial),
 * GetRevocationList in pages with a signed head, and WatchRevocations — the backlog, then live entries as
 * they commit, signed heartbeats and new trust bundle versions. A caller ahead of this database (restored
 * from an older backup) is refused and the rollback logged.
 */
import { toHex } from '@parley/crypto-core';
import { assertAgentId, MAX_REVOCATION_REASON_LENGTH, revocationHeadLayout } from '@parley/identity';
import { RevocationReason, type MessageInitShape, type RegistryService, type SignedRevocationHeadSchema } from '@parley/proto';
import { RpcError, type CallContext, type ServiceImplementation } from '@parley/rpc';
import type { RegistryStore, RevocationRow } from '../store.js';
import type { Notifier, ServiceContext } from './context.js';
import { field, requireBytes, revocationEntry, type EntryInit } from './fields.js';
import { CallSlots, LogThrottle, peerAddress } from './limits.js';
import { REVOKE_UNKNOWN_METADATA_KEY } from '../wire.js';

/** Most revocation entries one GetRevocationList response or watch batch carries. */
export const MAX_LIST_ENTRIES = 10_000;
/**
 * Most encoded entry bytes one GetRevocationList response carries (about 1 MiB,
 * far below the 4 MiB a client accepts by default): with long reasons the
 * count limit alone would not keep a response receivable. Consumers page on
 * `current_version` anyway.
 */
export const MAX_LIST_BYTES = 1024 * 1024;
const WATCH_BATCH = 256;
/** Fallback poll of a watch, in case a notification is lost (a dropped LISTEN connection). */
const WATCH_POLL_MS = 5_000;
/** How long the current version read for one watch serves the others' polls (without a notification between). */
const SHARED_HEAD_MS = 1_000;
/** At most one `revocation_rollback` error line this often (the ones held back are counted in the next). */
const ROLLBACK_LOG_INTERVAL_MS = 60_000;

/**
 * The revocation list as every watch of this process reads it: one read per wake-up shared by all
 * watches instead of one query per watch. The current version is read once per notification (a commit
 * here, or `LISTEN/NOTIFY` from another process) and at most once a {@link SHARED_HEAD_MS} for the
 * safety polls; a watch that is current (the usual case) then reads nothing else. Entries are read only
 * when the version is ahead of a watch's cursor, and concurrent reads after the same cursor share one
 * query. A read is shared only with watches that saw the same notification count, so a watch woken by
 * a notification never takes a read that started before the commit it announced.
 */
export class RevocationFeed {
  readonly #store: RegistryStore;
  readonly #notifier: Notifier;
  #head: { generation: number; atMs: number; version: Promise<number> } | undefined;
  readonly #reads = new Map<string, Promise<RevocationRow[]>>();

  constructor(store: RegistryStore, notifier: Notifier) {
    this.#store = store;
    this.#notifier = notifier;
  }

  /** The current version of the list. */
  currentVersion(): Promise<number> {
    const generation = this.#notifier.generation;
    const nowMs = Date.now();
    const cached = this.#head;
    if (cached !== undefined && cached.generation === generation && nowMs >= cached.atMs && nowMs - cached.atMs < SHARED_HEAD_MS) return cached.version;
    const entry = { generation, atMs: nowMs, version: this.#store.revocationHead().then((h) => h.version) };
    this.#head = entry;
    entry.version.catch(() => {
      if (this.#head === entry) this.#head = undefined; // a failed read is not shared with later watches
    });
    return entry.version;
  }

  /** Entries with version > `cursor`, at most {@link WATCH_BATCH}. */
  entriesAfter(cursor: number): Promise<RevocationRow[]> {
    const key = `${this.#notifier.generation}:${cursor}`;
    let read = this.#reads.get(key);
    if (read === undefined) {
      read = this.#store.revocationsAfter(cursor, WATCH_BATCH).finally(() => this.#reads.delete(key));
      this.#reads.set(key, read);
    }
    return read;
  }
}

type HeadInit = MessageInitShape<typeof SignedRevocationHeadSchema>;

/** How a watch ends when the server stops: the client watches again (this registry restarted, or another one). */
function stoppingError(): RpcError {
  return new RpcError('unavailable', 'the registry is shutting down: watch again (after a restart, or on another registry instance)');
}

/** RevokeAgent, GetRevocationList, WatchRevocations. */
export function revocationHandlers(c: ServiceContext): Pick<ServiceImplementation<typeof RegistryService>, 'revokeAgent' | 'getRevocationList' | 'watchRevocations'> {
  const { store, settings } = c;
  /**
   * The rollback error line, at most once a minute in all. *Why global:* `after_version` is the caller's
   * choice, and the reads are anonymous by default: a limit per version let anyone write a line per
   * version they invented (found by review).
   */
  const rollbackLog = new LogThrottle(ROLLBACK_LOG_INTERVAL_MS);
  const feed = new RevocationFeed(store, c.notifier);
  const watchSlots = new CallSlots(c.watchLimits);

  /** A signed head of the list at `version` (§15.6), by the active issuer key. */
  function signedHead(version: number, headHash: Uint8Array): HeadInit {
    const issuer = c.issuers.active();
    const fields = { registryId: c.registryId, version: BigInt(version), headHash, issuedAtMs: BigInt(Date.now()), issuerKeyId: issuer.keyId };
    return { ...fields, signature: c.crypto.ed25519.sign(revocationHeadLayout(fields), issuer.secretKey) };
  }

  /**
   * A caller's `after_version` beyond our list means it verified a NEWER list
   * than this database holds: the database was restored from an older backup
   * (or is not the one the caller follows). Callers keep the newer list and
   * refuse to go back (they fail closed once it is stale); the operator must
   * re-issue the revocations made after the backup (docs/OPERATIONS.md
   * "Restoring the registry"). Logged as an error, at most once a minute in
   * all (with the count of the ones held back), and refused with a message
   * that says the same.
   */
  function checkAfter(after: bigint, current: number): number {
    if (after <= BigInt(current)) return Number(after);
    const admitted = rollbackLog.admit(Date.now());
    if (admitted !== undefined) {
      c.logger.error(
        { event: 'revocation_rollback', client_version: Number(after), registry_version: current, missing: Number(after) - current, suppressed: admitted.suppressed },
        `a client verified revocation list version ${after}, but this registry's list ends at version ${current}: the database is older than what gateways and agents have seen (restored from a backup taken before the last ${Number(after) - current} revocation(s)?). They keep the newer list and refuse agents once it is stale. Re-issue the revocations made after the backup (\`parley-registry agent revoke\`; the gateways' "revocation received" log lines name them) until its version reaches ${after}; see docs/OPERATIONS.md, "Restoring the registry"`,
      );
    }
    throw new RpcError(
      'failed_precondition',
      `after_version ${after} is beyond the current revocation list version ${current}: the registry's list is older than the one you verified (its database was restored from an older backup?); keep the newer list`,
    );
  }

  /**
   * WatchRevocations (§15.7): first the backlog after `afterVersion` in batches,
   * then live entries as they commit, each batch with a signed head; a signed
   * heartbeat when nothing happened for `heartbeatMs`. The cursor only moves
   * by the versions actually sent, and versions are read in order from the
   * table, so the stream has no gap and no repeat; a client that reconnects
   * with its last head version resumes exactly after it.
   */
  async function* watch(afterVersion: bigint, ctx: CallContext): AsyncGenerator<{ entries: EntryInit[]; head: HeadInit; trustBundleVersion: bigint }> {
    await c.auth.authorise(ctx, 'revocations');
    // Bounded in all and per address (§12): a watch is anonymous by default, never ends by itself, and
    // holds a timer, a wake-up and a signature every heartbeat.
    if (c.stopping.aborted) throw stoppingError();
    const slot = watchSlots.take(peerAddress(ctx.peer));
    if ('refused' in slot) {
      c.auth.securityEvent(ctx, 'unavailable', `revocation watch refused: ${slot.refused}`);
      throw new RpcError('unavailable', 'too many revocation watches: retry later, or poll GetRevocationList');
    }
    c.metrics.watchers.inc();
    try {
      yield* follow(afterVersion, ctx);
    } finally {
      c.metrics.watchers.dec();
      slot.release();
    }
  }

  async function* follow(afterVersion: bigint, ctx: CallContext): AsyncGenerator<{ entries: EntryInit[]; head: HeadInit; trustBundleVersion: bigint }> {
    let cursor = checkAfter(afterVersion, (await store.revocationHead()).version);
    let hash = await store.hashAt(cursor);
    let sentAt = 0;
    let sentBundle = -1;
    // The client going away ends the watch; so does the server stopping (at once: a stream it owns, that would
    // otherwise hold the shutdown for its whole grace period).
    const signal = AbortSignal.any([ctx.signal, c.stopping]);
    while (!signal.aborted) {
      // Register for the wake-up before reading, so a commit between the read and the wait is not missed.
      const due = sentAt === 0 ? 0 : settings.heartbeatMs - (Date.now() - sentAt);
      const woken = c.notifier.wait(Math.max(0, Math.min(due, WATCH_POLL_MS)), signal);
      // One read per wake-up shared by every watch (RevocationFeed); entries only when there are new ones.
      const rows = (await feed.currentVersion()) > cursor ? await feed.entriesAfter(cursor) : [];
      const last = rows.at(-1);
      const bundle = c.issuers.bundleVersion;
      if (last !== undefined) {
        cursor = last.version;
        hash = last.entryHash;
        yield { entries: rows.map((r) => revocationEntry(r)), head: signedHead(cursor, hash), trustBundleVersion: BigInt(bundle) };
        sentAt = Date.now();
        sentBundle = bundle;
        if (rows.length === WATCH_BATCH) continue; // more backlog: no waiting
      } else if (sentAt === 0 || Date.now() - sentAt >= settings.heartbeatMs || bundle !== sentBundle) {
        // The first message says "you are current" at once; later ones are heartbeats, or tell of a new trust bundle version.
        yield { entries: [], head: signedHead(cursor, hash), trustBundleVersion: BigInt(bundle) };
        sentAt = Date.now();
        sentBundle = bundle;
      }
      await woken;
    }
    if (c.stopping.aborted && !ctx.signal.aborted) throw stoppingError();
  }

  return {
    revokeAgent: async (req, ctx) => {
      const nowMs = Date.now();
      if (RevocationReason[req.reason] === undefined) throw new RpcError('malformed', `unknown revocation reason ${req.reason}`);
      if (req.reasonText.length > MAX_REVOCATION_REASON_LENGTH) {
        throw new RpcError('malformed', `reason_text must be at most ${MAX_REVOCATION_REASON_LENGTH} characters, got ${req.reasonText.length}`);
      }
      if (req.revokedAtMs < 0n || req.revokedAtMs > BigInt(nowMs + settings.maxClockSkewMs)) {
        throw new RpcError('malformed', 'revoked_at_ms must not be negative or in the future');
      }
      const revokedAtMs = req.revokedAtMs === 0n ? nowMs : Number(req.revokedAtMs);
      const subject = req.subject;
      if (subject.case === undefined) throw new RpcError('malformed', 'either agent_id or serial must be set');
      const agentId = subject.case === 'agentId' ? field(() => assertAgentId(subject.value, 'agent_id')) : undefined;
      const serial = subject.case === 'serial' ? requireBytes(subject.value, 16, 'serial') : undefined;
      const caller = await c.auth.authorise(ctx, 'write');
      // The operator signed the subject; this header only lets an unknown one through (a restore: OPERATIONS.md, "Restoring an older revocation list").
      const unknownOk = ctx.metadata.get(REVOKE_UNKNOWN_METADATA_KEY).some((v) => String(v) === '1');
      const request = { reason: req.reason, reasonText: req.reasonText, revokedAtMs, operatorKeyId: caller?.keyId ?? null, nowMs, unknownOk };
      const entry = agentId !== undefined ? await store.revokeAgent(agentId, request) : await store.revokeSerial(serial!, request);
      c.metrics.revoked.inc({ subject: agentId !== undefined ? 'agent' : 'serial', via: 'revoke' });
      c.notifier.notify();
      c.logger.info({ version: entry.version, agent_id: agentId, serial: serial && toHex(serial), operator: caller?.name, ...(unknownOk ? { unknown_ok: true } : {}) }, 'revoked');
      return { entry: revocationEntry(entry) };
    },

    getRevocationList: async (req, ctx) => {
      if (req.maxEntries > MAX_LIST_ENTRIES) throw new RpcError('malformed', `max_entries must be at most ${MAX_LIST_ENTRIES}`);
      await c.auth.authorise(ctx, 'revocations');
      const current = await store.revocationHead();
      const after = checkAfter(req.afterVersion, current.version);
      const rows = limitBytes(await store.revocationsAfter(after, req.maxEntries === 0 ? MAX_LIST_ENTRIES : req.maxEntries), MAX_LIST_BYTES);
      const last = rows.at(-1);
      const head = last === undefined ? signedHead(after, await store.hashAt(after)) : signedHead(last.version, last.entryHash);
      return { entries: rows.map((r) => revocationEntry(r)), head, currentVersion: BigInt(Math.max(current.version, last?.version ?? 0)) };
    },

    watchRevocations: (req, ctx) => watch(req.afterVersion, ctx),
  };
}

/** Upper bound of one entry's protobuf size: subject, reason text, hash, and generous framing for the varints. */
function entryBytes(r: RevocationRow): number {
  return Buffer.byteLength(r.agentId, 'utf8') + r.serial.length + Buffer.byteLength(r.reasonText, 'utf8') + r.entryHash.length + 64;
}

/** The longest prefix of `rows` within `maxBytes` (always at least one row, so paging advances). */
function limitBytes(rows: RevocationRow[], maxBytes: number): RevocationRow[] {
  let total = 0;
  for (let i = 0; i < rows.length; i++) {
    total += entryBytes(rows[i]!);
    if (total > maxBytes && i > 0) return rows.slice(0, i);
  }
  return rows;
}
