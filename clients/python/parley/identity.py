"""Identities: key ids (§3.1), agent certificates (§3.2), their verification (§3.3) and trust bundles.

A verifier holds a :class:`TrustBundle` (pinned issuer public keys) and,
optionally, a :class:`RevocationChecker`. :func:`verify_certificate` checks, in
this order, and raises :class:`~parley.errors.IdentityError` with the first
failing code:

1. structure: ``version`` first (``unsupported_version``), then validity range,
   patterns and lengths, the 64-byte signature, no unknown fields (``malformed``);
2. the issuer key id is in the trust bundle (``unknown_issuer``);
3. the issuer's signature over the TBS layout (``bad_certificate``);
4. validity at ``now_ms`` (``not_yet_valid``, ``expired``; also the issuer entry's ``not_after_ms``);
5. the expected agent id, when given (``identity_mismatch``);
6. revocation by agent id or serial (``revoked``); stale data (``revocation_stale``).

Nothing from the certificate is acted on before the issuer signature holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from google.protobuf.message import DecodeError

from . import crypto
from .encoding import b64url_decode, b64url_encode
from .errors import IdentityError, ParleyError
from .layout import Layout
from .v1 import identity_pb2

AgentCertificate = identity_pb2.AgentCertificate

CERTIFICATE_VERSION: Final = 1
MAX_CERTIFICATE_BYTES: Final = 4096
KEY_ID_BYTES: Final = 16
SERIAL_BYTES: Final = 16
MAX_SAFE_INTEGER: Final = (1 << 53) - 1
MAX_TRUST_BUNDLE_ISSUERS: Final = 256

_AGENT_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9._:-]{0,127}")
_AGENT_TYPE_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CAPABILITY_RE: Final = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,127}")
_KEY_ID_HEX_RE: Final = re.compile(r"[0-9a-f]{32}")
MAX_CAPABILITIES: Final = 64


def is_agent_id(value: object) -> bool:
    """Whether ``value`` is a valid agent id: ``^[a-z0-9][a-z0-9._:-]{0,127}$`` (§3.2)."""
    return isinstance(value, str) and _AGENT_ID_RE.fullmatch(value) is not None


def key_id(public_key: bytes) -> bytes:
    """§3.1: ``BLAKE3(str("parley/v1/key-id") ‖ fixed32(pk))[0..16]``."""
    return crypto.blake3(Layout("parley/v1/key-id").fixed(public_key, 32, "public key").bytes())[:KEY_ID_BYTES]


def _malformed(what: str) -> IdentityError:
    return IdentityError("malformed", what)


# --- Trust bundle ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """One pinned issuer key; ``not_after_ms`` (when set) ends its trust."""

    key_id: bytes
    public_key: bytes
    not_after_ms: int | None = None


class TrustBundle:
    """An immutable set of pinned issuer keys, by key id (§3.3).

    Every entry's key id must be :func:`key_id` of its public key; a mismatched,
    duplicated or ill-typed entry rejects the whole bundle (``malformed``).
    """

    __slots__ = ("_by_key_id",)

    def __init__(self, issuers: list[TrustedIssuer]) -> None:
        by_id: dict[bytes, TrustedIssuer] = {}
        if len(issuers) > MAX_TRUST_BUNDLE_ISSUERS:
            raise _malformed(f"a trust bundle holds at most {MAX_TRUST_BUNDLE_ISSUERS} issuers")
        for i, issuer in enumerate(issuers):
            if len(issuer.public_key) != 32:
                raise _malformed(f"issuers[{i}].public_key must be 32 bytes")
            computed = key_id(issuer.public_key)
            if not crypto.constant_time_equal(computed, issuer.key_id):
                raise _malformed(f"issuers[{i}].key_id is not the key id of its public_key")
            if computed in by_id:
                raise _malformed(f"issuers[{i}] duplicates issuer key id {computed.hex()}")
            if issuer.not_after_ms is not None and not _is_safe_int(issuer.not_after_ms):
                raise _malformed(f"issuers[{i}].not_after_ms out of range")
            by_id[computed] = issuer
        self._by_key_id = by_id

    @classmethod
    def from_public_keys(cls, *public_keys: bytes) -> TrustBundle:
        """A bundle of issuer public keys with no ``not_after_ms``."""
        return cls([TrustedIssuer(key_id(pk), bytes(pk)) for pk in public_keys])

    @classmethod
    def from_json(cls, document: str | bytes | Mapping[str, Any]) -> TrustBundle:
        """Parses the §3.3 JSON form strictly: ``{"version": 1, "issuers": [{"key_id", "public_key", "not_after_ms"?}]}``.

        Unknown keys at either level, a non-canonical encoding, or a ``key_id``
        that is not the key id of ``public_key`` make the bundle ``malformed``;
        another integer version is ``unsupported_version``.
        """
        value: Any = document
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except (ValueError, UnicodeDecodeError) as error:
                raise _malformed("trust bundle is not valid JSON") from error
        if not isinstance(value, Mapping):
            raise _malformed("trust bundle must be a JSON object")
        unknown = set(value) - {"version", "issuers"}
        if unknown:
            raise _malformed(f"trust bundle has unknown keys {sorted(unknown)}")
        version: Any = value.get("version")
        if not _is_json_int(version) or not 0 <= version <= 0xFFFF_FFFF:
            raise _malformed("trust bundle version must be an integer")
        if version != 1:
            raise IdentityError("unsupported_version", f"trust bundle version {version} is not supported (expected 1)")
        raw = value.get("issuers")
        if not isinstance(raw, list):
            raise _malformed("trust bundle issuers must be an array")
        if len(raw) > MAX_TRUST_BUNDLE_ISSUERS:
            raise _malformed(f"a trust bundle holds at most {MAX_TRUST_BUNDLE_ISSUERS} issuers")
        issuers = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, Mapping):
                raise _malformed(f"issuers[{i}] must be an object")
            unknown = set(entry) - {"key_id", "public_key", "not_after_ms"}
            if unknown:
                raise _malformed(f"issuers[{i}] has unknown keys {sorted(unknown)}")
            kid = entry.get("key_id")
            if not isinstance(kid, str) or _KEY_ID_HEX_RE.fullmatch(kid) is None:
                raise _malformed(f"issuers[{i}].key_id must be 32 lowercase hex digits")
            pk_text = entry.get("public_key")
            if not isinstance(pk_text, str):
                raise _malformed(f"issuers[{i}].public_key must be a string")
            public_key = b64url_decode(pk_text, f"issuers[{i}].public_key")
            not_after = entry.get("not_after_ms")
            if "not_after_ms" in entry and (not _is_json_int(not_after) or not _is_safe_int(not_after)):
                raise _malformed(f"issuers[{i}].not_after_ms must be a non-negative integer below 2^53")
            issuers.append(TrustedIssuer(bytes.fromhex(kid), public_key, not_after if "not_after_ms" in entry else None))
        return cls(issuers)

    @classmethod
    def from_file(cls, path: str | Path) -> TrustBundle:
        """Reads the §3.3 JSON form from a file (``parley-registry trust-bundle`` writes it)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError as error:
            raise IdentityError("not_found", f"trust bundle file {path} does not exist") from error
        except OSError as error:
            raise IdentityError("unavailable", f"cannot read trust bundle file {path}") from error
        return cls.from_json(text)

    def get(self, kid: bytes) -> TrustedIssuer | None:
        """The issuer with this key id, if pinned."""
        return self._by_key_id.get(bytes(kid)) if isinstance(kid, (bytes, bytearray)) else None

    def issuers(self) -> list[TrustedIssuer]:
        return list(self._by_key_id.values())

    def __len__(self) -> int:
        return len(self._by_key_id)

    def to_json(self) -> dict[str, Any]:
        """The §3.3 JSON form (a dict; ``json.dumps`` it)."""
        out = []
        for issuer in self._by_key_id.values():
            entry: dict[str, Any] = {"key_id": issuer.key_id.hex(), "public_key": b64url_encode(issuer.public_key)}
            if issuer.not_after_ms is not None:
                entry["not_after_ms"] = issuer.not_after_ms
            out.append(entry)
        return {"version": 1, "issuers": out}

    def __repr__(self) -> str:
        return f"TrustBundle({', '.join(k.hex() for k in self._by_key_id)})"


