import { projectConfig } from '../../vitest.shared.js';

// test/load (the 100,000-message rekeying runs) is the test-load target's, not the fast loop's.
export default projectConfig({ include: ['src/**/*.spec.ts', 'test/*.spec.ts'] });
