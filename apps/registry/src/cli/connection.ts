/**
 * How a client command reaches the registry: address, TLS (never plaintext
 * off loopback), the operator key that signs requests, and the trust bundle
 * the registry serves.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { credentials, type ChannelCredentials } from '@grpc/grpc-js';
import { UsageError } from '@parley/cli-kit';
import type { ParleyCrypto } from '@parley/crypto-core';
import { TrustBundle } from '@parley/identity';
import { RegistryService, type GetTrustBundleResponse } from '@parley/proto';
import { createClient, isLoopbackAddress, RpcError, type Client } from '@parley/rpc';
import { operatorRequestSigner } from '@parley/protocol';
import { DATA_FILES, DEFAULT_SETTINGS, readSettings, type RegistrySettings } from '../config.js';
import { isSealedKeyFile, readKeyFile } from '../key-file.js';
import { certificateBundle } from '../pem.js';
import { PROGRAM, nonEmpty, passphraseOf, readFileOr, type ClientOptions, type CommandContext, type PassphraseOptions } from './context.js';

/** An open client of one registry, with what it said about itself. */
export interface Connection {
  readonly client: Client<typeof RegistryService>;
  readonly address: string;
  readonly registryId: Uint8Array;
  readonly bundle: GetTrustBundleResponse;
  readonly crypto: ParleyCrypto;
  close(): void;
}

export function settingsIfAny(dataDir: string): RegistrySettings | undefined {
  return existsSync(join(dataDir, DATA_FILES.config)) ? readSettings(dataDir) : undefined;
}

/**
 * Connects to the server. `sign`: `always` (writes: the operator key must exist), `if-available`
 * (reads: signed when an operator key is at hand, which a registry with `reads_require_auth` needs),
 * or `never`.
 */
export async function connect(ctx: CommandContext<ClientOptions & PassphraseOptions>, sign: 'always' | 'if-available' | 'never'): Promise<Connection> {
  const crypto = await ctx.crypto();
  const address = ctx.options.server ?? nonEmpty(process.env['PARLEY_REGISTRY_SERVER']) ?? settingsIfAny(ctx.dataDir)?.listen ?? DEFAULT_SETTINGS.listen;
  const timeoutText = ctx.options.timeout ?? '10';
  const timeoutMs = Number(timeoutText) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new UsageError('--timeout must be a positive number of seconds');
  let creds: ChannelCredentials = credentials.createInsecure();
  const channelOptions: Record<string, string | number> = {};
  const ca = ctx.options.tlsCa;
  if (ca === undefined && !isLoopbackAddress(address)) {
    // Operator signatures, agent keys' proofs and the trust bundle itself must not cross a network in the clear.
    throw new RpcError('failed_precondition', `refusing to talk plaintext to non-loopback registry ${address}: give --tls-ca FILE (the CA of its TLS certificate)`);
  }
  if (ca !== undefined) {
    // Normalised: a bundle of concatenated PEM files without newlines between them counts every CA in it.
    creds = credentials.createSsl(certificateBundle(ca, readFileOr(ca, 'TLS CA certificate'), 'TLS CA certificate'));
    const name = ctx.options.tlsServerName;
    if (name !== undefined) channelOptions['grpc.ssl_target_name_override'] = name;
  }
  let registryId: Uint8Array | undefined;
  let signer;
  const keyPath = ctx.options.operatorKey ?? join(ctx.dataDir, DATA_FILES.operatorKey);
  const haveKey = existsSync(keyPath);
  if (sign === 'always' && !haveKey) {
    throw new RpcError('failed_precondition', `no operator key at ${keyPath}: run \`${PROGRAM} init\` there, or pass --operator-key FILE`);
  }
  if (sign === 'always' || (sign === 'if-available' && (haveKey || ctx.options.operatorKey !== undefined))) {
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
    throw connectionFailure(error, address, ca !== undefined) ?? error;
  }
}

/**
 * What probably went wrong when no connection could be established at the TLS or HTTP/2 level (grpc-js
 * reports all of them as UNAVAILABLE "No connection established. Last error: …"), in one line; undefined
 * for anything else (refused, unresolvable, timed out: the CLI's "unreachable" line says that).
 * @param error what the first call failed with
 * @param address the --server address
 * @param tls whether --tls-ca was given
 */
export function connectionFailure(error: unknown, address: string, tls: boolean): RpcError | undefined {
  const e = RpcError.from(error);
  if (e.code !== 'unavailable' || !e.details.includes('No connection established')) return undefined;
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT/.test(e.details)) return undefined;
  const last = lastErrorOf(e.details);
  const detail = last === '' ? '' : ` (${last})`;
  const fail = (message: string): RpcError => new RpcError('unavailable', message, { cause: error });
  if (!tls) {
    return fail(`registry server at ${address} did not accept a plaintext connection${detail}: the server may require TLS: pass --tls-ca FILE (the CA that signed its certificate)`);
  }
  if (/ALTNAME|altnames|does not match certificate/i.test(last)) {
    return fail(`TLS handshake with ${address} failed${detail}: the server's certificate is not for that name: pass --tls-server-name NAME (a name in its certificate), or connect by that name`);
  }
  if (/wrong version number|packet length too long|http request|unknown protocol|disconnected before secure TLS/i.test(last)) {
    return fail(`TLS handshake with ${address} failed${detail}: the server may not serve TLS there (plaintext is allowed only on loopback: then drop --tls-ca), or --server names something else`);
  }
  if (/certificate|verify|self.signed|issuer|CERT_/i.test(last)) {
    return fail(`TLS handshake with ${address} failed${detail}: is --tls-ca the CA that signed the server's certificate?`);
  }
  return fail(`TLS connection to ${address} failed${detail}: is --tls-ca the CA that signed the server's certificate, and does the server serve TLS?`);
}

/** grpc-js's "Last error: …" detail, one line, without its `Error:` prefix, OpenSSL's location noise and the empty resolution note. */
function lastErrorOf(details: string): string {
  const last = /Last error: ([\s\S]*)$/.exec(details)?.[1] ?? '';
  return last
    .replace(/\. Resolution note: .*$/s, '')
    .replace(/^Error(?: \[[A-Z_]+\])?: /, '')
    .replace(/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:[^:]*:([^:]+):.*$/s, 'SSL: $1')
    .replace(/\s*\(\d{4}-\d\d-\d\dT[\d:.]+Z\)$/, '')
    .replace(/\s+/g, ' ')
    .trim();
}

/**
 * The TLS options of a command line that reaches the same registry the way this one did (a "next step" to
 * print): ` --tls-ca FILE` (and ` --tls-server-name NAME`) when this command used them, else nothing.
 */
export function tlsArguments(options: Pick<ClientOptions, 'tlsCa' | 'tlsServerName'>): string {
  const quote = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return (
    (options.tlsCa === undefined ? '' : ` --tls-ca ${quote(options.tlsCa)}`) +
    (options.tlsCa === undefined || options.tlsServerName === undefined ? '' : ` --tls-server-name ${quote(options.tlsServerName)}`)
  );
}

/** The trust bundle a registry sent, as @parley/identity's TrustBundle. */
export function bundleOf(crypto: ParleyCrypto, bundle: GetTrustBundleResponse): TrustBundle {
  return TrustBundle.from(
    crypto,
    bundle.issuers.map((i) => (i.notAfterMs === 0n ? { keyId: i.keyId, publicKey: i.publicKey } : { keyId: i.keyId, publicKey: i.publicKey, notAfterMs: Number(i.notAfterMs) })),
  );
}
