package agent

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// The ticks below run on a fake clock (tick's argument). initiate and
// onLookup arm the first resend from the wall clock, so a test brackets them
// with before/after and ticks just before before+wait (nothing may go out)
// and at after+wait (a copy must); each later copy is due exactly a doubled
// wait after the tick that sent the previous one.
const justBefore = time.Millisecond

// frameBytes is the exact encoding of a handshake frame.
func frameBytes(t *testing.T, f *pb.HandshakeFrame) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expectCopy checks that what was sent since at is exactly one copy of the
// step 1 f1 (byte for byte), carrying cert (nil: none) under a request id
// newer than last and recorded as the latest one; it returns that id.
func expectCopy(t *testing.T, a *agentUnderTest, at *int, f1 []byte, cert *pb.AgentCertificate, last uint64, what string) uint64 {
	t.Helper()
	sent := a.frames(at)
	if len(sent) != 1 {
		t.Fatalf("%s: sent %d frames, want one copy of step 1: %v", what, len(sent), sent)
	}
	f, o := step1Of(t, sent[0])
	if !bytes.Equal(frameBytes(t, f), f1) {
		t.Fatalf("%s: the copy is not the same step 1, byte for byte", what)
	}
	if !proto.Equal(o.GetRecipientCertificate(), cert) {
		t.Fatalf("%s: recipient_certificate %v, want %v", what, o.GetRecipientCertificate(), cert)
	}
	if o.GetRequestId() <= last || a.step1Req != o.GetRequestId() {
		t.Fatalf("%s: request id %d (previous %d, latest recorded %d)", what, o.GetRequestId(), last, a.step1Req)
	}
	return o.GetRequestId()
}

// expectNothing checks that nothing was sent since at.
func expectNothing(t *testing.T, a *agentUnderTest, at *int, what string) {
	t.Helper()
	if sent := a.frames(at); len(sent) != 0 {
		t.Fatalf("%s: sent %v, want nothing", what, sent)
	}
}

// tickOK runs one tick at now.
func tickOK(t *testing.T, a *agentUnderTest, now time.Time) {
	t.Helper()
	if err := a.tick(now); err != nil {
		t.Fatal(err)
	}
}

// An initiator handshake with no step 2 sends the same step 1 again, byte
// for byte, on a backoff (§5.4): by default first after 5 s; with a
// configured first interval, that one doubling each time, to 60 s.
func TestStep1ResentOnBackoff(t *testing.T) {
	w := newWorld(t)
	goID := w.issuer("go-1")

	// Default: the first copy 5 s after step 1, the next 10 s after it.
	a := w.runner(t, goID, "ts-1", 1)
	at := 0
	before := time.Now()
	if err := a.initiate(); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	f1, o1 := step1Of(t, a.frames(&at)[0])
	orig := frameBytes(t, f1)
	tickOK(t, a, before.Add(DefaultStep1Resend-justBefore))
	expectNothing(t, a, &at, "before 5 s")
	tickOK(t, a, after.Add(DefaultStep1Resend))
	last := expectCopy(t, a, &at, orig, nil, o1.GetRequestId(), "at 5 s")
	now := after.Add(DefaultStep1Resend)
	tickOK(t, a, now.Add(2*DefaultStep1Resend-justBefore))
	expectNothing(t, a, &at, "before 10 s more")
	tickOK(t, a, now.Add(2*DefaultStep1Resend))
	expectCopy(t, a, &at, orig, nil, last, "10 s more")

	// Configured: 1 s, doubling, at most 60 s.
	b := w.runner(t, goID, "ts-1", 1)
	b.cfg.Step1Resend = time.Second
	at = 0
	before = time.Now()
	if err := b.initiate(); err != nil {
		t.Fatal(err)
	}
	after = time.Now()
	f1, o1 = step1Of(t, b.frames(&at)[0])
	orig, last = frameBytes(t, f1), o1.GetRequestId()
	waits := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, wait := range waits {
		w := wait * time.Second
		from := now
		if i == 0 {
			from, now = before, after
		}
		tickOK(t, b, from.Add(w-justBefore))
		expectNothing(t, b, &at, "before wait "+w.String())
		now = now.Add(w)
		tickOK(t, b, now)
		last = expectCopy(t, b, &at, orig, nil, last, "after wait "+w.String())
	}
	if n := len(b.events(t, "step1_resent")); n != len(waits) {
		t.Fatalf("%d step1_resent events, want %d", n, len(waits))
	}
	if e := b.events(t, "step1_resent")[0]; e["peer"] != "ts-1" || e["session_id"] != hex.EncodeToString(f1.GetSessionId()) {
		t.Fatalf("step1_resent event %v", e)
	}
}

