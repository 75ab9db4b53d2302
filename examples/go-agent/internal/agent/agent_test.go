package agent

import (
	"context"
	"crypto/ed25519"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"parley/go-agent/internal/gateway"
	"parley/go-agent/internal/gatewaytest"
	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// The items of a Deliveries frame (§10.3) are handled in order, each as if it
// came alone, and their acks go out as one Ack frame when the gateway offers
// outbound_acks (else one Ack frame each, as before).
func TestDeliveriesFrame(t *testing.T) {
	peerPub, peerKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	hash := make([]byte, 32)
	hash[0] = 1
	other := make([]byte, 32)
	receipt := func(h []byte) *pb.DeliveryReceipt {
		rc, err := parley.SignReceipt(peerKey, h, "bob", "alice", 1)
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}
	for _, offer := range []bool{true, false} {
		rec := &gatewaytest.Recorder{}
		var out strings.Builder
		r := &runner{
			cfg:      Config{Identity: &parley.Identity{AgentID: "bob", Key: key}, Peer: "alice", Out: &out},
			conn:     gateway.NewConn(rec, &pb.Welcome{AgentId: "bob", OutboundAcks: offer}, "gw"),
			inFlight: &outstanding{seq: 1, requestID: 1, hash: hash, to: "alice", peerKey: peerPub},
		}
		frame := &pb.ConnectResponse{Kind: &pb.ConnectResponse_Deliveries{Deliveries: &pb.Deliveries{Items: []*pb.Delivery{
			{DeliveryId: 1, Item: &pb.Delivery_Receipt{Receipt: receipt(other)}}, // for no message in flight: dropped
			{DeliveryId: 2, Item: &pb.Delivery_Receipt{Receipt: receipt(hash)}},  // the message in flight
			{DeliveryId: 3, Item: &pb.Delivery_Receipt{Receipt: receipt(hash)}},  // again: dropped
		}}}}
		if err := r.handleFrame(frame); err != nil {
			t.Fatal(err)
		}
		if first, _, _ := strings.Cut(out.String(), "\n"); first != `{"event":"deliveries","items":3}` {
			t.Fatalf("offer %v: first event %s", offer, first)
		}
		if r.verified != 1 || r.inFlight != nil {
			t.Fatalf("offer %v: verified %d, in flight %v", offer, r.verified, r.inFlight)
		}
		var acks [][]uint64
		for _, m := range rec.Sent {
			a := m.GetAck()
			if a == nil {
				t.Fatalf("offer %v: unexpected frame %v", offer, m)
			}
			acks = append(acks, append([]uint64{a.GetDeliveryId()}, a.GetMoreDeliveryIds()...))
		}
		want := [][]uint64{{1, 2, 3}}
		if !offer {
			want = [][]uint64{{1}, {2}, {3}}
		}
		if !reflect.DeepEqual(acks, want) {
			t.Fatalf("offer %v: acks %v, want %v", offer, acks, want)
		}
	}
}

// fakeStream is a Connect stream whose gateway sends frames and then ends it
// (io.EOF); what the agent sends is recorded.
type fakeStream struct {
	gatewaytest.Recorder
	frames []*pb.ConnectResponse
}

func (f *fakeStream) Recv() (*pb.ConnectResponse, error) {
	if len(f.frames) == 0 {
		return nil, io.EOF
	}
	resp := f.frames[0]
	f.frames = f.frames[1:]
	return resp, nil
}

func (f *fakeStream) Trailer() metadata.MD { return nil }

// Going offline (Config.OfflineAfter) sends the acks made, half-closes the
// stream, drops what the gateway wrote before ending it (unacked: delivered
// again on the next stream) and reports the offline event; it happens once,
// and not when the run is done.
func TestGoOffline(t *testing.T) {
	fake := &fakeStream{frames: []*pb.ConnectResponse{
		{Kind: &pb.ConnectResponse_Delivery{Delivery: &pb.Delivery{DeliveryId: 9}}},
	}}
	var out strings.Builder
	r := &runner{
		cfg:     Config{Identity: &parley.Identity{AgentID: "bob"}, Peer: "alice", Expect: 3, OfflineAfter: 1, Out: &out},
		conn:    gateway.NewConn(fake, &pb.Welcome{AgentId: "bob", OutboundAcks: true}, "gw"),
		current: &parley.Session{},
	}
	if r.offlineDue() {
		t.Fatal("offline before any message was received")
	}
	r.received = 1
	if !r.offlineDue() {
		t.Fatal("not offline after OfflineAfter messages")
	}
	if err := r.conn.Ack(7); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.goOffline(ctx, read(ctx, r.conn)); err != nil {
		t.Fatal(err)
	}
	if len(fake.Sent) != 2 || fake.Sent[0].GetAck().GetDeliveryId() != 7 || fake.Sent[1] != nil {
		t.Fatalf("sent %v, want the ack of 7 then the half-close", fake.Sent)
	}
	if out.String() != "{\"event\":\"offline\",\"received\":1}\n" {
		t.Fatalf("events %q", out.String())
	}
	if r.received != 1 || r.offlineDue() {
		t.Fatalf("received %d, offline due again %v", r.received, r.offlineDue())
	}
	done := &runner{cfg: Config{Expect: 1, OfflineAfter: 1}, received: 1, current: &parley.Session{}}
	if done.offlineDue() {
		t.Fatal("offline when the run is done")
	}
}

// The resume line: a line or last bytes resume; an ended or missing input,
// or the deadline, fail.
func TestWaitLine(t *testing.T) {
	ctx := context.Background()
	for in, ok := range map[string]bool{"\n": true, "go\nmore": true, "go": true, "": false} {
		if err := waitLine(ctx, strings.NewReader(in)); (err == nil) != ok {
			t.Fatalf("%q: %v", in, err)
		}
	}
	if err := waitLine(ctx, nil); err == nil {
		t.Fatal("no input: no error")
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := waitLine(short, pr); parley.CodeOf(err) != "deadline_exceeded" {
		t.Fatalf("no line before the deadline: %v", err)
	}
}
