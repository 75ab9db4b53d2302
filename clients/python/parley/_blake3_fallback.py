"""BLAKE3 in hash mode, in pure Python: the fallback when the ``blake3`` package is absent.

Written from the BLAKE3 specification (O'Connor, Aumasson, Neves, Wilcox-O'Hearn,
"BLAKE3: one function, fast everywhere", 2020, BLAKE3 paper §2): the compression function
(BLAKE3 paper §2.2, 7 rounds of the ChaCha-style quarter-round G over a 16-word state, the
message permutation between rounds), chunks of 1024 bytes in 64-byte blocks
(BLAKE3 paper §2.4), the binary tree of parent nodes with the chaining-value stack (BLAKE3 paper §2.5),
and the root output with its extendable counter (BLAKE3 paper §2.6). Only hash mode is
implemented (no keyed hash, no key derivation): Parley uses nothing else (§4).

It is checked against the official test vectors (BLAKE3-team/BLAKE3
``test_vectors/test_vectors.json``, copied into ``tests/vectors``), including
their extended outputs. It is slow — about a megabyte per second, see the
README — so :mod:`parley.crypto` uses the ``blake3`` package whenever it is
importable and this module only otherwise.
"""

from __future__ import annotations

from typing import Final

_M: Final = 0xFFFFFFFF
_IV: Final = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_CHUNK_START: Final = 1 << 0
_CHUNK_END: Final = 1 << 1
_PARENT: Final = 1 << 2
_ROOT: Final = 1 << 3
_BLOCK_LEN: Final = 64
_CHUNK_LEN: Final = 1024
_PERMUTATION: Final = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)


def _schedules() -> tuple[tuple[int, ...], ...]:
    """The message-word order of each of the 7 rounds (the permutation applied r times)."""
    order = tuple(range(16))
    rounds = []
    for _ in range(7):
        rounds.append(order)
        order = tuple(order[_PERMUTATION[i]] for i in range(16))
    return tuple(rounds)


_SCHEDULE: Final = _schedules()


