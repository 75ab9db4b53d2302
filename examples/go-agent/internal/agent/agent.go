// Package agent is the `run` command: it connects to a gateway, sets up a
// session with one peer (either handshake role), exchanges SecureMessages
// both ways with signed delivery receipts, and reports each event as one
// JSON line.
package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"parley/go-agent/internal/gateway"
	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// Config is what `run` needs.
type Config struct {
	Gateway        string
	GatewayID      string
	Dial           gateway.DialOptions
	Identity       *parley.Identity
	Trust          *parley.TrustBundle
	Peer           string
	Initiate       bool
	Send           int
	Expect         int
	Timeout        time.Duration
	RekeyThreshold uint32
	// Revocations is the agent's revocation data (§8.4), checked at every
	// handshake, every message opened, and every PeerCheckInterval for the
	// live sessions; nil checks nothing (a warning says so at start).
	Revocations       parley.RevocationChecker
	PeerCheckInterval time.Duration
	Out               io.Writer // JSON event lines (stdout)
	// OfflineAfter > 0: once that many messages were received (and not yet
	// done), the agent ends its stream (its acks sent first), reports
	// {"event":"offline"} and, when a line arrives on Resume, connects again
	// with the same sessions: what the peer sent meanwhile waits in the
	// gateway's mailbox and comes as the new stream's backlog. 0: one stream.
	OfflineAfter int
	Resume       io.Reader
	// HandshakeTimeout: a handshake this agent responds to whose step 3 has
	// not come within it is abandoned, and what it held is answered with
	// SessionRejects (§5.4). 0: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Directory looks the peer up in the registry for a first contact
	// (§5.4, §10.3 step 5, §17.2 item 6): a step 1 of this agent refused
	// policy_denied is relayed once more with the certificate it returns. nil
	// (no --registry): such a refusal ends the run with policy_denied.
	Directory Directory
	// LookupBackoff is the first wait before a lookup that failed
	// transiently is tried again, doubling to MaxLookupBackoff, until the
	// run's timeout (the send's expiry). 0: DefaultLookupBackoff.
	LookupBackoff time.Duration
	// Step1Resend is the first wait before an initiator handshake still
	// waiting for its step 2 sends the same step 1 again (§5.4), doubling to
	// MaxStep1Resend (or Step1Resend, if longer). 0: DefaultStep1Resend.
	Step1Resend time.Duration
}

// Directory resolves an agent id to its registry certificate, verified
// (internal/directory): an error of code policy_denied is permanent, any other
// transient.
type Directory interface {
	Lookup(ctx context.Context, agentID string) (*pb.AgentCertificate, error)
}

// DefaultLookupBackoff and MaxLookupBackoff bound the retries of a directory
// lookup that failed transiently: the resend interval of §17.2 item 3 (5 s,
// doubling to 60 s), as item 6 asks of every transient failure.
const (
	DefaultLookupBackoff = 5 * time.Second
	MaxLookupBackoff     = 60 * time.Second
)

// DefaultStep1Resend and MaxStep1Resend are the backoff on which an
// initiator handshake waiting for its step 2 sends the same step 1 again,
// byte for byte (§5.4): the resend interval of §17.2 item 3, 5 s doubling to
// 60 s. A copy goes out on the event loop's tick (every PeerCheckInterval)
// once it is due.
const (
	DefaultStep1Resend = 5 * time.Second
	MaxStep1Resend     = 60 * time.Second
)

// MaxHeldEnvelopes bounds the envelopes held for one handshake this agent is
// responding to (§5.4, §17.3 item 4; @parley/client's HELD_PER_HANDSHAKE);
// more are left unacked and tried again (MaxDeferred).
const MaxHeldEnvelopes = 64

// MaxDeferred bounds the deliveries left unacked to be tried again (each
// tick, and when a handshake ends): beyond it a delivery comes back only from
// the next stream or the sender's resend (§17.3 item 6; @parley/client's
// MAX_DEFERRED).
const MaxDeferred = 4096

// DefaultHandshakeTimeout is the handshake timeout of §5.4.
const DefaultHandshakeTimeout = 10 * time.Second

// MaxReseals is how often one message is sealed again in a new session after
// verified SessionRejects before its send fails with unknown_session (§17.2
// item 4).
const MaxReseals = 5

// sendTypes is the cycle of message types the agent sends.
var sendTypes = []pb.MessageType{
	pb.MessageType_MESSAGE_TYPE_STATUS_UPDATE,
	pb.MessageType_MESSAGE_TYPE_TASK_ASSIGNMENT,
	pb.MessageType_MESSAGE_TYPE_HANDOFF_REQUEST,
	pb.MessageType_MESSAGE_TYPE_HANDOFF_APPROVAL,
	pb.MessageType_MESSAGE_TYPE_CONSENSUS_VOTE,
	pb.MessageType_MESSAGE_TYPE_QUALITY_GATE_RESULT,
	pb.MessageType_MESSAGE_TYPE_SECURITY_ALERT,
	pb.MessageType_MESSAGE_TYPE_SYSTEM_NOTIFICATION,
}

// outstanding is the message in flight: sent, waiting for accepted and receipt.
// It keeps what it was sealed from, so that a verified SessionReject can seal
// it again in a new session (§17.2 item 4).
type outstanding struct {
	seq       int
	msgType   pb.MessageType
	content   *structpb.Value
	requestID uint64
	hash      []byte
	sessionID []byte // the session it was sealed in
	to        string // its recipient
	peerKey   []byte // the recipient's certified key in that session
	accepted  bool
	reseals   int
	// resealing: its session was refused; it is sealed again as soon as a
	// session with the peer is up.
	resealing bool
}

