"""SecureMessage layouts, shape checks and payload encoding (docs/PROTOCOL.md §6, §8.1 step 1)::

    header(tag) = str(tag) ‖ u32(version) ‖ str(sender_id) ‖ str(recipient_id) ‖ fixed16(session_id)
                  ‖ u64(nonce) ‖ i64(timestamp_ms) ‖ fixed32(payload_commitment)
    ad          = header("parley/v1/envelope-ad")
    mac_input   = header("parley/v1/envelope-mac") ‖ var(encrypted_payload)
    signed      = header("parley/v1/envelope-signature") ‖ fixed32(BLAKE3(encrypted_payload)) ‖ fixed32(auth_tag)
    message_hash = BLAKE3(signed)
    commitment  = BLAKE3(str("parley/v1/payload-commitment") ‖ fixed32(salt) ‖ var(payload))

The signature needs no session key: a relay checks the sender without
decrypting, and a recipient can later prove what the sender sent (§6.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from . import crypto
from .errors import SessionError
from .identity import is_agent_id
from .layout import Layout
from .v1 import message_pb2

SecureMessage = message_pb2.SecureMessage
MessagePayload = message_pb2.MessagePayload

PROTOCOL_VERSION: Final = 1
SESSION_ID_BYTES: Final = 16
SALT_BYTES: Final = 32
COMMITMENT_BYTES: Final = 32
AUTH_TAG_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
AEAD_TAG_BYTES: Final = 16
HASH_BYTES: Final = 32
#: §12: the largest encoded MessagePayload.
MAX_PAYLOAD_BYTES: Final = 1 << 20
MAX_CIPHERTEXT_BYTES: Final = SALT_BYTES + MAX_PAYLOAD_BYTES + AEAD_TAG_BYTES
#: §7: counters stay below 2^53.
MAX_COUNTER: Final = (1 << 53) - 1
MAX_SAFE_INTEGER: Final = (1 << 53) - 1
#: Deepest nesting of content accepted when sealing (protobuf parsers refuse deeper messages).
MAX_CONTENT_DEPTH: Final = 64

#: Any JSON value.
JsonValue: TypeAlias = "None | bool | int | float | str | Sequence[JsonValue] | Mapping[str, JsonValue]"


def assert_envelope_shape(envelope: Any) -> None:
    """§8.1 step 1, in order; raises SessionError with the first failing code."""
    if envelope.version != PROTOCOL_VERSION:
        raise SessionError("unsupported_version", f"envelope version {envelope.version} is not supported")
    if not is_agent_id(envelope.sender_id):
        raise SessionError("malformed", "sender_id is not a valid agent id")
    if not is_agent_id(envelope.recipient_id):
        raise SessionError("malformed", "recipient_id is not a valid agent id")
    if len(envelope.session_id) != SESSION_ID_BYTES:
        raise SessionError("malformed", "session_id must be 16 bytes")
    if envelope.nonce > MAX_COUNTER:
        raise SessionError("nonce_exhausted", "nonce beyond 2^53 - 1")
    if not 0 <= envelope.timestamp_ms <= MAX_SAFE_INTEGER:
        raise SessionError("malformed", "timestamp_ms out of range")
    if len(envelope.payload_commitment) != COMMITMENT_BYTES:
        raise SessionError("malformed", "payload_commitment must be 32 bytes")
    if len(envelope.encrypted_payload) > MAX_CIPHERTEXT_BYTES:
        raise SessionError("too_large", f"encrypted_payload exceeds {MAX_CIPHERTEXT_BYTES} bytes")
    if len(envelope.encrypted_payload) < SALT_BYTES + AEAD_TAG_BYTES:
        raise SessionError("malformed", "encrypted_payload too short")
    if len(envelope.auth_tag) != AUTH_TAG_BYTES:
        raise SessionError("malformed", "auth_tag must be 32 bytes")
    if len(envelope.signature) != SIGNATURE_BYTES:
        raise SessionError("malformed", "signature must be 64 bytes")


def _header(domain: str, e: Any) -> Layout:
    return (
        Layout(domain)
        .u32(e.version)
        .str(e.sender_id)
        .str(e.recipient_id)
        .fixed(e.session_id, SESSION_ID_BYTES, "session_id")
        .u64(e.nonce)
        .i64(e.timestamp_ms)
        .fixed(e.payload_commitment, COMMITMENT_BYTES, "payload_commitment")
    )


def envelope_ad(e: Any) -> bytes:
    """The AEAD associated data (§6.2)."""
    return _header("parley/v1/envelope-ad", e).bytes()


def envelope_mac_input(e: Any) -> bytes:
    """The HMAC-SHA256 input (§6.3)."""
    return _header("parley/v1/envelope-mac", e).var(e.encrypted_payload, "encrypted_payload").bytes()


def envelope_signed_bytes(e: Any) -> bytes:
    """The layout the sender's identity key signs (§6.4)."""
    return (
        _header("parley/v1/envelope-signature", e)
        .fixed(crypto.blake3(e.encrypted_payload), 32, "ciphertext digest")
        .fixed(e.auth_tag, AUTH_TAG_BYTES, "auth_tag")
        .bytes()
    )


def message_hash(e: Any) -> bytes:
    """§6.6: BLAKE3 of the signed layout; names the envelope in caches, receipts and audit."""
    return crypto.blake3(envelope_signed_bytes(e))


