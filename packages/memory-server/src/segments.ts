/**
 * Segments (docs/PROTOCOL.md §18.6, §18.7): ListSegments and ReadSegment for readers, and WriteSegment —
 * compare-and-set on the segment version, a retried stored write recognised by its signature, the key
 * epoch current, the memory's and the owner's quotas kept.
 */
import { bytes, int } from '@parley/db';
import { assertWriteRecordShape, isMemoryId, isSegmentId, sameWrite, writeLayout } from '@parley/memory';
import {
  MemoryAccess,
  WriteRecordSchema,
  fromBinary,
  toBinary,
  type ListSegmentsRequest,
  type ListSegmentsResponseSchema,
  type ReadSegmentRequest,
  type ReadSegmentResponseSchema,
  type WriteRecord,
  type WriteSegmentRequest,
  type WriteSegmentResponseSchema,
} from '@parley/proto';
import { access, rotationRequired } from './access.js';
import { assertTime, callTx, refuse, type Caller, type Init, type OpContext, type Outcome } from './call.js';
import { live } from './rows.js';

export async function listSegments(c: OpContext, req: ListSegmentsRequest, caller: Caller, now: number): Promise<Outcome<Init<typeof ListSegmentsResponseSchema>>> {
  const size = req.pageSize === 0 ? 100 : req.pageSize;
  if (size < 1 || size > 1000) refuse('malformed', 'page_size must be 1..1000');
  if (req.pageToken !== '' && !isSegmentId(req.pageToken)) refuse('malformed', 'page_token is not one this service issued');
  const rows = await callTx(c.db, caller, async (tx) => {
    await access(c, tx, req.memoryId, caller, now, MemoryAccess.READ, '');
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
}

export async function readSegment(c: OpContext, req: ReadSegmentRequest, caller: Caller, now: number): Promise<Outcome<Init<typeof ReadSegmentResponseSchema>>> {
  if (!isSegmentId(req.segmentId)) refuse('malformed', 'segment_id must be 1..128 chars of [a-z0-9._:/-] starting with [a-z0-9]');
  const rows = await callTx(c.db, caller, async (tx) => {
    await access(c, tx, req.memoryId, caller, now, MemoryAccess.READ, '');
    return tx.query<{ record: unknown; ciphertext: unknown }>(
      'SELECT record, ciphertext FROM memory_segments WHERE memory_id = $1 AND segment_id = $2 AND (expires_at_ms = 0 OR expires_at_ms > $3)',
      [req.memoryId, req.segmentId, now],
    );
  }, true);
  if (rows[0] === undefined) refuse('not_found', 'no such segment');
  return { response: { record: fromBinary(WriteRecordSchema, bytes(rows[0].record)), ciphertext: bytes(rows[0].ciphertext) } };
}

export async function writeSegment(c: OpContext, req: WriteSegmentRequest, caller: Caller, now: number): Promise<Outcome<Init<typeof WriteSegmentResponseSchema>>> {
  const record = assertWriteRecordShape(req.record);
  if (record.writerId !== caller.cert.agentId) refuse('identity_mismatch', 'the writer must be the caller');
  if (BigInt(req.ciphertext.length) !== record.ciphertextBytes || !c.crypto.constantTimeEqual(c.crypto.blake3(req.ciphertext), record.ciphertextDigest)) {
    refuse('malformed', 'ciphertext does not match the digest and length in its record');
  }
  if (!isMemoryId(req.memoryId)) refuse('malformed', 'memory_id must be "mem-" and 32 lowercase hex digits');
  if (!c.crypto.ed25519.verify(record.signature, writeLayout(req.memoryId, record), caller.cert.identityPublicKey)) refuse('bad_signature', 'write record signature does not verify');
  return callTx(c.db, caller, async (tx): Promise<Outcome<Init<typeof WriteSegmentResponseSchema>>> => {
    const { memory } = await access(c, tx, req.memoryId, caller, now, MemoryAccess.WRITE, 'update');
    const rows = await tx.query<{ record: unknown; size: unknown; expires_at_ms: unknown }>(
      'SELECT record, size, expires_at_ms FROM memory_segments WHERE memory_id = $1 AND segment_id = $2 FOR UPDATE',
      [memory.memoryId, record.segmentId],
    );
    const stored = rows[0];
    const current: WriteRecord | undefined = stored === undefined || !live(int(stored.expires_at_ms), now) ? undefined : fromBinary(WriteRecordSchema, bytes(stored.record));
    const currentVersion = current?.version ?? 0n;
    if (currentVersion !== record.previousVersion) {
      // A retry of a write that was stored (its answer lost) is recognised by its signature.
      if (current !== undefined && sameWrite(c.crypto, current, record)) {
        return { response: { outcome: { case: 'accepted', value: { version: current.version, alreadyApplied: true } } }, outcome: 'already_applied' };
      }
      return { response: { outcome: { case: 'conflict', value: { currentVersion, ...(current === undefined ? {} : { current }) } } }, outcome: 'cas_conflict' };
    }
    // Record times are checked after the compare-and-set, so an old write retried late is still recognised above.
    assertTime(c.skewMs, record.timestampMs, 'write', now);
    if (record.expiresAtMs !== 0n && record.expiresAtMs <= BigInt(now)) refuse('malformed', 'segment expiry is in the past');
    if (record.keyEpoch !== memory.currentEpoch) refuse('conflict', `key epoch ${record.keyEpoch} is not the current epoch ${memory.currentEpoch}`);
    if (await rotationRequired(tx, memory, now)) refuse('rotation_required', 'a holder of the current key left: start the next epoch first');
    const oldSize = stored === undefined ? 0 : int(stored.size);
    const dBytes = req.ciphertext.length - oldSize;
    const dSegments = stored === undefined ? 1 : 0;
    if (memory.usedBytes + dBytes > c.quotas.maxBytesPerMemory) refuse('quota_exceeded', `the memory would hold more than ${c.quotas.maxBytesPerMemory} bytes`);
    if (memory.usedSegments + dSegments > c.quotas.maxSegmentsPerMemory) refuse('quota_exceeded', `the memory would hold more than ${c.quotas.maxSegmentsPerMemory} segments`);
    const owner = await tx.query<Record<string, unknown>>('SELECT used_bytes, used_segments FROM memory_owners WHERE owner_id = $1 FOR UPDATE', [memory.ownerId]);
    if (int(owner[0]?.['used_bytes'] ?? 0) + dBytes > c.quotas.maxBytesPerOwner) refuse('quota_exceeded', `the owner's memories would hold more than ${c.quotas.maxBytesPerOwner} bytes`);
    if (int(owner[0]?.['used_segments'] ?? 0) + dSegments > c.quotas.maxSegmentsPerOwner) {
      refuse('quota_exceeded', `the owner's memories would hold more than ${c.quotas.maxSegmentsPerOwner} segments`);
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
}
