/**
 * `parley-registry join-token create|list|revoke`: one-time enrolment tokens
 * (docs/PROTOCOL.md §15.11). An operator creates a token for one agent id,
 * type and capability set and hands it to whoever runs the agent; the agent
 * generates its key on its own machine and enrols with `agent enroll`. The
 * registry stores only a hash of the token, accepts it once, until it expires.
 */
import { Option, UsageError, commandGroup, printJson, type CliCommand } from '@parley/cli-kit';
import { fromHex, toHex } from '@parley/crypto-core';
import type { JoinToken } from '@parley/proto';
import { durationText, fields, parseDuration, table, time } from '../format.js';
import { writeSecretFile } from '../key-file.js';
import { connect, tlsArguments } from './connection.js';
import { PROGRAM, addClientOptions, type ClientOptions, type CommandContext, type RegistryCli } from './context.js';

interface CreateOptions extends ClientOptions {
  readonly name: string;
  readonly type: string;
  readonly cap?: string[];
  readonly ttl?: string;
  readonly validDays?: string;
  readonly out?: string;
}

interface ListOptions extends ClientOptions {
  readonly all?: boolean;
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

export function addJoinTokenCommands(program: CliCommand, cli: RegistryCli): void {
  const group = commandGroup(program, 'join-token', 'one-time enrolment tokens for agents that make their own keys');
  const create = group
    .command('create')
    .summary('create a one-time join token for one agent id (shown once)')
    .usage('--name <AGENT_ID> --type <TYPE> [--cap <CAPABILITY>]... [--ttl <DURATION>] [--valid-days <N>] [--out <FILE>]')
    .description(
      'create a one-time join token for one agent id (shown once).\n\n' +
        'The token lets one agent enrol itself (`agent enroll` on its machine, or enroll() in @parley/client) as --name, with this type and these capabilities, before --ttl runs out. The registry keeps only a hash of it. The token is a secret until used: --out writes it to a 0600 file instead of printing it.',
    )
    .addOption(new Option('--name <AGENT_ID>', 'the agent id the token enrols (required)').makeOptionMandatory())
    .addOption(new Option('--type <TYPE>', 'agent type of the certificate (required)').makeOptionMandatory())
    .addOption(new Option('--cap <CAPABILITY>', 'a capability; repeat for several').argParser(collect))
    .addOption(new Option('--ttl <DURATION>', 'how long the token is usable: 1s .. 7d (default 1h)'))
    .addOption(new Option('--valid-days <N>', "validity of the certificate issued at enrolment, in days (default: the registry's, 90)"))
    .addOption(new Option('--out <FILE>', 'write the token to FILE (mode 0600) instead of stdout'));
  addClientOptions(create).action(async function (this: CliCommand) {
    await joinTokenCreate(cli.context<CreateOptions>(this));
  });

  const list = group
    .command('list')
    .summary('list outstanding join tokens (never their secrets)')
    .usage('[--all]')
    .description('list outstanding join tokens (never their secrets).\n\nLists unused, unrevoked, unexpired tokens; --all adds used, revoked and expired ones (kept 7 days after expiry).')
    .addOption(new Option('--all', 'also used, revoked and expired tokens'));
  addClientOptions(list).action(async function (this: CliCommand) {
    await joinTokenList(cli.context<ListOptions>(this));
  });

  const revoke = group
    .command('revoke')
    .summary('make an unused join token unusable')
    .usage('<TOKEN_ID>')
    .description('make an unused join token unusable.\n\nTOKEN_ID is the 32 hex digits after "pjt1." (as `join-token list` shows them).')
    .argument('<TOKEN_ID>', 'the token id');
  addClientOptions(revoke).action(async function (this: CliCommand, tokenId: string) {
    await joinTokenRevoke(cli.context<ClientOptions>(this), tokenId);
  });
}

function tokenJson(t: JoinToken): Record<string, unknown> {
  return {
    token_id: toHex(t.tokenId),
    agent_id: t.agentId,
    agent_type: t.agentType,
    capabilities: t.capabilities,
    created_at_ms: Number(t.createdAtMs),
    expires_at_ms: Number(t.expiresAtMs),
    used_at_ms: t.usedAtMs === 0n ? null : Number(t.usedAtMs),
    revoked_at_ms: t.revokedAtMs === 0n ? null : Number(t.revokedAtMs),
    created_by_key_id: toHex(t.createdByKeyId),
  };
}

function statusOf(t: JoinToken, nowMs: number): string {
  if (t.usedAtMs !== 0n) return 'used';
  if (t.revokedAtMs !== 0n) return 'revoked';
  return Number(t.expiresAtMs) <= nowMs ? 'expired' : 'unused';
}

async function joinTokenCreate(ctx: CommandContext<CreateOptions>): Promise<void> {
  const ttlMs = ctx.options.ttl === undefined ? 3_600_000 : parseDuration(ctx.options.ttl);
  if (ttlMs === undefined || ttlMs < 1000 || ttlMs > 7 * 86_400_000) throw new UsageError('--ttl must be a duration from 1s to 7d, such as 15m or 1h');
  const days = ctx.options.validDays;
  if (days !== undefined && !/^[1-9]\d{0,4}$/.test(days)) throw new UsageError('--valid-days must be a whole number of days');
  const conn = await connect(ctx, 'always');
  try {
    const res = await conn.client.createJoinToken({
      agentId: ctx.options.name,
      agentType: ctx.options.type,
      capabilities: ctx.options.cap ?? [],
      ttlMs: BigInt(ttlMs),
      validityMs: days === undefined ? 0n : BigInt(Number(days) * 86_400_000),
    });
    const out = ctx.options.out;
    if (out !== undefined) writeSecretFile(out, `${res.token}\n`);
    const result = { token_id: toHex(res.tokenId), agent_id: ctx.options.name, expires_at_ms: Number(res.expiresAtMs), ...(out === undefined ? { token: res.token } : { token_file: out }) };
    if (ctx.json) printJson(ctx.out, result);
    else {
      ctx.out(
        fields([
          ...(out === undefined ? [['token', res.token] as const] : [['token file', out] as const]),
          ['token id', result.token_id],
          ['enrols', ctx.options.name],
          ['expires', `${time(result.expires_at_ms)} (in ${durationText(ttlMs)})`],
        ]),
      );
      ctx.out(`\nOn the agent's machine: ${PROGRAM} agent enroll ${ctx.options.name} --token-file FILE --server ${conn.address}${tlsArguments(ctx.options)}`);
    }
  } finally {
    conn.close();
  }
}

async function joinTokenList(ctx: CommandContext<ListOptions>): Promise<void> {
  const conn = await connect(ctx, 'always');
  try {
    const { tokens } = await conn.client.listJoinTokens({ all: ctx.options.all === true });
    const now = Date.now();
    if (ctx.json) printJson(ctx.out, { tokens: tokens.map(tokenJson) });
    else ctx.out(tokens.length === 0 ? 'no join tokens' : table(['TOKEN ID', 'AGENT', 'TYPE', 'STATUS', 'EXPIRES'], tokens.map((t) => [toHex(t.tokenId), t.agentId, t.agentType, statusOf(t, now), time(t.expiresAtMs)])));
  } finally {
    conn.close();
  }
}

async function joinTokenRevoke(ctx: CommandContext<ClientOptions>, tokenId: string): Promise<void> {
  if (!/^[0-9a-f]{32}$/.test(tokenId)) throw new UsageError('TOKEN_ID must be 32 lowercase hex digits');
  const conn = await connect(ctx, 'always');
  try {
    const { token } = await conn.client.revokeJoinToken({ tokenId: fromHex(tokenId) });
    if (ctx.json) printJson(ctx.out, token === undefined ? {} : tokenJson(token));
    else ctx.out(`revoked join token ${tokenId}`);
  } finally {
    conn.close();
  }
}
