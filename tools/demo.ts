// `npm start`: the main job. Starts a registry and a gateway as child processes
// (their real CLIs) on loopback with fresh keys in ./.data/demo/<timestamp>,
// enrols two demo agents, runs a handoff conversation through the gateway with
// @parley/client (each step printed with its verified delivery receipt),
// verifies the gateway's audit chain and prints its head, then keeps serving
// until SIGINT / SIGTERM.
//
// Without DATABASE_URL both use PGlite in the data directory; with it, both use
// PostgreSQL, each in its own fresh schema. `--once` (or PARLEY_DEMO_ONCE=1)
// exits after the audit head instead of serving. Child logs go to
// DATA_DIR/registry.log and DATA_DIR/gateway.log; stdout carries only the demo.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, writeFileSync, type WriteStream } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openPostgresStore, verifyChain } from '@parley/audit';
import { connect, type Agent, type ReceivedMessage } from '@parley/client';
import { verifyReceiptSignature } from '@parley/protocol';
import { createCrypto, fromBase64Url, fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, decodeCertificate } from '@parley/identity';
import { MessageType, type AgentCertificate, type AuditMessage, type DeliveryReceipt } from '@parley/proto';

type JsonValue = Parameters<Agent['send']>[2];

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const REGISTRY_CLI = join(ROOT, 'apps', 'registry', 'src', 'cli.ts');
const GATEWAY_CLI = join(ROOT, 'apps', 'gateway', 'src', 'cli.ts');
const GATEWAY_ID = 'parley-demo';
const ONCE = process.argv.includes('--once') || process.env['PARLEY_DEMO_ONCE'] === '1';
const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
const START_TIMEOUT_MS = 60_000;

// ---------------------------------------------------------------------------
// Output

const useColour = process.stdout.isTTY === true && process.env['NO_COLOR'] === undefined;
const paint = (code: string) => (text: string) => (useColour ? `\u001b[${code}m${text}\u001b[0m` : text);
const bold = paint('1');
const dim = paint('2');
const green = paint('32');
const cyan = paint('36');
const say = (text = ''): void => void process.stdout.write(`${text}\n`);
const short = (bytes: Uint8Array, n = 8): string => `${toHex(bytes.subarray(0, n))}…`;
const iso = (ms: bigint | number): string => new Date(Number(ms)).toISOString();

function step(label: string, text: string, indent = 2): void {
  say(`${' '.repeat(indent)}${label.padEnd(10)} ${text}`);
}

// ---------------------------------------------------------------------------
// Child processes

interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  readonly exited: Promise<number | null>;
  stop(): Promise<number | null>;
}

/** A child's environment: nothing Parley-related inherited (the demo decides), DATABASE_URL only if given. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PARLEY_') && k !== 'DATABASE_URL') env[k] = v;
  if (DATABASE_URL !== undefined) env['DATABASE_URL'] = DATABASE_URL;
  return { ...env, ...extra };
}

function spawnCli(cli: string, args: readonly string[], env: NodeJS.ProcessEnv, detached: boolean): ChildProcess {
  // detached: its own process group, so a terminal Ctrl-C reaches only the demo, which stops it in order.
  return spawn(process.execPath, ['--conditions=@parley/source', '--import', 'tsx', cli, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached });
}

/** Runs a CLI command to completion; its stderr goes to the log; rejects on a non-zero exit. */
function runCli(cli: string, args: readonly string[], log: WriteStream, env: NodeJS.ProcessEnv = childEnv()): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(cli, args, env, false);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      log.write(d);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${relative(ROOT, cli)} ${args.slice(0, 2).join(' ')} failed (exit ${code}): ${stderr.trim().split('\n').pop() ?? ''}`));
    });
  });
}

const running: Child[] = [];

/** Starts a long-running CLI, logging both streams to `log`; resolves with the first JSON line `ready` accepts. */
function startCli(
  name: string,
  cli: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  log: WriteStream,
  ready: (line: Record<string, unknown>, stream: 'stdout' | 'stderr') => boolean,
): Promise<{ child: Child; readyLine: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const proc = spawnCli(cli, args, env, true);
    const exited = new Promise<number | null>((done) => proc.on('exit', (code, signal) => done(code ?? (signal === null ? null : 128))));
    const child: Child = {
      name,
      process: proc,
      exited,
      async stop() {
        if (proc.exitCode === null && proc.signalCode === null) {
          proc.kill('SIGTERM');
          const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
          const code = await exited;
          clearTimeout(timer);
          return code;
        }
        return exited;
      },
    };
    running.push(child);
    let settled = false;
    const tail: string[] = [];
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      proc.kill('SIGKILL');
      reject(new Error(`${name} not ready after ${START_TIMEOUT_MS / 1000} s (log: ${relative(ROOT, log.path.toString())})`));
    }, START_TIMEOUT_MS);
    const onLine = (stream: 'stdout' | 'stderr', line: string): void => {
      log.write(`${line}\n`);
      if (settled) return;
      tail.push(line);
      if (tail.length > 5) tail.shift();
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return;
      }
      if (typeof parsed === 'object' && parsed !== null && ready(parsed as Record<string, unknown>, stream)) {
        settled = true;
        clearTimeout(timer);
        resolve({ child, readyLine: parsed as Record<string, unknown> });
      }
    };
    for (const stream of ['stdout', 'stderr'] as const) {
      let buffer = '';
      proc[stream]!.on('data', (d: Buffer) => {
        buffer += d.toString();
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          onLine(stream, buffer.slice(0, nl));
          buffer = buffer.slice(nl + 1);
        }
      });
    }
    void exited.then((code) => {
      const i = running.indexOf(child);
      if (i >= 0) running.splice(i, 1);
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code} before it was ready: ${tail.join(' | ')}`));
    });
  });
}

