from parley.v1 import identity_pb2 as _identity_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
MEMBERSHIP_CHANGE_CREATE: MembershipChange
MEMBERSHIP_CHANGE_GRANT: MembershipChange
MEMBERSHIP_CHANGE_REVOKE: MembershipChange
MEMBERSHIP_CHANGE_UNSPECIFIED: MembershipChange
MEMORY_ACCESS_ADMIN: MemoryAccess
MEMORY_ACCESS_READ: MemoryAccess
MEMORY_ACCESS_UNSPECIFIED: MemoryAccess
MEMORY_ACCESS_WRITE: MemoryAccess

class CreateMemoryRequest(_message.Message):
    __slots__ = ["entry", "epoch", "owner_wrap"]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OWNER_WRAP_FIELD_NUMBER: _ClassVar[int]
    entry: MembershipEntry
    epoch: EpochRecord
    owner_wrap: KeyWrap
    def __init__(self, entry: _Optional[_Union[MembershipEntry, _Mapping]] = ..., epoch: _Optional[_Union[EpochRecord, _Mapping]] = ..., owner_wrap: _Optional[_Union[KeyWrap, _Mapping]] = ...) -> None: ...

class CreateMemoryResponse(_message.Message):
    __slots__ = ["memory_id"]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    memory_id: str
    def __init__(self, memory_id: _Optional[str] = ...) -> None: ...

