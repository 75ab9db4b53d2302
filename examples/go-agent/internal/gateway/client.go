// Package gateway is a client of parley.v1.AgentGatewayService/Connect
// (PROTOCOL.md §10): dialing, stream authentication (§10.2), and the
// send/ack frames of an authenticated stream (§10.3).
package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// DialOptions selects the transport: plaintext (loopback gateways only,
// §15.10) when CAFile is empty, else TLS 1.3 with that CA.
type DialOptions struct {
	CAFile     string
	ServerName string
}

// Dial opens a client connection to a gateway.
func Dial(ctx context.Context, address string, o DialOptions) (*grpc.ClientConn, error) {
	var creds grpc.DialOption
	if o.CAFile == "" {
		creds = grpc.WithInsecure()
	} else {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificate", o.CAFile)
		}
		creds = grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS13,
			RootCAs:    pool,
			ServerName: o.ServerName,
		}))
	}
	return grpc.DialContext(ctx, address, creds, grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{})))
}

// MaxMoreAckIDs is the most ids an Ack frame carries in more_delivery_ids,
// besides its delivery_id (§10.3).
const MaxMoreAckIDs = 1024

// Conn is an authenticated Connect stream. Its Send* methods, Ack, FlushAcks
// and CloseSend must be called from one goroutine; Recv from one (possibly
// another) goroutine.
type Conn struct {
	stream    pb.AgentGatewayService_ConnectClient
	Welcome   *pb.Welcome
	GatewayID string
	nextID    uint64
	acks      []uint64 // acked, not sent yet (with outbound_acks)
}

// NewConn is a Conn over an authenticated stream (Connect makes one; tests
// pass a fake stream).
func NewConn(stream pb.AgentGatewayService_ConnectClient, welcome *pb.Welcome, gatewayID string) *Conn {
	return &Conn{stream: stream, Welcome: welcome, GatewayID: gatewayID}
}

// Connect opens the stream and authenticates (§10.2): hello → challenge →
// auth → welcome. The challenge's gateway_id must equal expectedGatewayID.
func Connect(ctx context.Context, cc *grpc.ClientConn, id *parley.Identity, expectedGatewayID string) (*Conn, error) {
	stream, err := pb.NewAgentGatewayServiceClient(cc).Connect(ctx)
	if err != nil {
		return nil, statusError(err, nil)
	}
	if err := stream.Send(&pb.ConnectRequest{Kind: &pb.ConnectRequest_Hello{
		Hello: &pb.Hello{Version: parley.ProtocolVersion, Certificate: id.Certificate, DeliveryBatches: true},
	}}); err != nil {
		return nil, streamFailure(stream, err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, streamFailure(stream, err)
	}
	ch := resp.GetChallenge()
	if ch == nil {
		return nil, unexpected("challenge", resp)
	}
	if ch.GetGatewayId() != expectedGatewayID {
		return nil, parley.Errorf(parley.CodeIdentityMismatch, "connected to gateway %q, expected %q", ch.GetGatewayId(), expectedGatewayID)
	}
	layout, err := parley.GatewayAuthLayout(ch.GetGatewayId(), ch.GetNonce(), id.AgentID, id.Certificate.GetSerial())
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&pb.ConnectRequest{Kind: &pb.ConnectRequest_Auth{
		Auth: &pb.AuthProof{Signature: ed25519.Sign(id.Key, layout)},
	}}); err != nil {
		return nil, streamFailure(stream, err)
	}
	if resp, err = stream.Recv(); err != nil {
		return nil, streamFailure(stream, err)
	}
	w := resp.GetWelcome()
	if w == nil {
		return nil, unexpected("welcome", resp)
	}
	if w.GetAgentId() != id.AgentID {
		return nil, parley.Errorf(parley.CodeIdentityMismatch, "welcomed as %q", w.GetAgentId())
	}
	return NewConn(stream, w, ch.GetGatewayId()), nil
}

func unexpected(want string, resp *pb.ConnectResponse) error {
	if g := resp.GetGoAway(); g != nil {
		return parley.Errorf(g.GetCode(), "go_away: %s", g.GetMessage())
	}
	return parley.Errorf(parley.CodeMalformed, "expected %s, got %T", want, resp.GetKind())
}

// statusError turns a gRPC status into a Parley error, using the
// parley-error-code trailer when the gateway sent one (§15.8).
func statusError(err error, trailer metadata.MD) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	code := "unavailable"
	if v := trailer.Get("parley-error-code"); len(v) > 0 {
		code = v[0]
	}
	return parley.Errorf(code, "gateway: %s: %s", st.Code(), st.Message())
}

// streamFailure reports why a stream failed. A failed Send only says io.EOF;
// the status is read from the stream.
func streamFailure(stream pb.AgentGatewayService_ConnectClient, err error) error {
	if err == io.EOF {
		if _, rerr := stream.Recv(); rerr != nil {
			err = rerr
		}
	}
	return statusError(err, stream.Trailer())
}

// RecvError converts an error of Recv into a Parley error.
func (c *Conn) RecvError(err error) error { return streamFailure(c.stream, err) }

