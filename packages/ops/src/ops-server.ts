/**
 * The operations listener of a Parley server: one small HTTP server (loopback
 * by default, separate from the gRPC port) with
 *
 * - `GET /metrics` — Prometheus text format (prom-client registry);
 * - `GET /healthz` — liveness: the process answers and its event loop is not
 *   stalled (200, or 503 when the loop was blocked longer than
 *   `maxEventLoopLagMs` in the last 30 s); cheap, no dependency is consulted;
 * - `GET /readyz` — readiness: the same checks as gRPC health
 *   (./readiness.ts), 200 when ready, 503 with the failing checks named.
 *
 * `/healthz` and `/readyz` answer JSON. Anything else is 404, a method other
 * than GET or HEAD 405. Every request is reported to `onRequest` (the servers
 * log probes at debug level).
 */
import http from 'node:http';
import type { Registry } from 'prom-client';
import type { Readiness, ReadinessReport } from './readiness.js';

/** Settings of {@link startOpsServer}. */
export interface OpsServerOptions {
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0 (any free port). */
  readonly port?: number;
  /** Served at `/metrics`; without it `/metrics` is 404. */
  readonly metrics?: Registry;
  /** Served at `/readyz`; without it `/readyz` answers like `/healthz`. */
  readonly readiness?: Readiness;
  /** `/healthz` fails when the event loop was blocked this long in the last 30 s. Default 10 000 ms. */
  readonly maxEventLoopLagMs?: number;
  /** Called after every request (must not throw). */
  readonly onRequest?: (record: OpsRequestRecord) => void;
  /** Most sockets open at once (default {@link OPS_MAX_CONNECTIONS}); more are closed on accept. */
  readonly maxConnections?: number;
  /** How long headers, a request, and an idle socket may take, ms (default {@link OPS_REQUEST_TIMEOUT_MS}). */
  readonly requestTimeoutMs?: number;
}

/** One served request. */
export interface OpsRequestRecord {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly durationMs: number;
  readonly remote: string;
}

/** A running operations listener. */
export interface OpsServer {
  /** `http://host:port` (no path). */
  readonly baseUrl: string;
  /** `http://host:port/metrics`. */
  readonly metricsUrl: string;
  readonly port: number;
  close(): Promise<void>;
}

/** The JSON body of `/readyz`. */
export interface ReadyzBody {
  readonly ready: boolean;
  readonly failing: readonly string[];
  readonly checks: readonly { readonly name: string; readonly ok: boolean; readonly detail: string; readonly since_ms: number; readonly checked_at_ms: number }[];
}

/** The JSON body of `/healthz`. */
export interface HealthzBody {
  readonly status: 'ok' | 'event_loop_stalled';
  readonly uptime_s: number;
  readonly event_loop_lag_ms: number;
}

/** The `/readyz` body of a report. */
export function readyzBody(report: ReadinessReport): ReadyzBody {
  return {
    ready: report.ready,
    failing: report.failing,
    checks: report.checks.map((c) => ({ name: c.name, ok: c.ok, detail: c.detail, since_ms: c.sinceMs, checked_at_ms: c.checkedAtMs })),
  };
}

const TICK_MS = 250;
const WINDOW_MS = 30_000;

/** Largest event-loop delay seen in the last 30 s (a timer that should fire every 250 ms). */
class LoopMonitor {
  readonly #samples: { at: number; lag: number }[] = [];
  readonly #timer: NodeJS.Timeout;
  #last = performance.now();

  constructor() {
    this.#timer = setInterval(() => {
      const now = performance.now();
      const lag = Math.max(0, now - this.#last - TICK_MS);
      this.#last = now;
      if (lag >= 50) this.#samples.push({ at: now, lag });
      while (this.#samples.length > 0 && this.#samples[0]!.at < now - WINDOW_MS) this.#samples.shift();
    }, TICK_MS);
    this.#timer.unref();
  }

