"""The primitives (docs/PROTOCOL.md §4), each from one library.

- Ed25519 (RFC 8032, pure), X25519, ChaCha20-Poly1305 IETF (RFC 8439), Argon2id:
  libsodium through PyNaCl.
- HMAC-SHA256, BLAKE2b (inside Noise only) and constant-time comparison:
  Python's ``hmac`` and ``hashlib`` (OpenSSL / HACL*). libsodium's generic hash
  is BLAKE2b too, but Noise's HMAC construction needs the raw hash with its
  128-byte block, which ``hashlib`` gives directly.
- BLAKE3 in hash mode: the ``blake3`` package when it is importable, else the
  pure-Python fallback in :mod:`parley._blake3_fallback` (see the README for
  what it costs). :data:`BLAKE3_BACKEND` says which one is in use.

Nothing here is written by hand except that fallback. Verification functions
return ``False`` on malformed input rather than raising. Python cannot
guarantee that an immutable ``bytes`` is ever wiped; :func:`wipe` zeroes the
``bytearray`` buffers the SDK keeps its own secrets in, which is the best the
language allows (see the README, "Memory").
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from typing import Final, Literal

import nacl.bindings as _sodium
import nacl.exceptions

from .errors import ParleyError

try:  # pragma: no cover - depends on the environment
    import blake3 as _blake3_pkg  # type: ignore[import-not-found]

    def _blake3(data: bytes) -> bytes:
        return bytes(_blake3_pkg.blake3(data).digest())

    BLAKE3_BACKEND: Literal["blake3", "pure-python"] = "blake3"
except ImportError:  # pragma: no cover - depends on the environment
    from ._blake3_fallback import blake3 as _fallback

    def _blake3(data: bytes) -> bytes:
        return _fallback(data, 32)

    BLAKE3_BACKEND = "pure-python"

ED25519_PUBLIC_KEY_BYTES: Final = 32
ED25519_SEED_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
X25519_KEY_BYTES: Final = 32
AEAD_KEY_BYTES: Final = 32
AEAD_TAG_BYTES: Final = 16
HASH_BYTES: Final = 32


class CryptoError(ParleyError):
    """A primitive refused its input."""


def blake3(data: bytes) -> bytes:
    """BLAKE3 hash mode, 32-byte output."""
    return _blake3(bytes(data))


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG."""
    return os.urandom(n)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compares two byte strings in time that depends only on their lengths."""
    return _hmac.compare_digest(bytes(a), bytes(b))


def wipe(buffer: bytearray | memoryview) -> None:
    """Zeroes a mutable buffer in place (best effort: Python may hold other copies)."""
    buffer[:] = bytes(len(buffer))


# --- Ed25519 ---------------------------------------------------------------------------


class SigningKey:
    """An Ed25519 secret key. ``repr`` never shows key bytes; :meth:`wipe` zeroes them."""

    __slots__ = ("_sk", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != ED25519_SEED_BYTES:
            raise CryptoError("malformed", "an Ed25519 seed is 32 bytes")
        public_key, secret_key = _sodium.crypto_sign_seed_keypair(bytes(seed))
        self._sk = bytearray(secret_key)
        self.public_key: bytes = public_key

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(random_bytes(ED25519_SEED_BYTES))

    def sign(self, message: bytes) -> bytes:
        """A 64-byte detached signature over ``message``."""
        if not any(self._sk[:32]):
            raise CryptoError("malformed", "the signing key was wiped")
        signed = _sodium.crypto_sign(bytes(message), bytes(self._sk))
        return signed[:SIGNATURE_BYTES]

    def seed(self) -> bytes:
        """The 32-byte seed (handle with care)."""
        return bytes(self._sk[:32])

    def wipe(self) -> None:
        wipe(self._sk)

    def __repr__(self) -> str:
        return f"SigningKey(public_key={self.public_key.hex()})"


def ed25519_verify(signature: bytes, message: bytes, public_key: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``; False on malformed input."""
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_BYTES:
        return False
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != ED25519_PUBLIC_KEY_BYTES:
        return False
    try:
        _sodium.crypto_sign_open(bytes(signature) + bytes(message), bytes(public_key))
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError, ValueError, TypeError):
        return False


# --- X25519 --------------------------------------------------------------------------------


def x25519_keypair(private: bytes | None = None) -> tuple[bytearray, bytes]:
    """An X25519 key pair ``(private, public)``; ``private`` is random unless given (tests)."""
    secret = bytearray(private if private is not None else random_bytes(X25519_KEY_BYTES))
    if len(secret) != X25519_KEY_BYTES:
        raise CryptoError("malformed", "an X25519 private key is 32 bytes")
    return secret, _sodium.crypto_scalarmult_base(bytes(secret))


