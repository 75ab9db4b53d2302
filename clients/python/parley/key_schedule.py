"""Per-direction key schedule (docs/PROTOCOL.md §7)::

    k(0)     = key of the CipherState Split() returns for this direction
    k(e+1)   = REKEY(k(e))                 Noise §4.2: first 32 bytes of ENCRYPT(k(e), 2^64−1, ε, 0³²)
    mk(e)    = first 32 bytes of ENCRYPT(k(e), 2^64−2, "parley/v1/hmac-key", 0³²)
    epoch(n) = floor(n / rekey_threshold)

Everything comes from operations a Noise CipherState exposes (Rekey and
encryption at an explicit nonce), never from the chaining key. REKEY is one-way:
wiping every epoch below the oldest one still needed makes those keys
unrecoverable (forward secrecy inside a session). A receiver derives at most
4096 epochs ahead for one message and commits derived keys only after the
message authenticated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from . import crypto
from .errors import SessionError
from .noise import MAX_NONCE, CipherState

HMAC_KEY_NONCE: Final = MAX_NONCE - 1
HMAC_KEY_AD: Final = b"parley/v1/hmac-key"
DEFAULT_REKEY_THRESHOLD: Final = 1000
MAX_REKEY_THRESHOLD: Final = 1_000_000
MAX_EPOCH_SKIP: Final = 4096


def assert_rekey_threshold(value: object) -> int:
    """1..1,000,000 messages per epoch (``malformed`` otherwise)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_REKEY_THRESHOLD:
        raise SessionError("malformed", f"rekey threshold must be an integer in 1..{MAX_REKEY_THRESHOLD}")
    return value


@dataclass(slots=True)
class EpochKeys:
    """k(e) as a CipherState and mk(e)."""

    epoch: int
    cipher: CipherState
    mac_key: bytearray

    @classmethod
    def derive(cls, epoch: int, cipher: CipherState) -> EpochKeys:
        block = bytearray(cipher.encrypt_at(HMAC_KEY_NONCE, HMAC_KEY_AD, bytes(32)))
        mac = block[:32]
        crypto.wipe(block)
        return cls(epoch, cipher, mac)

    def wipe(self) -> None:
        self.cipher.wipe()
        crypto.wipe(self.mac_key)

    def __repr__(self) -> str:
        return f"EpochKeys(epoch={self.epoch})"


class DirectionKeys:
    """The keys of one direction: a sender uses the newest epoch; a receiver keeps a contiguous range."""

    __slots__ = ("threshold", "_epochs")

    def __init__(self, base: CipherState, threshold: int, base_epoch: int = 0) -> None:
        self.threshold = assert_rekey_threshold(threshold)
        self._epochs: list[EpochKeys] = [EpochKeys.derive(base_epoch, base)]

    def epoch_of(self, counter: int) -> int:
        return counter // self.threshold

    @property
    def oldest_epoch(self) -> int:
        return self._epochs[0].epoch

    @property
    def newest_epoch(self) -> int:
        return self._epochs[-1].epoch

    def held_epochs(self) -> list[int]:
        return [e.epoch for e in self._epochs]

    def lookup(self, epoch: int) -> tuple[EpochKeys, list[EpochKeys]]:
        """Keys for ``epoch`` without changing what is held: held ones, or fresh REKEYs beyond the newest
        (returned as ``derived``, to :meth:`commit` only once a message authenticated)."""
        oldest, newest = self.oldest_epoch, self.newest_epoch
        if epoch < oldest:
            raise SessionError("replay", "epoch key already discarded")
        if epoch <= newest:
            return self._epochs[epoch - oldest], []
        if epoch - newest > MAX_EPOCH_SKIP:
            raise SessionError("replay", "counter too far ahead")
        derived: list[EpochKeys] = []
        cipher = self._epochs[-1].cipher
        for e in range(newest + 1, epoch + 1):
            cipher = cipher.rekeyed()
            derived.append(EpochKeys.derive(e, cipher))
        return derived[-1], derived

    @staticmethod
    def discard(derived: list[EpochKeys]) -> None:
        for d in derived:
            d.wipe()

    def commit(self, derived: list[EpochKeys], keep_from: int) -> bool:
        """Adds derived epochs and wipes every epoch below ``keep_from``; True when the held set changed."""
        self._epochs.extend(derived)
        return self.prune(keep_from) or bool(derived)

    def prune(self, keep_from: int) -> bool:
        """Wipes held epochs below ``keep_from``, always keeping the newest; True when any was wiped."""
        changed = False
        while len(self._epochs) > 1 and self._epochs[0].epoch < keep_from:
            self._epochs.pop(0).wipe()
            changed = True
        return changed

    def for_send(self, counter: int) -> tuple[EpochKeys, bool]:
        """Sender side: keys for ``counter``, rekeying forward and wiping older epochs; True when the epoch moved."""
        epoch = self.epoch_of(counter)
        keys, derived = self.lookup(epoch)
        if derived:
            self.commit(derived, epoch)
        return keys, bool(derived)

    def export(self) -> list[tuple[int, bytes]]:
        """``(epoch, key)`` pairs, oldest first, for sealed local state only."""
        return [(e.epoch, e.cipher.unsafe_key()) for e in self._epochs]

    @classmethod
    def from_export(cls, threshold: int, epochs: list[tuple[int, bytes]]) -> DirectionKeys:
        if not epochs:
            raise SessionError("state_corrupt", "no epoch keys")
        first_epoch, first_key = epochs[0]
        keys = cls(CipherState(first_key), threshold, first_epoch)
        for i, (epoch, key) in enumerate(epochs[1:], start=1):
            if epoch != first_epoch + i:
                raise SessionError("state_corrupt", "epoch keys not contiguous")
            keys._epochs.append(EpochKeys.derive(epoch, CipherState(key)))
        return keys

    def wipe(self) -> None:
        for e in self._epochs:
            e.wipe()

    def __repr__(self) -> str:
        return f"DirectionKeys(epochs {self.oldest_epoch}..{self.newest_epoch}, threshold {self.threshold})"
