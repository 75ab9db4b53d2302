// The SDK end to end (test/e2e): against REAL gateway and registry processes started from
// their CLIs by @parley/test-support, agents crashing as real processes. Their own target
// (`nx run client:test-load`), so the fast loop stays fast. .ci/run runs it after `npm test`.
import { projectConfig } from '../../vitest.shared.js';

export default projectConfig({ workers: 'one-core-free', include: ['test/e2e/**/*.spec.ts'], testTimeout: 300_000, hookTimeout: 180_000 });
