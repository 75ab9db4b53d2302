#!/usr/bin/env node
/**
 * parley-gateway: runs and checks a Parley agent gateway. Commands: `serve`,
 * `check` (is a running gateway ready? exit codes for scripts and monitoring),
 * `check-config`, `policy check FILE`. Settings come from a JSON config file
 * (`--config FILE` or PARLEY_GATEWAY_CONFIG) and PARLEY_GATEWAY_* variables
 * (./config.ts). The command line is @parley/cli-kit's (commander): failures
 * print one line, `parley-gateway: error: …`, and exit with a documented code
 * (EXIT_CODES); never a stack trace.
 *
 * `serve` writes exactly one line on stdout when it is ready — a JSON object
 * with the bound address and metrics URL — and its JSON logs (pino) on stderr.
 */
import { readFileSync } from 'node:fs';
import { credentials, type ChannelCredentials } from '@grpc/grpc-js';
import { EXIT_CODES, Option, UsageError, commandGroup, createProgram, exitCodeOf, jsonOption, runProgram, runWhenExecuted, type CliCommand, type Failure } from '@parley/cli-kit';
import { createCrypto, fromHex, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle } from '@parley/identity';
import { RegistryService, type GetTrustBundleResponse } from '@parley/proto';
import { ReadyzUnavailableError, formatReadyz, probeReadyz, type ReadyzProbe } from '@parley/ops';
import { TrustBundleFollower, type TrustBundleFollowerEvent } from '@parley/protocol';
import type { Logger } from 'pino';
import { RpcError, createClient } from '@parley/rpc';
import {
  SETTINGS,
  configWarnings,
  describeConfig,
  loadConfig,
  loadOrCreateAuditKey,
  readPolicyFile,
  watchPolicyFile,
  type ConfigSources,
  type GatewayConfig,
} from './config.js';
import { Policy } from './policy.js';
import { fileTrustBundleStore, followedBundlePath } from './trust-bundle-state.js';

/** Exit codes (the table is in @parley/cli-kit, shared by every Parley CLI; also in the README). */
export { EXIT_CODES };

const PROGRAM = 'parley-gateway';

/** Option values of a command, with the global --json. */
interface Values {
  readonly config?: string;
  readonly trustOnFirstUse?: boolean;
  readonly json?: boolean;
  readonly url?: string;
  readonly timeoutMs?: string;
}

/** The options of the commands that load the configuration. */
function configOptions(): Option[] {
  return [
    new Option('-c, --config <FILE>', 'JSON config file (env PARLEY_GATEWAY_CONFIG); environment variables override it'),
    new Option(
      '--trust-on-first-use',
      "accept the registry's own trust bundle when no trust_bundle_file is pinned (insecure: whoever answers at registry_address decides which certificates are valid)",
    ),
  ];
}

/** Every setting, for the help of the commands that load them. */
const SETTINGS_HELP = {
  heading: 'Settings (config file key; environment variables override the file):',
  items: [
    ...SETTINGS.map((s) => [s.key, `${s.help}. Env ${s.env}${s.def === undefined ? '' : `, default ${s.def}`}.`] as const),
    ['DATABASE_URL', 'PostgreSQL URL, from the environment only (never in the config file); without it, PGlite in data_dir.'] as const,
  ],
};

