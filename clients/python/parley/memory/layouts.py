"""Every byte string shared memory signs, seals, hashes or authenticates (docs/PROTOCOL.md §18.3–§18.8),
built with :class:`parley.layout.Layout` (§2). Nothing here signs or hashes protobuf bytes except the
request digest of §18.8, which hashes the exact request bytes sent, as §15.3 does.

The record arguments are ``parley.v1`` messages (``MembershipEntry``, ``EpochRecord``, ``KeyWrap``,
``WriteRecord``); only their fields are read, never their encoding.
"""

from __future__ import annotations

from typing import Any, Final

from .. import crypto
from ..layout import Layout
from .names import CREATION_NONCE_BYTES, EPOCH_KEY_BYTES, HASH_BYTES, PUBLIC_KEY_BYTES, REQUEST_NONCE_BYTES, SERIAL_BYTES, SIGNATURE_BYTES, fail

MEMORY_ID_DOMAIN: Final = "parley/v1/memory-id"
MEMBERSHIP_DOMAIN: Final = "parley/v1/memory-membership"
MEMBERSHIP_HASH_DOMAIN: Final = "parley/v1/memory-membership-hash"
KEY_COMMITMENT_DOMAIN: Final = "parley/v1/memory-key-commitment"
BACK_LINK_DOMAIN: Final = "parley/v1/memory-back-link"
EPOCH_DOMAIN: Final = "parley/v1/memory-epoch"
EPOCH_KEY_DOMAIN: Final = "parley/v1/memory-epoch-key"
KEY_WRAP_DOMAIN: Final = "parley/v1/memory-key-wrap"
SEGMENT_DOMAIN: Final = "parley/v1/memory-segment"
WRITE_DOMAIN: Final = "parley/v1/memory-write"
REQUEST_DOMAIN: Final = "parley/v1/memory-request"

#: previous_hash of membership entry 1.
ZERO_HASH: Final = bytes(HASH_BYTES)


def memory_id_of(owner_id: str, owner_public_key: bytes, creation_nonce: bytes) -> str:
    """§18.4: ``"mem-" ‖ hex(BLAKE3(str(domain) ‖ str(owner_id) ‖ fixed32(owner_key) ‖ fixed16(nonce))[0..16])``."""
    digest = crypto.blake3(
        Layout(MEMORY_ID_DOMAIN)
        .str(owner_id)
        .fixed(owner_public_key, PUBLIC_KEY_BYTES, "owner_public_key")
        .fixed(creation_nonce, CREATION_NONCE_BYTES, "creation_nonce")
        .bytes()
    )
    return "mem-" + digest[:16].hex()


def membership_layout(memory_id: str, e: Any) -> bytes:
    """The signed membership layout (§18.4)."""
    return (
        Layout(MEMBERSHIP_DOMAIN)
        .str(memory_id)
        .u64(e.version)
        .fixed(e.previous_hash, HASH_BYTES, "previous_hash")
        .u8(e.change)
        .str(e.member_id)
        .u8(e.access)
        .fixed(e.member_public_key, PUBLIC_KEY_BYTES, "member_public_key")
        .i64(e.expires_at_ms)
        .i64(e.timestamp_ms)
        .str(e.signer_id)
        .var(e.creation_nonce, "creation_nonce")
        .bytes()
    )


def membership_entry_hash(memory_id: str, e: Any) -> bytes:
    """entry_hash (§18.4): ``BLAKE3(str(domain) ‖ var(membership layout) ‖ fixed64(signature))``."""
    return crypto.blake3(Layout(MEMBERSHIP_HASH_DOMAIN).var(membership_layout(memory_id, e)).fixed(e.signature, SIGNATURE_BYTES, "signature").bytes())


def key_commitment(memory_id: str, epoch: int, key: bytes | bytearray) -> bytes:
    """§18.5: ``BLAKE3(str(domain) ‖ str(memory_id) ‖ u32(epoch) ‖ fixed32(key))``."""
    return crypto.blake3(Layout(KEY_COMMITMENT_DOMAIN).str(memory_id).u32(epoch).fixed(key, EPOCH_KEY_BYTES, "key").bytes())


