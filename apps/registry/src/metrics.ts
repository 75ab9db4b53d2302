/**
 * Prometheus metrics of the registry (prom-client, a registry of its own),
 * served with `/healthz` and `/readyz` by the operations listener of
 * @parley/ops when `metrics_listen` is set. The series every Parley server
 * has (build info, process, gRPC requests by method and code, readiness,
 * database) come from @parley/ops's ServerMetrics on the same registry; the
 * table of all names is in the README.
 */
import { Counter, Gauge, Registry } from 'prom-client';

/** The registry's own instruments. */
export class RegistryMetrics {
  readonly registry = new Registry();
  readonly issued = new Counter({
    name: 'parley_registry_certificates_issued_total',
    help: 'Agent certificates issued, by reason (register, enrol, rotate)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly revoked = new Counter({
    name: 'parley_registry_revocations_total',
    help: 'Revocation list entries added, by subject (agent, serial) and by how (revoke, rotate: a rotation supersedes the old certificate)',
    labelNames: ['subject', 'via'] as const,
    registers: [this.registry],
  });
  readonly authRefusals = new Counter({
    name: 'parley_registry_auth_refusals_total',
    help: 'Calls refused by a security check (missing or bad operator signature, unknown operator, replayed nonce, clock skew, bad proof of possession; a key rotation within a minute: rate_limited; a revocation watch beyond its bounds: unavailable), by code',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  readonly watchers = new Gauge({ name: 'parley_registry_revocation_watchers', help: 'Open WatchRevocations streams (gateways and agents following the list)', registers: [this.registry] });

  constructor(sources: { readonly revocationVersion: () => Promise<number> }) {
    let last = 0;
    new Gauge({
      name: 'parley_registry_revocation_version',
      help: 'Current version of the signed revocation list (the last value read while the database does not answer)',
      registers: [this.registry],
      async collect() {
        // A scrape must not fail because the database is down: the storage readiness check says that.
        last = await sources.revocationVersion().catch(() => last);
        this.set(last);
      },
    });
  }
}
