// Storage on both engines: the same migrations and SQL on PGlite (always) and
// PostgreSQL (when DATABASE_URL is set; required in CI). Migrations are
// idempotent, a PGlite registry survives a restart, every operation is one
// transaction (a refused one leaves nothing), challenges and nonces are
// single-use, and revocation versions stay gapless with 50 concurrent writers.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createCrypto, toHex, type ParleyCrypto } from '@parley/crypto-core';
import { RevocationListFollower, TrustBundle, TrustBundleChain, createIssuerKey, decodeTrustBundleDocument, keyId, revocationHeadLayout, type IssuerKey } from '@parley/identity';
import { AgentStatus, ChallengePurpose, RevocationReason, create, RevocationListEntrySchema } from '@parley/proto';
import { isDbError } from '@parley/db';
import { joinTokenHash } from '@parley/protocol';
import { isRpcError } from '@parley/rpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS, applyMigrations, openDatabase, openRegistry, RegistryStore, type Database } from '../src/index.js';
import { appDir, BACKENDS, DATABASE_URL, dropSchema, freshSchema, REQUIRE_POSTGRES, tempDir } from '@parley/test-support';

it('runs on PostgreSQL in CI (DATABASE_URL must be set)', () => {
  if (REQUIRE_POSTGRES) expect(DATABASE_URL, 'CI=true requires DATABASE_URL: the PostgreSQL suites must not be skipped').toBeDefined();
});

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (isRpcError(error) || isDbError(error)) return error.code;
    throw error;
  }
  throw new Error('expected a failure');
}

