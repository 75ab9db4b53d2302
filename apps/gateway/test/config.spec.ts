// Settings (src/config.ts) and the in-process CLI commands that need no server:
// defaults, file + environment precedence, one-line validation errors, the
// audit key file, the policy file watch, `check-config` and `policy check`.
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { helpLayoutProblems } from '@parley/cli-kit';
import { createCrypto } from '@parley/crypto-core';
import { RpcError } from '@parley/rpc';
import pino from 'pino';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { EXIT_CODES, main } from '../src/cli.js';
import { ConfigError, loadConfig, loadOrCreateAuditKey, watchPolicyFile, type ConfigSources } from '../src/config.js';
import type { Policy } from '../src/policy.js';
import { tempDir } from '@parley/test-support';

const dir = tempDir('config');
afterAll(() => dir.remove());

const POLICY = { version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' } }] };
writeFileSync(join(dir.path, 'policy.json'), JSON.stringify(POLICY));
writeFileSync(join(dir.path, 'bundle.json'), '{"version":1,"issuers":[]}');

function write(name: string, value: unknown): string {
  const path = join(dir.path, name);
  writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value));
  return path;
}

function failure(sources: ConfigSources): { code: string; message: string } {
  try {
    loadConfig(sources);
  } catch (error) {
    const e = error as RpcError;
    return { code: e.code, message: e.localDetails };
  }
  throw new Error('expected loadConfig to fail');
}

