import { projectConfig } from '../../vitest.shared.js';

// test/load (load, soak and fault suites with real processes) has its own target: vitest.load.config.ts.
// Hooks start gateways (PGlite's WebAssembly, migrations): on a loaded machine that takes more than 10 s.
export default projectConfig({ include: ['src/**/*.spec.ts', 'test/*.spec.ts'], hookTimeout: 60_000 });
