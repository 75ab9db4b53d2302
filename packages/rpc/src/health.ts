/**
 * The standard gRPC health checking service (grpc.health.v1, vendored in
 * proto/grpc/health/v1/health.proto): `Check` answers the current status of a
 * service, or NOT_FOUND for an unknown name; `Watch` streams the current
 * status and every change, SERVICE_UNKNOWN for a name not (yet) known.
 * The empty service name is the server as a whole.
 */
import type { Server } from '@grpc/grpc-js';
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from '@parley/proto';
import { RpcError } from './errors.js';
import { addService, type AddServiceOptions } from './service.js';

export { ServingStatus };

/** Longest service name accepted in a health request. */
const MAX_SERVICE_NAME = 256;

/** Health state of a server, shared by `Check` and `Watch`. */
export interface HealthReporter {
  /** Sets a service's status (the empty name is the whole server) and notifies watchers. */
  setStatus(service: string, status: ServingStatus): void;
  /** The current status of a service, or undefined when not registered. */
  getStatus(service: string): ServingStatus | undefined;
  /** Marks every service NOT_SERVING (for graceful shutdown) and ends watches. */
  shutdown(): void;
}

/**
 * Adds grpc.health.v1.Health to a server.
 *
 * @param server a grpc-js Server
 * @param initial service name → status at start (`''` is the whole server)
 * @param options forwarded to {@link addService} (e.g. `onCallEnd`)
 * @returns the reporter that changes statuses
 * @example
 * const health = addHealthService(server, { '': ServingStatus.SERVING, 'parley.v1.RegistryService': ServingStatus.SERVING });
 * health.setStatus('parley.v1.RegistryService', ServingStatus.NOT_SERVING);
 */
export function addHealthService(server: Server, initial: Readonly<Record<string, ServingStatus>>, options: AddServiceOptions = {}): HealthReporter {
  const statuses = new Map<string, ServingStatus>(Object.entries(initial));
  const watchers = new Set<() => void>();
  let closed = false;
  const notify = (): void => {
    for (const wake of [...watchers]) wake();
  };
  const checkName = (service: string): string => {
    if (service.length > MAX_SERVICE_NAME) throw new RpcError('malformed', `service name must be at most ${MAX_SERVICE_NAME} characters`);
    return service;
  };

  addService(
    server,
    Health,
    {
      check(request) {
        const status = statuses.get(checkName(request.service));
        if (status === undefined) throw new RpcError('not_found', `unknown service '${request.service}'`);
        return { status };
      },
      async *watch(request, context) {
        const name = checkName(request.service);
        let last: ServingStatus | undefined;
        while (!context.signal.aborted) {
          const current = statuses.get(name) ?? ServingStatus.SERVICE_UNKNOWN;
          if (current !== last) {
            last = current;
            yield { status: current };
          }
          if (closed) return;
          await new Promise<void>((resolve) => {
            const wake = (): void => {
              watchers.delete(wake);
              context.signal.removeEventListener('abort', wake);
              resolve();
            };
            watchers.add(wake);
            context.signal.addEventListener('abort', wake, { once: true });
          });
        }
      },
    },
    options,
  );

  return {
    setStatus(service, status) {
      statuses.set(service, status);
      notify();
    },
    getStatus(service) {
      return statuses.get(service);
    },
    shutdown() {
      for (const name of statuses.keys()) statuses.set(name, ServingStatus.NOT_SERVING);
      closed = true;
      notify();
    },
  };
}
