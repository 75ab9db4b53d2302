// The operator CLI as an operator uses it: real processes, real exit codes,
// tables and --json, one-line errors (never a stack trace), a sealed issuer
// key, TLS, and `revocations --watch` (the test-load target; --help on every
// command and the usage errors in this process: ../cli.spec.ts).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCrypto, toHex } from '@parley/crypto-core';
import { TrustBundle } from '@parley/identity';
import { EXIT_CODES } from '../../src/cli.js';
import { readPublicKey } from '../../src/key-file.js';
import { appDir, initRegistry, runApp, runRegistryCli, spawnApp, serveRegistry, tempDir, type CliResult, type RegistryFixture, type RunningRegistry } from '@parley/test-support';

function expectOneLineError(r: CliResult, code: number, pattern: RegExp): void {
  expect(r.code, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(code);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^parley-registry: error: /);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

describe('help, in a real process', () => {
  it('a real process prints help and exits 0; usage errors exit 2 in one line', async () => {
    const [help, unknownCommand, unknownFlag, missing] = await Promise.all([
      runRegistryCli(['agent', 'revoke', '--help']),
      runRegistryCli(['frobnicate']),
      runRegistryCli(['agent', 'list', '--colour']),
      runRegistryCli(['agent', 'register', '--type', 'x']),
    ]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--reason');
    expectOneLineError(unknownCommand, EXIT_CODES.usage, /unknown command 'frobnicate'/);
    expectOneLineError(unknownFlag, EXIT_CODES.usage, /--colour/);
    expectOneLineError(missing, EXIT_CODES.usage, /missing AGENT_ID/);
  });
});

describe('operator walkthrough on PGlite', () => {
  let fixture: RegistryFixture;
  let registry: RunningRegistry;
  let cli: (args: string[], env?: Record<string, string | undefined>) => Promise<CliResult>;

  beforeAll(async () => {
    fixture = await initRegistry('pglite', 'cli');
    registry = await serveRegistry(fixture);
    cli = (args, env = {}) => runRegistryCli([...args, '--data-dir', fixture.dataDir, '--server', registry.address], env);
  }, 60_000);

  afterAll(async () => {
    await registry?.stop();
    await fixture?.cleanup();
  });

  it('init wrote mode-0600 key files and refuses to run twice', async () => {
    for (const f of ['issuer-key.json', 'operator-key.json']) expect(statSync(join(fixture.dataDir, f)).mode & 0o777).toBe(0o600);
    expectOneLineError(await runRegistryCli(['init', '--data-dir', fixture.dataDir]), EXIT_CODES.alreadyExists, /already initialised/);
  });

  it('registers, lists, shows, revokes and prints the verified list, in tables and JSON', async () => {
    const reg = await cli(['agent', 'register', 'planner-1', '--type', 'planner', '--cap', 'task:delegate', '--cap', 'msg:send', '--json']);
    expect(reg.code, reg.stderr).toBe(0);
    const agent = JSON.parse(reg.stdout) as Record<string, unknown>;
    expect(agent).toMatchObject({ agent_id: 'planner-1', agent_type: 'planner', capabilities: ['msg:send', 'task:delegate'], status: 'active' });
    expect(statSync(agent['key_file'] as string).mode & 0o777).toBe(0o600);

    const [dup, table, show, unknown] = await Promise.all([
      cli(['agent', 'register', 'planner-1', '--type', 'planner']),
      cli(['agent', 'list']),
      cli(['agent', 'show', 'planner-1']),
      cli(['agent', 'show', 'ghost']),
    ]);
    expectOneLineError(dup, EXIT_CODES.alreadyExists, /agent 'planner-1' already exists/);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^AGENT ID\s+TYPE\s+STATUS/);
    expect(table.stdout).toMatch(/planner-1\s+planner\s+active/);
    expect(show.stdout).toMatch(/did:key:z6Mk/);
    expectOneLineError(unknown, EXIT_CODES.notFound, /unknown agent 'ghost'/);

    const revoke = await cli(['agent', 'revoke', 'planner-1', '--reason', 'key-compromise', '-m', 'laptop stolen']);
    expect(revoke.code, revoke.stderr).toBe(0);
    expect(revoke.stdout).toContain('revocation list version 1');
    const [list, listJson, again] = await Promise.all([
      cli(['revocations']),
      cli(['revocations', '--json']),
      cli(['agent', 'revoke', 'planner-1']),
    ]);
    expect(list.stdout).toMatch(/1\s+agent planner-1\s+key_compromise\s+laptop stolen/);
    // Not pinned: trust on first use, said in one warning line, never "verified".
    expect(list.stdout).not.toContain('verified');
    expect(list.stderr).toMatch(/^parley-registry: warning: trust bundle not pinned.*--trust-bundle FILE\n$/);
    expect(JSON.parse(listJson.stdout)).toMatchObject({ version: 1, verified: false, trust_bundle_pinned: false, entries: [{ version: 1, agent_id: 'planner-1', reason: 'key_compromise' }] });
    // Pinned: verified.
    const bundleFile = join(fixture.dataDir, 'pinned-bundle.json');
    writeFileSync(bundleFile, (await cli(['trust-bundle'])).stdout);
    const pinned = await cli(['revocations', '--trust-bundle', bundleFile]);
    expect(pinned.code, pinned.stderr).toBe(0);
    expect(pinned.stdout).toContain('chain and issuer signature verified');
    expect(pinned.stderr).toBe('');
    expect(JSON.parse((await cli(['revocations', '--json', '--trust-bundle', bundleFile])).stdout)).toMatchObject({ verified: true, trust_bundle_pinned: true });
    expectOneLineError(again, EXIT_CODES.alreadyExists, /already revoked/);
    const revoked = JSON.parse((await cli(['agent', 'list', '--status', 'revoked', '--json'])).stdout) as { agents: { agent_id: string }[] };
    expect(revoked.agents.map((a) => a.agent_id)).toEqual(['planner-1']);
  });

  it('prints the key file as an absolute path (JSON and text), also when --data-dir is relative', async () => {
    // New-user walkthrough finding: `agent register --json` printed `key_file` relative to where the command ran
    // (`.data/registry/agents/planner.key.json`), and a program reading it from another directory got ENOENT.
    // The command runs in the app's directory (runApp's default): --data-dir relative to it.
    const relativeDir = relative(appDir('registry'), fixture.dataDir);
    expect(isAbsolute(relativeDir)).toBe(false);
    const args = ['--data-dir', relativeDir, '--server', registry.address];
    const reg = await runApp('registry', ['agent', 'register', 'worker-rel', '--type', 'worker', '--json', ...args]);
    expect(reg.code, reg.stderr).toBe(0);
    const keyFile = (JSON.parse(reg.stdout) as { key_file: string }).key_file;
    expect(keyFile).toBe(join(fixture.dataDir, 'agents', 'worker-rel.key.json'));
    expect(existsSync(keyFile)).toBe(true);
    const text = await runApp('registry', ['agent', 'register', 'worker-rel2', '--type', 'worker', ...args]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(join(fixture.dataDir, 'agents', 'worker-rel2.key.json'));
  });

  it('adds an operator from a key file, removes it, and then refuses its key', async () => {
    const keyFile = join(fixture.dataDir, 'frank-operator-key.json');
    const added = await cli(['operator', 'add', 'frank', '--key-file', keyFile, '--json']);
    expect(added.code, added.stderr).toBe(0);
    const keyId = (JSON.parse(added.stdout) as { key_id: string }).key_id;
    expect((await cli(['agent', 'list', '--operator-key', keyFile])).code).toBe(0);
    const removed = await cli(['operator', 'remove', keyId]);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toContain(`removed operator "frank" with key ${keyId}`);
    expect((await cli(['operator', 'list'])).stdout).not.toContain('frank');
    expectOneLineError(await cli(['agent', 'register', 'frank-1', '--type', 'worker', '--operator-key', keyFile]), EXIT_CODES.permissionDenied, /not a listed operator/);
    expectOneLineError(await cli(['operator', 'remove', keyId]), EXIT_CODES.notFound, /no listed operator/);
    expectOneLineError(await cli(['operator', 'remove', 'xyz']), EXIT_CODES.usage, /KEY_ID must be 32 lowercase hex digits/);
  });

  it('rotates an agent key and replaces the key file', async () => {
    expect((await cli(['agent', 'register', 'rot-1', '--type', 'worker'])).code).toBe(0);
    const before = (JSON.parse((await cli(['agent', 'show', 'rot-1', '--json'])).stdout) as { certificate: { serial: string } }).certificate.serial;
    const rotated = await cli(['agent', 'rotate', 'rot-1', '--json']);
    expect(rotated.code, rotated.stderr).toBe(0);
    const after = JSON.parse(rotated.stdout) as { certificate: { serial: string }; superseded: { serial: string; reason: string } };
    expect(after.certificate.serial).not.toBe(before);
    expect(after.superseded).toMatchObject({ serial: before, reason: 'superseded' });
  });

  it('gives clear one-line errors: bad key encoding, permission denied, server and database unreachable, plaintext off loopback', async () => {
    const stranger = tempDir('stranger');
    try {
      const strangerKey = join(stranger.path, 'op.json');
      const [badKey, badSerial, denied, unreachable, noDb, offLoopback] = await Promise.all([
        cli(['operator', 'add', 'carol', 'not-a-key']),
        cli(['agent', 'revoke', '--serial', 'xyz']),
        cli(['operator', 'add', 'dave', '--key-file', strangerKey]).then(() => cli(['agent', 'list', '--operator-key', strangerKey])),
        runRegistryCli(['agent', 'list', '--data-dir', fixture.dataDir, '--server', '127.0.0.1:1']),
        runRegistryCli(['init', '--data-dir', join(stranger.path, 'db'), '--database-url', 'postgres://postgres@127.0.0.1:1/nowhere']),
        runRegistryCli(['serve', '--data-dir', fixture.dataDir, '--listen', '0.0.0.0:0']),
      ]);
      expectOneLineError(badKey, EXIT_CODES.invalidArgument, /bad key encoding/);
      expectOneLineError(badSerial, EXIT_CODES.invalidArgument, /bad serial encoding/);
      // dave's key was listed by the admin, so signing with it works; a key nobody listed is refused.
      expect(denied.code, denied.stderr).toBe(0);
      const other = join(stranger.path, 'other.json');
      // `operator add --key-file` creates the key file first, then fails to reach this (wrong) server: a key nobody listed.
      await runRegistryCli(['operator', 'add', 'erin', '--key-file', other, '--data-dir', fixture.dataDir, '--server', '127.0.0.1:1']);
      expectOneLineError(await cli(['agent', 'list', '--operator-key', other]), EXIT_CODES.permissionDenied, /not a listed operator/);
      expectOneLineError(unreachable, EXIT_CODES.unavailable, /registry server unreachable/);
      expectOneLineError(noDb, EXIT_CODES.unavailable, /database unreachable at postgres:\/\/postgres@127\.0\.0\.1:1\/nowhere/);
      expectOneLineError(offLoopback, EXIT_CODES.failedPrecondition, /refusing to serve plaintext on non-loopback/);
      // The client side too: no plaintext to a registry off loopback without --tls-ca (refused before connecting).
      expectOneLineError(await runRegistryCli(['agent', 'list', '--data-dir', fixture.dataDir, '--server', '192.0.2.1:50051']), EXIT_CODES.failedPrecondition, /refusing to talk plaintext to non-loopback registry 192\.0\.2\.1:50051/);
      // Without an operator key: writes are refused locally with a pointer; directory reads go unsigned and are
      // refused (directory_reads is "authenticated" by default), the revocation list is open.
      const empty = join(stranger.path, 'empty');
      const [noKeyWrite, noKeyRead, noKeyRevocations] = await Promise.all([
        runRegistryCli(['agent', 'revoke', 'planner-1', '--data-dir', empty, '--server', registry.address]),
        runRegistryCli(['agent', 'list', '--json', '--data-dir', empty, '--server', registry.address]),
        runRegistryCli(['revocations', '--json', '--data-dir', empty, '--server', registry.address]),
      ]);
      expectOneLineError(noKeyWrite, EXIT_CODES.failedPrecondition, /no operator key at .*pass --operator-key FILE/);
      expectOneLineError(noKeyRead, EXIT_CODES.permissionDenied, /ListAgents requires an operator or agent request signature \(directory_reads is "authenticated"\)/);
      expect(noKeyRevocations.code, noKeyRevocations.stderr).toBe(0);
    } finally {
      stranger.remove();
    }
  });

  it('watches revocations live as NDJSON', async () => {
    const child = spawnApp('registry', ['revocations', '--watch', '--json', '--data-dir', fixture.dataDir, '--server', registry.address]);
    const lines: Record<string, unknown>[] = [];
    let buffer = '';
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const waiters = new Set<() => void>();
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buffer.slice(0, nl)) as Record<string, unknown>);
        buffer = buffer.slice(nl + 1);
      }
      for (const wake of waiters) wake();
    });
    const seen = (pred: (l: Record<string, unknown>) => boolean) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out; got ${JSON.stringify(lines)}; stderr ${stderr}`)), 30_000);
        const check = (): void => {
          if (lines.some(pred)) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve();
          }
        };
        waiters.add(check);
        check();
      });
    try {
      await seen((l) => l['type'] === 'heartbeat'); // caught up with the backlog
      expect((await cli(['agent', 'register', 'watched-1', '--type', 'worker'])).code).toBe(0);
      expect((await cli(['agent', 'revoke', 'watched-1'])).code).toBe(0);
      await seen((l) => l['type'] === 'entry' && l['agent_id'] === 'watched-1');
      const versions = lines.filter((l) => l['type'] === 'entry').map((l) => l['version']);
      expect(versions).toEqual(Array.from({ length: versions.length }, (_, i) => i + 1));
    } finally {
      child.kill('SIGTERM');
    }
  }, 60_000);

  it('issuer rotate asks the running registry: the key is prepared, then active (its file replaces the old one), and issuer list shows it', async () => {
    expectOneLineError(await cli(['issuer', 'rotate', '--grace', '0']), EXIT_CODES.usage, /--grace must be longer than 0/);
    const before = JSON.parse((await cli(['issuer', 'list', '--json'])).stdout) as { trust_bundle_version: number };
    const rotated = await cli(['issuer', 'rotate', '--activate-after', '500ms', '--json']);
    expect(rotated.code, rotated.stderr).toBe(0);
    const prepared = JSON.parse(rotated.stdout) as { prepared_key_id: string; trust_bundle_version: number };
    expect(prepared.trust_bundle_version).toBe(before.trust_bundle_version + 1);
    const issuerPath = join(fixture.dataDir, 'issuer-key.json');
    // Wait for the activation: the prepared file becomes the active one (the old secret is gone).
    const crypto = await createCrypto();
    const deadline = Date.now() + 15_000;
    while (toHex(readPublicKey(crypto, issuerPath).keyId) !== prepared.prepared_key_id) {
      if (Date.now() > deadline) throw new Error('not activated');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(existsSync(`${issuerPath}.next.${prepared.prepared_key_id}`)).toBe(false); // renamed over the active file
    const listed = JSON.parse((await cli(['issuer', 'list', '--json'])).stdout) as { trust_bundle_version: number; issuers: { key_id: string; state: string; not_after_ms: number | null }[] };
    expect(listed.trust_bundle_version).toBe(prepared.trust_bundle_version + 1);
    expect(listed.issuers.find((i) => i.key_id === prepared.prepared_key_id)?.state).toBe('active');
    expect(listed.issuers.find((i) => i.state === 'retired')?.not_after_ms).toBeGreaterThan(Date.now());
  });

  // An operator walkthrough: `revocations --watch --trust-bundle <pinned file>` died at the activation ("revocation
  // head is signed by a key outside the trust bundle"). It follows the registry's signed bundle from the pin now.
  it('revocations --watch with a pinned trust bundle keeps going through an issuer rotation', async () => {
    const pinnedFile = join(fixture.dataDir, 'pinned-before-rotation.json');
    const bundle = await cli(['trust-bundle']);
    expect(bundle.code, bundle.stderr).toBe(0);
    writeFileSync(pinnedFile, bundle.stdout);
    const child = spawnApp('registry', ['revocations', '--watch', '--json', '--trust-bundle', pinnedFile, '--data-dir', fixture.dataDir, '--server', registry.address]);
    const lines: Record<string, unknown>[] = [];
    let buffer = '';
    let stderr = '';
    let exited: number | null | undefined;
    child.on('exit', (code) => (exited = code));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buffer.slice(0, nl)) as Record<string, unknown>);
        buffer = buffer.slice(nl + 1);
      }
    });
    const until = async (what: string, pred: () => boolean): Promise<void> => {
      const deadline = Date.now() + 30_000;
      while (!pred()) {
        if (exited !== undefined) throw new Error(`the watch exited (${exited}) waiting for ${what}: ${stderr}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(lines)}; stderr ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      await until('the first heartbeat', () => lines.some((l) => l['type'] === 'heartbeat'));
      const rotated = await cli(['issuer', 'rotate', '--activate-after', '500ms', '--json']);
      expect(rotated.code, rotated.stderr).toBe(0);
      const keyId = (JSON.parse(rotated.stdout) as { prepared_key_id: string }).prepared_key_id;
      const deadline = Date.now() + 15_000;
      for (;;) {
        const listed = JSON.parse((await cli(['issuer', 'list', '--json'])).stdout) as { issuers: { key_id: string; state: string }[] };
        if (listed.issuers.find((i) => i.key_id === keyId)?.state === 'active') break;
        if (Date.now() > deadline) throw new Error('not activated');
        await new Promise((r) => setTimeout(r, 100));
      }
      // Heads are signed by the new key from now on; an entry revoked after the activation is printed.
      expect((await cli(['agent', 'register', 'watched-rot', '--type', 'worker'])).code).toBe(0);
      expect((await cli(['agent', 'revoke', 'watched-rot'])).code).toBe(0);
      await until('the entry revoked after the activation', () => lines.some((l) => l['type'] === 'entry' && l['agent_id'] === 'watched-rot'));
      expect(exited).toBeUndefined();
      expect(stderr).not.toMatch(/outside the trust bundle/);
    } finally {
      child.kill('SIGTERM');
    }
  }, 90_000);

  it('revocations with a pinned bundle that cannot be followed says how to fetch it again (the exact command)', async () => {
    const crypto = await createCrypto();
    const stranger = TrustBundle.from(crypto, [{ publicKey: crypto.ed25519.generateKeyPair().publicKey }]);
    const pinnedFile = join(fixture.dataDir, 'pinned-stranger.json');
    writeFileSync(pinnedFile, JSON.stringify(stranger.toJSON()));
    const r = await cli(['revocations', '--trust-bundle', pinnedFile]);
    const quoted = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expectOneLineError(
      r,
      EXIT_CODES.permissionDenied,
      new RegExp(
        `revocation head is signed by a key outside the trust bundle; following the registry's trust bundle from it failed: .*pin its current bundle: the pinned trust bundle ${quoted(pinnedFile)} is too old .*; fetch the bundle again \\(check its keys out of band\\): parley-registry trust-bundle --server ${quoted(registry.address)} > ${quoted(pinnedFile)}$`,
      ),
    );
  });
});