function configOf(values: Values, checkFiles?: ConfigSources['checkFiles']): GatewayConfig {
  const file = values.config ?? nonEmpty(process.env['PARLEY_GATEWAY_CONFIG']);
  return loadConfig({ ...(file === undefined ? {} : { file }), env: process.env, trustOnFirstUse: values.trustOnFirstUse === true, ...(checkFiles === undefined ? {} : { checkFiles }) });
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

/** The trust bundle follower's events as log lines: refusals are security events, an outage a warning. */
function logTrustBundleEvent(logger: Logger, event: TrustBundleFollowerEvent, file: string): void {
  switch (event.kind) {
    case 'restored':
      logger.info({ event: 'trust_bundle_restored', trust_bundle_version: event.version, file }, 'followed trust bundle restored');
      break;
    case 'pin_changed':
      logger.warn(
        { event: 'security', stage: 'trust_bundle', code: 'pin_changed', trust_bundle_version: event.version, from: event.from, to: event.to, detail: event.detail, file },
        'followed trust bundle set aside: it was not followed from this pinned bundle, which is followed from now on',
      );
      break;
    case 'restore_failed':
      logger.warn({ event: 'trust_bundle_restore_failed', code: event.code, detail: event.detail, file }, 'followed trust bundle file not usable: starting from the pinned bundle');
      break;
    case 'updated':
      logger.info({ event: 'trust_bundle_updated', from: event.from, to: event.to, accepted: event.accepted }, 'trust bundle updated');
      break;
    case 'refused':
      logger.warn({ event: 'security', stage: 'trust_bundle', code: event.code, trust_bundle_version: event.version, detail: event.detail }, 'trust bundle from the registry refused: keeping the last verified version');
      break;
    case 'unreachable':
      logger.warn({ event: 'trust_bundle_unreachable', code: event.code, trust_bundle_version: event.version }, 'registry unreachable for the trust bundle: keeping the last verified version');
      break;
    case 'save_failed':
      logger.error({ event: 'trust_bundle_save_failed', trust_bundle_version: event.version, detail: event.detail, file }, 'cannot save the followed trust bundle: a restart would start from an older version');
      break;
  }
}

/**
 * Everything `check-config` and `serve` can verify without a network: the
 * files the settings name are readable and well-formed. Problems join the
 * settings' own, so that all are reported at once.
 */
function fileChecks(crypto: ParleyCrypto): NonNullable<ConfigSources['checkFiles']> {
  return (files, problems) => {
    if (files.tlsCertFile !== undefined) problems.check(() => readFileOr(files.tlsCertFile!, 'TLS certificate'));
    if (files.tlsKeyFile !== undefined) problems.check(() => readFileOr(files.tlsKeyFile!, 'TLS key'));
    if (files.tlsClientCaFile !== undefined) problems.check(() => readFileOr(files.tlsClientCaFile!, 'TLS client CA'));
    if (files.registryTlsCaFile !== undefined) problems.check(() => readFileOr(files.registryTlsCaFile!, 'registry TLS CA'));
    if (files.trustBundleFile !== undefined) problems.check(() => pinnedBundle(crypto, files.trustBundleFile!));
    if (files.policyFile !== undefined) problems.check(() => readPolicyFile(files.policyFile!));
  };
}

/** `check-config`: everything verifiable without a network (all problems at once), then the settings and warnings. */
async function checkConfig(values: Values, out: (text: string) => void): Promise<void> {
  const crypto = await createCrypto();
  const config = configOf(values, fileChecks(crypto));
  const policy = config.policyFile === undefined ? undefined : readPolicyFile(config.policyFile);
  const warnings = configWarnings(config, policy);
  const summary = describeConfig(config);
  if (values.json === true) out(JSON.stringify({ ok: true, warnings, config: summary }, null, 2));
  else {
    const head = warnings.length === 0 ? 'configuration OK' : `configuration OK, with ${warnings.length} warning${warnings.length === 1 ? '' : 's'}:\n${warnings.map((w) => `  warning: ${w}`).join('\n')}`;
    out(`${head}\n${JSON.stringify(summary, null, 2)}`);
  }
}

/** A readiness verdict that is not "ready": exit code 9 (`notReady`). */
class NotReady extends Error {
  override readonly name = 'NotReady';
}

/**
 * Where `check` asks: `--url`, else the operations listener of the settings
 * (`metrics_listen`; a wildcard host is asked on loopback).
 * @throws UsageError when there is none to ask
 */
function readyzBase(values: Values): string {
  if (values.url !== undefined) {
    if (!/^https?:\/\/[^\s/]+(\/.*)?$/.test(values.url)) throw new UsageError(`--url must be http://HOST:PORT, got '${values.url}'`);
    return values.url;
  }
  const config = configOf(values);
  if (config.metrics === false) throw new UsageError('metrics_listen is "off": there is no /readyz to ask (turn it on, or give --url)');
  if (config.metrics.port === 0) throw new UsageError('metrics_listen has port 0 (any free port): give --url with the port the gateway printed');
  const host = config.metrics.host === '0.0.0.0' ? '127.0.0.1' : config.metrics.host === '::' ? '::1' : config.metrics.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.metrics.port}`;
}

/** `check`: asks a running gateway's /readyz; exit 0 ready, 9 not ready, 7 unreachable, 2 usage. */
async function check(values: Values, out: (text: string) => void): Promise<void> {
  const timeout = values.timeoutMs === undefined ? 5_000 : Number(values.timeoutMs);
  if (!Number.isSafeInteger(timeout) || timeout < 1 || timeout > 600_000) throw new UsageError('--timeout-ms must be an integer from 1 to 600000');
  let probe: ReadyzProbe;
  try {
    probe = await probeReadyz(readyzBase(values), timeout);
  } catch (error) {
    if (error instanceof ReadyzUnavailableError) throw new RpcError('unavailable', error.message, { cause: error });
    throw error;
  }
  out(values.json === true ? JSON.stringify({ url: probe.url, ...probe.body }, null, 2) : formatReadyz(probe));
  if (!probe.ready) {
    const failing = probe.body.checks.filter((c) => !c.ok).map((c) => `${c.name} (${c.detail})`);
    throw new NotReady(`not ready: ${failing.join('; ') || 'no check passes'}`);
  }
}

/** `policy check FILE`: the check `serve` applies on every reload, with deprecated key spellings named. */
async function policyCheck(file: string, values: Values, out: (text: string) => void): Promise<void> {
  const policy = readPolicyFile(file);
  const rules = policy.document.rules.length;
  const warnings = [
    ...(rules === 0 ? ['no rules: every route is denied (deny all)'] : []),
    ...(policy.deprecations.length === 0 ? [] : [`deprecated key spellings ${policy.deprecations.join(', ')}: rename them`]),
  ];
  if (values.json === true) out(JSON.stringify({ ok: true, file, rules, warnings }));
  else out([`${file}: valid policy with ${rules} rule${rules === 1 ? '' : 's'}`, ...warnings.map((w) => `  warning: ${w}`)].join('\n'));
}

/** What SIGHUP does: set once the policy watch runs; before that a SIGHUP is only noted. */
interface HupState {
  onHup: (() => void) | undefined;
  whileStarting: boolean;
}

/**
 * `serve`: runs until SIGTERM / SIGINT. SIGHUP is handled from the first instruction to the last: its
 * default action kills the process, and a reload sent while the gateway starts or stops must not.
 */
async function serve(values: Values, out: (text: string) => void): Promise<void> {
  const state: HupState = { onHup: undefined, whileStarting: false };
  const hup = (): void => (state.onHup === undefined ? void (state.whileStarting = true) : state.onHup());
  process.on('SIGHUP', hup);
  try {
    await serveUntilStopped(values, out, state);
  } finally {
    process.off('SIGHUP', hup);
  }
}

async function serveUntilStopped(values: Values, out: (text: string) => void, hup: HupState): Promise<void> {
  const crypto = await createCrypto();
  const config = configOf(values, fileChecks(crypto));
  const [{ pino }, { startGateway }, { RevocationFeed, REGISTRY_CHANNEL_OPTIONS, openRevocationFloor }] = await Promise.all([import('pino'), import('./server.js'), import('./revocation-feed.js')]);
  const logger = pino({ level: config.logLevel, base: { service: PROGRAM, gateway_id: config.gatewayId, pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
  logger.info({ config: describeConfig(config) }, 'starting');

  // The registry: revocation feed, and (trust on first use only) the trust bundle.
  let creds: ChannelCredentials = credentials.createInsecure();
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
  let pinned: TrustBundle;
  if (config.registry.trustBundleFile !== undefined) pinned = pinnedBundle(crypto, config.registry.trustBundleFile);
  else {
    pinned = bundleOf(crypto, remote!);
    logger.warn({ event: 'security', code: 'trust_on_first_use', registry: config.registry.address }, 'trust bundle NOT pinned: using the keys the registry sent (--trust-on-first-use)');
  }
  // The registry's signed trust bundle, followed from the pinned one (§15.9): an online issuer rotation
  // reaches this gateway before the new key signs anything. The newest verified version is kept beside
  // the pinned file, so a restart does not fall back to a bundle older than a rotation.
  const followedPath = followedBundlePath(config.registry.trustBundleFile, config.auditKeyFile);
  // Readiness (informational only, §15.9: an unreachable registry or a refused version leaves the last
  // verified bundle in force, which never refuses anything new): set once the gateway runs.
  const trustBundleReport: { set?: () => void } = {};
  const follower = new TrustBundleFollower({
    crypto,
    client,
    registryId,
    pinned,
    // Trusting on first use, `pinned` is what the registry sent at this start, not an operator's pin: the
    // saved state keeps precedence over it (§15.9).
    trustOnFirstUse: config.registry.trustBundleFile === undefined,
    store: fileTrustBundleStore(followedPath, registryId),
    onEvent: (event) => {
      logTrustBundleEvent(logger, event, followedPath);
      trustBundleReport.set?.();
    },
  });
  const follow = config.registry.followTrustBundle;
  if (follow) {
    await follower.restore();
    if (remote !== undefined) await follower.refresh().catch(() => undefined); // reported by onEvent; the last verified bundle stays
    follower.start();
  } else {
    logger.warn({ trust_bundle_follow: false }, "trust_bundle_follow is off: the pinned bundle is used as is (an issuer rotation needs a new file and a restart)");
  }
  const trustBundle = follow ? follower.trustBundle : pinned;

  const revocations = new MemoryRevocationSet({ maxAgeMs: config.revocation.maxAgeMs, failOpen: config.revocation.failOpen });
  const policy = config.policyFile === undefined ? Policy.denyAll() : readPolicyFile(config.policyFile);
  for (const warning of configWarnings(config, config.policyFile === undefined ? undefined : policy)) logger.warn({ warning }, 'configuration warning');
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
      ...(config.verifyThreads === undefined ? {} : { verifyThreads: config.verifyThreads }),
      database: config.database,
      mailboxTtlMs: config.mailboxTtlMs,
      mailboxQuota: config.mailboxQuota,
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
      memory: config.memory === false ? false : { quotas: config.memory.quotas },
      processMetrics: true,
    });
  } catch (error) {
    auditKey.secretKey.wipe();
    await follower.close();
    client.close();
    throw error;
  }
  const gateway = running.gateway;
  let floor;
  try {
    floor = await openRevocationFloor(running.database, registryId);
  } catch (error) {
    await running.close();
    auditKey.secretKey.wipe();
    client.close();
    throw error;
  }
  const feed = new RevocationFeed({
    floor,
    crypto,
    client,
    registryId,
    trustBundle,
    revocations,
    logger,
    onRevoked: (entry) => void (entry.kind === 'agent' ? gateway.onRevocation({ agentId: entry.agentId }) : gateway.onRevocation({ serial: entry.serial })),
    ...(follow ? { onTrustBundleVersion: (version: bigint) => follower.hint(version) } : {}),
  });
  gateway.metrics.watchFeed(feed);
  feed.start();
  const synced = await Promise.race([feed.synced.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000).unref())]);
  trustBundleReport.set = (): void =>
    running.readiness.set('trust_bundle', !follow ? { ok: true, detail: 'the pinned bundle, not followed (trust_bundle_follow off)' } : {
      ok: true,
      detail: `version ${follower.version} (${follower.state}${follower.lastVerifiedAtMs === undefined ? ', never confirmed by the registry' : `, confirmed by the registry ${Math.round((Date.now() - follower.lastVerifiedAtMs) / 1000)} s ago`})`,
    });
  trustBundleReport.set();
  const trustBundleReportTimer = setInterval(() => trustBundleReport.set?.(), 10_000);
  trustBundleReportTimer.unref();
  if (!synced) logger.warn('revocation list not loaded yet: agents are refused (fail closed) until it is');
  const policyWatch = config.policyFile === undefined ? undefined : watchPolicyFile(config.policyFile, (p) => gateway.setPolicy(p), logger);
  // Read once more now that the watch runs: a change made between the first read (at start) and the watch
  // produced no event, and the gateway would otherwise keep enforcing the older policy without a word.
  policyWatch?.reload(hup.whileStarting ? 'SIGHUP while starting' : 'watch started');
  hup.onHup = (): void => {
    if (policyWatch === undefined) logger.warn('SIGHUP: no policy_file to reload');
    else policyWatch.reload('SIGHUP');
  };
  // SIGINT / SIGTERM handlers are in place before the ready line: a supervisor that signals as soon as
  // it reads that line must never meet the default handler (which would kill without releasing locks).
  const stopped = new Promise<void>((done) => {
    const stop = (signal: string): void => {
      logger.info({ signal }, 'stopping');
      hup.onHup = (): void => logger.info('SIGHUP while stopping: ignored'); // still handled: the default would kill
      clearInterval(trustBundleReportTimer);
      policyWatch?.close();
      void feed
        .close()
        .then(() => follower.close())
        .then(() => running.close())
        .then(() => auditKey.secretKey.wipe())
        .then(() => client.close())
        .then(() => {
          logger.info('stopped');
          done();
        });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  out(
    JSON.stringify({
      ready: true,
      address: running.address,
      metrics_url: running.metricsUrl ?? null,
      health_url: running.opsUrl === undefined ? null : `${running.opsUrl}/healthz`,
      readiness_url: running.opsUrl === undefined ? null : `${running.opsUrl}/readyz`,
      gateway_id: config.gatewayId,
      audit_public_key: toHex(auditKey.publicKey),
      revocations_synced: synced,
      trust_bundle_version: follower.version,
    }),
  );
  logger.info({ address: running.address, metrics_url: running.metricsUrl, serving: running.readiness.ready, failing: running.readiness.report().failing }, 'started');
  await stopped;
}

/**
 * Runs the CLI.
 * @param argv arguments after the program name
 * @param out where normal output goes (stdout)
 * @returns the exit code
 */
export async function main(argv: readonly string[], out: (text: string) => void = (t) => process.stdout.write(`${t}\n`)): Promise<number> {
  const program = createProgram({ name: PROGRAM, description: 'Parley agent gateway.', out });
  program.addOption(jsonOption());
  const values = (command: CliCommand): Values => command.optsWithGlobals<Values>();

  const serveCommand = program
    .command('serve')
    .summary('run the gateway (ready line on stdout, JSON logs on stderr)')
    .usage('[--config <FILE>] [--trust-on-first-use]')
    .description(
      [
        'run the gateway (ready line on stdout, JSON logs on stderr).',
        'Runs parley.v1.AgentGatewayService and parley.v1.MemoryService (shared memory, unless memory is false) with gRPC health and reflection, the Prometheus listener and the registry revocation feed. When it is ready it prints ONE JSON line on stdout, then logs JSON (pino) on stderr:',
        [
          '  {"ready":true,"address":"HOST:PORT",',
          '   "metrics_url":"http://HOST:PORT/metrics"|null,"gateway_id":…,',
          '   "audit_public_key":…,"revocations_synced":true|false}',
        ].join('\n'),
        'Signals: SIGHUP reloads the policy file (so does a change to it; a bad file is logged and the old policy kept); SIGTERM / SIGINT send GoAway "shutting_down" to every stream, drain calls (shutdown_grace_ms), close the database and exit 0.',
      ].join('\n\n'),
    )
    .action(async function (this: CliCommand) {
      await serve(values(this), out);
    });
  const checkConfigCommand = program
    .command('check-config')
    .summary('validate the configuration and the files it names, then exit')
    .usage('[--config <FILE>] [--trust-on-first-use] [--json]')
    .description(
      [
        'validate the configuration and the files it names, then exit.',
        'Loads the settings exactly as `serve` would (file, then environment), and reads the TLS files, the trust bundle and the policy file. Contacts neither the registry nor the database, and creates nothing (a missing audit key file is reported as "will be created").',
      ].join('\n\n'),
    )
    .action(async function (this: CliCommand) {
      await checkConfig(values(this), out);
    });
  const checkCommand = program
    .command('check')
    .summary('is a running gateway ready? (exit 0 ready, 9 not ready, 7 unreachable)')
    .usage('[--config <FILE> | --url <URL>] [--timeout-ms <N>] [--json]')
    .description(
      [
        'is a running gateway ready? (exit 0 ready, 9 not ready, 7 unreachable)',
        'Asks GET /readyz on the gateway\'s operations listener (metrics_listen of the settings, or --url) and prints each readiness check: revocation (the revocation copy is within its freshness bound), storage (the database answers), and any other a component added. The same checks drive gRPC health (grpc.health.v1: NOT_SERVING while one fails). For scripts and monitoring: exit 0 ready, 9 not ready (the gateway answered; a check fails), 7 unreachable (nothing answered in time), 2 usage.',
      ].join('\n\n'),
    )
    .addOption(new Option('--url <URL>', 'the operations listener to ask, http://HOST:PORT (default: from metrics_listen)'))
    .addOption(new Option('--timeout-ms <N>', 'how long to wait for the answer (default 5000)'))
    .action(async function (this: CliCommand) {
      await check(values(this), out);
    });
  for (const command of [serveCommand, checkConfigCommand, checkCommand]) {
    for (const option of configOptions()) command.addOption(option);
    if (command !== checkCommand) command.addHelpSection(SETTINGS_HELP);
  }
  commandGroup(program, 'policy', 'routing policy files')
    .command('check')
    .summary('validate a policy file')
    .usage('<FILE> [--json]')
    .description('validate a policy file.\n\nParses FILE as a routing policy (the same check `serve` applies on every reload) and prints its rule count.')
    .argument('<FILE>', 'the policy JSON')
    .action(async function (this: CliCommand, file: string) {
      await policyCheck(file, values(this), out);
    });

  program.addHelpSection({
    heading: 'Exit codes:',
    align: 'section',
    items: [
      ['0', 'success'],
      ['1', 'internal error'],
      ['2', 'usage error (unknown command or option, missing argument)'],
      ['3', 'not found (a file)'],
      ['5', 'permission denied (registry id mismatch)'],
      ['6', 'invalid argument (malformed config value, policy or trust bundle)'],
      ['7', 'unavailable (registry, database or listen address; check: the gateway did not answer)'],
      ['8', 'failed precondition (plaintext on non-loopback, no pinned trust bundle, audit key file readable by others)'],
      ['9', 'not ready (check: the gateway answered, a readiness check fails)'],
    ],
  });
  return runProgram(program, argv, { classify });
}

/** An error's exit code and line: its Parley code's, with the full local detail (a file name, a setting). */
function classify(error: unknown): Failure {
  if (error instanceof NotReady) return { exitCode: EXIT_CODES.notReady, code: 'not_ready', message: error.message };
  const e = RpcError.from(error);
  if (e.code === 'internal') {
    return { exitCode: EXIT_CODES.internal, code: 'internal', message: `internal error: ${e.cause instanceof Error ? e.cause.message.split('\n')[0] : e.localDetails}` };
  }
  return { exitCode: exitCodeOf(e.code), code: e.code, message: e.localDetails };
}

// Run when executed (not when imported by a test).
runWhenExecuted(PROGRAM, main);
