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

/** Default bound of Watch calls open at once (see {@link HealthServiceOptions.maxWatches}). */
export const DEFAULT_MAX_WATCHES = 1_000;

/** Options of {@link addHealthService}: {@link AddServiceOptions} and the Watch bound. */
export interface HealthServiceOptions extends AddServiceOptions {
  /** Most Watch calls open at once; more are refused with `unavailable` (default {@link DEFAULT_MAX_WATCHES}). */
  readonly maxWatches?: number;
}

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
export function addHealthService(server: Server, initial: Readonly<Record<string, ServingStatus>>, options: HealthServiceOptions = {}): HealthReporter {
  const { maxWatches = DEFAULT_MAX_WATCHES, ...serviceOptions } = options;
  const statuses = new Map<string, ServingStatus>(Object.entries(initial));
  const watchers = new Set<() => void>();
  let watches = 0;
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
        // Watch is unauthenticated and never ends by itself: bounded, so open calls cannot grow without limit.
        if (watches >= maxWatches) throw new RpcError('unavailable', `too many health watches (${maxWatches}): poll Check instead`);
        watches++;
        try {
          yield* watchStatus(name, context.signal);
        } finally {
          watches--;
        }
      },
    },
    serviceOptions,
  );

  /** The statuses of `name` as they change, until the call ends or the reporter shuts down. */
  async function* watchStatus(name: string, signal: AbortSignal): AsyncGenerator<{ status: ServingStatus }> {
    let last: ServingStatus | undefined;
    while (!signal.aborted) {
      const current = statuses.get(name) ?? ServingStatus.SERVICE_UNKNOWN;
      if (current !== last) {
        last = current;
        yield { status: current };
      }
      if (closed) return;
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          watchers.delete(wake);
          signal.removeEventListener('abort', wake);
          resolve();
        };
        watchers.add(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
  }

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
