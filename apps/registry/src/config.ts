/**
 * The registry's settings file, `registry.json` in the data directory,
 * written by `init` and read by every command. It holds no secret and no
 * database URL (which may carry a password): that comes from DATABASE_URL.
 * Keys are snake_case, like every Parley configuration file; an unknown key is
 * refused (a typo must not fall back to a default silently), and every
 * problem of the file is reported at once.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProblemList, suggestKey } from '@parley/cli-kit';
import { RpcError } from '@parley/rpc';
import { parseHostPort } from '@parley/rpc';

/** Largest `heartbeat_ms`: half the 40 s after which a gateway reopens a silent revocation watch. */
export const MAX_HEARTBEAT_MS = 20_000;

/** Settings a running registry uses. */
export interface RegistrySettings {
  /** Default `serve` address, `host:port`. */
  readonly listen: string;
  /** Whether every read (revocation list and watch too) needs an operator signature (writes always do). */
  readonly readsRequireAuth: boolean;
  /**
   * Who may read the agent directory (GetAgent, ListAgents, ListOperators): `authenticated` (default: an
   * operator signature, or an agent's own signature for GetAgent and ListAgents) or `public`.
   */
  readonly directoryReads: 'authenticated' | 'public';
  /** How long a new issuer key stays prepared (published, signing nothing) before it becomes active. */
  readonly issuerActivationDelayMs: number;
  /** Largest accepted difference between an operator request's timestamp and the server clock. */
  readonly maxClockSkewMs: number;
  /** Certificate validity when a registration does not ask for one. */
  readonly defaultValidityMs: number;
  /** Longest certificate validity the registry grants. */
  readonly maxValidityMs: number;
  /** How long a proof-of-possession challenge stays usable. */
  readonly challengeTtlMs: number;
  /** Interval of signed heartbeats on a revocation watch. */
  readonly heartbeatMs: number;
  /**
   * The operations listener (`/metrics`, `/healthz`, `/readyz`) of `serve`, `host:port`, or `off`
   * (the default: a registry opens no port an operator did not ask for).
   */
  readonly metricsListen: string;
  /**
   * The database `init` created the registry in (absent in a registry.json written before it was
   * recorded): `serve` refuses another one before opening anything (found by an operator review: a
   * forgotten DATABASE_URL opened a new, empty PGlite database).
   */
  readonly database?: DatabaseRecord;
}

/** Which database a data directory's registry lives in (never the URL: it may carry a password). */
export interface DatabaseRecord {
  readonly engine: 'pglite' | 'postgresql';
  /** PostgreSQL schema given to `init` (absent: the connection's default, normally `public`). */
  readonly schema?: string;
}

const DAY = 86_400_000;

/** Defaults for a new registry. */
export const DEFAULT_SETTINGS: RegistrySettings = Object.freeze({
  listen: '127.0.0.1:50051',
  readsRequireAuth: false,
  directoryReads: 'authenticated',
  issuerActivationDelayMs: 10 * 60_000,
  maxClockSkewMs: 60_000,
  defaultValidityMs: 90 * DAY,
  maxValidityMs: 365 * DAY,
  challengeTtlMs: 5 * 60_000,
  heartbeatMs: 15_000,
  metricsListen: 'off',
});

/** File names inside the data directory. */
export const DATA_FILES = Object.freeze({
  config: 'registry.json',
  issuerKey: 'issuer-key.json',
  operatorKey: 'operator-key.json',
  pgliteDir: 'pgdata',
  lock: 'registry.lock',
});

interface SettingsJson {
  version: 1;
  listen: string;
  reads_require_auth: boolean;
  directory_reads: 'authenticated' | 'public';
  issuer_activation_delay_ms: number;
  max_clock_skew_ms: number;
  default_validity_ms: number;
  max_validity_ms: number;
  challenge_ttl_ms: number;
  heartbeat_ms: number;
  metrics_listen: string;
  database_engine?: 'pglite' | 'postgresql';
  database_schema?: string;
}

