// A process that opens an agent state file with fileStateStore, for the lock tests (state-lock.spec.ts):
//   node --import tsx state-lock-child.ts <state file> [wait-go]
// With `wait-go` it prints {"ev":"waiting"} and opens the store only once a line arrives on stdin (the racing
// test starts every child first, then lets them all go at once). Then it prints {"ev":"held","pid":…} and
// appends a record, or {"ev":"refused","code":…,"message":…} and exits 3; a holder closes its store and
// exits 0 when stdin ends (or dies with SIGKILL).
import { createInterface } from 'node:readline';
import { fileStateStore, isClientError } from '../src/index.js';

const [path, mode] = process.argv.slice(2);
const out = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(line)}\n`);
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
