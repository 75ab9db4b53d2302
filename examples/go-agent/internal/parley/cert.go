package parley

import (
	"bytes"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"regexp"
	"strings"

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

// NewTrustBundle builds a bundle, checking each key id against §3.1, the
// limit of 256 issuers and that no issuer is listed twice.
func NewTrustBundle(issuers []TrustedIssuer) (*TrustBundle, error) {
	if len(issuers) > MaxTrustBundleIssuers {
		return nil, Errorf(CodeMalformed, "a trust bundle holds at most %d issuers", MaxTrustBundleIssuers)
	}
	tb := &TrustBundle{issuers: map[string]TrustedIssuer{}}
	for _, is := range issuers {
		id, err := KeyID(is.PublicKey)
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(id, is.KeyID) != 1 {
			return nil, Errorf(CodeMalformed, "trust bundle key_id %x does not match its public key", is.KeyID)
		}
		if _, dup := tb.issuers[string(id)]; dup {
			return nil, Errorf(CodeMalformed, "trust bundle lists issuer %x twice", id)
		}
		tb.issuers[string(id)] = is
	}
	return tb, nil
}

// MaxTrustBundleIssuers bounds a trust bundle (§3.3, §12): a hostile JSON
// document cannot make a verifier hold more.
const MaxTrustBundleIssuers = 256

var keyIDHexPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ParseTrustBundle parses the JSON form of §3.3/§15.9 strictly:
// {"version":1,"issuers":[{"key_id":hex,"public_key":base64url,"not_after_ms"?:n}]}.
// Checks, in the order of §3.3: one JSON object and nothing after it, no
// unknown key, version an integer (else malformed) equal to 1 (else
// unsupported_version), issuers an array of at most 256 objects, each with no
// unknown key, key_id 32 lowercase hex digits equal to the key id of
// public_key (canonical unpadded base64url of 32 bytes), not_after_ms, when
// present, an integer in 0..2^53−1, and no issuer twice (all malformed).
func ParseTrustBundle(data []byte) (*TrustBundle, error) {
	bad := func(format string, args ...any) (*TrustBundle, error) {
		return nil, Errorf(CodeMalformed, "trust bundle: "+format, args...)
	}
	var doc map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return bad("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("data after the JSON object")
	}
	for k := range doc {
		if k != "version" && k != "issuers" {
			return bad("unknown key %q", k)
		}
	}
	version, ok := jsonInteger(doc["version"], 0, 1<<32-1)
	if !ok {
		return bad("version must be an integer")
	}
	if version != 1 {
		return nil, Errorf(CodeUnsupportedVersion, "trust bundle version %d", version)
	}
	var entries []json.RawMessage
	if raw, present := doc["issuers"]; !present || json.Unmarshal(raw, &entries) != nil || entries == nil {
		return bad("issuers must be an array")
	}
	if len(entries) > MaxTrustBundleIssuers {
		return bad("more than %d issuers", MaxTrustBundleIssuers)
	}
	issuers := make([]TrustedIssuer, 0, len(entries))
	for i, raw := range entries {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
			return bad("issuers[%d] must be an object", i)
		}
		for k := range fields {
			if k != "key_id" && k != "public_key" && k != "not_after_ms" {
				return bad("issuers[%d] has an unknown key %q", i, k)
			}
		}
		var idHex, pkText string
		if json.Unmarshal(fields["key_id"], &idHex) != nil || !keyIDHexPattern.MatchString(idHex) {
			return bad("issuers[%d].key_id must be 32 lowercase hex digits", i)
		}
		if json.Unmarshal(fields["public_key"], &pkText) != nil {
			return bad("issuers[%d].public_key must be a string", i)
		}
		pk, err := base64.RawURLEncoding.Strict().DecodeString(pkText)
		if err != nil || len(pk) != ed25519.PublicKeySize {
			return bad("issuers[%d].public_key must be canonical unpadded base64url of 32 bytes", i)
		}
		id, _ := hex.DecodeString(idHex)
		t := TrustedIssuer{KeyID: id, PublicKey: pk}
		if raw, present := fields["not_after_ms"]; present {
			n, ok := jsonInteger(raw, 0, maxSafeInteger)
			if !ok {
				return bad("issuers[%d].not_after_ms must be an integer in 0..2^53-1", i)
			}
			t.NotAfterMs, t.HasNotAfter = n, true
		}
		issuers = append(issuers, t)
	}
	return NewTrustBundle(issuers)
}

