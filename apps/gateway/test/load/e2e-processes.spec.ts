// End to end with REAL PROCESSES on loopback: `parley-gateway serve` spawned as
// a process (next to a real registry process for its revocation feed), agents
// in this test process through @parley/client.
//
// - The gateway SIGKILLed in the middle of a 200-message stream and restarted
//   on the same port and database: every send that resolved with a verified
//   receipt reached the application exactly once, nothing twice, and sends in
//   flight during the crash either completed after reconnection or failed
//   with a stable code (both counted).
// - 200 agents × 100 messages (E2E_AGENTS × E2E_MESSAGES) through one gateway
//   process, in planner/worker pairs, each agent sending to its peer: 0 lost,
//   0 duplicated at the application. The wall time is printed. A soak run, off
//   in CI (PARLEY_SOAK=1 runs it): resilience.spec.ts drives the same 200 × 100
//   with a gateway SIGKILL and a PostgreSQL restart on top, which proves more
//   in the same minutes.
//
// The agents' certificates come from a test issuer that is pinned next to the
// registry's keys in the gateway's trust bundle file (registering 200 agents
// through the registry CLI would take minutes); the registry process still
// feeds the gateway's revocation list.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, isClientError, type Agent as SdkAgent, type ReceivedMessage } from '@parley/client';
import { deliveryReceiptLayout } from '@parley/protocol';
import { createCrypto, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey, issueCertificate, type IssuerKey, type TrustBundle } from '@parley/identity';
import type { LocalIdentity } from '@parley/session';
import { MessageType, type DeliveryReceipt } from '@parley/proto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayReady, pinCombinedTrustBundle, startApp, startRegistry, tempDir, type RunningProcess, type TestRegistry } from '@parley/test-support';

const GATEWAY_ID = 'gw-e2e.test';
const DAY = 86_400_000;
const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const AGENTS = Number(process.env['E2E_AGENTS'] ?? 200);
const MESSAGES = Number(process.env['E2E_MESSAGES'] ?? 100);

type Gateway = RunningProcess;

interface TestAgent {
  readonly identity: LocalIdentity;
  readonly publicKey: Uint8Array;
}

interface Running {
  readonly sdk: SdkAgent;
  readonly received: ReceivedMessage[];
  readonly events: string[];
}

let crypto: ParleyCrypto;
let issuer: IssuerKey;
let trustBundle: TrustBundle;
let registry: TestRegistry;
const dir = tempDir('e2e');
const schemas: string[] = [];
const running: SdkAgent[] = [];

beforeAll(async () => {
  crypto = await createCrypto();
  registry = await startRegistry(['--heartbeat-ms', '1000']);
  issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  // The registry's pinned keys (revocation heads, its own agents) plus the test issuer.
  trustBundle = pinCombinedTrustBundle(crypto, registry.trustBundleFile, [issuer], join(dir.path, 'bundle.json'));
  writeFileSync(join(dir.path, 'policy.json'), JSON.stringify({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }));
}, 120_000);

