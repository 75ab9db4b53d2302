// Real-process helpers for the deployment suites: the BUILT command-line
// programs (`parley-registry`, `parley-gateway` = apps/*/dist/cli.js, the
// package.json `bin` entries), run as `node <bin>` with no tsx, no npm and no
// source condition in between, exactly as an operator's supervisor runs them.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The path a package.json `bin` entry names, resolved. */
export function binPath(app: 'registry' | 'gateway'): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'apps', app, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  return join(ROOT, 'apps', app, pkg.bin[`parley-${app}`]!);
}

/**
 * Builds the two programs and what they import (`nx run-many -t build`; cached
 * when nothing changed, and the `test-load` target already depends on it).
 */
export function buildBins(): void {
  execFileSync('npx', ['nx', 'run-many', '-t', 'build', '-p', 'registry,gateway', '--output-style=static'], { cwd: ROOT, stdio: 'ignore', timeout: 600_000 });
  for (const app of ['registry', 'gateway'] as const) if (!existsSync(binPath(app))) throw new Error(`${binPath(app)} missing after the build`);
}

export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), `parley-deploy-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A child's environment: nothing Parley- or database-related inherited unless given. */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PARLEY_') && k !== 'DATABASE_URL' && k !== 'NODE_OPTIONS') env[k] = v;
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

/** Spawns a built program as `node <bin> …` (cwd: a neutral directory, so nothing resolves from the sources). */
export function spawnBin(app: 'registry' | 'gateway', args: readonly string[], env: Record<string, string | undefined> = {}, cwd = tmpdir()): ChildProcess {
  return spawn(process.execPath, [binPath(app), ...args], { cwd, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a built program to completion. */
export function runBin(app: 'registry' | 'gateway', args: readonly string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawnBin(app, args, env);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs a built program and fails with its stderr unless it exits 0. */
export async function mustRun(app: 'registry' | 'gateway', args: readonly string[], env: Record<string, string | undefined> = {}): Promise<string> {
  const res = await runBin(app, args, env);
  if (res.code !== 0) throw new Error(`parley-${app} ${args.slice(0, 2).join(' ')} exited ${res.code}: ${res.stderr.trim()}`);
  return res.stdout;
}

/** A long-running server process. */
export interface Server {
  readonly process: ChildProcess;
  readonly pid: number;
  readonly readyLine: Record<string, unknown>;
  /** Every line so far, both streams. */
  readonly lines: string[];
  /** Resolves with the exit code and signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends a signal to the PID this test started (the server itself). */
  signal(signal: NodeJS.Signals): void;
  /** Resolves with the first JSON line (either stream, from the start) that `match` accepts. */
  waitFor(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGKILL if still running (cleanup). */
  kill(): void;
}

/** Starts a built server and resolves when a JSON line `ready` accepts appears. */
export function startBin(
  app: 'registry' | 'gateway',
  args: readonly string[],
  ready: (line: Record<string, unknown>, stream: 'stdout' | 'stderr') => boolean,
  env: Record<string, string | undefined> = {},
  timeoutMs = 60_000,
): Promise<Server> {
  return new Promise((resolve, reject) => {
    const child = spawnBin(app, args, env);
    const lines: string[] = [];
    const parsedLines: Record<string, unknown>[] = [];
    const watchers: ((line: Record<string, unknown>) => void)[] = [];
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.on('exit', (code, signal) => done({ code, signal })));
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`parley-${app} not ready after ${timeoutMs} ms: ${lines.slice(-5).join('\n')}`));
    }, timeoutMs);
    const server: Server = {
      process: child,
      pid: child.pid!,
      readyLine: {},
      lines,
      exited,
      signal: (s) => void child.kill(s),
      waitFor(match, ms = 30_000) {
        for (const line of parsedLines) if (match(line)) return Promise.resolve(line);
        return new Promise((res, rej) => {
          const watcher = (line: Record<string, unknown>): void => {
            if (!match(line)) return;
            clearTimeout(t);
            watchers.splice(watchers.indexOf(watcher), 1);
            res(line);
          };
          const t = setTimeout(() => {
            watchers.splice(watchers.indexOf(watcher), 1);
            rej(new Error(`parley-${app}: no matching line within ${ms} ms; last: ${lines.slice(-5).join('\n')}`));
          }, ms);
          watchers.push(watcher);
        });
      },
      kill: () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      },
    };
    const onLine = (stream: 'stdout' | 'stderr', line: string): void => {
      lines.push(line);
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      parsedLines.push(parsed);
      for (const w of [...watchers]) w(parsed);
      if (!settled && ready(parsed, stream)) {
        settled = true;
        clearTimeout(timer);
        resolve({ ...server, readyLine: parsed });
      }
    };
    for (const stream of ['stdout', 'stderr'] as const) {
      let buffer = '';
      child[stream]!.on('data', (d: Buffer) => {
        buffer += d.toString();
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          onLine(stream, buffer.slice(0, nl));
          buffer = buffer.slice(nl + 1);
        }
      });
    }
    void exited.then(({ code, signal }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`parley-${app} exited (${code ?? signal}) before it was ready: ${lines.slice(-5).join('\n')}`));
    });
  });
}

/** True while a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
