package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// rotation is the scene of PROTOCOL.md §17.8: "go-1" sent one message to
// "ts-1" in a session established with ts-1's first certificate; ts-1 then
// rotated its identity key (RotateKey: a new key and certificate for the
// same agent id, the old certificate revoked by serial) and answers under the
// new key, carrying the new certificate in signer_certificate.
type rotation struct {
	w         *world
	a         *agentUnderTest
	at        int
	ts        *parley.Identity // ts-1 before the rotation (the session's certificate)
	rotated   *parley.Identity // ts-1 after it
	env       *pb.SecureMessage
	hash      []byte
	revoked   *parley.RevocationSet // go-1's revocation data
	sessionID []byte
}

func newRotation(t *testing.T) *rotation {
	t.Helper()
	w := newWorld(t)
	goID, ts := w.issuer("go-1"), w.issuer("ts-1")
	a := w.runner(t, goID, "ts-1", 1)
	revoked := &parley.RevocationSet{AgentIDs: map[string]bool{}, Serials: map[string]bool{}}
	a.cfg.Revocations = revoked
	rt := &rotation{w: w, a: a, ts: ts, revoked: revoked}
	if err := a.initiate(); err != nil {
		t.Fatal(err)
	}
	s, got := initiateWith(t, w, a, ts, &rt.at, 1)
	rt.env = got[0].GetSend().GetEnvelope()
	if rt.env == nil || a.inFlight == nil {
		t.Fatalf("no message sent: %v", got)
	}
	rt.hash, _ = parley.MessageHash(rt.env)
	rt.sessionID = s.ID
	// The rotation: a new certificate for ts-1; the old one superseded.
	rt.rotated = w.issuer("ts-1")
	revoked.Serials[hex.EncodeToString(ts.Certificate.GetSerial())] = true
	return rt
}

