package parley

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// testIssuer is an issuer key that certifies agents (as newFixture's does,
// with the validity a case needs).
type testIssuer struct {
	id   []byte
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newTestIssuer(t *testing.T) *testIssuer {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	id, err := KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &testIssuer{id: id, pub: pub, priv: priv}
}

// certify returns a new identity key for agentID and its certificate, valid
// over [from, until), signed by the issuer.
func (is *testIssuer) certify(t *testing.T, agentID string, from, until int64) (ed25519.PrivateKey, *pb.AgentCertificate) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	serial := make([]byte, 16)
	_, _ = rand.Read(serial)
	c := &pb.AgentCertificate{
		Version: 1, AgentId: agentID, IdentityPublicKey: pub, AgentType: "worker",
		Capabilities: []string{"msg:send"}, ValidFromMs: from, ValidUntilMs: until,
		Serial: serial, IssuerKeyId: is.id,
	}
	tbs, err := CertificateTBS(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Signature = ed25519.Sign(is.priv, tbs)
	return priv, c
}

// staleRevocations is revocation data that cannot answer (stale, never synced).
type staleRevocations struct{}

func (staleRevocations) Revoked(string, []byte, int64) (bool, error) {
	return false, errors.New("revocation list last signed 61000 ms ago")
}

// withUnknownField returns c as it decodes from a wire encoding that carries
// a field v1 does not know (field 15, a varint) after its own.
func withUnknownField(t *testing.T, c *pb.AgentCertificate) *pb.AgentCertificate {
	t.Helper()
	b, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendVarint(protowire.AppendTag(b, 15, protowire.VarintType), 1)
	got := &pb.AgentCertificate{}
	if err := proto.Unmarshal(b, got); err != nil {
		t.Fatal(err)
	}
	return got
}

// A receipt or SessionReject from a peer that rotated its identity key is
// signed by the new key, which the session (established under the old
// certificate) does not know; it carries the new certificate in
// signer_certificate (PROTOCOL.md §17.8 item 3). Its addressee accepts it when
// that certificate is for the same agent id, verifies against its trust
// bundle now and its revocation data (if it has any), and its key verifies
// the signature (§17.8 item 4); every other case is refused as bad_signature
// (§10.5; as @parley/client's outbox), the failing check as its cause.
func TestReplySignedUnderRotatedKey(t *testing.T) {
	const (
		me, peer = "alice", "bob"
		hour     = int64(3_600_000)
	)
	now := testNow
	trusted, untrusted := newTestIssuer(t), newTestIssuer(t)
	retiring := newTestIssuer(t) // still in the bundle, past its not_after_ms
	trust, err := NewTrustBundle([]TrustedIssuer{
		{KeyID: trusted.id, PublicKey: trusted.pub},
		{KeyID: retiring.id, PublicKey: retiring.pub, NotAfterMs: now - 1, HasNotAfter: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The session was established with bob's first certificate; bob then
	// rotated (RotateKey: a new key and certificate, the old one revoked by
	// serial as superseded).
	oldKey, oldCert := trusted.certify(t, peer, now-2*hour, now+hour)
	sessionKey := oldKey.Public().(ed25519.PublicKey)
	newKey, newCert := trusted.certify(t, peer, now-hour, now+24*hour)
	superseded := &RevocationSet{Serials: map[string]bool{hex.EncodeToString(oldCert.GetSerial()): true}}

	malloryKey, malloryCert := trusted.certify(t, "mallory", now-hour, now+hour)
	expiredKey, expiredCert := trusted.certify(t, peer, now-3*hour, now-hour)
	earlyKey, earlyCert := trusted.certify(t, peer, now+hour, now+2*hour)
	strangerKey, strangerCert := untrusted.certify(t, peer, now-hour, now+hour)
	retiredKey, retiredCert := retiring.certify(t, peer, now-hour, now+hour)
	// A certificate naming the trusted issuer, signed by another key.
	forgedKey, forgedCert := untrusted.certify(t, peer, now-hour, now+hour)
	forgedCert.IssuerKeyId = trusted.id
	_, otherSigner, _ := ed25519.GenerateKey(rand.Reader)
	shortKey := proto.Clone(newCert).(*pb.AgentCertificate)
	shortKey.IdentityPublicKey = shortKey.IdentityPublicKey[:31]
	oversized := proto.Clone(newCert).(*pb.AgentCertificate)
	oversized.AgentType = strings.Repeat("w", MaxCertificateBytes)

	type reply struct {
		signer   ed25519.PrivateKey
		attached *pb.AgentCertificate
	}
	cases := []struct {
		name        string
		reply       reply
		revocations RevocationChecker
		noPolicy    bool   // the session-key-only check (VerifyReceipt, VerifySessionReject)
		accepted    string // "session", "attached", or "" (refused)
		cause       string // refused: the code of the failing check ("" for none: no certificate)
	}{
		{name: "rotated key, its valid certificate", reply: reply{newKey, newCert}, accepted: "attached"},
		{name: "rotated key, its certificate, old one superseded", reply: reply{newKey, newCert}, revocations: superseded, accepted: "attached"},
		{name: "session key, no certificate (unchanged)", reply: reply{oldKey, nil}, accepted: "session"},
		{name: "session key, a garbage certificate attached (not looked at)", reply: reply{oldKey, &pb.AgentCertificate{AgentId: peer}}, accepted: "session"},
		{name: "session key, old certificate revoked (the session's key decides)", reply: reply{oldKey, newCert}, revocations: superseded, accepted: "session"},
		{name: "rotated key, no certificate", reply: reply{newKey, nil}, cause: ""},
		{name: "rotated key, certificate not considered without a policy", reply: reply{newKey, newCert}, noPolicy: true, cause: ""},
		{name: "another agent's certificate, signed by its key", reply: reply{malloryKey, malloryCert}, cause: CodeIdentityMismatch},
		{name: "rotated key, another agent's certificate", reply: reply{newKey, malloryCert}, cause: CodeIdentityMismatch},
		{name: "expired certificate", reply: reply{expiredKey, expiredCert}, cause: CodeExpired},
		{name: "certificate not yet valid", reply: reply{earlyKey, earlyCert}, cause: CodeNotYetValid},
		{name: "certificate of an issuer past its not_after_ms", reply: reply{retiredKey, retiredCert}, cause: CodeExpired},
		{name: "certificate by an untrusted issuer", reply: reply{strangerKey, strangerCert}, cause: CodeUnknownIssuer},
		{name: "certificate with a forged issuer signature", reply: reply{forgedKey, forgedCert}, cause: CodeBadCertificate},
		{name: "revoked certificate (serial)", reply: reply{newKey, newCert}, revocations: &RevocationSet{Serials: map[string]bool{hex.EncodeToString(newCert.GetSerial()): true}}, cause: CodeRevoked},
		{name: "revoked agent id", reply: reply{newKey, newCert}, revocations: &RevocationSet{AgentIDs: map[string]bool{peer: true}}, cause: CodeRevoked},
		{name: "stale revocation data", reply: reply{newKey, newCert}, revocations: staleRevocations{}, cause: CodeRevocationStale},
		{name: "garbage certificate (empty, for the signer)", reply: reply{newKey, &pb.AgentCertificate{AgentId: peer}}, cause: CodeUnsupportedVersion},
		{name: "garbage certificate (31-byte key)", reply: reply{newKey, shortKey}, cause: CodeMalformed},
		{name: "garbage certificate (fields unknown to v1)", reply: reply{newKey, withUnknownField(t, newCert)}, cause: CodeMalformed},
		{name: "garbage certificate (over 4096 bytes)", reply: reply{newKey, oversized}, cause: CodeMalformed},
		{name: "valid certificate whose key did not sign", reply: reply{otherSigner, newCert}, cause: CodeBadSignature},
	}

	hash := make([]byte, 32)
	hash[0] = 7
	sid := bytes.Repeat([]byte{0xa5}, SessionIDBytes)
	verifiers := map[string]func(r reply, policy *SignerCertificatePolicy, noPolicy bool) (*pb.AgentCertificate, error){
		"receipt": func(r reply, policy *SignerCertificatePolicy, noPolicy bool) (*pb.AgentCertificate, error) {
			rc, err := SignReceipt(r.signer, hash, me, peer, now-5)
			if err != nil {
				t.Fatal(err)
			}
			rc.SignerCertificate = r.attached
			if noPolicy {
				return nil, VerifyReceipt(rc, hash, me, peer, sessionKey)
			}
			return VerifyReceiptWith(rc, hash, me, peer, sessionKey, policy)
		},
		"session reject": func(r reply, policy *SignerCertificatePolicy, noPolicy bool) (*pb.AgentCertificate, error) {
			env := &pb.SecureMessage{Version: 1, SessionId: sid, SenderId: me, RecipientId: peer}
			rj, err := SignSessionReject(r.signer, env, hash, now-5)
			if err != nil {
				t.Fatal(err)
			}
			rj.SignerCertificate = r.attached
			if noPolicy {
				return nil, VerifySessionReject(rj, sid, hash, me, peer, sessionKey)
			}
			return VerifySessionRejectWith(rj, sid, hash, me, peer, sessionKey, policy)
		},
	}
	for kind, verify := range verifiers {
		for _, c := range cases {
			name := fmt.Sprintf("%s: %s", kind, c.name)
			got, err := verify(c.reply, &SignerCertificatePolicy{Trust: trust, Revocations: c.revocations, NowMs: now}, c.noPolicy)
			switch c.accepted {
			case "session":
				if err != nil || got != nil {
					t.Errorf("%s: %v, certificate %v; want accepted under the session's key", name, err, got)
				}
				continue
			case "attached":
				if err != nil || got != c.reply.attached {
					t.Errorf("%s: %v; want accepted under its signer_certificate", name, err)
				}
				continue
			}
			if CodeOf(err) != CodeBadSignature || got != nil {
				t.Errorf("%s: %v (certificate %v), want bad_signature", name, err, got)
				continue
			}
			if cause := CodeOf(errors.Unwrap(err)); cause != c.cause {
				t.Errorf("%s: refused for %q (%v), want %q", name, cause, err, c.cause)
			}
		}
	}
}

// The signer_certificate field travels in the receipt's and the reject's wire
// encoding (fields 7 and 8, gateway.proto) and is not covered by their
// signatures: a reply decoded from the wire verifies under the certificate it
// carries, and stripping or swapping the certificate changes nothing signed.
func TestSignerCertificateOnTheWire(t *testing.T) {
	const hour = int64(3_600_000)
	now := testNow
	is := newTestIssuer(t)
	trust, err := NewTrustBundle([]TrustedIssuer{{KeyID: is.id, PublicKey: is.pub}})
	if err != nil {
		t.Fatal(err)
	}
	oldKey, _ := is.certify(t, "bob", now-2*hour, now+hour)
	newKey, newCert := is.certify(t, "bob", now-hour, now+hour)
	hash := bytes.Repeat([]byte{3}, 32)
	rc, err := SignReceipt(newKey, hash, "alice", "bob", now)
	if err != nil {
		t.Fatal(err)
	}
	unsigned, _ := ReceiptLayout(rc)
	rc.SignerCertificate = newCert
	signed, _ := ReceiptLayout(rc)
	if !bytes.Equal(unsigned, signed) {
		t.Fatal("signer_certificate changed the signed layout")
	}
	b, err := proto.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	var got pb.DeliveryReceipt
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetSignerCertificate(), newCert) {
		t.Fatal("signer_certificate lost on the wire")
	}
	policy := &SignerCertificatePolicy{Trust: trust, NowMs: now}
	if c, err := VerifyReceiptWith(&got, hash, "alice", "bob", oldKey.Public().(ed25519.PublicKey), policy); err != nil || !proto.Equal(c, newCert) {
		t.Fatalf("decoded receipt: %v", err)
	}
	got.SignerCertificate = nil
	if _, err := VerifyReceiptWith(&got, hash, "alice", "bob", oldKey.Public().(ed25519.PublicKey), policy); CodeOf(err) != CodeBadSignature {
		t.Fatalf("without its certificate: %v, want bad_signature", err)
	}
}
