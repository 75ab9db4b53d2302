#!/usr/bin/env node
/**
 * parley-registry: the registry's operator CLI (one executable): `init`,
 * `serve`, `agent register|enroll|list|show|rotate|revoke`, `revocations`,
 * `operator add|remove|list`, `trust-bundle`, `issuer rotate|list`,
 * `join-token create|list|revoke`, `tls init|issue` — one file per
 * command group under ./cli/, on the conventions every Parley CLI shares
 * (@parley/cli-kit, on commander).
 *
 * Output is a table by default and JSON with `--json`. Failures print one
 * line, `parley-registry: error: …`, and exit with a documented code (see
 * EXIT_CODES); never a stack trace.
 */
import { EXIT_CODES, Option, createProgram, exitCodeOf, jsonOption, runProgram, runWhenExecuted, type Failure } from '@parley/cli-kit';
import { ERROR_CODE_METADATA_KEY, RpcError } from '@parley/rpc';
import { addAgentCommands } from './cli/agent.js';
import { NotReady, addCheckCommand } from './cli/check.js';
import { PROGRAM, createRegistryCli } from './cli/context.js';
import { addInitCommand } from './cli/init.js';
import { addIssuerCommands } from './cli/issuer.js';
import { addJoinTokenCommands } from './cli/join-token.js';
import { addOperatorCommands } from './cli/operator.js';
import { addRevocationsCommand } from './cli/revocations.js';
import { addServeCommand } from './cli/serve.js';
import { addTlsCommands } from './cli/tls.js';
import { addTrustBundleCommand } from './cli/trust-bundle.js';

/** Exit codes (the table is in @parley/cli-kit, shared by every Parley CLI; also in the README). */
export { EXIT_CODES };

/**
 * Runs the CLI.
 * @param argv arguments after the program name
 * @param out where normal output goes (stdout)
 * @returns the exit code
 */
export async function main(argv: readonly string[], out: (text: string) => void = (t) => process.stdout.write(`${t}\n`)): Promise<number> {
  const program = createProgram({ name: PROGRAM, description: 'Parley identity and revocation registry.', out });
  program
    .addOption(new Option('--data-dir <DIR>', 'registry data directory (env PARLEY_REGISTRY_DATA_DIR; default ./.data/registry)'))
    .addOption(jsonOption());
  const cli = createRegistryCli(out);
  addInitCommand(program, cli);
  addServeCommand(program, cli);
  addCheckCommand(program, cli);
  addAgentCommands(program, cli);
  addRevocationsCommand(program, cli);
  addOperatorCommands(program, cli);
  addTrustBundleCommand(program, cli);
  addIssuerCommands(program, cli);
  addJoinTokenCommands(program, cli);
  addTlsCommands(program, cli);
  program.addHelpSection({
    heading: 'Exit codes:',
    align: 'section',
    items: [
      ['0', 'success'],
      ['1', 'internal error'],
      ['2', 'usage error (unknown command or option, missing argument)'],
      ['3', 'not found (unknown agent)'],
      ['4', 'already exists (duplicate id, already revoked)'],
      ['5', 'permission denied (operator key, passphrase, signature)'],
      ['6', 'invalid argument (bad key encoding, malformed field)'],
      ['7', 'unavailable (server or database unreachable)'],
      ['8', 'failed precondition (not initialised, challenge expired, dir in use)'],
      ['9', 'not ready (check: the registry answered, a readiness check fails)'],
    ],
  });
  return runProgram(program, argv, { classify });
}

/** An error's exit code and line: an unreachable server says so, a local bug is "internal error", else its code's. */
function classify(error: unknown): Failure {
  if (error instanceof NotReady) return { exitCode: EXIT_CODES.notReady, code: 'not_ready', message: error.message };
  const e = RpcError.from(error);
  if (e.code === 'unavailable' && e.details.includes('No connection established')) {
    const why = /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT/.exec(e.details)?.[0] ?? 'no connection';
    return { exitCode: EXIT_CODES.unavailable, code: e.code, message: `registry server unreachable (${why}); is \`${PROGRAM} serve\` running, and is --server right?` };
  }
  const cause = e.cause as { metadata?: { get(key: string): unknown[] } } | undefined;
  const fromServer = (cause?.metadata?.get(ERROR_CODE_METADATA_KEY)?.length ?? 0) > 0;
  if (e.code === 'internal' && !fromServer) {
    const original = e.cause instanceof Error ? e.cause.message.split('\n')[0] : 'unexpected failure';
    return { exitCode: EXIT_CODES.internal, code: e.code, message: `internal error: ${original}` };
  }
  // Local output: the full detail (a wrapped library error keeps its message here).
  return { exitCode: exitCodeOf(e.code), code: e.code, message: e.localDetails };
}

// Run when executed (not when imported by a test).
runWhenExecuted(PROGRAM, main);
