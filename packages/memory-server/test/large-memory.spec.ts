// A memory at its limits stays readable (docs/PROTOCOL.md §18.2; @parley/memory limits.ts): the store
// served over real gRPC on loopback (as the gateway serves it: no send limit), a real MemoryClient. The
// memory is filled to 4096 membership entries, 256 members with 4096-byte certificates, 8192 key epochs
// and 128-byte ids throughout — signed records that verify, written into the tables directly (thousands of
// calls would each reload the log) — so its GetMemory answer is 5.7 MB (within 2% of the bound), well over
// the 2,162,768 bytes a client used to accept. A client with that old limit fails with `too_large`; the client as built
// reads the memory, writes and reads a segment. And the certificate a grant carries, which every answer
// repeats, is capped at 4096 bytes by the store.
import { bytes } from '@parley/db';
import { MAX_CERTIFICATE_BYTES, certificateTbs, encodeCertificate, issueCertificate } from '@parley/identity';
import {
  MAX_GET_MEMORY_RESPONSE_BYTES,
  MAX_SEGMENT_CIPHERTEXT_BYTES,
  MEMORY_MAX_RECEIVE_BYTES,
  Membership,
  MemoryClient,
  changeEntry,
  isMemoryError,
  memoryRequestSigner,
  newEpoch,
  openWrap,
  wrapKey,
  type EpochKey,
} from '@parley/memory';
import {
  AgentCertificateSchema,
  EpochRecordSchema,
  GetMemoryResponseSchema,
  KeyWrapSchema,
  MembershipEntrySchema,
  MemoryAccess,
  MemoryService,
  create,
  fromBinary,
  toBinary,
  type AgentCertificate,
} from '@parley/proto';
import { RpcError, addService, createClient } from '@parley/rpc';
import { loopbackCredentials, serveOnLoopback, type LoopbackServer } from '@parley/test-support';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_ID, openHarness, type Harness, type TestAgent } from './harness.js';

const DAY = 86_400_000;
/** What every client accepted before: two segment ciphertexts and 64 KiB. */
const OLD_RECEIVE_LIMIT = 2 * MAX_SEGMENT_CIPHERTEXT_BYTES + 65_536;
const NEVER = Number.MAX_SAFE_INTEGER;
const ENTRIES = 4096;
const EPOCHS = 8192;

let h: Harness;
let server: LoopbackServer;
let address: string;

beforeAll(async () => {
  h = await openHarness();
  // As apps/gateway/src/server.ts: a receive limit for requests, no send limit.
  server = await serveOnLoopback((s) => addService(s, MemoryService, h.store), { 'grpc.max_receive_message_length': MAX_SEGMENT_CIPHERTEXT_BYTES + 65_536 });
  address = server.address;
});

afterAll(async () => {
  server?.close();
  await h?.close();
});

/** A 128-byte agent id, distinct per `i`. */
const agentId = (prefix: string, i = 0): string => `${prefix}-${i}.`.padEnd(128, 'z');

/** Capabilities that take `room` bytes of a certificate: 128-byte ones (131 encoded), then one for the rest. */
function capabilitiesFor(room: number): string[] {
  const out: string[] = [];
  const full = Math.floor(room / 131);
  for (let i = 0; i < full && i < 63; i++) out.push(String(i).padStart(2, '0').padEnd(128, 'c'));
  const rest = room - out.length * 131;
  if (rest >= 3) out.push('99'.padEnd(Math.min(rest - 2, 127), 'c'));
  return out;
}

/** An agent whose certificate (issued by the harness's issuer) is as large as a certificate may be, 4096 bytes. */
function largeAgent(id: string): TestAgent {
  const kp = h.crypto.ed25519.generateKeyPair();
  const fields = { agentId: id, identityPublicKey: kp.publicKey, agentType: 't'.repeat(64), validFromMs: h.clock.now - DAY, validUntilMs: h.clock.now + 365 * DAY };
  const base = encodeCertificate(issueCertificate(h.crypto, h.issuer, { ...fields, capabilities: [] })).length;
  const certificate = issueCertificate(h.crypto, h.issuer, { ...fields, capabilities: capabilitiesFor(MAX_CERTIFICATE_BYTES - base) });
  expect(encodeCertificate(certificate).length).toBeGreaterThan(MAX_CERTIFICATE_BYTES - 3);
  return { agentId: id, signingKey: kp.secretKey, certificate, publicKey: kp.publicKey };
}

function clientFor(agent: TestAgent, receiveLimit?: number): MemoryClient {
  return new MemoryClient({
    crypto: h.crypto,
    identity: agent,
    address,
    serviceId: SERVICE_ID,
    trustBundle: h.trustBundle,
    clock: h.clock.fn,
    retryUnavailableMs: 0,
    ...(receiveLimit === undefined ? {} : { channelOptions: { 'grpc.max_receive_message_length': receiveLimit } }),
  });
}