class EpochRecord(_message.Message):
    __slots__ = ["back_link", "created_at_ms", "creator_id", "epoch", "key_commitment", "membership_hash", "membership_version", "signature"]
    BACK_LINK_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_HASH_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    back_link: bytes
    created_at_ms: int
    creator_id: str
    epoch: int
    key_commitment: bytes
    membership_hash: bytes
    membership_version: int
    signature: bytes
    def __init__(self, epoch: _Optional[int] = ..., key_commitment: _Optional[bytes] = ..., back_link: _Optional[bytes] = ..., membership_version: _Optional[int] = ..., membership_hash: _Optional[bytes] = ..., created_at_ms: _Optional[int] = ..., creator_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetAgentCertificateRequest(_message.Message):
    __slots__ = ["agent_id"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class GetAgentCertificateResponse(_message.Message):
    __slots__ = ["certificate"]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    certificate: _identity_pb2.AgentCertificate
    def __init__(self, certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ...) -> None: ...

class GetMemoryRequest(_message.Message):
    __slots__ = ["after_version", "memory_id"]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    memory_id: str
    def __init__(self, memory_id: _Optional[str] = ..., after_version: _Optional[int] = ...) -> None: ...

class GetMemoryResponse(_message.Message):
    __slots__ = ["entries", "epochs", "members", "memory", "rotation_required", "usage", "wrap"]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    ROTATION_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    WRAP_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[MembershipEntry]
    epochs: _containers.RepeatedCompositeFieldContainer[EpochRecord]
    members: _containers.RepeatedCompositeFieldContainer[MemoryMember]
    memory: MemorySummary
    rotation_required: bool
    usage: MemoryUsage
    wrap: KeyWrap
    def __init__(self, memory: _Optional[_Union[MemorySummary, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[MembershipEntry, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[MemoryMember, _Mapping]]] = ..., epochs: _Optional[_Iterable[_Union[EpochRecord, _Mapping]]] = ..., wrap: _Optional[_Union[KeyWrap, _Mapping]] = ..., usage: _Optional[_Union[MemoryUsage, _Mapping]] = ..., rotation_required: bool = ...) -> None: ...

class KeyWrap(_message.Message):
    __slots__ = ["epoch", "member_id", "member_public_key", "sealed_key", "signature", "signer_id"]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SEALED_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_ID_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    member_id: str
    member_public_key: bytes
    sealed_key: bytes
    signature: bytes
    signer_id: str
    def __init__(self, epoch: _Optional[int] = ..., member_id: _Optional[str] = ..., member_public_key: _Optional[bytes] = ..., sealed_key: _Optional[bytes] = ..., signer_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ListMemoriesRequest(_message.Message):
    __slots__ = ["page_size", "page_token"]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMemoriesResponse(_message.Message):
    __slots__ = ["memories", "next_page_token"]
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[MemorySummary]
    next_page_token: str
    def __init__(self, memories: _Optional[_Iterable[_Union[MemorySummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListSegmentsRequest(_message.Message):
    __slots__ = ["memory_id", "page_size", "page_token"]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    memory_id: str
    page_size: int
    page_token: str
    def __init__(self, memory_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSegmentsResponse(_message.Message):
    __slots__ = ["next_page_token", "segments"]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    segments: _containers.RepeatedCompositeFieldContainer[WriteRecord]
    def __init__(self, segments: _Optional[_Iterable[_Union[WriteRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MembershipEntry(_message.Message):
    __slots__ = ["access", "change", "creation_nonce", "expires_at_ms", "member_id", "member_public_key", "previous_hash", "signature", "signer_id", "timestamp_ms", "version"]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CREATION_NONCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    access: MemoryAccess
    change: MembershipChange
    creation_nonce: bytes
    expires_at_ms: int
    member_id: str
    member_public_key: bytes
    previous_hash: bytes
    signature: bytes
    signer_id: str
    timestamp_ms: int
    version: int
    def __init__(self, version: _Optional[int] = ..., previous_hash: _Optional[bytes] = ..., change: _Optional[_Union[MembershipChange, str]] = ..., member_id: _Optional[str] = ..., access: _Optional[_Union[MemoryAccess, str]] = ..., member_public_key: _Optional[bytes] = ..., expires_at_ms: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., signer_id: _Optional[str] = ..., creation_nonce: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class MemoryMember(_message.Message):
    __slots__ = ["access", "certificate", "expires_at_ms", "member_id", "member_public_key"]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    access: MemoryAccess
    certificate: _identity_pb2.AgentCertificate
    expires_at_ms: int
    member_id: str
    member_public_key: bytes
    def __init__(self, member_id: _Optional[str] = ..., access: _Optional[_Union[MemoryAccess, str]] = ..., member_public_key: _Optional[bytes] = ..., expires_at_ms: _Optional[int] = ..., certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ...) -> None: ...

class MemorySummary(_message.Message):
    __slots__ = ["access", "created_at_ms", "current_epoch", "expires_at_ms", "membership_version", "memory_id", "owner_id"]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    access: MemoryAccess
    created_at_ms: int
    current_epoch: int
    expires_at_ms: int
    membership_version: int
    memory_id: str
    owner_id: str
    def __init__(self, memory_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., access: _Optional[_Union[MemoryAccess, str]] = ..., created_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., membership_version: _Optional[int] = ..., current_epoch: _Optional[int] = ...) -> None: ...

class MemoryUsage(_message.Message):
    __slots__ = ["bytes", "max_bytes", "max_segments", "owner_bytes", "owner_max_bytes", "owner_max_segments", "owner_segments", "segments"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    OWNER_BYTES_FIELD_NUMBER: _ClassVar[int]
    OWNER_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    OWNER_MAX_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    OWNER_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    max_bytes: int
    max_segments: int
    owner_bytes: int
    owner_max_bytes: int
    owner_max_segments: int
    owner_segments: int
    segments: int
    def __init__(self, bytes: _Optional[int] = ..., segments: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_segments: _Optional[int] = ..., owner_bytes: _Optional[int] = ..., owner_segments: _Optional[int] = ..., owner_max_bytes: _Optional[int] = ..., owner_max_segments: _Optional[int] = ...) -> None: ...

class ReadSegmentRequest(_message.Message):
    __slots__ = ["memory_id", "segment_id"]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    memory_id: str
    segment_id: str
    def __init__(self, memory_id: _Optional[str] = ..., segment_id: _Optional[str] = ...) -> None: ...

class ReadSegmentResponse(_message.Message):
    __slots__ = ["ciphertext", "record"]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    record: WriteRecord
    def __init__(self, record: _Optional[_Union[WriteRecord, _Mapping]] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class RotateEpochRequest(_message.Message):
    __slots__ = ["epoch", "memory_id", "wraps"]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    WRAPS_FIELD_NUMBER: _ClassVar[int]
    epoch: EpochRecord
    memory_id: str
    wraps: _containers.RepeatedCompositeFieldContainer[KeyWrap]
    def __init__(self, memory_id: _Optional[str] = ..., epoch: _Optional[_Union[EpochRecord, _Mapping]] = ..., wraps: _Optional[_Iterable[_Union[KeyWrap, _Mapping]]] = ...) -> None: ...

class RotateEpochResponse(_message.Message):
    __slots__ = ["current_epoch"]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    current_epoch: int
    def __init__(self, current_epoch: _Optional[int] = ...) -> None: ...

class UpdateMembershipRequest(_message.Message):
    __slots__ = ["entry", "epoch", "member_certificate", "memory_id", "wraps"]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    WRAPS_FIELD_NUMBER: _ClassVar[int]
    entry: MembershipEntry
    epoch: EpochRecord
    member_certificate: _identity_pb2.AgentCertificate
    memory_id: str
    wraps: _containers.RepeatedCompositeFieldContainer[KeyWrap]
    def __init__(self, memory_id: _Optional[str] = ..., entry: _Optional[_Union[MembershipEntry, _Mapping]] = ..., member_certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ..., epoch: _Optional[_Union[EpochRecord, _Mapping]] = ..., wraps: _Optional[_Iterable[_Union[KeyWrap, _Mapping]]] = ...) -> None: ...

class UpdateMembershipResponse(_message.Message):
    __slots__ = ["current_epoch", "membership_version"]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_VERSION_FIELD_NUMBER: _ClassVar[int]
    current_epoch: int
    membership_version: int
    def __init__(self, membership_version: _Optional[int] = ..., current_epoch: _Optional[int] = ...) -> None: ...

class WriteAccepted(_message.Message):
    __slots__ = ["already_applied", "version"]
    ALREADY_APPLIED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    already_applied: bool
    version: int
    def __init__(self, version: _Optional[int] = ..., already_applied: bool = ...) -> None: ...

class WriteConflict(_message.Message):
    __slots__ = ["current", "current_version"]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    current: WriteRecord
    current_version: int
    def __init__(self, current_version: _Optional[int] = ..., current: _Optional[_Union[WriteRecord, _Mapping]] = ...) -> None: ...

class WriteRecord(_message.Message):
    __slots__ = ["ciphertext_bytes", "ciphertext_digest", "expires_at_ms", "key_epoch", "previous_version", "segment_id", "signature", "timestamp_ms", "version", "writer_id"]
    CIPHERTEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    ciphertext_bytes: int
    ciphertext_digest: bytes
    expires_at_ms: int
    key_epoch: int
    previous_version: int
    segment_id: str
    signature: bytes
    timestamp_ms: int
    version: int
    writer_id: str
    def __init__(self, segment_id: _Optional[str] = ..., version: _Optional[int] = ..., previous_version: _Optional[int] = ..., key_epoch: _Optional[int] = ..., ciphertext_digest: _Optional[bytes] = ..., ciphertext_bytes: _Optional[int] = ..., writer_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class WriteSegmentRequest(_message.Message):
    __slots__ = ["ciphertext", "memory_id", "record"]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    memory_id: str
    record: WriteRecord
    def __init__(self, memory_id: _Optional[str] = ..., record: _Optional[_Union[WriteRecord, _Mapping]] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class WriteSegmentResponse(_message.Message):
    __slots__ = ["accepted", "conflict"]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    accepted: WriteAccepted
    conflict: WriteConflict
    def __init__(self, accepted: _Optional[_Union[WriteAccepted, _Mapping]] = ..., conflict: _Optional[_Union[WriteConflict, _Mapping]] = ...) -> None: ...

class MemoryAccess(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class MembershipChange(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
