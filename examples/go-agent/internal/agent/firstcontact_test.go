package agent

import (
	"context"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// scriptedDirectory answers lookups from a script, one answer per call (the
// last one repeats).
type scriptedDirectory struct {
	mu      sync.Mutex
	answers []lookupAnswer
	asked   []string
}

type lookupAnswer struct {
	cert *pb.AgentCertificate
	err  error
}

func (d *scriptedDirectory) Lookup(_ context.Context, agentID string) (*pb.AgentCertificate, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked = append(d.asked, agentID)
	a := d.answers[0]
	if len(d.answers) > 1 {
		d.answers = d.answers[1:]
	}
	return a.cert, a.err
}

func (d *scriptedDirectory) calls() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.asked)
}

// refuse answers request id req as the gateway refuses a step 1 to an
// addressee it never saw (§10.3 step 5).
func refuse(a *agentUnderTest, req uint64, code string) error {
	return a.handleFrame(&pb.ConnectResponse{Kind: &pb.ConnectResponse_Rejected{Rejected: &pb.Rejected{
		RequestId: req, Code: code, Message: "the route to this recipient is not allowed",
	}}})
}

// awaitLookup hands the runner the answer of the lookup it started, as the
// event loop does.
func awaitLookup(t *testing.T, a *agentUnderTest) error {
	t.Helper()
	select {
	case res := <-a.lookups:
		return a.onLookup(res)
	case <-time.After(2 * time.Second):
		t.Fatal("no lookup started")
		return nil
	}
}

// step1Of returns the handshake step 1 sent in m, with its request id.
func step1Of(t *testing.T, m *pb.ConnectRequest) (*pb.HandshakeFrame, *pb.Outbound) {
	t.Helper()
	o := m.GetSend()
	if o.GetHandshake().GetStep() != 1 {
		t.Fatalf("not a step 1: %v", m)
	}
	return o.GetHandshake(), o
}

// A step 1 refused policy_denied is relayed again — the same frame — with the
// recipient's certificate from the directory (§17.2 item 6), and the
// handshake then completes as any other.
func TestFirstContactIntroducesRecipient(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")
	dir := &scriptedDirectory{answers: []lookupAnswer{{cert: tsID.Certificate}}}
	a := w.runner(t, goID, "ts-1", 1)
	a.cfg.Directory = dir
	at := 0
	if err := a.initiate(); err != nil {
		t.Fatal(err)
	}
	sent := a.frames(&at)
	f1, o1 := step1Of(t, sent[0])
	if o1.GetRecipientCertificate() != nil {
		t.Fatal("the first step 1 carries a certificate (only after a refusal, §17.2 item 6)")
	}
	stderr := captureStderr(t, func() {
		if err := refuse(a, o1.GetRequestId(), parley.CodePolicyDenied); err != nil {
			t.Fatal(err)
		}
		if err := awaitLookup(t, a); err != nil {
			t.Fatal(err)
		}
	})
	if !strings.Contains(stderr, `"code":"policy_denied"`) || !strings.Contains(stderr, "first contact") {
		t.Fatalf("no warning for the refusal: %s", stderr)
	}
	sent = a.frames(&at)
	if len(sent) != 1 {
		t.Fatalf("sent %d frames after the lookup, want the step 1 again", len(sent))
	}
	f1again, o2 := step1Of(t, sent[0])
	if !proto.Equal(f1again, f1) {
		t.Fatal("the step 1 relayed with the certificate is not the same frame")
	}
	if !proto.Equal(o2.GetRecipientCertificate(), tsID.Certificate) || o2.GetRequestId() == o1.GetRequestId() {
		t.Fatalf("second step 1: certificate %v, request id %d", o2.GetRecipientCertificate(), o2.GetRequestId())
	}
	if dir.calls() != 1 {
		t.Fatalf("%d lookups", dir.calls())
	}
	fc := a.events(t, "first_contact")
	if len(fc) != 1 || fc[0]["peer"] != "ts-1" || fc[0]["serial"] != hex.EncodeToString(tsID.Certificate.GetSerial()) ||
		fc[0]["session_id"] != hex.EncodeToString(f1.GetSessionId()) {
		t.Fatalf("first_contact events: %v", fc)
	}
	// The responder answers the (stored, then delivered) step 1.
	at--
	s, sealed := initiateWith(t, w, a, tsID, &at, 1)
	if len(sealed) != 1 || sealed[0].GetSend().GetEnvelope() == nil {
		t.Fatalf("after step 3: %v", sealed)
	}
	if _, err := s.Open(sealed[0].GetSend().GetEnvelope()); err != nil {
		t.Fatal(err)
	}
	if a.step1 != nil || a.introduced != nil {
		t.Fatal("first contact state kept after step 2")
	}
}

