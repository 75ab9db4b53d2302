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
 * The registry client's channel must use {@link REGISTRY_CHANNEL_OPTIONS}: a
 * grpc-js channel has its own reconnect backoff (1 s × 1.6ⁿ up to 120 s), and
 * while it waits, every call fails at once — so after a long registry outage
 * the feed, retrying every 10 s, kept failing until the channel's own timer
 * fired (43 s after the registry was back, in the review). Capping the
 * channel's backoff below the feed's keeps the feed's bound the real one.
 */
import type { ParleyCrypto } from '@parley/crypto-core';
import type { MemoryRevocationSet, RevocationEntry, TrustBundle } from '@parley/identity';
import type { RegistryService } from '@parley/proto';
import { RevocationListFollower, RpcError, type Client } from '@parley/rpc';
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
  readonly clock?: () => number;
}

/** Follows a registry's revocation list into a MemoryRevocationSet until closed. */
export class RevocationFeed {
  readonly #o: RevocationFeedOptions;
  readonly #clock: () => number;
  readonly #abort = new AbortController();
  #follower: RevocationListFollower | undefined;
  #loop: Promise<void> | undefined;
  #synced!: () => void;
  /** Resolves after the first full list has been applied. */
  readonly synced: Promise<void>;
  /** Times the watch was (re)opened. */
  connects = 0;

  constructor(options: RevocationFeedOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
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
    let backoff = minBackoff;
    while (!signal.aborted) {
      try {
        if (this.#follower === undefined) await this.#loadFull();
        this.connects++;
        const follower = this.#follower!;
        for await (const batch of this.#o.client.watchRevocations({ afterVersion: BigInt(follower.version) }, { signal })) {
          if (batch.trustBundleVersion > 0n) await this.#o.onTrustBundleVersion?.(batch.trustBundleVersion);
          const accepted = follower.apply(batch.entries, batch.head, this.#clock());
          this.#o.revocations.apply(accepted.entries, accepted.version, accepted.issuedAtMs);
          this.#announce(accepted.entries);
          backoff = minBackoff;
        }
        throw new RpcError('unavailable', 'revocation watch ended');
      } catch (error) {
        if (signal.aborted) break;
        const e = RpcError.from(error);
        const transient = e.code === 'unavailable' || e.code === 'deadline_exceeded' || e.code === 'cancelled';
        // A gap, a broken chain, a bad signature or a version the server no longer has: start over from a full list.
        if (!transient) this.#follower = undefined;
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
    for (;;) {
      const res = await client.getRevocationList({ afterVersion: BigInt(follower.version) }, { signal: this.#abort.signal, timeoutMs: 15_000 });
      const accepted = follower.apply(res.entries, res.head, this.#clock());
      all.push(...accepted.entries);
      issuedAtMs = accepted.issuedAtMs;
      if (BigInt(follower.version) >= res.currentVersion) break;
    }
    const before = revocations.version;
    revocations.replace(all, follower.version, issuedAtMs);
    this.#follower = follower;
    this.#o.logger.info({ version: follower.version, revocations: all.length }, 'revocation list loaded');
    this.#announce(all.slice(before));
    this.#synced();
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

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
