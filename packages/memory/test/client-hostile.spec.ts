// MemoryClient against a hostile store (docs/PROTOCOL.md §18.2, §18.4, §18.5, §18.7, §18.12): a stand-in
// MemoryService over gRPC answers from states the test builds out of signed records, and lies in the ways
// a review reproduced — endless listings, an answer the client refuses after it changed its cache, a new
// write a removed writer signed under an old epoch, a rollback after the memory left the client's cache,
// `rotation_required: false` while an expired member holds the current key, and a GRANT backdated by an
// expired admin — and a member's "fault" it fakes from genuine signed material (a copy sealed to an old key of
// this agent, a losing rotation's copy or record): refused, or recorded as not proven. The client must refuse each
// (or rotate first), whatever the store says.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import {
  MembershipChange,
  MemoryAccess,
  MemoryService,
  type EpochRecord,
  type GetMemoryResponseSchema,
  type KeyWrap,
  type ListMemoriesResponseSchema,
  type ListSegmentsResponseSchema,
  type MembershipEntry,
  type MessageInitShape,
  type ReadSegmentResponseSchema,
  type RotateEpochRequest,
  type UpdateMembershipRequest,
  type WriteSegmentRequest,
} from '@parley/proto';
import { RpcError, addService } from '@parley/rpc';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  MemoryClient,
  Membership,
  changeEntry,
  createEntry,
  membershipEntryHash,
  membershipLayout,
  newEpoch,
  sealWrite,
  wrapKey,
  BACK_LINK_BYTES,
  epochLayout,
  keyWrapLayout,
  type EpochKey,
  type MemoryClientOptions,
} from '../src/index.js';
import { createWorld, expectCode, type TestAgent, type World } from './fixtures.js';

type Answer = MessageInitShape<typeof GetMemoryResponseSchema>;

let w: World;
let owner: TestAgent;
let removed: TestAgent;
let me: TestAgent;
let server: Server;
let address: string;
const NOW = Date.now();

/** What the stand-in store answers, per test. */
const store = {
  answers: new Map<string, Answer>(),
  listMemories: undefined as undefined | ((token: string) => MessageInitShape<typeof ListMemoriesResponseSchema>),
  listSegments: undefined as undefined | ((token: string) => MessageInitShape<typeof ListSegmentsResponseSchema>),
  readSegment: undefined as undefined | (() => MessageInitShape<typeof ReadSegmentResponseSchema>),
  calls: 0,
  writes: [] as WriteSegmentRequest[],
  rotations: [] as RotateEpochRequest[],
  updates: [] as UpdateMembershipRequest[],
};

/** The old code follows an endless listing: the stand-in stops it here with a code the new code never gives. */
const ENOUGH = 300;

beforeAll(async () => {
  w = await createWorld();
  owner = w.agent('planner-1', 'planner');
  removed = w.agent('worker-2');
  me = w.agent('worker-3');
  server = new Server();
  const unused = async (): Promise<never> => {
    throw new RpcError('internal', 'not used by this test');
  };
  const endless = (): void => {
    if (++store.calls > ENOUGH) throw new RpcError('internal', 'the client is still paging');
  };
  addService(server, MemoryService, {
    getMemory: async (req) => {
      const answer = store.answers.get(req.memoryId);
      if (answer === undefined) throw new RpcError('permission_denied', 'no such memory');
      return { ...answer, entries: (answer.entries as MembershipEntry[]).filter((e) => e.version > req.afterVersion) };
    },
    listMemories: async (req) => {
      endless();
      return store.listMemories!(req.pageToken);
    },
    listSegments: async (req) => {
      endless();
      return store.listSegments!(req.pageToken);
    },
    readSegment: async () => store.readSegment!(),
    writeSegment: async (req) => {
      store.writes.push(req);
      return { outcome: { case: 'accepted', value: { version: req.record!.version, alreadyApplied: false } } };
    },
    rotateEpoch: async (req) => {
      // An honest store would install it: so does the stand-in, with this client's copy.
      store.rotations.push(req);
      const answer = store.answers.get(req.memoryId)!;
      const epoch = req.epoch!;
      store.answers.set(req.memoryId, {
        ...answer,
        memory: { ...(answer.memory as object), currentEpoch: epoch.epoch },
        epochs: [...(answer.epochs as EpochRecord[]), epoch],
        wrap: req.wraps.find((x) => x.memberId === me.agentId)!,
        rotationRequired: false,
      } as Answer);
      return { currentEpoch: epoch.epoch };
    },
    createMemory: unused,
    updateMembership: async (req) => {
      // Recorded, never installed: the tests only look at what the client sent.
      store.updates.push(req);
      throw new RpcError('internal', 'not installed by the stand-in');
    },
    getAgentCertificate: unused,
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err === null ? resolve(p) : reject(err))));
  address = `127.0.0.1:${port}`;
});

