package parley

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"io"

	"github.com/flynn/noise"
	"google.golang.org/protobuf/proto"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// Handshake constants of PROTOCOL.md §5 and §12.
const (
	ProtocolVersion         = 1
	SessionIDBytes          = 16
	DefaultRekeyThreshold   = 1000
	MaxRekeyThreshold       = 1_000_000
	MaxNoiseMessageBytes    = 65535
	MaxHandshakePayloadSize = 8192

	roleInitiator = 1
	roleResponder = 2
)

// NoiseProtocolName is the one Noise protocol Parley v1 uses (§4).
const NoiseProtocolName = "Noise_XX_25519_ChaChaPoly_BLAKE2b"

// noiseSuite is Noise_XX_25519_ChaChaPoly_BLAKE2b, provided by flynn/noise.
var noiseSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2b)

// Role is a side of a handshake and of the session it creates.
type Role int

const (
	Initiator Role = roleInitiator
	Responder Role = roleResponder
)

func (r Role) String() string {
	if r == Initiator {
		return "initiator"
	}
	return "responder"
}

// Identity is the local agent: its id, identity key and certificate.
type Identity struct {
	AgentID     string
	Key         ed25519.PrivateKey
	Certificate *pb.AgentCertificate
}

// HandshakeConfig holds what a handshake needs besides the frames.
type HandshakeConfig struct {
	Identity *Identity
	Trust    *TrustBundle
	// Now returns the current time in ms (certificate checks, session clock).
	Now func() int64
	// RekeyThreshold for sessions this side initiates (0: the default 1000).
	RekeyThreshold uint32
	// Skew bounds for the sessions created (zero value: the §8.3 defaults).
	Skew Skew
	// Revocations is the agent's revocation data, checked at the handshake
	// (§3.3 step 6) and on every message of the sessions it creates (§8.1
	// step 2). nil checks nothing (the vectors without revocation data).
	Revocations RevocationChecker
	// Cache is the agent's message-hash cache shared by its sessions (§8.2);
	// nil gives each session its own.
	Cache *MessageCache
	// StaticKey fixes the Noise static key (tests and vectors only). By
	// default a fresh X25519 key is drawn for every handshake (§5.3).
	StaticKey *noise.DHKey
	// Random is the source of the Noise ephemeral key (and of a fresh static
	// key); nil means crypto/rand. Tests use it to fix the ephemeral key.
	Random io.Reader
}

// NoisePrologue is the §5.2 prologue.
func NoisePrologue(sessionID []byte, initiatorID, responderID string, rekeyThreshold uint32) ([]byte, error) {
	return NewLayout("parley/v1/noise-prologue").
		U32(ProtocolVersion).
		Fixed(sessionID, SessionIDBytes, "session_id").
		Str(initiatorID).
		Str(responderID).
		U32(rekeyThreshold).
		Bytes()
}

// IdentityBinding is the §5.3 layout signed by each side's identity key.
func IdentityBinding(sessionID []byte, agentID string, role Role, noiseStatic []byte) ([]byte, error) {
	return NewLayout("parley/v1/identity-binding").
		Fixed(sessionID, SessionIDBytes, "session_id").
		Str(agentID).
		U8(uint8(role)).
		Fixed(noiseStatic, 32, "noise static key").
		Bytes()
}

// FrameDigest is the §10.4 item digest of a handshake frame.
func FrameDigest(f *pb.HandshakeFrame) ([]byte, error) {
	b, err := NewLayout("parley/v1/handshake-frame").
		U32(f.GetVersion()).
		Fixed(f.GetSessionId(), SessionIDBytes, "session_id").
		Str(f.GetSenderId()).
		Str(f.GetRecipientId()).
		U32(f.GetStep()).
		Var(f.GetNoiseMessage()).
		U32(f.GetRekeyThreshold()).
		Bytes()
	if err != nil {
		return nil, err
	}
	return Hash(b), nil
}

