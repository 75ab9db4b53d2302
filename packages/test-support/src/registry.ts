/**
 * A real registry for tests: `parley-registry init` in a temporary data
 * directory (PGlite, or PostgreSQL in a fresh schema), `serve` on an ephemeral
 * loopback port (ready at its `listening` line, which carries the port), and
 * the CLI commands tests drive it with.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromBase64Url, type ParleyCrypto, type SecretKey } from '@parley/crypto-core';
import { decodeCertificate } from '@parley/identity';
import type { AgentCertificate } from '@parley/proto';
import type { AppBuild } from './apps.js';
import { tempDir } from './files.js';
import { DATABASE_URL, dropSchema, freshSchema } from './postgres.js';
import { runApp, startApp, type CliResult, type Env, type RunningProcess } from './processes.js';

/** Where a test registry keeps its state. */
export interface RegistryFixture {
  readonly backend: 'pglite' | 'postgres';
  readonly dataDir: string;
  /** Environment for CLI calls against this registry (database URL and schema for PostgreSQL). */
  readonly env: Env;
  /** Which program (default `source`). */
  readonly build?: AppBuild;
  /** Removes the data directory and drops the schema. */
  cleanup(): Promise<void>;
}

/** Runs one registry CLI command to completion (`source` build, the app's directory as cwd). */
export function runRegistryCli(args: readonly string[], env: Env = {}, build: AppBuild = 'source'): Promise<CliResult> {
  return runApp('registry', args, { env, build });
}

/**
 * A new, initialised registry (`init` run through the real CLI).
 * @throws Error with init's stderr when it fails
 */
export async function initRegistry(backend: 'pglite' | 'postgres', tag: string, extraArgs: readonly string[] = [], build: AppBuild = 'source'): Promise<RegistryFixture> {
  const dir = tempDir(`registry-${tag}`);
  const schema = backend === 'postgres' ? freshSchema(tag) : undefined;
  if (backend === 'postgres' && DATABASE_URL === undefined) throw new Error('initRegistry: postgres needs DATABASE_URL');
  const env: Env = backend === 'postgres' ? { DATABASE_URL, PARLEY_REGISTRY_DB_SCHEMA: schema } : {};
  const result = await runRegistryCli(['init', '--data-dir', dir.path, ...extraArgs], env, build);
  if (result.code !== 0) {
    dir.remove();
    throw new Error(`registry init failed (${result.code}): ${result.stderr}`);
  }
  return {
    backend,
    dataDir: dir.path,
    env,
    build,
    async cleanup() {
      dir.remove();
      if (schema !== undefined) await dropSchema(schema);
    },
  };
}

/** A running registry process. */
export interface RunningRegistry extends RunningProcess {
  readonly address: string;
  readonly port: number;
}

/** Starts `serve` on 127.0.0.1:0 (unless `extraArgs` give `--listen`) and waits for its "listening" line. */
export async function serveRegistry(fixture: Pick<RegistryFixture, 'dataDir' | 'env' | 'build'>, extraArgs: readonly string[] = [], env: Env = {}): Promise<RunningRegistry> {
  const listen = extraArgs.includes('--listen') ? [] : ['--listen', '127.0.0.1:0'];
  const proc = await startApp('registry', ['serve', '--data-dir', fixture.dataDir, ...listen, ...extraArgs], {
    env: { ...fixture.env, ...env },
    build: fixture.build ?? 'source',
    ready: (line, stream) => stream === 'stdout' && line['msg'] === 'listening',
  });
  const port = proc.readyLine['port'] as number;
  return { ...proc, address: `127.0.0.1:${port}`, port };
}

/** An agent registered through the registry CLI: its certificate and key. */
export interface RegisteredAgent {
  readonly agentId: string;
  readonly certificate: AgentCertificate;
  readonly secretKey: SecretKey;
}

/** A registry started for a test, with a pinned trust bundle file and the CLI bound to it. */
export interface TestRegistry {
  readonly dataDir: string;
  readonly address: string;
  readonly port: number;
  /** The registry's trust bundle (`parley-registry trust-bundle`), written to a file. */
  readonly trustBundleFile: string;
  /** The running server process (replaced by `restart`). */
  readonly process: RunningRegistry;
  /** Runs a registry CLI command against this registry (`--data-dir`, `--server` added). */
  cli(args: readonly string[]): Promise<CliResult>;
  /** Registers an agent through the CLI; returns its certificate and key. */
  register(crypto: ParleyCrypto, agentId: string, agentType: string): Promise<RegisteredAgent>;
  /** Revokes an agent id through the CLI. */
  revoke(agentId: string): Promise<void>;
  /** Stops the server (the data stays); checks that it exits cleanly. */
  stop(): Promise<void>;
  /** Starts the server again on the same port. */
  restart(): Promise<void>;
  /** Stops and removes everything. */
  cleanup(): Promise<void>;
}

/** `init` a registry in a temp dir (PGlite), `serve` it on an ephemeral port, write its trust bundle file. */
export async function startRegistry(serveArgs: readonly string[] = []): Promise<TestRegistry> {
  const fixture = await initRegistry('pglite', 'test', ['--kdf', 'interactive']);
  let proc = await serveRegistry(fixture, serveArgs);
  const address = proc.address;
  const withServer = (args: readonly string[]): Promise<CliResult> => runRegistryCli([...args, '--data-dir', fixture.dataDir, '--server', address]);
  const bundle = await withServer(['trust-bundle']);
  if (bundle.code !== 0) throw new Error(`trust-bundle failed: ${bundle.stderr}`);
  const trustBundleFile = join(fixture.dataDir, 'pinned-trust-bundle.json');
  writeFileSync(trustBundleFile, bundle.stdout);
  return {
    dataDir: fixture.dataDir,
    address,
    port: proc.port,
    trustBundleFile,
    get process() {
      return proc;
    },
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
      proc = await serveRegistry(fixture, ['--listen', address, ...serveArgs]);
    },
    async cleanup() {
      try {
        await proc.stop();
      } finally {
        await fixture.cleanup();
      }
    },
  };
}
