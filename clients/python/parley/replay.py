"""Replay protection (docs/PROTOCOL.md §8.2).

- :class:`ReplayWindow`: RFC 6479 style, a ring of 8192 bits in 32-bit blocks
  covering the newest 8160 counters; a counter already marked, or more than 8159
  below the highest accepted one, is refused. Moving the window clears whole blocks.
- :class:`MessageHashCache`: an LRU of the last 100,000 accepted message hashes
  per agent; a hash seen before is refused even if a window was rebuilt.

Both are committed only after a message fully authenticated.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, Literal

BLOCK_BITS: Final = 32
RING_BITS: Final = 8192
RING_BLOCKS: Final = RING_BITS // BLOCK_BITS
WINDOW_SIZE: Final = RING_BITS - BLOCK_BITS
MAX_COUNTER: Final = (1 << 53) - 1
DEFAULT_MESSAGE_CACHE_SIZE: Final = 100_000

Verdict = Literal["ok", "duplicate", "too_old", "out_of_range"]


class ReplayWindow:
    """The sliding window of one session direction."""

    __slots__ = ("top", "_ring")

    def __init__(self) -> None:
        self.top = -1
        self._ring = [0] * RING_BLOCKS

    @property
    def floor(self) -> int:
        """Lowest counter still inside the window (0 until it has filled)."""
        return max(0, self.top - WINDOW_SIZE + 1)

    def check(self, counter: int) -> Verdict:
        if not isinstance(counter, int) or counter < 0 or counter > MAX_COUNTER:
            return "out_of_range"
        if counter > self.top:
            return "ok"
        if counter < self.floor:
            return "too_old"
        block = (counter // BLOCK_BITS) % RING_BLOCKS
        return "duplicate" if self._ring[block] >> (counter % BLOCK_BITS) & 1 else "ok"

    def accept(self, counter: int) -> bool:
        """Marks an authenticated counter; False (changing nothing) when :meth:`check` would not say ok."""
        if self.check(counter) != "ok":
            return False
        index = counter // BLOCK_BITS
        if counter > self.top:
            current = -1 if self.top < 0 else self.top // BLOCK_BITS
            for i in range(1, min(index - current, RING_BLOCKS) + 1):
                self._ring[(current + i) % RING_BLOCKS] = 0
            self.top = counter
        self._ring[index % RING_BLOCKS] |= 1 << (counter % BLOCK_BITS)
        return True

    def export(self) -> tuple[int, list[int]]:
        return self.top, list(self._ring)

    @classmethod
    def from_export(cls, top: int, ring: list[int]) -> ReplayWindow:
        if not isinstance(top, int) or top < -1 or top > MAX_COUNTER or len(ring) != RING_BLOCKS or any(not 0 <= b < 1 << 32 for b in ring):
            raise ValueError("invalid replay window state")
        w = cls()
        w.top = top
        w._ring = list(ring)
        return w


class MessageHashCache:
    """LRU set of recently accepted message hashes."""

    __slots__ = ("capacity", "_entries")

    def __init__(self, capacity: int = DEFAULT_MESSAGE_CACHE_SIZE) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._entries: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, digest: object) -> bool:
        return digest in self._entries

    def add(self, digest: bytes) -> None:
        self._entries[bytes(digest)] = None
        self._entries.move_to_end(bytes(digest))
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
