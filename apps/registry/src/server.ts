/**
 * The registry gRPC server (DESIGN.md "Registry"; docs/PROTOCOL.md §15):
 * parley.v1.RegistryService over the store, plus grpc.health.v1 and server
 * reflection. Every handler validates its request completely before touching
 * the database, so a malformed request changes nothing; every state change is
 * one store transaction.
 *
 * Authorisation (§15.3): state-changing calls need an operator request
 * signature (default deny); directory reads (agents, operators) need an
 * operator's or the reading agent's own signature unless `directoryReads` is
 * `public`; revocation reads need one only when `readsRequireAuth`; RotateKey
 * is authorised by the agent's current key and EnrollAgent by a join token
 * with the new key's proof of possession; CreateChallenge and GetTrustBundle
 * are open (they change nothing an attacker could use, and the trust bundle is
 * what lets a client check everything else).
 *
 * Issuer lifecycle (§15.9): RotateIssuer prepares a new key (its file written
 * first, then the database row and the trust bundle version that publishes it,
 * signed by the active key); a timer activates it when due (the new trust
 * bundle version is signed by the new key) and drops retired keys past their
 * not_after_ms. The same timer notices changes made by other registry
 * processes on a shared database and loads the key they activated. Every
 * refused authorisation is a security event (`event: "security"`, stable
 * fields, see the README) and counted.
 *
 * Health reflects readiness (@parley/ops): NOT_SERVING while the database does
 * not answer a probe (`storage`), SERVING again by itself when it does.
 *
 * The service's handlers live in `service/`, one module per concern: certificates.ts (challenges,
 * registration, key rotation), revocations.ts (revocation list and watch feed), trust-bundle.ts (the
 * bundle and issuer rotation), directory.ts (agent reads), join-tokens.ts (enrolment), operators.ts
 * (the operator list), with auth.ts (request signatures), issuer-lifecycle.ts (the keys this process
 * holds), fields.ts (validation and conversions) and context.ts (what they share). This file
 * assembles them into a server.
 */
import tls from 'node:tls';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { ParleyCrypto } from '@parley/crypto-core';
import { Health, RegistryService } from '@parley/proto';
import {
  addHealthService,
  addReflectionService,
  addService,
  formatHostPort,
  isLoopbackHost,
  parseHostPort,
  RpcError,
  ServingStatus,
  type CallRecord,
  type HealthReporter,
  type ServiceImplementation,
} from '@parley/rpc';
import { Readiness, ServerMetrics, buildInfo, logReadiness } from '@parley/ops';
import type { Logger } from 'pino';
import type { RegistrySettings } from './config.js';
import type { IssuerKeyFiles } from './issuer-keys.js';
import { RegistryMetrics } from './metrics.js';
import { Authoriser, type AuthoriserOptions } from './service/auth.js';
import { certificateHandlers } from './service/certificates.js';
import { Notifier, type ServiceContext } from './service/context.js';
import { directoryHandlers } from './service/directory.js';
import { IssuerKeyRing } from './service/issuer-lifecycle.js';
import { joinTokenHandlers } from './service/join-tokens.js';
import { DEFAULT_MAX_REVOCATION_WATCHES, DEFAULT_MAX_REVOCATION_WATCHES_PER_ADDRESS } from './service/limits.js';
import { operatorHandlers } from './service/operators.js';
import { revocationHandlers } from './service/revocations.js';
import { trustBundleHandlers } from './service/trust-bundle.js';
import { REVOCATION_CHANNEL, TRUST_BUNDLE_CHANNEL, type RegistryStore } from './store.js';

export { MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE } from './service/directory.js';
export { MAX_LIST_ENTRIES, MAX_LIST_BYTES } from './service/revocations.js';
export { MAX_BUNDLE_DOCUMENTS } from './service/trust-bundle.js';
export { DEFAULT_MAX_REVOCATION_WATCHES, DEFAULT_MAX_REVOCATION_WATCHES_PER_ADDRESS } from './service/limits.js';

/** Largest request the server accepts (every registry request is far smaller). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** How often a registry process checks the issuer lifecycle (due activations, drops, changes by other processes). */
const LIFECYCLE_INTERVAL_MS = 1000;

/** TLS material for `serve`. */
export interface TlsFiles {
  readonly certChain: Buffer;
  readonly privateKey: Buffer;
}

