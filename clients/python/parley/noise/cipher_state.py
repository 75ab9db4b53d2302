"""Noise CipherState (revision 34, §5.1) with ChaChaPoly (§12.3).

``k`` is 32 bytes or empty; ``n`` a 64-bit counter. n = 2^64−1 is reserved:
reaching it makes every later Encrypt/Decrypt fail (§5.1). ``Rekey()`` sets
``k = REKEY(k)`` — the first 32 bytes of ENCRYPT(k, 2^64−1, ε, 0³²) (§4.2) — and
does NOT reset ``n`` (§5.1, §11.3). Parley also encrypts at an explicit nonce
(docs/PROTOCOL.md §7: message counters and the two reserved derivation
nonces), which never touches ``n``.
"""

from __future__ import annotations

from typing import Final

from .. import crypto
from ..errors import SessionError

MAX_NONCE: Final = (1 << 64) - 1
_ZEROS_32: Final = bytes(32)


class CipherState:
    """A key (or none) and a nonce counter. ``repr`` shows no key; :meth:`wipe` zeroes it."""

    __slots__ = ("_k", "n")

    def __init__(self, key: bytes | bytearray | None = None) -> None:
        self._k: bytearray | None = None
        self.n = 0
        if key is not None:
            self.initialize_key(key)

    # --- Noise §5.1 ---------------------------------------------------------------------

    def initialize_key(self, key: bytes | bytearray | None) -> None:
        """InitializeKey(key): sets k (empty when None) and n = 0."""
        self.wipe()
        if key is not None and len(key) != 32:
            raise SessionError("handshake_failed", "a CipherState key is 32 bytes")
        self._k = None if key is None else bytearray(key)
        self.n = 0

    def has_key(self) -> bool:
        """HasKey()."""
        return self._k is not None

    def set_nonce(self, nonce: int) -> None:
        """SetNonce(nonce)."""
        if not 0 <= nonce <= MAX_NONCE:
            raise SessionError("malformed", "nonce out of range")
        self.n = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """EncryptWithAd(ad, plaintext): ENCRYPT at n, then n += 1 (plaintext when there is no key)."""
        if self._k is None:
            return bytes(plaintext)
        if self.n >= MAX_NONCE:
            raise SessionError("nonce_exhausted", "CipherState nonce exhausted")
        ciphertext = crypto.aead_encrypt(self._k, self.n, ad, plaintext)
        self.n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DecryptWithAd(ad, ciphertext): DECRYPT at n, then n += 1; on failure nothing changes."""
        if self._k is None:
            return bytes(ciphertext)
        if self.n >= MAX_NONCE:
            raise SessionError("nonce_exhausted", "CipherState nonce exhausted")
        plaintext = crypto.aead_decrypt(self._k, self.n, ad, ciphertext)
        self.n += 1
        return plaintext

    def rekey(self) -> None:
        """Rekey(): k = REKEY(k) (§4.2: the first 32 bytes of ENCRYPT(k, 2^64−1, ε, 0³²)); n unchanged."""
        if self._k is None:
            raise SessionError("handshake_failed", "Rekey() without a key")
        block = bytearray(crypto.aead_encrypt(self._k, MAX_NONCE, b"", _ZEROS_32))
        crypto.wipe(self._k)
        self._k = block[:32]
        crypto.wipe(block)

    # --- Parley additions (docs/PROTOCOL.md §7) -----------------------------------------------

    def encrypt_at(self, nonce: int, ad: bytes, plaintext: bytes) -> bytes:
        """ENCRYPT(k, nonce, ad, plaintext) at an explicit nonce; n is not used or changed."""
        if self._k is None:
            raise SessionError("unknown_session", "no key")
        return crypto.aead_encrypt(self._k, nonce, ad, plaintext)

    def decrypt_at(self, nonce: int, ad: bytes, ciphertext: bytes) -> bytes:
        """DECRYPT(k, nonce, ad, ciphertext) at an explicit nonce (``decrypt_failed`` on a bad tag)."""
        if self._k is None:
            raise SessionError("unknown_session", "no key")
        return crypto.aead_decrypt(self._k, nonce, ad, ciphertext)

    def rekeyed(self) -> CipherState:
        """A new CipherState holding REKEY(k); this one is unchanged."""
        if self._k is None:
            raise SessionError("handshake_failed", "Rekey() without a key")
        copy = CipherState(self._k)
        copy.rekey()
        return copy

    def unsafe_key(self) -> bytes:
        """The key bytes, for sealed local state only (never logged, never sent)."""
        if self._k is None:
            raise SessionError("unknown_session", "no key")
        return bytes(self._k)

    def wipe(self) -> None:
        """Zeroes the key and forgets it."""
        if self._k is not None:
            crypto.wipe(self._k)
        self._k = None

    def __repr__(self) -> str:
        return f"CipherState(has_key={self._k is not None}, n={self.n})"
