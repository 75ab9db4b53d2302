// Suites that run initdb (test/load: the PGlite template made from an empty cache, the initdb fallback):
// their own target (`nx run db:test-load`), so the fast loop stays fast. .ci/run runs it after `npm test`.
import { projectConfig } from '../../vitest.shared.js';

export default projectConfig({ workers: 'one-core-free', include: ['test/load/**/*.spec.ts'], testTimeout: 300_000, hookTimeout: 120_000 });