describe('loadConfig', () => {
  const base = { gateway_id: 'gw-1', trust_bundle_file: 'bundle.json' };

  it('applies defaults, resolves paths against the config file, and lets the environment win', () => {
    const file = write('a.json', { ...base, policy_file: 'policy.json', rate_burst: 50 });
    const c = loadConfig({ file, env: { PARLEY_GATEWAY_RATE_BURST: '70', PARLEY_GATEWAY_REVOCATION_FAIL_OPEN: 'true' } });
    expect(c.gatewayId).toBe('gw-1');
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 7443 });
    expect(c.registry).toMatchObject({ address: '127.0.0.1:50051', trustBundleFile: join(dir.path, 'bundle.json'), trustOnFirstUse: false });
    expect(c.policyFile).toBe(join(dir.path, 'policy.json'));
    expect(c.rateLimit).toEqual({ ratePerSecond: 100, burst: 70 });
    expect(c.revocation).toEqual({ maxAgeMs: 60_000, failOpen: true });
    expect(c.verifySignatures).toBe(true);
    expect(c.mailboxTtlMs).toBe(3_600_000);
    expect(c.metrics).toEqual({ host: '127.0.0.1', port: 9464 });
    expect('dataDir' in c.database).toBe(true);
    const pg = loadConfig({ file, env: { DATABASE_URL: 'postgres://u:secret@db/x', PARLEY_GATEWAY_DB_SCHEMA: 'gw', PARLEY_GATEWAY_METRICS_LISTEN: 'off' } });
    expect(pg.database).toEqual({ url: 'postgres://u:secret@db/x', schema: 'gw' });
    expect(pg.metrics).toBe(false);
    // Mailbox quotas: only what is set (the gateway's defaults fill the rest); 0 turns one off.
    expect(c.mailboxQuota).toEqual({});
    const quota = loadConfig({ file: write('q.json', { ...base, mailbox_max_items: 500_000, mailbox_recipient_max_bytes: 0 }), env: { PARLEY_GATEWAY_MAILBOX_MAX_BYTES: '1073741824' } });
    expect(quota.mailboxQuota).toEqual({ totalItems: 500_000, totalBytes: 1_073_741_824, perRecipientBytes: 0 });
  });

  it('refuses bad settings with one line naming the setting', () => {
    const cases: [Record<string, unknown>, Record<string, string>, string, RegExp][] = [
      [{ trust_bundle_file: 'b' }, {}, 'malformed', /gateway_id is required/],
      [{ ...base, gateway_id: 'GW 1' }, {}, 'malformed', /gateway_id must be/],
      [{ ...base, listen: 'nope' }, {}, 'malformed', /listen must be HOST:PORT/],
      [{ ...base, listen: '0.0.0.0:7443' }, {}, 'failed_precondition', /plaintext on non-loopback/],
      [{ ...base, tls_cert_file: 'c.pem' }, {}, 'malformed', /go together/],
      [{ ...base, registry_address: '10.0.0.5:50051' }, {}, 'failed_precondition', /registry_tls_ca_file/],
      [{ gateway_id: 'gw-1' }, {}, 'failed_precondition', /--trust-on-first-use/],
      [{ ...base, mailbox_ttl_ms: 7_200_000 }, {}, 'malformed', /mailbox_ttl_ms must be an integer from 1000 to 3600000/],
      [{ ...base }, { PARLEY_GATEWAY_VERIFY_SIGNATURES: 'maybe' }, 'malformed', /PARLEY_GATEWAY_VERIFY_SIGNATURES must be true or false/],
      [{ ...base, surprise: 1 }, {}, 'malformed', /unknown setting 'surprise'/],
      [{ ...base, registry_id: 'xyz' }, {}, 'malformed', /registry_id must be 32/],
      [{ ...base, log_level: 'loud' }, {}, 'malformed', /log_level must be one of/],
      [{ ...base, mailbox_max_items: -1 }, {}, 'malformed', /mailbox_max_items must be an integer from 0/],
      [{ ...base }, { PARLEY_GATEWAY_MAILBOX_SENDER_MAX_BYTES: '1.5' }, 'malformed', /PARLEY_GATEWAY_MAILBOX_SENDER_MAX_BYTES must be an integer/],
    ];
    for (const [json, env, code, re] of cases) {
      const f = failure({ file: write('bad.json', json), env });
      expect(f.code, JSON.stringify(json)).toBe(code);
      expect(f.message).toMatch(re);
      expect(f.message).not.toContain('\n');
    }
    expect(failure({ file: write('notjson.json', '{'), env: {} }).message).toMatch(/not valid JSON/);
    expect(failure({ file: join(dir.path, 'missing.json'), env: {} }).code).toBe('not_found');
    // Trust on first use only when asked for on the command line.
    expect(loadConfig({ env: { PARLEY_GATEWAY_ID: 'gw-2' }, trustOnFirstUse: true }).registry.trustOnFirstUse).toBe(true);
  });

  it('reports every problem at once, in one line, with the worst code; a misspelt key gets a suggestion', () => {
    const file = write('many.json', { gateway_id: 'GW 1', listen: '0.0.0.0:7443', mailbox_ttl_ms: 0, log_level: 'loud', rate_brust: 5, metrics_listen: 'nowhere' });
    let error: unknown;
    try {
      loadConfig({ file, env: { PARLEY_GATEWAY_VERIFY_SIGNATURES: 'maybe' } });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const e = error as ConfigError;
    expect(e.code).toBe('malformed'); // a bad value outranks the unsafe combinations
    expect(e.problems.map((p) => p.message)).toEqual([
      `${file}: unknown setting 'rate_brust' (did you mean 'rate_burst'?)`,
      "gateway_id must be 1..128 characters of [a-z0-9._:-], got 'GW 1'",
      'refusing to serve plaintext on non-loopback address 0.0.0.0: set tls_cert_file and tls_key_file',
      "no pinned trust bundle: set trust_bundle_file (from `parley-registry trust-bundle`), or pass --trust-on-first-use to accept the registry's own",
      `${file}: mailbox_ttl_ms must be an integer from 1000 to 3600000`,
      "metrics_listen must be HOST:PORT (port 0..65535), got 'nowhere'",
      'log_level must be one of trace, debug, info, warn, error',
      'PARLEY_GATEWAY_VERIFY_SIGNATURES must be true or false',
    ]);
    expect(e.localDetails).toMatch(/^8 problems in the configuration: .*rate_brust.*; .*PARLEY_GATEWAY_VERIFY_SIGNATURES must be true or false$/);
    expect(e.localDetails).not.toContain('\n');
    // Only unsafe combinations: failed_precondition.
    expect(failure({ file: write('unsafe.json', { gateway_id: 'gw-1', listen: '10.0.0.1:7443', registry_address: '10.0.0.2:50051' }), env: {} })).toMatchObject({
      code: 'failed_precondition',
      message: expect.stringMatching(/^3 problems in the configuration: refusing to serve plaintext .*; refusing to talk plaintext .*; no pinned trust bundle/) as string,
    });
  });
});

