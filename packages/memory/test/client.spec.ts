// MemoryClient against a store that lies (docs/PROTOCOL.md §18.5, §18.12): a stand-in MemoryService
// over gRPC answers GetMemory with a state the test builds from signed records — an honest one, and
// one where the current key epoch (and the client's copy of it) was made by a member the log already
// removed, or goes back in the log from an epoch the client has already accepted. The client must
// refuse the forgeries (`bad_signature`): writing under such an epoch would hand the data to the
// removed member.
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { MemoryAccess, MemoryService, type EpochRecord, type KeyWrap, type MembershipEntry, type MessageInitShape, type GetMemoryRequest, type GetMemoryResponseSchema } from '@parley/proto';
import { RpcError, addService } from '@parley/rpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryClient, Membership, changeEntry, createEntry, membershipEntryHash, newCutEpoch, newEpoch, wrapKey, type EpochKey } from '../src/index.js';
import { createWorld, expectCode, type TestAgent, type World } from './fixtures.js';

let w: World;
let owner: TestAgent;
let removed: TestAgent;
let me: TestAgent;
let server: Server;
let address: string;
/** What the stand-in store answers GetMemory with. */
let answer: MessageInitShape<typeof GetMemoryResponseSchema> | undefined;

beforeAll(async () => {
  w = await createWorld();
  owner = w.agent('planner-1', 'planner');
  removed = w.agent('worker-2');
  me = w.agent('worker-3');
  server = new Server();
  const unused = async (): Promise<never> => {
    throw new RpcError('internal', 'not used by this test');
  };
  addService(server, MemoryService, {
    getMemory: async (req: GetMemoryRequest) => {
      if (answer === undefined) throw new RpcError('internal', 'no answer set');
      return { ...answer, entries: (answer.entries as MembershipEntry[]).filter((e) => e.version > req.afterVersion) };
    },
    createMemory: unused,
    listMemories: unused,
    listSegments: unused,
    readSegment: unused,
    writeSegment: unused,
    updateMembership: unused,
    rotateEpoch: unused,
    getAgentCertificate: unused,
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err === null ? resolve(p) : reject(err))));
  address = `127.0.0.1:${port}`;
});

afterAll(() => {
  server.forceShutdown();
});

const NOW = Date.now();

/** A memory's signed state as a store holds it. */
interface State {
  memoryId: string;
  log: Membership;
  epochs: EpochKey[];
}

function client(): MemoryClient {
  return new MemoryClient({ crypto: w.crypto, identity: me, address, serviceId: 'gw-1', trustBundle: w.trustBundle, retryUnavailableMs: 0, clock: () => NOW + 100 });
}

/** GetMemory's answer for `state`, with `wrap` as this client's copy of the current epoch. */
function response(state: State, epochs: readonly EpochRecord[], wrap: KeyWrap): MessageInitShape<typeof GetMemoryResponseSchema> {
  const current = epochs[epochs.length - 1]!;
  const cert = (a: TestAgent) => ({ memberId: a.agentId, access: state.log.member(a.agentId)!.access, memberPublicKey: a.publicKey, expiresAtMs: 0n, certificate: a.certificate });
  return {
    memory: { memoryId: state.memoryId, ownerId: owner.agentId, access: MemoryAccess.WRITE, createdAtMs: BigInt(NOW), membershipVersion: state.log.version, currentEpoch: current.epoch },
    entries: [...state.log.entries] as MembershipEntry[],
    members: [owner, me].map(cert),
    epochs: [...epochs],
    wrap,
    rotationRequired: false,
  };
}

/** Owner creates; grants `removed` and this client write; `removed` starts epoch 2 (as any writer may). */
function start(): State {
  const { memoryId, entry } = createEntry(w.crypto, owner, owner.publicKey, { nowMs: NOW });
  const log = Membership.create(w.crypto, entry, memoryId);
  const e1 = newEpoch(w.crypto, owner, memoryId, { version: 1n, hash: log.head }, undefined, NOW);
  log.append(changeEntry(w.crypto, owner, log, { kind: 'grant', memberId: removed.agentId, access: MemoryAccess.WRITE, publicKey: removed.publicKey, expiresAtMs: 0 }, NOW + 1));
  log.append(changeEntry(w.crypto, owner, log, { kind: 'grant', memberId: me.agentId, access: MemoryAccess.WRITE, publicKey: me.publicKey, expiresAtMs: 0 }, NOW + 2));
  const e2 = newEpoch(w.crypto, removed, memoryId, { version: log.version, hash: log.head }, e1, NOW + 3);
  return { memoryId, log, epochs: [e1, e2] };
}

