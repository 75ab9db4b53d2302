/**
 * A gRPC server of a test's own on 127.0.0.1 (an ephemeral port), for packages that may not import grpc-js
 * themselves (services: their programs serve them) but whose tests serve a service over a real socket.
 */
import { Server, ServerCredentials, credentials, type ChannelCredentials, type ChannelOptions } from '@grpc/grpc-js';

/** A running loopback server. */
export interface LoopbackServer {
  /** `127.0.0.1:<port>`. */
  readonly address: string;
  /** Stops it at once (open calls fail). */
  close(): void;
}

/** Starts a plaintext gRPC server on 127.0.0.1 with the services `setup` adds (e.g. `@parley/rpc`'s addService). */
export async function serveOnLoopback(setup: (server: Server) => void, options: ChannelOptions = {}): Promise<LoopbackServer> {
  const server = new Server(options);
  setup(server);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err === null ? resolve(p) : reject(err))));
  return { address: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
}

/** Plaintext channel credentials, for a client of a loopback server. */
export function loopbackCredentials(): ChannelCredentials {
  return credentials.createInsecure();
}
