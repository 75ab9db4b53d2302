// Suites that spawn real registry processes and CLI commands (test/load): their own target
// (`nx run registry:test-load`), so the fast loop stays fast. .ci/run runs it after `npm test`.
// Generous per-test time: one process start can take seconds on a loaded 2-core machine.
import { projectConfig } from '../../vitest.shared.js';

export default projectConfig({ workers: 'one-core-free', include: ['test/load/**/*.spec.ts'], testTimeout: 120_000, hookTimeout: 120_000 });
