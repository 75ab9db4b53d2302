// The parley-audit command line in this process (`main` with captured output): help pages and usage
// errors by the @parley/cli-kit conventions. The CLI spawned as a user runs it, every command and exit
// code, is test/load/cli.spec.ts (the test-load target).
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { tempDir } from '@parley/test-support';
import { helpLayoutProblems } from '@parley/cli-kit';
import { toBase64Url, toHex } from '@parley/crypto-core';
import { AUDIT_EXIT_CODES, main } from '../src/cli.js';
import { AuditLog, openFileStore, writerKeyId } from '../src/index.js';
import { crypto, fieldsFor } from './fixtures.js';

// Usage errors are found before any log is opened or key read: these are never touched.
const logPath = '/nonexistent/audit.log';
const publicKey = 'ab'.repeat(32);

/** The CLI in this process (help and usage errors need no crypto or log). */
async function inProcess(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out: out.join('\n'), err: err.join('') };
}

describe('parley-audit command line (@parley/cli-kit conventions)', () => {
  it('every help page is aligned; every command has one', async () => {
    for (const argv of [['--help'], ...['verify', 'head', 'prove', 'consistency', 'check', 'chains', 'keygen'].map((c) => [c, '--help'])]) {
      const r = await inProcess(...argv);
      expect(r.code, argv.join(' ')).toBe(AUDIT_EXIT_CODES.ok);
      expect(r.out).toMatch(/^Usage: parley-audit /);
      expect(helpLayoutProblems(r.out), argv.join(' ')).toEqual([]);
    }
  });

  it('usage errors: one line in our words with a --help pointer, exit 2; with --json also JSON on stdout', async () => {
    const cases: [string[], string][] = [
      [['verify', logPath, '--public-key', publicKey, '--size', '3'], "unknown option '--size' (see `parley-audit verify --help`)"],
      [['verify'], 'missing <log> (see `parley-audit verify --help`)'],
      [['prove', '--log'], "option '--log <log>' needs a value (see `parley-audit prove --help`)"],
      [['consistency', '1', '2', '3', '--log', logPath], "unexpected argument '3' (see `parley-audit consistency --help`)"],
      [['keygen'], "option '--out <file>' is required (see `parley-audit keygen --help`)"],
      [['dance'], "unknown command 'dance' (see `parley-audit --help`)"],
    ];
    for (const [argv, message] of cases) {
      const r = await inProcess(...argv);
      expect(r.code, argv.join(' ')).toBe(AUDIT_EXIT_CODES.usage);
      expect(r.err).toBe(`parley-audit: error: ${message}\n`);
      expect(r.out).toBe('');
    }
    const json = await inProcess('verify', '--json');
    expect(json.code).toBe(2);
    expect(JSON.parse(json.out)).toEqual({ ok: false, error: 'usage', message: 'missing <log>' });
  });
});

