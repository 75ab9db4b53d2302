// The agent's own revocation data (PROTOCOL §8.4, §15.6–§15.7). New-user review finding: the README said
// "revocation is checked at the handshake and for every message opened", but an agent connected as documented
// (`registry`, no `revocations`) checked no revocation at all — only the gateway did. Now `registry` alone makes
// the agent follow the registry's signed revocation list itself: a revocation closes the peer's sessions at once
// and refuses its messages and handshakes `revoked`; data older than `revocationMaxAgeMs` refuses everything
// `revocation_stale` (fail closed) and recovers by itself. Without `registry` and `revocations` the agent says
// at connect that it checks nothing (`revocation_unchecked`).
//
// Agents talk through a stand-in relay that refuses nothing (every refusal here is the agents' own) and follow a
// stand-in registry that serves a real signed, chained list.
import { createCrypto, type ParleyCrypto } from '@parley/crypto-core';
import { MemoryRevocationSet, TrustBundle, createIssuerKey, issueCertificate, revocationEntryHash, revocationHeadLayout, EMPTY_CHAIN_HASH, type IssuerKey } from '@parley/identity';
import { MessageType, RevocationReason, create, GetRevocationListResponseSchema, type GetRevocationListResponse, type WatchRevocationsResponse } from '@parley/proto';
import type { LocalIdentity } from '@parley/session';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Agent, type AgentEvent, type ConnectOptions, type ReceivedMessage } from '../src/index.js';
import { Journal, replay, type JournalRecord } from '../src/journal.js';
import { RegistryRevocations, keptFromJournal, type RevocationListEvent, type RevocationSource } from '../src/revocation-follow.js';
import { memoryStateStore } from '../src/state-store.js';
import { standInRegistry, type StandInRegistry } from './stand-in-registry.js';
import { standInRelay, type StandInRelay } from './stand-in-relay.js';

const DAY = 86_400_000;

let crypto: ParleyCrypto;
let issuer: IssuerKey;
let trustBundle: TrustBundle;
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  crypto = await createCrypto();
  issuer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
  trustBundle = TrustBundle.from(crypto, [{ publicKey: issuer.publicKey }]);
});

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function identity(agentId: string): LocalIdentity {
  const keyPair = crypto.ed25519.generateKeyPair();
  const now = Date.now();
  const certificate = issueCertificate(crypto, issuer, { agentId, identityPublicKey: keyPair.publicKey, agentType: 'worker', capabilities: [], validFromMs: now - DAY, validUntilMs: now + DAY });
  return { agentId, signingKey: keyPair.secretKey, certificate };
}

async function relay(): Promise<StandInRelay> {
  const r = await standInRelay();
  cleanup.push(() => r.close());
  return r;
}

async function registry(): Promise<StandInRegistry> {
  const r = await standInRegistry(crypto, issuer);
  cleanup.push(() => r.close());
  return r;
}

interface Running {
  readonly agent: Agent;
  readonly events: AgentEvent[];
  readonly received: ReceivedMessage[];
}

/** An agent on the relay; its application acks every message. */
async function online(agentId: string, gw: StandInRelay, extra: Partial<ConnectOptions> = {}): Promise<Running> {
  const events: AgentEvent[] = [];
  const received: ReceivedMessage[] = [];
  const agent = await connect({
    gateway: gw.address,
    expectedGatewayId: 'gw-1',
    identity: identity(agentId),
    trustBundle,
    crypto,
    handshakeTimeoutMs: 2_000,
    resendIntervalMs: 500,
    reconnect: { initialDelayMs: 10, maxDelayMs: 100 },
    onEvent: (e) => events.push(e),
    ...extra,
  });
  cleanup.push(() => agent.close());
  void (async () => {
    try {
      for await (const m of agent.messages()) {
        received.push(m);
        await m.ack();
      }
    } catch {
      // closed
    }
  })();
  return { agent, events, received };
}

const security = (r: Running, stage: string, code: string, peer: string): AgentEvent[] =>
  r.events.filter((e) => e.kind === 'security' && e.stage === stage && e.code === code && 'senderId' in e && e.senderId === peer);
const listEvents = (r: Running, kind: RevocationListEvent['kind']): RevocationListEvent[] =>
  r.events.flatMap((e) => (e.kind === 'revocation_list' && e.event.kind === kind ? [e.event] : []));

