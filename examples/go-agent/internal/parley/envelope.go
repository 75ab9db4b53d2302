package parley

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"

	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// Envelope sizes and limits (§6, §12).
const (
	SaltBytes          = 32
	AuthTagBytes       = 32
	aeadTagBytes       = 16
	MaxPayloadBytes    = 1 << 20
	MaxCiphertextBytes = SaltBytes + MaxPayloadBytes + aeadTagBytes
)

// envelopeHeader is header(tag) of §6.2.
func envelopeHeader(tag string, e *pb.SecureMessage) *Layout {
	return NewLayout(tag).
		U32(e.GetVersion()).
		Str(e.GetSenderId()).
		Str(e.GetRecipientId()).
		Fixed(e.GetSessionId(), SessionIDBytes, "session_id").
		U64(e.GetNonce()).
		I64(e.GetTimestampMs()).
		Fixed(e.GetPayloadCommitment(), 32, "payload_commitment")
}

// EnvelopeAD is the AEAD associated data: header("parley/v1/envelope-ad").
func EnvelopeAD(e *pb.SecureMessage) ([]byte, error) {
	return envelopeHeader("parley/v1/envelope-ad", e).Bytes()
}

// EnvelopeMacInput is §6.3's mac_input.
func EnvelopeMacInput(e *pb.SecureMessage) ([]byte, error) {
	return envelopeHeader("parley/v1/envelope-mac", e).Var(e.GetEncryptedPayload()).Bytes()
}

// EnvelopeSigned is §6.4's signed layout.
func EnvelopeSigned(e *pb.SecureMessage) ([]byte, error) {
	return envelopeHeader("parley/v1/envelope-signature", e).
		Fixed(Hash(e.GetEncryptedPayload()), 32, "ciphertext digest").
		Fixed(e.GetAuthTag(), AuthTagBytes, "auth_tag").
		Bytes()
}

// MessageHash is §6.6: BLAKE3 of the signed layout.
func MessageHash(e *pb.SecureMessage) ([]byte, error) {
	signed, err := EnvelopeSigned(e)
	if err != nil {
		return nil, err
	}
	return Hash(signed), nil
}

// PayloadCommitment is §6.2's salted commitment.
func PayloadCommitment(salt, payload []byte) ([]byte, error) {
	b, err := NewLayout("parley/v1/payload-commitment").Fixed(salt, SaltBytes, "salt").Var(payload).Bytes()
	if err != nil {
		return nil, err
	}
	return Hash(b), nil
}

// AuthTag computes HMAC-SHA256(mk, mac_input).
func AuthTag(macKey, macInput []byte) []byte {
	m := hmac.New(sha256.New, macKey)
	m.Write(macInput)
	return m.Sum(nil)
}

// CheckEnvelopeShape is §8.1 step 1 (also the gateway's §10.3 step 1).
func CheckEnvelopeShape(e *pb.SecureMessage) error {
	if e.GetVersion() != ProtocolVersion {
		return Errorf(CodeUnsupportedVersion, "envelope version %d", e.GetVersion())
	}
	if !IsAgentID(e.GetSenderId()) || !IsAgentID(e.GetRecipientId()) {
		return Errorf(CodeMalformed, "envelope agent ids")
	}
	if len(e.GetSessionId()) != SessionIDBytes {
		return Errorf(CodeMalformed, "session_id length")
	}
	if e.GetNonce() > MaxCounter {
		return Errorf(CodeNonceExhausted, "nonce beyond 2^53 − 1")
	}
	if e.GetTimestampMs() < 0 || e.GetTimestampMs() > maxSafeInteger {
		return Errorf(CodeMalformed, "timestamp_ms out of range")
	}
	if len(e.GetPayloadCommitment()) != 32 {
		return Errorf(CodeMalformed, "payload_commitment length")
	}
	if len(e.GetEncryptedPayload()) > MaxCiphertextBytes {
		return Errorf(CodeTooLarge, "encrypted_payload too large")
	}
	if len(e.GetEncryptedPayload()) < SaltBytes+aeadTagBytes {
		return Errorf(CodeMalformed, "encrypted_payload too short")
	}
	if len(e.GetAuthTag()) != AuthTagBytes {
		return Errorf(CodeMalformed, "auth_tag length")
	}
	if len(e.GetSignature()) != ed25519.SignatureSize {
		return Errorf(CodeMalformed, "signature length")
	}
	return nil
}