describe('sealed issuer key and TLS', () => {
  it('serves only with the passphrase, and over TLS 1.3 with a CA-verified certificate', async () => {
    const dir = tempDir('sealed');
    const passFile = join(dir.path, 'pass');
    writeFileSync(passFile, 'correct horse battery staple\n', { mode: 0o600 });
    let fixture: RegistryFixture | undefined;
    let registry: RunningRegistry | undefined;
    try {
      fixture = await initRegistry('pglite', 'sealed', ['--passphrase-file', passFile, '--kdf', 'interactive']);
      const noPass = await runRegistryCli(['serve', '--data-dir', fixture.dataDir, '--listen', '127.0.0.1:0']);
      expectOneLineError(noPass, EXIT_CODES.permissionDenied, /sealed: a passphrase is required/);
      writeFileSync(join(dir.path, 'wrong'), 'wrong\n');
      const wrong = await runRegistryCli(['serve', '--data-dir', fixture.dataDir, '--listen', '127.0.0.1:0', '--passphrase-file', join(dir.path, 'wrong')]);
      expectOneLineError(wrong, EXIT_CODES.permissionDenied, /wrong passphrase/);

      // A self-signed certificate for localhost (openssl, test only).
      const cert = join(dir.path, 'cert.pem');
      const key = join(dir.path, 'key.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
      registry = await serveRegistry(fixture, ['--passphrase-file', passFile, '--tls-cert', cert, '--tls-key', key]);
      expect(registry.logs.find((l) => l['msg'] === 'listening')).toMatchObject({ tls: true });
      const overTls = await runRegistryCli(['agent', 'list', '--json', '--data-dir', fixture.dataDir, '--server', registry.address, '--tls-ca', cert, '--tls-server-name', 'localhost']);
      expect(overTls.code, overTls.stderr).toBe(0);
      expect(JSON.parse(overTls.stdout)).toEqual({ agents: [], next_page_token: null });
      const plain = await runRegistryCli(['agent', 'list', '--data-dir', fixture.dataDir, '--server', registry.address, '--timeout', '3']);
      expect(plain.code).toBe(EXIT_CODES.unavailable);
    } finally {
      await registry?.stop();
      await fixture?.cleanup();
      dir.remove();
    }
  }, 60_000);
});

describe('operator review: TLS files and mistakes, revocations re-issued after a restore', () => {
  let dir: ReturnType<typeof tempDir>;
  let fixture: RegistryFixture;
  let registry: RunningRegistry;
  let tls: string;
  let other: string;
  // Loopback by IP with a certificate for localhost: --tls-server-name keeps Node's "TLS ServerName to an IP" warning off stderr.
  let cli: (args: string[]) => Promise<CliResult>;

  beforeAll(async () => {
    dir = tempDir('review');
    tls = join(dir.path, 'tls');
    other = join(dir.path, 'other');
    for (const out of [tls, other]) {
      const made = await runRegistryCli(['tls', 'init', '--host', 'localhost', '--host', '127.0.0.1', '--out', out]);
      expect(made.code, made.stderr).toBe(0);
    }
    fixture = await initRegistry('pglite', 'review');
    registry = await serveRegistry(fixture, ['--tls-cert', join(tls, 'server.pem'), '--tls-key', join(tls, 'server-key.pem')]);
    cli = (args) => runRegistryCli([...args, '--data-dir', fixture.dataDir, '--server', registry.address, '--tls-server-name', 'localhost']);
  }, 120_000);

  afterAll(async () => {
    await registry?.stop();
    await fixture?.cleanup();
    dir?.remove();
  });

  it('PEM files end in a newline; a CA bundle concatenated from files without one is read whole', async () => {
    for (const f of ['ca.pem', 'ca-key.pem', 'server.pem', 'server-key.pem']) expect(readFileSync(join(tls, f), 'utf8'), f).toMatch(/-----\n$/);
    // The rollover bundle `cat new/ca.pem old/ca.pem`, made from files of the old release (no final newline).
    const oldStyle = (path: string): string => readFileSync(path, 'utf8').replace(/\n$/, '');
    const bundle = join(dir.path, 'both.pem');
    writeFileSync(bundle, oldStyle(join(other, 'ca.pem')) + oldStyle(join(tls, 'ca.pem')));
    expect(readFileSync(bundle, 'utf8')).toContain('-----END CERTIFICATE----------BEGIN CERTIFICATE-----');
    const r = await cli(['agent', 'list', '--json', '--tls-ca', bundle]);
    expect(r.code, r.stderr).toBe(0);
    // And `cat` of the new files makes a bundle of two blocks.
    expect(readFileSync(join(other, 'ca.pem'), 'utf8') + readFileSync(join(tls, 'ca.pem'), 'utf8')).not.toContain('----------');
  });

  it('says what probably went wrong: no --tls-ca against a TLS server, a CA that did not sign its certificate', async () => {
    const [plain, wrongCa] = await Promise.all([cli(['agent', 'list', '--timeout', '5']), cli(['agent', 'list', '--timeout', '5', '--tls-ca', join(other, 'ca.pem')])]);
    expectOneLineError(plain, EXIT_CODES.unavailable, /the server may require TLS: pass --tls-ca/);
    expectOneLineError(wrongCa, EXIT_CODES.unavailable, /TLS handshake with 127\.0\.0\.1:\d+ failed \(.*\): is --tls-ca the CA that signed the server's certificate\?/);
  });

  it('join-token create over TLS prints the enrol step with --tls-ca', async () => {
    const ca = join(tls, 'ca.pem');
    const r = await cli(['join-token', 'create', '--name', 'worker-9', '--type', 'worker', '--tls-ca', ca]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`parley-registry agent enroll worker-9 --token-file FILE --server ${registry.address} --tls-ca ${ca} --tls-server-name localhost`);
  });

  it('tls issue for a gateway names the gateway configuration keys, not `serve`', async () => {
    const r = await runRegistryCli(['tls', 'issue', '--host', 'gw1.example.net', '--name', 'gateway-gw1', '--out', tls]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Next: in the gateway's configuration: "tls_cert_file": ".*gateway-gw1\.pem", "tls_key_file": ".*gateway-gw1-key\.pem"/);
    expect(r.stdout).not.toContain('parley-registry serve');
  });

  it('revokes an agent id or serial it does not know only with --unknown-ok (the error says so); once; and the id cannot be registered after', async () => {
    const ca = ['--tls-ca', join(tls, 'ca.pem')];
    expectOneLineError(await cli(['agent', 'revoke', 'worker-3', ...ca]), EXIT_CODES.notFound, /unknown agent 'worker-3': if this revocation is being re-issued after a restore .*add --unknown-ok/);
    const serial = 'ab'.repeat(16);
    expectOneLineError(await cli(['agent', 'revoke', '--serial', serial, ...ca]), EXIT_CODES.notFound, /unknown certificate serial a[b]+.*add --unknown-ok/);
    const byId = await cli(['agent', 'revoke', 'worker-3', '--unknown-ok', '--reason', 'key-compromise', '--json', ...ca]);
    expect(byId.code, byId.stderr).toBe(0);
    const bySerial = await cli(['agent', 'revoke', '--serial', serial, '--unknown-ok', '--json', ...ca]);
    expect(bySerial.code, bySerial.stderr).toBe(0);
    expectOneLineError(await cli(['agent', 'revoke', 'worker-3', '--unknown-ok', ...ca]), EXIT_CODES.alreadyExists, /agent 'worker-3' is already revoked/);
    const list = JSON.parse((await cli(['revocations', '--json', ...ca])).stdout) as { entries: { agent_id?: string | null; serial?: string | null; reason: string }[] };
    expect(list.entries.some((e) => e.agent_id === 'worker-3')).toBe(true);
    expect(list.entries.some((e) => e.serial === serial)).toBe(true);
    expectOneLineError(await cli(['agent', 'register', 'worker-3', '--type', 'worker', ...ca]), EXIT_CODES.alreadyExists, /agent id 'worker-3' is revoked/);
  });
});
