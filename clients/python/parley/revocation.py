"""The registry's signed revocation list (docs/PROTOCOL.md §15.6) and checkers built on it.

::

    entry_hash(v) = BLAKE3( str("parley/v1/revocation-entry") ‖ fixed16(registry_id) ‖ fixed32(entry_hash(v−1))
                            ‖ u64(v) ‖ u8(kind) ‖ str(agent_id) ‖ var(serial) ‖ u32(reason) ‖ str(reason_text)
                            ‖ i64(revoked_at_ms) )                     entry_hash(0) = 32 zero bytes
    head          = str("parley/v1/revocation-head") ‖ fixed16(registry_id) ‖ u64(v) ‖ fixed32(entry_hash(v))
                    ‖ i64(issued_at_ms) ‖ fixed16(issuer_key_id)       signed by an issuer key of the trust bundle

:class:`RevocationList` holds a verified copy: it accepts a batch of entries
``w+1 … v`` with a head only when the versions continue without gap or repeat,
every hash recomputes from its predecessor, the head matches the last entry,
names this registry, and is signed by a pinned issuer key not past its
``not_after_ms``. Its freshness is the newest signed ``issued_at_ms`` (never
the time a batch arrived); older than ``max_age_ms`` it answers
``revocation_stale`` (fail closed).

:class:`RegistryRevocations` keeps such a list current by polling the
registry's ``GetRevocationList`` (paged) in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import grpc

from . import crypto
from .errors import IdentityError
from .identity import Revocation, TrustBundle, is_agent_id
from .layout import Layout
from .session import now_ms
from .v1 import registry_pb2, registry_pb2_grpc

ZERO_HASH: Final = bytes(32)
KIND_AGENT: Final = 1
KIND_SERIAL: Final = 2
MAX_REASON_TEXT: Final = 1024
DEFAULT_MAX_AGE_MS: Final = 60_000
DEFAULT_CLOCK_SKEW_MS: Final = 60_000
MAX_REVOCATIONS: Final = 1_000_000

_log = logging.getLogger("parley.revocation")


@dataclass(frozen=True, slots=True)
class RevocationEntry:
    """One entry of the list: an agent id (kind 1) or a certificate serial (kind 2)."""

    version: int
    kind: int
    agent_id: str
    serial: bytes
    reason: int
    reason_text: str
    revoked_at_ms: int

    @classmethod
    def from_proto(cls, e: Any) -> RevocationEntry:
        which = e.WhichOneof("subject")
        if which == "agent_id":
            return cls(e.version, KIND_AGENT, e.agent_id, b"", e.reason, e.reason_text, e.revoked_at_ms)
        if which == "serial":
            return cls(e.version, KIND_SERIAL, "", bytes(e.serial), e.reason, e.reason_text, e.revoked_at_ms)
        raise IdentityError("malformed", "revocation entry has no subject")


def entry_hash_input(registry_id: bytes, previous: bytes, e: RevocationEntry) -> bytes:
    """§15.6 entry hash input."""
    if e.kind == KIND_AGENT and (not is_agent_id(e.agent_id) or e.serial):
        raise IdentityError("malformed", "an agent-id revocation names a valid agent id and no serial")
    if e.kind == KIND_SERIAL and (len(e.serial) != 16 or e.agent_id):
        raise IdentityError("malformed", "a serial revocation names a 16-byte serial and no agent id")
    if e.kind not in (KIND_AGENT, KIND_SERIAL):
        raise IdentityError("malformed", "unknown revocation kind")
    if len(e.reason_text) > MAX_REASON_TEXT:
        raise IdentityError("malformed", "reason_text longer than 1024 characters")
    return (
        Layout("parley/v1/revocation-entry")
        .fixed(registry_id, 16, "registry_id")
        .fixed(previous, 32, "previous hash")
        .u64(e.version)
        .u8(e.kind)
        .str(e.agent_id)
        .var(e.serial)
        .u32(e.reason)
        .str(e.reason_text)
        .i64(e.revoked_at_ms)
        .bytes()
    )


def entry_hash(registry_id: bytes, previous: bytes, e: RevocationEntry) -> bytes:
    return crypto.blake3(entry_hash_input(registry_id, previous, e))


def head_layout(registry_id: bytes, version: int, head_hash: bytes, issued_at_ms: int, issuer_key_id: bytes) -> bytes:
    """§15.6 revocation head."""
    return (
        Layout("parley/v1/revocation-head")
        .fixed(registry_id, 16, "registry_id")
        .u64(version)
        .fixed(head_hash, 32, "head_hash")
        .i64(issued_at_ms)
        .fixed(issuer_key_id, 16, "issuer_key_id")
        .bytes()
    )


@dataclass(frozen=True, slots=True)
class SignedHead:
    version: int
    head_hash: bytes
    issued_at_ms: int
    registry_id: bytes
    issuer_key_id: bytes
    signature: bytes

    @classmethod
    def from_proto(cls, h: Any) -> SignedHead:
        return cls(h.version, bytes(h.head_hash), h.issued_at_ms, bytes(h.registry_id), bytes(h.issuer_key_id), bytes(h.signature))


class RevocationList:
    """A verified copy of one registry's revocation list; a :class:`~parley.identity.RevocationChecker`."""

    def __init__(
        self,
        trust_bundle: TrustBundle,
        *,
        registry_id: bytes | None = None,
        max_age_ms: int = DEFAULT_MAX_AGE_MS,
        fail_open: bool = False,
        clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if registry_id is not None and len(registry_id) != 16:
            raise IdentityError("malformed", "registry_id is 16 bytes")
        self._trust = trust_bundle
        self.registry_id = registry_id
        self.max_age_ms = max_age_ms
        self.fail_open = fail_open
        self._skew = clock_skew_ms
        self._clock = clock
        self.version = 0
        self.head_hash = ZERO_HASH
        self.issued_at_ms: int | None = None
        self._agents: dict[str, Revocation] = {}
        self._serials: dict[bytes, Revocation] = {}
        self._lock = threading.Lock()

    def apply(self, entries: Iterable[RevocationEntry], head: SignedHead) -> None:
        """Verifies and applies a batch ``version+1 … head.version`` (all or nothing)."""
        batch = list(entries)
        now = self._clock()
        registry_id = self.registry_id if self.registry_id is not None else head.registry_id
        if len(registry_id) != 16 or not crypto.constant_time_equal(head.registry_id, registry_id):
            raise IdentityError("bad_signature", "revocation head names another registry")
        with self._lock:
            version, previous = self.version, self.head_hash
            for e in batch:
                if e.version != version + 1:
                    raise IdentityError("revocation_stale", f"revocation entry {e.version} does not follow {version}: fetch again")
                previous = entry_hash(registry_id, previous, e)
                version = e.version
            if head.version != version or not crypto.constant_time_equal(head.head_hash, previous):
                raise IdentityError("bad_signature", "revocation head does not match the entries")
            issuer = self._trust.get(head.issuer_key_id)
            if issuer is None:
                raise IdentityError("unknown_issuer", "revocation head signed by an issuer not in the trust bundle")
            if issuer.not_after_ms is not None and now >= issuer.not_after_ms:
                raise IdentityError("expired", "revocation head issuer is past its not_after_ms")
            signed = head_layout(registry_id, head.version, head.head_hash, head.issued_at_ms, head.issuer_key_id)
            if not crypto.ed25519_verify(head.signature, signed, issuer.public_key):
                raise IdentityError("bad_signature", "revocation head signature does not verify")
            if len(self._agents) + len(self._serials) + len(batch) > MAX_REVOCATIONS:
                raise IdentityError("too_large", "revocation list larger than this copy holds")
            for e in batch:
                r = Revocation("agent" if e.kind == KIND_AGENT else "serial", e.reason_text, e.revoked_at_ms)
                if e.kind == KIND_AGENT:
                    self._agents[e.agent_id] = r
                else:
                    self._serials[e.serial] = r
            self.version, self.head_hash, self.registry_id = version, previous, registry_id
            # §15.6: freshness is the newest signed as-of time, counted no later than now + skew.
            as_of = min(head.issued_at_ms, now + self._skew)
            if self.issued_at_ms is None or as_of > self.issued_at_ms:
                self.issued_at_ms = as_of

    def is_fresh(self, now: int) -> bool:
        return self.issued_at_ms is not None and now - self.issued_at_ms <= self.max_age_ms

    def check(self, agent_id: str, serial: bytes, now_ms: int) -> Revocation | None:
        """The revocation of this agent id or serial, or None; ``revocation_stale`` when the copy is too old."""
        with self._lock:
            if not self.fail_open and not self.is_fresh(now_ms):
                raise IdentityError("revocation_stale", "revocation data is older than its freshness bound")
            return self._agents.get(agent_id) or self._serials.get(bytes(serial))

    def __len__(self) -> int:
        return len(self._agents) + len(self._serials)


class RegistryRevocations(RevocationList):
    """A :class:`RevocationList` that polls a registry's ``GetRevocationList`` every ``refresh_ms``.

    Use as an async context manager, or call :meth:`start` and :meth:`close`::

        async with RegistryRevocations("127.0.0.1:7400", trust_bundle) as revocations:
            agent = await parley.connect(..., revocations=revocations)

    The first :meth:`start` waits for one verified fetch (``revocation_stale``
    if the registry cannot be reached). Later failures are logged and retried;
    once the last signed head is older than ``max_age_ms`` every check fails
    closed. ``tls`` is grpc channel credentials (None: plaintext, loopback only).
    """

    def __init__(
        self,
        address: str,
        trust_bundle: TrustBundle,
        *,
        tls: grpc.ChannelCredentials | None = None,
        registry_id: bytes | None = None,
        refresh_ms: int = 15_000,
        max_age_ms: int = DEFAULT_MAX_AGE_MS,
        fail_open: bool = False,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        super().__init__(trust_bundle, registry_id=registry_id, max_age_ms=max_age_ms, fail_open=fail_open, clock=clock)
        self._address = address
        self._tls = tls
        self._refresh_s = max(0.05, refresh_ms / 1000)
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> RegistryRevocations:
        if self._channel is None:
            self._channel = grpc.aio.secure_channel(self._address, self._tls) if self._tls is not None else grpc.aio.insecure_channel(self._address)
        await self.refresh()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="parley-revocations")
        return self

    async def refresh(self) -> None:
        """Fetches every entry after the current version (paged) and the signed head."""
        if self._channel is None:
            raise IdentityError("unavailable", "not started")
        stub = registry_pb2_grpc.RegistryServiceStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            while True:
                response = await stub.GetRevocationList(registry_pb2.GetRevocationListRequest(after_version=self.version), timeout=10)
                if not response.HasField("head"):
                    raise IdentityError("malformed", "revocation list response has no head")
                self.apply([RevocationEntry.from_proto(e) for e in response.entries], SignedHead.from_proto(response.head))
                if response.head.version >= response.current_version:
                    return
        except grpc.aio.AioRpcError as error:
            raise IdentityError("revocation_stale", f"registry unreachable: {error.code().name}") from error

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception as error:  # logged; the copy goes stale and checks fail closed
                _log.warning("revocation refresh failed: %s", error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> RegistryRevocations:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
