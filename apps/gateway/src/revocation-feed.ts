/**
 * The gateway's revocation feed (docs/PROTOCOL.md §10.7, §15.6–§15.7): loads
 * the registry's full signed revocation list (GetRevocationList, paged), then
 * follows WatchRevocations. Every batch goes through RevocationListFollower
 * (gapless versions, hash chain, head signed by a pinned issuer key) before it
 * reaches the MemoryRevocationSet, with the signed head's `issued_at_ms` as
 * its freshness (never the receive time). Each new entry is handed to
 * `onRevoked` (the gateway closes that agent's streams at once).
 *
 * On a dropped stream it reconnects from the last verified version with
 * exponential backoff; on a gap or a batch that does not verify it starts over
 * with a full list. While disconnected nothing refreshes the set, so it goes
 * stale after its freshness bound and the gateway fails closed (unless the
 * set is fail-open) — no separate timer needed.
 *
 * Rollback: a list older than one already verified — by this process, or by
 * any gateway on the same database before (the high-water mark in
 * `gateway_revocation_floor`, {@link openRevocationFloor}) — is refused, and
 * the newer list kept. Fork: a list at or past the mark that lacks a revocation
 * verified before (kept in `gateway_revocations_kept`) is taken with every
 * revocation held kept, and logged (`revocation_fork`): a registry restored
 * from an older backup cannot un-revoke anyone, not even across a gateway
 * restart (PROTOCOL §10.7). The gateway then fails
 * closed once its list is stale, and logs one error a minute (event
 * `revocation_rollback`) saying what happened and what the operator does: re-issue the
 * lost revocations until the registry's version reaches the mark
 * (docs/OPERATIONS.md, "Restoring the registry").
 *
 * The registry client's channel must use {@link REGISTRY_CHANNEL_OPTIONS}: a
 * grpc-js channel has its own reconnect backoff (1 s × 1.6ⁿ up to 120 s), and
 * while it waits, every call fails at once — so after a long registry outage
 * the feed, retrying every 10 s, kept failing until the channel's own timer
 * fired (43 s after the registry was back, in the review). Capping the
 * channel's backoff below the feed's keeps the feed's bound the real one.
 */