// A step 2 answering the first copy after a resend went out completes the
// handshake (the handshake state is the same for every copy); resending stops,
// and a late refusal of the resent copy is no failure.
func TestStep2ForFirstCopyStopsResends(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")
	a := w.runner(t, goID, "ts-1", 1)
	at := 0
	if err := a.initiate(); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	f1, o1 := step1Of(t, a.frames(&at)[0])
	tickOK(t, a, after.Add(DefaultStep1Resend))
	resent := expectCopy(t, a, &at, frameBytes(t, f1), nil, o1.GetRequestId(), "resend")

	// The responder took the first copy (the resent one is still on its way).
	rh, f2, err := parley.AcceptHandshake(w.config(tsID), f1)
	if err != nil {
		t.Fatal(err)
	}
	a.deliver(t, 1, f2)
	got := a.frames(&at)
	if len(got) != 3 || got[0].GetSend().GetHandshake().GetStep() != 3 || got[1].GetSend().GetEnvelope() == nil || !equalIDs(acksOf(t, got[2]), 1) {
		t.Fatalf("after step 2: sent %v, want step 3, the message and the ack", got)
	}
	s, err := rh.ReadStep3(got[0].GetSend().GetHandshake())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(got[1].GetSend().GetEnvelope()); err != nil {
		t.Fatal(err)
	}
	if a.pending != nil || a.current == nil || len(a.events(t, "session")) != 1 {
		t.Fatalf("handshake not complete: pending %v, current %v", a.pending, a.current)
	}
	for _, d := range []time.Duration{time.Minute, time.Hour} {
		tickOK(t, a, after.Add(d))
		expectNothing(t, a, &at, "after step 2")
	}
	// The gateway's answer to the resent copy comes late: no new failure.
	stderr := captureStderr(t, func() {
		if err := refuse(a, resent, "rate_limited"); err != nil {
			t.Fatalf("a late refusal of a copy ended the run: %v", err)
		}
	})
	if !strings.Contains(stderr, "earlier copy of handshake step 1") {
		t.Fatalf("no warning for the late refusal: %s", stderr)
	}
}

// A first-contact step 1 (relayed with the recipient's registry certificate,
// §17.2 item 6) is resent with that certificate, its backoff starting again
// at the relay; a policy_denied of such a resend is the route denied, as for
// the relay itself.
func TestFirstContactStep1ResentWithCertificate(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")
	a := w.runner(t, goID, "ts-1", 1)
	a.cfg.Directory = &scriptedDirectory{answers: []lookupAnswer{{cert: tsID.Certificate}}}
	at := 0
	if err := a.initiate(); err != nil {
		t.Fatal(err)
	}
	f1, o1 := step1Of(t, a.frames(&at)[0])
	orig := frameBytes(t, f1)
	captureStderr(t, func() {
		if err := refuse(a, o1.GetRequestId(), parley.CodePolicyDenied); err != nil {
			t.Fatal(err)
		}
	})
	before := time.Now()
	if err := awaitLookup(t, a); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	relay := expectCopy(t, a, &at, orig, tsID.Certificate, o1.GetRequestId(), "first contact relay")
	tickOK(t, a, before.Add(DefaultStep1Resend-justBefore))
	expectNothing(t, a, &at, "before 5 s after the relay")
	tickOK(t, a, after.Add(DefaultStep1Resend))
	resent := expectCopy(t, a, &at, orig, tsID.Certificate, relay, "resend after the relay")
	tickOK(t, a, after.Add(DefaultStep1Resend+2*DefaultStep1Resend))
	resent = expectCopy(t, a, &at, orig, tsID.Certificate, resent, "second resend")
	err := refuse(a, resent, parley.CodePolicyDenied)
	if parley.CodeOf(err) != parley.CodePolicyDenied || !strings.Contains(err.Error(), "certificate attached") {
		t.Fatalf("a resend with the certificate refused policy_denied: %v", err)
	}
}