def payload_commitment(salt: bytes, payload: bytes) -> bytes:
    """§6.2: the salted commitment to the encoded payload."""
    return crypto.blake3(Layout("parley/v1/payload-commitment").fixed(salt, SALT_BYTES, "salt").var(payload, "payload").bytes())


def verify_envelope_signature(e: Any, identity_public_key: bytes) -> bool:
    """The §6.4 signature with a sender's key and no session key; False on any malformed input."""
    try:
        assert_envelope_shape(e)
        return crypto.ed25519_verify(bytes(e.signature), envelope_signed_bytes(e), identity_public_key)
    except Exception:
        return False


def decode_envelope(data: bytes) -> Any:
    """Decodes a SecureMessage (``malformed`` when it does not decode)."""
    if len(data) > MAX_CIPHERTEXT_BYTES + 4096:
        raise SessionError("too_large", "envelope too large")
    try:
        return SecureMessage.FromString(bytes(data))
    except DecodeError as error:
        raise SessionError("malformed", "envelope does not decode") from error


# --- Payload (§6.2) ------------------------------------------------------------------------------

_KNOWN_TYPES: Final = frozenset(v for v in message_pb2.MessageType.values() if v != message_pb2.MESSAGE_TYPE_UNSPECIFIED)


def to_value(content: object, depth: int = 0) -> Any:
    """A Python JSON value as ``google.protobuf.Value``; anything that is not JSON is ``malformed``."""
    if depth > MAX_CONTENT_DEPTH:
        raise SessionError("malformed", f"content nested deeper than {MAX_CONTENT_DEPTH}")
    v = struct_pb2.Value()
    if content is None:
        v.null_value = struct_pb2.NULL_VALUE
    elif isinstance(content, bool):
        v.bool_value = content
    elif isinstance(content, int):
        if not -MAX_SAFE_INTEGER <= content <= MAX_SAFE_INTEGER:
            raise SessionError("malformed", "an integer in content is beyond 2^53 and would lose precision")
        v.number_value = float(content)
    elif isinstance(content, float):
        if not math.isfinite(content):
            raise SessionError("malformed", "content numbers must be finite (JSON has no NaN or Infinity)")
        v.number_value = content
    elif isinstance(content, str):
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as error:
            raise SessionError("malformed", "content strings must be valid Unicode") from error
        v.string_value = content
    elif isinstance(content, Mapping):
        struct = v.struct_value
        struct.SetInParent()
        for key, item in content.items():
            if not isinstance(key, str):
                raise SessionError("malformed", "content object keys must be strings")
            struct.fields[key].CopyFrom(to_value(item, depth + 1))
    elif isinstance(content, (list, tuple)):
        lst = v.list_value
        lst.SetInParent()
        for item in content:
            lst.values.add().CopyFrom(to_value(item, depth + 1))
    else:
        raise SessionError("malformed", f"content must be a JSON value, not {type(content).__name__}")
    return v


def from_value(value: Any) -> JsonValue:
    """``google.protobuf.Value`` as plain Python: integral numbers in the safe range become ``int``."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "number_value":
        n = value.number_value
        return int(n) if math.isfinite(n) and n.is_integer() and abs(n) <= MAX_SAFE_INTEGER else n
    if kind == "string_value":
        return str(value.string_value)
    if kind == "struct_value":
        return {k: from_value(v) for k, v in value.struct_value.fields.items()}
    return [from_value(v) for v in value.list_value.values]


def encode_payload(message_type: int, content: object, timestamp_ms: int, *, handoff_hash: bytes | None = None, parent_message_hash: bytes | None = None) -> bytes:
    """Encodes and validates an outgoing MessagePayload (sender side)."""
    if message_type not in _KNOWN_TYPES:
        raise SessionError("malformed", "message type must be a known, non-UNSPECIFIED MessageType")
    for name, h in (("handoff_hash", handoff_hash), ("parent_message_hash", parent_message_hash)):
        if h is not None and len(h) != HASH_BYTES:
            raise SessionError("malformed", f"{name} must be 32 bytes")
    payload = MessagePayload(timestamp_ms=timestamp_ms, handoff_hash=handoff_hash or b"", parent_message_hash=parent_message_hash or b"")
    payload.type = message_type  # type: ignore[assignment]
    payload.content.CopyFrom(to_value(content))
    data: bytes = payload.SerializeToString()
    if len(data) > MAX_PAYLOAD_BYTES:
        raise SessionError("too_large", f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return data


def decode_payload(data: bytes, envelope_timestamp_ms: int) -> Any:
    """Decodes and validates a received payload (§6.2): type, timestamp, optional hashes (``malformed``)."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise SessionError("too_large", "payload exceeds the size limit")
    try:
        payload = MessagePayload.FromString(bytes(data))
    except DecodeError as error:
        raise SessionError("malformed", "payload does not decode") from error
    if payload.type not in _KNOWN_TYPES:
        raise SessionError("malformed", "payload has an unknown or UNSPECIFIED type")
    if payload.timestamp_ms != envelope_timestamp_ms:
        raise SessionError("malformed", "payload timestamp differs from the envelope timestamp")
    if len(payload.handoff_hash) not in (0, HASH_BYTES):
        raise SessionError("malformed", "handoff_hash must be empty or 32 bytes")
    if len(payload.parent_message_hash) not in (0, HASH_BYTES):
        raise SessionError("malformed", "parent_message_hash must be empty or 32 bytes")
    return payload