async function stopAll(): Promise<void> {
  // Gateway first (it follows the registry), then the registry.
  for (const child of [...running].reverse()) {
    const code = await child.stop();
    if (code !== 0) process.stderr.write(`parley-demo: ${child.name} exited with ${code}\n`);
  }
}

// Last resort: never leave children behind, whatever happens to this process.
process.on('exit', () => {
  for (const child of running) if (child.process.exitCode === null) child.process.kill('SIGKILL');
});

// ---------------------------------------------------------------------------
// Agents

interface Enrolled {
  readonly agentId: string;
  readonly agentType: string;
  readonly certificate: AgentCertificate;
  readonly keyFile: string;
  readonly agent: Agent;
  readonly next: () => Promise<ReceivedMessage>;
}

/** A queue over `agent.messages()`: `next()` resolves with the next message (or fails after a timeout). */
function inbox(agent: Agent): () => Promise<ReceivedMessage> {
  const queue: ReceivedMessage[] = [];
  const waiters: ((m: ReceivedMessage) => void)[] = [];
  void (async () => {
    try {
      for await (const m of agent.messages()) {
        await m.ack(); // the demo's application takes it here: the receipt is signed now
        const w = waiters.shift();
        if (w !== undefined) w(m);
        else queue.push(m);
      }
    } catch {
      // the agent was closed or stopped; pending next() calls time out
    }
  })();
  return () =>
    new Promise<ReceivedMessage>((resolve, reject) => {
      const m = queue.shift();
      if (m !== undefined) return resolve(m);
      const timer = setTimeout(() => reject(new Error('no message within 15 s')), 15_000);
      waiters.push((msg) => {
        clearTimeout(timer);
        resolve(msg);
      });
    });
}

// ---------------------------------------------------------------------------
// The audit chain

interface AuditSummary {
  readonly size: number;
  readonly rootHash: Uint8Array;
  readonly lastEntryHash: Uint8Array;
  readonly outcomes: Map<string, number>;
  /** The audited items' hashes (an envelope's message hash, another item's digest), hex. */
  readonly hashes: readonly string[];
}

