/**
 * `parley-registry trust-bundle`: the issuer keys that verify this registry's
 * certificates, as @parley/identity TrustBundle JSON, for gateways and agents
 * to pin (docs/PROTOCOL.md §3.3).
 */
import { printJson, type CliCommand } from '@parley/cli-kit';
import { bundleOf, connect } from './connection.js';
import { addClientOptions, type ClientOptions, type CommandContext, type RegistryCli } from './context.js';

export function addTrustBundleCommand(program: CliCommand, cli: RegistryCli): void {
  const command = program
    .command('trust-bundle')
    .summary("print the registry's trust bundle (JSON, for gateways and agents to pin)")
    .usage('[options]')
    .description(
      "print the registry's trust bundle (JSON, for gateways and agents to pin).\n\nPrints the issuer keys that verify this registry's certificates, in the @parley/identity TrustBundle JSON form.",
    );
  addClientOptions(command).action(async function (this: CliCommand) {
    await trustBundle(cli.context<ClientOptions>(this));
  });
}

async function trustBundle(ctx: CommandContext<ClientOptions>): Promise<void> {
  const conn = await connect(ctx, 'never');
  try {
    printJson(ctx.out, bundleOf(conn.crypto, conn.bundle).toJSON());
  } finally {
    conn.close();
  }
}
