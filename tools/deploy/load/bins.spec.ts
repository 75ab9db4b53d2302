// The documented way to run Parley (docs/OPERATIONS.md): the built programs
// `parley-registry` and `parley-gateway` (apps/*/dist/cli.js, from
// `npm run build`), started with plain `node` — no tsx, no npm in between —
// on TLS 1.3 with certificates from `parley-registry tls init|issue`.
//
// A CLI and two agents connect over TLS and exchange a message with a
// verified receipt; SIGTERM to the PID the test started (the server itself)
// ends each server cleanly (exit 0, "stopped"), and the data-directory locks
// are released (the registry's registry.lock, PGlite's parley.lock in both).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, verifyReceiptSignature } from '@parley/client';
import { createCrypto, fromBase64Url, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, decodeCertificate } from '@parley/identity';
import { MessageType } from '@parley/proto';
import { appCli, mustRunApp, runApp, startApp, tempDir, type RunningProcess } from '@parley/test-support';
import { ROOT, alive, buildBins } from '../support.js';

const dir = tempDir('bins');
const servers: RunningProcess[] = [];
let crypto: ParleyCrypto;

beforeAll(async () => {
  buildBins();
  crypto = await createCrypto();
}, 600_000);

afterAll(() => {
  for (const s of servers) s.kill();
  dir.remove();
});

/** Opens a raw TLS connection and reports the negotiated protocol (or the error). */
function tlsProtocol(port: number, ca: Buffer, maxVersion?: 'TLSv1.2'): Promise<string> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['h2'], ...(maxVersion === undefined ? {} : { maxVersion }) });
    socket.once('secureConnect', () => {
      resolve(socket.getProtocol() ?? 'none');
      socket.destroy();
    });
    socket.once('error', (e) => resolve(`error: ${e.message}`));
  });
}

