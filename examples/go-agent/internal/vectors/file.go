// Package vectors checks a Parley conformance vector file
// (docs/conformance/parley-v1.json) against this implementation, in both
// directions: every byte string is recomputed from its inputs and compared,
// every signature verified, every expected rejection code reproduced.
package vectors

import "encoding/json"

// The file format. Byte strings are lowercase hex.

type keyVector struct {
	Seed      string `json:"ed25519_seed"`
	PublicKey string `json:"ed25519_public_key"`
	KeyID     string `json:"key_id"`
}

type certificateVector struct {
	Name              string   `json:"name"`
	Version           uint32   `json:"version"`
	AgentID           string   `json:"agent_id"`
	AgentType         string   `json:"agent_type"`
	Capabilities      []string `json:"capabilities"`
	ValidFromMs       int64    `json:"valid_from_ms"`
	ValidUntilMs      int64    `json:"valid_until_ms"`
	Serial            string   `json:"serial"`
	IdentityPublicKey string   `json:"identity_public_key"`
	IssuerKeyID       string   `json:"issuer_key_id"`
	TBS               string   `json:"tbs"`
	Signature         string   `json:"signature"`
	Encoded           string   `json:"encoded"`
}

// revokedVector is a receiver's revocation data: agent ids and hex serials.
type revokedVector struct {
	AgentIDs []string `json:"agent_ids"`
	Serials  []string `json:"serials"`
}

type certificateCheck struct {
	Name            string        `json:"name"`
	Certificate     string        `json:"certificate"`
	ExpectedAgentID *string       `json:"expected_agent_id"`
	AtMs            int64         `json:"at_ms"`
	Expect          string        `json:"expect"`
	Revoked         revokedVector `json:"revoked"`
}

type trustBundleCheck struct {
	Name              string  `json:"name"`
	JSON              string  `json:"json"`
	Expect            string  `json:"expect"`
	CertificateExpect *string `json:"certificate_expect"`
}

type handshakeRejection struct {
	Name     string        `json:"name"`
	Receiver string        `json:"receiver"`
	AtStep   int           `json:"at_step"`
	Frame    string        `json:"frame"`
	Revoked  revokedVector `json:"revoked"`
	Expect   string        `json:"expect"`
}

type sessionRejectVector struct {
	Name         string `json:"name"`
	Version      uint32 `json:"version"`
	SessionID    string `json:"session_id"`
	MessageHash  string `json:"message_hash"`
	SenderID     string `json:"sender_id"`
	RecipientID  string `json:"recipient_id"`
	RejectedAtMs int64  `json:"rejected_at_ms"`
	Layout       string `json:"layout"`
	Digest       string `json:"digest"`
	Signature    string `json:"signature"`
	Encoded      string `json:"encoded"`
	Signer       string `json:"signer"`
}

type noiseKeys struct {
	StaticPrivate    string `json:"static_private"`
	StaticPublic     string `json:"static_public"`
	EphemeralPrivate string `json:"ephemeral_private"`
	EphemeralPublic  string `json:"ephemeral_public"`
}

type handshakeStep struct {
	Step         uint32 `json:"step"`
	SenderID     string `json:"sender_id"`
	RecipientID  string `json:"recipient_id"`
	Payload      string `json:"payload"`
	NoiseMessage string `json:"noise_message"`
	Frame        string `json:"frame"`
	FrameDigest  string `json:"frame_digest"`
}

type binding struct {
	Layout    string `json:"layout"`
	Signature string `json:"signature"`
}

type epochKey struct {
	Epoch    uint64 `json:"epoch"`
	Key      string `json:"key"`
	KeyCheck string `json:"key_check"`
	HmacKey  string `json:"hmac_key"`
}

type handshakeVector struct {
	ProtocolName   string          `json:"protocol_name"`
	SessionID      string          `json:"session_id"`
	InitiatorID    string          `json:"initiator_id"`
	ResponderID    string          `json:"responder_id"`
	RekeyThreshold uint32          `json:"rekey_threshold"`
	Prologue       string          `json:"prologue"`
	Initiator      noiseKeys       `json:"initiator"`
	Responder      noiseKeys       `json:"responder"`
	Steps          []handshakeStep `json:"steps"`
	Bindings       struct {
		Responder binding `json:"responder"`
		Initiator binding `json:"initiator"`
	} `json:"bindings"`
	HandshakeHash string `json:"handshake_hash"`
	Transport     struct {
		InitiatorToResponder []epochKey `json:"initiator_to_responder"`
		ResponderToInitiator []epochKey `json:"responder_to_initiator"`
	} `json:"transport"`
}

