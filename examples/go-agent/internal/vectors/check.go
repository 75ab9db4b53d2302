package vectors

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"parley/go-agent/internal/parley"
)

// Result counts the checks run.
type Result struct {
	Passed, Failed int
}

// checker prints one line per group (or per failing entry) and counts.
type checker struct {
	out    io.Writer
	result Result
	file   *vectorFile
	keys   map[string]ed25519.PrivateKey // by key name
	trust  *parley.TrustBundle
}

// entry collects the failures of one vector entry.
type entry struct {
	errs []string
}

func (e *entry) failf(format string, args ...any) {
	e.errs = append(e.errs, fmt.Sprintf(format, args...))
}

// hex decodes a vector byte string, recording a failure on bad hex.
func (e *entry) hex(name, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		e.failf("%s: bad hex", name)
	}
	return b
}

// eq compares a recomputed byte string with the vector's hex.
func (e *entry) eq(name string, got []byte, wantHex string) {
	if hex.EncodeToString(got) != wantHex {
		e.failf("%s mismatch", name)
	}
}

// code compares an outcome with an expected "ok" or §11 code.
func (e *entry) code(err error, expect string) {
	got := "ok"
	if err != nil {
		got = parley.CodeOf(err)
		if got == "" {
			got = "error(" + err.Error() + ")"
		}
	}
	if got != expect {
		if err != nil {
			e.failf("expected %s, got %s (%v)", expect, got, err)
		} else {
			e.failf("expected %s, got ok", expect)
		}
	}
}

func (e *entry) check(err error, what string) bool {
	if err != nil {
		e.failf("%s: %v", what, err)
		return false
	}
	return true
}

// group runs the entries of one group; each entry is one check.
type group struct {
	c       *checker
	name    string
	passed  int
	failed  int
	details string
}

func (c *checker) group(name string) *group { return &group{c: c, name: name} }

// run checks one entry of the group.
func (g *group) run(entryName string, fn func(e *entry)) {
	e := &entry{}
	func() {
		defer func() {
			if r := recover(); r != nil {
				e.failf("panic: %v", r)
			}
		}()
		fn(e)
	}()
	if len(e.errs) == 0 {
		g.passed++
		return
	}
	g.failed++
	label := g.name
	if entryName != "" {
		label += "/" + entryName
	}
	fmt.Fprintf(g.c.out, "FAIL %s: %s\n", label, strings.Join(e.errs, "; "))
}

// done prints the group line and adds to the totals.
func (g *group) done(format string, args ...any) {
	g.c.result.Passed += g.passed
	g.c.result.Failed += g.failed
	detail := fmt.Sprintf(format, args...)
	switch {
	case g.failed == 0 && g.passed == 0:
		g.c.result.Failed++
		fmt.Fprintf(g.c.out, "FAIL %s: no entries\n", g.name)
	case g.failed == 0:
		fmt.Fprintf(g.c.out, "ok   %s (%s)\n", g.name, detail)
	default:
		fmt.Fprintf(g.c.out, "FAIL %s (%d of %d failed)\n", g.name, g.failed, g.failed+g.passed)
	}
}

// vectorFile holds the decoded groups.
type vectorFile struct {
	NowMs             int64
	Keys              map[string]keyVector
	TrustBundle       json.RawMessage
	Certificates      []certificateVector
	CertificateChecks []certificateCheck
	Handshake         handshakeVector
	Messages          []messageVector
	MessageRejections []rejectionVector
	Disclosures       []disclosureVector
	Receipts          []receiptVector
	GatewayAuth       []gatewayAuthVector
	GatewaySend       []gatewaySendVector
	Audit             auditVector
	Revocations       revocationsVector
	Registry          registryVector
	TrustBundleChecks []trustBundleCheck
	HandshakeRejects  []handshakeRejection
	SessionRejects    []sessionRejectVector
	raw               map[string]json.RawMessage
}

