package vectors

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math"

	"github.com/flynn/noise"
	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
	"parley/go-agent/internal/parley"
)

// pair is the two sessions of the reproduced handshake.
type pair struct {
	initiator, responder *parley.Session
	frames               [3]*pb.HandshakeFrame
}

// identity returns the Identity of the named agent (key and certificate of the same name).
func (c *checker) identity(name string) (*parley.Identity, error) {
	key, ok := c.keys[name]
	if !ok {
		return nil, fmt.Errorf("no key named %q", name)
	}
	cert := c.certificate(name)
	if cert == nil {
		return nil, fmt.Errorf("no certificate named %q", name)
	}
	return &parley.Identity{AgentID: cert.GetAgentId(), Key: key, Certificate: cert}, nil
}

func noiseKey(e *entry, side string, priv, pub string) *noise.DHKey {
	return &noise.DHKey{Private: e.hex(side+".static_private", priv), Public: e.hex(side+".static_public", pub)}
}

// environment is a receiver's clock and revocation data; message_rejections
// change both after the handshake.
type environment struct {
	nowMs   int64
	revoked *parley.RevocationSet
}

// revocationSet turns a vector's "revoked" field into revocation data.
func revocationSet(r revokedVector) *parley.RevocationSet {
	set := &parley.RevocationSet{AgentIDs: map[string]bool{}, Serials: map[string]bool{}}
	for _, id := range r.AgentIDs {
		set.AgentIDs[id] = true
	}
	for _, s := range r.Serials {
		set.Serials[s] = true
	}
	return set
}

// configs returns the initiator's and responder's handshake configuration:
// the fixed Noise keys of the file, the clock and revocation data of env.
func (c *checker) configs(e *entry, env *environment) (icfg, rcfg parley.HandshakeConfig, ok bool) {
	h := c.file.Handshake
	alice, err := c.identity(h.InitiatorID)
	if !e.check(err, "initiator identity") {
		return icfg, rcfg, false
	}
	bob, err := c.identity(h.ResponderID)
	if !e.check(err, "responder identity") {
		return icfg, rcfg, false
	}
	now := func() int64 { return env.nowMs }
	icfg = parley.HandshakeConfig{
		Identity: alice, Trust: c.trust, Now: now, RekeyThreshold: h.RekeyThreshold, Revocations: env.revoked,
		StaticKey: noiseKey(e, "initiator", h.Initiator.StaticPrivate, h.Initiator.StaticPublic),
		Random:    bytes.NewReader(e.hex("initiator.ephemeral_private", h.Initiator.EphemeralPrivate)),
	}
	rcfg = parley.HandshakeConfig{
		Identity: bob, Trust: c.trust, Now: now, Revocations: env.revoked,
		StaticKey: noiseKey(e, "responder", h.Responder.StaticPrivate, h.Responder.StaticPublic),
		Random:    bytes.NewReader(e.hex("responder.ephemeral_private", h.Responder.EphemeralPrivate)),
	}
	return icfg, rcfg, true
}

// handshake reproduces the vector handshake with its fixed Noise keys,
// through the same code the agent uses (flynn/noise underneath), at now_ms.
func (c *checker) handshake(e *entry) *pair {
	return c.handshakeIn(e, &environment{nowMs: c.file.NowMs, revoked: revocationSet(revokedVector{})})
}

// handshakeIn is handshake in an environment the caller may change later.
func (c *checker) handshakeIn(e *entry, env *environment) *pair {
	h := c.file.Handshake
	icfg, rcfg, ok := c.configs(e, env)
	if !ok {
		return nil
	}
	var p pair
	ih, f1, err := parley.StartHandshake(icfg, h.ResponderID, e.hex("session_id", h.SessionID))
	if !e.check(err, "step 1") {
		return nil
	}
	rh, f2, err := parley.AcceptHandshake(rcfg, f1)
	if !e.check(err, "step 2") {
		return nil
	}
	f3, si, err := ih.ReadStep2(f2)
	if !e.check(err, "step 2 at the initiator") {
		return nil
	}
	sr, err := rh.ReadStep3(f3)
	if !e.check(err, "step 3 at the responder") {
		return nil
	}
	p.initiator, p.responder, p.frames = si, sr, [3]*pb.HandshakeFrame{f1, f2, f3}
	return &p
}

