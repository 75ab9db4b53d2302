/**
 * `parley-registry tls init|issue`: the TLS certificates of a first setup,
 * with no openssl: a private CA, then a server certificate for the registry
 * and one per gateway (or a client certificate for mutual TLS), all signed by
 * that CA (@parley/crypto-core/tls: ECDSA P-256 by Node's WebCrypto, encoded
 * by @peculiar/x509). The servers serve TLS 1.3 only; agents, gateways and
 * operators trust `ca.pem` (`--tls-ca`, `tls_ca_file`, `registry_tls_ca_file`).
 *
 * Files, in the output directory (mode 0700): `ca.pem`, `ca-key.pem`,
 * `NAME.pem`, `NAME-key.pem` (keys mode 0600). Existing files are never
 * overwritten. Keep `ca-key.pem` offline once the certificates are made.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Option, UsageError, commandGroup, printJson, type CliCommand } from '@parley/cli-kit';
import { RpcError } from '@parley/rpc';
import { fields } from '../format.js';
import { writeSecretFile } from '../key-file.js';
import { pemFileText } from '../pem.js';
import { PROGRAM, type CommandContext, type RegistryCli } from './context.js';

interface TlsOptions {
  readonly out?: string;
  readonly host?: string[];
  readonly name?: string;
  readonly client?: boolean;
  readonly days?: string;
  readonly caDays?: string;
  readonly caName?: string;
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];
const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;

export function addTlsCommands(program: CliCommand, cli: RegistryCli): void {
  const group = commandGroup(program, 'tls', 'make TLS certificates for a first setup');
  const leafOptions = (command: CliCommand): CliCommand =>
    command
      .addOption(new Option('--out <DIR>', 'directory of the CA and certificates (default DATA_DIR/tls)'))
      .addOption(new Option('--host <HOST>', 'DNS name or IP address the certificate is for; repeat for several (required)').argParser(collect))
      .addOption(new Option('--name <NAME>', 'file name of the certificate: NAME.pem and NAME-key.pem (default "server", or "client" with --client)'))
      .addOption(new Option('--client', 'a client certificate (clientAuth) for mutual TLS instead of a server one'))
      .addOption(new Option('--days <N>', 'certificate validity in days (default 397)'));
  leafOptions(
    group
      .command('init')
      .summary('create a private CA and a first certificate')
      .usage('--host <HOST> [--host <HOST>…] [--out <DIR>] [--name <NAME>] [--days <N>] [--ca-days <N>]')
      .description(
        'create a private CA and a first certificate.\n\n' +
          'Writes ca.pem and ca-key.pem (a P-256 root CA), then NAME.pem and NAME-key.pem (a server certificate for every --host, signed by the CA) into --out. Refuses to overwrite any file. Give `serve` --tls-cert NAME.pem --tls-key NAME-key.pem, and clients --tls-ca ca.pem.',
      ),
  )
    .addOption(new Option('--ca-days <N>', 'CA validity in days (default 1825)'))
    .addOption(new Option('--ca-name <NAME>', 'CA common name (default "Parley private CA")'))
    .action(async function (this: CliCommand) {
      await tls(cli.context<TlsOptions>(this), true);
    });
  leafOptions(
    group
      .command('issue')
      .summary('issue another certificate from the CA')
      .usage('--host <HOST> [--host <HOST>…] --name <NAME> [--out <DIR>] [--client] [--days <N>]')
      .description(
        'issue another certificate from the CA.\n\n' +
          'Reads ca.pem and ca-key.pem from --out (made by `tls init`) and writes NAME.pem and NAME-key.pem: a server certificate (one per gateway, say) or, with --client, a client certificate for mutual TLS.',
      ),
  ).action(async function (this: CliCommand) {
    await tls(cli.context<TlsOptions>(this), false);
  });
}

function days(value: string | undefined, option: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[1-9]\d{0,3}$/.test(value)) throw new UsageError(`${option} must be a whole number of days, 1..3650`);
  return Number(value);
}

async function tls(ctx: CommandContext<TlsOptions>, init: boolean): Promise<void> {
  // X.509 code loads only for this command (a registry-local module: the rest of the CLI never pays for it).
  const { createTlsCa, createTlsCertificate, tlsHostName } = await import('./tls-certificates.js');
  const o = ctx.options;
  const out = o.out ?? join(ctx.dataDir, 'tls');
  const hosts = o.host ?? [];
  if (hosts.length === 0) throw new UsageError('give at least one --host (a DNS name or IP address clients connect to)');
  for (const h of hosts) {
    try {
      tlsHostName(h);
    } catch {
      throw new UsageError(`--host ${h}: neither an IP address nor a DNS name`);
    }
  }
  const name = o.name ?? (o.client === true ? 'client' : 'server');
  if (!NAME_RE.test(name) || name === 'ca') throw new UsageError('--name must be 1..32 characters of [a-z0-9_-], not "ca"');
  const leafDays = days(o.days, '--days');
  const caDays = days(o.caDays, '--ca-days');
  const paths = { caCert: join(out, 'ca.pem'), caKey: join(out, 'ca-key.pem'), cert: join(out, `${name}.pem`), key: join(out, `${name}-key.pem`) };
  for (const p of init ? Object.values(paths) : [paths.cert, paths.key]) {
    if (existsSync(p)) throw new RpcError('already_exists', `${p} already exists (remove it, or pick another --name / --out)`);
  }

  let ca: { certificatePem: string; privateKeyPem: string; sha256?: string };
  if (init) {
    mkdirSync(out, { recursive: true, mode: 0o700 });
    ca = await createTlsCa({ ...(caDays === undefined ? {} : { days: caDays }), ...(o.caName === undefined ? {} : { commonName: o.caName }) });
  } else {
    if (!existsSync(paths.caCert) || !existsSync(paths.caKey)) throw new RpcError('not_found', `no CA in ${out} (ca.pem and ca-key.pem): run \`${PROGRAM} tls init\` first`);
    ca = { certificatePem: readFileSync(paths.caCert, 'utf8'), privateKeyPem: readFileSync(paths.caKey, 'utf8') };
  }
  let leaf;
  try {
    leaf = await createTlsCertificate(ca, { hosts, usage: o.client === true ? 'client' : 'server', ...(leafDays === undefined ? {} : { days: leafDays }) });
  } catch (error) {
    throw new RpcError('malformed', error instanceof Error ? error.message : String(error));
  }
  // Every PEM file ends in a newline: `cat new/ca.pem old/ca.pem > both.pem` (a CA rollover) must make two blocks.
  if (init) {
    writeSecretFile(paths.caKey, pemFileText(ca.privateKeyPem));
    writeFileSync(paths.caCert, pemFileText(ca.certificatePem), { mode: 0o644, flag: 'wx' });
  }
  writeSecretFile(paths.key, pemFileText(leaf.privateKeyPem));
  writeFileSync(paths.cert, pemFileText(leaf.certificatePem), { mode: 0o644, flag: 'wx' });
  const result = {
    out: resolve(out),
    ca_certificate: paths.caCert,
    ...(init ? { ca_key: paths.caKey, ca_sha256: (ca as { sha256: string }).sha256 } : {}),
    certificate: paths.cert,
    key: paths.key,
    usage: o.client === true ? 'client' : 'server',
    hosts,
    sha256: leaf.sha256,
    not_after: leaf.notAfter.toISOString(),
  };
  if (ctx.json) printJson(ctx.out, result);
  else {
    ctx.out(
      fields([
        ...(init ? ([['CA', `${paths.caCert} (key ${paths.caKey}: keep it offline)`]] as const) : []),
        [o.client === true ? 'client certificate' : 'server certificate', `${paths.cert} (key ${paths.key})`],
        ['hosts', hosts.join(', ')],
        ['valid until', result.not_after],
        ['sha256', leaf.sha256],
      ]),
    );
    const next = nextStep(name, { client: o.client === true, init }, paths);
    if (next !== undefined) ctx.out(`\nNext: ${next}`);
  }
}

/**
 * What to do with the server certificate just made, by its name: a gateway's (`gateway-gw1`, `gw1`)
 * goes into the gateway's configuration, the registry's (`registry`, `server`, and the first one `tls
 * init` makes) to `serve`; for another name both are said.
 * @returns the "Next:" line, or undefined for a client certificate (its use depends on the server)
 */
export function nextStep(name: string, usage: { readonly client: boolean; readonly init: boolean }, paths: { readonly caCert: string; readonly cert: string; readonly key: string }): string | undefined {
  if (usage.client) return undefined;
  const gateway = `the gateway's configuration: "tls_cert_file": "${paths.cert}", "tls_key_file": "${paths.key}"; agents trust ${paths.caCert}`;
  const registry = `${PROGRAM} serve --listen HOST:PORT --tls-cert ${paths.cert} --tls-key ${paths.key}; clients use --tls-ca ${paths.caCert}`;
  if (/^(gateway|gw)/.test(name)) return `in ${gateway}`;
  if (usage.init || /^(registry|server)/.test(name)) return registry;
  return `for the registry, ${registry}; for a gateway, in ${gateway}`;
}
