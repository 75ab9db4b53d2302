"""Public value types: :class:`MessageType`, :class:`Receipt`, :class:`Event`, backoff settings."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from . import crypto
from .relay import DeliveryReceipt, receipt_layout, verify_receipt_signature
from .v1 import message_pb2


class MessageType(enum.IntEnum):
    """What a message is for (``parley.v1.MessageType``); carried encrypted, relays never see it."""

    HANDOFF_REQUEST = message_pb2.MESSAGE_TYPE_HANDOFF_REQUEST
    HANDOFF_APPROVAL = message_pb2.MESSAGE_TYPE_HANDOFF_APPROVAL
    CONSENSUS_VOTE = message_pb2.MESSAGE_TYPE_CONSENSUS_VOTE
    STATUS_UPDATE = message_pb2.MESSAGE_TYPE_STATUS_UPDATE
    TASK_ASSIGNMENT = message_pb2.MESSAGE_TYPE_TASK_ASSIGNMENT
    QUALITY_GATE_RESULT = message_pb2.MESSAGE_TYPE_QUALITY_GATE_RESULT
    SECURITY_ALERT = message_pb2.MESSAGE_TYPE_SECURITY_ALERT
    SYSTEM_NOTIFICATION = message_pb2.MESSAGE_TYPE_SYSTEM_NOTIFICATION

    @property
    def wire_name(self) -> str:
        """The protobuf enum name, e.g. ``MESSAGE_TYPE_TASK_ASSIGNMENT``."""
        return str(message_pb2.MessageType.Name(self.value))


@dataclass(frozen=True, slots=True)
class Receipt:
    """A recipient's signed delivery receipt (§10.5), verified by the SDK before it is returned.

    It proves that ``recipient_id`` accepted exactly the message ``message_hash``
    from ``sender_id`` at ``received_at_ms`` (and, under the delivery contract,
    that its application acknowledged it).
    """

    message_hash: bytes
    sender_id: str
    recipient_id: str
    received_at_ms: int
    signature: bytes
    version: int = 1

    @classmethod
    def from_proto(cls, r: Any) -> Receipt:
        return cls(bytes(r.message_hash), r.sender_id, r.recipient_id, r.received_at_ms, bytes(r.signature), r.version)

    def to_proto(self) -> Any:
        return DeliveryReceipt(
            version=self.version, message_hash=self.message_hash, sender_id=self.sender_id, recipient_id=self.recipient_id, received_at_ms=self.received_at_ms, signature=self.signature
        )

    def layout(self) -> bytes:
        """The signed §10.5 layout."""
        return receipt_layout(self.to_proto())

    def verify(self, recipient_public_key: bytes) -> bool:
        """Checks the signature again (e.g. for a third party holding the recipient's certificate)."""
        return verify_receipt_signature(self.to_proto(), recipient_public_key)

    @property
    def digest(self) -> bytes:
        """§10.4 item digest: BLAKE3 of the layout."""
        return crypto.blake3(self.layout())


EventKind = Literal[
    "connected",  # a gateway stream authenticated: gateway_id, mailbox_depth
    "disconnected",  # the stream ended: code, detail
    "reconnecting",  # waiting before the next attempt: attempt, delay_s
    "connect_retry",  # connect() waits before trying again an answer time fixes, said by the gateway: attempt, delay_s, remaining_s, error (the GatewayError)
    "security",  # a refused item (stage, code, peer, session_id, detail); never key material
    "duplicate",  # a redelivered item dropped or answered again (item, peer, detail)
    "session_established",  # peer, session_id, role
    "session_closed",  # peer, session_id, reason
    "session_rejected",  # a verified SessionReject: the message it names is resealed in a new session
    "resealed",  # a rejected message sealed again in a new session: peer, session_id, message_hash (the new one), reseals
    "send_settled",  # the final outcome of a send: id (the caller's send id, or the one made up for it, as pending_sends() lists it), message_hash (None if never sealed), peer, code ("ok" with receipt, or the failure), receipt
    "state_error",  # the state directory could not be written
    "gateway_refused",  # the gateway refused a receipt, frame or reject we sent: item, code
    "first_contact",  # a first contact's registry lookup of its recipient failed for now (tried again while its sends wait): peer, code (the registry's or the certificate check's: unavailable, deadline_exceeded, rate_limited, revocation_stale, …), detail
]


@dataclass(frozen=True, slots=True)
class Event:
    """Lifecycle and security events (``on_event``). ``fields`` never holds key material or payloads."""

    kind: EventKind
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnection backoff: delays double from ``initial_s`` to ``max_s`` with "equal jitter" (each in [d/2, d])."""

    initial_s: float = 0.1
    max_s: float = 10.0
