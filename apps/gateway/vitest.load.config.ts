// Load, soak and fault suites with real processes (test/load): their own target
// (`nx run gateway:test-load`, `npm run test:load -w apps/gateway`), so the fast loop stays fast.
import { projectConfig } from '../../vitest.shared.js';

export default projectConfig({ workers: 'one-core-free', include: ['test/load/**/*.spec.ts'], testTimeout: 300_000, hookTimeout: 120_000 });