def _is_json_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_safe_int(value: object) -> bool:
    return _is_json_int(value) and 0 <= value <= MAX_SAFE_INTEGER  # type: ignore[operator]


# --- Revocation checkers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revocation:
    """Why a subject is revoked: by ``agent`` id or by certificate ``serial``."""

    by: str
    reason: str = ""
    revoked_at_ms: int = 0


class RevocationChecker(Protocol):
    """What sessions consult at every handshake and every message (§3.3 step 6, §17).

    ``check`` returns the revocation of this agent id or serial, or None; it
    raises ``IdentityError("revocation_stale")`` when its data is older than its
    freshness bound (fail closed). Any other exception is treated as stale.
    """

    def check(self, agent_id: str, serial: bytes, now_ms: int) -> Revocation | None: ...


class StaticRevocations:
    """A fixed revocation set given by the caller (never stale): agent ids and/or serials."""

    __slots__ = ("_agents", "_serials")

    def __init__(self, agent_ids: frozenset[str] | set[str] | list[str] = frozenset(), serials: frozenset[bytes] | set[bytes] | list[bytes] = frozenset()) -> None:
        self._agents = frozenset(agent_ids)
        self._serials = frozenset(bytes(s) for s in serials)

    def check(self, agent_id: str, serial: bytes, now_ms: int) -> Revocation | None:
        if agent_id in self._agents:
            return Revocation("agent")
        if bytes(serial) in self._serials:
            return Revocation("serial")
        return None


