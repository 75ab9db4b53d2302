// The SDK's end-to-end world: a REAL registry and REAL gateways, started from
// their CLIs by @parley/test-support (packages never import apps), and agents
// certified by a test issuer that the gateways' pinned trust bundle carries
// (trust_bundle_follow false: the registry's bundle would drop it, PROTOCOL §15.9).
// The registry is there for what a gateway needs from one: its signed
// revocation list (a gateway fails closed without it).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import type { IssuerKey, TrustBundle } from '@parley/identity';
import type { DeliveryReceipt } from '@parley/proto';
import { SessionManager, type LocalIdentity, type OpenedMessage, type SessionManagerEvent } from '@parley/session';
import {
  createTestIssuer,
  gatewayEnv,
  pinCombinedTrustBundle,
  startGatewayProcess,
  startRegistry,
  tempDir,
  type AgentOverrides,
  type Env,
  type RunningGatewayProcess,
  type TestAgent,
  type TestRegistry,
} from '@parley/test-support';
import { GatewayConnection, connect, type Agent as SdkAgent, type AgentEvent, type ConnectOptions, type ReceivedMessage } from '../../src/index.js';

export const GATEWAY_ID = 'gw-test.local';

/** An agent of the world's test issuer. */
export type Agent = TestAgent & LocalIdentity;

/** Allows planner ↔ worker; nothing else. */
const POLICY = { version: 1, rules: [{ from: { agent_type: 'planner' }, to: { agent_type: 'worker' }, bidirectional: true }] };

/** How a test gateway differs from the default one. */
export interface GatewayOptions {
  /** Its directory under the world's (database and audit key); reusing a name reopens them (a restart). */
  readonly name?: string;
  /** Listen on this port (a restart on the same address). */
  readonly port?: number;
  /** More settings (`PARLEY_GATEWAY_*`). */
  readonly env?: Env;
}

export interface World {
  readonly crypto: ParleyCrypto;
  readonly issuer: IssuerKey;
  /** What agents trust: the registry's issuer and the test issuer. */
  readonly trustBundle: TrustBundle;
  readonly registry: TestRegistry;
  /** A scratch directory removed by `close`. */
  readonly dir: string;
  agent(agentId: string, overrides?: AgentOverrides): Agent;
  /** Starts a gateway process (stopped by `close` unless the test stops it first). */
  startGateway(options?: GatewayOptions): Promise<RunningGatewayProcess>;
  close(): Promise<void>;
}

let gateways = 0;

export async function createWorld(): Promise<World> {
  const crypto = await createCrypto();
  const dir = tempDir('client-e2e');
  const registry = await startRegistry(['--heartbeat-ms', '1000']);
  const testIssuer = createTestIssuer(crypto);
  const bundleFile = join(dir.path, 'bundle.json');
  const trustBundle = pinCombinedTrustBundle(crypto, registry.trustBundleFile, [testIssuer.issuer], bundleFile);
  const policyFile = join(dir.path, 'policy.json');
  writeFileSync(policyFile, JSON.stringify(POLICY));
  const started: RunningGatewayProcess[] = [];
  return {
    crypto,
    issuer: testIssuer.issuer,
    trustBundle,
    registry,
    dir: dir.path,
    agent: (agentId, overrides) => testIssuer.agent(agentId, overrides),
    async startGateway(options = {}) {
      const gw = await startGatewayProcess(
        gatewayEnv({
          gatewayId: GATEWAY_ID,
          registryAddress: registry.address,
          trustBundleFile: bundleFile,
          followTrustBundle: false,
          dir: join(dir.path, options.name ?? `gateway-${gateways++}`),
          env: {
            PARLEY_GATEWAY_POLICY: policyFile,
            ...(options.port === undefined ? {} : { PARLEY_GATEWAY_LISTEN: `127.0.0.1:${options.port}` }),
            ...options.env,
          },
        }),
      );
      started.push(gw);
      return gw;
    },
    async close() {
      try {
        for (const gw of started) await gw.stop();
        await registry.cleanup();
      } finally {
        for (const gw of started) gw.kill();
        dir.remove();
      }
    },
  };
}

/** An agent connected to a gateway, with a SessionManager whose transport is the connection (no SDK `Agent`). */
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
    handshake: { identity: agent, trustBundle: world.trustBundle },
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

/** A registered agent's identity, as `parley-registry agent register` would give it. */
export async function registeredIdentity(registry: TestRegistry, crypto: ParleyCrypto, agentId: string, agentType: string): Promise<LocalIdentity> {
  const a = await registry.register(crypto, agentId, agentType);
  return { agentId, signingKey: a.secretKey, certificate: a.certificate };
}

/** An SDK agent and what it saw: its events, and every message its application took (and acked). */
export interface RunningSdkAgent {
  readonly agent: SdkAgent;
  readonly events: AgentEvent[];
  readonly received: ReceivedMessage[];
}

/**
 * Connects an SDK agent whose application acks every message as it arrives, recording its events (an `onEvent`
 * in `options` is replaced); its `close` is pushed onto `cleanup`.
 */
export async function onlineSdkAgent(options: ConnectOptions, cleanup: (() => Promise<void> | void)[]): Promise<RunningSdkAgent> {
  const events: AgentEvent[] = [];
  const received: ReceivedMessage[] = [];
  const agent = await connect({ ...options, onEvent: (e) => events.push(e) });
  cleanup.push(() => agent.close());
  void (async () => {
    try {
      for await (const m of agent.messages()) {
        received.push(m);
        await m.ack();
      }
    } catch {
      // stopped
    }
  })();
  return { agent, events, received };
}
