// Trust lifecycle with REAL PROCESSES on loopback (docs/PROTOCOL.md §15.9,
// §15.11): a `parley-registry serve` process, a `parley-gateway serve`
// process that pins the registry's first trust bundle, SDK agents that follow
// the registry's bundle with file state stores.
//
// 1. Online `issuer rotate` while two agents exchange messages through the
//    gateway: the new key reaches the gateway and the agents before it signs
//    anything, 0 refusals; certificates of the old and of the new issuer both
//    verify; after the (short) grace period the retired key drops out and its
//    certificates are refused.
// 2. Join tokens: an agent enrols with its own key (CLI on "its machine", and
//    the SDK's enroll()), a token works once, expires, and is refused when
//    reused, each with its code.
// 3. The registry restored from a backup taken before the rotation: the
//    gateway and the agent refuse the rollback, and after a restart both
//    continue from the newest version they had verified (saved beside the
//    pinned file / in the agent's state store), not from the pinned file.
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, enroll, fileStateStore, type Agent as SdkAgent, type AgentEvent, type ReceivedMessage } from '@parley/client';
import { SecretKey, createCrypto, fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, verifyCertificate } from '@parley/identity';
import { MessageType, RegistryService } from '@parley/proto';
import { createClient } from '@parley/rpc';
import { credentials } from '@grpc/grpc-js';
import type { LocalIdentity } from '@parley/session';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawConnect, runRegistryCli, startApp, startRegistry, tempDir, type RunningProcess, type TestRegistry } from '@parley/test-support';

const GATEWAY_ID = 'gw-trust.test';

type Gateway = RunningProcess;

let crypto: ParleyCrypto;
let registry: TestRegistry;
let registryId: string;
let pinned: TrustBundle;
const dir = tempDir('trust');
const sdks: SdkAgent[] = [];
let gateway: Gateway;
const backup = join(dir.path, 'registry-backup');

beforeAll(async () => {
  crypto = await createCrypto();
  registry = await startRegistry(['--heartbeat-ms', '500']);
  pinned = TrustBundle.fromJSON(crypto, readFileSync(registry.trustBundleFile, 'utf8'));
  registryId = await registryIdOf();
  // A backup of the registry (data directory with its database) before anything else happens, for part 3.
  await registry.stop();
  cpSync(registry.dataDir, backup, { recursive: true });
  await registry.restart();
  writeFileSync(join(dir.path, 'policy.json'), JSON.stringify({ version: 1, rules: [{ from: { agentType: 'planner' }, to: { agentType: 'worker' }, bidirectional: true }] }));
  gateway = await startGateway();
}, 120_000);

afterAll(async () => {
  for (const s of sdks) await s.close().catch(() => undefined);
  if (gateway !== undefined && gateway.process.exitCode === null && gateway.process.signalCode === null) gateway.process.kill('SIGKILL');
  await registry?.cleanup();
  dir.remove();
}, 60_000);

async function registryIdOf(): Promise<string> {
  const client = createClient(RegistryService, registry.address, credentials.createInsecure());
  try {
    return toHex((await client.getTrustBundle({})).registryId);
  } finally {
    client.close();
  }
}

function gatewayEnv(): Record<string, string> {
  return {
    PARLEY_GATEWAY_ID: GATEWAY_ID,
    PARLEY_GATEWAY_LISTEN: '127.0.0.1:0',
    PARLEY_GATEWAY_METRICS_LISTEN: 'off',
    PARLEY_GATEWAY_AUDIT_KEY: join(dir.path, 'audit-key.json'),
    PARLEY_GATEWAY_DATA_DIR: join(dir.path, 'gateway-pgdata'),
    PARLEY_GATEWAY_REGISTRY: registry.address,
    PARLEY_GATEWAY_REGISTRY_ID: registryId,
    PARLEY_GATEWAY_TRUST_BUNDLE: registry.trustBundleFile,
    PARLEY_GATEWAY_POLICY: join(dir.path, 'policy.json'),
    PARLEY_GATEWAY_REVOCATION_MAX_AGE_MS: '20000',
    PARLEY_GATEWAY_LOG_LEVEL: 'info',
  };
}

