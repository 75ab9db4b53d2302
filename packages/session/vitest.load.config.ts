// Load suites (test/load: 100,000 messages across 100 epochs): their own target
// (`nx run session:test-load`), so the fast loop stays fast. .ci/run runs it after `npm test`.
import { projectConfig } from '../../vitest.shared.js';

export default projectConfig({ workers: 'one-core-free', include: ['test/load/**/*.spec.ts'], testTimeout: 300_000 });
