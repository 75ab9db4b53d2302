package parley

import (
	"bytes"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"

	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// Limits and patterns of PROTOCOL.md §3.2 and §12.
const (
	MaxCertificateBytes = 4096
	MaxCapabilities     = 64
	maxSafeInteger      = 1<<53 - 1
)

var (
	agentIDPattern    = regexp.MustCompile(`^[a-z0-9][a-z0-9._:-]{0,127}$`)
	agentTypePattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	capabilityPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._:/-]{0,127}$`)
)

// IsAgentID reports whether s is a valid agent id (§3.2).
func IsAgentID(s string) bool { return agentIDPattern.MatchString(s) }

// CertificateTBS returns the §3.2 certificate TBS layout (the bytes the issuer signs).
func CertificateTBS(c *pb.AgentCertificate) ([]byte, error) {
	return NewLayout("parley/v1/agent-certificate").
		U32(c.GetVersion()).
		Str(c.GetAgentId()).
		Fixed(c.GetIdentityPublicKey(), 32, "identity_public_key").
		Str(c.GetAgentType()).
		List(c.GetCapabilities()).
		I64(c.GetValidFromMs()).
		I64(c.GetValidUntilMs()).
		Fixed(c.GetSerial(), 16, "serial").
		Fixed(c.GetIssuerKeyId(), 16, "issuer_key_id").
		Bytes()
}

// DecodeCertificate decodes an encoded AgentCertificate, refusing oversized
// encodings and fields unknown to v1 (§3.2).
func DecodeCertificate(b []byte) (*pb.AgentCertificate, error) {
	if len(b) > MaxCertificateBytes {
		return nil, Errorf(CodeMalformed, "certificate is %d bytes, more than %d", len(b), MaxCertificateBytes)
	}
	c := &pb.AgentCertificate{}
	if err := proto.Unmarshal(b, c); err != nil {
		return nil, Errorf(CodeMalformed, "certificate does not decode")
	}
	if len(c.ProtoReflect().GetUnknown()) > 0 {
		return nil, Errorf(CodeMalformed, "certificate carries fields unknown to v1")
	}
	return c, nil
}

// checkCertificateShape is step 1 of §3.3: structure and version.
func checkCertificateShape(c *pb.AgentCertificate) error {
	if c == nil {
		return Errorf(CodeMalformed, "no certificate")
	}
	if len(c.ProtoReflect().GetUnknown()) > 0 {
		return Errorf(CodeMalformed, "certificate carries fields unknown to v1")
	}
	if c.GetVersion() != 1 {
		return Errorf(CodeUnsupportedVersion, "certificate version %d", c.GetVersion())
	}
	if proto.Size(c) > MaxCertificateBytes {
		return Errorf(CodeMalformed, "certificate too large")
	}
	if c.GetValidFromMs() < 0 || c.GetValidUntilMs() > maxSafeInteger || c.GetValidFromMs() >= c.GetValidUntilMs() {
		return Errorf(CodeMalformed, "validity window")
	}
	if !IsAgentID(c.GetAgentId()) {
		return Errorf(CodeMalformed, "agent_id")
	}
	if len(c.GetIdentityPublicKey()) != ed25519.PublicKeySize {
		return Errorf(CodeMalformed, "identity_public_key length")
	}
	if !agentTypePattern.MatchString(c.GetAgentType()) {
		return Errorf(CodeMalformed, "agent_type")
	}
	caps := c.GetCapabilities()
	if len(caps) > MaxCapabilities {
		return Errorf(CodeMalformed, "more than %d capabilities", MaxCapabilities)
	}
	for i, cp := range caps {
		if !capabilityPattern.MatchString(cp) {
			return Errorf(CodeMalformed, "capability %q", cp)
		}
		// Go compares strings by byte value, as §3.2 requires.
		if i > 0 && !(caps[i-1] < cp) {
			return Errorf(CodeMalformed, "capabilities not strictly ascending")
		}
	}
	if len(c.GetSerial()) != 16 || len(c.GetIssuerKeyId()) != 16 {
		return Errorf(CodeMalformed, "serial or issuer_key_id length")
	}
	if len(c.GetSignature()) != ed25519.SignatureSize {
		return Errorf(CodeMalformed, "signature length")
	}
	return nil
}

// TrustedIssuer is one pinned issuer key of a trust bundle.
type TrustedIssuer struct {
	KeyID       []byte
	PublicKey   ed25519.PublicKey
	NotAfterMs  int64
	HasNotAfter bool // NotAfterMs applies only when set
}

// TrustBundle is the set of pinned issuer keys (§3.3, §15.9).
type TrustBundle struct {
	issuers map[string]TrustedIssuer
}

// NewTrustBundle builds a bundle, checking each key id against §3.1.
func NewTrustBundle(issuers []TrustedIssuer) (*TrustBundle, error) {
	tb := &TrustBundle{issuers: map[string]TrustedIssuer{}}
	for _, is := range issuers {
		id, err := KeyID(is.PublicKey)
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(id, is.KeyID) != 1 {
			return nil, Errorf(CodeMalformed, "trust bundle key_id %x does not match its public key", is.KeyID)
		}
		tb.issuers[string(id)] = is
	}
	return tb, nil
}

type trustBundleJSON struct {
	Version *int `json:"version"`
	Issuers []struct {
		KeyID      string `json:"key_id"`
		PublicKey  string `json:"public_key"`
		NotAfterMs *int64 `json:"not_after_ms,omitempty"`
	} `json:"issuers"`
}

// ParseTrustBundle parses the JSON form of §3.3/§15.9:
// {"version":1,"issuers":[{"key_id":hex,"public_key":base64url,"not_after_ms"?:n}]}.
func ParseTrustBundle(data []byte) (*TrustBundle, error) {
	var doc trustBundleJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields() // as the TypeScript TrustBundle.fromJSON
	if err := dec.Decode(&doc); err != nil {
		return nil, Errorf(CodeMalformed, "trust bundle JSON: %v", err)
	}
	if doc.Version == nil || *doc.Version != 1 {
		return nil, Errorf(CodeUnsupportedVersion, "trust bundle version must be 1")
	}
	var issuers []TrustedIssuer
	for i, is := range doc.Issuers {
		id, err := hex.DecodeString(is.KeyID)
		if err != nil || len(id) != 16 {
			return nil, Errorf(CodeMalformed, "issuers[%d].key_id", i)
		}
		pk, err := base64.RawURLEncoding.DecodeString(is.PublicKey)
		if err != nil || len(pk) != ed25519.PublicKeySize {
			return nil, Errorf(CodeMalformed, "issuers[%d].public_key", i)
		}
		t := TrustedIssuer{KeyID: id, PublicKey: pk}
		if is.NotAfterMs != nil {
			t.NotAfterMs, t.HasNotAfter = *is.NotAfterMs, true
		}
		issuers = append(issuers, t)
	}
	return NewTrustBundle(issuers)
}

// VerifyCertificate checks a certificate as in §3.3 at time nowMs, in the
// normative order, returning the first failing code. expectedAgentID may be
// empty (no expected id). There is no revocation checker in this example.
func (tb *TrustBundle) VerifyCertificate(c *pb.AgentCertificate, nowMs int64, expectedAgentID string) error {
	// 1. structure and version
	if err := checkCertificateShape(c); err != nil {
		return err
	}
	// 2. issuer in the trust bundle
	issuer, ok := tb.issuers[string(c.GetIssuerKeyId())]
	if !ok {
		return Errorf(CodeUnknownIssuer, "issuer key id %x is not trusted", c.GetIssuerKeyId())
	}
	// 3. issuer signature over the TBS layout
	tbs, err := CertificateTBS(c)
	if err != nil {
		return err
	}
	if !ed25519.Verify(issuer.PublicKey, tbs, c.GetSignature()) {
		return Errorf(CodeBadCertificate, "issuer signature does not verify")
	}
	// 4. validity, and the issuer's not_after_ms
	if nowMs < c.GetValidFromMs() {
		return Errorf(CodeNotYetValid, "certificate not valid before %d", c.GetValidFromMs())
	}
	if nowMs >= c.GetValidUntilMs() {
		return Errorf(CodeExpired, "certificate expired at %d", c.GetValidUntilMs())
	}
	if issuer.HasNotAfter && nowMs >= issuer.NotAfterMs {
		return Errorf(CodeExpired, "issuer key past its not_after_ms")
	}
	// 5. expected agent id
	if expectedAgentID != "" && c.GetAgentId() != expectedAgentID {
		return Errorf(CodeIdentityMismatch, "certificate is for %q, expected %q", c.GetAgentId(), expectedAgentID)
	}
	// 6. revocation: not implemented by this example (no revocation feed).
	return nil
}

// DecodeCertificateLine decodes the --cert file form: base64url (no padding)
// of the encoded certificate.
func DecodeCertificateLine(s string) (*pb.AgentCertificate, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("certificate is not unpadded base64url: %w", err)
	}
	return DecodeCertificate(b)
}