// jsonInteger reads a JSON number whose value is an integer in [min, max]
// (§3.3: as JSON.parse reads it, so 1.0 and 1e0 are 1; a string, null, a
// fraction or a value out of range is not). min and max are within 2^53, where
// float64 is exact.
func jsonInteger(raw json.RawMessage, min, max int64) (int64, bool) {
	var f float64
	text := strings.TrimSpace(string(raw))
	if text == "" || text[0] == '"' || text == "null" || json.Unmarshal(raw, &f) != nil {
		return 0, false
	}
	if f != math.Trunc(f) || f < float64(min) || f > float64(max) {
		return 0, false
	}
	return int64(f), true
}

// RevocationChecker is an agent's revocation data (§3.3 step 6, §8.1 step 2):
// whether a certificate, by agent id or serial, is revoked at nowMs. An error
// means the data cannot answer (stale, unavailable): callers fail closed with
// revocation_stale.
type RevocationChecker interface {
	Revoked(agentID string, serial []byte, nowMs int64) (bool, error)
}

// RevocationSet is a fixed set of revoked agent ids and serials (the vectors'
// "revoked" field; also what a follower of the registry's list keeps).
type RevocationSet struct {
	AgentIDs map[string]bool
	Serials  map[string]bool // by hex
}

// Revoked implements RevocationChecker.
func (r *RevocationSet) Revoked(agentID string, serial []byte, _ int64) (bool, error) {
	if r == nil {
		return false, nil
	}
	return r.AgentIDs[agentID] || r.Serials[hex.EncodeToString(serial)], nil
}

// checkRevocation is §3.3 step 6: revoked, or revocation_stale (fail closed).
func checkRevocation(rc RevocationChecker, c *pb.AgentCertificate, nowMs int64) error {
	if rc == nil {
		return nil
	}
	revoked, err := rc.Revoked(c.GetAgentId(), c.GetSerial(), nowMs)
	if err != nil {
		return Errorf(CodeRevocationStale, "revocation data cannot answer: %v", err)
	}
	if revoked {
		return Errorf(CodeRevoked, "certificate of %q is revoked", c.GetAgentId())
	}
	return nil
}

// VerifyCertificate checks a certificate as in §3.3 at time nowMs, in the
// normative order, returning the first failing code. expectedAgentID may be
// empty (no expected id). No revocation data: see VerifyCertificateWith.
func (tb *TrustBundle) VerifyCertificate(c *pb.AgentCertificate, nowMs int64, expectedAgentID string) error {
	return tb.VerifyCertificateWith(c, nowMs, expectedAgentID, nil)
}

// VerifyCertificateWith is VerifyCertificate with revocation data (step 6;
// nil skips it).
func (tb *TrustBundle) VerifyCertificateWith(c *pb.AgentCertificate, nowMs int64, expectedAgentID string, rc RevocationChecker) error {
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
	// 6. revocation
	return checkRevocation(rc, c, nowMs)
}

// Issuer returns the pinned issuer with this key id.
func (tb *TrustBundle) Issuer(keyID []byte) (TrustedIssuer, bool) {
	is, ok := tb.issuers[string(keyID)]
	return is, ok
}

// NotAfter returns the not_after_ms of the issuer that signed c, if the
// bundle sets one (it bounds every certificate of that issuer, §3.3 step 4).
func (tb *TrustBundle) NotAfter(c *pb.AgentCertificate) (int64, bool) {
	is, ok := tb.issuers[string(c.GetIssuerKeyId())]
	return is.NotAfterMs, ok && is.HasNotAfter
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
