import { projectConfig } from '../../vitest.shared.js';

// test/e2e (the SDK against real gateway and registry processes) is the test-load target's, not the fast loop's.
export default projectConfig({ include: ['src/**/*.spec.ts', 'test/*.spec.ts'] });
