// PostgreSQL-store behaviour shared by the PGlite and real-PostgreSQL runs.
import { describe, expect, it } from 'vitest';
import { AuditLog, MAX_ENTRY_BYTES, openPostgresStore, verifyChain, type SqlClient } from '../src/index.js';
import { buildChain, crypto, fieldsFor, hashOf, writerA, writerB } from './fixtures.js';

/** A client that counts the INSERT statements it forwards and can be told to fail the next ones. */
function countingClient(client: SqlClient): SqlClient & { inserts: number; failInserts: number } {
  const counting = {
    inserts: 0,
    failInserts: 0,
    async query(text: string, params?: unknown[]) {
      if (/^\s*INSERT/i.test(text)) {
        counting.inserts += 1;
        if (counting.failInserts > 0) {
          counting.failInserts -= 1;
          throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
        }
      }
      return client.query(text, params);
    },
  };
  return counting;
}

/** A client that records the longest bytea value any result row brought back. */
function byteaWatchingClient(client: SqlClient): SqlClient & { largest: number } {
  const watching = {
    largest: 0,
    async query(text: string, params?: unknown[]) {
      const result = await client.query(text, params);
      for (const row of result.rows) {
        for (const value of Object.values(row as Record<string, unknown>)) {
          if (value instanceof Uint8Array) watching.largest = Math.max(watching.largest, value.length);
        }
      }
      return result;
    },
  };
  return watching;
}

