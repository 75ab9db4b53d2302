// The restore-from-backup drill (docs/OPERATIONS.md, "Restoring the registry"),
// with the built programs as real processes on loopback:
//
// 1. registry (PGlite) + gateway; agents enrolled; a backup of the registry's
//    data directory taken with the registry stopped (the PGlite way; on
//    PostgreSQL it is pg_dump);
// 2. an agent is revoked AFTER the backup (list version 1), the gateway follows;
// 3. disaster: the registry's directory is restored from the backup (version 0);
// 4. the gateway refuses to go back: the revoked agent stays refused, every
//    agent is refused once the list is stale (fail closed), also after a
//    gateway restart (the high-water mark is in its database); the registry
//    and the gateway each log one clear error naming the versions and the fix;
// 5. the operator re-issues the lost revocation: the registry's version
//    reaches the gateway's again, the gateway takes the list, agents connect
//    again, and the revoked agent is still refused.
import { cpSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, connect } from '@parley/client';
import { createCrypto, fromBase64Url, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, decodeCertificate } from '@parley/identity';
import { mustRunApp, startApp, tempDir, type RunningProcess } from '@parley/test-support';
import { buildBins } from '../support.js';

const dir = tempDir('restore');
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

const registryDir = join(dir.path, 'registry');
const isListening = (l: Record<string, unknown>): boolean => l['msg'] === 'listening';
const isReady = (l: Record<string, unknown>, stream: 'stdout' | 'stderr'): boolean => stream === 'stdout' && l['ready'] === true;

async function stop(server: RunningProcess): Promise<void> {
  server.signal('SIGTERM');
  expect((await server.exitStatus).code).toBe(0);
}

