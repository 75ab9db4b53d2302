package directory

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// The agent request signature (§15.3) against the repository's trust
// lifecycle vectors (an agent-signed GetAgent, made by @parley/protocol).
const trustVectorFile = "../../../../docs/conformance/parley-v1-trust.json"

func TestAgentRequestSignatureVector(t *testing.T) {
	raw, err := os.ReadFile(trustVectorFile)
	if err != nil {
		t.Skipf("no trust vector file: %v", err)
	}
	var file struct {
		AgentRequest struct {
			RegistryID    string            `json:"registry_id"`
			Path          string            `json:"path"`
			Request       string            `json:"request"`
			RequestDigest string            `json:"request_digest"`
			AgentID       string            `json:"agent_id"`
			Serial        string            `json:"serial"`
			TimestampMs   int64             `json:"timestamp_ms"`
			Nonce         string            `json:"nonce"`
			Layout        string            `json:"layout"`
			SignerSeed    string            `json:"signer_seed"`
			Metadata      map[string]string `json:"metadata"`
		} `json:"agent_request"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	v := file.AgentRequest
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if v.Path != GetAgentMethod {
		t.Fatalf("vector path %q, want %q", v.Path, GetAgentMethod)
	}
	// The request bytes are what proto.Marshal gives for the message, so the
	// bytes signed are the bytes the client sends.
	req := &pb.GetAgentRequest{}
	if err := proto.Unmarshal(unhex(v.Request), req); err != nil {
		t.Fatal(err)
	}
	again, _ := proto.Marshal(req)
	if hex.EncodeToString(again) != v.Request {
		t.Fatalf("request re-encodes as %x, vector %s", again, v.Request)
	}
	if hex.EncodeToString(parley.Hash(again)) != v.RequestDigest {
		t.Fatal("request digest differs")
	}
	layout, err := AgentRequestLayout(unhex(v.RegistryID), v.Path, again, v.TimestampMs, unhex(v.Nonce), v.AgentID, unhex(v.Serial))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(layout) != v.Layout {
		t.Fatalf("layout\n got %x\nwant %s", layout, v.Layout)
	}
	key := ed25519.NewKeyFromSeed(unhex(v.SignerSeed))
	id := &parley.Identity{AgentID: v.AgentID, Key: key, Certificate: &pb.AgentCertificate{Serial: unhex(v.Serial)}}
	md, err := AgentRequestMetadata(id, unhex(v.RegistryID), v.Path, again, v.TimestampMs, unhex(v.Nonce))
	if err != nil {
		t.Fatal(err)
	}
	if len(md) != len(v.Metadata) {
		t.Fatalf("%d metadata entries, vector has %d", len(md), len(v.Metadata))
	}
	for k, want := range v.Metadata {
		if got := md.Get(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %v, want %q", k, got, want)
		}
	}
}

// world is an issuer, the agent that looks up, and a registry stand-in.
type world struct {
	issuerID   []byte
	issuer     ed25519.PrivateKey
	trust      *parley.TrustBundle
	registryID []byte
	self       *parley.Identity
	revoked    *parley.RevocationSet
	reg        *fakeRegistry
	now        time.Time
}

func newWorld(t *testing.T) *world {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyID, err := parley.KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := parley.NewTrustBundle([]parley.TrustedIssuer{{KeyID: keyID, PublicKey: pub}})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{issuerID: keyID, issuer: priv, trust: trust, registryID: make([]byte, 16), now: time.Now(),
		revoked: &parley.RevocationSet{AgentIDs: map[string]bool{}, Serials: map[string]bool{}}}
	_, _ = rand.Read(w.registryID)
	key, cert := w.certify(t, "go-1", priv, w.now.Add(-time.Hour), w.now.Add(time.Hour))
	w.self = &parley.Identity{AgentID: "go-1", Key: key, Certificate: cert}
	w.reg = &fakeRegistry{t: t, w: w, records: map[string]*pb.AgentRecord{}}
	return w
}

// certify issues a certificate for agentID signed by issuer (valid [from, until)).
func (w *world) certify(t *testing.T, agentID string, issuer ed25519.PrivateKey, from, until time.Time) (ed25519.PrivateKey, *pb.AgentCertificate) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	serial := make([]byte, 16)
	_, _ = rand.Read(serial)
	issuerID, _ := parley.KeyID(issuer.Public().(ed25519.PublicKey))
	c := &pb.AgentCertificate{Version: 1, AgentId: agentID, IdentityPublicKey: pub, AgentType: "planner",
		ValidFromMs: from.UnixMilli(), ValidUntilMs: until.UnixMilli(), Serial: serial, IssuerKeyId: issuerID}
	tbs, err := parley.CertificateTBS(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Signature = ed25519.Sign(issuer, tbs)
	return priv, c
}

// register puts a valid record of agentID in the registry stand-in.
func (w *world) register(t *testing.T, agentID string) *pb.AgentCertificate {
	_, c := w.certify(t, agentID, w.issuer, w.now.Add(-time.Hour), w.now.Add(time.Hour))
	w.reg.put(&pb.AgentRecord{AgentId: agentID, Status: pb.AgentStatus_AGENT_STATUS_ACTIVE, Certificate: c})
	return c
}

func (w *world) directory(mod func(*Config)) *Directory {
	cfg := Config{Client: w.reg, RegistryID: w.registryID, Identity: w.self, Trust: w.trust, Revocations: w.revoked,
		Now: func() time.Time { return w.now }}
	if mod != nil {
		mod(&cfg)
	}
	return New(cfg)
}

// fakeRegistry answers GetAgent from records after checking the agent
// request signature as a registry does (§15.3).
type fakeRegistry struct {
	pb.RegistryServiceClient
	t       *testing.T
	w       *world
	mu      sync.Mutex
	records map[string]*pb.AgentRecord
	calls   int
	fail    error         // answered instead when set
	gate    chan struct{} // when set, each call waits for it
}

func (f *fakeRegistry) put(r *pb.AgentRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records[r.GetAgentId()] = r
}

func (f *fakeRegistry) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeRegistry) GetAgent(ctx context.Context, in *pb.GetAgentRequest, opts ...grpc.CallOption) (*pb.GetAgentResponse, error) {
	f.mu.Lock()
	f.calls++
	gate, fail := f.gate, f.fail
	rec := f.records[in.GetAgentId()]
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	one := func(k string) string {
		v := md.Get(k)
		if len(v) != 1 {
			f.t.Errorf("metadata %s: %v", k, v)
			return ""
		}
		return v[0]
	}
	if one("parley-agent-id") != f.w.self.AgentID || one("parley-agent-serial") != hex.EncodeToString(f.w.self.Certificate.GetSerial()) {
		f.t.Errorf("request signed as %q/%q", one("parley-agent-id"), one("parley-agent-serial"))
	}
	ts, _ := strconv.ParseInt(one("parley-agent-timestamp-ms"), 10, 64)
	nonce, _ := hex.DecodeString(one("parley-agent-nonce"))
	sig, _ := base64.RawURLEncoding.DecodeString(one("parley-agent-signature"))
	reqBytes, _ := proto.Marshal(in)
	layout, err := AgentRequestLayout(f.w.registryID, GetAgentMethod, reqBytes, ts, nonce, f.w.self.AgentID, f.w.self.Certificate.GetSerial())
	if err != nil || !ed25519.Verify(f.w.self.Key.Public().(ed25519.PublicKey), layout, sig) {
		f.t.Errorf("agent request signature does not verify (%v)", err)
	}
	if fail != nil {
		return nil, fail
	}
	if rec == nil {
		for _, o := range opts {
			if tr, ok := o.(grpc.TrailerCallOption); ok {
				*tr.TrailerAddr = metadata.Pairs("parley-error-code", "not_found")
			}
		}
		return nil, status.Error(codes.NotFound, "agent not found")
	}
	return &pb.GetAgentResponse{Agent: rec}, nil
}

func TestLookupVerifiesAndCaches(t *testing.T) {
	w := newWorld(t)
	want := w.register(t, "ts-1")
	d := w.directory(nil)
	for i := 0; i < 3; i++ {
		got, err := d.Lookup(context.Background(), "ts-1")
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatal("another certificate returned")
		}
	}
	if n := w.reg.callCount(); n != 1 {
		t.Fatalf("%d registry calls, want 1 (cached)", n)
	}
	// Revoked meanwhile (by serial: a rotation, §17.8): the cached one is
	// dropped and the registry asked again, which now has a new one.
	w.revoked.Serials[hex.EncodeToString(want.GetSerial())] = true
	rotated := w.register(t, "ts-1")
	got, err := d.Lookup(context.Background(), "ts-1")
	if err != nil || !proto.Equal(got, rotated) {
		t.Fatalf("after the rotation: %v", err)
	}
	// Past the cache's lifetime it is read again.
	w.now = w.now.Add(DefaultCacheTTL)
	if _, err := d.Lookup(context.Background(), "ts-1"); err != nil {
		t.Fatal(err)
	}
	if n := w.reg.callCount(); n != 3 {
		t.Fatalf("%d registry calls, want 3", n)
	}
}

func TestLookupPermanentFailures(t *testing.T) {
	_, otherIssuer, _ := ed25519.GenerateKey(rand.Reader)
	cases := map[string]struct {
		setup func(*world)
		want  string // in the message
	}{
		"not registered": {func(*world) {}, `no agent "ts-x"`},
		"registry refuses the read": {func(w *world) {
			w.reg.fail = status.Error(codes.PermissionDenied, "signature")
		}, "refused to look"},
		"registry lists it revoked": {func(w *world) {
			c := w.register(t, "ts-x")
			w.reg.put(&pb.AgentRecord{AgentId: "ts-x", Status: pb.AgentStatus_AGENT_STATUS_REVOKED, Certificate: c, RevocationVersion: 4})
		}, "revoked"},
		"registry lists it expired": {func(w *world) {
			c := w.register(t, "ts-x")
			w.reg.put(&pb.AgentRecord{AgentId: "ts-x", Status: pb.AgentStatus_AGENT_STATUS_EXPIRED, Certificate: c})
		}, "expired"},
		"our revocation data revokes it": {func(w *world) {
			w.register(t, "ts-x")
			w.revoked.AgentIDs["ts-x"] = true
		}, "(revoked)"},
		"a certificate of another agent": {func(w *world) {
			c := w.register(t, "ts-y")
			w.reg.put(&pb.AgentRecord{AgentId: "ts-x", Status: pb.AgentStatus_AGENT_STATUS_ACTIVE, Certificate: c})
		}, "(identity_mismatch)"},
		"a record of another agent": {func(w *world) {
			c := w.register(t, "ts-y")
			w.reg.put(&pb.AgentRecord{AgentId: "ts-y", Certificate: c})
			w.reg.records["ts-x"] = w.reg.records["ts-y"]
		}, `with agent "ts-y"`},
		"an issuer not in the trust bundle": {func(w *world) {
			_, c := w.certify(t, "ts-x", otherIssuer, w.now.Add(-time.Hour), w.now.Add(time.Hour))
			w.reg.put(&pb.AgentRecord{AgentId: "ts-x", Certificate: c})
		}, "(unknown_issuer)"},
		"a forged issuer signature": {func(w *world) {
			c := w.register(t, "ts-x")
			c.Signature[0] ^= 1
		}, "(bad_certificate)"},
		"expired": {func(w *world) {
			_, c := w.certify(t, "ts-x", w.issuer, w.now.Add(-2*time.Hour), w.now.Add(-time.Hour))
			w.reg.put(&pb.AgentRecord{AgentId: "ts-x", Certificate: c})
		}, "(expired)"},
		"no certificate": {func(w *world) {
			w.reg.put(&pb.AgentRecord{AgentId: "ts-x"})
		}, "no certificate"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(w)
			d := w.directory(nil)
			_, err := d.Lookup(context.Background(), "ts-x")
			if parley.CodeOf(err) != CodePolicyDenied || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want policy_denied naming %q", err, tc.want)
			}
			if d.Cached() != 0 {
				t.Fatal("a refused certificate was cached")
			}
		})
	}
}

func TestLookupTransientFailures(t *testing.T) {
	cases := map[string]struct {
		setup func(*testing.T, *world)
		code  string
	}{
		"registry unavailable": {func(_ *testing.T, w *world) { w.reg.fail = status.Error(codes.Unavailable, "connection refused") }, "unavailable"},
		"registry rate limit":  {func(_ *testing.T, w *world) { w.reg.fail = status.Error(codes.ResourceExhausted, "slow down") }, "rate_limited"},
		"not a gRPC status":    {func(_ *testing.T, w *world) { w.reg.fail = errors.New("boom") }, "unavailable"},
		// The data, not the certificate, is the problem (staleData below).
		"our revocation data is stale": {func(t *testing.T, w *world) { w.register(t, "ts-x") }, parley.CodeRevocationStale},
		"not valid yet": {func(t *testing.T, w *world) {
			_, c := w.certify(t, "ts-x", w.issuer, w.now.Add(time.Hour), w.now.Add(2*time.Hour))
			w.reg.put(&pb.AgentRecord{AgentId: "ts-x", Certificate: c})
		}, parley.CodeNotYetValid},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(t, w)
			d := w.directory(func(c *Config) {
				if tc.code == parley.CodeRevocationStale {
					c.Revocations = staleData{}
				}
			})
			_, err := d.Lookup(context.Background(), "ts-x")
			if code := parley.CodeOf(err); code != tc.code {
				t.Fatalf("got %v, want code %s", err, tc.code)
			}
		})
	}
}

type staleData struct{}

func (staleData) Revoked(string, []byte, int64) (bool, error) {
	return false, errors.New("revocation list last signed 61000 ms ago")
}

func TestLookupBounds(t *testing.T) {
	w := newWorld(t)
	for _, id := range []string{"ts-1", "ts-2", "ts-3"} {
		w.register(t, id)
	}
	// One lookup per peer: concurrent callers share one registry call.
	gate := make(chan struct{})
	w.reg.gate = gate
	d := w.directory(func(c *Config) { c.MaxInFlight = 1; c.MaxCached = 2 })
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.Lookup(context.Background(), "ts-1")
			errs <- err
		}()
	}
	for w.reg.callCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	// A lookup of another peer beyond the bound fails at once, transient.
	if _, err := d.Lookup(context.Background(), "ts-2"); parley.CodeOf(err) != CodeUnavailable {
		t.Fatalf("lookup beyond MaxInFlight: %v", err)
	}
	// A caller that gives up does not end the shared call.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Lookup(ctx, "ts-1"); err == nil {
		t.Fatal("a cancelled caller got an answer")
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := w.reg.callCount(); n != 1 {
		t.Fatalf("%d registry calls for 5 concurrent lookups of one peer", n)
	}
	// At most MaxCached certificates: the least recently used goes.
	for _, id := range []string{"ts-2", "ts-1", "ts-3"} {
		if _, err := d.Lookup(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	if d.Cached() != 2 {
		t.Fatalf("%d cached, bound 2", d.Cached())
	}
	before := w.reg.callCount()
	if _, err := d.Lookup(context.Background(), "ts-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Lookup(context.Background(), "ts-2"); err != nil {
		t.Fatal(err)
	}
	if got := w.reg.callCount() - before; got != 1 {
		t.Fatalf("%d calls: ts-1 (recently used) should be cached, ts-2 (evicted) read again", got)
	}
}
