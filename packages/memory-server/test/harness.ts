// Test harness for the store: a real database (PGlite in memory, or PostgreSQL
// in a fresh schema when DATABASE_URL is set), a real audit log in it, and
// calls made the way the gRPC adapter makes them — the request encoded to its
// wire bytes, signed over those bytes by the caller (§18.8), decoded again —
// but without a socket (gRPC itself is covered by the gateway's process tests).
import { AuditLog, openPostgresStore } from '@parley/audit';
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { openDatabase, type Database } from '@parley/db';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate, type IssuerKey } from '@parley/identity';
import { signMemoryRequest, type MemoryIdentity } from '@parley/memory';
import { MemoryService, create, fromBinary, toBinary, type AuditMessage } from '@parley/proto';
import type { CallContext } from '@parley/rpc';
import pg from 'pg';
import { MemoryStore, type MemoryQuotas } from '../src/index.js';

export const DATABASE_URL = process.env['DATABASE_URL'] === '' ? undefined : process.env['DATABASE_URL'];
export const SERVICE_ID = 'gw-memory.test';
const DAY = 86_400_000;

export interface TestAgent extends MemoryIdentity {
  readonly publicKey: Uint8Array;
}

/** A mutable clock shared by the store and the callers. */
export class Clock {
  now = Date.now();
  readonly fn = (): number => this.now;
  advance(ms: number): void {
    this.now += ms;
  }
}

export interface Harness {
  readonly crypto: ParleyCrypto;
  readonly db: Database;
  readonly store: MemoryStore;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly issuer: IssuerKey;
  readonly trustBundle: TrustBundle;
  readonly revocations: MemoryRevocationSet;
  /** What the store logged as security events. */
  readonly events: Record<string, unknown>[];
  agent(agentId: string): TestAgent;
  /** An agent certified by another issuer. */
  agentOf(issuer: IssuerKey, agentId: string): TestAgent;
  /** Calls a method as `agent`; returns the handler's answer or throws its RpcError. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are checked field by field in the tests
  call<M extends keyof typeof MemoryService.method>(agent: TestAgent, method: M, request: Record<string, unknown>, tamper?: (md: Record<string, string>, body: Uint8Array) => Uint8Array | void): Promise<any>;
  /** Every audit entry written since the last `fresh()`. */
  auditEntries(): Promise<AuditMessage[]>;
  /** Opens a second store over the same database with the same options (a restart). */
  reopen(): Promise<MemoryStore>;
  /** Starts a test: a new store (with these options) over the same database, a new revocation list, a new audit mark. */
  fresh(options?: StoreOptions): Promise<void>;
  close(): Promise<void>;
}

let counter = 0;

export interface StoreOptions {
  readonly quotas?: Partial<MemoryQuotas>;
  readonly rateLimit?: { ratePerSecond: number; burst: number };
  /** The store's database (default: the harness's), e.g. one that counts what a call reads. */
  readonly database?: Database;
  /** The store's crypto (default: the harness's), e.g. one that counts signature checks. */
  readonly crypto?: ParleyCrypto;
}

/** One database and audit log per test file (opening PGlite takes seconds); `fresh()` per test. */
export async function openHarness(): Promise<Harness> {
  const crypto = await createCrypto();
  const clock = new Clock();
  const schema = DATABASE_URL === undefined ? undefined : `memory_test_${process.pid}_${counter++}_${Math.floor(Math.random() * 1e9).toString(36)}`;
  const db = await openDatabase(DATABASE_URL === undefined ? {} : { url: DATABASE_URL, schema: schema! });
  const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  const trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
  let revocations = new MemoryRevocationSet({ maxAgeMs: 3_600_000 });
  revocations.replace([], 0, clock.now);
  const writer = crypto.ed25519.generateKeyPair();
  const audit = await AuditLog.open(crypto, { store: await openPostgresStore(crypto, db.sqlClient, { table: 'memory_audit' }), writer, clock: clock.fn });
  const events: Record<string, unknown>[] = [];
  const logger = {
    info: () => undefined,
    warn: (fields: object) => void events.push(fields as Record<string, unknown>),
    error: (fields: object) => void events.push({ ...(fields as Record<string, unknown>), level: 'error' }),
  };
  const optionsOf = (o: StoreOptions) => ({
    crypto: o.crypto ?? crypto,
    database: o.database ?? db,
    audit,
    serviceId: SERVICE_ID,
    trustBundle,
    revocations,
    logger,
    clock: clock.fn,
    ...(o.quotas === undefined ? {} : { quotas: o.quotas }),
    ...(o.rateLimit === undefined ? {} : { rateLimit: o.rateLimit }),
  });
  let current: StoreOptions = {};
  let mark = 0;
  const stores: MemoryStore[] = [await MemoryStore.open(optionsOf(current))];
  const h: Harness = {
    crypto,
    db,
    get store() {
      return stores[stores.length - 1]!;
    },
    audit,
    clock,
    issuer,
    trustBundle,
    get revocations() {
      return revocations;
    },
    events,
    agent(agentId) {
      return h.agentOf(issuer, agentId);
    },
    agentOf(by, agentId) {
      const kp = crypto.ed25519.generateKeyPair();
      const certificate = issueCertificate(crypto, by, {
        agentId,
        identityPublicKey: kp.publicKey,
        agentType: 'worker',
        capabilities: [],
        validFromMs: clock.now - DAY,
        validUntilMs: clock.now + 365 * DAY,
      });
      return { agentId, signingKey: kp.secretKey, certificate, publicKey: kp.publicKey };
    },
    async call(agent, name, request, tamper) {
      const method = MemoryService.method[name];
      let body = toBinary(method.input, create(method.input, request as never));
      const path = `/${MemoryService.typeName}/${method.name}`;
      const md = signMemoryRequest(crypto, agent, { serviceId: SERVICE_ID, path, body }, clock.now);
      body = (tamper?.(md, body) ?? body) as typeof body;
      const decoded = fromBinary(method.input, body);
      const ctx = {
        method,
        path,
        metadata: { get: (k: string) => (md[k] === undefined ? [] : [md[k]]) },
        peer: 'ipv4:127.0.0.1:1',
        signal: new AbortController().signal,
        requestBytes: body,
        authContext: {},
      } as unknown as CallContext;
      const handler = (h.store as unknown as Record<string, (req: unknown, ctx: CallContext) => Promise<unknown>>)[method.localName]!;
      return handler.call(h.store, decoded, ctx);
    },
    async auditEntries() {
      const out: AuditMessage[] = [];
      for (let i = mark; i < audit.size; i++) out.push(await audit.entry(i));
      return out;
    },
    async reopen() {
      const next = await MemoryStore.open(optionsOf(current));
      stores.push(next);
      return next;
    },
    async fresh(o = {}) {
      clock.now = Date.now();
      revocations = new MemoryRevocationSet({ maxAgeMs: 3_600_000 });
      revocations.replace([], 0, clock.now);
      current = o;
      events.length = 0;
      mark = audit.size;
      stores.push(await MemoryStore.open(optionsOf(current)));
    },
    async close() {
      for (const s of stores) await s.close();
      await audit.close();
      await db.close();
      if (schema !== undefined) {
        const client = new pg.Client({ connectionString: DATABASE_URL });
        await client.connect();
        try {
          await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        } finally {
          await client.end();
        }
      }
    },
  };
  return h;
}
