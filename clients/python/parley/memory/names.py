"""Names and limits of shared memory (docs/PROTOCOL.md §18.2): memory ids, segment ids, sizes, access levels.

Every boundary checks them: the client before it sends, and again on what the store returns.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from ..errors import SharedMemoryError
from ..identity import MAX_CERTIFICATE_BYTES, is_agent_id

#: ``mem-`` and 32 lowercase hex digits (16 bytes of BLAKE3, §18.4); also a valid agent id.
MEMORY_ID_RE: Final = re.compile(r"mem-[0-9a-f]{32}")
#: 1..128 bytes of ``[a-z0-9._:/-]``, starting with ``[a-z0-9]``.
SEGMENT_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,127}")

CREATION_NONCE_BYTES: Final = 16
EPOCH_KEY_BYTES: Final = 32
HASH_BYTES: Final = 32
PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
REQUEST_NONCE_BYTES: Final = 16
SERIAL_BYTES: Final = 16
#: nonce (24) ‖ the previous epoch key (32) ‖ tag (16).
BACK_LINK_BYTES: Final = 72
MAX_SEGMENT_PLAINTEXT_BYTES: Final = 1024 * 1024
#: The plaintext plus nonce and tag.
MAX_SEGMENT_CIPHERTEXT_BYTES: Final = MAX_SEGMENT_PLAINTEXT_BYTES + 40
MAX_MEMBERSHIP_ENTRIES: Final = 4096
MAX_MEMBERS: Final = 256
MAX_EPOCHS: Final = 4096
MAX_U32: Final = 0xFFFF_FFFF
#: Times and versions are at most 2^53 − 1 (what every implementation represents exactly).
MAX_SAFE_INTEGER: Final = (1 << 53) - 1
#: Allowed skew of request and record timestamps against the store's clock, ms (§18.2: ±60 s). Two times stamped
#: by different parties, each within the skew of the store's clock, differ by up to twice this.
MEMORY_CLOCK_SKEW_MS: Final = 60_000
#: Page sizes the client asks for (§18.2: list pages 1..500 memories, 1..1000 segments).
LIST_MEMORIES_PAGE: Final = 500
LIST_SEGMENTS_PAGE: Final = 1000
#: The most memories :meth:`MemoryClient.list` accepts from a store (200 pages of 500): a store that pages on
#: beyond, repeats a page token or sends a page larger than asked for is refused with ``malformed``.
MAX_LISTED_MEMORIES: Final = 100_000
#: Segments one memory holds when the store reports no quota (the default ``maxSegmentsPerMemory``).
DEFAULT_MAX_SEGMENTS: Final = 10_000
#: The most segments :meth:`MemoryClient.segments` accepts whatever quota the store reports (each costs a
#: signature check). A listing takes at most the memory's quota as reported (or DEFAULT_MAX_SEGMENTS) and two
#: pages of room; a store that pages on beyond is refused with ``malformed``.
MAX_LISTED_SEGMENTS: Final = 1_000_000
#: Memories whose highest log version, head hash and epoch a client remembers after their verified state
#: left its cache (to detect a rollback when it loads them again, §18.12); the oldest are forgotten first.
MAX_REMEMBERED_MEMORIES: Final = 100_000
#: Largest sealed key of a key copy (§18.6): 48 bytes of sealed-box overhead and the longest wrap plaintext,
#: str("parley/v1/memory-epoch-key") ‖ str(memory_id) ‖ u32(epoch) ‖ str(member_id ≤ 128) ‖ key (32).
MAX_SEALED_KEY_BYTES: Final = 48 + 4 + 26 + 4 + 36 + 4 + 4 + 128 + 32


# --- the largest answer (§18.2; packages/memory/src/limits.ts) -----------------------------------------
# Field numbers are ≤ 15 (one-byte tags); a varint field up to ``max`` is 1 + varint(max) bytes, a string,
# bytes or message field of ``n`` bytes 1 + varint(n) + n. Times ≤ 2^53 − 1, versions ≤ 4096, epochs ≤ 2^32 − 1.


def _varint_bytes(value: int) -> int:
    n = 1
    while value >= 128:
        value >>= 7
        n += 1
    return n


def _scalar(maximum: int) -> int:
    return 1 + _varint_bytes(maximum)


def _delimited(length: int) -> int:
    return 1 + _varint_bytes(length) + length


_AGENT_ID: Final = 128
_ENUM: Final = 3

#: A MembershipEntry other than the CREATE (which adds an 18-byte creation nonce field): 421 bytes.
MAX_MEMBERSHIP_ENTRY_BYTES: Final = (
    _scalar(MAX_MEMBERSHIP_ENTRIES)
    + _delimited(HASH_BYTES)
    + _scalar(_ENUM)
    + _delimited(_AGENT_ID)
    + _scalar(_ENUM)
    + _delimited(PUBLIC_KEY_BYTES)
    + 2 * _scalar(MAX_SAFE_INTEGER)
    + _delimited(_AGENT_ID)
    + _delimited(SIGNATURE_BYTES)
)
_MAX_CREATE_ENTRY_BYTES: Final = MAX_MEMBERSHIP_ENTRY_BYTES + _delimited(CREATION_NONCE_BYTES)
#: An EpochRecord: 357 bytes.
MAX_EPOCH_RECORD_BYTES: Final = (
    _scalar(MAX_U32)
    + _delimited(HASH_BYTES)
    + _delimited(BACK_LINK_BYTES)
    + _scalar(MAX_MEMBERSHIP_ENTRIES)
    + _delimited(HASH_BYTES)
    + _scalar(MAX_SAFE_INTEGER)
    + _delimited(_AGENT_ID)
    + _delimited(SIGNATURE_BYTES)
)
#: A KeyWrap: 657 bytes.
MAX_KEY_WRAP_BYTES: Final = _scalar(MAX_U32) + 2 * _delimited(_AGENT_ID) + _delimited(PUBLIC_KEY_BYTES) + _delimited(MAX_SEALED_KEY_BYTES) + _delimited(SIGNATURE_BYTES)
#: A MemoryMember with its certificate (at most 4096 bytes: the store refuses a larger one): 4275 bytes.
MAX_MEMORY_MEMBER_BYTES: Final = _delimited(_AGENT_ID) + _scalar(_ENUM) + _delimited(PUBLIC_KEY_BYTES) + _scalar(MAX_SAFE_INTEGER) + _delimited(MAX_CERTIFICATE_BYTES)
_MAX_SUMMARY_BYTES: Final = _delimited(36) + _delimited(_AGENT_ID) + _scalar(_ENUM) + 2 * _scalar(MAX_SAFE_INTEGER) + _scalar(MAX_MEMBERSHIP_ENTRIES) + _scalar(MAX_U32)
_MAX_USAGE_BYTES: Final = 8 * (1 + 10)
#: Epoch records a memory keeps at most (§18.5): MAX_EPOCHS, and one per log entry (a REVOKE's, a required rotation).
MAX_EPOCH_RECORDS: Final = MAX_EPOCHS + MAX_MEMBERSHIP_ENTRIES
#: The largest valid GetMemoryResponse, encoded: 5,781,963 bytes (summary 201; the CREATE 442 and 4095
#: entries × 424; 256 members × 4278; 8192 epochs × 360; the key copy 660; usage 90; rotation_required 2).
MAX_GET_MEMORY_RESPONSE_BYTES: Final = (
    _delimited(_MAX_SUMMARY_BYTES)
    + _delimited(_MAX_CREATE_ENTRY_BYTES)
    + (MAX_MEMBERSHIP_ENTRIES - 1) * _delimited(MAX_MEMBERSHIP_ENTRY_BYTES)
    + MAX_MEMBERS * _delimited(MAX_MEMORY_MEMBER_BYTES)
    + MAX_EPOCH_RECORDS * _delimited(MAX_EPOCH_RECORD_BYTES)
    + _delimited(MAX_KEY_WRAP_BYTES)
    + _delimited(_MAX_USAGE_BYTES)
    + _scalar(1)
)
#: A MemoryService client's receive limit: the largest answer (GetMemory's; a ReadSegment carries one
#: ciphertext) and 64 KiB: 5,847,499 bytes.
MEMORY_MAX_RECEIVE_BYTES: Final = max(MAX_GET_MEMORY_RESPONSE_BYTES, 2 * MAX_SEGMENT_CIPHERTEXT_BYTES) + 65_536
#: Its send limit: the largest request is a WriteSegment (one ciphertext and its record).
MEMORY_MAX_SEND_BYTES: Final = 2 * MAX_SEGMENT_CIPHERTEXT_BYTES + 65_536

# Wire values of proto/parley/v1/memory.proto.
ACCESS_UNSPECIFIED: Final = 0
ACCESS_READ: Final = 1
ACCESS_WRITE: Final = 2
ACCESS_ADMIN: Final = 3
CHANGE_CREATE: Final = 1
CHANGE_GRANT: Final = 2
CHANGE_REVOKE: Final = 3

AccessLevel = Literal["read", "write", "admin"]
_LEVELS: Final[dict[str, int]] = {"read": ACCESS_READ, "write": ACCESS_WRITE, "admin": ACCESS_ADMIN}
_NAMES: Final[dict[int, AccessLevel]] = {ACCESS_READ: "read", ACCESS_WRITE: "write", ACCESS_ADMIN: "admin"}


def fail(code: str, detail: str, **kw: object) -> SharedMemoryError:
    """A :class:`SharedMemoryError` to raise (``raise fail(...)``)."""
    return SharedMemoryError(code, detail, **kw)  # type: ignore[arg-type]


def is_memory_id(value: object) -> bool:
    return isinstance(value, str) and MEMORY_ID_RE.fullmatch(value) is not None


def is_segment_id(value: object) -> bool:
    return isinstance(value, str) and SEGMENT_ID_RE.fullmatch(value) is not None


def assert_memory_id(value: object, name: str = "memory_id") -> str:
    if not is_memory_id(value):
        raise fail("malformed", f'{name} must be "mem-" and 32 lowercase hex digits')
    assert isinstance(value, str)
    return value


def assert_segment_id(value: object, name: str = "segment_id") -> str:
    if not is_segment_id(value):
        raise fail("malformed", f"{name} must be 1..128 chars of [a-z0-9._:/-] starting with [a-z0-9]")
    assert isinstance(value, str)
    return value


def assert_agent(value: object, name: str) -> str:
    if not is_agent_id(value):
        raise fail("malformed", f"{name} must be an agent id (1..128 chars of [a-z0-9._:-] starting with [a-z0-9])")
    assert isinstance(value, str)
    return value


def access_of(level: str) -> int:
    """The wire value of ``'read'``, ``'write'`` or ``'admin'``; ``malformed`` otherwise."""
    if not isinstance(level, str) or level not in _LEVELS:
        raise fail("malformed", "access must be 'read', 'write' or 'admin'")
    return _LEVELS[level]


def level_of(access: int) -> AccessLevel:
    """The level name of a wire value; ``malformed`` for UNSPECIFIED or an unknown value."""
    name = _NAMES.get(access)
    if name is None:
        raise fail("malformed", f"access level {access} is not defined")
    return name
