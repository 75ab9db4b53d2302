// Test harness for process-level tests: runs the REAL registry CLI
// (apps/registry/src/cli.ts: init, serve, agent register/revoke,
// trust-bundle) and the gateway CLI, each as `node --conditions=@parley/source
// --import tsx <cli.ts>`, and a minimal raw Connect client (hello → challenge →
// auth → welcome, then records GoAway) over real gRPC on loopback.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { fromBase64Url, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import { decodeCertificate } from '@parley/identity';
import { AgentGatewayService, type AgentCertificate, type ConnectRequest, type ConnectResponse, type MessageInitShape, type ConnectRequestSchema, type OutboundSchema } from '@parley/proto';
import { createClient } from '@parley/rpc';
import { Channel } from '@parley/async';
import { gatewayAuthLayout } from '@parley/protocol';

export const GATEWAY_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
const REGISTRY_CLI = join(GATEWAY_DIR, '..', 'registry', 'src', 'cli.ts');
export const GATEWAY_CLI = join(GATEWAY_DIR, 'src', 'cli.ts');

export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), `parley-gateway-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A child's environment: nothing Parley- or database-related inherited unless given. */
function childEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PARLEY_') && k !== 'DATABASE_URL') env[k] = v;
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

export function spawnCli(cli: string, args: readonly string[], env: Record<string, string | undefined> = {}): ChildProcess {
  return spawn(process.execPath, ['--conditions=@parley/source', '--import', 'tsx', cli, ...args], { cwd: GATEWAY_DIR, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function run(cli: string, args: readonly string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(cli, args, env);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Calls `onLine` for every complete line of a child's output stream. */
export function onLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buffer = '';
  stream.on('data', (d: Buffer) => {
    buffer += d.toString();
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      onLine(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
    }
  });
}

/** A line-oriented view of a long-running child. */
export interface RunningProcess {
  readonly process: ChildProcess;
  readonly stdout: string[];
  readonly stderr: string[];
  readonly exited: Promise<number | null>;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | null>;
}

/** Spawns a long-running CLI and resolves with the first stdout/stderr JSON line `ready` accepts. */
export function start(
  cli: string,
  args: readonly string[],
  env: Record<string, string | undefined>,
  ready: (line: Record<string, unknown>, stream: 'stdout' | 'stderr') => boolean,
  timeoutMs = 30_000,
): Promise<RunningProcess & { readonly readyLine: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(cli, args, env);
    const lines = { stdout: [] as string[], stderr: [] as string[] };
    const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
    let settled = false;
    const timer = setTimeout(() => {
      if (!settled) {
        settled = true;
        child.kill('SIGKILL');
        reject(new Error(`not ready after ${timeoutMs} ms: ${lines.stderr.slice(-5).join('\n')}`));
      }
    }, timeoutMs);
    const onLine = (stream: 'stdout' | 'stderr', line: string): void => {
      lines[stream].push(line);
      if (settled) return;
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (ready(parsed, stream)) {
        settled = true;
        clearTimeout(timer);
        resolve({
          process: child,
          stdout: lines.stdout,
          stderr: lines.stderr,
          exited,
          readyLine: parsed,
          stop: async () => {
            if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
            return exited;
          },
        });
      }
    };
    for (const stream of ['stdout', 'stderr'] as const) onLines(child[stream]!, (line) => onLine(stream, line));
    void exited.then((code) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(new Error(`exited with ${code} before ready: ${lines.stderr.join('\n')}`));
      }
    });
  });
}

// ---------------------------------------------------------------------------
// The registry

export interface TestRegistry {
  readonly dataDir: string;
  readonly address: string;
  readonly port: number;
  readonly trustBundleFile: string;
  /** Runs a registry CLI command against this registry. */
  cli(args: readonly string[]): Promise<CliResult>;
  /** Registers an agent through the CLI; returns its certificate and key. */
  register(crypto: ParleyCrypto, agentId: string, agentType: string): Promise<RegisteredAgent>;
  /** Revokes an agent id through the CLI. */
  revoke(agentId: string): Promise<void>;
  /** Stops the server (the data stays). */
  stop(): Promise<void>;
  /** Starts the server again on the same port. */
  restart(): Promise<void>;
  /** Stops and removes everything. */
  cleanup(): Promise<void>;
}

export interface RegisteredAgent {
  readonly agentId: string;
  readonly certificate: AgentCertificate;
  readonly secretKey: SecretKey;
}

const isListening = (l: Record<string, unknown>): boolean => l['msg'] === 'listening';

/** `init` a registry in a temp dir (PGlite), `serve` it on an ephemeral port, write its trust bundle file. */
export async function startRegistry(serveArgs: readonly string[] = []): Promise<TestRegistry> {
  const dir = tempDir('registry');
  const registryCli = (args: readonly string[]): Promise<CliResult> => run(REGISTRY_CLI, [...args, '--data-dir', dir.path]);
  const init = await registryCli(['init', '--kdf', 'interactive']);
  if (init.code !== 0) throw new Error(`registry init failed: ${init.stderr}`);
  let proc = await start(REGISTRY_CLI, ['serve', '--data-dir', dir.path, '--listen', '127.0.0.1:0', ...serveArgs], {}, isListening);
  const port = proc.readyLine['port'] as number;
  const address = `127.0.0.1:${port}`;
  const withServer = (args: readonly string[]): Promise<CliResult> => registryCli([...args, '--server', address]);
  const bundle = await withServer(['trust-bundle']);
  if (bundle.code !== 0) throw new Error(`trust-bundle failed: ${bundle.stderr}`);
  const trustBundleFile = join(dir.path, 'pinned-trust-bundle.json');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(trustBundleFile, bundle.stdout);
  return {
    dataDir: dir.path,
    address,
    port,
    trustBundleFile,
    cli: withServer,
    async register(crypto, agentId, agentType) {
      const res = await withServer(['agent', 'register', agentId, '--type', agentType, '--json']);
      if (res.code !== 0) throw new Error(`register failed: ${res.stderr}`);
      const json = JSON.parse(res.stdout) as { certificate: { encoded: string }; key_file: string };
      const key = JSON.parse(readFileSync(json.key_file, 'utf8')) as { seed: string };
      return { agentId, certificate: decodeCertificate(fromBase64Url(json.certificate.encoded)), secretKey: crypto.ed25519.keyPairFromSeed(fromBase64Url(key.seed)).secretKey };
    },
    async revoke(agentId) {
      const res = await withServer(['agent', 'revoke', agentId, '--reason', 'key-compromise']);
      if (res.code !== 0) throw new Error(`revoke failed: ${res.stderr}`);
    },
    async stop() {
      await proc.stop();
    },
    async restart() {
      proc = await start(REGISTRY_CLI, ['serve', '--data-dir', dir.path, '--listen', address, ...serveArgs], {}, isListening);
    },
    async cleanup() {
      await proc.stop();
      dir.remove();
    },
  };
}

// ---------------------------------------------------------------------------
// A raw Connect client

type ConnectRequestInit = MessageInitShape<typeof ConnectRequestSchema>;

export interface RawStream {
  readonly responses: ConnectResponse[];
  /** The GoAway code, once one arrived. */
  goAway(): string | undefined;
  /** Resolves when the stream ends (GoAway or error). */
  readonly ended: Promise<void>;
  /** Sends one Outbound item. */
  send(item: NonNullable<MessageInitShape<typeof OutboundSchema>['item']>, requestId?: bigint): void;
  close(): void;
}

/** Authenticates an agent on a gateway's Connect stream and keeps it open. */
export async function rawConnect(crypto: ParleyCrypto, address: string, gatewayId: string, agent: RegisteredAgent): Promise<RawStream> {
  const client = createClient(AgentGatewayService, address, credentials.createInsecure());
  const requests = new Channel<ConnectRequestInit>();
  const responses: ConnectResponse[] = [];
  let welcomed!: () => void;
  let failed!: (e: unknown) => void;
  const welcome = new Promise<void>((resolve, reject) => ((welcomed = resolve), (failed = reject)));
  requests.push({ kind: { case: 'hello', value: { version: 1, certificate: agent.certificate } } });
  const ended = (async () => {
    try {
      for await (const res of client.connect(requests as AsyncIterable<ConnectRequest>)) {
        responses.push(res);
        if (res.kind.case === 'challenge') {
          const signature = crypto.ed25519.sign(gatewayAuthLayout(gatewayId, res.kind.value.nonce, agent.agentId, agent.certificate.serial), agent.secretKey);
          requests.push({ kind: { case: 'auth', value: { signature } } });
        } else if (res.kind.case === 'welcome') welcomed();
        else if (res.kind.case === 'goAway') failed(new Error(`go_away ${res.kind.value.code}`));
      }
    } catch (error) {
      failed(error);
    } finally {
      failed(new Error('stream ended before welcome'));
      requests.end();
      client.close();
    }
  })();
  await welcome;
  return {
    responses,
    goAway: () => {
      const g = responses.find((r) => r.kind.case === 'goAway');
      return g?.kind.case === 'goAway' ? g.kind.value.code : undefined;
    },
    ended,
    send: (item, requestId = 1n) => void requests.push({ kind: { case: 'send', value: { requestId, item } } }),
    close: () => requests.end(),
  };
}

/** Polls until `check` holds; returns how long it took. */
export async function within(ms: number, check: () => boolean, what: string): Promise<number> {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - t0;
}

/**
 * Keys that occur twice in one object of a JSON text (JSON.parse keeps the
 * last silently; log pipelines that refuse duplicates drop the whole line).
 */
export function duplicateKeys(text: string): string[] {
  const dups: string[] = [];
  const stack: { object: boolean; keys: Set<string> }[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        const top = stack[stack.length - 1]!;
        if (top.keys.has(key)) dups.push(key);
        top.keys.add(key);
        expectKey = false;
      }
      i = j;
    } else if (ch === '{' || ch === '[') {
      stack.push({ object: ch === '{', keys: new Set() });
      expectKey = ch === '{';
    } else if (ch === '}' || ch === ']') stack.pop();
    else if (ch === ',') expectKey = stack[stack.length - 1]?.object === true;
  }
  return dups;
}
