package parley

import "lukechampine.com/blake3"

// Hash is BLAKE3 in hash mode with a 32-byte output (PROTOCOL.md §4).
func Hash(data []byte) []byte {
	sum := blake3.Sum256(data)
	return sum[:]
}

// KeyID is the §3.1 key id: the first 16 bytes of
// BLAKE3(str("parley/v1/key-id") ‖ fixed32(pk)).
func KeyID(publicKey []byte) ([]byte, error) {
	b, err := NewLayout("parley/v1/key-id").Fixed(publicKey, 32, "public key").Bytes()
	if err != nil {
		return nil, err
	}
	return Hash(b)[:16], nil
}
