// The mailbox's statements on both engines. The batched insert: every byte column of every row of a batch (items of
// very different sizes, each kind) reads back exactly, in the order given, with the notification sent.
import { migrate, openDatabase, type Database } from '@parley/db';
import { AgentCertificateSchema, create, DeliveryReceiptSchema, HandshakeFrameSchema, SecureMessageSchema } from '@parley/proto';
import type { RelayItem } from '@parley/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORGET_INSTANCE_AFTER, GATEWAY_MIGRATIONS, Mailbox, MAILBOX_BATCH, type NewMailboxItem } from '../../src/mailbox.js';
import { Quotas, type QuotaLimit } from '../../src/storage.js';

const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];

const bytes = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

function item(i: number): NewMailboxItem {
  const kinds: RelayItem[] = [
    { case: 'envelope', value: create(SecureMessageSchema, { version: 1, senderId: 'a', recipientId: 'b', sessionId: bytes(16, i), nonce: BigInt(i), encryptedPayload: bytes([0, 1, 1290, 70_000][i % 4]!, i), authTag: bytes(32, i), signature: bytes(64, i) }) },
    { case: 'handshake', value: create(HandshakeFrameSchema, { version: 1, senderId: 'a', recipientId: 'b', sessionId: bytes(16, i), step: 1, noiseMessage: bytes(32, i) }) },
    { case: 'receipt', value: create(DeliveryReceiptSchema, { version: 1, messageHash: bytes(32, i), senderId: 'a', recipientId: 'b', receivedAtMs: BigInt(i), signature: bytes(64, i) }) },
  ];
  return { recipientId: `agent-${i % 3}`, item: kinds[i % 3]!, itemHash: bytes(32, 1000 + i), senderId: `sender-${i % 5}`, senderSerial: bytes(16, 2000 + i), senderValidUntilMs: 9_000_000_000_000 + i };
}