def check_revocation(checker: RevocationChecker, agent_id: str, serial: bytes, now_ms: int) -> None:
    """Runs a checker: ``revoked`` when it says so, ``revocation_stale`` when it cannot answer (fail closed)."""
    try:
        status = checker.check(agent_id, serial, now_ms)
    except IdentityError as error:
        if error.code == "revocation_stale":
            raise
        raise IdentityError("revocation_stale", "revocation check failed") from error
    except Exception as error:  # a checker that cannot answer: fail closed
        raise IdentityError("revocation_stale", "revocation check failed") from error
    if status is not None:
        raise IdentityError("revoked", f"certificate revoked by {status.by}")


# --- Certificates -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedCertificate:
    """What a successful :func:`verify_certificate` vouches for."""

    agent_id: str
    identity_public_key: bytes
    agent_type: str
    capabilities: tuple[str, ...]
    valid_from_ms: int
    valid_until_ms: int
    serial: bytes
    issuer_key_id: bytes


def has_unknown_fields(message: Any) -> bool:
    """Whether a decoded protobuf message (or a sub-message) carries fields its schema does not define."""
    copy = type(message)()
    copy.CopyFrom(message)
    before = copy.ByteSize()
    copy.DiscardUnknownFields()
    return bool(copy.ByteSize() != before)


def decode_certificate(data: bytes) -> Any:
    """Decodes an encoded AgentCertificate: at most 4096 bytes, valid protobuf, no unknown fields (``malformed``)."""
    if not isinstance(data, (bytes, bytearray)):
        raise _malformed("certificate must be bytes")
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise _malformed(f"certificate is {len(data)} bytes, more than {MAX_CERTIFICATE_BYTES}")
    try:
        cert = AgentCertificate.FromString(bytes(data))
    except DecodeError as error:
        raise _malformed("certificate does not decode") from error
    if has_unknown_fields(cert):
        raise _malformed("certificate carries fields unknown to v1")
    return cert


def _check_fields(cert: Any) -> VerifiedCertificate:
    """§3.3 step 1: every TBS field, version first."""
    if cert.version != CERTIFICATE_VERSION:
        raise IdentityError("unsupported_version", f"certificate version {cert.version} is not supported (expected 1)")
    if not (0 <= cert.valid_from_ms < cert.valid_until_ms <= MAX_SAFE_INTEGER):
        raise _malformed("validity must satisfy 0 <= valid_from_ms < valid_until_ms <= 2^53-1")
    if not is_agent_id(cert.agent_id):
        raise _malformed("agent_id is not a valid agent id")
    if len(cert.identity_public_key) != 32:
        raise _malformed("identity_public_key must be 32 bytes")
    if _AGENT_TYPE_RE.fullmatch(cert.agent_type) is None:
        raise _malformed("agent_type is not valid")
    caps = tuple(cert.capabilities)
    if len(caps) > MAX_CAPABILITIES:
        raise _malformed(f"at most {MAX_CAPABILITIES} capabilities")
    for c in caps:
        if _CAPABILITY_RE.fullmatch(c) is None:
            raise _malformed("a capability is not valid")
    if any(caps[i].encode() >= caps[i + 1].encode() for i in range(len(caps) - 1)):
        raise _malformed("capabilities must be strictly ascending by byte value")
    if len(cert.serial) != SERIAL_BYTES:
        raise _malformed("serial must be 16 bytes")
    if len(cert.issuer_key_id) != KEY_ID_BYTES:
        raise _malformed("issuer_key_id must be 16 bytes")
    return VerifiedCertificate(
        agent_id=cert.agent_id,
        identity_public_key=bytes(cert.identity_public_key),
        agent_type=cert.agent_type,
        capabilities=caps,
        valid_from_ms=cert.valid_from_ms,
        valid_until_ms=cert.valid_until_ms,
        serial=bytes(cert.serial),
        issuer_key_id=bytes(cert.issuer_key_id),
    )


