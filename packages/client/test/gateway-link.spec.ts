// GatewayLink against a stand-in gRPC gateway on loopback that authenticates the agent as a gateway would.
// Its first stream ends at once; the second is answered only when the test says so — after the agent has
// stopped for good. A reconnection that completes after the stop must not bring the agent back to life.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey, issueCertificate } from '@parley/identity';
import { AgentGatewayService, type ConnectRequest, type ConnectResponseSchema, type MessageInitShape } from '@parley/proto';
import { addService, type ServerDuplex } from '@parley/rpc';
import type { LocalIdentity } from '@parley/session';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentEvent, ConnectOptions } from '../src/agent-options.js';
import { GatewayLink } from '../src/gateway-link.js';
import { Lifecycle } from '../src/lifecycle.js';
import { ClientError, type GatewayConnection } from '../src/index.js';

let crypto: ParleyCrypto;
let identity: LocalIdentity;
let server: Server;
let address: string;
/** Streams the stand-in gateway has seen: `answer` sends the challenge, `ended` resolves when the agent closes it. */
const streams: { answer: () => void; ended: Promise<void> }[] = [];
let streamOpened: (() => void) | undefined;

beforeAll(async () => {
  crypto = await createCrypto();
  const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  const keyPair = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, issuer, { agentId: 'worker-1', identityPublicKey: keyPair.publicKey, agentType: 'worker', capabilities: [], validFromMs: now - 60_000, validUntilMs: now + 86_400_000 });
  identity = { agentId: 'worker-1', signingKey: keyPair.secretKey, certificate };
  server = new Server();
  addService(server, AgentGatewayService, {
    connect(call: ServerDuplex<ConnectRequest, MessageInitShape<typeof ConnectResponseSchema>>) {
      const index = streams.length;
      let ended!: () => void;
      const stream = { answer: () => call.push({ kind: { case: 'challenge', value: { gatewayId: 'gw-1', nonce: new Uint8Array(32) } } }), ended: new Promise<void>((r) => (ended = r)) };
      streams.push(stream);
      call.listen({
        message(request: ConnectRequest) {
          if (request.kind.case === 'hello') {
            if (index === 0) stream.answer();
            else streamOpened?.();
          } else if (request.kind.case === 'auth') {
            call.push({ kind: { case: 'welcome', value: { agentId: 'worker-1' } } });
            if (index === 0) call.end(); // the first stream drops: the link reconnects
          }
        },
        end() {
          ended();
          call.end();
        },
        error() {
          ended();
          call.end();
        },
        finished() {
          ended();
        },
      });
    },
    send() {
      throw new Error('not used');
    },
  } as never);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))));
  address = `127.0.0.1:${port}`;
});

afterAll(() => {
  server.forceShutdown();
});

describe('GatewayLink', () => {
  it('a reconnection that completes after the agent stopped for good is closed, not attached', async () => {
    const lifecycle = new Lifecycle();
    const events: AgentEvent[] = [];
    const attached: GatewayConnection[] = [];
    let secondAttached: (() => void) | undefined;
    const secondOpened = new Promise<void>((r) => (streamOpened = r));
    const link = new GatewayLink({
      crypto,
      options: { gateway: address, identity, expectedGatewayId: 'gw-1', reconnect: { initialDelayMs: 1, maxDelayMs: 2 } } as unknown as ConnectOptions,
      lifecycle,
      emit: (e) => void events.push(e),
      onDelivery: () => undefined,
      onConnected: (conn) => {
        attached.push(conn);
        if (attached.length === 2) secondAttached?.();
      },
      stop: (error) => (lifecycle.fatal = error),
    });
    await link.connect();
    expect(attached).toHaveLength(1);
    await secondOpened; // the first stream dropped; the link is authenticating a second one
    lifecycle.fatal = new ClientError('state_corrupt', 'the agent stopped'); // e.g. its journal failed
    const attachedAgain = new Promise<void>((r) => (secondAttached = r));
    streams[1]!.answer();
    await Promise.race([streams[1]!.ended, attachedAgain]);
    expect(attached).toHaveLength(1);
    expect(events.filter((e) => e.kind === 'connected')).toHaveLength(1);
    expect(link.current).not.toBe(attached[0]); // the first one ended; nothing took its place
    expect(link.connected).toBe(false);
    link.close();
  });
});
