import { projectConfig } from '../../vitest.shared.js';

// Generous per-test time for a loaded 2-core CI machine (the chain tests verify thousands of signatures).
// test/load (the CLI spawned per command, the full-size sweeps) is the test-load target's, not the fast loop's.
export default projectConfig({ include: ['src/**/*.spec.ts', 'test/*.spec.ts'], testTimeout: 60_000 });
