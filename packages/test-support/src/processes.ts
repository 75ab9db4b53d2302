/**
 * Child processes for tests: the REAL registry and gateway programs (see
 * ./apps.ts), run to completion (`runApp`) or started as servers (`startApp`):
 * spawned with a clean environment, ready when a JSON line the caller accepts
 * appears, stopped with SIGTERM and checked for a clean exit, SIGKILLed when
 * they do not start or stop in time, their output kept for failure messages.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { tmpdir } from 'node:os';
import { appArgv, appDir, SOURCE_CONDITION, type AppBuild, type AppName } from './apps.js';

/** Environment additions for a child; `undefined` removes a variable. */
export type Env = Readonly<Record<string, string | undefined>>;

/**
 * A child's environment: the parent's, minus everything Parley- or database-related
 * (`PARLEY_*`, `DATABASE_URL`) and `NODE_OPTIONS`, so that a test gets exactly the
 * settings it gives; then `extra`.
 */
export function childEnv(extra: Env = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PARLEY_') && k !== 'DATABASE_URL' && k !== 'NODE_OPTIONS') env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** How to run a program. */
export interface RunOptions {
  readonly env?: Env;
  /** `source` (default) or `built`. */
  readonly build?: AppBuild;
  /** Working directory; default: the app's directory (source), a neutral temp directory (built). */
  readonly cwd?: string;
  /** Standard input: ignored unless `pipe`. */
  readonly stdin?: 'ignore' | 'pipe';
  /** Options for node itself (e.g. `--cpu-prof`). */
  readonly nodeOptions?: readonly string[];
}

/** The arguments of `node` that run a TypeScript file through tsx with the source condition. */
export function tsxArgv(file: string, args: readonly string[] = []): string[] {
  return [`--conditions=${SOURCE_CONDITION}`, '--import', 'tsx', file, ...args];
}

/** Spawns `node <argv>` with a clean environment, stdout and stderr piped. */
export function spawnNode(argv: readonly string[], options: { env?: Env; cwd: string; stdin?: 'ignore' | 'pipe' }): ChildProcess {
  const spawnOptions: SpawnOptions = { cwd: options.cwd, env: childEnv(options.env), stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'] };
  return spawn(process.execPath, argv, spawnOptions);
}

/** Spawns an app's program with `args`. */
export function spawnApp(app: AppName, args: readonly string[], options: RunOptions = {}): ChildProcess {
  const build = options.build ?? 'source';
  const cwd = options.cwd ?? (build === 'source' ? appDir(app) : tmpdir());
  return spawnNode(appArgv(app, args, build, options.nodeOptions), { cwd, ...(options.env === undefined ? {} : { env: options.env }), ...(options.stdin === undefined ? {} : { stdin: options.stdin }) });
}

/** What a program run to completion did. */
export interface CliResult {
  /** Exit code; -1 when it ended by a signal. */
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Collects a finished child's output and exit. */
export function collect(child: ChildProcess): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? -1, signal, stdout, stderr }));
  });
}

/** Runs an app's program with `args` to completion. */
export function runApp(app: AppName, args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
  return collect(spawnApp(app, args, options));
}

/**
 * Runs an app's program and returns its stdout.
 * @throws Error with its stderr unless it exits 0
 */
export async function mustRunApp(app: AppName, args: readonly string[], options: RunOptions = {}): Promise<string> {
  const res = await runApp(app, args, options);
  if (res.code !== 0) throw new Error(`parley-${app} ${args.slice(0, 2).join(' ')} exited ${res.code === -1 ? res.signal : res.code}: ${res.stderr.trim()}`);
  return res.stdout;
}

/** Calls `onLine` for every complete line of a stream. */
export function onLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buffer = '';
  stream.on('data', (d: Buffer | string) => {
    buffer += d.toString();
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      onLine(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
    }
  });
}

/** How a process ended. */
export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A JSON log line. */
export type LogLine = Record<string, unknown>;

