/**
 * `parley-registry revocations`: the signed revocation list, its hash chain
 * and head signature verified (docs/PROTOCOL.md §15.6); `--watch` follows it
 * live (./watch.ts).
 */
import { Option, UsageError, printJson, type CliCommand } from '@parley/cli-kit';
import { toHex } from '@parley/crypto-core';
import { IdentityError, TrustBundle, RevocationListFollower } from '@parley/identity';
import type { GetRevocationListResponse, SignedRevocationHead, RevocationListEntry } from '@parley/proto';
import { TrustBundleFollower } from '@parley/protocol';
import { ENTRY_HEADERS, entryJson, entryRow, table } from '../format.js';
import { bundleOf, connect, tlsArguments, type Connection } from './connection.js';
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
        'Fetches the revocation list, checks its hash chain and the issuer signature on its head, and prints it. With --watch it then follows the WatchRevocations stream, printing entries as they are committed (with --json: one JSON object per line, heartbeats included) and reconnecting from the last verified version after a dropped connection, so nothing is missed or repeated.\n\n' +
          "The trust bundle is followed from the pinned one as gateways and agents follow it (the registry's signed versions, each checked by a key of the one before, PROTOCOL §15.9), so an issuer rotation does not stop a watch.",
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
    const pinnedBundle = pinned !== undefined ? TrustBundle.fromJSON(crypto, readFileOr(pinned, 'trust bundle').toString('utf8')) : bundleOf(crypto, conn.bundle);
    // Followed from the pinned bundle (or the server's, unpinned) through the registry's signed versions, as a gateway
    // does: a head signed by a key an issuer rotation introduced verifies once the version naming it is fetched.
    const bundles = new TrustBundleFollower({ crypto, client, registryId: conn.registryId, pinned: pinnedBundle });
    await bundles.refresh().catch(() => undefined); // a pin that is too old is reported when a head does not verify
    const trustBundle = bundles.trustBundle;
    const verify = headVerifier(ctx, conn, bundles);
    let after = Number(afterText);
    // Starting mid-list: trust the chain hash the signed head reports at that version.
    let headHash: Uint8Array | undefined;
    if (after > 0) {
      const probe: GetRevocationListResponse = await client.getRevocationList({ afterVersion: BigInt(after - 1), maxEntries: 1 });
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
      await verify(follower, res.entries, res.head);
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
    await watch(ctx, conn, follower, verify);
  } finally {
    conn.close();
  }
}

/** Applies one batch to the revocation list follower; see {@link headVerifier}. */
export type BatchVerifier = (
  follower: RevocationListFollower,
  entries: readonly RevocationListEntry[],
  head: SignedRevocationHead | undefined,
  trustBundleVersion?: bigint,
) => Promise<ReturnType<RevocationListFollower['apply']>>;

/**
 * Applies batches with the trust bundle kept current: a batch's `trust_bundle_version` hint fetches a newer
 * version first (an issuer rotation's activation: the head is then signed by the new key), and a head whose
 * key the bundle lacks makes one refresh and a second try. A head that still does not verify ends the
 * command with an error that names the command fetching the current bundle.
 */
function headVerifier(ctx: CommandContext<RevocationsOptions>, conn: Connection, bundles: TrustBundleFollower): BatchVerifier {
  return async (follower, entries, head, trustBundleVersion) => {
    if (trustBundleVersion !== undefined && trustBundleVersion > 0n) await bundles.hint(trustBundleVersion);
    try {
      return follower.apply(entries, head);
    } catch (error) {
      if (!(error instanceof IdentityError) || (error.code !== 'unknown_issuer' && error.code !== 'expired')) throw error;
      let refused = '';
      try {
        await bundles.refresh();
      } catch (failure) {
        refused = `; following the registry's trust bundle from it failed: ${messageOf(failure)}`;
      }
      if (refused === '') {
        try {
          return follower.apply(entries, head);
        } catch (again) {
          if (!(again instanceof IdentityError) || (again.code !== 'unknown_issuer' && again.code !== 'expired')) throw again;
        }
      }
      const file = ctx.options.trustBundle;
      const fetch = `${PROGRAM} trust-bundle --server ${conn.address}${tlsArguments(ctx.options)} > ${file ?? 'trust-bundle.json'}`;
      throw new IdentityError(
        error.code,
        `${messageOf(error)}${refused}: ${file === undefined ? 'the registry changed its issuer keys' : `the pinned trust bundle ${file} is too old to follow to the registry's current one`}; fetch the bundle again (check its keys out of band): ${fetch}`,
        { cause: error },
      );
    }
  };
}

/** An error's one line, without the `[code] ` prefix of the Parley error classes. */
function messageOf(error: unknown): string {
  const e = error as { localDetails?: unknown; message?: unknown } | null;
  const text = typeof e?.localDetails === 'string' ? e.localDetails : typeof e?.message === 'string' ? e.message : String(error);
  return text.replace(/^\[[a-z_]+\] /, '');
}
