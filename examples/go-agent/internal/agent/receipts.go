package agent

import (
	pb "parley/go-agent/internal/gen/parleyv1"
)

// ReceiptStoreSize is the most receipts the agent keeps to send again when an
// envelope it took comes again (§17.1, §17.3 item 3; @parley/client keeps as
// many).
const ReceiptStoreSize = 100_000

// storedReceipt is a receipt this agent signed and when it opened the
// envelope (received_at_ms).
type storedReceipt struct {
	receipt *pb.DeliveryReceipt
	atMs    int64
}

// receiptStore holds the receipts this agent signed, by message hash, in the
// order they were signed: those older than a message's lifetime (max_age,
// §8.3) are dropped, and the oldest beyond its size. It remembers the newest
// receipt it dropped while still within the lifetime (§17.4): an envelope
// no younger than that may have been taken here, so it gets no SessionReject.
type receiptStore struct {
	max      int
	maxAgeMs int64
	byHash   map[string]storedReceipt
	order    []string // hashes, oldest first
	// forgot: a receipt still within the message lifetime was dropped;
	// forgottenUntilMs is the newest such receipt's atMs.
	forgot           bool
	forgottenUntilMs int64
}

func newReceiptStore(max int, maxAgeMs int64) *receiptStore {
	return &receiptStore{max: max, maxAgeMs: maxAgeMs, byHash: map[string]storedReceipt{}}
}

// get returns the receipt signed for messageHash, or nil.
func (s *receiptStore) get(messageHash []byte) *pb.DeliveryReceipt {
	if r, ok := s.byHash[string(messageHash)]; ok {
		return r.receipt
	}
	return nil
}

// add keeps a receipt just signed (at atMs), then prunes at atMs.
func (s *receiptStore) add(messageHash []byte, rc *pb.DeliveryReceipt, atMs int64) {
	h := string(messageHash)
	if _, ok := s.byHash[h]; !ok {
		s.order = append(s.order, h)
	}
	s.byHash[h] = storedReceipt{receipt: rc, atMs: atMs}
	s.prune(atMs)
}

// prune drops the receipts older than a message's lifetime, and the oldest
// beyond the store's size (remembering the newest of those still young).
func (s *receiptStore) prune(nowMs int64) {
	for len(s.order) > 0 {
		h := s.order[0]
		r := s.byHash[h]
		young := r.atMs >= nowMs-s.maxAgeMs
		if young && len(s.byHash) <= s.max {
			return
		}
		if young && (!s.forgot || r.atMs > s.forgottenUntilMs) {
			s.forgot, s.forgottenUntilMs = true, r.atMs
		}
		delete(s.byHash, h)
		s.order = s.order[1:]
	}
}

// mayHaveTaken says whether an envelope of timestampMs may be one whose
// receipt was dropped (§17.4): it was taken only if its timestamp was at most
// maxFutureMs ahead of the clock when its receipt was signed.
func (s *receiptStore) mayHaveTaken(timestampMs, maxFutureMs int64) bool {
	return s.forgot && timestampMs <= s.forgottenUntilMs+maxFutureMs
}
