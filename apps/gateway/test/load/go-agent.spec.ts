// The Go example agent (examples/go-agent, written from docs/PROTOCOL.md with
// flynn/noise and Go's standard crypto) against REAL processes on loopback: a
// registry process enrols both agents, a gateway process relays, and a
// TypeScript agent (@parley/client, in this process) talks to the Go agent
// (a child process) in both directions and in both handshake roles, each side
// verifying the other's signed receipts. The gateway serves TLS 1.3 (a test
// certificate for localhost / 127.0.0.1), as it would anywhere off loopback,
// and both agents verify it. The Go agent also checks every vector of
// docs/conformance/parley-v1.json.
//
// Needs Go and Debian's Go packages (examples/go-agent/README.md; `.ci/run`
// installs them). Without `go` on PATH the suite is skipped locally and fails
// under CI=true, so CI can never pass without running it.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, fileStateStore, type Agent as SdkAgent, type AgentEvent, type ReceivedMessage } from '@parley/client';
import { deliveryReceiptLayout } from '@parley/protocol';
import { SecretKey, createCrypto, fromBase64Url, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, decodeCertificate } from '@parley/identity';
import { MessageType, type DeliveryReceipt } from '@parley/proto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appDir, gatewayReady, onLines, startApp, startRegistry, tempDir, type RunningProcess, type TestRegistry } from '@parley/test-support';
import { scrapeFrames, scrapeFramesUntil, type FrameMetrics } from './metrics-scrape.js';

const ROOT = join(appDir('gateway'), '..', '..');
const GO_DIR = join(ROOT, 'examples', 'go-agent');
const GO_BIN = join(GO_DIR, 'bin', 'parley-go-agent');
const VECTORS = join(ROOT, 'docs', 'conformance', 'parley-v1.json');
const GATEWAY_ID = 'gw-go-interop.test';
const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];