// CheckFrameShape performs the §5.1 shape checks of a frame expected at step.
func CheckFrameShape(f *pb.HandshakeFrame, step uint32) error {
	if f.GetVersion() != ProtocolVersion {
		return Errorf(CodeUnsupportedVersion, "handshake version %d", f.GetVersion())
	}
	if len(f.GetSessionId()) != SessionIDBytes {
		return Errorf(CodeMalformed, "session_id must be 16 bytes")
	}
	if !IsAgentID(f.GetSenderId()) || !IsAgentID(f.GetRecipientId()) || f.GetSenderId() == f.GetRecipientId() {
		return Errorf(CodeMalformed, "frame agent ids")
	}
	// A step outside 1..3 is a field out of range; a defined step this side
	// is not waiting for is a wrong turn (§5.1).
	if f.GetStep() < 1 || f.GetStep() > 3 {
		return Errorf(CodeMalformed, "handshake step %d", f.GetStep())
	}
	if f.GetStep() != step {
		return Errorf(CodeHandshakeFailed, "expected step %d, got %d", step, f.GetStep())
	}
	if n := len(f.GetNoiseMessage()); n < 32 || n > MaxNoiseMessageBytes {
		return Errorf(CodeMalformed, "noise_message length %d", n)
	}
	if t := f.GetRekeyThreshold(); t < 1 || t > MaxRekeyThreshold {
		return Errorf(CodeMalformed, "rekey_threshold %d", t)
	}
	return nil
}

// Handshake is one side of a Noise XX handshake in progress. Any failure
// poisons it (§5.4): its state is dropped and every later call fails.
type Handshake struct {
	cfg       HandshakeConfig
	role      Role
	sessionID []byte
	peerID    string
	threshold uint32
	static    noise.DHKey
	hs        *noise.HandshakeState
	finished  bool
}

// SessionID returns the handshake's session id.
func (h *Handshake) SessionID() []byte { return h.sessionID }

// PeerID returns the agent id of the other side.
func (h *Handshake) PeerID() string { return h.peerID }

func newNoiseState(cfg *HandshakeConfig, initiator bool, prologue []byte) (*noise.HandshakeState, noise.DHKey, error) {
	rng := cfg.Random
	if rng == nil {
		rng = rand.Reader
	}
	var static noise.DHKey
	if cfg.StaticKey != nil {
		// A copy: the handshake wipes its static key when it ends.
		static = noise.DHKey{
			Private: append([]byte(nil), cfg.StaticKey.Private...),
			Public:  append([]byte(nil), cfg.StaticKey.Public...),
		}
	} else {
		var err error
		if static, err = noise.DH25519.GenerateKeypair(rand.Reader); err != nil {
			return nil, static, err
		}
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   noiseSuite,
		Random:        rng,
		Pattern:       noise.HandshakeXX,
		Initiator:     initiator,
		Prologue:      prologue,
		StaticKeypair: static,
	})
	return hs, static, err
}

func frame(sessionID []byte, sender, recipient string, step uint32, msg []byte, threshold uint32) *pb.HandshakeFrame {
	return &pb.HandshakeFrame{
		Version: ProtocolVersion, SessionId: sessionID, SenderId: sender, RecipientId: recipient,
		Step: step, NoiseMessage: msg, RekeyThreshold: threshold,
	}
}

// StartHandshake begins a handshake as initiator and returns the step-1 frame.
func StartHandshake(cfg HandshakeConfig, peerID string, sessionID []byte) (*Handshake, *pb.HandshakeFrame, error) {
	me := cfg.Identity.AgentID
	if !IsAgentID(peerID) || peerID == me {
		return nil, nil, Errorf(CodeMalformed, "peer id %q", peerID)
	}
	threshold := cfg.RekeyThreshold
	if threshold == 0 {
		threshold = DefaultRekeyThreshold
	}
	if threshold > MaxRekeyThreshold {
		return nil, nil, Errorf(CodeMalformed, "rekey threshold %d", threshold)
	}
	if sessionID == nil {
		sessionID = make([]byte, SessionIDBytes)
		if _, err := rand.Read(sessionID); err != nil {
			return nil, nil, err
		}
	}
	prologue, err := NoisePrologue(sessionID, me, peerID, threshold)
	if err != nil {
		return nil, nil, err
	}
	hs, static, err := newNoiseState(&cfg, true, prologue)
	if err != nil {
		return nil, nil, Errorf(CodeHandshakeFailed, "noise: %v", err)
	}
	msg, _, _, err := hs.WriteMessage(nil, nil) // -> e
	if err != nil {
		return nil, nil, Errorf(CodeHandshakeFailed, "noise: %v", err)
	}
	h := &Handshake{cfg: cfg, role: Initiator, sessionID: sessionID, peerID: peerID, threshold: threshold, static: static, hs: hs}
	return h, frame(sessionID, me, peerID, 1, msg, threshold), nil
}

