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
 */
import tls from 'node:tls';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { ParleyCrypto } from '@parley/crypto-core';
import { fromBase64Url, toBase64Url, toHex, utf8 } from '@parley/crypto-core';
import {
  assertAgentId,
  assertAgentType,
  assertCapability,
  createIssuerKey,
  decodeTrustBundleDocument,
  isIdentityError,
  keyId as computeKeyId,
  normaliseCapabilities,
  MAX_REVOCATION_REASON_LENGTH,
  type IssuerKey,
  revocationHeadLayout,
} from '@parley/identity';
import {
  AgentStatus,
  ChallengePurpose,
  Health,
  IssuerKeyState,
  RegistryService,
  RevocationReason,
  type AgentRecordSchema,
  type JoinTokenSchema,
  type MessageInitShape,
  type RevocationListEntrySchema,
  type SignedRevocationHeadSchema,
} from '@parley/proto';
import {
  addHealthService,
  addReflectionService,
  addService,
  formatHostPort,
  isLoopbackHost,
  parseHostPort,
  RpcError,
  ServingStatus,
  type CallContext,
  type CallRecord,
  type HealthReporter,
  type ServiceImplementation,
} from '@parley/rpc';
import { Readiness, ServerMetrics, buildInfo, logReadiness } from '@parley/ops';
import {
  CHALLENGE_BYTES,
  JOIN_TOKEN_ID_BYTES,
  JOIN_TOKEN_SECRET_BYTES,
  enrolmentLayout,
  formatJoinToken,
  joinTokenHash,
  parseAgentMetadata,
  verifyAgentRequest,
  parseOperatorMetadata,
  registrationProofLayout,
  rotationAuthorisationLayout,
  rotationProofLayout,
  verifyOperatorRequest,
} from '@parley/protocol';
import type { Logger } from 'pino';
import type { RegistrySettings } from './config.js';
import type { IssuerKeyFiles } from './issuer-keys.js';
import { RegistryMetrics } from './metrics.js';
import { REVOCATION_CHANNEL, TRUST_BUNDLE_CHANNEL, type AgentRow, type IssuerRow, type JoinTokenRow, type RegistryStore, type RevocationRow } from './store.js';

/** Largest request the server accepts (every registry request is far smaller). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Most agents one ListAgents page returns. */
export const MAX_PAGE_SIZE = 500;
/** Default ListAgents page size. */
export const DEFAULT_PAGE_SIZE = 50;
/** Most revocation entries one GetRevocationList response or watch batch carries. */
export const MAX_LIST_ENTRIES = 10_000;
/**
 * Most encoded entry bytes one GetRevocationList response carries (about 1 MiB,
 * far below the 4 MiB a client accepts by default): with long reasons the
 * count limit alone would not keep a response receivable. Consumers page on
 * `current_version` anyway.
 */
export const MAX_LIST_BYTES = 1024 * 1024;
const WATCH_BATCH = 256;
/** Fallback poll of a watch, in case a notification is lost (a dropped LISTEN connection). */
const WATCH_POLL_MS = 5_000;
const OPERATOR_NAME_RE = /^[a-z0-9][a-z0-9._@-]{0,63}$/;
/** Most trust bundle documents one GetTrustBundle response carries. */
export const MAX_BUNDLE_DOCUMENTS = 64;
/** Longest RotateIssuer activate_after_ms (30 days) and grace_ms (400 days). */
const MAX_ACTIVATE_AFTER_MS = 30 * 86_400_000;
const MAX_GRACE_MS = 400 * 86_400_000;
/** Join token lifetimes: 1 s .. 7 days. */
const MIN_JOIN_TOKEN_TTL_MS = 1000;
const MAX_JOIN_TOKEN_TTL_MS = 7 * 86_400_000;
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
}

/** The program name in `parley_build_info`. */
export const REGISTRY_PROGRAM = 'parley-registry';
/** Calls of grpc.health.v1.Health (logged at debug level: probes come every few seconds). */
const HEALTH_PATH_PREFIX = '/grpc.health.v1.Health/';

/** The authenticated operator of a call, when there is one. */
interface Caller {
  readonly keyId: Uint8Array;
  readonly name: string;
}

/** What a read call needs (§15.3). */
type ReadKind = 'directory' | 'operators' | 'revocations';

type AgentRecordInit = MessageInitShape<typeof AgentRecordSchema>;
type EntryInit = MessageInitShape<typeof RevocationListEntrySchema>;
type HeadInit = MessageInitShape<typeof SignedRevocationHeadSchema>;
type JoinTokenInit = MessageInitShape<typeof JoinTokenSchema>;

/** A fan-out wake-up for watchers: notify() resolves every pending wait(). */
class Notifier {
  #waiters = new Set<() => void>();

  notify(): void {
    const waiters = this.#waiters;
    this.#waiters = new Set();
    for (const wake of waiters) wake();
  }

  wait(timeoutMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener('abort', done, { once: true });
      this.#waiters.add(done);
    });
  }
}

/** The registry server: create, `start()`, `stop()`. */
export class RegistryServer {
  readonly #o: RegistryServerOptions;
  readonly #server: Server;
  readonly #notifier = new Notifier();
  #health: HealthReporter | undefined;
  #unlisten: (() => Promise<void>) | undefined;
  #unlistenBundle: (() => Promise<void>) | undefined;
  #pruneTimer: NodeJS.Timeout | undefined;
  #lifecycleTimer: NodeJS.Timeout | undefined;
  #lifecycle: Promise<void> = Promise.resolve();
  #registryId: Uint8Array = new Uint8Array(16);
  /** Issuer keys this process holds (active, and prepared when its file is here), by hex key id. */
  readonly #keys = new Map<string, IssuerKey>();
  #activeKeyId: Uint8Array | undefined;
  #bundleVersion = 0;
  #stopped = false;
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
    const { store, keyFiles, logger } = this.#o;
    this.#registryId = await store.registryId();
    const { keys, notes } = keyFiles.loadFor(await store.issuers());
    for (const note of notes) logger.warn({ event: 'issuer_keys' }, note);
    for (const key of keys) this.#keys.set(toHex(key.keyId), key);
    this.#activeKeyId = keys[0]!.keyId;
    this.#bundleVersion = await store.ensureTrustBundle((id) => this.#key(id), Date.now());

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
    this.#unlistenBundle = await store.db.listen(TRUST_BUNDLE_CHANNEL, () => this.#scheduleLifecycle());
    this.#lifecycleTimer = setInterval(() => this.#scheduleLifecycle(), LIFECYCLE_INTERVAL_MS);
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

