// Test fixtures: an issuer, a trust bundle, a revocation set refreshed by the
// test, agents with certificates on the real clock, a gateway started in-process
// over real gRPC on 127.0.0.1, and agents wired to it through SessionManager.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, type IssuerKey, type TrustBundle, type RevocationEntry } from '@parley/identity';
import { SecureMessageSchema, create, type DeliveryReceipt, type SecureMessage } from '@parley/proto';
import { SessionManager, envelopeSignedBytes, type LocalIdentity, type OpenedMessage, type SessionManagerEvent } from '@parley/session';
import pino from 'pino';
import { GatewayConnection } from '@parley/client';
import { createTestIssuer, rawConnect, type AgentOverrides, type RawStream, type TestAgent } from '@parley/test-support';
import { Policy } from '../src/policy.js';
import { startGateway, type RunningGateway, type StartGatewayOptions } from '../src/server.js';

export const GATEWAY_ID = 'gw-test.local';

/** An agent of the world's test issuer (@parley/test-support). */
export type Agent = TestAgent & LocalIdentity;

/** Allows planner ↔ worker; nothing else. */
export const DEFAULT_POLICY = Policy.parse({ version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] });

export interface World {
  readonly crypto: ParleyCrypto;
  readonly issuer: IssuerKey;
  readonly trustBundle: TrustBundle;
  readonly revocations: MemoryRevocationSet;
  /** Structured log lines the gateways wrote. */
  readonly logs: Record<string, unknown>[];
  agent(agentId: string, overrides?: AgentOverrides): Agent;
  /** Applies revocations (and refreshes the set). */
  revoke(...entries: RevocationEntry[]): void;
  /** Refreshes the revocation set's freshness without changes. */
  refresh(): void;
  start(overrides?: Partial<StartGatewayOptions>): Promise<RunningGateway>;
}

export async function createWorld(): Promise<World> {
  const crypto = await createCrypto();
  const { issuer, trustBundle, agent } = createTestIssuer(crypto);
  const revocations = new MemoryRevocationSet({ maxAgeMs: 60_000 });
  let version = 0;
  revocations.apply([], version, Date.now());
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  return {
    crypto,
    issuer,
    trustBundle,
    revocations,
    logs,
    agent,
    revoke(...entries) {
      version += entries.length;
      revocations.apply(entries, version, Date.now());
    },
    refresh() {
      revocations.apply([], version, Date.now());
    },
    start(overrides = {}) {
      // The relay's tests and bench run without the shared-memory store (memory-processes.spec.ts covers it).
      return startGateway({ crypto, gatewayId: GATEWAY_ID, trustBundle, revocations, policy: DEFAULT_POLICY, logger, memory: false, ...overrides });
    },
  };
}

/** An agent connected to a gateway, with a SessionManager whose transport is the connection. */
export interface ConnectedAgent {
  readonly agent: Agent;
  readonly conn: GatewayConnection;
  readonly manager: SessionManager;
  readonly opened: OpenedMessage[];
  readonly failures: unknown[];
  readonly receipts: DeliveryReceipt[];
  readonly events: SessionManagerEvent[];
  close(): void;
}

export async function connectAgent(world: World, address: string, agent: Agent): Promise<ConnectedAgent> {
  const opened: OpenedMessage[] = [];
  const failures: unknown[] = [];
  const receipts: DeliveryReceipt[] = [];
  const events: SessionManagerEvent[] = [];
  const holder: { manager?: SessionManager } = {};
  const conn = await GatewayConnection.open({
    address,
    crypto: world.crypto,
    identity: agent,
    expectedGatewayId: GATEWAY_ID,
    onDelivery: async (d) => {
      const manager = holder.manager;
      if (manager === undefined) return;
      switch (d.item.case) {
        case 'handshake':
          await manager.handleFrame(d.item.value);
          break;
        case 'envelope':
          try {
            opened.push(manager.open(d.item.value));
          } catch (error) {
            failures.push(error);
          }
          break;
        case 'receipt':
          receipts.push(d.item.value);
          break;
        default:
          break;
      }
    },
  });
  const manager = new SessionManager({
    crypto: world.crypto,
    handshake: { identity: agent, trustBundle: world.trustBundle, revocations: world.revocations },
    transport: conn.frameTransport,
    onEvent: (e) => events.push(e),
  });
  holder.manager = manager;
  return {
    agent,
    conn,
    manager,
    opened,
    failures,
    receipts,
    events,
    close() {
      manager.close();
      conn.close();
    },
  };
}

/** A shape-valid envelope with a bogus signature (for checks that come before the signature). */
export function fakeEnvelope(crypto: ParleyCrypto, senderId: string, recipientId: string, ciphertextBytes = 64): SecureMessage {
  return create(SecureMessageSchema, {
    version: 1,
    senderId,
    recipientId,
    sessionId: crypto.randomBytes(16),
    nonce: 0n,
    timestampMs: BigInt(Date.now()),
    payloadCommitment: crypto.randomBytes(32),
    encryptedPayload: crypto.randomBytes(ciphertextBytes),
    authTag: crypto.randomBytes(32),
    signature: crypto.randomBytes(64),
  });
}

/** A shape-valid envelope of `ciphertextBytes` from `from` to `to`, correctly signed (the gateway checks signatures, not sessions). */
export function signedFakeEnvelope(crypto: ParleyCrypto, from: Agent, to: string, ciphertextBytes = 64): SecureMessage {
  const e = fakeEnvelope(crypto, from.agentId, to, ciphertextBytes);
  e.signature = crypto.ed25519.sign(envelopeSignedBytes(crypto, e, e.encryptedPayload, e.authTag), from.signingKey);
  return e;
}

/** An agent's raw Connect stream (no SDK) on the gateway at `address`. */
export function rawStream(crypto: ParleyCrypto, address: string, agent: Agent): Promise<RawStream> {
  return rawConnect(crypto, address, GATEWAY_ID, { agentId: agent.agentId, certificate: agent.certificate, secretKey: agent.signingKey });
}

/**
 * Which of `sent` each envelope delivered on `stream` so far is, in delivery order (1-based; 0: none of
 * them). Fake envelopes differ in their random session ids.
 */
export function deliveredOrder(stream: RawStream, sent: readonly SecureMessage[]): number[] {
  const key = (e: SecureMessage): string => Buffer.from(e.sessionId).toString('hex');
  const index = new Map(sent.map((e, i) => [key(e), i + 1]));
  return stream.responses.flatMap((r) => (r.kind.case === 'delivery' && r.kind.value.item.case === 'envelope' ? [index.get(key(r.kind.value.item.value)) ?? 0] : []));
}
