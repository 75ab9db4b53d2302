"""MemoryClient: an agent's side of shared memory (docs/PROTOCOL.md §18), ``agent.memory`` in the SDK.

It talks to a store (``parley.v1.MemoryService``, served by the gateway) over gRPC, signing every
request with the agent's identity key (§18.8), and does all the cryptography itself: it verifies the
membership log, key epochs, key copies and write records the store returns (§18.4–§18.7), opens its
copy of the epoch key, encrypts and signs what it writes, and makes new epochs and key copies when it
grants, revokes or rotates. The store only ever sees ciphertext, digests and signatures.

Every mutating call sends a signed record the store recognises when it sees it again, so a call that
failed with ``unavailable`` or ``deadline_exceeded`` is retried with the same record (a write
acknowledged before a crash is never applied twice; one lost with the crash is applied once). Each
attempt carries a fresh request signature (a nonce is single use).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import grpc
from google.protobuf.message import DecodeError

from .. import crypto
from ..errors import IdentityError, ParleyError, SharedMemoryError
from ..gateway import TlsConfig, rpc_error_code
from ..identity import RevocationChecker, TrustBundle, VerifiedCertificate, check_revocation, verify_certificate
from ..session import LocalIdentity, now_ms
from ..v1 import memory_pb2
from .layouts import membership_entry_hash
from .model import Member, Membership, is_cut, rotation_due, same_write, verify_current_epoch, verify_epoch_record, verify_key_wrap, verify_write_record
from .names import (
    CHANGE_GRANT,
    CHANGE_REVOKE,
    DEFAULT_MAX_SEGMENTS,
    LIST_MEMORIES_PAGE,
    LIST_SEGMENTS_PAGE,
    MAX_LISTED_MEMORIES,
    MAX_LISTED_SEGMENTS,
    MAX_REMEMBERED_MEMORIES,
    MAX_SAFE_INTEGER,
    MAX_SEGMENT_PLAINTEXT_BYTES,
    MEMORY_CLOCK_SKEW_MS,
    MEMORY_MAX_RECEIVE_BYTES,
    MEMORY_MAX_SEND_BYTES,
    AccessLevel,
    access_of,
    assert_agent,
    assert_memory_id,
    assert_segment_id,
    fail,
    level_of,
)
from .records import EpochKey, change_entry, create_entry, follow_back_link, is_commitment_mismatch, new_cut_epoch, new_epoch, open_wrap, open_write, seal_write, wrap_key
from .request_auth import sign_memory_request

SERVICE: Final = "/parley.v1.MemoryService/"
RETRYABLE: Final = frozenset({"unavailable", "deadline_exceeded"})
#: Codes the log rules give that, in the store's answer, mean the store sent something that does not verify.
_STORE_FAULTS: Final = frozenset({"malformed", "conflict", "permission_denied", "identity_mismatch"})
#: Codes that mean an answer of the store did not verify: reported as security events.
SECURITY_CODES: Final = frozenset({"bad_signature", "decrypt_failed", "replay", "identity_mismatch"})

_log = logging.getLogger("parley")

KeyFaultKind = Literal["key_copy", "back_link"]

#: ``on_security(code, memory_id, detail)``: a store's answer that did not verify (never key material).
OnSecurity = Callable[[str, str, str], None]

T = TypeVar("T")


# --- what the API returns ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryMemberInfo:
    """A member of a memory as the verified log says."""

    agent_id: str
    access: AccessLevel
    #: Grant expiry, ms since the Unix epoch; None: never.
    expires_at_ms: int | None


@dataclass(frozen=True, slots=True)
class MemoryUsageInfo:
    """Quota usage of a memory and its owner (as the store reports it)."""

    bytes: int
    segments: int
    max_bytes: int
    max_segments: int
    owner_bytes: int
    owner_segments: int
    owner_max_bytes: int
    owner_max_segments: int


@dataclass(frozen=True, slots=True)
class MemoryKeyFault:
    """A key copy or back link a member signed that does not give this agent the key (§18.5). The store cannot
    check a sealed key, so the answer is adopted and the rest of the memory stays usable; the member named is the
    one who signed it — certainly at fault when ``proven``, possibly when not (see ``proven``)."""

    #: The epoch whose key copy (``key_copy``) or back link (``back_link``) does not open.
    epoch: int
    #: The member named: the copy's signer, or the epoch's creator (the back link's).
    member_id: str
    kind: KeyFaultKind
    #: True: the member's fault, provably — the copy, sealed to this agent's identity key, does not open with it or
    #: names another memory, epoch or member; or the back link does not open under the key its epoch commits to
    #: (what the member signed is wrong whatever record it is paired with). False: it opens, to a key that does not
    #: match the commitment of the epoch record the store served with it. Either the member sealed another key, or
    #: the store paired genuine material with another genuine record of the epoch (a copy's signature does not
    #: cover the commitment; for a back link, the record of the epoch before, which epoch records do not chain to):
    #: revoke the member only if other evidence says it is at fault. Either way a ``key_copy`` fault of the current
    #: epoch makes this agent's next revocation a cut (§18.5).
    proven: bool = True


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    """A memory as this agent sees it (from the verified membership log)."""

    memory_id: str
    owner_id: str
    #: This agent's level.
    access: AccessLevel
    created_at_ms: int
    expires_at_ms: int | None
    #: Active members (grants in force now), ordered by id.
    members: tuple[MemoryMemberInfo, ...]
    membership_version: int
    current_epoch: int
    usage: MemoryUsageInfo
    #: Key copies and back links members made that did not open for this agent (§18.5), newest epoch first: what
    #: needs those keys fails ``decrypt_failed``. The owner or an admin repairs it by revoking the member (without
    #: the current key, with a cut epoch: what was written before the cut stays out of reach for this agent). Only a
    #: fault with ``proven`` is certainly the member's (see :class:`MemoryKeyFault`).
    key_faults: tuple[MemoryKeyFault, ...] = ()


@dataclass(frozen=True, slots=True)
class MemoryListing:
    """A memory in a listing (as the store reports it; :meth:`MemoryClient.get` verifies one)."""

    memory_id: str
    owner_id: str
    access: AccessLevel
    created_at_ms: int
    expires_at_ms: int | None


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment's current version, from its verified write record."""

    segment_id: str
    version: int
    writer_id: str
    written_at_ms: int
    expires_at_ms: int | None
    #: Ciphertext bytes (the plaintext is 40 fewer).
    bytes: int
    key_epoch: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A segment read, verified and decrypted. ``record`` and ``ciphertext`` together are the writer's
    non-repudiable statement (§18.7): anyone with the epoch key who trusts the issuer can check them."""

    info: SegmentInfo
    data: bytes
    record: Any  # parley.v1.WriteRecord
    ciphertext: bytes

    @property
    def version(self) -> int:
        return self.info.version

    @property
    def writer_id(self) -> str:
        return self.info.writer_id

    def text(self) -> str:
        """The data as UTF-8 text."""
        return self.data.decode("utf-8")


@dataclass(frozen=True, slots=True)
class WriteResult:
    #: The segment's version now.
    version: int
    #: The store had this exact write already (a retry after a lost answer).
    already_applied: bool
    #: Attempts :meth:`MemoryClient.update` needed (1 for a plain write).
    attempts: int = 1


@dataclass(slots=True)
class _State:
    """A memory's verified state, cached per memory."""

    log: Membership
    epochs: dict[int, Any]
    keys: dict[int, EpochKey]
    current_epoch: int
    certificates: dict[str, Any]
    #: The store said so, or the client found it due itself (:func:`rotation_due`).
    rotation_required: bool
    usage: Any | None
    #: When (this client's clock) the client asked for the answer that last showed the log ending at ``log.version``.
    seen_at_ms: int = 0
    #: epoch → why this client holds no key of it: a member's copy or back link that does not open (§18.5).
    faults: dict[int, MemoryKeyFault] = field(default_factory=dict)

    def wipe(self) -> None:
        for k in self.keys.values():
            k.wipe()
        self.keys.clear()


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a client remembers of a memory whose verified state left its cache (no key): enough to refuse a
    store that shows it an older or another log, or an older epoch, when it loads the memory again."""

    version: int
    head: bytes
    epoch: int
    #: The highest log version an accepted epoch was made for.
    epoch_version: int
    seen_at_ms: int


def _fault_message(memory_id: str, owner_id: str, fault: MemoryKeyFault, needed: int) -> str:
    """Why a key is missing, for ``decrypt_failed`` (§18.5): the epoch, the member at fault, and the repair
    (``needed``: the epoch whose key was asked for, at or before the fault's)."""
    e, m = fault.epoch, fault.member_id
    if fault.kind == "key_copy":
        if fault.proven:
            why = f"the key copy of epoch {e} that member {m} made for this agent does not open with this agent's identity key or names another memory, epoch or member"
        else:
            why = (
                f"the key copy of epoch {e} that {m} signed does not match the key epoch {e} commits to: either {m} sealed another key, "
                f"or the store paired the copy with another record of epoch {e} (a copy's signature does not cover the commitment)"
            )
    elif fault.proven:
        why = f"the back link of epoch {e}, made by member {m}, does not open under the key epoch {e} commits to"
    else:
        why = f"the back link of epoch {e}, made by member {m}, does not open to the key of epoch {e - 1}: either {m} made a bad back link or the store served another record of epoch {e - 1}"
    what = f"the key of epoch {needed}" if needed == e else f"the key of epoch {needed} (reached through epoch {e})"
    if m == owner_id:
        repair = f"{m} is the owner, whom no one can revoke"
    else:
        repair = f"the owner or an admin can revoke {m}{'' if fault.proven else ' if it is at fault'} (§18.5)"
    return f"{what} of {memory_id} is not available to this agent: {why}; {repair}"


def _same_key(a: bytes, b: bytes) -> bool:
    return len(a) == len(b) and crypto.constant_time_equal(a, b)


def _opt(ms: int) -> int | None:
    return None if ms == 0 else int(ms)


def _segment_info(r: Any) -> SegmentInfo:
    return SegmentInfo(r.segment_id, r.version, r.writer_id, r.timestamp_ms, _opt(r.expires_at_ms), r.ciphertext_bytes, r.key_epoch)


def _check_ms(value: int | None, name: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise fail("malformed", f"{name} must be a non-negative integer number of ms")
    return value


def _as_memory_error(error: BaseException) -> SharedMemoryError:
    if isinstance(error, SharedMemoryError):
        return error
    if isinstance(error, ParleyError):
        out = SharedMemoryError(error.code, error.detail)
        out.__cause__ = error
        return out
    out = SharedMemoryError("internal", f"{type(error).__name__}")
    out.__cause__ = error
    return out


class _Pages:
    """The pages of one listing from a store that is not trusted to end it (§18.2): no page larger than asked
    for, no page token twice, at most ``max_items`` items in all (so at most that many pages with items, and
    one more) — ``malformed`` otherwise."""

    def __init__(self, what: str, page_size: int, max_items: int) -> None:
        self._what = what
        self._page_size = page_size
        self._max_items = max_items
        self._max_pages = -(-max_items // page_size) + 1
        self._items = 0
        self._pages = 0
        self._tokens: set[str] = set()

    def take(self, items: int, token: str) -> str:
        """Checks one page (``items`` long, pointing on to ``token``) before any of it is used; returns ``token``."""
        self._pages += 1
        self._items += items
        if items > self._page_size:
            raise fail("malformed", f"the store answered a {self._what} page of {items} items, more than the {self._page_size} asked for")
        if self._items > self._max_items or self._pages > self._max_pages:
            raise fail("malformed", f"the store's {self._what} goes on beyond {self._max_items} items")
        if token:
            if token in self._tokens:
                raise fail("malformed", f"the store repeated a page token of the {self._what}")
            self._tokens.add(token)
        return token


def _segment_bound(usage: Any | None) -> int:
    """The most segments a memory's listing may hold: its quota as the store reports it (DEFAULT_MAX_SEGMENTS
    without one, never more than MAX_LISTED_SEGMENTS) and two pages of room (segments written while paging)."""
    reported = int(usage.max_segments) if usage is not None else 0
    return min(reported if reported > 0 else DEFAULT_MAX_SEGMENTS, MAX_LISTED_SEGMENTS) + 2 * LIST_SEGMENTS_PAGE


class MemoryClient:
    """Shared memory for one agent (``agent.memory`` creates one). Every method is a coroutine and
    raises :class:`parley.SharedMemoryError` with a stable code.

    Example::

        info = await agent.memory.create()
        await agent.memory.grant(info.memory_id, "worker-7", "write")
        await agent.memory.write(info.memory_id, "plan", b'{"steps": []}', previous_version=0)
        r = await agent.memory.read(info.memory_id, "plan")   # r.data, r.version, r.writer_id
    """

    def __init__(
        self,
        *,
        identity: LocalIdentity,
        address: str,
        service_id: str,
        trust_bundle: TrustBundle,
        revocations: RevocationChecker | None = None,
        tls: TlsConfig | None = None,
        timeout: float = 30.0,
        retry_unavailable: float = 30.0,
        cache_size: int = 64,
        clock: Callable[[], int] = now_ms,
        on_security: OnSecurity | None = None,
    ) -> None:
        assert_agent(identity.agent_id, "identity.agent_id")
        if not isinstance(service_id, str) or not service_id:
            raise fail("malformed", "service_id (the gateway id) is required")
        self._identity = identity
        self._address = address
        self._service_id = service_id
        self._trust = trust_bundle
        self._revocations = revocations
        self._tls = tls
        self._timeout = timeout
        self._retry_budget = retry_unavailable
        self._cache_size = max(1, cache_size)
        self._clock = clock
        self._on_security = on_security
        self._channel: grpc.aio.Channel | None = None
        self._methods: dict[str, Any] = {}
        self._states: collections.OrderedDict[str, _State] = collections.OrderedDict()
        #: Memories no longer cached, oldest first (at most MAX_REMEMBERED_MEMORIES).
        self._seen: collections.OrderedDict[str, _Seen] = collections.OrderedDict()
        self._loading: dict[str, asyncio.Future[_State]] = {}
        self._closed = False

    @property
    def agent_id(self) -> str:
        return self._identity.agent_id

    async def close(self) -> None:
        """Wipes every cached key and closes the channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for state in self._states.values():
            state.wipe()
        self._states.clear()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> MemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # =========================================================================================
    # The API

    async def create(self, *, expires_at_ms: int | None = None) -> MemoryInfo:
        """Creates a memory owned by this agent, with key epoch 1 and the owner's key copy.

        Raises: ``quota_exceeded`` (too many memories for this owner), ``malformed``, the store's refusal.
        """
        self._assert_open()
        expiry = _check_ms(expires_at_ms, "expires_at_ms")
        now = self._clock()
        me = self._identity
        memory_id, entry = create_entry(me.agent_id, me.signing_key, now_ms=now, expires_at_ms=expiry)
        log = Membership.create(entry, memory_id)  # our own entry, by the rules the store applies
        epoch = new_epoch(me.agent_id, me.signing_key, memory_id, 1, log.head, None, now)
        try:
            owner_wrap = wrap_key(me.agent_id, me.signing_key, memory_id, epoch, me.agent_id, me.signing_key.public_key)
        finally:
            epoch.wipe()
        await self._call("CreateMemory", memory_pb2.CreateMemoryRequest(entry=entry, epoch=epoch.record, owner_wrap=owner_wrap), memory_pb2.CreateMemoryResponse)
        return await self.get(memory_id)

    async def get(self, memory_id: str) -> MemoryInfo:
        """The memory's verified state: members, epoch, usage.

        Raises: ``permission_denied`` (not a member, or no such memory), ``expired``, ``bad_signature`` /
        ``replay`` (the store's answer does not verify).
        """
        assert_memory_id(memory_id)
        return self._info(await self._refresh(memory_id))

    async def list(self) -> builtins.list[MemoryListing]:
        """Every memory this agent is an active member of (as the store lists them; :meth:`get` verifies one)."""
        self._assert_open()
        out: builtins.list[MemoryListing] = []
        pages = _Pages("memory listing", LIST_MEMORIES_PAGE, MAX_LISTED_MEMORIES)
        token = ""
        while True:
            page = await self._call("ListMemories", memory_pb2.ListMemoriesRequest(page_size=LIST_MEMORIES_PAGE, page_token=token), memory_pb2.ListMemoriesResponse)
            token = pages.take(len(page.memories), page.next_page_token)
            for m in page.memories:
                out.append(MemoryListing(m.memory_id, m.owner_id, level_of(m.access), m.created_at_ms, _opt(m.expires_at_ms)))
            if not token:
                return out

    async def segments(self, memory_id: str) -> builtins.list[SegmentInfo]:
        """The segments of a memory, each from its verified write record."""
        assert_memory_id(memory_id)
        state = await self._state(memory_id)
        out: builtins.list[SegmentInfo] = []
        pages = _Pages("segment listing", LIST_SEGMENTS_PAGE, _segment_bound(state.usage))
        token = ""
        while True:
            page = await self._call("ListSegments", memory_pb2.ListSegmentsRequest(memory_id=memory_id, page_size=LIST_SEGMENTS_PAGE, page_token=token), memory_pb2.ListSegmentsResponse)
            # Counted before any signature is checked: a store paging on for ever costs no verification beyond the bound.
            token = pages.take(len(page.segments), page.next_page_token)
            for r in page.segments:
                state = await self._verify_fresh(state, r)
                out.append(_segment_info(r))
            if not token:
                return out

    async def read(self, memory_id: str, segment_id: str) -> ReadResult:
        """Reads and decrypts a segment's current version, verifying its writer's signature, its
        ciphertext digest and its key epoch.

        Raises: ``not_found``, ``permission_denied``, ``expired``, ``bad_signature``, ``decrypt_failed`` (also: a
        segment before a cut this agent holds no key of, or an epoch a member's key copy or back link keeps from it,
        naming that member: :attr:`MemoryInfo.key_faults`, §18.5).
        """
        assert_memory_id(memory_id)
        assert_segment_id(segment_id)
        state = await self._state(memory_id)
        res = await self._call("ReadSegment", memory_pb2.ReadSegmentRequest(memory_id=memory_id, segment_id=segment_id), memory_pb2.ReadSegmentResponse)
        if not res.HasField("record") or res.record.segment_id != segment_id:
            raise self._refused(fail("bad_signature", "the store answered with another segment"), memory_id)
        record = res.record
        # A writer granted, or an epoch started, since the state was cached: verify against a fresh one.
        state = await self._verify_fresh(state, record)
        try:
            key = self._key_for(state, record.key_epoch)
        except SharedMemoryError:
            state = await self._refresh(memory_id)
            key = self._key_for(state, record.key_epoch)
        ciphertext = bytes(res.ciphertext)
        try:
            data = open_write(memory_id, key, record, ciphertext)
        except SharedMemoryError as error:
            self._refused(error, memory_id)
            raise
        return ReadResult(_segment_info(record), data, record, ciphertext)

    def open(self, memory_id: str, record: Any, ciphertext: bytes) -> ReadResult:
        """Verifies and decrypts a write record and ciphertext obtained elsewhere (a member's disclosure,
        a copy of the store's database) with the membership log and keys this client already holds,
        without calling the store. A removed member can open what was written while it held the epoch
        key, and nothing later (§18.5): ``permission_denied`` (no key of that epoch or a later one).

        Raises: ``not_found`` (nothing cached for this memory: call :meth:`get` first), ``bad_signature``,
        ``decrypt_failed``, ``permission_denied``.
        """
        assert_memory_id(memory_id)
        state = self._states.get(memory_id)
        if state is None:
            raise fail("not_found", f"no verified state of {memory_id} is held: get it first")
        if not any(e >= record.key_epoch for e in state.keys):  # first: its epoch may be one this client never saw
            raise self._missing_key(state, record.key_epoch)
        self._verify_record(state, record)
        data = open_write(memory_id, self._key_for(state, record.key_epoch), record, bytes(ciphertext))
        return ReadResult(_segment_info(record), data, record, bytes(ciphertext))

    async def write(self, memory_id: str, segment_id: str, data: bytes | str, *, previous_version: int, expires_at_ms: int | None = None) -> WriteResult:
        """Writes a segment version, conditional on the version it replaces (0 creates the segment).

        Raises: ``conflict`` with ``current_version`` (and ``current``) when the segment is elsewhere;
        ``quota_exceeded``, ``permission_denied`` (a read-only member), ``expired``, ``too_large``,
        ``decrypt_failed`` (this agent holds no key of the current epoch: a member's key copy that does not open,
        named in the message; the owner or an admin revokes it, §18.5), …
        """
        assert_memory_id(memory_id)
        assert_segment_id(segment_id)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise fail("malformed", "data must be bytes or str")
        payload = bytes(payload)
        if len(payload) > MAX_SEGMENT_PLAINTEXT_BYTES:
            raise fail("too_large", f"segment data is {len(payload)} bytes, more than {MAX_SEGMENT_PLAINTEXT_BYTES}")
        if not isinstance(previous_version, int) or isinstance(previous_version, bool) or not 0 <= previous_version < MAX_SAFE_INTEGER:
            raise fail("malformed", "previous_version must be a non-negative integer (0 creates the segment)")
        expiry = _check_ms(expires_at_ms, "expires_at_ms")
        me = self._identity
        state = await self._state(memory_id)
        attempt = 0
        while True:
            if self._rotation_due(state):
                state = await self._rotate(state)
                if self._rotation_due(state):
                    raise fail("rotation_required", f"the current epoch of {memory_id} may be held by a member whose grant has expired, and no new epoch could be made")
            record, ciphertext = seal_write(
                me.agent_id,
                me.signing_key,
                memory_id,
                self._writable_key(state),
                segment_id=segment_id,
                previous_version=previous_version,
                data=payload,
                expires_at_ms=expiry,
                now_ms=self._clock(),
            )
            try:
                return await self._send_write(state, memory_id, record, ciphertext)
            except SharedMemoryError as e:
                # The epoch moved, or a member's grant ended under us: reload (and rotate) once or twice, then give up.
                if attempt < 3 and (e.code == "rotation_required" or (e.code == "conflict" and e.current_version is None)):
                    attempt += 1
                    state = await self._refresh(memory_id)
                    if e.code == "rotation_required":
                        state.rotation_required = True
                    continue
                raise

    async def update(
        self,
        memory_id: str,
        segment_id: str,
        change: Callable[[ReadResult | None], bytes | str | Awaitable[bytes | str]],
        *,
        max_attempts: int = 16,
        expires_at_ms: int | None = None,
    ) -> WriteResult:
        """Read-modify-write with compare-and-set: calls ``change`` with the current version (None when
        the segment does not exist), writes its result conditional on that version, and on ``conflict``
        reads again and repeats (at most ``max_attempts`` times)."""
        attempt = 1
        while True:
            current: ReadResult | None = None
            try:
                current = await self.read(memory_id, segment_id)
            except SharedMemoryError as e:
                if e.code != "not_found":
                    raise
            value = change(current)
            if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
                value = await value
            try:
                r = await self.write(memory_id, segment_id, value, previous_version=0 if current is None else current.version, expires_at_ms=expires_at_ms)
                return WriteResult(r.version, r.already_applied, attempt)
            except SharedMemoryError as e:
                if e.code == "conflict" and e.current_version is not None and attempt < max_attempts:
                    attempt += 1
                    continue
                raise

    async def grant(self, memory_id: str, agent_id: str, access: AccessLevel, *, expires_at_ms: int | None = None, certificate: Any | None = None) -> MemoryInfo:
        """Grants ``agent_id`` a level (or changes its level, expiry or key): appends a GRANT entry and
        seals the current epoch key to its certified identity key. A new member can read everything the
        memory holds (§18.6: back links). ``certificate``: the member's; default the last one the store
        saw it use. Verified either way.

        Raises: ``permission_denied`` (not admin; admin level needs the owner), ``not_found`` (no
        certificate known), the certificate's code (``revoked``, ``expired``, ``unknown_issuer``, …),
        ``quota_exceeded`` (members).
        """
        assert_memory_id(memory_id)
        assert_agent(agent_id, "agent_id")
        level = access_of(access)
        expiry = _check_ms(expires_at_ms, "expires_at_ms")
        if certificate is None:
            res = await self._call("GetAgentCertificate", memory_pb2.GetAgentCertificateRequest(agent_id=agent_id), memory_pb2.GetAgentCertificateResponse)
            if not res.HasField("certificate"):
                raise fail("not_found", f"no certificate for {agent_id}")
            certificate = res.certificate
        member = self._verify_member_certificate(certificate, agent_id)
        me = self._identity
        attempt = 0
        while True:
            state = await self._refresh(memory_id)
            entry = change_entry(
                me.agent_id, me.signing_key, state.log, change=CHANGE_GRANT, member_id=agent_id, public_key=member.identity_public_key, access=level, expires_at_ms=expiry, now_ms=self._clock()
            )
            wrap = wrap_key(me.agent_id, me.signing_key, memory_id, self._writable_key(state), agent_id, member.identity_public_key)
            request = memory_pb2.UpdateMembershipRequest(memory_id=memory_id, entry=entry, member_certificate=certificate, wraps=[wrap])
            try:
                await self._call("UpdateMembership", request, memory_pb2.UpdateMembershipResponse)
                return await self.get(memory_id)
            except SharedMemoryError as e:
                if attempt < 3 and e.code == "conflict":
                    attempt += 1
                    continue
                raise

    async def revoke(self, memory_id: str, agent_id: str) -> MemoryInfo:
        """Removes a member: appends a REVOKE entry and, in the same call, starts the next key epoch,
        sealed to the remaining members only. The removed member keeps what it read or could decrypt
        before; nothing written from now on is under a key it ever had (§18.5).

        When this client holds no key of the current epoch because a member handed it a key copy that does not
        open (§18.5), the next epoch is a **cut**: it has no back link, so what was written before
        it stays readable only to clients that hold a key of that time. A client that holds the current key
        never cuts.

        Raises: ``not_found`` (not a member), ``permission_denied``, a remaining member's certificate code.
        """
        assert_memory_id(memory_id)
        assert_agent(agent_id, "agent_id")
        me = self._identity
        attempt = 0
        while True:
            state = await self._refresh(memory_id)
            target = state.log.member(agent_id)
            if target is None:
                raise fail("not_found", f"{agent_id} is not a member of {memory_id}")
            now = self._clock()
            entry = change_entry(me.agent_id, me.signing_key, state.log, change=CHANGE_REVOKE, member_id=agent_id, public_key=target.public_key, now_ms=now)
            remaining = [m for m in state.log.active(now) if m.member_id != agent_id]
            # A cut only when the copy a member made for this agent did not open (§18.5): never with the key, and
            # not without a copy at all (a store that withholds one must not turn a revocation into a cut).
            fault = state.faults.get(state.current_epoch)
            cut = state.current_epoch not in state.keys and fault is not None and fault.kind == "key_copy"
            epoch, wraps = self._next_epoch(state, entry.version, membership_entry_hash(memory_id, entry), remaining, now, cut=cut)
            try:
                request = memory_pb2.UpdateMembershipRequest(memory_id=memory_id, entry=entry, epoch=epoch.record, wraps=wraps)
                await self._call("UpdateMembership", request, memory_pb2.UpdateMembershipResponse)
                return await self.get(memory_id)
            except SharedMemoryError as e:
                if attempt < 3 and e.code == "conflict":
                    attempt += 1
                    continue
                raise
            finally:
                epoch.wipe()

    async def rotate(self, memory_id: str) -> int:
        """Starts the next key epoch for the active members. Returns the new epoch.

        Writes do this themselves, and only when the store asks (``rotation_required``, §18.5). Only an
        admin rotates at will: the store refuses a writer's rotation while none is required.

        Raises: ``permission_denied`` (a writer, when no rotation is required; a reader), ``quota_exceeded``
        (an admin, when the memory keeps as many epochs in use as it may), ``not_found`` / certificate codes
        (a member whose certificate cannot be verified now: revoke it first), …
        """
        assert_memory_id(memory_id)
        state = await self._rotate(await self._refresh(memory_id))
        return state.current_epoch

    # =========================================================================================
    # Security events

    def _member_fault(self, error: SharedMemoryError, memory_id: str) -> None:
        """Reports a member's key copy or back link that does not open (§18.5): a security event (the member's fault, or
        possibly the store's when the fault is not ``proven``)."""
        _log.warning("parley shared memory: a member's key material for %s does not open: [%s] %s", memory_id, error.code, error.detail)
        if self._on_security is not None:
            try:
                self._on_security(error.code, memory_id, error.detail)
            except Exception:  # a listener's failure must not change the outcome
                _log.exception("on_security listener failed")

    def _refused(self, error: SharedMemoryError, memory_id: str) -> SharedMemoryError:
        """Reports an answer of the store that did not verify (a security event), and returns the error to raise."""
        if error.code in SECURITY_CODES:
            _log.warning("parley shared memory: the store's answer for %s did not verify: [%s] %s", memory_id, error.code, error.detail)
            if self._on_security is not None:
                try:
                    self._on_security(error.code, memory_id, error.detail)
                except Exception:  # a listener's failure must not change the outcome
                    _log.exception("on_security listener failed")
        return error

    # =========================================================================================
    # Calls

    def _assert_open(self) -> None:
        if self._closed:
            raise fail("cancelled", "memory client closed")

    def _method(self, name: str) -> Any:
        if self._channel is None:
            # The largest valid answer is GetMemory's for a memory at every limit (names.py), not a segment.
            options = [("grpc.max_receive_message_length", MEMORY_MAX_RECEIVE_BYTES), ("grpc.max_send_message_length", MEMORY_MAX_SEND_BYTES)]
            if self._tls is None:
                self._channel = grpc.aio.insecure_channel(self._address, options=options)
            else:
                self._channel = grpc.aio.secure_channel(self._address, self._tls.credentials(), options=options + self._tls.options())
        method = self._methods.get(name)
        if method is None:
            # Bytes in, bytes out: the request signature covers the exact bytes sent (§18.8).
            method = self._channel.unary_unary(SERVICE + name, request_serializer=None, response_deserializer=None)
            self._methods[name] = method
        return method

    async def _call(self, name: str, request: Any, response_type: type[T]) -> T:
        """One signed RPC, retried with backoff while the store is unavailable (every call is idempotent, §18.7)."""
        self._assert_open()
        body = request.SerializeToString()
        path = SERVICE + name
        start = time.monotonic()
        delay = 0.1
        while True:
            self._assert_open()
            metadata = sign_memory_request(self._identity, self._service_id, path, body, self._clock())
            try:
                answer = await self._method(name)(body, metadata=metadata, timeout=self._timeout)
                break
            except grpc.aio.AioRpcError as error:
                code = rpc_error_code(error)
                if code not in RETRYABLE or self._closed or time.monotonic() - start + delay > self._retry_budget:
                    raise SharedMemoryError(code, error.details() or "the store refused the call") from error  # type: ignore[arg-type]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        try:
            return response_type.FromString(bytes(answer))  # type: ignore[attr-defined,no-any-return]
        except DecodeError as error:
            raise fail("malformed", f"the store's {name} answer does not decode") from error

    async def _send_write(self, state: _State, memory_id: str, record: Any, ciphertext: bytes) -> WriteResult:
        res = await self._call("WriteSegment", memory_pb2.WriteSegmentRequest(memory_id=memory_id, record=record, ciphertext=ciphertext), memory_pb2.WriteSegmentResponse)
        outcome = res.WhichOneof("outcome")
        if outcome == "accepted":
            if res.accepted.version != record.version:
                raise self._refused(fail("bad_signature", "the store acknowledged another version than written"), memory_id)
            return WriteResult(res.accepted.version, res.accepted.already_applied)
        if outcome != "conflict":
            raise fail("malformed", "write answer has no outcome")
        conflict = res.conflict
        current = conflict.current if conflict.HasField("current") else None
        if current is not None:
            if current.segment_id != record.segment_id or current.version != conflict.current_version:
                raise self._refused(fail("bad_signature", "the store reported a conflict with another segment"), memory_id)
            await self._verify_fresh(state, current)
            if same_write(current, record):
                return WriteResult(current.version, True)
        raise fail(
            "conflict",
            f"{record.segment_id} is at version {conflict.current_version}, not {record.previous_version}",
            current_version=conflict.current_version,
            current=current,
        )

    # =========================================================================================
    # Verified state

    async def _state(self, memory_id: str) -> _State:
        cached = self._states.get(memory_id)
        if cached is not None:
            self._states.move_to_end(memory_id)
            return cached
        return await self._refresh(memory_id)

    async def _refresh(self, memory_id: str) -> _State:
        """Fetches what is new since the cached state and verifies it (one fetch at a time per memory)."""
        running = self._loading.get(memory_id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[_State] = asyncio.get_running_loop().create_future()
        self._loading[memory_id] = future
        try:
            cached = self._states.get(memory_id)
            after = cached.log.version if cached is not None else 0
            asked_at = self._clock()  # the log the answer shows was the store's at this time or later
            res = await self._call("GetMemory", memory_pb2.GetMemoryRequest(memory_id=memory_id, after_version=after), memory_pb2.GetMemoryResponse)
            try:
                state = self._verify_state(memory_id, cached, res, asked_at)
            except SharedMemoryError:
                # A refused answer changes nothing verified, and the state it was checked against is not used
                # again: the next call loads the memory afresh (checked against what this client remembers).
                self._forget(memory_id)
                raise
            self._seen.pop(memory_id, None)  # the state now carries it
            self._states[memory_id] = state
            self._states.move_to_end(memory_id)
            while len(self._states) > self._cache_size:
                old_id = next(iter(self._states))
                if old_id == memory_id:
                    break
                self._forget(old_id)
            future.set_result(state)
            return state
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
                future.exception()  # retrieved here: a waiter that shares it gets it too
            raise
        finally:
            del self._loading[memory_id]

    def _forget(self, memory_id: str) -> None:
        """Drops a memory's cached state and wipes its keys, remembering (bounded) how far its log and epochs
        had come, so that loading it again cannot go back (``replay``)."""
        state = self._states.pop(memory_id, None)
        if state is None:
            return
        state.wipe()
        seen = _Seen(
            state.log.version,
            state.log.head,
            state.current_epoch,
            max((int(r.membership_version) for r in state.epochs.values()), default=0),
            state.seen_at_ms,
        )
        before = self._seen.pop(memory_id, None)
        if before is not None and before.version > seen.version:  # cannot happen: a state never goes back
            seen = before
        elif before is not None:
            seen = _Seen(seen.version, seen.head, max(seen.epoch, before.epoch), max(seen.epoch_version, before.epoch_version), seen.seen_at_ms)
        self._seen[memory_id] = seen
        while len(self._seen) > MAX_REMEMBERED_MEMORIES:
            self._seen.popitem(last=False)

    def _rotation_due(self, state: _State) -> bool:
        """Whether writes must wait for a new epoch: the store says so, or this client finds a member whose grant
        has expired that could hold the current key (it does not take the store's word that none can)."""
        current = state.epochs.get(state.current_epoch)
        return state.rotation_required or (current is not None and rotation_due(state.log, current, self._clock()))

    def _writable_key(self, state: _State) -> EpochKey:
        """The current epoch's key, to seal under: the epoch checked again against the state's log (§18.5)."""
        memory_id = state.log.memory_id
        current = state.epochs.get(state.current_epoch)
        if current is None:
            raise self._refused(fail("bad_signature", f"epoch {state.current_epoch} of {memory_id} is not known"), memory_id)
        try:
            verify_current_epoch(state.log, current, state.epochs.values())
        except SharedMemoryError as e:
            raise self._refused(fail("bad_signature", f"the current epoch of {memory_id} may not be written under: {e.detail}"), memory_id) from e
        return self._key_for(state, state.current_epoch)

    def _verify_state(self, memory_id: str, cached: _State | None, res: Any, asked_at_ms: int | None = None) -> _State:
        """Folds the store's answer into the verified state: the log continues the one already seen
        (never shorter: ``replay``), the owner's certificate is trusted, epochs chain (to those already
        seen too) and are signed by members who could make them while their grants were in force, the
        current epoch is made for the log's last revocation or later and goes back from no epoch already
        accepted (§18.5), and the key copy, signed by a writer or admin on record now (§18.6), opens.
        A memory loaded again after it left the cache is checked against what this client remembers of it
        (log version and head, epoch: ``replay``, another log ``bad_signature``); entries after the head it
        saw at ``asked_at_ms`` may not be signed by an admin whose grant had expired by then (§18.4); and
        whether a rotation is due is decided from the log, whatever the store says (§18.5).
        Whatever fails in the store's answer is ``bad_signature`` (or ``replay``), a key copy sealed to another key
        than this agent's identity key included. A key copy of this agent's that does not open to the committed key,
        or a current epoch whose back link does not open to the previous key, is recorded against the member who
        signed it (§18.5; :attr:`MemoryKeyFault.proven` says whether that member is certainly at fault): the rest of
        the answer is adopted, without a key of that epoch (a bad back link keeps the epoch's own key), and the fault
        is remembered (``_State.faults``) and reported as a security event."""
        try:
            state = self._verify_answer(memory_id, cached, res, self._clock() if asked_at_ms is None else asked_at_ms)
        except SharedMemoryError as error:
            self._refused(error, memory_id)
            raise
        before = cached.faults if cached is not None else {}
        for fault in state.faults.values():
            if before.get(fault.epoch) != fault:  # reported once, not at every reload that finds it again
                self._member_fault(fail("decrypt_failed", _fault_message(memory_id, state.log.owner_id, fault, fault.epoch)), memory_id)
        return state

    def _verify_answer(self, memory_id: str, cached: _State | None, res: Any, asked_at_ms: int) -> _State:
        summary = res.memory
        if not res.HasField("memory") or summary.memory_id != memory_id:
            raise fail("bad_signature", "the store answered for another memory")
        # What this client saw of the memory before: its cached state, or what it remembers of one it dropped.
        remembered = self._seen.get(memory_id) if cached is None else None
        seen_version = cached.log.version if cached is not None else remembered.version if remembered is not None else 0
        seen_at = cached.seen_at_ms if cached is not None else remembered.seen_at_ms if remembered is not None else None
        try:
            if summary.membership_version < seen_version:
                raise fail("replay", f"the store returned membership version {summary.membership_version}, older than {seen_version} already seen")
            entries = list(res.entries)
            if cached is None:
                if not entries:
                    raise fail("bad_signature", "the store returned no membership log")
                log = Membership.create(entries.pop(0), memory_id)
                owner = next((m.certificate for m in res.members if m.member_id == log.owner_id and m.HasField("certificate")), None)
                if owner is None:
                    raise fail("bad_signature", "the store returned no owner's certificate")
                self._verify_owner(log, owner)
            else:
                # Appended to a copy: an answer refused half-way leaves the cached log as it was.
                log = cached.log.copy() if entries else cached.log
            for e in entries:
                if seen_at is not None and e.version > seen_version:
                    # The store showed the log ending at seen_version at seen_at: an entry after it was made later,
                    # so its signer's grant must still have been in force then (within the clock skew of both).
                    signer = log.member(e.signer_id)
                    if signer is not None and signer.expires_at_ms != 0 and signer.expires_at_ms + 2 * MEMORY_CLOCK_SKEW_MS + 1000 <= seen_at:
                        raise fail("permission_denied", f"membership entry {e.version} is signed by {e.signer_id}, whose grant had expired before this client saw the log at version {seen_version}")
                log.append(e)
            if log.version != summary.membership_version:
                raise fail("bad_signature", "membership log does not reach the version the store reports")
            if remembered is not None:
                seen_head = log.hash_at(remembered.version)
                if seen_head is None or not crypto.constant_time_equal(seen_head, remembered.head):
                    raise fail("bad_signature", f"the store returned another membership log than the one this client saw at version {remembered.version}")

            # Epochs: ascending, chained (to the ones already verified too), each made by a member who could,
            # while its grant was in force; the same records as any seen before.
            epochs = dict(cached.epochs) if cached is not None else {}
            previous: Any | None = None
            for r in res.epochs:
                verify_epoch_record(log, r, previous if previous is not None else epochs.get(r.epoch - 1))
                known = epochs.get(r.epoch)
                if known is not None and not crypto.constant_time_equal(bytes(known.signature), bytes(r.signature)):
                    raise fail("bad_signature", f"the store returned a second epoch {r.epoch}")
                epochs[r.epoch] = r
                previous = r
            if previous is None or previous.epoch != summary.current_epoch:
                raise fail("bad_signature", "epochs do not reach the current epoch")
            seen_epoch = cached.current_epoch if cached is not None else remembered.epoch if remembered is not None else 0
            if summary.current_epoch < seen_epoch:
                raise fail("replay", "the store returned an older key epoch than already seen")
            if remembered is not None and previous.membership_version < remembered.epoch_version:
                raise fail("replay", f"epoch {previous.epoch} is made for an older membership version than an epoch already accepted")
            # The epoch new writes go under: made for the last revocation or later, and not for an earlier log
            # version than any epoch already accepted (an epoch of a removed member is refused, §18.5).
            verify_current_epoch(log, previous, epochs.values())

            keys = dict(cached.keys) if cached is not None else {}
            faults = dict(cached.faults) if cached is not None else {}
            if res.HasField("wrap") and res.wrap.epoch not in keys:
                wrap = res.wrap
                record = epochs.get(wrap.epoch)
                if record is None or wrap.member_id != self.agent_id:
                    raise fail("bad_signature", "key copy is for an epoch or member the store did not describe")
                verify_key_wrap(log, wrap)  # signed by a writer or admin on record: the store's fault otherwise
                # Sealed to this agent's identity key now, or the store's fault (an honest store serves a member only the
                # copy sealed to the key it calls with): a genuine copy sealed to an old key of this agent opens for no
                # one here, and is no member's fault (§18.5).
                if not _same_key(bytes(wrap.member_public_key), self._identity.signing_key.public_key):
                    raise fail("bad_signature", f"the key copy of epoch {wrap.epoch} is sealed to another key than this agent's identity key")
                # Opened last: nothing after it refuses the answer, so no key opened here is left unwiped.
                for k in self._open_copy(memory_id, wrap, record, epochs, faults):
                    if k.epoch in keys:
                        k.wipe()  # already held (the cached state keeps using that one)
                    else:
                        keys[k.epoch] = k
            # A copy that did not open no longer keeps a key away once a later epoch's back link reached it.
            for e in [e for e, f in faults.items() if f.kind == "key_copy" and e in keys]:
                del faults[e]
            certificates = {m.member_id: m.certificate for m in res.members if m.HasField("certificate")}
            # Whether a rotation is due is decided here too, from the log: a store saying none is, while a member whose
            # grant expired could hold the current key, is not believed (§18.5).
            required = res.rotation_required or rotation_due(log, previous, self._clock())
            return _State(log, epochs, keys, summary.current_epoch, certificates, required, res.usage if res.HasField("usage") else None, asked_at_ms, faults)
        except SharedMemoryError as e:
            # Anything the log rules refuse in the store's answer is the store's fault, not ours.
            if e.code in _STORE_FAULTS:
                raise fail("bad_signature", f"the store's answer for {memory_id} does not verify: {e.detail}") from e
            raise
        except IdentityError as e:
            raise _as_memory_error(e) from e

    def _open_copy(self, memory_id: str, wrap: Any, record: Any, epochs: dict[int, Any], faults: dict[int, MemoryKeyFault]) -> builtins.list[EpochKey]:
        """Opens this agent's verified key copy of ``record``'s epoch (sealed to this agent's identity key: checked
        before) and checks that epoch's back link (unless it is a cut) against the previous epoch's commitment, when
        that record is kept (§18.5). A copy that does not give the key, or a back link that does not open to the
        previous key, is recorded in ``faults`` against the member who signed it (the copy's signer, the epoch's
        creator) and the answer stands: ``proven`` when what it signed is wrong whatever record it is paired with (a
        copy that does not open or names another memory, epoch or member; a back link that does not open), not when
        it opens to a key another record of the epoch could commit to (:func:`is_commitment_mismatch`). A copy that
        does not give the key leaves no key of the epoch; with a bad back link the epoch's key (it matches the
        commitment) is kept. Returns the keys opened: the epoch's, and the previous one through the back link when
        checked."""
        epoch = int(record.epoch)
        try:
            key = open_wrap(self.agent_id, self._identity.signing_key, memory_id, wrap, record)
        except SharedMemoryError as error:
            if error.code != "decrypt_failed":
                raise
            faults[epoch] = MemoryKeyFault(epoch, str(wrap.signer_id), "key_copy", not is_commitment_mismatch(error))
            return []
        previous = None if is_cut(record) else epochs.get(epoch - 1)
        if previous is None:
            faults.pop(epoch, None)
            return [key]
        try:
            back = follow_back_link(memory_id, key, previous)
        except SharedMemoryError as error:
            if error.code != "decrypt_failed":
                key.wipe()
                raise
            # The key itself matches the commitment its creator signed: it is kept (the epoch's own data stays
            # readable and a revocation links back to it); only what lies before it is out of reach.
            faults[epoch] = MemoryKeyFault(epoch, str(record.creator_id), "back_link", not is_commitment_mismatch(error))
            return [key]
        faults.pop(epoch, None)
        return [key, back]

    def _verify_owner(self, log: Membership, certificate: Any) -> None:
        """The owner's certificate binds the owner id to the key the memory id commits to: issued by the
        trust bundle for that id and key, not revoked now, valid now or when the memory was created."""
        now = self._clock()
        try:
            cert = verify_certificate(certificate, self._trust, now, expected_agent_id=log.owner_id, revocations=self._revocations)
        except IdentityError as error:
            if error.code not in ("expired", "not_yet_valid"):
                raise
            cert = verify_certificate(certificate, self._trust, log.created_at_ms, expected_agent_id=log.owner_id)
            if self._revocations is not None:
                check_revocation(self._revocations, cert.agent_id, cert.serial, now)
        if not crypto.constant_time_equal(cert.identity_public_key, log.owner_public_key):
            raise fail("identity_mismatch", "owner's certificate is for another key")

    def _verify_member_certificate(self, certificate: Any, agent_id: str) -> VerifiedCertificate:
        try:
            return verify_certificate(certificate, self._trust, self._clock(), expected_agent_id=agent_id, revocations=self._revocations)
        except ParleyError as error:
            raise fail(error.code, f"certificate of {agent_id}: {error.detail}") from error

    async def _verify_fresh(self, state: _State, record: Any) -> _State:
        """Verifies a record against the cached log, or, when that fails (a writer granted since), a fresh one."""
        try:
            self._verify_record(state, record)
            return state
        except SharedMemoryError:
            fresh = await self._refresh(state.log.memory_id)
            self._verify_record(fresh, record, report=True)
            return fresh

    def _verify_record(self, state: _State, record: Any, *, report: bool = False) -> None:
        try:
            verify_write_record(state.log, record, state.epochs)
        except SharedMemoryError as e:
            error = fail("bad_signature", f"the store returned a malformed write record: {e.detail}") if e.code == "malformed" else e
            raise (self._refused(error, state.log.memory_id) if report else error) from e

    def _missing_key(self, state: _State, epoch: int) -> SharedMemoryError:
        """The error for an operation that needs the key of ``epoch`` when this agent holds none of it or later:
        ``decrypt_failed`` naming the epoch and the member at fault when a key copy or back link that did not open
        keeps it away (§18.5), ``permission_denied`` otherwise (no copy of such an epoch was given to it)."""
        fault = max((f for f in state.faults.values() if f.epoch >= epoch), key=lambda f: f.epoch, default=None)
        if fault is not None:
            return fail("decrypt_failed", _fault_message(state.log.memory_id, state.log.owner_id, fault, epoch))
        return fail("permission_denied", f"this agent holds no key of epoch {epoch} or later")

    def _key_for(self, state: _State, epoch: int) -> EpochKey:
        """The key of an epoch: opened, or derived through back links from a later key this agent holds. Back links
        stop at a cut (§18.5). A key a member's fault keeps from this agent fails ``decrypt_failed`` naming the epoch
        and the member."""
        memory_id = state.log.memory_id
        known = state.keys.get(epoch)
        if known is not None:
            return known
        later = min((k for e, k in state.keys.items() if e > epoch), key=lambda k: k.epoch, default=None)
        if later is None:
            raise self._missing_key(state, epoch)
        # Nothing before a cut is reachable from it or from any later epoch.
        for e in range(later.epoch, epoch, -1):
            record = later.record if e == later.epoch else state.epochs.get(e)
            if record is not None and is_cut(record):
                raise fail("decrypt_failed", f"epoch {epoch} of {memory_id} is before the cut at epoch {e}: no key this agent holds reaches it")
        while later.epoch > epoch:
            record = state.epochs.get(later.epoch - 1)
            if record is None:
                raise fail("decrypt_failed", f"epoch {later.epoch - 1} is not known")
            try:
                later = follow_back_link(memory_id, later, record)
            except SharedMemoryError as error:
                if error.code != "decrypt_failed":
                    raise
                fault = MemoryKeyFault(later.epoch, str(later.record.creator_id), "back_link", not is_commitment_mismatch(error))
                state.faults[fault.epoch] = fault
                raise fail("decrypt_failed", _fault_message(memory_id, state.log.owner_id, fault, epoch)) from error
            state.keys[later.epoch] = later
            known_fault = state.faults.get(later.epoch)
            if known_fault is not None and known_fault.kind == "key_copy":
                del state.faults[later.epoch]
        return later

    def _next_epoch(
        self, state: _State, version: int, membership_hash: bytes, members: builtins.list[Member], now: int, *, cut: bool = False
    ) -> tuple[EpochKey, builtins.list[Any]]:
        """The next epoch after the current one, for ``members``, with their key copies (certificates verified first).
        ``cut`` (a REVOKE by a client whose copy of the current epoch did not open only): without a back link (§18.5)."""
        me = self._identity
        if cut:
            epoch = new_cut_epoch(me.agent_id, me.signing_key, state.log.memory_id, version, membership_hash, state.current_epoch + 1, now)
        else:
            current = self._key_for(state, state.current_epoch)
            epoch = new_epoch(me.agent_id, me.signing_key, state.log.memory_id, version, membership_hash, current, now)
        try:
            wraps: builtins.list[Any] = []
            for m in members:
                if m.member_id != self.agent_id:
                    certificate = state.certificates.get(m.member_id)
                    if certificate is None:
                        raise fail("not_found", f"no certificate of member {m.member_id}: cannot seal the new key to it")
                    cert = self._verify_member_certificate(certificate, m.member_id)
                    if not crypto.constant_time_equal(cert.identity_public_key, m.public_key):
                        raise fail("identity_mismatch", f"certificate of {m.member_id} is for another key than its grant")
                wraps.append(wrap_key(me.agent_id, me.signing_key, state.log.memory_id, epoch, m.member_id, m.public_key))
        except BaseException:
            epoch.wipe()
            raise
        return epoch, wraps

    async def _rotate(self, state: _State) -> _State:
        memory_id = state.log.memory_id
        attempt = 0
        while True:
            now = self._clock()
            epoch, wraps = self._next_epoch(state, state.log.version, state.log.head, state.log.active(now), now)
            try:
                await self._call("RotateEpoch", memory_pb2.RotateEpochRequest(memory_id=memory_id, epoch=epoch.record, wraps=wraps), memory_pb2.RotateEpochResponse)
                return await self._refresh(memory_id)
            except SharedMemoryError as e:
                # Someone else rotated first (or the members changed): take the store's epoch.
                if attempt < 3 and e.code == "conflict":
                    attempt += 1
                    state = await self._refresh(memory_id)
                    if not self._rotation_due(state):
                        return state
                    continue
                raise
            finally:
                epoch.wipe()

    def _info(self, state: _State) -> MemoryInfo:
        log = state.log
        now = self._clock()
        me = log.member(self.agent_id)
        if me is None:
            raise fail("permission_denied", f"{self.agent_id} is not a member of {log.memory_id}")
        u = state.usage
        usage = MemoryUsageInfo(
            *(int(getattr(u, f, 0)) if u is not None else 0 for f in ("bytes", "segments", "max_bytes", "max_segments", "owner_bytes", "owner_segments", "owner_max_bytes", "owner_max_segments"))
        )
        return MemoryInfo(
            memory_id=log.memory_id,
            owner_id=log.owner_id,
            access=level_of(me.access),
            created_at_ms=log.created_at_ms,
            expires_at_ms=_opt(log.expires_at_ms),
            members=tuple(MemoryMemberInfo(m.member_id, level_of(m.access), _opt(m.expires_at_ms)) for m in log.active(now)),
            membership_version=log.version,
            current_epoch=state.current_epoch,
            usage=usage,
            key_faults=tuple(sorted(state.faults.values(), key=lambda f: -f.epoch)),
        )