def _compress(cv: tuple[int, ...], m: tuple[int, ...], counter: int, block_len: int, flags: int) -> tuple[int, ...]:
    """The compression function (BLAKE3 paper §2.2): 16 output words; the first 8 are the new chaining value."""
    v0, v1, v2, v3, v4, v5, v6, v7 = cv
    v8, v9, v10, v11 = _IV[0], _IV[1], _IV[2], _IV[3]
    v12, v13, v14, v15 = counter & _M, (counter >> 32) & _M, block_len, flags
    for s in _SCHEDULE:
        # Columns: G(0,4,8,12) G(1,5,9,13) G(2,6,10,14) G(3,7,11,15)
        v0 = (v0 + v4 + m[s[0]]) & _M; v12 ^= v0; v12 = ((v12 >> 16) | (v12 << 16)) & _M  # noqa: E702
        v8 = (v8 + v12) & _M; v4 ^= v8; v4 = ((v4 >> 12) | (v4 << 20)) & _M  # noqa: E702
        v0 = (v0 + v4 + m[s[1]]) & _M; v12 ^= v0; v12 = ((v12 >> 8) | (v12 << 24)) & _M  # noqa: E702
        v8 = (v8 + v12) & _M; v4 ^= v8; v4 = ((v4 >> 7) | (v4 << 25)) & _M  # noqa: E702
        v1 = (v1 + v5 + m[s[2]]) & _M; v13 ^= v1; v13 = ((v13 >> 16) | (v13 << 16)) & _M  # noqa: E702
        v9 = (v9 + v13) & _M; v5 ^= v9; v5 = ((v5 >> 12) | (v5 << 20)) & _M  # noqa: E702
        v1 = (v1 + v5 + m[s[3]]) & _M; v13 ^= v1; v13 = ((v13 >> 8) | (v13 << 24)) & _M  # noqa: E702
        v9 = (v9 + v13) & _M; v5 ^= v9; v5 = ((v5 >> 7) | (v5 << 25)) & _M  # noqa: E702
        v2 = (v2 + v6 + m[s[4]]) & _M; v14 ^= v2; v14 = ((v14 >> 16) | (v14 << 16)) & _M  # noqa: E702
        v10 = (v10 + v14) & _M; v6 ^= v10; v6 = ((v6 >> 12) | (v6 << 20)) & _M  # noqa: E702
        v2 = (v2 + v6 + m[s[5]]) & _M; v14 ^= v2; v14 = ((v14 >> 8) | (v14 << 24)) & _M  # noqa: E702
        v10 = (v10 + v14) & _M; v6 ^= v10; v6 = ((v6 >> 7) | (v6 << 25)) & _M  # noqa: E702
        v3 = (v3 + v7 + m[s[6]]) & _M; v15 ^= v3; v15 = ((v15 >> 16) | (v15 << 16)) & _M  # noqa: E702
        v11 = (v11 + v15) & _M; v7 ^= v11; v7 = ((v7 >> 12) | (v7 << 20)) & _M  # noqa: E702
        v3 = (v3 + v7 + m[s[7]]) & _M; v15 ^= v3; v15 = ((v15 >> 8) | (v15 << 24)) & _M  # noqa: E702
        v11 = (v11 + v15) & _M; v7 ^= v11; v7 = ((v7 >> 7) | (v7 << 25)) & _M  # noqa: E702
        # Diagonals: G(0,5,10,15) G(1,6,11,12) G(2,7,8,13) G(3,4,9,14)
        v0 = (v0 + v5 + m[s[8]]) & _M; v15 ^= v0; v15 = ((v15 >> 16) | (v15 << 16)) & _M  # noqa: E702
        v10 = (v10 + v15) & _M; v5 ^= v10; v5 = ((v5 >> 12) | (v5 << 20)) & _M  # noqa: E702
        v0 = (v0 + v5 + m[s[9]]) & _M; v15 ^= v0; v15 = ((v15 >> 8) | (v15 << 24)) & _M  # noqa: E702
        v10 = (v10 + v15) & _M; v5 ^= v10; v5 = ((v5 >> 7) | (v5 << 25)) & _M  # noqa: E702
        v1 = (v1 + v6 + m[s[10]]) & _M; v12 ^= v1; v12 = ((v12 >> 16) | (v12 << 16)) & _M  # noqa: E702
        v11 = (v11 + v12) & _M; v6 ^= v11; v6 = ((v6 >> 12) | (v6 << 20)) & _M  # noqa: E702
        v1 = (v1 + v6 + m[s[11]]) & _M; v12 ^= v1; v12 = ((v12 >> 8) | (v12 << 24)) & _M  # noqa: E702
        v11 = (v11 + v12) & _M; v6 ^= v11; v6 = ((v6 >> 7) | (v6 << 25)) & _M  # noqa: E702
        v2 = (v2 + v7 + m[s[12]]) & _M; v13 ^= v2; v13 = ((v13 >> 16) | (v13 << 16)) & _M  # noqa: E702
        v8 = (v8 + v13) & _M; v7 ^= v8; v7 = ((v7 >> 12) | (v7 << 20)) & _M  # noqa: E702
        v2 = (v2 + v7 + m[s[13]]) & _M; v13 ^= v2; v13 = ((v13 >> 8) | (v13 << 24)) & _M  # noqa: E702
        v8 = (v8 + v13) & _M; v7 ^= v8; v7 = ((v7 >> 7) | (v7 << 25)) & _M  # noqa: E702
        v3 = (v3 + v4 + m[s[14]]) & _M; v14 ^= v3; v14 = ((v14 >> 16) | (v14 << 16)) & _M  # noqa: E702
        v9 = (v9 + v14) & _M; v4 ^= v9; v4 = ((v4 >> 12) | (v4 << 20)) & _M  # noqa: E702
        v3 = (v3 + v4 + m[s[15]]) & _M; v14 ^= v3; v14 = ((v14 >> 8) | (v14 << 24)) & _M  # noqa: E702
        v9 = (v9 + v14) & _M; v4 ^= v9; v4 = ((v4 >> 7) | (v4 << 25)) & _M  # noqa: E702
    return (
        v0 ^ v8, v1 ^ v9, v2 ^ v10, v3 ^ v11, v4 ^ v12, v5 ^ v13, v6 ^ v14, v7 ^ v15,
        v8 ^ cv[0], v9 ^ cv[1], v10 ^ cv[2], v11 ^ cv[3], v12 ^ cv[4], v13 ^ cv[5], v14 ^ cv[6], v15 ^ cv[7],
    )  # fmt: skip


