// gRPC clients of a test registry (started by @parley/test-support): one signed
// with the operator key `init` wrote, and an unsigned one.
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { RegistryService } from '@parley/proto';
import { operatorRequestSigner } from '@parley/protocol';
import { createClient, type Client } from '@parley/rpc';
import type { RegistryFixture, RunningRegistry } from '@parley/test-support';
import { readKeyFile, type LoadedKey } from '../src/key-file.js';

/** The registry's operator key (from init) and a signed client for it. */
export async function operatorClient(
  registry: Pick<RunningRegistry, 'address'>,
  fixture: Pick<RegistryFixture, 'dataDir'>,
  crypto?: ParleyCrypto,
): Promise<{ client: Client<typeof RegistryService>; registryId: Uint8Array; operator: LoadedKey; crypto: ParleyCrypto; close(): void }> {
  const c = crypto ?? (await createCrypto());
  const operator = readKeyFile(c, join(fixture.dataDir, 'operator-key.json'), 'parley-operator-key');
  const plain = createClient(RegistryService, registry.address, credentials.createInsecure());
  const { registryId } = await plain.getTrustBundle({});
  plain.close();
  const client = createClient(RegistryService, registry.address, credentials.createInsecure(), {
    signer: operatorRequestSigner(c, operator, registryId),
    defaultTimeoutMs: 15_000,
  });
  return { client, registryId, operator, crypto: c, close: () => client.close() };
}

/** An unsigned client. */
export function plainClient(registry: Pick<RunningRegistry, 'address'>): Client<typeof RegistryService> {
  return createClient(RegistryService, registry.address, credentials.createInsecure(), { defaultTimeoutMs: 15_000 });
}