// targets maps every top-level key to its decoding target: first the metadata
// keys of PROTOCOL.md §16, then the vector groups. A key not listed here fails
// the run, so a new vector group is never skipped silently.
func (f *vectorFile) targets() map[string]any {
	return map[string]any{
		// metadata
		"format": new(string), "version": new(int), "protocol": new(string),
		"generated_by": new(string), "notes": new([]string), "now_ms": &f.NowMs,
		// groups
		"trust_bundle_checks": &f.TrustBundleChecks, "handshake_rejections": &f.HandshakeRejects,
		"session_rejects": &f.SessionRejects,
		"keys":            &f.Keys, "trust_bundle": &f.TrustBundle, "certificates": &f.Certificates,
		"certificate_checks": &f.CertificateChecks, "handshake": &f.Handshake,
		"messages": &f.Messages, "message_rejections": &f.MessageRejections,
		"disclosures": &f.Disclosures, "receipts": &f.Receipts,
		"gateway_auth": &f.GatewayAuth, "gateway_send": &f.GatewaySend, "audit": &f.Audit,
		"revocations": &f.Revocations, "registry": &f.Registry,
	}
}

// CheckFile runs every check of the vector file at path, printing to out.
func CheckFile(path string, out io.Writer) (Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Result{}, err
	}
	c := &checker{out: out, file: &vectorFile{}, keys: map[string]ed25519.PrivateKey{}}
	if !c.decode(data) {
		return c.result, nil
	}
	c.checkKeys()
	c.checkTrustBundle()
	c.checkCertificates()
	c.checkCertificateChecks()
	c.checkTrustBundleChecks()
	c.checkHandshake()
	c.checkHandshakeRejections()
	c.checkMessages()
	c.checkRejections()
	c.checkDisclosures()
	c.checkReceipts()
	c.checkSessionRejects()
	c.checkGatewayLayouts()
	c.checkAudit()
	c.checkRevocations()
	c.checkRegistry()
	return c.result, nil
}

func (c *checker) decode(data []byte) bool {
	f := c.file
	g := c.group("file")
	ok := true
	g.run("", func(e *entry) {
		if err := json.Unmarshal(data, &f.raw); err != nil {
			e.failf("not a JSON object: %v", err)
			ok = false
			return
		}
		targets := f.targets()
		var unknown []string
		for k := range f.raw {
			if _, known := targets[k]; !known {
				unknown = append(unknown, k)
			}
		}
		sort.Strings(unknown)
		if len(unknown) > 0 {
			e.failf("unknown top-level keys (not checked by this implementation): %s", strings.Join(unknown, ", "))
		}
		keys := make([]string, 0, len(targets))
		for k := range targets {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t := targets[k]
			raw, present := f.raw[k]
			if !present {
				e.failf("missing key %q", k)
				ok = false
				continue
			}
			if err := json.Unmarshal(raw, t); err != nil {
				e.failf("%s: %v", k, err)
				ok = false
			}
		}
		if !ok {
			return
		}
		if *targets["format"].(*string) != "parley-conformance-vectors" || *targets["version"].(*int) != 1 ||
			*targets["protocol"].(*string) != "parley/v1" {
			e.failf("not a parley/v1 conformance vector file (format, version, protocol)")
			ok = false
		}
	})
	g.done("parley/v1, now_ms %d", f.NowMs)
	return ok
}

func (c *checker) checkKeys() {
	g := c.group("keys")
	names := make([]string, 0, len(c.file.Keys))
	for n := range c.file.Keys {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		k := c.file.Keys[name]
		g.run(name, func(e *entry) {
			seed := e.hex("ed25519_seed", k.Seed)
			if len(seed) != ed25519.SeedSize {
				e.failf("seed must be 32 bytes")
				return
			}
			priv := ed25519.NewKeyFromSeed(seed)
			pub := priv.Public().(ed25519.PublicKey)
			e.eq("ed25519_public_key", pub, k.PublicKey)
			id, err := parley.KeyID(pub)
			if e.check(err, "key_id") {
				e.eq("key_id (§3.1)", id, k.KeyID)
			}
			c.keys[name] = priv
		})
	}
	g.done("%d keys: public keys, §3.1 key ids", len(names))
}

// keyByID finds a named key by its §3.1 key id.
func (c *checker) keyByID(id []byte) (string, ed25519.PrivateKey) {
	for name, k := range c.keys {
		kid, _ := parley.KeyID(k.Public().(ed25519.PublicKey))
		if bytes.Equal(kid, id) {
			return name, k
		}
	}
	return "", nil
}

func (c *checker) checkTrustBundle() {
	g := c.group("trust_bundle")
	g.run("", func(e *entry) {
		tb, err := parley.ParseTrustBundle(c.file.TrustBundle)
		if e.check(err, "parse") {
			c.trust = tb
		}
	})
	g.done("parsed, key ids match their keys")
	if c.trust == nil {
		c.trust, _ = parley.NewTrustBundle(nil)
	}
}
