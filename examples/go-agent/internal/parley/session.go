package parley

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/subtle"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	pb "parley/go-agent/internal/gen/parleyv1"
)

// Skew holds the timestamp bounds of §8.3.
type Skew struct {
	MaxAgeMs    int64
	MaxFutureMs int64
}

// DefaultSkew is max_age 1 hour, max_future 60 s (§8.3).
var DefaultSkew = Skew{MaxAgeMs: 60 * 60_000, MaxFutureMs: 60_000}

// Session is an established Parley session (§6–§8): one send direction, one
// receive direction with its replay window, and the peer's certified key.
type Session struct {
	ID            []byte
	Role          Role
	PeerID        string
	PeerKey       ed25519.PublicKey
	PeerCert      *pb.AgentCertificate
	HandshakeHash []byte

	local  *Identity
	send   *DirectionKeys
	recv   *DirectionKeys
	next   uint64 // next send counter
	window *ReplayWindow
	cache  *MessageCache
	skew   Skew
	now    func() int64
	// revocations and the issuer's not_after_ms: the peer's standing is
	// re-checked on every Open (§8.1 step 2).
	revocations     RevocationChecker
	peerNotAfter    int64
	hasPeerNotAfter bool
	closed          bool
}

type sessionInit struct {
	id            []byte
	role          Role
	local         *Identity
	peerID        string
	peerKey       ed25519.PublicKey
	peerCert      *pb.AgentCertificate
	handshakeHash []byte
	send, recv    *DirectionKeys
	now           func() int64
	skew          Skew
	cache         *MessageCache
	revocations   RevocationChecker
}

func newSession(in sessionInit) *Session {
	if in.cache == nil {
		in.cache = NewMessageCache(DefaultMessageCacheSize)
	}
	if in.skew == (Skew{}) {
		in.skew = DefaultSkew
	}
	return &Session{
		ID: in.id, Role: in.role, PeerID: in.peerID, PeerKey: in.peerKey, PeerCert: in.peerCert,
		HandshakeHash: in.handshakeHash, local: in.local, send: in.send, recv: in.recv,
		window: NewReplayWindow(), cache: in.cache, skew: in.skew, now: in.now,
		revocations: in.revocations,
	}
}

// SendKeys and ReceiveKeys expose the key schedules (for conformance checks).
func (s *Session) SendKeys() *DirectionKeys    { return s.send }
func (s *Session) ReceiveKeys() *DirectionKeys { return s.recv }

// Sealed is a sealed message with what the sender keeps: the message hash
// (for receipts) and the opening of the commitment (for disclosure, §6.5).
type Sealed struct {
	Envelope    *pb.SecureMessage
	MessageHash []byte
	Payload     []byte
	Salt        []byte
}

// Seal encrypts, MACs and signs one message to the peer (§6).
func (s *Session) Seal(t pb.MessageType, content *structpb.Value) (*Sealed, error) {
	if !IsDefinedMessageType(t) {
		return nil, Errorf(CodeMalformed, "message type %d", t)
	}
	if s.closed {
		return nil, Errorf(CodeUnknownSession, "session is closed")
	}
	counter := s.next
	if counter >= MaxCounter {
		return nil, Errorf(CodeNonceExhausted, "send counter exhausted; renew the session")
	}
	now := s.now()
	payload, err := proto.Marshal(&pb.MessagePayload{Type: t, TimestampMs: now, Content: content})
	if err != nil {
		return nil, err
	}
	if len(payload) > MaxPayloadBytes {
		return nil, Errorf(CodeTooLarge, "payload of %d bytes", len(payload))
	}
	salt := make([]byte, SaltBytes)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	keys, err := s.send.ForSend(counter)
	if err != nil {
		return nil, err
	}
	hdr := &pb.SecureMessage{
		Version: ProtocolVersion, SenderId: s.local.AgentID, RecipientId: s.PeerID,
		SessionId: s.ID, Nonce: counter, TimestampMs: now,
	}
	env, hash, err := SealEnvelope(hdr, payload, salt, keys, s.local.Key)
	if err != nil {
		return nil, err
	}
	s.next = counter + 1
	return &Sealed{Envelope: env, MessageHash: hash, Payload: payload, Salt: salt}, nil
}

// Opened is an envelope that passed every check of §8.1.
type Opened struct {
	Envelope    *pb.SecureMessage
	MessageHash []byte
	Payload     *pb.MessagePayload
	PayloadRaw  []byte
	Salt        []byte
}

