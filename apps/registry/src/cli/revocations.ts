/**
 * `parley-registry revocations`: the signed revocation list, its hash chain
 * and head signature verified (docs/PROTOCOL.md §15.6); `--watch` follows it
 * live (./watch.ts).
 */
import { Option, UsageError, printJson, type CliCommand } from '@parley/cli-kit';
import { toHex } from '@parley/crypto-core';
import { TrustBundle, RevocationListFollower } from '@parley/identity';
import { ENTRY_HEADERS, entryJson, entryRow, table } from '../format.js';
import { bundleOf, connect } from './connection.js';
import { PROGRAM, addClientOptions, readFileOr, type ClientOptions, type CommandContext, type RegistryCli } from './context.js';
import { watch } from './watch.js';

interface RevocationsOptions extends ClientOptions {
  readonly watch?: boolean;
  readonly after?: string;
  readonly trustBundle?: string;
}

export function addRevocationsCommand(program: CliCommand, cli: RegistryCli): void {
  const command = program
    .command('revocations')
    .summary('print the signed revocation list, verified (--watch to follow it live)')
    .usage('[--watch] [--after <VERSION>] [--trust-bundle <FILE>]')
    .description(
      'print the signed revocation list, verified (--watch to follow it live).\n\n' +
        'Fetches the revocation list, checks its hash chain and the issuer signature on its head, and prints it. With --watch it then follows the WatchRevocations stream, printing entries as they are committed (with --json: one JSON object per line, heartbeats included) and reconnecting from the last verified version after a dropped connection, so nothing is missed or repeated.',
    )
    .addOption(new Option('--watch', 'keep following (Ctrl-C to stop)'))
    .addOption(new Option('--after <VERSION>', 'start after this version (default 0: the whole list)'))
    .addOption(
      new Option(
        '--trust-bundle <FILE>',
        'verify against this pinned trust bundle JSON; without it the server\'s own bundle is used (trust on first use: a warning on stderr, and "verified": false in --json)',
      ),
    );
  addClientOptions(command).action(async function (this: CliCommand) {
    await revocations(cli.context<RevocationsOptions>(this));
  });
}

async function revocations(ctx: CommandContext<RevocationsOptions>): Promise<void> {
  const afterText = ctx.options.after ?? '0';
  if (!/^\d{1,15}$/.test(afterText)) throw new UsageError('--after must be a version number');
  const conn = await connect(ctx, 'if-available');
  try {
    const { crypto, client } = conn;
    const pinned = ctx.options.trustBundle;
    const trustBundle = pinned !== undefined ? TrustBundle.fromJSON(crypto, readFileOr(pinned, 'trust bundle').toString('utf8')) : bundleOf(crypto, conn.bundle);
    let after = Number(afterText);
    // Starting mid-list: trust the chain hash the signed head reports at that version.
    let headHash: Uint8Array | undefined;
    if (after > 0) {
      const probe = await client.getRevocationList({ afterVersion: BigInt(after - 1), maxEntries: 1 });
      headHash = probe.entries[0]?.entryHash;
    }
    const follower = new RevocationListFollower(crypto, {
      registryId: conn.registryId,
      trustBundle,
      version: after,
      ...(headHash === undefined ? {} : { headHash }),
    });
    const all = [];
    for (;;) {
      const res = await client.getRevocationList({ afterVersion: BigInt(after) });
      follower.apply(res.entries, res.head);
      all.push(...res.entries);
      after = follower.version;
      if (BigInt(after) >= res.currentVersion) break;
    }
    const head = { version: follower.version, issuer_key_id: toHex(conn.bundle.issuers.find((i) => i.active)?.keyId ?? new Uint8Array(0)) };
    // Checked against the registry's own trust bundle, a signature proves nothing about who runs it: say so.
    const isPinned = pinned !== undefined;
    if (!isPinned) {
      process.stderr.write(`${PROGRAM}: warning: trust bundle not pinned: signatures checked against the keys this server sent (trust on first use); pass --trust-bundle FILE\n`);
    }
    const checked = isPinned ? 'chain and issuer signature verified' : 'chain consistent, signature by an unpinned key';
    if (ctx.options.watch !== true) {
      if (ctx.json) printJson(ctx.out, { version: head.version, verified: isPinned, trust_bundle_pinned: isPinned, entries: all.map(entryJson) });
      else {
        ctx.out(all.length === 0 ? 'no revocations' : table(ENTRY_HEADERS, all.map(entryRow)));
        ctx.out(`\nversion ${head.version}, ${checked}`);
      }
      return;
    }
    if (ctx.json) for (const e of all) ctx.out(JSON.stringify({ type: 'entry', ...entryJson(e) }));
    else {
      if (all.length > 0) ctx.out(table(ENTRY_HEADERS, all.map(entryRow)));
      ctx.out(`-- version ${follower.version}, ${checked}; watching (Ctrl-C to stop)`);
    }
    await watch(ctx, conn, follower);
  } finally {
    conn.close();
  }
}
