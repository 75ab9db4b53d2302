// Pins the v1 wire schema: field numbers, types and enum values are the wire
// contract other languages implement. Changing one is a breaking change and
// must fail here (and in `buf breaking`) before it reaches a release.
import { describe, expect, it } from 'vitest';
import type { DescMessage } from '@bufbuild/protobuf';
import {
  AgentCertificateSchema,
  AuditMessageSchema,
  HandshakeFrameSchema,
  HandshakePayloadSchema,
  MessagePayloadSchema,
  MessageType,
  MessageTypeSchema,
  SecureMessageSchema,
  create,
  fromBinary,
  toBinary,
} from '../src/index.js';

function shape(schema: DescMessage): string[] {
  return schema.fields.map((f) => `${f.number}:${f.name}:${f.fieldKind === 'scalar' ? f.scalar : f.fieldKind === 'enum' ? f.enum.typeName : f.fieldKind === 'message' ? f.message.typeName : f.fieldKind}`);
}

describe('parley.v1 wire schema', () => {
  it('keeps its field numbers and types', () => {
    // scalar type numbers: 13 uint32, 9 string, 12 bytes, 4 uint64, 3 int64
    expect(shape(SecureMessageSchema)).toEqual([
      '1:version:13', '2:sender_id:9', '3:recipient_id:9', '4:session_id:12', '5:nonce:4', '6:timestamp_ms:3',
      '7:payload_commitment:12', '8:encrypted_payload:12', '9:auth_tag:12', '10:signature:12',
    ]);
    expect(shape(MessagePayloadSchema)).toEqual([
      '1:type:parley.v1.MessageType', '2:timestamp_ms:3', '3:content:google.protobuf.Value', '4:handoff_hash:12', '5:parent_message_hash:12',
    ]);
    expect(shape(AgentCertificateSchema)).toEqual([
      '1:version:13', '2:agent_id:9', '3:identity_public_key:12', '4:agent_type:9', '5:capabilities:list', '6:valid_from_ms:3',
      '7:valid_until_ms:3', '8:serial:12', '9:issuer_key_id:12', '10:signature:12',
    ]);
    expect(shape(HandshakeFrameSchema)).toEqual([
      '1:version:13', '2:session_id:12', '3:sender_id:9', '4:recipient_id:9', '5:step:13', '6:noise_message:12', '7:rekey_threshold:13',
    ]);
    expect(shape(HandshakePayloadSchema)).toEqual(['1:certificate:parley.v1.AgentCertificate', '2:identity_signature:12']);
    expect(shape(AuditMessageSchema)).toEqual([
      '1:index:4', '2:message_hash:12', '3:sender_id:9', '4:recipient_id:9', '5:timestamp_ms:3', '6:message_type:parley.v1.MessageType',
      '7:outcome:9', '8:previous_hash:12', '9:signer_key_id:12', '10:signature:12',
    ]);
  });

  it('keeps its MessageType values', () => {
    expect(MessageTypeSchema.values.map((v) => `${v.number}:${v.name}`)).toEqual([
      '0:MESSAGE_TYPE_UNSPECIFIED', '1:MESSAGE_TYPE_HANDOFF_REQUEST', '2:MESSAGE_TYPE_HANDOFF_APPROVAL', '3:MESSAGE_TYPE_CONSENSUS_VOTE',
      '4:MESSAGE_TYPE_STATUS_UPDATE', '5:MESSAGE_TYPE_TASK_ASSIGNMENT', '6:MESSAGE_TYPE_QUALITY_GATE_RESULT', '7:MESSAGE_TYPE_SECURITY_ALERT',
      '8:MESSAGE_TYPE_SYSTEM_NOTIFICATION',
    ]);
  });

  it('round-trips a SecureMessage through the binary encoding', () => {
    const msg = create(SecureMessageSchema, {
      version: 1,
      senderId: 'planner-1',
      recipientId: 'worker-2',
      sessionId: new Uint8Array(16).fill(1),
      nonce: (1n << 53n) - 1n,
      timestampMs: 1_800_000_000_000n,
      payloadCommitment: new Uint8Array(32).fill(2),
      encryptedPayload: new Uint8Array(64).fill(3),
      authTag: new Uint8Array(32).fill(4),
      signature: new Uint8Array(64).fill(5),
    });
    expect(fromBinary(SecureMessageSchema, toBinary(SecureMessageSchema, msg))).toEqual(msg);
    expect(MessageType.HANDOFF_REQUEST).toBe(1);
  });
});
