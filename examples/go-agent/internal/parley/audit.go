package parley

import (
	"crypto/ed25519"
	"regexp"

	pb "parley/go-agent/internal/gen/parleyv1"
)

var outcomePattern = regexp.MustCompile(`^[a-z0-9._:-]{1,64}$`)

// AuditEntryLayout is the §9.2 entry layout (the bytes the writer signs).
func AuditEntryLayout(e *pb.AuditMessage) ([]byte, error) {
	return NewLayout("parley/v1/audit-entry").
		U64(e.GetIndex()).
		Fixed(e.GetMessageHash(), 32, "message_hash").
		Str(e.GetSenderId()).
		Str(e.GetRecipientId()).
		I64(e.GetTimestampMs()).
		U32(uint32(e.GetMessageType())).
		Str(e.GetOutcome()).
		Fixed(e.GetPreviousHash(), 32, "previous_hash").
		Fixed(e.GetSignerKeyId(), 16, "signer_key_id").
		Bytes()
}

// CheckAuditEntry applies the §9.1 field rules.
func CheckAuditEntry(e *pb.AuditMessage) error {
	switch {
	case len(e.ProtoReflect().GetUnknown()) > 0:
		return Errorf(CodeMalformed, "unknown fields")
	case e.GetIndex() > MaxCounter:
		return Errorf(CodeMalformed, "index")
	case !IsAgentID(e.GetSenderId()) || !IsAgentID(e.GetRecipientId()):
		return Errorf(CodeMalformed, "agent ids")
	case e.GetTimestampMs() < 0 || e.GetTimestampMs() > maxSafeInteger:
		return Errorf(CodeMalformed, "timestamp_ms")
	case e.GetMessageType() != pb.MessageType_MESSAGE_TYPE_UNSPECIFIED && !IsDefinedMessageType(e.GetMessageType()):
		return Errorf(CodeMalformed, "message_type")
	case !outcomePattern.MatchString(e.GetOutcome()):
		return Errorf(CodeMalformed, "outcome")
	case len(e.GetMessageHash()) != 32 || len(e.GetPreviousHash()) != 32 || len(e.GetSignerKeyId()) != 16 || len(e.GetSignature()) != 64:
		return Errorf(CodeMalformed, "field lengths")
	}
	return nil
}

// auditLeafData is var(entry_layout) ‖ fixed64(signature) (§9.3).
func auditLeafData(e *pb.AuditMessage) ([]byte, error) {
	layout, err := AuditEntryLayout(e)
	if err != nil {
		return nil, err
	}
	l := &Layout{}
	return l.Var(layout).Fixed(e.GetSignature(), 64, "signature").Bytes()
}

// AuditEntryHash is §9.2's chain link hash.
func AuditEntryHash(e *pb.AuditMessage) ([]byte, error) {
	leaf, err := auditLeafData(e)
	if err != nil {
		return nil, err
	}
	l := NewLayout("parley/v1/audit-entry-hash")
	l.buf = append(l.buf, leaf...)
	return Hash(l.buf), nil
}

// AuditLeafHash is §9.3's Merkle leaf hash BLAKE3(0x00 ‖ leaf_data).
func AuditLeafHash(e *pb.AuditMessage) ([]byte, error) {
	leaf, err := auditLeafData(e)
	if err != nil {
		return nil, err
	}
	return LeafHash(leaf), nil
}

// VerifyAuditEntry checks an entry's signature under the writer key.
func VerifyAuditEntry(e *pb.AuditMessage, writer ed25519.PublicKey) bool {
	b, err := AuditEntryLayout(e)
	return err == nil && ed25519.Verify(writer, b, e.GetSignature())
}

// TreeHeadLayout is the §9.4 signed tree head layout.
func TreeHeadLayout(treeSize uint64, root []byte, timestampMs int64, signerKeyID []byte) ([]byte, error) {
	return NewLayout("parley/v1/tree-head").
		U64(treeSize).
		Fixed(root, 32, "root_hash").
		I64(timestampMs).
		Fixed(signerKeyID, 16, "signer_key_id").
		Bytes()
}
