"""Noise SymmetricState (revision 34, §5.2): the chaining key ``ck``, the handshake hash ``h`` and a CipherState."""

from __future__ import annotations

from .. import crypto
from .cipher_state import CipherState
from .protocol import NoiseProtocol


class SymmetricState:
    """``repr`` shows no key; :meth:`destroy` wipes ``ck`` and the cipher key."""

    __slots__ = ("_protocol", "_ck", "h", "_cipher")

    def __init__(self, protocol: NoiseProtocol) -> None:
        self._protocol = protocol
        self.initialize_symmetric(protocol.name.encode("ascii"))

    def initialize_symmetric(self, protocol_name: bytes) -> None:
        """InitializeSymmetric: h = name zero-padded to HASHLEN (or HASH(name) if longer); ck = h; k empty."""
        hashlen = self._protocol.hash.hashlen
        if len(protocol_name) <= hashlen:
            self.h = protocol_name + bytes(hashlen - len(protocol_name))
        else:
            self.h = self._protocol.hash.hash(protocol_name)
        self._ck = bytearray(self.h)
        self._cipher = CipherState()

    def mix_key(self, input_key_material: bytes | bytearray) -> None:
        """MixKey: ck, temp_k = HKDF(ck, ikm, 2); k = temp_k truncated to 32 bytes (§5.2); n = 0."""
        ck, temp_k = self._protocol.hash.hkdf(self._ck, input_key_material, 2)
        crypto.wipe(self._ck)
        self._ck = ck
        self._cipher.initialize_key(temp_k[:32])
        crypto.wipe(temp_k)

    def mix_hash(self, data: bytes) -> None:
        """MixHash: h = HASH(h ‖ data)."""
        self.h = self._protocol.hash.hash(self.h + bytes(data))

    def get_handshake_hash(self) -> bytes:
        """GetHandshakeHash()."""
        return self.h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """EncryptAndHash: ciphertext = EncryptWithAd(h, plaintext); MixHash(ciphertext)."""
        ciphertext = self._cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """DecryptAndHash: plaintext = DecryptWithAd(h, ciphertext); MixHash(ciphertext)."""
        plaintext = self._cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def has_key(self) -> bool:
        return self._cipher.has_key()

    def split(self) -> tuple[CipherState, CipherState]:
        """Split(): two CipherStates from HKDF(ck, ε, 2), keys truncated to 32 bytes (§5.2)."""
        k1, k2 = self._protocol.hash.hkdf(self._ck, b"", 2)
        try:
            return CipherState(k1[:32]), CipherState(k2[:32])
        finally:
            crypto.wipe(k1)
            crypto.wipe(k2)

    def destroy(self) -> None:
        """Wipes ck and the cipher key."""
        crypto.wipe(self._ck)
        self._cipher.wipe()

    def __repr__(self) -> str:
        return f"SymmetricState({self._protocol.name}, has_key={self._cipher.has_key()})"
