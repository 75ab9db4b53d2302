package parley

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pb "parley/go-agent/internal/gen/parleyv1"
)

const testNow = int64(1_800_000_000_000)

// fixture is an issuer and two certified agents.
type fixture struct {
	trust      *TrustBundle
	alice, bob *Identity
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ipub, ipriv, _ := ed25519.GenerateKey(rand.Reader)
	iid, _ := KeyID(ipub)
	trust, err := NewTrustBundle([]TrustedIssuer{{KeyID: iid, PublicKey: ipub}})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(agentID string) *Identity {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		serial := make([]byte, 16)
		rand.Read(serial)
		c := &pb.AgentCertificate{
			Version: 1, AgentId: agentID, IdentityPublicKey: pub, AgentType: "worker",
			Capabilities: []string{"msg:send"}, ValidFromMs: testNow - 1000, ValidUntilMs: testNow + 1_000_000,
			Serial: serial, IssuerKeyId: iid,
		}
		tbs, err := CertificateTBS(c)
		if err != nil {
			t.Fatal(err)
		}
		c.Signature = ed25519.Sign(ipriv, tbs)
		return &Identity{AgentID: agentID, Key: priv, Certificate: c}
	}
	return &fixture{trust: trust, alice: issue("alice"), bob: issue("bob")}
}

func (f *fixture) config(id *Identity, threshold uint32) HandshakeConfig {
	return HandshakeConfig{Identity: id, Trust: f.trust, Now: func() int64 { return testNow }, RekeyThreshold: threshold}
}

func (f *fixture) sessions(t *testing.T, threshold uint32) (*Session, *Session) {
	t.Helper()
	ih, f1, err := StartHandshake(f.config(f.alice, threshold), "bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	rh, f2, err := AcceptHandshake(f.config(f.bob, 0), f1)
	if err != nil {
		t.Fatal(err)
	}
	f3, si, err := ih.ReadStep2(f2)
	if err != nil {
		t.Fatal(err)
	}
	sr, err := rh.ReadStep3(f3)
	if err != nil {
		t.Fatal(err)
	}
	if string(si.HandshakeHash) != string(sr.HandshakeHash) {
		t.Fatal("handshake hashes differ")
	}
	return si, sr
}

func seal(t *testing.T, s *Session, text string) *Sealed {
	t.Helper()
	v, _ := structpb.NewValue(map[string]any{"text": text})
	m, err := s.Seal(pb.MessageType_MESSAGE_TYPE_STATUS_UPDATE, v)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSealOpenBothWaysAcrossEpochs(t *testing.T) {
	f := newFixture(t)
	a, b := f.sessions(t, 2)
	var sent []*Sealed
	for i := 0; i < 7; i++ {
		sent = append(sent, seal(t, a, "a→b"))
		m := seal(t, b, "b→a")
		if _, err := a.Open(m.Envelope); err != nil {
			t.Fatalf("b→a %d: %v", i, err)
		}
	}
	// Deliver a→b out of order: epochs are derived from the counter alone.
	for _, i := range []int{3, 0, 6, 1, 2, 5, 4} {
		o, err := b.Open(sent[i].Envelope)
		if err != nil {
			t.Fatalf("a→b %d: %v", i, err)
		}
		if string(o.MessageHash) != string(sent[i].MessageHash) {
			t.Fatal("message hash differs")
		}
	}
	if _, err := b.Open(sent[2].Envelope); CodeOf(err) != CodeReplay {
		t.Fatalf("replay: got %v", err)
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	f := newFixture(t)
	a, b := f.sessions(t, 1000)
	m := seal(t, a, "hello")
	cases := map[string]struct {
		mutate func(e *pb.SecureMessage)
		code   string
	}{
		"header":    {func(e *pb.SecureMessage) { e.TimestampMs++ }, CodeBadSignature},
		"version":   {func(e *pb.SecureMessage) { e.Version = 2 }, CodeUnsupportedVersion},
		"session":   {func(e *pb.SecureMessage) { e.SessionId = make([]byte, 16) }, CodeUnknownSession},
		"recipient": {func(e *pb.SecureMessage) { e.RecipientId = "carol" }, CodeIdentityMismatch},
		"signature": {func(e *pb.SecureMessage) { e.Signature[0] ^= 1 }, CodeBadSignature},
	}
	for name, c := range cases {
		e := proto.Clone(m.Envelope).(*pb.SecureMessage)
		c.mutate(e)
		if _, err := b.Open(e); CodeOf(err) != c.code {
			t.Errorf("%s: want %s, got %v", name, c.code, err)
		}
	}
	if _, err := b.Open(m.Envelope); err != nil {
		t.Fatalf("the untouched envelope must still open: %v", err)
	}
}

func TestHandshakeRejectsWrongPeerCertificate(t *testing.T) {
	f := newFixture(t)
	ih, f1, _ := StartHandshake(f.config(f.alice, 0), "bob", nil)
	// Carol answers as "bob" with her own certificate: identity_mismatch.
	carol := newFixture(t).bob
	carol.Certificate.AgentId = "carol"
	rcfg := f.config(&Identity{AgentID: "bob", Key: carol.Key, Certificate: carol.Certificate}, 0)
	_, f2, err := AcceptHandshake(rcfg, f1)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ih.ReadStep2(f2); CodeOf(err) != CodeUnknownIssuer && CodeOf(err) != CodeIdentityMismatch {
		t.Fatalf("got %v", err)
	}
	// The handshake is poisoned.
	if _, _, err := ih.ReadStep2(f2); CodeOf(err) != CodeHandshakeFailed {
		t.Fatalf("poisoned handshake: got %v", err)
	}
}

func TestReplayWindow(t *testing.T) {
	w := NewReplayWindow()
	for _, c := range []uint64{5, 1, 9000, 8900} {
		if !w.Accept(c) {
			t.Fatalf("counter %d refused", c)
		}
	}
	for _, c := range []uint64{5, 9000, 8900, 840, MaxCounter + 1} {
		if w.Check(c) {
			t.Fatalf("counter %d accepted", c)
		}
	}
	if !w.Check(841) || !w.Check(9001) {
		t.Fatal("counters inside the window refused")
	}
}

func TestMerkleProofs(t *testing.T) {
	var leaves [][]byte
	for i := 0; i < 13; i++ {
		leaves = append(leaves, LeafHash([]byte{byte(i)}))
	}
	for n := 1; n <= len(leaves); n++ {
		root := MerkleRoot(leaves[:n])
		for m := 0; m < n; m++ {
			if !VerifyInclusion(uint64(m), uint64(n), leaves[m], InclusionProof(m, leaves[:n]), root) {
				t.Fatalf("inclusion %d/%d", m, n)
			}
		}
		for m := 0; m <= n; m++ {
			if !VerifyConsistency(uint64(m), uint64(n), MerkleRoot(leaves[:m]), root, ConsistencyProof(m, leaves[:n])) {
				t.Fatalf("consistency %d→%d", m, n)
			}
		}
	}
}
