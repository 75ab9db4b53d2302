/**
 * `parley-registry init`: creates the data directory (settings, issuer key,
 * first operator key) and the database, all or nothing.
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Option, UsageError, printJson, type CliCommand } from '@parley/cli-kit';
import { toHex } from '@parley/crypto-core';
import { createIssuerKey, keyId as computeKeyId } from '@parley/identity';
import { RpcError } from '@parley/rpc';
import { DATA_FILES, DEFAULT_SETTINGS, databaseText, readSettings, settingsJson, type RegistrySettings } from '../config.js';
import { fields } from '../format.js';
import { writeKeyFile, writeSecretFile, type KdfStrength } from '../key-file.js';
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

interface InitOptions extends DatabaseOptions, PassphraseOptions {
  readonly operatorName?: string;
  readonly listen?: string;
  readonly readsRequireAuth?: boolean;
  readonly kdf?: string;
}

export function addInitCommand(program: CliCommand, cli: RegistryCli): void {
  const command = program
    .command('init')
    .summary('create the issuer key, the first operator key and the database')
    .usage('[--operator-name <NAME>] [--listen <HOST:PORT>] [--passphrase-file <FILE>] [--kdf moderate|interactive]')
    .description(
      'create the issuer key, the first operator key and the database.\n\n' +
        'Creates DATA_DIR with registry.json, issuer-key.json (mode 0600; sealed with Argon2id + ChaCha20-Poly1305 when a passphrase is given) and operator-key.json (mode 0600), and initialises the database (PGlite in DATA_DIR/pgdata, or DATABASE_URL). Refuses an initialised directory or database.',
    )
    .addOption(new Option('--operator-name <NAME>', 'name of the first operator (default "admin")'))
    .addOption(new Option('--listen <HOST:PORT>', 'default serve address to record (default 127.0.0.1:50051)'))
    .addOption(new Option('--reads-require-auth', 'require an operator signature on reads too'))
    .addOption(new Option('--kdf <STRENGTH>', 'passphrase hashing cost: moderate (default, 256 MiB) or interactive (64 MiB)'));
  addPassphraseOptions(addDatabaseOptions(command)).action(async function (this: CliCommand) {
    await init(cli.context<InitOptions>(this));
  });
}

async function init(ctx: CommandContext<InitOptions>): Promise<void> {
  const crypto = await ctx.crypto();
  const configPath = join(ctx.dataDir, DATA_FILES.config);
  if (existsSync(configPath)) {
    let engine = '';
    try {
      const record = readSettings(ctx.dataDir).database;
      if (record !== undefined) engine = ` for ${databaseText(record, ctx.dataDir)}`;
    } catch {
      // a registry.json with problems: `serve` reports them
    }
    throw new RpcError('already_exists', `${ctx.dataDir} is already initialised${engine} (${DATA_FILES.config} exists)`);
  }
  const kdf = (ctx.options.kdf ?? 'moderate') as KdfStrength;
  if (kdf !== 'moderate' && kdf !== 'interactive') throw new UsageError('--kdf must be moderate or interactive');
  const operatorName = ctx.options.operatorName ?? 'admin';
  if (!/^[a-z0-9][a-z0-9._@-]{0,63}$/.test(operatorName)) throw new UsageError('--operator-name must be 1..64 characters of [a-z0-9._@-]');
  const settings: RegistrySettings = {
    ...DEFAULT_SETTINGS,
    listen: ctx.options.listen ?? DEFAULT_SETTINGS.listen,
    readsRequireAuth: ctx.options.readsRequireAuth === true,
  };
  const passphrase = passphraseOf(ctx);
  const where = databaseOf(ctx);
  // Recorded, so that `serve` without DATABASE_URL (or with another schema) refuses before opening anything.
  const recorded: RegistrySettings = {
    ...settings,
    database: where.databaseUrl === undefined ? { engine: 'pglite' } : { engine: 'postgresql', ...(where.databaseSchema === undefined ? {} : { schema: where.databaseSchema }) },
  };
  mkdirSync(ctx.dataDir, { recursive: true, mode: 0o700 });

  const { openRegistry } = await import('../registry.js');
  const registry = await openRegistry(crypto, where);
  const issuerPath = join(ctx.dataDir, DATA_FILES.issuerKey);
  const operatorPath = join(ctx.dataDir, DATA_FILES.operatorKey);
  const written: string[] = [];
  let committed = false;
  try {
    const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const operator = crypto.ed25519.generateKeyPair();
    const operatorKeyId = computeKeyId(crypto, operator.publicKey);
    writeKeyFile(crypto, issuerPath, 'parley-registry-issuer-key', issuer, passphrase === undefined ? {} : { passphrase, kdf });
    written.push(issuerPath);
    writeKeyFile(crypto, operatorPath, 'parley-operator-key', operator);
    written.push(operatorPath);
    // Every file is written before the commit: once the database names these keys, they exist on disk.
    writeSecretFile(configPath, settingsJson(recorded));
    written.push(configPath);
    const registryId = crypto.randomBytes(16);
    try {
      await registry.store.initialise({ registryId, issuer, operator: { publicKey: operator.publicKey, keyId: operatorKeyId, name: operatorName }, nowMs: Date.now() });
    } catch (error) {
      // A lost connection may have lost it during COMMIT: the outcome is unknown, so the keys must stay.
      if (RpcError.from(error).code === 'unavailable') committed = true;
      throw error;
    }
    committed = true;
    const result = {
      data_dir: resolve(ctx.dataDir),
      database: registry.db.location,
      registry_id: toHex(registryId),
      issuer_key_id: toHex(issuer.keyId),
      issuer_key_file: issuerPath,
      issuer_key_sealed: passphrase !== undefined,
      operator_key_id: toHex(operatorKeyId),
      operator_key_file: operatorPath,
      listen: settings.listen,
    };
    if (ctx.json) printJson(ctx.out, result);
    else {
      ctx.out(
        fields([
          ['registry id', result.registry_id],
          ['database', result.database],
          ['issuer key', `${result.issuer_key_id} (${issuerPath}${passphrase === undefined ? ', not sealed: give a passphrase to seal it' : ', sealed'})`],
          ['operator key', `${result.operator_key_id} (${operatorPath}, operator "${operatorName}")`],
          ['listen', settings.listen],
        ]),
      );
      ctx.out(`\nNext: ${PROGRAM} serve`);
    }
  } catch (error) {
    // Nothing half-made: before the commit, remove the files this run wrote (the transaction rolled back).
    // After it (or when its outcome is unknown) never: the database names those keys.
    if (!committed) for (const path of written) rmSync(path, { force: true });
    else process.stderr.write(`${PROGRAM}: warning: the database may hold the new registry; the key files in ${ctx.dataDir} were kept\n`);
    throw error;
  } finally {
    await registry.close();
  }
}
