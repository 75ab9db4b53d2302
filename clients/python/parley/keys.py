"""Loaders for what the registry CLI writes (docs/PROTOCOL.md §15.2, §3.3).

- :func:`load_key_file`: a §15.2 key file, plain or sealed under a passphrase
  (Argon2id + ChaCha20-Poly1305, libsodium through PyNaCl). Refused when group
  or others may read it (as ssh does), when the seed does not give the
  recorded public key, or when ``key_id`` does not match.
- :func:`load_certificate`: the output of ``parley-registry agent register ID --json``
  (its ``certificate.encoded``), or a file holding just that base64url line.
- :func:`load_identity`: both, checked against each other.

Errors: ``not_found`` (no file), ``permission_denied`` (mode too open, wrong or
missing passphrase), ``malformed`` (bad contents).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Final

from . import crypto
from .encoding import b64url_decode
from .errors import IdentityError, ParleyError
from .identity import decode_certificate, key_id
from .layout import Layout
from .session import LocalIdentity

KEY_FILE_TYPES: Final = ("parley-registry-issuer-key", "parley-operator-key", "parley-agent-key")
_SEALED_KEYS: Final = {"kdf", "ops_limit", "mem_limit", "salt", "ciphertext"}


def _bad(path: str | Path, what: str) -> IdentityError:
    return IdentityError("malformed", f"key file {path}: {what}")


def _read(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise IdentityError("not_found", f"{what} {path} does not exist") from error
    except PermissionError as error:
        raise IdentityError("permission_denied", f"{what} {path} is not readable by this user") from error
    except (OSError, UnicodeDecodeError) as error:
        raise IdentityError("unavailable", f"cannot read {what} {path}") from error


def sealed_key_ad(key_type: str, public_key: bytes) -> bytes:
    """§15.2: ``str("parley/v1/sealed-key-file") ‖ str(type) ‖ fixed32(public_key)``."""
    return Layout("parley/v1/sealed-key-file").str(key_type).fixed(public_key, 32, "public_key").bytes()


def load_key_file(path: str | Path, *, passphrase: str | bytes | None = None, key_type: str = "parley-agent-key") -> crypto.SigningKey:
    """Loads an Ed25519 key from a §15.2 key file (mode 0600 or stricter).

    A sealed file needs ``passphrase`` (or ``PARLEY_AGENT_PASSPHRASE`` in the
    environment); cost parameters above 16 passes or 1 GiB are refused before
    any work is done.
    """
    text = _read(path, "key file")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise IdentityError("permission_denied", f"key file {path} is accessible by group or others (mode {mode:o}): run chmod 600 {path}")
    try:
        doc: Any = json.loads(text)
    except ValueError as error:
        raise _bad(path, "not valid JSON") from error
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise _bad(path, "unsupported format (expected version 1)")
    if doc.get("type") != key_type:
        raise _bad(path, f"holds a {doc.get('type')!r}, expected a {key_type}")
    if not isinstance(doc.get("public_key"), str):
        raise _bad(path, "public_key is missing")
    try:
        public_key = b64url_decode(doc["public_key"], "public_key")
    except ParleyError as error:
        raise _bad(path, error.detail) from error
    if len(public_key) != 32:
        raise _bad(path, "public_key must be 32 bytes")
    seed: bytes | bytearray
    if "sealed" in doc:
        seed = _open_sealed(path, doc["sealed"], key_type, public_key, passphrase)
    else:
        if not isinstance(doc.get("seed"), str):
            raise _bad(path, "seed is missing")
        try:
            seed = b64url_decode(doc["seed"], "seed")
        except ParleyError as error:
            raise _bad(path, error.detail) from error
    if len(seed) != 32:
        raise _bad(path, "seed must be 32 bytes")
    key = crypto.SigningKey(bytes(seed))
    if isinstance(seed, bytearray):
        crypto.wipe(seed)
    if not crypto.constant_time_equal(key.public_key, public_key):
        key.wipe()
        raise _bad(path, "seed does not match public_key")
    kid = doc.get("key_id")
    if not isinstance(kid, str) or kid != key_id(public_key).hex():
        key.wipe()
        raise _bad(path, "key_id does not match public_key")
    return key


def _open_sealed(path: str | Path, sealed: Any, key_type: str, public_key: bytes, passphrase: str | bytes | None) -> bytearray:
    if passphrase is None:
        passphrase = os.environ.get("PARLEY_AGENT_PASSPHRASE")
    if passphrase is None:
        raise IdentityError("permission_denied", f"key file {path} is sealed: a passphrase is required")
    if not isinstance(sealed, dict) or set(sealed) != _SEALED_KEYS or sealed.get("kdf") != "argon2id":
        raise _bad(path, "unknown sealing parameters")
    ops, mem = sealed.get("ops_limit"), sealed.get("mem_limit")
    if not isinstance(ops, int) or not isinstance(mem, int) or isinstance(ops, bool) or isinstance(mem, bool):
        raise _bad(path, "unknown sealing parameters")
    try:
        salt = b64url_decode(sealed["salt"], "sealed.salt")
        ciphertext = b64url_decode(sealed["ciphertext"], "sealed.ciphertext")
    except (ParleyError, TypeError) as error:
        raise _bad(path, "sealed.salt or sealed.ciphertext is not base64url") from error
    secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    try:
        key = crypto.argon2id(secret, salt, ops, mem)
    except ParleyError as error:
        raise _bad(path, "sealing parameters out of range") from error
    try:
        return bytearray(crypto.aead_decrypt(key, 0, sealed_key_ad(key_type, public_key), ciphertext))
    except ParleyError as error:
        raise IdentityError("permission_denied", f"wrong passphrase for key file {path}") from error
    finally:
        crypto.wipe(key)


def load_certificate(path: str | Path) -> Any:
    """Loads an AgentCertificate from ``agent register --json`` output or a base64url line (``malformed`` otherwise)."""
    text = _read(path, "certificate file").strip()
    encoded: object = text
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as error:
            raise IdentityError("malformed", f"certificate file {path} is not valid JSON") from error
        cert = doc.get("certificate") if isinstance(doc, dict) else None
        encoded = cert.get("encoded") if isinstance(cert, dict) else None
        if not isinstance(encoded, str):
            raise IdentityError("malformed", f"certificate file {path} has no certificate.encoded")
    try:
        return decode_certificate(b64url_decode(str(encoded), "certificate"))
    except ParleyError as error:
        raise IdentityError("malformed", f"certificate file {path}: {error.detail}") from error


def load_identity(key_file: str | Path, certificate_file: str | Path, *, passphrase: str | bytes | None = None) -> LocalIdentity:
    """This agent from its key file and certificate; the certificate must be for this key (``identity_mismatch``)."""
    key = load_key_file(key_file, passphrase=passphrase)
    cert = load_certificate(certificate_file)
    if not crypto.constant_time_equal(bytes(cert.identity_public_key), key.public_key):
        key.wipe()
        raise IdentityError("identity_mismatch", f"certificate {certificate_file} is not for the key in {key_file}")
    return LocalIdentity(cert.agent_id, key, cert)
