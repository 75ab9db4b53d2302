/**
 * `parley-registry agent register|enroll|list|show|rotate|revoke`: agents, their
 * identity keys (proof of possession, docs/PROTOCOL.md §15.2, §15.11) and revocation.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Option, UsageError, commandGroup, printJson, type CliCommand } from '@parley/cli-kit';
import { fromHex } from '@parley/crypto-core';
import { ChallengePurpose, RevocationReason } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import { enrolmentLayout, joinTokenHash, parseJoinToken, registrationProofLayout, rotationAuthorisationLayout, rotationProofLayout } from '@parley/protocol';
import { AGENT_HEADERS, agentFields, agentJson, agentRow, entryJson, table } from '../format.js';
import { readKeyFile, renameDurably, writeKeyFile } from '../key-file.js';
import { REVOKE_UNKNOWN_METADATA_KEY } from '../wire.js';
import { connect } from './connection.js';
import { addClientOptions, nonEmpty, readFileOr, type ClientOptions, type CommandContext, type RegistryCli } from './context.js';

interface RegisterOptions extends ClientOptions {
  readonly type: string;
  readonly cap?: string[];
  readonly keyFile?: string;
  readonly validDays?: string;
}

interface EnrollOptions extends ClientOptions {
  readonly token?: string;
  readonly tokenFile?: string;
  readonly keyFile?: string;
}

interface ListOptions extends ClientOptions {
  readonly type?: string;
  readonly cap?: string;
  readonly status?: string;
  readonly limit?: string;
  readonly pageToken?: string;
  readonly all?: boolean;
}

interface RotateOptions extends ClientOptions {
  readonly keyFile?: string;
  readonly validDays?: string;
}

interface RevokeOptions extends ClientOptions {
  readonly serial?: string;
  readonly reason?: string;
  readonly message?: string;
  readonly at?: string;
  readonly unknownOk?: boolean;
}

const REASON_HELP = 'unspecified, key-compromise, superseded, cessation-of-operation, affiliation-changed, privilege-withdrawn';

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

export function addAgentCommands(program: CliCommand, cli: RegistryCli): void {
  const agent = commandGroup(program, 'agent', 'register, enrol, list, show, rotate and revoke agents');

  const register = agent
    .command('register')
    .summary('register an agent and issue its certificate')
    .usage('<AGENT_ID> --type <TYPE> [--cap <CAPABILITY>]... [--key-file <FILE>] [--valid-days <N>]')
    .description(
      'register an agent and issue its certificate.\n\n' +
        'Registers AGENT_ID with proof of possession of its identity key: the agent key signs a fresh server challenge. The key is read from --key-file; when that file does not exist a new key is generated and written there first (mode 0600). Default key file: DATA_DIR/agents/AGENT_ID.key.json.',
    )
    .argument('<AGENT_ID>', 'the agent id to register')
    .addOption(new Option('--type <TYPE>', 'agent type, e.g. planner (required)').makeOptionMandatory())
    .addOption(new Option('--cap <CAPABILITY>', 'a capability; repeat for several').argParser(collect))
    .addOption(new Option('--key-file <FILE>', "the agent's key file"))
    .addOption(new Option('--valid-days <N>', "certificate validity in days (default: the registry's, 90)"));
  addClientOptions(register).action(async function (this: CliCommand, agentId: string) {
    await agentRegister(cli.context<RegisterOptions>(this), agentId);
  });

  const enroll = agent
    .command('enroll')
    .summary("enrol this machine's agent with a join token (its key never leaves this machine)")
    .usage('<AGENT_ID> (--token-file <FILE> | --token <TOKEN>) [--key-file <FILE>]')
    .description(
      "enrol this machine's agent with a join token (its key never leaves this machine).\n\n" +
        'Run on the agent\'s machine with a one-time join token from `join-token create`. Generates the identity key here (written to --key-file first, mode 0600; an existing key file is reused), signs the enrolment proof of possession over the token, the registry id, the agent id and the time, and registers. Needs no operator key. The token is a bearer secret: pass it in a file (or PARLEY_JOIN_TOKEN) rather than on the command line, and use TLS (--tls-ca) off loopback. Default key file: DATA_DIR/agents/AGENT_ID.key.json.',
    )
    .argument('<AGENT_ID>', 'the agent id the token was created for')
    .addOption(new Option('--token-file <FILE>', 'read the join token from FILE'))
    .addOption(new Option('--token <TOKEN>', 'the join token (visible to other users of this machine: prefer --token-file or env PARLEY_JOIN_TOKEN)'))
    .addOption(new Option('--key-file <FILE>', "the agent's key file (created when missing)"));
  addClientOptions(enroll).action(async function (this: CliCommand, agentId: string) {
    await agentEnroll(cli.context<EnrollOptions>(this), agentId);
  });

  const list = agent
    .command('list')
    .summary('list agents (paginated; filter by type, capability, status)')
    .usage('[--type <T>] [--cap <C>] [--status active|revoked|expired] [--limit <N>] [--page-token <T> | --all]')
    .description('list agents (paginated; filter by type, capability, status).\n\nLists agents in agent id order, one page at a time. Prints the token of the next page, if any.')
    .addOption(new Option('--type <TYPE>', 'only agents of this type'))
    .addOption(new Option('--cap <CAPABILITY>', 'only agents holding this capability'))
    .addOption(new Option('--status <STATUS>', 'only agents in this status: active, revoked or expired'))
    .addOption(new Option('--limit <N>', 'page size, 1..500 (default 50)'))
    .addOption(new Option('--page-token <TOKEN>', 'continue after a previous page'))
    .addOption(new Option('--all', 'fetch every page'));
  addClientOptions(list).action(async function (this: CliCommand) {
    await agentList(cli.context<ListOptions>(this));
  });

  const show = agent
    .command('show')
    .summary('show one agent and its current certificate')
    .usage('<AGENT_ID>')
    .description('show one agent and its current certificate.\n\nShows an agent: status, capabilities, and its current certificate (serial, did:key, validity, issuer).')
    .argument('<AGENT_ID>', 'the agent to show');
  addClientOptions(show).action(async function (this: CliCommand, agentId: string) {
    await agentShow(cli.context<ClientOptions>(this), agentId);
  });

  const rotate = agent
    .command('rotate')
    .summary("replace an agent's identity key (authorised by the current key)")
    .usage('<AGENT_ID> [--key-file <FILE>] [--valid-days <N>]')
    .description(
      "replace an agent's identity key (authorised by the current key).\n\n" +
        'Generates a new identity key, has the current key (from --key-file) authorise the rotation and the new key prove possession, and on success replaces the key file with the new key. The old certificate is revoked (reason superseded). A new key waiting in KEY_FILE.next from an interrupted run is reused.',
    )
    .argument('<AGENT_ID>', 'the agent whose key to replace')
    .addOption(new Option('--key-file <FILE>', "the agent's current key file (default DATA_DIR/agents/AGENT_ID.key.json)"))
    .addOption(
      new Option('--valid-days <N>', "validity of the new certificate in days, capped at the current certificate's end (default: that end; rotation changes the key, not the grant)"),
    );
  addClientOptions(rotate).action(async function (this: CliCommand, agentId: string) {
    await agentRotate(cli.context<RotateOptions>(this), agentId);
  });

  const revoke = agent
    .command('revoke')
    .summary('revoke an agent id (all its certificates) or one certificate serial')
    .usage('(<AGENT_ID> | --serial <HEX>) [--reason <R>] [--message <TEXT>] [--at <TIME>] [--unknown-ok]')
    .description(
      'revoke an agent id (all its certificates) or one certificate serial.\n\n' +
        'Appends one entry to the signed revocation list. Revoking an agent id revokes every certificate it has and will have; --serial revokes one certificate. ' +
        'An id or serial the registry does not know is refused (a typo), unless --unknown-ok: for re-issuing, after a restore from an older backup, the revocations gateways kept (docs/OPERATIONS.md, section 7.3); such an agent id can never be registered afterwards.',
    )
    .argument('[AGENT_ID]', 'the agent to revoke (or give --serial)')
    .addOption(new Option('--serial <HEX>', 'revoke this certificate serial (32 hex digits) instead of an agent id'))
    .addOption(new Option('--reason <R>', REASON_HELP))
    .addOption(new Option('-m, --message <TEXT>', 'free-text detail (up to 1024 characters)'))
    .addOption(new Option('--at <TIME>', 'when it takes effect: ISO 8601 or ms since the epoch (default now; not in the future)'))
    .addOption(new Option('--unknown-ok', 'revoke it even if this registry does not know the agent id or serial (re-issuing revocations after a restore)'));
  addClientOptions(revoke).action(async function (this: CliCommand, agentId: string | undefined) {
    await agentRevoke(cli.context<RevokeOptions>(this), agentId);
  });
}

async function agentRegister(ctx: CommandContext<RegisterOptions>, agentId: string): Promise<void> {
  const days = ctx.options.validDays;
  if (days !== undefined && !/^[1-9]\d{0,4}$/.test(days)) throw new UsageError('--valid-days must be a whole number of days');
  const conn = await connect(ctx, 'always');
  try {
    const { crypto, client, registryId } = conn;
    const keyPath = agentKeyPath(ctx, agentId);
    if (!existsSync(keyPath)) {
      mkdirSync(join(keyPath, '..'), { recursive: true, mode: 0o700 });
      writeKeyFile(crypto, keyPath, 'parley-agent-key', crypto.ed25519.generateKeyPair());
    }
    const key = readKeyFile(crypto, keyPath, 'parley-agent-key');
    const { challenge } = await client.createChallenge({ purpose: ChallengePurpose.REGISTER });
    const proofSignature = crypto.ed25519.sign(registrationProofLayout({ registryId, challenge, agentId, identityPublicKey: key.publicKey }), key.secretKey);
    const nowMs = Date.now();
    const { agent } = await client.registerAgent({
      agentId,
      agentType: ctx.options.type,
      capabilities: ctx.options.cap ?? [],
      identityPublicKey: key.publicKey,
      challenge,
      proofSignature,
      validFromMs: BigInt(nowMs),
      validUntilMs: days === undefined ? 0n : BigInt(nowMs + Number(days) * 86_400_000),
    });
    if (agent === undefined) throw new RpcError('internal', 'server returned no agent');
    if (ctx.json) printJson(ctx.out, { ...agentJson(agent), key_file: keyPath });
    else ctx.out(agentFields(agent, [['key file', keyPath]]));
  } finally {
    conn.close();
  }
}

async function agentEnroll(ctx: CommandContext<EnrollOptions>, agentId: string): Promise<void> {
  const { tokenFile, token: tokenText } = ctx.options;
  if (tokenFile !== undefined && tokenText !== undefined) throw new UsageError('give --token-file or --token, not both');
  const text = tokenFile !== undefined ? readFileOr(tokenFile, 'join token file').toString('utf8') : (tokenText ?? nonEmpty(process.env['PARLEY_JOIN_TOKEN']));
  if (text === undefined) throw new UsageError('a join token is required: --token-file FILE, --token TOKEN or env PARLEY_JOIN_TOKEN');
  const token = parseJoinToken(text);
  const conn = await connect(ctx, 'never');
  try {
    const { crypto, client, registryId } = conn;
    const keyPath = agentKeyPath(ctx, agentId);
    if (!existsSync(keyPath)) {
      mkdirSync(join(keyPath, '..'), { recursive: true, mode: 0o700 });
      writeKeyFile(crypto, keyPath, 'parley-agent-key', crypto.ed25519.generateKeyPair());
    }
    const key = readKeyFile(crypto, keyPath, 'parley-agent-key');
    const timestampMs = BigInt(Date.now());
    const proof = enrolmentLayout({ registryId, tokenId: token.tokenId, tokenHash: joinTokenHash(crypto, token.tokenId, token.tokenSecret), agentId, identityPublicKey: key.publicKey, timestampMs });
    const { agent } = await client.enrollAgent({
      tokenId: token.tokenId,
      tokenSecret: token.tokenSecret,
      agentId,
      identityPublicKey: key.publicKey,
      timestampMs,
      proofSignature: crypto.ed25519.sign(proof, key.secretKey),
    });
    if (agent === undefined) throw new RpcError('internal', 'server returned no agent');
    if (ctx.json) printJson(ctx.out, { ...agentJson(agent), key_file: keyPath });
    else ctx.out(agentFields(agent, [['key file', keyPath]]));
  } finally {
    conn.close();
  }
}

async function agentList(ctx: CommandContext<ListOptions>): Promise<void> {
  const statusText = ctx.options.status;
  const statuses: Record<string, number> = { active: 1, revoked: 2, expired: 3 };
  if (statusText !== undefined && statuses[statusText] === undefined) throw new UsageError('--status must be active, revoked or expired');
  const limit = ctx.options.limit;
  if (limit !== undefined && !/^[1-9]\d{0,2}$/.test(limit)) throw new UsageError('--limit must be 1..500');
  const conn = await connect(ctx, 'if-available');
  try {
    const agents = [];
    let pageToken = ctx.options.pageToken ?? '';
    for (;;) {
      const page = await conn.client.listAgents({
        agentType: ctx.options.type ?? '',
        capability: ctx.options.cap ?? '',
        status: statusText === undefined ? 0 : statuses[statusText]!,
        pageSize: limit === undefined ? 0 : Number(limit),
        pageToken,
      });
      agents.push(...page.agents);
      pageToken = page.nextPageToken;
      if (ctx.options.all !== true || pageToken === '') break;
    }
    if (ctx.json) printJson(ctx.out, { agents: agents.map(agentJson), next_page_token: pageToken === '' ? null : pageToken });
    else {
      ctx.out(agents.length === 0 ? 'no agents' : table(AGENT_HEADERS, agents.map(agentRow)));
      if (pageToken !== '') ctx.out(`\nmore: --page-token ${pageToken}`);
    }
  } finally {
    conn.close();
  }
}

async function agentShow(ctx: CommandContext<ClientOptions>, agentId: string): Promise<void> {
  const conn = await connect(ctx, 'if-available');
  try {
    const { agent } = await conn.client.getAgent({ agentId });
    if (agent === undefined) throw new RpcError('internal', 'server returned no agent');
    if (ctx.json) printJson(ctx.out, agentJson(agent));
    else ctx.out(agentFields(agent));
  } finally {
    conn.close();
  }
}

async function agentRotate(ctx: CommandContext<RotateOptions>, agentId: string): Promise<void> {
  const days = ctx.options.validDays;
  if (days !== undefined && !/^[1-9]\d{0,4}$/.test(days)) throw new UsageError('--valid-days must be a whole number of days');
  const conn = await connect(ctx, 'if-available');
  try {
    const { crypto, client, registryId } = conn;
    const keyPath = agentKeyPath(ctx, agentId);
    const old = readKeyFile(crypto, keyPath, 'parley-agent-key');
    const nextPath = `${keyPath}.next`;
    if (!existsSync(nextPath)) writeKeyFile(crypto, nextPath, 'parley-agent-key', crypto.ed25519.generateKeyPair());
    const next = readKeyFile(crypto, nextPath, 'parley-agent-key');
    const { challenge } = await client.createChallenge({ purpose: ChallengePurpose.ROTATE_KEY });
    const f = { registryId, challenge, agentId, oldPublicKey: old.publicKey, newPublicKey: next.publicKey };
    const result = await client.rotateKey({
      agentId,
      newIdentityPublicKey: next.publicKey,
      challenge,
      oldKeySignature: crypto.ed25519.sign(rotationAuthorisationLayout(f), old.secretKey),
      newKeySignature: crypto.ed25519.sign(rotationProofLayout(f), next.secretKey),
      validUntilMs: days === undefined ? 0n : BigInt(Date.now() + Number(days) * 86_400_000),
    });
    renameDurably(nextPath, keyPath);
    if (result.agent === undefined) throw new RpcError('internal', 'server returned no agent');
    if (ctx.json) printJson(ctx.out, { ...agentJson(result.agent), key_file: keyPath, superseded: result.superseded && entryJson(result.superseded) });
    else ctx.out(agentFields(result.agent, [['key file', keyPath], ['old certificate', `revoked at revocation list version ${result.superseded?.version ?? '?'}`]]));
  } finally {
    conn.close();
  }
}

async function agentRevoke(ctx: CommandContext<RevokeOptions>, agentId: string | undefined): Promise<void> {
  const serialText = ctx.options.serial;
  if ((agentId === undefined) === (serialText === undefined)) throw new UsageError('give either AGENT_ID or --serial HEX');
  if (serialText !== undefined && !/^[0-9a-fA-F]{32}$/.test(serialText)) throw new RpcError('malformed', 'bad serial encoding: expected 32 hex digits');
  const reason = reasonOf(ctx.options.reason);
  const at = ctx.options.at;
  const conn = await connect(ctx, 'always');
  try {
    const unknownOk = ctx.options.unknownOk === true;
    const { entry } = await conn.client
      .revokeAgent(
        {
          subject: agentId !== undefined ? { case: 'agentId', value: agentId } : { case: 'serial', value: fromHex(serialText!.toLowerCase()) },
          reason,
          reasonText: ctx.options.message ?? '',
          revokedAtMs: at === undefined ? 0n : BigInt(msOf(at, '--at')),
        },
        unknownOk ? { metadata: { [REVOKE_UNKNOWN_METADATA_KEY]: '1' } } : {},
      )
      .catch((error: unknown) => {
        const e = RpcError.from(error);
        if (e.code !== 'not_found' || unknownOk) throw error;
        // After a restore, the revocations gateways kept name agents and certificates made after the backup.
        throw new RpcError('not_found', `${e.localDetails}: if this revocation is being re-issued after a restore (docs/OPERATIONS.md, section 7.3), add --unknown-ok`, { cause: error });
      });
    if (entry === undefined) throw new RpcError('internal', 'server returned no entry');
    if (ctx.json) printJson(ctx.out, entryJson(entry));
    else ctx.out(`revoked ${agentId !== undefined ? `agent ${agentId}` : `certificate ${serialText!.toLowerCase()}`} at revocation list version ${entry.version}${unknownOk ? ' (--unknown-ok)' : ''}`);
  } finally {
    conn.close();
  }
}

function reasonOf(text: string | undefined): RevocationReason {
  if (text === undefined) return RevocationReason.UNSPECIFIED;
  const key = text.toUpperCase().replace(/-/g, '_') as keyof typeof RevocationReason;
  const value = RevocationReason[key];
  if (typeof value !== 'number') {
    const names = Object.keys(RevocationReason)
      .filter((k) => Number.isNaN(Number(k)))
      .map((k) => k.toLowerCase().replace(/_/g, '-'));
    throw new UsageError(`unknown reason '${text}' (one of: ${names.join(', ')})`);
  }
  return value;
}

function msOf(text: string, what: string): number {
  const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isSafeInteger(ms) || ms < 0) throw new UsageError(`${what} must be an ISO 8601 time or milliseconds since the epoch`);
  return ms;
}

/**
 * The agent's key file, absolute: `register`, `enroll` and `rotate` print it (`key file`, JSON `key_file`), and a
 * program reads it from wherever it runs — a path relative to where the command ran would not be found there.
 */
function agentKeyPath(ctx: CommandContext<{ readonly keyFile?: string }>, agentId: string): string {
  return resolve(ctx.options.keyFile ?? join(ctx.dataDir, 'agents', `${agentId}.key.json`));
}
