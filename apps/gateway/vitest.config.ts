import { projectConfig } from '../../vitest.shared.js';

// test/load (load, soak and fault suites with real processes) has its own target: vitest.load.config.ts.
export default projectConfig({ include: ['src/**/*.spec.ts', 'test/*.spec.ts'] });
