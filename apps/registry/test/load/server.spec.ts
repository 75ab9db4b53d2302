// The registry over real gRPC: a spawned `serve` process on PGlite and, when
// DATABASE_URL is set, on PostgreSQL. Registration with proof of possession,
// reads, pagination, revocation (signed list, watch with reconnects), key
// rotation, operator authentication and replay, bad input with the exact
// gRPC codes, and that a refused request writes nothing.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client as GrpcClient, Metadata, credentials, status } from '@grpc/grpc-js';
import { createCrypto, toHex, type Ed25519KeyPair, type ParleyCrypto } from '@parley/crypto-core';
import { IdentityError, MemoryRevocationSet, RevocationListFollower, TrustBundle, isIdentityError, verifyCertificate } from '@parley/identity';
import {
  AgentStatus,
  ChallengePurpose,
  GetAgentRequestSchema,
  Health,
  IssuerKeyState,
  RegisterAgentRequestSchema,
  RegistryService,
  RevocationReason,
  RevokeAgentRequestSchema,
  ServerReflection,
  create,
  toBinary,
} from '@parley/proto';
import { RpcError, ServingStatus, createClient, isRpcError, type RpcErrorCode } from '@parley/rpc';
import {
  TrustBundleFollower,
  agentRequestSigner,
  enrolmentLayout,
  formatJoinToken,
  joinTokenHash,
  operatorRequestSigner,
  registrationProofLayout,
  rotationAuthorisationLayout,
  rotationProofLayout,
  signAgentRequest,
  signOperatorRequest,
} from '@parley/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, DATABASE_URL, initRegistry, REQUIRE_POSTGRES, serveRegistry, type RegistryFixture, type RunningRegistry } from '@parley/test-support';
import { operatorClient, plainClient } from '../clients.js';

const HOUR = 3_600_000;

async function codeOf(promise: Promise<unknown>): Promise<{ code: RpcErrorCode; grpc: number; details: string }> {
  try {
    await promise;
  } catch (error) {
    if (!isRpcError(error)) throw error;
    return { code: error.code, grpc: error.grpcCode, details: error.details };
  }
  throw new Error('expected the call to fail');
}

it('runs the storage suites on PostgreSQL in CI (DATABASE_URL must be set)', () => {
  if (REQUIRE_POSTGRES) expect(DATABASE_URL, 'CI=true requires DATABASE_URL: the PostgreSQL suites must not be skipped').toBeDefined();
});

