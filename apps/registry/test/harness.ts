// Test harness: runs the real CLI and a real registry process (spawned with
// `node --conditions=@parley/source --import tsx src/cli.ts`), on PGlite in a
// temporary data directory or on PostgreSQL in a fresh schema, and talks to
// it over real gRPC on loopback.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { RegistryService } from '@parley/proto';
import { createClient, type Client } from '@parley/rpc';
import { operatorRequestSigner } from '@parley/protocol';
import pg from 'pg';
import { readKeyFile, type LoadedKey } from '../src/key-file.js';

export const APP_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(APP_DIR, 'src', 'cli.ts');

/** PostgreSQL URL for the storage suites, when the environment gives one. */
export const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
/** In CI a missing PostgreSQL is a failure, never a silent skip. */
export const REQUIRE_POSTGRES = process.env['CI'] === 'true' || process.env['CI'] === '1';

/** The backends a storage suite runs on: PGlite always, PostgreSQL when DATABASE_URL is set. */
export const BACKENDS: readonly ('pglite' | 'postgres')[] = DATABASE_URL === undefined ? ['pglite'] : ['pglite', 'postgres'];

/** A fresh schema name for one test file's PostgreSQL run. */
export function freshSchema(tag: string): string {
  return `t_${tag}_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
}

/** Drops a test schema (and everything in it). */
export async function dropSchema(schema: string): Promise<void> {
  if (DATABASE_URL === undefined) return;
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

/** A temporary directory, removed by the returned function. */
export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), `parley-registry-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Environment for a child: no inherited DATABASE_URL unless asked, so PGlite tests stay PGlite. */
function childEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['DATABASE_URL'];
  delete env['PARLEY_REGISTRY_DB_SCHEMA'];
  delete env['PARLEY_REGISTRY_PASSPHRASE'];
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

function spawnCli(args: readonly string[], env: Record<string, string | undefined>): ChildProcess {
  return spawn(process.execPath, ['--conditions=@parley/source', '--import', 'tsx', CLI, ...args], {
    cwd: APP_DIR,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Runs one CLI command to completion. */
export function runCli(args: readonly string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(args, env);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Where a test registry keeps its state. */
export interface RegistryFixture {
  readonly backend: 'pglite' | 'postgres';
  readonly dataDir: string;
  /** Environment for CLI calls against this registry (database URL and schema for PostgreSQL). */
  readonly env: Record<string, string | undefined>;
  /** Removes the data directory and drops the schema. */
  cleanup(): Promise<void>;
}

/** A new, initialised registry (`init` run through the real CLI). */
export async function initRegistry(backend: 'pglite' | 'postgres', tag: string, extraArgs: readonly string[] = []): Promise<RegistryFixture> {
  const dir = tempDir(tag);
  const schema = backend === 'postgres' ? freshSchema(tag) : undefined;
  const env = backend === 'postgres' ? { DATABASE_URL, PARLEY_REGISTRY_DB_SCHEMA: schema } : {};
  const result = await runCli(['init', '--data-dir', dir.path, ...extraArgs], env);
  if (result.code !== 0) throw new Error(`init failed (${result.code}): ${result.stderr}`);
  return {
    backend,
    dataDir: dir.path,
    env,
    async cleanup() {
      dir.remove();
      if (schema !== undefined) await dropSchema(schema);
    },
  };
}

/** A running registry process. */
export interface RunningRegistry {
  readonly address: string;
  readonly port: number;
  readonly process: ChildProcess;
  /** Every log line so far, parsed. */
  readonly logs: Record<string, unknown>[];
  /** SIGTERM and wait for exit; resolves to the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `serve` on 127.0.0.1:0 and waits for its "listening" log line (which carries the port). */
export function serve(fixture: RegistryFixture, extraArgs: readonly string[] = [], env: Record<string, string | undefined> = {}): Promise<RunningRegistry> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(['serve', '--data-dir', fixture.dataDir, '--listen', '127.0.0.1:0', ...extraArgs], { ...fixture.env, ...env });
    const logs: Record<string, unknown>[] = [];
    let buffer = '';
    let stderr = '';
    let started = false;
    const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        logs.push(entry);
        if (!started && entry['msg'] === 'listening') {
          started = true;
          const port = entry['port'] as number;
          resolve({
            address: `127.0.0.1:${port}`,
            port,
            process: child,
            logs,
            async stop() {
              if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
              return exited;
            },
          });
        }
      }
    });
    void exited.then((code) => {
      if (!started) reject(new Error(`serve exited with ${code} before listening: ${stderr.trim()}`));
    });
  });
}

/** The registry's operator key (from init) and a signed client for it. */
export async function operatorClient(
  registry: RunningRegistry,
  fixture: RegistryFixture,
  crypto?: ParleyCrypto,
): Promise<{ client: Client<typeof RegistryService>; registryId: Uint8Array; operator: LoadedKey; crypto: ParleyCrypto; close(): void }> {
  const c = crypto ?? (await createCrypto());
  const operator = readKeyFile(c, join(fixture.dataDir, 'operator-key.json'), 'parley-operator-key');
  const plain = createClient(RegistryService, registry.address, credentials.createInsecure());
  const { registryId } = await plain.getTrustBundle({});
  plain.close();
  const client = createClient(RegistryService, registry.address, credentials.createInsecure(), {
    signer: operatorRequestSigner(c, operator, registryId),
    defaultTimeoutMs: 15_000,
  });
  return { client, registryId, operator, crypto: c, close: () => client.close() };
}

/** An unsigned client. */
export function plainClient(registry: RunningRegistry): Client<typeof RegistryService> {
  return createClient(RegistryService, registry.address, credentials.createInsecure(), { defaultTimeoutMs: 15_000 });
}
