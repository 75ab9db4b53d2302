package vectors

import (
	"crypto/ed25519"
	"encoding/hex"
	"strconv"

	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// certificate returns the encoded certificate of the named vector certificate.
func (c *checker) certificate(name string) *pb.AgentCertificate {
	for _, v := range c.file.Certificates {
		if v.Name == name {
			b, err := hex.DecodeString(v.Encoded)
			if err != nil {
				return nil
			}
			cert, err := parley.DecodeCertificate(b)
			if err != nil {
				return nil
			}
			return cert
		}
	}
	return nil
}

func (c *checker) checkCertificates() {
	g := c.group("certificates")
	for _, v := range c.file.Certificates {
		g.run(v.Name, func(e *entry) {
			cert := &pb.AgentCertificate{
				Version: v.Version, AgentId: v.AgentID, AgentType: v.AgentType, Capabilities: v.Capabilities,
				ValidFromMs: v.ValidFromMs, ValidUntilMs: v.ValidUntilMs,
				Serial: e.hex("serial", v.Serial), IdentityPublicKey: e.hex("identity_public_key", v.IdentityPublicKey),
				IssuerKeyId: e.hex("issuer_key_id", v.IssuerKeyID), Signature: e.hex("signature", v.Signature),
			}
			tbs, err := parley.CertificateTBS(cert)
			if !e.check(err, "tbs") {
				return
			}
			e.eq("tbs (§3.2)", tbs, v.TBS)
			issuerName, issuer := c.keyByID(cert.IssuerKeyId)
			if issuer == nil {
				e.failf("issuer_key_id names no key of the file")
				return
			}
			e.eq("signature (re-signed by "+issuerName+")", ed25519.Sign(issuer, tbs), v.Signature)
			if !ed25519.Verify(issuer.Public().(ed25519.PublicKey), tbs, cert.Signature) {
				e.failf("issuer signature does not verify")
			}
			encoded, err := proto.Marshal(cert)
			if e.check(err, "encode") {
				e.eq("encoded", encoded, v.Encoded)
			}
			decoded, err := parley.DecodeCertificate(e.hex("encoded", v.Encoded))
			if e.check(err, "decode") && !proto.Equal(decoded, cert) {
				e.failf("encoded does not decode to the listed fields")
			}
		})
	}
	g.done("%d certificates: TBS layout, issuer signature, protobuf encoding", len(c.file.Certificates))
}

func (c *checker) checkCertificateChecks() {
	g := c.group("certificate_checks")
	for _, v := range c.file.CertificateChecks {
		g.run(v.Name, func(e *entry) {
			expected := ""
			if v.ExpectedAgentID != nil {
				expected = *v.ExpectedAgentID
			}
			cert, err := parley.DecodeCertificate(e.hex("certificate", v.Certificate))
			if err == nil {
				err = c.trust.VerifyCertificateWith(cert, v.AtMs, expected, revocationSet(v.Revoked))
			}
			e.code(err, v.Expect)
		})
	}
	g.done("%d §3.3 verdicts", len(c.file.CertificateChecks))
}

func (c *checker) checkDisclosures() {
	g := c.group("disclosures")
	for _, v := range c.file.Disclosures {
		g.run(v.Name, func(e *entry) {
			env := &pb.SecureMessage{}
			if err := proto.Unmarshal(e.hex("envelope", v.Envelope), env); err != nil {
				e.failf("envelope does not decode")
				return
			}
			cert, err := parley.DecodeCertificate(e.hex("certificate", v.Certificate))
			if err == nil {
				_, err = parley.VerifyDisclosure(parley.Disclosure{
					Envelope: env, Certificate: cert, Payload: e.hex("payload", v.Payload), Salt: e.hex("salt", v.Salt),
				}, c.trust)
			}
			e.code(err, v.Expect)
		})
	}
	g.done("%d §6.5 proofs of origin", len(c.file.Disclosures))
}

func (c *checker) checkReceipts() {
	g := c.group("receipts")
	for _, v := range c.file.Receipts {
		g.run(v.Name, func(e *entry) {
			signer, ok := c.keys[v.Signer]
			if !ok {
				e.failf("signer %q is not a key of the file", v.Signer)
				return
			}
			r := &pb.DeliveryReceipt{
				Version: v.Version, MessageHash: e.hex("message_hash", v.MessageHash),
				SenderId: v.SenderID, RecipientId: v.RecipientID, ReceivedAtMs: v.ReceivedAtMs,
			}
			layout, err := parley.ReceiptLayout(r)
			if !e.check(err, "layout") {
				return
			}
			e.eq("layout (§10.5)", layout, v.Layout)
			digest, _ := parley.ReceiptDigest(r)
			e.eq("digest (§10.4)", digest, v.Digest)
			signed, err := parley.SignReceipt(signer, r.MessageHash, r.SenderId, r.RecipientId, r.ReceivedAtMs)
			if !e.check(err, "sign") {
				return
			}
			e.eq("signature", signed.Signature, v.Signature)
			encoded, _ := proto.Marshal(signed)
			e.eq("encoded", encoded, v.Encoded)
			// Verify the receipt as its addressee would: decode, then §10.5
			// against the signer's public key.
			var got pb.DeliveryReceipt
			if err := proto.Unmarshal(e.hex("encoded", v.Encoded), &got); err != nil {
				e.failf("encoded does not decode")
				return
			}
			e.check(parley.VerifyReceipt(&got, r.MessageHash, v.SenderID, v.RecipientID, signer.Public().(ed25519.PublicKey)), "verify")
			if c.messageHashKnown(v.MessageHash) == "" {
				e.failf("message_hash names no message of the file")
			}
		})
	}
	g.done("%d receipts: layout, digest, signature, encoding, verification", len(c.file.Receipts))
}

func (c *checker) messageHashKnown(h string) string {
	for _, m := range c.file.Messages {
		if m.MessageHash == h {
			return m.Name
		}
	}
	return ""
}

func (c *checker) checkGatewayLayouts() {
	g := c.group("gateway_auth")
	for i, v := range c.file.GatewayAuth {
		g.run(itoa(i), func(e *entry) {
			layout, err := parley.GatewayAuthLayout(v.GatewayID, e.hex("nonce", v.Nonce), v.AgentID, e.hex("serial", v.Serial))
			if !e.check(err, "layout") {
				return
			}
			e.eq("layout (§10.2)", layout, v.Layout)
			c.checkSignature(e, v.Signer, layout, v.Signature)
		})
	}
	g.done("%d §10.2 proofs", len(c.file.GatewayAuth))

	g = c.group("gateway_send")
	for i, v := range c.file.GatewaySend {
		g.run(itoa(i), func(e *entry) {
			layout, err := parley.GatewaySendLayout(v.GatewayID, v.TimestampMs, e.hex("nonce", v.Nonce), e.hex("item_digest", v.ItemDigest))
			if !e.check(err, "layout") {
				return
			}
			e.eq("layout (§10.6)", layout, v.Layout)
			c.checkSignature(e, v.Signer, layout, v.Signature)
		})
	}
	g.done("%d §10.6 proofs", len(c.file.GatewaySend))
}

// checkSignature re-signs msg with the named key, compares, and verifies.
func (c *checker) checkSignature(e *entry, signer string, msg []byte, sigHex string) {
	key, ok := c.keys[signer]
	if !ok {
		e.failf("signer %q is not a key of the file", signer)
		return
	}
	e.eq("signature", ed25519.Sign(key, msg), sigHex)
	if !ed25519.Verify(key.Public().(ed25519.PublicKey), msg, e.hex("signature", sigHex)) {
		e.failf("signature does not verify")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
