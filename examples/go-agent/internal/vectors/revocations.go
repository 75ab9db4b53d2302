package vectors

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"strconv"

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

type registryVector struct {
	RegistryID   string `json:"registry_id"`
	Registration []struct {
		AgentID           string `json:"agent_id"`
		Challenge         string `json:"challenge"`
		IdentityPublicKey string `json:"identity_public_key"`
		Layout            string `json:"layout"`
		Signature         string `json:"signature"`
		Signer            string `json:"signer"`
	} `json:"registration"`
	Rotation []struct {
		AgentID                string `json:"agent_id"`
		Challenge              string `json:"challenge"`
		OldPublicKey           string `json:"old_public_key"`
		NewPublicKey           string `json:"new_public_key"`
		AuthorisationLayout    string `json:"authorisation_layout"`
		AuthorisationSignature string `json:"authorisation_signature"`
		AuthorisationSigner    string `json:"authorisation_signer"`
		ProofLayout            string `json:"proof_layout"`
		ProofSignature         string `json:"proof_signature"`
		ProofSigner            string `json:"proof_signer"`
	} `json:"rotation"`
	OperatorRequests []struct {
		Path          string            `json:"path"`
		Request       string            `json:"request"`
		RequestDigest string            `json:"request_digest"`
		TimestampMs   int64             `json:"timestamp_ms"`
		Nonce         string            `json:"nonce"`
		OperatorKeyID string            `json:"operator_key_id"`
		Layout        string            `json:"layout"`
		Metadata      map[string]string `json:"metadata"`
		Signer        string            `json:"signer"`
	} `json:"operator_requests"`
}

// checkRegistry rebuilds the §15.3–§15.5 layouts and checks their signatures.
func (c *checker) checkRegistry() {
	r := c.file.Registry
	g := c.group("registry")
	g.run("", func(e *entry) {
		registryID := e.hex("registry_id", r.RegistryID)
		for _, v := range r.Registration {
			layout, err := parley.RegistrationProofLayout(registryID, e.hex("challenge", v.Challenge), v.AgentID, e.hex("identity_public_key", v.IdentityPublicKey))
			if e.check(err, "registration layout") {
				e.eq("registration layout (§15.4)", layout, v.Layout)
				c.checkSignature(e, v.Signer, layout, v.Signature)
			}
		}
		for _, v := range r.Rotation {
			args := func(domain string) ([]byte, error) {
				return parley.RotationLayout(domain, registryID, e.hex("challenge", v.Challenge), v.AgentID, e.hex("old_public_key", v.OldPublicKey), e.hex("new_public_key", v.NewPublicKey))
			}
			auth, err1 := args("parley/v1/registry-rotate-key")
			proof, err2 := args("parley/v1/registry-rotate-key-proof")
			if e.check(err1, "rotation layout") && e.check(err2, "rotation proof layout") {
				e.eq("rotation authorisation layout (§15.5)", auth, v.AuthorisationLayout)
				e.eq("rotation proof layout (§15.5)", proof, v.ProofLayout)
				c.checkSignature(e, v.AuthorisationSigner, auth, v.AuthorisationSignature)
				c.checkSignature(e, v.ProofSigner, proof, v.ProofSignature)
			}
		}
		for _, v := range r.OperatorRequests {
			request := e.hex("request", v.Request)
			e.eq("request digest", parley.Hash(request), v.RequestDigest)
			layout, err := parley.OperatorRequestLayout(registryID, v.Path, request, v.TimestampMs, e.hex("nonce", v.Nonce), e.hex("operator_key_id", v.OperatorKeyID))
			if !e.check(err, "operator request layout") {
				continue
			}
			e.eq("operator request layout (§15.3)", layout, v.Layout)
			// The four metadata entries, as a registry parses them.
			md := v.Metadata
			if md["parley-operator-key-id"] != v.OperatorKeyID || md["parley-operator-nonce"] != v.Nonce ||
				md["parley-operator-timestamp-ms"] != strconv.FormatInt(v.TimestampMs, 10) {
				e.failf("operator metadata does not carry the request's key id, nonce and timestamp")
			}
			sig, err := base64.RawURLEncoding.DecodeString(md["parley-operator-signature"])
			if err != nil {
				e.failf("parley-operator-signature is not unpadded base64url")
				continue
			}
			c.checkSignature(e, v.Signer, layout, hex.EncodeToString(sig))
		}
	})
	g.done("%d registration, %d rotation, %d operator request proofs", len(r.Registration), len(r.Rotation), len(r.OperatorRequests))
}