async function verifyAudit(crypto: ParleyCrypto, where: { url: string; schema: string } | { dataDir: string }, publicKey: Uint8Array): Promise<AuditSummary> {
  let client: { query(text: string, params?: unknown[]): Promise<{ rows: unknown[] }> };
  let close: () => Promise<void>;
  let prefix = '';
  if ('url' in where) {
    const { default: pg } = await import('pg');
    const pool = new pg.Pool({ connectionString: where.url, max: 1 });
    client = pool;
    close = () => pool.end();
    prefix = `${where.schema}.`;
  } else {
    const { PGlite } = await import('@electric-sql/pglite');
    const db = await PGlite.create(where.dataDir);
    client = { query: async (text, params) => ({ rows: (await db.query(text, params)).rows }) };
    close = () => db.close();
  }
  try {
    // One chain per gateway instance (PROTOCOL §10.9): the chains table names this key's table.
    const chains = await client.query(`SELECT table_name FROM ${prefix}gateway_audit_chains WHERE writer_public_key = $1`, [Buffer.from(publicKey)]);
    const row = chains.rows[0] as { table_name?: unknown } | undefined;
    if (typeof row?.table_name !== 'string') throw new Error("the gateway's audit key has no chain in gateway_audit_chains");
    const table = `${prefix}${row.table_name}`;
    const store = await openPostgresStore(crypto, client, { table, migrate: false });
    const entries: AuditMessage[] = [];
    for await (const e of store.read(0, await store.size())) entries.push(e);
    const result = await verifyChain(crypto, entries, { keys: publicKey });
    if (!result.ok) throw new Error(`the gateway's audit chain does NOT verify: entry ${result.index}: ${result.reason} (${result.detail})`);
    const outcomes = new Map<string, number>();
    for (const e of entries) outcomes.set(e.outcome, (outcomes.get(e.outcome) ?? 0) + 1);
    return { size: result.size, rootHash: result.rootHash, lastEntryHash: result.lastEntryHash, outcomes, hashes: entries.map((e) => toHex(e.messageHash)) };
  } finally {
    await close();
  }
}