import { IdleWatchdog, sleep } from '@parley/async';
import { fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { int, type Database } from '@parley/db';
import type { MemoryRevocationSet, RevocationEntry, TrustBundle } from '@parley/identity';
import type { RegistryService } from '@parley/proto';
import { LogThrottle, RpcError, type Client } from '@parley/rpc';
import { RevocationListFollower } from '@parley/identity';
import type { Logger } from 'pino';

/**
 * Channel options for the registry client the feed uses: the channel's own
 * reconnect backoff stays under the feed's (see the module comment).
 */
export const REGISTRY_CHANNEL_OPTIONS: Readonly<Record<string, number>> = Object.freeze({
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 2_000,
});

/** Settings of a {@link RevocationFeed}. */
export interface RevocationFeedOptions {
  readonly crypto: ParleyCrypto;
  /** A client of the registry (unsigned: revocation reads need no operator key unless the registry says so). */
  readonly client: Client<typeof RegistryService>;
  readonly registryId: Uint8Array;
  /** The trust bundle revocation heads must be signed by (a live view when the gateway follows the registry's). */
  readonly trustBundle: TrustBundle;
  readonly revocations: MemoryRevocationSet;
  /** Called for every entry newly applied (after the set has it). */
  readonly onRevoked: (entry: RevocationEntry) => void;
  /**
   * Called with each batch's `trust_bundle_version` hint (§15.9) and awaited before the batch is
   * checked: a trust bundle follower fetches a newer version first, so a head signed by a key that
   * version introduces verifies. Must not throw.
   */
  readonly onTrustBundleVersion?: (version: bigint) => Promise<void>;
  readonly logger: Logger;
  /** First reconnect delay, ms (doubles up to `maxBackoffMs`). Default 500. */
  readonly minBackoffMs?: number;
  /** Default 5 000 (the channel's own reconnect backoff is capped below it: {@link REGISTRY_CHANNEL_OPTIONS}). */
  readonly maxBackoffMs?: number;
  /**
   * A watch that delivers nothing for this long is cancelled and opened again (default {@link WATCH_IDLE_MS}): a
   * registry sends a heartbeat every 15 s (its default) even when nothing changes, so silence means a stream the
   * network or a stuck server left open — which TCP keepalive does not notice while the connection itself lives.
   */
  readonly idleTimeoutMs?: number;
  readonly clock?: () => number;
  /** The persisted high-water mark (default: none, only this process's own list counts). */
  readonly floor?: RevocationFloor;
}

/** What was verified before, kept across restarts: the newest list version, and every revocation. */
export interface RevocationFloor {
  /** The version loaded at start. */
  readonly version: number;
  /** The revocations loaded at start: they stay revoked whatever list the registry serves later. */
  readonly kept: readonly RevocationEntry[];
  /** Records a newer verified version (never lowers it). */
  raise(version: number): Promise<void>;
  /** Records verified revocations (those already recorded are skipped). */
  remember(entries: readonly RevocationEntry[]): Promise<void>;
}

/** A kept row's `subject`: the agent id, or the serial in hex. */
const subjectOf = (e: RevocationEntry): string => (e.kind === 'agent' ? e.agentId : toHex(e.serial));
/** One key per revoked subject. */
const keyOf = (e: RevocationEntry): string => `${e.kind}:${subjectOf(e)}`;

/** Rows of one `remember` statement. */
const REMEMBER_ROWS = 1000;

/**
 * The high-water mark of one registry's revocation list and the revocations verified so far, in the
 * gateway database (shared by every gateway on it): read now, added to as lists verify.
 */
export async function openRevocationFloor(db: Database, registryId: Uint8Array): Promise<RevocationFloor> {
  const id = Buffer.from(registryId);
  const rows = await db.query<{ version: unknown }>('SELECT version FROM gateway_revocation_floor WHERE registry_id = $1', [id]);
  const keptRows = await db.query<{ kind: unknown; subject: unknown; reason: unknown; revoked_at_ms: unknown }>(
    'SELECT kind, subject, reason, revoked_at_ms FROM gateway_revocations_kept WHERE registry_id = $1',
    [id],
  );
  const kept: RevocationEntry[] = keptRows.map((r) =>
    int(r.kind) === 1
      ? { kind: 'agent', agentId: String(r.subject), reason: String(r.reason), revokedAtMs: int(r.revoked_at_ms) }
      : { kind: 'serial', serial: fromHex(String(r.subject)), reason: String(r.reason), revokedAtMs: int(r.revoked_at_ms) },
  );
  const recorded = new Set(kept.map(keyOf));
  return {
    version: rows[0] === undefined ? 0 : int(rows[0].version),
    kept,
    async raise(version) {
      await db.query(
        `INSERT INTO gateway_revocation_floor (registry_id, version, updated_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (registry_id) DO UPDATE SET version = EXCLUDED.version, updated_at_ms = EXCLUDED.updated_at_ms
         WHERE gateway_revocation_floor.version < EXCLUDED.version`,
        [id, version, Date.now()],
      );
    },
    async remember(entries) {
      const fresh = entries.map((e) => ({ e, key: keyOf(e) })).filter((x) => !recorded.has(x.key));
      for (let i = 0; i < fresh.length; i += REMEMBER_ROWS) {
        const chunk = fresh.slice(i, i + REMEMBER_ROWS);
        await db.query(
          `INSERT INTO gateway_revocations_kept (registry_id, kind, subject, reason, revoked_at_ms)
           SELECT $1::bytea, * FROM unnest($2::smallint[], $3::text[], $4::text[], $5::bigint[]) ON CONFLICT DO NOTHING`,
          [
            id,
            chunk.map(({ e }) => (e.kind === 'agent' ? 1 : 2)),
            chunk.map(({ e }) => subjectOf(e)),
            chunk.map(({ e }) => e.reason),
            chunk.map(({ e }) => String(e.revokedAtMs)),
          ],
        );
        for (const { key } of chunk) recorded.add(key);
      }
    },
  };
}

const ROLLBACK = 'revocation list rollback';
/**
 * Pages of one full list at the most: the registry's list bound (10 000 entries a page, at least one) makes
 * this far more than any list needs; a registry that pages on beyond it is not followed.
 */
const MAX_LIST_PAGES = 100_000;

/** Follows a registry's revocation list into a MemoryRevocationSet until closed. */
/** Default {@link RevocationFeedOptions.idleTimeoutMs}: two registry heartbeats (15 s each) and some. */
export const WATCH_IDLE_MS = 40_000;

export class RevocationFeed {
  readonly #o: RevocationFeedOptions;
  readonly #clock: () => number;
  readonly #abort = new AbortController();
  #follower: RevocationListFollower | undefined;
  #loop: Promise<void> | undefined;
  /** The newest version verified so far (persisted in the floor, when there is one). */
  #floor: number;
  #rollbackLoggedAt = 0;
  /** The fork's error line: once a minute (it lasts until the operator re-issues what the registry lost). */
  readonly #forkLog = new LogThrottle(60_000);
  #synced!: () => void;
  /** Resolves after the first full list has been applied. */
  readonly synced: Promise<void>;
  /** Times the watch was (re)opened. */
  connects = 0;
  /** Whether the registry answers: true after a full list or a watch batch verified, false after a failure until the next. */
  connected = false;
  /** Since when the feed is down (its first failure since it was last up), and how many attempts failed since: for the one recovery line. */
  #down: { sinceMs: number; failures: number } | undefined;

  constructor(options: RevocationFeedOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
    this.#floor = options.floor?.version ?? 0;
    // Revoked before, on this database: revoked still, whatever list the registry serves from now on.
    if (options.floor !== undefined && options.floor.kept.length > 0) options.revocations.keep(options.floor.kept);
    this.synced = new Promise((resolve) => (this.#synced = resolve));
  }

  /** The verified list version applied so far. */
  get version(): number {
    return this.#o.revocations.version;
  }

  /** Starts following (idempotent). */
  start(): void {
    this.#loop ??= this.#run();
  }

  /** Stops following and waits for the loop to end. */
  async close(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const { logger } = this.#o;
    const signal = this.#abort.signal;
    const minBackoff = this.#o.minBackoffMs ?? 500;
    const idleMs = this.#o.idleTimeoutMs ?? WATCH_IDLE_MS;
    let backoff = minBackoff;
    let silent = false;
    while (!signal.aborted) {
      try {
        if (this.#follower === undefined) await this.#loadFull();
        if (signal.aborted) break; // closed while the list loaded: its abort listener below would never fire
        this.connects++;
        const follower = this.#follower!;
        // This watch's own signal: cancelled with the feed, or when the stream stays silent too long.
        const watchdog = new IdleWatchdog(signal, idleMs);
        silent = false;
        try {
          for await (const batch of this.#o.client.watchRevocations({ afterVersion: BigInt(follower.version) }, { signal: watchdog.signal })) {
            watchdog.touch();
            if (batch.trustBundleVersion > 0n) await this.#o.onTrustBundleVersion?.(batch.trustBundleVersion);
            const accepted = follower.apply(batch.entries, batch.head, this.#clock());
            this.#o.revocations.apply(accepted.entries, accepted.version, accepted.issuedAtMs);
            this.#raiseFloor(accepted.version);
            this.#remember(accepted.entries);
            this.#up();
            this.#announce(accepted.entries);
            backoff = minBackoff;
          }
        } finally {
          silent = watchdog.timedOut;
          watchdog.dispose();
        }
        throw new RpcError('unavailable', 'revocation watch ended');
      } catch (error) {
        this.connected = false;
        if (signal.aborted) break;
        if (this.#down === undefined) this.#down = { sinceMs: this.#clock(), failures: 1 };
        else this.#down.failures++;
        const e = silent ? new RpcError('deadline_exceeded', `the revocation watch sent nothing for ${idleMs} ms`) : RpcError.from(error);
        const transient = e.code === 'unavailable' || e.code === 'deadline_exceeded' || e.code === 'cancelled';
        // A gap, a broken chain, a bad signature or a version the server no longer has: start over from a full list.
        if (!transient) this.#follower = undefined;
        if (e.code === 'failed_precondition' && e.localDetails.startsWith(ROLLBACK)) {
          // Said loudly once a minute (the retries go on every few seconds), quietly in between.
          const now = this.#clock();
          const loud = now - this.#rollbackLoggedAt >= 60_000;
          if (loud) this.#rollbackLoggedAt = now;
          logger[loud ? 'error' : 'debug']({ event: 'revocation_rollback', code: e.code, held_version: this.#heldVersion(), retry_ms: backoff }, e.localDetails);
          await sleep(backoff, signal);
          backoff = Math.min(backoff * 2, this.#o.maxBackoffMs ?? 5_000);
          continue;
        }
        logger.warn(
          { event: transient ? 'revocation_feed_disconnected' : 'revocation_feed_rejected', code: e.code, detail: e.localDetails, version: this.#o.revocations.version, retry_ms: backoff },
          transient ? 'revocation feed disconnected: reconnecting' : 'revocation feed refused a batch: reloading the full list',
        );
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, this.#o.maxBackoffMs ?? 5_000);
      }
    }
  }

  /** Fetches and verifies the whole list (paged), replaces the set with it, announces the new entries. */
  async #loadFull(): Promise<void> {
    const { crypto, client, registryId, trustBundle, revocations } = this.#o;
    const follower = new RevocationListFollower(crypto, { registryId, trustBundle });
    const all: RevocationEntry[] = [];
    let issuedAtMs = 0;
    for (let pages = 1; ; pages++) {
      const res = await client.getRevocationList({ afterVersion: BigInt(follower.version) }, { signal: this.#abort.signal, timeoutMs: 15_000 });
      const accepted = follower.apply(res.entries, res.head, this.#clock());
      all.push(...accepted.entries);
      issuedAtMs = accepted.issuedAtMs;
      if (BigInt(follower.version) >= res.currentVersion) break;
      // A page behind the current version must bring entries (§15.6: at least one); one that does not, or more
      // pages than the versions could need, is a registry that cannot be followed: refused (the loop retries
      // with backoff) rather than asked again at once, forever.
      if (accepted.entries.length === 0) throw new RpcError('malformed', `the registry's revocation list page after version ${follower.version} brought no entries, but its current version is ${res.currentVersion}`);
      if (pages >= MAX_LIST_PAGES) throw new RpcError('malformed', `the registry's revocation list took more than ${MAX_LIST_PAGES} pages`);
    }
    const held = this.#heldVersion();
    if (follower.version < held) {
      throw new RpcError(
        'failed_precondition',
        `${ROLLBACK}: the registry's revocation list is at version ${follower.version}, older than version ${held} already verified here` +
          ` (its database restored from a backup taken before the last ${held - follower.version} revocation(s)?). Keeping the newer list:` +
          ` no revocation is undone, and agents are refused once it is stale. Operator: re-issue the revocations made after the backup` +
          ` (\`parley-registry agent revoke\`; this gateway's "revocation received" log lines name them) until the registry's version reaches ${held};` +
          ` see docs/OPERATIONS.md, "Restoring the registry"`,
      );
    }
    const { added, lacking } = revocations.replace(all, follower.version, issuedAtMs);
    this.#raiseFloor(follower.version);
    this.#remember(all);
    this.#follower = follower;
    this.#up();
    this.#o.logger.info({ version: follower.version, revocations: all.length }, 'revocation list loaded');
    if (lacking > 0 && this.#forkLog.admit(this.#clock()) !== undefined) {
      this.#o.logger.error(
        { event: 'security', stage: 'revocation', code: 'revocation_fork', version: follower.version, kept: lacking },
        `the registry's revocation list at version ${follower.version} lacks ${lacking} revocation(s) verified here before (its database restored from a backup?):` +
          ` they stay revoked on this gateway. Operator: re-issue them on the registry (\`parley-registry agent revoke\`); see docs/OPERATIONS.md, "Restoring the registry"`,
      );
    }
    this.#announce(added);
    this.#synced();
  }

  /**
   * The registry answered with something that verified: connected. After a failure (the "revocation feed
   * disconnected: reconnecting" warnings, one per retry) this logs one info line with how long it was down —
   * once per outage, not per retry.
   */
  #up(): void {
    this.connected = true;
    const down = this.#down;
    if (down === undefined) return;
    this.#down = undefined;
    const downMs = Math.max(0, this.#clock() - down.sinceMs);
    this.#o.logger.info(
      { event: 'revocation_feed_reconnected', down_ms: downMs, failed_attempts: down.failures, version: this.#o.revocations.version },
      `revocation feed connected again after ${(downMs / 1000).toFixed(1)} s down (${down.failures} failed attempt${down.failures === 1 ? '' : 's'})`,
    );
  }

  /** Records verified revocations in the floor (a failure is logged: they are kept in memory all the same). */
  #remember(entries: readonly RevocationEntry[]): void {
    if (entries.length === 0 || this.#o.floor === undefined) return;
    this.#o.floor.remember(entries).catch((error: unknown) => this.#o.logger.warn({ err: error, revocations: entries.length }, 'could not record revocations in the database'));
  }

  /** The newest version verified: this process's list, or the persisted mark. */
  #heldVersion(): number {
    return Math.max(this.#floor, this.#o.revocations.version);
  }

  #raiseFloor(version: number): void {
    if (version <= this.#floor) return;
    this.#floor = version;
    this.#o.floor?.raise(version).catch((error: unknown) => this.#o.logger.warn({ err: error, version }, 'could not record the revocation list high-water mark'));
  }

  #announce(entries: readonly RevocationEntry[]): void {
    for (const entry of entries) {
      this.#o.logger.info(
        entry.kind === 'agent' ? { event: 'revocation', agent: entry.agentId, reason: entry.reason } : { event: 'revocation', serial: Buffer.from(entry.serial).toString('hex'), reason: entry.reason },
        'revocation received',
      );
      try {
        this.#o.onRevoked(entry);
      } catch (error) {
        this.#o.logger.error({ err: error }, 'revocation handler failed');
      }
    }
  }
}
