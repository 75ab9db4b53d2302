package gateway

import (
	"context"
	"crypto/ed25519"
	"net"
	"reflect"
	"testing"

	"google.golang.org/grpc"

	"parley/go-agent/internal/gatewaytest"
	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// frame is a sent request, compactly: a Send's item kind, quiet flag and
// carried ack, or an Ack's delivery id.
type frame struct {
	kind  string
	quiet bool
	ack   uint64
}

func frames(r *gatewaytest.Recorder) []frame {
	var out []frame
	for _, m := range r.Sent {
		switch k := m.GetKind().(type) {
		case *pb.ConnectRequest_Send:
			f := frame{kind: "send", quiet: k.Send.GetQuiet(), ack: k.Send.GetAckDeliveryId()}
			if k.Send.GetSessionReject() != nil {
				f.kind = "send(reject)"
			} else if k.Send.GetReceipt() == nil {
				f.kind = "send(not a receipt)"
			}
			out = append(out, f)
		case *pb.ConnectRequest_Ack:
			out = append(out, frame{kind: "ack", ack: k.Ack.GetDeliveryId()})
		default:
			out = append(out, frame{kind: "other"})
		}
	}
	return out
}

// A receipt carries the ack of the delivery it answers and asks for no
// Accepted only when the gateway's Welcome offers it (§10.3); otherwise it
// is the receipt and an Ack frame, as before.
func TestSendReceiptAck(t *testing.T) {
	rc := &pb.DeliveryReceipt{Version: 1, MessageHash: make([]byte, 32), SenderId: "alice", RecipientId: "bob"}
	cases := []struct {
		name   string
		offer  bool
		id     uint64
		frames []frame
	}{
		{"offered", true, 7, []frame{{kind: "send", quiet: true, ack: 7}}},
		{"offered, no delivery", true, 0, []frame{{kind: "send", quiet: true}}},
		{"older gateway", false, 7, []frame{{kind: "send"}, {kind: "ack", ack: 7}}},
		{"older gateway, no delivery", false, 0, []frame{{kind: "send"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &gatewaytest.Recorder{}
			conn := &Conn{stream: rec, Welcome: &pb.Welcome{AgentId: "bob", OutboundAcks: c.offer}}
			if err := conn.SendReceiptAck(rc, c.id); err != nil {
				t.Fatal(err)
			}
			if got := frames(rec); !reflect.DeepEqual(got, c.frames) {
				t.Fatalf("frames %+v, want %+v", got, c.frames)
			}
			if id := rec.Sent[0].GetSend().GetRequestId(); id != 1 {
				t.Fatalf("request id %d, want 1", id)
			}
		})
	}
}

// A session reject is a reply like a receipt (§17.4, §10.3): quiet and
// carrying the ack of the envelope's delivery when offered, else the reject
// and an Ack frame.
func TestSendSessionRejectAck(t *testing.T) {
	rj := &pb.SessionReject{Version: 1, SessionId: make([]byte, 16), MessageHash: make([]byte, 32), SenderId: "alice", RecipientId: "bob"}
	for _, offer := range []bool{true, false} {
		rec := &gatewaytest.Recorder{}
		conn := &Conn{stream: rec, Welcome: &pb.Welcome{AgentId: "bob", OutboundAcks: offer}}
		if err := conn.SendSessionRejectAck(rj, 9); err != nil {
			t.Fatal(err)
		}
		want := []frame{{kind: "send(reject)", quiet: true, ack: 9}}
		if !offer {
			want = []frame{{kind: "send(reject)"}, {kind: "ack", ack: 9}}
		}
		if got := frames(rec); !reflect.DeepEqual(got, want) {
			t.Fatalf("offer %v: frames %+v, want %+v", offer, got, want)
		}
		if rec.Sent[0].GetSend().GetSessionReject() != rj {
			t.Fatalf("offer %v: the reject is not the item sent", offer)
		}
	}
}

// ackFrames is the ids of each Ack frame sent (delivery_id first), and "close"
// for the half-close.
func ackFrames(r *gatewaytest.Recorder) []any {
	var out []any
	for _, m := range r.Sent {
		if m == nil {
			out = append(out, "close")
		} else if a := m.GetAck(); a != nil {
			out = append(out, append([]uint64{a.GetDeliveryId()}, a.GetMoreDeliveryIds()...))
		}
	}
	return out
}

// With outbound_acks, the acks made until FlushAcks go out as one Ack frame
// (more_delivery_ids, §10.3), and CloseSend sends them before it half-closes;
// otherwise each Ack is its own frame, at once.
func TestAcksInOneFrame(t *testing.T) {
	for _, offer := range []bool{true, false} {
		rec := &gatewaytest.Recorder{}
		conn := NewConn(rec, &pb.Welcome{AgentId: "bob", OutboundAcks: offer}, "gw")
		for _, id := range []uint64{1, 2, 3} {
			if err := conn.Ack(id); err != nil {
				t.Fatal(err)
			}
		}
		if err := conn.FlushAcks(); err != nil {
			t.Fatal(err)
		}
		if err := conn.FlushAcks(); err != nil { // nothing left: no frame
			t.Fatal(err)
		}
		if err := conn.Ack(4); err != nil {
			t.Fatal(err)
		}
		if err := conn.CloseSend(); err != nil {
			t.Fatal(err)
		}
		want := []any{[]uint64{1, 2, 3}, []uint64{4}, "close"}
		if !offer {
			want = []any{[]uint64{1}, []uint64{2}, []uint64{3}, []uint64{4}, "close"}
		}
		if got := ackFrames(rec); !reflect.DeepEqual(got, want) {
			t.Fatalf("offer %v: frames %v, want %v", offer, got, want)
		}
	}
}

// An Ack frame carries at most 1 + MaxMoreAckIDs ids: a full one goes out at
// once.
func TestAckFrameBound(t *testing.T) {
	rec := &gatewaytest.Recorder{}
	conn := NewConn(rec, &pb.Welcome{AgentId: "bob", OutboundAcks: true}, "gw")
	var all []uint64
	for id := uint64(1); id <= 1030; id++ {
		all = append(all, id)
		if err := conn.Ack(id); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.Sent) != 1 {
		t.Fatalf("%d frames before the flush, want 1", len(rec.Sent))
	}
	if err := conn.FlushAcks(); err != nil {
		t.Fatal(err)
	}
	got := ackFrames(rec)
	if len(got) != 2 || len(got[0].([]uint64)) != 1+MaxMoreAckIDs {
		t.Fatalf("frames of %v ids", got)
	}
	if joined := append(got[0].([]uint64), got[1].([]uint64)...); !reflect.DeepEqual(joined, all) {
		t.Fatal("ids lost or reordered across frames")
	}
}

// serverCodec is codec as grpc 1.33's server takes it.
type serverCodec struct{ codec }

func (serverCodec) String() string { return "proto" }

// fakeGateway answers a Connect stream's hello and auth, keeping the hello.
type fakeGateway struct {
	pb.UnimplementedAgentGatewayServiceServer
	hello chan *pb.Hello
}

func (g *fakeGateway) Connect(s pb.AgentGatewayService_ConnectServer) error {
	req, err := s.Recv()
	if err != nil {
		return err
	}
	g.hello <- req.GetHello()
	if err := s.Send(&pb.ConnectResponse{Kind: &pb.ConnectResponse_Challenge{Challenge: &pb.Challenge{GatewayId: "gw", Nonce: make([]byte, 32)}}}); err != nil {
		return err
	}
	if _, err := s.Recv(); err != nil {
		return err
	}
	return s.Send(&pb.ConnectResponse{Kind: &pb.ConnectResponse_Welcome{Welcome: &pb.Welcome{AgentId: "bob"}}})
}

// The hello asks for Deliveries frames (§10.3).
func TestHelloAsksForDeliveryBatches(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.CustomCodec(serverCodec{}))
	g := &fakeGateway{hello: make(chan *pb.Hello, 1)}
	pb.RegisterAgentGatewayServiceServer(srv, g)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	id := &parley.Identity{AgentID: "bob", Key: key, Certificate: &pb.AgentCertificate{Serial: make([]byte, 16)}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc, err := Dial(ctx, lis.Addr().String(), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := Connect(ctx, cc, id, "gw"); err != nil {
		t.Fatal(err)
	}
	if h := <-g.hello; !h.GetDeliveryBatches() {
		t.Fatalf("hello %v does not set delivery_batches", h)
	}
}
