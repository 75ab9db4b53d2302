/**
 * A minimal raw Connect client for process tests (no SDK): hello → challenge →
 * auth → welcome over real gRPC on loopback, then it keeps the stream open and
 * records every response (GoAway included).
 */
import { credentials } from '@grpc/grpc-js';
import { Channel } from '@parley/async';
import type { ParleyCrypto, SecretKey } from '@parley/crypto-core';
import { AgentGatewayService, type AgentCertificate, type ConnectRequest, type ConnectRequestSchema, type ConnectResponse, type MessageInitShape, type OutboundSchema } from '@parley/proto';
import { gatewayAuthLayout } from '@parley/protocol';
import { createClient } from '@parley/rpc';

/** Who connects: an agent id, its certificate and its signing key. */
export interface RawAgent {
  readonly agentId: string;
  readonly certificate: AgentCertificate;
  readonly secretKey: SecretKey;
}

type ConnectRequestInit = MessageInitShape<typeof ConnectRequestSchema>;

export interface RawStream {
  readonly responses: ConnectResponse[];
  /** The GoAway code, once one arrived. */
  goAway(): string | undefined;
  /** Resolves when the stream ends (GoAway or error). */
  readonly ended: Promise<void>;
  /** Sends one Outbound item (`extra`: the ack it carries, quiet). */
  send(item: NonNullable<MessageInitShape<typeof OutboundSchema>['item']>, requestId?: bigint, extra?: { readonly ackDeliveryId?: bigint; readonly quiet?: boolean }): void;
  /** Sends an Ack frame (with more ids: Ack.more_delivery_ids). */
  ack(deliveryId: bigint, more?: readonly bigint[]): void;
  /** Stops reading responses (an agent that hangs): HTTP/2 flow control then backs up the gateway's writes. */
  stopReading(): void;
  close(): void;
}

/**
 * Authenticates an agent on a gateway's Connect stream and keeps it open.
 * @throws Error when the gateway ends the stream (or says GoAway) before Welcome
 */
export async function rawConnect(crypto: ParleyCrypto, address: string, gatewayId: string, agent: RawAgent, options: { readonly deliveryBatches?: boolean } = {}): Promise<RawStream> {
  const client = createClient(AgentGatewayService, address, credentials.createInsecure());
  const requests = new Channel<ConnectRequestInit>();
  const responses: ConnectResponse[] = [];
  let welcomed!: () => void;
  let failed!: (e: unknown) => void;
  const welcome = new Promise<void>((resolve, reject) => ((welcomed = resolve), (failed = reject)));
  let stalled = false;
  let unstall: () => void = () => undefined;
  const unstalled = new Promise<void>((resolve) => (unstall = resolve));
  requests.push({ kind: { case: 'hello', value: { version: 1, certificate: agent.certificate, deliveryBatches: options.deliveryBatches === true } } });
  const ended = (async () => {
    try {
      for await (const res of client.connect(requests as AsyncIterable<ConnectRequest>)) {
        if (stalled) await unstalled; // reads nothing more until close()
        responses.push(res);
        if (res.kind.case === 'challenge') {
          const signature = crypto.ed25519.sign(gatewayAuthLayout(gatewayId, res.kind.value.nonce, agent.agentId, agent.certificate.serial), agent.secretKey);
          requests.push({ kind: { case: 'auth', value: { signature } } });
        } else if (res.kind.case === 'welcome') welcomed();
        else if (res.kind.case === 'goAway') failed(new Error(`go_away ${res.kind.value.code}`));
      }
    } catch (error) {
      failed(error);
    } finally {
      failed(new Error('stream ended before welcome'));
      requests.end();
      client.close();
    }
  })();
  await welcome;
  return {
    responses,
    goAway: () => {
      const g = responses.find((r) => r.kind.case === 'goAway');
      return g?.kind.case === 'goAway' ? g.kind.value.code : undefined;
    },
    ended,
    send: (item, requestId = 1n, extra = {}) => void requests.push({ kind: { case: 'send', value: { requestId, item, ...extra } } }),
    ack: (deliveryId, more = []) => void requests.push({ kind: { case: 'ack', value: { deliveryId, moreDeliveryIds: [...more] } } }),
    stopReading: () => void (stalled = true),
    close: () => {
      unstall();
      requests.end();
    },
  };
}
