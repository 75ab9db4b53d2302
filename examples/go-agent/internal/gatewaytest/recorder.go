// Package gatewaytest holds test doubles for code that writes to a gateway
// Connect stream.
package gatewaytest

import pb "parley/go-agent/internal/gen/parleyv1"

// Recorder is the client side of a Connect stream that keeps what is sent:
// each request in order, and nil where CloseSend half-closed the stream.
type Recorder struct {
	pb.AgentGatewayService_ConnectClient
	Sent []*pb.ConnectRequest
}

// Send records the request.
func (r *Recorder) Send(m *pb.ConnectRequest) error {
	r.Sent = append(r.Sent, m)
	return nil
}

// CloseSend records the half-close as nil.
func (r *Recorder) CloseSend() error {
	r.Sent = append(r.Sent, nil)
	return nil
}
