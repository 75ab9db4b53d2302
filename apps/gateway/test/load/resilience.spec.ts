// Faults with REAL PROCESSES on loopback (docs/PROTOCOL.md §10.7, §17): a
// registry process feeding `parley-gateway serve` processes, SDK agents in
// this test process.
//
// 1. The registry down for twice the gateway's revocation_max_age_ms, then
//    back: the gateway's copy goes stale (agents get go-away revocation_stale,
//    which says so, and keep reconnecting), its feed reconnects within its own
//    backoff bound once the registry is back, agents resume by themselves, and
//    every send issued during the outage completes after recovery — none lost.
// 2. (PostgreSQL) 200 agents × 100 messages in flight, the gateway SIGKILLed
//    and PostgreSQL restarted once mid-run: 0 lost, 0 seen twice by
//    applications, every received message audited.
// 3. (PostgreSQL) agents split across two gateway instances on one database,
//    one instance SIGKILLed mid-run: 0 lost, 0 seen twice, every message audited
//    on the chain of the instance that routed it.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeEntry, verifyChain } from '@parley/audit';
import { connect, isClientError, type Agent as SdkAgent, type ReceivedMessage } from '@parley/client';
import { createCrypto, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey, issueCertificate, type IssuerKey, type TrustBundle } from '@parley/identity';
import { MessageType } from '@parley/proto';
import type { LocalIdentity } from '@parley/session';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayReady, pinCombinedTrustBundle, rawConnect, startApp, startRegistry, tempDir, type RunningProcess, type TestRegistry } from '@parley/test-support';

const GATEWAY_ID = 'gw-resilience.test';
const DAY = 86_400_000;
const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const REQUIRE_POSTGRES = process.env['CI'] === 'true' || process.env['CI'] === '1';
const MAX_AGE_MS = 15_000;

type Gateway = RunningProcess;

let crypto: ParleyCrypto;
let issuer: IssuerKey;
let trustBundle: TrustBundle;
let registry: TestRegistry;
const dir = tempDir('resilience');
const schemas: string[] = [];
const sdks: SdkAgent[] = [];
const gateways: Gateway[] = [];

beforeAll(async () => {
  crypto = await createCrypto();
  registry = await startRegistry(['--heartbeat-ms', '500']);
  issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  trustBundle = pinCombinedTrustBundle(crypto, registry.trustBundleFile, [issuer], join(dir.path, 'bundle.json'));
  writeFileSync(join(dir.path, 'policy.json'), JSON.stringify({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }));
}, 120_000);

afterAll(async () => {
  for (const s of sdks) await s.close().catch(() => undefined);
  for (const g of gateways) if (g.process.exitCode === null && g.process.signalCode === null) g.process.kill('SIGKILL');
  await registry?.cleanup();
  if (DATABASE_URL !== undefined && schemas.length > 0) {
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    try {
      for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
    } finally {
      await client.end();
    }
  }
  dir.remove();
}, 60_000);