async function insertRows(table: string, columns: readonly string[], rows: readonly unknown[][]): Promise<void> {
  for (let i = 0; i < rows.length; i += 500) {
    const chunk = rows.slice(i, i + 500);
    const values = chunk.map((_, r) => `(${columns.map((__, c) => `$${r * columns.length + c + 1}`).join(', ')})`).join(', ');
    await h.db.query(`INSERT INTO ${table} (${columns.join(', ')}) VALUES ${values}`, chunk.flat());
  }
}

/** The stored state of a memory just created: its log and the owner's epoch 1 key. */
async function stored(memoryId: string, owner: TestAgent): Promise<{ log: Membership; epoch: EpochKey }> {
  const entry = await h.db.query<{ entry: unknown }>('SELECT entry FROM memory_membership_log WHERE memory_id = $1 AND version = 1', [memoryId]);
  const record = await h.db.query<{ record: unknown }>('SELECT record FROM memory_epochs WHERE memory_id = $1 AND epoch = 1', [memoryId]);
  const wrap = await h.db.query<{ wrap: unknown }>('SELECT wrap FROM memory_key_wraps WHERE memory_id = $1 AND member_id = $2', [memoryId, owner.agentId]);
  const log = Membership.restore(h.crypto, memoryId, [fromBinary(MembershipEntrySchema, bytes(entry[0]!.entry))]);
  const epoch = openWrap(h.crypto, owner, memoryId, fromBinary(KeyWrapSchema, bytes(wrap[0]!.wrap)), fromBinary(EpochRecordSchema, bytes(record[0]!.record)));
  return { log, epoch };
}

/** A memory created by `owner` through a client of its own (closed after). */
async function createdBy(owner: Parameters<typeof clientFor>[0]): Promise<string> {
  const creator = clientFor(owner);
  try {
    return (await creator.create()).memoryId;
  } finally {
    creator.close();
  }
}