/** Registers the PostgreSQL-specific tests; `make` gives a client and a fresh table name. */
export function postgresSpecifics(name: string, make: () => { client: SqlClient; table: string }): void {
  describe(`PostgreSQL store specifics: ${name}`, () => {
    it('migration is idempotent; migrate: false needs an existing table', async () => {
      const { client, table } = make();
      await expect(openPostgresStore(crypto, client, { table, migrate: false })).rejects.toMatchObject({ code: 'not_found' });
      const a = await openPostgresStore(crypto, client, { table });
      await a.migrate();
      const b = await openPostgresStore(crypto, client, { table, migrate: false });
      expect(await b.size()).toBe(0);
    });

    it('the table is append-only: UPDATE and DELETE are refused by the trigger', async () => {
      const { client, table } = make();
      const store = await openPostgresStore(crypto, client, { table });
      for (const e of buildChain(3)) await store.append(e);
      await expect(client.query(`UPDATE ${table} SET entry = entry WHERE idx = 1`)).rejects.toThrow(/append-only/);
      await expect(client.query(`DELETE FROM ${table} WHERE idx = 1`)).rejects.toThrow(/append-only/);
      expect(await store.size()).toBe(3);
    });

    it('the table is append-only: TRUNCATE is refused by the trigger, also on a table migrated before that trigger', async () => {
      const { client, table } = make();
      const store = await openPostgresStore(crypto, client, { table });
      for (const e of buildChain(3)) await store.append(e);
      await expect(client.query(`TRUNCATE ${table}`)).rejects.toThrow(/append-only/);
      expect(await store.size()).toBe(3);
      // A table created by an earlier version (row trigger only) gets the TRUNCATE trigger on the next migration.
      await client.query(`DROP TRIGGER ${table.replace(/^.*\./, '')}_append_only_truncate ON ${table}`);
      await store.migrate();
      await expect(client.query(`TRUNCATE ${table}`)).rejects.toThrow(/append-only/);
      expect(await store.size()).toBe(3);
    });

    it('group commit: concurrent appends land in call order, chained, in far fewer statements than entries', async () => {
      const { client, table } = make();
      const counting = countingClient(client);
      const store = await openPostgresStore(crypto, counting, { table });
      const log = await AuditLog.open(crypto, { store, writer: writerA });
      counting.inserts = 0;
      const N = 300;
      const entries = await Promise.all(Array.from({ length: N }, (_, i) => log.append(fieldsFor(i))));
      entries.forEach((e, i) => {
        expect(Number(e.index)).toBe(i);
        expect(e.messageHash).toEqual(fieldsFor(i).messageHash);
        expect(e.previousHash).toEqual(i === 0 ? new Uint8Array(32) : hashOf(entries[i - 1]!));
      });
      expect(await store.size()).toBe(N);
      expect(counting.inserts).toBeGreaterThanOrEqual(2); // at most 256 per statement
      expect(counting.inserts).toBeLessThan(N / 10);
      expect((await verifyChain(crypto, store.read(0, N), { keys: writerA.publicKey })).ok).toBe(true);
      // The in-memory tree is the stored one.
      expect(log.rootHash()).toEqual((await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table }), writer: writerA })).rootHash());
    });

    it('group commit: a failed write fails every append of its group, stores none of them, and the log goes on', async () => {
      const { client, table } = make();
      const counting = countingClient(client);
      const store = await openPostgresStore(crypto, counting, { table });
      const log = await AuditLog.open(crypto, { store, writer: writerA });
      await log.append(fieldsFor(0));
      // Four appends issued together form one group, written by one INSERT, which fails.
      const group = [1, 2, 3, 4].map((i) => log.append(fieldsFor(i)));
      counting.failInserts = 1;
      const outcomes = await Promise.allSettled(group);
      expect(counting.failInserts).toBe(0);
      expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
      for (const o of outcomes) expect((o as PromiseRejectedResult).reason).toMatchObject({ code: 'storage_failure' });
      expect(await store.size()).toBe(1);
      const next = await log.append(fieldsFor(5));
      expect(Number(next.index)).toBe(1);
      expect((await verifyChain(crypto, store.read(0, 2), { keys: writerA.publicKey })).ok).toBe(true);
    });

    it('appendMany refuses a batch whose own links or indices are wrong, and inserts nothing', async () => {
      const { client, table } = make();
      const store = await openPostgresStore(crypto, client, { table });
      const chain = buildChain(4);
      await expect(store.appendMany!([chain[0]!, chain[2]!])).rejects.toMatchObject({ code: 'malformed' });
      const relinked = buildChain(2, writerB);
      await expect(store.appendMany!([chain[0]!, relinked[1]!])).rejects.toMatchObject({ code: 'bad_link' });
      await expect(store.appendMany!([])).rejects.toMatchObject({ code: 'malformed' });
      expect(await store.size()).toBe(0);
      await store.appendMany!(chain.slice(0, 2));
      await expect(store.appendMany!(chain.slice(1, 3))).rejects.toMatchObject({ code: 'conflict' });
      await store.appendMany!(chain.slice(2));
      expect(await store.size()).toBe(4);
      expect((await verifyChain(crypto, store.read(0, 4), { keys: writerA.publicKey })).ok).toBe(true);
    });

    it('two writers appending concurrent groups to one table never fork the chain', async () => {
      const { client, table } = make();
      const a = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table }), writer: writerA, trustedKeys: [writerB.publicKey] });
      const b = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table }), writer: writerB, trustedKeys: [writerA.publicKey] });
      await Promise.all([
        ...Array.from({ length: 60 }, (_, i) => a.append(fieldsFor(i))),
        ...Array.from({ length: 60 }, (_, i) => b.append(fieldsFor(100 + i))),
      ]);
      const store = await openPostgresStore(crypto, client, { table });
      expect(await store.size()).toBe(120);
      expect((await verifyChain(crypto, store.read(0, 120), { keys: [writerA.publicKey, writerB.publicKey] })).ok).toBe(true);
    });

    it('checkpoints: a reopened log adopts the latest signed one and reads only the entries after it; same root, same tip', async () => {
      const { client, table } = make();
      const open = async (extra: Record<string, unknown> = {}) =>
        AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table }), writer: writerA, proofs: false, checkpointEvery: 5, ...extra });
      const log = await open();
      expect(log.opening).toEqual({ checkpointSize: 0, entriesRead: 0 });
      for (let i = 0; i < 23; i++) await log.append(fieldsFor(i));
      const root = log.rootHash();
      // Taken at 5, 10, 15, 20 (one write at a time, after the group that passed the mark; written in the
      // background, so waited for: a fixed 50 ms was not enough on two busy cores).
      const sizes = async (): Promise<number[]> => (await client.query(`SELECT tree_size::int AS n FROM ${table}_checkpoints ORDER BY tree_size`)).rows.map((r) => (r as { n: number }).n);
      await expect.poll(sizes, { timeout: 10_000 }).toEqual([5, 10, 15, 20]);
      // Not closed (a crash): the next writer adopts the checkpoint at 20 and reads entries 20..22.
      const again = await open();
      expect(again.opening).toEqual({ checkpointSize: 20, entriesRead: 3 });
      expect(again.size).toBe(23);
      expect(again.rootHash()).toEqual(root);
      // It chains on correctly: the whole chain verifies, and its root is the one a full read computes.
      await again.append(fieldsFor(23));
      const full = await verifyChain(crypto, again.store.read(0, 24), { keys: writerA.publicKey });
      expect(full.ok).toBe(true);
      const fresh = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table }), writer: writerA, verify: 'full' });
      expect(fresh.rootHash()).toEqual(again.rootHash());
      // A graceful close stores one at the end: the next open reads nothing.
      await again.close();
      const after = await open();
      expect(after.opening).toEqual({ checkpointSize: 24, entriesRead: 0 });
      expect(after.rootHash()).toEqual(fresh.rootHash());
      await after.close();
      await fresh.close();
    });

    it('checkpoints: one that does not check is refused (said why) and every entry is read; one beyond the store is a cut log', async () => {
      const { client, table } = make();
      const open = async (extra: Record<string, unknown> = {}) =>
        AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table }), writer: writerA, proofs: false, checkpointEvery: 4, ...extra });
      const log = await open();
      for (let i = 0; i < 10; i++) await log.append(fieldsFor(i));
      await log.close(); // checkpoints at 4, 8 and 10
      const root = (await open()).rootHash();
      // The checkpoints are append-only too.
      await expect(client.query(`DELETE FROM ${table}_checkpoints`)).rejects.toThrow(/append-only/);
      await client.query(`ALTER TABLE ${table}_checkpoints DISABLE TRIGGER USER`);
      // A forged signature (no key: anyone with UPDATE on the table): refused; the next one back (at 8) is adopted.
      const latest = `(SELECT max(tree_size) FROM ${table}_checkpoints)`;
      await client.query(`UPDATE ${table}_checkpoints SET signature = set_byte(signature, 0, get_byte(signature, 0) # 1) WHERE tree_size = ${latest}`);
      let reopened = await open();
      expect(reopened.opening).toMatchObject({ checkpointSize: 8, entriesRead: 2 });
      expect(reopened.opening.checkpointRefused).toMatch(/1 other checkpoint\(s\) refused: the checkpoint at 10 entries: .*not signed by the writer key or a trusted key/);
      expect(reopened.rootHash()).toEqual(root);
      // Rows of junk with huge tree sizes (INSERT, no key) hide nothing: the walk skips them.
      for (let i = 0; i < 3; i++) {
        await client.query(
          `INSERT INTO ${table}_checkpoints (tree_size, first_entry_hash, root_hash, last_entry_hash, timestamp_ms, signer_key_id, entry_signers, peaks, signature)
           VALUES ($1, '\\x00', '\\x00', '\\x00', 0, '\\x00', '\\x', '\\x', '\\x00')`,
          [String(9_000_000_000_000 + i)],
        );
      }
      expect((await open()).opening).toMatchObject({ checkpointSize: 8, entriesRead: 2 });
      // Signed by a key the log does not trust: refused the same way; trusted (a rotated key), adopted.
      await client.query(`DELETE FROM ${table}_checkpoints`);
      const other = await open({ writer: writerB, trustedKeys: [writerA.publicKey] });
      await other.close(); // writerB's checkpoint at 10 (it trusts A's entries)
      reopened = await open();
      expect(reopened.opening).toMatchObject({ checkpointSize: 0, entriesRead: 10 });
      expect(reopened.opening.checkpointRefused).toMatch(/not signed/);
      reopened = await open({ trustedKeys: [writerB.publicKey] });
      expect(reopened.opening).toEqual({ checkpointSize: 10, entriesRead: 0 });
      // The store holds fewer entries than a signed checkpoint of this log covers: entries were removed.
      await client.query(`ALTER TABLE ${table} DISABLE TRIGGER USER`);
      const { rows: tail } = await client.query(`SELECT idx, entry, entry_hash FROM ${table} WHERE idx = 9`);
      await client.query(`DELETE FROM ${table} WHERE idx = 9`);
      await expect(open({ trustedKeys: [writerB.publicKey] })).rejects.toMatchObject({ code: 'removed' });
      const t = tail[0] as { idx: string; entry: Buffer; entry_hash: Buffer };
      await client.query(`INSERT INTO ${table} (idx, entry, entry_hash) VALUES ($1, $2, $3)`, [t.idx, t.entry, t.entry_hash]);
      // Its last entry replaced: the checkpoint is refused, and the full read names the break.
      const { rows } = await client.query(`SELECT entry FROM ${table} WHERE idx = 9`);
      await client.query(`UPDATE ${table} SET entry = set_byte(entry, length(entry) - 1, get_byte(entry, length(entry) - 1) # 1) WHERE idx = 9`);
      await expect(open({ trustedKeys: [writerB.publicKey] })).rejects.toMatchObject({ code: 'bad_signature' });
      await client.query(`UPDATE ${table} SET entry = $1 WHERE idx = 9`, [(rows[0] as { entry: Buffer }).entry]);
      expect((await open({ trustedKeys: [writerB.publicKey] })).opening).toEqual({ checkpointSize: 10, entriesRead: 0 });
    });

    it('checkpoints are bound to their log and to the keys trusted now; a store without the table works without them', async () => {
      const { client, table } = make();
      const open = async (t: string, extra: Record<string, unknown> = {}) =>
        AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table: t }), writer: writerA, proofs: false, checkpointEvery: 5, ...extra });
      // Another log under the same key: its (valid, larger) checkpoint copied into this log's table is refused, not fatal.
      const other = await open(`${table}_o`);
      for (let i = 0; i < 30; i++) await other.append(fieldsFor(i));
      await other.close();
      const mine = await open(table);
      for (let i = 0; i < 12; i++) await mine.append(fieldsFor(100 + i));
      await mine.close();
      await client.query(`INSERT INTO ${table}_checkpoints SELECT * FROM ${table}_o_checkpoints ORDER BY tree_size DESC LIMIT 1`);
      const reopened = await open(table);
      expect(reopened.opening).toMatchObject({ checkpointSize: 12, entriesRead: 0 });
      expect(reopened.opening.checkpointRefused).toMatch(/not a checkpoint of this log/);
      await reopened.close();
      // Entries signed by B, then a checkpoint by A covering them: once B is no longer trusted, A reads everything (and refuses B's entries).
      const t = `${table}_k`;
      const a = await open(t, { trustedKeys: [writerB.publicKey] });
      for (let i = 0; i < 3; i++) await a.append(fieldsFor(i));
      await a.close();
      const b = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table: t }), writer: writerB, trustedKeys: [writerA.publicKey], proofs: false, checkpointEvery: 0 });
      for (let i = 3; i < 6; i++) await b.append(fieldsFor(i));
      await b.close();
      const a2 = await open(t, { trustedKeys: [writerB.publicKey] });
      expect(a2.opening.checkpointSize).toBe(3);
      for (let i = 6; i < 9; i++) await a2.append(fieldsFor(i));
      await a2.close(); // A's checkpoint at 9 names A and B as signers
      expect((await open(t, { trustedKeys: [writerB.publicKey] })).opening).toEqual({ checkpointSize: 9, entriesRead: 0 });
      await expect(open(t)).rejects.toMatchObject({ code: 'bad_signature' });
      // A table from before checkpoints, opened without migrating: no checkpoint read or refused, saves tried only every 5 entries.
      const old = `${table}_old`;
      await (await openPostgresStore(crypto, client, { table: old })).close();
      await client.query(`DROP TABLE ${old}_checkpoints`);
      const store = await openPostgresStore(crypto, client, { table: old, migrate: false });
      let saves = 0;
      const save = store.saveCheckpoint.bind(store);
      store.saveCheckpoint = (c) => (saves++, save(c));
      const log = await AuditLog.open(crypto, { store, writer: writerA, proofs: false, checkpointEvery: 5 });
      expect(log.opening).toEqual({ checkpointSize: 0, entriesRead: 0 });
      for (let i = 0; i < 25; i++) await log.append(fieldsFor(i));
      await expect.poll(() => saves, { timeout: 10_000 }).toBe(5); // saved in the background
      await log.close();
      // A new table whose `_checkpoints` table would pass PostgreSQL's 63 characters is refused up front; an
      // existing one of that length is opened with migrate: false and works without checkpoints.
      const long = `a${'b'.repeat(51)}${table.slice(-6)}`;
      await expect(openPostgresStore(crypto, client, { table: long })).rejects.toMatchObject({ code: 'malformed' });
      await client.query(`CREATE TABLE ${long} (idx BIGINT PRIMARY KEY, entry BYTEA NOT NULL, entry_hash BYTEA NOT NULL, recorded_at TIMESTAMPTZ NOT NULL DEFAULT now())`);
      const longLog = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table: long, migrate: false }), writer: writerA, proofs: false, checkpointEvery: 1 });
      for (let i = 0; i < 3; i++) await longLog.append(fieldsFor(i));
      await longLog.close();
      const reopenedLong = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table: long, migrate: false }), writer: writerA, proofs: false });
      expect(reopenedLong.opening).toEqual({ checkpointSize: 0, entriesRead: 3 });
      await client.query(`DROP TABLE ${long}`);
    });

    it('an oversized stored entry or checkpoint column never leaves the server: reads, verify and open fail `malformed`', async () => {
      const { client, table } = make();
      const huge = 5 * 1024 * 1024;
      const hugeBytes = `decode(repeat('ab', ${huge}), 'hex')`;
      const zeroHash = `decode(repeat('00', 32), 'hex')`;
      // A new table refuses an entry longer than MAX_ENTRY_BYTES (or empty) itself.
      await (await openPostgresStore(crypto, client, { table: `${table}_new` })).close();
      await expect(client.query(`INSERT INTO ${table}_new (idx, entry, entry_hash) VALUES (0, ${hugeBytes}, ${zeroHash})`)).rejects.toMatchObject({ code: '23514' });
      await expect(client.query(`INSERT INTO ${table}_new (idx, entry, entry_hash) VALUES (0, '\\x', ${zeroHash})`)).rejects.toMatchObject({ code: '23514' });
      // A table created by an earlier version (no length CHECK; migrating does not add one): anyone able to INSERT can
      // store a huge entry after the real ones.
      await client.query(
        `CREATE TABLE ${table} (idx BIGINT PRIMARY KEY CHECK (idx >= 0), entry BYTEA NOT NULL,
           entry_hash BYTEA NOT NULL CHECK (octet_length(entry_hash) = 32), recorded_at TIMESTAMPTZ NOT NULL DEFAULT now())`,
      );
      const watching = byteaWatchingClient(client);
      const store = await openPostgresStore(crypto, watching, { table, pageSize: 2 });
      for (const e of buildChain(3)) await store.append(e);
      await client.query(`INSERT INTO ${table} (idx, entry, entry_hash) VALUES (3, ${hugeBytes}, ${zeroHash})`);
      const rows = async () => {
        const out: Uint8Array[] = [];
        for await (const bytes of store.readEncoded(0, 4)) out.push(bytes);
        return out;
      };
      await expect(rows()).rejects.toMatchObject({ code: 'malformed', message: expect.stringContaining(`stored entry 3 is ${huge} bytes, more than ${MAX_ENTRY_BYTES}`) });
      expect(watching.largest).toBeLessThanOrEqual(MAX_ENTRY_BYTES);
      const { rows: raw } = await watching.query(`SELECT octet_length(entry) AS n FROM ${table} WHERE idx = 3`);
      expect(Number((raw[0] as { n: unknown }).n)).toBe(huge); // the row is there; it is just not sent
      expect(await verifyChain(crypto, store.readEncoded(0, 4), { keys: writerA.publicKey })).toMatchObject({ ok: false, index: 3, reason: 'malformed' });
      expect(await verifyChain(crypto, store.read(0, 4), { keys: writerA.publicKey })).toMatchObject({ ok: false, index: 3, reason: 'malformed' });
      await expect(AuditLog.open(crypto, { store, writer: writerA })).rejects.toMatchObject({ code: 'malformed' });
      expect(watching.largest).toBeLessThanOrEqual(MAX_ENTRY_BYTES);
      // A checkpoint row with a huge column: refused `malformed` without its bytes (open then reads every entry).
      await client.query(
        `INSERT INTO ${table}_checkpoints (tree_size, first_entry_hash, root_hash, last_entry_hash, timestamp_ms, signer_key_id, entry_signers, peaks, signature)
         VALUES (2, ${zeroHash}, ${zeroHash}, ${zeroHash}, 0, decode(repeat('00', 16), 'hex'), decode(repeat('00', 16), 'hex'), ${hugeBytes}, decode(repeat('00', 64), 'hex'))`,
      );
      await expect(store.checkpoints!(16)).rejects.toMatchObject({ code: 'malformed', message: expect.stringContaining(`peaks is ${huge} bytes`) });
      expect(watching.largest).toBeLessThanOrEqual(MAX_ENTRY_BYTES);
    });

    it('tampering behind the trigger is caught by the verifier: modified, reordered, removed', async () => {
      const { client, table } = make();
      const store = await openPostgresStore(crypto, client, { table });
      const chain = buildChain(12);
      for (const e of chain) await store.append(e);
      await client.query(`ALTER TABLE ${table} DISABLE TRIGGER USER`);
      const verify = async () => verifyChain(crypto, store.read(0, await store.size()), { keys: writerA.publicKey });

      // Flip one byte inside entry 4's protobuf (the last byte is inside its signature).
      await client.query(`UPDATE ${table} SET entry = set_byte(entry, length(entry) - 1, get_byte(entry, length(entry) - 1) # 1) WHERE idx = 4`);
      expect(await verify()).toMatchObject({ ok: false, index: 4, reason: 'modified' });

      await client.query(`UPDATE ${table} SET entry = $1 WHERE idx = 4`, [Buffer.from((await import('../src/index.js')).encodeEntry(chain[4]!))]);
      expect((await verify()).ok).toBe(true);

      // Swap the bytes of rows 7 and 8.
      await client.query(
        `UPDATE ${table} t SET entry = s.entry FROM (SELECT idx, entry FROM ${table} WHERE idx IN (7, 8)) s WHERE t.idx IN (7, 8) AND s.idx = 15 - t.idx`,
      );
      expect(await verify()).toMatchObject({ ok: false, index: 7, reason: 'reordered' });
      await client.query(
        `UPDATE ${table} t SET entry = s.entry FROM (SELECT idx, entry FROM ${table} WHERE idx IN (7, 8)) s WHERE t.idx IN (7, 8) AND s.idx = 15 - t.idx`,
      );

      await client.query(`DELETE FROM ${table} WHERE idx = 2`);
      expect(await verify()).toMatchObject({ ok: false, index: 2, reason: 'removed' });
      // The hole cannot be filled in: an append must extend the highest index.
      await expect(store.append(chain[2]!)).rejects.toMatchObject({ code: 'conflict' });
    });
  });
}