describe('with `registry` and no `revocations`, the agent follows the registry revocation list itself', () => {
  it('a revocation closes the revoked peer’s session at once, and its later messages and handshakes are refused `revoked` by the agent', async () => {
    const gw = await relay();
    const reg = await registry();
    const alice = await online('alice', gw, { registry: { address: reg.address } });
    const bob = await online('bob', gw, { registry: { address: reg.address } });

    await bob.agent.send('alice', MessageType.TASK_ASSIGNMENT, { n: 1 }, { timeoutMs: 10_000 });
    expect(alice.received.map((m) => m.content)).toEqual([{ n: 1 }]);
    const session = alice.agent.sessions.sessions().find((s) => s.peerId === 'bob')!;

    reg.revoke('bob');
    // At once, by the agent's own data (the relay checks nothing): the session with bob closes, reported.
    await expect.poll(() => security(alice, 'revocation', 'revoked', 'bob').length, { timeout: 5_000 }).toBe(1);
    expect(session.isClosed).toBe(true);
    expect(alice.events.some((e) => e.kind === 'closed' && e.session === session)).toBe(true);
    expect(listEvents(alice, 'synced')).toHaveLength(1);
    expect(listEvents(alice, 'updated')).toEqual([{ kind: 'updated', from: 0, to: 1, revoked: [{ agentId: 'bob', reason: 'key-compromise' }] }]);
    expect(alice.agent.revocationStatus()).toMatchObject({ version: 1, state: 'current', fresh: true, revocations: 1, maxAgeMs: 60_000 });

    // bob (not told) sends again in its old session: alice has no such session any more (SessionReject), bob
    // reseals in a new handshake, and alice refuses that handshake: bob is revoked.
    await expect(bob.agent.send('alice', MessageType.TASK_ASSIGNMENT, { n: 2 }, { timeoutMs: 4_000 })).rejects.toBeDefined();
    await expect.poll(() => security(alice, 'handshake', 'revoked', 'bob').length, { timeout: 5_000 }).toBeGreaterThan(0);
    expect(alice.received.map((m) => m.content)).toEqual([{ n: 1 }]);
    expect(alice.agent.sessions.sessions().filter((s) => s.peerId === 'bob')).toEqual([]);
  }, 30_000);

  it('data older than `revocationMaxAgeMs` refuses messages `revocation_stale` (left unacked, tried again), and the agent resumes by itself', async () => {
    const gw = await relay();
    const reg = await registry();
    const alice = await online('alice', gw, { registry: { address: reg.address }, revocationMaxAgeMs: 1_500 });
    const bob = await online('bob', gw, { registry: { address: reg.address }, revocationMaxAgeMs: 1_500 });
    await bob.agent.send('alice', MessageType.TASK_ASSIGNMENT, { n: 1 }, { timeoutMs: 10_000 });

    reg.down = true;
    await expect.poll(() => listEvents(alice, 'stale').length, { timeout: 5_000 }).toBe(1);
    expect(listEvents(alice, 'unreachable').length).toBeGreaterThan(0);
    expect(alice.agent.revocationStatus()).toMatchObject({ fresh: false, state: 'unreachable' });
    const sent = bob.agent.send('alice', MessageType.TASK_ASSIGNMENT, { n: 2 }, { timeoutMs: 30_000 });
    await expect.poll(() => security(alice, 'message', 'revocation_stale', 'bob').length, { timeout: 5_000 }).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(alice.received.map((m) => m.content)).toEqual([{ n: 1 }]); // fail closed: not handed over
    expect(security(alice, 'revocation', 'revoked', 'bob')).toEqual([]); // stale closes no session

    reg.down = false;
    const receipt = await sent; // the message left unacked opened once the data was fresh again
    expect(receipt.recipientId).toBe('alice');
    expect(alice.received.map((m) => m.content)).toEqual([{ n: 1 }, { n: 2 }]);
    expect(listEvents(alice, 'fresh').length).toBe(1);
    expect(alice.agent.revocationStatus()).toMatchObject({ fresh: true, state: 'current' });
  }, 40_000);

  it('heads are verified with the trust bundle: a list signed by another key is refused, and every check fails closed', async () => {
    const gw = await relay();
    const reg = await registry();
    reg.signer = createIssuerKey(crypto, crypto.ed25519.generateKeyPair());
    const alice = await online('alice', gw, { registry: { address: reg.address } });
    expect(listEvents(alice, 'refused').map((e) => 'code' in e && e.code)).toContain('unknown_issuer');
    expect(listEvents(alice, 'stale')).toHaveLength(1); // never loaded: fail closed
    expect(alice.agent.revocationStatus()).toMatchObject({ state: 'refusing', fresh: false, version: 0 });
    const bob = await online('bob', gw); // bob checks nothing (revocation_unchecked)
    await expect(bob.agent.send('alice', MessageType.TASK_ASSIGNMENT, { n: 1 }, { timeoutMs: 3_000 })).rejects.toBeDefined();
    await expect.poll(() => security(alice, 'handshake', 'revocation_stale', 'bob').length, { timeout: 5_000 }).toBeGreaterThan(0);
    expect(alice.received).toEqual([]);
  }, 30_000);

  it('a registry that refuses watches (its bound per address) is polled instead: the data stays fresh and revocations arrive', async () => {
    const gw = await relay();
    const reg = await registry();
    reg.refuseWatches = true;
    const alice = await online('alice', gw, { registry: { address: reg.address }, revocationMaxAgeMs: 2_000 });
    const before = reg.listCalls();
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    expect(reg.listCalls()).toBeGreaterThan(before + 1);
    expect(alice.agent.revocationStatus()).toMatchObject({ fresh: true });
    expect(listEvents(alice, 'stale')).toEqual([]);
    reg.revoke('mallory');
    await expect.poll(() => alice.agent.revocationStatus()?.revocations, { timeout: 5_000 }).toBe(1);
  }, 30_000);

  it('close() stops following: no watch stays open', async () => {
    const gw = await relay();
    const reg = await registry();
    const alice = await online('alice', gw, { registry: { address: reg.address } });
    await expect.poll(() => reg.watches(), { timeout: 5_000 }).toBe(1);
    await alice.agent.close();
    await expect.poll(() => reg.watches(), { timeout: 5_000 }).toBe(0);
  }, 30_000);
});

