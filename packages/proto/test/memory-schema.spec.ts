// Pins the wire schema of parley.v1.MemoryService's signed records (docs/PROTOCOL.md §18):
// their field numbers and types are what the signed layouts are rebuilt from.
import { describe, expect, it } from 'vitest';
import type { DescMessage } from '@bufbuild/protobuf';
import { EpochRecordSchema, KeyWrapSchema, MembershipEntrySchema, MemoryAccess, MembershipChange, MemoryService, WriteRecordSchema } from '../src/index.js';

function shape(schema: DescMessage): string[] {
  return schema.fields.map((f) => `${f.number}:${f.name}:${f.fieldKind === 'scalar' ? f.scalar : f.fieldKind === 'enum' ? f.enum.typeName : f.fieldKind === 'message' ? f.message.typeName : f.fieldKind}`);
}

describe('parley.v1 memory schema', () => {
  it('keeps the field numbers and types of the signed records', () => {
    // scalar type numbers: 13 uint32, 9 string, 12 bytes, 4 uint64, 3 int64
    expect(shape(MembershipEntrySchema)).toEqual([
      '1:version:4', '2:previous_hash:12', '3:change:parley.v1.MembershipChange', '4:member_id:9', '5:access:parley.v1.MemoryAccess',
      '6:member_public_key:12', '7:expires_at_ms:3', '8:timestamp_ms:3', '9:signer_id:9', '10:creation_nonce:12', '11:signature:12',
    ]);
    expect(shape(EpochRecordSchema)).toEqual([
      '1:epoch:13', '2:key_commitment:12', '3:back_link:12', '4:membership_version:4', '5:membership_hash:12', '6:created_at_ms:3',
      '7:creator_id:9', '8:signature:12',
    ]);
    expect(shape(KeyWrapSchema)).toEqual(['1:epoch:13', '2:member_id:9', '3:member_public_key:12', '4:sealed_key:12', '5:signer_id:9', '6:signature:12']);
    expect(shape(WriteRecordSchema)).toEqual([
      '1:segment_id:9', '2:version:4', '3:previous_version:4', '4:key_epoch:13', '5:ciphertext_digest:12', '6:ciphertext_bytes:4',
      '7:writer_id:9', '8:timestamp_ms:3', '9:expires_at_ms:3', '10:signature:12',
    ]);
  });

  it('keeps the enum values that signed layouts encode as u8', () => {
    expect([MemoryAccess.UNSPECIFIED, MemoryAccess.READ, MemoryAccess.WRITE, MemoryAccess.ADMIN]).toEqual([0, 1, 2, 3]);
    expect([MembershipChange.UNSPECIFIED, MembershipChange.CREATE, MembershipChange.GRANT, MembershipChange.REVOKE]).toEqual([0, 1, 2, 3]);
  });

  it('has the service methods of §18', () => {
    expect(MemoryService.methods.map((m) => `${m.name}:${m.methodKind}`)).toEqual([
      'CreateMemory:unary', 'GetMemory:unary', 'ListMemories:unary', 'ListSegments:unary', 'ReadSegment:unary', 'WriteSegment:unary',
      'UpdateMembership:unary', 'RotateEpoch:unary', 'GetAgentCertificate:unary',
    ]);
  });
});
