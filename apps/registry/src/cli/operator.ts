/**
 * `parley-registry operator add|remove|list`: the operator keys allowed to
 * sign state-changing requests (docs/PROTOCOL.md §15.4).
 */
import { existsSync } from 'node:fs';
import { Option, UsageError, commandGroup, printJson, type CliCommand } from '@parley/cli-kit';
import { fromBase64Url, fromHex, toHex } from '@parley/crypto-core';
import { fromDidKey, toDidKey } from '@parley/identity';
import { RpcError } from '@parley/rpc';
import { operatorJson, table, time } from '../format.js';
import { readPublicKey, writeKeyFile } from '../key-file.js';
import { connect } from './connection.js';
import { addClientOptions, type ClientOptions, type CommandContext, type RegistryCli } from './context.js';

interface AddOptions extends ClientOptions {
  readonly keyFile?: string;
}

export function addOperatorCommands(program: CliCommand, cli: RegistryCli): void {
  const operator = commandGroup(program, 'operator', 'add, remove and list operator keys');

  const add = operator
    .command('add')
    .summary('list a new operator key (signed by an existing operator)')
    .usage('<NAME> (<PUBLIC_KEY> | --key-file <FILE>)')
    .description(
      'list a new operator key (signed by an existing operator).\n\n' +
        'Allows another Ed25519 key to sign state-changing requests. Give the key as did:key:z6Mk…, 64 hex digits or 43 base64url characters, or --key-file: an operator key file, created (mode 0600) when missing.',
    )
    .argument('<NAME>', "the operator's name")
    .argument('[PUBLIC_KEY]', 'its Ed25519 public key (or give --key-file)')
    .addOption(new Option('--key-file <FILE>', 'an operator key file; created (mode 0600) when missing'));
  addClientOptions(add).action(async function (this: CliCommand, name: string, keyText: string | undefined) {
    await operatorAdd(cli.context<AddOptions>(this), name, keyText);
  });

  const remove = operator
    .command('remove')
    .summary('delist an operator key (signed by an operator; never the last one)')
    .usage('<KEY_ID>')
    .description(
      'delist an operator key (signed by an operator; never the last one).\n\n' +
        'Stops a key from signing requests, at once, on every registry process sharing the database: for a leaked or retired operator key. KEY_ID is the 32 hex digits that `operator list` shows. The registry keeps the record (who removed it, when) and refuses to list the same key again; the last operator cannot be removed. An operator may remove its own key when another remains.',
    )
    .argument('<KEY_ID>', 'the key id, as `operator list` shows it');
  addClientOptions(remove).action(async function (this: CliCommand, keyIdText: string) {
    await operatorRemove(cli.context<ClientOptions>(this), keyIdText);
  });

  const list = operator
    .command('list')
    .summary('list the operator keys')
    .usage('[options]')
    .description('list the operator keys.\n\nLists every operator key allowed to sign state-changing requests.');
  addClientOptions(list).action(async function (this: CliCommand) {
    await operatorList(cli.context<ClientOptions>(this));
  });
}

async function operatorAdd(ctx: CommandContext<AddOptions>, name: string, keyText: string | undefined): Promise<void> {
  const keyFile = ctx.options.keyFile;
  if ((keyText === undefined) === (keyFile === undefined)) throw new UsageError('give either PUBLIC_KEY or --key-file F');
  const crypto = await ctx.crypto();
  let publicKey: Uint8Array;
  if (keyFile !== undefined) {
    if (!existsSync(keyFile)) writeKeyFile(crypto, keyFile, 'parley-operator-key', crypto.ed25519.generateKeyPair());
    publicKey = readPublicKey(crypto, keyFile, 'parley-operator-key').publicKey;
  } else {
    publicKey = parsePublicKey(keyText!);
  }
  const conn = await connect(ctx, 'always');
  try {
    const { operator } = await conn.client.addOperator({ name, publicKey });
    if (operator === undefined) throw new RpcError('internal', 'server returned no operator');
    if (ctx.json) printJson(ctx.out, operatorJson(operator));
    else ctx.out(`added operator "${operator.name}" with key ${toHex(operator.keyId)} (${toDidKey(operator.publicKey)})`);
  } finally {
    conn.close();
  }
}

async function operatorRemove(ctx: CommandContext<ClientOptions>, keyIdText: string): Promise<void> {
  if (!/^[0-9a-f]{32}$/.test(keyIdText)) throw new UsageError('KEY_ID must be 32 lowercase hex digits (see `operator list`)');
  const conn = await connect(ctx, 'always');
  try {
    const { operator } = await conn.client.removeOperator({ keyId: fromHex(keyIdText) });
    if (operator === undefined) throw new RpcError('internal', 'server returned no operator');
    if (ctx.json) printJson(ctx.out, operatorJson(operator));
    else ctx.out(`removed operator "${operator.name}" with key ${toHex(operator.keyId)}: it can no longer sign requests`);
  } finally {
    conn.close();
  }
}

async function operatorList(ctx: CommandContext<ClientOptions>): Promise<void> {
  const conn = await connect(ctx, 'if-available');
  try {
    const { operators } = await conn.client.listOperators({});
    if (ctx.json) printJson(ctx.out, { operators: operators.map(operatorJson) });
    else {
      const byId = new Map(operators.map((o) => [toHex(o.keyId), o.name]));
      ctx.out(
        table(
          ['KEY ID', 'NAME', 'ADDED', 'ADDED BY'],
          operators.map((o) => [toHex(o.keyId), o.name, time(o.addedAtMs), o.addedByKeyId.length === 0 ? 'init' : (byId.get(toHex(o.addedByKeyId)) ?? toHex(o.addedByKeyId))]),
        ),
      );
    }
  } finally {
    conn.close();
  }
}

/** A public key given as did:key, 64 hex digits or 43 base64url characters. */
function parsePublicKey(text: string): Uint8Array {
  let key: Uint8Array | undefined;
  try {
    if (text.startsWith('did:key:')) key = fromDidKey(text);
    else if (/^[0-9a-f]{64}$/i.test(text)) key = fromHex(text.toLowerCase());
    else if (/^[A-Za-z0-9_-]{43}$/.test(text)) key = fromBase64Url(text);
  } catch {
    key = undefined;
  }
  if (key === undefined || key.length !== 32) {
    throw new RpcError('malformed', `bad key encoding: expected an Ed25519 public key as did:key:z6Mk…, 64 hex digits or 43 base64url characters`);
  }
  return key;
}
