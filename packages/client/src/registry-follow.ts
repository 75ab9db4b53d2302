/**
 * Following the registry's signed trust bundle (docs/PROTOCOL.md §15.9): a registry client and a
 * TrustBundleFollower that checks every new version against the one before, starting from the pinned
 * bundle or the newest version the journal kept. The same client feeds the agent's own revocation list
 * (./revocation-follow.ts, §15.6–§15.7) when the caller gave no `revocations`.
 */
import { credentials as grpcCredentials } from '@grpc/grpc-js';
import { fromBase64Url, toBase64Url, type ParleyCrypto } from '@parley/crypto-core';
import type { TrustBundle } from '@parley/identity';
import { RegistryService } from '@parley/proto';
import { TrustBundleFollower } from '@parley/protocol';
import { createClient, isLoopbackAddress, type Client, type RequestSigner } from '@parley/rpc';
import type { AgentEvent, RegistryFollowOptions } from './agent-options.js';
import type { DurableState } from './durable-state.js';
import { ClientError } from './errors.js';
import type { RegistryRevocations, RevocationSource } from './revocation-follow.js';

export interface RegistryFollow {
  readonly client: Client<typeof RegistryService>;
  readonly follower: TrustBundleFollower;
}

/**
 * Creates the registry client and the follower (not started: see {@link startFollowing}).
 * @throws ClientError `malformed` for plaintext to a registry that is not on loopback
 */
export function createRegistryFollow(o: {
  readonly crypto: ParleyCrypto;
  readonly registry: RegistryFollowOptions;
  readonly pinned: TrustBundle;
  readonly state: DurableState;
  readonly emit: (event: AgentEvent) => void;
  /** Signs the calls that need it (the agent's own directory reads, §15.3); the others go unsigned. */
  readonly signer?: RequestSigner;
}): RegistryFollow {
  const r = o.registry;
  if (r.rootCerts === undefined && !isLoopbackAddress(r.address)) {
    throw new ClientError('malformed', `refusing plaintext to registry ${r.address}: give registry.rootCerts (plaintext is for loopback registries only)`);
  }
  const client = createClient(RegistryService, r.address, r.rootCerts === undefined ? grpcCredentials.createInsecure() : grpcCredentials.createSsl(r.rootCerts), {
    // The channel's own reconnect backoff stays under the revocation follower's (5 s), as the gateway's does
    // (apps/gateway's revocation-feed.ts): otherwise a registry back after an outage is seen only when the
    // channel's timer fires, and the agent's list stays stale (fail closed) meanwhile.
    channelOptions: { 'grpc.initial_reconnect_backoff_ms': 250, 'grpc.max_reconnect_backoff_ms': 2_000 },
    ...(o.signer === undefined ? {} : { signer: o.signer }),
  });
  const state = o.state;
  let follower: TrustBundleFollower;
  try {
    follower = new TrustBundleFollower({
      crypto: o.crypto,
      client,
      pinned: o.pinned,
      ...(r.registryId === undefined ? {} : { registryId: r.registryId }),
      ...(r.pollIntervalMs === undefined ? {} : { pollIntervalMs: r.pollIntervalMs }),
      callTimeoutMs: 5_000,
      ...(!state.enabled
        ? {}
        : {
            store: {
              load: () => Promise.resolve(state.savedBundle === undefined ? undefined : fromBase64Url(state.savedBundle.doc)),
              save: (encoded: Uint8Array, version: number) => state.saveBundle(version, toBase64Url(encoded)),
            },
          }),
      onEvent: (event) => o.emit({ kind: 'trust_bundle', event }),
    });
  } catch (error) {
    client.close(); // the agent that would have closed it never gets it
    throw error;
  }
  return { client, follower };
}

/**
 * Restores the follower's saved version, polls once and starts polling; starts following the revocation list
 * too, when given. Waits at most 3 s for the first poll and the first list together.
 */
export async function startFollowing(follower: TrustBundleFollower, revocations?: { readonly list: RegistryRevocations; readonly source: RevocationSource }): Promise<void> {
  await follower.restore();
  // The first poll runs now, but connecting does not wait long for it: an unreachable registry leaves the
  // last verified bundle in force (§15.9), and the next poll tries again. Likewise the revocation list: until it
  // loads, every peer check fails closed (`revocation_stale`), and it loads by itself once the registry answers.
  const first = follower.refresh().catch(() => undefined);
  revocations?.list.start(revocations.source);
  await Promise.race([Promise.all([first, revocations?.list.synced]), new Promise((resolve) => setTimeout(resolve, 3_000).unref())]);
  follower.start();
  revocations?.list.watchFreshness();
}