const SCHEMA = `t_mbx_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
const engines: [string, { url?: string; schema?: string }][] = [['PGlite', {}]];
if (DATABASE_URL !== undefined) engines.push(['PostgreSQL', { url: DATABASE_URL, schema: SCHEMA }]);

describe.each(engines)('Mailbox statements on %s', (_, options) => {
  let db: Database;
  let mailbox: Mailbox;
  beforeAll(async () => {
    db = await openDatabase(options);
    mailbox = await Mailbox.open(db);
  }, 60_000);
  afterAll(async () => {
    if (options.schema !== undefined) await db?.query(`DROP SCHEMA IF EXISTS ${options.schema} CASCADE`);
    await db?.close();
  });

  it('stores a batch of mixed items byte for byte, in the order given', async () => {
    const items = Array.from({ length: 60 }, (_, i) => item(i));
    const stored = await mailbox.putMany(items, ['agent-1']);
    expect(stored.map((s) => s.recipientId)).toEqual(items.map((x) => x.recipientId));
    const ids = stored.map((s) => s.deliveryId);
    expect([...ids].sort((x, y) => (x < y ? -1 : 1))).toEqual(ids); // row ids follow the order given
    for (const recipient of ['agent-0', 'agent-1', 'agent-2']) {
      const want = items.filter((x) => x.recipientId === recipient);
      const got = await mailbox.pending(recipient, [], 100);
      expect(got.map((g) => g.item)).toEqual(want.map((x) => x.item));
      expect(got.map((g) => [g.itemHash, g.senderSerial, g.senderId, g.senderValidUntilMs])).toEqual(
        want.map((x) => [x.itemHash, x.senderSerial, x.senderId, x.senderValidUntilMs]),
      );
    }
  });

  it('reads several recipients\' pages in one statement exactly as one page each would read them', async () => {
    const ids = (page: readonly { deliveryId: bigint }[]) => page.map((x) => x.deliveryId);
    const rows = await mailbox.putMany(Array.from({ length: 30 }, (_, i) => ({ ...item(i), recipientId: `page-${i % 3}` })));
    const of = (r: string) => rows.filter((x) => x.recipientId === r).map((x) => x.deliveryId);
    const requests = [
      { recipientId: 'page-0', exclude: [], limit: 4, after: 0n },
      { recipientId: 'page-1', exclude: [of('page-1')[1]!, of('page-1')[2]!, of('page-1')[0]! - 1n], limit: 3, after: 0n }, // excluded ids skipped, the limit still met
      { recipientId: 'page-2', exclude: [of('page-2')[0]!], limit: 100, after: of('page-2')[5]! }, // after the cursor; an exclude below it is moot
      { recipientId: 'nobody', exclude: [], limit: 10, after: 0n },
      { recipientId: 'page-0', exclude: [], limit: 2, after: of('page-0')[8]! },
    ];
    const together = await mailbox.pendingMany(requests);
    const alone = await Promise.all(requests.map((r) => mailbox.pending(r.recipientId, r.exclude, r.limit, r.after)));
    expect(together.map(ids)).toEqual(alone.map(ids));
    expect(together.map(ids)).toEqual([of('page-0').slice(0, 4), [of('page-1')[0], of('page-1')[3], of('page-1')[4]], of('page-2').slice(6), [], of('page-0').slice(9)]);
    expect(together[0]!.map((x) => x.item)).toEqual(alone[0]!.map((x) => x.item));
  });

  it('refuses items whose hash or serial has the wrong length, and batches above MAILBOX_BATCH', async () => {
    await expect(mailbox.putMany([{ ...item(1), itemHash: bytes(31, 0) }])).rejects.toThrow(RangeError);
    await expect(mailbox.putMany([{ ...item(1), senderSerial: bytes(17, 0) }])).rejects.toThrow(RangeError);
    await expect(mailbox.putMany(Array.from({ length: MAILBOX_BATCH + 1 }, (_, i) => item(i)))).rejects.toThrow(RangeError);
  });

  it('a heartbeat counts the other live instances and deletes the rows of instances long gone (crashed ones leave one each)', async () => {
    const stale = 6_000;
    const now = Date.now();
    await db.query('INSERT INTO gateway_instances (instance_id, seen_at_ms) VALUES ($1, $2), ($3, $4), ($5, $6)', [
      'live-peer', now,
      'silent-peer', now - 60_000, // not counted, but kept: it may come back
      'crashed-long-ago', now - Math.max(FORGET_INSTANCE_AFTER * stale, 600_000) - 1_000,
    ]);
    // The presence each recorded: the long-gone instance's is cleared with its row.
    const cert = (agentId: string) => create(AgentCertificateSchema, { agentId, serial: new Uint8Array(16) });
    await mailbox.rememberAgent(cert('agent-on-live'), 'live-peer');
    await mailbox.rememberAgent(cert('agent-on-gone'), 'crashed-long-ago');
    expect(await mailbox.heartbeat('me', stale)).toEqual(['live-peer']);
    const ids = (await db.query<{ instance_id: string }>('SELECT instance_id FROM gateway_instances ORDER BY instance_id')).map((r) => r.instance_id);
    expect(ids).toEqual(['live-peer', 'me', 'silent-peer']);
    expect(await mailbox.presence('me', 10)).toEqual([{ agentId: 'agent-on-live', instanceId: 'live-peer' }]);
    await db.query('DELETE FROM gateway_instances');
    await db.query('DELETE FROM gateway_agents');
  });

  it('presence: a stream ending clears only its own record (not one a newer stream of the agent wrote, here or elsewhere)', async () => {
    const cert = create(AgentCertificateSchema, { agentId: 'agent-moving', serial: new Uint8Array(16) });
    const first = await mailbox.rememberAgent(cert, 'inst_a');
    await new Promise((resolve) => setTimeout(resolve, 5));
    const second = await mailbox.rememberAgent(cert, 'inst_b'); // moved before its first stream's end was recorded
    await mailbox.leftMany([{ agentId: 'agent-moving', seenAtMs: first }], 'inst_a');
    expect(await mailbox.presence('me', 10)).toEqual([{ agentId: 'agent-moving', instanceId: 'inst_b' }]);
    await mailbox.leftMany([{ agentId: 'agent-moving', seenAtMs: second }], 'inst_a'); // not inst_a's record
    expect(await mailbox.presence('me', 10)).toHaveLength(1);
    await mailbox.leftMany([{ agentId: 'agent-moving', seenAtMs: second }], 'inst_b');
    expect(await mailbox.presence('me', 10)).toEqual([]);
    // Without an instance (PGlite, one instance; or cross-instance routing off) none is recorded, and an older
    // record is cleared (the agent's stream is no longer there); leaving clears an instance's records.
    await mailbox.rememberAgent(cert, 'inst_b');
    expect(await mailbox.presence('me', 10)).toHaveLength(1);
    await mailbox.rememberAgent(cert);
    expect(await mailbox.presence('me', 10)).toEqual([]);
    await mailbox.rememberAgent(cert, 'inst_c');
    await mailbox.leave('inst_c');
    expect(await mailbox.presence('me', 10)).toEqual([]);
    await mailbox.notifyMany([{ channel: 'parley_fwd_nobody', payload: 'x' }]); // notifications nobody hears: no error
    await db.query('DELETE FROM gateway_agents');
  });

  it('keeps the whole mailbox\'s items and bytes exact through every statement that changes it (the gateway-wide quota\'s figure)', async () => {
    const exact = async () => {
      const [r] = await db.query<{ n: unknown; b: unknown }>('SELECT count(*) AS n, COALESCE(sum(octet_length(item)), 0) AS b FROM gateway_mailbox');
      return { items: Number(r!.n), bytes: Number(r!.b) };
    };
    expect(await mailbox.totals()).toEqual(await exact()); // rows the tests above left
    // Batches written at once (on PostgreSQL, on several connections: several shards).
    const stored = (await Promise.all([0, 1, 2, 3].map((k) => mailbox.putMany(Array.from({ length: 20 }, (_, i) => ({ ...item(20 * k + i), recipientId: `tot-${i % 4}` })))))).flat();
    expect((await mailbox.totals()).items).toBeGreaterThanOrEqual(80);
    expect(await mailbox.totals()).toEqual(await exact());
    await mailbox.removeMany(stored.slice(0, 15).map((s) => ({ recipientId: s.recipientId, deliveryId: s.deliveryId }))); // acks
    expect(await mailbox.totals()).toEqual(await exact());
    await mailbox.dropFromSender({ agentId: 'sender-1' }); // a revoked sender
    expect(await mailbox.totals()).toEqual(await exact());
    await db.query(`UPDATE gateway_mailbox SET item = '\\x0102'::bytea WHERE delivery_id = $1`, [stored[20]!.deliveryId.toString()]); // an operator's repair
    expect(await mailbox.totals()).toEqual(await exact());
    const later = await Mailbox.open(db, { clock: () => Date.now() + 10 * 3_600_000 });
    expect((await later.sweep()).length).toBeGreaterThan(0); // everything has expired for it
    expect(await mailbox.totals()).toEqual({ items: 0, bytes: 0 });
    await mailbox.putMany([item(1), item(2)]);
    await db.query('TRUNCATE gateway_mailbox');
    expect(await mailbox.totals()).toEqual({ items: 0, bytes: 0 });
    await mailbox.putMany([item(3)]);
    expect(await mailbox.totals()).toEqual(await exact());
    await db.query('DELETE FROM gateway_mailbox');
  });

  it('the totals migration counts the rows stored before it', async () => {
    const other = await openDatabase(options.schema === undefined ? {} : { ...options, schema: `${options.schema}_m7` });
    try {
      await migrate(other, { component: 'gateway', table: 'gateway_migrations', lockKey: 0x7061726c65796777n, migrations: GATEWAY_MIGRATIONS.slice(0, 6) });
      for (const n of [10, 200, 3000]) {
        await other.query(
          `INSERT INTO gateway_mailbox (recipient_id, item_kind, item, item_hash, sender_id, accepted_at_ms, expires_at_ms) VALUES ('r', 2, $1, $2, 's', 0, 1)`,
          [Buffer.from(bytes(n, n)), Buffer.from(bytes(32, n))],
        );
      }
      const upgraded = await Mailbox.open(other);
      expect(await upgraded.totals()).toEqual({ items: 3, bytes: 3210 });
    } finally {
      if (options.schema !== undefined) await other.query(`DROP SCHEMA IF EXISTS ${options.schema}_m7 CASCADE`);
      await other.close();
    }
  });

  it('holds an item once per recipient: a resend is answered from the row that holds it, an expired row is taken over (§10.8)', async () => {
    const count = async (r: string) => Number((await db.query<{ n: unknown }>('SELECT count(*) AS n FROM gateway_mailbox WHERE recipient_id = $1', [r]))[0]!.n);
    const x = { ...item(7), recipientId: 'dup-r' };
    const [a] = await mailbox.putMany([x]);
    expect(a!.duplicate).toBe(false);
    const totals = await mailbox.totals();
    // Sent again (alone, and twice in one batch beside a new item): the same row, no row added, the totals unchanged.
    const [b] = await mailbox.putMany([x]);
    expect(b).toMatchObject({ deliveryId: a!.deliveryId, acceptedAtMs: a!.acceptedAtMs, expiresAtMs: a!.expiresAtMs, duplicate: true });
    const y = { ...item(8), recipientId: 'dup-r' };
    const batch = await mailbox.putMany([y, x, y]);
    expect(batch.map((s) => s.duplicate)).toEqual([false, true, true]);
    expect(batch[1]!.deliveryId).toBe(a!.deliveryId);
    expect(batch[2]!.deliveryId).toBe(batch[0]!.deliveryId);
    expect(await count('dup-r')).toBe(2);
    expect((await mailbox.totals()).items).toBe(totals.items + 1);
    // The same item for another recipient is another row.
    const [other] = await mailbox.putMany([{ ...x, recipientId: 'dup-r2' }]);
    expect(other!.duplicate).toBe(false);
    // Acked, then sent again: stored anew (a later copy is the recipient's to drop as a duplicate).
    expect(await mailbox.removeEach([{ recipientId: 'dup-r', deliveryId: a!.deliveryId }, { recipientId: 'dup-r', deliveryId: a!.deliveryId }, { recipientId: 'dup-r', deliveryId: 1n << 60n }])).toEqual([true, false, false]);
    const [again] = await mailbox.putMany([x]);
    expect(again!.duplicate).toBe(false);
    expect(again!.deliveryId).toBeGreaterThan(a!.deliveryId);
    // A row whose TTL ran out and that no sweep deleted yet is no longer delivered: a resend takes it over, renewed.
    const later = Date.now() + 2 * 3_600_000;
    const afterTtl = await Mailbox.open(db, { clock: () => later });
    expect(await afterTtl.pending('dup-r', [], 10)).toEqual([]);
    const [renewed] = await afterTtl.putMany([x]);
    expect(renewed).toMatchObject({ deliveryId: again!.deliveryId, acceptedAtMs: later, expiresAtMs: later + 3_600_000, duplicate: true });
    expect((await afterTtl.pending('dup-r', [], 10)).map((p) => p.deliveryId)).toEqual([again!.deliveryId]);
    expect((await mailbox.totals()).items).toBe(totals.items + 2);
    // A copy under another certificate of its sender (a receipt re-signed after a key rotation has the same digest)
    // takes the row over: its bytes and serial, so that a revocation of the older certificate does not drop it.
    const rotated = { ...x, senderSerial: bytes(16, 4242), item: item(10).item };
    const [over] = await mailbox.putMany([rotated]);
    expect(over).toMatchObject({ deliveryId: again!.deliveryId, duplicate: true });
    const row = (await mailbox.pending('dup-r', [], 10)).find((r) => r.deliveryId === again!.deliveryId);
    expect([row!.deliveryId, row!.senderSerial, row!.item]).toEqual([again!.deliveryId, rotated.senderSerial, rotated.item]);
    expect(over!.size).toBe(row!.size);
    // A duplicate reports the size of the row that holds it (what its delete releases), not the copy's.
    const [same] = await mailbox.putMany([{ ...rotated, item: item(11).item }]);
    expect(same).toMatchObject({ deliveryId: again!.deliveryId, duplicate: true, size: row!.size });
    expect((await mailbox.totals()).items).toBe(totals.items + 2);
    // Copies stored at once (on PostgreSQL, on several connections: the inserts wait for each other): one row,
    // one copy stored, the others answered from it.
    const z = { ...item(12), recipientId: 'dup-r3' };
    const racing = (await Promise.all(Array.from({ length: 8 }, () => mailbox.putMany([z])))).flat();
    expect(new Set(racing.map((r) => r.deliveryId)).size).toBe(1);
    expect(racing.filter((r) => !r.duplicate)).toHaveLength(1);
    expect(await count('dup-r3')).toBe(1);
    await db.query("DELETE FROM gateway_mailbox WHERE recipient_id LIKE 'dup-%'");
  });

  it('the one-row-per-item migration deletes the copies stored before it, the row that expires last staying', async () => {
    const other = await openDatabase(options.schema === undefined ? {} : { ...options, schema: `${options.schema}_m8` });
    try {
      await migrate(other, { component: 'gateway', table: 'gateway_migrations', lockKey: 0x7061726c65796777n, migrations: GATEWAY_MIGRATIONS.slice(0, 7) });
      const put = (r: string, hash: number, n: number) =>
        other.query(`INSERT INTO gateway_mailbox (recipient_id, item_kind, item, item_hash, sender_id, accepted_at_ms, expires_at_ms) VALUES ($1, 2, $2, $3, 's', 0, 1) RETURNING delivery_id`, [
          r,
          Buffer.from(bytes(n, n)),
          Buffer.from(bytes(32, hash)),
        ]);
      const [first] = await put('r', 1, 10);
      const [second] = await put('r', 1, 10); // copies of one item for one recipient
      await put('r', 1, 10);
      await other.query(`UPDATE gateway_mailbox SET expires_at_ms = 0 WHERE delivery_id = $1`, [String(first!['delivery_id'])]); // the first copy expires first
      await put('r', 2, 20);
      await put('r2', 1, 30); // the same item for another recipient
      const upgraded = await Mailbox.open(other);
      const rows = await other.query<{ recipient_id: string; delivery_id: unknown }>('SELECT recipient_id, delivery_id FROM gateway_mailbox ORDER BY delivery_id');
      expect(rows.map((r) => r.recipient_id)).toEqual(['r', 'r', 'r2']);
      expect(String(rows[0]!.delivery_id)).toBe(String(second!['delivery_id'])); // of those that expire last, the oldest
      expect(await upgraded.totals()).toEqual({ items: 3, bytes: 60 });
    } finally {
      if (options.schema !== undefined) await other.query(`DROP SCHEMA IF EXISTS ${options.schema}_m8 CASCADE`);
      await other.close();
    }
  });

  it('quotas: the whole mailbox is bounded in items and bytes (total_items, total_bytes), read again each second', async () => {
    let now = Date.now();
    const refused: QuotaLimit[] = [];
    const base = await mailbox.totals();
    const byItems = new Quotas(mailbox, { totalItems: base.items + 2 }, () => now, (l) => refused.push(l));
    await byItems.admit('q-r1', 'q-s1', 10);
    await byItems.admit('q-r2', 'q-s2', 10); // another recipient and sender: only the total refuses
    await expect(byItems.admit('q-r3', 'q-s3', 10)).rejects.toMatchObject({ code: 'quota_exceeded', message: expect.stringContaining('for all recipients') });
    expect(refused).toEqual(['total_items']);
    byItems.removed('q-r1', 'q-s1', 10); // an item deleted here frees room at once
    await byItems.admit('q-r3', 'q-s3', 10);
    // Another instance's rows: seen at the next read, a second later.
    const limit = new Quotas(mailbox, { totalItems: base.items + 2 }, () => now, (l) => refused.push(l));
    await limit.admit('q-r1', 'q-s1', 10);
    await mailbox.putMany([{ ...item(0), recipientId: 'q-elsewhere' }, { ...item(1), recipientId: 'q-elsewhere' }]);
    await limit.admit('q-r1', 'q-s1', 10); // still the figure read a moment ago
    now += 1_001;
    await expect(limit.admit('q-r1', 'q-s1', 10)).rejects.toMatchObject({ code: 'quota_exceeded' });
    const bytesNow = (await mailbox.totals()).bytes;
    const byBytes = new Quotas(mailbox, { totalBytes: bytesNow + 100 }, () => now, (l) => refused.push(l));
    await byBytes.admit('q-r1', 'q-s1', 60);
    await expect(byBytes.admit('q-r2', 'q-s2', 60)).rejects.toMatchObject({ code: 'quota_exceeded' });
    expect(refused.slice(-2)).toEqual(['total_items', 'total_bytes']);
    const unbounded = new Quotas(mailbox, { totalItems: 0, totalBytes: 0 }, () => now);
    await unbounded.admit('q-r9', 'q-s9', 1_000_000);
    await db.query('DELETE FROM gateway_mailbox');
  });
});
