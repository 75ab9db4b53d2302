package parley

import (
	"crypto/ed25519"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// SessionRejectLayout is the §17.4 session-reject layout, signed by the
// recipient of an envelope whose session it can never open (byte for byte
// @parley/protocol's sessionRejectLayout).
func SessionRejectLayout(r *pb.SessionReject) ([]byte, error) {
	return NewLayout("parley/v1/session-reject").
		U32(r.GetVersion()).
		Fixed(r.GetSessionId(), SessionIDBytes, "session_id").
		Fixed(r.GetMessageHash(), 32, "message_hash").
		Str(r.GetSenderId()).
		Str(r.GetRecipientId()).
		I64(r.GetRejectedAtMs()).
		Bytes()
}

// SignSessionReject refuses envelope e (addressed to this agent, the signer:
// recipient_id is e's recipient, so callers check it is this agent) whose
// message hash is messageHash. A recipient signs one only for an envelope it
// has not taken, of a session it can never open an envelope of (§17.4).
func SignSessionReject(key ed25519.PrivateKey, e *pb.SecureMessage, messageHash []byte, rejectedAtMs int64) (*pb.SessionReject, error) {
	r := &pb.SessionReject{
		Version: ProtocolVersion, SessionId: e.GetSessionId(), MessageHash: messageHash,
		SenderId: e.GetSenderId(), RecipientId: e.GetRecipientId(), RejectedAtMs: rejectedAtMs,
	}
	b, err := SessionRejectLayout(r)
	if err != nil {
		return nil, err
	}
	r.Signature = ed25519.Sign(key, b)
	return r, nil
}

// VerifySessionReject is the sender's check of §17.4: version 1, the reject
// names this sender, the recipient it sent to, the session (16 bytes) and a
// pending message hash, and is signed by the recipient's certified key of
// that session. A signer_certificate the reject carries is not considered:
// VerifySessionRejectWith does that.
func VerifySessionReject(r *pb.SessionReject, sessionID, messageHash []byte, senderID, recipientID string, recipientKey ed25519.PublicKey) error {
	_, err := VerifySessionRejectWith(r, sessionID, messageHash, senderID, recipientID, recipientKey, nil)
	return err
}

// VerifySessionRejectWith is VerifySessionReject where the signature may also
// verify under the reject's signer_certificate, checked with policy as §17.8
// item 4 says (verifyReplySignature), when it does not verify under
// recipientKey. nil policy: recipientKey only. It returns the
// signer_certificate whose key verified the reject, or nil when recipientKey
// did.
func VerifySessionRejectWith(r *pb.SessionReject, sessionID, messageHash []byte, senderID, recipientID string, recipientKey ed25519.PublicKey, policy *SignerCertificatePolicy) (*pb.AgentCertificate, error) {
	if r.GetVersion() != ProtocolVersion {
		return nil, Errorf(CodeUnsupportedVersion, "session reject version %d", r.GetVersion())
	}
	if r.GetSenderId() != senderID || r.GetRecipientId() != recipientID {
		return nil, Errorf(CodeIdentityMismatch, "session reject routing")
	}
	if string(r.GetSessionId()) != string(sessionID) || string(r.GetMessageHash()) != string(messageHash) {
		return nil, Errorf(CodeUnknownSession, "session reject names no pending envelope")
	}
	b, err := SessionRejectLayout(r)
	if err != nil {
		return nil, Errorf(CodeMalformed, "session reject layout: %v", err)
	}
	return verifyReplySignature("session reject", b, r.GetSignature(), recipientKey, recipientID, r.GetSignerCertificate(), policy)
}
