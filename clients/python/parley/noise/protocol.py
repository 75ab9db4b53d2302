"""Noise protocol names and functions (Noise revision 34, §8 and §12).

A protocol is data: its handshake pattern (§7) and its DH, cipher and hash
functions (§4), parsed from a name such as ``Noise_XX_25519_ChaChaPoly_BLAKE2b``.
Parley uses exactly that name (docs/PROTOCOL.md §4); the SHA256 variant is here
so the same code can be checked against every XX vector of
``/work/shared/vectors/noise-xx.json``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from .. import crypto
from ..errors import SessionError

#: §7.5: XX, one tuple of tokens per handshake message, initiator first.
PATTERNS: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "XX": (("e",), ("e", "ee", "s", "es"), ("s", "se")),
}

#: Noise §3: the largest Noise message.
MAX_MESSAGE_BYTES: Final = 65535
#: The name Parley speaks (docs/PROTOCOL.md §4).
PARLEY_NOISE_PROTOCOL: Final = "Noise_XX_25519_ChaChaPoly_BLAKE2b"


@dataclass(frozen=True, slots=True)
class HashFunction:
    """A Noise hash function (§4.3): HASHLEN, BLOCKLEN and the hashlib constructor."""

    name: str
    hashlen: int
    blocklen: int
    hashlib_name: str

    def hash(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()

    def hmac(self, key: bytes | bytearray, data: bytes) -> bytes:
        """HMAC-HASH (RFC 2104) with this hash's block length (§4.3)."""
        return hmac.new(bytes(key), data, self.hashlib_name).digest()

    def hkdf(self, chaining_key: bytes | bytearray, ikm: bytes | bytearray, outputs: int) -> tuple[bytearray, ...]:
        """Noise §4.3 HKDF: 2 or 3 outputs of HASHLEN bytes each."""
        temp_key = bytearray(self.hmac(chaining_key, bytes(ikm)))
        try:
            out1 = bytearray(self.hmac(temp_key, b"\x01"))
            out2 = bytearray(self.hmac(temp_key, bytes(out1) + b"\x02"))
            if outputs == 2:
                return (out1, out2)
            out3 = bytearray(self.hmac(temp_key, bytes(out2) + b"\x03"))
            return (out1, out2, out3)
        finally:
            crypto.wipe(temp_key)


HASHES: Final = {
    "BLAKE2b": HashFunction("BLAKE2b", 64, 128, "blake2b"),
    "SHA256": HashFunction("SHA256", 32, 64, "sha256"),
}


@dataclass(frozen=True, slots=True)
class NoiseProtocol:
    """A parsed protocol name: pattern, DH ``25519``, cipher ``ChaChaPoly``, a hash."""

    name: str
    pattern: tuple[tuple[str, ...], ...]
    hash: HashFunction
    dhlen: int = 32


def parse_protocol_name(name: str) -> NoiseProtocol:
    """Parses ``Noise_<pattern>_25519_ChaChaPoly_<hash>`` (§8); anything else is ``malformed``."""
    parts = name.split("_") if isinstance(name, str) else []
    if len(parts) != 5 or parts[0] != "Noise" or parts[1] not in PATTERNS or parts[2] != "25519" or parts[3] != "ChaChaPoly" or parts[4] not in HASHES:
        raise SessionError("malformed", f"unsupported Noise protocol {name!r}")
    return NoiseProtocol(name, PATTERNS[parts[1]], HASHES[parts[4]])
