"""Language-neutral byte layouts (docs/PROTOCOL.md §2).

Everything Parley signs, MACs or hashes is one of these layouts, rebuilt from
decoded fields — never protobuf bytes::

    u8(x)      1 byte
    u32(x)     4 bytes, big-endian, unsigned
    u64(x)     8 bytes, big-endian, unsigned
    i64(x)     8 bytes, big-endian, two's complement
    fixedN(b)  exactly N bytes, no length prefix (any other length is an error)
    var(b)     u32(len(b)) ‖ b
    str(s)     var(UTF-8(s))
    list(xs)   u32(count) ‖ str(x1) ‖ … ‖ str(xn)

Every layout starts with ``str(domain)``, an ASCII tag unique to the layout, so
the encoding is injective across layouts.
"""

from __future__ import annotations

import builtins
import re
import struct
from collections.abc import Iterable
from typing import Final

from .errors import ParleyError

_DOMAIN_RE: Final = re.compile(r"^[a-z0-9][a-z0-9/._-]{0,127}$")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_I64: Final = struct.Struct(">q")


class LayoutError(ParleyError):
    """A field does not fit its layout encoding (``malformed``)."""


def _fail(what: str) -> LayoutError:
    return LayoutError("malformed", what)


class Layout:
    """Builds one layout, field by field, starting with its domain tag.

    Example::

        >>> Layout("parley/v1/key-id").fixed(bytes(32), 32).bytes()[:4]
        b'\\x00\\x00\\x00\\x10'
    """

    __slots__ = ("_parts",)

    def __init__(self, domain: str) -> None:
        if not isinstance(domain, str) or not _DOMAIN_RE.match(domain):
            raise _fail("domain tag must be lowercase ASCII [a-z0-9/._-]")
        self._parts: list[bytes] = []
        self.str(domain)

    def u8(self, value: int) -> Layout:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFF:
            raise _fail("u8 out of range")
        self._parts.append(bytes((value,)))
        return self

    def u32(self, value: int) -> Layout:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF_FFFF:
            raise _fail("u32 out of range")
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Layout:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
            raise _fail("u64 out of range")
        self._parts.append(_U64.pack(value))
        return self

    def i64(self, value: int) -> Layout:
        if not isinstance(value, int) or isinstance(value, bool) or not -(1 << 63) <= value < 1 << 63:
            raise _fail("i64 out of range")
        self._parts.append(_I64.pack(value))
        return self

    def fixed(self, value: bytes, length: int, name: str = "field") -> Layout:
        """Exactly ``length`` bytes, no prefix."""
        if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) != length:
            raise _fail(f"{name} must be exactly {length} bytes")
        self._parts.append(bytes(value))
        return self

    def var(self, value: bytes, name: str = "field") -> Layout:
        """``u32(len) ‖ bytes``."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise _fail(f"{name} must be bytes")
        if len(value) > 0xFFFF_FFFF:
            raise _fail(f"{name} is too long for a layout")
        self._parts.append(_U32.pack(len(value)))
        self._parts.append(bytes(value))
        return self

    def str(self, value: builtins.str, name: builtins.str = "string") -> Layout:
        """``var(UTF-8(value))``; a string that is not valid Unicode (lone surrogates) is refused."""
        if not isinstance(value, str):
            raise _fail(f"{name} must be a string")
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise _fail(f"{name} is not valid UTF-8") from error
        return self.var(encoded, name)

    def list(self, values: Iterable[builtins.str], name: builtins.str = "list") -> Layout:
        """``u32(count) ‖ str(x)…``."""
        items = list(values)
        self.u32(len(items))
        for item in items:
            self.str(item, name)
        return self

    def bytes(self) -> builtins.bytes:
        """The encoded layout."""
        return b"".join(self._parts)
