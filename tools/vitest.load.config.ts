// Suites that start the programs, their own target (`nx run tools:test-load`, which builds first), so the
// fast loop stays fast and never depends on a build:
// - deploy/load/: the BUILT programs as real processes — TLS from `tls init`, SIGTERM and lock release,
//   the restore-from-backup drill;
// - cli-consistency/: the three CLIs' help, errors and exit codes, a process per call;
// - demo/: `npm start -- --once`, the whole demo.
import { projectConfig } from '../vitest.shared.js';

export default projectConfig({ workers: 'one-core-free', include: ['deploy/load/**/*.spec.ts', 'cli-consistency/**/*.spec.ts', 'demo/**/*.spec.ts'], testTimeout: 300_000, hookTimeout: 600_000 });
