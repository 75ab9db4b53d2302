from parley.v1 import message_pb2 as _message_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditMessage(_message.Message):
    __slots__ = ["index", "message_hash", "message_type", "outcome", "previous_hash", "recipient_id", "sender_id", "signature", "signer_key_id", "timestamp_ms"]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HASH_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    index: int
    message_hash: bytes
    message_type: _message_pb2.MessageType
    outcome: str
    previous_hash: bytes
    recipient_id: str
    sender_id: str
    signature: bytes
    signer_key_id: bytes
    timestamp_ms: int
    def __init__(self, index: _Optional[int] = ..., message_hash: _Optional[bytes] = ..., sender_id: _Optional[str] = ..., recipient_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., message_type: _Optional[_Union[_message_pb2.MessageType, str]] = ..., outcome: _Optional[str] = ..., previous_hash: _Optional[bytes] = ..., signer_key_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
