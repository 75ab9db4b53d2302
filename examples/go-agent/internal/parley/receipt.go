package parley

import (
	"crypto/ed25519"
	"crypto/subtle"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// ReceiptLayout is the §10.5 delivery-receipt layout.
func ReceiptLayout(r *pb.DeliveryReceipt) ([]byte, error) {
	return NewLayout("parley/v1/delivery-receipt").
		U32(r.GetVersion()).
		Fixed(r.GetMessageHash(), 32, "message_hash").
		Str(r.GetSenderId()).
		Str(r.GetRecipientId()).
		I64(r.GetReceivedAtMs()).
		Bytes()
}

// ReceiptDigest is the §10.4 item digest of a receipt.
func ReceiptDigest(r *pb.DeliveryReceipt) ([]byte, error) {
	b, err := ReceiptLayout(r)
	if err != nil {
		return nil, err
	}
	return Hash(b), nil
}

// SignReceipt returns a receipt for an envelope this agent opened: sender_id
// is the envelope's sender, recipient_id this agent (the signer).
func SignReceipt(key ed25519.PrivateKey, messageHash []byte, senderID, recipientID string, receivedAtMs int64) (*pb.DeliveryReceipt, error) {
	r := &pb.DeliveryReceipt{
		Version: ProtocolVersion, MessageHash: messageHash, SenderId: senderID,
		RecipientId: recipientID, ReceivedAtMs: receivedAtMs,
	}
	b, err := ReceiptLayout(r)
	if err != nil {
		return nil, err
	}
	r.Signature = ed25519.Sign(key, b)
	return r, nil
}

// CheckReceiptShape is the receipt part of §10.3 step 1.
func CheckReceiptShape(r *pb.DeliveryReceipt) error {
	if r.GetVersion() != ProtocolVersion {
		return Errorf(CodeUnsupportedVersion, "receipt version %d", r.GetVersion())
	}
	if len(r.GetMessageHash()) != 32 || len(r.GetSignature()) != ed25519.SignatureSize {
		return Errorf(CodeMalformed, "receipt field lengths")
	}
	if !IsAgentID(r.GetSenderId()) || !IsAgentID(r.GetRecipientId()) || r.GetSenderId() == r.GetRecipientId() {
		return Errorf(CodeMalformed, "receipt agent ids")
	}
	if r.GetReceivedAtMs() < 0 || r.GetReceivedAtMs() > maxSafeInteger {
		return Errorf(CodeMalformed, "received_at_ms out of range")
	}
	return nil
}

// VerifyReceipt checks, as the envelope's sender, a receipt for a message it
// sent: signer and addressee, message hash, and the signature by the signer's
// certified identity key (§10.5). A signer_certificate the receipt carries is
// not considered: VerifyReceiptWith does that.
func VerifyReceipt(r *pb.DeliveryReceipt, messageHash []byte, senderID, signerID string, signerKey ed25519.PublicKey) error {
	_, err := VerifyReceiptWith(r, messageHash, senderID, signerID, signerKey, nil)
	return err
}

// VerifyReceiptWith is VerifyReceipt where the signature may also verify
// under the receipt's signer_certificate, checked with policy as §17.8 item 4
// says (verifyReplySignature), when it does not verify under signerKey, the
// signer's certified key of the session the message was sealed in. nil
// policy: signerKey only. It returns the signer_certificate whose key
// verified the receipt, or nil when signerKey did.
func VerifyReceiptWith(r *pb.DeliveryReceipt, messageHash []byte, senderID, signerID string, signerKey ed25519.PublicKey, policy *SignerCertificatePolicy) (*pb.AgentCertificate, error) {
	if err := CheckReceiptShape(r); err != nil {
		return nil, err
	}
	if r.GetSenderId() != senderID || r.GetRecipientId() != signerID {
		return nil, Errorf(CodeIdentityMismatch, "receipt is for another pair of agents")
	}
	if subtle.ConstantTimeCompare(r.GetMessageHash(), messageHash) != 1 {
		return nil, Errorf(CodeMalformed, "receipt is for another message")
	}
	b, err := ReceiptLayout(r)
	if err != nil {
		return nil, err
	}
	return verifyReplySignature("receipt", b, r.GetSignature(), signerKey, signerID, r.GetSignerCertificate(), policy)
}

// GatewayAuthLayout is the §10.2 stream-authentication proof layout.
func GatewayAuthLayout(gatewayID string, nonce []byte, agentID string, serial []byte) ([]byte, error) {
	return NewLayout("parley/v1/gateway-auth").
		Str(gatewayID).
		Fixed(nonce, 32, "nonce").
		Str(agentID).
		Fixed(serial, 16, "serial").
		Bytes()
}

// GatewaySendLayout is the §10.6 unary-Send proof layout.
func GatewaySendLayout(gatewayID string, timestampMs int64, nonce, itemDigest []byte) ([]byte, error) {
	return NewLayout("parley/v1/gateway-send").
		Str(gatewayID).
		I64(timestampMs).
		Fixed(nonce, 16, "nonce").
		Fixed(itemDigest, 32, "item_digest").
		Bytes()
}
