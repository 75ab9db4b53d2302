// One writer per agent state file (docs/PROTOCOL.md §13; src/state-lock.ts): a second process — a real one,
// started with tsx — is refused while the first holds the file, a lock whose process is gone is taken over, and
// one that cannot be judged from here (another host) is left alone. And the state key kept in a file
// (stateKeyFile), and what a wrong key says.
import { type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { onLines, spawnNode, tempDir, tsxArgv } from '@parley/test-support';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Journal, fileStateStore, isClientError, stateKeyFile } from '../src/index.js';
import { STALE_MS, processStartTime, stateLockPath, stateLockTestHooks } from '../src/state-lock.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const dir = tempDir('client-state-lock');
const children: ChildProcess[] = [];
let crypto: ParleyCrypto;

beforeAll(async () => {
  crypto = await createCrypto();
});
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  dir.remove();
});

interface Child {
  readonly process: ChildProcess;
  readonly lines: Record<string, unknown>[];
  readonly exited: Promise<number | null>;
  /** Resolves with the first line whose `ev` is one of `evs`. */
  next(...evs: string[]): Promise<Record<string, unknown>>;
}

/** Starts ./state-lock-child.ts on `statePath`. */
function startChild(statePath: string, mode?: 'wait-go' | 'worker'): Child {
  const child = spawnNode(tsxArgv(join(HERE, 'state-lock-child.ts'), mode === undefined ? [statePath] : [statePath, mode]), { cwd: HERE, stdin: 'pipe' });
  children.push(child);
  const lines: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  onLines(child.stdout!, (line) => {
    lines.push(JSON.parse(line) as Record<string, unknown>);
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  void exited.then(() => {
    for (const w of waiters.splice(0)) w();
  });
  const next = async (...evs: string[]): Promise<Record<string, unknown>> => {
    for (;;) {
      const found = lines.find((l) => evs.includes(l['ev'] as string));
      if (found !== undefined) return found;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`child ${child.pid} exited (${child.exitCode ?? child.signalCode}) before ${evs.join('/')}: ${stderr}`);
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  };
  return { process: child, lines, exited, next };
}

/** Sets a file's mtime `ms` in the past. */
const backdate = (file: string, ms: number): void => utimesSync(file, new Date(Date.now() - ms), new Date(Date.now() - ms));
const lockOf = (statePath: string): Record<string, unknown> => JSON.parse(readFileSync(stateLockPath(statePath), 'utf8')) as Record<string, unknown>;
const refusal = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'opened',
    (e: unknown) => (isClientError(e, 'failed_precondition') ? e.message : `unexpected: ${String(e)}`),
  );

describe('fileStateStore: one process at a time', () => {
  it('a second process on the same state file is refused, naming the holder; once the holder is SIGKILLed its lock is stale and the next open takes it over', async () => {
    const path = join(dir.path, 'two', 'agent.state');
    const lock = stateLockPath(path);
    const first = startChild(path);
    const held = await first.next('held', 'refused');
    expect(held).toEqual({ ev: 'held', pid: first.process.pid });
    await first.next('appended');

    // Another process started with the same state file.
    const second = startChild(path);
    const refused = await second.next('held', 'refused');
    expect(refused['ev']).toBe('refused');
    expect(refused['code']).toBe('failed_precondition');
    expect(lockOf(path)).toMatchObject({ pid: first.process.pid, hostname: hostname() });
    expect(statSync(lock).mode & 0o777).toBe(0o600);
    expect(refused['message']).toContain(`in use by process ${first.process.pid}, holding it since ${lockOf(path)['created_at'] as string}`);
    expect(refused['message']).toContain(`if it is gone, remove ${lock}`);
    expect(await second.exited).toBe(3);
    // So is this process (a third one), and the holder's lock is left as it was.
    expect(await refusal(fileStateStore(path).load())).toContain(`in use by process ${first.process.pid}`);
    expect(lockOf(path)['pid']).toBe(first.process.pid);

    first.process.kill('SIGKILL');
    await first.exited;
    expect(existsSync(lock)).toBe(true); // a killed process cleans nothing up
    const store = fileStateStore(path);
    expect(await store.load()).toEqual([new Uint8Array([first.process.pid! & 0xff])]);
    expect(lockOf(path)).toMatchObject({ pid: process.pid, hostname: hostname() });
    await store.append([new Uint8Array([1])]);
    await store.close();
    expect(existsSync(lock)).toBe(false);
    expect(readdirSync(dirname(path)).sort()).toEqual(['agent.state']); // nothing left beside it
  }, 60_000);

  it('processes racing for a stale lock: exactly one holds the file, the others are refused', async () => {
    const path = join(dir.path, 'race', 'agent.state');
    const gone = spawnNode(['-e', ''], { cwd: HERE });
    await new Promise((resolve) => gone.on('exit', resolve));
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(stateLockPath(path), JSON.stringify({ pid: gone.pid, hostname: hostname(), created_at: new Date(0).toISOString() }));
    const racers = Array.from({ length: 4 }, () => startChild(path, 'wait-go'));
    await Promise.all(racers.map((r) => r.next('waiting')));
    for (const r of racers) r.process.stdin!.write('go\n');
    const outcomes = await Promise.all(racers.map((r) => r.next('held', 'refused')));
    const winners = outcomes.filter((o) => o['ev'] === 'held');
    expect(winners).toHaveLength(1);
    const pids = racers.map((r) => r.process.pid);
    for (const o of outcomes.filter((o) => o['ev'] === 'refused')) {
      expect(o['code']).toBe('failed_precondition');
      expect(pids).toContain(Number(/in use by process (\d+)/.exec(o['message'] as string)?.[1]));
    }
    expect(lockOf(path)['pid']).toBe(winners[0]!['pid']);
    for (const r of racers) r.process.stdin!.end();
    expect((await Promise.all(racers.map((r) => r.exited))).sort()).toEqual([0, 3, 3, 3]);
    expect(existsSync(stateLockPath(path))).toBe(false);
  }, 60_000);

  it('a racer that judged the same stale lock finds the winner\'s new lock in its place: it puts it back untouched and is refused', async () => {
    const path = join(dir.path, 'overtaken', 'agent.state');
    const lock = stateLockPath(path);
    mkdirSync(dirname(path), { recursive: true });
    const gone = spawnNode(['-e', ''], { cwd: HERE });
    await new Promise((resolve) => gone.on('exit', resolve));
    writeFileSync(lock, JSON.stringify({ pid: gone.pid, hostname: hostname(), created_at: new Date(0).toISOString() }));
    // Between this process judging the lock stale and moving it away, another one (vitest's main process, alive)
    // takes it over first: the stale file is gone and that process's new lock is in its place.
    const winner = JSON.stringify({ pid: process.ppid, start_time: processStartTime(process.ppid), hostname: hostname(), created_at: new Date().toISOString() });
    let winnerFile: { ino: number; dev: number } | undefined;
    stateLockTestHooks.beforeTakeOver = (lockPath) => {
      stateLockTestHooks.beforeTakeOver = undefined;
      unlinkSync(lockPath);
      writeFileSync(lockPath, winner, { flag: 'wx', mode: 0o600 });
      winnerFile = statSync(lockPath);
    };
    try {
      expect(await refusal(fileStateStore(path).load())).toContain(`in use by process ${process.ppid}`);
    } finally {
      stateLockTestHooks.beforeTakeOver = undefined;
    }
    expect(winnerFile).toBeDefined();
    expect(readFileSync(lock, 'utf8')).toBe(winner);
    expect(statSync(lock)).toMatchObject({ ino: winnerFile!.ino, dev: winnerFile!.dev }); // the same file: its holder's checks still pass
    expect(readdirSync(dirname(path))).toEqual(['agent.state.lock']); // nothing left aside
  });

  it('a lock from another host is refused, naming the file to remove; so is one from another PID namespace', async () => {
    const path = join(dir.path, 'elsewhere', 'agent.state');
    const lock = stateLockPath(path);
    mkdirSync(dirname(path), { recursive: true });
    const text = JSON.stringify({ pid: process.pid, hostname: 'other-host.example', created_at: '2025-01-02T03:04:05.000Z' });
    writeFileSync(lock, text, { mode: 0o600 });
    const message = await refusal(fileStateStore(path).load());
    expect(message).toContain(`in use by process ${process.pid} on host other-host.example, holding it since 2025-01-02T03:04:05.000Z (lock file ${lock})`);
    expect(message).toContain(`cannot be told from here: if it does not, remove ${lock}`);
    expect(readFileSync(lock, 'utf8')).toBe(text);
    if (process.platform === 'linux') {
      writeFileSync(lock, JSON.stringify({ pid: process.pid, pid_ns: 'pid:[1]', hostname: hostname(), created_at: '2025-01-02T03:04:05.000Z' }));
      expect(await refusal(fileStateStore(path).load())).toContain('in another PID namespace (pid:[1]');
    }
    unlinkSync(lock); // as the message says
    const store = fileStateStore(path);
    expect(await store.load()).toEqual([]);
    await store.close();
  });

  it.runIf(process.platform === 'linux')('a lock naming a live pid with another start time (the pid was reused) is taken over; with its own start time it is refused', async () => {
    const path = join(dir.path, 'reused', 'agent.state');
    const lock = stateLockPath(path);
    mkdirSync(dirname(path), { recursive: true });
    const live = process.ppid; // vitest's main process: alive, and not this one
    const started = processStartTime(live);
    expect(started).toBeTypeOf('number');
    writeFileSync(lock, JSON.stringify({ pid: live, start_time: started, hostname: hostname(), created_at: new Date().toISOString() }));
    expect(await refusal(fileStateStore(path).load())).toContain(`in use by process ${live}`);
    writeFileSync(lock, JSON.stringify({ pid: live, start_time: started! + 1, hostname: hostname(), created_at: new Date().toISOString() }));
    const store = fileStateStore(path);
    expect(await store.load()).toEqual([]);
    expect(lockOf(path)).toMatchObject({ pid: process.pid, start_time: processStartTime(process.pid) });
    await store.close();
    expect(existsSync(lock)).toBe(false);
  });

  it('close releases the lock (a later call takes it again); a second store on the same file in this process is refused meanwhile', async () => {
    const path = join(dir.path, 'close', 'agent.state');
    const lock = stateLockPath(path);
    const store = fileStateStore(path);
    await store.append([new Uint8Array([1])]);
    expect(await refusal(fileStateStore(path).load())).toContain(`in use by this process (pid ${process.pid})`);
    expect(lockOf(path)['pid']).toBe(process.pid);
    await store.close();
    expect(existsSync(lock)).toBe(false);
    const other = fileStateStore(path);
    expect(await other.load()).toEqual([new Uint8Array([1])]);
    await other.close();
    await store.append([new Uint8Array([2])]); // reopens: takes the lock again
    expect(existsSync(lock)).toBe(true);
    await store.close();
    expect(existsSync(lock)).toBe(false);
    const last = fileStateStore(path);
    expect(await last.load()).toEqual([new Uint8Array([1]), new Uint8Array([2])]);
    await last.close();
  });

  it('a symlink or a hard link to a held state file does not get a lock of its own: refused; a store opened through a symlink writes the real file', async () => {
    const path = join(dir.path, 'links', 'agent.state');
    const alias = join(dir.path, 'links', 'alias.state');
    const hard = join(dir.path, 'links', 'hard.state');
    const store = fileStateStore(path);
    await store.append([new Uint8Array([1])]);
    symlinkSync(path, alias);
    expect(await refusal(fileStateStore(alias).load())).toContain(`in use by this process (pid ${process.pid}) (lock file ${stateLockPath(path)})`);
    expect(stateLockPath(alias)).toBe(stateLockPath(path));

    linkSync(path, hard);
    expect(await refusal(fileStateStore(hard).load())).toContain(`agent state file ${hard} (${hard}) has 2 hard links`);
    // Linked while held: the holder writes nothing more while the link is there.
    await expect(store.append([new Uint8Array([2])])).rejects.toSatisfy((e) => isClientError(e, 'failed_precondition') && e.message.includes('got 2 hard links while this process held it'));
    unlinkSync(hard);
    await store.append([new Uint8Array([3])]);
    await store.close();

    // Through the symlink: the lock and the file are the real ones (a rewrite replaces the file, not the symlink).
    const viaAlias = fileStateStore(alias);
    expect(await viaAlias.load()).toEqual([new Uint8Array([1]), new Uint8Array([3])]);
    expect(existsSync(stateLockPath(path))).toBe(true);
    await viaAlias.rewrite([new Uint8Array([4])]);
    await viaAlias.close();
    expect(lstatSync(alias).isSymbolicLink()).toBe(true);
    const direct = fileStateStore(path);
    expect(await direct.load()).toEqual([new Uint8Array([4])]);
    await direct.close();
    expect(readdirSync(dirname(path)).sort()).toEqual(['agent.state', 'alias.state']);
  });

  it('a lock from another host or PID namespace is taken over once its mtime is older than the bound (its holder stopped refreshing it); a fresh one is refused', async () => {
    const path = join(dir.path, 'unrefreshed', 'agent.state');
    const lock = stateLockPath(path);
    mkdirSync(dirname(path), { recursive: true });
    const owners = [{ pid: process.pid, hostname: 'other-host.example', created_at: '2025-01-02T03:04:05.000Z' }];
    if (process.platform === 'linux') owners.push({ pid: 1, pid_ns: 'pid:[1]', hostname: hostname(), created_at: '2025-01-02T03:04:05.000Z' } as (typeof owners)[0]);
    for (const owner of owners) {
      writeFileSync(lock, JSON.stringify(owner), { mode: 0o600 });
      backdate(lock, STALE_MS - 5_000);
      const fresh = await refusal(fileStateStore(path).load());
      expect(fresh).toContain(`in use by process ${owner.pid}`);
      backdate(lock, STALE_MS + 5_000);
      const store = fileStateStore(path);
      expect(await store.load()).toEqual([]);
      expect(lockOf(path)).toMatchObject({ pid: process.pid, hostname: hostname() });
      await store.close();
      expect(existsSync(lock)).toBe(false);
      expect(fresh).toMatch(/It was refreshed 2\d s ago; .* taken over once not refreshed for 30 s/);
    }
  });

  it('a lock of this host and namespace whose process is alive stays refused however old its mtime', async () => {
    const path = join(dir.path, 'alive-old', 'agent.state');
    const lock = stateLockPath(path);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(lock, JSON.stringify({ pid: process.ppid, start_time: processStartTime(process.ppid), hostname: hostname(), created_at: new Date(0).toISOString() }));
    backdate(lock, 10 * STALE_MS);
    expect(await refusal(fileStateStore(path).load())).toContain(`in use by process ${process.ppid}`);
    unlinkSync(lock);
  });

  it('a worker thread ended by terminate() (no exit hook) leaves a lock the process takes over once it is stale, not before', async () => {
    const path = join(dir.path, 'worker', 'agent.state');
    const child = startChild(path, 'worker');
    const held = await child.next('worker-held');
    expect(held['lock']).toMatchObject({ pid: child.process.pid, thread: expect.any(Number) as number });
    const fresh = await child.next('fresh');
    expect(fresh).toMatchObject({ outcome: 'refused', code: 'failed_precondition' });
    expect(fresh['message']).toContain('Another thread of this process holds it');
    expect(await child.next('stale')).toEqual({ ev: 'stale', outcome: 'held' });
    expect(await child.exited).toBe(0);
    expect(existsSync(stateLockPath(path))).toBe(false);
  }, 60_000);

  it('a holder\'s heartbeat keeps its lock fresh (the mtime advances) and its own checks still pass', async () => {
    const path = join(dir.path, 'heartbeat', 'agent.state');
    const lock = stateLockPath(path);
    stateLockTestHooks.heartbeatMs = 20;
    const store = fileStateStore(path);
    try {
      await store.append([new Uint8Array([1])]);
    } finally {
      stateLockTestHooks.heartbeatMs = undefined;
    }
    const first = statSync(lock, { bigint: true }).mtimeNs;
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(statSync(lock, { bigint: true }).mtimeNs).toBeGreaterThan(first);
    await store.append([new Uint8Array([2])]); // the refreshed file is still this store's lock
    await store.close();
    expect(existsSync(lock)).toBe(false);
  });

  it('a store whose lock was removed or replaced under it writes nothing more (fail closed), and leaves the new lock alone', async () => {
    const path = join(dir.path, 'stolen', 'agent.state');
    const lock = stateLockPath(path);
    const store = fileStateStore(path);
    await store.append([new Uint8Array([1])]);
    unlinkSync(lock); // what the refusal says to do — but for a process that still runs
    await expect(store.append([new Uint8Array([2])])).rejects.toSatisfy((e) => isClientError(e, 'failed_precondition') && /lock file .* was removed while this process held it/.test(e.message));
    const text = JSON.stringify({ pid: process.ppid, hostname: hostname(), created_at: new Date().toISOString() });
    writeFileSync(lock, text);
    await expect(store.rewrite([new Uint8Array([3])])).rejects.toSatisfy((e) => isClientError(e, 'failed_precondition') && /replaced by another process/.test(e.message));
    await store.close();
    expect(readFileSync(lock, 'utf8')).toBe(text); // not ours: not removed
    unlinkSync(lock);
    const reopened = fileStateStore(path);
    expect(await reopened.load()).toEqual([new Uint8Array([1])]);
    await reopened.close();
  });
});

describe('stateKeyFile', () => {
  it('creates a 32-byte key file (0600) and reads the same key back; refuses one others may read, or of the wrong size', async () => {
    const path = join(dir.path, 'keys', 'state.key');
    const made = await stateKeyFile(path, { crypto });
    expect(made.kind).toBe('aead');
    expect(made.length).toBe(32);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(path).size).toBe(32);
    expect(readdirSync(dirname(path))).toEqual(['state.key']); // no temporary file left
    const again = await stateKeyFile(path); // without a ParleyCrypto: one is made when needed
    expect(Buffer.from(again.unsafeBytes()).equals(Buffer.from(made.unsafeBytes()))).toBe(true);
    expect(Buffer.from(readFileSync(path)).equals(Buffer.from(made.unsafeBytes()))).toBe(true);

    chmodSync(path, 0o644);
    await expect(stateKeyFile(path)).rejects.toSatisfy((e) => isClientError(e, 'permission_denied') && e.message.includes(`run chmod 600 ${path}`));
    chmodSync(path, 0o600);
    expect(Buffer.from((await stateKeyFile(path)).unsafeBytes()).equals(Buffer.from(made.unsafeBytes()))).toBe(true);

    const short = join(dir.path, 'keys', 'short.key');
    writeFileSync(short, new Uint8Array(31), { mode: 0o600 });
    await expect(stateKeyFile(short)).rejects.toSatisfy((e) => isClientError(e, 'malformed') && e.message.includes('is 31 bytes, not 32'));
    const long = join(dir.path, 'keys', 'hex.key');
    writeFileSync(long, 'ab'.repeat(32), { mode: 0o600 });
    await expect(stateKeyFile(long)).rejects.toSatisfy((e) => isClientError(e, 'malformed') && e.message.includes('is 64 bytes, not 32'));
  });

  it('two makers at once end with one key', async () => {
    const path = join(dir.path, 'keys-race', 'state.key');
    const keys = await Promise.all(Array.from({ length: 8 }, () => stateKeyFile(path, { crypto })));
    for (const k of keys) expect(Buffer.from(k.unsafeBytes()).equals(readFileSync(path))).toBe(true);
    expect(readdirSync(dirname(path))).toEqual(['state.key']);
  });

  it('temporary key files left by a maker that died (each a copy of a key) are removed by the next call; others are left', async () => {
    const path = join(dir.path, 'keys-left', 'state.key');
    mkdirSync(dirname(path), { recursive: true });
    const gone = spawnNode(['-e', ''], { cwd: HERE });
    await new Promise((resolve) => gone.on('exit', resolve));
    const key = await stateKeyFile(path, { crypto });
    const leftovers = [`state.key.${gone.pid}.1700000000000.0.tmp`, `state.key.${process.pid}.1700000000000.3.tmp`];
    const kept = ['state.key.backup', `state.key.${process.ppid}.1700000000000.0.tmp`]; // another name; a live process's, just written
    for (const name of [...leftovers, ...kept]) writeFileSync(join(dirname(path), name), key.unsafeBytes(), { mode: 0o600 });
    expect(Buffer.from((await stateKeyFile(path)).unsafeBytes()).equals(Buffer.from(key.unsafeBytes()))).toBe(true);
    expect(readdirSync(dirname(path)).sort()).toEqual(['state.key', ...kept].sort());
    backdate(join(dirname(path), kept[1]!), 120_000); // a live pid's, but too old to be being written
    await stateKeyFile(path);
    expect(readdirSync(dirname(path)).sort()).toEqual(['state.key', 'state.key.backup']);
  });

  it('state written under one key, opened with another: state_corrupt says what happened, and how to start afresh', async () => {
    const path = join(dir.path, 'wrong-key', 'agent.state');
    const store = fileStateStore(path);
    const journal = new Journal(crypto, await stateKeyFile(join(dir.path, 'wrong-key-1', 'state.key'), { crypto }), store);
    await journal.append([{ t: 'identity', key: 'k' }, { t: 'bundle', version: 1, doc: 'd' }]);
    await journal.close();
    const other = fileStateStore(path);
    const error = await new Journal(crypto, await stateKeyFile(join(dir.path, 'wrong-key-2', 'state.key'), { crypto }), other).load().then(
      () => undefined,
      (e: unknown) => e,
    );
    await other.close();
    expect(isClientError(error, 'state_corrupt')).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain(`${path} was written under another stateKey, or it was altered`);
    expect(message).toContain('cannot be read without the key it was written with');
    expect(message).toContain(`move ${path} aside`);
    expect(message).toMatch(/sends not yet confirmed by a receipt, received messages not yet acknowledged/);
  });
});
