package vectors

import (
	"bytes"
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// sessions returns (sender, receiver) for a message direction.
func (p *pair) sessions(direction string) (*parley.Session, *parley.Session, bool) {
	switch direction {
	case "initiator_to_responder":
		return p.initiator, p.responder, true
	case "responder_to_initiator":
		return p.responder, p.initiator, true
	}
	return nil, nil, false
}

func (c *checker) checkMessages() {
	g := c.group("messages")
	var p *pair
	g.run("handshake", func(e *entry) { p = c.handshake(e) })
	if p == nil {
		g.done("")
		return
	}
	types := map[string]bool{}
	for _, v := range c.file.Messages {
		types[v.Type] = true
		g.run(v.Name, func(e *entry) { c.checkMessage(e, p, v) })
	}
	g.run("coverage", func(e *entry) {
		for value, name := range pb.MessageType_name {
			if value != 0 && !types[name] {
				e.failf("no vector for %s", name)
			}
		}
	})
	g.done("%d messages: payload, commitment, AD, AEAD, MAC, signature, hash, envelope; sealed and opened", len(c.file.Messages))
}

func (c *checker) checkMessage(e *entry, p *pair, v messageVector) {
	sender, receiver, ok := p.sessions(v.Direction)
	if !ok {
		e.failf("direction %q", v.Direction)
		return
	}
	if sender.SendKeys().EpochOf(v.Nonce) != v.Epoch {
		e.failf("epoch %d is not floor(nonce / rekey_threshold)", v.Epoch)
	}
	if pb.MessageType_value[v.Type] != v.TypeValue || v.TypeValue == 0 {
		e.failf("type %s / type_value %d", v.Type, v.TypeValue)
	}
	// The payload decodes to the listed type, timestamp and content.
	payload := e.hex("payload", v.Payload)
	decoded, err := parley.DecodePayload(payload, v.TimestampMs)
	if !e.check(err, "payload") {
		return
	}
	if int32(decoded.GetType()) != v.TypeValue {
		e.failf("payload type")
	}
	if !sameJSON(decoded.GetContent(), v.Content) {
		e.failf("payload content differs from the listed content")
	}
	// Re-seal from payload and salt and compare every intermediate value.
	salt := e.hex("salt", v.Salt)
	keys, _, err := sender.SendKeys().Lookup(v.Epoch)
	if !e.check(err, "epoch keys") {
		return
	}
	hdr := &pb.SecureMessage{
		Version: parley.ProtocolVersion, SenderId: v.SenderID, RecipientId: v.RecipientID,
		SessionId: e.hex("session_id", v.SessionID), Nonce: v.Nonce, TimestampMs: v.TimestampMs,
	}
	if hdr.SenderId != c.agentOf(sender) || hdr.RecipientId != sender.PeerID {
		e.failf("sender_id/recipient_id do not match the direction")
	}
	env, hash, err := parley.SealEnvelope(hdr, payload, salt, keys, c.keys[c.keyNameOf(v.SenderID)])
	if !e.check(err, "seal") {
		return
	}
	e.eq("commitment (§6.2)", env.PayloadCommitment, v.Commitment)
	ad, _ := parley.EnvelopeAD(env)
	e.eq("ad (§6.2)", ad, v.AD)
	e.eq("encrypted_payload", env.EncryptedPayload, v.EncryptedPayload)
	macInput, _ := parley.EnvelopeMacInput(env)
	e.eq("mac_input (§6.3)", macInput, v.MacInput)
	e.eq("auth_tag", env.AuthTag, v.AuthTag)
	signed, _ := parley.EnvelopeSigned(env)
	e.eq("signed (§6.4)", signed, v.Signed)
	e.eq("signature", env.Signature, v.Signature)
	e.eq("message_hash (§6.6)", hash, v.MessageHash)
	encoded, _ := proto.Marshal(env)
	e.eq("envelope", encoded, v.Envelope)
	// Open the vector's envelope at the receiver with every §8.1 check.
	var in pb.SecureMessage
	if err := proto.Unmarshal(e.hex("envelope", v.Envelope), &in); err != nil {
		e.failf("envelope does not decode")
		return
	}
	opened, err := receiver.Open(&in)
	if !e.check(err, "open") {
		return
	}
	if !bytes.Equal(opened.PayloadRaw, payload) || !bytes.Equal(opened.Salt, salt) {
		e.failf("opened payload or salt differs")
	}
	e.eq("opened message hash", opened.MessageHash, v.MessageHash)
}

// agentOf returns the local agent id of a session (the peer of its peer).
func (c *checker) agentOf(s *parley.Session) string {
	h := c.file.Handshake
	if s.Role == parley.Initiator {
		return h.InitiatorID
	}
	return h.ResponderID
}

// keyNameOf maps an agent id to the key of the same-named certificate.
func (c *checker) keyNameOf(agentID string) string {
	for _, v := range c.file.Certificates {
		if v.AgentID == agentID {
			if _, ok := c.keys[v.Name]; ok {
				return v.Name
			}
		}
	}
	return agentID
}

// sameJSON compares a protobuf Value with a JSON document semantically.
func sameJSON(v *structpb.Value, want json.RawMessage) bool {
	got, err := protojson.Marshal(v)
	if err != nil {
		return false
	}
	var a, b any
	if json.Unmarshal(got, &a) != nil || json.Unmarshal(want, &b) != nil {
		return false
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func (c *checker) checkRejections() {
	g := c.group("message_rejections")
	byName := map[string]string{}
	for _, m := range c.file.Messages {
		byName[m.Name] = m.Envelope
	}
	for _, v := range c.file.MessageRejections {
		g.run(v.Name, func(e *entry) {
			// A fresh receiver session for every case; its clock and
			// revocation data change after accept_first.
			env := &environment{nowMs: c.file.NowMs, revoked: revocationSet(revokedVector{})}
			p := c.handshakeIn(e, env)
			if p == nil {
				return
			}
			var receiver *parley.Session
			switch v.Receiver {
			case "initiator":
				receiver = p.initiator
			case "responder":
				receiver = p.responder
			default:
				e.failf("receiver %q", v.Receiver)
				return
			}
			for _, name := range v.AcceptFirst {
				envHex, ok := byName[name]
				if !ok {
					e.failf("accept_first names no message %q", name)
					return
				}
				var env pb.SecureMessage
				if err := proto.Unmarshal(e.hex(name, envHex), &env); err != nil {
					e.failf("%s does not decode", name)
					return
				}
				if _, err := receiver.Open(&env); err != nil {
					e.failf("accept_first %s: %v", name, err)
					return
				}
			}
			for i, envHex := range v.AcceptFirstEnvelopes {
				var env pb.SecureMessage
				if err := proto.Unmarshal(e.hex("accept_first_envelopes", envHex), &env); err != nil {
					e.failf("accept_first_envelopes[%d] does not decode", i)
					return
				}
				if _, err := receiver.Open(&env); err != nil {
					e.failf("accept_first_envelopes[%d]: %v", i, err)
					return
				}
			}
			*env.revoked = *revocationSet(v.Revoked)
			env.nowMs = v.OpenAtMs
			var msg pb.SecureMessage
			err := proto.Unmarshal(e.hex("envelope", v.Envelope), &msg)
			if err != nil {
				err = parley.Errorf(parley.CodeMalformed, "envelope does not decode")
			} else {
				_, err = receiver.Open(&msg)
			}
			e.code(err, v.Expect)
			if (v.Expect == parley.CodeRevoked || v.Expect == parley.CodeExpired) && !receiver.Closed() {
				e.failf("a %s peer must close the session (§8.1 step 2)", v.Expect)
			}
		})
	}
	g.done("%d §8.1 verdicts on fresh sessions", len(c.file.MessageRejections))
}