describe('audit key file', () => {
  it('is created 0600 once and read back; a group-readable one is refused', async () => {
    const crypto = await createCrypto();
    const file = join(dir.path, 'keys', 'audit-key.json');
    const a = loadOrCreateAuditKey(crypto, file);
    expect(a.created).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const b = loadOrCreateAuditKey(crypto, file);
    expect(b.created).toBe(false);
    expect(b.keyPair.publicKey).toEqual(a.keyPair.publicKey);
    chmodSync(file, 0o640);
    expect(() => loadOrCreateAuditKey(crypto, file)).toThrow(/readable by group or others/);
    mkdirSync(join(dir.path, 'k2'));
    const other = join(dir.path, 'k2', 'x.json');
    writeFileSync(other, '{"type":"something-else"}', { mode: 0o600 });
    expect(() => loadOrCreateAuditKey(crypto, other)).toThrow(/not a parley-gateway-audit-key file/);
    expect(JSON.parse(readFileSync(file, 'utf8'))).not.toHaveProperty('secret');
  });
});

describe('policy file watch', () => {
  it('applies a valid change, keeps the old policy on a bad one, and reloads on demand', async () => {
    const file = write('watched.json', POLICY);
    const logs: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) });
    const applied: Policy[] = [];
    const w = watchPolicyFile(file, (p) => applied.push(p), logger, 50);
    try {
      writeFileSync(file, JSON.stringify({ version: 1, rules: [...POLICY.rules, { from: { agent_type: 'worker' }, to: { agent_type: 'worker' } }] }));
      await vi.waitFor(() => expect(applied.at(-1)?.document.rules.length).toBe(2), { timeout: 3_000 });
      const count = applied.length;
      writeFileSync(file, '{"version": 1, "rules": [{"from": 5}]}');
      await vi.waitFor(() => expect(logs.some((l) => l['msg'] === 'policy file rejected: keeping the previous policy')).toBe(true), { timeout: 3_000 });
      expect(applied.length).toBe(count);
      writeFileSync(file, JSON.stringify(POLICY));
      expect(w.reload('SIGHUP')).toBe(true);
      expect(applied.at(-1)?.document.rules.length).toBe(1);
    } finally {
      w.close();
    }
  });
});