/** Every key `registry.json` may hold. */
const KNOWN_KEYS: ReadonlySet<string> = new Set([
  'version',
  'listen',
  'reads_require_auth',
  'directory_reads',
  'issuer_activation_delay_ms',
  'max_clock_skew_ms',
  'default_validity_ms',
  'max_validity_ms',
  'challenge_ttl_ms',
  'heartbeat_ms',
  'metrics_listen',
  'database_engine',
  'database_schema',
]);

/** The JSON text of settings (what `init` writes). */
export function settingsJson(s: RegistrySettings): string {
  const json: SettingsJson = {
    version: 1,
    listen: s.listen,
    reads_require_auth: s.readsRequireAuth,
    directory_reads: s.directoryReads,
    issuer_activation_delay_ms: s.issuerActivationDelayMs,
    max_clock_skew_ms: s.maxClockSkewMs,
    default_validity_ms: s.defaultValidityMs,
    max_validity_ms: s.maxValidityMs,
    challenge_ttl_ms: s.challengeTtlMs,
    heartbeat_ms: s.heartbeatMs,
    metrics_listen: s.metricsListen,
    ...(s.database === undefined ? {} : { database_engine: s.database.engine }),
    ...(s.database?.schema === undefined ? {} : { database_schema: s.database.schema }),
  };
  return `${JSON.stringify(json, null, 2)}\n`;
}

/**
 * Checks an operations listener setting: `off`, or `host:port`.
 * @throws RpcError `malformed`
 */
export function checkMetricsListen(value: string, what: string): string {
  if (value !== 'off' && !isAddress(value)) throw new RpcError('malformed', `${what} must be "off" or host:port, got '${value}'`);
  return value;
}

/**
 * Reads `registry.json` from a data directory, reporting every problem at once.
 * @throws RpcError `failed_precondition` when the directory is not initialised; ConfigError (`malformed`) on a bad file
 */
