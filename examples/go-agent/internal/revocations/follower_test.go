package revocations

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// The three-entry list and signed head of the repository's conformance
// vectors (§15.6), served page by page by a registry stand-in; the end-to-end
// test (apps/gateway/test/load/go-agent.spec.ts) follows a real registry.
const vectorFile = "../../../../docs/conformance/parley-v1.json"

type vectorList struct {
	NowMs       int64           `json:"now_ms"`
	TrustBundle json.RawMessage `json:"trust_bundle"`
	Revocations struct {
		RegistryID string `json:"registry_id"`
		Entries    []struct {
			Version     uint64 `json:"version"`
			Kind        string `json:"kind"`
			AgentID     string `json:"agent_id"`
			Serial      string `json:"serial"`
			Reason      int32  `json:"reason"`
			ReasonText  string `json:"reason_text"`
			RevokedAtMs int64  `json:"revoked_at_ms"`
			EntryHash   string `json:"entry_hash"`
		} `json:"entries"`
		Head struct {
			Version     uint64 `json:"version"`
			HeadHash    string `json:"head_hash"`
			IssuedAtMs  int64  `json:"issued_at_ms"`
			IssuerKeyID string `json:"issuer_key_id"`
			Signature   string `json:"signature"`
		} `json:"head"`
	} `json:"revocations"`
}

// listServer answers GetRevocationList from fixed pages.
type listServer struct {
	pb.RegistryServiceClient
	pages map[uint64]*pb.GetRevocationListResponse
	calls int
}