def _tbs(f: VerifiedCertificate, version: int = CERTIFICATE_VERSION) -> bytes:
    return (
        Layout("parley/v1/agent-certificate")
        .u32(version)
        .str(f.agent_id)
        .fixed(f.identity_public_key, 32, "identity_public_key")
        .str(f.agent_type)
        .list(f.capabilities)
        .i64(f.valid_from_ms)
        .i64(f.valid_until_ms)
        .fixed(f.serial, 16, "serial")
        .fixed(f.issuer_key_id, 16, "issuer_key_id")
        .bytes()
    )


def certificate_tbs(cert: Any) -> bytes:
    """The §3.2 TBS layout the issuer signs, after validating every field."""
    return _tbs(_check_fields(cert))


def verify_certificate(
    cert: Any,
    trust_bundle: TrustBundle,
    now_ms: int,
    *,
    expected_agent_id: str | None = None,
    revocations: RevocationChecker | None = None,
) -> VerifiedCertificate:
    """Verifies a certificate offline, in the §3.3 order; raises IdentityError with the first failing code."""
    fields = _check_fields(cert)
    if len(cert.signature) != 64:
        raise _malformed("signature must be 64 bytes")
    if has_unknown_fields(cert):
        raise _malformed("certificate carries fields unknown to v1")
    issuer = trust_bundle.get(fields.issuer_key_id)
    if issuer is None:
        raise IdentityError("unknown_issuer", "certificate issuer key id is not in the trust bundle")
    if not crypto.ed25519_verify(bytes(cert.signature), _tbs(fields), issuer.public_key):
        raise IdentityError("bad_certificate", "issuer signature does not verify over the certificate")
    if now_ms < fields.valid_from_ms:
        raise IdentityError("not_yet_valid", "certificate is not valid yet")
    if now_ms >= fields.valid_until_ms:
        raise IdentityError("expired", "certificate has expired")
    if issuer.not_after_ms is not None and now_ms >= issuer.not_after_ms:
        raise IdentityError("expired", "certificate issuer key is past its not_after_ms in the trust bundle")
    if expected_agent_id is not None and expected_agent_id != fields.agent_id:
        raise IdentityError("identity_mismatch", "certificate is for another agent than expected")
    if revocations is not None:
        check_revocation(revocations, fields.agent_id, fields.serial, now_ms)
    return fields


def encode_certificate(cert: Any) -> bytes:
    """The protobuf encoding of a structurally valid certificate."""
    _check_fields(cert)
    data: bytes = cert.SerializeToString()
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise _malformed("encoded certificate is larger than 4096 bytes")
    return data


def issue_certificate(issuer: crypto.SigningKey, **fields: Any) -> Any:
    """Signs a certificate (tests and tools; the registry is the real issuer)."""
    cert = AgentCertificate(version=CERTIFICATE_VERSION, issuer_key_id=key_id(issuer.public_key), **fields)
    cert.signature = issuer.sign(certificate_tbs(cert))
    return cert


__all__ = [
    "AgentCertificate",
    "ParleyError",
    "Revocation",
    "RevocationChecker",
    "StaticRevocations",
    "TrustBundle",
    "TrustedIssuer",
    "VerifiedCertificate",
    "certificate_tbs",
    "check_revocation",
    "decode_certificate",
    "encode_certificate",
    "is_agent_id",
    "issue_certificate",
    "key_id",
    "verify_certificate",
]