describe.each(BACKENDS)('registry server over gRPC on %s', (backend) => {
  let crypto: ParleyCrypto;
  let fixture: RegistryFixture;
  let registry: RunningRegistry;
  let op: Awaited<ReturnType<typeof operatorClient>>;
  let seq = 0;
  const newId = (prefix: string): string => `${prefix}-${backend}-${++seq}`;

  beforeAll(async () => {
    crypto = await createCrypto();
    fixture = await initRegistry(backend, `srv${backend}`);
    // Short challenge lifetime for the expiry test.
    const configPath = join(fixture.dataDir, 'registry.json');
    const config = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(configPath, JSON.stringify({ ...config, challenge_ttl_ms: 1500 }));
    registry = await serveRegistry(fixture, ['--heartbeat-ms', '300']);
    op = await operatorClient(registry, fixture, crypto);
  }, 60_000);

  afterAll(async () => {
    op?.close();
    await registry?.stop();
    await fixture?.cleanup();
  }, 30_000);

  async function register(agentId: string, key: Ed25519KeyPair = crypto.ed25519.generateKeyPair(), extra: { agentType?: string; capabilities?: string[] } = {}) {
    // The server's challenge TTL is 1.5 s (for the expiry test); on a loaded machine a challenge can expire
    // before its registration arrives, and the answer says what a client does then: request a new one.
    for (let attempt = 1; ; attempt++) {
      const { challenge } = await op.client.createChallenge({ purpose: ChallengePurpose.REGISTER });
      const proofSignature = crypto.ed25519.sign(registrationProofLayout({ registryId: op.registryId, challenge, agentId, identityPublicKey: key.publicKey }), key.secretKey);
      try {
        const res = await op.client.registerAgent({
          agentId,
          identityPublicKey: key.publicKey,
          agentType: extra.agentType ?? 'worker',
          capabilities: extra.capabilities ?? ['msg:send'],
          challenge,
          proofSignature,
        });
        return { agent: res.agent!, key };
      } catch (error) {
        if (attempt >= 3 || !(error instanceof Error) || !/challenge expired/.test(error.message)) throw error;
      }
    }
  }

  async function bundle(): Promise<TrustBundle> {
    const tb = await op.client.getTrustBundle({});
    return TrustBundle.from(crypto, tb.issuers.map((i) => ({ keyId: i.keyId, publicKey: i.publicKey })));
  }

  it('logs that it listens, on the chosen engine', () => {
    const listening = registry.logs.find((l) => l['msg'] === 'listening')!;
    expect(listening['database']).toBe(backend);
    expect(listening['port']).toBe(registry.port);
  });

  it('answers gRPC health checks and server reflection', async () => {
    const health = createClient(Health, registry.address, credentials.createInsecure());
    expect((await health.check({ service: '' })).status).toBe(ServingStatus.SERVING);
    expect((await health.check({ service: 'parley.v1.RegistryService' })).status).toBe(ServingStatus.SERVING);
    health.close();
    const reflection = createClient(ServerReflection, registry.address, credentials.createInsecure());
    const names: string[] = [];
    async function* one() {
      yield { messageRequest: { case: 'listServices' as const, value: '' } };
    }
    for await (const r of reflection.serverReflectionInfo(one())) {
      if (r.messageResponse.case === 'listServicesResponse') names.push(...r.messageResponse.value.service.map((s) => s.name));
    }
    reflection.close();
    expect(names).toContain('parley.v1.RegistryService');
    expect(names).toContain('grpc.health.v1.Health');
  });

  it('registers an agent with proof of possession; the certificate verifies offline against the trust bundle', async () => {
    const agentId = newId('planner');
    const { agent, key } = await register(agentId, undefined, { agentType: 'planner', capabilities: ['task:delegate', 'msg:send', 'msg:send'] });
    expect(agent.status).toBe(AgentStatus.ACTIVE);
    expect(agent.capabilities).toEqual(['msg:send', 'task:delegate']);
    const cert = agent.certificate!;
    expect(cert.identityPublicKey).toEqual(key.publicKey);
    const verified = verifyCertificate(crypto, cert, { trustBundle: await bundle(), nowMs: Date.now(), expectedAgentId: agentId });
    expect(verified.agentType).toBe('planner');
    const got = await op.client.getAgent({ agentId });
    expect(got.agent!.certificate!.serial).toEqual(cert.serial);
  });

  it('refuses a replayed, expired, unknown or wrong-purpose challenge with FAILED_PRECONDITION, and a bad proof with UNAUTHENTICATED', async () => {
    const key = crypto.ed25519.generateKeyPair();
    const agentId = newId('replay');
    const { challenge } = await op.client.createChallenge({ purpose: ChallengePurpose.REGISTER });
    const req = {
      agentId,
      identityPublicKey: key.publicKey,
      agentType: 'worker',
      challenge,
      proofSignature: crypto.ed25519.sign(registrationProofLayout({ registryId: op.registryId, challenge, agentId, identityPublicKey: key.publicKey }), key.secretKey),
    };
    await op.client.registerAgent(req);
    // The same challenge again, for another agent and key (a fresh proof over the used challenge).
    const key2 = crypto.ed25519.generateKeyPair();
    const other = newId('replay');
    const replayed = await codeOf(
      op.client.registerAgent({
        ...req,
        agentId: other,
        identityPublicKey: key2.publicKey,
        proofSignature: crypto.ed25519.sign(registrationProofLayout({ registryId: op.registryId, challenge, agentId: other, identityPublicKey: key2.publicKey }), key2.secretKey),
      }),
    );
    expect(replayed).toMatchObject({ code: 'challenge_invalid', grpc: status.FAILED_PRECONDITION });
    expect(replayed.details).toContain('already used');

    const signed = async (purpose: ChallengePurpose, wait = 0) => {
      const c = (await op.client.createChallenge({ purpose })).challenge;
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      return {
        agentId: other,
        identityPublicKey: key2.publicKey,
        agentType: 'worker',
        challenge: c,
        proofSignature: crypto.ed25519.sign(registrationProofLayout({ registryId: op.registryId, challenge: c, agentId: other, identityPublicKey: key2.publicKey }), key2.secretKey),
      };
    };
    const wrongPurpose = await codeOf(op.client.registerAgent(await signed(ChallengePurpose.ROTATE_KEY)));
    expect(wrongPurpose).toMatchObject({ code: 'challenge_invalid', grpc: status.FAILED_PRECONDITION });
    const expired = await codeOf(op.client.registerAgent(await signed(ChallengePurpose.REGISTER, 1600)));
    expect(expired).toMatchObject({ code: 'challenge_invalid', grpc: status.FAILED_PRECONDITION });
    expect(expired.details).toContain('expired');
    const unknown = await signed(ChallengePurpose.REGISTER);
    unknown.challenge = crypto.randomBytes(32);
    unknown.proofSignature = crypto.ed25519.sign(
      registrationProofLayout({ registryId: op.registryId, challenge: unknown.challenge, agentId: other, identityPublicKey: key2.publicKey }),
      key2.secretKey,
    );
    expect(await codeOf(op.client.registerAgent(unknown))).toMatchObject({ code: 'challenge_invalid' });
    // A proof by another key (no possession of key2).
    const forged = await signed(ChallengePurpose.REGISTER);
    forged.proofSignature = crypto.ed25519.sign(
      registrationProofLayout({ registryId: op.registryId, challenge: forged.challenge, agentId: other, identityPublicKey: key2.publicKey }),
      crypto.ed25519.generateKeyPair().secretKey,
    );
    expect(await codeOf(op.client.registerAgent(forged))).toMatchObject({ code: 'bad_signature', grpc: status.UNAUTHENTICATED });
    // None of that registered anything.
    expect(await codeOf(op.client.getAgent({ agentId: other }))).toMatchObject({ code: 'not_found', grpc: status.NOT_FOUND });
  });

  it('maps bad input to INVALID_ARGUMENT / ALREADY_EXISTS / NOT_FOUND with a clear message, writing nothing', async () => {
    const { agent, key } = await register(newId('dup'));
    const before = (await op.client.listAgents({ pageSize: 500 })).agents.length;
    const attempt = async (overrides: Record<string, unknown>) => {
      const k = (overrides['key'] as Ed25519KeyPair | undefined) ?? crypto.ed25519.generateKeyPair();
      const agentId = (overrides['agentId'] as string | undefined) ?? newId('bad');
      const identityPublicKey = (overrides['identityPublicKey'] as Uint8Array | undefined) ?? k.publicKey;
      const { challenge } = await op.client.createChallenge({ purpose: ChallengePurpose.REGISTER });
      const proof =
        identityPublicKey.length === 32
          ? crypto.ed25519.sign(registrationProofLayout({ registryId: op.registryId, challenge, agentId: agentId.slice(0, 200), identityPublicKey }), k.secretKey)
          : new Uint8Array(64);
      return codeOf(
        op.client.registerAgent({
          agentId,
          identityPublicKey,
          agentType: 'worker',
          challenge,
          proofSignature: proof,
          ...(overrides['fields'] as object | undefined),
        }),
      );
    };
    expect(await attempt({ identityPublicKey: new Uint8Array(31) })).toMatchObject({ code: 'malformed', grpc: status.INVALID_ARGUMENT, details: 'identity_public_key must be 32 bytes, got 31' });
    expect(await attempt({ agentId: 'Not Valid' })).toMatchObject({ code: 'malformed', grpc: status.INVALID_ARGUMENT });
    const long = await attempt({ agentId: `a${'b'.repeat(4000)}` });
    expect(long).toMatchObject({ code: 'malformed', grpc: status.INVALID_ARGUMENT });
    expect(long.details).toContain('agent_id');
    expect(await attempt({ fields: { agentType: 'x'.repeat(65) } })).toMatchObject({ code: 'malformed' });
    expect(await attempt({ fields: { capabilities: Array.from({ length: 65 }, (_, i) => `cap${i}`) } })).toMatchObject({ code: 'malformed' });
    const past = await attempt({ fields: { validFromMs: BigInt(Date.now() - 10 * HOUR), validUntilMs: BigInt(Date.now() - HOUR) } });
    expect(past).toMatchObject({ code: 'malformed', grpc: status.INVALID_ARGUMENT });
    expect(past.details).toContain('past');
    expect(await attempt({ fields: { validUntilMs: BigInt(Date.now() + 400 * 24 * HOUR) } })).toMatchObject({ code: 'malformed' });
    // No back-dating: valid_from more than the clock skew before now, even with a valid_until still ahead.
    const backDated = await attempt({ fields: { validFromMs: BigInt(Date.now() - 10 * HOUR), validUntilMs: BigInt(Date.now() + HOUR) } });
    expect(backDated).toMatchObject({ code: 'malformed', grpc: status.INVALID_ARGUMENT });
    expect(backDated.details).toContain('valid_from_ms');
    expect(await attempt({ fields: { challenge: new Uint8Array(5) } })).toMatchObject({ code: 'malformed' });
    // Duplicates: the same agent id, and the same identity key under another id.
    const dupId = await attempt({ agentId: agent.agentId });
    expect(dupId).toMatchObject({ code: 'already_exists', grpc: status.ALREADY_EXISTS, details: `agent '${agent.agentId}' already exists` });
    const dupKey = await attempt({ key });
    expect(dupKey).toMatchObject({ code: 'already_exists', grpc: status.ALREADY_EXISTS });
    expect(dupKey.details).toContain('identity public key');
    // Unknown enum values and other reads.
    expect(await codeOf(op.client.createChallenge({ purpose: 7 as ChallengePurpose }))).toMatchObject({ code: 'malformed', grpc: status.INVALID_ARGUMENT });
    expect(await codeOf(op.client.listAgents({ status: 9 as AgentStatus }))).toMatchObject({ code: 'malformed', grpc: status.INVALID_ARGUMENT });
    expect(await codeOf(op.client.listAgents({ pageSize: 501 }))).toMatchObject({ code: 'malformed' });
    expect(await codeOf(op.client.listAgents({ pageToken: 'garbage' }))).toMatchObject({ code: 'malformed' });
    expect(await codeOf(op.client.revokeAgent({ subject: { case: 'agentId', value: agent.agentId }, reason: 42 as RevocationReason }))).toMatchObject({
      code: 'malformed',
      grpc: status.INVALID_ARGUMENT,
    });
    expect(await codeOf(op.client.revokeAgent({ subject: { case: 'serial', value: new Uint8Array(3) } }))).toMatchObject({ code: 'malformed' });
    expect(await codeOf(op.client.revokeAgent({ subject: { case: 'agentId', value: agent.agentId }, reasonText: 'x'.repeat(1025) }))).toMatchObject({ code: 'malformed' });
    expect(await codeOf(op.client.revokeAgent({ subject: { case: undefined } }))).toMatchObject({ code: 'malformed' });
    expect(await codeOf(op.client.revokeAgent({ subject: { case: 'agentId', value: agent.agentId }, revokedAtMs: BigInt(Date.now() + HOUR) }))).toMatchObject({
      code: 'malformed',
    });
    expect(await codeOf(op.client.getAgent({ agentId: 'no-such-agent' }))).toMatchObject({ code: 'not_found', grpc: status.NOT_FOUND, details: "unknown agent 'no-such-agent'" });
    expect(await codeOf(op.client.revokeAgent({ subject: { case: 'agentId', value: 'no-such-agent' } }))).toMatchObject({ code: 'not_found' });
    expect(await codeOf(op.client.revokeAgent({ subject: { case: 'serial', value: new Uint8Array(16) } }))).toMatchObject({ code: 'not_found' });
    expect(await codeOf(op.client.getRevocationList({ afterVersion: 1_000_000n }))).toMatchObject({ code: 'failed_precondition', grpc: status.FAILED_PRECONDITION });
    // Nothing was written by any refused request: same agents, and the agent is not revoked.
    expect((await op.client.listAgents({ pageSize: 500 })).agents.length).toBe(before);
    expect((await op.client.getAgent({ agentId: agent.agentId })).agent!.status).toBe(AgentStatus.ACTIVE);
  });

  it('lists agents in pages, filtered by type, capability and status', async () => {
    const type = `lt${backend.slice(0, 2)}${seq}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const id = `list-${backend}-${String(i).padStart(2, '0')}`;
      ids.push(id);
      await register(id, undefined, { agentType: type, capabilities: i % 2 === 0 ? ['even', 'msg:send'] : ['msg:send'] });
    }
    await op.client.revokeAgent({ subject: { case: 'agentId', value: ids[4]! }, reason: RevocationReason.CESSATION_OF_OPERATION });
    const seen: string[] = [];
    let pageToken = '';
    let pages = 0;
    do {
      const page = await op.client.listAgents({ agentType: type, pageSize: 2, pageToken });
      seen.push(...page.agents.map((a) => a.agentId));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== '');
    expect(seen).toEqual(ids);
    expect(pages).toBe(3);
    expect((await op.client.listAgents({ agentType: type, capability: 'even' })).agents.map((a) => a.agentId)).toEqual([ids[0], ids[2], ids[4]]);
    expect((await op.client.listAgents({ agentType: type, status: AgentStatus.REVOKED })).agents.map((a) => a.agentId)).toEqual([ids[4]]);
    expect((await op.client.listAgents({ agentType: type, status: AgentStatus.ACTIVE })).agents).toHaveLength(4);
    expect((await op.client.listAgents({ agentType: type, status: AgentStatus.EXPIRED })).agents).toHaveLength(0);
  });

  it('requires an operator signature for writes (default deny) and refuses unknown keys, bad signatures, skew and replays', async () => {
    const anonymous = plainClient(registry);
    const unsigned = await codeOf(anonymous.revokeAgent({ subject: { case: 'agentId', value: 'x-1' } }));
    expect(unsigned).toMatchObject({ code: 'unauthenticated', grpc: status.UNAUTHENTICATED });
    // The directory is not open by default (directory_reads "authenticated"); the revocation list is.
    expect(await codeOf(anonymous.listAgents({ pageSize: 1 }))).toMatchObject({ code: 'unauthenticated', grpc: status.UNAUTHENTICATED });
    expect((await anonymous.getRevocationList({})).head).toBeDefined();
    anonymous.close();

    const { agent } = await register(newId('auth'));
    const request = { subject: { case: 'agentId' as const, value: agent.agentId }, reason: RevocationReason.KEY_COMPROMISE };
    const body = toBinary(RevokeAgentRequestSchema, create(RevokeAgentRequestSchema, request));
    const path = '/parley.v1.RegistryService/RevokeAgent';
    const raw = plainClient(registry);
    const stranger = crypto.ed25519.generateKeyPair();
    const byStranger = signOperatorRequest(crypto, stranger, { registryId: op.registryId, path, body });
    expect(await codeOf(raw.revokeAgent(request, { metadata: byStranger }))).toMatchObject({ code: 'permission_denied', grpc: status.PERMISSION_DENIED });
    const forOtherMethod = signOperatorRequest(crypto, op.operator, { registryId: op.registryId, path: '/parley.v1.RegistryService/AddOperator', body });
    expect(await codeOf(raw.revokeAgent(request, { metadata: forOtherMethod }))).toMatchObject({ code: 'permission_denied', details: 'operator request signature does not verify' });
    const forOtherRegistry = signOperatorRequest(crypto, op.operator, { registryId: new Uint8Array(16), path, body });
    expect(await codeOf(raw.revokeAgent(request, { metadata: forOtherRegistry }))).toMatchObject({ code: 'permission_denied' });
    const stale = signOperatorRequest(crypto, op.operator, { registryId: op.registryId, path, body }, Date.now() - 5 * 60_000);
    const staleResult = await codeOf(raw.revokeAgent(request, { metadata: stale }));
    expect(staleResult).toMatchObject({ code: 'permission_denied' });
    expect(staleResult.details).toContain('off the registry clock');
    expect(await codeOf(raw.revokeAgent(request, { metadata: { 'parley-operator-key-id': 'zz' } }))).toMatchObject({ code: 'unauthenticated' });
    // Nothing was revoked so far.
    expect((await op.client.getAgent({ agentId: agent.agentId })).agent!.status).toBe(AgentStatus.ACTIVE);

    const good = signOperatorRequest(crypto, op.operator, { registryId: op.registryId, path, body });
    const first = await raw.revokeAgent(request, { metadata: good });
    expect(first.entry!.subject).toEqual({ case: 'agentId', value: agent.agentId });
    const replay = await codeOf(raw.revokeAgent(request, { metadata: good }));
    expect(replay).toMatchObject({ code: 'permission_denied', grpc: status.PERMISSION_DENIED });
    expect(replay.details).toContain('replayed');
    raw.close();
  });

  it('signs the revocation list; a follower verifies chain and head, and a MemoryRevocationSet applies it', async () => {
    const { agent } = await register(newId('rev'));
    const { agent: other } = await register(newId('rev'));
    await op.client.revokeAgent({ subject: { case: 'agentId', value: agent.agentId }, reason: RevocationReason.KEY_COMPROMISE, reasonText: 'stolen' });
    await op.client.revokeAgent({ subject: { case: 'serial', value: other.certificate!.serial }, reason: RevocationReason.PRIVILEGE_WITHDRAWN });
    const again = await codeOf(op.client.revokeAgent({ subject: { case: 'agentId', value: agent.agentId } }));
    expect(again).toMatchObject({ code: 'already_exists', grpc: status.ALREADY_EXISTS });

    const list = await op.client.getRevocationList({});
    const versions = list.entries.map((e) => Number(e.version));
    expect(versions).toEqual(Array.from({ length: versions.length }, (_, i) => i + 1));
    const trustBundle = await bundle();
    const follower = new RevocationListFollower(crypto, { registryId: op.registryId, trustBundle });
    const batch = follower.apply(list.entries, list.head);
    const set = new MemoryRevocationSet();
    set.apply(batch.entries, batch.version, batch.issuedAtMs); // freshness: the signed head's time, not receipt
    expect(() => verifyCertificate(crypto, agent.certificate!, { trustBundle, nowMs: Date.now(), revocations: set })).toThrow(/revoked by agent/);
    let thrown: unknown;
    try {
      verifyCertificate(crypto, other.certificate!, { trustBundle, nowMs: Date.now(), revocations: set });
    } catch (e) {
      thrown = e;
    }
    expect(isIdentityError(thrown, 'revoked')).toBe(true);
    expect((await op.client.getAgent({ agentId: other.agentId })).agent!.status).toBe(AgentStatus.REVOKED);

    // Tampering is caught: a changed reason breaks the chain; a changed head breaks the signature.
    const tampered = structuredClone(list.entries);
    tampered[0]!.reasonText = 'nothing to see';
    expect(() => new RevocationListFollower(crypto, { registryId: op.registryId, trustBundle }).apply(tampered, list.head)).toThrow(IdentityError);
    const badHead = { ...list.head!, issuedAtMs: list.head!.issuedAtMs + 1n };
    expect(() => new RevocationListFollower(crypto, { registryId: op.registryId, trustBundle }).apply(list.entries, badHead)).toThrow(/signature/);
    // Paging with max_entries: each page is signed at its own last version.
    const paged = new RevocationListFollower(crypto, { registryId: op.registryId, trustBundle });
    let after = 0n;
    for (;;) {
      const page = await op.client.getRevocationList({ afterVersion: after, maxEntries: 1 });
      paged.apply(page.entries, page.head);
      after = page.head!.version;
      if (after >= page.currentVersion) break;
    }
    expect(paged.version).toBe(follower.version);
  });

  it('watches revocations: backlog, then live, heartbeats, and reconnects with no gap and no duplicate', async () => {
    const trustBundle = await bundle();
    const follower = new RevocationListFollower(crypto, { registryId: op.registryId, trustBundle });
    const received: number[] = [];
    const agents: { agentId: string }[] = [];
    for (let i = 0; i < 6; i++) agents.push((await register(newId('watch'))).agent);
    const revoke = (i: number) => op.client.revokeAgent({ subject: { case: 'agentId', value: agents[i]!.agentId } });

    // Session 1: backlog, then two live revocations, then drop the connection mid-stream.
    await revoke(0);
    const target = async (session: number, until: (n: number) => boolean, during?: () => Promise<unknown>) => {
      const controller = new AbortController();
      let fired = false;
      try {
        for await (const batch of op.client.watchRevocations({ afterVersion: BigInt(follower.version) }, { signal: controller.signal })) {
          const accepted = follower.apply(batch.entries, batch.head);
          received.push(...batch.entries.map((e) => Number(e.version)));
          if (!fired && during !== undefined) {
            fired = true;
            void during();
          }
          if (until(accepted.version)) break;
        }
      } catch (error) {
        if (!isRpcError(error, 'cancelled')) throw error;
      }
      return session;
    };
    const start = (await op.client.getRevocationList({})).currentVersion;
    await target(1, (v) => v >= Number(start) + 2, async () => {
      await revoke(1);
      await revoke(2);
    });
    // Between sessions: more revocations happen while nobody watches.
    await revoke(3);
    await revoke(4);
    // Session 2 resumes after the last verified version.
    await target(2, (v) => v >= Number(start) + 5, () => revoke(5));
    const expected = Array.from({ length: Number(start) + 5 }, (_, i) => i + 1);
    expect(received).toEqual(expected); // every version exactly once, in order
    // When current, the stream says so at once, then sends signed heartbeats (every 300 ms here)
    // that keep a cache fresh without entries.
    const hb = new RevocationListFollower(crypto, { registryId: op.registryId, trustBundle, version: follower.version, headHash: follower.headHash });
    const issued: number[] = [];
    for await (const batch of op.client.watchRevocations({ afterVersion: BigInt(follower.version) })) {
      expect(batch.entries).toHaveLength(0);
      issued.push(hb.apply(batch.entries, batch.head).issuedAtMs);
      if (issued.length === 3) break;
    }
    expect(issued[2]! - issued[1]!).toBeGreaterThanOrEqual(250);
    expect(await codeOf(op.client.watchRevocations({ afterVersion: BigInt(follower.version + 100) })[Symbol.asyncIterator]().next())).toMatchObject({
      code: 'failed_precondition',
    });
  });

  it('directory reads: an operator or the agent itself (its current, valid certificate\'s key) signs; no replay, no revoked or superseded agent', async () => {
    const { agent, key } = await register(newId('reader'));
    const raw = plainClient(registry);
    const asAgent = (serial = agent.certificate!.serial, secretKey = key.secretKey) =>
      agentRequestSigner(crypto, { agentId: agent.agentId, serial, secretKey }, op.registryId);
    const client = createClient(RegistryService, registry.address, credentials.createInsecure(), { signer: asAgent() });
    try {
      expect((await client.getAgent({ agentId: agent.agentId })).agent!.agentId).toBe(agent.agentId);
      expect((await client.listAgents({ pageSize: 2 })).agents.length).toBeGreaterThan(0);
      // Operators only: ListOperators.
      expect(await codeOf(client.listOperators({}))).toMatchObject({ code: 'unauthenticated' });
      const path = '/parley.v1.RegistryService/GetAgent';
      const request = { agentId: agent.agentId };
      const body = toBinary(GetAgentRequestSchema, create(GetAgentRequestSchema, request));
      const signed = signAgentRequest(crypto, { agentId: agent.agentId, serial: agent.certificate!.serial, secretKey: key.secretKey }, { registryId: op.registryId, path, body });
      await raw.getAgent(request, { metadata: signed });
      expect(await codeOf(raw.getAgent(request, { metadata: signed }))).toMatchObject({ code: 'permission_denied', details: 'agent request replayed (nonce already used)' });
      const stranger = crypto.ed25519.generateKeyPair();
      const forged = signAgentRequest(crypto, { agentId: agent.agentId, serial: agent.certificate!.serial, secretKey: stranger.secretKey }, { registryId: op.registryId, path, body });
      expect(await codeOf(raw.getAgent(request, { metadata: forged }))).toMatchObject({ code: 'permission_denied', details: 'agent request signature does not verify' });
      const wrongSerial = signAgentRequest(crypto, { agentId: agent.agentId, serial: new Uint8Array(16), secretKey: key.secretKey }, { registryId: op.registryId, path, body });
      expect(await codeOf(raw.getAgent(request, { metadata: wrongSerial }))).toMatchObject({ code: 'permission_denied' });
      expect(await codeOf(raw.getAgent(request, { metadata: { 'parley-agent-id': agent.agentId } }))).toMatchObject({ code: 'unauthenticated' });
      await op.client.revokeAgent({ subject: { case: 'agentId', value: agent.agentId }, reason: RevocationReason.KEY_COMPROMISE });
      expect(await codeOf(client.getAgent({ agentId: agent.agentId }))).toMatchObject({ code: 'permission_denied', details: "the signing agent's certificate is revoked" });
    } finally {
      client.close();
      raw.close();
    }
  });

  it('join tokens: created by an operator, used once by the agent with its own key; expired, reused, revoked, wrong secret and bad proofs refused with their codes', async () => {
    const agentId = newId('enrol');
    const anon = plainClient(registry);
    try {
      expect(await codeOf(anon.createJoinToken({ agentId, agentType: 'worker', ttlMs: 60_000n }))).toMatchObject({ code: 'unauthenticated' });
      expect(await codeOf(op.client.createJoinToken({ agentId, agentType: 'worker', ttlMs: 10n }))).toMatchObject({ code: 'malformed' });
      const created = await op.client.createJoinToken({ agentId, agentType: 'worker', capabilities: ['msg:send'], ttlMs: 60_000n, validityMs: BigInt(HOUR) });
      expect(created.token).toBe(formatJoinToken(created.tokenId, created.tokenSecret));
      const listed = await op.client.listJoinTokens({});
      expect(listed.tokens.map((t) => toHex(t.tokenId))).toContain(toHex(created.tokenId));
      expect(JSON.stringify(listed.tokens, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))).not.toContain('tokenSecret');
      const key = crypto.ed25519.generateKeyPair();
      const enrol = (o: { secret?: Uint8Array; signer?: Ed25519KeyPair; timestampMs?: number; tokenId?: Uint8Array; agentId?: string } = {}) => {
        const tokenId = o.tokenId ?? created.tokenId;
        const secret = o.secret ?? created.tokenSecret;
        const timestampMs = BigInt(o.timestampMs ?? Date.now());
        const id = o.agentId ?? agentId;
        const proof = enrolmentLayout({ registryId: op.registryId, tokenId, tokenHash: joinTokenHash(crypto, tokenId, secret), agentId: id, identityPublicKey: key.publicKey, timestampMs });
        return anon.enrollAgent({ tokenId, tokenSecret: secret, agentId: id, identityPublicKey: key.publicKey, timestampMs, proofSignature: crypto.ed25519.sign(proof, (o.signer ?? key).secretKey) });
      };
      expect(await codeOf(enrol({ secret: crypto.randomBytes(32) }))).toMatchObject({ code: 'join_token_invalid', grpc: status.UNAUTHENTICATED });
      expect(await codeOf(enrol({ tokenId: crypto.randomBytes(16) }))).toMatchObject({ code: 'join_token_invalid' });
      expect(await codeOf(enrol({ signer: crypto.ed25519.generateKeyPair() }))).toMatchObject({ code: 'bad_signature' });
      expect(await codeOf(enrol({ timestampMs: Date.now() - 10 * 60_000 }))).toMatchObject({ code: 'stale_timestamp' });
      expect(await codeOf(enrol({ agentId: newId('other') }))).toMatchObject({ code: 'join_token_invalid' });
      const enrolled = (await enrol()).agent!;
      expect(enrolled.certificate!.identityPublicKey).toEqual(key.publicKey);
      expect(enrolled.capabilities).toEqual(['msg:send']);
      expect(verifyCertificate(crypto, enrolled.certificate!, { trustBundle: await bundle(), nowMs: Date.now(), expectedAgentId: agentId }).agentId).toBe(agentId);
      expect(await codeOf(enrol())).toMatchObject({ code: 'join_token_used', grpc: status.PERMISSION_DENIED });
      // Expiry: a 1 s token, used after it ended.
      const shortId = newId('enrol');
      const short = await op.client.createJoinToken({ agentId: shortId, agentType: 'worker', ttlMs: 1000n });
      await new Promise((r) => setTimeout(r, 1200));
      expect(await codeOf(enrol({ tokenId: short.tokenId, secret: short.tokenSecret, agentId: shortId }))).toMatchObject({ code: 'join_token_expired', grpc: status.PERMISSION_DENIED });
      // Revoked.
      const revId = newId('enrol');
      const rev = await op.client.createJoinToken({ agentId: revId, agentType: 'worker', ttlMs: 60_000n });
      await op.client.revokeJoinToken({ tokenId: rev.tokenId });
      expect(await codeOf(enrol({ tokenId: rev.tokenId, secret: rev.tokenSecret, agentId: revId }))).toMatchObject({ code: 'join_token_invalid' });
      // A registered agent id cannot get a token.
      expect(await codeOf(op.client.createJoinToken({ agentId, agentType: 'worker', ttlMs: 60_000n }))).toMatchObject({ code: 'already_exists' });
    } finally {
      anon.close();
    }
  });

  it('rotates a key, authorised by the old key; the old certificate is revoked as superseded', async () => {
    const { agent, key: oldKey } = await register(newId('rotate'));
    const newKey = crypto.ed25519.generateKeyPair();
    const rotate = async (signOld: Ed25519KeyPair, signNew: Ed25519KeyPair, newPublicKey = newKey.publicKey) => {
      const { challenge } = await op.client.createChallenge({ purpose: ChallengePurpose.ROTATE_KEY });
      const f = { registryId: op.registryId, challenge, agentId: agent.agentId, oldPublicKey: oldKey.publicKey, newPublicKey };
      // RotateKey needs no operator: an anonymous client.
      const anon = plainClient(registry);
      try {
        return await anon.rotateKey({
          agentId: agent.agentId,
          newIdentityPublicKey: newPublicKey,
          challenge,
          oldKeySignature: crypto.ed25519.sign(rotationAuthorisationLayout(f), signOld.secretKey),
          newKeySignature: crypto.ed25519.sign(rotationProofLayout(f), signNew.secretKey),
        });
      } finally {
        anon.close();
      }
    };
    const stranger = crypto.ed25519.generateKeyPair();
    expect(await codeOf(rotate(stranger, newKey))).toMatchObject({ code: 'bad_signature', grpc: status.UNAUTHENTICATED });
    expect(await codeOf(rotate(oldKey, stranger))).toMatchObject({ code: 'bad_signature' });
    const result = await rotate(oldKey, newKey);
    const rotated = result.agent!;
    expect(rotated.certificate!.identityPublicKey).toEqual(newKey.publicKey);
    expect(rotated.certificate!.serial).not.toEqual(agent.certificate!.serial);
    expect(result.superseded!.reason).toBe(RevocationReason.SUPERSEDED);
    expect(result.superseded!.subject).toEqual({ case: 'serial', value: agent.certificate!.serial });
    // The old key can no longer rotate (it is not the current key), and the new one can't be reused.
    expect(await codeOf(rotate(oldKey, crypto.ed25519.generateKeyPair(), crypto.ed25519.generateKeyPair().publicKey))).toMatchObject({ code: 'bad_signature' });
    expect((await op.client.getAgent({ agentId: agent.agentId })).agent!.status).toBe(AgentStatus.ACTIVE);
    const trustBundle = await bundle();
    verifyCertificate(crypto, rotated.certificate!, { trustBundle, nowMs: Date.now(), expectedAgentId: agent.agentId });
    // A revoked agent cannot rotate.
    await op.client.revokeAgent({ subject: { case: 'agentId', value: agent.agentId } });
    const { challenge } = await op.client.createChallenge({ purpose: ChallengePurpose.ROTATE_KEY });
    const next = crypto.ed25519.generateKeyPair();
    const f = { registryId: op.registryId, challenge, agentId: agent.agentId, oldPublicKey: newKey.publicKey, newPublicKey: next.publicKey };
    expect(
      await codeOf(
        op.client.rotateKey({
          agentId: agent.agentId,
          newIdentityPublicKey: next.publicKey,
          challenge,
          oldKeySignature: crypto.ed25519.sign(rotationAuthorisationLayout(f), newKey.secretKey),
          newKeySignature: crypto.ed25519.sign(rotationProofLayout(f), next.secretKey),
        }),
      ),
    ).toMatchObject({ code: 'failed_precondition', grpc: status.FAILED_PRECONDITION });
  });

  it('adds and lists operators; the new operator can sign, an undecodable request is INVALID_ARGUMENT', async () => {
    const bob = crypto.ed25519.generateKeyPair();
    const added = await op.client.addOperator({ name: `bob-${backend}`, publicKey: bob.publicKey });
    expect(added.operator!.addedByKeyId).toEqual(op.operator.keyId);
    expect(await codeOf(op.client.addOperator({ name: 'again', publicKey: bob.publicKey }))).toMatchObject({ code: 'already_exists' });
    expect(await codeOf(op.client.addOperator({ name: 'Bad Name', publicKey: bob.publicKey }))).toMatchObject({ code: 'malformed' });
    expect((await op.client.listOperators({})).operators.map((o) => o.name)).toContain(`bob-${backend}`);
    const asBob = createClient(RegistryService, registry.address, credentials.createInsecure(), { signer: operatorRequestSigner(crypto, bob, op.registryId) });
    const { agent } = await register(newId('bob'));
    await asBob.revokeAgent({ subject: { case: 'agentId', value: agent.agentId } });
    asBob.close();

    const raw = new GrpcClient(registry.address, credentials.createInsecure());
    const error = await new Promise<{ code: number; details: string }>((resolve) =>
      raw.makeUnaryRequest(
        '/parley.v1.RegistryService/GetAgent',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from([0x0a, 0x7f]),
        new Metadata(),
        {},
        (err) => resolve(err as unknown as { code: number; details: string }),
      ),
    );
    raw.close();
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    // Oversize requests are refused by the transport before any handler runs.
    const huge = create(RegisterAgentRequestSchema, { agentId: 'x'.repeat(100_000) });
    expect(toBinary(RegisterAgentRequestSchema, huge).length).toBeGreaterThan(64 * 1024);
    // RESOURCE_EXHAUSTED from the transport, without a Parley trailer: `too_large` (not `rate_limited`).
    const tooBig = await op.client.registerAgent(huge).catch((e: unknown) => e);
    expect(isRpcError(tooBig, 'too_large')).toBe(true);
    expect(((tooBig as RpcError).cause as { code: number }).code).toBe(status.RESOURCE_EXHAUSTED);
  });

  it('removes operators: the removed key can no longer sign, cannot be listed again, and the last operator stays', async () => {
    const carol = crypto.ed25519.generateKeyPair();
    const dave = crypto.ed25519.generateKeyPair();
    const carolId = (await op.client.addOperator({ name: `carol-${backend}`, publicKey: carol.publicKey })).operator!.keyId;
    const daveId = (await op.client.addOperator({ name: `dave-${backend}`, publicKey: dave.publicKey })).operator!.keyId;
    const asCarol = createClient(RegistryService, registry.address, credentials.createInsecure(), { signer: operatorRequestSigner(crypto, carol, op.registryId) });
    const asDave = createClient(RegistryService, registry.address, credentials.createInsecure(), { signer: operatorRequestSigner(crypto, dave, op.registryId) });
    try {
      const { agent } = await register(newId('rm-op'));
      const removed = await asCarol.removeOperator({ keyId: daveId });
      expect(removed.operator!.name).toBe(`dave-${backend}`);
      // Dave's key is refused at once, for writes and signed reads alike.
      expect(await codeOf(asDave.revokeAgent({ subject: { case: 'agentId', value: agent.agentId } }))).toMatchObject({ code: 'permission_denied', grpc: status.PERMISSION_DENIED });
      expect(await codeOf(asDave.removeOperator({ keyId: carolId }))).toMatchObject({ code: 'permission_denied' });
      expect((await op.client.listOperators({})).operators.map((o) => toHex(o.keyId))).not.toContain(toHex(daveId));
      // A removed key stays out: it cannot be listed again.
      expect(await codeOf(op.client.addOperator({ name: 'dave-again', publicKey: dave.publicKey }))).toMatchObject({ code: 'already_exists' });
      // Bad requests: unknown key, wrong length, no signature.
      expect(await codeOf(op.client.removeOperator({ keyId: daveId }))).toMatchObject({ code: 'not_found', grpc: status.NOT_FOUND });
      expect(await codeOf(op.client.removeOperator({ keyId: new Uint8Array(15) }))).toMatchObject({ code: 'malformed' });
      const anonymous = plainClient(registry);
      expect(await codeOf(anonymous.removeOperator({ keyId: carolId }))).toMatchObject({ code: 'unauthenticated' });
      anonymous.close();
      // Carol may remove herself while another operator remains.
      await asCarol.removeOperator({ keyId: carolId });
      // Remove everyone but op: then op is the last operator and cannot be removed.
      for (const o of (await op.client.listOperators({})).operators) {
        if (toHex(o.keyId) !== toHex(op.operator.keyId)) await op.client.removeOperator({ keyId: o.keyId });
      }
      expect(await codeOf(op.client.removeOperator({ keyId: op.operator.keyId }))).toMatchObject({ code: 'failed_precondition', grpc: status.FAILED_PRECONDITION });
      expect((await op.client.listOperators({})).operators.map((o) => toHex(o.keyId))).toEqual([toHex(op.operator.keyId)]);
    } finally {
      asCarol.close();
      asDave.close();
    }
  });

  it.runIf(backend === 'postgres')('keeps versions gapless with 50 concurrent RevokeAgent calls', async () => {
    const agents = await Promise.all(Array.from({ length: 50 }, (_, i) => register(`conc-${i}-${seq}`)));
    const before = Number((await op.client.getRevocationList({})).currentVersion);
    const entries = await Promise.all(agents.map(({ agent }) => op.client.revokeAgent({ subject: { case: 'agentId', value: agent.agentId } })));
    const versions = entries.map((e) => Number(e.entry!.version)).sort((a, b) => a - b);
    expect(versions).toEqual(Array.from({ length: 50 }, (_, i) => before + i + 1));
    const list = await op.client.getRevocationList({});
    new RevocationListFollower(crypto, { registryId: op.registryId, trustBundle: await bundle() }).apply(list.entries, list.head);
  });

  it('refuses a replayed operator request after a restart too (nonces are persisted)', async () => {
    const { agent } = await register(newId('restart'));
    const request = { subject: { case: 'agentId' as const, value: agent.agentId } };
    const path = '/parley.v1.RegistryService/RevokeAgent';
    const body = toBinary(RevokeAgentRequestSchema, create(RevokeAgentRequestSchema, request));
    const signed = signOperatorRequest(crypto, op.operator, { registryId: op.registryId, path, body });
    const raw = plainClient(registry);
    await raw.revokeAgent(request, { metadata: signed });
    raw.close();
    op.close();
    expect(await registry.stop()).toBe(0);
    registry = await serveRegistry(fixture, ['--heartbeat-ms', '300']);
    op = await operatorClient(registry, fixture, crypto);
    const again = plainClient(registry);
    expect(await codeOf(again.revokeAgent(request, { metadata: signed }))).toMatchObject({ code: 'permission_denied', details: 'operator request replayed (nonce already used)' });
    again.close();
    // And everything registered before the restart is still there.
    expect((await op.client.getAgent({ agentId: agent.agentId })).agent!.status).toBe(AgentStatus.REVOKED);
  }, 60_000);

  it('limits a GetRevocationList response by size too (about 1 MiB): long reasons page instead of failing', async () => {
    const reasonText = '€'.repeat(1024); // 3 KiB of UTF-8 per entry
    const agents = [];
    for (let i = 0; i < 400; i += 20) {
      agents.push(...(await Promise.all(Array.from({ length: 20 }, () => register(newId('big'))))));
    }
    for (let i = 0; i < agents.length; i += 20) {
      await Promise.all(agents.slice(i, i + 20).map(({ agent }) => op.client.revokeAgent({ subject: { case: 'agentId', value: agent.agentId }, reasonText })));
    }
    const first = await op.client.getRevocationList({});
    const bytes = first.entries.reduce((n, e) => n + Buffer.byteLength(e.reasonText, 'utf8'), 0);
    expect(bytes).toBeLessThanOrEqual(1024 * 1024);
    expect(first.head!.version).toBeLessThan(first.currentVersion);
    // A consumer pages on current_version and gets everything, verified.
    const follower = new RevocationListFollower(crypto, { registryId: op.registryId, trustBundle: await bundle() });
    let after = 0n;
    for (;;) {
      const page = await op.client.getRevocationList({ afterVersion: after });
      follower.apply(page.entries, page.head);
      after = page.head!.version;
      if (after >= page.currentVersion) break;
    }
    expect(BigInt(follower.version)).toBe(first.currentVersion);
  }, 120_000);

  it('rotates the issuer online: prepared and published first, active when due (heads and certificates signed by it), the old key retired, then dropped', async () => {
    const pinned = await bundle();
    const follower = new TrustBundleFollower({ crypto, client: op.client, registryId: op.registryId, pinned });
    await follower.refresh();
    const before = follower.version;
    const { agent: oldAgent } = await register(newId('pre-rotation'));
    const anon = plainClient(registry);
    expect(await codeOf(anon.rotateIssuer({}))).toMatchObject({ code: 'unauthenticated' });
    anon.close();
    expect(await codeOf(op.client.rotateIssuer({ graceMs: -1n }))).toMatchObject({ code: 'malformed' });
    const rotation = await op.client.rotateIssuer({ activateAfterMs: 1500n, graceMs: 3000n });
    expect(rotation.certificatesOutlivingGrace).toBeGreaterThan(0n);
    expect(await codeOf(op.client.rotateIssuer({ activateAfterMs: 1500n }))).toMatchObject({ code: 'failed_precondition' });
    const newKeyId = toHex(rotation.prepared!.keyId);
    // Published at once, PREPARED: a follower trusts it before it signs anything.
    await follower.refresh();
    expect(follower.version).toBe(before + 1);
    expect(follower.trustBundle.get(rotation.prepared!.keyId)).toBeDefined();
    const state = (await op.client.getTrustBundle({})).issuers.find((i) => toHex(i.keyId) === newKeyId);
    expect(state).toMatchObject({ state: IssuerKeyState.PREPARED, active: false });
    // Until it activates, everything is still signed by the old key.
    const head = (await op.client.getRevocationList({})).head!;
    expect(toHex(head.issuerKeyId)).not.toBe(newKeyId);
    // Active when due: the next document is signed by it, and so are heads and new certificates.
    const activeBy = Date.now() + 15_000;
    for (;;) {
      const issuers = (await op.client.getTrustBundle({})).issuers;
      if (issuers.find((i) => toHex(i.keyId) === newKeyId)?.state === IssuerKeyState.ACTIVE) break;
      if (Date.now() > activeBy) throw new Error('the prepared key did not become active');
      await new Promise((r) => setTimeout(r, 100));
    }
    await follower.refresh();
    expect(toHex(follower.document!.signerKeyId)).toBe(newKeyId);
    expect(toHex((await op.client.getRevocationList({})).head!.issuerKeyId)).toBe(newKeyId);
    const { agent: newAgent } = await register(newId('post-rotation'));
    expect(toHex(newAgent.certificate!.issuerKeyId)).toBe(newKeyId);
    // Both verify under the followed bundle; the old one only until the grace ends.
    const verify = (cert: typeof oldAgent.certificate, nowMs = Date.now()) => verifyCertificate(crypto, cert!, { trustBundle: follower.trustBundle, nowMs });
    expect(verify(oldAgent.certificate).agentId).toBe(oldAgent.agentId);
    expect(verify(newAgent.certificate).agentId).toBe(newAgent.agentId);
    const retired = follower.trustBundle.get(oldAgent.certificate!.issuerKeyId)!;
    expect(retired.notAfterMs).toBeDefined();
    expect(() => verify(oldAgent.certificate, retired.notAfterMs!)).toThrow(/expired/);
    // After the grace, the retired key leaves the bundle.
    const droppedBy = Date.now() + 20_000;
    for (;;) {
      // A poll that finds the database restarting is polled again: the shared PostgreSQL is restarted by the
      // gateway's resilience suite, which CI runs beside this one (a refresh is `unavailable` for that second).
      await follower.refresh().catch((error: unknown) => {
        if (!isRpcError(error, 'unavailable')) throw error;
      });
      if (follower.trustBundle.get(oldAgent.certificate!.issuerKeyId) === undefined) break;
      if (Date.now() > droppedBy) throw new Error('the retired key was not dropped');
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(() => verify(oldAgent.certificate)).toThrow(/unknown_issuer/);
    expect(verify(newAgent.certificate).agentId).toBe(newAgent.agentId);
    await follower.close();
  }, 60_000);
});
