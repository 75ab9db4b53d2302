from parley.v1 import identity_pb2 as _identity_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandshakeFrame(_message.Message):
    __slots__ = ["noise_message", "recipient_id", "rekey_threshold", "sender_id", "session_id", "step", "version"]
    NOISE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REKEY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    noise_message: bytes
    recipient_id: str
    rekey_threshold: int
    sender_id: str
    session_id: bytes
    step: int
    version: int
    def __init__(self, version: _Optional[int] = ..., session_id: _Optional[bytes] = ..., sender_id: _Optional[str] = ..., recipient_id: _Optional[str] = ..., step: _Optional[int] = ..., noise_message: _Optional[bytes] = ..., rekey_threshold: _Optional[int] = ...) -> None: ...

class HandshakePayload(_message.Message):
    __slots__ = ["certificate", "identity_signature"]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    certificate: _identity_pb2.AgentCertificate
    identity_signature: bytes
    def __init__(self, certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ..., identity_signature: _Optional[bytes] = ...) -> None: ...
