from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AgentCertificate(_message.Message):
    __slots__ = ["agent_id", "agent_type", "capabilities", "identity_public_key", "issuer_key_id", "serial", "signature", "valid_from_ms", "valid_until_ms", "version"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ISSUER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_type: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    identity_public_key: bytes
    issuer_key_id: bytes
    serial: bytes
    signature: bytes
    valid_from_ms: int
    valid_until_ms: int
    version: int
    def __init__(self, version: _Optional[int] = ..., agent_id: _Optional[str] = ..., identity_public_key: _Optional[bytes] = ..., agent_type: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., valid_from_ms: _Optional[int] = ..., valid_until_ms: _Optional[int] = ..., serial: _Optional[bytes] = ..., issuer_key_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
