// Suites that start processes (test/load/cli.spec.ts: the parley-audit CLI spawned per command) and the
// full-size sweeps (the 10,000-entry chain, every Merkle proof of sizes 1..130, every cut of a 4-entry file):
// their own target (`nx run audit:test-load`), so the fast loop stays fast. .ci/run runs it after `npm test`.
import { projectConfig } from '../../vitest.shared.js';

export default projectConfig({ workers: 'one-core-free', include: ['test/load/**/*.spec.ts'], testTimeout: 300_000, hookTimeout: 120_000 });