  /** ms: the worst delay in the window, or how late the next tick already is. */
  lagMs(): number {
    const overdue = Math.max(0, performance.now() - this.#last - TICK_MS);
    return Math.round(Math.max(overdue, ...this.#samples.map((s) => s.lag)));
  }

  close(): void {
    clearInterval(this.#timer);
  }
}

/** Most sockets the operations listener keeps open at once (beyond: closed on accept). */
export const OPS_MAX_CONNECTIONS = 64;
/** How long a request's headers, a whole request, and an idle socket may take on the operations listener, ms. */
export const OPS_REQUEST_TIMEOUT_MS = 10_000;

/**
 * Starts the operations listener.
 * @throws Error when it cannot bind (`EADDRINUSE`, …), with the address in the message
 */
export async function startOpsServer(options: OpsServerOptions = {}): Promise<OpsServer> {
  const host = options.host ?? '127.0.0.1';
  const maxLag = options.maxEventLoopLagMs ?? 10_000;
  const started = performance.now();
  const loop = new LoopMonitor();
  const json = (res: http.ServerResponse, status: number, body: unknown, head: boolean): number => {
    const text = `${JSON.stringify(body)}\n`;
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
    res.end(head ? undefined : text);
    return status;
  };
  const healthz = (): { status: number; body: HealthzBody } => {
    const lag = loop.lagMs();
    const ok = lag < maxLag;
    return { status: ok ? 200 : 503, body: { status: ok ? 'ok' : 'event_loop_stalled', uptime_s: Math.round((performance.now() - started) / 100) / 10, event_loop_lag_ms: lag } };
  };
  const timeoutMs = options.requestTimeoutMs ?? OPS_REQUEST_TIMEOUT_MS;
  // Node checks the headers and request timeouts on this interval (30 s by default): checked each second.
  const server = http.createServer({ headersTimeout: timeoutMs, requestTimeout: timeoutMs, connectionsCheckingInterval: Math.min(1_000, timeoutMs) }, (req, res) => {
    const t0 = performance.now();
    const path = (req.url ?? '/').split('?')[0]!;
    const method = req.method ?? 'GET';
    const done = (status: number): void => {
      try {
        options.onRequest?.({ method, path, status, durationMs: performance.now() - t0, remote: `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? ''}` });
      } catch {
        // reporting must not break serving
      }
    };
    if (method !== 'GET' && method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', connection: 'close' }).end();
      done(405);
      return;
    }
    // Nothing here takes a body: one announced is refused, and the connection closed rather than drained.
    if ((req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0') || req.headers['transfer-encoding'] !== undefined) {
      res.writeHead(413, { connection: 'close' }).end();
      done(413);
      return;
    }
    const head = method === 'HEAD';
    switch (path) {
      case '/healthz': {
        const h = healthz();
        done(json(res, h.status, h.body, head));
        return;
      }
      case '/readyz': {
        if (options.readiness === undefined) {
          const h = healthz();
          done(json(res, h.status, { ready: h.status === 200, failing: h.status === 200 ? [] : ['event_loop'], checks: [] }, head));
          return;
        }
        const report = options.readiness.report();
        done(json(res, report.ready ? 200 : 503, readyzBody(report), head));
        return;
      }
      case '/metrics': {
        const registry = options.metrics;
        if (registry === undefined) break;
        registry.metrics().then(
          (body) => {
            res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' }).end(head ? undefined : body);
            done(200);
          },
          () => {
            res.writeHead(500).end();
            done(500);
          },
        );
        return;
      }
    }
    res.writeHead(404).end();
    done(404);
  });
  // Bounded (PROTOCOL §12, the operations listener row): a client that connects and sends nothing, or trickles its
  // headers or a body, holds a socket for seconds, not Node's defaults (60 s for headers, 300 s for a
  // request); at most OPS_MAX_CONNECTIONS sockets at once (more are closed on accept): scrapers and probes
  // need a handful, and each idle socket is a file descriptor the gateway shares with its database and streams.
  server.keepAliveTimeout = Math.min(5_000, timeoutMs);
  server.maxConnections = options.maxConnections ?? OPS_MAX_CONNECTIONS;
  server.setTimeout(timeoutMs, (socket) => socket.destroy());
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    loop.close();
    throw new Error(`cannot listen on ${host}:${options.port ?? 0} for /metrics, /healthz, /readyz: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const baseUrl = `http://${urlHost}:${port}`;
  return {
    baseUrl,
    metricsUrl: `${baseUrl}/metrics`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        loop.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** What {@link probeReadyz} found. */
export interface ReadyzProbe {
  /** The URL asked. */
  readonly url: string;
  readonly ready: boolean;
  readonly body: ReadyzBody;
}

/** Why {@link probeReadyz} got no verdict: nothing answered, or something that is not a Parley `/readyz`. */
export class ReadyzUnavailableError extends Error {
  override readonly name = 'ReadyzUnavailableError';
  readonly code = 'unavailable';
}

/**
 * Asks a server's `/readyz` (the `check` commands of the CLIs).
 * @param baseUrl `http://host:port` of the operations listener (a trailing `/readyz` is accepted)
 * @param timeoutMs how long to wait for the answer
 * @returns the verdict and the checks (200: ready, 503: not ready)
 * @throws ReadyzUnavailableError when nothing answers in time, or the answer is not a `/readyz` body
 */
export async function probeReadyz(baseUrl: string, timeoutMs = 5_000): Promise<ReadyzProbe> {
  const url = `${baseUrl.replace(/\/+$/, '').replace(/\/readyz$/, '')}/readyz`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
  } catch (error) {
    const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
    const why =
      error instanceof Error && error.name === 'TimeoutError'
        ? `no answer within ${timeoutMs} ms`
        : typeof cause?.code === 'string'
          ? cause.code
          : typeof cause?.message === 'string'
            ? cause.message
            : error instanceof Error
              ? error.message
              : String(error);
    throw new ReadyzUnavailableError(`${url} unreachable (${why})`, { cause: error });
  }
  const text = await res.text().catch(() => '');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const b = body as Partial<ReadyzBody> | undefined;
  if ((res.status !== 200 && res.status !== 503) || b === undefined || typeof b.ready !== 'boolean' || !Array.isArray(b.checks)) {
    throw new ReadyzUnavailableError(`${url} answered HTTP ${res.status} without a readiness report (not a Parley server, or an older one?)`);
  }
  return { url, ready: b.ready && res.status === 200, body: { ready: b.ready, failing: Array.isArray(b.failing) ? b.failing : [], checks: b.checks } };
}

/** A readiness report as a few lines of text (the `check` commands without `--json`). */
export function formatReadyz(probe: ReadyzProbe): string {
  const width = Math.max(5, ...probe.body.checks.map((c) => c.name.length));
  const lines = [`${probe.ready ? 'ready' : 'NOT READY'}: ${probe.url}`];
  for (const c of probe.body.checks) lines.push(`  ${c.name.padEnd(width)}  ${c.ok ? 'ok  ' : 'FAIL'}  ${c.detail}`);
  return lines.join('\n');
}