describe('MemoryClient against a lying store (§18.5, §18.12)', () => {
  it('refuses a current epoch, and a key copy, made by a member the log has removed', async () => {
    const s = start();
    const [e1, e2] = s.epochs as [EpochKey, EpochKey];
    // The owner removes the writer, with the next epoch made for the REVOKE's version (what an honest store keeps).
    const revoke = changeEntry(w.crypto, owner, s.log, { kind: 'revoke', memberId: removed.agentId, publicKey: removed.publicKey }, NOW + 4);
    const honest = newEpoch(w.crypto, owner, s.memoryId, { version: revoke.version, hash: membershipEntryHash(w.crypto, s.memoryId, revoke) }, e2, NOW + 4);
    // Before its removal was recorded, the removed member made an epoch 3 of its own (it knows that key).
    const forged = newEpoch(w.crypto, removed, s.memoryId, { version: s.log.version, hash: s.log.head }, e2, NOW + 4);
    s.log.append(revoke);

    answer = response(s, [e1.record, e2.record, honest.record], wrapKey(w.crypto, owner, s.memoryId, honest, { memberId: me.agentId, publicKey: me.publicKey }));
    const good = client();
    try {
      expect((await good.get(s.memoryId)).currentEpoch).toBe(3);
    } finally {
      good.close();
    }

    answer = response(s, [e1.record, e2.record, forged.record], wrapKey(w.crypto, removed, s.memoryId, forged, { memberId: me.agentId, publicKey: me.publicKey }));
    const fooled = client();
    try {
      const error = await expectCode(() => fooled.get(s.memoryId), 'bad_signature');
      expect(error.message).toMatch(/revocation/);
    } finally {
      fooled.close();
    }
    // The honest epoch with a copy handed out by the removed member (it holds the key of epoch 3 only if it made it): refused too.
    answer = response(s, [e1.record, e2.record, honest.record], wrapKey(w.crypto, removed, s.memoryId, honest, { memberId: me.agentId, publicKey: me.publicKey }));
    const fooled2 = client();
    try {
      await expectCode(() => fooled2.get(s.memoryId), 'bad_signature');
    } finally {
      fooled2.close();
    }
  });

  it('a grant with another agent\'s certificate is refused with the certificate\'s code, printed once', async () => {
    const s = start();
    const c = client();
    try {
      const error = await expectCode(() => c.grant(s.memoryId, removed.agentId, 'read', { certificate: owner.certificate }), 'identity_mismatch');
      expect(error.message.match(/\[identity_mismatch\]/g)).toHaveLength(1);
      expect(error.message).toMatch(/^\[identity_mismatch\] certificate of worker-2: /);
    } finally {
      c.close();
    }
  });

  it('refuses a next epoch made for an older log version than an epoch it has already accepted', async () => {
    const s = start();
    const [e1, e2] = s.epochs as [EpochKey, EpochKey];
    const other = w.agent('worker-4');
    s.log.append(changeEntry(w.crypto, owner, s.log, { kind: 'grant', memberId: other.agentId, access: MemoryAccess.READ, publicKey: other.publicKey, expiresAtMs: 0 }, NOW + 5));
    const e3 = newEpoch(w.crypto, owner, s.memoryId, { version: s.log.version, hash: s.log.head }, e2, NOW + 6);
    const c = client();
    try {
      answer = response(s, [e1.record, e2.record, e3.record], wrapKey(w.crypto, owner, s.memoryId, e3, { memberId: me.agentId, publicKey: me.publicKey }));
      expect((await c.get(s.memoryId)).currentEpoch).toBe(3);
      // Now the store drops the older records and serves an epoch 4 a writer made for log version 3, before epoch 3's version 4.
      const back = newEpoch(w.crypto, removed, s.memoryId, { version: 3n, hash: s.log.hashAt(3n)! }, e3, NOW + 7);
      answer = response(s, [back.record], wrapKey(w.crypto, removed, s.memoryId, back, { memberId: me.agentId, publicKey: me.publicKey }));
      await expectCode(() => c.get(s.memoryId), 'bad_signature');
    } finally {
      c.close();
    }
  });

  it('accepts an epoch without a back link (a cut) only as the epoch of a REVOKE, made by the admin who signed it (§18.5)', async () => {
    const s = start();
    const [e1, e2] = s.epochs as [EpochKey, EpochKey];
    const copy = (by: TestAgent, e: EpochKey) => wrapKey(w.crypto, by, s.memoryId, e, { memberId: me.agentId, publicKey: me.publicKey });
    const served = async (records: readonly EpochRecord[], wrap: KeyWrap, code?: 'bad_signature') => {
      answer = response(s, records, wrap);
      const c = client();
      try {
        if (code === undefined) return await c.get(s.memoryId);
        expect((await expectCode(() => c.get(s.memoryId), code)).message).toMatch(/is a cut \(no back link\) but is not the epoch of a revocation/);
        return undefined;
      } finally {
        c.close();
      }
    };
    // A cut for the log's head, a GRANT: refused, though its creator is the owner.
    const forGrant = newCutEpoch(w.crypto, owner, s.memoryId, { version: s.log.version, hash: s.log.head }, 3, NOW + 4);
    await served([e1.record, e2.record, forGrant.record], copy(owner, forGrant), 'bad_signature');
    // The owner revokes the writer that made epoch 2.
    const revoke = changeEntry(w.crypto, owner, s.log, { kind: 'revoke', memberId: removed.agentId, publicKey: removed.publicKey }, NOW + 4);
    s.log.append(revoke);
    const forRevoke = { version: revoke.version, hash: membershipEntryHash(w.crypto, s.memoryId, revoke) };
    // A cut for the REVOKE's version made by someone else than its signer (a writer still on record): refused.
    const byWriter = newCutEpoch(w.crypto, me, s.memoryId, forRevoke, 3, NOW + 4);
    await served([e1.record, e2.record, byWriter.record], copy(me, byWriter), 'bad_signature');
    // By the REVOKE's signer: the memory's current epoch, with nothing before it reachable.
    const cut = newCutEpoch(w.crypto, owner, s.memoryId, forRevoke, 3, NOW + 4);
    const info = await served([e1.record, e2.record, cut.record], copy(owner, cut));
    expect(info?.currentEpoch).toBe(3);
    expect(info?.keyFaults).toEqual([]);
  });
});