  /** Stops accepting calls, ends watches, waits up to `graceMs` for calls in flight, then closes. */
  async stop(graceMs = 5_000): Promise<void> {
    this.#stopped = true;
    this.readiness.shutdown();
    this.#serverMetrics.close();
    this.#health?.shutdown();
    if (this.#pruneTimer !== undefined) clearInterval(this.#pruneTimer);
    if (this.#lifecycleTimer !== undefined) clearInterval(this.#lifecycleTimer);
    await this.#lifecycle.catch(() => undefined);
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
  }

  // -------------------------------------------------------------------------
  // Issuer keys and their lifecycle (§15.9)

  /** The key id this process signs with now. */
  get activeKeyId(): Uint8Array | undefined {
    return this.#activeKeyId === undefined ? undefined : new Uint8Array(this.#activeKeyId);
  }

  /** The trust bundle version this process last saw. */
  get trustBundleVersion(): number {
    return this.#bundleVersion;
  }

  #key(keyId: Uint8Array): IssuerKey | undefined {
    return this.#keys.get(toHex(keyId));
  }

  /** The active issuer key, to sign with. */
  #active(): IssuerKey {
    const key = this.#activeKeyId === undefined ? undefined : this.#key(this.#activeKeyId);
    if (key === undefined) {
      throw new RpcError('failed_precondition', `this registry process does not hold the active issuer key${this.#activeKeyId === undefined ? '' : ` (${toHex(this.#activeKeyId)})`}: copy its key file here and restart`);
    }
    return key;
  }

  /** Runs one lifecycle step after the previous one (never two at once in this process). */
  #scheduleLifecycle(): void {
    if (this.#stopped) return;
    this.#lifecycle = this.#lifecycle
      .then(() => this.#lifecycleStep())
      .catch((error: unknown) => this.#o.logger.warn({ event: 'issuer_lifecycle', err: error }, 'issuer lifecycle step failed (retried in 1 s)'));
  }

  async #lifecycleStep(): Promise<void> {
    if (this.#stopped) return;
    const { store, keyFiles, logger } = this.#o;
    const nowMs = Date.now();
    const activated = await store.activateDueIssuer((id) => this.#key(id), nowMs);
    if (activated !== undefined) {
      logger.warn(
        { event: 'security', stage: 'issuer', code: 'issuer_activated', issuer_key_id: toHex(activated.activated), retired_key_id: toHex(activated.retired), retired_not_after_ms: activated.notAfterMs, trust_bundle_version: activated.version },
        'issuer key activated; the previous one is retired',
      );
    }
    const dropped = await store.dropExpiredIssuers((id) => this.#key(id), nowMs);
    if (dropped !== undefined) {
      logger.info({ event: 'issuer_dropped', issuer_key_ids: dropped.dropped.map(toHex), trust_bundle_version: dropped.version }, 'retired issuer keys past their grace period left the trust bundle');
    }
    // Follow the database (this process's changes and other processes'): the active key, the version.
    const issuers = await store.issuers();
    const active = issuers.find((i) => i.state === 'active');
    if (active !== undefined && (this.#activeKeyId === undefined || !this.#o.crypto.constantTimeEqual(active.keyId, this.#activeKeyId))) {
      this.#switchActive(active, issuers);
    }
    const prepared = issuers.find((i) => i.state === 'prepared');
    if (prepared !== undefined && this.#key(prepared.keyId) === undefined) {
      const next = keyFiles.keyIdOf(keyFiles.nextPath);
      if (next !== undefined && this.#o.crypto.constantTimeEqual(next, prepared.keyId)) this.#keys.set(toHex(prepared.keyId), keyFiles.read(keyFiles.nextPath));
    }
    const version = await store.trustBundleVersion();
    if (version !== this.#bundleVersion) {
      this.#bundleVersion = version;
      this.#notifier.notify(); // watches send the new version at once
    }
  }

  /** Another key became active (here or in another registry process): sign with it, forget the old secret. */
  #switchActive(active: IssuerRow, issuers: readonly IssuerRow[]): void {
    const { keyFiles, logger } = this.#o;
    try {
      keyFiles.promote(active.keyId);
      if (this.#key(active.keyId) === undefined) this.#keys.set(toHex(active.keyId), keyFiles.read(keyFiles.activePath));
    } catch (error) {
      logger.error({ event: 'issuer_keys', issuer_key_id: toHex(active.keyId), err: error }, 'the active issuer key is not in this data directory: this process cannot sign until it is');
    }
    const previous = this.#activeKeyId;
    this.#activeKeyId = active.keyId;
    for (const [hex, key] of this.#keys) {
      const row = issuers.find((i) => toHex(i.keyId) === hex);
      if (row === undefined || row.state === 'retired' || row.state === 'dropped') {
        key.secretKey.wipe();
        this.#keys.delete(hex);
      }
    }
    logger.info({ issuer_key_id: toHex(active.keyId), previous_key_id: previous === undefined ? undefined : toHex(previous) }, 'signing with the new active issuer key');
  }

  #logCall(r: CallRecord): void {
    const fields = { method: r.path, peer: r.peer, grpc_code: r.grpcCode, code: r.code ?? 'ok', duration_ms: Math.round(r.durationMs * 10) / 10 };
    if (r.code === 'internal' || (r.code === 'unavailable' && this.readiness.ready)) this.#o.logger.error({ ...fields, err: r.error?.cause ?? r.error }, 'call failed');
    else if (r.code === 'unavailable') this.#o.logger.warn({ ...fields, detail: r.error?.localDetails }, 'call failed: not ready'); // the storage check already says why
    else if (r.path.startsWith(HEALTH_PATH_PREFIX)) this.#o.logger.debug({ ...fields, detail: r.error?.localDetails }, 'health call');
    else if (r.code !== undefined) this.#o.logger.info({ ...fields, detail: r.error?.localDetails }, 'call refused');
    else this.#o.logger.info(fields, 'call');
  }

  /**
   * Refuses a call for a failed security check: a security event with the
   * stable fields (README), counted, then the error.
   */
  #refuse(ctx: CallContext, code: 'unauthenticated' | 'permission_denied' | 'bad_signature', message: string, who: { keyId?: Uint8Array; agent?: string } = {}): never {
    this.metrics.authRefusals.inc({ code });
    this.#o.logger.warn(
      {
        event: 'security',
        stage: `registry.${ctx.method.name}`,
        code,
        agent: who.agent,
        key_id: who.keyId === undefined ? undefined : toHex(who.keyId),
        remote: ctx.peer,
        detail: message,
      },
      'security event',
    );
    throw new RpcError(code, message);
  }

  // -------------------------------------------------------------------------
  // Authorisation

  /**
   * Checks a request's signature (§15.3): an operator's, or for a directory read an agent's own.
   * Returns the operator, or undefined for an agent or an unsigned read that is allowed.
   */
  async #authorise(ctx: CallContext, kind: 'write' | ReadKind): Promise<Caller | undefined> {
    const get = (key: string): string | undefined => {
      const value = ctx.metadata.get(key)[0];
      return typeof value === 'string' ? value : undefined;
    };
    const auth = parseOperatorMetadata(get);
    if (auth === undefined) {
      const { settings } = this.#o;
      if (kind === 'directory') {
        const agent = parseAgentMetadata(get);
        if (agent !== undefined) {
          await this.#authoriseAgent(ctx, agent);
          return undefined;
        }
      }
      const open =
        kind === 'revocations' ? !settings.readsRequireAuth : kind === 'directory' || kind === 'operators' ? settings.directoryReads === 'public' && !settings.readsRequireAuth : false;
      if (open) return undefined;
      return this.#refuse(
        ctx,
        'unauthenticated',
        kind === 'directory' ? `${ctx.method.name} requires an operator or agent request signature (directory_reads is "authenticated")` : `${ctx.method.name} requires an operator request signature`,
      );
    }
    const who = { keyId: auth.keyId };
    const operator = await this.#o.store.operator(auth.keyId);
    if (operator === undefined) return this.#refuse(ctx, 'permission_denied', `key ${toHex(auth.keyId)} is not a listed operator of this registry`, who);
    const target = { registryId: this.#registryId, path: ctx.path, body: ctx.requestBytes };
    if (!verifyOperatorRequest(this.#o.crypto, operator.publicKey, auth, target)) {
      return this.#refuse(ctx, 'permission_denied', 'operator request signature does not verify', who);
    }
    const skew = auth.timestampMs - Date.now();
    if (Math.abs(skew) > this.#o.settings.maxClockSkewMs) {
      return this.#refuse(ctx, 'permission_denied', `operator request timestamp is ${Math.round(skew / 1000)} s off the registry clock (allowed ±${this.#o.settings.maxClockSkewMs / 1000} s)`, who);
    }
    const fresh = await this.#o.store.useNonce(auth.keyId, auth.nonce, auth.timestampMs + this.#o.settings.maxClockSkewMs + 1000);
    if (!fresh) return this.#refuse(ctx, 'permission_denied', 'operator request replayed (nonce already used)', who);
    return { keyId: auth.keyId, name: operator.name };
  }

  /** An agent's own signature on a directory read (§15.3): its current, valid, unrevoked certificate's key. */
  async #authoriseAgent(ctx: CallContext, auth: NonNullable<ReturnType<typeof parseAgentMetadata>>): Promise<void> {
    const { store, crypto, settings } = this.#o;
    const nowMs = Date.now();
    const who = { agent: auth.agentId };
    const agent = await store.agent(auth.agentId, nowMs);
    if (agent === undefined || !crypto.constantTimeEqual(agent.certificate.serial, auth.serial)) {
      return this.#refuse(ctx, 'permission_denied', 'the signing agent is unknown, or the serial is not its current certificate', who);
    }
    if (agent.status !== AgentStatus.ACTIVE || nowMs < Number(agent.certificate.validFromMs)) {
      return this.#refuse(ctx, 'permission_denied', `the signing agent's certificate is ${agent.status === AgentStatus.REVOKED ? 'revoked' : 'not valid now'}`, who);
    }
    const target = { registryId: this.#registryId, path: ctx.path, body: ctx.requestBytes };
    if (!verifyAgentRequest(crypto, agent.certificate.identityPublicKey, auth, target)) return this.#refuse(ctx, 'permission_denied', 'agent request signature does not verify', who);
    const skew = auth.timestampMs - nowMs;
    if (Math.abs(skew) > settings.maxClockSkewMs) {
      return this.#refuse(ctx, 'permission_denied', `agent request timestamp is ${Math.round(skew / 1000)} s off the registry clock (allowed ±${settings.maxClockSkewMs / 1000} s)`, who);
    }
    const fresh = await store.useNonce(computeKeyId(crypto, agent.certificate.identityPublicKey), auth.nonce, auth.timestampMs + settings.maxClockSkewMs + 1000);
    if (!fresh) return this.#refuse(ctx, 'permission_denied', 'agent request replayed (nonce already used)', who);
  }

  // -------------------------------------------------------------------------
  // Conversions

  #record(a: AgentRow): AgentRecordInit {
    return {
      agentId: a.agentId,
      agentType: a.agentType,
      capabilities: a.capabilities,
      status: a.status,
      certificate: a.certificate,
      registeredAtMs: BigInt(a.registeredAtMs),
      updatedAtMs: BigInt(a.updatedAtMs),
      revocationVersion: BigInt(a.revocationVersion),
    };
  }

  #entry(r: RevocationRow): EntryInit {
    return {
      version: BigInt(r.version),
      subject: r.kind === 'agent' ? { case: 'agentId', value: r.agentId } : { case: 'serial', value: r.serial },
      reason: r.reason,
      reasonText: r.reasonText,
      revokedAtMs: BigInt(r.revokedAtMs),
      entryHash: r.entryHash,
    };
  }

  #head(version: number, headHash: Uint8Array): HeadInit {
    const issuer = this.#active();
    const fields = { registryId: this.#registryId, version: BigInt(version), headHash, issuedAtMs: BigInt(Date.now()), issuerKeyId: issuer.keyId };
    return { ...fields, signature: this.#o.crypto.ed25519.sign(revocationHeadLayout(fields), issuer.secretKey) };
  }

  // -------------------------------------------------------------------------
  // Validation (before any database access)

  #validity(fromMs: bigint, untilMs: bigint, nowMs: number): { validFromMs: number; validUntilMs: number } {
    const s = this.#o.settings;
    if (fromMs < 0n || untilMs < 0n || fromMs > BigInt(Number.MAX_SAFE_INTEGER) || untilMs > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new RpcError('malformed', 'validity times must be non-negative milliseconds since the epoch');
    }
    const validFromMs = fromMs === 0n ? nowMs : Number(fromMs);
    // No back-dating: a certificate must not claim validity for a time before it was issued.
    if (validFromMs < nowMs - s.maxClockSkewMs) throw new RpcError('malformed', `valid_from_ms is in the past (more than ${s.maxClockSkewMs / 1000} s before now)`);
    const validUntilMs = untilMs === 0n ? validFromMs + s.defaultValidityMs : Number(untilMs);
    if (validUntilMs <= validFromMs) throw new RpcError('malformed', 'valid_until_ms must be later than valid_from_ms');
    if (validUntilMs <= nowMs) throw new RpcError('malformed', 'valid_until_ms is in the past: the certificate would be expired');
    if (validUntilMs - validFromMs > s.maxValidityMs) {
      throw new RpcError('malformed', `validity of ${Math.ceil((validUntilMs - validFromMs) / 86_400_000)} days exceeds the registry maximum of ${s.maxValidityMs / 86_400_000} days`);
    }
    if (validFromMs > nowMs + s.maxValidityMs) throw new RpcError('malformed', 'valid_from_ms is too far in the future');
    return { validFromMs, validUntilMs };
  }

  #bytes(value: Uint8Array, length: number, name: string): Uint8Array {
    if (value.length !== length) throw new RpcError('malformed', `${name} must be ${length} bytes, got ${value.length}`);
    return value;
  }

  #verifyAgentSignature(ctx: CallContext, signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array, what: string, agent: string): void {
    this.#bytes(signature, 64, what);
    if (!this.#o.crypto.ed25519.verify(signature, message, publicKey)) this.#refuse(ctx, 'bad_signature', `${what} does not verify`, { agent, keyId: computeKeyId(this.#o.crypto, publicKey) });
  }

  // -------------------------------------------------------------------------
  // RegistryService

  #implementation(): ServiceImplementation<typeof RegistryService> {
    const { store, crypto, settings } = this.#o;
    return {
      createChallenge: async (req) => {
        if (req.purpose !== ChallengePurpose.REGISTER && req.purpose !== ChallengePurpose.ROTATE_KEY) {
          throw new RpcError('malformed', `challenge purpose must be REGISTER (1) or ROTATE_KEY (2), got ${req.purpose}`);
        }
        const expiresAtMs = Date.now() + settings.challengeTtlMs;
        const challenge = await store.createChallenge(req.purpose, expiresAtMs);
        return { challenge, expiresAtMs: BigInt(expiresAtMs) };
      },

      registerAgent: async (req, ctx) => {
        const nowMs = Date.now();
        // Everything is checked before the operator's nonce is spent or anything is written.
        const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
        const agentType = field(() => assertAgentType(req.agentType, 'agent_type'));
        const capabilities = field(() => normaliseCapabilities(req.capabilities));
        const identityPublicKey = this.#bytes(req.identityPublicKey, 32, 'identity_public_key');
        const challenge = this.#bytes(req.challenge, CHALLENGE_BYTES, 'challenge');
        const validity = this.#validity(req.validFromMs, req.validUntilMs, nowMs);
        const caller = await this.#authorise(ctx, 'write');
        this.#verifyAgentSignature(
          ctx,
          req.proofSignature,
          registrationProofLayout({ registryId: this.#registryId, challenge, agentId, identityPublicKey }),
          identityPublicKey,
          'proof_signature (the agent key over the registration challenge)',
          agentId,
        );
        const agent = await store.registerAgent(this.#active(), { agentId, identityPublicKey, agentType, capabilities, ...validity, challenge, nowMs });
        this.metrics.issued.inc({ reason: 'register' });
        this.#o.logger.info({ agent_id: agentId, serial: toHex(agent.certificate.serial), operator: caller?.name }, 'agent registered');
        return { agent: this.#record(agent) };
      },

      getAgent: async (req, ctx) => {
        const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
        await this.#authorise(ctx, 'directory');
        const agent = await store.agent(agentId, Date.now());
        if (agent === undefined) throw new RpcError('not_found', `unknown agent '${agentId}'`);
        return { agent: this.#record(agent) };
      },

      listAgents: async (req, ctx) => {
        if (req.pageSize > MAX_PAGE_SIZE) throw new RpcError('malformed', `page_size must be at most ${MAX_PAGE_SIZE}, got ${req.pageSize}`);
        const limit = req.pageSize === 0 ? DEFAULT_PAGE_SIZE : req.pageSize;
        const agentType = req.agentType === '' ? undefined : field(() => assertAgentType(req.agentType, 'agent_type'));
        const capability = req.capability === '' ? undefined : field(() => assertCapability(req.capability, 'capability'));
        if (AgentStatus[req.status] === undefined) throw new RpcError('malformed', `unknown agent status ${req.status}`);
        const status = req.status === AgentStatus.UNSPECIFIED ? undefined : req.status;
        const afterAgentId = req.pageToken === '' ? undefined : decodePageToken(req.pageToken);
        await this.#authorise(ctx, 'directory');
        const page = await store.listAgents({
          limit,
          nowMs: Date.now(),
          ...(afterAgentId === undefined ? {} : { afterAgentId }),
          ...(agentType === undefined ? {} : { agentType }),
          ...(capability === undefined ? {} : { capability }),
          ...(status === undefined ? {} : { status }),
        });
        const last = page.agents.at(-1);
        return { agents: page.agents.map((a) => this.#record(a)), nextPageToken: page.more && last !== undefined ? encodePageToken(last.agentId) : '' };
      },

      rotateKey: async (req, ctx) => {
        const nowMs = Date.now();
        const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
        const newPublicKey = this.#bytes(req.newIdentityPublicKey, 32, 'new_identity_public_key');
        const challenge = this.#bytes(req.challenge, CHALLENGE_BYTES, 'challenge');
        // 0: the old certificate's end. Anything else is capped at it in the store (rotation never extends a grant).
        const validUntilMs = req.validUntilMs === 0n ? undefined : this.#validity(0n, req.validUntilMs, nowMs).validUntilMs;
        const agent = await store.agent(agentId, nowMs);
        if (agent === undefined) throw new RpcError('not_found', `unknown agent '${agentId}'`);
        const oldPublicKey = agent.certificate.identityPublicKey;
        const fields = { registryId: this.#registryId, challenge, agentId, oldPublicKey, newPublicKey };
        // Authorised by the current key; the new key proves possession. Both before anything is written.
        this.#verifyAgentSignature(ctx, req.oldKeySignature, rotationAuthorisationLayout(fields), oldPublicKey, 'old_key_signature (the current identity key)', agentId);
        this.#verifyAgentSignature(ctx, req.newKeySignature, rotationProofLayout(fields), newPublicKey, 'new_key_signature (the new identity key)', agentId);
        const result = await store.rotateKey(this.#active(), { agentId, expectedSerial: agent.certificate.serial, newPublicKey, validUntilMs, challenge, nowMs });
        this.metrics.issued.inc({ reason: 'rotate' });
        this.metrics.revoked.inc({ subject: 'serial', via: 'rotate' });
        this.#notifier.notify();
        this.#o.logger.info({ agent_id: agentId, serial: toHex(result.agent.certificate.serial), superseded_version: result.superseded.version }, 'agent key rotated');
        return { agent: this.#record(result.agent), superseded: this.#entry(result.superseded) };
      },

      revokeAgent: async (req, ctx) => {
        const nowMs = Date.now();
        if (RevocationReason[req.reason] === undefined) throw new RpcError('malformed', `unknown revocation reason ${req.reason}`);
        if (req.reasonText.length > MAX_REVOCATION_REASON_LENGTH) {
          throw new RpcError('malformed', `reason_text must be at most ${MAX_REVOCATION_REASON_LENGTH} characters, got ${req.reasonText.length}`);
        }
        if (req.revokedAtMs < 0n || req.revokedAtMs > BigInt(nowMs + settings.maxClockSkewMs)) {
          throw new RpcError('malformed', 'revoked_at_ms must not be negative or in the future');
        }
        const revokedAtMs = req.revokedAtMs === 0n ? nowMs : Number(req.revokedAtMs);
        const subject = req.subject;
        if (subject.case === undefined) throw new RpcError('malformed', 'either agent_id or serial must be set');
        const agentId = subject.case === 'agentId' ? field(() => assertAgentId(subject.value, 'agent_id')) : undefined;
        const serial = subject.case === 'serial' ? this.#bytes(subject.value, 16, 'serial') : undefined;
        const caller = await this.#authorise(ctx, 'write');
        const request = { reason: req.reason, reasonText: req.reasonText, revokedAtMs, operatorKeyId: caller?.keyId ?? null, nowMs };
        const entry = agentId !== undefined ? await store.revokeAgent(agentId, request) : await store.revokeSerial(serial!, request);
        this.metrics.revoked.inc({ subject: agentId !== undefined ? 'agent' : 'serial', via: 'revoke' });
        this.#notifier.notify();
        this.#o.logger.info({ version: entry.version, agent_id: agentId, serial: serial && toHex(serial), operator: caller?.name }, 'revoked');
        return { entry: this.#entry(entry) };
      },

      getRevocationList: async (req, ctx) => {
        if (req.maxEntries > MAX_LIST_ENTRIES) throw new RpcError('malformed', `max_entries must be at most ${MAX_LIST_ENTRIES}`);
        await this.#authorise(ctx, 'revocations');
        const current = await store.revocationHead();
        const after = this.#checkAfter(req.afterVersion, current.version);
        const rows = limitBytes(await store.revocationsAfter(after, req.maxEntries === 0 ? MAX_LIST_ENTRIES : req.maxEntries), MAX_LIST_BYTES);
        const last = rows.at(-1);
        const head = last === undefined ? this.#head(after, await store.hashAt(after)) : this.#head(last.version, last.entryHash);
        return { entries: rows.map((r) => this.#entry(r)), head, currentVersion: BigInt(Math.max(current.version, last?.version ?? 0)) };
      },

      watchRevocations: (req, ctx) => this.#watch(req.afterVersion, ctx),

      getTrustBundle: async (req) => {
        const nowMs = Date.now();
        const issuers = (await store.issuers()).filter((i) => i.state !== 'dropped' && (i.notAfterMs === null || i.notAfterMs > nowMs));
        const currentVersion = await store.trustBundleVersion();
        const documents = await store.trustBundlesAfter(req.afterVersion > BigInt(currentVersion) ? currentVersion : Number(req.afterVersion), MAX_BUNDLE_DOCUMENTS);
        return {
          registryId: this.#registryId,
          issuers: issuers.map((i) => ({
            keyId: i.keyId,
            publicKey: i.publicKey,
            notAfterMs: BigInt(i.state === 'retired' ? (i.notAfterMs ?? 0) : 0),
            active: i.active,
            state: i.state === 'prepared' ? IssuerKeyState.PREPARED : i.state === 'active' ? IssuerKeyState.ACTIVE : IssuerKeyState.RETIRED,
            activatesAtMs: BigInt(i.state === 'prepared' ? (i.activatesAtMs ?? 0) : 0),
          })),
          documents: documents.map((d) => decodeTrustBundleDocument(d.document)),
          currentVersion: BigInt(currentVersion),
        };
      },

      rotateIssuer: async (req, ctx) => {
        const activateAfterMs = Number(req.activateAfterMs === 0n ? BigInt(settings.issuerActivationDelayMs) : req.activateAfterMs);
        if (req.activateAfterMs < 0n || activateAfterMs > MAX_ACTIVATE_AFTER_MS) throw new RpcError('malformed', `activate_after_ms must be 0..${MAX_ACTIVATE_AFTER_MS}`);
        if (req.graceMs < 0n || req.graceMs > BigInt(MAX_GRACE_MS)) throw new RpcError('malformed', `grace_ms must be 0..${MAX_GRACE_MS}`);
        const caller = await this.#authorise(ctx, 'write');
        const nowMs = Date.now();
        const key = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
        const { keyFiles } = this.#o;
        // The key is on disk (and synced) before the database names it; a failed commit removes it.
        keyFiles.writeNext(key);
        let result: { version: number; outlivingGrace: number };
        try {
          result = await store.prepareIssuer(key, { activatesAtMs: nowMs + activateAfterMs, retireGraceMs: Number(req.graceMs) }, (id) => this.#key(id), nowMs);
        } catch (error) {
          if (!isRpcErrorCode(error, 'unavailable')) keyFiles.removeNext();
          key.secretKey.wipe();
          throw error;
        }
        this.#keys.set(toHex(key.keyId), key);
        this.#bundleVersion = result.version;
        this.#notifier.notify();
        this.#o.logger.warn(
          { event: 'security', stage: 'issuer', code: 'issuer_prepared', issuer_key_id: toHex(key.keyId), activates_at_ms: nowMs + activateAfterMs, grace_ms: Number(req.graceMs), trust_bundle_version: result.version, operator: caller?.name },
          'issuer key prepared',
        );
        return {
          prepared: { keyId: key.keyId, publicKey: key.publicKey, notAfterMs: 0n, active: false, state: IssuerKeyState.PREPARED, activatesAtMs: BigInt(nowMs + activateAfterMs) },
          activatesAtMs: BigInt(nowMs + activateAfterMs),
          trustBundleVersion: BigInt(result.version),
          certificatesOutlivingGrace: BigInt(result.outlivingGrace),
        };
      },

      createJoinToken: async (req, ctx) => {
        const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
        const agentType = field(() => assertAgentType(req.agentType, 'agent_type'));
        const capabilities = field(() => normaliseCapabilities(req.capabilities));
        if (req.ttlMs < BigInt(MIN_JOIN_TOKEN_TTL_MS) || req.ttlMs > BigInt(MAX_JOIN_TOKEN_TTL_MS)) throw new RpcError('malformed', `ttl_ms must be ${MIN_JOIN_TOKEN_TTL_MS}..${MAX_JOIN_TOKEN_TTL_MS} (1 s .. 7 days)`);
        const validityMs = req.validityMs === 0n ? settings.defaultValidityMs : Number(req.validityMs);
        if (req.validityMs < 0n || validityMs > settings.maxValidityMs || validityMs < 1000) throw new RpcError('malformed', `validity_ms must be 1000..${settings.maxValidityMs} (0: the default)`);
        const caller = await this.#authorise(ctx, 'write');
        const nowMs = Date.now();
        const tokenId = crypto.randomBytes(JOIN_TOKEN_ID_BYTES);
        const tokenSecret = crypto.randomBytes(JOIN_TOKEN_SECRET_BYTES);
        const row = await store.createJoinToken({
          tokenId,
          tokenHash: joinTokenHash(crypto, tokenId, tokenSecret),
          agentId,
          agentType,
          capabilities,
          validityMs,
          createdAtMs: nowMs,
          expiresAtMs: nowMs + Number(req.ttlMs),
          createdByKeyId: caller!.keyId,
        });
        this.#o.logger.info({ event: 'join_token_created', token_id: toHex(tokenId), agent_id: agentId, expires_at_ms: row.expiresAtMs, operator: caller?.name }, 'join token created');
        return { tokenId, tokenSecret, expiresAtMs: BigInt(row.expiresAtMs), token: formatJoinToken(tokenId, tokenSecret) };
      },

      listJoinTokens: async (req, ctx) => {
        await this.#authorise(ctx, 'write');
        return { tokens: (await store.joinTokens(req.all, Date.now())).map(joinTokenMessage) };
      },

      revokeJoinToken: async (req, ctx) => {
        const tokenId = this.#bytes(req.tokenId, JOIN_TOKEN_ID_BYTES, 'token_id');
        const caller = await this.#authorise(ctx, 'write');
        const row = await store.revokeJoinToken(tokenId, Date.now());
        this.#o.logger.info({ event: 'join_token_revoked', token_id: toHex(tokenId), operator: caller?.name }, 'join token revoked');
        return { token: joinTokenMessage(row) };
      },

      enrollAgent: async (req, ctx) => {
        const nowMs = Date.now();
        const tokenId = this.#bytes(req.tokenId, JOIN_TOKEN_ID_BYTES, 'token_id');
        const tokenSecret = this.#bytes(req.tokenSecret, JOIN_TOKEN_SECRET_BYTES, 'token_secret');
        const agentId = field(() => assertAgentId(req.agentId, 'agent_id'));
        const identityPublicKey = this.#bytes(req.identityPublicKey, 32, 'identity_public_key');
        if (req.timestampMs < 0n || req.timestampMs > BigInt(Number.MAX_SAFE_INTEGER)) throw new RpcError('malformed', 'timestamp_ms must be milliseconds since the epoch');
        const tokenHash = joinTokenHash(crypto, tokenId, tokenSecret);
        this.#verifyAgentSignature(
          ctx,
          req.proofSignature,
          enrolmentLayout({ registryId: this.#registryId, tokenId, tokenHash, agentId, identityPublicKey, timestampMs: req.timestampMs }),
          identityPublicKey,
          'proof_signature (the agent key over the enrolment layout)',
          agentId,
        );
        const skew = Number(req.timestampMs) - nowMs;
        if (skew < -settings.maxClockSkewMs) throw new RpcError('stale_timestamp', `enrolment timestamp is ${Math.round(-skew / 1000)} s old (allowed ${settings.maxClockSkewMs / 1000} s)`);
        if (skew > settings.maxClockSkewMs) throw new RpcError('future_timestamp', `enrolment timestamp is ${Math.round(skew / 1000)} s ahead (allowed ${settings.maxClockSkewMs / 1000} s)`);
        let agent: AgentRow;
        try {
          agent = await store.enrollAgent(this.#active(), { tokenId, tokenHash, agentId, identityPublicKey, nowMs });
        } catch (error) {
          const e = RpcError.from(error);
          if (e.code.startsWith('join_token_')) {
            this.#o.logger.warn({ event: 'security', stage: 'enrolment', code: e.code, token_id: toHex(tokenId), agent_id: agentId, peer: ctx.peer }, 'enrolment refused');
          }
          throw error;
        }
        this.metrics.issued.inc({ reason: 'enrol' });
        this.#o.logger.info({ event: 'agent_enrolled', agent_id: agentId, token_id: toHex(tokenId), serial: toHex(agent.certificate.serial) }, 'agent enrolled with a join token');
        return { agent: this.#record(agent) };
      },

      addOperator: async (req, ctx) => {
        if (!OPERATOR_NAME_RE.test(req.name)) throw new RpcError('malformed', 'operator name must be 1..64 characters of [a-z0-9._@-] starting with [a-z0-9]');
        const publicKey = this.#bytes(req.publicKey, 32, 'public_key');
        const caller = await this.#authorise(ctx, 'write');
        const op = await store.addOperator({ keyId: computeKeyId(crypto, publicKey), publicKey, name: req.name, addedByKeyId: caller?.keyId ?? null, nowMs: Date.now() });
        this.#o.logger.info({ operator_key_id: toHex(op.keyId), name: op.name, by: caller?.name }, 'operator added');
        return { operator: { keyId: op.keyId, publicKey: op.publicKey, name: op.name, addedAtMs: BigInt(op.addedAtMs), addedByKeyId: op.addedByKeyId ?? new Uint8Array(0) } };
      },

      removeOperator: async (req, ctx) => {
        const keyId = this.#bytes(req.keyId, 16, 'key_id');
        const caller = await this.#authorise(ctx, 'write');
        const op = await store.removeOperator(keyId, caller?.keyId ?? null, Date.now());
        this.#o.logger.warn({ event: 'security', stage: 'registry.RemoveOperator', code: 'operator_removed', key_id: toHex(op.keyId), name: op.name, by: caller?.name, remote: ctx.peer }, 'operator removed');
        return { operator: { keyId: op.keyId, publicKey: op.publicKey, name: op.name, addedAtMs: BigInt(op.addedAtMs), addedByKeyId: op.addedByKeyId ?? new Uint8Array(0) } };
      },

      listOperators: async (_req, ctx) => {
        await this.#authorise(ctx, 'operators');
        const ops = await store.operators();
        return {
          operators: ops.map((op) => ({ keyId: op.keyId, publicKey: op.publicKey, name: op.name, addedAtMs: BigInt(op.addedAtMs), addedByKeyId: op.addedByKeyId ?? new Uint8Array(0) })),
        };
      },
    };
  }

  /** When each version beyond ours was last reported (a rollback is logged once a minute per version). */
  readonly #rollbackLogged = new Map<bigint, number>();

  /**
   * A caller's `after_version` beyond our list means it verified a NEWER list
   * than this database holds: the database was restored from an older backup
   * (or is not the one the caller follows). Callers keep the newer list and
   * refuse to go back (they fail closed once it is stale); the operator must
   * re-issue the revocations made after the backup (docs/OPERATIONS.md
   * "Restoring the registry"). Logged as an error, at most once a minute per
   * version, and refused with a message that says the same.
   */
  #checkAfter(after: bigint, current: number): number {
    if (after <= BigInt(current)) return Number(after);
    const now = Date.now();
    const last = this.#rollbackLogged.get(after);
    if (last === undefined || now - last >= 60_000) {
      if (this.#rollbackLogged.size >= 1000) this.#rollbackLogged.clear();
      this.#rollbackLogged.set(after, now);
      this.#o.logger.error(
        { event: 'revocation_rollback', client_version: Number(after), registry_version: current, missing: Number(after) - current },
        `a client verified revocation list version ${after}, but this registry's list ends at version ${current}: the database is older than what gateways and agents have seen (restored from a backup taken before the last ${Number(after) - current} revocation(s)?). They keep the newer list and refuse agents once it is stale. Re-issue the revocations made after the backup (\`parley-registry agent revoke\`; the gateways' "revocation received" log lines name them) until its version reaches ${after}; see docs/OPERATIONS.md, "Restoring the registry"`,
      );
    }
    throw new RpcError(
      'failed_precondition',
      `after_version ${after} is beyond the current revocation list version ${current}: the registry's list is older than the one you verified (its database was restored from an older backup?); keep the newer list`,
    );
  }

  /**
   * WatchRevocations (§15.7): first the backlog after `afterVersion` in batches,
   * then live entries as they commit, each batch with a signed head; a signed
   * heartbeat when nothing happened for `heartbeatMs`. The cursor only moves
   * by the versions actually sent, and versions are read in order from the
   * table, so the stream has no gap and no repeat; a client that reconnects
   * with its last head version resumes exactly after it.
   */
  async *#watch(afterVersion: bigint, ctx: CallContext): AsyncGenerator<{ entries: EntryInit[]; head: HeadInit; trustBundleVersion: bigint }> {
    await this.#authorise(ctx, 'revocations');
    this.metrics.watchers.inc();
    try {
      yield* this.#follow(afterVersion, ctx);
    } finally {
      this.metrics.watchers.dec();
    }
  }

  async *#follow(afterVersion: bigint, ctx: CallContext): AsyncGenerator<{ entries: EntryInit[]; head: HeadInit; trustBundleVersion: bigint }> {
    const { store, settings } = this.#o;
    let cursor = this.#checkAfter(afterVersion, (await store.revocationHead()).version);
    let hash = await store.hashAt(cursor);
    let sentAt = 0;
    let sentBundle = -1;
    while (!ctx.signal.aborted) {
      // Register for the wake-up before reading, so a commit between the read and the wait is not missed.
      const due = sentAt === 0 ? 0 : settings.heartbeatMs - (Date.now() - sentAt);
      const woken = this.#notifier.wait(Math.max(0, Math.min(due, WATCH_POLL_MS)), ctx.signal);
      const rows = await store.revocationsAfter(cursor, WATCH_BATCH);
      const last = rows.at(-1);
      const bundle = this.#bundleVersion;
      if (last !== undefined) {
        cursor = last.version;
        hash = last.entryHash;
        yield { entries: rows.map((r) => this.#entry(r)), head: this.#head(cursor, hash), trustBundleVersion: BigInt(bundle) };
        sentAt = Date.now();
        sentBundle = bundle;
        if (rows.length === WATCH_BATCH) continue; // more backlog: no waiting
      } else if (sentAt === 0 || Date.now() - sentAt >= settings.heartbeatMs || bundle !== sentBundle) {
        // The first message says "you are current" at once; later ones are heartbeats, or tell of a new trust bundle version.
        yield { entries: [], head: this.#head(cursor, hash), trustBundleVersion: BigInt(bundle) };
        sentAt = Date.now();
        sentBundle = bundle;
      }
      await woken;
    }
  }
}

function joinTokenMessage(t: JoinTokenRow): JoinTokenInit {
  return {
    tokenId: t.tokenId,
    agentId: t.agentId,
    agentType: t.agentType,
    capabilities: t.capabilities,
    createdAtMs: BigInt(t.createdAtMs),
    expiresAtMs: BigInt(t.expiresAtMs),
    usedAtMs: BigInt(t.usedAtMs ?? 0),
    revokedAtMs: BigInt(t.revokedAtMs ?? 0),
    createdByKeyId: t.createdByKeyId,
  };
}

function isRpcErrorCode(error: unknown, code: string): boolean {
  return error instanceof RpcError && error.code === code;
}

/** Upper bound of one entry's protobuf size: subject, reason text, hash, and generous framing for the varints. */
function entryBytes(r: RevocationRow): number {
  return Buffer.byteLength(r.agentId, 'utf8') + r.serial.length + Buffer.byteLength(r.reasonText, 'utf8') + r.entryHash.length + 64;
}

/** The longest prefix of `rows` within `maxBytes` (always at least one row, so paging advances). */
function limitBytes(rows: RevocationRow[], maxBytes: number): RevocationRow[] {
  let total = 0;
  for (let i = 0; i < rows.length; i++) {
    total += entryBytes(rows[i]!);
    if (total > maxBytes && i > 0) return rows.slice(0, i);
  }
  return rows;
}

/**
 * Runs a request-field check from @parley/identity and keeps its one-line
 * reason for the caller: it describes the caller's own request field, unlike a
 * library error deep in a call, which RpcError.from reduces to its code.
 */
function field<T>(check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (isIdentityError(error, 'malformed')) throw new RpcError('malformed', error.message.replace(/^\[[a-z_]+\] /, ''));
    throw error;
  }
}


const PAGE_TOKEN_PREFIX = 'a1.';

function encodePageToken(agentId: string): string {
  return PAGE_TOKEN_PREFIX + toBase64Url(utf8(agentId));
}

function decodePageToken(token: string): string {
  const invalid = (): never => {
    throw new RpcError('malformed', 'page_token is not a token from a previous ListAgents response');
  };
  if (token.length > 256 || !token.startsWith(PAGE_TOKEN_PREFIX)) invalid();
  let agentId = '';
  try {
    agentId = new TextDecoder('utf-8', { fatal: true }).decode(fromBase64Url(token.slice(PAGE_TOKEN_PREFIX.length)));
  } catch {
    invalid();
  }
  try {
    return field(() => assertAgentId(agentId));
  } catch {
    return invalid();
  }
}