// Refusals of step 1 copies: one of an earlier copy is ignored; one of the
// latest, resent copy is tried again on the backoff, unless it is
// policy_denied, which starts the first contact as for the first copy; the
// first copy's own refusal and any other request's still end the run.
func TestStep1CopyRefusals(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")
	dir := &scriptedDirectory{answers: []lookupAnswer{{cert: tsID.Certificate}}}
	a := w.runner(t, goID, "ts-1", 1)
	a.cfg.Directory = dir
	at := 0
	if err := a.initiate(); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	f1, o1 := step1Of(t, a.frames(&at)[0])
	orig := frameBytes(t, f1)
	now := after.Add(DefaultStep1Resend)
	tickOK(t, a, now)
	second := expectCopy(t, a, &at, orig, nil, o1.GetRequestId(), "first resend")
	stderr := captureStderr(t, func() {
		// The first copy's answer, late: the latest copy's answer decides.
		if err := refuse(a, o1.GetRequestId(), parley.CodePolicyDenied); err != nil {
			t.Fatalf("refusal of an earlier copy: %v", err)
		}
		if a.lookingUp || dir.calls() != 0 {
			t.Fatal("an earlier copy's policy_denied started a lookup")
		}
		// The resent copy rate_limited: sent again on the backoff.
		if err := refuse(a, second, "rate_limited"); err != nil {
			t.Fatalf("refusal of a resent copy: %v", err)
		}
	})
	if !strings.Contains(stderr, "earlier copy") || !strings.Contains(stderr, `"code":"rate_limited"`) {
		t.Fatalf("warnings: %s", stderr)
	}
	now = now.Add(2 * DefaultStep1Resend)
	tickOK(t, a, now)
	third := expectCopy(t, a, &at, orig, nil, second, "after rate_limited")
	// The latest copy policy_denied: the first contact, as for the first copy.
	captureStderr(t, func() {
		if err := refuse(a, third, parley.CodePolicyDenied); err != nil {
			t.Fatal(err)
		}
	})
	// No copy without the certificate while the lookup runs.
	tickOK(t, a, now.Add(time.Hour))
	if err := awaitLookup(t, a); err != nil {
		t.Fatal(err)
	}
	expectCopy(t, a, &at, orig, tsID.Certificate, third, "first contact relay")
	if dir.calls() != 1 {
		t.Fatalf("%d lookups", dir.calls())
	}
	// Another request's refusal ends the run, as before.
	if err := refuse(a, 999, parley.CodeTooLarge); parley.CodeOf(err) != parley.CodeTooLarge {
		t.Fatalf("another request refused: %v", err)
	}
}

// A responder holding a step 1's session id drops a copy of it (§5.1): from
// the peer it is held with, that peer's resend while it waits for step 2
// (§5.4), silently — no step 2 again, no warning; a step 1 with that id from
// anyone else is a replay and warned about.
func TestStep1CopyFromPeerDroppedSilently(t *testing.T) {
	w := newWorld(t)
	goID, tsID, otherID := w.issuer("go-1"), w.issuer("ts-1"), w.issuer("ts-2")
	a := w.runner(t, goID, "ts-1", 0)
	at := 0
	_, f1, err := parley.StartHandshake(w.config(tsID), goID.AgentID, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.deliver(t, 1, f1)
	if got := a.frames(&at); len(got) != 2 || got[0].GetSend().GetHandshake().GetStep() != 2 {
		t.Fatalf("step 1: sent %v, want step 2 and the ack", got)
	}
	stderr := captureStderr(t, func() { a.deliver(t, 2, f1) })
	if got := a.frames(&at); len(got) != 1 || !equalIDs(acksOf(t, got[0]), 2) {
		t.Fatalf("copy of step 1: sent %v, want only its ack", got)
	}
	if strings.Contains(stderr, "replay") {
		t.Fatalf("a warning for the peer's own resend: %s", stderr)
	}
	forged := proto.Clone(f1).(*pb.HandshakeFrame)
	forged.SenderId = otherID.AgentID
	stderr = captureStderr(t, func() { a.deliver(t, 3, forged) })
	if !strings.Contains(stderr, `"code":"replay"`) {
		t.Fatalf("no warning for a step 1 replayed by another agent: %s", stderr)
	}
}
