// A stand-in registry on loopback for the SDK's revocation tests: GetTrustBundle (no documents: the pinned bundle
// stays current), GetRevocationList and WatchRevocations over a real signed revocation list (§15.6: chained
// entries, heads signed by `signer`, fresh at every answer), heartbeats every `heartbeatMs`. `revoke` appends an
// entry and the watches send it at once; `down` makes every call fail `unavailable` (a registry that stopped);
// `refuseWatches` refuses watches as a registry at its per-address bound does (§15.7).
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { ParleyCrypto } from '@parley/crypto-core';
import { EMPTY_CHAIN_HASH, revocationEntryHash, revocationHeadLayout, type IssuerKey } from '@parley/identity';
import { RegistryService, RevocationReason, type MessageInitShape, type RevocationListEntrySchema, type SignedRevocationHeadSchema } from '@parley/proto';
import { RpcError, addService } from '@parley/rpc';

type Entry = MessageInitShape<typeof RevocationListEntrySchema> & { readonly entryHash: Uint8Array };

export interface StandInRegistry {
  readonly address: string;
  readonly registryId: Uint8Array;
  /** Every call fails `unavailable` while set (open watches end with it). */
  down: boolean;
  /** Watches are refused `unavailable` while set; GetRevocationList still answers. */
  refuseWatches: boolean;
  /** Who signs heads (default: the issuer given). */
  signer: IssuerKey;
  /** Revokes an agent id (watches send it within 50 ms). */
  revoke(agentId: string): void;
  /** Its database restored from a backup taken at `version`: the entries after it are gone. */
  restoreBackup(version: number): void;
  /** Watches open now. */
  watches(): number;
  /** GetRevocationList calls so far. */
  listCalls(): number;
  close(): void;
}

export async function standInRegistry(crypto: ParleyCrypto, issuer: IssuerKey, options: { readonly heartbeatMs?: number } = {}): Promise<StandInRegistry> {
  const heartbeatMs = options.heartbeatMs ?? 200;
  const registryId = crypto.randomBytes(16);
  const entries: Entry[] = [];
  let watching = 0;
  let listCalls = 0;
  const state = { down: false, refuseWatches: false, signer: issuer };
  const hashAt = (version: number): Uint8Array => (version === 0 ? EMPTY_CHAIN_HASH : entries[version - 1]!.entryHash);
  const head = (version: number): MessageInitShape<typeof SignedRevocationHeadSchema> => {
    const fields = { registryId, version: BigInt(version), headHash: hashAt(version), issuedAtMs: BigInt(Date.now()), issuerKeyId: state.signer.keyId };
    return { ...fields, signature: crypto.ed25519.sign(revocationHeadLayout(fields), state.signer.secretKey) };
  };
  const unavailable = (): never => {
    throw new RpcError('unavailable', 'the stand-in registry is down');
  };
  const after = (v: bigint): number => {
    if (v > BigInt(entries.length)) throw new RpcError('failed_precondition', `after_version ${v} is beyond the current version ${entries.length}`);
    return Number(v);
  };
  const implementation: Record<string, unknown> = {};
  for (const method of RegistryService.methods) {
    implementation[method.localName] = () => {
      throw new RpcError('unimplemented', `${method.name} is not in the stand-in registry`);
    };
  }
  implementation['getTrustBundle'] = () => (state.down ? unavailable() : { issuers: [], registryId, documents: [], currentVersion: 0n });
  implementation['getRevocationList'] = (req: { afterVersion: bigint }) => {
    listCalls++;
    if (state.down) unavailable();
    const from = after(req.afterVersion);
    return { entries: entries.slice(from), head: head(entries.length), currentVersion: BigInt(entries.length) };
  };
  implementation['watchRevocations'] = async function* watch(req: { afterVersion: bigint }, ctx: { signal: AbortSignal }) {
    if (state.down) unavailable();
    if (state.refuseWatches) throw new RpcError('unavailable', 'too many revocation watches: retry later, or poll GetRevocationList');
    let cursor = after(req.afterVersion);
    let sentAt = 0;
    watching++;
    try {
      while (!ctx.signal.aborted) {
        if (state.down) unavailable();
        if (cursor < entries.length || Date.now() - sentAt >= heartbeatMs) {
          const batch = entries.slice(cursor);
          cursor = entries.length;
          yield { entries: batch, head: head(cursor), trustBundleVersion: 0n };
          sentAt = Date.now();
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } finally {
      watching--;
    }
  };
  const server = new Server();
  addService(server, RegistryService, implementation as never);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))));
  return {
    address: `127.0.0.1:${port}`,
    registryId,
    get down() {
      return state.down;
    },
    set down(value: boolean) {
      state.down = value;
    },
    get refuseWatches() {
      return state.refuseWatches;
    },
    set refuseWatches(value: boolean) {
      state.refuseWatches = value;
    },
    get signer() {
      return state.signer;
    },
    set signer(value: IssuerKey) {
      state.signer = value;
    },
    revoke(agentId) {
      const version = entries.length + 1;
      const fields = { version, kind: 'agent' as const, agentId, serial: new Uint8Array(0), reason: RevocationReason.KEY_COMPROMISE, reasonText: 'key-compromise', revokedAtMs: Date.now() };
      const entryHash = revocationEntryHash(crypto, registryId, hashAt(version - 1), fields);
      entries.push({ version: BigInt(version), subject: { case: 'agentId', value: agentId }, reason: fields.reason, reasonText: fields.reasonText, revokedAtMs: BigInt(fields.revokedAtMs), entryHash });
    },
    restoreBackup(version) {
      entries.length = Math.min(entries.length, version);
    },
    watches: () => watching,
    listCalls: () => listCalls,
    close: () => server.forceShutdown(),
  };
}