def x25519(private: bytes | bytearray, public: bytes) -> bytes:
    """X25519(private, public). An all-zero result (a low-order point) is refused (``handshake_failed``)."""
    if len(public) != X25519_KEY_BYTES or len(private) != X25519_KEY_BYTES:
        raise CryptoError("handshake_failed", "X25519 keys are 32 bytes")
    try:
        shared = _sodium.crypto_scalarmult(bytes(private), bytes(public))
    except (nacl.exceptions.RuntimeError, RuntimeError) as error:  # libsodium refuses an all-zero output itself
        raise CryptoError("handshake_failed", "X25519 produced the all-zero value (low-order point)") from error
    if not any(shared):  # and so do we, whatever the library version does
        raise CryptoError("handshake_failed", "X25519 produced the all-zero value (low-order point)")
    return shared


# --- ChaCha20-Poly1305 (IETF) -----------------------------------------------------------------


def noise_nonce(n: int) -> bytes:
    """The 96-bit nonce of Noise §12.3 / PROTOCOL §4: 32 zero bits then ``n`` as little-endian 64 bits."""
    if not 0 <= n < 1 << 64:
        raise CryptoError("malformed", "nonce out of range")
    return bytes(4) + n.to_bytes(8, "little")


def aead_encrypt(key: bytes | bytearray, n: int, ad: bytes, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305-IETF encryption at counter ``n``: ciphertext ‖ 16-byte tag."""
    if len(key) != AEAD_KEY_BYTES:
        raise CryptoError("malformed", "an AEAD key is 32 bytes")
    return _sodium.crypto_aead_chacha20poly1305_ietf_encrypt(bytes(plaintext), bytes(ad), noise_nonce(n), bytes(key))


def aead_decrypt(key: bytes | bytearray, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    """ChaCha20-Poly1305-IETF decryption at counter ``n``; ``decrypt_failed`` when the tag does not verify."""
    if len(key) != AEAD_KEY_BYTES:
        raise CryptoError("malformed", "an AEAD key is 32 bytes")
    if len(ciphertext) < AEAD_TAG_BYTES:
        raise CryptoError("decrypt_failed", "ciphertext shorter than its tag")
    try:
        return _sodium.crypto_aead_chacha20poly1305_ietf_decrypt(bytes(ciphertext), bytes(ad), noise_nonce(n), bytes(key))
    except nacl.exceptions.CryptoError as error:
        raise CryptoError("decrypt_failed", "AEAD authentication failed") from error


# --- HMAC-SHA256 ---------------------------------------------------------------------------------


def hmac_sha256(key: bytes | bytearray, data: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104), 32 bytes."""
    return _hmac.new(bytes(key), bytes(data), hashlib.sha256).digest()


def hmac_sha256_verify(key: bytes | bytearray, data: bytes, tag: bytes) -> bool:
    """Whether ``tag`` is HMAC-SHA256(key, data), compared in constant time."""
    return len(tag) == 32 and _hmac.compare_digest(hmac_sha256(key, data), bytes(tag))


# --- Argon2id (key files, §15.2) ------------------------------------------------------------------

PWHASH_SALT_BYTES: Final = 16
PWHASH_OPS_RANGE: Final = (1, 16)
PWHASH_MEM_RANGE: Final = (8 * 1024, 1 << 30)


def argon2id(passphrase: bytes, salt: bytes, ops_limit: int, mem_limit: int) -> bytearray:
    """Argon2id v1.3 (libsodium ``crypto_pwhash``), 32 bytes; cost parameters outside §15.2's ranges are refused first."""
    if not PWHASH_OPS_RANGE[0] <= ops_limit <= PWHASH_OPS_RANGE[1] or not PWHASH_MEM_RANGE[0] <= mem_limit <= PWHASH_MEM_RANGE[1]:
        raise CryptoError("malformed", "Argon2id cost parameters out of range")
    if mem_limit % 1024 != 0:
        raise CryptoError("malformed", "Argon2id mem_limit must be a multiple of 1024")
    if len(salt) != PWHASH_SALT_BYTES:
        raise CryptoError("malformed", "Argon2id salt must be 16 bytes")
    return bytearray(
        _sodium.crypto_pwhash_alg(32, bytes(passphrase), bytes(salt), ops_limit, mem_limit, _sodium.crypto_pwhash_ALG_ARGON2ID13)
    )


# --- XChaCha20-Poly1305 IETF (shared memory, §18.3) ------------------------------------------------

XAEAD_NONCE_BYTES: Final = 24
#: nonce (24) + tag (16): what sealing adds to a plaintext.
XAEAD_OVERHEAD: Final = XAEAD_NONCE_BYTES + AEAD_TAG_BYTES


def xaead_seal(key: bytes | bytearray, plaintext: bytes, ad: bytes, *, nonce: bytes | None = None) -> bytes:
    """XChaCha20-Poly1305-IETF under a fresh random 24-byte nonce: ``nonce ‖ ciphertext ‖ tag``.

    ``nonce`` exists for the conformance vectors only; production code never passes it (§18.3: every
    nonce is fresh OS randomness, so several writers and restarts can share one key).
    """
    if len(key) != AEAD_KEY_BYTES:
        raise CryptoError("malformed", "an XChaCha20-Poly1305 key is 32 bytes")
    n = random_bytes(XAEAD_NONCE_BYTES) if nonce is None else bytes(nonce)
    if len(n) != XAEAD_NONCE_BYTES:
        raise CryptoError("malformed", "an XChaCha20-Poly1305 nonce is 24 bytes")
    return n + _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(bytes(plaintext), bytes(ad), n, bytes(key))


def xaead_open(key: bytes | bytearray, sealed: bytes, ad: bytes) -> bytes:
    """Opens ``nonce ‖ ciphertext ‖ tag``; ``decrypt_failed`` when it is too short or does not authenticate."""
    if len(key) != AEAD_KEY_BYTES:
        raise CryptoError("malformed", "an XChaCha20-Poly1305 key is 32 bytes")
    if len(sealed) < XAEAD_OVERHEAD:
        raise CryptoError("decrypt_failed", "ciphertext shorter than its nonce and tag")
    data = bytes(sealed)
    try:
        return _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(data[XAEAD_NONCE_BYTES:], bytes(ad), data[:XAEAD_NONCE_BYTES], bytes(key))
    except nacl.exceptions.CryptoError as error:
        raise CryptoError("decrypt_failed", "XChaCha20-Poly1305 authentication failed") from error


# --- Sealed boxes to identity keys (shared memory key copies, §18.3, §18.6) ------------------------

SEALED_BOX_OVERHEAD: Final = 48


def ed25519_pk_to_x25519(public_key: bytes) -> bytes:
    """libsodium ``crypto_sign_ed25519_pk_to_curve25519``; ``malformed`` for a key that does not convert."""
    if len(public_key) != ED25519_PUBLIC_KEY_BYTES:
        raise CryptoError("malformed", "an Ed25519 public key is 32 bytes")
    try:
        return bytes(_sodium.crypto_sign_ed25519_pk_to_curve25519(bytes(public_key)))
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, RuntimeError, ValueError) as error:
        raise CryptoError("malformed", "the Ed25519 public key does not convert to X25519") from error