def _words(block: bytes) -> tuple[int, ...]:
    """A block (at most 64 bytes, zero-padded) as 16 little-endian words."""
    if len(block) < _BLOCK_LEN:
        block = block + bytes(_BLOCK_LEN - len(block))
    return tuple(int.from_bytes(block[i : i + 4], "little") for i in range(0, _BLOCK_LEN, 4))


class _Output:
    """The inputs of a compression not yet done: a chunk's last block or a parent node (BLAKE3 paper §2.6)."""

    __slots__ = ("cv", "block", "counter", "block_len", "flags")

    def __init__(self, cv: tuple[int, ...], block: tuple[int, ...], counter: int, block_len: int, flags: int) -> None:
        self.cv, self.block, self.counter, self.block_len, self.flags = cv, block, counter, block_len, flags

    def chaining_value(self) -> tuple[int, ...]:
        return _compress(self.cv, self.block, self.counter, self.block_len, self.flags)[:8]

    def root_bytes(self, length: int) -> bytes:
        out = bytearray()
        counter = 0
        while len(out) < length:
            words = _compress(self.cv, self.block, counter, self.block_len, self.flags | _ROOT)
            out += b"".join(w.to_bytes(4, "little") for w in words)
            counter += 1
        return bytes(out[:length])


def _chunk_output(chunk: bytes, chunk_index: int) -> _Output:
    """Compresses every block of one chunk but the last (BLAKE3 paper §2.4); returns the last as an output."""
    cv: tuple[int, ...] = _IV
    blocks = max(1, (len(chunk) + _BLOCK_LEN - 1) // _BLOCK_LEN)
    for b in range(blocks - 1):
        flags = _CHUNK_START if b == 0 else 0
        cv = _compress(cv, _words(chunk[b * _BLOCK_LEN : (b + 1) * _BLOCK_LEN]), chunk_index, _BLOCK_LEN, flags)[:8]
    last = chunk[(blocks - 1) * _BLOCK_LEN :]
    flags = _CHUNK_END | (_CHUNK_START if blocks == 1 else 0)
    return _Output(cv, _words(last), chunk_index, len(last), flags)


def _parent_output(left: tuple[int, ...], right: tuple[int, ...]) -> _Output:
    return _Output(_IV, left + right, 0, _BLOCK_LEN, _PARENT)


def blake3(data: bytes, length: int = 32) -> bytes:
    """BLAKE3 hash mode of ``data``; ``length`` bytes of output (32 by default, more is the XOF)."""
    view = memoryview(data).cast("B")
    total = len(view)
    chunks = max(1, (total + _CHUNK_LEN - 1) // _CHUNK_LEN)
    stack: list[tuple[int, ...]] = []
    for index in range(chunks - 1):
        cv = _chunk_output(bytes(view[index * _CHUNK_LEN : (index + 1) * _CHUNK_LEN]), index).chaining_value()
        # BLAKE3 paper §2.5: merge completed subtrees — one merge per trailing zero bit of the chunk count.
        done = index + 1
        while done & 1 == 0:
            cv = _parent_output(stack.pop(), cv).chaining_value()
            done >>= 1
        stack.append(cv)
    output = _chunk_output(bytes(view[(chunks - 1) * _CHUNK_LEN :]), chunks - 1)
    while stack:
        output = _parent_output(stack.pop(), output.chaining_value())
    return output.root_bytes(length)
