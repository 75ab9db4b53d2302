/**
 * The gateway's settings (`parley-gateway serve|check-config`): a JSON config
 * file (flat snake_case keys, see {@link SETTINGS}) overridden by environment
 * variables (`PARLEY_GATEWAY_*`, and `DATABASE_URL`), validated once at start.
 * Every problem is one line naming the key (or variable) and what it must be.
 *
 * Secrets never live in the config file: the database URL (which may carry a
 * password) comes from DATABASE_URL, and the audit key from its own 0600 file.
 */
import { existsSync, mkdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fromBase64Url, fromHex, toBase64Url, toHex, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { RpcError, isLoopbackHost, parseHostPort, type HostPort } from '@parley/rpc';
import type { Logger } from 'pino';
import { redactUrl } from '@parley/db';
import { ConfigError, ProblemList, suggestKey, writeSecretFile } from '@parley/cli-kit';

export { ConfigError, ProblemList } from '@parley/cli-kit';
export type { ConfigProblem } from '@parley/cli-kit';
import { Policy } from './policy.js';
import type { MailboxQuota } from './storage.js';

/** Validated settings of a gateway process. Paths are absolute. */
export interface GatewayConfig {
  readonly gatewayId: string;
  readonly listen: HostPort;
  /** TLS 1.3 server certificate and key (PEM files); required for a non-loopback `listen`. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly clientCaFile?: string };
  /** `{ url, schema? }` PostgreSQL, else `{ dataDir }` PGlite. */
  readonly database: { readonly url: string; readonly schema?: string } | { readonly dataDir: string };
  readonly registry: {
    readonly address: string;
    readonly tlsCaFile?: string;
    readonly tlsServerName?: string;
    /** 32 hex digits; when absent, taken from the registry (whose head signatures the pinned bundle checks). */
    readonly registryId?: string;
    /** Pinned trust bundle JSON (`parley-registry trust-bundle`); absent only with `trustOnFirstUse`. */
    readonly trustBundleFile?: string;
    readonly trustOnFirstUse: boolean;
    /** Follow the registry's signed trust bundle from the pinned one (§15.9); false: the pinned bundle as is, forever. */
    readonly followTrustBundle: boolean;
  };
  readonly revocation: { readonly maxAgeMs: number; readonly failOpen: boolean };
  readonly policyFile?: string;
  readonly rateLimit: { readonly ratePerSecond: number; readonly burst: number };
  readonly maxFrameBytes?: number;
  readonly mailboxTtlMs: number;
  /** Mailbox quotas set in the configuration (unset: the gateway's defaults; 0 disables one). */
  readonly mailboxQuota: MailboxQuota;
  readonly auditKeyFile: string;
  readonly auditTrustedKeys: readonly string[];
  /** `false`: no metrics listener. */
  readonly metrics: false | HostPort;
  readonly verifySignatures: boolean;
  /** Signature-check worker threads; absent: the gateway's default (none below 4 cores, else one per core but two, at most 4). */
  readonly verifyThreads?: number;
  readonly logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  readonly shutdownGraceMs: number;
  /** The shared-memory store (§18) and its quotas (unset: the store's defaults); `false`: not served. */
  readonly memory:
    | false
    | {
        readonly quotas: {
          readonly maxBytesPerMemory?: number;
          readonly maxSegmentsPerMemory?: number;
          readonly maxBytesPerOwner?: number;
          readonly maxSegmentsPerOwner?: number;
          readonly maxMemoriesPerOwner?: number;
        };
      };
}

type Kind = 'string' | 'int' | 'bool' | 'list';

/** Every setting: config-file key, environment variable, type, default, and help text (README and `--help`). */
export const SETTINGS: readonly { readonly key: string; readonly env: string; readonly kind: Kind; readonly def?: string; readonly help: string }[] = [
  { key: 'gateway_id', env: 'PARLEY_GATEWAY_ID', kind: 'string', help: 'name bound into agents\' auth proofs, 1..128 of [a-z0-9._:-] (required)' },
  { key: 'listen', env: 'PARLEY_GATEWAY_LISTEN', kind: 'string', def: '127.0.0.1:7443', help: 'gRPC address; plaintext only on loopback' },
  { key: 'tls_cert_file', env: 'PARLEY_GATEWAY_TLS_CERT', kind: 'string', help: 'TLS 1.3 certificate chain (PEM)' },
  { key: 'tls_key_file', env: 'PARLEY_GATEWAY_TLS_KEY', kind: 'string', help: 'TLS private key (PEM)' },
  { key: 'tls_client_ca_file', env: 'PARLEY_GATEWAY_TLS_CLIENT_CA', kind: 'string', help: 'require client certificates signed by this CA (mTLS)' },
  { key: 'database_schema', env: 'PARLEY_GATEWAY_DB_SCHEMA', kind: 'string', help: 'PostgreSQL schema (default public)' },
  { key: 'data_dir', env: 'PARLEY_GATEWAY_DATA_DIR', kind: 'string', def: './.data/gateway', help: 'PGlite directory when DATABASE_URL is unset' },
  { key: 'registry_address', env: 'PARLEY_GATEWAY_REGISTRY', kind: 'string', def: '127.0.0.1:50051', help: 'registry gRPC address (revocation feed)' },
  { key: 'registry_tls_ca_file', env: 'PARLEY_GATEWAY_REGISTRY_TLS_CA', kind: 'string', help: 'TLS CA of the registry; required for a non-loopback registry' },
  { key: 'registry_tls_server_name', env: 'PARLEY_GATEWAY_REGISTRY_TLS_SERVER_NAME', kind: 'string', help: 'expected name in the registry certificate' },
  { key: 'registry_id', env: 'PARLEY_GATEWAY_REGISTRY_ID', kind: 'string', help: 'expected registry id (32 hex digits); checked against the registry' },
  { key: 'trust_bundle_file', env: 'PARLEY_GATEWAY_TRUST_BUNDLE', kind: 'string', help: 'pinned trust bundle JSON (required unless --trust-on-first-use)' },
  { key: 'revocation_max_age_ms', env: 'PARLEY_GATEWAY_REVOCATION_MAX_AGE_MS', kind: 'int', def: '60000', help: 'freshness bound of revocation data' },
  { key: 'trust_bundle_follow', env: 'PARLEY_GATEWAY_TRUST_BUNDLE_FOLLOW', kind: 'bool', def: 'true', help: 'follow the registry\'s signed trust bundle from the pinned one (PROTOCOL §15.9); false: the pinned bundle never changes (an issuer rotation then needs a new file and a restart)' },
  { key: 'revocation_fail_open', env: 'PARLEY_GATEWAY_REVOCATION_FAIL_OPEN', kind: 'bool', def: 'false', help: 'keep serving on stale revocation data (default fail closed)' },
  { key: 'policy_file', env: 'PARLEY_GATEWAY_POLICY', kind: 'string', help: 'routing policy JSON; reloaded on SIGHUP and on change (absent: deny all)' },
  { key: 'rate_per_second', env: 'PARLEY_GATEWAY_RATE_PER_SECOND', kind: 'int', def: '100', help: 'per-agent token refill rate' },
  { key: 'rate_burst', env: 'PARLEY_GATEWAY_RATE_BURST', kind: 'int', def: '200', help: 'per-agent bucket size' },
  { key: 'max_frame_bytes', env: 'PARLEY_GATEWAY_MAX_FRAME_BYTES', kind: 'int', help: 'largest encoded item accepted (default: largest envelope + 1 KiB)' },
  { key: 'mailbox_ttl_ms', env: 'PARLEY_GATEWAY_MAILBOX_TTL_MS', kind: 'int', def: '3600000', help: 'mailbox item lifetime, at most 1 h (receivers\' max_age)' },
  { key: 'mailbox_recipient_max_items', env: 'PARLEY_GATEWAY_MAILBOX_RECIPIENT_MAX_ITEMS', kind: 'int', help: 'items stored for one recipient (default 10000; 0: no limit)' },
  { key: 'mailbox_recipient_max_bytes', env: 'PARLEY_GATEWAY_MAILBOX_RECIPIENT_MAX_BYTES', kind: 'int', help: 'bytes stored for one recipient (default 64 MiB; 0: no limit)' },
  { key: 'mailbox_sender_max_items', env: 'PARLEY_GATEWAY_MAILBOX_SENDER_MAX_ITEMS', kind: 'int', help: 'items stored from one sender (default 10000; 0: no limit)' },
  { key: 'mailbox_sender_max_bytes', env: 'PARLEY_GATEWAY_MAILBOX_SENDER_MAX_BYTES', kind: 'int', help: 'bytes stored from one sender (default 64 MiB; 0: no limit)' },
  { key: 'mailbox_max_items', env: 'PARLEY_GATEWAY_MAILBOX_MAX_ITEMS', kind: 'int', help: 'items in the whole mailbox, all recipients and instances (default 1000000; 0: no limit)' },
  { key: 'mailbox_max_bytes', env: 'PARLEY_GATEWAY_MAILBOX_MAX_BYTES', kind: 'int', help: 'bytes in the whole mailbox (default 4 GiB; 0: no limit)' },
  { key: 'audit_key_file', env: 'PARLEY_GATEWAY_AUDIT_KEY', kind: 'string', def: './.data/gateway/audit-key.json', help: 'audit signing key; created (0600) if absent' },
  { key: 'audit_trusted_keys', env: 'PARLEY_GATEWAY_AUDIT_TRUSTED_KEYS', kind: 'list', help: 'other writers\' audit public keys (hex; env: comma-separated)' },
  { key: 'metrics_listen', env: 'PARLEY_GATEWAY_METRICS_LISTEN', kind: 'string', def: '127.0.0.1:9464', help: 'Prometheus /metrics address, or "off"' },
  { key: 'verify_signatures', env: 'PARLEY_GATEWAY_VERIFY_SIGNATURES', kind: 'bool', def: 'true', help: 'verify envelope signatures before relaying (receipts: their addressee verifies them)' },
  { key: 'verify_threads', env: 'PARLEY_GATEWAY_VERIFY_THREADS', kind: 'int', help: 'worker threads checking envelope signatures off the event loop, 0..64; 0: on it (default: none below 4 cores, else one per core but two, at most 4)' },
  { key: 'log_level', env: 'PARLEY_GATEWAY_LOG_LEVEL', kind: 'string', def: 'info', help: 'trace, debug, info, warn, error' },
  { key: 'shutdown_grace_ms', env: 'PARLEY_GATEWAY_SHUTDOWN_GRACE_MS', kind: 'int', def: '5000', help: 'how long shutdown waits for calls to drain' },
  { key: 'memory', env: 'PARLEY_GATEWAY_MEMORY', kind: 'bool', def: 'true', help: 'serve parley.v1.MemoryService: end-to-end encrypted shared memory (PROTOCOL §18)' },
  { key: 'memory_max_bytes', env: 'PARLEY_GATEWAY_MEMORY_MAX_BYTES', kind: 'int', help: 'ciphertext bytes per memory (default 64 MiB)' },
  { key: 'memory_max_segments', env: 'PARLEY_GATEWAY_MEMORY_MAX_SEGMENTS', kind: 'int', help: 'segments per memory (default 10000)' },
  { key: 'memory_owner_max_bytes', env: 'PARLEY_GATEWAY_MEMORY_OWNER_MAX_BYTES', kind: 'int', help: 'ciphertext bytes of all memories of one owner (default 256 MiB)' },
  { key: 'memory_owner_max_segments', env: 'PARLEY_GATEWAY_MEMORY_OWNER_MAX_SEGMENTS', kind: 'int', help: 'segments of all memories of one owner (default 100000)' },
  { key: 'memory_owner_max_memories', env: 'PARLEY_GATEWAY_MEMORY_OWNER_MAX_MEMORIES', kind: 'int', help: 'memories one agent may own (default 1000)' },
];

const KNOWN_KEYS = new Set(SETTINGS.map((s) => s.key));
const GATEWAY_ID_RE = /^[a-z0-9._:-]{1,128}$/;
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;

function bad(message: string): never {
  throw new RpcError('malformed', message);
}

/** Files a configuration names (absolute paths), for checks beyond the values. */
export interface ConfigFiles {
  readonly tlsCertFile?: string | undefined;
  readonly tlsKeyFile?: string | undefined;
  readonly tlsClientCaFile?: string | undefined;
  readonly registryTlsCaFile?: string | undefined;
  readonly trustBundleFile?: string | undefined;
  readonly policyFile?: string | undefined;
}

/** Where the settings came from: a config file (optional) and an environment. */
export interface ConfigSources {
  readonly file?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** `--trust-on-first-use` (only ever from the command line). */
  readonly trustOnFirstUse?: boolean;
  /**
   * Also checks the files the settings name (readable, well-formed), adding
   * what fails to the same problem list, so that every problem is reported at once.
   */
  readonly checkFiles?: (files: ConfigFiles, problems: ProblemList) => void;
}

/**
 * Reads and validates the settings: defaults, then the file, then the
 * environment. Every problem is reported, all at once (one ConfigError).
 * @throws ConfigError: `malformed` (bad value, unknown key), `not_found` (unreadable file), `failed_precondition` (an unsafe combination)
 */
export function loadConfig(sources: ConfigSources): GatewayConfig {
  const env = sources.env ?? process.env;
  const problems = new ProblemList();
  let file: Record<string, unknown> = {};
  const base = sources.file === undefined ? process.cwd() : dirname(resolve(sources.file));
  if (sources.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch {
      throw new ConfigError([{ code: 'not_found', message: `cannot read config file ${sources.file}` }]);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new ConfigError([{ code: 'malformed', message: `${sources.file} is not valid JSON` }]);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError([{ code: 'malformed', message: `${sources.file} must hold a JSON object` }]);
    file = parsed as Record<string, unknown>;
    for (const key of Object.keys(file)) if (!KNOWN_KEYS.has(key)) problems.add('malformed', `${sources.file}: unknown setting '${key}'${suggestKey(key, KNOWN_KEYS)}`);
  }
  const raw = new Map<string, { value: unknown; from: string }>();
  for (const s of SETTINGS) {
    const fromEnv = env[s.env];
    if (fromEnv !== undefined && fromEnv !== '') raw.set(s.key, { value: fromEnv, from: s.env });
    else if (file[s.key] !== undefined) raw.set(s.key, { value: file[s.key], from: `${sources.file ?? 'config'}: ${s.key}` });
    else if (s.def !== undefined) raw.set(s.key, { value: s.def, from: `default ${s.key}` });
  }
  const bad = (message: string): undefined => problems.add('malformed', message);
  const unsafe = (message: string): undefined => problems.add('failed_precondition', message);
  const str = (key: string): string | undefined => {
    const r = raw.get(key);
    if (r === undefined) return undefined;
    if (typeof r.value !== 'string' || r.value === '') return bad(`${r.from} must be a non-empty string`);
    return r.value;
  };
  const path = (key: string): string | undefined => {
    const v = str(key);
    return v === undefined ? undefined : resolve(raw.get(key)!.from.startsWith('PARLEY_') ? process.cwd() : base, v);
  };
  const int = (key: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined => {
    const r = raw.get(key);
    if (r === undefined) return undefined;
    const n = typeof r.value === 'string' && /^\d+$/.test(r.value) ? Number(r.value) : r.value;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min || n > max) return bad(`${r.from} must be an integer from ${min} to ${max}`);
    return n;
  };
  const bool = (key: string): boolean | undefined => {
    const r = raw.get(key)!;
    if (typeof r.value === 'boolean') return r.value;
    if (r.value === 'true' || r.value === '1') return true;
    if (r.value === 'false' || r.value === '0') return false;
    return bad(`${r.from} must be true or false`);
  };
  const hostPort = (key: string): HostPort | undefined => {
    const text = str(key);
    return text === undefined ? undefined : problems.check(() => parseHostPort(text, key));
  };

  const gatewayId = str('gateway_id');
  if (!raw.has('gateway_id')) bad('gateway_id is required (config file or PARLEY_GATEWAY_ID)');
  else if (gatewayId !== undefined && !GATEWAY_ID_RE.test(gatewayId)) bad(`gateway_id must be 1..128 characters of [a-z0-9._:-], got '${gatewayId}'`);
  const listen = hostPort('listen');
  const certFile = path('tls_cert_file');
  const keyFile = path('tls_key_file');
  const clientCaFile = path('tls_client_ca_file');
  if ((certFile === undefined) !== (keyFile === undefined)) bad('tls_cert_file and tls_key_file go together');
  if (certFile === undefined && clientCaFile !== undefined) bad('tls_client_ca_file needs tls_cert_file and tls_key_file');
  if (certFile === undefined && listen !== undefined && !isLoopbackHost(listen.host)) {
    unsafe(`refusing to serve plaintext on non-loopback address ${listen.host}: set tls_cert_file and tls_key_file`);
  }
  const url = env['DATABASE_URL'] === '' ? undefined : env['DATABASE_URL'];
  const schema = str('database_schema');
  if (schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) bad('database_schema must be 1..63 characters of [a-z0-9_], not starting with a digit');
  if (url !== undefined && !/^postgres(ql)?:\/\//.test(url)) bad('DATABASE_URL must be a postgres:// URL');
  const dataDir = url === undefined ? path('data_dir') : undefined;

  const registryAddress = str('registry_address');
  const registryHost = registryAddress === undefined ? undefined : problems.check(() => parseHostPort(registryAddress, 'registry_address').host);
  const registryCa = path('registry_tls_ca_file');
  if (registryCa === undefined && registryHost !== undefined && !isLoopbackHost(registryHost)) {
    unsafe(`refusing to talk plaintext to non-loopback registry ${registryAddress}: set registry_tls_ca_file`);
  }
  const registryId = str('registry_id');
  if (registryId !== undefined && !/^[0-9a-f]{32}$/.test(registryId)) bad('registry_id must be 32 lowercase hex digits');
  const trustBundleFile = path('trust_bundle_file');
  const trustOnFirstUse = sources.trustOnFirstUse === true;
  if (!raw.has('trust_bundle_file') && !trustOnFirstUse) {
    unsafe("no pinned trust bundle: set trust_bundle_file (from `parley-registry trust-bundle`), or pass --trust-on-first-use to accept the registry's own");
  }
  const serverName = str('registry_tls_server_name');
  const followTrustBundle = bool('trust_bundle_follow');

  const mailboxTtlMs = int('mailbox_ttl_ms', 1000, 3_600_000);
  const metricsText = str('metrics_listen');
  const metrics = metricsText === 'off' ? false : metricsText === undefined ? undefined : problems.check(() => parseHostPort(metricsText, 'metrics_listen'));
  const level = str('log_level');
  if (level !== undefined && !(LEVELS as readonly string[]).includes(level)) bad(`log_level must be one of ${LEVELS.join(', ')}`);
  const trustedRaw = raw.get('audit_trusted_keys');
  let auditTrustedKeys: string[] = [];
  if (trustedRaw !== undefined) {
    const v = trustedRaw.value;
    if (typeof v === 'string') auditTrustedKeys = v.split(',').map((x) => x.trim()).filter((x) => x !== '');
    else if (Array.isArray(v)) auditTrustedKeys = (v as unknown[]).map(String);
    else bad(`${trustedRaw.from} must be a list of hex keys`);
    for (const k of auditTrustedKeys) if (!/^[0-9a-f]{64}$/.test(k)) bad(`${trustedRaw.from}: '${k}' is not 64 lowercase hex digits`);
  }
  const maxFrameBytes = int('max_frame_bytes', 1024, 64 * 1024 * 1024);
  const policyFile = path('policy_file');
  const quotas: Record<string, number> = {};
  for (const [key, name] of [
    ['memory_max_bytes', 'maxBytesPerMemory'],
    ['memory_max_segments', 'maxSegmentsPerMemory'],
    ['memory_owner_max_bytes', 'maxBytesPerOwner'],
    ['memory_owner_max_segments', 'maxSegmentsPerOwner'],
    ['memory_owner_max_memories', 'maxMemoriesPerOwner'],
  ] as const) {
    const v = int(key, 1, Number.MAX_SAFE_INTEGER);
    if (v !== undefined) quotas[name] = v;
  }
  const mailboxQuota: Record<string, number> = {};
  for (const [key, name] of [
    ['mailbox_recipient_max_items', 'perRecipientItems'],
    ['mailbox_recipient_max_bytes', 'perRecipientBytes'],
    ['mailbox_sender_max_items', 'perSenderItems'],
    ['mailbox_sender_max_bytes', 'perSenderBytes'],
    ['mailbox_max_items', 'totalItems'],
    ['mailbox_max_bytes', 'totalBytes'],
  ] as const) {
    const v = int(key, 0);
    if (v !== undefined) mailboxQuota[name] = v;
  }
  const maxAgeMs = int('revocation_max_age_ms', 1000, 86_400_000);
  const failOpen = bool('revocation_fail_open');
  const ratePerSecond = int('rate_per_second', 1, 1_000_000);
  const burst = int('rate_burst', 1, 1_000_000);
  const auditKeyFile = path('audit_key_file');
  const verifySignatures = bool('verify_signatures');
  const verifyThreads = int('verify_threads', 0, 64);
  const shutdownGraceMs = int('shutdown_grace_ms', 0, 600_000);
  const memory = bool('memory');
  sources.checkFiles?.({ tlsCertFile: certFile, tlsKeyFile: keyFile, tlsClientCaFile: clientCaFile, registryTlsCaFile: registryCa, trustBundleFile, policyFile }, problems);
  problems.take();
  // Past take(): every value below was checked (defaults fill what is optional).
  const database = url !== undefined ? { url, ...(schema === undefined ? {} : { schema }) } : { dataDir: dataDir! };
  return {
    gatewayId: gatewayId!,
    listen: listen!,
    ...(certFile === undefined || keyFile === undefined ? {} : { tls: { certFile, keyFile, ...(clientCaFile === undefined ? {} : { clientCaFile }) } }),
    database,
    registry: {
      address: registryAddress!,
      ...(registryCa === undefined ? {} : { tlsCaFile: registryCa }),
      ...(serverName === undefined ? {} : { tlsServerName: serverName }),
      ...(registryId === undefined ? {} : { registryId }),
      ...(trustBundleFile === undefined ? {} : { trustBundleFile }),
      trustOnFirstUse,
      followTrustBundle: followTrustBundle!,
    },
    revocation: { maxAgeMs: maxAgeMs!, failOpen: failOpen! },
    ...(policyFile === undefined ? {} : { policyFile }),
    rateLimit: { ratePerSecond: ratePerSecond!, burst: burst! },
    ...(maxFrameBytes === undefined ? {} : { maxFrameBytes }),
    mailboxTtlMs: mailboxTtlMs!,
    mailboxQuota,
    auditKeyFile: auditKeyFile!,
    auditTrustedKeys,
    metrics: metrics!,
    verifySignatures: verifySignatures!,
    ...(verifyThreads === undefined ? {} : { verifyThreads }),
    logLevel: level as GatewayConfig['logLevel'],
    shutdownGraceMs: shutdownGraceMs!,
    memory: memory! ? { quotas } : false,
  };
}

/** Settings safe to print (`check-config --json`, the start log): no URL password, no key material. */
export function describeConfig(c: GatewayConfig): Record<string, unknown> {
  const db = 'url' in c.database ? { engine: 'postgres', url: redactUrl(c.database.url), schema: c.database.schema ?? 'public' } : { engine: 'pglite', data_dir: c.database.dataDir };
  return {
    gateway_id: c.gatewayId,
    listen: `${c.listen.host}:${c.listen.port}`,
    tls: c.tls === undefined ? false : { cert_file: c.tls.certFile, mtls: c.tls.clientCaFile !== undefined },
    database: db,
    registry: { address: c.registry.address, tls: c.registry.tlsCaFile !== undefined, trust_bundle_file: c.registry.trustBundleFile ?? null, trust_on_first_use: c.registry.trustOnFirstUse, trust_bundle_follow: c.registry.followTrustBundle },
    revocation: { max_age_ms: c.revocation.maxAgeMs, fail_open: c.revocation.failOpen },
    policy_file: c.policyFile ?? null,
    rate_limit: { per_second: c.rateLimit.ratePerSecond, burst: c.rateLimit.burst },
    mailbox_ttl_ms: c.mailboxTtlMs,
    mailbox_quota: c.mailboxQuota,
    audit_key_file: c.auditKeyFile,
    metrics: c.metrics === false ? false : `${c.metrics.host}:${c.metrics.port}`,
    verify_signatures: c.verifySignatures,
    verify_threads: c.verifyThreads ?? null,
    memory: c.memory === false ? false : { quotas: c.memory.quotas },
  };
}


/**
 * What an operator should hear about a valid configuration: settings that are
 * allowed but are rarely what is meant (deny-all policy, fail-open revocation,
 * trust on first use), and deprecated spellings in the policy file.
 */
export function configWarnings(config: GatewayConfig, policy?: Policy): string[] {
  const warnings: string[] = [];
  if (config.policyFile === undefined) warnings.push('no policy_file: the gateway denies every route (deny all) until one is configured');
  else if (policy !== undefined && policy.document.rules.length === 0) warnings.push(`${config.policyFile} has no rules: the gateway denies every route (deny all)`);
  if (policy !== undefined && policy.deprecations.length > 0) warnings.push(`${config.policyFile}: deprecated key spellings ${policy.deprecations.join(', ')}: rename them`);
  if (config.revocation.failOpen) warnings.push('revocation_fail_open is true: on stale revocation data the gateway keeps admitting agents (a revoked agent may get through)');
  if (config.registry.trustOnFirstUse && config.registry.trustBundleFile === undefined) warnings.push("--trust-on-first-use without trust_bundle_file: whoever answers at registry_address decides which certificates are valid");
  if (!config.verifySignatures) warnings.push('verify_signatures is false: forged or tampered envelopes reach mailboxes and audit logs (recipients still refuse them)');
  return warnings;
}

/**
 * Reads and parses a policy file.
 * @throws RpcError `not_found` (unreadable), `malformed` (not JSON, or not a valid policy: the PolicyError's message)
 */
export function readPolicyFile(file: string): Policy {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new RpcError('not_found', `cannot read policy file ${file}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    bad(`${file} is not valid JSON`);
  }
  try {
    return Policy.parse(json);
  } catch (error) {
    return bad(`${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** A policy file being followed; `close()` stops watching. */
export interface PolicyWatch {
  /** Re-reads the file now (SIGHUP); keeps the old policy when the new one is bad. */
  reload(reason: string): boolean;
  close(): void;
}

/**
 * Watches a policy file (fs.watch on its directory, debounced) and applies every valid
 * new version; an invalid one is logged and the previous policy kept.
 */
export function watchPolicyFile(file: string, apply: (policy: Policy) => void, logger: Logger, debounceMs = 200): PolicyWatch {
  let timer: NodeJS.Timeout | undefined;
  const reload = (reason: string): boolean => {
    try {
      const policy = readPolicyFile(file);
      apply(policy);
      logger.info({ policy_file: file, reason, rules: policy.document.rules.length }, 'policy file loaded');
      if (policy.deprecations.length > 0) logger.warn({ policy_file: file, deprecated_keys: policy.deprecations }, 'policy file uses deprecated key spellings: rename them (snake_case)');
      return true;
    } catch (error) {
      logger.error({ policy_file: file, reason, error: error instanceof RpcError ? error.localDetails : String(error) }, 'policy file rejected: keeping the previous policy');
      return false;
    }
  };
  let watcher: FSWatcher | undefined;
  try {
    // The directory, not the file: editors replace files by rename, which ends a file watch.
    const name = file.slice(dirname(file).length + 1);
    watcher = watch(dirname(file), (_event, changed) => {
      if (changed !== null && changed !== name) return;
      clearTimeout(timer);
      timer = setTimeout(() => reload('file changed'), debounceMs);
      timer.unref();
    });
    watcher.on('error', (error) => logger.warn({ err: error, policy_file: file }, 'policy file watch failed (SIGHUP still reloads)'));
  } catch (error) {
    logger.warn({ err: error, policy_file: file }, 'cannot watch the policy file (SIGHUP still reloads)');
  }
  return {
    reload,
    close() {
      clearTimeout(timer);
      watcher?.close();
    },
  };
}

const AUDIT_KEY_TYPE = 'parley-gateway-audit-key';

/**
 * Loads the audit key from its file, or creates the file with a new key: mode 0600, written whole to a
 * temporary file and linked into place (never replacing a file that exists), so a crash leaves either no
 * file or the complete one.
 * @returns the key pair and whether it was created now
 * @throws RpcError `malformed` on a file that is not an audit key, `failed_precondition` when it is readable by group or others,
 *   or cannot be created (another process created it meanwhile, or the directory is not writable)
 */
export function loadOrCreateAuditKey(crypto: ParleyCrypto, file: string): { keyPair: Ed25519KeyPair; created: boolean } {
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const keyPair = crypto.ed25519.generateKeyPair();
    const seed = crypto.ed25519.exportSeed(keyPair.secretKey);
    let text: string;
    try {
      text = `${JSON.stringify({ version: 1, type: AUDIT_KEY_TYPE, public_key: toHex(keyPair.publicKey), seed: toBase64Url(seed), created_at_ms: Date.now() }, null, 2)}\n`;
    } finally {
      crypto.wipe(seed);
    }
    try {
      writeSecretFile(file, text);
    } catch (cause) {
      const exists = (cause as NodeJS.ErrnoException).code === 'EEXIST';
      throw new RpcError('failed_precondition', exists ? `audit key file ${file} was created by another process meanwhile` : `cannot create audit key file ${file}`, { cause });
    }
    return { keyPair, created: true };
  }
  if ((statSync(file).mode & 0o077) !== 0) throw new RpcError('failed_precondition', `audit key file ${file} is readable by group or others: chmod 600 it`);
  let json: { type?: unknown; seed?: unknown; public_key?: unknown };
  try {
    json = JSON.parse(readFileSync(file, 'utf8')) as typeof json;
  } catch {
    return bad(`audit key file ${file} is not valid JSON`);
  }
  if (json.type !== AUDIT_KEY_TYPE || typeof json.seed !== 'string' || typeof json.public_key !== 'string') bad(`${file} is not a ${AUDIT_KEY_TYPE} file`);
  let keyPair: Ed25519KeyPair;
  let seed: Uint8Array | undefined;
  try {
    seed = fromBase64Url(json.seed);
    keyPair = crypto.ed25519.keyPairFromSeed(seed);
  } catch {
    return bad(`${file}: the seed is not a valid Ed25519 seed`);
  } finally {
    if (seed !== undefined) crypto.wipe(seed);
  }
  if (!crypto.constantTimeEqual(keyPair.publicKey, fromHex(json.public_key))) {
    keyPair.secretKey.wipe();
    bad(`${file}: public_key does not match the seed`);
  }
  return { keyPair, created: false };
}

