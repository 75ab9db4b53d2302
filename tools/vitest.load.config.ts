// The deployment suites (deploy/load/): the BUILT programs as real processes — TLS from `tls init`,
// SIGTERM and lock release, the restore-from-backup drill. Their own target (`nx run tools:test-load`,
// which builds first), so the fast loop stays fast and never depends on a build.
import { projectConfig } from '../vitest.shared.js';

export default projectConfig({ include: ['deploy/load/**/*.spec.ts'], testTimeout: 300_000, hookTimeout: 600_000 });