def ed25519_sk_to_x25519(signing_key: SigningKey) -> bytearray:
    """libsodium ``crypto_sign_ed25519_sk_to_curve25519`` of a signing key (the caller wipes the result)."""
    if not any(signing_key._sk[:32]):
        raise CryptoError("malformed", "the signing key was wiped")
    return bytearray(_sodium.crypto_sign_ed25519_sk_to_curve25519(bytes(signing_key._sk)))


def sealed_box_seal(plaintext: bytes, ed25519_public_key: bytes) -> bytes:
    """libsodium ``crypto_box_seal`` (ephemeral X25519, XSalsa20-Poly1305) to the X25519 conversion of an Ed25519 key."""
    return bytes(_sodium.crypto_box_seal(bytes(plaintext), ed25519_pk_to_x25519(ed25519_public_key)))


def sealed_box_open(sealed: bytes, signing_key: SigningKey) -> bytearray:
    """libsodium ``crypto_box_seal_open`` with the X25519 conversion of an identity key; ``decrypt_failed`` otherwise."""
    if len(sealed) < SEALED_BOX_OVERHEAD:
        raise CryptoError("decrypt_failed", "sealed box shorter than its overhead")
    secret = ed25519_sk_to_x25519(signing_key)
    try:
        public = _sodium.crypto_scalarmult_base(bytes(secret))
        return bytearray(_sodium.crypto_box_seal_open(bytes(sealed), public, bytes(secret)))
    except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError, RuntimeError) as error:
        raise CryptoError("decrypt_failed", "sealed box does not open with this key") from error
    finally:
        wipe(secret)


def sealed_box_seal_with_ephemeral_for_testing_only(plaintext: bytes, ed25519_public_key: bytes, ephemeral_secret: bytes) -> bytes:
    """``crypto_box_seal`` with a given ephemeral key, built from libsodium's own parts exactly as it does
    (``epk ‖ crypto_box_easy(m, BLAKE2b-24(epk ‖ pk), pk, esk)``; PyNaCl's ``crypto_box`` returns exactly that), so the conformance vectors can be re-sealed
    byte for byte. Never use it outside the vectors: a sealed box's ephemeral key must be fresh."""
    recipient = ed25519_pk_to_x25519(ed25519_public_key)
    ephemeral_public = _sodium.crypto_scalarmult_base(bytes(ephemeral_secret))
    state = _sodium.crypto_generichash_blake2b_init(digest_size=24)
    _sodium.crypto_generichash_blake2b_update(state, ephemeral_public + recipient)
    nonce = _sodium.crypto_generichash_blake2b_final(state)
    return bytes(ephemeral_public) + bytes(_sodium.crypto_box(bytes(plaintext), nonce, recipient, bytes(ephemeral_secret)))
