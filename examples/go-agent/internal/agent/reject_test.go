package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"parley/go-agent/internal/gateway"
	"parley/go-agent/internal/gatewaytest"
	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// world is an issuer, its trust bundle and agents it certified (valid now:
// the runner checks certificates against the clock).
type world struct {
	trust  *parley.TrustBundle
	issuer func(agentID string) *parley.Identity // certifies an agent
	// issue certifies an agent, edit changing the certificate before the
	// issuer signs it (nil: as issuer).
	issue func(agentID string, edit func(c *pb.AgentCertificate)) *parley.Identity
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ipub, ipriv, _ := ed25519.GenerateKey(rand.Reader)
	iid, _ := parley.KeyID(ipub)
	trust, err := parley.NewTrustBundle([]parley.TrustedIssuer{{KeyID: iid, PublicKey: ipub}})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{trust: trust}
	w.issuer = func(agentID string) *parley.Identity { return w.issue(agentID, nil) }
	w.issue = func(agentID string, edit func(c *pb.AgentCertificate)) *parley.Identity {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		serial := make([]byte, 16)
		_, _ = rand.Read(serial)
		now := time.Now().UnixMilli()
		c := &pb.AgentCertificate{
			Version: 1, AgentId: agentID, IdentityPublicKey: pub, AgentType: "worker",
			Capabilities: []string{"msg:send"}, ValidFromMs: now - 60_000, ValidUntilMs: now + 3_600_000,
			Serial: serial, IssuerKeyId: iid,
		}
		if edit != nil {
			edit(c)
		}
		tbs, err := parley.CertificateTBS(c)
		if err != nil {
			t.Fatal(err)
		}
		c.Signature = ed25519.Sign(ipriv, tbs)
		return &parley.Identity{AgentID: agentID, Key: priv, Certificate: c}
	}
	return w
}

func (w *world) config(id *parley.Identity) parley.HandshakeConfig {
	return parley.HandshakeConfig{Identity: id, Trust: w.trust, Now: nowMs}
}

// agentUnderTest is a runner ("go") on a recorded stream whose gateway offers
// outbound_acks, with its event lines.
type agentUnderTest struct {
	*runner
	rec *gatewaytest.Recorder
	out *strings.Builder
}

func (w *world) runner(t *testing.T, id *parley.Identity, peer string, send int) *agentUnderTest {
	t.Helper()
	out := &strings.Builder{}
	r := newRunner(Config{Identity: id, Trust: w.trust, Peer: peer, Send: send, Expect: 1000, Out: out})
	rec := &gatewaytest.Recorder{}
	r.conn = gateway.NewConn(rec, &pb.Welcome{AgentId: id.AgentID, OutboundAcks: true}, "gw")
	return &agentUnderTest{runner: r, rec: rec, out: out}
}

// deliver hands the runner one Delivery frame, as the gateway would.
func (a *agentUnderTest) deliver(t *testing.T, id uint64, item any) {
	t.Helper()
	d := &pb.Delivery{DeliveryId: id}
	switch it := item.(type) {
	case *pb.HandshakeFrame:
		d.Item = &pb.Delivery_Handshake{Handshake: it}
	case *pb.SecureMessage:
		d.Item = &pb.Delivery_Envelope{Envelope: it}
	case *pb.SessionReject:
		d.Item = &pb.Delivery_SessionReject{SessionReject: it}
	case *pb.DeliveryReceipt:
		d.Item = &pb.Delivery_Receipt{Receipt: it}
	default:
		t.Fatalf("item %T", item)
	}
	if err := a.handleFrame(&pb.ConnectResponse{Kind: &pb.ConnectResponse_Delivery{Delivery: d}}); err != nil {
		t.Fatal(err)
	}
}

// frames returns what the runner sent since the last call: Outbound items and
// Ack frames.
func (a *agentUnderTest) frames(from *int) []*pb.ConnectRequest {
	out := a.rec.Sent[*from:]
	*from = len(a.rec.Sent)
	return out
}

// events returns the event lines of one kind.
func (a *agentUnderTest) events(t *testing.T, kind string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(a.out.String()), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		if e["event"] == kind {
			out = append(out, e)
		}
	}
	return out
}