/** A long-running process, with its output kept line by line. */
export interface RunningProcess {
  /** For messages: `parley-gateway`, `parley-registry`, or what the caller named it. */
  readonly name: string;
  readonly process: ChildProcess;
  readonly pid: number;
  /** The line that made it ready. */
  readonly readyLine: LogLine;
  /** Raw lines of each stream, and of both in arrival order. */
  readonly stdout: string[];
  readonly stderr: string[];
  readonly lines: string[];
  /** The lines that parse as JSON objects, both streams (the programs log JSON). */
  readonly logs: LogLine[];
  /** Resolves with the exit code once the process exited (null: ended by a signal). */
  readonly exited: Promise<number | null>;
  /** Resolves with the exit code and signal once the process exited. */
  readonly exitStatus: Promise<ExitStatus>;
  /** True until the process exited. */
  isRunning(): boolean;
  /** Resolves with the first JSON line (either stream, from the start) that `match` accepts. */
  waitFor(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Sends a signal to this process. */
  signal(signal: NodeJS.Signals): void;
  /**
   * SIGTERM, then waits for the exit (SIGKILL after `timeoutMs`) and resolves with the exit code,
   * which is 0. A process that had already exited resolves with its code as it was.
   * @throws Error with the last lines of its output when it does not exit in time, or exits other than cleanly
   */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL if still running (cleanup). */
  kill(): void;
  /** The last `n` lines of output, for failure messages. */
  tail(n?: number): string;
}

/** How to start a long-running process. */
export interface StartOptions {
  /** Accepts the line (parsed JSON, either stream) that means "ready". */
  readonly ready: (line: LogLine, stream: 'stdout' | 'stderr') => boolean;
  /** How long to wait for it (then SIGKILL and reject); default 60 s. */
  readonly timeoutMs?: number;
}

/** Starts `child` (already spawned) and resolves once `ready` accepts a line. */
export function watchProcess(name: string, child: ChildProcess, options: StartOptions): Promise<RunningProcess> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const stdout: string[] = [];
    const stderr: string[] = [];
    const lines: string[] = [];
    const logs: LogLine[] = [];
    const watchers = new Set<(line: LogLine) => void>();
    let running = true;
    const exitStatus = new Promise<ExitStatus>((done) =>
      child.on('exit', (code, signal) => {
        running = false;
        done({ code, signal });
      }),
    );
    const exited = exitStatus.then((s) => s.code);
    const tail = (n = 20): string => lines.slice(-n).join('\n');
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`${name} not ready after ${timeoutMs} ms; last lines:\n${tail()}`));
    }, timeoutMs);

    const proc: Omit<RunningProcess, 'readyLine'> = {
      name,
      process: child,
      pid: child.pid ?? -1,
      stdout,
      stderr,
      lines,
      logs,
      exited,
      exitStatus,
      isRunning: () => running,
      waitFor(match, ms = 30_000) {
        const seen = logs.find(match);
        if (seen !== undefined) return Promise.resolve(seen);
        return new Promise((res, rej) => {
          const watcher = (line: LogLine): void => {
            if (!match(line)) return;
            clearTimeout(t);
            watchers.delete(watcher);
            res(line);
          };
          const t = setTimeout(() => {
            watchers.delete(watcher);
            rej(new Error(`${name}: no matching line within ${ms} ms; last lines:\n${tail(5)}`));
          }, ms);
          watchers.add(watcher);
        });
      },
      signal: (s) => void child.kill(s),
      async stop(ms = 30_000) {
        if (!running) return exited;
        child.kill('SIGTERM');
        let timedOut = false;
        const t = setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, ms);
        const status = await exitStatus;
        clearTimeout(t);
        if (timedOut) throw new Error(`${name} did not exit within ${ms} ms of SIGTERM (SIGKILLed); last lines:\n${tail()}`);
        if (status.code !== 0) throw new Error(`${name} exited ${status.code ?? status.signal} after SIGTERM, not cleanly; last lines:\n${tail()}`);
        return 0;
      },
      kill: () => {
        if (running) child.kill('SIGKILL');
      },
      tail,
    };

    const onLine = (stream: 'stdout' | 'stderr', line: string): void => {
      (stream === 'stdout' ? stdout : stderr).push(line);
      lines.push(line);
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return;
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return;
      const entry = parsed as LogLine;
      logs.push(entry);
      for (const w of [...watchers]) w(entry);
      if (!settled && options.ready(entry, stream)) {
        settled = true;
        clearTimeout(timer);
        resolve({ ...proc, readyLine: entry });
      }
    };
    for (const stream of ['stdout', 'stderr'] as const) {
      const s = child[stream];
      if (s !== null) onLines(s, (line) => onLine(stream, line));
    }
    child.on('error', (error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${name} could not be started`, { cause: error }));
    });
    void exitStatus.then(({ code, signal }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before it was ready; last lines:\n${tail()}`));
    });
  });
}

/** Starts an app's program (usually `serve`) and resolves once `ready` accepts a line. */
export function startApp(app: AppName, args: readonly string[], options: RunOptions & StartOptions): Promise<RunningProcess> {
  return watchProcess(`parley-${app}`, spawnApp(app, args, options), options);
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
