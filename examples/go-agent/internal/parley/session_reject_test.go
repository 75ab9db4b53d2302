package parley

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"testing"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// tsSessionReject is a SessionReject produced by the TypeScript reference
// (@parley/protocol signSessionReject / sessionRejectLayout, run with
// `node --import tsx` from apps/gateway): Ed25519 seed 01..20, session id
// a0..af, message hash (7i+3) mod 256, a non-ASCII recipient id.
var tsSessionReject = struct {
	seed, publicKey, sessionID, messageHash string
	senderID, recipientID                   string
	rejectedAtMs                            int64
	layout, signature                       string
}{
	seed:         "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
	publicKey:    "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664",
	sessionID:    "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
	messageHash:  "030a11181f262d343b424950575e656c737a81888f969da4abb2b9c0c7ced5dc",
	senderID:     "ts-planner-1",
	recipientID:  "go-worker-ü",
	rejectedAtMs: 1795409105383,
	layout:       "000000187061726c65792f76312f73657373696f6e2d72656a65637400000001a0a1a2a3a4a5a6a7a8a9aaabacadaeaf030a11181f262d343b424950575e656c737a81888f969da4abb2b9c0c7ced5dc0000000c74732d706c616e6e65722d310000000c676f2d776f726b65722dc3bc000001a206b8d1e7",
	signature:    "4be26a109407ef70ee02c72dbef825bf521b11b54a939a7d6baa150b41f22b1b4a29078bf4fbd1a1c83a900fa0e9c36d47e88b2ea569b916dde46a0b8eab560a",
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The §17.4 layout and signature are byte for byte those of the TypeScript
// implementation, and what it signed verifies here (and nothing altered does).
func TestSessionRejectMatchesTypeScript(t *testing.T) {
	v := tsSessionReject
	key := ed25519.NewKeyFromSeed(unhex(t, v.seed))
	pub := key.Public().(ed25519.PublicKey)
	if !bytes.Equal(pub, unhex(t, v.publicKey)) {
		t.Fatalf("public key %x", pub)
	}
	sid, hash := unhex(t, v.sessionID), unhex(t, v.messageHash)
	// The refused envelope: its sender is the reject's addressee, its recipient the signer.
	env := &pb.SecureMessage{Version: 1, SessionId: sid, SenderId: v.senderID, RecipientId: v.recipientID}
	r, err := SignSessionReject(key, env, hash, v.rejectedAtMs)
	if err != nil {
		t.Fatal(err)
	}
	layout, err := SessionRejectLayout(r)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(layout); got != v.layout {
		t.Fatalf("layout\n got %s\nwant %s", got, v.layout)
	}
	if got := hex.EncodeToString(r.GetSignature()); got != v.signature {
		t.Fatalf("signature\n got %s\nwant %s", got, v.signature)
	}
	if r.GetVersion() != 1 || r.GetSenderId() != v.senderID || r.GetRecipientId() != v.recipientID || r.GetRejectedAtMs() != v.rejectedAtMs {
		t.Fatalf("fields %v", r)
	}
	// The TypeScript reject as it arrives, checked as its addressee does.
	ts := &pb.SessionReject{Version: 1, SessionId: sid, MessageHash: hash, SenderId: v.senderID, RecipientId: v.recipientID,
		RejectedAtMs: v.rejectedAtMs, Signature: unhex(t, v.signature)}
	if err := VerifySessionReject(ts, sid, hash, v.senderID, v.recipientID, pub); err != nil {
		t.Fatal(err)
	}
	otherPub, _, _ := ed25519.GenerateKey(nil)
	altered := []struct {
		name string
		edit func(r *pb.SessionReject)
		key  ed25519.PublicKey
		code string
	}{
		{"version 2", func(r *pb.SessionReject) { r.Version = 2 }, pub, CodeUnsupportedVersion},
		{"short session id", func(r *pb.SessionReject) { r.SessionId = r.SessionId[:15] }, pub, CodeUnknownSession},
		{"another hash", func(r *pb.SessionReject) { r.MessageHash = make([]byte, 32) }, pub, CodeUnknownSession},
		{"another addressee", func(r *pb.SessionReject) { r.SenderId = "ts-planner-2" }, pub, CodeIdentityMismatch},
		{"another time", func(r *pb.SessionReject) { r.RejectedAtMs++ }, pub, CodeBadSignature},
		{"short signature", func(r *pb.SessionReject) { r.Signature = r.Signature[:63] }, pub, CodeBadSignature},
		{"another key", func(r *pb.SessionReject) {}, otherPub, CodeBadSignature},
	}
	for _, a := range altered {
		c := &pb.SessionReject{Version: ts.Version, SessionId: sid, MessageHash: hash, SenderId: ts.SenderId, RecipientId: ts.RecipientId,
			RejectedAtMs: ts.RejectedAtMs, Signature: ts.Signature}
		a.edit(c)
		if err := VerifySessionReject(c, sid, hash, v.senderID, v.recipientID, a.key); CodeOf(err) != a.code {
			t.Fatalf("%s: %v, want %s", a.name, err, a.code)
		}
	}
}
