/**
 * The gateway's gRPC server: parley.v1.AgentGatewayService, the shared-memory
 * store parley.v1.MemoryService (@parley/memory-server, docs/PROTOCOL.md §18),
 * grpc.health.v1 and server reflection, on grpc-js. Plaintext is served only
 * on loopback; anything else needs TLS (1.3 minimum).
 *
 * Health reflects readiness (@parley/ops Readiness): every service is
 * NOT_SERVING while a readiness check fails — `revocation` (the copy is older
 * than its freshness bound: agents are refused, fail closed) or `storage`
 * (the database does not answer a probe) — and SERVING again by itself once
 * they pass. Other components add their own checks through
 * `RunningGateway.readiness` (a trust-bundle follower: `trust_bundle`). The
 * operations listener serves the same verdict at `/readyz`, liveness at
 * `/healthz`, and Prometheus metrics at `/metrics`.
 */
import tls from 'node:tls';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { AuditLog, openPostgresStore, writerKeyId, type AuditStore } from '@parley/audit';
import { toHex, utf8, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { AgentGatewayService, Health, MemoryService } from '@parley/proto';
import { MEMORY_MIGRATIONS, MemoryStore, migrateMemorySchema, type MemoryQuotas } from '@parley/memory-server';
import { MAX_SEGMENT_CIPHERTEXT_BYTES } from '@parley/memory';
import { RpcError, ServingStatus, addHealthService, addReflectionService, addService, isLoopbackHost, type CallRecord } from '@parley/rpc';
import { openDatabase, type Database, type DatabaseOptions } from '@parley/db';
import { Readiness, ServerMetrics, buildInfo, logReadiness, startOpsServer, type OpsServer } from '@parley/ops';
import { Gateway, type GatewayOptions } from './gateway.js';
import { Cluster, MAX_PRESENCE_ENTRIES, forwardChannel, newInstanceId } from './cluster.js';
import { GATEWAY_MIGRATIONS, MAILBOX_CHANNEL, Mailbox, PRESENCE_CHANNEL, migrateGatewaySchema } from './mailbox.js';
import type { RevocationSource } from './metrics.js';

/** The program name in `parley_build_info` and logs. */
export const GATEWAY_PROGRAM = 'parley-gateway';
/** How often the cross-instance LISTEN connection must answer a query to count as up, ms. */
export const LISTEN_PROBE_MS = 5_000;
/** How long that query may take before the connection is dropped and made again, ms. */
export const LISTEN_PROBE_TIMEOUT_MS = 5_000;
/** Idle time after which the gateway pings an agent's connection (grpc keepalive), ms. */
export const STREAM_KEEPALIVE_MS = 30_000;
/** How long a keepalive ping may go unanswered before the connection and its streams are dropped, ms. */
export const STREAM_KEEPALIVE_TIMEOUT_MS = 10_000;

/** Settings of {@link startGateway}: the Gateway's, plus where and how to listen. */
export interface StartGatewayOptions extends Omit<GatewayOptions, 'mailbox' | 'audit'> {
  /**
   * Where the mailbox, agent directory and audit log live: `{ url }` PostgreSQL
   * (optionally in `schema`), `{ dataDir }` PGlite on disk. Default: PGlite in
   * memory (tests; nothing survives a restart).
   */
  readonly database?: DatabaseOptions;
  /** Mailbox TTL, ms; at most `receiverMaxAgeMs`. Default 1 h. */
  readonly mailboxTtlMs?: number;
  /**
   * The audit writer's Ed25519 key. Default: generated at start (its public key
   * is logged) — which only works on an empty audit table, since a log signed
   * by another key is not extended (list old writer keys in `auditTrustedKeys`).
   * A generated key is wiped when the gateway closes; a given one stays the
   * caller's to wipe (the CLI wipes the one it loaded once the gateway closed).
   */
  readonly auditKey?: Ed25519KeyPair;
  /** Public keys of other writers sharing the audit table (other instances, earlier keys). */
  readonly auditTrustedKeys?: readonly Uint8Array[];
  /**
   * Audit table name (optionally schema-qualified). Default: one chain per
   * instance, `gateway_audit_<key id>` named after the audit key (§10.9), listed
   * in `gateway_audit_chains`, so instances sharing a database never contend on one chain.
   */
  readonly auditTable?: string;
  /**
   * The operations listener (`GET /metrics`, `/healthz`, `/readyz`), default
   * 127.0.0.1 on a free port; `false`: none (gRPC health still follows readiness).
   */
  readonly metrics?: false | { readonly host?: string; readonly port?: number };
  /**
   * Also export prom-client's process and Node.js metrics (`process_*`,
   * `nodejs_*`). Default false: they belong to a process, not to one gateway
   * (the CLI turns them on; a test running several gateways leaves them off).
   */
  readonly processMetrics?: boolean;
  /** How often the `storage` readiness check probes the database, ms. Default 2 000 (timeout 5 000). */
  readonly storageProbeIntervalMs?: number;
  /** Host to bind. Default 127.0.0.1. A non-loopback host requires `tls`. */
  readonly host?: string;
  /** Port; 0 (default) picks a free one. */
  readonly port?: number;
  /** PEM certificate chain and key: serve TLS 1.3 instead of plaintext; with `clientCa`, require client certificates it signed (mTLS). */
  readonly tls?: { readonly certChain: Buffer; readonly privateKey: Buffer; readonly clientCa?: Buffer };
  /**
   * Cross-instance routing over PostgreSQL (default on with a `database.url`):
   * every instance LISTENs on `parley_mailbox` and records a heartbeat; while
   * another instance is alive, each batch of stored items for agents not
   * connected here carries one NOTIFY per distinct recipient (never one per item,
   * none with a single instance). Ignored on PGlite (one instance).
   */
  readonly crossInstance?: boolean;
  /** Heartbeat period of cross-instance routing, ms. Default 2 000 (an instance is gone after 3 missed). */
  readonly heartbeatMs?: number;
  /** How long `close()` waits for calls to finish before forcing, ms. Default 5 000. */
  readonly shutdownGraceMs?: number;
  /**
   * Connection keepalive (tests): `timeMs` idle before a ping, `timeoutMs` for its answer. Default
   * {@link STREAM_KEEPALIVE_MS} and {@link STREAM_KEEPALIVE_TIMEOUT_MS}.
   */
  readonly keepalive?: { readonly timeMs: number; readonly timeoutMs: number };
  /**
   * The LISTEN connection's liveness probe (tests): a query every `everyMs`, the connection made again when one
   * takes longer than `timeoutMs`. Default {@link LISTEN_PROBE_MS} and {@link LISTEN_PROBE_TIMEOUT_MS}.
   */
  readonly listenProbe?: { readonly everyMs: number; readonly timeoutMs: number };
  /**
   * The shared-memory store (parley.v1.MemoryService, §18) in the same database and audit log:
   * on by default; `false` serves none.
   */
  readonly memory?: false | { readonly quotas?: Partial<MemoryQuotas>; readonly sweepIntervalMs?: number; readonly rateLimit?: { readonly ratePerSecond: number; readonly burst: number } };
}

/** A running gateway. */
export interface RunningGateway {
  /** `host:port` as bound. */
  readonly address: string;
  readonly port: number;
  readonly gateway: Gateway;
  readonly mailbox: Mailbox;
  readonly audit: AuditLog;
  readonly database: Database;
  /** The shared-memory store, unless `memory: false`. */
  readonly memory: MemoryStore | undefined;
  /** This instance's id among those sharing the database (`gateway_instances`), when cross-instance routing is on. */
  readonly instanceId: string | undefined;
  /** `http://host:port/metrics`, unless the operations listener is off. */
  readonly metricsUrl: string | undefined;
  /** `http://host:port` of the operations listener (`/healthz`, `/readyz`, `/metrics`), unless it is off. */
  readonly opsUrl: string | undefined;
  /**
   * The readiness checks behind gRPC health and `/readyz`: `revocation`,
   * `storage`, and whatever other components add (`set(name, { ok, detail })`
   * or `addProbe(name, fn)`; e.g. a trust-bundle follower's `trust_bundle`).
   */
  readonly readiness: Readiness;
  /** GoAway `shutting_down` to every stream, health NOT_SERVING, then a graceful shutdown with a timeout. */
  close(): Promise<void>;
}

/**
 * A fresh PGlite directory starts as a copy of a cached cluster that already holds the gateway's (and the
 * memory store's) migrations, named after a hash of them (@parley/db `prepared`); PostgreSQL is unchanged.
 */
function withPreparedTemplate(options: StartGatewayOptions): DatabaseOptions | undefined {
  const database = options.database;
  if (database?.dataDir === undefined || database.url !== undefined) return database;
  const memory = options.memory !== false;
  const digest = toHex(options.crypto.blake3(utf8(JSON.stringify([GATEWAY_MIGRATIONS, memory ? MEMORY_MIGRATIONS : []]))).subarray(0, 8));
  return {
    ...database,
    prepared: {
      name: `gateway-${memory ? 'memory-' : ''}${digest}`,
      prepare: async (fresh) => {
        await migrateGatewaySchema(fresh);
        if (memory) await migrateMemorySchema(fresh);
      },
    },
  };
}

/** Whether a revocation checker can tell its freshness (a MemoryRevocationSet can). */
function revocationSource(checker: unknown): (RevocationSource & { isFresh(nowMs: number): boolean; readonly failOpen?: boolean }) | undefined {
  const c = checker as { isFresh?: unknown; maxAgeMs?: unknown; version?: unknown };
  return typeof c.isFresh === 'function' && typeof c.maxAgeMs === 'number' && typeof c.version === 'number'
    ? (checker as RevocationSource & { isFresh(nowMs: number): boolean; readonly failOpen?: boolean })
    : undefined;
}

/**
 * Starts a gateway server.
 * @throws RpcError `failed_precondition` (plaintext on a non-loopback host), `unavailable` (cannot bind)
 */
export async function startGateway(options: StartGatewayOptions): Promise<RunningGateway> {
  const host = options.host ?? '127.0.0.1';
  if (options.tls === undefined && !isLoopbackHost(host)) {
    throw new RpcError('failed_precondition', `refusing to serve plaintext on non-loopback address ${host}: configure TLS`);
  }
  const { logger } = options;
  const database = await openDatabase(withPreparedTemplate(options));
  let audit: AuditLog | undefined;
  let metrics: OpsServer | undefined;
  let serverMetrics: ServerMetrics | undefined;
  const readiness = new Readiness(options.clock === undefined ? {} : { clock: options.clock });
  let listener: MailboxListener | undefined;
  let memory: MemoryStore | undefined;
  let heartbeat: Heartbeat | undefined;
  let instanceId: string | undefined;
  /** The audit key generated here (no `auditKey` given): wiped once the audit log is closed. */
  let ownKey: Ed25519KeyPair | undefined;
  let gateway: Gateway;
  let mailbox: Mailbox;
  try {
    mailbox = await Mailbox.open(database, { ...(options.mailboxTtlMs === undefined ? {} : { ttlMs: options.mailboxTtlMs }), ...(options.clock === undefined ? {} : { clock: options.clock }) });
    const writer = options.auditKey ?? (ownKey = options.crypto.ed25519.generateKeyPair());
    if (options.auditKey === undefined) logger.warn({ audit_public_key: toHex(writer.publicKey) }, 'no audit key configured: generated one for this run');
    const auditTable = options.auditTable ?? gatewayAuditTable(options.crypto, writer.publicKey);
    if (options.auditTable === undefined) {
      await database.query('INSERT INTO gateway_audit_chains (table_name, writer_public_key, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (table_name) DO NOTHING', [
        auditTable,
        Buffer.from(writer.publicKey),
        Date.now(),
      ]);
    }
    const metricsHolder: { batch?: (n: number) => void } = {};
    const store = countBatches(await openPostgresStore(options.crypto, database.sqlClient, { table: auditTable }), (n) => metricsHolder.batch?.(n));
    // No proofs here (verifiers read the chain from the table, `parley-audit`): the log keeps its current root
    // only, so the gateway's memory does not grow with its chain (≈ 64 bytes an entry with proofs).
    // Opened from its latest signed checkpoint (§9.6): a restart reads the entries written since, not the whole chain.
    audit = await AuditLog.open(options.crypto, { store, writer, trustedKeys: [...(options.auditTrustedKeys ?? [])], proofs: false });
    const opening = audit.opening;
    if (opening.checkpointRefused !== undefined) {
      logger.warn({ event: 'security', stage: 'audit', code: 'bad_checkpoint', table: auditTable, entries_read: opening.entriesRead }, `audit checkpoint refused (${opening.checkpointRefused}): every entry was read and verified instead`);
    }
    logger.info({ table: auditTable, entries: audit.size, from_checkpoint: opening.checkpointSize, entries_read: opening.entriesRead }, 'audit log opened');
    const crossInstance = database.engine === 'postgres' && options.crossInstance !== false;
    gateway = new Gateway({ ...options, mailbox, audit });
    const g = gateway;
    metricsHolder.batch = (n) => g.metrics.batch.observe({ kind: 'audit' }, n);
    if (crossInstance && options.database?.url !== undefined) {
      const cluster = new Cluster(newInstanceId());
      instanceId = cluster.instanceId;
      const listening = await listenForMailbox(options.database.url, gateway, mailbox, cluster, logger, options.listenProbe ?? { everyMs: LISTEN_PROBE_MS, timeoutMs: LISTEN_PROBE_TIMEOUT_MS });
      listener = listening;
      gateway.joinCluster(cluster);
      heartbeat = startHeartbeat(mailbox, gateway, cluster, listening, options.heartbeatMs ?? 2_000, logger);
      await heartbeat.first;
    }
    if (options.memory !== false) {
      const box = mailbox;
      memory = await MemoryStore.open({
        crypto: options.crypto,
        database,
        audit,
        serviceId: options.gatewayId,
        trustBundle: options.trustBundle,
        revocations: options.revocations,
        logger,
        directory: (agentId) => box.lastCertificate(agentId),
        ...(options.clock === undefined ? {} : { clock: options.clock }),
        ...options.memory,
      });
    }
    addReadinessChecks(readiness, { database, revocations: options.revocations, clock: options.clock ?? Date.now, storageProbeIntervalMs: options.storageProbeIntervalMs ?? 2_000 });
    const revocationFigures = revocationSource(options.revocations);
    if (revocationFigures !== undefined) gateway.metrics.watchRevocations(revocationFigures);
    serverMetrics = new ServerMetrics({
      registry: gateway.metrics.registry,
      build: buildInfo(GATEWAY_PROGRAM, new URL('../package.json', import.meta.url)),
      processMetrics: options.processMetrics === true,
      database,
      readiness,
    });
    logReadiness(readiness, logger);
    await readiness.start();
    if (options.metrics !== false) {
      metrics = await startOpsServer({
        ...(options.metrics ?? {}),
        metrics: gateway.metrics.registry,
        readiness,
        onRequest: (r) => logger.debug({ method: r.method, path: r.path, status: r.status, remote: r.remote, duration_ms: Math.round(r.durationMs * 10) / 10 }, 'ops request'),
      }).catch((cause: unknown) => {
        throw new RpcError('unavailable', cause instanceof Error ? cause.message : String(cause), { cause });
      });
    }
    logger.info(
      { database: database.engine, location: database.location, mailbox_ttl_ms: mailbox.ttlMs, audit_public_key: toHex(writer.publicKey), metrics: metrics?.metricsUrl },
      'gateway storage ready',
    );
  } catch (error) {
    readiness.close();
    serverMetrics?.close();
    await memory?.close();
    await heartbeat?.close();
    await listener?.close();
    await audit?.close().catch(() => undefined);
    ownKey?.secretKey.wipe();
    await database.close().catch(() => undefined);
    throw error;
  }

  const server = new Server({
    // Room above the gateway's own limit, so oversize items get a `too_large` Rejected, not a dead stream.
    'grpc.max_receive_message_length': Math.max(Math.min(2 * gateway.maxFrameBytes + 65_536, 64 * 1024 * 1024), memory === undefined ? 0 : MAX_SEGMENT_CIPHERTEXT_BYTES + 65_536),
    'grpc.keepalive_permit_without_calls': 1,
    // Pings each connection after STREAM_KEEPALIVE_MS without frames and drops one that does not answer within
    // STREAM_KEEPALIVE_TIMEOUT_MS: a connection gone silent (a dead peer, a half-open path after a network cut)
    // ends its streams within about 40 s instead of the kernel's retransmission timeout (about 15 min). Until
    // then such a stream is "live" here: items for its agent are written to it and held, and an agent that
    // reconnected to another instance meanwhile gets them only once the stream ends (spilled, the other
    // instances woken, §10.8).
    'grpc.keepalive_time_ms': options.keepalive?.timeMs ?? STREAM_KEEPALIVE_MS,
    'grpc.keepalive_timeout_ms': options.keepalive?.timeoutMs ?? STREAM_KEEPALIVE_TIMEOUT_MS,
  });
  const callMetrics = serverMetrics;
  const onCallEnd = (r: CallRecord): void => {
    callMetrics.onCallEnd(r);
    const fields = { method: r.path, peer: r.peer, grpc_code: r.grpcCode, code: r.code ?? 'ok', duration_ms: Math.round(r.durationMs * 10) / 10 };
    if (r.code === 'internal') logger.error({ ...fields, err: r.error?.cause ?? r.error }, 'call failed');
    else if (r.path.startsWith(HEALTH_PATH_PREFIX)) logger.debug({ ...fields, detail: r.error?.details }, 'health call'); // probes: every few seconds, forever
    else if (r.code !== undefined) logger.info({ ...fields, detail: r.error?.details }, 'call refused');
    else logger.info(fields, 'call');
  };
  addService(server, AgentGatewayService, gateway, { onCallEnd });
  if (memory !== undefined) addService(server, MemoryService, memory, { onCallEnd });
  const services = ['', AgentGatewayService.typeName, ...(memory === undefined ? [] : [MemoryService.typeName])];
  const health = addHealthService(server, Object.fromEntries(services.map((name) => [name, ServingStatus.NOT_SERVING])), { onCallEnd });
  readiness.bindHealth(health, services);
  addReflectionService(server, memory === undefined ? [AgentGatewayService, Health] : [AgentGatewayService, MemoryService, Health]);

  let credentials: ServerCredentials;
  if (options.tls === undefined) {
    credentials = ServerCredentials.createInsecure();
  } else {
    // TLS 1.3 only: the process-wide floor is this server's.
    tls.DEFAULT_MIN_VERSION = 'TLSv1.3';
    const clientCa = options.tls.clientCa ?? null;
    credentials = ServerCredentials.createSsl(clientCa, [{ cert_chain: options.tls.certChain, private_key: options.tls.privateKey }], clientCa !== null);
  }
  const bindHost = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  const auditLog = audit;
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${bindHost}:${options.port ?? 0}`, credentials, (error, p) =>
        error ? reject(new RpcError('unavailable', `cannot listen on ${bindHost}:${options.port ?? 0}: ${error.message}`, { cause: error })) : resolve(p),
      ),
    );
  } catch (error) {
    readiness.close();
    serverMetrics.close();
    await gateway.close();
    await memory?.close();
    await heartbeat?.close();
    await listener?.close();
    await metrics?.close();
    await auditLog.close().catch(() => undefined);
    ownKey?.secretKey.wipe();
    await database.close().catch(() => undefined);
    throw error;
  }
  logger.info({ address: `${bindHost}:${port}`, tls: options.tls !== undefined, instance: instanceId, ready: readiness.ready, failing: readiness.report().failing }, 'gateway listening');

  let closing: Promise<void> | undefined;
  return {
    address: `${bindHost}:${port}`,
    port,
    gateway,
    mailbox,
    audit: auditLog,
    database,
    memory,
    instanceId,
    metricsUrl: metrics?.metricsUrl,
    opsUrl: metrics?.baseUrl,
    readiness,
    close() {
      closing ??= (async () => {
        readiness.shutdown();
        health.shutdown();
        const drained = gateway.close();
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, options.shutdownGraceMs ?? 5_000);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        await drained;
        // Leave the other instances (they stop forwarding here: this instance's presence is cleared and announced),
        // then stop hearing forwards; what was heard is stored by the close below.
        await heartbeat?.close();
        await listener?.close();
        await gateway.close(); // what the streams' ends queued (spills) is written before the database closes
        await memory?.close();
        await metrics?.close();
        serverMetrics.close();
        await auditLog.close().catch((err: unknown) => logger.error({ err }, 'closing the audit log failed'));
        ownKey?.secretKey.wipe(); // after the close: it signs the shutdown checkpoint
        await database.close().catch((err: unknown) => logger.error({ err }, 'closing the database failed'));
      })();
      return closing;
    },
  };
}

/** Calls of grpc.health.v1.Health (logged at debug level: probes come every few seconds). */
const HEALTH_PATH_PREFIX = '/grpc.health.v1.Health/';

/**
 * The gateway's own readiness checks:
 * - `revocation` (when the checker can tell its freshness, as a MemoryRevocationSet can): fails while the copy
 *   is older than its bound — agents are refused then (fail closed); with fail-open it passes and says so;
 * - `storage`: `SELECT 1` within 5 s every `storageProbeIntervalMs`.
 */
function addReadinessChecks(
  readiness: Readiness,
  o: { readonly database: Database; readonly revocations: unknown; readonly clock: () => number; readonly storageProbeIntervalMs: number },
): void {
  const revocations = revocationSource(o.revocations);
  if (revocations !== undefined) {
    readiness.addProbe(
      'revocation',
      () => {
        const now = o.clock();
        const last = revocations.lastUpdatedMs;
        const age = last === undefined ? undefined : Math.max(0, Math.round((now - last) / 1000));
        const bound = Math.round(revocations.maxAgeMs / 1000);
        if (revocations.isFresh(now)) return { ok: true, detail: `revocation list version ${revocations.version}, ${age ?? 0} s old (bound ${bound} s)` };
        const why = last === undefined ? 'revocation list not loaded yet' : `revocation list version ${revocations.version} is ${age} s old (bound ${bound} s): registry unreachable?`;
        return revocations.failOpen === true ? { ok: true, detail: `${why}; serving anyway (revocation_fail_open)` } : { ok: false, detail: `${why}; agents are refused (fail closed)` };
      },
      { intervalMs: 500, timeoutMs: 1_000 },
    );
  }
  readiness.addProbe(
    'storage',
    async () => {
      await o.database.ping(5_000);
      return { ok: true, detail: `${o.database.engine} answers` };
    },
    { intervalMs: o.storageProbeIntervalMs, timeoutMs: 6_000 },
  );
}

/**
 * The audit table of one writer key: `gateway_audit_<key id, hex>` (§10.9).
 * Each instance (each audit key) keeps its own chain, so instances sharing a
 * database never contend on one chain's tip; `gateway_audit_chains` lists them.
 */
export function gatewayAuditTable(crypto: ParleyCrypto, publicKey: Uint8Array): string {
  return `gateway_audit_${toHex(writerKeyId(crypto, publicKey))}`;
}

/** Wraps an audit store to report the size of each group write. */
function countBatches(store: AuditStore, onBatch: (n: number) => void): AuditStore {
  const appendMany = store.appendMany?.bind(store);
  return Object.assign(Object.create(store) as AuditStore, {
    append: (entry: Parameters<AuditStore['append']>[0]) => {
      onBatch(1);
      return store.append(entry);
    },
    ...(appendMany === undefined
      ? {}
      : {
          appendMany: (entries: Parameters<NonNullable<AuditStore['appendMany']>>[0], notifications?: Parameters<NonNullable<AuditStore['appendMany']>>[1]) => {
            onBatch(entries.length);
            return appendMany(entries, notifications);
          },
        }),
    ...(store.notify === undefined ? {} : { notify: store.notify.bind(store) }),
    ...(store.saveCheckpoint === undefined ? {} : { saveCheckpoint: store.saveCheckpoint.bind(store) }),
    ...(store.checkpoints === undefined ? {} : { checkpoints: store.checkpoints.bind(store) }),
    size: () => store.size(),
    read: (from: number, to: number) => store.read(from, to),
    readEncoded: (from: number, to: number) => store.readEncoded(from, to),
    close: () => store.close(),
  });
}

interface Heartbeat {
  readonly first: Promise<void>;
  close(): Promise<void>;
}

/**
 * Records this instance in `gateway_instances` every `periodMs` and learns
 * which others are alive (one statement each time): items are forwarded only to
 * those (./cluster.ts), and while there are any, stored items for agents not
 * connected here are announced (batched NOTIFY). While this instance's LISTEN
 * connection is down it does not record itself (it would hear no forward), so
 * the others stop forwarding to it within three periods. For the first beats
 * after another instance appears, this one re-drains its own agents' mailboxes,
 * since the others had not been notifying it yet.
 */
function startHeartbeat(mailbox: Mailbox, gateway: Gateway, cluster: Cluster, listener: MailboxListener, periodMs: number, logger: StartGatewayOptions['logger']): Heartbeat {
  const instanceId = cluster.instanceId;
  let beats = 0;
  let stopped = false;
  const beat = async (): Promise<void> => {
    try {
      const others = await mailbox.heartbeat(instanceId, 3 * periodMs, listener.listening);
      cluster.setLive(others);
      const was = gateway.othersListening;
      gateway.othersListening = others.length > 0;
      if (others.length > 0 && (!was || beats <= 3)) gateway.pumpAll();
      beats++;
    } catch (err) {
      // Unknown: announce to be safe (a NOTIFY nobody hears costs little); forwards go on to the instances last seen.
      gateway.othersListening = true;
      logger.warn({ err }, 'instance heartbeat failed');
    }
  };
  const first = beat();
  const timer = setInterval(() => void beat(), periodMs);
  timer.unref();
  return {
    first,
    async close() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      cluster.setLive([]);
      await mailbox.leave(instanceId).catch(() => undefined);
    },
  };
}

interface MailboxListener {
  /** The LISTEN connection is up (and the presence was read after it). */
  readonly listening: boolean;
  close(): Promise<void>;
}

/**
 * A dedicated connection that LISTENs on {@link MAILBOX_CHANNEL} (wakes the gateway for recipients connected
 * here), {@link PRESENCE_CHANNEL} (where agents are connected) and this instance's forward channel (items
 * forwarded here, ./cluster.ts). Reconnects with backoff; after every (re)connect the presence is read again
 * (announcements heard meanwhile are applied after the read, in order) and, after a reconnect, every connected
 * agent's mailbox is drained again, since notifications sent meanwhile are lost (forwards lost so are resent by
 * their senders' outboxes, §17.2). Only the current connection is heeded: one that failed is ended, and nothing
 * it still emits is acted on.
 */
async function listenForMailbox(
  url: string,
  gateway: Gateway,
  mailbox: Mailbox,
  cluster: Cluster,
  logger: StartGatewayOptions['logger'],
  probeEvery: { readonly everyMs: number; readonly timeoutMs: number },
): Promise<MailboxListener> {
  const { default: pgModule } = await import('pg');
  const forwards = forwardChannel(cluster.instanceId);
  let closed = false;
  let client: InstanceType<typeof pgModule.Client> | undefined;
  let retry: NodeJS.Timeout | undefined;
  let backoff = 250;
  const connect = async (first: boolean): Promise<void> => {
    const c = new pgModule.Client({ connectionString: url, keepAlive: true, keepAliveInitialDelayMillis: 10_000, connectionTimeoutMillis: 5000 });
    let current = false;
    let failed = false;
    c.on('notification', (n) => {
      if (failed || closed) return;
      const payload = n.payload;
      if (payload === undefined || payload === '') return;
      if (n.channel === forwards) gateway.forwarded(payload);
      else if (n.channel === PRESENCE_CHANNEL) cluster.presenceNotified(payload);
      else if (n.channel === MAILBOX_CHANNEL) gateway.mailboxNotified(payload);
    });
    c.on('error', (err) => {
      if (failed) return;
      failed = true;
      void c.end().catch(() => undefined);
      if (!current) return; // still connecting: the caller sees the failure
      logger.warn({ err }, 'mailbox LISTEN connection lost: reconnecting');
      schedule();
    });
    try {
      await c.connect();
      cluster.beginLoad(); // announcements heard from now on wait for the read below
      await c.query(`LISTEN ${MAILBOX_CHANNEL}; LISTEN ${PRESENCE_CHANNEL}; LISTEN ${forwards}`);
      cluster.load(await mailbox.presence(cluster.instanceId, MAX_PRESENCE_ENTRIES));
      if (failed) throw new Error('the LISTEN connection failed while it was being set up');
    } catch (error) {
      failed = true;
      cluster.endLoad();
      await c.end().catch(() => undefined);
      throw error;
    }
    current = true;
    client = c;
    backoff = 250;
    if (!first) gateway.pumpAll();
    // A connection that went silent (a failover or a network cut without a reset) raises no error until the
    // kernel gives up on it (TCP keepalive at its defaults: about 11 min), and meanwhile this instance would go
    // on recording heartbeats while hearing nothing: every forward to it lost. So the connection must answer a
    // query every probe period, or it is dropped and made again (no heartbeat is recorded while it is down, so
    // the others stop forwarding here within three periods, and every stream's mailbox is drained again after).
    const probe = setInterval(() => {
      if (failed || closed || client !== c) {
        clearInterval(probe);
        return;
      }
      const deadline = setTimeout(() => {
        if (failed || closed || client !== c) return;
        failed = true;
        clearInterval(probe);
        logger.warn({ timeout_ms: probeEvery.timeoutMs }, 'mailbox LISTEN connection does not answer: reconnecting');
        (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
        void c.end().catch(() => undefined);
        schedule();
      }, probeEvery.timeoutMs);
      deadline.unref();
      // A failed connection reports itself ('error' above).
      c.query('SELECT 1').then(
        () => clearTimeout(deadline),
        () => clearTimeout(deadline),
      );
    }, probeEvery.everyMs);
    probe.unref();
  };
  const schedule = (): void => {
    if (closed || retry !== undefined) return;
    client = undefined;
    retry = setTimeout(() => {
      retry = undefined;
      connect(false).catch((err: unknown) => {
        logger.warn({ err }, 'mailbox LISTEN reconnect failed');
        backoff = Math.min(backoff * 2, 10_000);
        schedule();
      });
    }, backoff);
    retry.unref();
  };
  try {
    await connect(true);
  } catch (cause) {
    closed = true;
    clearTimeout(retry);
    throw new RpcError('unavailable', 'cannot LISTEN for cross-instance mailbox notifications', { cause });
  }
  return {
    get listening() {
      return client !== undefined;
    },
    async close() {
      closed = true;
      clearTimeout(retry);
      await client?.end().catch(() => undefined);
      client = undefined;
    },
  };
}