function hasGo(): boolean {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const GO = hasGo();
if (!GO && process.env['CI'] === 'true') throw new Error('the Go toolchain is missing under CI=true: .ci/run must install it (examples/go-agent/README.md)');
const suite = GO ? describe : describe.skip;

interface GoRun {
  readonly code: number | null;
  readonly events: Record<string, unknown>[];
  readonly stderr: string;
}

interface GoProcess {
  readonly events: Record<string, unknown>[];
  readonly done: Promise<GoRun>;
  /** Resolves with the first event of this kind (that matches). */
  next(kind: string, match?: (e: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Writes a line to the agent's stdin (`--offline-after`: connect again). */
  resume(): void;
}

/** Runs the Go agent binary; stdout is one JSON event per line. */
function runGo(args: readonly string[]): GoProcess {
  const child = spawn(GO_BIN, args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  const events: Record<string, unknown>[] = [];
  const waiters: { kind: string; match: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }[] = [];
  let stderr = '';
  onLines(child.stdout, (line) => {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    events.push(event);
    for (const w of waiters.filter((x) => x.kind === event['event'] && x.match(event))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(event);
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<GoRun>((resolve) => child.on('close', (code) => resolve({ code, events, stderr })));
  return {
    events,
    done,
    resume: () => void child.stdin.write('\n'),
    next(kind, match = () => true, timeoutMs = 20_000) {
      const seen = events.find((e) => e['event'] === kind && match(e));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`Go agent: no '${kind}' event within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
        waiters.push({ kind, match, resolve: (e) => (clearTimeout(timer), resolve(e)) });
        void done.then((r) => {
          clearTimeout(timer);
          reject(new Error(`Go agent exited (${String(r.code)}) before '${kind}': ${r.stderr}`));
        });
      });
    },
  };
}

suite('Go example agent', () => {
  let crypto: ParleyCrypto;
  let registry: TestRegistry;
  let gateway: RunningProcess;
  let address: string;
  let metricsUrl: string;
  let trustBundle: TrustBundle;
  const dir = tempDir('go-agent');
  const tlsCert = join(dir.path, 'gateway-cert.pem');
  const tlsKey = join(dir.path, 'gateway-key.pem');
  const running: SdkAgent[] = [];
  let schema: string | undefined;

  beforeAll(async () => {
    // Build with Debian's packages only (no module proxy), then gofmt, go vet and the Go unit tests;
    // fast when Go's build cache is warm.
    execFileSync('bash', [join(GO_DIR, 'build.sh'), '--check'], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 300_000 });
    if (!existsSync(GO_BIN)) throw new Error(`build.sh did not produce ${GO_BIN}`);
    crypto = await createCrypto();
    // A self-signed server certificate for the gateway (openssl, test only).
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', tlsKey, '-out', tlsCert], { stdio: 'ignore' });
    registry = await startRegistry(['--heartbeat-ms', '1000']);
    trustBundle = TrustBundle.fromJSON(crypto, readFileSync(registry.trustBundleFile, 'utf8'));
    writeFileSync(join(dir.path, 'policy.json'), JSON.stringify({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }));
    const db: Record<string, string> =
      DATABASE_URL === undefined
        ? { PARLEY_GATEWAY_DATA_DIR: join(dir.path, 'pgdata') }
        : { DATABASE_URL, PARLEY_GATEWAY_DB_SCHEMA: (schema = `gw_go_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`) };
    gateway = await startApp('gateway', ['serve'], {
      env: {
        PARLEY_GATEWAY_ID: GATEWAY_ID,
        PARLEY_GATEWAY_LISTEN: '127.0.0.1:0',
        PARLEY_GATEWAY_TLS_CERT: tlsCert,
        PARLEY_GATEWAY_TLS_KEY: tlsKey,
        PARLEY_GATEWAY_METRICS_LISTEN: '127.0.0.1:0', // scraped by the backlog test
        PARLEY_GATEWAY_AUDIT_KEY: join(dir.path, 'audit-key.json'),
        PARLEY_GATEWAY_REGISTRY: registry.address,
        PARLEY_GATEWAY_TRUST_BUNDLE: registry.trustBundleFile,
        PARLEY_GATEWAY_POLICY: join(dir.path, 'policy.json'),
        PARLEY_GATEWAY_LOG_LEVEL: 'warn',
        ...db,
      },
      ready: gatewayReady(),
      timeoutMs: 60_000,
    });
    address = gateway.readyLine['address'] as string;
    metricsUrl = gateway.readyLine['metrics_url'] as string;
  }, 360_000);

  afterAll(async () => {
    for (const a of running) await a.close();
    await gateway?.stop();
    await registry?.cleanup();
    if (schema !== undefined) {
      const client = new pg.Client({ connectionString: DATABASE_URL });
      await client.connect();
      try {
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await client.end();
      }
    }
    dir.remove();
  }, 60_000);

  /** Enrols a Go agent through the registry CLI: its key file (written by the CLI, 0600) and a certificate file. */
  async function enrolGo(agentId: string): Promise<{ args: string[]; publicKey: Uint8Array }> {
    const res = await registry.cli(['agent', 'register', agentId, '--type', 'worker', '--cap', 'task:execute', '--json']);
    if (res.code !== 0) throw new Error(`register ${agentId}: ${res.stderr}`);
    const json = JSON.parse(res.stdout) as { certificate: { encoded: string }; key_file: string };
    const certFile = join(dir.path, `${agentId}.cert`);
    writeFileSync(certFile, `${json.certificate.encoded}\n`);
    const publicKey = decodeCertificate(fromBase64Url(json.certificate.encoded)).identityPublicKey;
    return {
      publicKey,
      args: [
        '--gateway', address, '--gateway-id', GATEWAY_ID, '--key', json.key_file, '--cert', certFile, '--trust-bundle', registry.trustBundleFile,
        '--tls-ca', tlsCert, '--tls-server-name', 'localhost',
        // The agent's own revocation data (PROTOCOL.md §8.4): the registry's signed list, followed.
        '--registry', registry.address,
      ],
    };
  }

  async function tsAgent(agentId: string, onEvent?: (event: AgentEvent) => void): Promise<{ sdk: SdkAgent; received: ReceivedMessage[]; publicKey: Uint8Array }> {
    const a = await registry.register(crypto, agentId, 'planner');
    const sdk = await connect({
      gateway: address,
      identity: { agentId, signingKey: a.secretKey, certificate: a.certificate },
      trustBundle,
      expectedGatewayId: GATEWAY_ID,
      tls: { rootCerts: readFileSync(tlsCert) },
      crypto,
      sendTimeoutMs: 20_000,
      handshakeTimeoutMs: 20_000,
      ...(onEvent !== undefined ? { onEvent } : {}),
    });
    running.push(sdk);
    const received: ReceivedMessage[] = [];
    void (async () => {
      try {
        for await (const m of sdk.messages()) {
          received.push(m);
          await m.ack();
        }
      } catch {
        // closed
      }
    })();
    return { sdk, received, publicKey: a.certificate.identityPublicKey };
  }

  const receiptFrom = (receipt: DeliveryReceipt, signerId: string, senderId: string, publicKey: Uint8Array): boolean =>
    receipt.recipientId === signerId && receipt.senderId === senderId && crypto.ed25519.verify(receipt.signature, deliveryReceiptLayout(receipt), publicKey);

  async function until(check: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  const scrape = (): Promise<FrameMetrics> => scrapeFrames(metricsUrl);
  const scrapeUntil = (check: (m: FrameMetrics) => boolean, ms: number, what: string): Promise<FrameMetrics> => scrapeFramesUntil(metricsUrl, check, ms, what);

  it('checks every conformance vector (both languages check the same file)', async () => {
    const run = await runGo(['vectors', VECTORS]).done;
    const summary = run.stderr + JSON.stringify(run.events);
    expect(run.code, summary).toBe(0);
  }, 60_000);

  it('Go initiates: handshake through the gateway, messages both ways, receipts verified on both sides', async () => {
    const go = await enrolGo('go-worker-1');
    const ts = await tsAgent('ts-planner-1');
    const proc = runGo(['run', ...go.args, '--peer', 'ts-planner-1', '--initiate', '--send', '3', '--expect', '2', '--timeout-ms', '30000']);
    await proc.next('connected');
    await until(() => ts.received.length >= 1, 20_000, 'the first message from Go');
    const receipts = [
      await ts.sdk.send('go-worker-1', MessageType.TASK_ASSIGNMENT, { task: 'index-docs', from: 'ts', seq: 0 }),
      await ts.sdk.send('go-worker-1', MessageType.HANDOFF_APPROVAL, { accepted: true, from: 'ts', seq: 1, text: 'ünïcödé ✓' }),
    ];
    const result = await proc.done;
    expect(result.code, result.stderr).toBe(0);
    for (const r of receipts) expect(receiptFrom(r, 'go-worker-1', 'ts-planner-1', go.publicKey)).toBe(true);
    await until(() => ts.received.length >= 3, 10_000, 'three messages from Go');
    expect(ts.received.map((m) => m.from)).toEqual(['go-worker-1', 'go-worker-1', 'go-worker-1']);
    expect(ts.received.map((m) => (m.content as { seq: number }).seq)).toEqual([1, 2, 3]);

    const by = (kind: string) => result.events.filter((e) => e['event'] === kind);
    expect(by('session')).toEqual([expect.objectContaining({ peer: 'ts-planner-1', role: 'initiator' })]);
    // Every Go send has a verified receipt, and its message hash is the one the TS side computed on receipt.
    expect(by('receipt').map((e) => e['verified'])).toEqual([true, true, true]);
    expect(new Set(by('receipt').map((e) => e['message_hash']))).toEqual(new Set(ts.received.map((m) => toHex(m.messageHash))));
    expect(new Set(by('sent').map((e) => e['message_hash']))).toEqual(new Set(ts.received.map((m) => toHex(m.messageHash))));
    // What Go opened is what TS sent.
    expect(by('received').map((e) => [e['from'], e['type'], e['content']])).toEqual([
      ['ts-planner-1', 'MESSAGE_TYPE_TASK_ASSIGNMENT', { task: 'index-docs', from: 'ts', seq: 0 }],
      ['ts-planner-1', 'MESSAGE_TYPE_HANDOFF_APPROVAL', { accepted: true, from: 'ts', seq: 1, text: 'ünïcödé ✓' }],
    ]);
    expect(by('received').map((e) => e['message_hash'])).toEqual(receipts.map((r) => toHex(r.messageHash)));
    expect(by('done')).toEqual([expect.objectContaining({ sent: 3, receipts: 3, received: 2 })]);
  }, 90_000);

  it('TypeScript initiates: the Go agent answers the handshake as responder and both directions work', async () => {
    const go = await enrolGo('go-worker-2');
    const ts = await tsAgent('ts-planner-2');
    const proc = runGo(['run', ...go.args, '--peer', 'ts-planner-2', '--send', '2', '--expect', '3', '--timeout-ms', '30000']);
    await proc.next('connected');
    const receipts: DeliveryReceipt[] = [];
    for (let seq = 0; seq < 3; seq++) receipts.push(await ts.sdk.send('go-worker-2', MessageType.STATUS_UPDATE, { from: 'ts', seq, progress: seq / 2 }));
    const result = await proc.done;
    expect(result.code, result.stderr).toBe(0);
    for (const r of receipts) expect(receiptFrom(r, 'go-worker-2', 'ts-planner-2', go.publicKey)).toBe(true);
    await until(() => ts.received.length >= 2, 10_000, 'two messages from Go');
    expect(ts.received.map((m) => m.from)).toEqual(['go-worker-2', 'go-worker-2']);
    const by = (kind: string) => result.events.filter((e) => e['event'] === kind);
    expect(by('session')).toEqual([expect.objectContaining({ peer: 'ts-planner-2', role: 'responder' })]);
    expect(by('received').map((e) => (e['content'] as { seq: number }).seq)).toEqual([0, 1, 2]);
    expect(by('receipt').map((e) => e['verified'])).toEqual([true, true]);
    expect(by('done')).toEqual([expect.objectContaining({ sent: 2, receipts: 2, received: 3 })]);
  }, 90_000);

  it('the Go agent closes its session when the registry revokes its peer (PROTOCOL.md §8.4)', async () => {
    const go = await enrolGo('go-worker-3');
    const ts = await tsAgent('ts-planner-3');
    const proc = runGo(['run', ...go.args, '--peer', 'ts-planner-3', '--initiate', '--send', '1', '--expect', '5', '--timeout-ms', '40000']);
    await proc.next('session');
    await until(() => ts.received.length >= 1, 20_000, 'the first message from Go');
    const revokedAt = Date.now();
    await registry.revoke('ts-planner-3');
    const result = await proc.done;
    // Its own revocation data (polled every 5 s, checked every second), not the gateway, ends the session.
    expect(result.code, result.stderr).toBe(1);
    const errors = result.stderr.split('\n').filter((l) => l.includes('"event":"error"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(errors).toEqual([expect.objectContaining({ code: 'revoked', message: expect.stringContaining('ts-planner-3') })]);
    expect(Date.now() - revokedAt).toBeLessThan(20_000);
  }, 90_000);

  it('a Go agent that lost its session answers the envelope with a SessionReject (§17.4): the TypeScript sender verifies it, reseals in a new session and gets its receipt', async () => {
    const go = await enrolGo('go-worker-reject');
    const events: AgentEvent[] = [];
    const ts = await tsAgent('ts-planner-reject', (e) => events.push(e));
    const args = ['run', ...go.args, '--peer', 'ts-planner-reject', '--expect', '1', '--timeout-ms', '30000'];
    // A first run: TypeScript starts a session, one message, receipted; the process ends, and its session with it.
    const first = runGo(args);
    await first.next('connected');
    const r1 = await ts.sdk.send('go-worker-reject', MessageType.TASK_ASSIGNMENT, { from: 'ts', seq: 1 });
    const run1 = await first.done;
    expect(run1.code, run1.stderr).toBe(0);
    const lost = run1.events.find((e) => e['event'] === 'session')?.['session_id'];
    expect(lost).toEqual(expect.any(String));

    // A second run of the same agent holds no session: TypeScript seals the next message in the one it still holds.
    const second = runGo(args);
    await second.next('connected');
    const r2 = await ts.sdk.send('go-worker-reject', MessageType.STATUS_UPDATE, { from: 'ts', seq: 2 });
    const run2 = await second.done;
    expect(run2.code, run2.stderr).toBe(0);
    for (const r of [r1, r2]) expect(receiptFrom(r, 'go-worker-reject', 'ts-planner-reject', go.publicKey)).toBe(true);
    const by = (kind: string) => run2.events.filter((e) => e['event'] === kind);
    // The Go agent refused the envelope of the lost session (signed with its identity key, verified by TypeScript) ...
    expect(by('reject_sent')).toEqual([expect.objectContaining({ from: 'ts-planner-reject', session_id: lost })]);
    expect(events.filter((e) => e.kind === 'resealed')).toEqual([{ kind: 'resealed', peerId: 'go-worker-reject', sessionIdHex: lost, messages: 1 }]);
    // ... and took the message resealed in a new session (new hash), which TypeScript started and Go answered.
    expect(by('session')).toEqual([expect.objectContaining({ peer: 'ts-planner-reject', role: 'responder' })]);
    expect(by('session')[0]?.['session_id']).not.toBe(lost);
    expect(by('received').map((e) => [e['content'], e['message_hash']])).toEqual([[{ from: 'ts', seq: 2 }, toHex(r2.messageHash)]]);
    expect(by('reject_sent')[0]?.['message_hash']).not.toBe(toHex(r2.messageHash));
  }, 90_000);

  it('a TypeScript peer rotates its identity key mid-conversation (§17.8): the Go agent verifies its receipt and its SessionReject by the certificate they carry, reseals, and ends in a session with the new certificate', async () => {
    const go = await enrolGo('go-worker-rot');
    // Without --registry: the rotation revokes the session's certificate (superseded), and with revocation data the
    // Go agent closes that session and ends its run (§8.4, "--registry" in its README) before the rotated replies come.
    const args = go.args.filter((a, i, all) => a !== '--registry' && all[i - 1] !== '--registry');
    const agentId = 'ts-planner-rot';
    const registered = await registry.register(crypto, agentId, 'planner');
    type Identity = { agentId: string; signingKey: SecretKey; certificate: typeof registered.certificate };
    // The TypeScript agent keeps a journal (§13), which records the key it was written under: started again under
    // another key, it knows it was rotated and attaches its new certificate to what it signs (§17.8 item 3).
    const store = fileStateStore(join(dir.path, `${agentId}-state`));
    const stateKey = SecretKey.from(crypto.randomBytes(32));
    const events: AgentEvent[] = [];
    async function startTs(identity: Identity, autoAck: boolean): Promise<{ sdk: SdkAgent; received: ReceivedMessage[] }> {
      const received: ReceivedMessage[] = [];
      const sdk = await connect({
        gateway: address,
        identity,
        trustBundle,
        expectedGatewayId: GATEWAY_ID,
        tls: { rootCerts: readFileSync(tlsCert) },
        crypto,
        stateStore: store,
        stateKey,
        reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
        onEvent: (e) => events.push(e),
      });
      running.push(sdk);
      void (async () => {
        try {
          for await (const m of sdk.messages()) {
            received.push(m);
            if (autoAck) await m.ack();
          }
        } catch {
          // closed
        }
      })();
      return { sdk, received };
    }

    // Go starts a session with the first certificate; message 1 is receipted, message 2 taken but not acknowledged.
    const w1 = await startTs({ agentId, signingKey: registered.secretKey, certificate: registered.certificate }, false);
    const proc = runGo(['run', ...args, '--peer', agentId, '--initiate', '--send', '3', '--timeout-ms', '60000']);
    await until(() => w1.received.length === 1, 20_000, 'message 1 from Go');
    await w1.received[0]!.ack();
    await proc.next('receipt');
    await until(() => w1.received.length === 2, 20_000, 'message 2 from Go');

    // The rotation: a new key and certificate, the old one revoked by serial; the gateway sends the old key away.
    const rotated = await registry.cli(['agent', 'rotate', agentId, '--json']);
    expect(rotated.code, rotated.stderr).toBe(0);
    const out = JSON.parse(rotated.stdout) as { certificate: { encoded: string }; key_file: string };
    const seed = (JSON.parse(readFileSync(out.key_file, 'utf8')) as { seed: string }).seed;
    const certificate = decodeCertificate(fromBase64Url(out.certificate.encoded));
    expect(toHex(certificate.serial)).not.toBe(toHex(registered.certificate.serial));
    await until(() => events.some((e) => e.kind === 'disconnected'), 20_000, 'the old key sent away');
    await w1.sdk.close();

    // Back under the new key from the same journal: message 2 is handed over again and its receipt, signed by the new
    // key, carries the new certificate; message 3, sealed by Go in the old session, gets a SessionReject carrying it.
    const w2 = await startTs({ agentId, signingKey: crypto.ed25519.keyPairFromSeed(fromBase64Url(seed)).secretKey, certificate }, true);
    const result = await proc.done;
    expect(result.code, result.stderr).toBe(0);
    const by = (kind: string) => result.events.filter((e) => e['event'] === kind);
    const rotatedSerial = toHex(certificate.serial);
    // Receipt 1 and the receipt of message 3 (in the new session) verify under the session's key; receipt 2 only under
    // the certificate it carries.
    expect(by('receipt').map((e) => [e['verified'], e['signer_certificate']])).toEqual([
      [true, undefined],
      [true, rotatedSerial],
      [true, undefined],
    ]);
    expect(by('reject_received')).toEqual([expect.objectContaining({ peer: agentId, seq: 3, verified: true, signer_certificate: rotatedSerial })]);
    const sessions = by('session');
    expect(sessions.map((e) => e['role'])).toEqual(['initiator', 'initiator']);
    expect(by('reject_received')[0]?.['session_id']).toBe(sessions[0]?.['session_id']);
    expect(by('resealed')).toEqual([expect.objectContaining({ seq: 3, session_id: sessions[1]?.['session_id'] })]);
    expect(by('done')).toEqual([expect.objectContaining({ sent: 3, receipts: 3 })]);
    expect(result.stderr).not.toContain('bad_signature');
    await until(() => w2.received.length >= 2, 10_000, 'messages 2 and 3 under the new key');
    expect(w2.received.map((m) => [(m.content as { seq: number }).seq, m.redelivered])).toEqual([
      [2, true],
      [3, false],
    ]);
  }, 120_000);

  it('first contact (§10.3 step 5, §17.2 item 6): the Go agent writes to a TypeScript agent that never connected — refused policy_denied, it reads the certificate from the registry (GetAgent signed as itself), verifies it and relays the same step 1 with it; the recipient, started seconds later, takes the message once and the Go agent verifies its receipt', async () => {
    const go = await enrolGo('go-worker-fc');
    const agentId = 'ts-planner-fc';
    // Registered, never connected: the gateway has never seen it.
    const registered = await registry.register(crypto, agentId, 'planner');
    const proc = runGo(['run', ...go.args, '--peer', agentId, '--initiate', '--send', '1', '--timeout-ms', '60000']);
    const introduced = await proc.next('first_contact');
    expect(introduced).toEqual(expect.objectContaining({ peer: agentId, serial: toHex(registered.certificate.serial) }));
    // The step 1 now waits in the recipient's mailbox; nothing else happens until it connects.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(proc.events.filter((e) => e['event'] === 'session')).toEqual([]);

    const received: ReceivedMessage[] = [];
    const sdk = await connect({
      gateway: address,
      identity: { agentId, signingKey: registered.secretKey, certificate: registered.certificate },
      trustBundle,
      expectedGatewayId: GATEWAY_ID,
      tls: { rootCerts: readFileSync(tlsCert) },
      crypto,
    });
    running.push(sdk);
    void (async () => {
      try {
        for await (const m of sdk.messages()) {
          received.push(m);
          await m.ack();
        }
      } catch {
        // closed
      }
    })();
    const result = await proc.done;
    expect(result.code, result.stderr).toBe(0);
    const by = (kind: string) => result.events.filter((e) => e['event'] === kind);
    expect(by('first_contact')).toHaveLength(1);
    expect(by('session')).toEqual([expect.objectContaining({ peer: agentId, role: 'initiator', session_id: introduced['session_id'] })]);
    expect(by('receipt')).toEqual([expect.objectContaining({ verified: true })]);
    expect(by('done')).toEqual([expect.objectContaining({ sent: 1, receipts: 1 })]);
    // The gateway refused the first step 1 (it never saw the recipient): a warning, not the end of the run.
    expect(result.stderr).toContain('"code":"policy_denied"');
    // Taken once, and the hash it was receipted under is the one the Go agent sent and verified.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(received.map((m) => [m.from, (m.content as { seq: number }).seq, m.redelivered])).toEqual([['go-worker-fc', 1, false]]);
    expect(by('receipt')[0]?.['message_hash']).toBe(toHex(received[0]!.messageHash));
    expect(by('sent')[0]?.['message_hash']).toBe(toHex(received[0]!.messageHash));
  }, 90_000);

  it('first contact with an id the registry does not know ends the send policy_denied, naming the cause', async () => {
    const go = await enrolGo('go-worker-fc-nobody');
    const result = await runGo(['run', ...go.args, '--peer', 'ts-planner-nobody', '--initiate', '--send', '1', '--timeout-ms', '30000']).done;
    expect(result.code, result.stderr).toBe(1);
    const errors = result.stderr.split('\n').filter((l) => l.includes('"event":"error"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(errors).toEqual([expect.objectContaining({ code: 'policy_denied', message: expect.stringContaining("no agent \"ts-planner-nobody\"") })]);
    expect(result.events.filter((e) => e['event'] === 'first_contact')).toEqual([]);
  }, 60_000);

  it('a backlog sent while the Go agent was offline comes in a deliveries frame (§10.3): each message opened once, its receipt verified at the TypeScript sender, the mailbox emptied', async () => {
    const N = 4;
    const go = await enrolGo('go-worker-batch');
    const ts = await tsAgent('ts-planner-batch');
    // Online: TypeScript starts the session (a message, receipted); then the agent ends its stream (--offline-after 1),
    // keeping the session in memory, and connects again when told.
    const proc = runGo(['run', ...go.args, '--peer', 'ts-planner-batch', '--expect', String(N + 1), '--offline-after', '1', '--timeout-ms', '30000']);
    await proc.next('connected');
    const first = await ts.sdk.send('go-worker-batch', MessageType.TASK_ASSIGNMENT, { from: 'ts', seq: 0 });
    await proc.next('offline');

    // Offline: N messages, each waiting for its receipt, stored in the gateway's mailbox.
    const base = await scrape();
    const sending = Array.from({ length: N }, (_, i) => ts.sdk.send('go-worker-batch', MessageType.STATUS_UPDATE, { from: 'ts', seq: i + 1, text: 'ünïcödé ✓' }, { timeoutMs: 30_000 }));
    void Promise.allSettled(sending); // a failing test's pending sends end with the agent, unhandled otherwise
    await scrapeUntil((m) => m.depth === base.depth + N, 10_000, `${N} messages in the mailbox`);
    proc.resume();
    expect((await proc.next('connected', (e) => e !== proc.events.find((x) => x['event'] === 'connected')))['mailbox_depth']).toBe(N);

    const receipts = [first, ...(await Promise.all(sending))];
    const result = await proc.done;
    expect(result.code, result.stderr).toBe(0);
    for (const r of receipts) expect(receiptFrom(r, 'go-worker-batch', 'ts-planner-batch', go.publicKey)).toBe(true);
    const by = (kind: string) => result.events.filter((e) => e['event'] === kind);
    expect(by('connected').map((e) => e['mailbox_depth'])).toEqual([0, N]);
    expect(by('offline')).toEqual([expect.objectContaining({ received: 1 })]);
    // Each message opened once, in order, and its hash is the one TypeScript's receipt names.
    expect(by('received').map((e) => (e['content'] as { seq: number }).seq)).toEqual(Array.from({ length: N + 1 }, (_, i) => i));
    expect(by('received').map((e) => e['message_hash'])).toEqual(receipts.map((r) => toHex(r.messageHash)));
    expect(by('done')).toEqual([expect.objectContaining({ sent: 0, receipts: 0, received: N + 1 })]);
    // The agent read the backlog in deliveries frames, one at least of two or more (its own report, §10.3).
    const frames = by('deliveries').map((e) => e['items'] as number);
    expect(Math.max(0, ...frames)).toBeGreaterThanOrEqual(2);
    expect(frames.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(N);
    // Counted by the gateway since `base`: the backlog to Go and the receipts to TypeScript (which reads deliveries
    // frames too), in fewer frames than deliveries — at least one frame of two or more (sum − count ≥ 1).
    const after = await scrapeUntil((m) => m.depth === base.depth, 10_000, 'the mailbox emptied');
    expect(after.sum - base.sum).toBeGreaterThanOrEqual(2 * N);
    expect(after.sum - after.count - (base.sum - base.count)).toBeGreaterThanOrEqual(1);
  }, 90_000);
});