describe('parley-audit secrets', () => {
  const dir = tempDir('audit-cli');
  afterAll(() => dir.remove());
  afterEach(() => vi.unstubAllEnvs());

  function keyFile(name: string, mode: number): string {
    const path = join(dir.path, name);
    writeFileSync(path, `${'5a'.repeat(32)}\n`, { mode });
    chmodSync(path, mode); // whatever the umask
    return path;
  }

  it('refuses a writer key file readable by group or others (usage error, exit 2), and takes a 0600 one', async () => {
    for (const mode of [0o640, 0o604]) {
      const r = await inProcess('head', '--log', logPath, '--key', keyFile(`key-${mode.toString(8)}`, mode), '--json');
      expect(r.code, mode.toString(8)).toBe(AUDIT_EXIT_CODES.usage);
      expect(JSON.parse(r.out)).toMatchObject({ ok: false, error: 'usage', message: expect.stringMatching(/is readable by group or others .*chmod 600/) as string });
    }
    // A 0600 key is read; the (missing) log is what fails then.
    const ok = await inProcess('head', '--log', logPath, '--key', keyFile('key-600', 0o600), '--json');
    expect(ok.code).toBe(AUDIT_EXIT_CODES.storage);
    expect(JSON.parse(ok.out)).toMatchObject({ ok: false, error: 'not_found' });
  });

  // The gateway's audit_key_file, as apps/gateway writes it (config.ts, loadOrCreateAuditKey).
  const gatewaySeed = new Uint8Array(32).fill(0x6e);
  const gatewayWriter = crypto.ed25519.keyPairFromSeed(gatewaySeed);
  function gatewayKeyFile(name: string, mode: number, fields: Record<string, unknown> = {}): string {
    mkdirSync(join(dir.path, 'gw'), { recursive: true, mode: 0o700 });
    const path = join(dir.path, 'gw', name);
    const json = { version: 1, type: 'parley-gateway-audit-key', public_key: toHex(gatewayWriter.publicKey), seed: toBase64Url(gatewaySeed), created_at_ms: 1, ...fields };
    writeFileSync(path, `${JSON.stringify(json, null, 2)}\n`, { mode });
    chmodSync(path, mode);
    return path;
  }

  it("head takes the gateway's audit key file (JSON with a seed), as the hex seed, and never prints the seed", async () => {
    const gatewayLog = join(dir.path, 'gateway-audit.log');
    const log = await AuditLog.open(crypto, { store: await openFileStore(crypto, gatewayLog), writer: gatewayWriter });
    for (let i = 0; i < 3; i++) await log.append(fieldsFor(i));
    await log.close();
    const secrets = [toBase64Url(gatewaySeed), toHex(gatewaySeed)];
    const r = await inProcess('head', '--log', gatewayLog, '--key', gatewayKeyFile('audit-key.json', 0o600), '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(AUDIT_EXIT_CODES.ok);
    const head = (JSON.parse(r.out) as { head: { treeSize: number; signerKeyId: string } }).head;
    expect(head).toMatchObject({ treeSize: 3, signerKeyId: toHex(writerKeyId(crypto, gatewayWriter.publicKey)) });
    // The same key as a hex seed signs the same statement.
    const hexKey = join(dir.path, 'gateway-hex.key');
    writeFileSync(hexKey, `${toHex(gatewaySeed)}\n`, { mode: 0o600 });
    chmodSync(hexKey, 0o600);
    const hex = await inProcess('head', '--log', gatewayLog, '--key', hexKey, '--json');
    expect(hex.code).toBe(AUDIT_EXIT_CODES.ok);
    expect((JSON.parse(hex.out) as { head: { signerKeyId: string } }).head.signerKeyId).toBe(head.signerKeyId);
    // Refused: group/other-readable (as the gateway refuses it), another type, a public_key that is not the seed's, a bad seed.
    const refused: [string, RegExp][] = [
      [gatewayKeyFile('audit-key-640.json', 0o640), /is readable by group or others .*chmod 600/],
      [gatewayKeyFile('other-type.json', 0o600, { type: 'parley-registry-issuer-key' }), /is not a parley-gateway-audit-key file/],
      [gatewayKeyFile('mismatch.json', 0o600, { public_key: 'ab'.repeat(32) }), /public_key does not match the seed/],
      [gatewayKeyFile('short-seed.json', 0o600, { seed: toBase64Url(gatewaySeed.subarray(0, 31)) }), /the seed is not 32 bytes/],
      [gatewayKeyFile('bad-seed.json', 0o600, { seed: `${toBase64Url(gatewaySeed)}!` }), /the seed is not base64url/],
      [gatewayKeyFile('version-2.json', 0o600, { version: 2 }), /unsupported version/],
    ];
    for (const [file, message] of refused) {
      const bad = await inProcess('head', '--log', gatewayLog, '--key', file, '--json');
      expect(bad.code, file).toBe(AUDIT_EXIT_CODES.usage);
      expect(JSON.parse(bad.out), file).toMatchObject({ ok: false, error: 'usage', message: expect.stringMatching(message) as string });
      for (const secret of secrets) expect(bad.out + bad.err, file).not.toContain(secret);
    }
    for (const secret of secrets) expect(r.out + r.err + hex.out + hex.err).not.toContain(secret);
  });

  it('takes a PostgreSQL log from DATABASE_URL with `postgres` (no password on the command line)', async () => {
    vi.stubEnv('DATABASE_URL', 'postgres://nobody@127.0.0.1:1/none');
    for (const argv of [['verify', 'postgres', '--public-key', publicKey, '--json'], ['prove', '0', '--log', 'postgres', '--public-key', publicKey, '--json']]) {
      const r = await inProcess(...argv);
      expect(r.code, argv.join(' ')).toBe(AUDIT_EXIT_CODES.storage);
      expect(JSON.parse(r.out), argv.join(' ')).toEqual({ ok: false, error: 'storage_failure', message: expect.stringContaining('cannot connect to PostgreSQL') as string });
    }
    vi.stubEnv('DATABASE_URL', '');
    const unset = await inProcess('verify', 'postgres', '--public-key', publicKey);
    expect(unset.code).toBe(AUDIT_EXIT_CODES.usage);
    expect(unset.err).toMatch(/--log postgres takes the database URL from DATABASE_URL, which is not set/);
    vi.stubEnv('DATABASE_URL', '/var/lib/audit.log');
    expect((await inProcess('verify', 'postgres', '--public-key', publicKey)).err).toMatch(/DATABASE_URL must be a postgres:\/\/ or postgresql:\/\/ URL/);
  });

  it('warns when a database password is given on the command line (without repeating it)', async () => {
    const r = await inProcess('verify', 'postgres://nobody:hunter2@127.0.0.1:1/none', '--public-key', publicKey);
    expect(r.code).toBe(AUDIT_EXIT_CODES.storage);
    expect(r.err).toMatch(/^parley-audit: warning: the database password is on the command line.*DATABASE_URL/m);
    expect(r.err).toMatch(/cannot connect to PostgreSQL/);
    expect(r.err + r.out).not.toContain('hunter2');
    expect((await inProcess('verify', 'postgres://nobody@127.0.0.1:1/none', '--public-key', publicKey)).err).not.toMatch(/warning/);
  });
});

describe("parley-audit on a damaged file: the library's rule, not the CLI's own", () => {
  const dir = tempDir('audit-cli-damage');
  afterAll(() => dir.remove());
  const writer = crypto.ed25519.keyPairFromSeed(new Uint8Array(32).fill(0x3c));
  const key = toHex(writer.publicKey);

  /** A file log of `n` entries and each record's offset (records follow the 8-byte header). */
  async function logOf(name: string, n: number): Promise<{ path: string; bytes: Uint8Array; offsets: number[] }> {
    const path = join(dir.path, name);
    const log = await AuditLog.open(crypto, { store: await openFileStore(crypto, path), writer });
    for (let i = 0; i < n; i++) await log.append(fieldsFor(i));
    await log.close();
    const bytes = new Uint8Array(readFileSync(path));
    const offsets = [8];
    while (offsets.length < n) offsets.push(offsets.at(-1)! + 8 + new DataView(bytes.buffer).getUint32(offsets.at(-1)!, false));
    return { path, bytes, offsets };
  }

  it('a corrupt middle record is a break at its index (exit 1), also when its length swallows the records after it', async () => {
    const { path, bytes, offsets } = await logOf('flipped.log', 10);
    const flipped = new Uint8Array(bytes);
    flipped[offsets[4]! + 20]! ^= 0x08;
    writeFileSync(path, flipped);
    const r = await inProcess('verify', path, '--public-key', key, '--json');
    expect(r.code).toBe(AUDIT_EXIT_CODES.failed);
    expect(JSON.parse(r.out)).toMatchObject({ ok: false, index: 4, reason: 'malformed', detail: expect.stringContaining(`record 4 at offset ${offsets[4]} is damaged`) as string });
    expect(readFileSync(path)).toEqual(Buffer.from(flipped)); // never changed
    // Record 8's length claims record 9 as well (its end is the file's): this read as a torn tail, and verify said OK for 8.
    const swallowed = new Uint8Array(bytes);
    const view = new DataView(swallowed.buffer);
    view.setUint32(offsets[8]!, view.getUint32(offsets[8]!, false) + 8 + view.getUint32(offsets[9]!, false), false);
    writeFileSync(path, swallowed);
    const s = await inProcess('verify', path, '--public-key', key, '--json');
    expect(s.code).toBe(AUDIT_EXIT_CODES.failed);
    expect(JSON.parse(s.out)).toMatchObject({ ok: false, index: 8, reason: 'malformed' });
    // prove / head refuse to work over it.
    expect((await inProcess('prove', '0', '--log', path, '--public-key', key)).code).toBe(AUDIT_EXIT_CODES.failed);
  });

  it('a break before the damage is the one named; a torn tail stays a warning', async () => {
    const { path, bytes, offsets } = await logOf('two-breaks.log', 10);
    const copy = new Uint8Array(bytes);
    copy[offsets[2]! + 9]! ^= 0x01; // entry 2 modified (checksum recomputed below: only the verifier sees it)
    const len = new DataView(copy.buffer).getUint32(offsets[2]!, false);
    copy.set(crypto.blake3(copy.subarray(offsets[2]!, offsets[2]! + 4 + len)).subarray(0, 4), offsets[2]! + 4 + len);
    copy[offsets[6]! + 20]! ^= 0x08; // and record 6 damaged
    writeFileSync(path, copy);
    const r = await inProcess('verify', path, '--public-key', key, '--json');
    expect(r.code).toBe(AUDIT_EXIT_CODES.failed);
    expect(JSON.parse(r.out)).toMatchObject({ ok: false, index: 2, reason: 'modified' });
    writeFileSync(path, bytes.subarray(0, bytes.length - 3));
    const torn = await inProcess('verify', path, '--public-key', key, '--json');
    expect(torn.code).toBe(AUDIT_EXIT_CODES.ok);
    expect(JSON.parse(torn.out)).toMatchObject({ ok: true, size: 9, warnings: [expect.stringMatching(/^torn record \(incomplete\)/) as string] });
  });
});
