// Package directory looks agents up in the registry's directory for a first
// contact (PROTOCOL.md §5.4, §10.3 step 5, §17.2 item 6): a gateway routes by
// the certificates of agents it has seen, so a handshake step 1 to an agent
// that never connected is refused policy_denied; the sender then reads the
// recipient's certificate with GetAgent, signed as itself (the agent request
// signature of §15.3), verifies it (§3.3 with the recipient's id, against its
// trust bundle and revocation data) and relays the same step 1 again with the
// certificate attached (recipient_certificate).
//
// A failed lookup is permanent — an error with code policy_denied, naming the
// cause: the registry has no such agent, refuses the read, lists it revoked or
// expired, or returns a certificate that does not verify — or transient, any
// other code (the registry unreachable or unavailable, rate_limited, our own
// revocation data stale, a certificate not yet valid): the caller asks again
// with backoff until its send expires.
//
// Bounded: one lookup in flight per agent id (concurrent callers share it), at
// most MaxInFlight lookups of distinct ids at once (a further one fails
// transient at once), and at most MaxCached verified certificates, least
// recently used out, each kept CacheTTL and verified again at every use.
package directory

import (
	"container/list"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// GetAgentMethod is the method path the agent request signature covers (§15.3).
const GetAgentMethod = "/parley.v1.RegistryService/GetAgent"

// Defaults of the bounds.
const (
	DefaultMaxCached   = 1024
	DefaultMaxInFlight = 16
	DefaultCacheTTL    = 60 * time.Second
	DefaultCallTimeout = 10 * time.Second
)

// CodePolicyDenied is the code of a permanent lookup failure (§17.2 item 6).
const CodePolicyDenied = "policy_denied"

// CodeUnavailable is the code of a lookup refused locally because too many are in flight.
const CodeUnavailable = "unavailable"

// AgentRequestLayout is the §15.3 agent request signature layout.
func AgentRequestLayout(registryID []byte, method string, requestBytes []byte, timestampMs int64, nonce []byte, agentID string, serial []byte) ([]byte, error) {
	return parley.NewLayout("parley/v1/agent-request").
		Fixed(registryID, 16, "registry_id").
		Str(method).
		Fixed(parley.Hash(requestBytes), 32, "request digest").
		I64(timestampMs).
		Fixed(nonce, 16, "nonce").
		Str(agentID).
		Fixed(serial, 16, "serial").
		Bytes()
}

// AgentRequestMetadata returns the five metadata entries of a request signed
// as the agent (§15.3): the signature by id's key over AgentRequestLayout.
func AgentRequestMetadata(id *parley.Identity, registryID []byte, method string, requestBytes []byte, timestampMs int64, nonce []byte) (metadata.MD, error) {
	serial := id.Certificate.GetSerial()
	layout, err := AgentRequestLayout(registryID, method, requestBytes, timestampMs, nonce, id.AgentID, serial)
	if err != nil {
		return nil, err
	}
	return metadata.Pairs(
		"parley-agent-id", id.AgentID,
		"parley-agent-serial", hex.EncodeToString(serial),
		"parley-agent-timestamp-ms", strconv.FormatInt(timestampMs, 10),
		"parley-agent-nonce", hex.EncodeToString(nonce),
		"parley-agent-signature", base64.RawURLEncoding.EncodeToString(ed25519.Sign(id.Key, layout)),
	), nil
}

// Config is what a Directory needs.
type Config struct {
	Client      pb.RegistryServiceClient
	RegistryID  []byte // 16 bytes, part of every request signature
	Identity    *parley.Identity
	Trust       *parley.TrustBundle
	Revocations parley.RevocationChecker // the agent's own revocation data (§8.4); required
	MaxCached   int
	MaxInFlight int
	CacheTTL    time.Duration
	CallTimeout time.Duration
	Now         func() time.Time
}

// Directory resolves agent ids to verified certificates. Safe for concurrent use.
type Directory struct {
	cfg Config

	mu       sync.Mutex
	inFlight map[string]*call
	lru      *list.List               // of *entry, most recent first
	cached   map[string]*list.Element // by agent id
}

type call struct {
	done chan struct{}
	cert *pb.AgentCertificate
	err  error
}

type entry struct {
	agentID string
	cert    *pb.AgentCertificate
	fetched time.Time
}

// New returns a Directory; zero bounds take their defaults.
func New(cfg Config) *Directory {
	if cfg.MaxCached <= 0 {
		cfg.MaxCached = DefaultMaxCached
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Directory{cfg: cfg, inFlight: map[string]*call{}, lru: list.New(), cached: map[string]*list.Element{}}
}

// Cached is the number of certificates held.
func (d *Directory) Cached() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lru.Len()
}

// Lookup returns agentID's current certificate from the registry, verified
// now (§3.3 with agentID expected, and the agent's revocation data). A
// certificate cached less than CacheTTL ago that still verifies is returned
// without a call. Errors: code policy_denied (permanent, §17.2 item 6) or
// another code (transient: ask again later).
func (d *Directory) Lookup(ctx context.Context, agentID string) (*pb.AgentCertificate, error) {
	d.mu.Lock()
	if cert := d.fromCache(agentID); cert != nil {
		d.mu.Unlock()
		return cert, nil
	}
	c := d.inFlight[agentID]
	if c == nil {
		if len(d.inFlight) >= d.cfg.MaxInFlight {
			d.mu.Unlock()
			return nil, parley.Errorf(CodeUnavailable, "directory: %d lookups in flight already; %q is looked up later", d.cfg.MaxInFlight, agentID)
		}
		c = &call{done: make(chan struct{})}
		d.inFlight[agentID] = c
		d.mu.Unlock()
		// The call does not die with one caller's context: others may share it.
		go d.run(agentID, c)
	} else {
		d.mu.Unlock()
	}
	select {
	case <-c.done:
		return c.cert, c.err
	case <-ctx.Done():
		return nil, parley.Errorf("deadline_exceeded", "directory lookup of %q: %v", agentID, ctx.Err())
	}
}

// fromCache returns a cached certificate that still verifies (mu held);
// a stale or no longer verifying one is dropped.
func (d *Directory) fromCache(agentID string) *pb.AgentCertificate {
	el := d.cached[agentID]
	if el == nil {
		return nil
	}
	e := el.Value.(*entry)
	now := d.cfg.Now()
	if now.Sub(e.fetched) < d.cfg.CacheTTL && d.verify(e.cert, agentID, now) == nil {
		d.lru.MoveToFront(el)
		return e.cert
	}
	d.lru.Remove(el)
	delete(d.cached, agentID)
	return nil
}

func (d *Directory) store(agentID string, cert *pb.AgentCertificate) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if el := d.cached[agentID]; el != nil {
		d.lru.Remove(el)
	}
	d.cached[agentID] = d.lru.PushFront(&entry{agentID: agentID, cert: cert, fetched: d.cfg.Now()})
	for d.lru.Len() > d.cfg.MaxCached {
		last := d.lru.Back()
		d.lru.Remove(last)
		delete(d.cached, last.Value.(*entry).agentID)
	}
}