// Refused policy_denied again with the certificate attached, the route is
// denied: the send (here the run) ends policy_denied. Without a directory
// (no --registry) the first refusal does.
func TestFirstContactRouteDenied(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")
	a := w.runner(t, goID, "ts-1", 1)
	a.cfg.Directory = &scriptedDirectory{answers: []lookupAnswer{{cert: tsID.Certificate}}}
	at := 0
	if err := a.initiate(); err != nil {
		t.Fatal(err)
	}
	_, o1 := step1Of(t, a.frames(&at)[0])
	captureStderr(t, func() {
		if err := refuse(a, o1.GetRequestId(), parley.CodePolicyDenied); err != nil {
			t.Fatal(err)
		}
	})
	if err := awaitLookup(t, a); err != nil {
		t.Fatal(err)
	}
	_, o2 := step1Of(t, a.frames(&at)[0])
	err := refuse(a, o2.GetRequestId(), parley.CodePolicyDenied)
	if parley.CodeOf(err) != parley.CodePolicyDenied || !strings.Contains(err.Error(), "certificate attached") {
		t.Fatalf("refused with the certificate: %v", err)
	}

	b := w.runner(t, goID, "ts-1", 1)
	at = 0
	if err := b.initiate(); err != nil {
		t.Fatal(err)
	}
	_, o1 = step1Of(t, b.frames(&at)[0])
	err = refuse(b, o1.GetRequestId(), parley.CodePolicyDenied)
	if parley.CodeOf(err) != parley.CodePolicyDenied || !strings.Contains(err.Error(), "--registry") {
		t.Fatalf("without a directory: %v", err)
	}
	// Another refusal of the step 1 is what it was before: the run ends with its code.
	c := w.runner(t, goID, "ts-1", 1)
	c.cfg.Directory = &scriptedDirectory{answers: []lookupAnswer{{cert: tsID.Certificate}}}
	at = 0
	if err := c.initiate(); err != nil {
		t.Fatal(err)
	}
	_, o1 = step1Of(t, c.frames(&at)[0])
	if err := refuse(c, o1.GetRequestId(), parley.CodeTooLarge); parley.CodeOf(err) != parley.CodeTooLarge {
		t.Fatalf("too_large: %v", err)
	}
}

// A permanent lookup failure (the registry has no such agent, a certificate
// that does not verify, …: policy_denied naming the cause) ends the send; a
// transient one is tried again after the backoff, doubling.
func TestFirstContactLookupFailures(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")

	a := w.runner(t, goID, "ts-1", 1)
	a.cfg.Directory = &scriptedDirectory{answers: []lookupAnswer{{err: parley.Errorf(parley.CodePolicyDenied, `no agent "ts-1": the registry has no agent with that id`)}}}
	at := 0
	if err := a.initiate(); err != nil {
		t.Fatal(err)
	}
	_, o1 := step1Of(t, a.frames(&at)[0])
	captureStderr(t, func() { _ = refuse(a, o1.GetRequestId(), parley.CodePolicyDenied) })
	err := awaitLookup(t, a)
	if parley.CodeOf(err) != parley.CodePolicyDenied || !strings.Contains(err.Error(), `no agent "ts-1"`) {
		t.Fatalf("permanent: %v", err)
	}
	if len(a.frames(&at)) != 0 {
		t.Fatal("sent something after a permanent lookup failure")
	}

	dir := &scriptedDirectory{answers: []lookupAnswer{
		{err: parley.Errorf("unavailable", "registry lookup failed: connection refused")},
		{err: parley.Errorf(parley.CodeRevocationStale, "revocation data stale")},
		{cert: tsID.Certificate},
	}}
	b := w.runner(t, goID, "ts-1", 1)
	b.cfg.Directory = dir
	at = 0
	if err := b.initiate(); err != nil {
		t.Fatal(err)
	}
	_, o1 = step1Of(t, b.frames(&at)[0])
	start := time.Now()
	stderr := captureStderr(t, func() {
		_ = refuse(b, o1.GetRequestId(), parley.CodePolicyDenied)
		if err := awaitLookup(t, b); err != nil {
			t.Fatal(err)
		}
		// Not before the backoff (5 s) ...
		if err := b.tick(start.Add(4 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if dir.calls() != 1 {
			t.Fatalf("asked again before the backoff: %d", dir.calls())
		}
		// ... then again: transient once more, now 10 s from then.
		if err := b.tick(start.Add(6 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := awaitLookup(t, b); err != nil {
			t.Fatal(err)
		}
		if err := b.tick(start.Add(9 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if dir.calls() != 2 {
			t.Fatalf("asked again before the doubled backoff: %d", dir.calls())
		}
		if err := b.tick(start.Add(11 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := awaitLookup(t, b); err != nil {
			t.Fatal(err)
		}
	})
	for _, want := range []string{`"code":"unavailable"`, "trying again in 5s", `"code":"revocation_stale"`, "trying again in 10s"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %s: %s", want, stderr)
		}
	}
	sent := b.frames(&at)
	if len(sent) != 1 {
		t.Fatalf("sent %d frames", len(sent))
	}
	if _, o := step1Of(t, sent[0]); !proto.Equal(o.GetRecipientCertificate(), tsID.Certificate) {
		t.Fatal("the step 1 relayed again carries no certificate")
	}
}
