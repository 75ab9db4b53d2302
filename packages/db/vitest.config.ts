import { projectConfig } from '../../vitest.shared.js';

// test/load (the template made from an empty cache and the initdb fallback: two initdb runs) is the
// test-load target's, not the fast loop's.
export default projectConfig({ include: ['src/**/*.spec.ts', 'test/*.spec.ts'] });
