import { projectConfig } from '../../vitest.shared.js';

// The CLI tests spawn node + tsx and the chain tests verify 10,000 signatures:
// generous per-test time for a loaded 2-core CI machine.
export default projectConfig({ testTimeout: 60_000 });