func (rt *rotation) receipt(t *testing.T, signer ed25519.PrivateKey, cert *pb.AgentCertificate) *pb.DeliveryReceipt {
	t.Helper()
	rc, err := parley.SignReceipt(signer, rt.hash, "go-1", "ts-1", time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	rc.SignerCertificate = cert
	return rc
}

func (rt *rotation) reject(t *testing.T, signer ed25519.PrivateKey, cert *pb.AgentCertificate) *pb.SessionReject {
	t.Helper()
	rj, err := parley.SignSessionReject(signer, rt.env, rt.hash, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	rj.SignerCertificate = cert
	return rj
}

// refusal is a reply go-1 must refuse, with the check of §17.8 item 4 that
// refuses it.
type refusal struct {
	name   string
	signer ed25519.PrivateKey
	cert   *pb.AgentCertificate
	setup  func(rt *rotation) // before the reply arrives
	cause  string
}

// refusals are the certificates §17.8 item 4 does not accept, each made in
// its own scene.
func refusals(t *testing.T) map[string]func(rt *rotation) refusal {
	return map[string]func(rt *rotation) refusal{
		"another agent id": func(rt *rotation) refusal {
			m := rt.w.issuer("mallory")
			return refusal{signer: m.Key, cert: m.Certificate, cause: parley.CodeIdentityMismatch}
		},
		"expired": func(rt *rotation) refusal {
			old := rt.w.issue("ts-1", func(c *pb.AgentCertificate) {
				now := time.Now().UnixMilli()
				c.ValidFromMs, c.ValidUntilMs = now-7_200_000, now-3_600_000
			})
			return refusal{signer: old.Key, cert: old.Certificate, cause: parley.CodeExpired}
		},
		"untrusted issuer": func(rt *rotation) refusal {
			other := newWorld(t).issuer("ts-1")
			return refusal{signer: other.Key, cert: other.Certificate, cause: parley.CodeUnknownIssuer}
		},
		"revoked": func(rt *rotation) refusal {
			rt.revoked.Serials[hex.EncodeToString(rt.rotated.Certificate.GetSerial())] = true
			return refusal{signer: rt.rotated.Key, cert: rt.rotated.Certificate, cause: parley.CodeRevoked}
		},
		"stale revocation data": func(rt *rotation) refusal {
			rt.a.cfg.Revocations = staleData{}
			return refusal{signer: rt.rotated.Key, cert: rt.rotated.Certificate, cause: parley.CodeRevocationStale}
		},
		"garbage": func(rt *rotation) refusal {
			// As it decodes off the wire: ts-1's name, a random "key" and
			// a field v1 does not know.
			key := make([]byte, 32)
			_, _ = rand.Read(key)
			b, err := proto.Marshal(&pb.AgentCertificate{Version: 1, AgentId: "ts-1", IdentityPublicKey: key})
			if err != nil {
				t.Fatal(err)
			}
			b = protowire.AppendBytes(protowire.AppendTag(b, 99, protowire.BytesType), key)
			c := &pb.AgentCertificate{}
			if err := proto.Unmarshal(b, c); err != nil {
				t.Fatal(err)
			}
			return refusal{signer: rt.rotated.Key, cert: c, cause: parley.CodeMalformed}
		},
		"key did not sign": func(rt *rotation) refusal {
			_, stranger, _ := ed25519.GenerateKey(rand.Reader)
			return refusal{signer: stranger, cert: rt.rotated.Certificate, cause: parley.CodeBadSignature}
		},
	}
}

// staleData is revocation data that cannot answer.
type staleData struct{}

func (staleData) Revoked(string, []byte, int64) (bool, error) {
	return false, errors.New("revocation list last signed 61000 ms ago")
}

// captureStderr returns what f wrote on stderr (the agent's warnings).
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	tmp, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = tmp
	defer func() { os.Stderr = saved }()
	f()
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(tmp)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A receipt from a peer that rotated its identity key, signed by the new key
// and carrying the new certificate, settles the message (§17.8 item 4, §10.5):
// the certificate is ts-1's, verifies against go-1's trust bundle now and is
// not revoked (the old one is, superseded). The receipt event names the
// certificate's serial.
func TestReceiptFromRotatedPeer(t *testing.T) {
	rt := newRotation(t)
	rt.a.deliver(t, 2, rt.receipt(t, rt.rotated.Key, rt.rotated.Certificate))
	if rt.a.verified != 1 || rt.a.inFlight != nil {
		t.Fatalf("verified %d, in flight %v", rt.a.verified, rt.a.inFlight)
	}
	e := rt.a.events(t, "receipt")
	if len(e) != 1 || e[0]["verified"] != true || e[0]["signer_certificate"] != hex.EncodeToString(rt.rotated.Certificate.GetSerial()) {
		t.Fatalf("receipt events %v", e)
	}
}

// A receipt whose signature does not verify under the session's key and
// whose signer_certificate §17.8 item 4 does not accept is refused as
// bad_signature (ending the run, as any receipt that does not verify); the
// refusal names the failing check.
func TestReceiptFromRotatedPeerRefused(t *testing.T) {
	for name, mk := range refusals(t) {
		rt := newRotation(t)
		rf := mk(rt)
		d := &pb.Delivery{DeliveryId: 2, Item: &pb.Delivery_Receipt{Receipt: rt.receipt(t, rf.signer, rf.cert)}}
		err := rt.a.handleFrame(&pb.ConnectResponse{Kind: &pb.ConnectResponse_Delivery{Delivery: d}})
		if parley.CodeOf(err) != parley.CodeBadSignature {
			t.Errorf("%s: %v, want bad_signature", name, err)
			continue
		}
		if cause := parley.CodeOf(errors.Unwrap(err)); cause != rf.cause {
			t.Errorf("%s: refused for %q (%v), want %q", name, cause, err, rf.cause)
		}
		if rt.a.verified != 0 || rt.a.inFlight == nil || len(rt.a.events(t, "receipt")) != 0 {
			t.Errorf("%s: the receipt settled the message", name)
		}
	}
}

// A SessionReject from a peer that rotated (it restarted under the new key
// and lost the session, §17.8 item 3), signed by the new key and carrying the
// new certificate, is verified (§17.8 item 4): the session is closed and the
// message sealed again in a new session, established with the new
// certificate (§17.2 item 4).
func TestSessionRejectFromRotatedPeer(t *testing.T) {
	rt := newRotation(t)
	rt.a.deliver(t, 2, rt.reject(t, rt.rotated.Key, rt.rotated.Certificate))
	e := rt.a.events(t, "reject_received")
	if len(e) != 1 || e[0]["signer_certificate"] != hex.EncodeToString(rt.rotated.Certificate.GetSerial()) {
		t.Fatalf("reject_received events %v", e)
	}
	if rt.a.sessions[string(rt.sessionID)] != nil || rt.a.current != nil {
		t.Fatal("the refused session is still open")
	}
	s, got := initiateWith(t, rt.w, rt.a, rt.rotated, &rt.at, 3)
	if len(got) != 1 || got[0].GetSend().GetEnvelope() == nil {
		t.Fatalf("after the new handshake sent %v", got)
	}
	if _, err := s.Open(got[0].GetSend().GetEnvelope()); err != nil {
		t.Fatalf("the resealed message does not open in the new session: %v", err)
	}
	if n := len(rt.a.events(t, "resealed")); n != 1 {
		t.Fatalf("%d resealed events", n)
	}
}

// A SessionReject whose signature does not verify under the session's key
// and whose signer_certificate §17.8 item 4 does not accept is ignored (§17.4:
// a warning, bad_signature, naming the failing check): its delivery is only
// acked, the session stays and nothing is resealed.
func TestSessionRejectFromRotatedPeerRefused(t *testing.T) {
	for name, mk := range refusals(t) {
		rt := newRotation(t)
		rf := mk(rt)
		current := rt.a.current
		stderr := captureStderr(t, func() { rt.a.deliver(t, 2, rt.reject(t, rf.signer, rf.cert)) })
		if got := rt.a.frames(&rt.at); len(got) != 1 || !equalIDs(acksOf(t, got[0]), 2) {
			t.Errorf("%s: sent %v, want only the ack", name, got)
		}
		if rt.a.current != current || current == nil || rt.a.inFlight.resealing || len(rt.a.events(t, "reject_received")) != 0 {
			t.Errorf("%s: the reject was taken", name)
		}
		if !strings.Contains(stderr, `"code":"bad_signature"`) || !strings.Contains(stderr, "("+rf.cause+": ") {
			t.Errorf("%s: warning %q, want bad_signature caused by %s", name, stderr, rf.cause)
		}
	}
}