/** Everything the server needs. */
export interface RegistryServerOptions {
  readonly crypto: ParleyCrypto;
  readonly store: RegistryStore;
  /** The issuer key files: the active key (checked against the database at start), prepared keys, rotation. */
  readonly keyFiles: IssuerKeyFiles;
  readonly settings: RegistrySettings;
  readonly logger: Logger;
  /**
   * Also export prom-client's process and Node.js metrics (one set per process:
   * `serve` turns them on; tests running several registries leave them off).
   */
  readonly processMetrics?: boolean;
  /** How often the `storage` readiness check probes the database, ms. Default 2 000 (timeout 5 000). */
  readonly storageProbeIntervalMs?: number;
  /** Most WatchRevocations streams open at once (default {@link DEFAULT_MAX_REVOCATION_WATCHES}, 10 000). */
  readonly maxRevocationWatches?: number;
  /** Most WatchRevocations streams open at once from one network address (default {@link DEFAULT_MAX_REVOCATION_WATCHES_PER_ADDRESS}, 100). */
  readonly maxRevocationWatchesPerAddress?: number;
  /** @internal Agent-signed directory reads per agent key (default AGENT_READ_RATE): the tests set a slow refill. */
  readonly agentReadRate?: AuthoriserOptions['agentReadRate'];
}

/** The program name in `parley_build_info`. */
export const REGISTRY_PROGRAM = 'parley-registry';
/** Calls of grpc.health.v1.Health (logged at debug level: probes come every few seconds). */
const HEALTH_PATH_PREFIX = '/grpc.health.v1.Health/';

/** The registry server: create, `start()`, `stop()`. */
export class RegistryServer {
  readonly #o: RegistryServerOptions;
  readonly #server: Server;
  readonly #notifier = new Notifier();
  /** Aborted by `stop`: ends every revocation watch at once (ServiceContext.stopping). */
  readonly #stopping = new AbortController();
  readonly #issuers: IssuerKeyRing;
  #health: HealthReporter | undefined;
  #unlisten: (() => Promise<void>) | undefined;
  #unlistenBundle: (() => Promise<void>) | undefined;
  #pruneTimer: NodeJS.Timeout | undefined;
  #lifecycleTimer: NodeJS.Timeout | undefined;
  #registryId: Uint8Array = new Uint8Array(16);
  /**
   * The readiness checks behind gRPC health and `/readyz` (`storage`; other
   * components add theirs: `set(name, { ok, detail })` or `addProbe`).
   */
  readonly readiness = new Readiness();
  /** The registry's metrics; `metrics.registry` is what the operations listener serves. */
  readonly metrics: RegistryMetrics;
  readonly #serverMetrics: ServerMetrics;

