"""Gateway-facing layouts (docs/PROTOCOL.md §10, §17): receipts, session rejects, stream
authentication, unary Send, and the item digests of §10.4.

::

    receipt        str("parley/v1/delivery-receipt") u32(version) fixed32(message_hash) str(sender_id)
                   str(recipient_id) i64(received_at_ms)
    session reject str("parley/v1/session-reject") u32(version) fixed16(session_id) fixed32(message_hash)
                   str(sender_id) str(recipient_id) i64(rejected_at_ms)
    gateway auth   str("parley/v1/gateway-auth") str(gateway_id) fixed32(nonce) str(agent_id) fixed16(serial)
    gateway send   str("parley/v1/gateway-send") str(gateway_id) i64(timestamp_ms) fixed16(nonce) fixed32(item_digest)

A receipt or a session reject is signed by the envelope's RECIPIENT and routed
to the envelope's SENDER; its item digest is BLAKE3 of its layout. Its optional
``signer_certificate`` (the signer's certificate after a key rotation, §17.8) is in
neither: a certificate authenticates itself.
"""

from __future__ import annotations

from typing import Any, Final

from . import crypto
from .envelope import message_hash
from .errors import SessionError
from .handshake import handshake_frame_digest
from .identity import is_agent_id
from .layout import Layout
from .session import LocalIdentity
from .v1 import gateway_pb2

DeliveryReceipt = gateway_pb2.DeliveryReceipt
SessionReject = gateway_pb2.SessionReject

VERSION: Final = 1
MAX_SAFE_INTEGER: Final = (1 << 53) - 1


def receipt_layout(r: Any) -> bytes:
    """§10.5."""
    return (
        Layout("parley/v1/delivery-receipt")
        .u32(r.version)
        .fixed(r.message_hash, 32, "message_hash")
        .str(r.sender_id)
        .str(r.recipient_id)
        .i64(r.received_at_ms)
        .bytes()
    )


def session_reject_layout(r: Any) -> bytes:
    """§17 (DELIVERY.md): the SessionReject layout."""
    return (
        Layout("parley/v1/session-reject")
        .u32(r.version)
        .fixed(r.session_id, 16, "session_id")
        .fixed(r.message_hash, 32, "message_hash")
        .str(r.sender_id)
        .str(r.recipient_id)
        .i64(r.rejected_at_ms)
        .bytes()
    )


def sign_receipt(identity: LocalIdentity, *, message_hash: bytes, sender_id: str, received_at_ms: int, signer_certificate: Any | None = None) -> Any:
    """A DeliveryReceipt for an envelope this agent opened (and its application acknowledged).

    ``signer_certificate``: this agent's current certificate, attached (not signed) after a rotation of its
    identity key, so that a peer holding the session under the old certificate can verify the receipt (§17.8).
    """
    r = DeliveryReceipt(version=VERSION, message_hash=message_hash, sender_id=sender_id, recipient_id=identity.agent_id, received_at_ms=received_at_ms)
    r.signature = identity.signing_key.sign(receipt_layout(r))
    if signer_certificate is not None:
        r.signer_certificate.CopyFrom(signer_certificate)
    return r


def sign_session_reject(identity: LocalIdentity, envelope: Any, rejected_at_ms: int, *, signer_certificate: Any | None = None) -> Any:
    """A SessionReject for an envelope whose session this agent does not hold and is not establishing;
    ``signer_certificate`` as for :func:`sign_receipt` (§17.8)."""
    r = SessionReject(
        version=VERSION,
        session_id=bytes(envelope.session_id),
        message_hash=message_hash(envelope),
        sender_id=envelope.sender_id,
        recipient_id=identity.agent_id,
        rejected_at_ms=rejected_at_ms,
    )
    r.signature = identity.signing_key.sign(session_reject_layout(r))
    if signer_certificate is not None:
        r.signer_certificate.CopyFrom(signer_certificate)
    return r


def _shape_ok(r: Any, hash_field: bytes, time_field: int) -> bool:
    return (
        r.version == VERSION
        and len(hash_field) == 32
        and len(r.signature) == 64
        and is_agent_id(r.sender_id)
        and is_agent_id(r.recipient_id)
        and r.sender_id != r.recipient_id
        and 0 <= time_field <= MAX_SAFE_INTEGER
    )


def verify_receipt_signature(r: Any, recipient_public_key: bytes) -> bool:
    """Whether a receipt is well formed and signed by ``recipient_public_key``; the caller checks its fields."""
    try:
        return _shape_ok(r, bytes(r.message_hash), r.received_at_ms) and crypto.ed25519_verify(bytes(r.signature), receipt_layout(r), recipient_public_key)
    except Exception:
        return False


def verify_session_reject_signature(r: Any, recipient_public_key: bytes) -> bool:
    """Whether a SessionReject is well formed and signed by ``recipient_public_key``."""
    try:
        return (
            _shape_ok(r, bytes(r.message_hash), r.rejected_at_ms)
            and len(r.session_id) == 16
            and crypto.ed25519_verify(bytes(r.signature), session_reject_layout(r), recipient_public_key)
        )
    except Exception:
        return False


def gateway_auth_layout(gateway_id: str, nonce: bytes, agent_id: str, serial: bytes) -> bytes:
    """§10.2."""
    return Layout("parley/v1/gateway-auth").str(gateway_id).fixed(nonce, 32, "nonce").str(agent_id).fixed(serial, 16, "serial").bytes()


def gateway_send_layout(gateway_id: str, timestamp_ms: int, nonce: bytes, item_digest: bytes) -> bytes:
    """§10.6."""
    return Layout("parley/v1/gateway-send").str(gateway_id).i64(timestamp_ms).fixed(nonce, 16, "nonce").fixed(item_digest, 32, "item_digest").bytes()


def item_digest(kind: str, item: Any) -> bytes:
    """§10.4: the digest the gateway answers in ``accepted.item_hash`` (and unary Send signs)."""
    if kind == "envelope":
        return message_hash(item)
    if kind == "handshake":
        return handshake_frame_digest(item)
    if kind == "receipt":
        return crypto.blake3(receipt_layout(item))
    if kind == "session_reject":
        return crypto.blake3(session_reject_layout(item))
    raise SessionError("malformed", f"unknown item kind {kind}")
