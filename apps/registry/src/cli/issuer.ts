/**
 * `parley-registry issuer rotate|list`: the issuer key lifecycle
 * (docs/PROTOCOL.md §15.9), online. `rotate` asks the running registry to
 * prepare a new issuer key: it is published at once in a new trust bundle
 * version (signed by the active key), so every gateway and agent that follows
 * the registry trusts it before it signs anything; it becomes active after
 * --activate-after, and the old key stays trusted for --grace (default: until
 * the last certificate it signed expires), then drops out of the bundle.
 */
import { Option, UsageError, commandGroup, printJson, type CliCommand } from '@parley/cli-kit';
import { toHex } from '@parley/crypto-core';
import { IssuerKeyState, type TrustedIssuer } from '@parley/proto';
import { durationText, fields, parseDuration, table, time } from '../format.js';
import { connect } from './connection.js';
import { addClientOptions, type ClientOptions, type CommandContext, type RegistryCli } from './context.js';

interface RotateOptions extends ClientOptions {
  readonly activateAfter?: string;
  readonly grace?: string;
}

export function addIssuerCommands(program: CliCommand, cli: RegistryCli): void {
  const group = commandGroup(program, 'issuer', 'rotate and list issuer keys');
  const rotate = group
    .command('rotate')
    .summary('prepare a new issuer key; it becomes active after --activate-after (online)')
    .usage('[--activate-after <DURATION>] [--grace <DURATION>]')
    .description(
      'prepare a new issuer key; it becomes active after --activate-after (online).\n\n' +
        'Asks the running registry to generate a new issuer key (kept in its data directory, sealed like the current one) and to publish it at once, PREPARED, in a new trust bundle version signed by the active key. Gateways and agents that follow the registry trust it before it signs anything. After --activate-after it becomes ACTIVE (it signs certificates, revocation heads and trust bundles from then on) and the previous key is RETIRED: what it signed keeps verifying for --grace, then it leaves the trust bundle. Nothing needs to be stopped or restarted. With several registry processes on one database, the prepared key file (issuer-key.json.next.<PREPARED KEY ID>, named by the key id this command prints) must reach every data directory before the activation.',
    )
    .addOption(new Option('--activate-after <DURATION>', "how long the new key stays prepared: 30s, 10m, 2h, … (default: the registry's issuer_activation_delay_ms, 10 min)"))
    .addOption(new Option('--grace <DURATION>', 'how long the retired key stays trusted after the activation (default: until the last certificate it signed expires)'));
  addClientOptions(rotate).action(async function (this: CliCommand) {
    await issuerRotate(cli.context<RotateOptions>(this));
  });

  const list = group
    .command('list')
    .summary("list the registry's issuer keys and their state")
    .usage('[options]')
    .description("list the registry's issuer keys and their state.\n\nShows every key of the current trust bundle: prepared (and when it activates), active, retired (and until when it is trusted).");
  addClientOptions(list).action(async function (this: CliCommand) {
    await issuerList(cli.context<ClientOptions>(this));
  });
}

function duration(text: string | undefined, option: string): number {
  if (text === undefined) return 0;
  const ms = parseDuration(text);
  if (ms === undefined) throw new UsageError(`${option} must be a duration such as 30s, 10m, 2h or 7d`);
  return ms;
}

function stateName(state: IssuerKeyState): string {
  return (IssuerKeyState[state] ?? `state_${state}`).toLowerCase();
}

async function issuerRotate(ctx: CommandContext<RotateOptions>): Promise<void> {
  const activateAfterMs = duration(ctx.options.activateAfter, '--activate-after');
  const graceMs = duration(ctx.options.grace, '--grace');
  if (ctx.options.grace !== undefined && graceMs === 0) throw new UsageError('--grace must be longer than 0 (leave it out for "until the last certificate expires")');
  const conn = await connect(ctx, 'always');
  try {
    const res = await conn.client.rotateIssuer({ activateAfterMs: BigInt(activateAfterMs), graceMs: BigInt(graceMs) });
    const keyId = toHex(res.prepared?.keyId ?? new Uint8Array(0));
    const result = {
      prepared_key_id: keyId,
      activates_at_ms: Number(res.activatesAtMs),
      trust_bundle_version: Number(res.trustBundleVersion),
      grace_ms: graceMs,
      certificates_outliving_grace: Number(res.certificatesOutlivingGrace),
    };
    if (ctx.json) printJson(ctx.out, result);
    else {
      ctx.out(
        fields([
          ['prepared key', keyId],
          ['published in', `trust bundle version ${result.trust_bundle_version}`],
          ['activates at', time(result.activates_at_ms)],
          ['old key trusted', graceMs === 0 ? 'until the last certificate it signed expires' : `for ${durationText(graceMs)} after the activation`],
        ]),
      );
      if (result.certificates_outliving_grace > 0) {
        ctx.out(`\nwarning: ${result.certificates_outliving_grace} valid certificate(s) of the current key end after the grace period: they stop verifying then unless their agents rotate their keys (agent rotate) before.`);
      }
    }
  } finally {
    conn.close();
  }
}

function issuerJson(i: TrustedIssuer): Record<string, unknown> {
  return {
    key_id: toHex(i.keyId),
    state: stateName(i.state),
    not_after_ms: i.notAfterMs === 0n ? null : Number(i.notAfterMs),
    activates_at_ms: i.activatesAtMs === 0n ? null : Number(i.activatesAtMs),
  };
}

async function issuerList(ctx: CommandContext<ClientOptions>): Promise<void> {
  const conn = await connect(ctx, 'never');
  try {
    const { bundle } = conn;
    if (ctx.json) printJson(ctx.out, { trust_bundle_version: Number(bundle.currentVersion), issuers: bundle.issuers.map(issuerJson) });
    else {
      ctx.out(
        table(
          ['KEY ID', 'STATE', 'ACTIVATES AT', 'TRUSTED UNTIL'],
          bundle.issuers.map((i) => [toHex(i.keyId), stateName(i.state), time(i.activatesAtMs), i.notAfterMs === 0n ? '' : time(i.notAfterMs)]),
        ),
      );
      ctx.out(`\ntrust bundle version ${bundle.currentVersion}`);
    }
  } finally {
    conn.close();
  }
}