describe('a memory at its limits over gRPC (§18.2)', () => {
  it('is read whole by a client, though its GetMemory answer is larger than the old receive limit', async () => {
    const owner = largeAgent(agentId('owner'));
    const members = Array.from({ length: 255 }, (_, i) => largeAgent(agentId('member', i)));
    const memoryId = await createdBy(owner);

    // The log: 255 grants, then a member revoked and granted again up to entry 4096 (the last REVOKE is 4095).
    const { log, epoch: first } = await stored(memoryId, owner);
    const t = h.clock.now;
    const churn = members[members.length - 1]!;
    for (const m of members) log.append(changeEntry(h.crypto, owner, log, { kind: 'grant', memberId: m.agentId, access: MemoryAccess.WRITE, publicKey: m.publicKey, expiresAtMs: NEVER }, t));
    while (log.version < BigInt(ENTRIES)) {
      const revoke = (log.version - 256n) % 2n === 0n;
      log.append(
        changeEntry(h.crypto, owner, log, revoke ? { kind: 'revoke', memberId: churn.agentId, publicKey: churn.publicKey } : { kind: 'grant', memberId: churn.agentId, access: MemoryAccess.WRITE, publicKey: churn.publicKey, expiresAtMs: NEVER }, t),
      );
    }
    // Epochs 2..8192, two per log version, the last one for the head (after the last REVOKE).
    const epochs: EpochKey[] = [];
    let previous = first;
    for (let e = 2; e <= EPOCHS; e++) {
      const version = BigInt(Math.min(ENTRIES, Math.ceil(e / 2)));
      const next = newEpoch(h.crypto, owner, memoryId, { version, hash: log.hashAt(version)! }, previous, t);
      if (previous !== first) previous.key.wipe();
      epochs.push(next);
      previous = next;
    }
    first.key.wipe();
    const wrap = wrapKey(h.crypto, owner, memoryId, previous, { memberId: owner.agentId, publicKey: owner.publicKey });
    previous.key.wipe();

    await insertRows(
      'memory_membership_log',
      ['memory_id', 'version', 'entry', 'entry_hash'],
      log.entries.slice(1).map((e) => [memoryId, Number(e.version), toBinary(MembershipEntrySchema, e), log.hashAt(e.version)!]),
    );
    await insertRows(
      'memory_members',
      ['memory_id', 'member_id', 'access', 'public_key', 'expires_at_ms', 'certificate'],
      members.map((m) => [memoryId, m.agentId, MemoryAccess.WRITE, m.publicKey, NEVER, toBinary(AgentCertificateSchema, m.certificate)]),
    );
    await insertRows('memory_epochs', ['memory_id', 'epoch', 'record'], epochs.map((e) => [memoryId, e.record.epoch, toBinary(EpochRecordSchema, e.record)]));
    await h.db.query('DELETE FROM memory_key_wraps WHERE memory_id = $1', [memoryId]);
    await insertRows('memory_key_wraps', ['memory_id', 'member_id', 'epoch', 'wrap'], [[memoryId, owner.agentId, EPOCHS, toBinary(KeyWrapSchema, wrap)]]);
    await h.db.query('UPDATE memories SET membership_version = $2, membership_head = $3, current_epoch = $4 WHERE memory_id = $1', [memoryId, ENTRIES, log.head, EPOCHS]);

    // The answer as the store sends it: larger than the old limit, within the bound.
    const raw = createClient(MemoryService, address, loopbackCredentials(), {
      signer: memoryRequestSigner(h.crypto, owner, SERVICE_ID, h.clock.fn),
      channelOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024 },
    });
    let size: number;
    try {
      size = toBinary(GetMemoryResponseSchema, await raw.getMemory({ memoryId, afterVersion: 0n })).length;
    } finally {
      raw.close();
    }
    expect(size).toBeGreaterThan(OLD_RECEIVE_LIMIT);
    expect(size).toBeLessThanOrEqual(MAX_GET_MEMORY_RESPONSE_BYTES);
    expect(size).toBeGreaterThan(0.95 * MAX_GET_MEMORY_RESPONSE_BYTES); // close to the worst case: the test is at the limits
    expect(size).toBeLessThan(MEMORY_MAX_RECEIVE_BYTES);

    // A client with the old limit cannot read it: the defect.
    const old = clientFor(owner, OLD_RECEIVE_LIMIT);
    try {
      await old.get(memoryId).then(
        () => expect.fail('a client with the old receive limit read the memory'),
        (error: unknown) => expect(isMemoryError(error, 'too_large'), String(error)).toBe(true),
      );
    } finally {
      old.close();
    }

    // The client as built reads it whole, verifies it, and works with it.
    const c = clientFor(owner);
    try {
      const info = await c.get(memoryId);
      expect(info.membershipVersion).toBe(BigInt(ENTRIES));
      expect(info.currentEpoch).toBe(EPOCHS);
      expect(info.members).toHaveLength(256);
      await c.write(memoryId, 'plan', 'still readable', { previousVersion: 0 });
      const read = await c.read(memoryId, 'plan');
      expect(new TextDecoder().decode(read.data)).toBe('still readable');
      expect(read.record.keyEpoch).toBe(EPOCHS);
    } finally {
      c.close();
    }
    // About 50 s on its own on a 2-CPU machine: room for running beside the other spec files.
  }, 180_000);

  it('refuses a grant whose certificate encodes to more than 4096 bytes (every GetMemory answer repeats it)', async () => {
    const owner = h.agent('owner-small');
    const memoryId = await createdBy(owner);
    const { log, epoch } = await stored(memoryId, owner);
    const kp = h.crypto.ed25519.generateKeyPair();
    const id = agentId('big');
    // Issuer-signed and valid in every field (64 capabilities of 127 bytes), but 8 KiB encoded.
    const cert: AgentCertificate = create(AgentCertificateSchema, {
      version: 1,
      agentId: id,
      identityPublicKey: kp.publicKey,
      agentType: 'worker',
      capabilities: Array.from({ length: 64 }, (_, i) => String(i).padStart(2, '0').padEnd(127, 'c')),
      validFromMs: BigInt(h.clock.now - DAY),
      validUntilMs: BigInt(h.clock.now + DAY),
      serial: h.crypto.randomBytes(16),
      issuerKeyId: h.issuer.keyId,
    });
    cert.signature = h.crypto.ed25519.sign(certificateTbs(cert), h.issuer.secretKey);
    expect(toBinary(AgentCertificateSchema, cert).length).toBeGreaterThan(MAX_CERTIFICATE_BYTES);
    const entry = changeEntry(h.crypto, owner, log, { kind: 'grant', memberId: id, access: MemoryAccess.READ, publicKey: kp.publicKey, expiresAtMs: 0 }, h.clock.now);
    const wraps = [wrapKey(h.crypto, owner, memoryId, epoch, { memberId: id, publicKey: kp.publicKey })];
    let thrown: unknown;
    try {
      await h.call(owner, 'updateMembership', { memoryId, entry, memberCertificate: cert, wraps });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(RpcError);
    expect((thrown as RpcError).code).toBe('malformed');
    expect((thrown as RpcError).message).toMatch(/more than 4096/);
    // The same grant with a certificate of 4096 bytes is accepted.
    const fits = largeAgent(id);
    const ok = changeEntry(h.crypto, owner, log, { kind: 'grant', memberId: id, access: MemoryAccess.READ, publicKey: fits.publicKey, expiresAtMs: 0 }, h.clock.now);
    const res = await h.call(owner, 'updateMembership', {
      memoryId,
      entry: ok,
      memberCertificate: fits.certificate,
      wraps: [wrapKey(h.crypto, owner, memoryId, epoch, { memberId: id, publicKey: fits.publicKey })],
    });
    expect(res.membershipVersion).toBe(2n);
    epoch.key.wipe();
  });
});