// AcceptHandshake answers a step-1 frame as responder and returns the
// step-2 frame.
func AcceptHandshake(cfg HandshakeConfig, f1 *pb.HandshakeFrame) (*Handshake, *pb.HandshakeFrame, error) {
	if err := CheckFrameShape(f1, 1); err != nil {
		return nil, nil, err
	}
	me := cfg.Identity.AgentID
	if f1.GetRecipientId() != me {
		return nil, nil, Errorf(CodeIdentityMismatch, "handshake addressed to %q", f1.GetRecipientId())
	}
	sessionID := append([]byte(nil), f1.GetSessionId()...)
	prologue, err := NoisePrologue(sessionID, f1.GetSenderId(), me, f1.GetRekeyThreshold())
	if err != nil {
		return nil, nil, err
	}
	hs, static, err := newNoiseState(&cfg, false, prologue)
	if err != nil {
		return nil, nil, Errorf(CodeHandshakeFailed, "noise: %v", err)
	}
	h := &Handshake{cfg: cfg, role: Responder, sessionID: sessionID, peerID: f1.GetSenderId(), threshold: f1.GetRekeyThreshold(), static: static, hs: hs}
	payload, _, _, err := hs.ReadMessage(nil, f1.GetNoiseMessage()) // -> e
	if err != nil {
		return nil, nil, h.fail(Errorf(CodeHandshakeFailed, "noise: %v", err))
	}
	if len(payload) != 0 {
		return nil, nil, h.fail(Errorf(CodeMalformed, "step-1 payload must be empty"))
	}
	own, err := h.ownPayload()
	if err != nil {
		return nil, nil, h.fail(err)
	}
	msg, _, _, err := hs.WriteMessage(nil, own) // <- e, ee, s, es
	if err != nil {
		return nil, nil, h.fail(Errorf(CodeHandshakeFailed, "noise: %v", err))
	}
	return h, frame(sessionID, me, h.peerID, 2, msg, h.threshold), nil
}

// ReadStep2 (initiator) processes the responder's frame, verifies its
// identity, and returns the step-3 frame and the new session.
func (h *Handshake) ReadStep2(f2 *pb.HandshakeFrame) (*pb.HandshakeFrame, *Session, error) {
	if err := h.begin(Initiator, f2, 2); err != nil {
		return nil, nil, err
	}
	payload, _, _, err := h.hs.ReadMessage(nil, f2.GetNoiseMessage()) // <- e, ee, s, es
	if err != nil {
		return nil, nil, h.fail(Errorf(CodeHandshakeFailed, "noise: %v", err))
	}
	peer, err := h.verifyPeer(payload, Responder, h.hs.PeerStatic())
	if err != nil {
		return nil, nil, h.fail(err)
	}
	own, err := h.ownPayload()
	if err != nil {
		return nil, nil, h.fail(err)
	}
	msg, c1, c2, err := h.hs.WriteMessage(nil, own) // -> s, se
	if err != nil || c1 == nil {
		return nil, nil, h.fail(Errorf(CodeHandshakeFailed, "noise: %v", err))
	}
	s := h.newSession(peer, c1, c2)
	return frame(h.sessionID, h.cfg.Identity.AgentID, h.peerID, 3, msg, h.threshold), s, nil
}

// ReadStep3 (responder) processes the initiator's final frame and returns
// the new session.
func (h *Handshake) ReadStep3(f3 *pb.HandshakeFrame) (*Session, error) {
	if err := h.begin(Responder, f3, 3); err != nil {
		return nil, err
	}
	payload, c1, c2, err := h.hs.ReadMessage(nil, f3.GetNoiseMessage()) // -> s, se
	if err != nil || c1 == nil {
		return nil, h.fail(Errorf(CodeHandshakeFailed, "noise: %v", err))
	}
	peer, err := h.verifyPeer(payload, Initiator, h.hs.PeerStatic())
	if err != nil {
		// The transport keys from Split are dropped with the handshake state.
		return nil, h.fail(err)
	}
	return h.newSession(peer, c1, c2), nil
}

