#!/usr/bin/env node
/**
 * parley-gateway: runs and checks a Parley agent gateway. Commands: `serve`,
 * `check-config`, `policy check FILE`. Settings come from a JSON config file
 * (`--config FILE` or PARLEY_GATEWAY_CONFIG) and PARLEY_GATEWAY_* variables
 * (./config.ts). Failures print one line, `parley-gateway: error: …`, and exit
 * with a documented code (EXIT_CODES); never a stack trace.
 *
 * `serve` writes exactly one line on stdout when it is ready — a JSON object
 * with the bound address and metrics URL — and its JSON logs (pino) on stderr.
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { credentials, type ChannelCredentials } from '@grpc/grpc-js';
import { createCrypto, fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle } from '@parley/identity';
import { RegistryService, type GetTrustBundleResponse } from '@parley/proto';
import { EXIT_CODES, RpcError, UsageError, createClient, exitCodeOf, isUsageError, runWhenExecuted } from '@parley/rpc';
import { SETTINGS, describeConfig, loadConfig, loadOrCreateAuditKey, readPolicyFile, watchPolicyFile, type GatewayConfig } from './config.js';
import { Policy } from './policy.js';

/** Exit codes (the table is in @parley/rpc, shared by every Parley CLI; also in the README). */
export { EXIT_CODES };

const PROGRAM = 'parley-gateway';

type OptionSpec = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

interface Command {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly help: string;
  readonly options: OptionSpec;
  readonly run: (values: Values, positionals: string[], out: (text: string) => void) => Promise<void>;
}

const CONFIG_OPTIONS = {
  config: { type: 'string', short: 'c' },
  'trust-on-first-use': { type: 'boolean' },
} as const satisfies OptionSpec;

const CONFIG_HELP = `Configuration:
  -c, --config FILE       JSON config file (env PARLEY_GATEWAY_CONFIG); environment variables override it
  --trust-on-first-use    accept the registry's own trust bundle when no trust_bundle_file is pinned
                          (insecure: whoever answers at registry_address decides which certificates are valid)

Settings (config key / environment variable, default):
${SETTINGS.map((s) => `  ${s.key} / ${s.env}${s.def === undefined ? '' : ` (${s.def})`}\n      ${s.help}`).join('\n')}
  DATABASE_URL            PostgreSQL URL (never in the config file); without it, PGlite in data_dir`;

const GLOBAL_HELP = `Global options:
  --json                  machine-readable JSON output
  -h, --help              help for the command`;

