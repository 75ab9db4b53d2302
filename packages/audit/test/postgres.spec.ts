// The shared store suite against a real PostgreSQL server (DATABASE_URL, as in
// CI), in a schema of its own that is dropped afterwards; plus what only a
// real server can show: writers on separate connections racing, and
// migrations racing. Without DATABASE_URL the suite is skipped locally and
// FAILS under CI=true.
import { randomBytes } from 'node:crypto';
import { MessageType } from '@parley/proto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, isAuditError, openPostgresStore, verifyChain, type AuditStore } from '../src/index.js';
import { crypto } from './fixtures.js';
import { postgresSpecifics } from './postgres-specifics.js';
import { storeSuite } from './store-suite.js';

const url = process.env['DATABASE_URL'];

if (url === undefined || url === '') {
  if (process.env['CI'] !== undefined && process.env['CI'] !== '' && process.env['CI'] !== 'false') {
    describe('PostgreSQL store', () => {
      it('runs against a real server in CI', () => {
        throw new Error('DATABASE_URL is not set: CI must run the PostgreSQL store tests against a real server');
      });
    });
  } else {
    describe.skip('PostgreSQL store (set DATABASE_URL to run)', () => {
      it('needs DATABASE_URL', () => undefined);
    });
  }
} else {
  const schema = `parley_audit_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  let n = 0;

  beforeAll(async () => {
    await pool.query(`CREATE SCHEMA ${schema}`);
  });
  afterAll(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await pool.end();
  });

  storeSuite('PostgreSQL', () => {
    const table = `${schema}.audit_${n++}`;
    return {
      open: () => openPostgresStore(crypto, pool, { table, pageSize: 5 }),
      reopen: async (store: AuditStore) => {
        await store.close();
        return openPostgresStore(crypto, pool, { table });
      },
    };
  });

  postgresSpecifics('PostgreSQL', () => ({ client: pool, table: `${schema}.specific_${n++}` }));

  describe('PostgreSQL: concurrency across connections', () => {
    it('four writers on four connections appending at once never fork the chain', async () => {
      const table = `${schema}.race_${n++}`;
      const clients = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const c = new pg.Client({ connectionString: url });
          await c.connect();
          return c;
        }),
      );
      try {
        await Promise.all(clients.map((c) => openPostgresStore(crypto, c, { table }))); // racing migrations
        const writers = clients.map((_, i) => crypto.ed25519.keyPairFromSeed(new Uint8Array(32).fill(0x40 + i)));
        // Count lost races: every log starts at size 0 and only one can write index 0, so at least 3 must conflict.
        let conflicts = 0;
        const counted = (store: AuditStore): AuditStore => {
          const append = store.append.bind(store);
          return Object.assign(Object.create(store) as AuditStore, {
            append: (e: Parameters<AuditStore['append']>[0]) =>
              append(e).catch((error: unknown) => {
                if (isAuditError(error, 'conflict')) conflicts++;
                throw error;
              }),
            size: () => store.size(),
            read: (a: number, b: number) => store.read(a, b),
            readEncoded: (a: number, b: number) => store.readEncoded(a, b),
            close: () => store.close(),
          });
        };
        const logs = await Promise.all(
          clients.map(async (c, i) => AuditLog.open(crypto, {
              store: counted(await openPostgresStore(crypto, c, { table })),
              writer: writers[i]!,
              trustedKeys: writers.map((w) => w.publicKey),
            })),
        );
        const PER = 20;
        await Promise.all(
          logs.map(async (log, w) => {
            for (let i = 0; i < PER; i++) {
              await log.append({
                messageHash: new Uint8Array(32).fill(i),
                senderId: `gateway-${w}`,
                recipientId: 'agent-x',
                messageType: MessageType.UNSPECIFIED,
                outcome: 'routed',
              });
            }
          }),
        );
        const store = await openPostgresStore(crypto, pool, { table });
        expect(await store.size()).toBe(4 * PER);
        const result = await verifyChain(crypto, store.read(0, 4 * PER), { keys: writers.map((w) => w.publicKey) });
        expect(result.ok).toBe(true);
        for (const log of logs) await log.refresh();
        const roots = new Set(logs.map((l) => Buffer.from(l.rootHash()).toString('hex')));
        expect(roots.size).toBe(1);
        expect(conflicts).toBeGreaterThanOrEqual(3);
      } finally {
        await Promise.all(clients.map((c) => c.end()));
      }
    });
  });

  describe('PostgreSQL: notifications sent with entries', () => {
    it('sends a notification in the entry\'s own statement, only when the entry is stored; a store without them refuses them', async () => {
      const table = `${schema}.notify_${n++}`;
      const channel = `parley_test_${process.pid}`;
      const listener = new pg.Client({ connectionString: url });
      await listener.connect();
      const heard: string[] = [];
      listener.on('notification', (m) => void heard.push(m.payload ?? ''));
      await listener.query(`LISTEN ${channel}`);
      let statements = 0;
      const store = await openPostgresStore(crypto, pool, { table });
      const wrap = (notifies: boolean): AuditStore => ({
        kind: store.kind,
        size: () => store.size(),
        read: (from: number, to: number) => store.read(from, to),
        readEncoded: (from: number, to: number) => store.readEncoded(from, to),
        close: () => Promise.resolve(),
        append: (e) => (statements++, store.append(e)),
        appendMany: (e, x) => (statements++, store.appendMany(e, x)),
        notify: (x) => (statements++, store.notify(x)),
        ...(notifies ? { notifies } : {}),
      });
      const counting = wrap(true);
      expect(counting.notifies).toBe(true);
      const writer = crypto.ed25519.generateKeyPair();
      const log = await AuditLog.open(crypto, { store: counting, writer });
      const fields = (i: number) => ({ messageHash: new Uint8Array(32).fill(i), senderId: 'a', recipientId: 'b', messageType: MessageType.TASK_ASSIGNMENT, outcome: 'delivered' });
      // Three appends at once: one group, one statement, the two notifications with it.
      await Promise.all([log.append(fields(1), { notify: { channel, payload: 'one' } }), log.append(fields(2)), log.append(fields(3), { notify: { channel, payload: 'three' } })]);
      expect(statements).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(heard.sort()).toEqual(['one', 'three']);
      // Another writer took the next index: this statement inserts nothing, and notifies nothing.
      const other = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, pool, { table }), writer, maxRetries: 0 });
      await other.append(fields(4));
      await expect(log.append(fields(5), { notify: { channel, payload: 'lost race' } }).then(
        () => 'stored',
        (e: unknown) => (isAuditError(e, 'conflict') ? 'conflict' : String(e)),
      )).resolves.toBe('stored'); // retried after catching up: stored, then notified once
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(heard.filter((h) => h === 'lost race')).toHaveLength(1);
      await expect(store.appendMany([], [{ channel, payload: 'x' }])).rejects.toThrow(/1\.\.256 entries/);
      await expect(log.append(fields(6), { notify: { channel: 'Bad Channel', payload: 'x' } })).rejects.toThrow(/channel/);
      await expect(log.append(fields(7), { notify: { channel, payload: 'x'.repeat(8_000) } })).rejects.toThrow(/payload/);
      // A store that cannot send them (a file store has no `notifies`): refused before anything is written.
      const plain = await AuditLog.open(crypto, { store: wrap(false), writer, trustedKeys: [writer.publicKey] });
      await expect(plain.append(fields(8), { notify: { channel, payload: 'x' } })).rejects.toThrow(/cannot send notifications/);
      expect(plain.notify({ channel, payload: 'x' })).toBeUndefined(); // the caller sends it its own way

      // Notifications with no entry of their own go through the log's group commit: with the next group of
      // entries when there is one, else all that wait in one statement of their own.
      await log.refresh();
      statements = 0;
      await Promise.all([log.notify({ channel, payload: 'idle 1' }), log.notify({ channel, payload: 'idle 2' })]);
      expect(statements).toBe(1); // nothing else to write: one statement of notifications
      statements = 0;
      const first = log.append(fields(9)); // a group waits to be written
      const second = log.append(fields(10));
      const rider = log.notify({ channel, payload: 'rider' });
      expect(rider).toBeDefined();
      expect(() => log.notify({ channel: 'Bad Channel', payload: 'x' })).toThrow(/channel/); // never fails a group
      await Promise.all([first, second, rider]);
      expect(statements).toBe(1); // the rider cost none
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(heard.filter((h) => h === 'rider' || h.startsWith('idle')).sort()).toEqual(['idle 1', 'idle 2', 'rider']);
      // A group that fails takes its riders with it: rejected, and not sent.
      const failing = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, pool, { table }), writer, maxRetries: 0 });
      await log.append(fields(11)); // `failing` is now behind: its next write loses the race
      const lost = failing.append(fields(12));
      const lostRider = failing.notify({ channel, payload: 'lost rider' });
      expect(lostRider).toBeDefined();
      await expect(lost).rejects.toThrow();
      await expect(lostRider).rejects.toThrow();
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(heard).not.toContain('lost rider');
      await listener.end();
    });
  });
}
