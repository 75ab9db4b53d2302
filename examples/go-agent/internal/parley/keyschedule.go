package parley

import (
	"math"

	"github.com/flynn/noise"
)

// MaxEpochSkip bounds how many epochs a receiver derives ahead for one
// message (§7, §12).
const MaxEpochSkip = 4096

var (
	hmacKeyAD = []byte("parley/v1/hmac-key")
	zeros32   = make([]byte, 32)
)

// EpochKeys are the keys of one epoch of one direction (§7): the AEAD key
// k(e), as a flynn/noise Cipher used at explicit nonces, and the HMAC key mk(e).
type EpochKeys struct {
	Epoch  uint64
	Cipher noise.Cipher
	MacKey []byte
}

func newEpochKeys(epoch uint64, c noise.Cipher) *EpochKeys {
	// mk(e) = first 32 bytes of ENCRYPT(k(e), 2^64−2, "parley/v1/hmac-key", 0^32)
	mk := c.Encrypt(nil, math.MaxUint64-1, hmacKeyAD, zeros32)[:32]
	return &EpochKeys{Epoch: epoch, Cipher: c, MacKey: mk}
}

// Rekey returns k(e+1) = REKEY(k(e)) as raw bytes: the first 32 bytes of
// ENCRYPT(k(e), 2^64−1, "", 0^32) (Noise §4.2, §11.3). This is what
// flynn/noise's CipherState.Rekey does; it is spelled out here because a
// receiver must derive epochs without touching the held ones.
func Rekey(c noise.Cipher) []byte {
	return c.Encrypt(nil, math.MaxUint64, nil, zeros32)[:32]
}

func (k *EpochKeys) next() *EpochKeys {
	raw := Rekey(k.Cipher)
	var key [32]byte
	copy(key[:], raw)
	wipe(raw)
	c := noise.CipherChaChaPoly.Cipher(key)
	wipe(key[:])
	return newEpochKeys(k.Epoch+1, c)
}

// wipe zeroes b. (Go's cipher objects keep their own key copy, which this
// example cannot reach; see README.)
func wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// DirectionKeys is the key schedule of one direction: a sender uses only
// the newest epoch; a receiver keeps the contiguous range of epochs its
// replay window still covers (§7).
type DirectionKeys struct {
	Threshold uint64
	epochs    []*EpochKeys // ascending, contiguous, never empty
}

// NewDirectionKeys starts a direction at epoch 0 with c₀ from Noise Split().
func NewDirectionKeys(c0 noise.Cipher, threshold uint32) *DirectionKeys {
	return &DirectionKeys{Threshold: uint64(threshold), epochs: []*EpochKeys{newEpochKeys(0, c0)}}
}

// EpochOf returns floor(counter / rekey_threshold).
func (d *DirectionKeys) EpochOf(counter uint64) uint64 { return counter / d.Threshold }

func (d *DirectionKeys) oldest() uint64 { return d.epochs[0].Epoch }
func (d *DirectionKeys) newest() *EpochKeys {
	return d.epochs[len(d.epochs)-1]
}

// Lookup returns the keys of epoch without changing what is held: a held
// epoch, or a chain of fresh REKEYs past the newest, returned in derived to
// be committed only once a message authenticates.
func (d *DirectionKeys) Lookup(epoch uint64) (keys *EpochKeys, derived []*EpochKeys, err error) {
	if epoch < d.oldest() {
		return nil, nil, Errorf(CodeReplay, "epoch %d key already discarded", epoch)
	}
	newest := d.newest()
	if epoch <= newest.Epoch {
		return d.epochs[epoch-d.oldest()], nil, nil
	}
	if epoch-newest.Epoch > MaxEpochSkip {
		return nil, nil, Errorf(CodeReplay, "counter too far ahead")
	}
	k := newest
	for e := newest.Epoch + 1; e <= epoch; e++ {
		k = k.next()
		derived = append(derived, k)
	}
	return k, derived, nil
}

// Commit appends derived epochs and wipes every held epoch below keepFrom
// (always keeping the newest).
func (d *DirectionKeys) Commit(derived []*EpochKeys, keepFrom uint64) {
	d.epochs = append(d.epochs, derived...)
	for len(d.epochs) > 1 && d.epochs[0].Epoch < keepFrom {
		wipe(d.epochs[0].MacKey)
		d.epochs = d.epochs[1:]
	}
}

// Discard wipes derived keys that were not committed.
func (d *DirectionKeys) Discard(derived []*EpochKeys) {
	for _, k := range derived {
		wipe(k.MacKey)
	}
}

// ForSend returns the keys for a send counter, rekeying forward and wiping
// older epochs as needed.
func (d *DirectionKeys) ForSend(counter uint64) (*EpochKeys, error) {
	epoch := d.EpochOf(counter)
	keys, derived, err := d.Lookup(epoch)
	if err != nil {
		return nil, err
	}
	if len(derived) > 0 {
		d.Commit(derived, epoch)
	}
	return keys, nil
}
