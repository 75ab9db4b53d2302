// A process that opens an agent state file with fileStateStore, for the lock tests (state-lock.spec.ts):
//   node --import tsx state-lock-child.ts <state file> [wait-go]
// With `wait-go` it prints {"ev":"waiting"} and opens the store only once a line arrives on stdin (the racing
// test starts every child first, then lets them all go at once). Then it prints {"ev":"held","pid":…} and
// appends a record, or {"ev":"refused","code":…,"message":…} and exits 3; a holder closes its store and
// exits 0 when stdin ends (or dies with SIGKILL).
//
// With `worker` it runs the worker-thread case instead: a worker thread (this file again, `worker-holder`) takes the
// lock and is ended with terminate() (no exit hook runs), then this thread opens the store while the lock is fresh
// ({"ev":"fresh",…}), and again once its mtime is set older than STALE_MS ({"ev":"stale",…}), and exits 0.
import { readFileSync, utimesSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Worker, parentPort } from 'node:worker_threads';
import { fileStateStore, isClientError } from '../src/index.js';
import { STALE_MS, stateLockPath } from '../src/state-lock.js';

const [path, mode] = process.argv.slice(2);
const out = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(line)}\n`);

if (mode === 'worker-holder') {
  await fileStateStore(path!).load();
  parentPort!.postMessage('held');
  setInterval(() => undefined, 1_000); // runs (and would refresh its lock) until terminated
} else if (mode === 'worker') {
  // A worker thread does not inherit tsx's module hooks: it registers them, then loads this file.
  const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const worker = new Worker(boot, { eval: true, argv: [path!, 'worker-holder'] });
  await new Promise((resolve, reject) => worker.once('message', resolve).once('error', reject));
  out({ ev: 'worker-held', lock: JSON.parse(readFileSync(stateLockPath(path!), 'utf8')) as unknown });
  await worker.terminate();
  const open = async (): Promise<Record<string, unknown>> => {
    const store = fileStateStore(path!);
    try {
      await store.load();
      await store.close();
      return { outcome: 'held' };
    } catch (error) {
      return { outcome: 'refused', code: isClientError(error) ? error.code : 'none', message: error instanceof Error ? error.message : String(error) };
    }
  };
  out({ ev: 'fresh', ...(await open()) });
  const past = new Date(Date.now() - STALE_MS - 5_000);
  utimesSync(stateLockPath(path!), past, past);
  out({ ev: 'stale', ...(await open()) });
  process.exit(0);
} else {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

  if (mode === 'wait-go') {
    out({ ev: 'waiting' });
    await lines.next();
  }
  const store = fileStateStore(path!);
  try {
    await store.load();
  } catch (error) {
    out({ ev: 'refused', code: isClientError(error) ? error.code : 'none', message: error instanceof Error ? error.message : String(error) });
    process.exit(3);
  }
  out({ ev: 'held', pid: process.pid });
  await store.append([new Uint8Array([process.pid & 0xff])]);
  out({ ev: 'appended' });
  for (;;) if ((await lines.next()).done === true) break;
  await store.close();
}
