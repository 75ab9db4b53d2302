/**
 * `parley-registry serve`: the gRPC registry server, until SIGINT or SIGTERM.
 * JSON logs on stdout; the first "listening" line carries the bound port (and
 * the operations listener's URLs when `metrics_listen` is on).
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Option, UsageError, type CliCommand } from '@parley/cli-kit';
import { toHex } from '@parley/crypto-core';
import { isLoopbackHost, parseHostPort, RpcError } from '@parley/rpc';
import { DATA_FILES, MAX_HEARTBEAT_MS, checkDatabaseRecord, checkMetricsListen, readSettings, type RegistrySettings } from '../config.js';
import { IssuerKeyFiles } from '../issuer-keys.js';
import { certificateBundle } from '../pem.js';
import {
  addDatabaseOptions,
  addPassphraseOptions,
  databaseOf,
  passphraseOf,
  readFileOr,
  type CommandContext,
  type DatabaseOptions,
  type PassphraseOptions,
  type RegistryCli,
} from './context.js';

interface ServeOptions extends DatabaseOptions, PassphraseOptions {
  readonly listen?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly heartbeatMs?: string;
  readonly logLevel?: string;
  readonly maxConnections?: string;
  readonly metricsListen?: string;
}

export function addServeCommand(program: CliCommand, cli: RegistryCli): void {
  const command = program
    .command('serve')
    .summary('run the gRPC registry server (JSON logs on stdout)')
    .usage('[--listen <HOST:PORT>] [--tls-cert <FILE> --tls-key <FILE>] [--passphrase-file <FILE>]')
    .description(
      'run the gRPC registry server (JSON logs on stdout).\n\n' +
        'Runs parley.v1.RegistryService with gRPC health checking and server reflection. Logs are JSON lines (pino) on stdout; the first "listening" line carries the bound port. Plaintext is served only on loopback addresses; any other address needs TLS (TLS 1.3 only). Stops cleanly on SIGINT or SIGTERM.\n\n' +
        'Health reflects readiness: NOT_SERVING while the database does not answer, SERVING again by itself. With --metrics-listen (or metrics_listen in registry.json) an HTTP listener serves GET /metrics (Prometheus), /healthz (liveness) and /readyz (readiness, JSON naming a failing check); `check` asks it.',
    )
    .addOption(new Option('--listen <HOST:PORT>', 'address to bind (default: "listen" in registry.json; port 0 picks a free port)'))
    .addOption(new Option('--tls-cert <FILE>', 'TLS certificate chain (PEM)'))
    .addOption(new Option('--tls-key <FILE>', 'TLS private key (PEM)'))
    .addOption(new Option('--heartbeat-ms <N>', 'interval of signed heartbeats on revocation watches (default from registry.json)'))
    .addOption(new Option('--log-level <LEVEL>', 'trace, debug, info (default), warn, error'))
    .addOption(new Option('--max-connections <N>', 'PostgreSQL connection pool size, 1..9999 (default 10)'))
    .addOption(
      new Option(
        '--metrics-listen <HOST:PORT|off>',
        'operations listener: GET /metrics, /healthz, /readyz (env PARLEY_REGISTRY_METRICS_LISTEN; default "metrics_listen" in registry.json, which defaults to off)',
      ),
    );
  addPassphraseOptions(addDatabaseOptions(command)).action(async function (this: CliCommand) {
    await serve(cli.context<ServeOptions>(this));
  });
}

async function serve(ctx: CommandContext<ServeOptions>): Promise<void> {
  const crypto = await ctx.crypto();
  const fileSettings = readSettings(ctx.dataDir);
  const where = databaseOf(ctx);
  // The database init recorded, before anything is opened or created (a forgotten DATABASE_URL must not make a new PGlite database).
  checkDatabaseRecord(fileSettings.database, where);
  const heartbeat = ctx.options.heartbeatMs;
  if (heartbeat !== undefined && (!/^[1-9]\d{2,7}$/.test(heartbeat) || Number(heartbeat) > MAX_HEARTBEAT_MS)) {
    throw new UsageError(`--heartbeat-ms must be an integer from 100 to ${MAX_HEARTBEAT_MS} (gateways reopen a revocation watch silent for 40 s)`);
  }
  const settings: RegistrySettings = { ...fileSettings, ...(heartbeat === undefined ? {} : { heartbeatMs: Number(heartbeat) }) };
  const certPath = ctx.options.tlsCert;
  const keyPath = ctx.options.tlsKey;
  if ((certPath === undefined) !== (keyPath === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  const tlsFiles =
    certPath === undefined || keyPath === undefined
      ? undefined
      : { certChain: certificateBundle(certPath, readFileOr(certPath, 'TLS certificate'), 'TLS certificate'), privateKey: readFileOr(keyPath, 'TLS key') };
  const level = ctx.options.logLevel ?? 'info';
  if (!['trace', 'debug', 'info', 'warn', 'error'].includes(level)) throw new UsageError('--log-level must be trace, debug, info, warn or error');
  const maxConnections = ctx.options.maxConnections;
  if (maxConnections !== undefined && !/^[1-9]\d{0,3}$/.test(maxConnections)) throw new UsageError('--max-connections must be 1..9999');
  const metricsListen = metricsListenOf(ctx.options.metricsListen, settings);

  const listen = ctx.options.listen ?? settings.listen;
  if (tlsFiles === undefined && !isLoopbackHost(parseHostPort(listen, '--listen').host)) {
    throw new RpcError('failed_precondition', `refusing to serve plaintext on non-loopback address ${listen}: give --tls-cert and --tls-key`);
  }
  const keyFiles = new IssuerKeyFiles(crypto, ctx.dataDir, passphraseOf(ctx));
  // Read now, so a wrong passphrase or a bad file fails before anything starts (loadFor reads it again).
  const issuer = keyFiles.read(keyFiles.activePath);
  // Server-side modules load only here, so client commands start quickly.
  const [{ pino }, { openRegistry }, { RegistryServer }, { startOpsServer }] = await Promise.all([
    import('pino'),
    import('../registry.js'),
    import('../server.js'),
    import('../ops.js'),
  ]);
  const destination = pino.destination({ dest: 1, sync: true });
  const base = { service: 'parley-registry', pid: process.pid };
  const logger = pino({ level, base }, destination);
  // Lifecycle lines (listening, stopping, stopped) are printed at every log level: supervisors and tests read the port from them.
  const lifecycle = pino({ level: 'info', base }, destination);
  // A registry.json without the database record (an older init): a PGlite directory this run creates holds no
  // registry, and is removed again when serve refuses (the operator probably forgot DATABASE_URL).
  const pgdata = join(ctx.dataDir, DATA_FILES.pgliteDir);
  const freshPglite = where.databaseUrl === undefined && !existsSync(pgdata);
  const forget = (error: unknown): unknown => {
    if (!freshPglite) return error;
    rmSync(pgdata, { recursive: true, force: true });
    const e = RpcError.from(error);
    if (e.code !== 'failed_precondition' || !e.details.includes('holds no registry')) return error;
    return new RpcError(
      'failed_precondition',
      `${ctx.dataDir} has no PGlite database (no ${pgdata}): if it was initialised for PostgreSQL, set DATABASE_URL (and PARLEY_REGISTRY_DB_SCHEMA if init had one); otherwise run \`init\` first (nothing was left behind)`,
      { cause: error },
    );
  };
  let registry: Awaited<ReturnType<typeof openRegistry>>;
  try {
    registry = await openRegistry(crypto, { ...where, ...(maxConnections === undefined ? {} : { maxConnections: Number(maxConnections) }) });
  } catch (error) {
    throw forget(error);
  }
  const server = new RegistryServer({ crypto, store: registry.store, keyFiles, settings, logger, processMetrics: true });
  let bound: { host: string; port: number };
  let ops: Awaited<ReturnType<typeof startOpsServer>> | undefined;
  try {
    bound = await server.start(listen, tlsFiles);
    if (metricsListen !== 'off') {
      const { host, port } = parseHostPort(metricsListen, '--metrics-listen');
      ops = await startOpsServer({
        host: host.replace(/^\[|\]$/g, ''),
        port,
        metrics: server.metrics.registry,
        readiness: server.readiness,
        onRequest: (r) => logger.debug({ method: r.method, path: r.path, status: r.status, remote: r.remote, duration_ms: Math.round(r.durationMs * 10) / 10 }, 'ops request'),
      }).catch((cause: unknown) => {
        throw new RpcError('unavailable', cause instanceof Error ? cause.message : String(cause), { cause });
      });
    }
  } catch (error) {
    await server.stop(0).catch(() => undefined);
    await registry.close();
    throw forget(error);
  }
  // The signal handlers are in place before the "listening" line: a supervisor (or a test) that signals
  // as soon as it reads that line must never find the default handler, which would kill the process
  // without releasing its locks.
  const stopped = new Promise<void>((done) => {
    const stop = (signal: string): void => {
      lifecycle.info({ signal }, 'stopping');
      void server
        .stop()
        .then(() => ops?.close())
        .then(() => registry.close())
        .then(() => {
          lifecycle.info('stopped');
          done();
        });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  lifecycle.info(
    {
      address: bound.host,
      port: bound.port,
      tls: tlsFiles !== undefined,
      database: registry.db.engine,
      database_location: registry.db.location,
      schema_version: registry.migrations.version,
      migrations_applied: registry.migrations.applied,
      issuer_key_id: toHex(server.activeKeyId ?? issuer.keyId),
      trust_bundle_version: server.trustBundleVersion,
      directory_reads: settings.directoryReads,
      metrics_url: ops?.metricsUrl ?? null,
      readiness_url: ops === undefined ? null : `${ops.baseUrl}/readyz`,
      ready: server.readiness.ready,
    },
    'listening',
  );
  await stopped;
}

/**
 * The operations listener address: `--metrics-listen`, else PARLEY_REGISTRY_METRICS_LISTEN, else
 * registry.json's `metrics_listen` (default off).
 * @throws UsageError on a value that is neither `off` nor host:port
 */
export function metricsListenOf(option: string | undefined, settings: RegistrySettings): string {
  const env = process.env['PARLEY_REGISTRY_METRICS_LISTEN'];
  const value = option ?? (env === undefined || env === '' ? undefined : env) ?? settings.metricsListen;
  try {
    return checkMetricsListen(value, option !== undefined ? '--metrics-listen' : env !== undefined && env !== '' ? 'PARLEY_REGISTRY_METRICS_LISTEN' : 'metrics_listen');
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message.replace(/^\[[a-z_]+\] /, '') : String(error));
  }
}
