#!/usr/bin/env node
/**
 * parley-registry: the registry's operator CLI (one executable): `init`,
 * `serve`, `agent register|list|show|rotate|revoke`, `revocations`,
 * `operator add|list`, `trust-bundle`, `issuer rotate`.
 *
 * Output is a table by default and JSON with `--json`. Failures print one
 * line, `parley-registry: error: …`, and exit with a documented code (see
 * EXIT_CODES); never a stack trace.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { credentials, type ChannelCredentials } from '@grpc/grpc-js';
import { createCrypto, fromBase64Url, fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle, createIssuerKey, fromDidKey, keyId as computeKeyId, toDidKey } from '@parley/identity';
import { ChallengePurpose, RegistryService, RevocationReason, type GetTrustBundleResponse } from '@parley/proto';
import {
  ERROR_CODE_METADATA_KEY,
  EXIT_CODES,
  RevocationListFollower,
  RpcError,
  UsageError,
  createClient,
  exitCodeOf,
  isRpcError,
  isUsageError,
  runWhenExecuted,
  operatorRequestSigner,
  registrationProofLayout,
  rotationAuthorisationLayout,
  rotationProofLayout,
  type Client,
} from '@parley/rpc';
import { DATA_FILES, DEFAULT_SETTINGS, readSettings, settingsJson, type RegistrySettings } from './config.js';
import {
  AGENT_HEADERS,
  ENTRY_HEADERS,
  agentFields,
  agentJson,
  agentRow,
  entryJson,
  entryRow,
  fields,
  operatorJson,
  table,
  time,
} from './format.js';
import { isSealedKeyFile, readKeyFile, readPublicKey, renameDurably, writeKeyFile, writeSecretFile, type KdfStrength } from './key-file.js';
import type { RegistryStore } from './store.js';
import type { RegistryLocation } from './registry.js';
import { isLoopback, parseAddress } from './address.js';

/** Exit codes (the table is in @parley/rpc, shared by every Parley CLI; also in the README). */
export { EXIT_CODES };

const PROGRAM = 'parley-registry';

// ---------------------------------------------------------------------------
// Options

type OptionSpec = NonNullable<ParseArgsConfig['options']>;

