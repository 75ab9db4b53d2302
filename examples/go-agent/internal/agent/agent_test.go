package agent

import (
	"crypto/ed25519"
	"io"
	"reflect"
	"testing"

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
		r := &runner{
			cfg:      Config{Identity: &parley.Identity{AgentID: "bob", Key: key}, Peer: "alice", Out: io.Discard},
			conn:     gateway.NewConn(rec, &pb.Welcome{AgentId: "bob", OutboundAcks: offer}, "gw"),
			inFlight: &outstanding{seq: 1, requestID: 1, hash: hash, peerKey: peerPub},
		}
		frame := &pb.ConnectResponse{Kind: &pb.ConnectResponse_Deliveries{Deliveries: &pb.Deliveries{Items: []*pb.Delivery{
			{DeliveryId: 1, Item: &pb.Delivery_Receipt{Receipt: receipt(other)}}, // for no message in flight: dropped
			{DeliveryId: 2, Item: &pb.Delivery_Receipt{Receipt: receipt(hash)}},  // the message in flight
			{DeliveryId: 3, Item: &pb.Delivery_Receipt{Receipt: receipt(hash)}},  // again: dropped
		}}}}
		if err := r.handleFrame(frame); err != nil {
			t.Fatal(err)
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