async function startGateway(ready: (line: Record<string, unknown>) => boolean = (l) => l['revocations_synced'] === true): Promise<Gateway> {
  return startApp('gateway', ['serve'], { env: gatewayEnv(), ready: (line, stream) => stream === 'stdout' && line['ready'] === true && ready(line), timeoutMs: 60_000 });
}

/** Gateway log lines (stderr JSON) that match. */
function gatewayLogs(match: (l: Record<string, unknown>) => boolean, from = 0): Record<string, unknown>[] {
  return gateway.stderr.slice(from).flatMap((line) => {
    try {
      const l = JSON.parse(line) as Record<string, unknown>;
      return match(l) ? [l] : [];
    } catch {
      return [];
    }
  });
}

interface Running {
  readonly sdk: SdkAgent;
  readonly received: ReceivedMessage[];
  readonly events: AgentEvent[];
}

async function connectAgent(identity: LocalIdentity, stateFile: string, stateKey: SecretKey): Promise<Running> {
  const received: ReceivedMessage[] = [];
  const events: AgentEvent[] = [];
  const sdk = await connect({
    gateway: gateway.readyLine['address'] as string,
    expectedGatewayId: GATEWAY_ID,
    identity,
    trustBundle: pinned,
    registry: { address: registry.address, pollIntervalMs: 500 },
    stateStore: fileStateStore(stateFile),
    stateKey,
    crypto,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    resendIntervalMs: 1_000,
    sendTimeoutMs: 30_000,
    onEvent: (e) => events.push(e),
  });
  sdks.push(sdk);
  void (async () => {
    try {
      for await (const m of sdk.messages()) {
        received.push(m);
        await m.ack();
      }
    } catch {
      // stopped
    }
  })();
  return { sdk, received, events };
}

async function registered(agentId: string, agentType: string): Promise<LocalIdentity> {
  const a = await registry.register(crypto, agentId, agentType);
  return { agentId, signingKey: a.secretKey, certificate: a.certificate };
}

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

interface IssuerList {
  readonly trust_bundle_version: number;
  readonly issuers: { key_id: string; state: string; not_after_ms: number | null }[];
}

