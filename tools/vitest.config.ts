import { projectConfig } from '../vitest.shared.js';

// deploy/load/: the built programs as real processes (`nx run tools:test-load`, after the build).
export default projectConfig({ include: ['**/*.spec.ts'], exclude: ['deploy/load/**'] });
