/**
 * What every parley-registry command shares: the program name, the option
 * groups (connection, database, passphrase) and the per-run context a command
 * reads its options, data directory and output from.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Option, type CliCommand } from '@parley/cli-kit';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { RpcError } from '@parley/rpc';
import type { RegistryLocation } from '../registry.js';

export const PROGRAM = 'parley-registry';

/** Options of the program itself, accepted before or after the command. */
export interface GlobalOptions {
  readonly dataDir?: string;
  readonly json?: boolean;
}

/** `--server`, `--operator-key`, `--tls-ca`, `--tls-server-name`, `--timeout`. */
export interface ClientOptions {
  readonly server?: string;
  readonly operatorKey?: string;
  readonly tlsCa?: string;
  readonly tlsServerName?: string;
  readonly timeout?: string;
}

/** `--database-url`, `--database-schema`. */
export interface DatabaseOptions {
  readonly databaseUrl?: string;
  readonly databaseSchema?: string;
}

/** `--passphrase-file`. */
export interface PassphraseOptions {
  readonly passphraseFile?: string;
}

/** Options of the commands that talk to a running registry. */
export function addClientOptions(command: CliCommand): CliCommand {
  const group = 'Connection Options:';
  return command
    .addOption(new Option('--server <HOST:PORT>', 'registry address (env PARLEY_REGISTRY_SERVER; default: "listen" in registry.json, else 127.0.0.1:50051)').helpGroup(group))
    .addOption(new Option('--operator-key <FILE>', 'operator key that signs requests (default DATA_DIR/operator-key.json)').helpGroup(group))
    .addOption(new Option('--tls-ca <FILE>', 'connect with TLS, trusting this CA certificate (PEM); required for a non-loopback --server').helpGroup(group))
    .addOption(new Option('--tls-server-name <NAME>', 'expected name in the server certificate (default: the host)').helpGroup(group))
    .addOption(new Option('--timeout <SECONDS>', 'deadline of each call (default 10)').helpGroup(group));
}

/** Options of the commands that open the database themselves. */
export function addDatabaseOptions(command: CliCommand): CliCommand {
  const group = 'Database Options:';
  return command
    .addOption(new Option('--database-url <URL>', 'PostgreSQL URL (env DATABASE_URL); without one, PGlite in DATA_DIR/pgdata').helpGroup(group))
    .addOption(new Option('--database-schema <SCHEMA>', 'PostgreSQL schema to use (env PARLEY_REGISTRY_DB_SCHEMA; default public)').helpGroup(group));
}

/** Options of the commands that read or write the issuer key. */
export function addPassphraseOptions(command: CliCommand): CliCommand {
  return command.addOption(
    new Option('--passphrase-file <FILE>', 'read the issuer key passphrase from FILE (or env PARLEY_REGISTRY_PASSPHRASE)').helpGroup('Passphrase Options:'),
  );
}

/** What a command runs with. */
export interface CommandContext<O> {
  /** The command's options and the global ones. */
  readonly options: O & GlobalOptions;
  readonly json: boolean;
  readonly dataDir: string;
  /** Normal output (stdout), one block per call. */
  readonly out: (text: string) => void;
  /** The one crypto instance of this run, created on first use. */
  readonly crypto: () => Promise<ParleyCrypto>;
}

/** The state of one run of the program, shared by its commands. */
export interface RegistryCli {
  readonly out: (text: string) => void;
  /** The context of the command being run. */
  context<O>(command: CliCommand): CommandContext<O>;
}

/**
 * @param out where normal output goes
 * @returns the shared state of one run
 */
export function createRegistryCli(out: (text: string) => void): RegistryCli {
  let cryptoPromise: Promise<ParleyCrypto> | undefined;
  const crypto = (): Promise<ParleyCrypto> => (cryptoPromise ??= createCrypto());
  return {
    out,
    context<O>(command: CliCommand): CommandContext<O> {
      const options = command.optsWithGlobals<O & GlobalOptions>();
      const dataDir = options.dataDir ?? nonEmpty(process.env['PARLEY_REGISTRY_DATA_DIR']) ?? join('.data', 'registry');
      return { options, json: options.json === true, dataDir, out, crypto };
    },
  };
}

export function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/** Where the database is: DATA_DIR (PGlite) unless a URL is given (option or DATABASE_URL). */
export function databaseOf(ctx: CommandContext<DatabaseOptions>): RegistryLocation {
  const url = ctx.options.databaseUrl ?? nonEmpty(process.env['DATABASE_URL']);
  const schema = ctx.options.databaseSchema ?? nonEmpty(process.env['PARLEY_REGISTRY_DB_SCHEMA']);
  return { dataDir: ctx.dataDir, ...(url === undefined ? {} : { databaseUrl: url }), ...(schema === undefined ? {} : { databaseSchema: schema }) };
}

/** The issuer key passphrase: --passphrase-file, else PARLEY_REGISTRY_PASSPHRASE, else none. */
export function passphraseOf(ctx: CommandContext<PassphraseOptions>): string | undefined {
  const file = ctx.options.passphraseFile;
  if (file !== undefined) {
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (cause) {
      throw new RpcError('not_found', `cannot read passphrase file ${file}`, { cause });
    }
  }
  return nonEmpty(process.env['PARLEY_REGISTRY_PASSPHRASE']);
}

/** Reads a file the user named, or fails with not_found naming it. */
export function readFileOr(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new RpcError('not_found', `cannot read ${what} ${path}`, { cause });
  }
}
