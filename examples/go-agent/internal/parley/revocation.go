package parley

// RevocationEntry is one entry of a registry's revocation list (§15.6).
type RevocationEntry struct {
	Version     uint64
	Kind        uint8 // 1 = agent id, 2 = certificate serial
	AgentID     string
	Serial      []byte // 16 bytes for kind 2, empty for kind 1
	Reason      uint32
	ReasonText  string
	RevokedAtMs int64
}

// Revocation entry kinds (§15.6).
const (
	RevocationKindAgent  = 1
	RevocationKindSerial = 2
)

// RevocationEntryHashInput is the §15.6 layout hashed into entry_hash(v).
func RevocationEntryHashInput(registryID, previousHash []byte, e RevocationEntry) ([]byte, error) {
	return NewLayout("parley/v1/revocation-entry").
		Fixed(registryID, 16, "registry_id").
		Fixed(previousHash, 32, "previous_hash").
		U64(e.Version).
		U8(e.Kind).
		Str(e.AgentID).
		Var(e.Serial).
		U32(e.Reason).
		Str(e.ReasonText).
		I64(e.RevokedAtMs).
		Bytes()
}

// RevocationEntryHash is entry_hash(v) = BLAKE3(RevocationEntryHashInput).
func RevocationEntryHash(registryID, previousHash []byte, e RevocationEntry) ([]byte, error) {
	b, err := RevocationEntryHashInput(registryID, previousHash, e)
	if err != nil {
		return nil, err
	}
	return Hash(b), nil
}

// RevocationHeadLayout is what the issuer signs for the list at version v (§15.6).
func RevocationHeadLayout(registryID []byte, version uint64, headHash []byte, issuedAtMs int64, issuerKeyID []byte) ([]byte, error) {
	return NewLayout("parley/v1/revocation-head").
		Fixed(registryID, 16, "registry_id").
		U64(version).
		Fixed(headHash, 32, "head_hash").
		I64(issuedAtMs).
		Fixed(issuerKeyID, 16, "issuer_key_id").
		Bytes()
}

// RegistrationProofLayout is what an agent's identity key signs to register (§15.4).
func RegistrationProofLayout(registryID, challenge []byte, agentID string, identityPublicKey []byte) ([]byte, error) {
	return NewLayout("parley/v1/registry-registration").
		Fixed(registryID, 16, "registry_id").
		Fixed(challenge, 32, "challenge").
		Str(agentID).
		Fixed(identityPublicKey, 32, "identity_public_key").
		Bytes()
}

// RotationLayout is what the current key (domain "parley/v1/registry-rotate-key")
// and the new key ("parley/v1/registry-rotate-key-proof") sign for RotateKey (§15.5).
func RotationLayout(domain string, registryID, challenge []byte, agentID string, oldPublicKey, newPublicKey []byte) ([]byte, error) {
	return NewLayout(domain).
		Fixed(registryID, 16, "registry_id").
		Fixed(challenge, 32, "challenge").
		Str(agentID).
		Fixed(oldPublicKey, 32, "old_public_key").
		Fixed(newPublicKey, 32, "new_public_key").
		Bytes()
}

// OperatorRequestLayout is what an operator key signs for a registry call
// (§15.3): the digest of the exact request bytes sent, never a re-encoding.
func OperatorRequestLayout(registryID []byte, path string, request []byte, timestampMs int64, nonce, operatorKeyID []byte) ([]byte, error) {
	return NewLayout("parley/v1/operator-request").
		Fixed(registryID, 16, "registry_id").
		Str(path).
		Fixed(Hash(request), 32, "request_digest").
		I64(timestampMs).
		Fixed(nonce, 16, "nonce").
		Fixed(operatorKeyID, 16, "operator_key_id").
		Bytes()
}
