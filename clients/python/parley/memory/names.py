"""Names and limits of shared memory (docs/PROTOCOL.md §18.2): memory ids, segment ids, sizes, access levels.

Every boundary checks them: the client before it sends, and again on what the store returns.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from ..errors import SharedMemoryError
from ..identity import is_agent_id

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
