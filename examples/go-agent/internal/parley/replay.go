package parley

import "container/list"

// Replay window of §8.2, RFC 6479 style: a ring of 8192 bits in 32-bit
// blocks covering the newest 8160 counters.
const (
	blockBits  = 32
	ringBits   = 8192
	ringBlocks = ringBits / blockBits
	// WindowSize is the number of counters the window can tell apart.
	WindowSize = ringBits - blockBits
	// MaxCounter is the largest message counter: 2^53 − 1.
	MaxCounter = 1<<53 - 1
)

// ReplayWindow is the per-session, per-direction sliding window.
type ReplayWindow struct {
	top  int64 // highest accepted counter, −1 before the first
	ring [ringBlocks]uint32
}

// NewReplayWindow returns an empty window.
func NewReplayWindow() *ReplayWindow { return &ReplayWindow{top: -1} }

// Floor is the lowest counter still inside the window.
func (w *ReplayWindow) Floor() uint64 {
	if w.top < WindowSize {
		return 0
	}
	return uint64(w.top - WindowSize + 1)
}

// Check reports whether counter would be accepted, without recording it.
func (w *ReplayWindow) Check(counter uint64) bool {
	if counter > MaxCounter {
		return false
	}
	if int64(counter) > w.top {
		return true
	}
	if counter < w.Floor() {
		return false
	}
	block := (counter / blockBits) % ringBlocks
	return w.ring[block]&(1<<(counter%blockBits)) == 0
}

// Accept records a counter that passed every other check.
func (w *ReplayWindow) Accept(counter uint64) bool {
	if !w.Check(counter) {
		return false
	}
	index := int64(counter / blockBits)
	if int64(counter) > w.top {
		current := int64(-1)
		if w.top >= 0 {
			current = w.top / blockBits
		}
		advance := index - current
		if advance > ringBlocks {
			advance = ringBlocks
		}
		for i := int64(1); i <= advance; i++ {
			w.ring[(current+i)%ringBlocks] = 0
		}
		w.top = int64(counter)
	}
	w.ring[index%ringBlocks] |= 1 << (counter % blockBits)
	return true
}

// DefaultMessageCacheSize is the §8.2 message-hash cache size per agent.
const DefaultMessageCacheSize = 100_000

// MessageCache is an LRU of accepted message hashes (§8.2). Not safe for
// concurrent use; the agent serialises access.
type MessageCache struct {
	max   int
	order *list.List
	items map[string]*list.Element
}

// NewMessageCache returns a cache holding up to max hashes.
func NewMessageCache(max int) *MessageCache {
	return &MessageCache{max: max, order: list.New(), items: map[string]*list.Element{}}
}

// Has reports whether hash was accepted before.
func (c *MessageCache) Has(hash []byte) bool {
	_, ok := c.items[string(hash)]
	return ok
}

// Add records an accepted hash, evicting the oldest past the limit.
func (c *MessageCache) Add(hash []byte) {
	if e, ok := c.items[string(hash)]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.items[string(hash)] = c.order.PushFront(string(hash))
	if c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(string))
	}
}
