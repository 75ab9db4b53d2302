// A stand-in gateway on loopback that relays between the agents connected to it, and checks nothing: it
// authenticates any agent (challenge naming `gw-1`), answers every item `accepted` (DELIVERED), and writes it to
// its recipient's stream once (an item for an agent not connected is dropped). Never refusing anything, it leaves
// every refusal in a test to the agents themselves.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { AgentGatewayService, DeliveryStatus, type ConnectRequest, type ConnectResponseSchema, type MessageInitShape, type Outbound } from '@parley/proto';
import { addService, type ServerDuplex } from '@parley/rpc';

export interface StandInRelay {
  readonly address: string;
  /** Items relayed so far, by kind. */
  relayed(kind: Outbound['item']['case']): number;
  close(): void;
}

/** Whom an item is for. */
function recipientOf(item: Outbound['item']): string | undefined {
  switch (item.case) {
    case 'handshake':
    case 'envelope':
      return item.value.recipientId;
    case 'receipt':
    case 'sessionReject':
      return item.value.senderId; // back to the sender of the message they answer
    default:
      return undefined;
  }
}

export async function standInRelay(): Promise<StandInRelay> {
  const server = new Server();
  const streams = new Map<string, (response: MessageInitShape<typeof ConnectResponseSchema>) => void>();
  const counts = new Map<string, number>();
  let nextDelivery = 1n;
  addService(server, AgentGatewayService, {
    connect(call: ServerDuplex<ConnectRequest, MessageInitShape<typeof ConnectResponseSchema>>) {
      let agentId = '';
      const push = (r: MessageInitShape<typeof ConnectResponseSchema>): void => {
        call.push(r);
      };
      call.listen({
        message(request: ConnectRequest) {
          const kind = request.kind;
          if (kind.case === 'hello') {
            agentId = kind.value.certificate?.agentId ?? '';
            push({ kind: { case: 'challenge', value: { gatewayId: 'gw-1', nonce: new Uint8Array(32) } } });
          } else if (kind.case === 'auth') {
            streams.set(agentId, push);
            push({ kind: { case: 'welcome', value: { agentId, outboundAcks: true } } });
          } else if (kind.case === 'send') {
            const { requestId, item, quiet } = kind.value;
            if (!quiet) push({ kind: { case: 'accepted', value: { requestId, itemHash: new Uint8Array(32), status: DeliveryStatus.DELIVERED } } });
            if (item.case === undefined) return;
            counts.set(item.case, (counts.get(item.case) ?? 0) + 1);
            const to = recipientOf(item);
            const target = to === undefined ? undefined : streams.get(to);
            target?.({ kind: { case: 'delivery', value: { deliveryId: nextDelivery++, item } } });
          }
        },
        end: () => {
          if (streams.get(agentId) === push) streams.delete(agentId);
          call.end();
        },
        error: () => {
          if (streams.get(agentId) === push) streams.delete(agentId);
          call.end();
        },
        finished: () => {
          if (streams.get(agentId) === push) streams.delete(agentId);
        },
      });
    },
    send() {
      throw new Error('not used');
    },
  } as never);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))));
  return { address: `127.0.0.1:${port}`, relayed: (kind) => counts.get(kind ?? '') ?? 0, close: () => server.forceShutdown() };
}
