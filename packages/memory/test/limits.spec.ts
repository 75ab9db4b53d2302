// The encoded-size bound of a GetMemory answer (limits.ts): a response built with the real protobuf
// schemas at every maximum the shape checks accept — every count at its limit, every id 128 bytes, every
// time 2^53−1, every epoch 2^32−1, every certificate 4096 bytes — encodes to exactly
// MAX_GET_MEMORY_RESPONSE_BYTES, and each item one step beyond a maximum is refused.
import { MAX_CERTIFICATE_BYTES, encodeCertificate } from '@parley/identity';
import {
  AgentCertificateSchema,
  EpochRecordSchema,
  GetMemoryResponseSchema,
  KeyWrapSchema,
  MembershipChange,
  MembershipEntrySchema,
  MemoryAccess,
  MemoryMemberSchema,
  create,
  toBinary,
  type AgentCertificate,
} from '@parley/proto';
import { describe, expect, it } from 'vitest';
import {
  BACK_LINK_BYTES,
  CREATION_NONCE_BYTES,
  HASH_BYTES,
  MAX_EPOCHS,
  MAX_EPOCH_RECORDS,
  MAX_EPOCH_RECORD_BYTES,
  MAX_GET_MEMORY_RESPONSE_BYTES,
  MAX_KEY_WRAP_BYTES,
  MAX_MEMBERS,
  MAX_MEMBERSHIP_ENTRIES,
  MAX_MEMBERSHIP_ENTRY_BYTES,
  MAX_MEMORY_MEMBER_BYTES,
  MAX_SEALED_KEY_BYTES,
  MAX_SEGMENT_CIPHERTEXT_BYTES,
  MEMORY_MAX_RECEIVE_BYTES,
  MemoryError,
  PUBLIC_KEY_BYTES,
  SIGNATURE_BYTES,
  assertEpochRecordShape,
  assertKeyWrapShape,
  assertMembershipEntryShape,
} from '../src/index.js';

const TIME = BigInt(Number.MAX_SAFE_INTEGER);
const U32 = 0xffff_ffff;
const U64 = 2n ** 64n - 1n;
const fill = (n: number, byte = 0xab): Uint8Array => new Uint8Array(n).fill(byte);
/** A 128-byte agent id, distinct per `i`. */
const agentId = (prefix: string, i = 0): string => `${prefix}-${i}.`.padEnd(128, 'z');

/** A structurally valid certificate (encodeCertificate accepts it) of exactly MAX_CERTIFICATE_BYTES. */
function largestCertificate(id: string): AgentCertificate {
  const base = {
    version: 1,
    agentId: id,
    identityPublicKey: fill(32, 1),
    agentType: 't'.repeat(64),
    validFromMs: TIME - 1n,
    validUntilMs: TIME,
    serial: fill(16, 2),
    issuerKeyId: fill(16, 3),
    signature: fill(64, 4),
  };
  const room = MAX_CERTIFICATE_BYTES - toBinary(AgentCertificateSchema, create(AgentCertificateSchema, base)).length;
  // Full capabilities (128 bytes: tag 1 + length 2 + 128 = 131) then one that takes the rest (tag 1 + length 1 + n).
  const capabilities: string[] = [];
  const full = Math.floor(room / 131);
  for (let i = 0; i < full; i++) capabilities.push(`${String(i).padStart(2, '0')}`.padEnd(128, 'c'));
  const rest = room - full * 131;
  if (rest >= 3) capabilities.push('99'.padEnd(rest - 2, 'c'));
  const cert = create(AgentCertificateSchema, { ...base, capabilities });
  expect(encodeCertificate(cert).length).toBe(MAX_CERTIFICATE_BYTES);
  return cert;
}

function largestEntry(change: MembershipChange) {
  return assertMembershipEntryShape(
    create(MembershipEntrySchema, {
      version: BigInt(MAX_MEMBERSHIP_ENTRIES),
      previousHash: fill(HASH_BYTES),
      change,
      memberId: agentId('member'),
      access: MemoryAccess.ADMIN,
      memberPublicKey: fill(PUBLIC_KEY_BYTES),
      expiresAtMs: TIME,
      timestampMs: TIME,
      signerId: agentId('signer'),
      creationNonce: change === MembershipChange.CREATE ? fill(CREATION_NONCE_BYTES) : new Uint8Array(0),
      signature: fill(SIGNATURE_BYTES),
    }),
  );
}

function largestEpoch() {
  return assertEpochRecordShape(
    create(EpochRecordSchema, {
      epoch: U32,
      keyCommitment: fill(HASH_BYTES),
      backLink: fill(BACK_LINK_BYTES),
      membershipVersion: BigInt(MAX_MEMBERSHIP_ENTRIES),
      membershipHash: fill(HASH_BYTES),
      createdAtMs: TIME,
      creatorId: agentId('creator'),
      signature: fill(SIGNATURE_BYTES),
    }),
  );
}

function largestWrap() {
  return assertKeyWrapShape(
    create(KeyWrapSchema, {
      epoch: U32,
      memberId: agentId('member'),
      memberPublicKey: fill(PUBLIC_KEY_BYTES),
      sealedKey: fill(MAX_SEALED_KEY_BYTES),
      signerId: agentId('signer'),
      signature: fill(SIGNATURE_BYTES),
    }),
  );
}

function refused(fn: () => unknown): void {
  expect(fn).toThrow(MemoryError);
}

