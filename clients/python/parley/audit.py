"""Audit trail verification (docs/PROTOCOL.md §9): entry layouts, the hash chain, the RFC 9162
Merkle tree with BLAKE3, inclusion and consistency proofs, and signed tree heads.

An agent uses this to check what a gateway claims about its log: that an entry
(say, the one for a message it sent) is in a tree the gateway signed, and that a
later head extends an earlier one. Writing a log is the gateway's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from . import crypto
from .errors import ParleyError
from .layout import Layout

MAX_PROOF_HASHES: Final = 106
_EMPTY_ROOT: Final = crypto.blake3(b"")


def entry_layout(e: Any) -> bytes:
    """§9.2 ``entry_layout`` of an AuditMessage (or anything with its fields)."""
    return (
        Layout("parley/v1/audit-entry")
        .u64(e.index)
        .fixed(e.message_hash, 32, "message_hash")
        .str(e.sender_id)
        .str(e.recipient_id)
        .i64(e.timestamp_ms)
        .u32(e.message_type)
        .str(e.outcome)
        .fixed(e.previous_hash, 32, "previous_hash")
        .fixed(e.signer_key_id, 16, "signer_key_id")
        .bytes()
    )


def entry_hash(layout: bytes, signature: bytes) -> bytes:
    """§9.2: ``BLAKE3(str("parley/v1/audit-entry-hash") ‖ var(entry_layout) ‖ fixed64(signature))``."""
    if len(signature) != 64:
        raise ParleyError("malformed", "signature must be 64 bytes")
    return crypto.blake3(Layout("parley/v1/audit-entry-hash").var(layout).fixed(signature, 64, "signature").bytes())


def leaf_hash(layout: bytes, signature: bytes) -> bytes:
    """§9.3: ``BLAKE3(0x00 ‖ var(entry_layout) ‖ fixed64(signature))``."""
    return crypto.blake3(b"\x00" + len(layout).to_bytes(4, "big") + bytes(layout) + bytes(signature))


def node_hash(left: bytes, right: bytes) -> bytes:
    return crypto.blake3(b"\x01" + left + right)


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes (already ``0x00``-prefixed and hashed)."""
    if not leaves:
        return _EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def inclusion_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return inclusion_proof(leaves[:k], index) + [merkle_root(leaves[k:])]
    return inclusion_proof(leaves[k:], index - k) + [merkle_root(leaves[:k])]


def consistency_proof(leaves: list[bytes], first: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]); empty for m = 0 or m = n (§9.3)."""
    if first == 0 or first == len(leaves):
        return []

    def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [merkle_root(d)]
        k = _split(n)
        if m <= k:
            return subproof(m, d[:k], b) + [merkle_root(d[k:])]
        return subproof(m - k, d[k:], False) + [merkle_root(d[:k])]

    return subproof(first, leaves, True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size or len(proof) > MAX_PROOF_HASHES:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and crypto.constant_time_equal(r, root)


def verify_consistency(first: int, second: int, proof: list[bytes], first_root: bytes, second_root: bytes) -> bool:
    """RFC 9162 §2.1.4.2, plus §9.3: equal sizes need an empty proof and equal roots; from size 0 the old root is MTH({})."""
    if first > second or len(proof) > MAX_PROOF_HASHES:
        return False
    if first == second:
        return not proof and crypto.constant_time_equal(first_root, second_root)
    if first == 0:
        return not proof and crypto.constant_time_equal(first_root, _EMPTY_ROOT)
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: first_root is the first node
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and crypto.constant_time_equal(fr, first_root) and crypto.constant_time_equal(sr, second_root)


def tree_head_layout(tree_size: int, root_hash: bytes, timestamp_ms: int, signer_key_id: bytes) -> bytes:
    """§9.4."""
    return Layout("parley/v1/tree-head").u64(tree_size).fixed(root_hash, 32, "root_hash").i64(timestamp_ms).fixed(signer_key_id, 16, "signer_key_id").bytes()


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    signer_key_id: bytes
    signature: bytes

    def verify(self, public_key: bytes) -> bool:
        return crypto.ed25519_verify(self.signature, tree_head_layout(self.tree_size, self.root_hash, self.timestamp_ms, self.signer_key_id), public_key)