afterAll(async () => {
  for (const a of running) await a.close();
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

/** Database settings for one gateway: a fresh PostgreSQL schema with DATABASE_URL, else a PGlite directory. */
function database(name: string): Record<string, string> {
  if (DATABASE_URL === undefined) return { PARLEY_GATEWAY_DATA_DIR: join(dir.path, `${name}-pgdata`) };
  const schema = `gw_e2e_${name}_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
  schemas.push(schema);
  return { DATABASE_URL, PARLEY_GATEWAY_DB_SCHEMA: schema };
}

function gatewayEnv(name: string, listen: string): Record<string, string> {
  return {
    PARLEY_GATEWAY_ID: GATEWAY_ID,
    PARLEY_GATEWAY_LISTEN: listen,
    PARLEY_GATEWAY_METRICS_LISTEN: 'off',
    PARLEY_GATEWAY_AUDIT_KEY: join(dir.path, `${name}-audit-key.json`),
    PARLEY_GATEWAY_REGISTRY: registry.address,
    PARLEY_GATEWAY_TRUST_BUNDLE: join(dir.path, 'bundle.json'),
    // Certificates of a test issuer the registry does not know: the pinned bundle as is (§15.9 following off).
    PARLEY_GATEWAY_TRUST_BUNDLE_FOLLOW: 'false',
    PARLEY_GATEWAY_POLICY: join(dir.path, 'policy.json'),
    PARLEY_GATEWAY_RATE_PER_SECOND: '100000',
    PARLEY_GATEWAY_RATE_BURST: '100000',
    PARLEY_GATEWAY_LOG_LEVEL: 'warn',
    ...database(name),
  };
}

function startGatewayProcess(env: Record<string, string>): Promise<Gateway> {
  return startApp('gateway', ['serve'], { env, ready: gatewayReady(), timeoutMs: 60_000 });
}

function agent(agentId: string, agentType: 'planner' | 'worker'): TestAgent {
  const keyPair = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, issuer, {
    agentId,
    identityPublicKey: keyPair.publicKey,
    agentType,
    capabilities: ['tasks:read', 'tasks:write'],
    validFromMs: now - DAY,
    validUntilMs: now + 30 * DAY,
  });
  return { identity: { agentId, signingKey: keyPair.secretKey, certificate }, publicKey: keyPair.publicKey };
}

async function connectAgent(a: TestAgent, address: string): Promise<Running> {
  const received: ReceivedMessage[] = [];
  const events: string[] = [];
  const sdk = await connect({
    gateway: address,
    identity: a.identity,
    trustBundle,
    expectedGatewayId: GATEWAY_ID,
    crypto,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    sendTimeoutMs: 30_000,
    handshakeTimeoutMs: 30_000,
    onEvent: (e) => events.push(e.kind),
  });
  running.push(sdk);
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

function receiptVerifies(receipt: DeliveryReceipt, recipient: TestAgent, senderId: string): boolean {
  return receipt.recipientId === recipient.identity.agentId && receipt.senderId === senderId && crypto.ed25519.verify(receipt.signature, deliveryReceiptLayout(receipt), recipient.publicKey);
}

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const seqOf = (m: ReceivedMessage): number => (m.content as { seq: number }).seq;

describe('gateway process SIGKILLed and restarted mid-stream', () => {
  it('acknowledged messages arrive exactly once; in-flight sends complete or fail with a code', async () => {
    const N = 200;
    const WINDOW = 8;
    const env = gatewayEnv('crash', '127.0.0.1:0');
    let gw = await startGatewayProcess(env);
    const address = gw.readyLine['address'] as string;
    const sender = agent('planner-crash', 'planner');
    const recipient = agent('worker-crash', 'worker');
    const s = await connectAgent(sender, address);
    const r = await connectAgent(recipient, address);

    const acked = new Map<number, DeliveryReceipt>();
    const failed = new Map<number, string>();
    const startedAt = new Map<number, number>();
    const settledAt = new Map<number, number>();
    let killedAt = 0;
    let restartedAt = 0;
    let crash: Promise<void> | undefined;

    const sendOne = async (seq: number): Promise<void> => {
      startedAt.set(seq, Date.now());
      try {
        acked.set(seq, await s.sdk.send(recipient.identity.agentId, MessageType.TASK_ASSIGNMENT, { seq }));
      } catch (error) {
        failed.set(seq, isClientError(error) ? error.code : `not a ClientError: ${String(error)}`);
      }
      settledAt.set(seq, Date.now());
    };
    // A window of WINDOW sends in flight; the gateway is killed once half are acknowledged.
    let next = 0;
    const lanes = Array.from({ length: WINDOW }, async () => {
      while (next < N) {
        const seq = next++;
        if (seq === N / 2 && crash === undefined) {
          crash = (async () => {
            gw.process.kill('SIGKILL');
            await gw.exited;
            killedAt = Date.now();
            await new Promise((resolve) => setTimeout(resolve, 300));
            gw = await startGatewayProcess({ ...env, PARLEY_GATEWAY_LISTEN: address });
            restartedAt = Date.now();
          })();
        }
        await sendOne(seq);
      }
    });
    await Promise.all(lanes);
    await crash;
    try {
      // Let redeliveries of un-acked items settle, then check the application's view.
      await waitFor(() => [...acked.keys()].every((seq) => r.received.some((m) => seqOf(m) === seq)), 30_000, 'every acknowledged message received');
      await new Promise((resolve) => setTimeout(resolve, 1_000));

      const seqs = r.received.map(seqOf);
      const counts = new Map<number, number>();
      for (const seq of seqs) counts.set(seq, (counts.get(seq) ?? 0) + 1);
      const duplicated = [...counts].filter(([, c]) => c > 1);
      const ackedLost = [...acked.keys()].filter((seq) => counts.get(seq) !== 1);
      // In flight at the crash: started before the kill, settled after it.
      const inFlight = [...startedAt].filter(([seq, t]) => t <= killedAt && settledAt.get(seq)! > killedAt).map(([seq]) => seq);
      const completedAfter = inFlight.filter((seq) => acked.has(seq));
      const failedInFlight = inFlight.filter((seq) => failed.has(seq));
      const byHash = new Map(r.received.map((m) => [toHex(m.messageHash), m]));
      const unverified = [...acked].filter(([seq, receipt]) => !receiptVerifies(receipt, recipient, sender.identity.agentId) || byHash.get(toHex(receipt.messageHash)) === undefined || seqOf(byHash.get(toHex(receipt.messageHash))!) !== seq);

      console.log(
        `[e2e crash] N=${N} acked=${acked.size} failed=${failed.size} (${[...new Set(failed.values())].join(',') || '-'}) ` +
          `in-flight-at-kill=${inFlight.length} (completed after reconnect ${completedAfter.length}, failed ${failedInFlight.length}) outage=${restartedAt - killedAt} ms ` +
          `received=${seqs.length} duplicates-dropped=${r.events.filter((e) => e === 'duplicate').length} reconnects=${s.events.filter((e) => e === 'connected').length - 1}`,
      );
      expect(acked.size + failed.size).toBe(N);
      expect(unverified).toEqual([]);
      expect(ackedLost).toEqual([]);
      expect(duplicated).toEqual([]);
      // Every failure names a stable code (no silent loss, no foreign error).
      for (const code of failed.values()) expect(code).toMatch(/^(deadline_exceeded|unavailable|cancelled)$/);
      // The stream really crossed the crash: sends acknowledged both before and after it, and the clients reconnected.
      expect([...acked.keys()].some((seq) => seq < N / 2)).toBe(true);
      expect([...acked.keys()].some((seq) => seq >= N / 2 + WINDOW)).toBe(true);
      expect(s.events.filter((e) => e === 'connected').length).toBeGreaterThanOrEqual(2);
      expect(r.events.filter((e) => e === 'connected').length).toBeGreaterThanOrEqual(2);
      // Messages the application got beyond the acknowledged ones can only be sends that failed.
      for (const seq of seqs) expect(acked.has(seq) || failed.has(seq)).toBe(true);
    } finally {
      await s.sdk.close();
      await r.sdk.close();
      expect(await gw.stop()).toBe(0);
    }
  }, 120_000);
});

describe.runIf(process.env['PARLEY_SOAK'] === '1')(`${AGENTS} agents × ${MESSAGES} messages through one gateway process`, () => {
  it('0 lost, 0 duplicated at the application', async () => {
    const gw = await startGatewayProcess(gatewayEnv('load', '127.0.0.1:0'));
    const address = gw.readyLine['address'] as string;
    try {
      const pairs = AGENTS / 2;
      const agents = Array.from({ length: AGENTS }, (_, i) => agent(`${i % 2 === 0 ? 'planner' : 'worker'}-${i >> 1}`, i % 2 === 0 ? 'planner' : 'worker'));
      const t0 = Date.now();
      const conns: Running[] = [];
      // Connect in batches (each connection authenticates with a signature).
      for (let i = 0; i < AGENTS; i += 20) conns.push(...(await Promise.all(agents.slice(i, i + 20).map((a) => connectAgent(a, address)))));
      const connectedMs = Date.now() - t0;
      const peerOf = (i: number): number => i ^ 1;
      const failures: string[] = [];
      const t1 = Date.now();
      // Every agent sends MESSAGES to its peer, a few in flight each.
      await Promise.all(
        conns.map(async (c, i) => {
          const to = agents[peerOf(i)]!.identity.agentId;
          let n = 0;
          await Promise.all(
            Array.from({ length: 4 }, async () => {
              while (n < MESSAGES) {
                const seq = n++;
                try {
                  await c.sdk.send(to, MessageType.TASK_ASSIGNMENT, { from: i, seq, pad: 'x'.repeat(64) }, { timeoutMs: 90_000 });
                } catch (error) {
                  failures.push(`${i}#${seq}: ${isClientError(error) ? error.code : String(error)}`);
                }
              }
            }),
          );
        }),
      );
      const sentMs = Date.now() - t1;
      await waitFor(() => conns.every((c) => c.received.length >= MESSAGES), 30_000, 'every message received');
      await new Promise((resolve) => setTimeout(resolve, 500));
      let lost = 0;
      let duplicated = 0;
      for (const [i, c] of conns.entries()) {
        const seen = new Map<number, number>();
        for (const m of c.received) {
          expect(m.from).toBe(agents[peerOf(i)]!.identity.agentId);
          seen.set(seqOf(m), (seen.get(seqOf(m)) ?? 0) + 1);
        }
        for (let seq = 0; seq < MESSAGES; seq++) {
          const count = seen.get(seq) ?? 0;
          if (count === 0) lost++;
          if (count > 1) duplicated += count - 1;
        }
      }
      const total = AGENTS * MESSAGES;
      console.log(
        `[e2e load] ${AGENTS} agents (${pairs} pairs) × ${MESSAGES} messages = ${total} on ${DATABASE_URL === undefined ? 'PGlite (data dir)' : 'PostgreSQL'}: ` +
          `connect ${connectedMs} ms, send → all verified receipts ${sentMs} ms (${Math.round((total * 1000) / sentMs)} msg/s), lost ${lost}, duplicated ${duplicated}, failed sends ${failures.length}`,
      );
      expect(failures).toEqual([]);
      expect(lost).toBe(0);
      expect(duplicated).toBe(0);
      await Promise.all(conns.map((c) => c.sdk.close()));
    } finally {
      expect(await gw.stop()).toBe(0);
    }
  }, 300_000);
});
