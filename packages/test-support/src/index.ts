/**
 * @parley/test-support — test-only (Nx tag type:test; only tests import it, and
 * it imports no app): one harness for the REAL registry and gateway programs as
 * child processes on loopback, and the fixtures tests share.
 */

// The programs and child processes.
export { appArgv, appCli, appDir, SOURCE_CONDITION } from './apps.js';
export type { AppBuild, AppName } from './apps.js';
export { childEnv, collect, duplicateKeys, mustRunApp, onLines, runApp, spawnApp, spawnNode, startApp, tsxArgv, watchProcess } from './processes.js';
export type { CliResult, Env, ExitStatus, LogLine, RunningProcess, RunOptions, StartOptions } from './processes.js';

// A registry and a gateway.
export { initRegistry, runRegistryCli, serveRegistry, startRegistry } from './registry.js';
export type { RegisteredAgent, RegistryFixture, RunningRegistry, TestRegistry } from './registry.js';
export { gatewayEnv, gatewayReady, startGatewayProcess } from './gateway.js';
export type { GatewayProcessOptions, RunningGatewayProcess } from './gateway.js';
export { rawConnect } from './raw-connect.js';
export { loopbackCredentials, serveOnLoopback } from './loopback.js';
export type { LoopbackServer } from './loopback.js';
export type { RawAgent, RawStream } from './raw-connect.js';

// Fixtures.
export { DAY, certifyAgent, createTestIssuer, pinCombinedTrustBundle } from './issuer.js';
export type { AgentOverrides, TestAgent, TestIssuer } from './issuer.js';
export { BACKENDS, DATABASE_URL, REQUIRE_POSTGRES, dropSchema, freshSchema } from './postgres.js';
export { tempDir } from './files.js';
export type { TempDir } from './files.js';
export { sleep, waitFor, within } from './wait.js';
