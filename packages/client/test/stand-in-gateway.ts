// A stand-in gRPC gateway on loopback for the SDK's tests against a gateway that misbehaves: by default it
// authenticates any agent (challenge with gateway id `gw-1`, then a welcome naming the agent of the hello), never answers an item the agent
// sends (its requests are kept), and ends its side when the agent half-closes. Each hook changes one step.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { AgentGatewayService, type ConnectRequest, type ConnectResponseSchema, type MessageInitShape } from '@parley/proto';
import { addService, type ServerDuplex } from '@parley/rpc';

export type Push = (response: MessageInitShape<typeof ConnectResponseSchema>) => void;

export interface StandInOptions {
  /** Answers a hello on stream number `stream` (0, 1, …); `fail` ends the call with an error's status (an RpcError's carries its code). Default: the challenge. */
  readonly hello?: (stream: number, push: Push, fail: (error: unknown) => void) => void;
  /** Runs after the welcome of stream `stream`. */
  readonly welcomed?: (stream: number, push: Push, end: () => void) => void;
  /** The welcome's `outbound_acks`. Default true. */
  readonly outboundAcks?: boolean;
  /** Ignore the agent's half-close (a gateway that never ends the call). Default false. */
  readonly ignoreEnd?: boolean;
}

export interface StandIn {
  readonly address: string;
  readonly port: number;
  /** Everything the agents sent after authenticating (sends and acks), in order. */
  readonly requests: ConnectRequest[];
  /** Connect streams opened so far. */
  streams(): number;
  close(): void;
}

export const CHALLENGE: MessageInitShape<typeof ConnectResponseSchema> = { kind: { case: 'challenge', value: { gatewayId: 'gw-1', nonce: new Uint8Array(32) } } };

export async function standInGateway(options: StandInOptions = {}): Promise<StandIn> {
  const server = new Server();
  const requests: ConnectRequest[] = [];
  let streams = 0;
  addService(server, AgentGatewayService, {
    connect(call: ServerDuplex<ConnectRequest, MessageInitShape<typeof ConnectResponseSchema>>) {
      const stream = streams++;
      const push: Push = (r) => call.push(r);
      let agentId = '';
      call.listen({
        message(request: ConnectRequest) {
          if (request.kind.case === 'hello') {
            agentId = request.kind.value.certificate?.agentId ?? '';
            if (options.hello === undefined) push(CHALLENGE);
            else options.hello(stream, push, (error) => call.fail(error));
          } else if (request.kind.case === 'auth') {
            push({ kind: { case: 'welcome', value: { agentId, outboundAcks: options.outboundAcks ?? true } } });
            options.welcomed?.(stream, push, () => call.end());
          } else requests.push(request);
        },
        end: () => (options.ignoreEnd === true ? undefined : call.end()),
        error: () => (options.ignoreEnd === true ? undefined : call.end()),
        finished: () => undefined,
      });
    },
    send() {
      throw new Error('not used');
    },
  } as never);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))));
  return { address: `127.0.0.1:${port}`, port, requests, streams: () => streams, close: () => server.forceShutdown() };
}