def back_link_ad(memory_id: str, epoch: int) -> bytes:
    """Associated data of the back link of ``epoch`` (which seals the key of ``epoch − 1``)."""
    return Layout(BACK_LINK_DOMAIN).str(memory_id).u32(epoch).bytes()


def epoch_layout(memory_id: str, r: Any) -> bytes:
    """The signed epoch layout (§18.5)."""
    return (
        Layout(EPOCH_DOMAIN)
        .str(memory_id)
        .u32(r.epoch)
        .fixed(r.key_commitment, HASH_BYTES, "key_commitment")
        .var(r.back_link, "back_link")
        .u64(r.membership_version)
        .fixed(r.membership_hash, HASH_BYTES, "membership_hash")
        .i64(r.created_at_ms)
        .str(r.creator_id)
        .bytes()
    )


def wrap_plaintext(memory_id: str, epoch: int, member_id: str, key: bytes | bytearray) -> bytearray:
    """What a key copy seals (§18.6); it names what the key is for, so a copy cannot be moved elsewhere."""
    return bytearray(Layout(EPOCH_KEY_DOMAIN).str(memory_id).u32(epoch).str(member_id).fixed(key, EPOCH_KEY_BYTES, "key").bytes())


def key_from_wrap_plaintext(plaintext: bytes | bytearray, memory_id: str, epoch: int, member_id: str) -> bytearray:
    """The key inside a wrap plaintext after checking every other field; ``decrypt_failed`` otherwise."""
    expected = wrap_plaintext(memory_id, epoch, member_id, bytes(EPOCH_KEY_BYTES))
    prefix = len(expected) - EPOCH_KEY_BYTES
    if len(plaintext) != len(expected) or not crypto.constant_time_equal(bytes(plaintext[:prefix]), bytes(expected[:prefix])):
        raise fail("decrypt_failed", "key copy is not for this memory, epoch and member")
    return bytearray(plaintext[prefix:])


def key_wrap_layout(memory_id: str, w: Any) -> bytes:
    """The signed key-wrap layout (§18.6)."""
    return (
        Layout(KEY_WRAP_DOMAIN)
        .str(memory_id)
        .u32(w.epoch)
        .str(w.member_id)
        .fixed(w.member_public_key, PUBLIC_KEY_BYTES, "member_public_key")
        .fixed(crypto.blake3(bytes(w.sealed_key)), HASH_BYTES, "sealed_key_digest")
        .str(w.signer_id)
        .bytes()
    )


def segment_ad(memory_id: str, segment_id: str, version: int, key_epoch: int, writer_id: str) -> bytes:
    """Associated data of a segment ciphertext (§18.7)."""
    return Layout(SEGMENT_DOMAIN).str(memory_id).str(segment_id).u64(version).u32(key_epoch).str(writer_id).bytes()


def write_layout(memory_id: str, r: Any) -> bytes:
    """The signed write layout (§18.7)."""
    return (
        Layout(WRITE_DOMAIN)
        .str(memory_id)
        .str(r.segment_id)
        .u64(r.version)
        .u64(r.previous_version)
        .u32(r.key_epoch)
        .fixed(r.ciphertext_digest, HASH_BYTES, "ciphertext_digest")
        .u64(r.ciphertext_bytes)
        .str(r.writer_id)
        .i64(r.timestamp_ms)
        .i64(r.expires_at_ms)
        .bytes()
    )


def memory_request_layout(service_id: str, path: str, body: bytes, timestamp_ms: int, nonce: bytes, agent_id: str, serial: bytes) -> bytes:
    """The signed request layout (§18.8): the store's name, the method, BLAKE3 of the exact request bytes, …"""
    return (
        Layout(REQUEST_DOMAIN)
        .str(service_id)
        .str(path)
        .fixed(crypto.blake3(body), HASH_BYTES, "request_digest")
        .i64(timestamp_ms)
        .fixed(nonce, REQUEST_NONCE_BYTES, "nonce")
        .str(agent_id)
        .fixed(serial, SERIAL_BYTES, "serial")
        .bytes()
    )
