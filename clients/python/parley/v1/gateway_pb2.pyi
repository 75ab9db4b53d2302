from parley.v1 import handshake_pb2 as _handshake_pb2
from parley.v1 import identity_pb2 as _identity_pb2
from parley.v1 import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DELIVERY_STATUS_DELIVERED: DeliveryStatus
DELIVERY_STATUS_QUEUED: DeliveryStatus
DELIVERY_STATUS_UNSPECIFIED: DeliveryStatus
DESCRIPTOR: _descriptor.FileDescriptor

class Accepted(_message.Message):
    __slots__ = ["item_hash", "request_id", "status"]
    ITEM_HASH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    item_hash: bytes
    request_id: int
    status: DeliveryStatus
    def __init__(self, request_id: _Optional[int] = ..., item_hash: _Optional[bytes] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ["delivery_id", "more_delivery_ids"]
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    MORE_DELIVERY_IDS_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    more_delivery_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, delivery_id: _Optional[int] = ..., more_delivery_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class AuthProof(_message.Message):
    __slots__ = ["signature"]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    def __init__(self, signature: _Optional[bytes] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ["gateway_id", "nonce", "server_time_ms"]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    nonce: bytes
    server_time_ms: int
    def __init__(self, gateway_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., server_time_ms: _Optional[int] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ["ack", "auth", "hello", "send"]
    ACK_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    auth: AuthProof
    hello: Hello
    send: Outbound
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., auth: _Optional[_Union[AuthProof, _Mapping]] = ..., send: _Optional[_Union[Outbound, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ["accepted", "challenge", "deliveries", "delivery", "go_away", "rejected", "welcome"]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    GO_AWAY_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    accepted: Accepted
    challenge: Challenge
    deliveries: Deliveries
    delivery: Delivery
    go_away: GoAway
    rejected: Rejected
    welcome: Welcome
    def __init__(self, challenge: _Optional[_Union[Challenge, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., delivery: _Optional[_Union[Delivery, _Mapping]] = ..., accepted: _Optional[_Union[Accepted, _Mapping]] = ..., rejected: _Optional[_Union[Rejected, _Mapping]] = ..., go_away: _Optional[_Union[GoAway, _Mapping]] = ..., deliveries: _Optional[_Union[Deliveries, _Mapping]] = ...) -> None: ...

class Deliveries(_message.Message):
    __slots__ = ["items"]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Delivery]
    def __init__(self, items: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ["accepted_at_ms", "delivery_id", "envelope", "handshake", "receipt", "session_reject"]
    ACCEPTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SESSION_REJECT_FIELD_NUMBER: _ClassVar[int]
    accepted_at_ms: int
    delivery_id: int
    envelope: _message_pb2.SecureMessage
    handshake: _handshake_pb2.HandshakeFrame
    receipt: DeliveryReceipt
    session_reject: SessionReject
    def __init__(self, delivery_id: _Optional[int] = ..., accepted_at_ms: _Optional[int] = ..., handshake: _Optional[_Union[_handshake_pb2.HandshakeFrame, _Mapping]] = ..., envelope: _Optional[_Union[_message_pb2.SecureMessage, _Mapping]] = ..., receipt: _Optional[_Union[DeliveryReceipt, _Mapping]] = ..., session_reject: _Optional[_Union[SessionReject, _Mapping]] = ...) -> None: ...

class DeliveryReceipt(_message.Message):
    __slots__ = ["message_hash", "received_at_ms", "recipient_id", "sender_id", "signature", "signer_certificate", "version"]
    MESSAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    message_hash: bytes
    received_at_ms: int
    recipient_id: str
    sender_id: str
    signature: bytes
    signer_certificate: _identity_pb2.AgentCertificate
    version: int
    def __init__(self, version: _Optional[int] = ..., message_hash: _Optional[bytes] = ..., sender_id: _Optional[str] = ..., recipient_id: _Optional[str] = ..., received_at_ms: _Optional[int] = ..., signature: _Optional[bytes] = ..., signer_certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ...) -> None: ...

class GoAway(_message.Message):
    __slots__ = ["code", "message"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ["certificate", "delivery_batches", "version"]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_BATCHES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    certificate: _identity_pb2.AgentCertificate
    delivery_batches: bool
    version: int
    def __init__(self, version: _Optional[int] = ..., certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ..., delivery_batches: bool = ...) -> None: ...

class Outbound(_message.Message):
    __slots__ = ["ack_delivery_id", "envelope", "handshake", "quiet", "receipt", "recipient_certificate", "request_id", "session_reject"]
    ACK_DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    QUIET_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_REJECT_FIELD_NUMBER: _ClassVar[int]
    ack_delivery_id: int
    envelope: _message_pb2.SecureMessage
    handshake: _handshake_pb2.HandshakeFrame
    quiet: bool
    receipt: DeliveryReceipt
    recipient_certificate: _identity_pb2.AgentCertificate
    request_id: int
    session_reject: SessionReject
    def __init__(self, request_id: _Optional[int] = ..., handshake: _Optional[_Union[_handshake_pb2.HandshakeFrame, _Mapping]] = ..., envelope: _Optional[_Union[_message_pb2.SecureMessage, _Mapping]] = ..., receipt: _Optional[_Union[DeliveryReceipt, _Mapping]] = ..., session_reject: _Optional[_Union[SessionReject, _Mapping]] = ..., ack_delivery_id: _Optional[int] = ..., quiet: bool = ..., recipient_certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ...) -> None: ...

class Rejected(_message.Message):
    __slots__ = ["code", "message", "request_id"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    request_id: int
    def __init__(self, request_id: _Optional[int] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ["certificate", "envelope", "handshake", "nonce", "receipt", "recipient_certificate", "session_reject", "signature", "timestamp_ms"]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_REJECT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    certificate: _identity_pb2.AgentCertificate
    envelope: _message_pb2.SecureMessage
    handshake: _handshake_pb2.HandshakeFrame
    nonce: bytes
    receipt: DeliveryReceipt
    recipient_certificate: _identity_pb2.AgentCertificate
    session_reject: SessionReject
    signature: bytes
    timestamp_ms: int
    def __init__(self, certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ..., timestamp_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., handshake: _Optional[_Union[_handshake_pb2.HandshakeFrame, _Mapping]] = ..., envelope: _Optional[_Union[_message_pb2.SecureMessage, _Mapping]] = ..., receipt: _Optional[_Union[DeliveryReceipt, _Mapping]] = ..., session_reject: _Optional[_Union[SessionReject, _Mapping]] = ..., recipient_certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ...) -> None: ...

class SendResponse(_message.Message):
    __slots__ = ["item_hash", "status"]
    ITEM_HASH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    item_hash: bytes
    status: DeliveryStatus
    def __init__(self, item_hash: _Optional[bytes] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ...) -> None: ...

class SessionReject(_message.Message):
    __slots__ = ["message_hash", "recipient_id", "rejected_at_ms", "sender_id", "session_id", "signature", "signer_certificate", "version"]
    MESSAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REJECTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    message_hash: bytes
    recipient_id: str
    rejected_at_ms: int
    sender_id: str
    session_id: bytes
    signature: bytes
    signer_certificate: _identity_pb2.AgentCertificate
    version: int
    def __init__(self, version: _Optional[int] = ..., session_id: _Optional[bytes] = ..., message_hash: _Optional[bytes] = ..., sender_id: _Optional[str] = ..., recipient_id: _Optional[str] = ..., rejected_at_ms: _Optional[int] = ..., signature: _Optional[bytes] = ..., signer_certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ["agent_id", "mailbox_depth", "max_frame_bytes", "outbound_acks"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_ACKS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    mailbox_depth: int
    max_frame_bytes: int
    outbound_acks: bool
    def __init__(self, agent_id: _Optional[str] = ..., mailbox_depth: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ..., outbound_acks: bool = ...) -> None: ...

class DeliveryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
