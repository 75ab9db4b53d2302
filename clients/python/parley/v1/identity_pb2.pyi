from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
ISSUER_KEY_STATE_ACTIVE: IssuerKeyState
ISSUER_KEY_STATE_PREPARED: IssuerKeyState
ISSUER_KEY_STATE_RETIRED: IssuerKeyState
ISSUER_KEY_STATE_UNSPECIFIED: IssuerKeyState

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

class SignedTrustBundle(_message.Message):
    __slots__ = ["issued_at_ms", "issuers", "registry_id", "signature", "signer_key_id", "version"]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ISSUERS_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    issued_at_ms: int
    issuers: _containers.RepeatedCompositeFieldContainer[TrustBundleIssuer]
    registry_id: bytes
    signature: bytes
    signer_key_id: bytes
    version: int
    def __init__(self, registry_id: _Optional[bytes] = ..., version: _Optional[int] = ..., issued_at_ms: _Optional[int] = ..., issuers: _Optional[_Iterable[_Union[TrustBundleIssuer, _Mapping]]] = ..., signer_key_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TrustBundleIssuer(_message.Message):
    __slots__ = ["key_id", "not_after_ms", "public_key", "state"]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    key_id: bytes
    not_after_ms: int
    public_key: bytes
    state: IssuerKeyState
    def __init__(self, key_id: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., state: _Optional[_Union[IssuerKeyState, str]] = ..., not_after_ms: _Optional[int] = ...) -> None: ...

class IssuerKeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