const GLOBAL_OPTIONS = {
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies OptionSpec;

const CLIENT_OPTIONS = {
  server: { type: 'string' },
  'operator-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-server-name': { type: 'string' },
  timeout: { type: 'string' },
} as const satisfies OptionSpec;

const DATABASE_OPTIONS = {
  'database-url': { type: 'string' },
  'database-schema': { type: 'string' },
} as const satisfies OptionSpec;

const PASSPHRASE_OPTIONS = {
  'passphrase-file': { type: 'string' },
} as const satisfies OptionSpec;

const GLOBAL_HELP = `Global options:
  --data-dir DIR        registry data directory (env PARLEY_REGISTRY_DATA_DIR; default ./.data/registry)
  --json                machine-readable JSON output
  -h, --help            help for the command`;

const CLIENT_HELP = `Connection options:
  --server HOST:PORT    registry address (env PARLEY_REGISTRY_SERVER; default: "listen" in registry.json, else 127.0.0.1:50051)
  --operator-key FILE   operator key that signs requests (default DATA_DIR/operator-key.json)
  --tls-ca FILE         connect with TLS, trusting this CA certificate (PEM); required for a non-loopback --server
  --tls-server-name N   expected name in the server certificate (default: the host)
  --timeout SECONDS     deadline of each call (default 10)`;

const DATABASE_HELP = `Database options:
  --database-url URL    PostgreSQL URL (env DATABASE_URL); without one, PGlite in DATA_DIR/pgdata
  --database-schema S   PostgreSQL schema to use (env PARLEY_REGISTRY_DB_SCHEMA; default public)`;

const PASSPHRASE_HELP = `Passphrase:
  --passphrase-file F   read the issuer key passphrase from F (or env PARLEY_REGISTRY_PASSPHRASE)`;

interface Command {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly help: string;
  readonly options: OptionSpec;
  readonly run: (ctx: CommandContext) => Promise<void>;
}

interface CommandContext {
  readonly values: Record<string, string | boolean | string[] | undefined>;
  readonly positionals: string[];
  readonly json: boolean;
  readonly dataDir: string;
  readonly out: (text: string) => void;
  readonly crypto: () => Promise<ParleyCrypto>;
}

function str(ctx: CommandContext, name: string): string | undefined {
  const v = ctx.values[name];
  return typeof v === 'string' ? v : undefined;
}

function list(ctx: CommandContext, name: string): string[] {
  const v = ctx.values[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

function positional(ctx: CommandContext, index: number, what: string): string {
  const v = ctx.positionals[index];
  if (v === undefined) throw new UsageError(`missing ${what}`);
  return v;
}

function noMorePositionals(ctx: CommandContext, count: number): void {
  if (ctx.positionals.length > count) throw new UsageError(`unexpected argument '${ctx.positionals[count]}'`);
}

function printJson(ctx: CommandContext, value: unknown): void {
  ctx.out(JSON.stringify(value, null, 2));
}

// ---------------------------------------------------------------------------
// Shared pieces

function databaseOf(ctx: CommandContext): RegistryLocation {
  const url = str(ctx, 'database-url') ?? nonEmpty(process.env['DATABASE_URL']);
  const schema = str(ctx, 'database-schema') ?? nonEmpty(process.env['PARLEY_REGISTRY_DB_SCHEMA']);
  return { dataDir: ctx.dataDir, ...(url === undefined ? {} : { databaseUrl: url }), ...(schema === undefined ? {} : { databaseSchema: schema }) };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function passphraseOf(ctx: CommandContext): string | undefined {
  const file = str(ctx, 'passphrase-file');
  if (file !== undefined) {
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (cause) {
      throw new RpcError('not_found', `cannot read passphrase file ${file}`, { cause });
    }
  }
  return nonEmpty(process.env['PARLEY_REGISTRY_PASSPHRASE']);
}

function settingsIfAny(dataDir: string): RegistrySettings | undefined {
  return existsSync(join(dataDir, DATA_FILES.config)) ? readSettings(dataDir) : undefined;
}

interface Connection {
  readonly client: Client<typeof RegistryService>;
  readonly address: string;
  readonly registryId: Uint8Array;
  readonly bundle: GetTrustBundleResponse;
  readonly crypto: ParleyCrypto;
  close(): void;
}

/**
 * Connects to the server. `sign`: `always` (writes: the operator key must exist), `if-available`
 * (reads: signed when an operator key is at hand, which a registry with `reads_require_auth` needs),
 * or `never`.
 */
async function connect(ctx: CommandContext, sign: 'always' | 'if-available' | 'never'): Promise<Connection> {
  const crypto = await ctx.crypto();
  const address = str(ctx, 'server') ?? nonEmpty(process.env['PARLEY_REGISTRY_SERVER']) ?? settingsIfAny(ctx.dataDir)?.listen ?? DEFAULT_SETTINGS.listen;
  const timeoutText = str(ctx, 'timeout') ?? '10';
  const timeoutMs = Number(timeoutText) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new UsageError('--timeout must be a positive number of seconds');
  let creds: ChannelCredentials = credentials.createInsecure();
  const channelOptions: Record<string, string | number> = {};
  const ca = str(ctx, 'tls-ca');
  if (ca === undefined && !plaintextAllowed(address)) {
    // Operator signatures, agent keys' proofs and the trust bundle itself must not cross a network in the clear.
    throw new RpcError('failed_precondition', `refusing to talk plaintext to non-loopback registry ${address}: give --tls-ca FILE (the CA of its TLS certificate)`);
  }
  if (ca !== undefined) {
    creds = credentials.createSsl(readFileOr(ca, 'TLS CA certificate'));
    const name = str(ctx, 'tls-server-name');
    if (name !== undefined) channelOptions['grpc.ssl_target_name_override'] = name;
  }
  let registryId: Uint8Array | undefined;
  let signer;
  const keyPath = str(ctx, 'operator-key') ?? join(ctx.dataDir, DATA_FILES.operatorKey);
  const haveKey = existsSync(keyPath);
  if (sign === 'always' && !haveKey) {
    throw new RpcError('failed_precondition', `no operator key at ${keyPath}: run \`${PROGRAM} init\` there, or pass --operator-key FILE`);
  }
  if (sign === 'always' || (sign === 'if-available' && (haveKey || str(ctx, 'operator-key') !== undefined))) {
    const operator = readKeyFile(crypto, keyPath, 'parley-operator-key', isSealedKeyFile(keyPath) ? passphraseOf(ctx) : undefined);
    const sign = (path: string, body: Uint8Array) => (registryId === undefined ? undefined : operatorRequestSigner(crypto, operator, registryId)(path, body));
    signer = sign;
  }
  const client = createClient(RegistryService, address, creds, {
    defaultTimeoutMs: timeoutMs,
    channelOptions,
    ...(signer === undefined ? {} : { signer }),
  });
  try {
    // The trust bundle is public; it names the registry id that signed requests and heads include.
    const bundle = await client.getTrustBundle({});
    registryId = bundle.registryId;
    return { client, address, registryId, bundle, crypto, close: () => client.close() };
  } catch (error) {
    client.close();
    throw error;
  }
}

/** Plaintext only to a loopback `host:port` (anything unparsable is not known to be loopback). */
function plaintextAllowed(address: string): boolean {
  try {
    return isLoopback(parseAddress(address).host);
  } catch {
    return false;
  }
}

function readFileOr(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new RpcError('not_found', `cannot read ${what} ${path}`, { cause });
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

function agentKeyPath(ctx: CommandContext, agentId: string): string {
  return str(ctx, 'key-file') ?? join(ctx.dataDir, 'agents', `${agentId}.key.json`);
}

// ---------------------------------------------------------------------------
// Commands

const init: Command = {
  name: 'init',
  summary: 'create the issuer key, the first operator key and the database',
  usage: 'init [--operator-name NAME] [--listen HOST:PORT] [--passphrase-file F] [--kdf moderate|interactive]',
  help: `Creates DATA_DIR with registry.json, issuer-key.json (mode 0600; sealed with Argon2id +
ChaCha20-Poly1305 when a passphrase is given) and operator-key.json (mode 0600), and initialises the
database (PGlite in DATA_DIR/pgdata, or DATABASE_URL). Refuses an initialised directory or database.

Options:
  --operator-name NAME  name of the first operator (default "admin")
  --listen HOST:PORT    default serve address to record (default 127.0.0.1:50051)
  --reads-require-auth  require an operator signature on reads too
  --kdf STRENGTH        passphrase hashing cost: moderate (default, 256 MiB) or interactive (64 MiB)`,
  options: {
    ...DATABASE_OPTIONS,
    ...PASSPHRASE_OPTIONS,
    'operator-name': { type: 'string' },
    listen: { type: 'string' },
    'reads-require-auth': { type: 'boolean' },
    kdf: { type: 'string' },
  },
  async run(ctx) {
    noMorePositionals(ctx, 0);
    const crypto = await ctx.crypto();
    const configPath = join(ctx.dataDir, DATA_FILES.config);
    if (existsSync(configPath)) throw new RpcError('already_exists', `${ctx.dataDir} is already initialised (${DATA_FILES.config} exists)`);
    const kdf = (str(ctx, 'kdf') ?? 'moderate') as KdfStrength;
    if (kdf !== 'moderate' && kdf !== 'interactive') throw new UsageError('--kdf must be moderate or interactive');
    const operatorName = str(ctx, 'operator-name') ?? 'admin';
    if (!/^[a-z0-9][a-z0-9._@-]{0,63}$/.test(operatorName)) throw new UsageError('--operator-name must be 1..64 characters of [a-z0-9._@-]');
    const settings: RegistrySettings = {
      ...DEFAULT_SETTINGS,
      listen: str(ctx, 'listen') ?? DEFAULT_SETTINGS.listen,
      readsRequireAuth: ctx.values['reads-require-auth'] === true,
    };
    const passphrase = passphraseOf(ctx);
    const where = databaseOf(ctx);
    mkdirSync(ctx.dataDir, { recursive: true, mode: 0o700 });

    const { openRegistry } = await import('./registry.js');
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
      writeSecretFile(configPath, settingsJson(settings));
      written.push(configPath);
      const registryId = crypto.randomBytes(16);
      try {
        await registry.store.initialise({ registryId, issuer, operator: { publicKey: operator.publicKey, keyId: operatorKeyId, name: operatorName }, nowMs: Date.now() });
      } catch (error) {
        // A lost connection may have lost it during COMMIT: the outcome is unknown, so the keys must stay.
        if (isRpcError(error, 'unavailable')) committed = true;
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
      if (ctx.json) printJson(ctx, result);
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
  },
};

const serve: Command = {
  name: 'serve',
  summary: 'run the gRPC registry server (JSON logs on stdout)',
  usage: 'serve [--listen HOST:PORT] [--tls-cert F --tls-key F] [--passphrase-file F]',
  help: `Runs parley.v1.RegistryService with gRPC health checking and server reflection. Logs are JSON
lines (pino) on stdout; the first "listening" line carries the bound port. Plaintext is served only on
loopback addresses; any other address needs TLS (TLS 1.3 only). Stops cleanly on SIGINT or SIGTERM.

Options:
  --listen HOST:PORT    address to bind (default: "listen" in registry.json; port 0 picks a free port)
  --tls-cert FILE       TLS certificate chain (PEM)
  --tls-key FILE        TLS private key (PEM)
  --heartbeat-ms N      interval of signed heartbeats on revocation watches (default from registry.json)
  --log-level LEVEL     trace, debug, info (default), warn, error`,
  options: {
    ...DATABASE_OPTIONS,
    ...PASSPHRASE_OPTIONS,
    listen: { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'heartbeat-ms': { type: 'string' },
    'log-level': { type: 'string' },
    'max-connections': { type: 'string' },
  },
  async run(ctx) {
    noMorePositionals(ctx, 0);
    const crypto = await ctx.crypto();
    const fileSettings = readSettings(ctx.dataDir);
    const heartbeat = str(ctx, 'heartbeat-ms');
    if (heartbeat !== undefined && !/^[1-9]\d{2,7}$/.test(heartbeat)) throw new UsageError('--heartbeat-ms must be an integer from 100');
    const settings: RegistrySettings = { ...fileSettings, ...(heartbeat === undefined ? {} : { heartbeatMs: Number(heartbeat) }) };
    const certPath = str(ctx, 'tls-cert');
    const keyPath = str(ctx, 'tls-key');
    if ((certPath === undefined) !== (keyPath === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
    const tlsFiles =
      certPath === undefined || keyPath === undefined ? undefined : { certChain: readFileOr(certPath, 'TLS certificate'), privateKey: readFileOr(keyPath, 'TLS key') };
    const level = str(ctx, 'log-level') ?? 'info';
    if (!['trace', 'debug', 'info', 'warn', 'error'].includes(level)) throw new UsageError('--log-level must be trace, debug, info, warn or error');
    const maxConnections = str(ctx, 'max-connections');
    if (maxConnections !== undefined && !/^[1-9]\d{0,3}$/.test(maxConnections)) throw new UsageError('--max-connections must be 1..9999');

    const listen = str(ctx, 'listen') ?? settings.listen;
    if (tlsFiles === undefined && !isLoopback(parseAddress(listen).host)) {
      throw new RpcError('failed_precondition', `refusing to serve plaintext on non-loopback address ${listen}: give --tls-cert and --tls-key`);
    }
    const issuerPath = join(ctx.dataDir, DATA_FILES.issuerKey);
    const issuer = createIssuerKey(crypto, readKeyFile(crypto, issuerPath, 'parley-registry-issuer-key', isSealedKeyFile(issuerPath) ? passphraseOf(ctx) : undefined));
    // Server-side modules load only here, so client commands start quickly.
    const [{ pino }, { openRegistry }, { RegistryServer }] = await Promise.all([import('pino'), import('./registry.js'), import('./server.js')]);
    const destination = pino.destination({ dest: 1, sync: true });
    const base = { service: 'parley-registry', pid: process.pid };
    const logger = pino({ level, base }, destination);
    // Lifecycle lines (listening, stopping, stopped) are printed at every log level: supervisors and tests read the port from them.
    const lifecycle = pino({ level: 'info', base }, destination);
    const registry = await openRegistry(crypto, { ...databaseOf(ctx), ...(maxConnections === undefined ? {} : { maxConnections: Number(maxConnections) }) });
    const server = new RegistryServer({ crypto, store: registry.store, issuer, settings, logger });
    let bound: { host: string; port: number };
    try {
      await checkInterruptedIssuerRotation(crypto, registry.store, issuerPath, issuer.keyId);
      bound = await server.start(listen, tlsFiles);
    } catch (error) {
      await registry.close();
      throw error;
    }
    lifecycle.info(
      {
        address: bound.host,
        port: bound.port,
        tls: tlsFiles !== undefined,
        database: registry.db.engine,
        database_location: registry.db.location,
        schema_version: registry.migrations.version,
        migrations_applied: registry.migrations.applied,
        issuer_key_id: toHex(issuer.keyId),
      },
      'listening',
    );
    await new Promise<void>((done) => {
      const stop = (signal: string): void => {
        lifecycle.info({ signal }, 'stopping');
        void server
          .stop()
          .then(() => registry.close())
          .then(() => {
            lifecycle.info('stopped');
            done();
          });
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
  },
};

const agentRegister: Command = {
  name: 'agent register',
  summary: 'register an agent and issue its certificate',
  usage: 'agent register AGENT_ID --type TYPE [--cap CAPABILITY]... [--key-file F] [--valid-days N]',
  help: `Registers AGENT_ID with proof of possession of its identity key: the agent key signs a fresh
server challenge. The key is read from --key-file; when that file does not exist a new key is generated
and written there first (mode 0600). Default key file: DATA_DIR/agents/AGENT_ID.key.json.

Options:
  --type TYPE           agent type, e.g. planner (required)
  --cap CAPABILITY      a capability; repeat for several
  --key-file FILE       the agent's key file
  --valid-days N        certificate validity in days (default: the registry's, 90)`,
  options: {
    ...CLIENT_OPTIONS,
    type: { type: 'string' },
    cap: { type: 'string', multiple: true },
    'key-file': { type: 'string' },
    'valid-days': { type: 'string' },
  },
  async run(ctx) {
    const agentId = positional(ctx, 0, 'AGENT_ID');
    noMorePositionals(ctx, 1);
    const agentType = str(ctx, 'type');
    if (agentType === undefined) throw new UsageError('--type is required');
    const days = str(ctx, 'valid-days');
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
        agentType,
        capabilities: list(ctx, 'cap'),
        identityPublicKey: key.publicKey,
        challenge,
        proofSignature,
        validFromMs: BigInt(nowMs),
        validUntilMs: days === undefined ? 0n : BigInt(nowMs + Number(days) * 86_400_000),
      });
      if (agent === undefined) throw new RpcError('internal', 'server returned no agent');
      if (ctx.json) printJson(ctx, { ...agentJson(agent), key_file: keyPath });
      else ctx.out(agentFields(agent, [['key file', keyPath]]));
    } finally {
      conn.close();
    }
  },
};

const agentList: Command = {
  name: 'agent list',
  summary: 'list agents (paginated; filter by type, capability, status)',
  usage: 'agent list [--type T] [--cap C] [--status active|revoked|expired] [--limit N] [--page-token T | --all]',
  help: `Lists agents in agent id order, one page at a time. Prints the token of the next page, if any.

Options:
  --type TYPE           only agents of this type
  --cap CAPABILITY      only agents holding this capability
  --status STATUS       only agents in this status: active, revoked or expired
  --limit N             page size, 1..500 (default 50)
  --page-token TOKEN    continue after a previous page
  --all                 fetch every page`,
  options: {
    ...CLIENT_OPTIONS,
    type: { type: 'string' },
    cap: { type: 'string' },
    status: { type: 'string' },
    limit: { type: 'string' },
    'page-token': { type: 'string' },
    all: { type: 'boolean' },
  },
  async run(ctx) {
    noMorePositionals(ctx, 0);
    const statusText = str(ctx, 'status');
    const statuses: Record<string, number> = { active: 1, revoked: 2, expired: 3 };
    if (statusText !== undefined && statuses[statusText] === undefined) throw new UsageError('--status must be active, revoked or expired');
    const limit = str(ctx, 'limit');
    if (limit !== undefined && !/^[1-9]\d{0,2}$/.test(limit)) throw new UsageError('--limit must be 1..500');
    const conn = await connect(ctx, 'if-available');
    try {
      const agents = [];
      let pageToken = str(ctx, 'page-token') ?? '';
      for (;;) {
        const page = await conn.client.listAgents({
          agentType: str(ctx, 'type') ?? '',
          capability: str(ctx, 'cap') ?? '',
          status: statusText === undefined ? 0 : statuses[statusText]!,
          pageSize: limit === undefined ? 0 : Number(limit),
          pageToken,
        });
        agents.push(...page.agents);
        pageToken = page.nextPageToken;
        if (ctx.values['all'] !== true || pageToken === '') break;
      }
      if (ctx.json) printJson(ctx, { agents: agents.map(agentJson), next_page_token: pageToken === '' ? null : pageToken });
      else {
        ctx.out(agents.length === 0 ? 'no agents' : table(AGENT_HEADERS, agents.map(agentRow)));
        if (pageToken !== '') ctx.out(`\nmore: --page-token ${pageToken}`);
      }
    } finally {
      conn.close();
    }
  },
};

const agentShow: Command = {
  name: 'agent show',
  summary: 'show one agent and its current certificate',
  usage: 'agent show AGENT_ID',
  help: 'Shows an agent: status, capabilities, and its current certificate (serial, did:key, validity, issuer).',
  options: { ...CLIENT_OPTIONS },
  async run(ctx) {
    const agentId = positional(ctx, 0, 'AGENT_ID');
    noMorePositionals(ctx, 1);
    const conn = await connect(ctx, 'if-available');
    try {
      const { agent } = await conn.client.getAgent({ agentId });
      if (agent === undefined) throw new RpcError('internal', 'server returned no agent');
      if (ctx.json) printJson(ctx, agentJson(agent));
      else ctx.out(agentFields(agent));
    } finally {
      conn.close();
    }
  },
};

const agentRotate: Command = {
  name: 'agent rotate',
  summary: "replace an agent's identity key (authorised by the current key)",
  usage: 'agent rotate AGENT_ID [--key-file F] [--valid-days N]',
  help: `Generates a new identity key, has the current key (from --key-file) authorise the rotation and the
new key prove possession, and on success replaces the key file with the new key. The old certificate is
revoked (reason superseded). A new key waiting in KEY_FILE.next from an interrupted run is reused.

Options:
  --key-file FILE       the agent's current key file (default DATA_DIR/agents/AGENT_ID.key.json)
  --valid-days N        validity of the new certificate in days, capped at the current certificate's end
                        (default: that end; rotation changes the key, not the grant)`,
  options: { ...CLIENT_OPTIONS, 'key-file': { type: 'string' }, 'valid-days': { type: 'string' } },
  async run(ctx) {
    const agentId = positional(ctx, 0, 'AGENT_ID');
    noMorePositionals(ctx, 1);
    const days = str(ctx, 'valid-days');
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
      if (ctx.json) printJson(ctx, { ...agentJson(result.agent), key_file: keyPath, superseded: result.superseded && entryJson(result.superseded) });
      else ctx.out(agentFields(result.agent, [['key file', keyPath], ['old certificate', `revoked at revocation list version ${result.superseded?.version ?? '?'}`]]));
    } finally {
      conn.close();
    }
  },
};

const REASON_HELP = 'unspecified, key-compromise, superseded, cessation-of-operation, affiliation-changed, privilege-withdrawn';

const agentRevoke: Command = {
  name: 'agent revoke',
  summary: 'revoke an agent id (all its certificates) or one certificate serial',
  usage: 'agent revoke (AGENT_ID | --serial HEX) [--reason R] [--message TEXT] [--at TIME]',
  help: `Appends one entry to the signed revocation list. Revoking an agent id revokes every certificate
it has and will have; --serial revokes one certificate.

Options:
  --serial HEX          revoke this certificate serial (32 hex digits) instead of an agent id
  --reason R            ${REASON_HELP}
  -m, --message TEXT    free-text detail (up to 1024 characters)
  --at TIME             when it takes effect: ISO 8601 or ms since the epoch (default now; not in the future)`,
  options: { ...CLIENT_OPTIONS, serial: { type: 'string' }, reason: { type: 'string' }, message: { type: 'string', short: 'm' }, at: { type: 'string' } },
  async run(ctx) {
    const serialText = str(ctx, 'serial');
    const agentId = ctx.positionals[0];
    if ((agentId === undefined) === (serialText === undefined)) throw new UsageError('give either AGENT_ID or --serial HEX');
    noMorePositionals(ctx, agentId === undefined ? 0 : 1);
    if (serialText !== undefined && !/^[0-9a-fA-F]{32}$/.test(serialText)) throw new RpcError('malformed', 'bad serial encoding: expected 32 hex digits');
    const reason = reasonOf(str(ctx, 'reason'));
    const at = str(ctx, 'at');
    const conn = await connect(ctx, 'always');
    try {
      const { entry } = await conn.client.revokeAgent({
        subject: agentId !== undefined ? { case: 'agentId', value: agentId } : { case: 'serial', value: fromHex(serialText!.toLowerCase()) },
        reason,
        reasonText: str(ctx, 'message') ?? '',
        revokedAtMs: at === undefined ? 0n : BigInt(msOf(at, '--at')),
      });
      if (entry === undefined) throw new RpcError('internal', 'server returned no entry');
      if (ctx.json) printJson(ctx, entryJson(entry));
      else ctx.out(`revoked ${agentId !== undefined ? `agent ${agentId}` : `certificate ${serialText!.toLowerCase()}`} at revocation list version ${entry.version}`);
    } finally {
      conn.close();
    }
  },
};

const revocations: Command = {
  name: 'revocations',
  summary: 'print the signed revocation list, verified (--watch to follow it live)',
  usage: 'revocations [--watch] [--after VERSION] [--trust-bundle FILE]',
  help: `Fetches the revocation list, checks its hash chain and the issuer signature on its head, and
prints it. With --watch it then follows the WatchRevocations stream, printing entries as they are
committed (with --json: one JSON object per line, heartbeats included) and reconnecting from the last
verified version after a dropped connection, so nothing is missed or repeated.

Options:
  --watch               keep following (Ctrl-C to stop)
  --after VERSION       start after this version (default 0: the whole list)
  --trust-bundle FILE   verify against this pinned trust bundle JSON; without it the server's own bundle is
                        used (trust on first use: a warning on stderr, and "verified": false in --json)`,
  options: { ...CLIENT_OPTIONS, watch: { type: 'boolean' }, after: { type: 'string' }, 'trust-bundle': { type: 'string' } },
  async run(ctx) {
    noMorePositionals(ctx, 0);
    const afterText = str(ctx, 'after') ?? '0';
    if (!/^\d{1,15}$/.test(afterText)) throw new UsageError('--after must be a version number');
    const conn = await connect(ctx, 'if-available');
    try {
      const { crypto, client } = conn;
      const pinned = str(ctx, 'trust-bundle');
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
      if (ctx.values['watch'] !== true) {
        if (ctx.json) printJson(ctx, { version: head.version, verified: isPinned, trust_bundle_pinned: isPinned, entries: all.map(entryJson) });
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
  },
};

function bundleOf(crypto: ParleyCrypto, bundle: GetTrustBundleResponse): TrustBundle {
  return TrustBundle.from(
    crypto,
    bundle.issuers.map((i) => (i.notAfterMs === 0n ? { keyId: i.keyId, publicKey: i.publicKey } : { keyId: i.keyId, publicKey: i.publicKey, notAfterMs: Number(i.notAfterMs) })),
  );
}

async function watch(ctx: CommandContext, conn: Connection, follower: RevocationListFollower): Promise<void> {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let backoffMs = 500;
  try {
    while (!controller.signal.aborted) {
      try {
        for await (const batch of conn.client.watchRevocations({ afterVersion: BigInt(follower.version) }, { signal: controller.signal })) {
          // Freshness is the signed head's time (capped at now + skew, never going back), not when it arrived.
          const accepted = follower.apply(batch.entries, batch.head);
          backoffMs = 500;
          if (ctx.json) {
            for (const e of batch.entries) ctx.out(JSON.stringify({ type: 'entry', ...entryJson(e) }));
            if (batch.entries.length === 0) ctx.out(JSON.stringify({ type: 'heartbeat', version: follower.version, issued_at_ms: accepted.issuedAtMs }));
          } else {
            for (const e of batch.entries) ctx.out(entryRow(e).map((c) => c || '-').join('  '));
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        const e = RpcError.from(error);
        if (e.code !== 'unavailable' && e.code !== 'cancelled' && e.code !== 'deadline_exceeded') throw error;
        process.stderr.write(`${PROGRAM}: watch interrupted (${e.localDetails}); reconnecting after version ${follower.version}\n`);
        await new Promise((r) => setTimeout(r, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 10_000);
      }
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

const operatorAdd: Command = {
  name: 'operator add',
  summary: 'list a new operator key (signed by an existing operator)',
  usage: 'operator add NAME (PUBLIC_KEY | --key-file F)',
  help: `Allows another Ed25519 key to sign state-changing requests. Give the key as did:key:z6Mk…, 64 hex
digits or 43 base64url characters, or --key-file: an operator key file, created (mode 0600) when missing.`,
  options: { ...CLIENT_OPTIONS, 'key-file': { type: 'string' } },
  async run(ctx) {
    const name = positional(ctx, 0, 'NAME');
    const keyText = ctx.positionals[1];
    const keyFile = str(ctx, 'key-file');
    if ((keyText === undefined) === (keyFile === undefined)) throw new UsageError('give either PUBLIC_KEY or --key-file F');
    noMorePositionals(ctx, keyText === undefined ? 1 : 2);
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
      if (ctx.json) printJson(ctx, operatorJson(operator));
      else ctx.out(`added operator "${operator.name}" with key ${toHex(operator.keyId)} (${toDidKey(operator.publicKey)})`);
    } finally {
      conn.close();
    }
  },
};

const operatorRemove: Command = {
  name: 'operator remove',
  summary: 'delist an operator key (signed by an operator; never the last one)',
  usage: 'operator remove KEY_ID',
  help: `Stops a key from signing requests, at once, on every registry process sharing the database: for a
leaked or retired operator key. KEY_ID is the 32 hex digits that \`operator list\` shows. The registry keeps
the record (who removed it, when) and refuses to list the same key again; the last operator cannot be
removed. An operator may remove its own key when another remains.`,
  options: { ...CLIENT_OPTIONS },
  async run(ctx) {
    const keyIdText = positional(ctx, 0, 'KEY_ID');
    noMorePositionals(ctx, 1);
    if (!/^[0-9a-f]{32}$/.test(keyIdText)) throw new UsageError('KEY_ID must be 32 lowercase hex digits (see `operator list`)');
    const conn = await connect(ctx, 'always');
    try {
      const { operator } = await conn.client.removeOperator({ keyId: fromHex(keyIdText) });
      if (operator === undefined) throw new RpcError('internal', 'server returned no operator');
      if (ctx.json) printJson(ctx, operatorJson(operator));
      else ctx.out(`removed operator "${operator.name}" with key ${toHex(operator.keyId)}: it can no longer sign requests`);
    } finally {
      conn.close();
    }
  },
};

const operatorList: Command = {
  name: 'operator list',
  summary: 'list the operator keys',
  usage: 'operator list',
  help: 'Lists every operator key allowed to sign state-changing requests.',
  options: { ...CLIENT_OPTIONS },
  async run(ctx) {
    noMorePositionals(ctx, 0);
    const conn = await connect(ctx, 'if-available');
    try {
      const { operators } = await conn.client.listOperators({});
      if (ctx.json) printJson(ctx, { operators: operators.map(operatorJson) });
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
  },
};

const trustBundle: Command = {
  name: 'trust-bundle',
  summary: "print the registry's trust bundle (JSON, for gateways and agents to pin)",
  usage: 'trust-bundle',
  help: 'Prints the issuer keys that verify this registry\'s certificates, in the @parley/identity TrustBundle JSON form.',
  options: { ...CLIENT_OPTIONS },
  async run(ctx) {
    noMorePositionals(ctx, 0);
    const conn = await connect(ctx, 'never');
    try {
      printJson(ctx, bundleOf(conn.crypto, conn.bundle).toJSON());
    } finally {
      conn.close();
    }
  },
};

/**
 * An `issuer rotate` interrupted between its commit and the rename leaves the
 * now-active issuer key in `issuer-key.json.next`: say so in one line, rather
 * than the generic "not the active issuer key".
 */
async function checkInterruptedIssuerRotation(crypto: ParleyCrypto, store: RegistryStore, issuerPath: string, loadedKeyId: Uint8Array): Promise<void> {
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

const issuerRotate: Command = {
  name: 'issuer rotate',
  summary: 'replace the issuer key (run with the server stopped)',
  usage: 'issuer rotate [--passphrase-file F] [--kdf moderate|interactive]',
  help: `Creates a new issuer key and makes it the active one. The old key stays in the trust bundle until
the last certificate it signed expires (its not_after_ms), so every earlier certificate keeps verifying;
its secret key file is deleted. Restart \`serve\` afterwards (every registry process, with PostgreSQL).`,
  options: { ...DATABASE_OPTIONS, ...PASSPHRASE_OPTIONS, kdf: { type: 'string' } },
  async run(ctx) {
    noMorePositionals(ctx, 0);
    const crypto = await ctx.crypto();
    readSettings(ctx.dataDir);
    const kdf = (str(ctx, 'kdf') ?? 'moderate') as KdfStrength;
    if (kdf !== 'moderate' && kdf !== 'interactive') throw new UsageError('--kdf must be moderate or interactive');
    const issuerPath = join(ctx.dataDir, DATA_FILES.issuerKey);
    const passphrase = passphraseOf(ctx);
    const old = readKeyFile(crypto, issuerPath, 'parley-registry-issuer-key', isSealedKeyFile(issuerPath) ? passphrase : undefined);
    const { openRegistry } = await import('./registry.js');
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
      if (ctx.json) printJson(ctx, result);
      else ctx.out(fields([['new issuer key', result.issuer_key_id], ['retired key', `${result.retired_key_id} (trusted until ${time(notAfterMs)})`]]));
    } finally {
      await registry.close();
    }
  },
};

const COMMANDS: readonly Command[] = [init, serve, agentRegister, agentList, agentShow, agentRotate, agentRevoke, revocations, operatorAdd, operatorRemove, operatorList, trustBundle, issuerRotate];

function mainHelp(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return `${PROGRAM}: Parley identity and revocation registry

Usage: ${PROGRAM} COMMAND [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`).join('\n')}

${GLOBAL_HELP}

Run \`${PROGRAM} COMMAND --help\` for a command's options.

Exit codes:
  0 success                    5 permission denied (operator key, passphrase, signature)
  1 internal error             6 invalid argument (bad key encoding, malformed field)
  2 usage error                7 unavailable (server or database unreachable)
  3 not found (unknown agent)  8 failed precondition (not initialised, challenge expired, dir in use)
  4 already exists (duplicate id, already revoked)`;
}

function commandHelp(c: Command): string {
  const extra = [
    Object.keys(c.options).some((k) => k in CLIENT_OPTIONS) ? CLIENT_HELP : '',
    Object.keys(c.options).some((k) => k in DATABASE_OPTIONS) ? DATABASE_HELP : '',
    Object.keys(c.options).some((k) => k in PASSPHRASE_OPTIONS) ? PASSPHRASE_HELP : '',
    GLOBAL_HELP,
  ].filter((s) => s !== '');
  return `Usage: ${PROGRAM} ${c.usage}\n\n${c.summary}.\n\n${c.help}\n\n${extra.join('\n\n')}`;
}

/**
 * Runs the CLI.
 * @param argv arguments after the program name
 * @param out where normal output goes (stdout)
 * @returns the exit code
 */
export async function main(argv: readonly string[], out: (text: string) => void = (t) => process.stdout.write(`${t}\n`)): Promise<number> {
  let cryptoPromise: Promise<ParleyCrypto> | undefined;
  // Find the command words: positionals, skipping the values of every known option.
  const allOptions = Object.assign({}, GLOBAL_OPTIONS, ...COMMANDS.map((c) => c.options)) as OptionSpec;
  const words = parseArgs({ args: [...argv], options: allOptions, allowPositionals: true, strict: false }).positionals;
  const command =
    COMMANDS.find((c) => c.name.includes(' ') && `${words[0]} ${words[1]}` === c.name) ?? COMMANDS.find((c) => !c.name.includes(' ') && words[0] === c.name);
  const wantsHelp = argv.includes('--help') || argv.includes('-h');
  if (command === undefined) {
    if (argv.length === 0 || (wantsHelp && words.length === 0)) {
      out(mainHelp());
      return argv.length === 0 ? EXIT_CODES.usage : EXIT_CODES.ok;
    }
    const group = COMMANDS.filter((c) => c.name.startsWith(`${words[0]} `));
    if (group.length > 0) {
      if (wantsHelp && words.length === 1) {
        out(`Usage: ${PROGRAM} ${words[0]} SUBCOMMAND\n\n${group.map((c) => `  ${c.name}  ${c.summary}`).join('\n')}`);
        return EXIT_CODES.ok;
      }
      process.stderr.write(`${PROGRAM}: error: ${words[1] === undefined ? 'missing' : `unknown`} subcommand${words[1] === undefined ? '' : ` '${words[1]}'`} of ${words[0]} (one of: ${group.map((c) => c.name.split(' ')[1]).join(', ')})\n`);
      return EXIT_CODES.usage;
    }
    process.stderr.write(`${PROGRAM}: error: unknown command '${words[0] ?? argv[0]}' (try --help)\n`);
    return EXIT_CODES.usage;
  }
  if (wantsHelp) {
    out(commandHelp(command));
    return EXIT_CODES.ok;
  }
  try {
    const parsed = parseArgs({
      args: [...argv],
      options: { ...GLOBAL_OPTIONS, ...command.options },
      allowPositionals: true,
      strict: true,
    });
    const skip = command.name.split(' ').length;
    const ctx: CommandContext = {
      values: parsed.values as CommandContext['values'],
      positionals: parsed.positionals.slice(skip),
      json: parsed.values.json === true,
      dataDir: (parsed.values['data-dir'] as string | undefined) ?? nonEmpty(process.env['PARLEY_REGISTRY_DATA_DIR']) ?? join('.data', 'registry'),
      out,
      crypto: () => (cryptoPromise ??= createCrypto()),
    };
    await command.run(ctx);
    return EXIT_CODES.ok;
  } catch (error) {
    return report(error, command);
  }
}

function report(error: unknown, command: Command): number {
  const say = (text: string): void => void process.stderr.write(`${PROGRAM}: error: ${text.replace(/\s*\n\s*/g, ' ')}\n`);
  if (isUsageError(error)) {
    say(`${(error as Error).message} (see \`${PROGRAM} ${command.name} --help\`)`);
    return EXIT_CODES.usage;
  }
  const e = RpcError.from(error);
  const cause = e.cause as { metadata?: { get(k: string): unknown[] }; details?: string } | undefined;
  const fromServer = cause?.metadata?.get(ERROR_CODE_METADATA_KEY).length !== undefined && (cause.metadata.get(ERROR_CODE_METADATA_KEY).length ?? 0) > 0;
  if (e.code === 'unavailable' && e.details.includes('No connection established')) {
    say(`registry server unreachable (${/ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT/.exec(e.details)?.[0] ?? 'no connection'}); is \`${PROGRAM} serve\` running, and is --server right?`);
    return EXIT_CODES.unavailable;
  }
  if (e.code === 'internal' && !fromServer) {
    const original = e.cause instanceof Error ? e.cause.message.split('\n')[0] : 'unexpected failure';
    say(`internal error: ${original}`);
    return EXIT_CODES.internal;
  }
  say(e.localDetails); // local output: the full detail (a wrapped library error keeps its message here)
  return exitCodeOf(e.code);
}

// Run when executed (not when imported by a test).
runWhenExecuted(PROGRAM, main);
