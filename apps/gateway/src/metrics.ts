/**
 * Prometheus metrics of the gateway (prom-client), on a registry of its own
 * (so several gateways in one process do not collide), served by a separate
 * HTTP listener at `/metrics` (loopback by default).
 */
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The gateway's instruments. */
export class GatewayMetrics {
  readonly registry = new Registry();
  /** Items routed (written to the recipient's live stream, or stored in the mailbox). */
  readonly routed = new Counter({ name: 'parley_gateway_items_routed_total', help: 'Items routed, by kind and status (delivered or queued)', labelNames: ['kind', 'status'] as const, registers: [this.registry] });
  readonly rejected = new Counter({ name: 'parley_gateway_items_rejected_total', help: 'Items rejected, by code', labelNames: ['code'] as const, registers: [this.registry] });
  readonly handshakes = new Counter({ name: 'parley_gateway_handshake_frames_relayed_total', help: 'Handshake frames routed, by step', labelNames: ['step'] as const, registers: [this.registry] });
  readonly redelivered = new Counter({ name: 'parley_gateway_mailbox_deliveries_total', help: 'Mailbox items written to a stream (first delivery and redeliveries)', registers: [this.registry] });
  readonly expired = new Counter({ name: 'parley_gateway_mailbox_expired_total', help: 'Mailbox items dropped by the TTL sweep', registers: [this.registry] });
  readonly batch = new Histogram({
    name: 'parley_gateway_group_commit_size',
    help: 'Items per group-committed statement, by kind (audit, mailbox_insert, mailbox_delete)',
    labelNames: ['kind'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    registers: [this.registry],
  });
  readonly spilled = new Counter({ name: 'parley_gateway_spilled_total', help: 'Live deliveries written to the mailbox, by reason (ack_timeout, stream_end, backlog)', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly dropped = new Counter({ name: 'parley_gateway_mailbox_dropped_total', help: 'Mailbox items dropped because their sender was revoked or expired', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly auditFailures = new Counter({ name: 'parley_gateway_audit_failures_total', help: 'Audit appends that failed', registers: [this.registry] });
  readonly latency = new Histogram({
    name: 'parley_gateway_relay_latency_seconds',
    help: 'Time from an item arriving to its Accepted (checks, group-committed audit append or mailbox write, live write)',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly connected: Gauge;
  readonly mailboxDepth: Gauge;

  constructor(sources: { connectedAgents: () => number; mailboxDepth: () => Promise<number> }) {
    this.connected = new Gauge({
      name: 'parley_gateway_connected_agents',
      help: 'Agents with a live authenticated stream',
      registers: [this.registry],
      collect() {
        this.set(sources.connectedAgents());
      },
    });
    this.mailboxDepth = new Gauge({
      name: 'parley_gateway_mailbox_depth',
      help: 'Unexpired items waiting in the mailbox (delivered but not yet acked, or queued)',
      registers: [this.registry],
      async collect() {
        this.set(await sources.mailboxDepth());
      },
    });
  }
}

/** A running metrics listener. */
export interface MetricsServer {
  /** `http://host:port/metrics`. */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Serves `registry` at `GET /metrics` on `host:port` (default 127.0.0.1, port 0 = any free one). */
export async function startMetricsServer(registry: Registry, options: { readonly host?: string; readonly port?: number } = {}): Promise<MetricsServer> {
  const host = options.host ?? '127.0.0.1';
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${urlHost}:${port}/metrics`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
