/**
 * The live half of `parley-registry revocations --watch`: the
 * WatchRevocations stream, every batch verified by the follower (hash chain
 * and signed head, docs/PROTOCOL.md §15.6), reconnecting with backoff.
 */
import { RpcError } from '@parley/rpc';
import type { RevocationListFollower } from '@parley/identity';
import { entryJson, entryRow } from '../format.js';
import type { Connection } from './connection.js';
import { PROGRAM, type CommandContext } from './context.js';
import type { BatchVerifier } from './revocations.js';

/**
 * Follows WatchRevocations after `follower.version` until SIGINT or SIGTERM,
 * printing each verified entry (and with --json each heartbeat) and resuming
 * after the last verified version when the stream drops, so nothing is missed
 * or printed twice. Each batch goes through `verify`, which keeps the trust bundle current (a batch's
 * `trust_bundle_version` hint: an issuer rotation's new key verifies from its activation on).
 */
export async function watch(ctx: CommandContext<unknown>, conn: Connection, follower: RevocationListFollower, verify: BatchVerifier): Promise<void> {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let backoffMs = 500;
  try {
    while (!controller.signal.aborted) {
      try {
        for await (const batch of conn.client.watchRevocations({ afterVersion: BigInt(follower.version) }, { signal: controller.signal })) {
          // Freshness is the signed head's time (capped at now + skew, never going back), not when it arrived.
          const accepted = await verify(follower, batch.entries, batch.head, batch.trustBundleVersion);
          backoffMs = 500;
          if (ctx.json) {
            for (const e of batch.entries) ctx.out(JSON.stringify({ type: 'entry', ...entryJson(e) }));
            if (batch.entries.length === 0) ctx.out(JSON.stringify({ type: 'heartbeat', version: follower.version, issued_at_ms: accepted.issuedAtMs }));
          } else {
            for (const e of batch.entries) ctx.out(entryRow(e).map((c) => c || '-').join('  '));
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        const e = RpcError.from(error);
        if (e.code !== 'unavailable' && e.code !== 'cancelled' && e.code !== 'deadline_exceeded') throw error;
        process.stderr.write(`${PROGRAM}: watch interrupted (${e.localDetails}); reconnecting after version ${follower.version}\n`);
        await new Promise((r) => setTimeout(r, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 10_000);
      }
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
