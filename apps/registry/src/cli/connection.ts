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
    creds = credentials.createSsl(readFileOr(ca, 'TLS CA certificate'));
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
    throw error;
  }
}

/** The trust bundle a registry sent, as @parley/identity's TrustBundle. */
export function bundleOf(crypto: ParleyCrypto, bundle: GetTrustBundleResponse): TrustBundle {
  return TrustBundle.from(
    crypto,
    bundle.issuers.map((i) => (i.notAfterMs === 0n ? { keyId: i.keyId, publicKey: i.publicKey } : { keyId: i.keyId, publicKey: i.publicKey, notAfterMs: Number(i.notAfterMs) })),
  );
}
