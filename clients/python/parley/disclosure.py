"""Proof of origin (docs/PROTOCOL.md §6.5).

A recipient proves to a third party who trusts the issuer that ``sender_id``
sent ``payload`` by disclosing the envelope, the sender's certificate and the
opening ``(payload, salt)``. No session key is used or revealed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import crypto
from .envelope import SALT_BYTES, assert_envelope_shape, decode_payload, envelope_signed_bytes, payload_commitment
from .errors import SessionError
from .identity import RevocationChecker, TrustBundle, verify_certificate


@dataclass(frozen=True, slots=True)
class Disclosure:
    """What a recipient keeps to prove what the sender sent: the encoded payload and its salt."""

    payload: bytes
    salt: bytes


def verify_disclosure(envelope: Any, certificate: Any, disclosure: Disclosure, trust_bundle: TrustBundle, *, revocations: RevocationChecker | None = None) -> Any:
    """Checks §6.5 in order; returns the decoded MessagePayload or raises with the failing code.

    The envelope's shape; a 32-byte salt (``malformed``); the certificate per §3.3
    at the envelope's ``timestamp_ms`` with expected agent id ``sender_id``; the
    §6.4 signature (``bad_signature``); the commitment in constant time
    (``bad_commitment``); the payload rules of §6.2 (``malformed``).
    """
    assert_envelope_shape(envelope)
    if len(disclosure.salt) != SALT_BYTES:
        raise SessionError("malformed", "salt must be 32 bytes")
    verified = verify_certificate(certificate, trust_bundle, envelope.timestamp_ms, expected_agent_id=envelope.sender_id, revocations=revocations)
    if not crypto.ed25519_verify(bytes(envelope.signature), envelope_signed_bytes(envelope), verified.identity_public_key):
        raise SessionError("bad_signature", "envelope signature does not verify")
    if not crypto.constant_time_equal(payload_commitment(disclosure.salt, disclosure.payload), bytes(envelope.payload_commitment)):
        raise SessionError("bad_commitment", "the disclosed payload does not match the commitment")
    return decode_payload(disclosure.payload, envelope.timestamp_ms)