// responding is a handshake this agent answered (step 2 sent) whose step 3
// has not come yet, with the envelopes that overtook it (§5.4), in arrival
// order.
type responding struct {
	h     *parley.Handshake
	since time.Time
	held  []*pb.Delivery
}

// runner holds the state of one run. Everything runs on one goroutine
// (the event loop) except the stream reader, which only forwards frames.
type runner struct {
	cfg     Config
	conn    *gateway.Conn
	wentOff bool // went offline once (OfflineAfter)
	cache   *parley.MessageCache
	pending *parley.Handshake // the initiator handshake waiting for step 2
	// The pending handshake's first contact (§17.2 item 6): its step 1 and
	// the request id it was last relayed under, the recipient's certificate
	// once attached, and the directory lookup (in flight, or due again).
	step1      *pb.HandshakeFrame
	step1Req   uint64
	introduced *pb.AgentCertificate
	lookingUp  bool
	lookupDue  time.Time
	lookupWait time.Duration
	lookups    chan lookupResult
	ctx        context.Context
	accepted   map[string]*responding     // responder handshakes waiting for step 3, by session id
	deferred   []*pb.Delivery             // envelopes left unacked, tried again (MaxDeferred)
	sessions   map[string]*parley.Session // by session id
	current    *parley.Session            // the newest session with the peer (used to send)
	receipts   *receiptStore
	inFlight   *outstanding
	sent       int
	verified   int
	received   int

	// The pending handshake's step 1 sent again while it waits for step 2
	// (§5.4): when the next copy is due (zero: none) and the wait before it,
	// and whether the latest copy (step1Req) is such a timed resend.
	resendDue   time.Time
	resendWait  time.Duration
	step1Resent bool
	// step1Copies holds the request ids, on this stream, of every copy of a
	// step 1 (of any handshake) the gateway has not answered yet: a refusal
	// of a copy other than the pending handshake's latest one is no new
	// failure (handle).
	step1Copies map[uint64]bool
}

// Run executes `run`. It returns nil when N receipts were verified and the
// expected number of messages was received.
func Run(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cc, err := gateway.Dial(ctx, cfg.Gateway, cfg.Dial)
	if err != nil {
		return err
	}
	defer cc.Close()
	r := newRunner(cfg)
	r.ctx = ctx
	s, err := r.connect(ctx, cc)
	if err != nil {
		return err
	}

	if cfg.Initiate {
		if err := r.initiate(); err != nil {
			return err
		}
	}
	interval := cfg.PeerCheckInterval
	if interval <= 0 {
		interval = time.Second
	}
	peerCheck := time.NewTicker(interval)
	defer peerCheck.Stop()
	for !r.done() {
		select {
		case <-peerCheck.C:
			if err := r.tick(time.Now()); err != nil {
				return err
			}
		case resp := <-s.frames:
			if err := r.handleFrame(resp); err != nil {
				return err
			}
			if r.offlineDue() {
				if err := r.goOffline(ctx, s); err != nil {
					return err
				}
				if err := waitLine(ctx, cfg.Resume); err != nil {
					return err
				}
				if s, err = r.connect(ctx, cc); err != nil {
					return err
				}
			}
		case res := <-r.lookups:
			err := r.onLookup(res)
			if ferr := r.conn.FlushAcks(); err == nil {
				err = ferr
			}
			if err != nil {
				return err
			}
		case err := <-s.readErr:
			return err
		case <-ctx.Done():
			return parley.Errorf("deadline_exceeded", "timed out after %v (sent %d, receipts %d, received %d)", cfg.Timeout, r.sent, r.verified, r.received)
		}
	}
	r.emit(map[string]any{"event": "done", "sent": r.sent, "receipts": r.verified, "received": r.received})
	// Half-close and give the gateway a moment to take the last acks.
	_ = r.conn.CloseSend()
	select {
	case <-s.readErr:
	case <-time.After(time.Second):
	}
	return nil
}

func newRunner(cfg Config) *runner {
	return &runner{
		cfg: cfg, cache: parley.NewMessageCache(parley.DefaultMessageCacheSize),
		accepted: map[string]*responding{}, sessions: map[string]*parley.Session{},
		receipts: newReceiptStore(ReceiptStoreSize, parley.DefaultSkew.MaxAgeMs),
		lookups:  make(chan lookupResult, 1), ctx: context.Background(),
	}
}

// stream is the reading side of one Connect stream: its frames, and the
// error (io.EOF: the gateway ended it) that stopped the reader.
type stream struct {
	frames  chan *pb.ConnectResponse
	readErr chan error
}