  constructor(options: RegistryServerOptions) {
    this.#o = options;
    this.#server = new Server({
      'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
      'grpc.keepalive_permit_without_calls': 1,
    });
    const { store } = options;
    this.#issuers = new IssuerKeyRing({ crypto: options.crypto, store, keyFiles: options.keyFiles, logger: options.logger, onBundleVersion: () => this.#notifier.notify() });
    this.metrics = new RegistryMetrics({ revocationVersion: async () => (await store.revocationHead()).version });
    this.#serverMetrics = new ServerMetrics({
      registry: this.metrics.registry,
      build: buildInfo(REGISTRY_PROGRAM, new URL('../package.json', import.meta.url)),
      processMetrics: options.processMetrics === true,
      database: store.db,
      readiness: this.readiness,
    });
    this.readiness.addProbe(
      'storage',
      async () => {
        await store.db.ping(5_000);
        return { ok: true, detail: `${store.db.engine} answers` };
      },
      { intervalMs: options.storageProbeIntervalMs ?? 2_000, timeoutMs: 6_000 },
    );
    logReadiness(this.readiness, options.logger);
  }

  /**
   * Checks the database against the issuer key, registers the services and
   * binds. Plaintext is refused on a non-loopback host.
   *
   * @param address `host:port` (port 0: any free port)
   * @param tlsFiles certificate chain and key for TLS 1.3; plaintext when omitted
   * @returns the bound host and port
   * @throws RpcError `failed_precondition` (database not initialised, issuer key mismatch,
   *   plaintext on a public address), `unavailable` (cannot bind)
   */
  async start(address: string, tlsFiles?: TlsFiles): Promise<{ host: string; port: number }> {
    const { host, port } = parseHostPort(address);
    if (tlsFiles === undefined && !isLoopbackHost(host)) {
      throw new RpcError('failed_precondition', `refusing to serve plaintext on non-loopback address ${host}: give --tls-cert and --tls-key`);
    }
    const { store, logger } = this.#o;
    this.#registryId = await store.registryId();
    await this.#issuers.load();

    const onCallEnd = (r: CallRecord): void => {
      this.#serverMetrics.onCallEnd(r);
      this.#logCall(r);
    };
    addService(this.#server, RegistryService, this.#implementation(), { onCallEnd });
    const services = ['', RegistryService.typeName];
    this.#health = addHealthService(this.#server, Object.fromEntries(services.map((name) => [name, ServingStatus.NOT_SERVING])), { onCallEnd });
    await this.readiness.start();
    this.readiness.bindHealth(this.#health, services);
    addReflectionService(this.#server, [RegistryService, Health]);

    this.#unlisten = await store.db.listen(REVOCATION_CHANNEL, () => this.#notifier.notify());
    this.#unlistenBundle = await store.db.listen(TRUST_BUNDLE_CHANNEL, () => this.#issuers.schedule());
    this.#lifecycleTimer = setInterval(() => this.#issuers.schedule(), LIFECYCLE_INTERVAL_MS);
    this.#lifecycleTimer.unref();
    this.#pruneTimer = setInterval(() => {
      store.prune(Date.now(), this.#o.settings.maxClockSkewMs).catch((error: unknown) => logger.warn({ err: error }, 'pruning expired challenges and nonces failed'));
    }, 60_000);
    this.#pruneTimer.unref();

    let credentials: ServerCredentials;
    if (tlsFiles === undefined) {
      credentials = ServerCredentials.createInsecure();
    } else {
      // TLS 1.3 only: this process serves nothing else, so the process-wide floor is the server's.
      tls.DEFAULT_MIN_VERSION = 'TLSv1.3';
      credentials = ServerCredentials.createSsl(null, [{ cert_chain: tlsFiles.certChain, private_key: tlsFiles.privateKey }], false);
    }
    const bound = await new Promise<number>((resolve, reject) =>
      this.#server.bindAsync(formatHostPort({ host, port }), credentials, (error, p) =>
        error ? reject(new RpcError('unavailable', `cannot listen on ${formatHostPort({ host, port })}: ${error.message}`, { cause: error })) : resolve(p),
      ),
    );
    return { host: host.includes(':') ? `[${host}]` : host, port: bound };
  }

  /**
   * Stops accepting calls, ends the revocation watches at once (`unavailable`: streams this server owns, which
   * never end by themselves — they would hold the shutdown for the whole grace period), waits up to `graceMs` for
   * calls in flight, then closes.
   */
  async stop(graceMs = 5_000): Promise<void> {
    this.#stopping.abort();
    this.readiness.shutdown();
    this.#serverMetrics.close();
    this.#health?.shutdown();
    if (this.#pruneTimer !== undefined) clearInterval(this.#pruneTimer);
    if (this.#lifecycleTimer !== undefined) clearInterval(this.#lifecycleTimer);
    await this.#issuers.stop(); // no new lifecycle step; the running one finishes
    await this.#unlisten?.().catch(() => undefined);
    await this.#unlistenBundle?.().catch(() => undefined);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, graceMs);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.#issuers.wipe(); // every call has ended: the issuer keys are not needed in memory any more
  }

  /** The key id this process signs with now. */
  get activeKeyId(): Uint8Array | undefined {
    return this.#issuers.activeKeyId;
  }

  /** The trust bundle version this process last saw. */
  get trustBundleVersion(): number {
    return this.#issuers.bundleVersion;
  }

  #logCall(r: CallRecord): void {
    const fields = { method: r.path, peer: r.peer, grpc_code: r.grpcCode, code: r.code ?? 'ok', duration_ms: Math.round(r.durationMs * 10) / 10 };
    if (r.code === 'internal' || (r.code === 'unavailable' && this.readiness.ready)) this.#o.logger.error({ ...fields, err: r.error?.cause ?? r.error }, 'call failed');
    else if (r.code === 'unavailable') this.#o.logger.warn({ ...fields, detail: r.error?.localDetails }, 'call failed: not ready'); // the storage check already says why
    else if (r.path.startsWith(HEALTH_PATH_PREFIX)) this.#o.logger.debug({ ...fields, detail: r.error?.localDetails }, 'health call');
    else if (r.code !== undefined) this.#o.logger.info({ ...fields, detail: r.error?.localDetails }, 'call refused');
    else this.#o.logger.info(fields, 'call');
  }

  /** The RegistryService: every handler group over one context. */
  #implementation(): ServiceImplementation<typeof RegistryService> {
    const { crypto, store, settings, logger, keyFiles } = this.#o;
    const registryId = this.#registryId;
    const auth = new Authoriser({ crypto, store, settings, logger, metrics: this.metrics, registryId, ...(this.#o.agentReadRate === undefined ? {} : { agentReadRate: this.#o.agentReadRate }) });
    const watchLimits = {
      total: this.#o.maxRevocationWatches ?? DEFAULT_MAX_REVOCATION_WATCHES,
      perAddress: this.#o.maxRevocationWatchesPerAddress ?? DEFAULT_MAX_REVOCATION_WATCHES_PER_ADDRESS,
    };
    const c: ServiceContext = { crypto, store, settings, logger, keyFiles, metrics: this.metrics, registryId, issuers: this.#issuers, auth, notifier: this.#notifier, watchLimits, stopping: this.#stopping.signal };
    return {
      ...certificateHandlers(c),
      ...directoryHandlers(c),
      ...revocationHandlers(c),
      ...trustBundleHandlers(c),
      ...joinTokenHandlers(c),
      ...operatorHandlers(c),
    };
  }
}
