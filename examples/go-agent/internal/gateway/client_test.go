package gateway

import (
	"reflect"
	"testing"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// recorder is the client side of a Connect stream that keeps what is sent.
type recorder struct {
	pb.AgentGatewayService_ConnectClient
	sent []*pb.ConnectRequest
}

func (r *recorder) Send(m *pb.ConnectRequest) error {
	r.sent = append(r.sent, m)
	return nil
}

// frame is a sent request, compactly: a Send's item kind, quiet flag and
// carried ack, or an Ack's delivery id.
type frame struct {
	kind  string
	quiet bool
	ack   uint64
}

func frames(r *recorder) []frame {
	var out []frame
	for _, m := range r.sent {
		switch k := m.GetKind().(type) {
		case *pb.ConnectRequest_Send:
			f := frame{kind: "send", quiet: k.Send.GetQuiet(), ack: k.Send.GetAckDeliveryId()}
			if k.Send.GetReceipt() == nil {
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
			rec := &recorder{}
			conn := &Conn{stream: rec, Welcome: &pb.Welcome{AgentId: "bob", OutboundAcks: c.offer}}
			if err := conn.SendReceiptAck(rc, c.id); err != nil {
				t.Fatal(err)
			}
			if got := frames(rec); !reflect.DeepEqual(got, c.frames) {
				t.Fatalf("frames %+v, want %+v", got, c.frames)
			}
			if id := rec.sent[0].GetSend().GetRequestId(); id != 1 {
				t.Fatalf("request id %d, want 1", id)
			}
		})
	}
}