describe.each(BACKENDS)('registry store on %s', (backend) => {
  let crypto: ParleyCrypto;
  let dir: ReturnType<typeof tempDir>;
  const schema = freshSchema(`store${backend}`);
  let db: Database;
  let store: RegistryStore;
  let issuer: IssuerKey;
  let registryId: Uint8Array;
  let n = 0;
  const id = (p: string): string => `${p}-${++n}`;

  const open = () =>
    backend === 'postgres' ? openDatabase({ url: DATABASE_URL!, schema, maxConnections: 60 }) : openDatabase({ dataDir: join(dir.path, 'pgdata') });

  beforeAll(async () => {
    crypto = await createCrypto();
    dir = tempDir(`store${backend}`);
    db = await open();
    const first = await applyMigrations(db, backend === 'postgres' ? schema : undefined);
    expect(first.applied).toEqual(MIGRATIONS.map((m) => m.version));
    store = new RegistryStore(db, crypto);
    issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    registryId = crypto.randomBytes(16);
    const operator = crypto.ed25519.generateKeyPair();
    await store.initialise({ registryId, issuer, operator: { publicKey: operator.publicKey, keyId: keyId(crypto, operator.publicKey), name: 'admin' }, nowMs: Date.now() });
  }, 60_000);

  afterAll(async () => {
    await db?.close();
    dir?.remove();
    if (backend === 'postgres') await dropSchema(schema);
  });

  async function register(agentId: string, publicKey = crypto.ed25519.generateKeyPair().publicKey) {
        const nowMs = Date.now();
    const challenge = await store.createChallenge(ChallengePurpose.REGISTER, nowMs + 60_000);
    return store.registerAgent(issuer, { agentId, identityPublicKey: publicKey, agentType: 'worker', capabilities: ['b', 'a'], validFromMs: nowMs, validUntilMs: nowMs + 3_600_000, challenge, nowMs });
  }

  const revocation = { reason: RevocationReason.UNSPECIFIED, reasonText: '', revokedAtMs: 1, operatorKeyId: null, nowMs: 1 };

  it('applies migrations idempotently and refuses a second registry in the same database', async () => {
    const again = await applyMigrations(db, backend === 'postgres' ? schema : undefined);
    expect(again).toEqual({ applied: [], version: MIGRATIONS.length });
    const rows = await db.query<{ version: number }>('SELECT version FROM registry_migrations ORDER BY version');
    expect(rows.map((r) => Number(r.version))).toEqual(MIGRATIONS.map((m) => m.version));
    const other = crypto.ed25519.generateKeyPair();
    expect(
      await codeOf(store.initialise({ registryId: crypto.randomBytes(16), issuer, operator: { publicKey: other.publicKey, keyId: keyId(crypto, other.publicKey), name: 'x' }, nowMs: 1 })),
    ).toBe('already_exists');
  });

  it('applyMigrations refuses a schema name that is not a plain identifier, before any SQL', async () => {
    for (const bad of ['x; DROP TABLE agents', 'Upper', '1abc', 'a'.repeat(64), '']) {
      expect(await codeOf(applyMigrations(db, bad))).toBe('malformed');
    }
  });

  it('refuses a database whose schema is newer than this build', async () => {
    const future = [...MIGRATIONS, { version: MIGRATIONS.length + 1, name: 'future', sql: 'CREATE TABLE future_table (x int)' }];
    const s2 = freshSchema(`future${backend}`);
    const d2 = tempDir(`future${backend}`);
    const db2 = backend === 'postgres' ? await openDatabase({ url: DATABASE_URL!, schema: s2 }) : await openDatabase({ dataDir: d2.path });
    try {
      await applyMigrations(db2, backend === 'postgres' ? s2 : undefined, future);
      expect(await codeOf(applyMigrations(db2, backend === 'postgres' ? s2 : undefined))).toBe('failed_precondition');
    } finally {
      await db2.close();
      d2.remove();
      if (backend === 'postgres') await dropSchema(s2);
    }
  }, 30_000);

  it('registers in one transaction: a duplicate key leaves no agent row and keeps the challenge', async () => {
    const key = crypto.ed25519.generateKeyPair().publicKey;
    const a = await register(id('tx'), key);
    expect(a.capabilities).toEqual(['a', 'b']);
    const challenge = await store.createChallenge(ChallengePurpose.REGISTER, Date.now() + 60_000);
    const dupId = id('tx');
    const nowMs = Date.now();
    const attempt = () =>
      store.registerAgent(issuer, { agentId: dupId, identityPublicKey: key, agentType: 'worker', capabilities: [], validFromMs: nowMs, validUntilMs: nowMs + 1000, challenge, nowMs });
    expect(await codeOf(attempt())).toBe('already_exists');
    expect(await store.agent(dupId, Date.now())).toBeUndefined();
    // The rolled-back transaction also rolled back the challenge's use: it still works once, then never again.
    expect(await db.query('SELECT 1 FROM challenges WHERE challenge = $1', [challenge])).toHaveLength(0);
    const fresh = crypto.ed25519.generateKeyPair().publicKey;
    const once = () => store.registerAgent(issuer, { agentId: id('tx2'), identityPublicKey: fresh, agentType: 'worker', capabilities: [], validFromMs: nowMs, validUntilMs: nowMs + 1000, challenge, nowMs });
    await once();
    expect(await codeOf(once())).toBe('challenge_invalid');
  });

  it('makes challenges without writing a row (anonymous callers cannot fill the table); refuses a forged one', async () => {
    const before = await store.db.query<{ n: unknown }>('SELECT count(*) AS n FROM challenges');
    for (let i = 0; i < 3000; i++) await store.createChallenge(ChallengePurpose.REGISTER, Date.now() + 60_000);
    const after = await store.db.query<{ n: unknown }>('SELECT count(*) AS n FROM challenges');
    expect(Number(after[0]!.n)).toBe(Number(before[0]!.n));
    const forged = await store.createChallenge(ChallengePurpose.REGISTER, Date.now() + 60_000);
    forged[20] = forged[20]! ^ 1;
    const key = crypto.ed25519.generateKeyPair().publicKey;
    const nowMs = Date.now();
    expect(await codeOf(store.registerAgent(issuer, { agentId: id('forged'), identityPublicKey: key, agentType: 'w', capabilities: [], validFromMs: nowMs, validUntilMs: nowMs + 1000, challenge: forged, nowMs }))).toBe('challenge_invalid');
  });

  it('consumes a challenge once; refuses expired and other-purpose ones', async () => {
        const nowMs = Date.now();
    const c = await store.createChallenge(ChallengePurpose.ROTATE_KEY, nowMs + 60_000);
    const key = crypto.ed25519.generateKeyPair().publicKey;
    const reg = (challenge: Uint8Array, agentId: string) =>
      store.registerAgent(issuer, { agentId, identityPublicKey: key, agentType: 'w', capabilities: [], validFromMs: nowMs, validUntilMs: nowMs + 1000, challenge, nowMs: Date.now() });
    expect(await codeOf(reg(c, id('ch')))).toBe('challenge_invalid');
    const expired = await store.createChallenge(ChallengePurpose.REGISTER, Date.now() - 1);
    expect(await codeOf(reg(expired, id('ch')))).toBe('challenge_invalid');
    const good = await store.createChallenge(ChallengePurpose.REGISTER, Date.now() + 60_000);
    await reg(good, id('ch'));
    expect(await codeOf(reg(good, id('ch')))).toBe('challenge_invalid');
  });

  it('keeps a nonce for the clock skew past its expiry when pruning (another process may still accept its timestamp)', async () => {
    const k = crypto.randomBytes(16);
    const nonce = crypto.randomBytes(16);
    const now = Date.now();
    expect(await store.useNonce(k, nonce, now - 1000)).toBe(true);
    await store.prune(now, 60_000);
    expect(await store.useNonce(k, nonce, now + 60_000)).toBe(false); // still there: a replay is refused
    await store.prune(now + 120_000, 60_000);
    expect(await store.useNonce(k, nonce, now + 60_000)).toBe(true);
  });

  it.runIf(backend === 'postgres')('sets lock and idle-in-transaction timeouts on PostgreSQL sessions', async () => {
    const [lock] = await db.query<{ lock_timeout: string }>('SHOW lock_timeout');
    const [idle] = await db.query<{ idle_in_transaction_session_timeout: string }>('SHOW idle_in_transaction_session_timeout');
    expect(lock!.lock_timeout).toBe('10s');
    expect(idle!.idle_in_transaction_session_timeout).toBe('1min');
  });

  it('records an operator nonce once', async () => {
    const k = crypto.randomBytes(16);
    const nonce = crypto.randomBytes(16);
    expect(await store.useNonce(k, nonce, Date.now() + 60_000)).toBe(true);
    expect(await store.useNonce(k, nonce, Date.now() + 60_000)).toBe(false);
  });

  it('chains revocations; the chain and a signed head verify', async () => {
    const a = await register(id('chain'));
    const b = await register(id('chain'));
    const e1 = await store.revokeAgent(a.agentId, { ...revocation, reason: RevocationReason.KEY_COMPROMISE, reasonText: 'x' });
    const e2 = await store.revokeSerial(b.certificate.serial, revocation);
    expect(e2.version).toBe(e1.version + 1);
    expect(await codeOf(store.revokeAgent(a.agentId, revocation))).toBe('already_exists');
    expect(await codeOf(store.revokeSerial(b.certificate.serial, revocation))).toBe('already_exists');
    expect(await codeOf(store.revokeAgent('nobody', revocation))).toBe('not_found');
    expect((await store.agent(b.agentId, Date.now()))!.status).toBe(AgentStatus.REVOKED);
    const head = await store.revocationHead();
    expect(head.version).toBe(e2.version);
    expect(head.headHash).toEqual(e2.entryHash);
    const rows = await store.revocationsAfter(0, 10_000);
    const toEntry = (r: (typeof rows)[number]) =>
      create(RevocationListEntrySchema, {
        version: BigInt(r.version),
        subject: r.kind === 'agent' ? { case: 'agentId', value: r.agentId } : { case: 'serial', value: r.serial },
        reason: r.reason,
        reasonText: r.reasonText,
        revokedAtMs: BigInt(r.revokedAtMs),
        entryHash: r.entryHash,
      });
    const fields = { registryId, version: head.version, headHash: head.headHash, issuedAtMs: 5, issuerKeyId: issuer.keyId };
    const signed = { ...fields, version: BigInt(head.version), issuedAtMs: 5n, signature: crypto.ed25519.sign(revocationHeadLayout(fields), issuer.secretKey), $typeName: 'parley.v1.SignedRevocationHead' as const };
    const follower = new RevocationListFollower(crypto, { registryId, trustBundle: TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]) });
    expect(follower.apply(rows.map(toEntry), signed).version).toBe(head.version);
  });

  it('rotates an agent key only while its certificate is valid, and never past the old certificate\'s end', async () => {
    const agentId = id('rot');
    const a = await register(agentId); // valid for one hour
    const oldUntil = Number(a.certificate.validUntilMs);
    const rotate = async (nowMs: number, validUntilMs?: number) => {
      const challenge = await store.createChallenge(ChallengePurpose.ROTATE_KEY, nowMs + 60_000);
      const current = await store.agent(agentId, nowMs);
      const newPublicKey = crypto.ed25519.generateKeyPair().publicKey;
      return store.rotateKey(issuer, { agentId, expectedSerial: current!.certificate.serial, newPublicKey, validUntilMs, challenge, nowMs });
    };
    // Expired: an agent cannot renew its own certificate.
    expect(await codeOf(rotate(oldUntil))).toBe('failed_precondition');
    expect(await codeOf(rotate(oldUntil + 86_400_000))).toBe('failed_precondition');
    // Valid: the new certificate ends when the old one did, however long the request asks for
    // (rotations a minute apart: at most one a minute per agent).
    const t = Date.now();
    const extended = await rotate(t, t + 300 * 86_400_000);
    expect(Number(extended.agent.certificate.validUntilMs)).toBe(oldUntil);
    const byDefault = await rotate(t + 60_000);
    expect(Number(byDefault.agent.certificate.validUntilMs)).toBe(oldUntil);
    const shorter = await rotate(t + 120_000, t + 180_000);
    expect(Number(shorter.agent.certificate.validUntilMs)).toBeLessThan(oldUntil);
  });

  it('rotates an agent key at most once a minute, checked in the transaction: the refusal writes nothing and keeps the challenge', async () => {
    const agentId = id('rotlimit');
    await register(agentId);
    const t = Date.now();
    const rotate = async (nowMs: number, challenge?: Uint8Array) => {
      const current = await store.agent(agentId, nowMs);
      const c = challenge ?? (await store.createChallenge(ChallengePurpose.ROTATE_KEY, t + 300_000));
      return store.rotateKey(issuer, { agentId, expectedSerial: current!.certificate.serial, newPublicKey: crypto.ed25519.generateKeyPair().publicKey, challenge: c, nowMs });
    };
    await rotate(t);
    const before = await store.revocationHead();
    const challenge = await store.createChallenge(ChallengePurpose.ROTATE_KEY, t + 300_000);
    expect(await codeOf(rotate(t + 1_000, challenge))).toBe('rate_limited');
    expect(await codeOf(rotate(t + 59_999, challenge))).toBe('rate_limited');
    expect((await store.revocationHead()).version).toBe(before.version); // nothing appended
    // A minute later it may rotate again; the refused attempts rolled back, so their challenge is still unused.
    await rotate(t + 60_000, challenge);
    expect((await store.revocationHead()).version).toBe(before.version + 1);
    expect(await codeOf(rotate(t + 60_001))).toBe('rate_limited');
  });

  it('consumes a challenge through the transaction: a challenge made before a restart, used first by a fresh store on one connection, does not hang', async () => {
    const single = backend === 'postgres' ? await openDatabase({ url: DATABASE_URL!, schema, maxConnections: 1 }) : db;
    try {
      const nowMs = Date.now();
      const challenge = await store.createChallenge(ChallengePurpose.REGISTER, nowMs + 60_000);
      const restarted = new RegistryStore(single, crypto); // no challenge secret cached
      const agentId = id('restart');
      const hang = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('registerAgent hung')), 5_000).unref());
      const registered = restarted.registerAgent(issuer, { agentId, identityPublicKey: crypto.ed25519.generateKeyPair().publicKey, agentType: 'w', capabilities: [], validFromMs: nowMs, validUntilMs: nowMs + 60_000, challenge, nowMs });
      expect((await Promise.race([registered, hang])).agentId).toBe(agentId);
      // The same store makes and checks challenges afterwards (the secret it read is the shared one).
      const next = await restarted.createChallenge(ChallengePurpose.REGISTER, nowMs + 60_000);
      await store.registerAgent(issuer, { agentId: id('restart'), identityPublicKey: crypto.ed25519.generateKeyPair().publicKey, agentType: 'w', capabilities: [], validFromMs: nowMs, validUntilMs: nowMs + 60_000, challenge: next, nowMs });
    } finally {
      if (single !== db) await single.close();
    }
  }, 20_000);

  it('appends revocations through the open transaction: a fresh store on one connection does not hang', async () => {
    const single = backend === 'postgres' ? await openDatabase({ url: DATABASE_URL!, schema, maxConnections: 1 }) : db;
    try {
      const fresh = new RegistryStore(single, crypto); // no cached registry id
      const a = await register(id('onecon'));
      const hang = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('revokeAgent hung')), 5_000).unref());
      const entry = await Promise.race([fresh.revokeAgent(a.agentId, revocation), hang]);
      expect(entry.version).toBe((await store.revocationHead()).version);
    } finally {
      if (single !== db) await single.close();
    }
  }, 20_000);

  it.runIf(backend === 'postgres')('keeps revocation versions monotonic and gapless with 50 concurrent writers', async () => {
    const agents = [];
    for (let i = 0; i < 50; i++) agents.push(await register(id('c50')));
    const before = (await store.revocationHead()).version;
    // 50 transactions at once on 50 pooled connections; a few also fail (already revoked) and must give their number back.
    const results = await Promise.allSettled([
      ...agents.map((a) => store.revokeAgent(a.agentId, revocation)),
      ...agents.slice(0, 5).map((a) => store.revokeAgent(a.agentId, revocation)),
    ]);
    const versions = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.version] : [])).sort((x, y) => x - y);
    expect(versions).toEqual(Array.from({ length: 50 }, (_, i) => before + i + 1));
    expect(results.filter((r) => r.status === 'rejected')).toHaveLength(5);
    const stored = (await store.revocationsAfter(before, 1000)).map((r) => r.version);
    expect(stored).toEqual(versions);
  }, 60_000);

  it('rotates the issuer key in steps: prepared and published, activated when due, retired, dropped after its grace; every version chains', async () => {
    const keys = new Map<string, IssuerKey>([[toHex(issuer.keyId), issuer]]);
    const lookup = (k: Uint8Array): IssuerKey | undefined => keys.get(toHex(k));
    const chain = TrustBundleChain.fromPinned(crypto, registryId, TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]));
    const follow = async (): Promise<number> => {
      const docs = await store.trustBundlesAfter(chain.version, 64);
      chain.advance(docs.map((d) => decodeTrustBundleDocument(d.document)), Date.now());
      return chain.version;
    };
    const v0 = await follow();
    expect(v0).toBe(await store.trustBundleVersion());
    const a = await register(id('issuer'));
    const next = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const now = Date.now();
    const prepared = await store.prepareIssuer(next, { activatesAtMs: now + 60_000, retireGraceMs: 2_000 }, lookup, now);
    expect(prepared.outlivingGrace).toBeGreaterThan(0); // `a` is valid for an hour, the grace is 2 s
    expect(await codeOf(store.prepareIssuer(createIssuerKey(crypto, crypto.ed25519.generateKeyPair()), { activatesAtMs: now, retireGraceMs: 0 }, lookup, now))).toBe('failed_precondition');
    expect(await follow()).toBe(prepared.version);
    expect(chain.trustBundle.get(next.keyId)).toBeDefined(); // trusted before it signs anything
    // Not due yet; and a process without the prepared key never activates it.
    expect(await store.activateDueIssuer(lookup, now)).toBeUndefined();
    expect(await store.activateDueIssuer(lookup, now + 60_000)).toBeUndefined();
    keys.set(toHex(next.keyId), next);
    const activated = await store.activateDueIssuer(lookup, now + 60_000);
    expect(activated).toMatchObject({ activated: next.keyId, retired: issuer.keyId, notAfterMs: now + 62_000 });
    expect(await follow()).toBe(activated!.version);
    expect(chain.trustBundle.get(issuer.keyId)?.notAfterMs).toBe(now + 62_000);
    const issuers = await store.issuers();
    expect(issuers.find((i) => i.active)!.keyId).toEqual(next.keyId);
    const old = issuer;
    issuer = next;
    const b = await register(id('issuer'));
    expect(b.certificate.issuerKeyId).toEqual(next.keyId);
    expect(a.certificate.issuerKeyId).toEqual(old.keyId);
    expect(await store.dropExpiredIssuers(lookup, now + 61_999)).toBeUndefined();
    const dropped = await store.dropExpiredIssuers(lookup, now + 62_000);
    expect(dropped?.dropped).toEqual([old.keyId]);
    expect(await follow()).toBe(dropped!.version);
    expect(chain.trustBundle.get(old.keyId)).toBeUndefined();
    expect((await store.issuers()).find((i) => toHex(i.keyId) === toHex(old.keyId))!.state).toBe('dropped');
  });

  it('keeps join tokens hashed and single use; enrolment consumes one in the same transaction as the registration', async () => {
    const agentId = id('enrol');
    const tokenId = crypto.randomBytes(16);
    const secret = crypto.randomBytes(32);
    const nowMs = Date.now();
    const operatorKeyId = crypto.randomBytes(16);
    const base = { tokenId, tokenHash: joinTokenHash(crypto, tokenId, secret), agentId, agentType: 'worker', capabilities: ['x'], validityMs: 3_600_000, createdAtMs: nowMs, expiresAtMs: nowMs + 60_000, createdByKeyId: operatorKeyId };
    await store.createJoinToken(base);
    const rows = await db.query<Record<string, unknown>>('SELECT * FROM join_tokens WHERE token_id = $1', [tokenId]);
    expect(JSON.stringify(rows)).not.toContain(Buffer.from(secret).toString('hex'));
    const key = crypto.ed25519.generateKeyPair().publicKey;
    const enrol = (hash: Uint8Array, at = Date.now(), who = agentId, pk = key) => store.enrollAgent(issuer, { tokenId, tokenHash: hash, agentId: who, identityPublicKey: pk, nowMs: at });
    expect(await codeOf(enrol(joinTokenHash(crypto, tokenId, crypto.randomBytes(32))))).toBe('join_token_invalid');
    expect(await codeOf(enrol(base.tokenHash, Date.now(), id('other')))).toBe('join_token_invalid');
    expect(await codeOf(enrol(base.tokenHash, nowMs + 60_000))).toBe('join_token_expired');
    // A registration that fails (key taken) leaves the token unused.
    const taken = (await register(id('taken'))).certificate.identityPublicKey;
    expect(await codeOf(enrol(base.tokenHash, Date.now(), agentId, taken))).toBe('already_exists');
    const agent = await enrol(base.tokenHash);
    expect(agent.capabilities).toEqual(['x']);
    expect(Number(agent.certificate.validUntilMs) - Number(agent.certificate.validFromMs)).toBe(3_600_000);
    expect(await codeOf(enrol(base.tokenHash))).toBe('join_token_used');
    expect(await codeOf(store.createJoinToken({ ...base, tokenId: crypto.randomBytes(16) }))).toBe('already_exists');
    const other = await store.createJoinToken({ ...base, tokenId: crypto.randomBytes(16), agentId: id('rv') });
    await store.revokeJoinToken(other.tokenId, Date.now());
    expect(await codeOf(store.revokeJoinToken(other.tokenId, Date.now()))).toBe('failed_precondition');
    expect((await store.joinTokens(false, Date.now())).map((t) => toHex(t.tokenId))).not.toContain(toHex(other.tokenId));
    expect((await store.joinTokens(true, Date.now())).map((t) => toHex(t.tokenId))).toContain(toHex(other.tokenId));
  });
});

