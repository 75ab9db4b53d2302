package vectors

import (
	"crypto/ed25519"

	"parley/go-agent/internal/parley"
)

type revocationEntryVector struct {
	Version      uint64 `json:"version"`
	Kind         string `json:"kind"`
	KindValue    uint8  `json:"kind_value"`
	AgentID      string `json:"agent_id"`
	Serial       string `json:"serial"`
	Reason       uint32 `json:"reason"`
	ReasonText   string `json:"reason_text"`
	RevokedAtMs  int64  `json:"revoked_at_ms"`
	PreviousHash string `json:"previous_hash"`
	HashInput    string `json:"hash_input"`
	EntryHash    string `json:"entry_hash"`
}

type revocationsVector struct {
	RegistryID string                  `json:"registry_id"`
	Issuer     string                  `json:"issuer"`
	Entries    []revocationEntryVector `json:"entries"`
	Head       struct {
		Version     uint64 `json:"version"`
		HeadHash    string `json:"head_hash"`
		IssuedAtMs  int64  `json:"issued_at_ms"`
		IssuerKeyID string `json:"issuer_key_id"`
		Layout      string `json:"layout"`
		Signature   string `json:"signature"`
	} `json:"head"`
}

// checkRevocations rebuilds the §15.6 chain from its first entry and checks
// the issuer's signed head, as a gateway following a registry does.
func (c *checker) checkRevocations() {
	r := c.file.Revocations
	g := c.group("revocations")
	g.run("", func(e *entry) {
		registryID := e.hex("registry_id", r.RegistryID)
		previous := make([]byte, 32) // entry_hash(0)
		for i, v := range r.Entries {
			if v.Version != uint64(i+1) {
				e.failf("entry %d: versions must run 1, 2, … without gap", i)
				return
			}
			kind := map[string]uint8{"agent": parley.RevocationKindAgent, "serial": parley.RevocationKindSerial}[v.Kind]
			if kind == 0 || kind != v.KindValue {
				e.failf("entry %d: kind %q / %d", v.Version, v.Kind, v.KindValue)
			}
			e.eq("previous_hash", previous, v.PreviousHash)
			entry := parley.RevocationEntry{
				Version: v.Version, Kind: kind, AgentID: v.AgentID, Serial: e.hex("serial", v.Serial),
				Reason: v.Reason, ReasonText: v.ReasonText, RevokedAtMs: v.RevokedAtMs,
			}
			input, err := parley.RevocationEntryHashInput(registryID, previous, entry)
			if !e.check(err, "entry layout") {
				return
			}
			e.eq("hash_input (§15.6)", input, v.HashInput)
			previous = parley.Hash(input)
			e.eq("entry_hash", previous, v.EntryHash)
		}
		h := r.Head
		if h.Version != uint64(len(r.Entries)) {
			e.failf("head version %d is not the last entry's", h.Version)
		}
		e.eq("head_hash", previous, h.HeadHash)
		layout, err := parley.RevocationHeadLayout(registryID, h.Version, e.hex("head_hash", h.HeadHash), h.IssuedAtMs, e.hex("issuer_key_id", h.IssuerKeyID))
		if !e.check(err, "head layout") {
			return
		}
		e.eq("head layout (§15.6)", layout, h.Layout)
		c.checkSignature(e, r.Issuer, layout, h.Signature)
		if issuer, ok := c.keys[r.Issuer]; ok {
			id, _ := parley.KeyID(issuer.Public().(ed25519.PublicKey))
			e.eq("issuer_key_id (§3.1)", id, h.IssuerKeyID)
		}
	})
	g.done("%d chained entries, signed head", len(r.Entries))
}
