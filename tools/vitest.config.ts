import { projectConfig } from '../vitest.shared.js';

// Suites that start the programs are the test-load target's (vitest.load.config.ts): deploy/load/ (the
// built programs), cli-consistency/ (every CLI's help and errors, a process per call) and demo/ (`npm start`).
export default projectConfig({ include: ['**/*.spec.ts'], exclude: ['deploy/load/**', 'cli-consistency/**', 'demo/**'] });