describe('PGlite persistence', () => {
  it('keeps everything across a restart of the embedded database', async () => {
    const crypto = await createCrypto();
    const dir = tempDir('persist');
    try {
      const first = await openRegistry(crypto, { dataDir: dir.path });
      const issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
      const operator = crypto.ed25519.generateKeyPair();
      await first.store.initialise({ registryId: new Uint8Array(16).fill(7), issuer, operator: { publicKey: operator.publicKey, keyId: keyId(crypto, operator.publicKey), name: 'a' }, nowMs: 1 });
      // A second opener of the same directory is refused while the first holds it.
      expect(await codeOf(openRegistry(crypto, { dataDir: dir.path }))).toBe('failed_precondition');
      await first.close();
      const second = await openRegistry(crypto, { dataDir: dir.path });
      expect(second.migrations.applied).toEqual([]);
      expect(await second.store.registryId()).toEqual(new Uint8Array(16).fill(7));
      expect((await second.store.operators()).map((o) => o.name)).toEqual(['a']);
      await second.close();
    } finally {
      dir.remove();
    }
  }, 60_000);
});

describe('migrations from two processes at once', () => {
  it.runIf(DATABASE_URL !== undefined)('applies each migration exactly once (advisory lock)', async () => {
    const schema = freshSchema('mig2');
    const run = () =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const child = spawn(process.execPath, ['--conditions=@parley/source', '--import', 'tsx', join(appDir('registry'), 'test/fixtures/migrate.ts'), schema], {
          cwd: appDir('registry'),
          env: process.env,
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('close', (code) => resolve({ code, out, err }));
      });
    try {
      const [a, b] = await Promise.all([run(), run()]);
      expect(a.code, a.err).toBe(0);
      expect(b.code, b.err).toBe(0);
      const results = [JSON.parse(a.out) as { applied: number[] }, JSON.parse(b.out) as { applied: number[] }];
      // Exactly one process applied each migration; the other found it recorded.
      expect([...results[0]!.applied, ...results[1]!.applied].sort()).toEqual(MIGRATIONS.map((m) => m.version));
      const db = await openDatabase({ url: DATABASE_URL!, schema });
      const rows = await db.query<{ version: number }>('SELECT version FROM registry_migrations');
      await db.close();
      expect(rows).toHaveLength(MIGRATIONS.length);
    } finally {
      await dropSchema(schema);
    }
  }, 60_000);
});