func (c *checker) checkHandshake() {
	h := c.file.Handshake
	g := c.group("handshake")
	epochs := 0
	g.run("", func(e *entry) {
		if h.ProtocolName != parley.NoiseProtocolName {
			e.failf("protocol_name %q", h.ProtocolName)
		}
		for _, side := range []noiseKeys{h.Initiator, h.Responder} {
			for _, kp := range [][2]string{{side.StaticPrivate, side.StaticPublic}, {side.EphemeralPrivate, side.EphemeralPublic}} {
				k, err := noise.DH25519.GenerateKeypair(bytes.NewReader(e.hex("private key", kp[0])))
				if e.check(err, "X25519") {
					e.eq("X25519 public key", k.Public, kp[1])
				}
			}
		}
		prologue, err := parley.NoisePrologue(e.hex("session_id", h.SessionID), h.InitiatorID, h.ResponderID, h.RekeyThreshold)
		if e.check(err, "prologue") {
			e.eq("prologue (§5.2)", prologue, h.Prologue)
		}
		p := c.handshake(e)
		if p == nil {
			return
		}
		if len(h.Steps) != 3 {
			e.failf("want 3 steps, got %d", len(h.Steps))
			return
		}
		for i, st := range h.Steps {
			f := p.frames[i]
			name := fmt.Sprintf("step %d ", i+1)
			if st.Step != uint32(i+1) || st.SenderID != f.SenderId || st.RecipientID != f.RecipientId {
				e.failf("%srouting fields", name)
			}
			e.eq(name+"noise_message", f.NoiseMessage, st.NoiseMessage)
			enc, _ := proto.Marshal(f)
			e.eq(name+"frame", enc, st.Frame)
			digest, err := parley.FrameDigest(f)
			if e.check(err, name+"digest") {
				e.eq(name+"frame_digest (§10.4)", digest, st.FrameDigest)
			}
			// The frame decodes and passes the §5.1 shape checks.
			var dec pb.HandshakeFrame
			if err := proto.Unmarshal(e.hex("frame", st.Frame), &dec); err != nil || parley.CheckFrameShape(&dec, st.Step) != nil {
				e.failf("%sframe does not decode to a valid frame", name)
			}
		}
		if h.Steps[0].Payload != "" {
			e.failf("step 1 payload must be empty")
		}
		// Bindings and payloads of steps 2 (responder) and 3 (initiator).
		sid := e.hex("session_id", h.SessionID)
		for _, b := range []struct {
			role   parley.Role
			id     string
			key    string
			static string
			vec    binding
			step   handshakeStep
		}{
			{parley.Responder, h.ResponderID, h.ResponderID, h.Responder.StaticPublic, h.Bindings.Responder, h.Steps[1]},
			{parley.Initiator, h.InitiatorID, h.InitiatorID, h.Initiator.StaticPublic, h.Bindings.Initiator, h.Steps[2]},
		} {
			layout, err := parley.IdentityBinding(sid, b.id, b.role, e.hex("static_public", b.static))
			if !e.check(err, "binding") {
				continue
			}
			e.eq(b.role.String()+" binding layout (§5.3)", layout, b.vec.Layout)
			key := c.keys[b.key]
			sig := ed25519.Sign(key, layout)
			e.eq(b.role.String()+" binding signature", sig, b.vec.Signature)
			payload, _ := proto.Marshal(&pb.HandshakePayload{Certificate: c.certificate(b.key), IdentitySignature: sig})
			e.eq(b.role.String()+" HandshakePayload", payload, b.step.Payload)
		}
		e.eq("handshake_hash (initiator)", p.initiator.HandshakeHash, h.HandshakeHash)
		e.eq("handshake_hash (responder)", p.responder.HandshakeHash, h.HandshakeHash)
		epochs += c.checkEpochKeys(e, "initiator_to_responder", p.initiator.SendKeys(), p.responder.ReceiveKeys(), h.Transport.InitiatorToResponder)
		epochs += c.checkEpochKeys(e, "responder_to_initiator", p.responder.SendKeys(), p.initiator.ReceiveKeys(), h.Transport.ResponderToInitiator)
	})
	g.done("3 messages, frames, digests, bindings, hash, %d epoch keys", epochs)
}

// checkEpochKeys compares k(e) and mk(e) of one direction, as derived by the
// sender's and by the receiver's key schedule, with the vector. flynn/noise
// does not expose the raw key of a CipherState, so k(e) is compared by a
// known-answer encryption under the vector key and, for e+1, through REKEY.
func (c *checker) checkEpochKeys(e *entry, dir string, send, recv *parley.DirectionKeys, want []epochKey) int {
	probe := make([]byte, 32)
	ad := []byte("parley-go-agent/known-answer")
	for i, w := range want {
		if w.Epoch != uint64(i) {
			e.failf("%s: epochs must be listed from 0", dir)
			return 0
		}
		vecKey := e.hex(dir+" key", w.Key)
		if len(vecKey) != 32 {
			e.failf("%s epoch %d: key length", dir, i)
			continue
		}
		var k [32]byte
		copy(k[:], vecKey)
		vecCipher := noise.CipherChaChaPoly.Cipher(k)
		for _, side := range []struct {
			name string
			d    *parley.DirectionKeys
		}{{"sender", send}, {"receiver", recv}} {
			keys, _, err := side.d.Lookup(w.Epoch)
			if !e.check(err, dir+" lookup") {
				continue
			}
			label := fmt.Sprintf("%s epoch %d (%s)", dir, w.Epoch, side.name)
			if !bytes.Equal(keys.Cipher.Encrypt(nil, 7, ad, probe), vecCipher.Encrypt(nil, 7, ad, probe)) {
				e.failf("%s: k(e) mismatch", label)
			}
			// The file's own known-answer value, test-only (§16):
			// ENCRYPT(k(e), 2^64−3, "", 0^32), a nonce no message uses.
			e.eq(label+" key_check", keys.Cipher.Encrypt(nil, math.MaxUint64-2, nil, probe), w.KeyCheck)
			// §7: the associated data does not reach the first 32 bytes
			// (keystream), so mk(e) is the same with or without the label.
			e.eq(label+" mk(e) without its label", keys.Cipher.Encrypt(nil, math.MaxUint64-1, nil, probe)[:32], w.HmacKey)
			e.eq(label+" mk(e)", keys.MacKey, w.HmacKey)
		}
		if i+1 < len(want) {
			// k(e+1) = REKEY(k(e)) from the vector's own key.
			if hex.EncodeToString(parley.Rekey(vecCipher)) != want[i+1].Key {
				e.failf("%s: REKEY(k(%d)) != k(%d)", dir, i, i+1)
			}
		}
	}
	return len(want)
}