function configOf(values: Values): GatewayConfig {
  const file = typeof values['config'] === 'string' ? values['config'] : nonEmpty(process.env['PARLEY_GATEWAY_CONFIG']);
  return loadConfig({ ...(file === undefined ? {} : { file }), env: process.env, trustOnFirstUse: values['trust-on-first-use'] === true });
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

function readFileOr(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (cause) {
    throw new RpcError('not_found', `cannot read ${what} ${path}`, { cause });
  }
}

function pinnedBundle(crypto: ParleyCrypto, file: string): TrustBundle {
  const text = readFileOr(file, 'trust bundle').toString('utf8');
  try {
    return TrustBundle.fromJSON(crypto, text);
  } catch (error) {
    throw new RpcError('malformed', `${file} is not a trust bundle: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function bundleOf(crypto: ParleyCrypto, bundle: GetTrustBundleResponse): TrustBundle {
  return TrustBundle.from(
    crypto,
    bundle.issuers.map((i) => (i.notAfterMs === 0n ? { keyId: i.keyId, publicKey: i.publicKey } : { keyId: i.keyId, publicKey: i.publicKey, notAfterMs: Number(i.notAfterMs) })),
  );
}

/** Everything `check-config` can verify without a network: files readable and well-formed. */
function checkFiles(crypto: ParleyCrypto, config: GatewayConfig): void {
  if (config.tls !== undefined) {
    readFileOr(config.tls.certFile, 'TLS certificate');
    readFileOr(config.tls.keyFile, 'TLS key');
    if (config.tls.clientCaFile !== undefined) readFileOr(config.tls.clientCaFile, 'TLS client CA');
  }
  if (config.registry.tlsCaFile !== undefined) readFileOr(config.registry.tlsCaFile, 'registry TLS CA');
  if (config.registry.trustBundleFile !== undefined) pinnedBundle(crypto, config.registry.trustBundleFile);
  if (config.policyFile !== undefined) readPolicyFile(config.policyFile);
}

const checkConfig: Command = {
  name: 'check-config',
  summary: 'validate the configuration and the files it names, then exit',
  usage: 'check-config [--config FILE] [--trust-on-first-use] [--json]',
  help: `Loads the settings exactly as \`serve\` would (file, then environment), and reads the TLS files,
the trust bundle and the policy file. Contacts neither the registry nor the database, and creates
nothing (a missing audit key file is reported as "will be created").`,
  options: { ...CONFIG_OPTIONS },
  async run(values, positionals, out) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const config = configOf(values);
    const crypto = await createCrypto();
    checkFiles(crypto, config);
    const summary = describeConfig(config);
    if (values['json'] === true) out(JSON.stringify({ ok: true, config: summary }, null, 2));
    else out(`configuration OK\n${JSON.stringify(summary, null, 2)}`);
  },
};

const policyCheck: Command = {
  name: 'policy check',
  summary: 'validate a policy file',
  usage: 'policy check FILE [--json]',
  help: 'Parses FILE as a routing policy (the same check `serve` applies on every reload) and prints its rule count.',
  options: {},
  async run(values, positionals, out) {
    const file = positionals[0];
    if (file === undefined) throw new UsageError('missing FILE');
    if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`);
    const policy = readPolicyFile(file);
    const rules = policy.document.rules.length;
    if (values['json'] === true) out(JSON.stringify({ ok: true, file, rules }));
    else out(`${file}: valid policy with ${rules} rule${rules === 1 ? '' : 's'}`);
  },
};

const serve: Command = {
  name: 'serve',
  summary: 'run the gateway (ready line on stdout, JSON logs on stderr)',
  usage: 'serve [--config FILE] [--trust-on-first-use]',
  help: `Runs parley.v1.AgentGatewayService with gRPC health and reflection, the Prometheus listener and the
registry revocation feed. When it is ready it prints ONE JSON line on stdout:
  {"ready":true,"address":"HOST:PORT","metrics_url":"http://HOST:PORT/metrics"|null,"gateway_id":…,
   "audit_public_key":…,"revocations_synced":true|false}
and logs JSON (pino) on stderr. Signals: SIGHUP reloads the policy file (so does a change to it; a bad
file is logged and the old policy kept); SIGTERM / SIGINT send GoAway "shutting_down" to every stream,
drain calls (shutdown_grace_ms), close the database and exit 0.`,
  options: { ...CONFIG_OPTIONS },
  async run(values, positionals, out) {
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const config = configOf(values);
    const crypto = await createCrypto();
    checkFiles(crypto, config);
    const [{ pino }, { startGateway }, { RevocationFeed }] = await Promise.all([import('pino'), import('./server.js'), import('./revocation-feed.js')]);
    const logger = pino({ level: config.logLevel, base: { service: PROGRAM, gateway_id: config.gatewayId, pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
    logger.info({ config: describeConfig(config) }, 'starting');

    // The registry: revocation feed, and (trust on first use only) the trust bundle.
    let creds: ChannelCredentials = credentials.createInsecure();
    const { REGISTRY_CHANNEL_OPTIONS } = await import('./revocation-feed.js');
    // The channel's reconnect backoff stays under the feed's own bound (./revocation-feed.ts).
    const channelOptions: Record<string, string | number> = { 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000, ...REGISTRY_CHANNEL_OPTIONS };
    if (config.registry.tlsCaFile !== undefined) {
      creds = credentials.createSsl(readFileOr(config.registry.tlsCaFile, 'registry TLS CA'));
      if (config.registry.tlsServerName !== undefined) channelOptions['grpc.ssl_target_name_override'] = config.registry.tlsServerName;
    }
    const client = createClient(RegistryService, config.registry.address, creds, { channelOptions });
    // With a pinned bundle AND a configured registry id the registry is not needed to start (the feed
    // catches up when it appears; agents are refused until then). Otherwise it must answer now.
    const selfSufficient = config.registry.trustBundleFile !== undefined && config.registry.registryId !== undefined;
    let remote: GetTrustBundleResponse | undefined;
    try {
      remote = await client.getTrustBundle({}, { timeoutMs: 10_000 });
    } catch (error) {
      const e = RpcError.from(error);
      if (!selfSufficient) {
        client.close();
        throw new RpcError(e.code === 'unavailable' || e.code === 'deadline_exceeded' ? 'unavailable' : e.code, `registry ${config.registry.address} unreachable: ${e.localDetails.split('\n')[0]}`);
      }
      logger.warn({ registry: config.registry.address, code: e.code }, 'registry unreachable at start: starting anyway, agents are refused until the revocation list loads');
    }
    if (remote !== undefined && config.registry.registryId !== undefined && config.registry.registryId !== toHex(remote.registryId)) {
      client.close();
      throw new RpcError('identity_mismatch', `registry at ${config.registry.address} has id ${toHex(remote.registryId)}, not the configured ${config.registry.registryId}`);
    }
    const registryId = config.registry.registryId === undefined ? remote!.registryId : fromHex(config.registry.registryId);
    let trustBundle: TrustBundle;
    if (config.registry.trustBundleFile !== undefined) trustBundle = pinnedBundle(crypto, config.registry.trustBundleFile);
    else {
      trustBundle = bundleOf(crypto, remote!);
      logger.warn({ event: 'security', code: 'trust_on_first_use', registry: config.registry.address }, 'trust bundle NOT pinned: using the keys the registry sent (--trust-on-first-use)');
    }

    const revocations = new MemoryRevocationSet({ maxAgeMs: config.revocation.maxAgeMs, failOpen: config.revocation.failOpen });
    const policy = config.policyFile === undefined ? Policy.denyAll() : readPolicyFile(config.policyFile);
    if (config.policyFile === undefined) logger.warn('no policy_file: every route is denied');
    const { keyPair: auditKey, created } = loadOrCreateAuditKey(crypto, config.auditKeyFile);
    if (created) logger.info({ audit_key_file: config.auditKeyFile, audit_public_key: toHex(auditKey.publicKey) }, 'audit key created');
    let running;
    try {
      running = await startGateway({
        crypto,
        gatewayId: config.gatewayId,
        trustBundle,
        revocations,
        policy,
        logger,
        rateLimit: config.rateLimit,
        ...(config.maxFrameBytes === undefined ? {} : { maxFrameBytes: config.maxFrameBytes }),
        verifySignatures: config.verifySignatures,
        database: config.database,
        mailboxTtlMs: config.mailboxTtlMs,
        auditKey,
        auditTrustedKeys: config.auditTrustedKeys.map((k) => fromHex(k)),
        metrics: config.metrics === false ? false : { host: config.metrics.host, port: config.metrics.port },
        host: config.listen.host,
        port: config.listen.port,
        ...(config.tls === undefined
          ? {}
          : {
              tls: {
                certChain: readFileOr(config.tls.certFile, 'TLS certificate'),
                privateKey: readFileOr(config.tls.keyFile, 'TLS key'),
                ...(config.tls.clientCaFile === undefined ? {} : { clientCa: readFileOr(config.tls.clientCaFile, 'TLS client CA') }),
              },
            }),
        shutdownGraceMs: config.shutdownGraceMs,
      });
    } catch (error) {
      client.close();
      throw error;
    }
    const gateway = running.gateway;
    const feed = new RevocationFeed({
      crypto,
      client,
      registryId,
      trustBundle,
      revocations,
      logger,
      onRevoked: (entry) => void (entry.kind === 'agent' ? gateway.onRevocation({ agentId: entry.agentId }) : gateway.onRevocation({ serial: entry.serial })),
    });
    feed.start();
    const synced = await Promise.race([feed.synced.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000).unref())]);
    if (!synced) logger.warn('revocation list not loaded yet: agents are refused (fail closed) until it is');
    const policyWatch = config.policyFile === undefined ? undefined : watchPolicyFile(config.policyFile, (p) => gateway.setPolicy(p), logger);
    const onHup = (): void => {
      if (policyWatch === undefined) logger.warn('SIGHUP: no policy_file to reload');
      else policyWatch.reload('SIGHUP');
    };
    process.on('SIGHUP', onHup);
    out(
      JSON.stringify({
        ready: true,
        address: running.address,
        metrics_url: running.metricsUrl ?? null,
        gateway_id: config.gatewayId,
        audit_public_key: toHex(auditKey.publicKey),
        revocations_synced: synced,
      }),
    );
    logger.info({ address: running.address, metrics_url: running.metricsUrl }, 'ready');
    await new Promise<void>((done) => {
      const stop = (signal: string): void => {
        logger.info({ signal }, 'stopping');
        process.off('SIGHUP', onHup);
        policyWatch?.close();
        void feed
          .close()
          .then(() => running.close())
          .then(() => client.close())
          .then(() => {
            logger.info('stopped');
            done();
          });
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
  },
};

const COMMANDS: readonly Command[] = [serve, checkConfig, policyCheck];

function mainHelp(): string {
  return `${PROGRAM}: Parley agent gateway

Usage: ${PROGRAM} COMMAND [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(13)} ${c.summary}`).join('\n')}

${GLOBAL_HELP}

Run \`${PROGRAM} COMMAND --help\` for a command's options.

Exit codes:
  0 success                 6 invalid argument (malformed config value, policy or trust bundle)
  1 internal error          7 unavailable (registry, database or listen address)
  2 usage error             8 failed precondition (plaintext on non-loopback, no pinned trust bundle,
  3 not found (a file)        audit key file readable by others)
  5 permission denied (registry id mismatch)`;
}

/**
 * Runs the CLI.
 * @param argv arguments after the program name
 * @param out where normal output goes (stdout)
 * @returns the exit code
 */
export async function main(argv: readonly string[], out: (text: string) => void = (t) => process.stdout.write(`${t}\n`)): Promise<number> {
  const all = Object.assign({ json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, ...COMMANDS.map((c) => c.options)) as OptionSpec;
  const words = parseArgs({ args: [...argv], options: all, allowPositionals: true, strict: false }).positionals;
  const command = COMMANDS.find((c) => c.name === `${words[0]} ${words[1]}`) ?? COMMANDS.find((c) => c.name === words[0]);
  const wantsHelp = argv.includes('--help') || argv.includes('-h');
  if (command === undefined) {
    if (argv.length === 0 || (wantsHelp && words.length === 0)) {
      out(mainHelp());
      return argv.length === 0 ? EXIT_CODES.usage : EXIT_CODES.ok;
    }
    if (words[0] === 'policy') {
      if (wantsHelp) {
        out(`Usage: ${PROGRAM} policy check FILE\n\n  policy check  ${policyCheck.summary}`);
        return EXIT_CODES.ok;
      }
      process.stderr.write(`${PROGRAM}: error: ${words[1] === undefined ? 'missing subcommand' : `unknown subcommand '${words[1]}'`} of policy (one of: check)\n`);
      return EXIT_CODES.usage;
    }
    process.stderr.write(`${PROGRAM}: error: unknown command '${words[0] ?? argv[0]}' (try --help)\n`);
    return EXIT_CODES.usage;
  }
  if (wantsHelp) {
    const extra = Object.keys(command.options).some((k) => k in CONFIG_OPTIONS) ? `${CONFIG_HELP}\n\n${GLOBAL_HELP}` : GLOBAL_HELP;
    out(`Usage: ${PROGRAM} ${command.usage}\n\n${command.summary}.\n\n${command.help}\n\n${extra}`);
    return EXIT_CODES.ok;
  }
  try {
    const parsed = parseArgs({ args: [...argv], options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, ...command.options }, allowPositionals: true, strict: true });
    await command.run(parsed.values as Values, parsed.positionals.slice(command.name.split(' ').length), out);
    return EXIT_CODES.ok;
  } catch (error) {
    const say = (text: string): void => void process.stderr.write(`${PROGRAM}: error: ${text.replace(/\s*\n\s*/g, ' ')}\n`);
    if (isUsageError(error)) {
      say(`${(error as Error).message} (see \`${PROGRAM} ${command.name} --help\`)`);
      return EXIT_CODES.usage;
    }
    const e = RpcError.from(error);
    if (e.code === 'internal') {
      say(`internal error: ${e.cause instanceof Error ? e.cause.message.split('\n')[0] : e.localDetails}`);
      return EXIT_CODES.internal;
    }
    say(e.localDetails);
    return exitCodeOf(e.code);
  }
}

// Run when executed (not when imported by a test).
runWhenExecuted(PROGRAM, main);