func (d *Directory) run(agentID string, c *call) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.CallTimeout)
	defer cancel()
	c.cert, c.err = d.fetch(ctx, agentID)
	if c.err == nil {
		d.store(agentID, c.cert)
	}
	d.mu.Lock()
	delete(d.inFlight, agentID)
	d.mu.Unlock()
	close(c.done)
}

func (d *Directory) verify(cert *pb.AgentCertificate, agentID string, now time.Time) error {
	return d.cfg.Trust.VerifyCertificateWith(cert, now.UnixMilli(), agentID, d.cfg.Revocations)
}

// fetch calls GetAgent signed as the agent and checks the answer.
func (d *Directory) fetch(ctx context.Context, agentID string) (*pb.AgentCertificate, error) {
	if !parley.IsAgentID(agentID) {
		return nil, parley.Errorf(CodePolicyDenied, "%q is not an agent id", agentID)
	}
	req := &pb.GetAgentRequest{AgentId: agentID}
	// The bytes signed are the bytes sent: the client's codec marshals with
	// proto.Marshal too, deterministic for this one-field message.
	reqBytes, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	md, err := AgentRequestMetadata(d.cfg.Identity, d.cfg.RegistryID, GetAgentMethod, reqBytes, d.cfg.Now().UnixMilli(), nonce)
	if err != nil {
		return nil, err
	}
	var trailer metadata.MD
	resp, err := d.cfg.Client.GetAgent(metadata.NewOutgoingContext(ctx, md), req, grpc.Trailer(&trailer))
	if err != nil {
		return nil, classify(agentID, err, trailer)
	}
	rec := resp.GetAgent()
	cert := rec.GetCertificate()
	switch {
	case rec == nil || cert == nil:
		return nil, parley.Errorf(CodePolicyDenied, "the registry answered GetAgent(%q) with no certificate", agentID)
	case rec.GetAgentId() != agentID:
		return nil, parley.Errorf(CodePolicyDenied, "the registry answered GetAgent(%q) with agent %q", agentID, rec.GetAgentId())
	case rec.GetStatus() == pb.AgentStatus_AGENT_STATUS_REVOKED || rec.GetRevocationVersion() != 0:
		return nil, parley.Errorf(CodePolicyDenied, "the registry lists %q revoked", agentID)
	case rec.GetStatus() == pb.AgentStatus_AGENT_STATUS_EXPIRED:
		return nil, parley.Errorf(CodePolicyDenied, "the registry lists the certificate of %q expired", agentID)
	}
	if err := d.verify(cert, agentID, d.cfg.Now()); err != nil {
		code := parley.CodeOf(err)
		if code == parley.CodeNotYetValid || code == parley.CodeRevocationStale {
			// Time or fresher revocation data changes these (§17.2 item 6).
			return nil, &parley.Error{Code: code, Message: fmt.Sprintf("the registry's certificate of %q cannot be accepted yet", agentID), Cause: err}
		}
		return nil, &parley.Error{Code: CodePolicyDenied, Message: fmt.Sprintf("the registry's certificate of %q does not verify (%s)", agentID, code), Cause: err}
	}
	return cert, nil
}

// classify turns a failed GetAgent into a permanent (policy_denied) or a
// transient failure (its own code).
func classify(agentID string, err error, trailer metadata.MD) error {
	st, _ := status.FromError(err)
	code := ""
	if v := trailer.Get("parley-error-code"); len(v) > 0 {
		code = v[0]
	}
	switch {
	case st.Code() == codes.NotFound:
		return parley.Errorf(CodePolicyDenied, "no agent %q: the registry has no agent with that id (%s)", agentID, st.Message())
	case st.Code() == codes.PermissionDenied || st.Code() == codes.Unauthenticated:
		if code == "" {
			code = st.Code().String()
		}
		return parley.Errorf(CodePolicyDenied, "the registry refused to look %q up: [%s] %s", agentID, code, st.Message())
	}
	if code == "" {
		switch st.Code() {
		case codes.ResourceExhausted:
			code = "rate_limited"
		case codes.DeadlineExceeded:
			code = "deadline_exceeded"
		case codes.Canceled:
			code = "cancelled"
		default:
			code = CodeUnavailable
		}
	}
	return parley.Errorf(code, "registry lookup of %q failed: %s: %s", agentID, st.Code(), st.Message())
}