export function readSettings(dataDir: string): RegistrySettings {
  const path = join(dataDir, DATA_FILES.config);
  if (!existsSync(path)) {
    throw new RpcError('failed_precondition', `${dataDir} is not an initialised registry data directory (no ${DATA_FILES.config}): run \`init\` first`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new RpcError('malformed', `${path} is not valid JSON`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new RpcError('malformed', `${path} must hold a JSON object`);
  const json = parsed as Record<string, unknown>;
  const problems = new ProblemList();
  for (const key of Object.keys(json)) if (!KNOWN_KEYS.has(key)) problems.add('malformed', `unknown key '${key}'${suggestKey(key, KNOWN_KEYS)}`);
  if (json['version'] !== 1) problems.add('malformed', `unsupported version ${JSON.stringify(json['version'] ?? null)} (expected 1)`);
  const num = (key: keyof SettingsJson, min: number): number => {
    const v = json[key] ?? DEFAULT_SETTINGS[camel(key) as keyof RegistrySettings];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      problems.add('malformed', `${key} must be an integer ≥ ${min}`);
      return 0;
    }
    return v;
  };
  // Gateways cancel a revocation watch that sends nothing for 40 s (PROTOCOL §12): a heartbeat must come well inside it.
  const heartbeat = (): number => {
    const v = num('heartbeat_ms', 100);
    if (v > MAX_HEARTBEAT_MS) problems.add('malformed', `heartbeat_ms must be at most ${MAX_HEARTBEAT_MS} (gateways reopen a watch silent for 40 s)`);
    return v;
  };
  const address = (key: keyof SettingsJson, offAllowed: boolean): string => {
    const v = json[key] ?? DEFAULT_SETTINGS[camel(key) as keyof RegistrySettings];
    const ok = typeof v === 'string' && ((offAllowed && v === 'off') || isAddress(v));
    if (ok) return v;
    problems.add('malformed', `${key} must be ${offAllowed ? '"off" or ' : ''}"host:port", got ${JSON.stringify(v)}`);
    return '';
  };
  const listen = address('listen', false);
  const metricsListen = address('metrics_listen', true);
  const reads = json['reads_require_auth'] ?? DEFAULT_SETTINGS.readsRequireAuth;
  if (typeof reads !== 'boolean') problems.add('malformed', 'reads_require_auth must be true or false');
  // Absent (a registry.json written before this setting existed) means the default: authenticated.
  const directory = json['directory_reads'] ?? DEFAULT_SETTINGS.directoryReads;
  if (directory !== 'authenticated' && directory !== 'public') problems.add('malformed', 'directory_reads must be "authenticated" or "public"');
  const engine = json['database_engine'];
  const schema = json['database_schema'];
  if (engine !== undefined && engine !== 'pglite' && engine !== 'postgresql') problems.add('malformed', 'database_engine must be "pglite" or "postgresql"');
  if (schema !== undefined && (typeof schema !== 'string' || schema === '')) problems.add('malformed', 'database_schema must be a non-empty string');
  if (schema !== undefined && engine !== 'postgresql') problems.add('malformed', 'database_schema goes only with "database_engine": "postgresql"');
  const database: DatabaseRecord | undefined =
    engine === 'pglite' || engine === 'postgresql' ? { engine, ...(typeof schema === 'string' && schema !== '' ? { schema } : {}) } : undefined;
  const settings: RegistrySettings = {
    listen,
    readsRequireAuth: reads === true,
    directoryReads: directory === 'public' ? 'public' : 'authenticated',
    issuerActivationDelayMs: num('issuer_activation_delay_ms', 0),
    maxClockSkewMs: num('max_clock_skew_ms', 1000),
    defaultValidityMs: num('default_validity_ms', 60_000),
    maxValidityMs: num('max_validity_ms', 60_000),
    challengeTtlMs: num('challenge_ttl_ms', 1000),
    heartbeatMs: heartbeat(),
    metricsListen,
    ...(database === undefined ? {} : { database }),
  };
  problems.take(path);
  return settings;
}

function isAddress(value: string): boolean {
  try {
    parseHostPort(value);
    return true;
  } catch {
    return false;
  }
}

function camel(key: string): string {
  return key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** How a registry.json's database record reads in a message: `PGlite (DIR/pgdata)`, `PostgreSQL (schema X)`. */
export function databaseText(record: DatabaseRecord, dataDir: string): string {
  return record.engine === 'pglite' ? `PGlite (${join(dataDir, DATA_FILES.pgliteDir)})` : `PostgreSQL (schema ${record.schema ?? 'public'})`;
}

/**
 * Checks that the database a command was given is the one `init` recorded, before anything opens it.
 * Nothing to check for a registry.json without the record (written before it existed).
 * @throws RpcError `failed_precondition` naming the mismatch and what to set
 */
export function checkDatabaseRecord(record: DatabaseRecord | undefined, given: { readonly dataDir: string; readonly databaseUrl?: string; readonly databaseSchema?: string }): void {
  if (record === undefined) return;
  const initialised = `this data directory (${given.dataDir}) was initialised for ${databaseText(record, given.dataDir)}`;
  if (record.engine === 'postgresql' && given.databaseUrl === undefined) {
    const schema = record.schema === undefined ? '' : ` and PARLEY_REGISTRY_DB_SCHEMA=${record.schema} (or --database-schema)`;
    throw new RpcError('failed_precondition', `${initialised}: set DATABASE_URL (or --database-url) to its database${schema}; nothing was opened or created`);
  }
  if (record.engine === 'pglite' && given.databaseUrl !== undefined) {
    throw new RpcError('failed_precondition', `${initialised}, not PostgreSQL: unset DATABASE_URL (and --database-url), or give the data directory initialised for that database; nothing was opened`);
  }
  if (record.engine === 'postgresql' && (record.schema ?? 'public') !== (given.databaseSchema ?? 'public')) {
    throw new RpcError(
      'failed_precondition',
      `${initialised}, not schema ${given.databaseSchema ?? 'public'}: set PARLEY_REGISTRY_DB_SCHEMA=${record.schema ?? 'public'} (or --database-schema)${record.schema === undefined ? ', or unset it' : ''}; nothing was opened`,
    );
  }
}