describe('restore drill: registry database restored from a backup taken before a revocation', () => {
  it('gateways keep the newer list and fail closed, both sides say why and what to do, and re-issuing the revocation recovers', async () => {
    await mustRunApp('registry', ['init', '--data-dir', registryDir], { build: 'built' });
    const serveArgs = (listen: string): string[] => ['serve', '--data-dir', registryDir, '--listen', listen, '--heartbeat-ms', '300'];
    let registry = await startApp('registry', serveArgs('127.0.0.1:0'), { build: 'built', ready: isListening });
    servers.push(registry);
    const address = `127.0.0.1:${String(registry.readyLine['port'])}`;
    const cli = (args: readonly string[]): Promise<string> => mustRunApp('registry', [...args, '--data-dir', registryDir, '--server', address], { build: 'built' });
    const bundleJson = await cli(['trust-bundle']);
    writeFileSync(join(dir.path, 'trust-bundle.json'), bundleJson);
    const trustBundle = TrustBundle.fromJSON(crypto, bundleJson);
    const identities = new Map<string, { signingKey: ReturnType<ParleyCrypto['ed25519']['keyPairFromSeed']>['secretKey']; certificate: ReturnType<typeof decodeCertificate> }>();
    for (const [id, type] of [
      ['planner-1', 'planner'],
      ['worker-1', 'worker'],
      ['worker-2', 'worker'],
    ] as const) {
      const out = JSON.parse(await cli(['agent', 'register', id, '--type', type, '--json'])) as { certificate: { encoded: string }; key_file: string };
      const seed = fromBase64Url((JSON.parse(readFileSync(out.key_file, 'utf8')) as { seed: string }).seed);
      identities.set(id, { signingKey: crypto.ed25519.keyPairFromSeed(seed).secretKey, certificate: decodeCertificate(fromBase64Url(out.certificate.encoded)) });
    }

    writeFileSync(join(dir.path, 'policy.json'), JSON.stringify({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }));
    writeFileSync(
      join(dir.path, 'gateway.json'),
      JSON.stringify({
        gateway_id: 'gw-restore',
        listen: '127.0.0.1:0',
        metrics_listen: 'off',
        registry_address: address,
        trust_bundle_file: join(dir.path, 'trust-bundle.json'),
        policy_file: join(dir.path, 'policy.json'),
        audit_key_file: join(dir.path, 'audit-key.json'),
        data_dir: join(dir.path, 'gateway'),
        revocation_max_age_ms: 2000,
        shutdown_grace_ms: 1000,
      }),
    );
    const startGateway = async (listen?: string): Promise<RunningProcess> => {
      const gw = await startApp('gateway', ['serve', '--config', join(dir.path, 'gateway.json')], { build: 'built', ready: isReady, env: listen === undefined ? {} : { PARLEY_GATEWAY_LISTEN: listen } });
      servers.push(gw);
      return gw;
    };
    let gateway = await startGateway();
    const gatewayAddress = String(gateway.readyLine['address']);
    /** Connects an agent; resolves to 'ok' or the refusal's code. */
    const tryConnect = async (agentId: string): Promise<string> => {
      const identity = identities.get(agentId)!;
      try {
        const agent = await connect({ gateway: gatewayAddress, identity: { agentId, ...identity }, trustBundle, expectedGatewayId: 'gw-restore', crypto, reconnect: false, authTimeoutMs: 10_000 });
        await agent.close();
        return 'ok';
      } catch (error) {
        return error instanceof ClientError ? error.code : String(error);
      }
    };
    expect(await tryConnect('planner-1')).toBe('ok');
    expect(await tryConnect('worker-2')).toBe('ok');

    // 1. The backup: the registry stopped, its directory copied (keys, settings, PGlite database together).
    await stop(registry);
    cpSync(registryDir, join(dir.path, 'backup'), { recursive: true });
    registry = await startApp('registry', serveArgs(address), { build: 'built', ready: isListening });
    servers.push(registry);

    // 2. A revocation after the backup; the gateway applies it.
    const received = gateway.waitFor((l) => l['msg'] === 'revocation received' && l['agent'] === 'worker-2', 30_000);
    await cli(['agent', 'revoke', 'worker-2', '--reason', 'key-compromise', '-m', 'after the backup']);
    await received;
    expect(await tryConnect('worker-2')).toBe('revoked');

    // 3. Disaster: the registry comes back from the older backup.
    await stop(registry);
    rmSync(registryDir, { recursive: true });
    renameSync(join(dir.path, 'backup'), registryDir);
    const gatewayRollback = gateway.waitFor((l) => l['event'] === 'revocation_rollback' && l['level'] === 50, 60_000);
    registry = await startApp('registry', serveArgs(address), { build: 'built', ready: isListening });
    servers.push(registry);

    // 4. The gateway refuses to go back, and says so; so does the registry.
    const gwError = await gatewayRollback;
    expect(gwError['held_version']).toBe(1);
    expect(String(gwError['msg'])).toMatch(/revocation list is at version 0, older than version 1 already verified here/);
    expect(String(gwError['msg'])).toMatch(/re-issue the revocations made after the backup .*until the registry's version reaches 1/);
    const regError = await registry.waitFor((l) => l['event'] === 'revocation_rollback', 30_000);
    expect(regError).toMatchObject({ level: 50, client_version: 1, registry_version: 0, missing: 1 });
    expect(String(regError['msg'])).toMatch(/Re-issue the revocations made after the backup/);
    // The revoked agent stays refused (revoked, or refused as stale); once the kept list is stale (2 s), everyone is (fail closed).
    expect(['revoked', 'revocation_stale']).toContain(await tryConnect('worker-2'));
    await new Promise((r) => setTimeout(r, 2500));
    expect(await tryConnect('planner-1')).toBe('revocation_stale');
    expect(await tryConnect('worker-2')).not.toBe('ok');

    // A gateway restart does not forget: the high-water mark is in its database.
    await stop(gateway);
    const again = await startApp('gateway', ['serve', '--config', join(dir.path, 'gateway.json')], { build: 'built', ready: isReady, env: { PARLEY_GATEWAY_LISTEN: gatewayAddress } });
    servers.push(again);
    gateway = again;
    expect(gateway.readyLine['revocations_synced']).toBe(false);
    expect(gateway.lines.some((l) => l.includes('"event":"revocation_rollback"'))).toBe(true);
    expect(await tryConnect('planner-1')).toBe('revocation_stale');
    expect(await tryConnect('worker-2')).not.toBe('ok');

    // 5. The fix: re-issue the lost revocation. The registry's version reaches 1 again; the gateway takes the list.
    const loaded = gateway.waitFor((l) => l['msg'] === 'revocation list loaded' && l['version'] === 1, 30_000);
    await cli(['agent', 'revoke', 'worker-2', '--reason', 'key-compromise', '-m', 're-issued after the restore']);
    await loaded;
    expect(await tryConnect('planner-1')).toBe('ok');
    expect(await tryConnect('worker-1')).toBe('ok');
    expect(await tryConnect('worker-2')).toBe('revoked');

    await stop(gateway);
    await stop(registry);
  }, 240_000);
});
