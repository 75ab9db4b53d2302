// GatewayConnection against a gateway that breaks the protocol: a stand-in gRPC server on loopback that
// authenticates the agent as a gateway would and then writes far more deliveries than any in-flight bound
// allows while the agent is still handling the first. The agent's queue is bounded: the stream ends.
import { Server, ServerCredentials, credentials } from '@grpc/grpc-js';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { createIssuerKey, issueCertificate } from '@parley/identity';
import { AgentGatewayService, type ConnectRequest, type ConnectResponseSchema, type MessageInitShape } from '@parley/proto';
import { addService, isRpcError, type ServerDuplex } from '@parley/rpc';
import type { LocalIdentity } from '@parley/session';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayConnection } from '../src/index.js';
import { MAX_QUEUED_DELIVERIES } from '../src/connection.js';

let crypto: ParleyCrypto;
let identity: LocalIdentity;
let server: Server;
let address: string;

beforeAll(async () => {
  crypto = await createCrypto();
  const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  const keyPair = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, issuer, {
    agentId: 'worker-hostile',
    identityPublicKey: keyPair.publicKey,
    agentType: 'worker',
    capabilities: [],
    validFromMs: now - 60_000,
    validUntilMs: now + 86_400_000,
  });
  identity = { agentId: 'worker-hostile', signingKey: keyPair.secretKey, certificate };
  server = new Server();
  addService(server, AgentGatewayService, {
    connect(call: ServerDuplex<ConnectRequest, MessageInitShape<typeof ConnectResponseSchema>>) {
      let step = 0;
      call.listen({
        message(request: ConnectRequest) {
          step++;
          if (step === 1) call.push({ kind: { case: 'challenge', value: { gatewayId: 'gw-hostile', nonce: new Uint8Array(32) } } });
          else if (step === 2 && request.kind.case === 'auth') {
            call.push({ kind: { case: 'welcome', value: { agentId: 'worker-hostile' } } });
            // Far beyond any in-flight bound, none of it acked.
            let id = 1n;
            for (let f = 0; f < MAX_QUEUED_DELIVERIES / 128 + 2; f++) {
              call.push({ kind: { case: 'deliveries', value: { items: Array.from({ length: 128 }, () => ({ deliveryId: id++ })) } } });
            }
          }
        },
        end() {
          call.end();
        },
        error() {
          call.end();
        },
        finished() {},
      });
    },
    send() {
      throw new Error('not used');
    },
  } as never);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
  );
  address = `127.0.0.1:${port}`;
});

afterAll(() => {
  server.forceShutdown();
});

describe('GatewayConnection with a gateway that breaks the protocol', () => {
  it(`ends the stream (malformed) once more than ${MAX_QUEUED_DELIVERIES} deliveries wait to be handled, instead of queueing without bound`, async () => {
    let handed = 0;
    const conn = await GatewayConnection.open({
      address,
      crypto,
      identity,
      credentials: credentials.createInsecure(),
      expectedGatewayId: 'gw-hostile',
      onDelivery: () => {
        handed++;
        return new Promise<void>(() => undefined); // the first one is still being handled
      },
    });
    const end = await conn.closed;
    expect(isRpcError(end, 'malformed')).toBe(true);
    expect(handed).toBe(1);
    conn.close();
  }, 30_000);
});