describe('the largest GetMemory answer (limits.ts)', () => {
  it('each item at its maximum encodes to the size the bound counts, and one step beyond is refused', () => {
    expect(toBinary(MembershipEntrySchema, largestEntry(MembershipChange.REVOKE)).length).toBe(MAX_MEMBERSHIP_ENTRY_BYTES);
    expect(toBinary(MembershipEntrySchema, largestEntry(MembershipChange.CREATE)).length).toBe(MAX_MEMBERSHIP_ENTRY_BYTES + 2 + CREATION_NONCE_BYTES);
    expect(toBinary(EpochRecordSchema, largestEpoch()).length).toBe(MAX_EPOCH_RECORD_BYTES);
    expect(toBinary(KeyWrapSchema, largestWrap()).length).toBe(MAX_KEY_WRAP_BYTES);
    const member = create(MemoryMemberSchema, {
      memberId: agentId('member'),
      access: MemoryAccess.ADMIN,
      memberPublicKey: fill(PUBLIC_KEY_BYTES),
      expiresAtMs: TIME,
      certificate: largestCertificate(agentId('member')),
    });
    expect(toBinary(MemoryMemberSchema, member).length).toBe(MAX_MEMORY_MEMBER_BYTES);
    expect([MAX_MEMBERSHIP_ENTRY_BYTES, MAX_EPOCH_RECORD_BYTES, MAX_KEY_WRAP_BYTES, MAX_MEMORY_MEMBER_BYTES]).toEqual([421, 357, 657, 4275]);

    refused(() => assertMembershipEntryShape({ ...largestEntry(MembershipChange.GRANT), memberId: 'm'.repeat(129) }));
    refused(() => assertMembershipEntryShape({ ...largestEntry(MembershipChange.GRANT), version: BigInt(MAX_MEMBERSHIP_ENTRIES) + 1n }));
    refused(() => assertMembershipEntryShape({ ...largestEntry(MembershipChange.GRANT), timestampMs: TIME + 1n }));
    refused(() => assertMembershipEntryShape({ ...largestEntry(MembershipChange.GRANT), creationNonce: fill(CREATION_NONCE_BYTES) }));
    refused(() => assertEpochRecordShape({ ...largestEpoch(), epoch: U32 + 1 }));
    refused(() => assertEpochRecordShape({ ...largestEpoch(), creatorId: 'c'.repeat(129) }));
    refused(() => assertKeyWrapShape({ ...largestWrap(), sealedKey: fill(MAX_SEALED_KEY_BYTES + 1) }));
    expect(() => encodeCertificate({ ...largestCertificate(agentId('member')), agentType: 't'.repeat(65) })).toThrow();
    const cert = largestCertificate(agentId('member'));
    expect(() => encodeCertificate({ ...cert, capabilities: [...cert.capabilities.slice(0, -1), `${cert.capabilities.at(-1)!}c`] })).toThrow(/more than 4096/);
  });

  it('a response at every maximum encodes to exactly MAX_GET_MEMORY_RESPONSE_BYTES, within every client limit', () => {
    const response = create(GetMemoryResponseSchema, {
      memory: {
        memoryId: `mem-${'f'.repeat(32)}`,
        ownerId: agentId('owner'),
        access: MemoryAccess.ADMIN,
        createdAtMs: TIME,
        expiresAtMs: TIME,
        membershipVersion: BigInt(MAX_MEMBERSHIP_ENTRIES),
        currentEpoch: U32,
      },
      entries: [largestEntry(MembershipChange.CREATE), ...Array.from({ length: MAX_MEMBERSHIP_ENTRIES - 1 }, () => largestEntry(MembershipChange.GRANT))],
      members: Array.from({ length: MAX_MEMBERS }, (_, i) => ({
        memberId: agentId('member', i),
        access: MemoryAccess.ADMIN,
        memberPublicKey: fill(PUBLIC_KEY_BYTES),
        expiresAtMs: TIME,
        certificate: largestCertificate(agentId('member', i)),
      })),
      epochs: Array.from({ length: MAX_EPOCH_RECORDS }, () => largestEpoch()),
      wrap: largestWrap(),
      usage: { bytes: U64, segments: U64, maxBytes: U64, maxSegments: U64, ownerBytes: U64, ownerSegments: U64, ownerMaxBytes: U64, ownerMaxSegments: U64 },
      rotationRequired: true,
    });
    const size = toBinary(GetMemoryResponseSchema, response).length;
    expect(size).toBe(MAX_GET_MEMORY_RESPONSE_BYTES);
    expect(MAX_GET_MEMORY_RESPONSE_BYTES).toBe(5_781_963);
    expect(MAX_EPOCH_RECORDS).toBe(MAX_EPOCHS + MAX_MEMBERSHIP_ENTRIES);
    // The receive limit admits it (and the largest segment); the old limit did not.
    expect(MEMORY_MAX_RECEIVE_BYTES).toBeGreaterThanOrEqual(MAX_GET_MEMORY_RESPONSE_BYTES);
    expect(MEMORY_MAX_RECEIVE_BYTES).toBeGreaterThan(2 * MAX_SEGMENT_CIPHERTEXT_BYTES);
    expect(size).toBeGreaterThan(2 * MAX_SEGMENT_CIPHERTEXT_BYTES + 65_536);
    expect(MEMORY_MAX_RECEIVE_BYTES).toBeLessThan(16 * 1024 * 1024);
  });
});