// Recv reads the next frame from the gateway: with the Hello's
// delivery_batches, a Deliveries frame holds several Delivery items, each to
// be handled and acked as if it had come alone (§10.3).
func (c *Conn) Recv() (*pb.ConnectResponse, error) { return c.stream.Recv() }

// SendFrame relays a handshake frame; it returns the request id.
func (c *Conn) SendFrame(f *pb.HandshakeFrame) (uint64, error) {
	return c.send(&pb.Outbound{Item: &pb.Outbound_Handshake{Handshake: f}})
}

// SendFirstContactFrame relays a handshake step 1 with the recipient's
// certificate attached (Outbound.recipient_certificate, §10.3 step 5): read by
// a gateway that holds no certificate of the recipient (first contact),
// ignored by one that does. It returns the request id.
func (c *Conn) SendFirstContactFrame(f *pb.HandshakeFrame, recipient *pb.AgentCertificate) (uint64, error) {
	return c.send(&pb.Outbound{Item: &pb.Outbound_Handshake{Handshake: f}, RecipientCertificate: recipient})
}

// SendEnvelope relays a SecureMessage; it returns the request id.
func (c *Conn) SendEnvelope(e *pb.SecureMessage) (uint64, error) {
	return c.send(&pb.Outbound{Item: &pb.Outbound_Envelope{Envelope: e}})
}

// SendReceipt relays a DeliveryReceipt; it returns the request id.
func (c *Conn) SendReceipt(r *pb.DeliveryReceipt) (uint64, error) {
	return c.send(&pb.Outbound{Item: &pb.Outbound_Receipt{Receipt: r}})
}

// SendReceiptAck relays a DeliveryReceipt and acks the delivery it answers
// (deliveryID; 0: none). When the gateway's Welcome offers outbound_acks
// (§10.3) that is one quiet Send carrying the ack: no Accepted answers it (a
// Rejected still does), and a lost receipt is sent again when the envelope
// comes again. Otherwise the receipt (answered by Accepted) and an Ack frame.
func (c *Conn) SendReceiptAck(r *pb.DeliveryReceipt, deliveryID uint64) error {
	return c.sendReplyAck(&pb.Outbound{Item: &pb.Outbound_Receipt{Receipt: r}}, deliveryID)
}

// SendSessionRejectAck relays a SessionReject (§17.4) as the reply that acks
// the delivery of the envelope it refuses (deliveryID; 0: none), exactly as
// SendReceiptAck does for a receipt: one quiet Send carrying the ack with
// outbound_acks (a lost reject is signed again when the envelope comes
// again), else the reject and an Ack frame.
func (c *Conn) SendSessionRejectAck(r *pb.SessionReject, deliveryID uint64) error {
	return c.sendReplyAck(&pb.Outbound{Item: &pb.Outbound_SessionReject{SessionReject: r}}, deliveryID)
}

// sendReplyAck relays a reply item (a receipt or a session reject) and acks
// the delivery it answers (§10.3).
func (c *Conn) sendReplyAck(o *pb.Outbound, deliveryID uint64) error {
	if !c.Welcome.GetOutboundAcks() {
		if _, err := c.send(o); err != nil || deliveryID == 0 {
			return err
		}
		return c.Ack(deliveryID)
	}
	o.AckDeliveryId = deliveryID
	o.Quiet = true
	_, err := c.send(o)
	return err
}

func (c *Conn) send(o *pb.Outbound) (uint64, error) {
	c.nextID++
	o.RequestId = c.nextID
	return o.RequestId, c.stream.Send(&pb.ConnectRequest{Kind: &pb.ConnectRequest_Send{Send: o}})
}

// Ack tells the gateway a delivery was processed (§10.3, §10.8). When the
// gateway's Welcome offers outbound_acks the id waits for FlushAcks, which
// sends the ids acked since in one Ack frame (more_delivery_ids); a full frame
// of 1 + MaxMoreAckIDs ids goes out at once. Otherwise an Ack frame now.
func (c *Conn) Ack(deliveryID uint64) error {
	if !c.Welcome.GetOutboundAcks() {
		return c.stream.Send(&pb.ConnectRequest{Kind: &pb.ConnectRequest_Ack{Ack: &pb.Ack{DeliveryId: deliveryID}}})
	}
	c.acks = append(c.acks, deliveryID)
	if len(c.acks) > MaxMoreAckIDs {
		return c.FlushAcks()
	}
	return nil
}

// FlushAcks sends the acks not sent yet as one Ack frame. The agent calls it
// when it is done with each frame it received.
func (c *Conn) FlushAcks() error {
	ids := c.acks
	c.acks = nil
	if len(ids) == 0 {
		return nil
	}
	return c.stream.Send(&pb.ConnectRequest{Kind: &pb.ConnectRequest_Ack{Ack: &pb.Ack{DeliveryId: ids[0], MoreDeliveryIds: ids[1:]}}})
}

// CloseSend sends the acks not sent yet and half-closes the stream.
func (c *Conn) CloseSend() error {
	if err := c.FlushAcks(); err != nil {
		return err
	}
	return c.stream.CloseSend()
}