function schema(name: string): string {
  const s = `gw_res_${name}_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
  schemas.push(s);
  return s;
}

function gatewayEnv(name: string, database: Record<string, string>, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PARLEY_GATEWAY_ID: GATEWAY_ID,
    PARLEY_GATEWAY_LISTEN: '127.0.0.1:0',
    PARLEY_GATEWAY_METRICS_LISTEN: 'off',
    PARLEY_GATEWAY_AUDIT_KEY: join(dir.path, `${name}-audit-key.json`),
    PARLEY_GATEWAY_REGISTRY: registry.address,
    PARLEY_GATEWAY_TRUST_BUNDLE: join(dir.path, 'bundle.json'),
    // Certificates of a test issuer the registry does not know: the pinned bundle as is (§15.9 following off).
    PARLEY_GATEWAY_TRUST_BUNDLE_FOLLOW: 'false',
    PARLEY_GATEWAY_POLICY: join(dir.path, 'policy.json'),
    PARLEY_GATEWAY_RATE_PER_SECOND: '100000',
    PARLEY_GATEWAY_RATE_BURST: '100000',
    PARLEY_GATEWAY_LOG_LEVEL: 'info',
    ...database,
    ...extra,
  };
}

async function startGateway(env: Record<string, string>): Promise<Gateway> {
  const gw = await startApp('gateway', ['serve'], { env, ready: gatewayReady(), timeoutMs: 60_000 });
  gateways.push(gw);
  return gw;
}

function agent(agentId: string, agentType: 'planner' | 'worker'): LocalIdentity {
  const keyPair = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, issuer, { agentId, identityPublicKey: keyPair.publicKey, agentType, capabilities: [], validFromMs: now - DAY, validUntilMs: now + 30 * DAY });
  return { agentId, signingKey: keyPair.secretKey, certificate };
}

interface Running {
  readonly sdk: SdkAgent;
  readonly received: ReceivedMessage[];
  readonly events: { kind: string; code?: string; message?: string }[];
}

async function connectAgent(identity: LocalIdentity, address: string): Promise<Running> {
  const received: ReceivedMessage[] = [];
  const events: Running['events'] = [];
  const sdk = await connect({
    gateway: address,
    identity,
    trustBundle,
    expectedGatewayId: GATEWAY_ID,
    crypto,
    reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 },
    resendIntervalMs: 2_000,
    sendTimeoutMs: 120_000,
    handshakeTimeoutMs: 30_000,
    onEvent: (e) => events.push({ kind: e.kind, ...(e.kind === 'disconnected' ? { code: e.error.code, message: e.error.message } : {}) }),
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

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const seqOf = (m: ReceivedMessage): string => (m.content as { id: string }).id;

/** Counts per message id of what the applications received: lost and duplicated. */
function tally(expected: readonly string[], received: readonly ReceivedMessage[]): { lost: string[]; duplicated: string[] } {
  const counts = new Map<string, number>();
  for (const m of received) counts.set(seqOf(m), (counts.get(seqOf(m)) ?? 0) + 1);
  return { lost: expected.filter((id) => !counts.has(id)), duplicated: [...counts].filter(([, c]) => c > 1).map(([id]) => id) };
}

/** Every audit chain in a schema, verified; the message hashes of its delivered/queued entries. */
async function auditedHashes(schemaName: string, keys: Uint8Array[]): Promise<Map<string, number>> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  const hashes = new Map<string, number>();
  try {
    const chains = (await client.query<{ table_name: string }>(`SELECT table_name FROM ${schemaName}.gateway_audit_chains`)).rows;
    for (const { table_name } of chains) {
      const rows = (await client.query<{ entry: Buffer }>(`SELECT entry FROM ${schemaName}.${table_name} ORDER BY idx`)).rows;
      const entries = rows.map((r) => decodeEntry(new Uint8Array(r.entry)));
      expect(await verifyChain(crypto, entries, { keys })).toMatchObject({ ok: true });
      for (const e of entries) if (e.outcome === 'delivered' || e.outcome === 'queued') hashes.set(toHex(e.messageHash), (hashes.get(toHex(e.messageHash)) ?? 0) + 1);
    }
  } finally {
    await client.end();
  }
  return hashes;
}

function auditKey(name: string): Uint8Array {
  return Buffer.from((JSON.parse(readFileSync(join(dir.path, `${name}-audit-key.json`), 'utf8')) as { public_key: string }).public_key, 'hex');
}

describe('registry outage', () => {
  it('down for twice revocation_max_age_ms, then back: the feed reconnects within its bound, agents resume by themselves, no send lost', async () => {
    const gw = await startGateway(gatewayEnv('outage', { PARLEY_GATEWAY_DATA_DIR: join(dir.path, 'outage-pgdata') }, { PARLEY_GATEWAY_REVOCATION_MAX_AGE_MS: String(MAX_AGE_MS) }));
    const address = gw.readyLine['address'] as string;
    const planner = await connectAgent(agent('planner-o', 'planner'), address);
    const worker = await connectAgent(agent('worker-o', 'worker'), address);
    await planner.sdk.send('worker-o', MessageType.TASK_ASSIGNMENT, { id: 'before' });
    const watcherId = agent('worker-watch', 'worker');
    const raw = await rawConnect(crypto, address, GATEWAY_ID, { agentId: watcherId.agentId, certificate: watcherId.certificate, secretKey: watcherId.signingKey });

    await registry.stop();
    const stoppedAt = Date.now();
    // Sends issued during the outage (some before the copy goes stale, some after).
    const outcomes: Promise<string>[] = [];
    const ids: string[] = [];
    for (let i = 0; Date.now() - stoppedAt < 2 * MAX_AGE_MS; i++) {
      const id = `during-${i}`;
      ids.push(id);
      outcomes.push(planner.sdk.send('worker-o', MessageType.TASK_ASSIGNMENT, { id }, { timeoutMs: 120_000 }).then(() => 'delivered', (e: unknown) => (isClientError(e) ? e.code : String(e))));
      await new Promise((resolve) => setTimeout(resolve, 3_000));
    }
    // The copy went stale: the go-away said so, and that it is the GATEWAY's copy; the SDK took it as transient.
    const goAway = raw.responses.find((r) => r.kind.case === 'goAway');
    expect(goAway?.kind.case === 'goAway' && goAway.kind.value).toMatchObject({ code: 'revocation_stale', message: expect.stringMatching(/gateway's copy of the revocation list is stale/) });
    expect(planner.events.some((e) => e.kind === 'disconnected' && /revocation data is stale/.test(e.message ?? ''))).toBe(true);
    await registry.restart();
    const backAt = Date.now();
    // Agents resume by themselves and every send completes.
    const results = await Promise.all(outcomes);
    const resumedMs = Date.now() - backAt;
    const feedLines = gw.stderr.filter((l) => l.includes('revocation_feed_disconnected'));
    console.log(`[outage] registry down ${backAt - stoppedAt} ms (max age ${MAX_AGE_MS}); all ${results.length} sends settled ${resumedMs} ms after it returned; feed retries logged: ${feedLines.length}`);
    expect(results.every((r) => r === 'delivered')).toBe(true);
    const { lost, duplicated } = tally(['before', ...ids], worker.received);
    expect(lost).toEqual([]);
    expect(duplicated).toEqual([]);
    // Within the feed's own bound (5 s) plus the channel's (2 s) and a resend interval, not the 43 s seen before.
    expect(resumedMs).toBeLessThan(15_000);
    await planner.sdk.close();
    await worker.sdk.close();
    expect(await gw.stop()).toBe(0);
  }, 180_000);
});

describe('gateway SIGKILL and PostgreSQL restart mid-run', () => {
  it.runIf(DATABASE_URL === undefined && REQUIRE_POSTGRES)('needs DATABASE_URL under CI', () => {
    throw new Error('CI=true but DATABASE_URL is not set');
  });
  if (DATABASE_URL === undefined) return;

  it('200 agents × 100 messages: 0 lost, 0 seen twice by applications, every message audited', async () => {
    const AGENTS = Number(process.env['RESILIENCE_AGENTS'] ?? 200);
    const MESSAGES = Number(process.env['RESILIENCE_MESSAGES'] ?? 100);
    const db = { DATABASE_URL: DATABASE_URL!, PARLEY_GATEWAY_DB_SCHEMA: schema('kill') };
    const env = gatewayEnv('kill', db);
    let gw = await startGatewayWithRetry(env);
    const address = gw.readyLine['address'] as string;
    const identities = Array.from({ length: AGENTS }, (_, i) => agent(`${i % 2 === 0 ? 'planner' : 'worker'}-k${i >> 1}`, i % 2 === 0 ? 'planner' : 'worker'));
    const agents: Running[] = [];
    for (let i = 0; i < AGENTS; i += 25) agents.push(...(await Promise.all(identities.slice(i, i + 25).map((id) => connectAgent(id, address)))));
    const failures: string[] = [];
    let sent = 0;
    const sending = Promise.all(
      agents.map(async (a, i) => {
        const to = identities[i ^ 1]!.agentId;
        let n = 0;
        await Promise.all(
          Array.from({ length: 4 }, async () => {
            while (n < MESSAGES) {
              const id = `${i}:${n++}`;
              try {
                await a.sdk.send(to, MessageType.TASK_ASSIGNMENT, { id }, { timeoutMs: 240_000 });
                sent++;
              } catch (error) {
                failures.push(`${id}: ${isClientError(error) ? error.code : String(error)}`);
              }
            }
          }),
        );
      }),
    );
    const total = AGENTS * MESSAGES;
    await waitFor(() => sent >= total / 4, 120_000, 'a quarter sent');
    gw.process.kill('SIGKILL');
    await gw.exited;
    const killedAt = sent;
    gw = await startGatewayWithRetry({ ...env, PARLEY_GATEWAY_LISTEN: address });
    await waitFor(() => sent >= total / 2, 120_000, 'half sent');
    // PostgreSQL restarted once (shared with other engineers' tests: kept short).
    const restartedAt = sent;
    execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', readdirSync('/etc/postgresql')[0]!, 'main', 'restart'], { stdio: 'ignore' });
    await sending;
    await waitFor(() => agents.every((a) => a.received.length >= MESSAGES), 60_000, 'every message received');
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    let lost = 0;
    let duplicated = 0;
    for (const [i, a] of agents.entries()) {
      const t = tally(Array.from({ length: MESSAGES }, (_, n) => `${i ^ 1}:${n}`), a.received);
      lost += t.lost.length;
      duplicated += t.duplicated.length;
    }
    const audited = await auditedHashes(db.PARLEY_GATEWAY_DB_SCHEMA, [auditKey('kill')]);
    const unaudited = agents.flatMap((a) => a.received).filter((m) => !audited.has(toHex(m.messageHash))).length;
    const twice = [...audited.values()].filter((c) => c > 1).length;
    console.log(
      `[kill] ${total} messages: gateway SIGKILLed after ${killedAt} receipts, PostgreSQL restarted after ${restartedAt}; lost ${lost}, duplicated ${duplicated}, ` +
        `failed sends ${failures.length}, unaudited ${unaudited}, audited more than once (relayed again after the crash) ${twice}`,
    );
    expect(failures).toEqual([]);
    expect(lost).toBe(0);
    expect(duplicated).toBe(0);
    expect(unaudited).toBe(0);
    for (const a of agents) await a.sdk.close();
    expect(await gw.stop()).toBe(0);
  }, 600_000);

  it('agents split across two instances, one SIGKILLed mid-run: 0 lost, 0 seen twice, every message audited', async () => {
    const PAIRS = 20;
    const MESSAGES = 50;
    const db = { DATABASE_URL: DATABASE_URL!, PARLEY_GATEWAY_DB_SCHEMA: schema('split') };
    const envA = gatewayEnv('split-a', db);
    const envB = gatewayEnv('split-b', db);
    const a = await startGatewayWithRetry(envA);
    let b = await startGatewayWithRetry(envB);
    const addressB = b.readyLine['address'] as string;
    const identities = Array.from({ length: PAIRS * 2 }, (_, i) => agent(`${i % 2 === 0 ? 'planner' : 'worker'}-s${i >> 1}`, i % 2 === 0 ? 'planner' : 'worker'));
    // Planners on A, workers on B: every message crosses instances.
    const agents = await Promise.all(identities.map((id, i) => connectAgent(id, i % 2 === 0 ? (a.readyLine['address'] as string) : addressB)));
    let sent = 0;
    const failures: string[] = [];
    const sending = Promise.all(
      agents.map(async (x, i) => {
        for (let n = 0; n < MESSAGES; n++) {
          try {
            await x.sdk.send(identities[i ^ 1]!.agentId, MessageType.TASK_ASSIGNMENT, { id: `${i}:${n}` }, { timeoutMs: 120_000 });
            sent++;
          } catch (error) {
            failures.push(`${i}:${n}: ${isClientError(error) ? error.code : String(error)}`);
          }
        }
      }),
    );
    await waitFor(() => sent >= PAIRS * MESSAGES, 120_000, 'half sent');
    b.process.kill('SIGKILL');
    await b.exited;
    b = await startGatewayWithRetry({ ...envB, PARLEY_GATEWAY_LISTEN: addressB });
    await sending;
    await waitFor(() => agents.every((x) => x.received.length >= MESSAGES), 60_000, 'every message received');
    let lost = 0;
    let duplicated = 0;
    for (const [i, x] of agents.entries()) {
      const t = tally(Array.from({ length: MESSAGES }, (_, n) => `${i ^ 1}:${n}`), x.received);
      lost += t.lost.length;
      duplicated += t.duplicated.length;
    }
    const audited = await auditedHashes(db.PARLEY_GATEWAY_DB_SCHEMA, [auditKey('split-a'), auditKey('split-b')]);
    const unaudited = agents.flatMap((x) => x.received).filter((m) => !audited.has(toHex(m.messageHash))).length;
    console.log(`[split] ${PAIRS * 2 * MESSAGES} messages across two instances, B SIGKILLed after ${PAIRS * MESSAGES}: lost ${lost}, duplicated ${duplicated}, failed ${failures.length}, unaudited ${unaudited}`);
    expect(failures).toEqual([]);
    expect(lost).toBe(0);
    expect(duplicated).toBe(0);
    expect(unaudited).toBe(0);
    for (const x of agents) await x.sdk.close();
    expect(await a.stop()).toBe(0);
    expect(await b.stop()).toBe(0);
  }, 300_000);
});

/** Starts a gateway; retried while PostgreSQL is still coming back. */
async function startGatewayWithRetry(env: Record<string, string>): Promise<Gateway> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await startGateway(env);
    } catch (error) {
      if (attempt >= 5) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  }
}
