// The harness against REAL registry and gateway processes (test/load): its own target
// (`nx run test-support:test-load`), so the fast loop stays fast. .ci/run runs it after `npm test`.
import { projectConfig } from '../../vitest.shared.js';

export default projectConfig({ workers: 'one-core-free', include: ['test/load/**/*.spec.ts'], testTimeout: 300_000, hookTimeout: 120_000 });
