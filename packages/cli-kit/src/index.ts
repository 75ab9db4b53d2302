/**
 * @parley/cli-kit — what Parley's command-line programs (parley-registry,
 * parley-gateway, parley-audit) share, on top of commander: exit codes and the
 * error-code → exit-code table, the one UsageError, help layout and parse
 * errors in our words, `--json`, the run-when-executed entry point, and
 * secret files written whole (0600, never replacing another writer's).
 * It depends on commander and nothing of Parley (no gRPC).
 */

// For every CLI: exit codes
export { EXIT_CODES, EXIT_CODE_BY_ERROR_CODE, exitCodeOf } from './exit-codes.js';
export type { ExitCode } from './exit-codes.js';

// For every CLI: the usage error, and configuration problems reported all at once
export { UsageError, isUsageError } from './usage-error.js';
export { ConfigError, ProblemList, suggestKey } from './config-problems.js';
export type { ConfigProblem } from './config-problems.js';

// For every CLI: program, help, running
export { CliCommand, commandGroup, commandPath, createProgram, internalFailure, runProgram } from './program.js';
export type { Failure, HelpItem, HelpSection, ProgramIo, ProgramOptions, RunOptions } from './program.js';
export { jsonOption, printJson } from './output.js';
export { exitQuietlyOnClosedPipe, runWhenExecuted } from './run-when-executed.js';

// For every program that writes keys: whole or not at all, 0600, never replacing another writer's file
export { renameDurably, writeSecretFile } from './secret-file.js';

// For the CLIs' tests: the help layout check
export { helpLayoutProblems } from './help-layout.js';

// Re-exported so that CLIs build options from the same commander as the program
export { Option } from 'commander';
