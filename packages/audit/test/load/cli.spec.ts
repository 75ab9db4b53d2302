// The parley-audit CLI, spawned as a user would run it (node + tsx on the
// TypeScript source): every command, --json, and the documented exit codes
// 0 ok · 1 verification failed · 2 usage error · 3 storage error. (The test-load
// target: it starts a process per command. Help and usage errors in this process: ../cli.spec.ts.)
import { execFile } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { toHex } from '@parley/crypto-core';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, FILE_MAGIC, openFileStore, openPostgresStore } from '../../src/index.js';
import { crypto, fieldsFor, tempDir } from '../fixtures.js';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const dir = tempDir('parley-audit-cli-');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  json: () => Record<string, unknown>;
}

function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--conditions=@parley/source', '--import', 'tsx', CLI, ...args], { cwd: fileURLToPath(new URL('../..', import.meta.url)), timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, stdout, stderr, json: () => JSON.parse(stdout) as Record<string, unknown> });
    });
  });
}

const logPath = join(dir, 'audit.log');
const keyPath = join(dir, 'writer.key');
let publicKey = '';

beforeAll(async () => {
  const seed = new Uint8Array(32).fill(0x3c);
  writeFileSync(keyPath, `${toHex(seed)}\n`, { mode: 0o600 });
  const writer = crypto.ed25519.keyPairFromSeed(seed);
  publicKey = toHex(writer.publicKey);
  writeFileSync(join(dir, 'writer.pub'), `${publicKey}\n`);
  const log = await AuditLog.open(crypto, { store: await openFileStore(crypto, logPath), writer });
  for (let i = 0; i < 40; i++) await log.append(fieldsFor(i));
  await log.close();
});