// Open runs the §8.1 checks in order and commits state only when all pass.
func (s *Session) Open(e *pb.SecureMessage) (*Opened, error) {
	now := s.now()
	// 1. shape
	if err := CheckEnvelopeShape(e); err != nil {
		return nil, err
	}
	// 2. session and routing, and the peer certificate's standing
	if s.closed {
		return nil, Errorf(CodeUnknownSession, "session is closed")
	}
	if subtle.ConstantTimeCompare(e.GetSessionId(), s.ID) != 1 {
		return nil, Errorf(CodeUnknownSession, "session id does not match")
	}
	if e.GetRecipientId() != s.local.AgentID || e.GetSenderId() != s.PeerID {
		return nil, Errorf(CodeIdentityMismatch, "envelope routing does not match the session")
	}
	if err := s.checkPeerStanding(now); err != nil {
		return nil, err
	}
	// 3. signature by the peer's certified identity key
	signed, err := EnvelopeSigned(e)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(s.PeerKey, signed, e.GetSignature()) {
		return nil, Errorf(CodeBadSignature, "envelope signature does not verify")
	}
	// 4. timestamp skew
	if ts := e.GetTimestampMs(); ts < now-s.skew.MaxAgeMs {
		return nil, Errorf(CodeStaleTimestamp, "timestamp older than max_age")
	} else if ts > now+s.skew.MaxFutureMs {
		return nil, Errorf(CodeFutureTimestamp, "timestamp beyond max_future")
	}
	// 5. replay window
	counter := e.GetNonce()
	if !s.window.Check(counter) {
		return nil, Errorf(CodeReplay, "counter rejected by the replay window")
	}
	// 6. message-hash cache
	hash := Hash(signed)
	if s.cache.Has(hash) {
		return nil, Errorf(CodeReplay, "message hash seen before")
	}
	// 7. epoch key
	keys, derived, err := s.recv.Lookup(s.recv.EpochOf(counter))
	if err != nil {
		return nil, err
	}
	opened, err := openWithKeys(e, keys, hash)
	if err != nil {
		s.recv.Discard(derived)
		return nil, err
	}
	// 11. commit
	s.window.Accept(counter)
	s.cache.Add(hash)
	s.recv.Commit(derived, s.recv.EpochOf(s.window.Floor()))
	return opened, nil
}

// CheckPeer is the end of §8.1 step 2, also run whenever the agent's
// revocation data changes (§8.4): the certificate the handshake
// authenticated must still be valid (and its issuer within not_after_ms) and
// not revoked. An expired or revoked peer closes the session; data that cannot
// answer refuses (revocation_stale) and keeps the session.
func (s *Session) CheckPeer(now int64) error {
	if s.closed {
		return Errorf(CodeUnknownSession, "session is closed")
	}
	return s.checkPeerStanding(now)
}

func (s *Session) checkPeerStanding(now int64) error {
	if now >= s.PeerCert.GetValidUntilMs() || (s.hasPeerNotAfter && now >= s.peerNotAfter) {
		s.Close()
		return Errorf(CodeExpired, "the peer's certificate has expired; session closed")
	}
	if err := checkRevocation(s.revocations, s.PeerCert, now); err != nil {
		if CodeOf(err) == CodeRevoked {
			s.Close()
		}
		return err
	}
	return nil
}

// Closed reports whether the session was closed.
func (s *Session) Closed() bool { return s.closed }

// Close ends the session: nothing more is sealed or opened. (Go cannot wipe
// the key copies inside cipher objects; the HMAC keys it owns are zeroed.)
func (s *Session) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.send.Discard(s.send.epochs)
	s.recv.Discard(s.recv.epochs)
}

// openWithKeys runs §8.1 steps 8–10.
func openWithKeys(e *pb.SecureMessage, keys *EpochKeys, hash []byte) (*Opened, error) {
	// 8. HMAC tag, constant time, before decrypting
	macInput, err := EnvelopeMacInput(e)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(AuthTag(keys.MacKey, macInput), e.GetAuthTag()) {
		return nil, Errorf(CodeBadTag, "auth tag does not verify")
	}
	// 9. AEAD
	ad, err := EnvelopeAD(e)
	if err != nil {
		return nil, err
	}
	plaintext, err := keys.Cipher.Decrypt(nil, e.GetNonce(), ad, e.GetEncryptedPayload())
	if err != nil {
		return nil, Errorf(CodeDecryptFailed, "AEAD decryption failed")
	}
	salt, raw := plaintext[:SaltBytes], plaintext[SaltBytes:]
	// 10. commitment and payload rules
	commitment, err := PayloadCommitment(salt, raw)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(commitment, e.GetPayloadCommitment()) != 1 {
		return nil, Errorf(CodeBadCommitment, "payload does not match its commitment")
	}
	payload, err := DecodePayload(raw, e.GetTimestampMs())
	if err != nil {
		return nil, err
	}
	return &Opened{Envelope: e, MessageHash: hash, Payload: payload, PayloadRaw: raw, Salt: salt}, nil
}
