from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
MESSAGE_TYPE_CONSENSUS_VOTE: MessageType
MESSAGE_TYPE_HANDOFF_APPROVAL: MessageType
MESSAGE_TYPE_HANDOFF_REQUEST: MessageType
MESSAGE_TYPE_QUALITY_GATE_RESULT: MessageType
MESSAGE_TYPE_SECURITY_ALERT: MessageType
MESSAGE_TYPE_STATUS_UPDATE: MessageType
MESSAGE_TYPE_SYSTEM_NOTIFICATION: MessageType
MESSAGE_TYPE_TASK_ASSIGNMENT: MessageType
MESSAGE_TYPE_UNSPECIFIED: MessageType

class MessagePayload(_message.Message):
    __slots__ = ["content", "handoff_hash", "parent_message_hash", "timestamp_ms", "type"]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_HASH_FIELD_NUMBER: _ClassVar[int]
    PARENT_MESSAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    content: _struct_pb2.Value
    handoff_hash: bytes
    parent_message_hash: bytes
    timestamp_ms: int
    type: MessageType
    def __init__(self, type: _Optional[_Union[MessageType, str]] = ..., timestamp_ms: _Optional[int] = ..., content: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., handoff_hash: _Optional[bytes] = ..., parent_message_hash: _Optional[bytes] = ...) -> None: ...

class SecureMessage(_message.Message):
    __slots__ = ["auth_tag", "encrypted_payload", "nonce", "payload_commitment", "recipient_id", "sender_id", "session_id", "signature", "timestamp_ms", "version"]
    AUTH_TAG_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    auth_tag: bytes
    encrypted_payload: bytes
    nonce: int
    payload_commitment: bytes
    recipient_id: str
    sender_id: str
    session_id: bytes
    signature: bytes
    timestamp_ms: int
    version: int
    def __init__(self, version: _Optional[int] = ..., sender_id: _Optional[str] = ..., recipient_id: _Optional[str] = ..., session_id: _Optional[bytes] = ..., nonce: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., payload_commitment: _Optional[bytes] = ..., encrypted_payload: _Optional[bytes] = ..., auth_tag: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