// begin checks turn, shape and routing of an incoming frame (§5.1).
func (h *Handshake) begin(role Role, f *pb.HandshakeFrame, step uint32) error {
	if h.hs == nil || h.finished || h.role != role {
		return Errorf(CodeHandshakeFailed, "handshake is over or poisoned")
	}
	h.finished = true // one message per side after this point; a failure poisons
	if err := CheckFrameShape(f, step); err != nil {
		return h.fail(err)
	}
	if subtle.ConstantTimeCompare(f.GetSessionId(), h.sessionID) != 1 {
		return h.fail(Errorf(CodeUnknownSession, "frame for another session"))
	}
	if f.GetSenderId() != h.peerID || f.GetRecipientId() != h.cfg.Identity.AgentID {
		return h.fail(Errorf(CodeIdentityMismatch, "frame routing does not match the handshake"))
	}
	if f.GetRekeyThreshold() != h.threshold {
		return h.fail(Errorf(CodeMalformed, "rekey threshold changed"))
	}
	return nil
}

// fail poisons the handshake (§5.4) and returns err.
func (h *Handshake) fail(err error) error {
	h.hs = nil
	h.finished = true
	for i := range h.static.Private {
		h.static.Private[i] = 0
	}
	return err
}

func (h *Handshake) ownPayload() ([]byte, error) {
	id := h.cfg.Identity
	binding, err := IdentityBinding(h.sessionID, id.AgentID, h.role, h.static.Public)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(&pb.HandshakePayload{
		Certificate:       id.Certificate,
		IdentitySignature: ed25519.Sign(id.Key, binding),
	})
}

type verifiedPeer struct {
	cert *pb.AgentCertificate
	key  ed25519.PublicKey
}

// verifyPeer checks the peer's HandshakePayload (§5.3): certificate with the
// expected agent id, then the identity binding over the Noise static key.
func (h *Handshake) verifyPeer(payload []byte, peerRole Role, remoteStatic []byte) (*verifiedPeer, error) {
	if len(payload) == 0 || len(payload) > MaxHandshakePayloadSize {
		return nil, Errorf(CodeMalformed, "handshake payload size %d", len(payload))
	}
	var hp pb.HandshakePayload
	if err := proto.Unmarshal(payload, &hp); err != nil {
		return nil, Errorf(CodeMalformed, "handshake payload does not decode")
	}
	if hp.GetCertificate() == nil {
		return nil, Errorf(CodeMalformed, "handshake payload has no certificate")
	}
	if len(hp.GetIdentitySignature()) != ed25519.SignatureSize {
		return nil, Errorf(CodeMalformed, "identity signature must be 64 bytes")
	}
	if err := h.cfg.Trust.VerifyCertificateWith(hp.GetCertificate(), h.cfg.Now(), h.peerID, h.cfg.Revocations); err != nil {
		return nil, err
	}
	key := ed25519.PublicKey(hp.GetCertificate().GetIdentityPublicKey())
	binding, err := IdentityBinding(h.sessionID, h.peerID, peerRole, remoteStatic)
	if err != nil {
		return nil, Errorf(CodeBadBinding, "binding layout: %v", err)
	}
	if !ed25519.Verify(key, binding, hp.GetIdentitySignature()) {
		return nil, Errorf(CodeBadBinding, "identity signature does not bind the Noise static key")
	}
	return &verifiedPeer{cert: hp.GetCertificate(), key: key}, nil
}

func (h *Handshake) newSession(peer *verifiedPeer, c1, c2 *noise.CipherState) *Session {
	// Split(): c1 carries initiator → responder, c2 responder → initiator.
	send, recv := c1, c2
	if h.role == Responder {
		send, recv = c2, c1
	}
	s := newSession(sessionInit{
		id: h.sessionID, role: h.role, local: h.cfg.Identity, peerID: h.peerID, peerKey: peer.key,
		peerCert: peer.cert, handshakeHash: append([]byte(nil), h.hs.ChannelBinding()...),
		send: NewDirectionKeys(send.Cipher(), h.threshold), recv: NewDirectionKeys(recv.Cipher(), h.threshold),
		now: h.cfg.Now, skew: h.cfg.Skew, cache: h.cfg.Cache, revocations: h.cfg.Revocations,
	})
	s.peerNotAfter, s.hasPeerNotAfter = h.cfg.Trust.NotAfter(peer.cert)
	h.hs = nil
	for i := range h.static.Private {
		h.static.Private[i] = 0
	}
	return s
}