// ---------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const started = Date.now();
  const stamp = new Date(started).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const dataDir = join(ROOT, '.data', 'demo', stamp);
  const registryDir = join(dataDir, 'registry');
  const gatewayDir = join(dataDir, 'gateway');
  mkdirSync(gatewayDir, { recursive: true, mode: 0o700 });
  const registryLog = createWriteStream(join(dataDir, 'registry.log'), { flags: 'a' });
  const gatewayLog = createWriteStream(join(dataDir, 'gateway.log'), { flags: 'a' });
  const schemaSuffix = `${stamp.toLowerCase().replace(/[^a-z0-9]/g, '')}_${process.pid}`;
  const registrySchema = `parley_demo_${schemaSuffix}_registry`;
  const gatewaySchema = `parley_demo_${schemaSuffix}_gateway`;
  const dbArgs = DATABASE_URL === undefined ? [] : ['--database-schema', registrySchema];

  say(bold('Parley demo'));
  say(dim(`  data     ${relative(process.cwd(), dataDir) || '.'}  (child logs: registry.log, gateway.log)`));
  say(dim(`  database ${DATABASE_URL === undefined ? 'PGlite (embedded, in the data directory)' : `PostgreSQL, schemas ${registrySchema} / ${gatewaySchema}`}`));
  say();

  const crypto = await createCrypto();

  // 1. The registry: init (issuer + operator keys), serve on an ephemeral port.
  await runCli(REGISTRY_CLI, ['init', '--data-dir', registryDir, '--kdf', 'interactive', ...dbArgs], registryLog);
  const registry = await startCli(
    'registry',
    REGISTRY_CLI,
    ['serve', '--data-dir', registryDir, '--listen', '127.0.0.1:0', ...dbArgs],
    childEnv(),
    registryLog,
    (l) => l['msg'] === 'listening',
  );
  const registryAddress = `127.0.0.1:${String(registry.readyLine['port'])}`;
  const server = ['--data-dir', registryDir, '--server', registryAddress];
  step('registry', `${cyan(registryAddress)}  issuer key ${String(registry.readyLine['issuer_key_id'])}`);

  // 2. Pin its trust bundle, write the gateway's config and policy, start the gateway.
  const trustBundleJson = await runCli(REGISTRY_CLI, ['trust-bundle', ...server], registryLog);
  const trustBundleFile = join(gatewayDir, 'trust-bundle.json');
  writeFileSync(trustBundleFile, trustBundleJson);
  const trustBundle = TrustBundle.fromJSON(crypto, trustBundleJson);
  const policyFile = join(gatewayDir, 'policy.json');
  writeFileSync(policyFile, `${JSON.stringify({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] }, null, 2)}\n`);
  const configFile = join(gatewayDir, 'gateway.json');
  const gatewayDataDir = join(gatewayDir, 'pgdata');
  writeFileSync(
    configFile,
    `${JSON.stringify(
      {
        gateway_id: GATEWAY_ID,
        listen: '127.0.0.1:0',
        metrics_listen: '127.0.0.1:0',
        registry_address: registryAddress,
        trust_bundle_file: trustBundleFile,
        policy_file: policyFile,
        audit_key_file: join(gatewayDir, 'audit-key.json'),
        ...(DATABASE_URL === undefined ? { data_dir: gatewayDataDir } : { database_schema: gatewaySchema }),
        shutdown_grace_ms: 2000,
      },
      null,
      2,
    )}\n`,
  );
  const gatewayReady = (l: Record<string, unknown>, stream: 'stdout' | 'stderr'): boolean => stream === 'stdout' && l['ready'] === true;
  let gateway = await startCli('gateway', GATEWAY_CLI, ['serve', '--config', configFile], childEnv(), gatewayLog, gatewayReady);
  const gatewayAddress = String(gateway.readyLine['address']);
  const metricsUrl = gateway.readyLine['metrics_url'];
  const auditPublicKey = fromHex(String(gateway.readyLine['audit_public_key']));
  step('gateway', `${cyan(gatewayAddress)}  id ${GATEWAY_ID}, trust bundle pinned, policy planner ↔ worker`);

  // 3. Enrol two agents through the registry CLI (it writes each agent's key file, mode 0600).
  const enrol = async (agentId: string, agentType: string, caps: readonly string[]): Promise<Enrolled> => {
    const out = await runCli(REGISTRY_CLI, ['agent', 'register', agentId, '--type', agentType, ...caps.flatMap((c) => ['--cap', c]), '--json', ...server], registryLog);
    const json = JSON.parse(out) as { certificate: { encoded: string }; key_file: string };
    const key = JSON.parse(readFileSync(json.key_file, 'utf8')) as { seed: string };
    const certificate = decodeCertificate(fromBase64Url(json.certificate.encoded));
    const signingKey = crypto.ed25519.keyPairFromSeed(fromBase64Url(key.seed)).secretKey;
    const agent = await connect({
      gateway: gatewayAddress,
      identity: { agentId, signingKey, certificate },
      trustBundle,
      expectedGatewayId: GATEWAY_ID,
      crypto,
      sendTimeoutMs: 15_000,
      onEvent: (e) => {
        if (e.kind === 'security') process.stderr.write(`parley-demo: security event at ${agentId}: ${JSON.stringify(e, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
      },
    });
    step('agent', `${bold(agentId.padEnd(10))} type ${agentType.padEnd(8)} serial ${short(certificate.serial)}  key ${relative(process.cwd(), json.key_file)}`);
    return { agentId, agentType, certificate, keyFile: json.key_file, agent, next: inbox(agent) };
  };
  const planner = await enrol('planner-1', 'planner', ['task:delegate', 'msg:send']);
  const worker = await enrol('worker-1', 'worker', ['task:execute', 'msg:send']);
  say();

  // 4. The handoff conversation.
  say(bold('Handoff conversation') + dim('  (end-to-end encrypted; each send resolves with the recipient\'s verified, signed receipt)'));
  let n = 0;
  /** The hashes of the messages exchanged, to tell them from the handshake frames in the audit log. */
  const sentHashes = new Set<string>();
  const exchange = async (
    from: Enrolled,
    to: Enrolled,
    type: MessageType,
    typeName: string,
    content: JsonValue,
    summary: string,
    refs: { parentMessageHash?: Uint8Array; handoffHash?: Uint8Array } = {},
  ): Promise<ReceivedMessage> => {
    n += 1;
    const receiving = to.next();
    const receipt: DeliveryReceipt = await from.agent.send(to.agentId, type, content, refs);
    const received = await receiving;
    // The SDK already checked the receipt; check it again here, in plain sight.
    const ok =
      verifyReceiptSignature(crypto, receipt, to.certificate.identityPublicKey) &&
      toHex(receipt.messageHash) === toHex(received.messageHash) &&
      receipt.recipientId === to.agentId &&
      receipt.senderId === from.agentId &&
      received.from === from.agentId &&
      received.type === type;
    if (!ok) throw new Error(`step ${n}: the receipt or the received message does not match`);
    sentHashes.add(toHex(received.messageHash));
    say();
    say(`  ${bold(`${n}.`)} ${bold(typeName.padEnd(16))} ${from.agentId} → ${to.agentId}`);
    step('content', summary, 5);
    if (refs.handoffHash !== undefined) step('refers to', `handoff ${short(refs.handoffHash)}${refs.parentMessageHash === undefined ? '' : `, parent ${short(refs.parentMessageHash)}`}`, 5);
    step('message', short(received.messageHash, 16), 5);
    step('receipt', `${green('✓ verified')}  signer ${receipt.recipientId}  received_at ${iso(receipt.receivedAtMs)}  sig ${short(receipt.signature)}`, 5);
    return received;
  };

  const request = await exchange(
    planner,
    worker,
    MessageType.HANDOFF_REQUEST,
    'HandoffRequest',
    { task: 'summarise-incident-reports', scope: 'Q3 incidents, severity ≥ 2', deadline: iso(started + 3_600_000) },
    'take over "summarise-incident-reports" (Q3 incidents, severity ≥ 2), due in 1 h',
  );
  const handoffHash = request.messageHash;
  await exchange(worker, planner, MessageType.HANDOFF_APPROVAL, 'HandoffApproval', { accepted: true, eta_minutes: 20 }, 'accepted, ETA 20 min', {
    handoffHash,
    parentMessageHash: request.messageHash,
  });
  const assignment = await exchange(
    planner,
    worker,
    MessageType.TASK_ASSIGNMENT,
    'TaskAssignment',
    { task: 'summarise-incident-reports', inputs: ['incidents/2026-q3.jsonl'], output: 'summary.md' },
    'inputs incidents/2026-q3.jsonl → output summary.md',
    { handoffHash },
  );
  await exchange(worker, planner, MessageType.STATUS_UPDATE, 'StatusUpdate', { state: 'in_progress', progress: 0.25, note: '12 of 48 reports read' }, 'in progress, 25 % (12 of 48 reports read)', {
    handoffHash,
    parentMessageHash: assignment.messageHash,
  });
  await planner.agent.close();
  await worker.agent.close();
  say();

  // 5. The gateway's audit chain, verified entry by entry against its audit public key. PGlite is
  //    single-process: the gateway is stopped while the demo reads its database, then started again
  //    on the same addresses. PostgreSQL is read while the gateway runs.
  let audit: AuditSummary;
  if (DATABASE_URL !== undefined) audit = await verifyAudit(crypto, { url: DATABASE_URL, schema: gatewaySchema }, auditPublicKey);
  else {
    await gateway.child.stop();
    audit = await verifyAudit(crypto, { dataDir: gatewayDataDir }, auditPublicKey);
    if (!ONCE) {
      const metricsListen = typeof metricsUrl === 'string' ? new URL(metricsUrl).host : 'off';
      gateway = await startCli('gateway', GATEWAY_CLI, ['serve', '--config', configFile], childEnv({ PARLEY_GATEWAY_LISTEN: gatewayAddress, PARLEY_GATEWAY_METRICS_LISTEN: metricsListen }), gatewayLog, gatewayReady);
    }
  }
  say(bold('Gateway audit log') + dim('  (hash-chained, Ed25519-signed; every entry verified)'));
  const messages = audit.hashes.filter((h) => sentHashes.has(h)).length;
  step('entries', `${audit.size}  (${[...audit.outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}): ${messages} messages, ${audit.size - messages} handshake frames`);
  step('root', toHex(audit.rootHash));
  step('last', toHex(audit.lastEntryHash));
  step('signer', `${toHex(auditPublicKey)}  ${green('✓ chain verified')}`);
  say();

  if (ONCE) {
    await stopAll();
    say(`Parley demo done in ${((Date.now() - started) / 1000).toFixed(1)} s (--once); data in ${relative(process.cwd(), dataDir)}`);
    return;
  }

  say(green(bold(`Parley demo running — gateway at ${gatewayAddress}, registry at ${registryAddress}, Ctrl-C to stop`)));
  if (typeof metricsUrl === 'string') say(dim(`  metrics ${metricsUrl}   config ${relative(process.cwd(), configFile)}`));
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    // A child that dies on its own ends the demo too.
    for (const child of running) void child.exited.then(() => stop());
  });
  say();
  say('Stopping…');
  await stopAll();
  say('Stopped.');
}

main().then(
  () => {
    process.exitCode = 0;
  },
  async (error: unknown) => {
    process.stderr.write(`parley-demo: error: ${error instanceof Error ? error.message : String(error)}\n`);
    await stopAll().catch(() => undefined);
    process.exitCode = 1;
  },
);