describe('other configurations', () => {
  it('without `registry` and `revocations`: one `revocation_unchecked` event at connect, and no revocation status', async () => {
    const gw = await relay();
    const alice = await online('alice', gw);
    expect(alice.events.filter((e) => e.kind === 'revocation_unchecked')).toHaveLength(1);
    expect(alice.agent.revocationStatus()).toBeUndefined();
    const given = new MemoryRevocationSet();
    given.apply([], 0, Date.now());
    const bob = await online('bob', gw, { revocations: given });
    expect(bob.events.filter((e) => e.kind === 'revocation_unchecked')).toEqual([]);
  });

  it('`revocationMaxAgeMs` without `registry`, with `revocations`, or below 1 s is refused `malformed`', async () => {
    const gw = await relay();
    const reg = await registry();
    const given = new MemoryRevocationSet();
    const base = { gateway: gw.address, expectedGatewayId: 'gw-1', identity: identity('alice'), trustBundle, crypto };
    await expect(connect({ ...base, revocationMaxAgeMs: 5_000 })).rejects.toMatchObject({ code: 'malformed' });
    await expect(connect({ ...base, registry: { address: reg.address }, revocations: given, revocationMaxAgeMs: 5_000 })).rejects.toMatchObject({ code: 'malformed' });
    await expect(connect({ ...base, registry: { address: reg.address }, revocationMaxAgeMs: 10 })).rejects.toMatchObject({ code: 'malformed' });
  });

  it('a checker given as `revocations`: a session whose peer it comes to revoke is closed within a second (§8.4), not at its next message', async () => {
    const gw = await relay();
    const given = new MemoryRevocationSet({ maxAgeMs: 3_600_000 });
    given.apply([], 0, Date.now());
    const alice = await online('alice', gw, { revocations: given });
    const bob = await online('bob', gw);
    await bob.agent.send('alice', MessageType.TASK_ASSIGNMENT, { n: 1 }, { timeoutMs: 10_000 });
    const session = alice.agent.sessions.sessions().find((s) => s.peerId === 'bob')!;
    given.apply([{ kind: 'agent', agentId: 'bob', reason: 'key-compromise', revokedAtMs: Date.now() }], 1, Date.now());
    await expect.poll(() => session.isClosed, { timeout: 3_000 }).toBe(true);
    expect(security(alice, 'revocation', 'revoked', 'bob')).toHaveLength(1);
  }, 30_000);
});