describe('CLI without a server', () => {
  async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
    const out: string[] = [];
    const err: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (err.push(String(chunk)), true));
    try {
      const code = await main(args, (t) => out.push(t));
      return { code, out: out.join('\n'), err: err.join('') };
    } finally {
      spy.mockRestore();
    }
  }

  it('prints help for every command and documents exit codes', async () => {
    const top = await cli(['--help']);
    expect(top.code).toBe(0);
    expect(top.out).toMatch(/Exit codes:/);
    for (const c of [['serve'], ['check'], ['check-config'], ['policy', 'check'], ['policy']]) {
      const r = await cli([...c, '--help']);
      expect(r.code, c.join(' ')).toBe(0);
      expect(r.out).toMatch(/Usage: parley-gateway/);
    }
    expect((await cli(['serve', '--help'])).out).toContain('PARLEY_GATEWAY_REVOCATION_MAX_AGE_MS');
    expect((await cli([])).code).toBe(EXIT_CODES.usage);
    const unknown = await cli(['frobnicate']);
    expect(unknown.code).toBe(EXIT_CODES.usage);
    expect(unknown.err).toMatch(/^parley-gateway: error: unknown command 'frobnicate'/);
    expect((await cli(['check-config', '--bogus'])).code).toBe(EXIT_CODES.usage);
  });

  it('help pages are aligned; usage errors are one line in our words with a --help pointer, exit 2', async () => {
    for (const c of [[], ['serve'], ['check'], ['check-config'], ['policy'], ['policy', 'check']]) {
      const r = await cli([...c, '--help']);
      expect(helpLayoutProblems(r.out), c.join(' ')).toEqual([]);
    }
    const cases: [string[], string][] = [
      [['check-config', '--config'], "option '-c, --config <FILE>' needs a value (see `parley-gateway check-config --help`)"],
      [['check-config', '--bogus'], "unknown option '--bogus' (see `parley-gateway check-config --help`)"],
      [['check-config', 'extra'], "unexpected argument 'extra' (see `parley-gateway check-config --help`)"],
      [['policy'], 'missing subcommand of policy (one of: check) (see `parley-gateway policy --help`)'],
      [['policy', 'lint'], "unknown subcommand 'lint' of policy (one of: check) (see `parley-gateway policy --help`)"],
      [['policy', 'check'], 'missing FILE (see `parley-gateway policy check --help`)'],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(EXIT_CODES.usage);
      expect(r.err).toBe(`parley-gateway: error: ${message}\n`);
    }
  });

  it('check-config and policy check', async () => {
    const good = write('good.json', { gateway_id: 'gw-1', trust_bundle_file: 'bundle.json', policy_file: 'policy.json' });
    const ok = await cli(['check-config', '--config', good, '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.out)).toMatchObject({ ok: true, warnings: [], config: { gateway_id: 'gw-1', verify_signatures: true } });
    expect(ok.out).not.toMatch(/secret|password/i);
    expect((await cli(['check-config', '--config', good])).out).toMatch(/^configuration OK\n\{/);
    // Valid but deny-all (no policy file): OK, with a warning saying so.
    const denyAll = await cli(['check-config', '--config', write('denyall.json', { gateway_id: 'gw-1', trust_bundle_file: 'bundle.json' })]);
    expect(denyAll.code).toBe(0);
    expect(denyAll.out).toMatch(/^configuration OK, with 1 warning:\n {2}warning: no policy_file: the gateway denies every route \(deny all\) until one is configured\n/);
    const oldPolicy = write('oldpolicy.json', { version: 1, rules: [{ from: { agentType: 'planner' }, to: { agentId: 'w-1' } }] });
    const deprecated = await cli(['check-config', '--config', write('oldp.json', { gateway_id: 'gw-1', trust_bundle_file: 'bundle.json', policy_file: 'oldpolicy.json', revocation_fail_open: true }), '--json']);
    expect(deprecated.code).toBe(0);
    expect((JSON.parse(deprecated.out) as { warnings: string[] }).warnings).toEqual([
      `${oldPolicy}: deprecated key spellings "agentType" (now "agent_type"), "agentId" (now "agent_id"): rename them`,
      'revocation_fail_open is true: on stale revocation data the gateway keeps admitting agents (a revoked agent may get through)',
    ]);
    const oldCheck = await cli(['policy', 'check', oldPolicy]);
    expect(oldCheck.code).toBe(0);
    expect(oldCheck.out).toContain('warning: deprecated key spellings "agentType" (now "agent_type"), "agentId" (now "agent_id")');
    // Every problem at once, the files' with the values': one line on stderr.
    const all = await cli(['check-config', '--config', write('allbad.json', { gateway_id: 'gw-1', trust_bundle_file: 'policy.json', policy_file: 'nope.json', log_level: 'loud' })]);
    expect(all.code).toBe(EXIT_CODES.invalidArgument);
    expect(all.err.trim().split('\n')).toHaveLength(1);
    expect(all.err).toMatch(/^parley-gateway: error: 3 problems in the configuration: log_level must be one of .*; .*policy\.json is not a trust bundle.*; cannot read policy file .*nope\.json$/m);
    const noPin = await cli(['check-config', '--config', write('nopin.json', { gateway_id: 'gw-1' })]);
    expect(noPin.code).toBe(EXIT_CODES.failedPrecondition);
    expect(noPin.err.trim().split('\n')).toHaveLength(1);
    expect((await cli(['check-config', '--config', write('nopin2.json', { gateway_id: 'gw-1' }), '--trust-on-first-use'])).code).toBe(0);
    const badBundle = await cli(['check-config', '--config', write('badbundle.json', { gateway_id: 'gw-1', trust_bundle_file: 'policy.json' })]);
    expect(badBundle.code).toBe(EXIT_CODES.invalidArgument);
    const missingPolicy = await cli(['check-config', '--config', write('mp.json', { gateway_id: 'gw-1', trust_bundle_file: 'bundle.json', policy_file: 'nope.json' })]);
    expect(missingPolicy.code).toBe(EXIT_CODES.notFound);

    const p = await cli(['policy', 'check', join(dir.path, 'policy.json'), '--json']);
    expect(p.code).toBe(0);
    expect(JSON.parse(p.out)).toMatchObject({ ok: true, rules: 1 });
    const bad = await cli(['policy', 'check', write('badpolicy.json', { version: 1, rules: [{ from: 5 }] })]);
    expect(bad.code).toBe(EXIT_CODES.invalidArgument);
    expect(bad.err).toMatch(/^parley-gateway: error: .*badpolicy\.json/);
    expect((await cli(['policy', 'check'])).code).toBe(EXIT_CODES.usage);
  });
});
