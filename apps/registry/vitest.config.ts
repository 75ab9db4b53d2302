import { projectConfig } from '../../vitest.shared.js';

// Generous per-test timeout: these suites spawn real registry processes and CLI
// commands on 2-core machines, where one process start can take seconds.
export default projectConfig({ testTimeout: 60_000 });