// SealEnvelope builds a complete SecureMessage from its header fields (in
// hdr: version, ids, session id, nonce, timestamp), the encoded payload and
// salt, the epoch keys of the sender's direction, and its identity key.
// It returns the envelope and its message hash. The commitment, AEAD, tag and
// signature are computed here (§6.2–§6.4).
func SealEnvelope(hdr *pb.SecureMessage, payload, salt []byte, keys *EpochKeys, signer ed25519.PrivateKey) (*pb.SecureMessage, []byte, error) {
	e := proto.Clone(hdr).(*pb.SecureMessage)
	commitment, err := PayloadCommitment(salt, payload)
	if err != nil {
		return nil, nil, err
	}
	e.PayloadCommitment = commitment
	ad, err := EnvelopeAD(e)
	if err != nil {
		return nil, nil, err
	}
	plaintext := append(append(make([]byte, 0, len(salt)+len(payload)), salt...), payload...)
	e.EncryptedPayload = keys.Cipher.Encrypt(nil, e.GetNonce(), ad, plaintext)
	wipe(plaintext)
	macInput, err := EnvelopeMacInput(e)
	if err != nil {
		return nil, nil, err
	}
	e.AuthTag = AuthTag(keys.MacKey, macInput)
	signed, err := EnvelopeSigned(e)
	if err != nil {
		return nil, nil, err
	}
	e.Signature = ed25519.Sign(signer, signed)
	return e, Hash(signed), nil
}

// VerifyEnvelopeSignature checks §6.4 against the sender's identity key.
func VerifyEnvelopeSignature(e *pb.SecureMessage, key ed25519.PublicKey) bool {
	signed, err := EnvelopeSigned(e)
	return err == nil && len(e.GetSignature()) == ed25519.SignatureSize && ed25519.Verify(key, signed, e.GetSignature())
}

// DecodePayload decodes a MessagePayload and applies the §6.2 rules.
func DecodePayload(b []byte, envelopeTimestampMs int64) (*pb.MessagePayload, error) {
	if len(b) > MaxPayloadBytes {
		return nil, Errorf(CodeTooLarge, "payload too large")
	}
	var p pb.MessagePayload
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, Errorf(CodeMalformed, "payload does not decode")
	}
	if !IsDefinedMessageType(p.GetType()) {
		return nil, Errorf(CodeMalformed, "payload type %d", p.GetType())
	}
	if p.GetTimestampMs() != envelopeTimestampMs {
		return nil, Errorf(CodeMalformed, "payload timestamp differs from the envelope's")
	}
	if n := len(p.GetHandoffHash()); n != 0 && n != 32 {
		return nil, Errorf(CodeMalformed, "handoff_hash length")
	}
	if n := len(p.GetParentMessageHash()); n != 0 && n != 32 {
		return nil, Errorf(CodeMalformed, "parent_message_hash length")
	}
	return &p, nil
}

// IsDefinedMessageType reports whether t is a defined MessageType other than UNSPECIFIED.
func IsDefinedMessageType(t pb.MessageType) bool {
	_, ok := pb.MessageType_name[int32(t)]
	return ok && t != pb.MessageType_MESSAGE_TYPE_UNSPECIFIED
}

// Disclosure is a proof of origin (§6.5): the envelope, the sender's
// certificate and the opening of the commitment.
type Disclosure struct {
	Envelope    *pb.SecureMessage
	Certificate *pb.AgentCertificate
	Payload     []byte
	Salt        []byte
}

// VerifyDisclosure checks a proof of origin as in §6.5, returning the
// decoded payload.
func VerifyDisclosure(d Disclosure, trust *TrustBundle) (*pb.MessagePayload, error) {
	e := d.Envelope
	if err := CheckEnvelopeShape(e); err != nil {
		return nil, err
	}
	if len(d.Salt) != SaltBytes {
		return nil, Errorf(CodeMalformed, "disclosure salt must be 32 bytes")
	}
	if err := trust.VerifyCertificate(d.Certificate, e.GetTimestampMs(), e.GetSenderId()); err != nil {
		return nil, err
	}
	if !VerifyEnvelopeSignature(e, d.Certificate.GetIdentityPublicKey()) {
		return nil, Errorf(CodeBadSignature, "envelope signature does not verify")
	}
	commitment, err := PayloadCommitment(d.Salt, d.Payload)
	if err != nil {
		return nil, Errorf(CodeMalformed, "opening: %v", err)
	}
	if subtle.ConstantTimeCompare(commitment, e.GetPayloadCommitment()) != 1 {
		return nil, Errorf(CodeBadCommitment, "opening does not match the commitment")
	}
	return DecodePayload(d.Payload, e.GetTimestampMs())
}