func (s *listServer) GetRevocationList(_ context.Context, in *pb.GetRevocationListRequest, _ ...grpc.CallOption) (*pb.GetRevocationListResponse, error) {
	s.calls++
	if p, ok := s.pages[in.GetAfterVersion()]; ok {
		return p, nil
	}
	return nil, parley.Errorf(parley.CodeMalformed, "no page after %d", in.GetAfterVersion())
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func load(t *testing.T) (*vectorList, *parley.TrustBundle, []*pb.RevocationListEntry, *pb.SignedRevocationHead) {
	t.Helper()
	data, err := os.ReadFile(vectorFile)
	if err != nil {
		t.Skip("no vector file:", err)
	}
	var v vectorList
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	trust, err := parley.ParseTrustBundle(v.TrustBundle)
	if err != nil {
		t.Fatal(err)
	}
	var entries []*pb.RevocationListEntry
	for _, e := range v.Revocations.Entries {
		pe := &pb.RevocationListEntry{
			Version: e.Version, Reason: pb.RevocationReason(e.Reason), ReasonText: e.ReasonText,
			RevokedAtMs: e.RevokedAtMs, EntryHash: mustHex(t, e.EntryHash),
		}
		if e.Kind == "agent" {
			pe.Subject = &pb.RevocationListEntry_AgentId{AgentId: e.AgentID}
		} else {
			pe.Subject = &pb.RevocationListEntry_Serial{Serial: mustHex(t, e.Serial)}
		}
		entries = append(entries, pe)
	}
	h := v.Revocations.Head
	head := &pb.SignedRevocationHead{
		Version: h.Version, HeadHash: mustHex(t, h.HeadHash), IssuedAtMs: h.IssuedAtMs,
		RegistryId: mustHex(t, v.Revocations.RegistryID), IssuerKeyId: mustHex(t, h.IssuerKeyID), Signature: mustHex(t, h.Signature),
	}
	return &v, trust, entries, head
}

func follower(v *vectorList, trust *parley.TrustBundle, srv *listServer, registryID []byte) *Follower {
	f := New(srv, registryID, trust, DefaultMaxAgeMs)
	f.now = func() int64 { return v.NowMs }
	return f
}

func TestFollowsTheVectorList(t *testing.T) {
	v, trust, entries, head := load(t)
	srv := &listServer{pages: map[uint64]*pb.GetRevocationListResponse{0: {Entries: entries, Head: head, CurrentVersion: 3}}}
	f := follower(v, trust, srv, head.GetRegistryId())
	if _, err := f.Revoked("mallory", nil, v.NowMs); err == nil {
		t.Fatal("a follower that never synced must fail closed")
	}
	if err := f.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.Version() != 3 {
		t.Fatalf("version %d", f.Version())
	}
	for _, c := range []struct {
		agent  string
		serial string
		want   bool
	}{
		{"mallory", "", true},
		{"retired-worker", "", true},
		{"alice", "", false},
		{"bob", v.Revocations.Entries[1].Serial, true},
	} {
		got, err := f.Revoked(c.agent, mustHex(t, c.serial), v.NowMs)
		if err != nil || got != c.want {
			t.Fatalf("%s %s: revoked=%v err=%v, want %v", c.agent, c.serial, got, err, c.want)
		}
	}
	// Freshness is the signed issued_at_ms: stale 60 s after it.
	if _, err := f.Revoked("alice", nil, head.GetIssuedAtMs()+DefaultMaxAgeMs+1); err == nil {
		t.Fatal("stale data must fail closed")
	}
}

func TestRefusesTamperedBatches(t *testing.T) {
	v, trust, entries, head := load(t)
	clone := func() ([]*pb.RevocationListEntry, *pb.SignedRevocationHead) {
		var es []*pb.RevocationListEntry
		for _, e := range entries {
			es = append(es, proto.Clone(e).(*pb.RevocationListEntry))
		}
		return es, proto.Clone(head).(*pb.SignedRevocationHead)
	}
	cases := map[string]func(es []*pb.RevocationListEntry, h *pb.SignedRevocationHead) ([]*pb.RevocationListEntry, *pb.SignedRevocationHead, []byte){
		"gap": func(es []*pb.RevocationListEntry, h *pb.SignedRevocationHead) ([]*pb.RevocationListEntry, *pb.SignedRevocationHead, []byte) {
			return es[1:], h, h.RegistryId
		},
		"reason text changed": func(es []*pb.RevocationListEntry, h *pb.SignedRevocationHead) ([]*pb.RevocationListEntry, *pb.SignedRevocationHead, []byte) {
			es[0].ReasonText = "nothing happened"
			return es, h, h.RegistryId
		},
		"entry dropped from the end": func(es []*pb.RevocationListEntry, h *pb.SignedRevocationHead) ([]*pb.RevocationListEntry, *pb.SignedRevocationHead, []byte) {
			return es[:2], h, h.RegistryId
		},
		"head signature": func(es []*pb.RevocationListEntry, h *pb.SignedRevocationHead) ([]*pb.RevocationListEntry, *pb.SignedRevocationHead, []byte) {
			h.Signature[0] ^= 1
			return es, h, h.RegistryId
		},
		"issued_at changed": func(es []*pb.RevocationListEntry, h *pb.SignedRevocationHead) ([]*pb.RevocationListEntry, *pb.SignedRevocationHead, []byte) {
			h.IssuedAtMs += 3_600_000
			return es, h, h.RegistryId
		},
		"another registry": func(es []*pb.RevocationListEntry, h *pb.SignedRevocationHead) ([]*pb.RevocationListEntry, *pb.SignedRevocationHead, []byte) {
			return es, h, make([]byte, 16)
		},
		"unknown issuer key": func(es []*pb.RevocationListEntry, h *pb.SignedRevocationHead) ([]*pb.RevocationListEntry, *pb.SignedRevocationHead, []byte) {
			h.IssuerKeyId = make([]byte, 16)
			return es, h, h.RegistryId
		},
	}
	for name, mutate := range cases {
		es, h := clone()
		es, h, registryID := mutate(es, h)
		srv := &listServer{pages: map[uint64]*pb.GetRevocationListResponse{0: {Entries: es, Head: h, CurrentVersion: 3}}}
		f := follower(v, trust, srv, registryID)
		if err := f.Sync(context.Background()); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := f.Revoked("alice", nil, v.NowMs); err == nil {
			t.Errorf("%s: a refused batch must leave the copy unsynced (fail closed)", name)
		}
	}
}

func TestPagesUntilCurrent(t *testing.T) {
	v, trust, entries, head := load(t)
	// One page reaches the current version: one call. A later sync is a
	// heartbeat (no entries, the same head).
	srv := &listServer{pages: map[uint64]*pb.GetRevocationListResponse{
		0: {Entries: entries, Head: head, CurrentVersion: 3},
		3: {Head: head, CurrentVersion: 3},
	}}
	f := follower(v, trust, srv, head.GetRegistryId())
	if err := f.Sync(context.Background()); err != nil || srv.calls != 1 {
		t.Fatalf("sync: %v after %d calls", err, srv.calls)
	}
	// A heartbeat (no entries, same head) keeps the copy and refreshes nothing older.
	if err := f.Sync(context.Background()); err != nil || f.Version() != 3 || srv.calls != 2 {
		t.Fatalf("heartbeat: %v, version %d, %d calls", err, f.Version(), srv.calls)
	}
}
