import { projectConfig } from '../../vitest.shared.js';

// test/load (the harness against real registry and gateway processes) is the test-load target's.
export default projectConfig({ include: ['src/**/*.spec.ts', 'test/*.spec.ts'] });
