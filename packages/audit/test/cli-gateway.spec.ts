// parley-audit on a gateway's own database (an operator walkthrough: `parley-audit verify gw --key
// gwkeys/audit-key.json` on the embedded gateway's data directory failed with EISDIR, and on PostgreSQL the
// table had to be found with psql first). The gateway keeps one chain per audit key, listed in
// gateway_audit_chains (apps/gateway, PROTOCOL §10.9): verify picks the one of the key given, on the PGlite
// data directory and on PostgreSQL (--schema), and `chains` lists them. Also: `verify --head` takes what
// `head --json` prints.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { tempDir } from '@parley/test-support';
import { toHex, type Ed25519KeyPair } from '@parley/crypto-core';
import { AUDIT_EXIT_CODES, main } from '../src/cli.js';
import { AuditLog, openFileStore, openPostgresStore, writerKeyId, type SqlClient } from '../src/index.js';
import { PGLITE_LOCK_FILE } from '../src/cli-sources.js';
import { crypto, fieldsFor } from './fixtures.js';

async function inProcess(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('') };
}

const dir = tempDir('audit-cli-gateway');
afterAll(() => dir.remove());
afterEach(() => vi.unstubAllEnvs());

/** A writer key file as keygen writes it (mode 0600), and its key pair. */
function writerKey(name: string, fill: number): { file: string; kp: Ed25519KeyPair } {
  const seed = new Uint8Array(32).fill(fill);
  const file = join(dir.path, `${name}.key`);
  writeFileSync(file, `${toHex(seed)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { file, kp: crypto.ed25519.keyPairFromSeed(seed) };
}

const current = writerKey('current', 0x31);
const old = writerKey('old', 0x32);
const stranger = writerKey('stranger', 0x33);

/** The gateway's table name for a writer key (apps/gateway server.ts gatewayAuditTable). */
const chainTable = (kp: Ed25519KeyPair): string => `gateway_audit_${toHex(writerKeyId(crypto, kp.publicKey))}`;

/** Lays out a gateway's audit chains as the gateway does: gateway_audit_chains, and one table per key. */
async function gatewayChains(client: SqlClient, schema: string | undefined, chains: readonly [Ed25519KeyPair, number][]): Promise<void> {
  const q = (name: string): string => (schema === undefined ? name : `${schema}.${name}`);
  await client.query(`CREATE TABLE ${q('gateway_audit_chains')} (table_name text PRIMARY KEY, writer_public_key bytea NOT NULL CHECK (length(writer_public_key) = 32), created_at_ms bigint NOT NULL)`);
  for (const [kp, entries] of chains) {
    await client.query(`INSERT INTO ${q('gateway_audit_chains')} (table_name, writer_public_key, created_at_ms) VALUES ($1, $2, $3)`, [chainTable(kp), Buffer.from(kp.publicKey), Date.now()]);
    const log = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table: q(chainTable(kp)) }), writer: kp });
    for (let i = 0; i < entries; i++) await log.append(fieldsFor(i));
    await log.close();
  }
}

describe("a gateway's embedded (PGlite) database", () => {
  const dataDir = join(dir.path, 'gw');

  beforeAll(async () => {
    const db = await PGlite.create(dataDir);
    try {
      await gatewayChains(db, undefined, [
        [old.kp, 3],
        [current.kp, 5],
      ]);
    } finally {
      await db.close();
    }
  }, 60_000);

  it('verify <data_dir> --key <audit key> reads the chain of that key (each key its own), one command', async () => {
    const r = await inProcess('verify', dataDir, '--key', current.file, '--json');
    expect(r.code, r.out + r.err).toBe(AUDIT_EXIT_CODES.ok);
    expect(JSON.parse(r.out)).toMatchObject({ ok: true, size: 5 });
    const text = await inProcess('verify', dataDir, '--key', old.file);
    expect(text.code, text.err).toBe(AUDIT_EXIT_CODES.ok);
    expect(text.out).toMatch(/^OK: 3 entries verified/);
    expect(text.err).toBe(`parley-audit: reading ${chainTable(old.kp)} (writer key ${toHex(old.kp.publicKey)}, key id ${toHex(writerKeyId(crypto, old.kp.publicKey))})\n`);
    // By public key too, and prove / head read the same chain.
    const byPublic = await inProcess('verify', dataDir, '--public-key', toHex(current.kp.publicKey), '--json');
    expect(JSON.parse(byPublic.out)).toMatchObject({ ok: true, size: 5 });
    const proof = await inProcess('prove', '4', '--log', dataDir, '--key', current.file, '--json');
    expect(proof.code, proof.out).toBe(AUDIT_EXIT_CODES.ok);
    expect(existsSync(join(dataDir, PGLITE_LOCK_FILE))).toBe(false); // released
  });

  it('names the chains when the key given writes none of them (exit 3), and --table still picks one', async () => {
    const r = await inProcess('verify', dataDir, '--key', stranger.file, '--json');
    expect(r.code).toBe(AUDIT_EXIT_CODES.storage);
    const failure = JSON.parse(r.out) as { error: string; message: string };
    expect(failure.error).toBe('not_found');
    expect(failure.message).toContain('none of the 2 gateway audit chain(s) in this database is written by the key given');
    expect(failure.message).toContain(chainTable(old.kp));
    expect(failure.message).toContain(chainTable(current.kp));
    // --table overrides the choice (and the key must then verify that chain).
    const explicit = await inProcess('verify', dataDir, '--table', chainTable(old.kp), '--key', old.file, '--json');
    expect(JSON.parse(explicit.out)).toMatchObject({ ok: true, size: 3 });
    expect((await inProcess('verify', dataDir, '--schema', 'gw', '--key', old.file)).err).toMatch(/--schema applies to PostgreSQL only/);
  });

  it('chains lists them with their sizes and keys', async () => {
    const r = await inProcess('chains', dataDir, '--json');
    expect(r.code, r.out).toBe(AUDIT_EXIT_CODES.ok);
    const { chains } = JSON.parse(r.out) as { chains: { table: string; size: number; writerPublicKey: string; writerKeyId: string }[] };
    expect(chains.map((c) => [c.table, c.size, c.writerPublicKey])).toEqual([
      [chainTable(old.kp), 3, toHex(old.kp.publicKey)],
      [chainTable(current.kp), 5, toHex(current.kp.publicKey)],
    ]);
    const text = await inProcess('chains', dataDir);
    expect(text.out).toContain(`${chainTable(current.kp)}  5 entries  writer key ${toHex(current.kp.publicKey)}`);
    expect((await inProcess('chains', join(dir.path, 'current.key'))).err).toMatch(/chains reads a gateway database/);
  });

  it('refuses a data directory its gateway has open (exit 3), and takes over a stale lock', async () => {
    const lock = join(dataDir, PGLITE_LOCK_FILE);
    writeFileSync(lock, `${process.ppid}\n`); // a live process
    try {
      const r = await inProcess('verify', dataDir, '--key', current.file);
      expect(r.code).toBe(AUDIT_EXIT_CODES.storage);
      expect(r.err).toMatch(new RegExp(`in use by process ${process.ppid} .*stop the gateway first`));
    } finally {
      writeFileSync(lock, '2147483646\n'); // a process that is gone
    }
    const r = await inProcess('verify', dataDir, '--key', current.file);
    expect(r.code, r.err).toBe(AUDIT_EXIT_CODES.ok);
    expect(existsSync(lock)).toBe(false);
  });
});

const url = process.env['DATABASE_URL'];
describe.skipIf(url === undefined || url === '')("a gateway's PostgreSQL database (DATABASE_URL)", () => {
  const schema = `gw_audit_cli_${process.pid}_${randomBytes(3).toString('hex')}`;
  let client: pg.Client;

  beforeAll(async () => {
    client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`CREATE SCHEMA ${schema}`);
    await gatewayChains(client, schema, [
      [old.kp, 2],
      [current.kp, 4],
    ]);
  });
  afterAll(async () => {
    await client?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
    await client?.end();
  });

  it('verify postgres --schema <database_schema> --key <audit key> reads the chain of that key', async () => {
    vi.stubEnv('DATABASE_URL', url);
    const r = await inProcess('verify', 'postgres', '--schema', schema, '--key', current.file, '--json');
    expect(r.code, r.out).toBe(AUDIT_EXIT_CODES.ok);
    expect(JSON.parse(r.out)).toMatchObject({ ok: true, size: 4 });
    const listed = await inProcess('chains', 'postgres', '--schema', schema, '--json');
    expect((JSON.parse(listed.out) as { chains: { table: string; size: number }[] }).chains).toEqual([
      expect.objectContaining({ table: `${schema}.${chainTable(old.kp)}`, size: 2 }),
      expect.objectContaining({ table: `${schema}.${chainTable(current.kp)}`, size: 4 }),
    ]);
    const none = await inProcess('chains', 'postgres', '--schema', `${schema}_none`);
    expect(none.code).toBe(AUDIT_EXIT_CODES.storage);
    expect(none.err).toMatch(/no gateway_audit_chains table in schema/);
    expect((await inProcess('verify', 'postgres', '--schema', 'Bad-Name', '--key', current.file)).code).toBe(AUDIT_EXIT_CODES.usage);
  });
});

describe('verify --head', () => {
  it('takes what `head --json` prints, and what `head` prints', async () => {
    const file = join(dir.path, 'file-audit.log');
    const log = await AuditLog.open(crypto, { store: await openFileStore(crypto, file), writer: current.kp });
    for (let i = 0; i < 4; i++) await log.append(fieldsFor(i));
    await log.close();
    for (const json of [true, false]) {
      const head = await inProcess('head', '--log', file, '--key', current.file, ...(json ? ['--json'] : []));
      expect(head.code, head.out).toBe(AUDIT_EXIT_CODES.ok);
      const headFile = join(dir.path, `head-${json}.json`);
      writeFileSync(headFile, head.out);
      const r = await inProcess('verify', file, '--key', current.file, '--head', headFile, '--json');
      expect(r.code, `${json}: ${r.out}`).toBe(AUDIT_EXIT_CODES.ok);
      expect(JSON.parse(r.out)).toMatchObject({ ok: true, size: 4 });
    }
    // Something else is still refused, in the head's own words.
    const bad = join(dir.path, 'head-bad.json');
    writeFileSync(bad, JSON.stringify({ ok: true, head: { treeSize: 4 } }));
    const r = await inProcess('verify', file, '--key', current.file, '--head', bad);
    expect(r.code).toBe(AUDIT_EXIT_CODES.usage);
    expect(r.err).toMatch(/head\.rootHash must be a hex string/);
  });
});