type messageVector struct {
	Name             string          `json:"name"`
	Type             string          `json:"type"`
	TypeValue        int32           `json:"type_value"`
	Direction        string          `json:"direction"`
	SenderID         string          `json:"sender_id"`
	RecipientID      string          `json:"recipient_id"`
	SessionID        string          `json:"session_id"`
	Nonce            uint64          `json:"nonce"`
	Epoch            uint64          `json:"epoch"`
	TimestampMs      int64           `json:"timestamp_ms"`
	Content          json.RawMessage `json:"content"`
	Payload          string          `json:"payload"`
	Salt             string          `json:"salt"`
	Commitment       string          `json:"commitment"`
	AD               string          `json:"ad"`
	EncryptedPayload string          `json:"encrypted_payload"`
	MacInput         string          `json:"mac_input"`
	AuthTag          string          `json:"auth_tag"`
	Signed           string          `json:"signed"`
	Signature        string          `json:"signature"`
	MessageHash      string          `json:"message_hash"`
	Envelope         string          `json:"envelope"`
}

type rejectionVector struct {
	Name                 string        `json:"name"`
	Receiver             string        `json:"receiver"`
	AcceptFirst          []string      `json:"accept_first"`
	Envelope             string        `json:"envelope"`
	Expect               string        `json:"expect"`
	AcceptFirstEnvelopes []string      `json:"accept_first_envelopes"`
	Revoked              revokedVector `json:"revoked"`
	OpenAtMs             int64         `json:"open_at_ms"`
}

type disclosureVector struct {
	Name        string `json:"name"`
	Envelope    string `json:"envelope"`
	Certificate string `json:"certificate"`
	Payload     string `json:"payload"`
	Salt        string `json:"salt"`
	Expect      string `json:"expect"`
}

type receiptVector struct {
	Name         string `json:"name"`
	Version      uint32 `json:"version"`
	MessageHash  string `json:"message_hash"`
	SenderID     string `json:"sender_id"`
	RecipientID  string `json:"recipient_id"`
	ReceivedAtMs int64  `json:"received_at_ms"`
	Layout       string `json:"layout"`
	Signature    string `json:"signature"`
	Digest       string `json:"digest"`
	Encoded      string `json:"encoded"`
	Signer       string `json:"signer"`
}

type gatewayAuthVector struct {
	GatewayID string `json:"gateway_id"`
	Nonce     string `json:"nonce"`
	AgentID   string `json:"agent_id"`
	Serial    string `json:"serial"`
	Layout    string `json:"layout"`
	Signature string `json:"signature"`
	Signer    string `json:"signer"`
}

type gatewaySendVector struct {
	GatewayID   string `json:"gateway_id"`
	TimestampMs int64  `json:"timestamp_ms"`
	Nonce       string `json:"nonce"`
	ItemDigest  string `json:"item_digest"`
	Layout      string `json:"layout"`
	Signature   string `json:"signature"`
	Signer      string `json:"signer"`
}

type auditEntryVector struct {
	Index        uint64 `json:"index"`
	MessageHash  string `json:"message_hash"`
	SenderID     string `json:"sender_id"`
	RecipientID  string `json:"recipient_id"`
	TimestampMs  int64  `json:"timestamp_ms"`
	MessageType  int32  `json:"message_type"`
	Outcome      string `json:"outcome"`
	PreviousHash string `json:"previous_hash"`
	SignerKeyID  string `json:"signer_key_id"`
	Layout       string `json:"layout"`
	Signature    string `json:"signature"`
	EntryHash    string `json:"entry_hash"`
	LeafHash     string `json:"leaf_hash"`
	Encoded      string `json:"encoded"`
}

type auditVector struct {
	Writer    string             `json:"writer"`
	Entries   []auditEntryVector `json:"entries"`
	TreeSize  int                `json:"tree_size"`
	Root      string             `json:"root"`
	Inclusion []struct {
		LeafIndex uint64   `json:"leaf_index"`
		TreeSize  uint64   `json:"tree_size"`
		Path      []string `json:"path"`
		Root      string   `json:"root"`
	} `json:"inclusion"`
	Consistency []struct {
		First      uint64   `json:"first"`
		Second     uint64   `json:"second"`
		Path       []string `json:"path"`
		FirstRoot  string   `json:"first_root"`
		SecondRoot string   `json:"second_root"`
	} `json:"consistency"`
	TreeHeads []struct {
		TreeSize    uint64 `json:"tree_size"`
		Root        string `json:"root"`
		TimestampMs int64  `json:"timestamp_ms"`
		SignerKeyID string `json:"signer_key_id"`
		Layout      string `json:"layout"`
		Signature   string `json:"signature"`
	} `json:"tree_heads"`
}