describe('built programs (npm run build → node apps/*/dist/cli.js)', () => {
  it('declare their bins with a node shebang, and run without tsx', async () => {
    for (const app of ['registry', 'gateway'] as const) {
      expect(appCli(app, 'built')).toBe(join(ROOT, 'apps', app, 'dist', 'cli.js'));
      expect(readFileSync(appCli(app, 'built'), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
      const help = await runApp(app, ['--help'], { build: 'built' });
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`Usage: parley-${app}`);
    }
  });

  it('serve TLS 1.3 with `tls init` certificates to a CLI and two agents, and stop cleanly on SIGTERM, releasing their locks', async () => {
    const tls = join(dir.path, 'tls');
    const registryDir = join(dir.path, 'registry');
    const gatewayDir = join(dir.path, 'gateway');
    // First setup: a private CA, the registry's certificate, the gateway's.
    const init = JSON.parse(await mustRunApp('registry', ['tls', 'init', '--out', tls, '--host', 'localhost', '--host', '127.0.0.1', '--json'], { build: 'built' })) as Record<string, string>;
    expect(init['certificate']).toBe(join(tls, 'server.pem'));
    await mustRunApp('registry', ['tls', 'issue', '--out', tls, '--name', 'gateway', '--host', 'localhost', '--host', '127.0.0.1'], { build: 'built' });
    const refused = await runApp('registry', ['tls', 'init', '--out', tls, '--host', 'localhost'], { build: 'built' });
    expect(refused.code).toBe(4); // already exists: never overwrites a CA
    const ca = readFileSync(join(tls, 'ca.pem'));

    await mustRunApp('registry', ['init', '--data-dir', registryDir], { build: 'built' });
    const registry = await startApp('registry', ['serve', '--data-dir', registryDir, '--listen', '127.0.0.1:0', '--tls-cert', join(tls, 'server.pem'), '--tls-key', join(tls, 'server-key.pem')], { build: 'built', ready: (l) => l['msg'] === 'listening' });
    servers.push(registry);
    // The PID we started is the server itself (no wrapper between a supervisor and it).
    expect(registry.readyLine['pid']).toBe(registry.pid);
    expect(registry.readyLine['tls']).toBe(true);
    const registryPort = registry.readyLine['port'] as number;
    expect(await tlsProtocol(registryPort, ca)).toBe('TLSv1.3');
    expect(await tlsProtocol(registryPort, ca, 'TLSv1.2')).toMatch(/^error/);
    const server = ['--data-dir', registryDir, '--server', `localhost:${registryPort}`, '--tls-ca', join(tls, 'ca.pem')];
    // Plaintext to a TLS registry fails; the CLI over TLS with the CA works.
    expect((await runApp('registry', ['trust-bundle', '--data-dir', registryDir, '--server', `127.0.0.1:${registryPort}`, '--timeout', '3'], { build: 'built' })).code).not.toBe(0);
    const bundleJson = await mustRunApp('registry', ['trust-bundle', ...server], { build: 'built' });
    writeFileSync(join(dir.path, 'trust-bundle.json'), bundleJson);

    writeFileSync(join(dir.path, 'policy.json'), JSON.stringify({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }));
    const config = {
      gateway_id: 'gw-tls',
      listen: '127.0.0.1:0',
      metrics_listen: 'off',
      tls_cert_file: join(tls, 'gateway.pem'),
      tls_key_file: join(tls, 'gateway-key.pem'),
      registry_address: `localhost:${registryPort}`,
      registry_tls_ca_file: join(tls, 'ca.pem'),
      trust_bundle_file: join(dir.path, 'trust-bundle.json'),
      policy_file: join(dir.path, 'policy.json'),
      audit_key_file: join(dir.path, 'audit-key.json'),
      data_dir: gatewayDir,
      shutdown_grace_ms: 2000,
    };
    writeFileSync(join(dir.path, 'gateway.json'), JSON.stringify(config));
    const gateway = await startApp('gateway', ['serve', '--config', join(dir.path, 'gateway.json')], { build: 'built', ready: (l, stream) => stream === 'stdout' && l['ready'] === true });
    servers.push(gateway);
    expect(gateway.readyLine['revocations_synced']).toBe(true);
    const gatewayPort = Number(String(gateway.readyLine['address']).split(':').pop());
    expect(await tlsProtocol(gatewayPort, ca)).toBe('TLSv1.3');
    expect(existsSync(join(gatewayDir, 'parley.lock'))).toBe(true);

    // Two agents enrolled by the CLI over TLS, connected over TLS, one message with its verified receipt.
    const trustBundle = TrustBundle.fromJSON(crypto, bundleJson);
    const enrol = async (agentId: string, type: string) => {
      const out = JSON.parse(await mustRunApp('registry', ['agent', 'register', agentId, '--type', type, '--json', ...server], { build: 'built' })) as { certificate: { encoded: string }; key_file: string };
      const seed = fromBase64Url((JSON.parse(readFileSync(out.key_file, 'utf8')) as { seed: string }).seed);
      const certificate = decodeCertificate(fromBase64Url(out.certificate.encoded));
      const agent = await connect({
        gateway: `localhost:${gatewayPort}`,
        identity: { agentId, signingKey: crypto.ed25519.keyPairFromSeed(seed).secretKey, certificate },
        trustBundle,
        expectedGatewayId: 'gw-tls',
        crypto,
        tls: { rootCerts: ca },
        sendTimeoutMs: 20_000,
      });
      return { agent, certificate };
    };
    const planner = await enrol('planner-1', 'planner');
    const worker = await enrol('worker-1', 'worker');
    try {
      const inbox = worker.agent.messages()[Symbol.asyncIterator]();
      const sending = planner.agent.send('worker-1', MessageType.STATUS_UPDATE, { state: 'over TLS 1.3' });
      const received = await inbox.next();
      expect(received.done).toBe(false);
      expect(received.value!.from).toBe('planner-1');
      await received.value!.ack(); // the receipt is signed when the application takes the message
      const receipt = await sending;
      expect(verifyReceiptSignature(crypto, receipt, worker.certificate.identityPublicKey)).toBe(true);
    } finally {
      await planner.agent.close();
      await worker.agent.close();
    }

    // SIGTERM to the gateway's PID: clean exit, lock released, process gone.
    gateway.signal('SIGTERM');
    expect(await gateway.exitStatus).toEqual({ code: 0, signal: null });
    expect(gateway.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
    expect(existsSync(join(gatewayDir, 'parley.lock'))).toBe(false);
    expect(alive(gateway.pid)).toBe(false);
    // And the registry's: both its locks released.
    expect(existsSync(join(registryDir, 'registry.lock'))).toBe(true);
    registry.signal('SIGTERM');
    expect(await registry.exitStatus).toEqual({ code: 0, signal: null });
    expect(registry.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
    expect(existsSync(join(registryDir, 'registry.lock'))).toBe(false);
    expect(existsSync(join(registryDir, 'pgdata', 'parley.lock'))).toBe(false);
    // The released directories open again at once (a leftover holder would be refused).
    const again = await startApp('registry', ['serve', '--data-dir', registryDir, '--listen', '127.0.0.1:0'], { build: 'built', ready: (l) => l['msg'] === 'listening' });
    servers.push(again);
    again.signal('SIGINT');
    expect((await again.exitStatus).code).toBe(0);
  }, 300_000);
});
