// GatewayLink against a stand-in gRPC gateway on loopback that authenticates the agent as a gateway would.
// Its first stream ends at once; the second is answered only when the test says so — after the agent has
// stopped for good. A reconnection that completes after the stop must not bring the agent back to life.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
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
import { CHALLENGE, standInGateway } from './stand-in-gateway.js';

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

describe('GatewayLink against a gateway that breaks the protocol once', () => {
  it('an answer that breaks the protocol at re-authentication (malformed) is retried with backoff, not fatal: the next stream attaches', async () => {
    // Review finding: a frame of the wrong kind, a challenge with an 8-byte nonce or a go-away `malformed` during
    // re-authentication stopped the agent for good, although the next stream would have been fine.
    const bad = await standInGateway({
      hello: (stream, push) => {
        if (stream === 1) push({ kind: { case: 'challenge', value: { gatewayId: 'gw-1', nonce: new Uint8Array(8) } } });
        else if (stream === 2) push({ kind: { case: 'accepted', value: {} } });
        else if (stream === 3) push({ kind: { case: 'goAway', value: { code: 'malformed', message: 'busy' } } });
        else push(CHALLENGE);
      },
      welcomed: (stream, _push, end) => void (stream === 0 && end()), // the first stream drops: the link reconnects
    });
    const lifecycle = new Lifecycle();
    const events: AgentEvent[] = [];
    const attached: GatewayConnection[] = [];
    let second: (() => void) | undefined;
    const attachedAgain = new Promise<void>((r) => (second = r));
    const link = new GatewayLink({
      crypto,
      options: { gateway: bad.address, identity, expectedGatewayId: 'gw-1', reconnect: { initialDelayMs: 1, maxDelayMs: 20 } } as unknown as ConnectOptions,
      lifecycle,
      emit: (e) => void events.push(e),
      onDelivery: () => undefined,
      onConnected: (conn) => {
        attached.push(conn);
        if (attached.length === 2) second?.();
      },
      stop: (error) => (lifecycle.fatal = error),
    });
    try {
      await link.connect();
      await attachedAgain; // streams 1-3 broke the protocol; stream 4 authenticated
      expect(bad.streams()).toBe(5); // 0 authenticated, 1-3 broke the protocol, 4 authenticated
      expect(lifecycle.fatal).toBeUndefined();
      expect(link.connected).toBe(true);
    } finally {
      link.close();
      bad.close();
    }
  });
});

describe('GatewayLink keepalive', () => {
  it('a gateway that goes silent behind an open connection is noticed by keepalive PINGs and the agent reconnects', async () => {
    // Review finding: the TS agent set no keepalive — behind a path that dropped every byte but kept the sockets
    // open it stayed "connected" for good (the Python SDK noticed in about 40 s). Here: PINGs every second.
    const gw = await standInGateway();
    const gwPort = gw.port;
    // A TCP proxy that can turn into a black hole: bytes are dropped both ways, the sockets stay open.
    let silent = false;
    const sockets: Socket[] = [];
    const proxy = createServer((client) => {
      const upstream = tcpConnect(gwPort, '127.0.0.1');
      sockets.push(client, upstream);
      client.on('data', (d) => void (silent || upstream.write(d)));
      upstream.on('data', (d) => void (silent || client.write(d)));
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    const proxyPort = await new Promise<number>((resolve) => proxy.listen(0, '127.0.0.1', () => resolve((proxy.address() as { port: number }).port)));
    const lifecycle = new Lifecycle();
    const events: AgentEvent[] = [];
    let connections = 0;
    let reconnected: (() => void) | undefined;
    const again = new Promise<void>((r) => (reconnected = r));
    const link = new GatewayLink({
      crypto,
      options: { gateway: `127.0.0.1:${proxyPort}`, identity, expectedGatewayId: 'gw-1', keepaliveMs: 1_000, reconnect: { initialDelayMs: 10, maxDelayMs: 200 } } as unknown as ConnectOptions,
      lifecycle,
      emit: (e) => void events.push(e),
      onDelivery: () => undefined,
      onConnected: () => {
        if (++connections === 2) reconnected?.();
      },
      stop: (error) => (lifecycle.fatal = error),
    });
    try {
      await link.connect();
      silent = true; // the path goes silent; nothing is sent, nothing ends
      await new Promise<void>((resolve) => {
        const poll = setInterval(() => {
          if (events.some((e) => e.kind === 'disconnected')) resolve(clearInterval(poll));
        }, 50);
      });
      // (without keepalive nothing ever noticed: the test's own timeout ended it)
      expect(link.connected).toBe(false);
      for (const s of sockets.splice(0)) s.destroy();
      silent = false; // the path works again: the agent reconnects by itself
      await again;
      expect(gw.streams()).toBeGreaterThanOrEqual(2);
      expect(lifecycle.fatal).toBeUndefined();
    } finally {
      link.close();
      proxy.close();
      for (const s of sockets) s.destroy();
      gw.close();
    }
  }, 20_000);
});
