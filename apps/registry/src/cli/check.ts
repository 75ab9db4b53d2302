/**
 * `parley-registry check`: is a running registry ready? For scripts and
 * monitoring, as `spire-server healthcheck` / `nats server check`: asks the
 * server's `/readyz` (the operations listener) and exits 0 ready, 9 not ready,
 * 7 unreachable, 2 usage.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, UsageError, type CliCommand } from '@parley/cli-kit';
import { RpcError, parseHostPort } from '@parley/rpc';
import { DATA_FILES, DEFAULT_SETTINGS, readSettings } from '../config.js';
import type { CommandContext, RegistryCli } from './context.js';
import { metricsListenOf } from './serve.js';

interface CheckOptions {
  readonly url?: string;
  readonly metricsListen?: string;
  readonly timeoutMs?: string;
}

/** A readiness verdict that is not "ready": exit code 9 (`notReady`). */
export class NotReady extends Error {
  override readonly name = 'NotReady';
}

export function addCheckCommand(program: CliCommand, cli: RegistryCli): void {
  program
    .command('check')
    .summary('is a running registry ready? (exit 0 ready, 9 not ready, 7 unreachable)')
    .usage('[--url <URL> | --metrics-listen <HOST:PORT>] [--timeout-ms <N>] [--json]')
    .description(
      [
        'is a running registry ready? (exit 0 ready, 9 not ready, 7 unreachable)',
        "Asks GET /readyz on the registry's operations listener (--url, else --metrics-listen, PARLEY_REGISTRY_METRICS_LISTEN or metrics_listen in DATA_DIR/registry.json) and prints each readiness check: storage (the database answers), and any other a component added. The same checks drive gRPC health. For scripts and monitoring: exit 0 ready, 9 not ready (the registry answered; a check fails), 7 unreachable (nothing answered in time), 2 usage (no listener to ask).",
      ].join('\n\n'),
    )
    .addOption(new Option('--url <URL>', 'the operations listener to ask, http://HOST:PORT'))
    .addOption(new Option('--metrics-listen <HOST:PORT>', 'the listener address `serve` was given (default from registry.json)'))
    .addOption(new Option('--timeout-ms <N>', 'how long to wait for the answer (default 5000)'))
    .action(async function (this: CliCommand) {
      await check(cli.context<CheckOptions>(this));
    });
}

/** Where to ask: `--url`, else the listener address of the settings (a wildcard host is asked on loopback). */
function baseUrl(ctx: CommandContext<CheckOptions>): string {
  const { url } = ctx.options;
  if (url !== undefined) {
    if (!/^https?:\/\/[^\s/]+(\/.*)?$/.test(url)) throw new UsageError(`--url must be http://HOST:PORT, got '${url}'`);
    return url;
  }
  const settings = existsSync(join(ctx.dataDir, DATA_FILES.config)) ? readSettings(ctx.dataDir) : DEFAULT_SETTINGS;
  const listen = metricsListenOf(ctx.options.metricsListen, settings);
  if (listen === 'off') throw new UsageError('the operations listener is off (metrics_listen in registry.json): there is no /readyz to ask (turn it on, or give --url)');
  const { host, port } = parseHostPort(listen);
  if (port === 0) throw new UsageError('metrics_listen has port 0 (any free port): give --url with the port `serve` logged');
  const bare = host.replace(/^\[|\]$/g, '');
  const asked = bare === '0.0.0.0' ? '127.0.0.1' : bare === '::' ? '::1' : bare;
  return `http://${asked.includes(':') ? `[${asked}]` : asked}:${port}`;
}

async function check(ctx: CommandContext<CheckOptions>): Promise<void> {
  const timeout = ctx.options.timeoutMs === undefined ? 5_000 : Number(ctx.options.timeoutMs);
  if (!Number.isSafeInteger(timeout) || timeout < 1 || timeout > 600_000) throw new UsageError('--timeout-ms must be an integer from 1 to 600000');
  const base = baseUrl(ctx);
  const { probeReadyz, formatReadyz, ReadyzUnavailableError } = await import('../ops.js');
  let probe: Awaited<ReturnType<typeof probeReadyz>>;
  try {
    probe = await probeReadyz(base, timeout);
  } catch (error) {
    if (error instanceof ReadyzUnavailableError) throw new RpcError('unavailable', error.message, { cause: error });
    throw error;
  }
  ctx.out(ctx.json ? JSON.stringify({ url: probe.url, ...probe.body }, null, 2) : formatReadyz(probe));
  if (!probe.ready) {
    const failing = probe.body.checks.filter((c) => !c.ok).map((c) => `${c.name} (${c.detail})`);
    throw new NotReady(`not ready: ${failing.join('; ') || 'no check passes'}`);
  }
}
