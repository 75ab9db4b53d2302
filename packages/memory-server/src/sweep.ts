/**
 * Expiry (docs/PROTOCOL.md §18.10): deletes expired memories with everything in them, expired segments,
 * and used request nonces past the skew window — each memory in its own transaction, its usage and its
 * owner's kept exact.
 */
import type { Database } from '@parley/db';
import type { RateLimiter } from '@parley/rpc';
import { MEMORY_COLUMNS, memoryRow } from './rows.js';
import type { MemoryLogger } from './settings.js';
import { int } from '@parley/db';

export interface SweepOptions {
  readonly db: Database;
  readonly clock: () => number;
  readonly limiter: RateLimiter;
  readonly logger: MemoryLogger;
  /** Tracks a transaction as in flight (the store's `close` waits for it). */
  readonly track: <T>(p: Promise<T>) => Promise<T>;
}

/**
 * Deletes expired memories (with everything in them), expired segments and
 * used request nonces past the skew window; runs every `sweepIntervalMs`.
 * Each memory is swept in its own transaction, its usage and its owner's kept exact.
 */
export async function sweep(o: SweepOptions): Promise<{ memories: number; segments: number; nonces: number }> {
  const now = o.clock();
  let memories = 0;
  let segments = 0;
  try {
    const expired = await o.db.query<{ memory_id: unknown }>('SELECT memory_id FROM memories WHERE expires_at_ms > 0 AND expires_at_ms <= $1 ORDER BY memory_id LIMIT 1000', [now]);
    for (const r of expired) {
      memories += await o.track(
        o.db.transaction(async (tx) => {
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
    const withExpired = await o.db.query<{ memory_id: unknown }>(
      'SELECT DISTINCT memory_id FROM memory_segments WHERE expires_at_ms > 0 AND expires_at_ms <= $1 ORDER BY memory_id LIMIT 1000',
      [now],
    );
    for (const r of withExpired) {
      segments += await o.track(
        o.db.transaction(async (tx) => {
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
    const nonces = await o.track(o.db.query('DELETE FROM memory_request_nonces WHERE expires_at_ms <= $1 RETURNING agent_id', [now]));
    o.limiter.sweep();
    if (memories + segments > 0) o.logger.info({ expired_memories: memories, expired_segments: segments }, 'memory sweep');
    return { memories, segments, nonces: nonces.length };
  } catch (error) {
    o.logger.error({ err: error }, 'memory sweep failed');
    throw error;
  }
}
