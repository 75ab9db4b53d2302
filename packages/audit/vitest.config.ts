import { projectConfig } from '../../vitest.shared.js';

// The chain tests verify 10,000 signatures: generous per-test time for a loaded 2-core CI machine.
// test/load (the CLI spawned per command) is the test-load target's, not the fast loop's.
export default projectConfig({ include: ['src/**/*.spec.ts', 'test/*.spec.ts'], testTimeout: 60_000 });