describe('RegistryRevocations', () => {
  /** A list of `n` agent revocations of a registry, chained and hashed as §15.6 says. */
  function list(registryId: Uint8Array, n: number): GetRevocationListResponse['entries'] {
    const out: GetRevocationListResponse['entries'] = [];
    let previous = EMPTY_CHAIN_HASH;
    for (let v = 1; v <= n; v++) {
      const fields = { version: v, kind: 'agent' as const, agentId: `agent-${v}`, serial: new Uint8Array(0), reason: RevocationReason.KEY_COMPROMISE, reasonText: '', revokedAtMs: 1 };
      const entryHash = revocationEntryHash(crypto, registryId, previous, fields);
      previous = entryHash;
      out.push(...create(GetRevocationListResponseSchema, { entries: [{ version: BigInt(v), subject: { case: 'agentId', value: fields.agentId }, reason: fields.reason, revokedAtMs: 1n, entryHash }] }).entries);
    }
    return out;
  }

  /** A registry serving `entries()` (it may shrink: a restored backup) with fresh signed heads, and no watches. */
  function source(registryId: Uint8Array, entries: () => GetRevocationListResponse['entries']): RevocationSource {
    const answer = (after: bigint): GetRevocationListResponse => {
      const all = entries();
      const v = all.length;
      const headHash = v === 0 ? EMPTY_CHAIN_HASH : all[v - 1]!.entryHash;
      const fields = { registryId, version: BigInt(v), headHash, issuedAtMs: BigInt(Date.now()), issuerKeyId: issuer.keyId };
      if (after > BigInt(v)) throw Object.assign(new Error('after_version beyond the current version'), { code: 'failed_precondition' });
      return create(GetRevocationListResponseSchema, { entries: all.slice(Number(after)), head: { ...fields, signature: crypto.ed25519.sign(revocationHeadLayout(fields), issuer.secretKey) }, currentVersion: BigInt(v) });
    };
    return {
      getRevocationList: (req) => Promise.resolve(answer(req.afterVersion)),
      watchRevocations: async function* (req): AsyncGenerator<WatchRevocationsResponse> {
        answer(req.afterVersion); // refuses a version beyond the list, as a registry does
        throw Object.assign(new Error('no watches here'), { code: 'unavailable' });
      },
    };
  }

  it('a list older than the one verified (a registry restored from a backup) is refused `rollback`: nothing is un-revoked', async () => {
    const registryId = crypto.randomBytes(16);
    const full = list(registryId, 3);
    let served = 3;
    const events: RevocationListEvent[] = [];
    const r = new RegistryRevocations({ crypto, trustBundle, registryId: () => registryId, onEvent: (e) => events.push(e), minBackoffMs: 20, maxBackoffMs: 50, pollIntervalMs: 50 });
    r.start(source(registryId, () => full.slice(0, served)));
    await r.synced;
    expect(r.status()).toMatchObject({ version: 3, revocations: 3 });
    served = 1; // the restored registry
    await expect.poll(() => events.some((e) => e.kind === 'refused' && e.code === 'rollback'), { timeout: 5_000 }).toBe(true);
    expect(r.status()).toMatchObject({ version: 3, revocations: 3, state: 'refusing' });
    expect(r.check({ agentId: 'agent-3', serial: new Uint8Array(16) }, Date.now())).toMatchObject({ revoked: true });
    await r.close();
  });
});