// read starts the goroutine that forwards conn's frames until it fails or
// ctx ends.
func read(ctx context.Context, conn *gateway.Conn) *stream {
	s := &stream{frames: make(chan *pb.ConnectResponse), readErr: make(chan error, 1)}
	go func() {
		for {
			resp, err := conn.Recv()
			if err != nil {
				s.readErr <- conn.RecvError(err)
				return
			}
			select {
			case s.frames <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	return s
}

// connect opens and authenticates a stream (§10.2), makes it the runner's,
// reports {"event":"connected"} and starts reading it.
func (r *runner) connect(ctx context.Context, cc *grpc.ClientConn) (*stream, error) {
	conn, err := gateway.Connect(ctx, cc, r.cfg.Identity, r.cfg.GatewayID)
	if err != nil {
		if ctx.Err() != nil {
			return nil, parley.Errorf("deadline_exceeded", "no welcome from the gateway within the timeout")
		}
		return nil, err
	}
	r.conn = conn
	// Request ids are per stream: the old stream's step 1 copies are never
	// answered on this one, and their ids may name other items here.
	r.step1Copies, r.step1Req = nil, 0
	// What was held or deferred came on the stream before, whose delivery ids
	// mean nothing on this one; not acked there, it comes again on this one.
	for _, resp := range r.accepted {
		resp.held = nil
	}
	r.deferred = nil
	r.emit(map[string]any{"event": "connected", "agent_id": conn.Welcome.GetAgentId(), "mailbox_depth": conn.Welcome.GetMailboxDepth()})
	return read(ctx, conn), nil
}

// offlineDue says whether the run goes offline now (Config.OfflineAfter):
// once, when that many messages were received and the run is not done.
func (r *runner) offlineDue() bool {
	return r.cfg.OfflineAfter > 0 && !r.wentOff && r.received >= r.cfg.OfflineAfter && !r.done()
}

// goOffline sends the acks made, half-closes the stream and waits for the
// gateway to end it, then reports {"event":"offline"}. Frames read meanwhile
// are dropped unhandled: their deliveries are not acked, so the gateway
// delivers them again on the next stream (§10.8).
func (r *runner) goOffline(ctx context.Context, s *stream) error {
	r.wentOff = true
	if err := r.conn.CloseSend(); err != nil {
		return err
	}
	for {
		select {
		case resp := <-s.frames:
			if resp.GetDelivery() != nil || resp.GetDeliveries() != nil {
				warn("offline", "a delivery read after the half-close left unacked for redelivery")
			}
		case err := <-s.readErr:
			if err != io.EOF {
				return err
			}
			r.emit(map[string]any{"event": "offline", "received": r.received})
			return nil
		case <-ctx.Done():
			return parley.Errorf("deadline_exceeded", "the gateway did not end the stream within the timeout")
		}
	}
}

// waitLine returns when a line (or its last bytes) arrives on in, and fails
// when in ends first, is nil, or ctx ends.
func waitLine(ctx context.Context, in io.Reader) error {
	if in == nil {
		return parley.Errorf("usage", "offline, and nothing to read the resume line from")
	}
	got := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err == io.EOF && line != "" {
			err = nil
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return parley.Errorf("usage", "offline, and no resume line: %v", err)
		}
		return nil
	case <-ctx.Done():
		return parley.Errorf("deadline_exceeded", "offline, and no resume line within the timeout")
	}
}

func (r *runner) done() bool {
	return r.current != nil && r.verified >= r.cfg.Send && r.received >= r.cfg.Expect
}

func (r *runner) handshakeConfig() parley.HandshakeConfig {
	return parley.HandshakeConfig{
		Identity: r.cfg.Identity, Trust: r.cfg.Trust, Now: nowMs,
		RekeyThreshold: r.cfg.RekeyThreshold, Cache: r.cache, Revocations: r.cfg.Revocations,
	}
}

// tick runs every PeerCheckInterval: the peers' standing (§8.4), responder
// handshakes past their timeout (§5.4), the deferred deliveries (§17.3 item
// 6), a first-contact lookup due again, the pending handshake's step 1 due
// again (§5.4) and the receipt store's pruning; then the acks it made go out.
func (r *runner) tick(now time.Time) error {
	err := r.checkPeers()
	if err == nil {
		err = r.abandonStale(now)
	}
	if err == nil {
		err = r.retryDeferred()
	}
	if err == nil && r.pending != nil && !r.lookupDue.IsZero() && !now.Before(r.lookupDue) {
		r.lookupDue = time.Time{}
		r.startLookup()
	}
	if err == nil {
		err = r.resendStep1(now)
	}
	r.receipts.prune(now.UnixMilli())
	if ferr := r.conn.FlushAcks(); err == nil {
		err = ferr
	}
	return err
}

// abandonStale abandons the handshakes this agent responds to whose step 3
// has not come within the handshake timeout: what each held can never open
// and is answered with a SessionReject (§5.4, §17.3 item 4).
func (r *runner) abandonStale(now time.Time) error {
	timeout := r.cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	for id, resp := range r.accepted {
		if now.Sub(resp.since) < timeout {
			continue
		}
		delete(r.accepted, id)
		warn(parley.CodeHandshakeFailed, fmt.Sprintf("handshake %x: no step 3 within %v; %d held envelope(s) answered with a SessionReject", id, timeout, len(resp.held)))
		if err := r.rejectHeld(resp); err != nil {
			return err
		}
	}
	return nil
}

// rejectHeld answers every envelope held for an abandoned handshake with a
// SessionReject that acks its delivery (§5.4).
func (r *runner) rejectHeld(resp *responding) error {
	held := resp.held
	resp.held = nil
	for _, d := range held {
		if err := r.rejectSession(d, d.GetEnvelope()); err != nil {
			return err
		}
	}
	return nil
}

// retryDeferred tries the deferred deliveries again, in arrival order.
func (r *runner) retryDeferred() error {
	items := r.deferred
	r.deferred = nil
	for _, d := range items {
		if err := r.onDelivery(d); err != nil {
			return err
		}
	}
	return nil
}

// checkPeers re-checks every live session's peer (§8.4): a revoked or expired
// peer closes its session, which ends this run.
func (r *runner) checkPeers() error {
	if r.cfg.Revocations == nil {
		return nil
	}
	for id, s := range r.sessions {
		err := s.CheckPeer(nowMs())
		switch parley.CodeOf(err) {
		case "":
		case parley.CodeRevocationStale:
			warn(parley.CodeRevocationStale, err.Error())
		default:
			delete(r.sessions, id)
			if r.current == s {
				r.current = nil
			}
			return err
		}
	}
	return nil
}

func nowMs() int64 { return time.Now().UnixMilli() }

// initiate starts an XX handshake to the peer (step 1).
func (r *runner) initiate() error {
	h, f1, err := parley.StartHandshake(r.handshakeConfig(), r.cfg.Peer, nil)
	if err != nil {
		return err
	}
	r.pending, r.step1, r.introduced = h, f1, nil
	r.lookupDue, r.lookupWait = time.Time{}, 0
	r.armStep1Resend(time.Now())
	return r.relayStep1()
}

// relayStep1 sends the pending handshake's step 1 — with the recipient's
// certificate once a first contact attached it (§17.2 item 6) — and makes
// this copy's request id the latest (step1Req).
func (r *runner) relayStep1() error {
	var reqID uint64
	var err error
	if r.introduced != nil {
		reqID, err = r.conn.SendFirstContactFrame(r.step1, r.introduced)
	} else {
		reqID, err = r.conn.SendFrame(r.step1)
	}
	if err != nil {
		return err
	}
	if r.step1Copies == nil {
		r.step1Copies = map[uint64]bool{}
	}
	r.step1Req, r.step1Copies[reqID], r.step1Resent = reqID, true, false
	return nil
}

// armStep1Resend (re)starts the backoff of the pending handshake's step 1:
// the first copy again after Step1Resend from now.
func (r *runner) armStep1Resend(now time.Time) {
	r.resendWait = r.cfg.Step1Resend
	if r.resendWait <= 0 {
		r.resendWait = DefaultStep1Resend
	}
	r.resendDue = now.Add(r.resendWait)
}

// resendStep1 sends the pending handshake's step 1 again, the same frame
// byte for byte, when it is due (§5.4): a lost step 1 or step 2 is retried
// rather than stranding the handshake until the run's timeout. The wait then
// doubles, to MaxStep1Resend. Nothing goes out while a refused step 1
// (policy_denied) waits for its first-contact lookup: the next copy is the
// one with the certificate (onLookup), and the backoff starts again from it.
func (r *runner) resendStep1(now time.Time) error {
	if r.pending == nil || r.step1 == nil || r.resendDue.IsZero() || now.Before(r.resendDue) {
		return nil
	}
	if r.introduced == nil && (r.lookingUp || !r.lookupDue.IsZero()) {
		return nil
	}
	if err := r.relayStep1(); err != nil {
		return err
	}
	r.step1Resent = true
	limit := MaxStep1Resend
	if r.resendWait > limit {
		limit = r.resendWait
	}
	if r.resendWait *= 2; r.resendWait > limit {
		r.resendWait = limit
	}
	r.resendDue = now.Add(r.resendWait)
	r.emit(map[string]any{"event": "step1_resent", "peer": r.step1.GetRecipientId(), "session_id": hex.EncodeToString(r.step1.GetSessionId())})
	return nil
}

// lookupResult is a directory lookup's answer for the handshake step 1
// (session) that asked for it.
type lookupResult struct {
	session string
	cert    *pb.AgentCertificate
	err     error
}

// firstContactRefused handles the gateway's policy_denied for the pending
// handshake's step 1 (§10.3 step 5): the gateway may never have seen the
// peer, so, the first time, the agent looks it up in the registry and relays
// the same step 1 with its certificate (§17.2 item 6). Refused again with the
// certificate attached, the route is denied: the run ends policy_denied.
func (r *runner) firstContactRefused(rj *pb.Rejected) error {
	peer := r.step1.GetRecipientId()
	switch {
	case r.introduced != nil:
		return parley.Errorf(parley.CodePolicyDenied, "gateway refused the handshake with %q's registry certificate attached: the gateway's policy denies this route (%s)", peer, rj.GetMessage())
	case r.cfg.Directory == nil:
		return parley.Errorf(parley.CodePolicyDenied, "gateway refused the handshake with %q (%s); without --registry the agent cannot introduce a recipient the gateway never saw (§17.2 item 6)", peer, rj.GetMessage())
	case r.lookingUp || !r.lookupDue.IsZero():
		return nil
	}
	warn(parley.CodePolicyDenied, fmt.Sprintf("gateway refused the handshake with %q (%s): looking %q up in the registry for a first contact", peer, rj.GetMessage(), peer))
	r.startLookup()
	return nil
}

// startLookup asks the directory for the pending handshake's peer; the
// answer comes to the event loop (onLookup).
func (r *runner) startLookup() {
	r.lookingUp = true
	session, peer, ctx := string(r.pending.SessionID()), r.step1.GetRecipientId(), r.ctx
	go func() {
		cert, err := r.cfg.Directory.Lookup(ctx, peer)
		select {
		case r.lookups <- lookupResult{session: session, cert: cert, err: err}:
		case <-ctx.Done():
		}
	}()
}

// onLookup takes a directory answer: a verified certificate is attached to
// the same step 1, relayed again; a permanent failure (policy_denied, naming
// the cause) ends the run; a transient one is tried again with backoff.
func (r *runner) onLookup(res lookupResult) error {
	r.lookingUp = false
	if r.pending == nil || string(r.pending.SessionID()) != res.session {
		return nil // that handshake is gone
	}
	peer := r.step1.GetRecipientId()
	if res.err != nil {
		if parley.CodeOf(res.err) == parley.CodePolicyDenied {
			return &parley.Error{Code: parley.CodePolicyDenied, Message: fmt.Sprintf("first contact with %q refused", peer), Cause: res.err}
		}
		if r.lookupWait == 0 {
			r.lookupWait = r.cfg.LookupBackoff
			if r.lookupWait <= 0 {
				r.lookupWait = DefaultLookupBackoff
			}
		} else if r.lookupWait *= 2; r.lookupWait > MaxLookupBackoff {
			r.lookupWait = MaxLookupBackoff
		}
		r.lookupDue = time.Now().Add(r.lookupWait)
		code := parley.CodeOf(res.err)
		if code == "" {
			code = "unavailable"
		}
		warn(code, fmt.Sprintf("registry lookup of %q for a first contact failed (%v); trying again in %v", peer, res.err, r.lookupWait))
		return nil
	}
	r.introduced = res.cert
	if err := r.relayStep1(); err != nil {
		return err
	}
	r.armStep1Resend(time.Now())
	r.emit(map[string]any{"event": "first_contact", "peer": peer, "session_id": hex.EncodeToString(r.step1.GetSessionId()), "serial": hex.EncodeToString(res.cert.GetSerial())})
	return nil
}

// handleFrame processes one frame from the gateway, then sends the acks it
// made as one Ack frame (with outbound_acks, §10.3).
func (r *runner) handleFrame(resp *pb.ConnectResponse) error {
	err := r.handle(resp)
	if ferr := r.conn.FlushAcks(); err == nil {
		err = ferr
	}
	return err
}

// handle processes one frame from the gateway.
func (r *runner) handle(resp *pb.ConnectResponse) error {
	switch k := resp.GetKind().(type) {
	case *pb.ConnectResponse_Delivery:
		return r.onDelivery(k.Delivery)
	case *pb.ConnectResponse_Deliveries:
		// Several deliveries in one frame (asked for by the Hello's
		// delivery_batches, §10.3): each one in order, as if it came alone.
		r.emit(map[string]any{"event": "deliveries", "items": len(k.Deliveries.GetItems())})
		for _, d := range k.Deliveries.GetItems() {
			if err := r.onDelivery(d); err != nil {
				return err
			}
		}
		return nil
	case *pb.ConnectResponse_Accepted:
		delete(r.step1Copies, k.Accepted.GetRequestId())
		if o := r.inFlight; o != nil && o.requestID == k.Accepted.GetRequestId() {
			if hex.EncodeToString(k.Accepted.GetItemHash()) != hex.EncodeToString(o.hash) {
				return parley.Errorf(parley.CodeMalformed, "gateway accepted message %d under another item hash", o.seq)
			}
			o.accepted = true
		}
		return nil
	case *pb.ConnectResponse_Rejected:
		reqID, code := k.Rejected.GetRequestId(), k.Rejected.GetCode()
		if r.step1Copies[reqID] {
			delete(r.step1Copies, reqID)
			latest := r.pending != nil && r.step1 != nil && reqID == r.step1Req
			switch {
			case latest && code == parley.CodePolicyDenied:
				return r.firstContactRefused(k.Rejected)
			case latest && r.step1Resent:
				// A timed copy refused (say rate_limited): the next one
				// tries again (§5.4), as @parley/client does.
				warn(code, fmt.Sprintf("gateway refused a resent copy of handshake step 1 (request %d: %s): sent again on the backoff", reqID, k.Rejected.GetMessage()))
				return nil
			case !latest:
				// An earlier copy, or one of a handshake that is over: the
				// latest copy's answer (or the step 2 that came) decides.
				warn(code, fmt.Sprintf("gateway refused an earlier copy of handshake step 1 (request %d: %s): ignored", reqID, k.Rejected.GetMessage()))
				return nil
			}
		}
		return parley.Errorf(k.Rejected.GetCode(), "gateway rejected request %d: %s", k.Rejected.GetRequestId(), k.Rejected.GetMessage())
	case *pb.ConnectResponse_GoAway:
		return parley.Errorf(k.GoAway.GetCode(), "gateway go_away: %s", k.GoAway.GetMessage())
	default:
		return parley.Errorf(parley.CodeMalformed, "unexpected frame %T after welcome", k)
	}
}

// onDelivery processes one delivery and acks it.
func (r *runner) onDelivery(d *pb.Delivery) error {
	ack, err := r.deliver(d)
	if err != nil || !ack {
		return err
	}
	// Ack after processing (§10.8), duplicates included; a held envelope is
	// acked once processed after its step 3 (§5.4), and an envelope answered
	// with a receipt by SendReceiptAck (§10.3).
	return r.conn.Ack(d.GetDeliveryId())
}

// deliver processes one delivery; ack is false when it needs no Ack frame:
// an envelope held until its session's step 3 or deferred (§5.4, §17.3), or
// one whose reply (receipt or SessionReject) acked it (§10.3).
func (r *runner) deliver(d *pb.Delivery) (ack bool, err error) {
	switch it := d.GetItem().(type) {
	case *pb.Delivery_Handshake:
		return true, r.onFrame(it.Handshake)
	case *pb.Delivery_Envelope:
		return r.onEnvelopeDelivery(d, it.Envelope)
	case *pb.Delivery_Receipt:
		return true, r.onReceipt(it.Receipt)
	case *pb.Delivery_SessionReject:
		return true, r.onSessionReject(it.SessionReject)
	default:
		return false, parley.Errorf(parley.CodeMalformed, "delivery %d carries no item", d.GetDeliveryId())
	}
}

// onEnvelopeDelivery routes an envelope (§17.3, in @parley/client's order):
// one taken before gets its receipt again; one of a live session is opened;
// one of a handshake this agent is responding to is held until its step 3
// (§5.4); any other is answered with a SessionReject (§17.4), unless it may
// be one whose receipt the store dropped. ack as for deliver.
func (r *runner) onEnvelopeDelivery(d *pb.Delivery, e *pb.SecureMessage) (ack bool, err error) {
	hash, err := parley.MessageHash(e)
	if err != nil {
		warn(parley.CodeMalformed, "envelope that is not well-formed dropped: "+err.Error())
		return true, nil // nothing will ever open it
	}
	// Taken before: its receipt may have been lost; send it again, acking
	// this delivery (§17.3 item 3).
	if rc := r.receipts.get(hash); rc != nil {
		return false, r.conn.SendReceiptAck(rc, d.GetDeliveryId())
	}
	id := string(e.GetSessionId())
	if r.sessions[id] != nil {
		acked, err := r.onEnvelope(d, e)
		return !acked, err
	}
	if resp := r.accepted[id]; resp != nil {
		// Overtook step 3 of a handshake this agent is responding to: held,
		// unacked, at most MaxHeldEnvelopes; beyond, tried again (§5.4).
		if len(resp.held) < MaxHeldEnvelopes {
			resp.held = append(resp.held, d)
		} else if !r.deferDelivery(d) {
			warn("held", "more envelopes before step 3 than can be held or deferred: left unacked for the next stream")
		}
		return false, nil
	}
	// No session held and none being established: it can never open here.
	// Its receipt may be among those the store dropped (§17.4): acked
	// without a reject, and its sender reports expired, never a duplicate.
	if r.receipts.mayHaveTaken(e.GetTimestampMs(), parley.DefaultSkew.MaxFutureMs) {
		warn("duplicate", "envelope of an unknown session no younger than a dropped receipt: acked without a SessionReject")
		return true, nil
	}
	return false, r.rejectSession(d, e)
}

// deferDelivery keeps a delivery to be tried again (at most MaxDeferred);
// false when it is left for the next stream.
func (r *runner) deferDelivery(d *pb.Delivery) bool {
	if len(r.deferred) >= MaxDeferred {
		return false
	}
	r.deferred = append(r.deferred, d)
	return true
}

// rejectSession answers envelope e, which this agent can never open, with a
// SessionReject signed by its identity key (§17.4) sent as the reply that
// acks d (§10.3), as @parley/client's rejectSession does; an envelope that
// cannot be answered (not addressed to this agent, no 16-byte session id) is
// only acked. Callers make sure it was not taken here: no receipt for its
// hash, no session that could open it, none being established.
func (r *runner) rejectSession(d *pb.Delivery, e *pb.SecureMessage) error {
	if len(e.GetSessionId()) != parley.SessionIDBytes || e.GetRecipientId() != r.cfg.Identity.AgentID {
		return r.conn.Ack(d.GetDeliveryId())
	}
	hash, err := parley.MessageHash(e)
	if err != nil {
		return r.conn.Ack(d.GetDeliveryId())
	}
	rj, err := parley.SignSessionReject(r.cfg.Identity.Key, e, hash, nowMs())
	if err != nil {
		return r.conn.Ack(d.GetDeliveryId())
	}
	r.emit(map[string]any{"event": "reject_sent", "from": e.GetSenderId(), "session_id": hex.EncodeToString(e.GetSessionId()), "message_hash": hex.EncodeToString(hash)})
	// Lost on the way: the sender's next resend gets another.
	return r.conn.SendSessionRejectAck(rj, d.GetDeliveryId())
}

// onFrame drives the handshake. Redelivered frames of finished handshakes
// (§10.8) are dropped.
func (r *runner) onFrame(f *pb.HandshakeFrame) error {
	id := string(f.GetSessionId())
	switch f.GetStep() {
	case 1:
		if _, ok := r.sessions[id]; ok || r.accepted[id] != nil {
			// A copy of a step 1 whose session id this agent holds: dropped (§5.1). From the peer that id is
			// held with it is that peer's resend while it waits for step 2 (§5.4), no warning; from anyone
			// else, a replay worth one.
			if f.GetSenderId() != r.cfg.Peer {
				warn("replay", fmt.Sprintf("handshake step 1 from %q for a session id held with %q dropped", f.GetSenderId(), r.cfg.Peer))
			}
			return nil
		}
		if f.GetSenderId() != r.cfg.Peer {
			warn(parley.CodeIdentityMismatch, fmt.Sprintf("handshake from %q ignored (peer is %q)", f.GetSenderId(), r.cfg.Peer))
			return nil
		}
		h, f2, err := parley.AcceptHandshake(r.handshakeConfig(), f)
		if err != nil {
			return err
		}
		r.accepted[id] = &responding{h: h, since: time.Now()}
		_, err = r.conn.SendFrame(f2)
		return err
	case 2:
		if r.pending == nil || string(r.pending.SessionID()) != id {
			warn(parley.CodeUnknownSession, "handshake step 2 of no pending handshake dropped")
			return nil
		}
		h := r.pending
		r.pending, r.step1, r.introduced, r.lookupDue = nil, nil, nil, time.Time{}
		r.resendDue, r.step1Resent = time.Time{}, false
		f3, s, err := h.ReadStep2(f)
		if err != nil {
			return err
		}
		if _, err := r.conn.SendFrame(f3); err != nil {
			return err
		}
		return r.established(s)
	case 3:
		resp := r.accepted[id]
		if resp == nil {
			warn(parley.CodeUnknownSession, "handshake step 3 of no pending handshake dropped")
			return nil
		}
		delete(r.accepted, id)
		s, err := resp.h.ReadStep3(f)
		if err != nil {
			// The handshake is poisoned (§5.4): nothing it held can ever
			// open, so each is answered with a SessionReject. The peer, which
			// holds the session, reseals them in a new one; the run goes on.
			code := parley.CodeOf(err)
			if code == "" {
				code = parley.CodeHandshakeFailed
			}
			warn(code, fmt.Sprintf("handshake step 3 failed (%v); %d held envelope(s) answered with a SessionReject", err, len(resp.held)))
			if err := r.rejectHeld(resp); err != nil {
				return err
			}
			return r.retryDeferred()
		}
		if err := r.established(s); err != nil {
			return err
		}
		held := resp.held
		resp.held = nil
		for _, d := range held { // in arrival order, then acked (§5.4)
			if err := r.onDelivery(d); err != nil {
				return err
			}
		}
		return r.retryDeferred()
	default:
		return parley.Errorf(parley.CodeMalformed, "handshake frame with step %d", f.GetStep())
	}
}

func (r *runner) established(s *parley.Session) error {
	r.sessions[string(s.ID)] = s
	r.current = s
	r.emit(map[string]any{"event": "session", "peer": s.PeerID, "session_id": hex.EncodeToString(s.ID), "role": s.Role.String()})
	return r.sendNext()
}

// sendNext sends the next message when none is in flight, or seals the one
// in flight again when a SessionReject refused its session (§17.2 item 4).
func (r *runner) sendNext() error {
	if r.current == nil {
		return nil
	}
	o := r.inFlight
	if o == nil {
		if r.sent >= r.cfg.Send {
			return nil
		}
		seq := r.sent + 1
		content, err := structpb.NewValue(map[string]any{"from": "go", "seq": seq, "text": fmt.Sprintf("hello from Go #%d", seq)})
		if err != nil {
			return err
		}
		o = &outstanding{seq: seq, msgType: sendTypes[(seq-1)%len(sendTypes)], content: content}
	} else if !o.resealing {
		return nil
	}
	s := r.current
	sealed, err := s.Seal(o.msgType, o.content)
	if err != nil {
		return err
	}
	reqID, err := r.conn.SendEnvelope(sealed.Envelope)
	if err != nil {
		return err
	}
	o.requestID, o.hash, o.accepted = reqID, sealed.MessageHash, false
	o.sessionID, o.to, o.peerKey = s.ID, s.PeerID, s.PeerKey
	event := map[string]any{"seq": o.seq, "type": o.msgType.String(), "session_id": hex.EncodeToString(s.ID), "message_hash": hex.EncodeToString(sealed.MessageHash)}
	if o.resealing {
		o.resealing = false
		o.reseals++
		event["event"] = "resealed"
	} else {
		r.sent++
		r.inFlight = o
		event["event"] = "sent"
		delete(event, "session_id")
	}
	r.emit(event)
	return nil
}

// onEnvelope opens a message from the peer (§8.1), reports it, and returns
// a signed receipt (§10.5) that also acks d (acked: no Ack frame is needed,
// §10.3). Replays are dropped silently (their receipt is sent again, in case
// it was lost).
func (r *runner) onEnvelope(d *pb.Delivery, e *pb.SecureMessage) (acked bool, err error) {
	s := r.sessions[string(e.GetSessionId())]
	if s == nil {
		// onEnvelopeDelivery sends the others a SessionReject (§17.4).
		return false, parley.Errorf(parley.CodeUnknownSession, "onEnvelope without a live session")
	}
	opened, err := s.Open(e)
	if parley.CodeOf(err) == parley.CodeReplay {
		if hash, herr := parley.MessageHash(e); herr == nil {
			if rc := r.receipts.get(hash); rc != nil {
				return true, r.conn.SendReceiptAck(rc, d.GetDeliveryId())
			}
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	receivedAt := nowMs()
	content, err := protojson.Marshal(opened.Payload.GetContent())
	if err != nil {
		return false, err
	}
	var compact json.RawMessage = content
	if opened.Payload.GetContent() == nil {
		compact = json.RawMessage("null")
	}
	r.received++
	r.emit(map[string]any{
		"event": "received", "from": e.GetSenderId(), "type": opened.Payload.GetType().String(),
		"message_hash": hex.EncodeToString(opened.MessageHash), "content": compact,
	})
	rc, err := parley.SignReceipt(r.cfg.Identity.Key, opened.MessageHash, e.GetSenderId(), r.cfg.Identity.AgentID, receivedAt)
	if err != nil {
		return false, err
	}
	r.receipts.add(opened.MessageHash, rc, receivedAt)
	return true, r.conn.SendReceiptAck(rc, d.GetDeliveryId())
}

// signerCertificatePolicy is what a reply's signer_certificate is checked
// with (§17.8 item 4): this agent's trust bundle and clock now, and its
// revocation data if it has any (--registry).
func (r *runner) signerCertificatePolicy() *parley.SignerCertificatePolicy {
	return &parley.SignerCertificatePolicy{Trust: r.cfg.Trust, Revocations: r.cfg.Revocations, NowMs: nowMs()}
}

// onReceipt verifies the peer's receipt for the message in flight (§10.5):
// signed by the peer's certified key of the session the message was sealed
// in or, when the receipt carries signer_certificate (the peer rotated its
// identity key), by that certificate's key if the certificate is the peer's,
// verifies against the trust bundle now and is not revoked (§17.8 item 4).
// A receipt that does not verify ends the run (bad_signature).
func (r *runner) onReceipt(rc *pb.DeliveryReceipt) error {
	o := r.inFlight
	if o == nil || hex.EncodeToString(rc.GetMessageHash()) != hex.EncodeToString(o.hash) {
		warn("duplicate", "receipt for no message in flight dropped")
		return nil
	}
	signer, err := parley.VerifyReceiptWith(rc, o.hash, r.cfg.Identity.AgentID, o.to, o.peerKey, r.signerCertificatePolicy())
	if err != nil {
		return err
	}
	if !o.accepted {
		// The receipt can overtake our own `accepted` on a fast path; the
		// receipt proves delivery, so accept it either way.
		o.accepted = true
	}
	r.verified++
	r.inFlight = nil
	event := map[string]any{"event": "receipt", "message_hash": hex.EncodeToString(rc.GetMessageHash()), "received_at_ms": rc.GetReceivedAtMs(), "verified": true}
	if signer != nil {
		event["signer_certificate"] = hex.EncodeToString(signer.GetSerial())
	}
	r.emit(event)
	return r.sendNext()
}

// onSessionReject takes a SessionReject for the message in flight (§17.4,
// as @parley/client's outbox does): it must name that envelope, sent to the
// reject's signer in that session, and verify with that session's certified
// peer key or, when it carries signer_certificate, with that certificate's
// key under the rules of §17.8 item 4 (as onReceipt); otherwise it is ignored
// (a warning; a bad signature is a security event). A verified reject
// closes the session (for sending, and here for receiving too) and seals
// that message, and only that one, again in a new session (§17.2 item 4):
// the current one if another is live, else one this agent starts. After
// MaxReseals the send fails: the run ends with unknown_session.
func (r *runner) onSessionReject(rj *pb.SessionReject) error {
	o := r.inFlight
	if o == nil || o.resealing || !bytes.Equal(rj.GetMessageHash(), o.hash) {
		warn("duplicate", "session reject for no message in flight dropped")
		return nil
	}
	if rj.GetSenderId() != r.cfg.Identity.AgentID || rj.GetRecipientId() != o.to || !bytes.Equal(rj.GetSessionId(), o.sessionID) {
		warn(parley.CodeIdentityMismatch, "session reject does not name this pending send: ignored")
		return nil
	}
	signer, err := parley.VerifySessionRejectWith(rj, o.sessionID, o.hash, r.cfg.Identity.AgentID, o.to, o.peerKey, r.signerCertificatePolicy())
	if err != nil {
		warn(parley.CodeOf(err), "session reject ignored: "+err.Error())
		return nil
	}
	event := map[string]any{"event": "reject_received", "peer": o.to, "seq": o.seq, "session_id": hex.EncodeToString(o.sessionID), "message_hash": hex.EncodeToString(o.hash), "verified": true}
	if signer != nil {
		event["signer_certificate"] = hex.EncodeToString(signer.GetSerial())
	}
	r.emit(event)
	if s := r.sessions[string(o.sessionID)]; s != nil {
		s.Close()
		delete(r.sessions, string(o.sessionID))
		if r.current == s {
			r.current = nil
		}
	}
	if o.reseals >= MaxReseals {
		return parley.Errorf(parley.CodeUnknownSession, "%q refused %d sessions in a row (message %d)", o.to, MaxReseals+1, o.seq)
	}
	o.resealing = true
	if r.current != nil {
		return r.sendNext()
	}
	if r.pending != nil {
		return nil // its step 2 brings the session the message is sealed in
	}
	return r.initiate()
}

// emit writes one JSON event line with keys in the documented order.
func (r *runner) emit(fields map[string]any) {
	writeEvent(r.cfg.Out, fields)
}

var keyOrder = []string{"event", "agent_id", "mailbox_depth", "peer", "session_id", "serial", "role", "seq", "from", "type",
	"message_hash", "received_at_ms", "verified", "signer_certificate", "content", "items", "sent", "receipts", "received", "code", "message"}

func writeEvent(w io.Writer, fields map[string]any) {
	buf := []byte{'{'}
	first := true
	for _, k := range keyOrder {
		v, ok := fields[k]
		if !ok {
			continue
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(v)
		if err != nil {
			vb = []byte("null")
		}
		buf = append(append(append(buf, kb...), ':'), vb...)
	}
	buf = append(buf, '}', '\n')
	_, _ = w.Write(buf)
}

// Warn reports a tolerated, non-fatal event on stderr.
func Warn(code, message string) { warn(code, message) }

// warn reports a tolerated, non-fatal event on stderr.
func warn(code, message string) {
	writeEvent(os.Stderr, map[string]any{"event": "warning", "code": code, "message": message})
}

// ReportError writes the {"event":"error"} line for err on stderr.
func ReportError(err error) {
	code := parley.CodeOf(err)
	if code == "" {
		code = "local"
	}
	writeEvent(os.Stderr, map[string]any{"event": "error", "code": code, "message": err.Error()})
}
