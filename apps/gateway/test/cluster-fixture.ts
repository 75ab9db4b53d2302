// What the cross-instance tests share (PROTOCOL §10.8): PostgreSQL only (PGlite is one process), an issuer and
// its agents, signed envelopes, the verdict on a raw stream's request, and the schema each suite makes and drops.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate } from '@parley/identity';
import pg from 'pg';
import { it } from 'vitest';
import { SecureMessageSchema, create, type ConnectResponse, type SecureMessage } from '@parley/proto';
import { envelopeSignedBytes } from '@parley/session';
import { Policy } from '../src/policy.js';
import type { StartGatewayOptions } from '../src/server.js';
import { within, type RawStream, type RegisteredAgent } from '@parley/test-support';

/** The PostgreSQL these suites run on; undefined: they are skipped (and fail under CI, {@link requirePostgres}). */
export const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];

/** Inside a describe: under CI=true a missing DATABASE_URL fails the suite instead of skipping it. */
export function requirePostgres(): void {
  const required = process.env['CI'] === 'true' || process.env['CI'] === '1';
  it.runIf(DATABASE_URL === undefined && required)('needs DATABASE_URL under CI', () => {
    throw new Error('CI=true but DATABASE_URL is not set: the cross-instance suites must run on PostgreSQL');
  });
}

/** A schema name of its own for one suite. */
export function schemaName(prefix: string): string {
  return `t_gw_${prefix}_${process.pid}_${Math.floor(Math.random() * 1e9).toString(36)}`;
}

/** Drops a suite's schema. */
export async function dropSchema(url: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await client.end();
}

/** An issuer, its trust bundle, an empty fresh revocation list and a planner ↔ worker policy. */
export interface ClusterWorld {
  readonly crypto: ParleyCrypto;
  /** The options every instance of a suite shares (add an audit key, the database and the rest). */
  readonly common: Pick<StartGatewayOptions, 'crypto' | 'gatewayId' | 'trustBundle' | 'revocations' | 'policy'>;
  /** An agent with a certificate of the issuer (valid from a minute ago for a day). */
  agent(agentId: string, agentType: string): RegisteredAgent;
  /** A shape-valid envelope signed by `from` (the gateway checks its signature, not its session). */
  envelope(from: RegisteredAgent, recipientId: string, payloadBytes?: number): SecureMessage;
}

export async function clusterWorld(gatewayId: string): Promise<ClusterWorld> {
  const crypto = await createCrypto();
  const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
  const revocations = new MemoryRevocationSet({ maxAgeMs: 600_000 });
  revocations.apply([], 0, Date.now());
  const policy = Policy.parse({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] });
  return {
    crypto,
    common: { crypto, gatewayId, trustBundle, revocations, policy },
    agent(agentId, agentType) {
      const keyPair = crypto.ed25519.generateKeyPair();
      const now = Date.now();
      const certificate = issueCertificate(crypto, issuer, { agentId, identityPublicKey: keyPair.publicKey, agentType, capabilities: [], validFromMs: now - 60_000, validUntilMs: now + 86_400_000 });
      return { agentId, certificate, secretKey: keyPair.secretKey };
    },
    envelope(from, recipientId, payloadBytes = 96) {
      const e = create(SecureMessageSchema, {
        version: 1,
        senderId: from.agentId,
        recipientId,
        sessionId: crypto.randomBytes(16),
        nonce: 0n,
        timestampMs: BigInt(Date.now()),
        payloadCommitment: crypto.randomBytes(32),
        encryptedPayload: crypto.randomBytes(payloadBytes),
        authTag: crypto.randomBytes(32),
      });
      e.signature = crypto.ed25519.sign(envelopeSignedBytes(crypto, e, e.encryptedPayload, e.authTag), from.secretKey);
      return e;
    },
  };
}

/** The Accepted or Rejected answering `requestId` on a raw stream, once it came. */
export async function verdict(stream: RawStream, requestId: bigint): Promise<ConnectResponse['kind']> {
  const find = () => stream.responses.find((r) => (r.kind.case === 'accepted' || r.kind.case === 'rejected') && r.kind.value.requestId === requestId);
  await within(5_000, () => find() !== undefined, `the verdict on request ${requestId}`);
  return find()!.kind;
}

/** Whether the envelope (by session id) was delivered on a raw stream. */
export function deliveredTo(stream: RawStream, e: SecureMessage): boolean {
  return stream.responses.some((r) => r.kind.case === 'delivery' && r.kind.value.item.case === 'envelope' && Buffer.from(r.kind.value.item.value.sessionId).equals(Buffer.from(e.sessionId)));
}