afterAll(() => {
  server.forceShutdown();
});

beforeEach(() => {
  store.answers.clear();
  store.listMemories = undefined;
  store.listSegments = undefined;
  store.readSegment = undefined;
  store.calls = 0;
  store.writes = [];
  store.rotations = [];
  store.updates = [];
});

/** A memory's signed state as a store holds it. */
interface State {
  memoryId: string;
  log: Membership;
  epochs: EpochKey[];
}

function client(options: Partial<MemoryClientOptions> = {}): MemoryClient {
  return new MemoryClient({ crypto: w.crypto, identity: me, address, serviceId: 'gw-1', trustBundle: w.trustBundle, retryUnavailableMs: 0, clock: () => NOW + 100, ...options });
}

async function using<T>(c: MemoryClient, fn: (c: MemoryClient) => Promise<T>): Promise<T> {
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/**
 * GetMemory's answer for `state` with its first `epochs` (default all), and `wrap` as this client's copy of the last
 * (`withhold`: no copy at all).
 */
function answer(s: State, opts: { epochs?: readonly EpochKey[]; wrap?: KeyWrap; withhold?: boolean; members?: readonly TestAgent[]; version?: bigint } = {}): Answer {
  const epochs = opts.epochs ?? s.epochs;
  const current = epochs[epochs.length - 1]!;
  const version = opts.version ?? s.log.version;
  const entries = s.log.entries.filter((e) => e.version <= version);
  const members = (opts.members ?? [owner, me]).map((a) => ({ memberId: a.agentId, access: MemoryAccess.WRITE, memberPublicKey: a.publicKey, expiresAtMs: 0n, certificate: a.certificate }));
  return {
    memory: { memoryId: s.memoryId, ownerId: owner.agentId, access: MemoryAccess.WRITE, createdAtMs: BigInt(NOW), membershipVersion: version, currentEpoch: current.record.epoch },
    entries: [...entries] as MembershipEntry[],
    members,
    epochs: epochs.map((e) => e.record),
    ...(opts.withhold === true ? {} : { wrap: opts.wrap ?? wrapKey(w.crypto, owner, s.memoryId, current, { memberId: me.agentId, publicKey: me.publicKey }) }),
    rotationRequired: false,
  };
}

function newMemory(): State {
  const { memoryId, entry } = createEntry(w.crypto, owner, owner.publicKey, { nowMs: NOW });
  const log = Membership.create(w.crypto, entry, memoryId);
  return { memoryId, log, epochs: [newEpoch(w.crypto, owner, memoryId, { version: 1n, hash: log.head }, undefined, NOW)] };
}

function grant(s: State, by: TestAgent, to: TestAgent, access: MemoryAccess, at: number, expiresAtMs = 0): void {
  s.log.append(changeEntry(w.crypto, by, s.log, { kind: 'grant', memberId: to.agentId, access, publicKey: to.publicKey, expiresAtMs }, at));
}

/** The owner revokes `who` with the next epoch made for the REVOKE's version. */
function revoke(s: State, who: TestAgent, at: number): void {
  const entry = changeEntry(w.crypto, owner, s.log, { kind: 'revoke', memberId: who.agentId, publicKey: who.publicKey }, at);
  s.epochs.push(newEpoch(w.crypto, owner, s.memoryId, { version: entry.version, hash: membershipEntryHash(w.crypto, s.memoryId, entry) }, s.epochs[s.epochs.length - 1], at));
  s.log.append(entry);
}

/** Owner creates; grants `removed` and this client write; `removed` starts epoch 2 (as any writer may). */
function start(): State {
  const s = newMemory();
  grant(s, owner, removed, MemoryAccess.WRITE, NOW + 1);
  grant(s, owner, me, MemoryAccess.WRITE, NOW + 2);
  s.epochs.push(newEpoch(w.crypto, removed, s.memoryId, { version: s.log.version, hash: s.log.head }, s.epochs[0], NOW + 3));
  return s;
}

describe('F4: listings a store never ends (§18.2)', () => {
  it('list() refuses a repeated page token, and a listing beyond its cap, as malformed', async () => {
    const summary = (i: number) => ({ memoryId: `mem-${i.toString(16).padStart(32, '0')}`, ownerId: owner.agentId, access: MemoryAccess.READ, createdAtMs: BigInt(NOW), expiresAtMs: 0n, membershipVersion: 1n, currentEpoch: 1 });
    store.listMemories = () => ({ memories: [summary(1)], nextPageToken: 'again' });
    await using(client(), async (c) => {
      await expectCode(() => c.list(), 'malformed');
      expect(store.calls).toBe(2);
    });
    store.calls = 0;
    const full = Array.from({ length: 500 }, (_, i) => summary(i));
    store.listMemories = (token) => ({ memories: full, nextPageToken: `p${Number(token.slice(1) || '0') + 1}` });
    await using(client(), async (c) => {
      await expectCode(() => c.list(), 'malformed');
      expect(store.calls).toBe(201); // 100,000 memories, then refused
    });
  });

  it('segments() refuses a repeated page token, and more pages than the memory could fill, as malformed', async () => {
    const s = start();
    store.answers.set(s.memoryId, answer(s));
    store.listSegments = () => ({ segments: [], nextPageToken: 'again' });
    await using(client(), async (c) => {
      await expectCode(() => c.segments(s.memoryId), 'malformed');
      expect(store.calls).toBe(2);
    });
    store.calls = 0;
    store.listSegments = (token) => ({ segments: [], nextPageToken: `${token}x` });
    await using(client(), async (c) => {
      await expectCode(() => c.segments(s.memoryId), 'malformed');
      expect(store.calls).toBeLessThanOrEqual(14); // 10,000 segments (the default quota) in pages of 1000, and room
    });
  });
});

describe('F5: a refused answer changes nothing (§18.5)', () => {
  it('after refusing a REVOKE served without its epoch, write() does not seal under the epoch before it', async () => {
    const s = start();
    store.answers.set(s.memoryId, answer(s));
    await using(client(), async (c) => {
      expect((await c.get(s.memoryId)).membershipVersion).toBe(3n);
      // The owner revokes `removed`; the store serves the REVOKE but keeps epoch 2 (which `removed` made) current.
      const honest = { ...s, log: Membership.restore(w.crypto, s.memoryId, s.log.entries), epochs: [...s.epochs] };
      revoke(honest, removed, NOW + 4);
      store.answers.set(s.memoryId, answer(honest, { epochs: s.epochs }));
      await expectCode(() => c.get(s.memoryId), 'bad_signature');
      await expectCode(() => c.write(s.memoryId, 'plan', 'secret', { previousVersion: 0 }), 'bad_signature');
      expect(store.writes).toHaveLength(0);
    });
  });
});

describe('F6: a write record verifies only as a write its writer could make under its epoch (§18.7)', () => {
  it('refuses a new write a removed writer signs under an old epoch it reaches through back links', async () => {
    const s = newMemory();
    // The owner starts epoch 2 before anyone else joins; `removed` joins with epoch 2 and is removed (epoch 3).
    s.epochs.push(newEpoch(w.crypto, owner, s.memoryId, { version: 1n, hash: s.log.head }, s.epochs[0], NOW + 1));
    grant(s, owner, removed, MemoryAccess.WRITE, NOW + 2);
    grant(s, owner, me, MemoryAccess.WRITE, NOW + 3);
    const honestWrite = sealWrite(w.crypto, removed, s.memoryId, s.epochs[1]!, { segmentId: 'plan', previousVersion: 0n, data: new TextEncoder().encode('mine'), expiresAtMs: 0, nowMs: NOW + 3 });
    revoke(s, removed, NOW + 4);
    store.answers.set(s.memoryId, answer(s));
    const later = NOW + 3_600_000;
    await using(client({ clock: () => later }), async (c) => {
      // What `removed` wrote while it was a writer still reads.
      store.readSegment = () => honestWrite;
      expect(new TextDecoder().decode((await c.read(s.memoryId, 'plan')).data)).toBe('mine');
      // An hour after its removal, under epoch 1 (it never held write while epoch 1 was current) …
      const underOld = sealWrite(w.crypto, removed, s.memoryId, s.epochs[0]!, { segmentId: 'plan', previousVersion: 1n, data: new TextEncoder().encode('forged'), expiresAtMs: 0, nowMs: later });
      store.readSegment = () => underOld;
      await expectCode(() => c.read(s.memoryId, 'plan'), 'bad_signature');
      // … or under epoch 2 (it did), dated after its REVOKE.
      const afterRevoke = sealWrite(w.crypto, removed, s.memoryId, s.epochs[1]!, { segmentId: 'plan', previousVersion: 1n, data: new TextEncoder().encode('forged'), expiresAtMs: 0, nowMs: later });
      store.readSegment = () => afterRevoke;
      await expectCode(() => c.read(s.memoryId, 'plan'), 'bad_signature');
    });
  });
});

describe('F3: rollback detection outlives the cache (§18.12)', () => {
  it('refuses a memory served at the version before a REVOKE after it left the cache', async () => {
    const a = start();
    const before = a.log.version;
    const beforeEpochs = [...a.epochs];
    revoke(a, removed, NOW + 4);
    const b = start();
    store.answers.set(a.memoryId, answer(a));
    store.answers.set(b.memoryId, answer(b));
    await using(client({ cacheSize: 1 }), async (c) => {
      expect((await c.get(a.memoryId)).currentEpoch).toBe(3);
      await c.get(b.memoryId); // evicts a
      // The store now shows `a` before the REVOKE, with the epoch `removed` made.
      store.answers.set(a.memoryId, answer(a, { version: before, epochs: beforeEpochs }));
      await expectCode(() => c.write(a.memoryId, 'plan', 'secret', { previousVersion: 0 }), 'replay');
      expect(store.writes).toHaveLength(0);
    });
  });
});

describe('F1: the client decides itself when a rotation is due (§18.5)', () => {
  it('rotates before writing when a member whose grant expired could hold the current epoch, though the store says no', async () => {
    const temp = w.agent('temp-4');
    const s = newMemory();
    grant(s, owner, me, MemoryAccess.WRITE, NOW + 1);
    grant(s, owner, temp, MemoryAccess.READ, NOW + 2, NOW + 1000); // holds epoch 1 (its grant carried a copy)
    store.answers.set(s.memoryId, answer(s));
    await using(client({ clock: () => NOW + 10_000 }), async (c) => {
      await c.write(s.memoryId, 'plan', 'secret', { previousVersion: 0 });
      expect(store.rotations).toHaveLength(1);
      expect(store.rotations[0]!.wraps.map((x) => x.memberId).sort()).toEqual([me.agentId, owner.agentId].sort());
      expect(store.writes).toHaveLength(1);
      expect(store.writes[0]!.record!.keyEpoch).toBe(2);
      // Once the epoch is past the expiry, no further rotation.
      await c.write(s.memoryId, 'plan', 'more', { previousVersion: 1 });
      expect(store.rotations).toHaveLength(1);
    });
  });
});

describe('F2: a backdated entry by an expired admin (§18.4)', () => {
  it('the log refuses an entry dated before its head', async () => {
    const s = newMemory();
    grant(s, owner, me, MemoryAccess.WRITE, NOW + 10);
    const back = changeEntry(w.crypto, owner, s.log, { kind: 'grant', memberId: removed.agentId, access: MemoryAccess.READ, publicKey: removed.publicKey, expiresAtMs: 0 }, NOW + 5);
    back.timestampMs = BigInt(NOW + 5);
    back.signature = w.crypto.ed25519.sign(membershipLayout(s.memoryId, back), owner.signingKey);
    await expectCode(() => s.log.append(back), 'malformed');
    // An honest signer never dates an entry before the head, whatever its clock says.
    expect(changeEntry(w.crypto, owner, s.log, { kind: 'grant', memberId: removed.agentId, access: MemoryAccess.READ, publicKey: removed.publicKey, expiresAtMs: 0 }, NOW + 5).timestampMs).toBe(BigInt(NOW + 10));
  });

  it('a client that saw the head after an admin expired refuses a later entry that admin signs', async () => {
    const admin = w.agent('admin-5');
    const puppet = w.agent('puppet-6');
    const s = newMemory();
    grant(s, owner, admin, MemoryAccess.ADMIN, NOW + 1, NOW + 1000);
    grant(s, owner, me, MemoryAccess.WRITE, NOW + 2);
    store.answers.set(s.memoryId, answer(s));
    await using(client({ clock: () => NOW + 600_000 }), async (c) => {
      expect((await c.get(s.memoryId)).membershipVersion).toBe(3n);
      // Ten minutes after its expiry the admin, with the store, appends a GRANT dated inside its grant.
      grant(s, admin, puppet, MemoryAccess.READ, NOW + 500);
      store.answers.set(s.memoryId, answer(s));
      await expectCode(() => c.get(s.memoryId), 'bad_signature');
    });
  });
});

describe('F7: a store that withholds a key copy cannot turn a revocation into a cut (§18.5)', () => {
  /** Owner creates; grants `removed` write and this client admin; `removed` starts epoch 2 (as any writer may). */
  function withAdmin(): State {
    const s = newMemory();
    grant(s, owner, removed, MemoryAccess.WRITE, NOW + 1);
    grant(s, owner, me, MemoryAccess.ADMIN, NOW + 2);
    s.epochs.push(newEpoch(w.crypto, removed, s.memoryId, { version: s.log.version, hash: s.log.head }, s.epochs[0], NOW + 3));
    return s;
  }
  const all = (): TestAgent[] => [owner, me, removed];

  it('an admin given no copy of the current epoch makes no cut: revoke() fails permission_denied and sends nothing', async () => {
    const s = withAdmin();
    // The store serves epoch 2 but withholds this admin's copy of it.
    store.answers.set(s.memoryId, answer(s, { withhold: true, members: all() }));
    await using(client(), async (c) => {
      const info = await c.get(s.memoryId);
      expect(info.currentEpoch).toBe(2);
      expect(info.keyFaults).toEqual([]); // nothing was given, so nothing failed to open: no member is at fault
      const e = await expectCode(() => c.revoke(s.memoryId, removed.agentId), 'permission_denied');
      expect(e.message).toContain('holds no key of epoch 2 or later');
      expect(store.updates).toHaveLength(0); // in particular no REVOKE with an empty back link
    });
  });

  it('an admin that held epoch 1 and is then given no copy of epoch 2 makes no cut either', async () => {
    const s = withAdmin();
    // First the store serves epoch 1 with this admin's copy: the client holds epoch 1's key …
    const atEpoch1 = answer(s, { epochs: [s.epochs[0]!], members: all() });
    store.answers.set(s.memoryId, atEpoch1);
    await using(client(), async (c) => {
      expect((await c.get(s.memoryId)).currentEpoch).toBe(1);
      // … then epoch 2, withholding the copy: a key of an earlier epoch never stands in for the current one.
      store.answers.set(s.memoryId, answer(s, { withhold: true, members: all() }));
      expect((await c.get(s.memoryId)).currentEpoch).toBe(2);
      const e = await expectCode(() => c.revoke(s.memoryId, removed.agentId), 'permission_denied');
      expect(e.message).toContain('holds no key of epoch 2 or later');
      expect(store.updates).toHaveLength(0);
    });
  });

  // A copy sealed to this agent's key that does not open is provably its signer's fault; one that opens to
  // another key than the epoch commits to is not (the store may pair a genuine copy with another record of the
  // epoch), but leaves this agent without the key just the same: the revocation is a cut either way.
  it.each([
    ['does not open', true],
    ['opens to a random key', false],
  ] as const)('for contrast: given a copy of the current epoch that %s, the same revoke() is a cut', async (_, proven) => {
    const s = withAdmin();
    const bad = proven
      ? unopenableCopy(removed, s.memoryId, s.epochs[1]!, me)
      : wrapKey(w.crypto, removed, s.memoryId, { record: s.epochs[1]!.record, key: w.crypto.randomKey('aead') }, { memberId: me.agentId, publicKey: me.publicKey });
    store.answers.set(s.memoryId, answer(s, { wrap: bad, members: all() }));
    await using(client(), async (c) => {
      expect((await c.get(s.memoryId)).keyFaults).toEqual([{ epoch: 2, memberId: removed.agentId, kind: 'keyCopy', proven }]);
      const e = await expectCode(() => c.write(s.memoryId, 'x', 'y', { previousVersion: 0 }), 'decrypt_failed');
      expect(e.message).toContain(proven ? `the key copy of epoch 2 that member ${removed.agentId} made for this agent does not open` : `either ${removed.agentId} sealed another key`);
      await expectCode(() => c.revoke(s.memoryId, removed.agentId), 'internal'); // the stand-in installs nothing
      expect(store.updates.length).toBeGreaterThanOrEqual(1);
      const sent = store.updates[0]!;
      expect(sent.entry!.change).toBe(MembershipChange.REVOKE);
      expect(sent.entry!.memberId).toBe(removed.agentId);
      expect(sent.epoch!.epoch).toBe(3);
      expect(sent.epoch!.backLink.length).toBe(0);
      expect(sent.wraps.map((x) => x.memberId).sort()).toEqual([me.agentId, owner.agentId].sort());
    });
  });
});

/** `signer`'s copy of `epoch` for `member`, signed as sealed to its key but sealed to another: it does not open. */
function unopenableCopy(signer: TestAgent, memoryId: string, epoch: EpochKey, member: TestAgent): KeyWrap {
  const copy = wrapKey(w.crypto, signer, memoryId, epoch, { memberId: member.agentId, publicKey: w.agent('stranger-8').publicKey });
  copy.memberPublicKey = member.publicKey;
  copy.signature = w.crypto.ed25519.sign(keyWrapLayout(w.crypto, memoryId, copy), signer.signingKey);
  return copy;
}

describe('F8: a fault the store fakes from genuine signed material (§18.5)', () => {
  let bystander: TestAgent;
  /**
   * Owner creates; grants `removed` write, this client admin and a bystander write. `removed` (honest) tries a
   * rotation the store answers `conflict` (or two writers race): attempt A, the loser; its retry B is installed.
   */
  function withLoser(): { s: State; loser: EpochKey } {
    bystander ??= w.agent('worker-9');
    const s = newMemory();
    grant(s, owner, removed, MemoryAccess.WRITE, NOW + 1);
    grant(s, owner, me, MemoryAccess.ADMIN, NOW + 2);
    grant(s, owner, bystander, MemoryAccess.WRITE, NOW + 3);
    const loser = newEpoch(w.crypto, removed, s.memoryId, { version: s.log.version, hash: s.log.head }, s.epochs[0], NOW + 4);
    s.epochs.push(newEpoch(w.crypto, removed, s.memoryId, { version: s.log.version, hash: s.log.head }, s.epochs[0], NOW + 5));
    return { s, loser };
  }
  const all = (): TestAgent[] => [owner, me, removed, bystander];

  it('a genuine copy sealed to an old key of this agent (it re-keyed and was granted again) is the store\'s fault: refused bad_signature, no fault, no cut', async () => {
    const s = newMemory();
    grant(s, owner, removed, MemoryAccess.WRITE, NOW + 1);
    grant(s, owner, me, MemoryAccess.ADMIN, NOW + 2);
    // removed (honest) starts epoch 2 and seals it to this agent's key of that time …
    s.epochs.push(newEpoch(w.crypto, removed, s.memoryId, { version: s.log.version, hash: s.log.head }, s.epochs[0], NOW + 3));
    const oldCopy = wrapKey(w.crypto, removed, s.memoryId, s.epochs[1]!, { memberId: me.agentId, publicKey: me.publicKey });
    // … then this agent rotates its identity key and the owner grants it again under the new one.
    const me2 = w.agent(me.agentId);
    grant(s, owner, me2, MemoryAccess.ADMIN, NOW + 4);
    store.answers.set(s.memoryId, answer(s, { wrap: oldCopy, members: [owner, me2, removed] }));
    await using(client({ identity: me2 }), async (c) => {
      const e = await expectCode(() => c.get(s.memoryId), 'bad_signature');
      expect(e.message).toContain("sealed to another key than this agent's identity key");
      await expectCode(() => c.revoke(s.memoryId, removed.agentId), 'bad_signature');
      expect(store.updates).toHaveLength(0); // no revocation, so no cut
    });
    // The same client given the copy sealed to its new key opens it.
    store.answers.set(s.memoryId, answer(s, { wrap: wrapKey(w.crypto, owner, s.memoryId, s.epochs[1]!, { memberId: me.agentId, publicKey: me2.publicKey }), members: [owner, me2, removed] }));
    await using(client({ identity: me2 }), async (c) => {
      expect((await c.get(s.memoryId)).keyFaults).toEqual([]);
    });
  });

  it('a genuine copy of a losing rotation served with the installed record: adopted, a fault not proven, a message naming both possibilities; a revocation still cuts', async () => {
    const { s, loser } = withLoser();
    // Honest: removed sealed attempt A's real key to this agent and signed it.
    const staleCopy = wrapKey(w.crypto, removed, s.memoryId, loser, { memberId: me.agentId, publicKey: me.publicKey });
    store.answers.set(s.memoryId, answer(s, { wrap: staleCopy, members: all() }));
    await using(client(), async (c) => {
      const info = await c.get(s.memoryId);
      expect(info.keyFaults).toEqual([{ epoch: 2, memberId: removed.agentId, kind: 'keyCopy', proven: false }]);
      const e = await expectCode(() => c.write(s.memoryId, 'x', 'y', { previousVersion: 0 }), 'decrypt_failed');
      expect(e.message).toContain(
        `the key copy of epoch 2 that ${removed.agentId} signed does not match the key epoch 2 commits to: either ${removed.agentId} sealed another key, or the store paired the copy with another record of epoch 2 (a copy's signature does not cover the commitment); the owner or an admin can revoke ${removed.agentId} if it is at fault`,
      );
      // The store can delete history's ciphertext anyway: a cut it induces gives it no new power over availability.
      await expectCode(() => c.revoke(s.memoryId, bystander.agentId), 'internal'); // the stand-in installs nothing
      expect(store.updates[0]!.epoch!.epoch).toBe(3);
      expect(store.updates[0]!.epoch!.backLink.length).toBe(0);
    });
  });

  it('a losing record of the previous epoch served before the installed epoch 3: the back link fault is not proven', async () => {
    const { s, loser } = withLoser();
    // The owner makes epoch 3, linking back honestly to the installed epoch 2 (B).
    s.epochs.push(newEpoch(w.crypto, owner, s.memoryId, { version: s.log.version, hash: s.log.head }, s.epochs[1], NOW + 6));
    store.answers.set(s.memoryId, answer({ ...s, epochs: [s.epochs[0]!, loser, s.epochs[2]!] }, { members: all() }));
    await using(client(), async (c) => {
      const info = await c.get(s.memoryId);
      expect(info.keyFaults).toEqual([{ epoch: 3, memberId: owner.agentId, kind: 'backLink', proven: false }]);
      store.readSegment = () => ({ record: sealWrite(w.crypto, removed, s.memoryId, loser, { segmentId: 'old', previousVersion: 0n, data: new Uint8Array([1]), expiresAtMs: 0, nowMs: NOW + 5 }).record, ciphertext: new Uint8Array(41) });
      const e = await expectCode(() => c.read(s.memoryId, 'old'), 'decrypt_failed');
      expect(e.message).toContain(`the back link of epoch 3, made by member ${owner.agentId}, does not open to the key of epoch 2: either ${owner.agentId} made a bad back link or the store served another record of epoch 2`);
      expect(e.message).toContain(`can revoke ${owner.agentId} if it is at fault`);
    });
  });

  it('for contrast: a back link that does not open under the key its epoch commits to is proven', async () => {
    const s = start();
    const e3 = newEpoch(w.crypto, owner, s.memoryId, { version: s.log.version, hash: s.log.head }, s.epochs[1], NOW + 6);
    e3.record.backLink = w.crypto.randomBytes(BACK_LINK_BYTES);
    e3.record.signature = w.crypto.ed25519.sign(epochLayout(s.memoryId, e3.record), owner.signingKey);
    s.epochs.push(e3);
    store.answers.set(s.memoryId, answer(s));
    await using(client(), async (c) => {
      expect((await c.get(s.memoryId)).keyFaults).toEqual([{ epoch: 3, memberId: owner.agentId, kind: 'backLink', proven: true }]);
    });
  });
});