async function issuers(): Promise<IssuerList> {
  const r = await registry.cli(['issuer', 'list', '--json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as IssuerList;
}

/** A refusal as an agent sees it: a security event, a refused trust bundle, a lost stream, a failed send. */
function refusals(r: Running): AgentEvent[] {
  return r.events.filter((e) => e.kind === 'security' || e.kind === 'disconnected' || e.kind === 'state_error' || (e.kind === 'trust_bundle' && e.event.kind === 'refused'));
}

const stateKey = (): SecretKey => SecretKey.from(crypto.randomBytes(32), 'aead');

let planner: Running;
let worker: Running;
let newWorker: Running;
let oldKeyId: Uint8Array;
let newKeyId: Uint8Array;
let workerIdentity: LocalIdentity;
const plannerState = { file: join(dir.path, 'planner.state'), key: undefined as SecretKey | undefined };
const newWorkerState = { file: join(dir.path, 'worker-2.state'), key: undefined as SecretKey | undefined };
let newWorkerKey: SecretKey | undefined;
let newWorkerCert: LocalIdentity['certificate'] | undefined;

describe('online issuer rotation', () => {
  it('with a gateway and two agents exchanging messages: 0 refusals; old and new certificates verify; the retired key drops out after its grace', async () => {
    plannerState.key = stateKey();
    planner = await connectAgent(await registered('planner-1', 'planner'), plannerState.file, plannerState.key);
    workerIdentity = await registered('worker-1', 'worker');
    worker = await connectAgent(workerIdentity, join(dir.path, 'worker.state'), stateKey());
    oldKeyId = workerIdentity.certificate.issuerKeyId;
    const gatewayLogStart = gateway.stderr.length;

    // Messages both ways, back to back, for the whole rotation.
    let stop = false;
    let sent = 0;
    const failures: unknown[] = [];
    const traffic = (async () => {
      // Stops at the first failure too (a failed test must not leave a loop spinning on a closed agent).
      while (!stop && failures.length === 0) {
        const n = sent++;
        const [from, to] = n % 2 === 0 ? [planner, 'worker-1'] : [worker, 'planner-1'];
        await from.sdk.send(to, MessageType.STATUS_UPDATE, { n }).catch((e: unknown) => failures.push(e));
      }
    })();
    let fresh: LocalIdentity | undefined;
    try {
      const rotate = await registry.cli(['issuer', 'rotate', '--activate-after', '2s', '--grace', '25s', '--json']);
      expect(rotate.code, rotate.stderr).toBe(0);
      const rotation = JSON.parse(rotate.stdout) as { prepared_key_id: string; trust_bundle_version: number; certificates_outliving_grace: number };
      newKeyId = fromHex(rotation.prepared_key_id);
      expect(rotation.certificates_outliving_grace).toBeGreaterThanOrEqual(2); // planner-1 and worker-1
      // Published before it signs anything: the gateway and both agents hold the prepared version.
      await waitFor(() => gatewayLogs((l) => l['event'] === 'trust_bundle_updated' && (l['to'] as number) >= rotation.trust_bundle_version, gatewayLogStart).length > 0, 10_000, 'the gateway to follow');
      await waitFor(() => [planner, worker].every((a) => (a.sdk.trustBundleStatus()?.version ?? 0) >= rotation.trust_bundle_version), 10_000, 'the agents to follow');
      await waitFor(async () => (await issuers()).issuers.find((i) => i.key_id === rotation.prepared_key_id)?.state === 'active', 20_000, 'the activation');
      // A certificate of the new issuer: an agent registered now.
      fresh = await registered('worker-2', 'worker');
      expect(toHex(fresh.certificate.issuerKeyId)).toBe(rotation.prepared_key_id);
      newWorkerState.key = stateKey();
      newWorkerKey = fresh.signingKey;
      newWorkerCert = fresh.certificate;
      newWorker = await connectAgent(fresh, newWorkerState.file, newWorkerState.key);
      // Old certificate → new, new → old, through the gateway, while the traffic goes on.
      await planner.sdk.send('worker-2', MessageType.TASK_ASSIGNMENT, { to: 'new' });
      await newWorker.sdk.send('planner-1', MessageType.STATUS_UPDATE, { from: 'new' });
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      stop = true;
      await traffic;
    }

    const numbered = (r: Running): number => r.received.filter((m) => typeof (m.content as { n?: unknown }).n === 'number').length;
    console.log(
      `[rotation] ${sent} messages exchanged during an online issuer rotation (prepare → active), ${failures.length} failed; agent refusals ${[planner, worker, newWorker].reduce((n, a) => n + refusals(a).length, 0)}; gateway security events ${gatewayLogs((l) => l['event'] === 'security', gatewayLogStart).length}`,
    );
    expect(failures).toEqual([]);
    expect(sent).toBeGreaterThan(10);
    expect(numbered(planner) + numbered(worker)).toBe(sent);
    expect(newWorker.received.map((m) => m.content)).toEqual([{ to: 'new' }]);
    expect(planner.received.some((m) => (m.content as { from?: string }).from === 'new')).toBe(true);
    for (const a of [planner, worker, newWorker]) expect(refusals(a)).toEqual([]);
    expect(gatewayLogs((l) => l['event'] === 'security', gatewayLogStart)).toEqual([]);
    // The revocation feed verified heads signed by the new key without a reload.
    expect(gatewayLogs((l) => l['event'] === 'revocation_feed_rejected', gatewayLogStart)).toEqual([]);
    // Both certificates verify under what the agents follow now; the old one until its issuer's not_after_ms.
    const now = Date.now();
    for (const a of [planner, newWorker]) {
      expect(verifyCertificate(crypto, workerIdentity.certificate, { trustBundle: a.sdk.trustBundle, nowMs: now }).agentId).toBe('worker-1');
      expect(verifyCertificate(crypto, fresh!.certificate, { trustBundle: a.sdk.trustBundle, nowMs: now }).agentId).toBe('worker-2');
    }
    expect(planner.sdk.trustBundle.get(oldKeyId)!.notAfterMs).toBeGreaterThan(now);

    // After the grace, the retired key leaves the bundle: its certificates are refused from then on.
    await waitFor(async () => (await issuers()).issuers.every((i) => i.key_id !== toHex(oldKeyId)), 60_000, 'the retired key to drop out');
    await waitFor(() => newWorker.sdk.trustBundle.get(oldKeyId) === undefined, 10_000, 'the agents to drop it');
    expect(() => verifyCertificate(crypto, workerIdentity.certificate, { trustBundle: newWorker.sdk.trustBundle, nowMs: Date.now() })).toThrow(/unknown_issuer/);
    expect(verifyCertificate(crypto, fresh!.certificate, { trustBundle: newWorker.sdk.trustBundle, nowMs: Date.now() }).agentId).toBe('worker-2');
    // The gateway closed the old-issuer streams at the end of the grace, and refuses them now.
    await waitFor(() => gatewayLogs((l) => l['event'] === 'security' && l['stage'] === 'revocation' && l['agent'] === 'worker-1').length > 0, 10_000, 'the gateway to close worker-1');
    const again = await rawConnect(crypto, gateway.readyLine['address'] as string, GATEWAY_ID, { agentId: 'worker-1', certificate: workerIdentity.certificate, secretKey: workerIdentity.signingKey }).then(
      (s) => (s.close(), 'accepted'),
      (e: Error) => e.message,
    );
    expect(again).toMatch(/unknown_issuer/);
  }, 120_000);
});

describe('enrolment with join tokens', () => {
  it('an agent enrols with its own key: a token works once, expires, and is refused when reused, with stable codes', async () => {
    const agentMachine = join(dir.path, 'agent-machine'); // no operator key here
    const enrolCli = (args: string[]) => runRegistryCli([...args, '--data-dir', agentMachine, '--server', registry.address]);
    const create = async (name: string, ttl: string, type = 'worker'): Promise<string> => {
      const r = await registry.cli(['join-token', 'create', '--name', name, '--type', type, '--ttl', ttl, '--json']);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { token: string }).token;
    };
    // The CLI on the agent's machine.
    const token = await create('worker-3', '10m');
    const tokenFile = join(dir.path, 'token');
    writeFileSync(tokenFile, token, { mode: 0o600 });
    const first = await enrolCli(['agent', 'enroll', 'worker-3', '--token-file', tokenFile, '--json']);
    expect(first.code, first.stderr).toBe(0);
    const enrolled = JSON.parse(first.stdout) as { key_file: string; certificate: { issuer_key_id: string } };
    expect(existsSync(enrolled.key_file)).toBe(true);
    const reused = await enrolCli(['agent', 'enroll', 'worker-3', '--token-file', tokenFile, '--key-file', join(agentMachine, 'other.json')]);
    expect(reused.code).toBe(5);
    expect(reused.stderr).toMatch(/^parley-registry: error: join token already used/);
    // The SDK: enroll(), then talk through the gateway with the new identity (its key never left this process).
    const sdkToken = await create('planner-2', '10m', 'planner');
    const result = await enroll({ registry: registry.address, token: sdkToken, agentId: 'planner-2', trustBundle: newWorker.sdk.trustBundle, crypto });
    expect(toHex(result.certificate.issuerKeyId)).toBe(toHex(newKeyId));
    const planner2 = await connectAgent(result.identity, join(dir.path, 'planner-2.state'), stateKey());
    const receipt = await planner2.sdk.send('worker-2', MessageType.TASK_ASSIGNMENT, { hello: 'enrolled' });
    expect(receipt.recipientId).toBe('worker-2');
    await expect(enroll({ registry: registry.address, token: sdkToken, agentId: 'planner-2', crypto })).rejects.toMatchObject({ code: 'join_token_used' });
    // Expiry.
    const short = await create('worker-5', '1s');
    await new Promise((r) => setTimeout(r, 1_500));
    await expect(enroll({ registry: registry.address, token: short, agentId: 'worker-5', crypto })).rejects.toMatchObject({ code: 'join_token_expired' });
    await expect(enroll({ registry: registry.address, token: short.slice(0, -2) + (short.endsWith('AA') ? 'AB' : 'AA'), agentId: 'worker-5', crypto })).rejects.toMatchObject({ code: 'join_token_invalid' });
    await expect(enroll({ registry: registry.address, token: 'pjt1.nope', agentId: 'worker-5', crypto })).rejects.toMatchObject({ code: 'malformed' });
  }, 60_000);
});

describe('rollback', () => {
  it('a registry restored from an older backup: the gateway and the agent refuse its older bundle, and after a restart continue from the newest they verified', async () => {
    const held = newWorker.sdk.trustBundleStatus()!.version;
    expect(held).toBeGreaterThanOrEqual(4);
    await registry.stop();
    // An agent restarted while the registry is down continues from its saved version (not the pinned bundle).
    await newWorker.sdk.close();
    const identity = { agentId: 'worker-2', signingKey: newWorkerKey!, certificate: newWorkerCert! };
    newWorker = await connectAgent(identity, newWorkerState.file, newWorkerState.key!);
    expect(newWorker.sdk.trustBundleStatus()).toMatchObject({ version: held, state: 'unreachable' });
    expect(newWorker.events.some((e) => e.kind === 'trust_bundle' && e.event.kind === 'restored' && e.event.version === held)).toBe(true);

    // The registry comes back from the backup taken before the rotation: trust bundle version 1, the old key.
    rmSync(join(registry.dataDir, 'pgdata'), { recursive: true, force: true });
    cpSync(join(backup, 'pgdata'), join(registry.dataDir, 'pgdata'), { recursive: true });
    cpSync(join(backup, 'issuer-key.json'), join(registry.dataDir, 'issuer-key.json'));
    for (const f of readdirSync(registry.dataDir)) if (f.startsWith('issuer-key.json.next')) rmSync(join(registry.dataDir, f), { force: true }); // prepared keys
    const gatewayLogStart = gateway.stderr.length;
    await registry.restart();
    expect((await issuers()).trust_bundle_version).toBe(1);
    // Refused, reported as a security event, and the newest verified version kept.
    await waitFor(() => newWorker.events.some((e) => e.kind === 'trust_bundle' && e.event.kind === 'refused' && e.event.code === 'rollback'), 20_000, 'the agent to refuse the rollback');
    await expect(newWorker.sdk.refreshTrustBundle()).rejects.toMatchObject({ code: 'rollback' });
    expect(newWorker.sdk.trustBundleStatus()).toMatchObject({ version: held, state: 'refusing' });
    await waitFor(() => gatewayLogs((l) => l['event'] === 'security' && l['stage'] === 'trust_bundle' && l['code'] === 'rollback', gatewayLogStart).length > 0, 20_000, 'the gateway to refuse the rollback');

    // A gateway restart continues from the version saved beside the pinned file, and refuses the rollback again.
    await gateway.stop();
    const followed = JSON.parse(readFileSync(`${registry.trustBundleFile}.followed.json`, 'utf8')) as { bundle_version: number };
    expect(followed.bundle_version).toBe(held);
    gateway = await startGateway(() => true);
    expect(gateway.readyLine['trust_bundle_version']).toBe(held);
    expect(gatewayLogs((l) => l['event'] === 'trust_bundle_restored' && l['trust_bundle_version'] === held)).toHaveLength(1);
    expect(gatewayLogs((l) => l['event'] === 'security' && l['stage'] === 'trust_bundle' && l['code'] === 'rollback').length).toBeGreaterThan(0);
  }, 90_000);
});
