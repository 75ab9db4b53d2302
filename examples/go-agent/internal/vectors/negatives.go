package vectors

import (
	"bytes"
	"crypto/ed25519"

	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// checkTrustBundleChecks parses every trust-bundle JSON text (§3.3) and, for
// those that parse, checks the certificate "alice" under it at now_ms.
func (c *checker) checkTrustBundleChecks() {
	g := c.group("trust_bundle_checks")
	for _, v := range c.file.TrustBundleChecks {
		g.run(v.Name, func(e *entry) {
			tb, err := parley.ParseTrustBundle([]byte(v.JSON))
			e.code(err, v.Expect)
			switch {
			case err != nil && v.CertificateExpect != nil:
				e.failf("certificate_expect given for a bundle that does not parse")
			case err == nil && v.CertificateExpect == nil:
				e.failf("no certificate_expect for a bundle that parses")
			case err == nil:
				cert := c.certificate("alice")
				if cert == nil {
					e.failf("no certificate named alice")
					return
				}
				e.code(tb.VerifyCertificate(cert, c.file.NowMs, ""), *v.CertificateExpect)
			}
		})
	}
	g.done("%d §3.3 trust bundle texts", len(c.file.TrustBundleChecks))
}

// checkHandshakeRejections feeds every frame to the side of the vector
// handshake that expects it (§5.1, §5.3, §5.4) and compares the code.
func (c *checker) checkHandshakeRejections() {
	g := c.group("handshake_rejections")
	h := c.file.Handshake
	for _, v := range c.file.HandshakeRejects {
		g.run(v.Name, func(e *entry) {
			env := &environment{nowMs: c.file.NowMs, revoked: revocationSet(v.Revoked)}
			icfg, rcfg, ok := c.configs(e, env)
			if !ok {
				return
			}
			var frame, step1 pb.HandshakeFrame
			if err := proto.Unmarshal(e.hex("frame", v.Frame), &frame); err != nil {
				e.failf("frame does not decode")
				return
			}
			if err := proto.Unmarshal(e.hex("steps[0]", h.Steps[0].Frame), &step1); err != nil {
				e.failf("steps[0] does not decode")
				return
			}
			var err error
			switch {
			case v.Receiver == "responder" && v.AtStep == 1:
				_, _, err = parley.AcceptHandshake(rcfg, &frame)
			case v.Receiver == "initiator" && v.AtStep == 2:
				hs, f1, startErr := parley.StartHandshake(icfg, h.ResponderID, e.hex("session_id", h.SessionID))
				if !e.check(startErr, "step 1") {
					return
				}
				enc, _ := proto.Marshal(f1)
				e.eq("step 1 (the initiator's own)", enc, h.Steps[0].Frame)
				_, _, err = hs.ReadStep2(&frame)
			case v.Receiver == "responder" && v.AtStep == 3:
				hs, f2, acceptErr := parley.AcceptHandshake(rcfg, &step1)
				if !e.check(acceptErr, "step 2") {
					return
				}
				enc, _ := proto.Marshal(f2)
				e.eq("step 2 (the responder's own)", enc, h.Steps[1].Frame)
				_, err = hs.ReadStep3(&frame)
			default:
				e.failf("receiver %q at step %d", v.Receiver, v.AtStep)
				return
			}
			e.code(err, v.Expect)
		})
	}
	g.done("%d §5 verdicts", len(c.file.HandshakeRejects))
}

// checkSessionRejects rebuilds every §17 session reject: layout, digest,
// signature, encoding, and verifies it as the envelope's sender would.
func (c *checker) checkSessionRejects() {
	g := c.group("session_rejects")
	for _, v := range c.file.SessionRejects {
		g.run(v.Name, func(e *entry) {
			signer, ok := c.keys[v.Signer]
			if !ok || v.Signer != v.RecipientID {
				e.failf("signer %q must be a key of the file and the recipient", v.Signer)
				return
			}
			r := &pb.SessionReject{
				Version: v.Version, SessionId: e.hex("session_id", v.SessionID), MessageHash: e.hex("message_hash", v.MessageHash),
				SenderId: v.SenderID, RecipientId: v.RecipientID, RejectedAtMs: v.RejectedAtMs,
			}
			layout, err := parley.SessionRejectLayout(r)
			if !e.check(err, "layout") {
				return
			}
			e.eq("layout (§17)", layout, v.Layout)
			e.eq("digest (§10.4)", parley.Hash(layout), v.Digest)
			// The envelope it refuses: message_rejections/unknown_session.
			var refused *pb.SecureMessage
			for _, m := range c.file.MessageRejections {
				if m.Name == "unknown_session" {
					refused = &pb.SecureMessage{}
					if err := proto.Unmarshal(e.hex("envelope", m.Envelope), refused); err != nil {
						e.failf("unknown_session envelope does not decode")
						return
					}
				}
			}
			if refused == nil {
				e.failf("no message_rejections/unknown_session to refuse")
				return
			}
			hash, err := parley.MessageHash(refused)
			if !e.check(err, "message hash") {
				return
			}
			signed, err := parley.SignSessionReject(signer, refused, hash, v.RejectedAtMs)
			if !e.check(err, "sign") {
				return
			}
			e.eq("signature", signed.Signature, v.Signature)
			encoded, _ := proto.Marshal(signed)
			e.eq("encoded", encoded, v.Encoded)
			var got pb.SessionReject
			if err := proto.Unmarshal(e.hex("encoded", v.Encoded), &got); err != nil {
				e.failf("encoded does not decode")
				return
			}
			pub := signer.Public().(ed25519.PublicKey)
			e.check(parley.VerifySessionReject(&got, refused.GetSessionId(), hash, refused.GetSenderId(), refused.GetRecipientId(), pub), "verify")
			// A reject that names another envelope is not one for this send.
			other := bytes.Repeat([]byte{1}, 32)
			if parley.VerifySessionReject(&got, refused.GetSessionId(), other, refused.GetSenderId(), refused.GetRecipientId(), pub) == nil {
				e.failf("a reject for another message hash verified")
			}
		})
	}
	g.done("%d §17 session rejects: layout, digest, signature, encoding", len(c.file.SessionRejects))
}
