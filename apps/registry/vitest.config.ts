import { projectConfig } from '../../vitest.shared.js';

// test/load (real registry processes and CLI commands: the gRPC server, the operator walkthrough,
// operations) has its own target, vitest.load.config.ts.
export default projectConfig({ include: ['src/**/*.spec.ts', 'test/*.spec.ts'], testTimeout: 60_000 });