/** A copy of the log with one byte of record `index`'s entry flipped and its checksum recomputed. */
function tamperedCopy(name: string, index: number): string {
  const bytes = new Uint8Array(readFileSync(logPath));
  let at = FILE_MAGIC.length;
  for (let i = 0; i < index; i++) at += 8 + new DataView(bytes.buffer).getUint32(at);
  const len = new DataView(bytes.buffer).getUint32(at);
  bytes[at + 4 + len - 2]! ^= 0x01;
  bytes.set(crypto.blake3(bytes.subarray(at, at + 4 + len)).subarray(0, 4), at + 4 + len);
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

describe('parley-audit CLI', () => {
  it('--help prints usage with the exit codes; no command or a bad option is a usage error (2)', async () => {
    const [help, none, bad, unknown, noKey, badKey, badIndex, beyond, headNoKey] = await Promise.all([
      cli('--help'),
      cli(),
      cli('verify', logPath, '--frobnicate'),
      cli('dance'),
      cli('verify', logPath), // no key
      cli('verify', logPath, '--public-key', 'abc'),
      cli('prove', 'x', '--log', logPath, '--public-key', publicKey),
      cli('prove', '40', '--log', logPath, '--public-key', publicKey), // beyond the log
      cli('head', '--log', logPath, '--public-key', publicKey), // head needs --key
    ]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Exit codes:\n {2}0 {2}ok\n {2}1 {2}verification failed.*\n(.*\n)* {2}2 {2}usage error.*\n(.*\n)* {2}3 {2}storage error/m);
    expect(bad.stderr).toMatch(/frobnicate/);
    for (const r of [none, bad, unknown, noKey, badKey, badIndex, beyond, headNoKey]) expect(r.code, r.stderr).toBe(2);
  });

  it('verify: ok (text and --json), key given inline, as a file, or as the writer key', async () => {
    const text = await cli('verify', logPath, '--public-key', publicKey);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^OK: 40 entries verified; root [0-9a-f]{64}/);
    const json = await cli('verify', logPath, '--public-key', join(dir, 'writer.pub'), '--json');
    expect(json.code).toBe(0);
    expect(json.json()).toMatchObject({ ok: true, size: 40 });
    expect((await cli('verify', logPath, '--key', keyPath, '--json')).json()['rootHash']).toBe(json.json()['rootHash']);
  });

  it('verify: a tampered entry exits 1 and names index and reason', async () => {
    const path = tamperedCopy('tampered.log', 17);
    const r = await cli('verify', path, '--public-key', publicKey, '--json');
    expect(r.code).toBe(1);
    expect(r.json()).toMatchObject({ ok: false, index: 17, reason: 'modified', entryIndex: 17 });
    const text = await cli('verify', path, '--public-key', publicKey);
    expect(text.stdout).toMatch(/^BROKEN at index 17: modified/);
    expect((await cli('prove', '3', '--log', path, '--public-key', publicKey)).code).toBe(1); // no proofs over a broken log
  });

  it('head signs; verify --head then catches a cut tail (exit 1, removed)', async () => {
    const head = await cli('head', '--log', logPath, '--key', keyPath, '--json');
    expect(head.code).toBe(0);
    const signed = head.json()['head'] as Record<string, unknown>;
    expect(signed).toMatchObject({ treeSize: 40 });
    const headFile = join(dir, 'head.json');
    writeFileSync(headFile, JSON.stringify(signed));
    expect((await cli('verify', logPath, '--public-key', publicKey, '--head', headFile)).code).toBe(0);
    const bytes = readFileSync(logPath);
    const cut = join(dir, 'cut.log');
    let end = FILE_MAGIC.length;
    for (let i = 0; i < 35; i++) end += 8 + bytes.readUInt32BE(end);
    writeFileSync(cut, bytes.subarray(0, end));
    const r = await cli('verify', cut, '--public-key', publicKey, '--head', headFile, '--json');
    expect(r.code).toBe(1);
    expect(r.json()).toMatchObject({ ok: false, index: 35, reason: 'removed' });
    expect((await cli('verify', logPath, '--public-key', publicKey, '--head', join(dir, 'nope.json'))).code).toBe(2);
    const other = (await cli('head', '--log', logPath, '--key', keyPath, '--size', '12', '--json')).json()['head'] as Record<string, unknown>;
    expect(other['treeSize']).toBe(12);
  });

  it('prove → check; consistency → check; a doctored proof fails check (1)', async () => {
    const prove = await cli('prove', '13', '--log', logPath, '--key', keyPath, '--size', '30');
    expect(prove.code).toBe(0);
    const proofFile = join(dir, 'proof.json');
    writeFileSync(proofFile, prove.stdout);
    const proof = JSON.parse(prove.stdout) as { type: string; leafIndex: number; treeSize: number; path: string[]; head: object; entry: string };
    expect(proof).toMatchObject({ type: 'parley-audit-inclusion', leafIndex: 13, treeSize: 30 });
    expect(proof.head).toBeDefined();
    const check = await cli('check', proofFile, '--public-key', publicKey, '--json');
    expect(check.code).toBe(0);
    expect(check.json()).toMatchObject({ ok: true, type: 'inclusion', leafIndex: 13 });

    const doctored = join(dir, 'doctored.json');
    writeFileSync(doctored, JSON.stringify({ ...proof, path: [proof.path[1], proof.path[0], ...proof.path.slice(2)] }));
    const bad = await cli('check', doctored, '--public-key', publicKey, '--json');
    expect(bad.code).toBe(1);
    expect(bad.json()).toMatchObject({ ok: false, reason: 'bad_proof' });
    const wrongKey = await cli('check', proofFile, '--public-key', '11'.repeat(32));
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stdout).toMatch(/bad_signature/);

    const unsigned = await cli('prove', '13', '--log', logPath, '--public-key', publicKey, '--json');
    expect(unsigned.code).toBe(0);
    expect(unsigned.json()['head']).toBeUndefined();
    const unsignedFile = join(dir, 'unsigned.json');
    writeFileSync(unsignedFile, unsigned.stdout);
    expect((await cli('check', unsignedFile, '--public-key', publicKey)).code).toBe(1); // nothing signed to check against

    const cons = await cli('consistency', '7', '40', '--log', logPath, '--key', keyPath);
    expect(cons.code).toBe(0);
    const consFile = join(dir, 'consistency.json');
    writeFileSync(consFile, cons.stdout);
    expect(JSON.parse(cons.stdout)).toMatchObject({ type: 'parley-audit-consistency', oldSize: 7, newSize: 40 });
    const consCheck = await cli('check', consFile, '--public-key', publicKey);
    expect(consCheck.code).toBe(0);
    expect(consCheck.stdout).toMatch(/size 7 is a prefix of the signed tree of size 40/);
    expect((await cli('consistency', '9', '8', '--log', logPath, '--key', keyPath)).code).toBe(2);
    writeFileSync(join(dir, 'garbage.json'), '{"type":"parley-audit-inclusion"}');
    expect((await cli('check', join(dir, 'garbage.json'), '--public-key', publicKey)).code).toBe(2);
  });

  it('storage errors exit 3: a missing file, a file that is not an audit log, an unreachable database', async () => {
    expect((await cli('verify', join(dir, 'missing.log'), '--public-key', publicKey)).code).toBe(3);
    writeFileSync(join(dir, 'text.log'), 'not an audit log at all');
    const notAudit = await cli('verify', join(dir, 'text.log'), '--public-key', publicKey, '--json');
    expect(notAudit.code).toBe(3);
    expect(notAudit.json()).toMatchObject({ ok: false, error: 'malformed' });
    expect((await cli('verify', 'postgres://nobody@127.0.0.1:1/none', '--public-key', publicKey)).code).toBe(3);
  });

  it('a torn tail is a warning, not a failure; the file is not changed', async () => {
    const bytes = readFileSync(logPath);
    const torn = join(dir, 'torn.log');
    writeFileSync(torn, bytes.subarray(0, bytes.length - 3));
    const r = await cli('verify', torn, '--public-key', publicKey, '--json');
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ ok: true, size: 39 });
    expect((r.json()['warnings'] as string[])[0]).toMatch(/torn record/);
    expect(statSync(torn).size).toBe(bytes.length - 3);
  });

  it('keygen writes a 0600 key file, prints the public key, never overwrites', async () => {
    const out = join(dir, 'new.key');
    const r = await cli('keygen', '--out', out, '--json');
    expect(r.code).toBe(0);
    expect(r.json()['publicKey']).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const seed = readFileSync(out, 'utf8').trim();
    expect(toHex(crypto.ed25519.keyPairFromSeed(Buffer.from(seed, 'hex')).publicKey)).toBe(r.json()['publicKey']);
    expect((await cli('keygen', '--out', out)).code).toBe(2);
  });

  const url = process.env['DATABASE_URL'];
  it.skipIf(url === undefined || url === '')('verifies and proves a PostgreSQL log by URL', async () => {
    const table = `parley_audit_cli_${process.pid}`;
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const writer = crypto.ed25519.keyPairFromSeed(new Uint8Array(32).fill(0x3c));
      const log = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, client, { table }), writer });
      for (let i = 0; i < 12; i++) await log.append(fieldsFor(i));
      const r = await cli('verify', url!, '--table', table, '--public-key', publicKey, '--json');
      expect(r.code, r.stderr).toBe(0);
      expect(r.json()).toMatchObject({ ok: true, size: 12, rootHash: toHex(log.rootHash()) });
      expect((await cli('prove', '5', '--log', url!, '--table', table, '--key', keyPath)).code).toBe(0);
      expect((await cli('verify', url!, '--table', 'no_such_table', '--public-key', publicKey)).code).toBe(3);
    } finally {
      await client.query(`DROP TABLE IF EXISTS ${table}; DROP TABLE IF EXISTS ${table}_checkpoints; DROP FUNCTION IF EXISTS ${table}_append_only()`);
      await client.end();
    }
  });
});
