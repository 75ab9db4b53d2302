// An agent stopped for good by its gateway (a go-away `revoked`, as after `parley-registry agent rotate`) lets go
// of everything, as close() would, against REAL registry and gateway processes. Operator walkthrough finding: the
// stopped agent never exited and kept its state file's lock (refreshing it), so the documented restart under the
// rotated key failed `failed_precondition … is in use by process …` until the old process was killed by hand.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SecretKey, fromBase64Url, toBase64Url } from '@parley/crypto-core';
import { TrustBundle, decodeCertificate } from '@parley/identity';
import { MessageType } from '@parley/proto';
import type { LocalIdentity } from '@parley/session';
import { onLines, spawnNode, tsxArgv, waitFor, type RunningGatewayProcess } from '@parley/test-support';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect, fileStateStore, isClientError, type Agent, type AgentEvent } from '../../src/index.js';
import { GATEWAY_ID, createWorld, type World } from './world.js';

const HERE = import.meta.dirname;

let world: World;
let gw: RunningGatewayProcess;
let registryBundle: TrustBundle;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  world = await createWorld();
  gw = await world.startGateway();
  registryBundle = TrustBundle.fromJSON(world.crypto, readFileSync(world.registry.trustBundleFile, 'utf8'));
}, 180_000);

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await world?.close();
}, 60_000);

/** `parley-registry agent rotate <id> --json`: the new identity (the old certificate is revoked, superseded). */
async function rotate(agentId: string): Promise<LocalIdentity & { seed: string }> {
  const rotated = await world.registry.cli(['agent', 'rotate', agentId, '--json']);
  expect(rotated.code, rotated.stderr).toBe(0);
  const out = JSON.parse(rotated.stdout) as { certificate: { encoded: string }; key_file: string };
  const seed = (JSON.parse(readFileSync(out.key_file, 'utf8')) as { seed: string }).seed;
  return { agentId, seed, signingKey: world.crypto.ed25519.keyPairFromSeed(fromBase64Url(seed)).secretKey, certificate: decodeCertificate(fromBase64Url(out.certificate.encoded)) };
}

async function online(identity: LocalIdentity, stateFile: string, stateKey: SecretKey): Promise<{ agent: Agent; events: AgentEvent[] }> {
  const events: AgentEvent[] = [];
  const agent = await connect({
    gateway: gw.address,
    expectedGatewayId: GATEWAY_ID,
    identity,
    trustBundle: registryBundle,
    registry: { address: world.registry.address },
    stateStore: fileStateStore(stateFile),
    stateKey,
    crypto: world.crypto,
    onEvent: (e) => events.push(e),
  });
  cleanup.push(() => agent.close());
  return { agent, events };
}

it('a program like the README\'s ends by itself once its agent is revoked, and the restart under the rotated key opens the same state file at once', async () => {
  const agentId = 'worker-stop-1';
  const registered = await world.registry.cli(['agent', 'register', agentId, '--type', 'worker', '--json']);
  expect(registered.code, registered.stderr).toBe(0);
  const reg = JSON.parse(registered.stdout) as { certificate: { encoded: string }; key_file: string };
  const seed = (JSON.parse(readFileSync(reg.key_file, 'utf8')) as { seed: string }).seed;
  const stateFile = join(world.dir, `${agentId}.state`);
  const stateKeyBytes = world.crypto.randomBytes(32);
  const configPath = join(world.dir, `${agentId}.json`);
  writeFileSync(
    configPath,
    JSON.stringify({
      gateway: gw.address,
      gatewayId: GATEWAY_ID,
      registry: world.registry.address,
      trustBundleFile: world.registry.trustBundleFile,
      agentId,
      seed,
      certificate: reg.certificate.encoded,
      stateFile,
      stateKey: toBase64Url(stateKeyBytes),
    }),
  );
  const child = spawnNode(tsxArgv(join(HERE, 'stop-child.ts'), [configPath]), { cwd: HERE });
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  onLines(child.stdout!, (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let exitedAt: number | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      exitedAt = Date.now();
      resolve(code);
    }),
  );
  cleanup.push(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  await waitFor(() => lines.some((l) => l['ev'] === 'ready') || child.exitCode !== null, 60_000, 'the agent program ready').catch((error: unknown) => {
    throw new Error(`${String(error)}\n${stderr}`);
  });
  expect(child.exitCode, stderr).toBeNull();

  // The rotation revokes the old certificate: the gateway sends the agent away (`revoked`) and it stops for good.
  const identity = await rotate(agentId);
  await waitFor(() => lines.some((l) => l['ev'] === 'event' && l['kind'] === 'disconnected'), 20_000, 'the go-away revoked');
  const stoppedAt = Date.now();
  expect(lines.find((l) => l['ev'] === 'event' && l['kind'] === 'disconnected')).toMatchObject({ code: 'revoked' });

  // Nothing of the agent keeps the process alive: it ends by itself within seconds, messages() having thrown.
  await waitFor(() => exitedAt !== undefined, 5_000, 'the agent program exiting by itself').catch((error: unknown) => {
    throw new Error(`${String(error)}\n${JSON.stringify(lines)}\n${stderr}`);
  });
  expect(await exited, stderr).toBe(0);
  expect(exitedAt! - stoppedAt).toBeLessThan(5_000);
  expect(lines.filter((l) => l['ev'] === 'messages_threw')).toEqual([{ ev: 'messages_threw', code: 'revoked' }]);

  // The documented restart, under the rotated key, from the same state file.
  const restarted = await online(identity, stateFile, SecretKey.from(stateKeyBytes, 'aead'));
  expect(restarted.agent.connected).toBe(true);
  await restarted.agent.close();
}, 120_000);

it('in one process: once messages() throws `revoked`, the state file lock and every timer and stream are released — the restart needs no close() first', async () => {
  const agentId = 'worker-stop-2';
  const reg = await world.registry.register(world.crypto, agentId, 'worker');
  const stateFile = join(world.dir, `${agentId}.state`);
  const stateKey = SecretKey.from(world.crypto.randomBytes(32), 'aead');
  const first = await online({ agentId, signingKey: reg.secretKey, certificate: reg.certificate }, stateFile, stateKey);
  const ended = (async () => {
    try {
      for await (const m of first.agent.messages()) await m.ack();
      return 'ended';
    } catch (error) {
      return isClientError(error) ? error.code : String(error);
    }
  })();
  const identity = await rotate(agentId);
  expect(await Promise.race([ended, new Promise((resolve) => setTimeout(() => resolve('still running'), 20_000))])).toBe('revoked');
  expect(first.events.some((e) => e.kind === 'disconnected' && e.error.code === 'revoked')).toBe(true);
  await expect(first.agent.send('planner-x', MessageType.STATUS_UPDATE, {})).rejects.toMatchObject({ code: 'revoked' });

  // No close() of the first agent: the restart opens the same state file in this very process.
  const second = await online(identity, stateFile, stateKey);
  expect(second.agent.connected).toBe(true);
  await second.agent.close();
  await first.agent.close(); // still allowed, and a no-op now
}, 120_000);
