// The revocation feed says when it is back (an operator walkthrough saw only the "revocation feed
// disconnected: reconnecting" warnings, one per retry, and never a line that it recovered): one info line
// per outage, when a batch verifies again, with how long it was down — not one per retry, none at the
// first load. A registry here is a fake client serving real signed heads.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { EMPTY_CHAIN_HASH, MemoryRevocationSet, TrustBundle, keyId, revocationHeadLayout } from '@parley/identity';
import type { SignedRevocationHead } from '@parley/proto';
import { RpcError } from '@parley/rpc';
import { waitFor } from '@parley/test-support';
import pino from 'pino';
import { beforeAll, expect, it } from 'vitest';
import { RevocationFeed, type RevocationFeedOptions } from '../src/revocation-feed.js';

let crypto: ParleyCrypto;
let issuer: ReturnType<ParleyCrypto['ed25519']['generateKeyPair']>;
let trustBundle: TrustBundle;
const registryId = new Uint8Array(16).fill(9);

beforeAll(async () => {
  crypto = await createCrypto();
  issuer = crypto.ed25519.generateKeyPair();
  trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
});

/** A signed head of the empty list. */
function head(): SignedRevocationHead {
  const h = { registryId, version: 0n, headHash: EMPTY_CHAIN_HASH, issuedAtMs: BigInt(Date.now()), issuerKeyId: keyId(crypto, issuer.publicKey) };
  return { ...h, signature: crypto.ed25519.sign(revocationHeadLayout(h), issuer.secretKey) } as unknown as SignedRevocationHead;
}

it('logs one "connected again" line per outage, with how long it was down and the failed attempts, not one per retry', async () => {
  // The registry is down while `down` is set: every call fails at once (as a grpc-js channel does).
  const state = { down: false, watches: 0 };
  let endWatch: (() => void) | undefined;
  const client = {
    async getRevocationList() {
      if (state.down) throw new RpcError('unavailable', 'registry down');
      return { entries: [], head: head(), currentVersion: 0n };
    },
    async *watchRevocations(_req: unknown, { signal }: { signal?: AbortSignal } = {}) {
      state.watches++;
      if (state.down) throw new RpcError('unavailable', 'registry down');
      yield { entries: [], head: head(), trustBundleVersion: 0n };
      await new Promise<void>((resolve) => {
        endWatch = resolve;
        signal?.addEventListener('abort', () => resolve(), { once: true });
      });
      throw new RpcError('unavailable', 'watch ended');
    },
  } as unknown as RevocationFeedOptions['client'];
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const feed = new RevocationFeed({ crypto, client, registryId, trustBundle, revocations: new MemoryRevocationSet(), logger, onRevoked: () => undefined, minBackoffMs: 50, maxBackoffMs: 50 });
  const recovered = () => lines.filter((l) => l['event'] === 'revocation_feed_reconnected');
  const disconnected = () => lines.filter((l) => l['event'] === 'revocation_feed_disconnected');
  try {
    feed.start();
    await feed.synced;
    await waitFor(() => feed.connected && state.watches === 1, 5_000);
    expect(recovered()).toEqual([]); // the first load is no recovery

    // An outage of several retries.
    state.down = true;
    const outageStart = Date.now();
    endWatch!();
    await waitFor(() => disconnected().length >= 4, 5_000);
    expect(feed.connected).toBe(false);
    expect(recovered()).toEqual([]);
    state.down = false;
    await waitFor(() => recovered().length === 1, 5_000);
    const downFor = Date.now() - outageStart;
    const [line] = recovered();
    expect(line).toMatchObject({ level: 30, version: 0 });
    expect(line!['msg']).toMatch(/^revocation feed connected again after \d+\.\d s down \(\d+ failed attempts\)$/);
    expect(line!['failed_attempts']).toBe(disconnected().length);
    expect(line!['down_ms']).toBeGreaterThanOrEqual(150); // at least the 4 failures' backoffs of 50 ms (less one)
    expect(line!['down_ms']).toBeLessThanOrEqual(downFor);
    expect(feed.connected).toBe(true);

    // Heartbeats while connected log nothing more; a second outage gets its own line.
    await new Promise((r) => setTimeout(r, 200));
    expect(recovered()).toHaveLength(1);
    const before = disconnected().length;
    endWatch!(); // a dropped stream, reopened at once
    await waitFor(() => recovered().length === 2, 5_000);
    expect(recovered()[1]).toMatchObject({ failed_attempts: 1 });
    expect(disconnected().length).toBe(before + 1);
  } finally {
    await feed.close();
  }
});