// Review finding (Q5): the followed list lived only in memory — after the registry was restored from an older
// backup, a restarted agent loaded the older list and accepted a peer it had seen revoked. With a state store the
// version verified and the revocations held are journaled (`revocations` records) and restored before following.
describe('with a state store, nothing is un-revoked across a restart (§15.6)', () => {
  const revocationRecords = async (store: ReturnType<typeof memoryStateStore>, stateKey: ReturnType<ParleyCrypto['randomKey']>): Promise<Extract<JournalRecord, { t: 'revocations' }>[]> =>
    (await new Journal(crypto, stateKey, store).load()).flatMap((r) => (r.t === 'revocations' ? [r] : []));

  it('a revocation seen in run 1 stays in force in run 2 against a registry restored from an older backup: the older list is refused `rollback`, stale until a fresh head, then the peer is refused `revoked`', async () => {
    const gw = await relay();
    const reg = await registry();
    const store = memoryStateStore();
    const stateKey = crypto.randomKey('aead');
    const durable = { registry: { address: reg.address }, stateStore: store, stateKey };

    const run1 = await online('alice', gw, durable);
    reg.revoke('mallory');
    reg.revoke('eve');
    await expect.poll(() => run1.agent.revocationStatus()?.version, { timeout: 5_000 }).toBe(2);
    const written = await revocationRecords(store, stateKey);
    expect(written.at(-1)?.version).toBe(2);
    expect(written.flatMap((r) => r.kept)).toEqual([
      { agent: 'mallory', reason: 'key-compromise', at: expect.any(Number) },
      { agent: 'eve', reason: 'key-compromise', at: expect.any(Number) },
    ]);
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(await revocationRecords(store, stateKey)).toHaveLength(written.length); // heartbeats (every 200 ms) write nothing
    await run1.agent.close();

    reg.restoreBackup(1); // the registry's database restored from a backup taken before eve's revocation
    const run2 = await online('alice', gw, durable);
    expect(listEvents(run2, 'refused').map((e) => 'code' in e && e.code)).toContain('rollback');
    // Freshness is never restored: every check fails closed until a fresh head at or past version 2 arrives.
    expect(run2.agent.revocationStatus()).toMatchObject({ version: 2, revocations: 2, fresh: false, state: 'refusing' });
    const eve = await online('eve', gw); // eve checks nothing herself
    await expect(eve.agent.send('alice', MessageType.TASK_ASSIGNMENT, { n: 1 }, { timeoutMs: 2_000 })).rejects.toBeDefined();
    await expect.poll(() => security(run2, 'handshake', 'revocation_stale', 'eve').length, { timeout: 5_000 }).toBeGreaterThan(0);

    // The restored registry goes on revoking someone else: version 2 again, without eve — a fork, taken with eve kept.
    reg.revoke('zed');
    await expect.poll(() => run2.agent.revocationStatus(), { timeout: 15_000 }).toMatchObject({ version: 2, revocations: 3, fresh: true, state: 'current' });
    expect(listEvents(run2, 'fork')).toEqual([expect.objectContaining({ kind: 'fork', code: 'revocation_fork', version: 2, kept: 1 })]);
    await expect(eve.agent.send('alice', MessageType.TASK_ASSIGNMENT, { n: 2 }, { timeoutMs: 2_000 })).rejects.toBeDefined();
    await expect.poll(() => security(run2, 'handshake', 'revoked', 'eve').length, { timeout: 5_000 }).toBeGreaterThan(0);
    expect(run2.received).toEqual([]);
    await run2.agent.close();

    // Compaction (at run 2's start) kept it all: the journal replays to version 2 with mallory, eve and zed.
    const kept = keptFromJournal(replay(await new Journal(crypto, stateKey, store).load()));
    expect(kept?.version).toBe(2);
    expect(kept?.registryId).toEqual(reg.registryId);
    expect(kept?.entries.map((e) => (e.kind === 'agent' ? e.agentId : '')).sort()).toEqual(['eve', 'mallory', 'zed']);
  }, 60_000);

  it('a journal written without `revocations` records (older code, or no registry) loads, and the list is followed from the registry', async () => {
    const gw = await relay();
    const reg = await registry();
    reg.revoke('mallory');
    const store = memoryStateStore();
    const stateKey = crypto.randomKey('aead');
    const before = await online('alice', gw, { stateStore: store, stateKey });
    await before.agent.close();
    expect(store.records.length).toBeGreaterThan(0);
    expect(await revocationRecords(store, stateKey)).toEqual([]);
    expect(replay(await new Journal(crypto, stateKey, store).load()).revocations).toBeUndefined();

    const after = await online('alice', gw, { registry: { address: reg.address }, stateStore: store, stateKey });
    expect(after.agent.revocationStatus()).toMatchObject({ version: 1, revocations: 1, fresh: true, state: 'current' });
    await expect.poll(() => revocationRecords(store, stateKey).then((r) => r.map((x) => x.version)), { timeout: 5_000 }).toEqual([1]);
  }, 30_000);
});
