from parley.v1 import identity_pb2 as _identity_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

AGENT_STATUS_ACTIVE: AgentStatus
AGENT_STATUS_EXPIRED: AgentStatus
AGENT_STATUS_REVOKED: AgentStatus
AGENT_STATUS_UNSPECIFIED: AgentStatus
CHALLENGE_PURPOSE_REGISTER: ChallengePurpose
CHALLENGE_PURPOSE_ROTATE_KEY: ChallengePurpose
CHALLENGE_PURPOSE_UNSPECIFIED: ChallengePurpose
DESCRIPTOR: _descriptor.FileDescriptor
REVOCATION_REASON_AFFILIATION_CHANGED: RevocationReason
REVOCATION_REASON_CESSATION_OF_OPERATION: RevocationReason
REVOCATION_REASON_KEY_COMPROMISE: RevocationReason
REVOCATION_REASON_PRIVILEGE_WITHDRAWN: RevocationReason
REVOCATION_REASON_SUPERSEDED: RevocationReason
REVOCATION_REASON_UNSPECIFIED: RevocationReason

class AddOperatorRequest(_message.Message):
    __slots__ = ["name", "public_key"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    public_key: bytes
    def __init__(self, name: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class AddOperatorResponse(_message.Message):
    __slots__ = ["operator"]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    operator: Operator
    def __init__(self, operator: _Optional[_Union[Operator, _Mapping]] = ...) -> None: ...

class AgentRecord(_message.Message):
    __slots__ = ["agent_id", "agent_type", "capabilities", "certificate", "registered_at_ms", "revocation_version", "status", "updated_at_ms"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_type: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    certificate: _identity_pb2.AgentCertificate
    registered_at_ms: int
    revocation_version: int
    status: AgentStatus
    updated_at_ms: int
    def __init__(self, agent_id: _Optional[str] = ..., agent_type: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., status: _Optional[_Union[AgentStatus, str]] = ..., certificate: _Optional[_Union[_identity_pb2.AgentCertificate, _Mapping]] = ..., registered_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., revocation_version: _Optional[int] = ...) -> None: ...

class CreateChallengeRequest(_message.Message):
    __slots__ = ["purpose"]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    purpose: ChallengePurpose
    def __init__(self, purpose: _Optional[_Union[ChallengePurpose, str]] = ...) -> None: ...

class CreateChallengeResponse(_message.Message):
    __slots__ = ["challenge", "expires_at_ms"]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    expires_at_ms: int
    def __init__(self, challenge: _Optional[bytes] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class CreateJoinTokenRequest(_message.Message):
    __slots__ = ["agent_id", "agent_type", "capabilities", "ttl_ms", "validity_ms"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_MS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_type: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    ttl_ms: int
    validity_ms: int
    def __init__(self, agent_id: _Optional[str] = ..., agent_type: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., ttl_ms: _Optional[int] = ..., validity_ms: _Optional[int] = ...) -> None: ...

class CreateJoinTokenResponse(_message.Message):
    __slots__ = ["expires_at_ms", "token", "token_id", "token_secret"]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    expires_at_ms: int
    token: str
    token_id: bytes
    token_secret: bytes
    def __init__(self, token_id: _Optional[bytes] = ..., token_secret: _Optional[bytes] = ..., expires_at_ms: _Optional[int] = ..., token: _Optional[str] = ...) -> None: ...

class EnrollAgentRequest(_message.Message):
    __slots__ = ["agent_id", "identity_public_key", "proof_signature", "timestamp_ms", "token_id", "token_secret"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PROOF_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    identity_public_key: bytes
    proof_signature: bytes
    timestamp_ms: int
    token_id: bytes
    token_secret: bytes
    def __init__(self, token_id: _Optional[bytes] = ..., token_secret: _Optional[bytes] = ..., agent_id: _Optional[str] = ..., identity_public_key: _Optional[bytes] = ..., timestamp_ms: _Optional[int] = ..., proof_signature: _Optional[bytes] = ...) -> None: ...

class EnrollAgentResponse(_message.Message):
    __slots__ = ["agent"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRecord
    def __init__(self, agent: _Optional[_Union[AgentRecord, _Mapping]] = ...) -> None: ...

class GetAgentRequest(_message.Message):
    __slots__ = ["agent_id"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class GetAgentResponse(_message.Message):
    __slots__ = ["agent"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRecord
    def __init__(self, agent: _Optional[_Union[AgentRecord, _Mapping]] = ...) -> None: ...

class GetRevocationListRequest(_message.Message):
    __slots__ = ["after_version", "max_entries"]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    max_entries: int
    def __init__(self, after_version: _Optional[int] = ..., max_entries: _Optional[int] = ...) -> None: ...

class GetRevocationListResponse(_message.Message):
    __slots__ = ["current_version", "entries", "head"]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    current_version: int
    entries: _containers.RepeatedCompositeFieldContainer[RevocationListEntry]
    head: SignedRevocationHead
    def __init__(self, entries: _Optional[_Iterable[_Union[RevocationListEntry, _Mapping]]] = ..., head: _Optional[_Union[SignedRevocationHead, _Mapping]] = ..., current_version: _Optional[int] = ...) -> None: ...

class GetTrustBundleRequest(_message.Message):
    __slots__ = ["after_version"]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    def __init__(self, after_version: _Optional[int] = ...) -> None: ...

class GetTrustBundleResponse(_message.Message):
    __slots__ = ["current_version", "documents", "issuers", "registry_id"]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    ISSUERS_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_ID_FIELD_NUMBER: _ClassVar[int]
    current_version: int
    documents: _containers.RepeatedCompositeFieldContainer[_identity_pb2.SignedTrustBundle]
    issuers: _containers.RepeatedCompositeFieldContainer[TrustedIssuer]
    registry_id: bytes
    def __init__(self, issuers: _Optional[_Iterable[_Union[TrustedIssuer, _Mapping]]] = ..., registry_id: _Optional[bytes] = ..., documents: _Optional[_Iterable[_Union[_identity_pb2.SignedTrustBundle, _Mapping]]] = ..., current_version: _Optional[int] = ...) -> None: ...

class JoinToken(_message.Message):
    __slots__ = ["agent_id", "agent_type", "capabilities", "created_at_ms", "created_by_key_id", "expires_at_ms", "revoked_at_ms", "token_id", "used_at_ms"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    USED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_type: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    created_at_ms: int
    created_by_key_id: bytes
    expires_at_ms: int
    revoked_at_ms: int
    token_id: bytes
    used_at_ms: int
    def __init__(self, token_id: _Optional[bytes] = ..., agent_id: _Optional[str] = ..., agent_type: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., created_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., used_at_ms: _Optional[int] = ..., revoked_at_ms: _Optional[int] = ..., created_by_key_id: _Optional[bytes] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ["agent_type", "capability", "page_size", "page_token", "status"]
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    agent_type: str
    capability: str
    page_size: int
    page_token: str
    status: AgentStatus
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., agent_type: _Optional[str] = ..., capability: _Optional[str] = ..., status: _Optional[_Union[AgentStatus, str]] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ["agents", "next_page_token"]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentRecord]
    next_page_token: str
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListJoinTokensRequest(_message.Message):
    __slots__ = ["all"]
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: bool = ...) -> None: ...

class ListJoinTokensResponse(_message.Message):
    __slots__ = ["tokens"]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[JoinToken]
    def __init__(self, tokens: _Optional[_Iterable[_Union[JoinToken, _Mapping]]] = ...) -> None: ...

class ListOperatorsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListOperatorsResponse(_message.Message):
    __slots__ = ["operators"]
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    operators: _containers.RepeatedCompositeFieldContainer[Operator]
    def __init__(self, operators: _Optional[_Iterable[_Union[Operator, _Mapping]]] = ...) -> None: ...

class Operator(_message.Message):
    __slots__ = ["added_at_ms", "added_by_key_id", "key_id", "name", "public_key"]
    ADDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ADDED_BY_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    added_at_ms: int
    added_by_key_id: bytes
    key_id: bytes
    name: str
    public_key: bytes
    def __init__(self, key_id: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., name: _Optional[str] = ..., added_at_ms: _Optional[int] = ..., added_by_key_id: _Optional[bytes] = ...) -> None: ...

class RegisterAgentRequest(_message.Message):
    __slots__ = ["agent_id", "agent_type", "capabilities", "challenge", "identity_public_key", "proof_signature", "valid_from_ms", "valid_until_ms"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PROOF_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_type: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    challenge: bytes
    identity_public_key: bytes
    proof_signature: bytes
    valid_from_ms: int
    valid_until_ms: int
    def __init__(self, agent_id: _Optional[str] = ..., identity_public_key: _Optional[bytes] = ..., agent_type: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., valid_from_ms: _Optional[int] = ..., valid_until_ms: _Optional[int] = ..., challenge: _Optional[bytes] = ..., proof_signature: _Optional[bytes] = ...) -> None: ...

class RegisterAgentResponse(_message.Message):
    __slots__ = ["agent"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRecord
    def __init__(self, agent: _Optional[_Union[AgentRecord, _Mapping]] = ...) -> None: ...

class RemoveOperatorRequest(_message.Message):
    __slots__ = ["key_id"]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: bytes
    def __init__(self, key_id: _Optional[bytes] = ...) -> None: ...

class RemoveOperatorResponse(_message.Message):
    __slots__ = ["operator"]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    operator: Operator
    def __init__(self, operator: _Optional[_Union[Operator, _Mapping]] = ...) -> None: ...

class RevocationListEntry(_message.Message):
    __slots__ = ["agent_id", "entry_hash", "reason", "reason_text", "revoked_at_ms", "serial", "version"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRY_HASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REASON_TEXT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    entry_hash: bytes
    reason: RevocationReason
    reason_text: str
    revoked_at_ms: int
    serial: bytes
    version: int
    def __init__(self, version: _Optional[int] = ..., agent_id: _Optional[str] = ..., serial: _Optional[bytes] = ..., reason: _Optional[_Union[RevocationReason, str]] = ..., reason_text: _Optional[str] = ..., revoked_at_ms: _Optional[int] = ..., entry_hash: _Optional[bytes] = ...) -> None: ...

class RevokeAgentRequest(_message.Message):
    __slots__ = ["agent_id", "reason", "reason_text", "revoked_at_ms", "serial"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REASON_TEXT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    reason: RevocationReason
    reason_text: str
    revoked_at_ms: int
    serial: bytes
    def __init__(self, agent_id: _Optional[str] = ..., serial: _Optional[bytes] = ..., reason: _Optional[_Union[RevocationReason, str]] = ..., reason_text: _Optional[str] = ..., revoked_at_ms: _Optional[int] = ...) -> None: ...

class RevokeAgentResponse(_message.Message):
    __slots__ = ["entry"]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: RevocationListEntry
    def __init__(self, entry: _Optional[_Union[RevocationListEntry, _Mapping]] = ...) -> None: ...

class RevokeJoinTokenRequest(_message.Message):
    __slots__ = ["token_id"]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: bytes
    def __init__(self, token_id: _Optional[bytes] = ...) -> None: ...

class RevokeJoinTokenResponse(_message.Message):
    __slots__ = ["token"]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: JoinToken
    def __init__(self, token: _Optional[_Union[JoinToken, _Mapping]] = ...) -> None: ...

class RotateIssuerRequest(_message.Message):
    __slots__ = ["activate_after_ms", "grace_ms"]
    ACTIVATE_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    activate_after_ms: int
    grace_ms: int
    def __init__(self, activate_after_ms: _Optional[int] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class RotateIssuerResponse(_message.Message):
    __slots__ = ["activates_at_ms", "certificates_outliving_grace", "prepared", "trust_bundle_version"]
    ACTIVATES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_OUTLIVING_GRACE_FIELD_NUMBER: _ClassVar[int]
    PREPARED_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    activates_at_ms: int
    certificates_outliving_grace: int
    prepared: TrustedIssuer
    trust_bundle_version: int
    def __init__(self, prepared: _Optional[_Union[TrustedIssuer, _Mapping]] = ..., activates_at_ms: _Optional[int] = ..., trust_bundle_version: _Optional[int] = ..., certificates_outliving_grace: _Optional[int] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ["agent_id", "challenge", "new_identity_public_key", "new_key_signature", "old_key_signature", "valid_until_ms"]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    NEW_IDENTITY_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NEW_KEY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    OLD_KEY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    challenge: bytes
    new_identity_public_key: bytes
    new_key_signature: bytes
    old_key_signature: bytes
    valid_until_ms: int
    def __init__(self, agent_id: _Optional[str] = ..., new_identity_public_key: _Optional[bytes] = ..., challenge: _Optional[bytes] = ..., old_key_signature: _Optional[bytes] = ..., new_key_signature: _Optional[bytes] = ..., valid_until_ms: _Optional[int] = ...) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ["agent", "superseded"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    agent: AgentRecord
    superseded: RevocationListEntry
    def __init__(self, agent: _Optional[_Union[AgentRecord, _Mapping]] = ..., superseded: _Optional[_Union[RevocationListEntry, _Mapping]] = ...) -> None: ...

class SignedRevocationHead(_message.Message):
    __slots__ = ["head_hash", "issued_at_ms", "issuer_key_id", "registry_id", "signature", "version"]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ISSUER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    head_hash: bytes
    issued_at_ms: int
    issuer_key_id: bytes
    registry_id: bytes
    signature: bytes
    version: int
    def __init__(self, version: _Optional[int] = ..., head_hash: _Optional[bytes] = ..., issued_at_ms: _Optional[int] = ..., registry_id: _Optional[bytes] = ..., issuer_key_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TrustedIssuer(_message.Message):
    __slots__ = ["activates_at_ms", "active", "key_id", "not_after_ms", "public_key", "state"]
    ACTIVATES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    activates_at_ms: int
    active: bool
    key_id: bytes
    not_after_ms: int
    public_key: bytes
    state: _identity_pb2.IssuerKeyState
    def __init__(self, key_id: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., not_after_ms: _Optional[int] = ..., active: bool = ..., state: _Optional[_Union[_identity_pb2.IssuerKeyState, str]] = ..., activates_at_ms: _Optional[int] = ...) -> None: ...

class WatchRevocationsRequest(_message.Message):
    __slots__ = ["after_version"]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    def __init__(self, after_version: _Optional[int] = ...) -> None: ...

class WatchRevocationsResponse(_message.Message):
    __slots__ = ["entries", "head", "trust_bundle_version"]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[RevocationListEntry]
    head: SignedRevocationHead
    trust_bundle_version: int
    def __init__(self, entries: _Optional[_Iterable[_Union[RevocationListEntry, _Mapping]]] = ..., head: _Optional[_Union[SignedRevocationHead, _Mapping]] = ..., trust_bundle_version: _Optional[int] = ...) -> None: ...

class ChallengePurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class AgentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class RevocationReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
