"""Per-request signatures of MemoryService calls (docs/PROTOCOL.md §18.8): the caller signs the
request layout (the store's name, the method, BLAKE3 of the exact request bytes, a timestamp, a
single-use nonce, its agent id and certificate serial) with its identity key; certificate,
timestamp, nonce and signature travel in four ASCII metadata entries beside the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from .. import crypto
from ..encoding import b64url_decode, b64url_encode
from ..errors import ParleyError
from ..identity import decode_certificate, encode_certificate
from ..session import LocalIdentity
from .layouts import memory_request_layout
from .names import REQUEST_NONCE_BYTES, SIGNATURE_BYTES, fail

CERTIFICATE_KEY: Final = "parley-memory-certificate"
TIMESTAMP_KEY: Final = "parley-memory-timestamp-ms"
NONCE_KEY: Final = "parley-memory-nonce"
SIGNATURE_KEY: Final = "parley-memory-signature"
METADATA_KEYS: Final = (CERTIFICATE_KEY, TIMESTAMP_KEY, NONCE_KEY, SIGNATURE_KEY)

_HEX32: Final = re.compile(r"[0-9a-f]{32}")
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]{0,15}")
#: base64url of 4096 bytes.
_MAX_CERTIFICATE_CHARS: Final = -(-4096 * 4 // 3)


def sign_memory_request(
    identity: LocalIdentity, service_id: str, path: str, body: bytes, now_ms: int, *, nonce: bytes | None = None
) -> tuple[tuple[str, str], ...]:
    """The four metadata entries of one request. ``nonce`` is for the conformance vectors only."""
    n = crypto.random_bytes(REQUEST_NONCE_BYTES) if nonce is None else bytes(nonce)
    signed = memory_request_layout(service_id, path, body, now_ms, n, identity.agent_id, bytes(identity.certificate.serial))
    return (
        (CERTIFICATE_KEY, b64url_encode(encode_certificate(identity.certificate))),
        (TIMESTAMP_KEY, str(now_ms)),
        (NONCE_KEY, n.hex()),
        (SIGNATURE_KEY, b64url_encode(identity.signing_key.sign(signed))),
    )


@dataclass(frozen=True, slots=True)
class MemoryRequestAuth:
    certificate: Any
    timestamp_ms: int
    nonce: bytes
    signature: bytes


def parse_memory_metadata(metadata: dict[str, str]) -> MemoryRequestAuth:
    """Reads the request signature from metadata, checking only the encodings (``unauthenticated``)."""

    def bad(what: str) -> ParleyError:
        return fail("unauthenticated", f"memory request signature: {what}")

    values = [metadata.get(k) for k in METADATA_KEYS]
    if any(v is None for v in values):
        raise bad(f"all of {', '.join(METADATA_KEYS)} are required")
    certificate, timestamp, nonce, signature = (str(v) for v in values)
    if len(certificate) > _MAX_CERTIFICATE_CHARS:
        raise bad(f"{CERTIFICATE_KEY} must be base64url of at most 4096 bytes")
    if _DECIMAL.fullmatch(timestamp) is None or int(timestamp) > (1 << 53) - 1:
        raise bad(f"{TIMESTAMP_KEY} must be decimal milliseconds")
    if _HEX32.fullmatch(nonce) is None:
        raise bad(f"{NONCE_KEY} must be 32 lowercase hex digits")
    try:
        cert = decode_certificate(b64url_decode(certificate, CERTIFICATE_KEY))
        sig = b64url_decode(signature, SIGNATURE_KEY)
    except ParleyError as error:
        raise bad("certificate or signature does not decode") from error
    if len(sig) != SIGNATURE_BYTES:
        raise bad(f"{SIGNATURE_KEY} must encode 64 bytes")
    return MemoryRequestAuth(cert, int(timestamp), bytes.fromhex(nonce), sig)


def verify_memory_request(auth: MemoryRequestAuth, service_id: str, path: str, body: bytes, agent_id: str, identity_public_key: bytes, serial: bytes) -> bool:
    """Whether a request signature verifies under a (verified) certificate's identity key; False on malformed input."""
    try:
        signed = memory_request_layout(service_id, path, body, auth.timestamp_ms, auth.nonce, agent_id, serial)
    except ParleyError:
        return False
    return crypto.ed25519_verify(auth.signature, signed, identity_public_key)
