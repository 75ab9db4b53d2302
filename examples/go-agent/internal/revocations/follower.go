// Package revocations keeps an agent's own copy of its registry's signed
// revocation list (PROTOCOL.md §15.6), which the agent checks at every
// handshake and every message it opens (§8.4). It pages GetRevocationList
// from the last verified version and accepts a batch only if the versions
// continue without gap, every entry hash recomputes from its predecessor, and
// the head names this registry, matches the last entry and is signed by an
// issuer key of the agent's pinned trust bundle. Freshness is the largest
// signed issued_at_ms accepted, never the time a batch arrived (§15.6).
package revocations

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// DefaultMaxAgeMs is the freshness bound of §8.4: 60 s from the signed head.
const DefaultMaxAgeMs = 60_000

// clockSkewMs caps how far in the future a head's issued_at_ms may count (§15.6).
const clockSkewMs = 60_000

// Follower is a verified copy of one registry's revocation list. It
// implements parley.RevocationChecker; safe for concurrent use.
type Follower struct {
	client     pb.RegistryServiceClient
	registryID []byte
	trust      *parley.TrustBundle
	maxAgeMs   int64
	now        func() int64

	mu       sync.Mutex
	version  uint64
	headHash []byte
	issuedAt int64
	synced   bool
	agents   map[string]bool
	serials  map[string]bool
}

// New returns a follower that has not synced yet (every check is stale
// until the first Sync succeeds: fail closed).
func New(client pb.RegistryServiceClient, registryID []byte, trust *parley.TrustBundle, maxAgeMs int64) *Follower {
	if maxAgeMs <= 0 {
		maxAgeMs = DefaultMaxAgeMs
	}
	return &Follower{
		client: client, registryID: append([]byte(nil), registryID...), trust: trust, maxAgeMs: maxAgeMs,
		now: func() int64 { return time.Now().UnixMilli() }, headHash: make([]byte, 32),
		agents: map[string]bool{}, serials: map[string]bool{},
	}
}

// Revoked implements parley.RevocationChecker: an error (stale or never
// synced) makes the caller refuse with revocation_stale.
func (f *Follower) Revoked(agentID string, serial []byte, nowMs int64) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.synced {
		return false, fmt.Errorf("revocation list never synced")
	}
	if nowMs-f.issuedAt > f.maxAgeMs {
		return false, fmt.Errorf("revocation list last signed %d ms ago (bound %d ms)", nowMs-f.issuedAt, f.maxAgeMs)
	}
	return f.agents[agentID] || f.serials[hex.EncodeToString(serial)], nil
}

// Version is the list version of the copy.
func (f *Follower) Version() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.version
}

// Sync fetches and verifies every entry after the copy's version, page by
// page, until the head reaches the list's current version.
func (f *Follower) Sync(ctx context.Context) error {
	for {
		f.mu.Lock()
		after := f.version
		f.mu.Unlock()
		resp, err := f.client.GetRevocationList(ctx, &pb.GetRevocationListRequest{AfterVersion: after})
		if err != nil {
			return err
		}
		if err := f.apply(resp); err != nil {
			return err
		}
		if resp.GetHead().GetVersion() >= resp.GetCurrentVersion() {
			return nil
		}
	}
}

// apply verifies one batch against the copy and adopts it, all or nothing.
func (f *Follower) apply(resp *pb.GetRevocationListResponse) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	version, hash := f.version, f.headHash
	agents, serials := []string{}, []string{}
	for _, e := range resp.GetEntries() {
		if e.GetVersion() != version+1 {
			return parley.Errorf(parley.CodeRevocationStale, "revocation entry %d after version %d (a gap)", e.GetVersion(), version)
		}
		entry := parley.RevocationEntry{
			Version: e.GetVersion(), Reason: uint32(e.GetReason()), ReasonText: e.GetReasonText(), RevokedAtMs: e.GetRevokedAtMs(),
		}
		switch s := e.GetSubject().(type) {
		case *pb.RevocationListEntry_AgentId:
			entry.Kind, entry.AgentID = parley.RevocationKindAgent, s.AgentId
			agents = append(agents, s.AgentId)
		case *pb.RevocationListEntry_Serial:
			entry.Kind, entry.Serial = parley.RevocationKindSerial, s.Serial
			serials = append(serials, hex.EncodeToString(s.Serial))
		default:
			return parley.Errorf(parley.CodeMalformed, "revocation entry %d has no subject", e.GetVersion())
		}
		next, err := parley.RevocationEntryHash(f.registryID, hash, entry)
		if err != nil {
			return parley.Errorf(parley.CodeMalformed, "revocation entry %d: %v", e.GetVersion(), err)
		}
		if !bytes.Equal(next, e.GetEntryHash()) {
			return parley.Errorf(parley.CodeBadSignature, "revocation entry %d: hash does not chain", e.GetVersion())
		}
		version, hash = e.GetVersion(), next
	}
	head := resp.GetHead()
	if head.GetVersion() != version || !bytes.Equal(head.GetHeadHash(), hash) || !bytes.Equal(head.GetRegistryId(), f.registryID) {
		return parley.Errorf(parley.CodeBadSignature, "revocation head does not match the entries or this registry")
	}
	now := f.now()
	issuer, ok := f.trust.Issuer(head.GetIssuerKeyId())
	if !ok || (issuer.HasNotAfter && now >= issuer.NotAfterMs) {
		return parley.Errorf(parley.CodeUnknownIssuer, "revocation head signed by an issuer key the trust bundle does not hold")
	}
	layout, err := parley.RevocationHeadLayout(f.registryID, head.GetVersion(), head.GetHeadHash(), head.GetIssuedAtMs(), head.GetIssuerKeyId())
	if err != nil || !ed25519.Verify(issuer.PublicKey, layout, head.GetSignature()) {
		return parley.Errorf(parley.CodeBadSignature, "revocation head signature does not verify")
	}
	for _, a := range agents {
		f.agents[a] = true
	}
	for _, s := range serials {
		f.serials[s] = true
	}
	f.version, f.headHash, f.synced = version, hash, true
	issued := head.GetIssuedAtMs()
	if issued > now+clockSkewMs {
		issued = now + clockSkewMs
	}
	if issued > f.issuedAt {
		f.issuedAt = issued
	}
	return nil
}

// Run syncs every interval until ctx ends, reporting failures to onError
// (the copy then ages until a sync succeeds, and checks fail closed).
func (f *Follower) Run(ctx context.Context, interval time.Duration, onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := f.Sync(ctx); err != nil && ctx.Err() == nil {
				onError(err)
			}
		}
	}
}
