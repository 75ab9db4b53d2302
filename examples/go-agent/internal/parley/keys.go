package parley

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// AgentKeyFileType is the §15.2 "type" of an agent identity key file.
const AgentKeyFileType = "parley-agent-key"

type keyFileJSON struct {
	Version     int             `json:"version"`
	Type        string          `json:"type"`
	KeyID       string          `json:"key_id"`
	PublicKey   string          `json:"public_key"`
	CreatedAtMs int64           `json:"created_at_ms"`
	Seed        string          `json:"seed,omitempty"`
	Sealed      json.RawMessage `json:"sealed,omitempty"`
}

// LoadAgentKey reads a §15.2 agent key file. Like the TypeScript tools it
// refuses a file that group or others may access, and it checks that the
// seed, the public key and the key id agree. A sealed file needs passphrase
// (nil: sealed files are refused).
func LoadAgentKey(path string, passphrase []byte) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s is accessible by group or others (mode %04o); chmod 600 it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	var kf keyFileJSON
	if err := json.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("key file %s: not JSON", path)
	}
	if kf.Version != 1 || kf.Type != AgentKeyFileType {
		return nil, fmt.Errorf("key file %s: want version 1 and type %q", path, AgentKeyFileType)
	}
	want, err := base64.RawURLEncoding.DecodeString(kf.PublicKey)
	if err != nil || len(want) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key file %s: public_key must be 32 bytes of base64url", path)
	}
	var seed []byte
	if len(kf.Sealed) > 0 {
		if passphrase == nil {
			return nil, fmt.Errorf("key file %s is sealed: a passphrase is required (--passphrase-file or PARLEY_AGENT_PASSPHRASE)", path)
		}
		if seed, err = unseal(kf, want, passphrase); err != nil {
			return nil, fmt.Errorf("key file %s: %w", path, err)
		}
	} else if seed, err = base64.RawURLEncoding.DecodeString(kf.Seed); err != nil {
		return nil, fmt.Errorf("key file %s: seed is not base64url", path)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("key file %s: seed must be 32 bytes", path)
	}
	key := ed25519.NewKeyFromSeed(seed)
	wipe(seed)
	pub := key.Public().(ed25519.PublicKey)
	if !bytes.Equal(want, pub) {
		return nil, fmt.Errorf("key file %s: public_key does not match the seed", path)
	}
	id, _ := KeyID(pub)
	if kf.KeyID != hex.EncodeToString(id) {
		return nil, fmt.Errorf("key file %s: key_id does not match the public key", path)
	}
	return key, nil
}

type sealedJSON struct {
	KDF        string `json:"kdf"`
	OpsLimit   uint64 `json:"ops_limit"`
	MemLimit   uint64 `json:"mem_limit"`
	Salt       string `json:"salt"`
	Ciphertext string `json:"ciphertext"`
}

// unseal opens a sealed seed (§15.2): Argon2id v1.3 as libsodium's
// crypto_pwhash (one lane, memory in KiB = mem_limit / 1024), then
// ChaCha20-Poly1305 at nonce 0 with ad = str("parley/v1/sealed-key-file") ‖
// str(type) ‖ fixed32(public_key).
func unseal(kf keyFileJSON, publicKey, passphrase []byte) ([]byte, error) {
	var s sealedJSON
	if err := json.Unmarshal(kf.Sealed, &s); err != nil || s.KDF != "argon2id" {
		return nil, fmt.Errorf("unknown sealing parameters")
	}
	if s.OpsLimit < 1 || s.OpsLimit > 16 || s.MemLimit < 8192 || s.MemLimit > 1<<30 {
		return nil, fmt.Errorf("sealing cost parameters out of range")
	}
	salt, err := base64.RawURLEncoding.DecodeString(s.Salt)
	if err != nil || len(salt) != 16 {
		return nil, fmt.Errorf("sealed.salt must be 16 bytes of base64url")
	}
	ciphertext, err := base64.RawURLEncoding.DecodeString(s.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("sealed.ciphertext is not base64url")
	}
	ad, err := NewLayout("parley/v1/sealed-key-file").Str(kf.Type).Fixed(publicKey, 32, "public_key").Bytes()
	if err != nil {
		return nil, err
	}
	key := argon2.IDKey(passphrase, salt, uint32(s.OpsLimit), uint32(s.MemLimit/1024), 1, chacha20poly1305.KeySize)
	defer wipe(key)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	seed, err := aead.Open(nil, make([]byte, chacha20poly1305.NonceSize), ciphertext, ad)
	if err != nil {
		return nil, fmt.Errorf("wrong passphrase, or the file was changed")
	}
	return seed, nil
}
