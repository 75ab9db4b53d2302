// Suites that start processes (test/load: the parley-audit CLI spawned per command): their own target
// (`nx run audit:test-load`), so the fast loop stays fast. .ci/run runs it after `npm test`.
import { projectConfig } from '../../vitest.shared.js';

export default projectConfig({ include: ['test/load/**/*.spec.ts'], testTimeout: 300_000, hookTimeout: 120_000 });