func seal(t *testing.T, s *parley.Session, seq int) *parley.Sealed {
	t.Helper()
	v, _ := structpb.NewValue(map[string]any{"seq": seq})
	m, err := s.Seal(pb.MessageType_MESSAGE_TYPE_STATUS_UPDATE, v)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// lostSession is a session "ts" holds with id.AgentID that the runner never
// had (its copy was lost: an earlier run).
func (w *world) lostSession(t *testing.T, ts, id *parley.Identity) *parley.Session {
	t.Helper()
	ih, f1, err := parley.StartHandshake(w.config(ts), id.AgentID, nil)
	if err != nil {
		t.Fatal(err)
	}
	rh, f2, err := parley.AcceptHandshake(w.config(id), f1)
	if err != nil {
		t.Fatal(err)
	}
	f3, s, err := ih.ReadStep2(f2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rh.ReadStep3(f3); err != nil {
		t.Fatal(err)
	}
	return s
}

// replyOf returns the reply item of a quiet Send and the delivery it acks.
func replyOf(t *testing.T, m *pb.ConnectRequest) (*pb.Outbound, uint64) {
	t.Helper()
	o := m.GetSend()
	if o == nil || !o.GetQuiet() {
		t.Fatalf("not a quiet Send: %v", m)
	}
	return o, o.GetAckDeliveryId()
}

// acksOf returns the delivery ids of one Ack frame.
func acksOf(t *testing.T, m *pb.ConnectRequest) []uint64 {
	t.Helper()
	a := m.GetAck()
	if a == nil {
		t.Fatalf("not an Ack frame: %v", m)
	}
	return append([]uint64{a.GetDeliveryId()}, a.GetMoreDeliveryIds()...)
}

// An envelope of a session the agent neither holds nor is establishing is
// answered with a SessionReject (§17.4) — the TS layout, signed by the
// agent's identity key — carried by the reply that acks its delivery; one
// whose receipt is known gets the receipt again instead; one that may be
// among dropped receipts (§17.4) and one not addressed to the agent are only
// acked.
func TestUnknownSessionAnsweredWithSessionReject(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")
	a := w.runner(t, goID, "ts-1", 0)
	lost := w.lostSession(t, tsID, goID)
	m := seal(t, lost, 1)
	at := 0

	a.deliver(t, 5, m.Envelope)
	got := a.frames(&at)
	if len(got) != 1 {
		t.Fatalf("sent %v, want one reject", got)
	}
	o, acked := replyOf(t, got[0])
	rj := o.GetSessionReject()
	if rj == nil || acked != 5 {
		t.Fatalf("reply %v acking %d, want a session reject acking 5", o, acked)
	}
	goPub := goID.Key.Public().(ed25519.PublicKey)
	if err := parley.VerifySessionReject(rj, lost.ID, m.MessageHash, "ts-1", "go-1", goPub); err != nil {
		t.Fatalf("the sender's check: %v", err)
	}
	if now := time.Now().UnixMilli(); rj.GetRejectedAtMs() > now || rj.GetRejectedAtMs() < now-10_000 {
		t.Fatalf("rejected_at_ms %d", rj.GetRejectedAtMs())
	}
	if e := a.events(t, "reject_sent"); len(e) != 1 || e[0]["from"] != "ts-1" {
		t.Fatalf("reject_sent events %v", e)
	}

	// Again (the sender's resend): another reject.
	a.deliver(t, 6, m.Envelope)
	if got := a.frames(&at); len(got) != 1 || got[0].GetSend().GetSessionReject() == nil || got[0].GetSend().GetAckDeliveryId() != 6 {
		t.Fatalf("resend: sent %v", got)
	}

	// Taken before (its receipt is known): the receipt again, never a reject.
	rc, err := parley.SignReceipt(goID.Key, m.MessageHash, "ts-1", "go-1", time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	a.receipts.add(m.MessageHash, rc, time.Now().UnixMilli())
	a.deliver(t, 7, m.Envelope)
	if got := a.frames(&at); len(got) != 1 || got[0].GetSend().GetReceipt() != rc || got[0].GetSend().GetAckDeliveryId() != 7 {
		t.Fatalf("known receipt: sent %v", got)
	}

	// Not addressed to this agent: acked, no reject.
	other := seal(t, w.lostSession(t, tsID, w.issuer("go-2")), 1)
	a.deliver(t, 8, other.Envelope)
	if got := a.frames(&at); len(got) != 1 || !equalIDs(acksOf(t, got[0]), 8) {
		t.Fatalf("another addressee: sent %v", got)
	}

	// The store dropped a receipt still young (§17.4): an envelope no younger
	// than it plus the future skew is acked without a reject; a younger one
	// gets its reject.
	small := newReceiptStore(1, parley.DefaultSkew.MaxAgeMs)
	now := time.Now().UnixMilli()
	small.add([]byte("a"), rc, now-1000)
	small.add([]byte("b"), rc, now)
	if !small.forgot || small.forgottenUntilMs != now-1000 || small.get([]byte("a")) != nil || small.get([]byte("b")) != rc {
		t.Fatalf("store after overflow: forgot %v until %d", small.forgot, small.forgottenUntilMs)
	}
	a.receipts = small
	m2 := seal(t, lost, 2) // timestamp now ≤ now-1000 + 60 s
	a.deliver(t, 9, m2.Envelope)
	if got := a.frames(&at); len(got) != 1 || !equalIDs(acksOf(t, got[0]), 9) {
		t.Fatalf("maybe taken: sent %v, want only the ack", got)
	}
	small.forgottenUntilMs = now - 2*parley.DefaultSkew.MaxFutureMs
	a.deliver(t, 10, m2.Envelope)
	if got := a.frames(&at); len(got) != 1 || got[0].GetSend().GetSessionReject() == nil {
		t.Fatalf("younger than the dropped receipts: sent %v, want a reject", got)
	}
}

func equalIDs(got []uint64, want ...uint64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// respond runs step 1 → 2 with the runner as responder; it returns the
// initiator's handshake and the step-2 frame the runner sent.
func respond(t *testing.T, w *world, a *agentUnderTest, ts *parley.Identity, at *int, id uint64) (*parley.Handshake, *pb.HandshakeFrame) {
	t.Helper()
	ih, f1, err := parley.StartHandshake(w.config(ts), a.cfg.Identity.AgentID, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.deliver(t, id, f1)
	got := a.frames(at)
	if len(got) != 2 || got[0].GetSend().GetHandshake().GetStep() != 2 || !equalIDs(acksOf(t, got[1]), id) {
		t.Fatalf("step 1: sent %v", got)
	}
	return ih, got[0].GetSend().GetHandshake()
}

// Envelopes that overtake step 3 are held, unacked (at most 64; more are
// deferred and tried again), and opened in arrival order right after step 3,
// each receipt carrying the ack of its delivery (§5.4, §17.3 item 4).
func TestEnvelopesHeldUntilStep3(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")
	a := w.runner(t, goID, "ts-1", 0)
	at := 0
	ih, f2 := respond(t, w, a, tsID, &at, 1)
	f3, ts, err := ih.ReadStep2(f2)
	if err != nil {
		t.Fatal(err)
	}
	const n = MaxHeldEnvelopes + 3
	for i := 0; i < n; i++ {
		a.deliver(t, uint64(10+i), seal(t, ts, i).Envelope)
	}
	if got := a.frames(&at); len(got) != 0 {
		t.Fatalf("before step 3: sent %v, want nothing (held, unacked)", got)
	}
	if held := len(a.accepted[string(ts.ID)].held); held != MaxHeldEnvelopes || len(a.deferred) != 3 {
		t.Fatalf("held %d, deferred %d", held, len(a.deferred))
	}
	a.deliver(t, 2, f3)
	got := a.frames(&at)
	if len(got) != n+1 {
		t.Fatalf("after step 3: %d frames, want %d receipts and the step 3 ack", len(got), n)
	}
	for i := 0; i < n; i++ {
		o, acked := replyOf(t, got[i])
		if o.GetReceipt() == nil || acked != uint64(10+i) {
			t.Fatalf("frame %d: %v acking %d", i, o, acked)
		}
	}
	if !equalIDs(acksOf(t, got[n]), 2) {
		t.Fatalf("last frame %v", got[n])
	}
	recv := a.events(t, "received")
	if len(recv) != n {
		t.Fatalf("%d received", len(recv))
	}
	for i, e := range recv {
		if seq := e["content"].(map[string]any)["seq"].(float64); int(seq) != i {
			t.Fatalf("received %d has seq %v: not in arrival order", i, seq)
		}
	}
	if len(a.deferred) != 0 || len(a.accepted) != 0 {
		t.Fatalf("left: deferred %d, accepted %d", len(a.deferred), len(a.accepted))
	}
}

// When the handshake fails at step 3 (poisoned, §5.4) or times out, every
// envelope it held is answered with a SessionReject that acks it; the run
// goes on, and later envelopes of that session are rejected too.
func TestHeldEnvelopesRejectedWhenHandshakeEnds(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")
	goPub := goID.Key.Public().(ed25519.PublicKey)
	for _, how := range []string{"bad step 3", "timeout"} {
		a := w.runner(t, goID, "ts-1", 0)
		at := 0
		ih, f2 := respond(t, w, a, tsID, &at, 1)
		f3, ts, err := ih.ReadStep2(f2)
		if err != nil {
			t.Fatal(err)
		}
		m1, m2 := seal(t, ts, 1), seal(t, ts, 2)
		a.deliver(t, 3, m1.Envelope)
		a.deliver(t, 4, m2.Envelope)
		if got := a.frames(&at); len(got) != 0 {
			t.Fatalf("%s: before step 3: sent %v", how, got)
		}
		if how == "bad step 3" {
			f3.NoiseMessage = append([]byte(nil), f3.GetNoiseMessage()...)
			f3.NoiseMessage[len(f3.NoiseMessage)-1] ^= 1
			a.deliver(t, 5, f3)
		} else {
			if err := a.tick(time.Now().Add(DefaultHandshakeTimeout - time.Second)); err != nil {
				t.Fatal(err)
			}
			if got := a.frames(&at); len(got) != 0 {
				t.Fatalf("before the timeout: sent %v", got)
			}
			if err := a.tick(time.Now().Add(DefaultHandshakeTimeout)); err != nil {
				t.Fatal(err)
			}
		}
		got := a.frames(&at)
		if len(got) < 2 {
			t.Fatalf("%s: sent %v", how, got)
		}
		for i, m := range []*parley.Sealed{m1, m2} {
			o, acked := replyOf(t, got[i])
			if acked != uint64(3+i) || parley.VerifySessionReject(o.GetSessionReject(), ts.ID, m.MessageHash, "ts-1", "go-1", goPub) != nil {
				t.Fatalf("%s: frame %d: %v acking %d", how, i, o, acked)
			}
		}
		if len(a.accepted) != 0 || len(a.sessions) != 0 || len(a.events(t, "received")) != 0 {
			t.Fatalf("%s: accepted %d, sessions %d", how, len(a.accepted), len(a.sessions))
		}
		a.deliver(t, 6, seal(t, ts, 3).Envelope)
		if got := a.frames(&at); len(got) != 1 || got[0].GetSend().GetSessionReject() == nil {
			t.Fatalf("%s: a later envelope: sent %v", how, got)
		}
	}
}

// initiateWith runs a whole handshake with the runner as initiator (it sends
// step 1 itself: at start, or after a reject); it returns the peer's session
// and what the runner sealed after step 3 (the frames between step 3 and the
// ack of step 2).
func initiateWith(t *testing.T, w *world, a *agentUnderTest, ts *parley.Identity, at *int, id uint64) (*parley.Session, []*pb.ConnectRequest) {
	t.Helper()
	got := a.frames(at)
	if len(got) == 0 || got[0].GetSend().GetHandshake().GetStep() != 1 {
		t.Fatalf("no step 1: sent %v", got)
	}
	rh, f2, err := parley.AcceptHandshake(w.config(ts), got[0].GetSend().GetHandshake())
	if err != nil {
		t.Fatal(err)
	}
	a.deliver(t, id, f2)
	got = a.frames(at)
	if len(got) < 2 || got[0].GetSend().GetHandshake().GetStep() != 3 {
		t.Fatalf("after step 2: sent %v", got)
	}
	if last := got[len(got)-1]; !equalIDs(acksOf(t, last), id) {
		t.Fatalf("step 2 not acked: %v", last)
	}
	s, err := rh.ReadStep3(got[0].GetSend().GetHandshake())
	if err != nil {
		t.Fatal(err)
	}
	return s, got[1 : len(got)-1]
}

// A verified SessionReject for the message in flight closes its session and
// seals that message again in a new session (§17.2 item 4); a reject that
// does not verify, or names nothing in flight, is ignored; after MaxReseals
// the send fails with unknown_session.
func TestSessionRejectReseals(t *testing.T) {
	w := newWorld(t)
	goID, tsID := w.issuer("go-1"), w.issuer("ts-1")
	a := w.runner(t, goID, "ts-1", 1)
	at := 0
	if err := a.initiate(); err != nil {
		t.Fatal(err)
	}
	ts, got := initiateWith(t, w, a, tsID, &at, 1)
	env := got[0].GetSend().GetEnvelope()
	if env == nil || a.inFlight == nil || a.inFlight.seq != 1 {
		t.Fatalf("no message sent: %v", got)
	}
	hash, _ := parley.MessageHash(env)
	reject := func(key ed25519.PrivateKey, e *pb.SecureMessage, h []byte) *pb.SessionReject {
		rj, err := parley.SignSessionReject(key, e, h, time.Now().UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		return rj
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	ignored := []*pb.SessionReject{
		reject(stranger, env, hash),             // not the certified key
		reject(tsID.Key, env, make([]byte, 32)), // names nothing in flight
	}
	wrongSession := reject(tsID.Key, env, hash)
	wrongSession.SessionId = make([]byte, 16)
	ignored = append(ignored, wrongSession) // names another session (and no longer verifies)
	for i, rj := range ignored {
		a.deliver(t, uint64(2+i), rj)
		if got := a.frames(&at); len(got) != 1 || !equalIDs(acksOf(t, got[0]), uint64(2+i)) {
			t.Fatalf("ignored reject %d: sent %v", i, got)
		}
	}
	if a.current == nil || a.inFlight.resealing {
		t.Fatal("an ignored reject changed the session")
	}
	old := ts.ID
	for round := 1; round <= MaxReseals; round++ {
		a.deliver(t, uint64(10*round), reject(tsID.Key, env, hash))
		if a.sessions[string(old)] != nil || a.current != nil {
			t.Fatalf("round %d: the refused session is still open", round)
		}
		ts, got = initiateWith(t, w, a, tsID, &at, uint64(10*round+1))
		if len(got) != 1 || got[0].GetSend().GetEnvelope() == nil {
			t.Fatalf("round %d: after the new handshake sent %v", round, got)
		}
		resealed := got[0].GetSend().GetEnvelope()
		if bytes.Equal(resealed.GetSessionId(), old) || !bytes.Equal(resealed.GetSessionId(), ts.ID) {
			t.Fatalf("round %d: resealed in session %x", round, resealed.GetSessionId())
		}
		opened, err := ts.Open(resealed)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if seq := opened.Payload.GetContent().GetStructValue().GetFields()["seq"].GetNumberValue(); seq != 1 {
			t.Fatalf("round %d: resealed seq %v", round, seq)
		}
		if bytes.Equal(opened.MessageHash, hash) || !bytes.Equal(a.inFlight.hash, opened.MessageHash) || a.inFlight.reseals != round {
			t.Fatalf("round %d: in flight %+v", round, a.inFlight)
		}
		env, hash, old = resealed, opened.MessageHash, ts.ID
	}
	if n := len(a.events(t, "resealed")); n != MaxReseals || len(a.events(t, "reject_received")) != MaxReseals || a.runner.sent != 1 {
		t.Fatalf("%d resealed events, %d sent", n, a.runner.sent)
	}
	// One reject more: the send fails.
	d := &pb.Delivery{DeliveryId: 99, Item: &pb.Delivery_SessionReject{SessionReject: reject(tsID.Key, env, hash)}}
	err := a.handleFrame(&pb.ConnectResponse{Kind: &pb.ConnectResponse_Delivery{Delivery: d}})
	if parley.CodeOf(err) != parley.CodeUnknownSession {
		t.Fatalf("after %d reseals: %v, want unknown_session", MaxReseals, err)
	}
}
