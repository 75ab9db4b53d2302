/**
 * `parley-registry issuer rotate`: a new issuer key; the old one stays in the
 * trust bundle until the last certificate it signed expires (docs/PROTOCOL.md
 * §15.5), and `serve` reports a rotation interrupted between commit and rename.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, UsageError, commandGroup, printJson, type CliCommand } from '@parley/cli-kit';
import { toHex, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey } from '@parley/identity';
import { RpcError } from '@parley/rpc';
import { DATA_FILES, readSettings } from '../config.js';
import { fields, time } from '../format.js';
import { isSealedKeyFile, readKeyFile, readPublicKey, renameDurably, writeKeyFile, type KdfStrength } from '../key-file.js';
import type { RegistryStore } from '../store.js';
import {
  PROGRAM,
  addDatabaseOptions,
  addPassphraseOptions,
  databaseOf,
  passphraseOf,
  type CommandContext,
  type DatabaseOptions,
  type PassphraseOptions,
  type RegistryCli,
} from './context.js';

interface RotateOptions extends DatabaseOptions, PassphraseOptions {
  readonly kdf?: string;
}

export function addIssuerCommands(program: CliCommand, cli: RegistryCli): void {
  const rotate = commandGroup(program, 'issuer', 'rotate the issuer key')
    .command('rotate')
    .summary('replace the issuer key (run with the server stopped)')
    .usage('[--passphrase-file <FILE>] [--kdf moderate|interactive]')
    .description(
      'replace the issuer key (run with the server stopped).\n\n' +
        "Creates a new issuer key and makes it the active one. The old key stays in the trust bundle until the last certificate it signed expires (its not_after_ms), so every earlier certificate keeps verifying; its secret key file is deleted. Restart `serve` afterwards (every registry process, with PostgreSQL).",
    )
    .addOption(new Option('--kdf <STRENGTH>', 'passphrase hashing cost: moderate (default, 256 MiB) or interactive (64 MiB)'));
  addPassphraseOptions(addDatabaseOptions(rotate)).action(async function (this: CliCommand) {
    await issuerRotate(cli.context<RotateOptions>(this));
  });
}

async function issuerRotate(ctx: CommandContext<RotateOptions>): Promise<void> {
  const crypto = await ctx.crypto();
  readSettings(ctx.dataDir);
  const kdf = (ctx.options.kdf ?? 'moderate') as KdfStrength;
  if (kdf !== 'moderate' && kdf !== 'interactive') throw new UsageError('--kdf must be moderate or interactive');
  const issuerPath = join(ctx.dataDir, DATA_FILES.issuerKey);
  const passphrase = passphraseOf(ctx);
  const old = readKeyFile(crypto, issuerPath, 'parley-registry-issuer-key', isSealedKeyFile(issuerPath) ? passphrase : undefined);
  const { openRegistry } = await import('../registry.js');
  const registry = await openRegistry(crypto, databaseOf(ctx));
  try {
    const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const nextPath = `${issuerPath}.next`;
    writeKeyFile(crypto, nextPath, 'parley-registry-issuer-key', issuer, { ...(passphrase === undefined ? {} : { passphrase, kdf }), overwrite: true });
    // The new key is on disk (and synced) before the commit; a crash between the commit and this rename
    // leaves it in .next, which \`serve\` detects and reports.
    const { retiredKeyId, notAfterMs } = await registry.store.rotateIssuer(issuer, Date.now());
    renameDurably(nextPath, issuerPath);
    const result = { issuer_key_id: toHex(issuer.keyId), retired_key_id: toHex(retiredKeyId), retired_not_after_ms: notAfterMs };
    if (!crypto.constantTimeEqual(retiredKeyId, old.keyId)) process.stderr.write(`${PROGRAM}: warning: the key file did not hold the active issuer key\n`);
    if (ctx.json) printJson(ctx.out, result);
    else ctx.out(fields([['new issuer key', result.issuer_key_id], ['retired key', `${result.retired_key_id} (trusted until ${time(notAfterMs)})`]]));
  } finally {
    await registry.close();
  }
}

/**
 * An `issuer rotate` interrupted between its commit and the rename leaves the
 * now-active issuer key in `issuer-key.json.next`: say so in one line, rather
 * than the generic "not the active issuer key".
 */
export async function checkInterruptedIssuerRotation(crypto: ParleyCrypto, store: RegistryStore, issuerPath: string, loadedKeyId: Uint8Array): Promise<void> {
  const nextPath = `${issuerPath}.next`;
  if (!existsSync(nextPath)) return;
  const active = (await store.issuers()).find((i) => i.active);
  if (active === undefined || crypto.constantTimeEqual(active.keyId, loadedKeyId)) return;
  let next: { keyId: Uint8Array } | undefined;
  try {
    next = readPublicKey(crypto, nextPath, 'parley-registry-issuer-key');
  } catch {
    return;
  }
  if (crypto.constantTimeEqual(next.keyId, active.keyId)) {
    throw new RpcError(
      'failed_precondition',
      `an interrupted \`issuer rotate\` left the active issuer key (${toHex(active.keyId)}) in ${nextPath}: move it over ${issuerPath} (mv ${nextPath} ${issuerPath}) and start again`,
    );
  }
}
