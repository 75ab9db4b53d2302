package parley

import (
	"crypto/ed25519"
	"fmt"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// SignerCertificatePolicy is what the addressee of a DeliveryReceipt or
// SessionReject checks the reply's signer_certificate with (PROTOCOL.md §17.8
// item 4): its own trust bundle and clock now, and its revocation data if it
// has any.
type SignerCertificatePolicy struct {
	Trust *TrustBundle
	// Revocations is the agent's revocation data (§8.4); nil: it has none,
	// and §3.3 step 6 is omitted, as §17.8 item 4 allows ("if it has any").
	Revocations RevocationChecker
	NowMs       int64
}

// verifyReplySignature checks the signature of a receipt (§10.5) or
// SessionReject (§17.4) whose signed layout is layout, signed by signerID
// (its recipient_id, which the caller has already matched to the agent the
// message was sent to).
//
// The signature must verify under sessionKey, the signer's certified key of
// the session the message was sealed in; when it does, the reply is accepted
// and a signer_certificate it carries is not looked at. When it does not,
// and the reply carries signer_certificate (policy not nil), it is accepted
// only if, in the order of §17.8 item 4 (and @parley/client's outbox):
//
//  1. the certificate is for the same agent id, signerID;
//  2. it verifies as in §3.3 against policy.Trust at policy.NowMs (structure,
//     issuer in the bundle, issuer signature, validity and the issuer's
//     not_after_ms, agent id), and against policy.Revocations when the agent
//     has revocation data (revoked by agent id or serial; data that cannot
//     answer refuses, fail closed);
//  3. its identity key verifies the signature.
//
// Every refusal is bad_signature (§10.5, as @parley/client's outbox); one
// that comes from the certificate carries the failing check as its Cause
// (identity_mismatch, a §3.3 code, or bad_signature when the certificate's
// key did not sign). On success it returns the certificate whose key
// verified, or nil when it was the session's.
func verifyReplySignature(kind string, layout, sig []byte, sessionKey ed25519.PublicKey, signerID string, attached *pb.AgentCertificate, policy *SignerCertificatePolicy) (*pb.AgentCertificate, error) {
	if len(sessionKey) == ed25519.PublicKeySize && ed25519.Verify(sessionKey, layout, sig) {
		return nil, nil
	}
	if attached == nil {
		return nil, Errorf(CodeBadSignature, "%s signature does not verify with the session's certified key", kind)
	}
	if policy == nil || policy.Trust == nil {
		return nil, Errorf(CodeBadSignature, "%s signature does not verify with the session's certified key (its signer_certificate is not considered here)", kind)
	}
	refused := func(cause error) error {
		return &Error{
			Code:    CodeBadSignature,
			Message: fmt.Sprintf("%s signature does not verify with the session's certified key, and its signer_certificate is refused", kind),
			Cause:   cause,
		}
	}
	// 1. the same agent id as the signer (recipient_id, the session's peer)
	if attached.GetAgentId() != signerID {
		return nil, refused(Errorf(CodeIdentityMismatch, "signer_certificate is for %q, the %s is signed by %q", attached.GetAgentId(), kind, signerID))
	}
	// 2. §3.3 now, against this agent's trust bundle and revocation data
	if err := policy.Trust.VerifyCertificateWith(attached, policy.NowMs, signerID, policy.Revocations); err != nil {
		return nil, refused(err)
	}
	// 3. its identity key verifies the signature (32 bytes: step 2 checked it)
	if !ed25519.Verify(attached.GetIdentityPublicKey(), layout, sig) {
		return nil, refused(Errorf(CodeBadSignature, "the signature does not verify with the signer_certificate's key either"))
	}
	return attached, nil
}
