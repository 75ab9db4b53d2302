"""The agent: ``await connect(...)`` returns an :class:`Agent` that keeps one authenticated stream to a
gateway (reconnecting with backoff), establishes Noise sessions through it in both roles, and
implements the delivery contract (docs/PROTOCOL.md §17, lead's DELIVERY.md).

Sender side
    A send is recorded durably before it waits for anything: without a session to its recipient, as an
    unsealed record (``parley.state``), resumed after a restart, sealed once a handshake completes — one
    per peer, retried with backoff until the message expires, waiting for the step 2 of a step 1 the
    gateway stored for an offline peer (``QUEUED``) as long; a permanent handshake failure settles every
    send waiting on that peer. A step 1 refused ``policy_denied`` because the gateway never saw the peer is,
    with a :class:`~parley.RegistryTrustBundle`, sent again with the peer's registry certificate attached
    (a first contact, ``parley.directory``). Every seal (the first after a wait, a reseal) carries the message's
    creation time: its validity at the recipient ends with its expiry here. Counters are reserved durably (in blocks) before sealing; the sealed envelope and its payload
    go to the outbox durably before they are relayed; the same bytes are resent after every
    reconnect, after a restart, and when no receipt came within a resend interval (5 s doubling to
    60 s); a verified SessionReject reseals the pending message it names in a new session;
    :meth:`Agent.send` resolves with the recipient's verified receipt, or raises a typed outcome:
    a permanent gateway refusal, ``expired`` (no conforming recipient can accept it any more), or
    ``deadline_exceeded`` (the caller's timeout: not confirmed yet — the outbox keeps trying and
    reports the final outcome as a ``send_settled`` event).

Recipient side
    An opened envelope is written to the inbox durably (the record is also its replay mark) before
    its counter is committed and the message handed to the application; the application's
    ``await msg.ack()`` signs the receipt, records it, sends it, acks the gateway's deliveries and
    drops the inbox entry. A crash before the ack hands the message over again (``redelivered=True``),
    once. A copy that comes again is acked with the application's ack (still in the inbox) or answered
    with its stored receipt (already acked). Envelopes for a handshake this agent is answering are held
    (at most 64, and 64 MiB for all handshakes) until step 3; a delivery that cannot be taken now (beyond those,
    or its inbox record could not be written) is left unacknowledged and tried again every 250 ms while its
    stream is open (at most 4096 wait; more than 64 MiB of them is a gateway beyond its in-flight bound: the
    stream ends ``malformed`` and the agent reconnects). An envelope of an unknown session is answered with a signed SessionReject, unless it
    may have been taken here and its receipt dropped from a full receipt store (§17.4: then it is acked without
    one). The peer's certificate is checked against revocation data at every message.

Identity key rotation (§17.8)
    The state records the identity key it was written under. An agent started under another key (its
    key was rotated) restores no sessions — its peers hold them under the old certificate — but its
    inbox, outbox and receipts, and attaches its certificate to every receipt and SessionReject it
    signs — for a message lifetime after the rotation, across restarts (the record keeps when it
    happened). The default state key is derived from the identity key: ``previous_identity_keys=``
    (or ``previous_state_keys=``) carries the state directory over to the new one at the first start,
    crash-safely (``parley.state``), the identity record still naming the old key, so the rotation is
    seen. A receipt or SessionReject that does not verify under the key of the session a send was
    sealed in is accepted with the certificate it carries when that is the recipient's, trusted, valid,
    not revoked, and its key verifies it.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import dataclasses
import functools
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from google.protobuf.message import DecodeError

from . import crypto
from .disclosure import Disclosure
from .encoding import b64url_decode, b64url_encode
from .envelope import SecureMessage, assert_envelope_shape, decode_payload, encode_payload, from_value, message_hash
from .errors import DeliveryError, GatewayError, IdentityError, ParleyError, SessionError, StateError, code_of
from .directory import FirstContact, route_refused
from .gateway import GatewayConnection, StreamEnd, TlsConfig, is_loopback, is_transient_connect_refusal
from .v1 import gateway_pb2
from .handshake import HandshakeConfig, InitiatorHandshake, ResponderHandshake
from .identity import MAX_CERTIFICATE_BYTES, RevocationChecker, TrustBundle, check_revocation, decode_certificate, is_agent_id, verify_certificate
from .key_schedule import DEFAULT_REKEY_THRESHOLD, DirectionKeys, assert_rekey_threshold
from .keys import load_key_file
from .memory import MemoryClient
from .relay import sign_receipt, sign_session_reject, verify_receipt_signature, verify_session_reject_signature
from .replay import MessageHashCache, ReplayWindow
from .session import CLOSING_CODES, DEFAULT_SKEW, LocalIdentity, Opened, Session, SkewLimits, now_ms
from .state import IDENTITY_RECORD, MAX_PREVIOUS_STATE_KEYS, DirectoryStateStore, MemoryStateStore, StateKeyMismatch, check_previous_keys, derive_state_key
from .trust_bundle import RegistryTrustBundle
from .types import Backoff, Event, EventKind, MessageType, Receipt

_log = logging.getLogger("parley")

#: Go-away codes after which the agent stops (DELIVERY.md "Go-aways"); every other one is transient.
FATAL_GO_AWAY: Final = frozenset({"revoked", "expired", "replaced"})
#: Failures at (re)authentication that retrying cannot fix: the gateway's verdict on this agent's certificate or
#: proof. Not ``malformed``: an answer that breaks the protocol (a frame of the wrong kind, a bad challenge, a
#: go-away ``malformed``) says more about that gateway instance than about this agent — a broken instance behind a
#: load balancer, or one forged frame, must not stop the agent for good — so it is retried with backoff.
FATAL_AUTH: Final = frozenset(
    {"bad_signature", "bad_certificate", "unknown_issuer", "revoked", "expired", "not_yet_valid", "identity_mismatch", "unsupported_version", "unauthenticated"}
)
#: Refusals of a handshake step 1 (and failures of a reseal's handshake) that a later attempt can overcome;
#: anything else fails the send or the reseal.
TRANSIENT_REFUSALS: Final = frozenset({"unavailable", "rate_limited", "shutting_down", "cancelled", "deadline_exceeded", "revocation_stale", "internal", "quota_exceeded"})
#: Gateway refusals of an envelope that no resend can change: only these end a send (§17.2 item 2, as
#: ``PERMANENT_REFUSALS`` of @parley/client's outbox). Any other code (``quota_exceeded``, ``rate_limited``,
#: ``unavailable``, …) leaves the entry in the outbox, resent at its next interval until a receipt or expiry.
PERMANENT_REFUSALS: Final = frozenset(
    {"policy_denied", "too_large", "malformed", "unsupported_version", "identity_mismatch", "bad_signature", "revoked", "expired", "nonce_exhausted"}
)
RESERVE_BLOCK: Final = 256
#: Failures of a handshake that retrying cannot change (§17.2 item 6, as @parley/client's
#: ``PERMANENT_HANDSHAKE_FAILURES``): the gateway's word (its policy — also for a recipient it does not know, once the
#: first-contact lookup could not introduce it, ``parley.directory`` —, its limits, the protocol) and the peer's
#: certificate and identity. They settle every send waiting for a session with that
#: peer with the code. Every other failure (a timeout — no step 2, a garbled one, one lost with a restart —, the gateway
#: unavailable or reconnecting, ``rate_limited``, ``quota_exceeded``, stale revocation data, a peer certificate
#: ``not_yet_valid``, a session id collision, …) is retried with backoff until the messages expire. Nothing of a send
#: waiting for a session was sealed, so either answer is truthful about delivery.
PERMANENT_HANDSHAKE_FAILURES: Final = frozenset(
    {"policy_denied", "too_large", "malformed", "unsupported_version", "revoked", "expired", "bad_certificate", "unknown_issuer", "identity_mismatch", "bad_binding"}
)
#: §17.2 item 4: a message is resealed at most this often, then its send fails with ``unknown_session``.
MAX_RESEALS: Final = 5
#: Responder handshakes in progress per initiating peer (a flood from one peer cannot crowd out others).
MAX_RESPONDERS_PER_PEER: Final = 4
MAX_HELD_PER_HANDSHAKE: Final = 64
#: §17.3 item 3: streams whose delivery of one message taken and not yet acknowledged by the application is kept,
#: to ack with the application's ack (one per open stream is enough); further copies are acked at once, as
#: ``MAX_DELIVERIES_PER_MESSAGE`` of @parley/client's inbox.
MAX_DELIVERIES_PER_MESSAGE: Final = 16
MAX_PENDING_RESPONDERS: Final = 1000
#: Sessions held with one peer (§12): a new one closes the oldest beyond it (its late envelopes get a SessionReject).
MAX_SESSIONS_PER_PEER: Final = 8
#: Sessions held in all: beyond it a peer's handshake is refused (``rate_limited``, frame dropped), as @parley/session's.
MAX_SESSIONS: Final = 100_000
#: Receipts kept (§12), the oldest dropped first beyond it; read at each use, so a test can patch it. Once it drops
#: receipts still within the message lifetime, an envelope of an unknown session no younger than the newest of
#: them gets no SessionReject (§17.4).
MAX_RECEIPTS: Final = 100_000
MAX_OUTBOX: Final = 10_000
#: Envelopes read from the stream and not yet opened; when full, the reader stops (gRPC flow control).
ENVELOPE_QUEUE: Final = 64
#: Bytes of those envelopes (each may be as large as the gateway's frame): when reached, the reader stops as well.
MAX_QUEUED_DELIVERY_BYTES: Final = 64 * 1024 * 1024
#: Bytes of envelopes held for all the handshakes this agent is answering (besides 64 per handshake): beyond it an
#: envelope is deferred, as one beyond its handshake's 64.
MAX_HELD_BYTES: Final = 64 * 1024 * 1024
#: Deliveries waiting to be tried again (§12); beyond it a delivery is left for the next stream.
MAX_DEFERRED: Final = 4096
#: Most handshake frames left unacknowledged, from all senders, until the revocation data is fresh again (§17.3 item 7),
#: as @parley/client's. Each one takes a slot of the gateway's in-flight window of this stream (256 deliveries), which
#: the envelopes held behind a waiting step 3 (up to 64 per handshake), the deferred deliveries and the receipts for
#: this agent's own sends need too: 64 leaves three quarters of it to them. Beyond it, a step 1 is acked and dropped
#: (its initiator retries it), and a step 3 takes the place of the oldest waiting step 1 (none: it is processed now).
MAX_DEFERRED_FRAMES: Final = 64
#: Most of those frames from one sender: its one step 1 (a newer one replaces it) and the step 3s of the handshakes this
#: agent answers for it (at most :data:`MAX_RESPONDERS_PER_PEER`), so that no peer takes the slots of the others.
MAX_DEFERRED_FRAMES_PER_SENDER: Final = MAX_RESPONDERS_PER_PEER + 1
#: Bytes of the deliveries waiting to be tried again, all of the current stream and not acked: a gateway writes at
#: most its in-flight bound (default 256 deliveries, 8 MiB) not yet acked, so more is a gateway breaking the
#: protocol: the stream ends (``malformed``) and the agent reconnects, as @parley/client's ``MAX_QUEUED_DELIVERY_BYTES``.
MAX_DEFERRED_BYTES: Final = 64 * 1024 * 1024
#: How often deferred deliveries are tried again, seconds (§17.3 items 4 and 6).
RETRY_INTERVAL: Final = 0.25
#: Longest wait between two attempts at a delivery whose inbox record could not be written, seconds.
MAX_STATE_RETRY: Final = 8.0
RECORD_VERSION: Final = 1
#: How long a graceful :meth:`Agent.close` waits for the durable bookkeeping already decided (the record deletions of
#: sends that settled, …: local writes), seconds; beyond it they are cancelled and the next start decides.
CLOSE_BOOKKEEPING_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class SessionTimeouts:
    """Session lifetimes: idle timeout, maximum duration, renewal lead time (as the TypeScript SDK's)."""

    idle_s: float = 30 * 60
    max_duration_s: float = 24 * 3600
    renew_before_s: float = 5 * 60
    auto_renew: bool = True


@dataclass(frozen=True, slots=True)
class ResendPolicy:
    """Resend interval of an unconfirmed envelope: ``initial_s`` doubling to ``max_s``."""

    initial_s: float = 5.0
    max_s: float = 60.0


@dataclass(slots=True)
class _OutboxEntry:
    #: The outbox id: the record's name (a caller's send id hashed, :func:`_entry_id`, or the id made up for a send without one).
    id: str
    #: The send's id as its caller knows it (``send_settled``, ``pending_sends()``): see :func:`_send_id_of`.
    send_id: str
    to: str
    session_id: bytes
    message_hash: bytes
    envelope: Any
    payload: bytes
    peer_key: bytes
    created_at_ms: int
    expires_at_ms: int
    reseals: int = 0
    resends: int = 0
    next_resend_at: float = 0.0
    waiter: asyncio.Future[Receipt] | None = None
    resealing: bool = False
    #: The message hash of the envelope being relayed and not answered yet (None: none): one relay at a time.
    in_flight: bytes | None = None

    def record(self) -> dict[str, Any]:
        return {
            "v": RECORD_VERSION,
            "id": self.id,
            "send_id": self.send_id,
            "to": self.to,
            "session": self.session_id.hex(),
            "hash": self.message_hash.hex(),
            "envelope": b64url_encode(self.envelope.SerializeToString()),
            "payload": b64url_encode(self.payload),
            "peer_key": self.peer_key.hex(),
            "created_at_ms": self.created_at_ms,
            "expires_at_ms": self.expires_at_ms,
            "reseals": self.reseals,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> _OutboxEntry:
        return cls(
            id=r["id"],
            send_id=_send_id_of(r),
            to=r["to"],
            session_id=bytes.fromhex(r["session"]),
            message_hash=bytes.fromhex(r["hash"]),
            envelope=SecureMessage.FromString(b64url_decode(r["envelope"])),
            payload=b64url_decode(r["payload"]),
            peer_key=bytes.fromhex(r["peer_key"]),
            created_at_ms=int(r["created_at_ms"]),
            expires_at_ms=int(r["expires_at_ms"]),
            reseals=int(r.get("reseals", 0)),
        )


@dataclass(slots=True)
class _UnsealedEntry:
    """A send recorded before a session with its recipient exists (first contact, a session being established):
    the sender holds it from the moment ``send`` is called (§17.1). Its durable record (kind ``unsealed``, named
    by the outbox id) holds the payload as encoded at the call — type, content, handoff and parent hashes —,
    restamped when it is sealed. Once sealed it becomes an :class:`_OutboxEntry` of the same id: the outbox record
    is written durably first, then the unsealed record deleted; a restart that finds both keeps the sealed one."""

    id: str
    #: The send's id as its caller knows it (``send_settled``, ``pending_sends()``): see :func:`_send_id_of`.
    send_id: str
    to: str
    #: The MessagePayload encoded at the call (its timestamp is ``created_at_ms``).
    payload: bytes
    created_at_ms: int
    #: ``created_at_ms + max_age``: the sends waiting on a handshake keep it going until the latest of theirs, and
    #: one still unsealed then settles ``expired``.
    expires_at_ms: int
    waiter: asyncio.Future[Receipt] | None = None
    #: Being sealed and recorded in the outbox right now (not expired under it).
    sealing: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "v": RECORD_VERSION,
            "id": self.id,
            "send_id": self.send_id,
            "to": self.to,
            "payload": b64url_encode(self.payload),
            "created_at_ms": self.created_at_ms,
            "expires_at_ms": self.expires_at_ms,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> _UnsealedEntry:
        to = r["to"]
        if not isinstance(to, str) or not is_agent_id(to):
            raise ValueError("not an agent id")
        entry = cls(id=str(r["id"]), send_id=_send_id_of(r), to=to, payload=b64url_decode(r["payload"]), created_at_ms=int(r["created_at_ms"]), expires_at_ms=int(r["expires_at_ms"]))
        decode_payload(entry.payload, entry.created_at_ms)  # SessionError malformed when it does not parse
        return entry


@dataclass(slots=True)
class _InboxEntry:
    message_hash: bytes
    session_id: bytes
    counter: int
    envelope: Any
    payload: bytes
    salt: bytes
    received_at_ms: int
    sender_serial: bytes
    #: The sender's certificate (§17.3 item 1); None only in a record written before it was kept.
    sender_certificate: Any | None = None
    deliveries: list[tuple[GatewayConnection, int]] = field(default_factory=list)
    acked: Receipt | None = None

    def record(self) -> dict[str, Any]:
        r: dict[str, Any] = {
            "v": RECORD_VERSION,
            "hash": self.message_hash.hex(),
            "session": self.session_id.hex(),
            "counter": self.counter,
            "envelope": b64url_encode(self.envelope.SerializeToString()),
            "payload": b64url_encode(self.payload),
            "salt": self.salt.hex(),
            "received_at_ms": self.received_at_ms,
            "sender_serial": self.sender_serial.hex(),
        }
        if self.sender_certificate is not None:
            r["sender_certificate"] = b64url_encode(self.sender_certificate.SerializeToString())
        return r

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> _InboxEntry:
        cert = r.get("sender_certificate")
        return cls(
            message_hash=bytes.fromhex(r["hash"]),
            session_id=bytes.fromhex(r["session"]),
            counter=int(r["counter"]),
            envelope=SecureMessage.FromString(b64url_decode(r["envelope"])),
            payload=b64url_decode(r["payload"]),
            salt=bytes.fromhex(r["salt"]),
            received_at_ms=int(r["received_at_ms"]),
            sender_serial=bytes.fromhex(r["sender_serial"]),
            sender_certificate=decode_certificate(b64url_decode(cert)) if cert is not None else None,
        )


class Message:
    """A received application message: opened, verified, recorded durably, not yet acknowledged.

    Call :meth:`ack` once the application has processed it: that signs the
    delivery receipt the sender is waiting for. Until then the message stays in
    the inbox and is handed over again after a restart (``redelivered=True``).
    """

    __slots__ = ("_agent", "_entry", "sender", "type", "content", "message_hash", "envelope", "payload", "disclosure", "sender_certificate", "received_at_ms", "redelivered")

    def __init__(self, agent: Agent, entry: _InboxEntry, payload: Any, sender_certificate: Any | None, redelivered: bool) -> None:
        self._agent = agent
        self._entry = entry
        #: The sender's agent id.
        self.sender: str = entry.envelope.sender_id
        self.type = MessageType(payload.type)
        #: The payload's content as plain JSON (integral numbers as int).
        self.content: object = from_value(payload.content)
        self.message_hash: bytes = entry.message_hash
        self.envelope = entry.envelope
        self.payload = payload
        #: With ``envelope`` and ``sender_certificate``: proof of what the sender sent (:func:`parley.verify_disclosure`).
        self.disclosure = Disclosure(entry.payload, entry.salt)
        self.sender_certificate = sender_certificate
        self.received_at_ms: int = entry.received_at_ms
        #: True when this message was handed over before (the process restarted before the ack).
        self.redelivered = redelivered

    @property
    def handoff_hash(self) -> bytes | None:
        return bytes(self.payload.handoff_hash) or None

    @property
    def parent_message_hash(self) -> bytes | None:
        return bytes(self.payload.parent_message_hash) or None

    @property
    def acked(self) -> bool:
        return self._entry.acked is not None

    async def ack(self) -> Receipt:
        """Acknowledges the message: signs and durably records the receipt, sends it, acks the gateway.

        Idempotent. Raises ``state_error`` if the receipt could not be recorded
        (the message then stays unacknowledged; try again), and ``cancelled`` once the
        agent is closed (the message stays in the inbox: handed over again after a restart).
        """
        return await self._agent._ack(self._entry)

    def __repr__(self) -> str:
        return f"Message({self.type.name} from {self.sender}, {self.message_hash.hex()[:16]}…{', redelivered' if self.redelivered else ''})"


@dataclass(slots=True)
class _Delivered:
    """An envelope as one stream delivered it (acked there once it is settled)."""

    conn: GatewayConnection | None
    delivery_id: int
    envelope: Any
    #: Why it waits to be tried again: ``capacity`` (the application holds ``max_unacked`` messages), ``handshake``
    #: (its handshake holds its 64), ``stale`` (the revocation data is stale), ``state`` (its inbox record could not be written).
    waiting: str = ""
    #: Its message hash, once computed (§6.6; not computed again when it is tried again).
    digest: bytes | None = None
    #: How often it was deferred: only the first is reported, and a failing inbox write backs off.
    deferrals: int = 0
    #: Not tried again before this ``time.monotonic()``.
    not_before: float = 0.0
    #: The bytes it holds, near enough to bound a queue (:func:`_envelope_bytes`).
    size: int = 0

    def __post_init__(self) -> None:
        self.size = _envelope_bytes(self.envelope)


def _envelope_bytes(envelope: Any) -> int:
    """The bytes an envelope holds, near enough to bound a queue: its variable-length fields, plus a fixed part (as
    @parley/client's ``deliveryBytes``)."""
    return 256 + len(envelope.encrypted_payload) + len(envelope.sender_id) + len(envelope.recipient_id)


class _EnvelopeQueue:
    """Deliveries of envelopes waiting to be opened: those read from the stream (bounded: when full, the reader
    waits), and in front of them, in the order they were put there, held and deferred ones taken again."""

    def __init__(self, bound: int, max_bytes: int = MAX_QUEUED_DELIVERY_BYTES) -> None:
        self._bound = bound
        self._max_bytes = max_bytes
        #: Bytes of the deliveries read from the stream and waiting here.
        self._bytes = 0
        self._items: collections.deque[_Delivered] = collections.deque()
        self._front: collections.deque[_Delivered] = collections.deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()

    def _full(self) -> bool:
        return len(self._items) >= self._bound or (bool(self._items) and self._bytes >= self._max_bytes)

    async def put(self, item: _Delivered) -> None:
        """Appends a delivery read from the stream, waiting while the queue holds its bound (in count or bytes)."""
        while self._full():
            self._not_full.clear()
            await self._not_full.wait()
        self._items.append(item)
        self._bytes += item.size
        self._not_empty.set()

    def put_front(self, items: list[_Delivered]) -> None:
        """Puts deliveries before every one read from the stream, after those put here before (not bounded:
        they were read already, and the lists they come from are)."""
        self._front.extend(items)
        if self._front:
            self._not_empty.set()

    def in_front(self, waiting: str) -> int:
        """How many deliveries in front were deferred for ``waiting``."""
        return sum(1 for d in self._front if d.waiting == waiting)

    async def get(self) -> _Delivered:
        while not self._front and not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        if self._front:
            return self._front.popleft()
        item = self._items.popleft()
        self._bytes -= item.size
        if not self._full():
            self._not_full.set()
        return item


@dataclass(slots=True)
class _Responding:
    handshake: ResponderHandshake
    timer: asyncio.TimerHandle
    held: list[_Delivered] = field(default_factory=list)
    #: Its step 3 waits for fresh revocation data (§17.3 item 7): its timeout is held meanwhile.
    waits: bool = False


@dataclass(slots=True, eq=False)
class _DeferredFrame:
    """A handshake frame left unacknowledged until this agent can check its sender's revocation again (§17.3 item 7)."""

    conn: GatewayConnection
    delivery_id: int
    frame: Any
    #: step, session id and sender: a later copy of the same frame takes its place (and a later step 1 of that sender
    #: any step 1 of it).
    key: tuple[int, bytes, str]


@dataclass(slots=True)
class _Initiating:
    handshake: InitiatorHandshake
    waiter: asyncio.Future[Session]


_END = object()

#: How long :func:`connect` keeps trying while the gateway answers what time fixes (``connect_timeout``), seconds.
DEFAULT_CONNECT_TIMEOUT: Final = 60.0


def _backoff_delay(backoff: Backoff, attempt: int) -> float:
    """The wait before attempt ``attempt + 1``: "equal jitter" below a ceiling doubling from ``initial_s`` to ``max_s``."""
    ceiling = min(backoff.max_s, backoff.initial_s * 2 ** min(attempt - 1, 30))
    return float(ceiling / 2 + random.random() * ceiling / 2)


def _seconds(value: object, name: str, *, zero: bool = False) -> float:
    """``value`` as a number of seconds: a finite real number (not a bool), positive (``zero``: or 0). ``malformed``
    otherwise (a :class:`ParleyError`, as every argument the SDK refuses), before anything is done with it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not zero):
        what = "a non-negative" if zero else "a positive"
        raise ParleyError("malformed", f"{name} must be {what}, finite number of seconds, got {value!r}")
    return float(value)


def _check_options(
    *,
    gateway: object,
    identity: object,
    state_dir: object,
    state_key: object,
    revocations: object,
    rekey_threshold: object,
    skew: object,
    reconnect: object,
    resend: object,
    timeouts: object,
    max_unacked: object,
    accept_handshake: object,
    on_event: object,
    tls: object,
    timeouts_s: dict[str, object],
) -> None:
    """The options of :func:`connect`, checked before anything is opened: each wrong one is ``malformed`` naming it."""
    if not isinstance(gateway, str) or not gateway.strip():
        raise ParleyError("malformed", f"gateway must be the gateway's address as a 'host:port' string, got {gateway!r}")
    if not isinstance(identity, LocalIdentity):
        raise ParleyError("malformed", f"identity must be a parley.LocalIdentity (parley.load_identity(key_file, certificate_file)), got {type(identity).__name__}")
    if tls is not None and not isinstance(tls, TlsConfig):
        raise ParleyError("malformed", f"tls must be a parley.TlsConfig or None, got {type(tls).__name__}")
    if state_dir is not None and not isinstance(state_dir, (str, Path)):
        raise ParleyError("malformed", f"state_dir must be a path (str or pathlib.Path) or None, got {type(state_dir).__name__}")
    if state_key is not None and (not isinstance(state_key, (bytes, bytearray)) or len(state_key) != 32):
        raise ParleyError("malformed", "state_key must be 32 bytes, or None (derived from the identity key)")
    if revocations is not None and not callable(getattr(revocations, "check", None)):
        raise ParleyError("malformed", f"revocations must be a parley revocation checker (e.g. parley.RegistryRevocations) or None, got {type(revocations).__name__}")
    try:
        assert_rekey_threshold(rekey_threshold)
    except SessionError as error:
        raise ParleyError("malformed", f"rekey_threshold: {error.detail}, got {rekey_threshold!r}") from None
    for name, value, kind in (("skew", skew, SkewLimits), ("resend", resend, ResendPolicy), ("timeouts", timeouts, SessionTimeouts)):
        if not isinstance(value, kind):
            raise ParleyError("malformed", f"{name} must be a parley.{kind.__name__}, got {type(value).__name__}")
    if reconnect is not None and not isinstance(reconnect, Backoff):
        raise ParleyError("malformed", f"reconnect must be a parley.Backoff or None (no reconnection), got {type(reconnect).__name__}")
    for name, seconds in (("resend.initial_s", resend.initial_s), ("resend.max_s", resend.max_s)):  # type: ignore[attr-defined]
        _seconds(seconds, name)
    if reconnect is not None:
        for name, seconds in (("reconnect.initial_s", reconnect.initial_s), ("reconnect.max_s", reconnect.max_s)):  # type: ignore[attr-defined]
            _seconds(seconds, name)
    if isinstance(max_unacked, bool) or not isinstance(max_unacked, int) or not 1 <= max_unacked <= 100_000:
        raise ParleyError("malformed", f"max_unacked must be an integer in 1..100000, got {max_unacked!r}")
    for name, callback in (("accept_handshake", accept_handshake), ("on_event", on_event)):
        if callback is not None and not callable(callback):
            raise ParleyError("malformed", f"{name} must be a callable or None, got {type(callback).__name__}")
    for name, seconds in timeouts_s.items():
        _seconds(seconds, name, zero=name == "connect_timeout")


async def connect(
    *,
    gateway: str,
    identity: LocalIdentity,
    trust_bundle: TrustBundle | str | Path,
    expected_gateway_id: str,
    tls: TlsConfig | None,
    state_dir: str | Path | None,
    state_key: bytes | None = None,
    previous_identity_keys: Sequence[crypto.SigningKey | str | Path] = (),
    previous_state_keys: Sequence[bytes] = (),
    revocations: RevocationChecker | None = None,
    rekey_threshold: int = DEFAULT_REKEY_THRESHOLD,
    skew: SkewLimits = DEFAULT_SKEW,
    send_timeout: float = 30.0,
    handshake_timeout: float = 10.0,
    auth_timeout: float = 10.0,
    reconnect: Backoff | None = Backoff(),
    resend: ResendPolicy = ResendPolicy(),
    timeouts: SessionTimeouts = SessionTimeouts(),
    max_unacked: int = 1024,
    accept_handshake: Callable[[str], bool] | None = None,
    on_event: Callable[[Event], None] | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Agent:
    """Connects an agent to its gateway and returns it, ready to send and receive.

    Args:
        gateway: ``host:port`` of the gateway.
        identity: this agent (:func:`parley.load_identity` reads what the registry CLI writes).
        trust_bundle: the pinned issuer keys, or the path of the §3.3 JSON file; a :class:`parley.RegistryTrustBundle`
            follows the registry's signed bundle, and lets the agent write first to a recipient the gateway has never
            seen (it looks the recipient's certificate up in the registry and attaches it to the handshake).
        expected_gateway_id: the gateway id its challenge must name (``identity_mismatch`` otherwise).
        tls: TLS settings; ``None`` (plaintext) is accepted only for a loopback gateway.
        state_dir: where the outbox, inbox, receipts and sessions live (durable, sealed, one process
            at a time). ``None`` keeps them in memory: a crash then loses what was in flight.
        state_key: 32 bytes sealing ``state_dir``; default: derived from the identity key.
        previous_identity_keys: after an identity key rotation (``parley-registry agent rotate``), the earlier
            identity key(s) — a key file path (loaded, then wiped) or a :class:`parley.SigningKey` — whose derived
            state key sealed ``state_dir``: what opens under one is re-sealed under the current state key at this
            start (crash-safe), after which the current key alone opens it. Its identity record still names the old
            key, so the rotation is seen (§17.8).
        previous_state_keys: the same for earlier ``state_key=`` values (32 bytes each). At most 4 earlier keys
            in all (``malformed`` beyond); ignored when ``state_dir`` is None.
        revocations: checked at every handshake and every message (e.g. :class:`parley.RegistryRevocations`).
        rekey_threshold: messages per epoch proposed for sessions this agent initiates.
        send_timeout: default time :meth:`Agent.send` waits for the receipt, seconds.
        reconnect: backoff between reconnection attempts; ``None``: no reconnection (and one connection attempt).
        connect_timeout: how long, in seconds, the first connection is tried again while the gateway itself answers
            what time fixes — its revocation copy stale (``revocation_stale``: its registry down or just restarted),
            ``unavailable``, ``rate_limited``, ``shutting_down`` —, with the ``reconnect`` backoff, each wait announced by
            a ``connect_retry`` event (attempt, delay_s, remaining_s, error); then the last answer is raised. 0: one
            attempt. A connection that cannot be made (nothing listening, a wrong host, TLS) and every verdict on the
            agent (``revoked``, ``bad_certificate``, …) are raised at once.
        max_unacked: messages handed to the application and not acked; beyond, deliveries are left unacknowledged
            at the gateway and tried again as the application acks (§17.3 item 6).
        accept_handshake: called with a peer's agent id before any cryptography for a handshake it starts;
            False refuses it (the peer's certificate is still checked at step 3 when it returns True).
        on_event: receives :class:`Event`\\ s (security, lifecycle, final outcomes); never key material.

    Raises:
        ParleyError: ``malformed``: an option of the wrong type or out of range (a timeout that is not a positive finite
            number of seconds, ``gateway`` not a ``host:port`` string, …), before anything is opened.
        GatewayError: the gateway's refusal (``revoked``, ``unknown_issuer``, …; at the ``connect_timeout`` deadline,
            the last answer time did not fix: ``revocation_stale``, ``unavailable``, …) or ``unavailable`` at once
            when no connection could be made.
        StateError: ``state_error`` (directory in use, not writable), ``state_corrupt`` (a record opens under no key
            given: the message says which option to pass) or ``malformed`` (more than 4 earlier keys, or not 32 bytes).
    """
    if not isinstance(expected_gateway_id, str) or not expected_gateway_id:
        raise ParleyError("malformed", "expected_gateway_id is required")
    _check_options(
        gateway=gateway,
        identity=identity,
        state_dir=state_dir,
        state_key=state_key,
        revocations=revocations,
        rekey_threshold=rekey_threshold,
        skew=skew,
        reconnect=reconnect,
        resend=resend,
        timeouts=timeouts,
        max_unacked=max_unacked,
        accept_handshake=accept_handshake,
        on_event=on_event,
        tls=tls,
        timeouts_s={"send_timeout": send_timeout, "handshake_timeout": handshake_timeout, "auth_timeout": auth_timeout, "connect_timeout": connect_timeout},
    )
    if tls is None and not is_loopback(gateway):
        raise ParleyError("failed_precondition", f"plaintext is allowed only to a loopback gateway, not {gateway}: pass tls=TlsConfig(...)")
    if not isinstance(trust_bundle, (TrustBundle, str, Path)):
        raise ParleyError("malformed", f"trust_bundle must be a parley.TrustBundle (or RegistryTrustBundle) or the path of its JSON file, got {type(trust_bundle).__name__}")
    if not isinstance(trust_bundle, TrustBundle):
        trust_bundle = TrustBundle.from_file(trust_bundle)
    agent = Agent(
        gateway=gateway,
        identity=identity,
        trust_bundle=trust_bundle,
        expected_gateway_id=expected_gateway_id,
        tls=tls,
        state_dir=state_dir,
        state_key=state_key,
        previous_identity_keys=previous_identity_keys,
        previous_state_keys=previous_state_keys,
        revocations=revocations,
        rekey_threshold=rekey_threshold,
        skew=skew,
        send_timeout=send_timeout,
        handshake_timeout=handshake_timeout,
        auth_timeout=auth_timeout,
        reconnect=reconnect,
        resend=resend,
        timeouts=timeouts,
        max_unacked=max_unacked,
        accept_handshake=accept_handshake,
        on_event=on_event,
    )
    try:
        await agent._start(connect_timeout=connect_timeout)
    except BaseException:
        await agent.close()
        raise
    return agent


def _open_directory(path: str | Path, key: bytearray, previous: list[bytearray], previous_identity_keys: list[crypto.SigningKey | str | Path]) -> DirectoryStateStore:
    """In a worker thread: the state directory under ``key``, carried over from the earlier state keys ``previous`` and
    those derived from ``previous_identity_keys`` (a key file is loaded, and wiped once derived). Wipes ``key`` and
    every earlier key, given or derived, before it returns or raises."""
    try:
        for source in previous_identity_keys:
            if isinstance(source, crypto.SigningKey):
                previous.append(derive_state_key(source.seed()))
                continue
            loaded = load_key_file(source)
            try:
                previous.append(derive_state_key(loaded.seed()))
            finally:
                loaded.wipe()
        return DirectoryStateStore(path, key, previous)
    finally:
        crypto.wipe(key)
        for k in previous:
            crypto.wipe(k)


class Agent:
    """A connected agent. Create with :func:`connect`; use as ``async with`` to close it."""

    def __init__(
        self,
        *,
        gateway: str,
        identity: LocalIdentity,
        trust_bundle: TrustBundle,
        expected_gateway_id: str,
        tls: TlsConfig | None,
        state_dir: str | Path | None,
        state_key: bytes | None,
        revocations: RevocationChecker | None,
        rekey_threshold: int,
        skew: SkewLimits,
        send_timeout: float,
        handshake_timeout: float,
        auth_timeout: float,
        reconnect: Backoff | None,
        resend: ResendPolicy,
        timeouts: SessionTimeouts,
        max_unacked: int,
        on_event: Callable[[Event], None] | None,
        accept_handshake: Callable[[str], bool] | None = None,
        previous_identity_keys: Sequence[crypto.SigningKey | str | Path] = (),
        previous_state_keys: Sequence[bytes] = (),
    ) -> None:
        if not is_agent_id(identity.agent_id):
            raise ParleyError("malformed", "identity.agent_id is not a valid agent id")
        check_previous_keys(previous_state_keys, "previous_state_keys")
        if isinstance(previous_identity_keys, (str, Path)) or not all(isinstance(k, (crypto.SigningKey, str, Path)) for k in previous_identity_keys):
            raise StateError("malformed", "previous_identity_keys: a sequence of key file paths or parley.SigningKey")
        if len(previous_identity_keys) + len(previous_state_keys) > MAX_PREVIOUS_STATE_KEYS:
            raise StateError(
                "malformed",
                f"at most {MAX_PREVIOUS_STATE_KEYS} previous_identity_keys and previous_state_keys in all, "
                f"{len(previous_identity_keys) + len(previous_state_keys)} given: carry the state directory over after each rotation",
            )
        self._gateway = gateway
        self.identity = identity
        self._trust = trust_bundle
        self._expected_gateway_id = expected_gateway_id
        self._tls = tls
        self._revocations = revocations
        self._skew = skew
        self._send_timeout = send_timeout
        self._handshake_timeout = handshake_timeout
        self._auth_timeout = auth_timeout
        self._reconnect = reconnect
        self._resend = resend
        self._timeouts = timeouts
        self._max_unacked = max_unacked
        self._on_event = on_event
        self._accept_handshake = accept_handshake
        self._state_dir = state_dir
        self._state_key = state_key
        #: Earlier keys the state directory may be sealed under, until it is opened (then wiped and dropped: the
        #: directory is carried over to the current key). SigningKeys are the caller's: dropped, not wiped.
        self._previous_identity_keys: list[crypto.SigningKey | str | Path] = list(previous_identity_keys)
        self._previous_state_keys: list[bytearray] = [bytearray(k) for k in previous_state_keys]
        self._store: DirectoryStateStore | MemoryStateStore | None = None
        #: The ``cancelled`` that close() ends the waiting sends with (see :meth:`_held`).
        self._close_error: DeliveryError | None = None
        #: This agent's certificate for a message lifetime (the max-age skew bound) after its identity key replaced
        #: the one the state was written under (its key was rotated, §17.8), across restarts: attached to every
        #: receipt and SessionReject it signs. None otherwise.
        self._signer_certificate: Any | None = None
        #: When this run's identity key first replaced another (kept in the identity record), if it did.
        self._rotated_at_ms: int | None = None
        self._io = asyncio.Lock()
        self._cache = MessageHashCache()
        self._config = HandshakeConfig(identity=identity, trust_bundle=trust_bundle, revocations=revocations, rekey_threshold=rekey_threshold, skew=skew, cache=self._cache)
        # A first contact with a recipient the gateway never saw: its certificate looked up in the registry the trust
        # bundle follows (none without one: such a step 1 then fails policy_denied at once).
        registry = trust_bundle if isinstance(trust_bundle, RegistryTrustBundle) else None
        self._first_contact = FirstContact(
            get_agent=None if registry is None else functools.partial(registry.get_agent, identity=identity),
            trust_bundle=trust_bundle,
            revocations=revocations,
            refresh_trust_bundle=None if registry is None else registry.refresh,
            on_security=lambda code, peer, detail: self._security("directory", code, peer, None, detail),
            on_lookup_failed=lambda peer, code, detail: self._emit("first_contact", peer=peer, code=code, detail=detail),
        )
        # sessions
        self._sessions: dict[bytes, Session] = {}
        self._current: dict[str, Session] = {}
        self._reserved: dict[bytes, int] = {}
        self._seal_locks: dict[bytes, asyncio.Lock] = {}
        self._initiating: dict[bytes, _Initiating] = {}
        self._initiations: dict[str, asyncio.Future[Session]] = {}
        self._responding: dict[bytes, _Responding] = {}
        # delivery state
        self._outbox: dict[str, _OutboxEntry] = {}
        #: Sends waiting for a session with their recipient, recorded durably (kind ``unsealed``), by outbox id.
        self._unsealed: dict[str, _UnsealedEntry] = {}
        #: Per peer, the task that obtains a session for the unsealed sends to it and seals them (one per peer).
        self._awaiting: dict[str, asyncio.Task[Any]] = {}
        #: Ids of sends being sealed and recorded, not in the outbox yet: a second send with the same id waits.
        self._claims: dict[str, asyncio.Future[None]] = {}
        #: Sends whose first record is being written (:meth:`_begin`): not cancelled with their caller; close() waits.
        self._preparing: set[asyncio.Task[asyncio.Future[Receipt]]] = set()
        self._by_hash: dict[bytes, str] = {}
        self._unacked: dict[bytes, _InboxEntry] = {}
        self._receipts: dict[bytes, dict[str, Any]] = {}
        #: The newest receipt time (``received_at_ms``) of a receipt dropped while still within the message lifetime
        #: (the store was full), None while none was: an envelope that old may have been taken here, so it gets no
        #: SessionReject (§17.4), whose reseal would make it a second message.
        self._forgotten_until: int | None = None
        self._app: asyncio.Queue[Any] = asyncio.Queue()
        #: Deferred deliveries waiting for the application to ack (they go before any new envelope).
        self._waiting_capacity = 0
        self._envelopes = _EnvelopeQueue(ENVELOPE_QUEUE)
        #: Deliveries left unacknowledged because they cannot be taken now, tried again (§17.3 items 4 and 6).
        self._deferred: list[_Delivered] = []
        #: Handshake frames left unacknowledged until the revocation data is fresh (§17.3 item 7), in arrival order.
        self._deferred_frames: list[_DeferredFrame] = []
        self._retrying_frames = False
        #: Bytes of :attr:`_deferred`, and of the envelopes held for all responder handshakes.
        self._deferred_bytes = 0
        self._held_bytes = 0
        # connection
        self._conn: GatewayConnection | None = None
        self._live = asyncio.Event()
        self._fatal: ParleyError | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Durable bookkeeping already decided (:meth:`_durable`): not cancelled by close(), which waits for it.
        self._bookkeeping: set[asyncio.Task[Any]] = set()
        self._main_tasks: list[asyncio.Task[Any]] = []
        self._memory: MemoryClient | None = None

    # =========================================================================================
    # Public API

    @property
    def agent_id(self) -> str:
        return self.identity.agent_id

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    @property
    def gateway_id(self) -> str | None:
        return self._conn.gateway_id if self._conn is not None else None

    @property
    def memory(self) -> MemoryClient:
        """Shared memory on this agent's gateway (docs/PROTOCOL.md §18): ``create``, ``get``, ``read``,
        ``write``, ``update``, ``grant``, ``revoke``, ``list``, ``segments``, ``rotate``. End to end
        encrypted: the gateway stores ciphertext and enforces membership, and never holds a key. Created
        on first use (with this agent's identity, gateway address, TLS, trust bundle and revocation
        checker; requests are signed for the gateway id), closed with the agent. An answer of the gateway
        that does not verify is a ``security`` event with stage ``memory`` (peer: the memory id).

        Raises ``cancelled`` once the agent is closed.
        """
        if self._closed:
            raise ParleyError("cancelled", "agent closed")
        if self._memory is None:
            self._memory = MemoryClient(
                identity=self.identity,
                address=self._gateway,
                service_id=self._conn.gateway_id if self._conn is not None else self._expected_gateway_id,
                trust_bundle=self._trust,
                revocations=self._revocations,
                tls=self._tls,
                on_security=lambda code, memory_id, detail: self._security("memory", code, peer=memory_id, detail=detail),
            )
        return self._memory

    def sessions(self) -> list[Session]:
        """Live sessions (inspection only)."""
        return list(self._sessions.values())

    def pending(self) -> int:
        """Messages sent that have no outcome yet: in the outbox (sealed, no verified receipt yet) or waiting for a
        session with their recipient (recorded, not sealed yet)."""
        return len(self._outbox) + len(self._unsealed)

    async def send(
        self,
        to: str,
        message_type: MessageType | int,
        content: object,
        *,
        parent_message_hash: bytes | None = None,
        handoff_hash: bytes | None = None,
        timeout: float | None = None,
        id: str | None = None,
    ) -> Receipt:
        """Sends one message and waits for the recipient's verified, signed receipt.

        Establishes a session first when there is none. The message is recorded
        durably before this waits for anything — for a session (first contact: as an
        unsealed record, sealed once the session exists) or for the gateway (the
        sealed envelope in the outbox, before it is relayed) — and stays until a
        verified receipt, its expiry, or a permanent refusal, across reconnects and
        restarts. A handshake that fails in a way a retry may fix (a timeout, no
        gateway stream, stale revocation data) is retried with backoff until the
        message expires (``created + max_age``; the envelope carries that creation time);
        a step 1 the gateway stored for an offline recipient (``QUEUED``) waits for
        its answer as long. Every send ends in exactly one ``send_settled`` event
        (from the restarted process if this one stopped or closed first; a crash
        between a receipt's report and its record's deletion reports it once more
        after the restart, with the same receipt: at least once), whose
        ``id`` is this call's ``id`` — or, without one, an id made up for the send
        (32 hex digits; ``pending_sends()`` lists it, and a ``deadline_exceeded``
        names it). Only a call refused before the send exists gets none: an
        invalid recipient, argument or content, the outbox full, the agent closed
        or stopped. ``timeout``: seconds, a positive finite number (default: the
        agent's ``send_timeout``).

        ``id`` makes the send idempotent: while a send with the same id is pending
        (also one restored from the state directory after a restart, and one made
        without an id whose made-up id this is), this call waits for it instead of
        sending again.

        Once started, a send cannot be cancelled: cancelling this call only ends the
        caller's wait (the send is recorded, relayed and settled as any other: its
        ``send_settled`` event). :meth:`close` ends the calls still waiting with
        ``cancelled``.

        Returns:
            The :class:`Receipt`, its signature verified with the recipient's certified key.

        Raises:
            GatewayError: a definite refusal (``policy_denied`` — also of a handshake with a recipient the gateway
                never saw, when the agent's trust bundle is no :class:`parley.RegistryTrustBundle` or the registry
                has no such agent, or a certificate of it that verifies —, ``too_large``, ``revoked``, …).
            SessionError, IdentityError: the handshake failed for good, or the current session's peer did
                (``revoked``, ``expired``, ``unknown_issuer``, ``bad_certificate``, ``identity_mismatch``,
                ``bad_binding``, …), or the content is not a JSON value (``malformed``, ``too_large``), or an argument
                is of the wrong type or out of range (``malformed``: nothing is sent).
            DeliveryError: ``expired`` (definitely not delivered), ``deadline_exceeded``
                (not confirmed yet; the final outcome arrives as a ``send_settled`` event), or ``cancelled``
                (the agent closed). A send whose wait close() — or a stop for good, raising the stopping error — ended
                after its first record was written in a state directory carries ``held_send_id``: held there, resumed
                by a restart with the same state, its outcome the ``send_settled`` event of that id.
            StateError: ``state_error``: the send's first record (unsealed or outbox record, or the counter
                reservation before its seal) could not be written. Nothing was sent; the send settles with
                ``state_error`` (its ``send_settled``, after the ``state_error`` event) and the agent stops
                (fail closed): every later call, and ``messages()``, raise this same error.
        """
        self._check_usable()
        if not is_agent_id(to) or to == self.agent_id:
            raise SessionError("malformed", "recipient is not a valid agent id")
        # Every argument checked before anything is done with it: a wrong one is ``malformed`` (a ParleyError), nothing sent.
        payload_type = _message_type(message_type)
        budget = self._send_timeout if timeout is None else _seconds(timeout, "timeout")
        for name, h in (("parent_message_hash", parent_message_hash), ("handoff_hash", handoff_hash)):
            if h is not None and not isinstance(h, (bytes, bytearray)):
                raise SessionError("malformed", f"{name} must be 32 bytes or None, got {type(h).__name__}")
        parent_message_hash = None if parent_message_hash is None else bytes(parent_message_hash)
        handoff_hash = None if handoff_hash is None else bytes(handoff_hash)
        if id is not None and (not isinstance(id, str) or not 1 <= len(id) <= 256):
            raise SessionError("malformed", f"id must be a string of 1..256 characters or None, got {id!r}"[:200])
        deadline = time.monotonic() + budget
        # As @parley/client: the send's id is the caller's, or one made up for it; its outcome (send_settled) and
        # pending_sends() carry that id. Its outbox record is named by the id's hash (a caller's id is any string).
        send_id = crypto.random_bytes(16).hex() if id is None else id
        entry_id = send_id if id is None else _entry_id(id)
        while True:
            existing = self._pending_send(entry_id, send_id)
            if existing is not None:
                # Its id, also for a send restored from a record of an earlier release, which kept only its hash.
                existing.send_id = send_id
                if existing.waiter is None or existing.waiter.done():
                    existing.waiter = asyncio.get_running_loop().create_future()
                return await self._await_receipt(existing.waiter, to, deadline, budget, send_id)
            claim = self._claims.get(entry_id) or self._claims.get(send_id)
            if claim is None:
                break
            # A send with this id is on its way to the outbox: the first one stands (wait for it to be recorded,
            # or to fail before that, then look again).
            try:
                await asyncio.wait_for(asyncio.shield(claim), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise DeliveryError("deadline_exceeded", f"a send with this id to {to!r} is still being prepared after {budget:g} s") from None
            self._check_usable()
        # Validate the content before any network work.
        encode_payload(payload_type, content, now_ms(), handoff_hash=handoff_hash, parent_message_hash=parent_message_hash)
        if self.pending() >= MAX_OUTBOX:
            raise DeliveryError("rate_limited", f"the outbox holds {MAX_OUTBOX} unconfirmed messages")
        claim = self._claims[entry_id] = asyncio.get_running_loop().create_future()  # reserved before the first await
        # Once started, a send goes on (as @parley/client's: a started send cannot be cancelled): its first record is
        # written, and it is sealed, relayed and settled as any other, in a task of its own. Cancelling this call only
        # ends the caller's wait (its outcome comes as the send_settled event); close() waits for the record.
        preparing = asyncio.get_running_loop().create_task(self._begin(claim, entry_id, send_id, to, payload_type, content, handoff_hash, parent_message_hash))
        self._preparing.add(preparing)
        preparing.add_done_callback(self._prepared)
        waiter = await asyncio.shield(preparing)
        return await self._await_receipt(waiter, to, deadline, budget, send_id)

    def _pending_send(self, entry_id: str, send_id: str) -> _OutboxEntry | _UnsealedEntry | None:
        """The pending send a call with ``send_id`` (outbox id ``entry_id``) waits for, if any: the one recorded under
        ``entry_id`` (made with that id, or restored from an earlier release's record of it, which kept only the id's
        hash), or one that has ``send_id`` as its send id — the id made up for a send without one, which names its
        records (also an earlier release's), handed back by a caller (``pending_sends()``, a ``deadline_exceeded``).
        A send's id is its outbox id or that id's preimage (:func:`_send_id_of`), so these two keys index every send
        by its id."""
        found = self._outbox.get(entry_id) or self._unsealed.get(entry_id)
        if found is not None or entry_id == send_id:
            return found
        other = self._outbox.get(send_id) or self._unsealed.get(send_id)
        return other if other is not None and other.send_id == send_id else None

    async def _begin(
        self,
        claim: asyncio.Future[None],
        entry_id: str,
        send_id: str,
        to: str,
        payload_type: int,
        content: object,
        handoff_hash: bytes | None,
        parent_message_hash: bytes | None,
    ) -> asyncio.Future[Receipt]:
        """:meth:`_prepare`, its claim on the id released when it ends; a first record that could not be written ends
        the send (:meth:`_unrecorded`) whether or not its caller still waits."""
        try:
            return await self._prepare(entry_id, send_id, to, payload_type, content, handoff_hash, parent_message_hash)
        except StateError as error:
            raise self._unrecorded(send_id, to, error) from None
        finally:
            del self._claims[entry_id]
            claim.set_result(None)

    def _prepared(self, task: asyncio.Task[asyncio.Future[Receipt]]) -> None:
        self._preparing.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # retrieved: its caller may have stopped waiting
        if error is not None and not isinstance(error, ParleyError):
            _log.error("parley: a send could not be prepared", exc_info=error)

    def _unrecorded(self, send_id: str, to: str, error: StateError) -> ParleyError:
        """A new send whose first record — its unsealed or outbox record, or the counter reservation before its seal —
        could not be written (the ``state_error`` event was emitted): nothing of it is held anywhere, so that failure
        is its outcome (§17.2 item 8), as @parley/client's outbox has it. The agent stops (fail closed; a failed
        reservation stopped it already), then the send settles — its one ``send_settled``, with the code of the error
        that stopped the agent — and that error is what the caller gets (and every later call). Returns it."""
        if self._fatal is None and not self._closed:
            self._stop(StateError("state_error", f"could not record a send ({error.detail}): nothing of it was sent, the agent stopped"))
        outcome = self._fatal or error
        self._emit("send_settled", id=send_id, message_hash=None, peer=to, code=outcome.code, receipt=None)
        return outcome

    async def _prepare(
        self, entry_id: str, send_id: str, to: str, payload_type: int, content: object, handoff_hash: bytes | None, parent_message_hash: bytes | None
    ) -> asyncio.Future[Receipt]:
        """Records a new send durably and returns the future of its outcome. With a session to its recipient it is
        sealed, recorded in the outbox and relayed; without one (or one that ended while its counters were being
        reserved, or whose peer cannot be checked now) it is recorded unsealed, and sealed once a session exists
        (:meth:`_establish_for`). Raises only what ends the send before anything was recorded (``state_error``: its
        first record could not be written, :meth:`_unrecorded`)."""
        ts = now_ms()
        payload = encode_payload(payload_type, content, ts, handoff_hash=handoff_hash, parent_message_hash=parent_message_hash)
        refused: IdentityError | None = None
        try:
            session = await self._usable_session(to)
        except IdentityError as error:  # the current session's peer is revoked or expired, or its issuer left the bundle
            session, refused = None, error
        if session is not None:
            try:
                entry = await self._record_sealed(entry_id, send_id, to, session, payload, ts)
            except SessionError as error:
                if error.code != "unknown_session" or not session.closed:
                    raise
                # The session ended while its counters were being reserved: nothing was sealed; wait for the next one.
            else:
                assert entry.waiter is not None
                if not self._closed:  # closed meanwhile: relayed from its record after the next start
                    self._spawn(self._relay(entry))
                return entry.waiter
        held = _UnsealedEntry(id=entry_id, send_id=send_id, to=to, payload=payload, created_at_ms=ts, expires_at_ms=ts + self._skew.max_age_ms)
        waiter: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        held.waiter = waiter
        await self._put("unsealed", held.id, held.record())  # durable before this waits for a session
        self._unsealed[held.id] = held
        if refused is not None:
            await self._settle_unsealed(held, refused)  # permanent (§17.2 item 6): the send ends with that code
        else:
            self._establish_later(to)
        return waiter

    async def _usable_session(self, peer: str) -> Session | None:
        """The current session to ``peer`` when one can seal now; None when there is none or its peer cannot be checked
        now (stale revocation data: the send waits for a session like a first contact). A revoked or expired peer, or
        one whose issuer left the trust bundle, closes the session and is raised (:class:`IdentityError`): nothing more
        is sealed to it (§8.4)."""
        current = self._current.get(peer)
        if current is None or current.closed:
            return None
        try:
            current.check_peer(now_ms())
        except IdentityError as error:
            if error.code in CLOSING_CODES:
                await self._close_session(current, f"peer {error.code}")
                raise
            return None
        return current

    async def _record_sealed(self, entry_id: str, send_id: str, to: str, session: Session, payload: bytes, ts: int, *, created_at_ms: int | None = None) -> _OutboxEntry:
        """Seals ``payload`` (timestamp ``ts``) in ``session`` and records it in the outbox durably (not relayed yet)."""
        sealed = await self._seal(session, payload, ts)
        entry = _OutboxEntry(
            id=entry_id,
            send_id=send_id,
            to=to,
            session_id=session.id,
            message_hash=sealed.message_hash,
            envelope=sealed.envelope,
            payload=payload,
            peer_key=session.peer.identity_public_key,
            created_at_ms=ts if created_at_ms is None else created_at_ms,
            expires_at_ms=int(sealed.envelope.timestamp_ms) + self._skew.max_age_ms,  # §17.1: the message's validity
        )
        entry.waiter = asyncio.get_running_loop().create_future()
        await self._put("outbox", entry.id, entry.record())  # durable before it is relayed
        self._outbox[entry.id] = entry
        self._by_hash[entry.message_hash] = entry.id
        return entry

    async def _await_receipt(self, waiter: asyncio.Future[Receipt], to: str, deadline: float, budget: float, send_id: str) -> Receipt:
        if not waiter.done():  # the agent closed or stopped while its first record was written: kept for the next start
            if self._closed:
                raise self._held(self._close_error or DeliveryError("cancelled", "agent closed"), send_id)
            if self._fatal is not None:
                raise self._held(self._fatal, send_id)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise DeliveryError(
                "deadline_exceeded", f"no verified receipt from {to!r} within {budget:g} s; the outbox keeps trying, its outcome comes as the send_settled event of send id {send_id!r}"
            ) from None
        except ParleyError as error:
            # close() or a stop for good ended the wait of a recorded send (not its outcome): it is held.
            if error is self._close_error or error is self._fatal:
                raise self._held(error, send_id) from None
            raise

    def _held(self, error: ParleyError, send_id: str) -> ParleyError:
        """What a send() ended by close() or a stop for good raises once its first record is written: with a state
        directory, ``error``'s code with that said and :attr:`ParleyError.held_send_id` (as @parley/client's
        ``heldSendId``); without one (nothing outlives the process), ``error`` itself."""
        if not isinstance(self._store, DirectoryStateStore):
            return error
        held = type(error)(
            error.code,
            f"{error.detail}; the send {send_id!r} is held in the state directory (not lost): a restart with the same state resumes it and reports its outcome as the send_settled event of id {send_id!r}",
        )
        held.held_send_id = send_id
        return held

    def pending_sends(self) -> list[dict[str, Any]]:
        """Sends without an outcome yet (also ones restored from the state directory): ``id`` — the caller's
        (``send(id=…)``), or the one made up for a send without one: the ``id`` its ``send_settled`` will carry —,
        recipient, ``state`` — ``unsealed``: waiting for a session with the recipient (a first contact, or a reseal
        after a SessionReject); ``sealed``: its envelope recorded and relayed, resent until its receipt —, current
        message hash (None if never sealed), created, expiry, reseals. A send restored from a record of an earlier
        release, made with ``send(id=…)``, is listed under that id's hash until a caller sends with the id again."""
        waiting = [
            {"id": e.send_id, "to": e.to, "state": "unsealed", "message_hash": None, "created_at_ms": e.created_at_ms, "expires_at_ms": e.expires_at_ms, "reseals": 0}
            for e in self._unsealed.values()
        ]
        return waiting + [
            {
                "id": e.send_id,
                "to": e.to,
                "state": "unsealed" if e.resealing else "sealed",
                "message_hash": e.message_hash.hex(),
                "created_at_ms": e.created_at_ms,
                "expires_at_ms": e.expires_at_ms,
                "reseals": e.reseals,
            }
            for e in self._outbox.values()
        ]

    async def messages(self) -> AsyncIterator[Message]:
        """Received messages in delivery order, each handed over once per process (``redelivered`` after a restart).

        One consumer. Ends when the agent closes — once :meth:`close` has begun it hands
        out nothing more (what it did not hand out stays in the durable inbox and is
        handed over after a restart) —; raises the error that stopped the agent
        otherwise. Ack every message (``await msg.ack()``) once processed.
        """
        while True:
            item = None if self._closed else await self._app.get()
            if item is None or item is _END or self._closed:
                self._app.put_nowait(_END)
                if self._fatal is not None:
                    raise self._fatal
                return
            yield item

    async def close(self) -> None:
        """Closes the stream and every session (their state is kept for the next start). Idempotent.

        From its first step :meth:`messages` hands out nothing more. Before the state directory closes it finishes the
        durable bookkeeping already decided (:meth:`_durable`: the record deletion of a send whose outcome was reported,
        …; bounded by :data:`CLOSE_BOOKKEEPING_TIMEOUT`), so that the next start neither resends nor reports it again."""
        if self._closed:
            return
        self._closed = True
        self._app.put_nowait(_END)  # messages() hands out nothing more from now on
        self._forget_previous_keys()
        cancelled = self._close_error = DeliveryError("cancelled", "agent closed")
        waiting: list[_OutboxEntry | _UnsealedEntry] = [*self._outbox.values(), *self._unsealed.values()]
        for entry in waiting:
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_exception(cancelled)
                entry.waiter.exception()  # retrieved: the outbox (or the unsealed record) keeps the message for the next start
        for fut in list(self._initiations.values()):
            if not fut.done():
                fut.cancel()
        for task in self._main_tasks + list(self._tasks):
            task.cancel()
        for task in self._main_tasks + list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._preparing:
            # Sends whose first record is being written: recorded before the store closes (resumed after a restart);
            # their callers get ``cancelled``.
            await asyncio.wait(list(self._preparing))
            recorded: list[_OutboxEntry | _UnsealedEntry] = [*self._outbox.values(), *self._unsealed.values()]
            for kept in recorded:
                if kept.waiter is not None and not kept.waiter.done():
                    kept.waiter.set_exception(cancelled)
                    kept.waiter.exception()
        await self._finish_bookkeeping()
        await self._first_contact.close()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._memory is not None:
            await self._memory.close()
        for pending in self._initiating.values():
            pending.handshake.abort()
        for responding in self._responding.values():
            responding.timer.cancel()
            responding.handshake.abort()
        if self._store is not None:
            for session in list(self._sessions.values()):
                with contextlib.suppress(ParleyError):
                    await self._save_session(session)
        for session in self._sessions.values():
            session.close()
        if self._store is not None:
            store = self._store
            async with self._io:  # after the writes in progress: none is sealed under a wiped key
                await asyncio.to_thread(store.close)
        self._app.put_nowait(_END)

    async def _finish_bookkeeping(self) -> None:
        """close(): waits for the durable bookkeeping already decided (:meth:`_durable`) — e.g. the record deletion of a
        send whose receipt was reported: left behind, the restarted process would resend it and report it again —,
        bounded by :data:`CLOSE_BOOKKEEPING_TIMEOUT` (local writes); what is still running then is cancelled, and the
        next start decides (as after a crash)."""
        deadline = time.monotonic() + CLOSE_BOOKKEEPING_TIMEOUT
        while self._bookkeeping:
            remaining = deadline - time.monotonic()
            late: set[asyncio.Task[Any]] = set(self._bookkeeping)
            if remaining > 0:
                _, late = await asyncio.wait(late, timeout=remaining)
            if late and time.monotonic() >= deadline:
                _log.warning("parley: %d state writes still running %g s after close() began: cancelled (the next start decides)", len(late), CLOSE_BOOKKEEPING_TIMEOUT)
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
                return

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # =========================================================================================
    # Start and state

    async def _start(self, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        """Opens the state, starts the loops and opens the first gateway stream. An answer time fixes, said by the
        gateway itself (:func:`parley.gateway.is_transient_connect_refusal`), is tried again with the reconnect backoff
        until ``connect_timeout`` (none when reconnection is off), each wait announced by a ``connect_retry`` event;
        then the last answer is raised. Everything else is raised at once."""
        await self._open_state()
        self._main_tasks = [
            asyncio.get_running_loop().create_task(self._envelope_loop(), name="parley-envelopes"),
            asyncio.get_running_loop().create_task(self._housekeeping(), name="parley-housekeeping"),
            asyncio.get_running_loop().create_task(self._retry_loop(), name="parley-deferred"),
        ]
        deadline = time.monotonic() + (0.0 if self._reconnect is None else connect_timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = await GatewayConnection.open(address=self._gateway, identity=self.identity, expected_gateway_id=self._expected_gateway_id, tls=self._tls, timeout=self._auth_timeout)
                break
            except GatewayError as error:
                remaining = deadline - time.monotonic()
                if self._closed or self._fatal is not None or remaining <= 0 or not is_transient_connect_refusal(error):
                    raise
                assert self._reconnect is not None
                # The reconnect loop's backoff; the last wait ends at the deadline, for one more attempt.
                delay = min(remaining, _backoff_delay(self._reconnect, attempt))
                self._emit("connect_retry", attempt=attempt, delay_s=round(delay, 3), remaining_s=round(remaining, 3), error=error)
                await asyncio.sleep(delay)
                if self._closed or self._fatal is not None:
                    raise self._fatal or error
        self._attach(conn)

    async def _open_state(self) -> None:
        """Opens the state — carried over from the earlier keys given, if it was sealed under one — and restores it.
        A record that opens under no key given is ``state_corrupt``, saying which option to pass."""
        try:
            if self._state_dir is None:
                self._store = MemoryStateStore()
            else:
                # Copies handed to the worker thread, which wipes them: nothing it reads is wiped under it here.
                key = bytearray(self._state_key) if self._state_key is not None else derive_state_key(self.identity.signing_key.seed())
                previous = [bytearray(k) for k in self._previous_state_keys]
                store = await asyncio.to_thread(_open_directory, self._state_dir, key, previous, list(self._previous_identity_keys))
                self._store = store
                if store.carried_over:
                    _log.info("state directory %s carried over to the current state key: %d records re-sealed", self._state_dir, store.carried_over)
            await self._load_state()
        except StateKeyMismatch as error:
            if self._state_key is None:
                hint = (
                    "; the state key is derived from the identity key: if that key was rotated, pass the previous key file "
                    '(or its parley.SigningKey) as previous_identity_keys=["old.key.json"], and the state is carried over to the new key'
                )
            else:
                hint = "; if state_key= was changed, pass the earlier one as previous_state_keys=[…], and the state is carried over to this key"
            raise StateKeyMismatch("state_corrupt", error.detail + hint) from error
        finally:
            self._forget_previous_keys()

    def _forget_previous_keys(self) -> None:
        """Wipes this agent's copies of the earlier state keys and drops the earlier identity keys (not needed once the
        directory is open: it was carried over)."""
        for k in self._previous_state_keys:
            crypto.wipe(k)
        self._previous_state_keys = []
        self._previous_identity_keys = []

    async def _load_state(self) -> None:
        assert self._store is not None
        store = self._store
        sessions, outbox, inbox, receipts, identity, unsealed = await asyncio.to_thread(
            lambda: (store.load("sessions"), store.load("outbox"), store.load("inbox"), store.load("receipts"), store.load("identity"), store.load("unsealed"))
        )
        now = now_ms()
        key = self.identity.signing_key.public_key.hex()
        recorded = identity.get(IDENTITY_RECORD)
        if recorded is not None and (not isinstance(recorded.get("key"), str) or len(recorded["key"]) != 64):
            raise StateError("state_corrupt", "the identity record does not parse")
        recorded_rotation = None if recorded is None else recorded.get("rotated_at_ms")
        if recorded_rotation is not None and (not isinstance(recorded_rotation, int) or isinstance(recorded_rotation, bool) or recorded_rotation < 0):
            raise StateError("state_corrupt", "the identity record does not parse")
        rotated = recorded is not None and recorded["key"] != key
        # When this key first replaced another: now if the record names another key, the recorded time if it names this
        # one (absent: it never did). For a session lifetime after it (at least a message lifetime) every receipt and
        # SessionReject this agent signs carries its certificate, across restarts — peers may go on sending in their old
        # sessions that long, and a restart before they are answered would otherwise reply with signatures they cannot verify.
        self._rotated_at_ms = now if rotated else recorded_rotation
        attach_for_ms = max(self._skew.max_age_ms, int(self._timeouts.max_duration_s * 1000))
        if self._rotated_at_ms is not None and now - self._rotated_at_ms < attach_for_ms:
            self._signer_certificate = self.identity.certificate
        if rotated:
            # Started under another identity key than the state was written under: the key was rotated (§17.8). The
            # sessions are not restored — the peers hold them under the old certificate, and nothing sealed or signed
            # with the new key would verify in them.
            for name in sessions:
                self._emit("session_closed", session_id=name, reason="not restored: the identity key was rotated")
                await self._delete("sessions", name, strict=True)  # none may be restored at the next start either
            sessions = {}
        if recorded is None or rotated:
            # After the sessions' records are gone: a crash before this write finds the rotation again. A state written
            # before this record existed cannot tell a rotation; it is recorded from now on.
            record: dict[str, Any] = {"v": RECORD_VERSION, "key": key}
            if self._rotated_at_ms is not None:
                record["rotated_at_ms"] = self._rotated_at_ms
            await self._put("identity", IDENTITY_RECORD, record)
        for name, r in sessions.items():
            try:
                restored = self._session_from_record(r, now)
            except ParleyError as error:
                self._emit("session_closed", session_id=name, reason=f"not restored: {error.code}")
                await self._delete("sessions", name)
                continue
            self._register(restored, announce=False)
        for name, r in receipts.items():
            try:
                if int(r["ts"]) < now - self._skew.max_age_ms - self._skew.max_future_ms:
                    await self._delete("receipts", name)
                    continue
                digest = bytes.fromhex(r["hash"])
                self._receipts[digest] = r
                self._mark(bytes.fromhex(r["session"]), int(r["counter"]), digest)
            except (KeyError, ValueError) as error:
                raise StateError("state_corrupt", f"receipt record {name} does not parse") from error
        if len(self._receipts) >= MAX_RECEIPTS:
            # A full store may have dropped receipts before the restart: the oldest receipt kept stands for the newest
            # dropped (§17.4). Every receipt kept either outlived that drop (its envelope no older than the dropped
            # ones) or was signed after it, so anything dropped is within the future skew of the oldest kept.
            try:
                oldest = min(_receipt_time(r) for r in self._receipts.values())
            except (KeyError, ValueError, DecodeError) as error:
                raise StateError("state_corrupt", "a receipt record does not parse") from error
            self._forgotten_until = oldest if self._forgotten_until is None else max(self._forgotten_until, oldest)
        for name, r in inbox.items():
            try:
                entry = _InboxEntry.from_record(r)
                payload = decode_payload(entry.payload, entry.envelope.timestamp_ms)
            except (KeyError, ValueError, ParleyError) as error:
                raise StateError("state_corrupt", f"inbox record {name} does not parse") from error
            if entry.message_hash in self._receipts:  # acked before the crash; the deletion was lost
                await self._delete("inbox", name)
                continue
            self._mark(entry.session_id, entry.counter, entry.message_hash)
            self._unacked[entry.message_hash] = entry
            session = self._sessions.get(entry.session_id)
            if entry.sender_certificate is None and session is not None:  # a record written before the certificate was kept
                entry.sender_certificate = session.peer_certificate
            self._app.put_nowait(Message(self, entry, payload, entry.sender_certificate, redelivered=True))
        for session in self._sessions.values():
            session.prune_receive_keys()
        for name, r in outbox.items():
            try:
                sent = _OutboxEntry.from_record(r)
            except (KeyError, ValueError, ParleyError) as error:
                raise StateError("state_corrupt", f"outbox record {name} does not parse") from error
            self._outbox[sent.id] = sent
            self._by_hash[sent.message_hash] = sent.id
        # Sends that waited for a session (a directory of an earlier release has none). Sealing one writes its outbox
        # record (same name) durably, then deletes this one: finding both, the process died in between, and the
        # sealed one stands — its envelope may have been relayed, and a second seal would be a second message to
        # the recipient (another counter, another hash). Finding only this one, nothing of it left the process.
        for name, r in unsealed.items():
            if name in self._outbox:
                await self._delete("unsealed", name)
                continue
            try:
                held = _UnsealedEntry.from_record(r)
            except (KeyError, ValueError, TypeError, ParleyError) as error:
                raise StateError("state_corrupt", f"unsealed record {name} does not parse") from error
            if held.id != name:
                raise StateError("state_corrupt", f"unsealed record {name} names another send")
            self._unsealed[held.id] = held  # resumed (a new handshake) once the agent is connected

    def _mark(self, session_id: bytes, counter: int, digest: bytes) -> None:
        """Replays a durable record into the replay window and the message-hash cache."""
        self._cache.add(digest)
        session = self._sessions.get(session_id)
        if session is not None:
            session.mark_accepted(counter, digest)

    def _session_record(self, s: Session) -> dict[str, Any]:
        send, receive = s.export_keys()
        top, ring = s.window.export()
        return {
            "v": RECORD_VERSION,
            "id": s.id.hex(),
            "role": s.role,
            "peer_certificate": b64url_encode(s.peer_certificate.SerializeToString()),
            "handshake_hash": s.handshake_hash.hex(),
            "threshold": s.rekey_threshold,
            "created_at_ms": s.created_at_ms,
            "last_activity_ms": s.last_activity_ms,
            "send_reserved": self._reserved.get(s.id, -1),
            "send": [[e, k.hex()] for e, k in send[-1:]],  # a sender needs only its newest epoch key
            "receive": [[e, k.hex()] for e, k in receive],
            "window_top": top,
            "window_ring": ring,
        }

    def _session_from_record(self, r: dict[str, Any], now: int) -> Session:
        try:
            cert = decode_certificate(b64url_decode(r["peer_certificate"]))
            peer = verify_certificate(cert, self._trust, now)  # revocation is checked per message
            threshold = int(r["threshold"])
            reserved = int(r["send_reserved"])
            session = Session(
                session_id=bytes.fromhex(r["id"]),
                role=str(r["role"]),
                local=self.identity,
                peer=peer,
                peer_certificate=cert,
                # The agent's (live) trust bundle: the peer's issuer is looked up in it at every open (§8.1
                # step 2, §13). Records never held a copy of the issuer's not_after_ms; none is taken here.
                trust_bundle=self._trust,
                handshake_hash=bytes.fromhex(r["handshake_hash"]),
                send=DirectionKeys.from_export(threshold, [(int(e), bytes.fromhex(k)) for e, k in r["send"]]),
                receive=DirectionKeys.from_export(threshold, [(int(e), bytes.fromhex(k)) for e, k in r["receive"]]),
                created_at_ms=int(r["created_at_ms"]),
                send_counter=reserved + 1,  # §17: resume after the reservation, never lower
                window=ReplayWindow.from_export(int(r["window_top"]), [int(b) for b in r["window_ring"]]),
                cache=self._cache,
                skew=self._skew,
                revocations=self._revocations,
            )
        except (KeyError, ValueError, TypeError) as error:
            raise StateError("state_corrupt", "session record does not parse") from error
        session.last_activity_ms = int(r.get("last_activity_ms", session.created_at_ms))
        self._reserved[session.id] = reserved
        return session

    async def _put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        assert self._store is not None
        store = self._store
        async with self._io:
            try:
                await asyncio.to_thread(store.put, kind, name, record)
            except StateError as error:
                self._emit("state_error", code=error.code, detail=error.detail)
                raise

    async def _delete(self, kind: str, name: str, *, strict: bool = False) -> None:
        """Deletes a record; a failure is a ``state_error`` event, and raised too when ``strict``."""
        assert self._store is not None
        store = self._store
        async with self._io:
            try:
                await asyncio.to_thread(store.delete, kind, name)
            except StateError as error:
                self._emit("state_error", code=error.code, detail=error.detail)
                if strict:
                    raise

    def _restore_reserved(self, session: Session, previous: int) -> None:
        """Puts back a reservation mark that was not written (only for a session still held: no entry outlives it)."""
        if session.id not in self._sessions:
            self._reserved.pop(session.id, None)
        elif previous < 0:
            self._reserved.pop(session.id, None)
        else:
            self._reserved[session.id] = previous

    async def _save_session(self, session: Session) -> None:
        if session.closed:
            return
        async with self._io:
            if session.closed:  # closed while this waited for the lock: its keys are gone, nothing to save
                return
            record = self._session_record(session)  # taken under the lock: the newest state wins
            assert self._store is not None
            try:
                await asyncio.to_thread(self._store.put, "sessions", session.id.hex(), record)
            except StateError as error:
                self._emit("state_error", code=error.code, detail=error.detail)
                raise

    def _save_session_later(self, session: Session) -> None:
        async def save() -> None:
            with contextlib.suppress(ParleyError):
                await self._save_session(session)

        self._spawn(save())

    # =========================================================================================
    # Events and tasks

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        event = Event(kind, fields)
        if kind == "security":
            _log.warning("parley security event at %s: %s", self.agent_id, fields)
        elif kind == "state_error":
            _log.error("parley state error at %s: %s", self.agent_id, fields)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a listener's failure must not break the agent
                _log.exception("on_event listener failed")

    def _security(self, stage: str, code: str, peer: str | None = None, session_id: bytes | None = None, detail: str = "") -> None:
        self._emit("security", stage=stage, code=code, peer=peer, session_id=session_id.hex() if session_id else None, at_ms=now_ms(), detail=detail)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _durable(self, coro: Any) -> asyncio.Task[Any]:
        """Runs durable bookkeeping already decided — a settled send's record deletion and the report that goes with it,
        the deletion of a record nothing may restore — in a task of its own that close() does not cancel but waits for
        (:meth:`_finish_bookkeeping`): a graceful close never leaves behind what this process already decided (a crash
        still may: the next start then decides). Await it through :func:`asyncio.shield`."""
        task = asyncio.get_running_loop().create_task(coro)
        self._bookkeeping.add(task)
        task.add_done_callback(self._bookkeeping_done)
        return task

    def _bookkeeping_done(self, task: asyncio.Task[Any]) -> None:
        self._bookkeeping.discard(task)
        if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), ParleyError):
            _log.error("parley state bookkeeping failed", exc_info=task.exception())

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("parley background task failed", exc_info=task.exception())

    def _fire(self, conn: GatewayConnection, kind: str, item: Any, what: str) -> None:
        """Sends an item without waiting; a refusal is reported as an event."""
        self._report_refusal(conn.send(kind, item), what)

    def _reply(self, kind: str, item: Any, what: str, conn: GatewayConnection | None, delivery_id: int) -> None:
        """Sends a receipt or session reject on the current stream and acks the delivery ``(conn, delivery_id)``
        it answers: carried by the item (quiet, one frame, §10.3) when that delivery came on the current stream
        and the gateway offers it. Not awaited: a lost reply is sent again when the envelope comes again."""
        current = self._conn
        if current is None or not current.is_open:
            self._gateway_ack(conn, delivery_id)
            return
        carried = delivery_id if conn is current and delivery_id > 0 else 0
        self._report_refusal(current.send_reply(kind, item, carried), what)
        if carried == 0:
            self._gateway_ack(conn, delivery_id)

    def _report_refusal(self, future: asyncio.Future[Any], what: str) -> None:
        """Reports the gateway's refusal of an item sent without waiting as a ``gateway_refused`` event."""

        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                return
            error = f.exception()
            if isinstance(error, GatewayError) and error.code not in ("unavailable", "cancelled"):
                self._emit("gateway_refused", item=what, code=error.code, detail=error.detail)

        future.add_done_callback(done)

    def _check_usable(self) -> None:
        if self._closed:
            raise DeliveryError("cancelled", "agent closed")
        if self._fatal is not None:
            raise self._fatal

    # =========================================================================================
    # Connection

    def _attach(self, conn: GatewayConnection) -> None:
        if self._closed:
            self._spawn(conn.close())
            return
        self._conn = conn
        conn.start(self._on_delivery)
        self._live.set()
        self._emit("connected", gateway_id=conn.gateway_id, mailbox_depth=int(conn.welcome.mailbox_depth))
        for entry in list(self._outbox.values()):  # §17 sender 3: resend after every reconnect
            self._spawn(self._relay(entry))
        for peer in {e.to for e in self._unsealed.values()}:  # sends waiting for a session (also restored ones)
            self._establish_later(peer)
        self._spawn(self._watch(conn))

    async def _watch(self, conn: GatewayConnection) -> None:
        end: StreamEnd = await conn.ended
        if self._conn is conn:
            self._conn = None
            self._live.clear()
        if self._closed:
            return
        if self._fatal is not None:
            return
        self._emit("disconnected", code=end.code, detail=end.message, go_away=end.go_away)
        await conn.close()
        if end.go_away and end.code in FATAL_GO_AWAY:
            self._stop(GatewayError(end.code if end.code in ("revoked", "expired", "replaced") else "unavailable", f"gateway sent go_away {end.code!r}: {end.message}"))  # type: ignore[arg-type]
            return
        if self._reconnect is None:
            self._stop(GatewayError("unavailable", "gateway stream ended and reconnection is off"))
            return
        attempt = 0
        while not self._closed:
            attempt += 1
            delay = _backoff_delay(self._reconnect, attempt)
            self._emit("reconnecting", attempt=attempt, delay_s=round(delay, 3))
            await asyncio.sleep(delay)
            if self._closed:
                return
            try:
                fresh = await GatewayConnection.open(address=self._gateway, identity=self.identity, expected_gateway_id=self._expected_gateway_id, tls=self._tls, timeout=self._auth_timeout)
            except GatewayError as error:
                if error.code in FATAL_AUTH:
                    self._emit("disconnected", code=error.code, detail=error.detail, go_away=False)
                    self._stop(error)
                    return
                _log.info("parley: reconnection attempt %d failed: %s", attempt, error)
                continue
            except Exception as error:  # anything else (a TLS file that cannot be read, …) is transient: this loop never dies
                _log.warning("parley: reconnection attempt %d failed: %s: %s", attempt, type(error).__name__, error)
                continue
            self._attach(fresh)
            return

    def _stop(self, error: ParleyError) -> None:
        """Stops for good: pending sends fail with ``error``, ``messages()`` raises it, the stream closes."""
        if self._fatal is not None:
            return
        self._fatal = error
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._live.clear()
            self._spawn(conn.close())
        waiting: list[_OutboxEntry | _UnsealedEntry] = [*self._outbox.values(), *self._unsealed.values()]
        for entry in waiting:
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_exception(error)
                entry.waiter.exception()
        for fut in self._initiations.values():
            if not fut.done():
                fut.set_exception(error)
                fut.exception()
        for pending in self._initiating.values():  # a handshake waiting for its step 2 ends now (its keys wiped)
            if not pending.waiter.done():
                pending.waiter.set_exception(error)
                pending.waiter.exception()
        self._app.put_nowait(_END)

    async def _wait_live(self, deadline: float) -> GatewayConnection:
        while True:
            self._check_usable()
            conn = self._conn
            if conn is not None and conn.is_open:
                return conn
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GatewayError("unavailable", "no gateway connection")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._live.wait(), remaining)

    # =========================================================================================
    # Sessions (handshakes through the gateway, both roles)

    def _register(self, session: Session, *, announce: bool = True) -> None:
        self._sessions[session.id] = session
        # Bounded per peer (§12): the oldest of this peer's sessions beyond the bound are closed, never the new one.
        mine = [s for s in self._sessions.values() if s.peer_id == session.peer_id and s is not session]
        if len(mine) >= MAX_SESSIONS_PER_PEER:
            mine.sort(key=lambda s: s.created_at_ms)
            for old in mine[: len(mine) - MAX_SESSIONS_PER_PEER + 1]:
                self._forget_session(old, "too many sessions with this peer")
                self._durable(self._delete("sessions", old.id.hex()))
        current = self._current.get(session.peer_id)
        # The newest session carries outgoing traffic; older ones keep receiving until they end.
        if current is None or current.closed or current.created_at_ms <= session.created_at_ms:
            self._current[session.peer_id] = session
        if announce:
            self._emit("session_established", peer=session.peer_id, session_id=session.id_hex, role=session.role)

    async def _close_session(self, session: Session, reason: str) -> None:
        self._forget_session(session, reason)
        await asyncio.shield(self._durable(self._delete("sessions", session.id.hex())))

    def _forget_session(self, session: Session, reason: str) -> None:
        """Closes a session and drops it from memory (its durable record is the caller's to delete)."""
        held = self._sessions.pop(session.id, None) is session
        if self._current.get(session.peer_id) is session:
            del self._current[session.peer_id]
        self._reserved.pop(session.id, None)
        self._seal_locks.pop(session.id, None)
        if not session.closed or held:  # held: a session its own peer check closed (§8.4) is announced here
            session.close()
            self._emit("session_closed", peer=session.peer_id, session_id=session.id_hex, reason=reason)

    async def _session_for(self, peer: str, deadline: float) -> Session:
        """The session used to send to ``peer``, establishing one (as initiator) when there is none."""
        current = self._current.get(peer)
        if current is not None and not current.closed:
            try:
                current.check_peer(now_ms())  # nothing more is sealed to a revoked or expired peer, or one whose issuer left the bundle (§8.4)
            except IdentityError as error:
                if error.code in CLOSING_CODES:
                    await self._close_session(current, f"peer {error.code}")
                raise
            return current
        running = self._initiations.get(peer)
        if running is None:
            running = asyncio.get_running_loop().create_future()
            self._initiations[peer] = running
            self._spawn(self._initiate(peer, running, deadline))
        return await asyncio.shield(running)

    async def _initiate(self, peer: str, result: asyncio.Future[Session], deadline: float) -> None:
        try:
            session = await self._handshake_with(peer, deadline)
            if not result.done():
                result.set_result(session)
        except BaseException as error:
            failure: ParleyError
            if isinstance(error, ParleyError):
                failure = error
            elif isinstance(error, Exception):
                # A programming error (a bug here, a test hook or a dependency breaking its contract): logged, and
                # ``internal`` — retried with backoff until the sends waiting expire, as @parley/client's
                # ClientError.from(error) makes it (not a permanent handshake failure) —, never an unexplained
                # handshake_failed.
                _log.error("parley: the handshake with %s failed with an unexpected error: %s: %s", peer, type(error).__name__, error, exc_info=error)
                failure = SessionError("internal", f"the handshake with {peer!r} failed: {type(error).__name__}: {error}")
            else:
                failure = SessionError("handshake_failed", "handshake cancelled")
            if not result.done():
                result.set_exception(failure)
                result.exception()
        finally:
            if self._initiations.get(peer) is result:
                del self._initiations[peer]

    def _waiting_deadline(self, peer: str) -> float:
        """The latest expiry (``time.monotonic()`` scale) of the sends waiting for a session with ``peer`` — unsealed
        ones, and sealed ones being resealed —; ``-inf`` when none waits. At most a message lifetime from now."""
        latest = max((e.expires_at_ms for e in self._unsealed.values() if e.to == peer), default=None)
        resealing = max((e.expires_at_ms for e in self._outbox.values() if e.to == peer and e.resealing), default=None)
        if resealing is not None and (latest is None or resealing > latest):
            latest = resealing
        if latest is None:
            return float("-inf")
        return time.monotonic() + min(latest - now_ms(), self._skew.max_age_ms) / 1000

    async def _handshake_with(self, peer: str, deadline: float) -> Session:
        """Runs handshakes (one at a time) until one completes or the deadline passes — extended to the latest expiry
        of the sends waiting for a session with ``peer`` —, retrying with backoff what a later attempt may overcome (a
        timeout, a stream drop, a transient refusal, a step 2 that did not verify for want of fresh revocation data or
        was garbled); any other failure is raised at once.

        A step 1 the gateway answers ``DELIVERED`` waits ``handshake_timeout`` for its step 2. One it answers
        ``QUEUED`` was stored for an offline peer, which answers when it connects and its mailbox drains: it waits
        until the latest expiry of the sends waiting on it (none: ``handshake_timeout``, as before), sending the same
        step 1 again meanwhile at the resend interval, doubling.

        A step 1 refused ``policy_denied`` — the gateway never saw the peer — is, when the agent follows its registry,
        sent again as it is with the peer's verified registry certificate attached, and so are its resends
        (``parley.directory``): the lookup failing for good is ``policy_denied``, for now (the registry unreachable)
        a failure retried like the others."""
        last: ParleyError = SessionError("handshake_failed", f"handshake with {peer!r} timed out")
        attempt = 0
        while True:
            until = max(deadline, self._waiting_deadline(peer))
            if time.monotonic() >= until:
                raise last
            if attempt > 0:  # no tight loop on a failure: the resend interval, doubling (§17.2 item 6)
                await asyncio.sleep(max(0.0, min(self._retry_delay(attempt), until - time.monotonic())))
                until = max(deadline, self._waiting_deadline(peer))
                if time.monotonic() >= until:
                    raise last
            attempt += 1
            conn = await self._wait_live(until)
            handshake, frame1 = InitiatorHandshake.start(self._config, peer)
            waiter: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
            self._initiating[handshake.session_id] = _Initiating(handshake, waiter)
            queued = False
            sid = handshake.session_id
            try:
                started = time.monotonic()
                # A policy refusal is definite: raised as is — unless the gateway never saw the peer and its registry
                # certificate can be attached (a first contact): then the same step 1 goes again with it.
                accepted = await self._first_contact.relay(
                    peer,
                    sid,
                    lambda certificate: conn.send("handshake", frame1, certificate),
                    lambda: sid in self._initiating and not waiter.done() and not self._closed and self._fatal is None,
                )
                queued = accepted.status == gateway_pb2.DELIVERY_STATUS_QUEUED
                limit = time.monotonic() + self._handshake_timeout
                if not queued:
                    limit = min(limit, until)
                # Stored for an offline peer: its step 2 comes when it connects. Waited for until the latest expiry of
                # the sends waiting on it (asked again as the time comes: sends made meanwhile extend it), never
                # longer than a message lifetime after step 1 (§5.4).
                # Meanwhile the same step 1 (byte-identical: same session id, same ephemeral) is sent again at the
                # resend interval, doubling: the stored one or its step 2 may be lost (the responder dropped it, the
                # gateway refused or lost the step 2). A responder drops a copy whose session id it holds (§5.1), so
                # copies start at most one responder handshake; one whose handshake for it failed answers with a new
                # step 2, which this handshake (the same state) takes as any other.
                cap = started + self._skew.max_age_ms / 1000
                resends = 0
                next_resend = started + self._retry_delay(1)
                while True:
                    if queued:
                        limit = max(limit, min(self._waiting_deadline(peer), cap))
                    wake = min(limit, next_resend) if queued else limit
                    try:
                        return await asyncio.wait_for(asyncio.shield(waiter), max(0.0, wake - time.monotonic()))
                    except asyncio.TimeoutError:
                        now = time.monotonic()
                        if not queued or (now >= limit and min(self._waiting_deadline(peer), cap) <= now):
                            raise
                        if now >= next_resend:  # the wait goes on
                            resends += 1
                            next_resend = now + self._retry_delay(resends + 1)
                            current = self._conn
                            if current is not None and current.is_open:
                                # With the recipient certificate its first copy carried, if it carried one.
                                self._report_refusal(current.send("handshake", frame1, self._first_contact.attached(sid)), "handshake step 1 (sent again)")
            except asyncio.TimeoutError:
                last = SessionError("handshake_failed", f"handshake with {peer!r} timed out" + (": its step 1 waits for the offline peer, and no message for it waits any more" if queued else ""))
            except ParleyError as error:
                # A refusal of step 1, or a step 2 that did not verify: only what retrying cannot change is raised at
                # once (or the agent stopped); anything else is tried again.
                if error.code in PERMANENT_HANDSHAKE_FAILURES or self._fatal is not None or self._closed:
                    raise
                last = error
            finally:
                self._initiating.pop(handshake.session_id, None)
                self._first_contact.handshake_over(handshake.session_id)
                if not waiter.done():
                    handshake.abort()
                    waiter.cancel()

    async def _on_frame(self, conn: GatewayConnection, frame: Any) -> None:
        sid = bytes(frame.session_id)
        step = frame.step
        if step == 1:
            if sid in self._responding or sid in self._sessions:
                self._emit("duplicate", item="handshake", peer=frame.sender_id, detail="step 1 of a known session")
                return
            peer = str(frame.sender_id)[:128]
            if len(self._sessions) >= MAX_SESSIONS:
                self._security("handshake", "rate_limited", peer, sid if len(sid) == 16 else None, f"this agent holds {MAX_SESSIONS} sessions")
                return
            if len(self._responding) >= MAX_PENDING_RESPONDERS or sum(1 for r in self._responding.values() if r.handshake.peer_id == peer) >= MAX_RESPONDERS_PER_PEER:
                self._security("handshake", "rate_limited", peer, sid if len(sid) == 16 else None, "too many handshakes in progress")
                return
            if self._accept_handshake is not None:
                try:
                    accepted = bool(self._accept_handshake(peer))
                except Exception:
                    accepted = False
                if not accepted:
                    self._security("handshake", "policy_denied", peer, sid if len(sid) == 16 else None, "refused by accept_handshake")
                    return
            try:
                handshake, frame2 = ResponderHandshake.accept(self._config, frame)
            except ParleyError as error:
                self._security("handshake", error.code, str(frame.sender_id)[:128], sid if len(sid) == 16 else None, error.detail)
                return
            timer = asyncio.get_running_loop().call_later(self._handshake_timeout, lambda: self._spawn(self._responder_failed(sid, "handshake timed out")))
            self._responding[sid] = _Responding(handshake, timer)
            self._fire(conn, "handshake", frame2, "handshake step 2")
        elif step == 2:
            pending = self._initiating.get(sid)
            if pending is None or pending.waiter.done():
                self._emit("duplicate", item="handshake", peer=frame.sender_id, detail="step 2 of no handshake in progress")
                return
            try:
                frame3, session = pending.handshake.receive(frame)
            except ParleyError as error:
                self._security("handshake", error.code, pending.handshake.peer_id, sid, error.detail)
                pending.waiter.set_exception(error)
                pending.waiter.exception()
                return
            self._fire(conn, "handshake", frame3, "handshake step 3")  # before any envelope of the session
            self._register(session)
            with contextlib.suppress(ParleyError):
                await self._save_session(session)
            if not pending.waiter.done():
                pending.waiter.set_result(session)
        elif step == 3:
            responding = self._responding.pop(sid, None)
            if responding is None:
                self._emit("duplicate", item="handshake", peer=frame.sender_id, detail="step 3 of no handshake in progress")
                return
            responding.timer.cancel()
            self._release_held(responding)
            try:
                session = responding.handshake.receive(frame)
            except ParleyError as error:
                self._security("handshake", error.code, responding.handshake.peer_id, sid, error.detail)
                await self._reject_held(responding)
                return
            self._register(session)
            # §17 recipient 4: processed in arrival order right after step 3 (before any envelope queued behind them),
            # then those beyond the 64 it held.
            later = [d for d in self._deferred if d.waiting == "handshake" and bytes(d.envelope.session_id) == sid]
            if later:
                self._set_deferred([d for d in self._deferred if not (d.waiting == "handshake" and bytes(d.envelope.session_id) == sid)])
            if responding.held or later:
                self._envelopes.put_front(responding.held + later)
            with contextlib.suppress(ParleyError):
                await self._save_session(session)
        else:
            self._security("handshake", "malformed", None, None, "handshake frame with an unknown step")

    def _frame_waits_for_revocation(self, frame: Any) -> bool:
        """Whether a handshake frame must wait for fresh revocation data (§17.3 item 7): a step 1 (answered, its step 3
        would fail ``revocation_stale`` and the envelopes its initiator seals at once would be refused), or the step 3
        of a handshake this agent responds to (its certificate check would fail and the handshake be abandoned), while
        this agent's revocation data cannot answer for the sender."""
        if self._revocations is None or frame.step not in (1, 3):
            return False
        if frame.step == 3 and bytes(frame.session_id) not in self._responding:
            return False
        try:
            check_revocation(self._revocations, str(frame.sender_id), bytes(16), now_ms())
        except IdentityError as error:
            return error.code == "revocation_stale"
        return False

    def _frame_waits_behind(self, frame: Any) -> bool:
        """Whether a step 1, or the step 3 of a handshake this agent responds to, must wait behind frames of its sender
        that wait already (in arrival order, §17.3 item 7): the data may have become fresh since, and processing it
        before them would answer a step 1 its initiator gave up on after the one it waits on, or take a responder slot
        ahead of them (as @parley/client's)."""
        if not self._deferred_frames:
            return False
        if frame.step != 1 and not (frame.step == 3 and bytes(frame.session_id) in self._responding):
            return False
        sender = str(frame.sender_id)
        return any(d.key[2] == sender for d in self._deferred_frames)

    def _defer_frame(self, conn: GatewayConnection, delivery_id: int, frame: Any) -> bool:
        """Leaves a handshake frame unacknowledged (the gateway keeps it: a crash loses nothing) and keeps it to be
        processed once the revocation data is fresh; a step 3's handshake is held meanwhile — also across a stream's
        end, until the agent closes: the next stream delivers the frame again, and that copy takes the place of the
        earlier one (acked). A later copy of a step 3 waiting takes its place the same way. A step 1 replaces every
        step 1 of its sender that waits (a copy of it, a queued step 1 sent again, or the step 1 of a handshake its
        initiator gave up on: an initiator has one handshake in flight per peer), each acked — else the dead ones,
        processed first, would take the per-peer responder slots and the live one be dropped ``rate_limited``.

        Beyond :data:`MAX_DEFERRED_FRAMES_PER_SENDER` or :data:`MAX_DEFERRED_FRAMES`, a step 1 is acked and dropped
        (``rate_limited``: nothing was answered, its initiator retries it after its timeout; left unacked it would hold
        a slot of the gateway's in-flight window until the stream ends), and a step 3 takes the place of the oldest
        waiting step 1 — or, when none waits, is to be processed at once. As @parley/client's handshakes.

        Returns whether the frame could not be kept and is to be processed now."""
        sid = bytes(frame.session_id)
        sender = str(frame.sender_id)
        key = (int(frame.step), sid, sender)

        def report(code: str, detail: str, d_sid: bytes = sid, d_sender: str = sender) -> None:
            self._security("handshake", code, d_sender[:128], d_sid if len(d_sid) == 16 else None, detail)

        replaced = False
        if frame.step == 1:
            older = [d for d in self._deferred_frames if d.key[0] == 1 and d.key[2] == sender]
            if older:
                self._deferred_frames = [d for d in self._deferred_frames if d not in older]
                for d in older:
                    self._gateway_ack(d.conn, d.delivery_id)
                replaced = True
        else:
            for i, d in enumerate(self._deferred_frames):
                if d.key == key:
                    self._deferred_frames[i] = _DeferredFrame(conn, delivery_id, frame, key)
                    self._gateway_ack(d.conn, d.delivery_id)
                    return False
        full = len(self._deferred_frames) >= MAX_DEFERRED_FRAMES
        if full or sum(1 for d in self._deferred_frames if d.key[2] == sender) >= MAX_DEFERRED_FRAMES_PER_SENDER:
            oldest = next((d for d in self._deferred_frames if d.key[0] == 1), None) if frame.step == 3 and full else None
            if oldest is None:
                if frame.step == 3:
                    return True
                self._gateway_ack(conn, delivery_id)
                report("rate_limited", "too many handshake frames wait for fresh revocation data: step 1 dropped (its initiator retries it)")
                return False
            self._deferred_frames.remove(oldest)
            self._gateway_ack(oldest.conn, oldest.delivery_id)
            report("rate_limited", "too many handshake frames wait for fresh revocation data: a waiting step 1 is dropped for a step 3 (its initiator retries it)", oldest.key[1], oldest.key[2])
        if frame.step == 3:
            responding = self._responding.get(sid)
            if responding is not None and not responding.waits:
                responding.timer.cancel()
                responding.waits = True
        self._deferred_frames.append(_DeferredFrame(conn, delivery_id, frame, key))
        if not replaced:  # reported once per sender's handshake: a newer step 1 replacing a waiting one was with it
            report("revocation_stale", f"revocation data is stale: step {frame.step} is left unacknowledged and processed once it is fresh again")
        return False

    def _retry_frames(self) -> None:
        """Processes the deferred handshake frames whose sender can be checked now (one pass at a time)."""
        if self._deferred_frames and not self._retrying_frames and not self._closed:
            self._retrying_frames = True
            self._spawn(self._process_deferred_frames())

    async def _process_deferred_frames(self) -> None:
        """Processes, in arrival order, the deferred frames whose sender can be checked now — a sender's frames in its
        order: one that still waits keeps the later ones of its sender waiting. A frame whose stream ended is kept
        (its handshake held) until its copy on the next stream takes its place, or is processed as it is once its
        sender can be checked (its ack is then the copy's, answered as a duplicate); a step 1 only while a stream is
        up to carry its step 2."""
        try:
            blocked: set[str] = set()
            for d in list(self._deferred_frames):
                if self._closed:
                    return
                if d not in self._deferred_frames:
                    continue  # replaced by a later copy: the next pass takes that one
                sender = d.key[2]
                if sender in blocked:
                    continue
                if self._frame_waits_for_revocation(d.frame):
                    blocked.add(sender)
                    continue
                conn = d.conn
                if not conn.is_open:
                    current = self._conn
                    if d.key[0] == 1 and (current is None or not current.is_open):
                        blocked.add(sender)  # its step 2 could not go out: waits for a stream (and its copy on it)
                        continue
                    conn = current if current is not None else conn
                self._deferred_frames.remove(d)
                try:
                    await self._on_frame(conn, d.frame)
                except Exception:
                    _log.exception("parley: handshake frame handling failed")
                finally:
                    self._gateway_ack(d.conn, d.delivery_id)
                    self._release_responder(d)
        finally:
            self._retrying_frames = False

    def _release_responder(self, d: _DeferredFrame) -> None:
        """Re-arms the timeout of the handshake a deferred step 3 held, once none of its step 3 waits any more."""
        sid = d.key[1]
        responding = self._responding.get(sid)
        if d.key[0] != 3 or responding is None or not responding.waits or any(x.key == d.key for x in self._deferred_frames) or self._closed:
            return
        responding.waits = False
        responding.timer = asyncio.get_running_loop().call_later(self._handshake_timeout, lambda: self._spawn(self._responder_failed(sid, "handshake timed out")))

    async def _responder_failed(self, sid: bytes, reason: str) -> None:
        responding = self._responding.pop(sid, None)
        if responding is None:
            return
        responding.handshake.abort()
        self._release_held(responding)
        self._security("handshake", "handshake_failed", responding.handshake.peer_id, sid, reason)
        await self._reject_held(responding)

    def _release_held(self, responding: _Responding) -> None:
        """Its held envelopes leave the bytes held (they are opened, answered or taken again now)."""
        self._held_bytes -= sum(d.size for d in responding.held)

    async def _reject_held(self, responding: _Responding) -> None:
        for d in responding.held:
            self._answer_unknown_session(d.envelope, d.conn, d.delivery_id)
        # Deferred ones beyond its 64 are answered the same way when they are tried again (no handshake any more).

    # =========================================================================================
    # Sending

    async def _seal(self, session: Session, payload: bytes, ts: int) -> Any:
        """Seals under the session's lock, reserving counters durably first (§17 sender 1)."""
        lock = self._seal_locks.setdefault(session.id, asyncio.Lock())
        async with lock:
            counter = session.allocate_counter()
            previous = self._reserved.get(session.id, -1)
            if counter > previous:
                self._reserved[session.id] = counter + RESERVE_BLOCK
                try:
                    await self._save_session(session)
                except StateError:
                    # §17.2 item 1: fail closed — nothing is sealed and the agent stops (it resumes from the store after a restart).
                    self._restore_reserved(session, previous)
                    error = StateError("state_error", "could not reserve send counters: nothing was sealed, the agent stopped")
                    self._stop(error)
                    raise error from None
                except BaseException:
                    self._restore_reserved(session, previous)  # not a failed write: nothing sealed
                    raise
                if session.closed:  # closed while the reservation waited for the lock (nothing was saved): nothing sealed
                    self._reserved.pop(session.id, None)
                    raise SessionError("unknown_session", "session is closed")
            sealed = session.seal_at(counter, payload, ts)
            if sealed.send_epoch_moved:
                self._save_session_later(session)  # the old epoch key is wiped on disk too
            return sealed

    async def _relay(self, entry: _OutboxEntry) -> None:
        """Relays an outbox entry's envelope (same bytes every time); only a permanent refusal of the item settles it.

        A stream that ends before the answer refused nothing (§17.2 item 2): the entry stays and goes out
        again after the reconnect, or from its durable record after a restart when the agent stopped.
        """
        conn = self._conn
        digest = entry.message_hash
        # One relay of an envelope at a time (as @parley/client's outbox); a resealed envelope is another one.
        if conn is None or not conn.is_open or entry.resealing or entry.in_flight == digest:
            return
        interval = min(self._resend.max_s, self._resend.initial_s * 2 ** min(entry.resends, 16))
        entry.next_resend_at = time.monotonic() + interval
        entry.resends += 1
        entry.in_flight = digest
        try:
            accepted = await conn.send("envelope", entry.envelope)
        except GatewayError as error:
            if not conn.is_open or self._fatal is not None or self._closed:
                return  # the stream ended (or the agent stopped): no refusal of the item
            if entry.message_hash != digest:
                return  # resealed meanwhile: the answer is about the envelope it replaced
            if error.code in PERMANENT_REFUSALS:
                if error.code == "policy_denied":  # the gateway does not say why: the message names what it may be
                    refused = route_refused(entry.to, error)
                    refused.__cause__ = error
                    error = refused
                await self._settle(entry, error=error)
            return  # rate_limited, quota_exceeded, unavailable, …: resent at its next interval
        finally:
            if entry.in_flight == digest:
                entry.in_flight = None
        if entry.message_hash != digest:
            return  # resealed meanwhile: the answer is about the envelope it replaced
        if accepted.status == gateway_pb2.DELIVERY_STATUS_QUEUED:
            # §17.2 item 3: the gateway holds a QUEUED envelope durably: resent after a reconnect, not on a timer.
            entry.next_resend_at = float("inf")

    async def _settle(self, entry: _OutboxEntry, *, receipt: Receipt | None = None, error: ParleyError | None = None) -> None:
        """Ends a sealed send. A failure ("not delivered") is said only once its record is deleted durably: a record
        left behind (a crash, or a delete that failed) is restored at the next start and its envelope relayed again,
        which may deliver it. When that delete fails (a ``state_error`` event), nothing is said in this process: the
        record stands, and the next start decides. A receipt is said first (a record left behind only brings the
        same receipt again)."""
        if self._outbox.pop(entry.id, None) is None:
            return
        if self._by_hash.get(entry.message_hash) == entry.id:
            del self._by_hash[entry.message_hash]
        # Decided: the deletion and the report go on whatever happens to the task that decided (close() waits for them).
        await asyncio.shield(self._durable(self._settled(entry, receipt, error)))

    async def _settled(self, entry: _OutboxEntry, receipt: Receipt | None, error: ParleyError | None) -> None:
        """:meth:`_settle` of an entry taken out of the outbox: its record deleted, its outcome reported."""
        if receipt is None:
            try:
                await self._delete("outbox", entry.id, strict=True)
            except StateError:
                return
        waiter = entry.waiter
        if waiter is not None and not waiter.done():
            if receipt is not None:
                waiter.set_result(receipt)
            else:
                waiter.set_exception(error or DeliveryError("internal", "send failed"))
                waiter.exception()
        self._emit("send_settled", id=entry.send_id, message_hash=entry.message_hash.hex(), peer=entry.to, code="ok" if receipt is not None else code_of(error or Exception()), receipt=receipt)
        if receipt is not None:
            await self._delete("outbox", entry.id)

    # Sends waiting for a session -----------------------------------------------------------------

    def _establish_later(self, peer: str) -> None:
        """Starts the task that obtains a session for the unsealed sends to ``peer`` and seals them, unless it runs."""
        if peer in self._awaiting or self._closed or self._fatal is not None:
            return
        self._awaiting[peer] = self._spawn(self._establish_for(peer))

    def _waiting_on(self, peer: str) -> list[_UnsealedEntry]:
        return sorted((e for e in self._unsealed.values() if e.to == peer), key=lambda e: e.created_at_ms)

    async def _establish_for(self, peer: str) -> None:
        """Obtains a session with ``peer`` (the current one, or a handshake: one per peer) and seals every send waiting
        for it, in the order they were made. A failure a retry may fix is retried with backoff until the latest expiry
        of those sends (each settles ``expired`` at its own); any other settles every send waiting on ``peer`` with
        its code. When the agent stops or closes, the records stay for the next start."""
        me = asyncio.current_task()
        attempt = 0
        try:
            while not self._closed and self._fatal is None:
                now = now_ms()
                for held in self._waiting_on(peer):
                    if now > held.expires_at_ms and not held.sealing:
                        await self._settle_unsealed(held, DeliveryError("expired", f"no session with {peer!r} before the message expired"))
                waiting = self._waiting_on(peer)
                if not waiting:
                    return
                latest = max(e.expires_at_ms for e in waiting)
                try:
                    session = await self._session_for(peer, time.monotonic() + (latest - now) / 1000)
                except ParleyError as error:
                    if self._closed or self._fatal is not None:
                        return
                    if error.code in PERMANENT_HANDSHAKE_FAILURES:
                        for held in self._waiting_on(peer):
                            if not held.sealing:
                                await self._settle_unsealed(held, error)
                        return
                    attempt += 1
                    await self._retry_pause(attempt, latest)
                    continue
                for held in self._waiting_on(peer):
                    if self._closed or self._fatal is not None:
                        return
                    try:
                        await self._seal_unsealed(held, session)
                        attempt = 0
                    except ParleyError as error:
                        if self._closed or self._fatal is not None:
                            return  # e.g. the counter reservation failed: the agent stopped (§17.2 item 1)
                        if session.closed:
                            break  # it ended while sealing (nothing sealed): the next one
                        if error.code in PERMANENT_HANDSHAKE_FAILURES:
                            await self._settle_unsealed(held, error)
                            continue
                        # E.g. the outbox record could not be written (a state_error event was emitted): nothing was
                        # relayed; the send stays unsealed and is tried again after its backoff.
                        attempt += 1
                        await self._retry_pause(attempt, held.expires_at_ms)
                        break
        finally:
            if self._awaiting.get(peer) is me:
                del self._awaiting[peer]
            # A send recorded while this task was finishing (after its last look) gets a task of its own.
            if not self._closed and self._fatal is None and any(e.to == peer for e in self._unsealed.values()):
                self._establish_later(peer)

    def _retry_delay(self, attempt: int) -> float:
        """Backoff between two attempts at a session for waiting sends: the resend interval, doubling (§17.2 item 6)."""
        return float(min(self._resend.max_s, self._resend.initial_s * 2.0 ** min(attempt - 1, 16)))

    async def _retry_pause(self, attempt: int, until_ms: int) -> None:
        """Waits :meth:`_retry_delay`, never past ``until_ms`` (then the sends waiting expire)."""
        await asyncio.sleep(max(0.05, min(self._retry_delay(attempt), (until_ms - now_ms()) / 1000 + 0.01)))

    async def _seal_unsealed(self, held: _UnsealedEntry, session: Session) -> None:
        """Seals a waiting send in ``session`` and moves it to the outbox: its outbox record (the same name) is durable
        before its unsealed record is deleted and before the envelope is relayed."""
        if self._unsealed.get(held.id) is not held:
            return
        ts = now_ms()
        if ts > held.expires_at_ms:  # a session came too late: nothing is sealed after the message's expiry
            await self._settle_unsealed(held, DeliveryError("expired", f"no session with {held.to!r} before the message expired"))
            return
        # §17.2 item 7: stamped with its creation time, not the time it is sealed (never later than now): its validity
        # at the recipient ends when its expiry here does, whenever the session came.
        stamp = min(ts, held.created_at_ms)
        held.sealing = True
        try:
            payload = held.payload if stamp == held.created_at_ms else _restamped(held.payload, held.created_at_ms, stamp)
            entry = await self._record_sealed(held.id, held.send_id, held.to, session, payload, stamp, created_at_ms=held.created_at_ms)
        finally:
            held.sealing = False
        # Its outcome now comes from the outbox: the caller's waiter (the newest, if a send with its id came meanwhile)
        # goes with it, and its id (given back meanwhile, for a record of an earlier release).
        entry.waiter, entry.send_id = held.waiter, held.send_id
        if self._unsealed.get(held.id) is held:
            del self._unsealed[held.id]
        await self._delete("unsealed", held.id)  # after the sealed record is durable: a crash before this keeps that one
        self._spawn(self._relay(entry))

    async def _settle_unsealed(self, held: _UnsealedEntry, error: ParleyError) -> None:
        """A send that waited for a session ends without one: ``expired``, or the handshake's permanent failure.

        "Not delivered" is said only once its record is deleted durably: a record left behind (a crash, or a delete
        that failed) is restored at the next start and sealed and delivered then. When the delete fails (a
        ``state_error`` event), nothing is said in this process: the record stands, and the next start decides."""
        if self._unsealed.pop(held.id, None) is not held:
            return
        await asyncio.shield(self._durable(self._settled_unsealed(held, error)))

    async def _settled_unsealed(self, held: _UnsealedEntry, error: ParleyError) -> None:
        """:meth:`_settle_unsealed` of a send taken out of the unsealed ones: its record deleted, its outcome reported."""
        try:
            await self._delete("unsealed", held.id, strict=True)
        except StateError:
            return
        waiter = held.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()
        self._emit("send_settled", id=held.send_id, message_hash=None, peer=held.to, code=code_of(error), receipt=None)

    def _on_receipt(self, r: Any) -> None:
        digest = bytes(r.message_hash)
        entry_id = self._by_hash.get(digest)
        entry = self._outbox.get(entry_id) if entry_id is not None else None
        if entry is None:
            self._emit("duplicate", item="receipt", peer=r.recipient_id, detail="receipt for no pending message")
            return
        if r.sender_id != self.agent_id or r.recipient_id != entry.to:
            self._security("receipt", "identity_mismatch", r.recipient_id, entry.session_id, "receipt names other agents")
            return
        if not verify_receipt_signature(r, entry.peer_key) and not self._by_newer_certificate(entry, r, verify_receipt_signature):
            self._security("receipt", "bad_signature", r.recipient_id, entry.session_id, "receipt signature does not verify with the recipient's certified key")
            return
        self._spawn(self._settle(entry, receipt=Receipt.from_proto(r)))

    async def _on_session_reject(self, r: Any) -> None:
        entry_id = self._by_hash.get(bytes(r.message_hash))
        entry = self._outbox.get(entry_id) if entry_id is not None else None
        if entry is None or r.sender_id != self.agent_id or r.recipient_id != entry.to or bytes(r.session_id) != entry.session_id:
            self._emit("duplicate", item="session_reject", peer=r.recipient_id, detail="reject for no pending message")
            return
        if not verify_session_reject_signature(r, entry.peer_key) and not self._by_newer_certificate(entry, r, verify_session_reject_signature):
            self._security("session_reject", "bad_signature", r.recipient_id, entry.session_id, "session reject signature does not verify")
            return
        sid = entry.session_id
        self._emit("session_rejected", peer=entry.to, session_id=sid.hex())
        session = self._sessions.get(sid)
        if session is not None:
            await self._close_session(session, "rejected by the peer")
        # Only the envelope it names: a reject proves the recipient cannot open that one, not that it never opened the
        # others of the session — one it took before its copy of the session ended (its receipt lost), resealed under
        # a new hash, would reach its application a second time. The others are resent as they are (same bytes) by the
        # housekeeping: each brings its receipt again (from the recipient's receipt store) or its own reject (§17.4).
        if entry.resealing:
            return
        entry.resealing = True
        # §17.2 item 4: the first reseal at once; after a reject of a resealed envelope (the new session refused too),
        # the next one waits for the resend backoff, so that a recipient refusing within milliseconds cannot burn the
        # budget before anything could change.
        delay = 0.0 if entry.reseals == 0 or entry.reseals >= MAX_RESEALS else min(self._resend.max_s, self._resend.initial_s * 2 ** (entry.reseals - 1))
        self._spawn(self._reseal([entry], delay))

    def _by_newer_certificate(self, entry: _OutboxEntry, reply: Any, verify: Callable[[Any, bytes], bool]) -> bool:
        """Whether a receipt or SessionReject is signed under its signer's *current* certificate, which it carries
        (§17.8): an agent that rotated its identity key signs with the new one, which the session the send was sealed
        in (established under the old certificate) does not know. Accepted when that certificate is for the agent the
        send went to, chains to this agent's trust bundle now, is valid, not revoked (when this agent has revocation
        data) and its key verifies the signature: it is the registry's word for that agent id, as the session's is.
        """
        if not reply.HasField("signer_certificate"):
            return False
        cert = reply.signer_certificate
        if cert.agent_id != entry.to or cert.ByteSize() > MAX_CERTIFICATE_BYTES:
            return False
        try:
            verified = verify_certificate(cert, self._trust, now_ms(), expected_agent_id=entry.to, revocations=self._revocations)
        except ParleyError:
            return False
        return verify(reply, verified.identity_public_key)

    async def _reseal(self, entries: list[_OutboxEntry], delay: float = 0.0) -> None:
        """§17 sender 4: the pending message a verified SessionReject names is resealed in a new session and sent again
        (after ``delay`` seconds: the backoff between reseals)."""
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            finally:
                if self._fatal is not None or self._closed:
                    for entry in entries:
                        entry.resealing = False
            if self._fatal is not None or self._closed:
                return
            for entry in entries:
                if self._outbox.get(entry.id) is not entry:
                    entry.resealing = False  # settled meanwhile (expired, a receipt)
            entries = [e for e in entries if self._outbox.get(e.id) is e]
        for entry in entries:
            if entry.reseals >= MAX_RESEALS:
                await self._settle(entry, error=SessionError("unknown_session", f"{entry.to!r} rejected the session {MAX_RESEALS} times"))
                continue
            try:
                session = await self._session_for(entry.to, time.monotonic() + max(self._send_timeout, self._handshake_timeout))
                # §17.2 item 7: the message's creation time, as its first envelope carried it (never later than now): a
                # reseal does not extend its validity, which ends with its expiry here.
                ts = min(now_ms(), int(entry.envelope.timestamp_ms))
                payload = entry.payload if ts == int(entry.envelope.timestamp_ms) else _restamped(entry.payload, entry.envelope.timestamp_ms, ts)
                sealed = await self._seal(session, payload, ts)
            except ParleyError as error:
                entry.resealing = False
                if self._fatal is not None or self._closed:
                    # The agent stopped (replaced, revoked, …): no outcome of the item; every durable record stays
                    # for a restarted process, which resends the envelope it holds (and reseals on its reject).
                    for rest in entries:
                        rest.resealing = False
                    return
                if error.code not in PERMANENT_HANDSHAKE_FAILURES:
                    continue  # the housekeeping resend retries (the next SessionReject reseals again); expiry ends it
                await self._settle(entry, error=error)
                continue
            resealed = dataclasses.replace(
                entry,
                session_id=session.id,
                message_hash=sealed.message_hash,
                envelope=sealed.envelope,
                payload=payload,
                peer_key=session.peer.identity_public_key,
                expires_at_ms=int(sealed.envelope.timestamp_ms) + self._skew.max_age_ms,  # §17.1: timestamp_ms + max_age
                reseals=entry.reseals + 1,
            )
            try:
                await self._put("outbox", entry.id, resealed.record())  # §17.2 item 2: durable before it is relayed
            except ParleyError:
                # Fail closed, as a send whose record cannot be written: the new envelope is not relayed. The entry
                # keeps the envelope its durable record holds (the previous one), so this process and a restarted
                # one agree; its next resend brings the next SessionReject and with it the next attempt (a state_error
                # event was emitted). The caller's send stays pending: its previous record is durable.
                entry.next_resend_at = time.monotonic() + min(self._resend.max_s, self._resend.initial_s * 2 ** min(entry.resends, 16))
                entry.resealing = False
                continue
            if self._outbox.get(entry.id) is not entry:  # settled meanwhile (expired): no record may outlive it
                await asyncio.shield(self._durable(self._delete("outbox", entry.id)))
                continue
            if self._by_hash.get(entry.message_hash) == entry.id:
                del self._by_hash[entry.message_hash]
            entry.session_id, entry.message_hash, entry.envelope, entry.payload = session.id, sealed.message_hash, sealed.envelope, payload
            entry.peer_key, entry.expires_at_ms, entry.reseals = resealed.peer_key, resealed.expires_at_ms, resealed.reseals
            entry.resends = 0
            self._emit("resealed", peer=entry.to, session_id=session.id_hex, message_hash=sealed.message_hash.hex(), reseals=entry.reseals)
            self._by_hash[entry.message_hash] = entry.id
            entry.resealing = False
            await self._relay(entry)

    # =========================================================================================
    # Receiving

    async def _on_delivery(self, conn: GatewayConnection, delivery: Any) -> None:
        """Called by the reader for each delivery, in order. Envelopes queue (bounded); the rest is handled here."""
        kind = delivery.WhichOneof("item")
        if kind == "envelope":
            await self._envelopes.put(_Delivered(conn, delivery.delivery_id, delivery.envelope))
            return
        if kind == "handshake" and (self._frame_waits_for_revocation(delivery.handshake) or self._frame_waits_behind(delivery.handshake)):
            if not self._defer_frame(conn, delivery.delivery_id, delivery.handshake):  # §17.3 item 7: left unacknowledged
                return
        try:
            if kind == "handshake":
                await self._on_frame(conn, delivery.handshake)
            elif kind == "receipt":
                self._on_receipt(delivery.receipt)
            elif kind == "session_reject":
                await self._on_session_reject(delivery.session_reject)
        finally:
            conn.ack(delivery.delivery_id)

    async def _envelope_loop(self) -> None:
        while True:
            delivered = await self._envelopes.get()
            try:
                await self._on_envelope(delivered)
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("parley: envelope handling failed")

    def _gateway_ack(self, conn: GatewayConnection | None, delivery_id: int) -> None:
        if conn is not None and conn is self._conn and delivery_id > 0:
            conn.ack(delivery_id)

    def _may_have_been_taken(self, envelope: Any) -> bool:
        """Whether an envelope's receipt may be among those a full receipt store dropped (§17.4): a message is taken
        only if its timestamp is at most the future skew ahead of the recipient's clock, so one no younger than the
        newest dropped receipt's time plus that skew may have been."""
        return self._forgotten_until is not None and int(envelope.timestamp_ms) <= self._forgotten_until + self._skew.max_future_ms

    def _answer_unknown_session(self, envelope: Any, conn: GatewayConnection | None, delivery_id: int) -> None:
        """§17 recipient 5: a signed SessionReject (the only rejection ever answered on the wire), and the ack of its delivery.

        An envelope this agent may have taken and forgotten the receipt of (:meth:`_may_have_been_taken`) gets no
        reject — its reseal would hand it to the application a second time — only the ack: its sender reports
        ``expired``, a typed failure (§17.4)."""
        if self._may_have_been_taken(envelope):
            detail = "envelope of an unknown session no younger than a dropped receipt: acked without a SessionReject"
            self._emit("duplicate", item="envelope", peer=str(envelope.sender_id)[:128], detail=detail)
            self._gateway_ack(conn, delivery_id)
            return
        current = self._conn
        if current is None or not current.is_open:
            self._gateway_ack(conn, delivery_id)
            return
        reject = sign_session_reject(self.identity, envelope, now_ms(), signer_certificate=self._signer_certificate)  # §17.8
        self._reply("session_reject", reject, "session reject", conn, delivery_id)

    def _defer(self, delivered: _Delivered, why: str, delay: float = 0.0) -> None:
        """Leaves a delivery unacknowledged and tries it again later (§17.3 items 4 and 6).

        A gateway never writes a delivery to the same stream twice: without this it would come back only on
        the next stream (or with the sender's resend), holding one of the stream's in-flight slots meanwhile.
        At most :data:`MAX_DEFERRED` wait; a closed stream's are dropped, as its successor delivers them again.
        """
        conn = delivered.conn
        if conn is None or not conn.is_open or conn is not self._conn:
            return
        if len(self._deferred) >= MAX_DEFERRED:
            _log.debug("parley: %d deliveries wait to be tried again; delivery %d is left for the next stream", MAX_DEFERRED, delivered.delivery_id)
            return
        if self._deferred_bytes + delivered.size > MAX_DEFERRED_BYTES:
            # Every one is a delivery of this stream not acked: a gateway within its in-flight bound never gets here.
            conn.fail("malformed", f"the gateway sent more than {MAX_DEFERRED_BYTES} bytes of deliveries not acked")
            return
        delivered.waiting = why
        delivered.deferrals += 1
        delivered.not_before = time.monotonic() + delay
        # In arrival order (delivery ids of the current stream): one tried again and deferred once more (the
        # application's capacity was taken meanwhile) goes back before those that arrived after it.
        bisect.insort(self._deferred, delivered, key=lambda d: d.delivery_id)
        self._deferred_bytes += delivered.size
        if why == "capacity":
            self._waiting_capacity += 1

    def _retry_deferred(self) -> None:
        """Puts the deferred deliveries that may be taken now in front of the envelope queue, in arrival order;
        drops those of a stream that ended (its successor delivers them again)."""
        if not self._deferred:
            return
        mono, now = time.monotonic(), now_ms()
        free = self._max_unacked - len(self._unacked) - self._envelopes.in_front("capacity")
        ready: list[_Delivered] = []
        keep: list[_Delivered] = []
        for d in self._deferred:
            if d.conn is None or not d.conn.is_open or d.conn is not self._conn:
                continue
            if d.waiting == "capacity":
                wait = free <= 0
                free -= 0 if wait else 1
            elif d.waiting == "handshake":
                wait = self._holds_its_most(bytes(d.envelope.session_id), d.size)
            elif d.waiting == "stale":
                wait = self._revocation_stale(bytes(d.envelope.session_id), now)
            else:
                wait = d.not_before > mono
            (keep if wait else ready).append(d)
        self._set_deferred(keep)
        self._waiting_capacity = sum(1 for d in keep if d.waiting == "capacity")
        if ready:
            self._envelopes.put_front(ready)

    def _set_deferred(self, deferred: list[_Delivered]) -> None:
        self._deferred = deferred
        self._deferred_bytes = sum(d.size for d in deferred)

    def _revocation_stale(self, session_id: bytes, now: int) -> bool:
        """Whether the peer of a session still cannot be checked for want of fresh revocation data (§17.5)."""
        session = self._sessions.get(session_id)
        if session is None or session.closed:
            return False
        try:
            session.check_peer(now)
        except IdentityError as error:
            if error.code in CLOSING_CODES:  # closed by the check (§8.4): the retried delivery is answered as such
                self._security("revocation", error.code, session.peer_id, session.id, error.detail)
                self._spawn(self._close_session(session, f"peer {error.code}"))
            return error.code == "revocation_stale"
        return False

    def _holds_its_most(self, session_id: bytes, size: int = 0) -> bool:
        """Whether a handshake this agent is answering holds its :data:`MAX_HELD_PER_HANDSHAKE` envelopes (or the
        handshakes hold :data:`MAX_HELD_BYTES`)."""
        responding = self._responding.get(session_id)
        return responding is not None and (len(responding.held) >= MAX_HELD_PER_HANDSHAKE or self._held_bytes + size > MAX_HELD_BYTES)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            self._retry_deferred()
            self._retry_frames()

    async def _on_envelope(self, delivered: _Delivered) -> None:
        conn, delivery_id, envelope = delivered.conn, delivered.delivery_id, delivered.envelope
        sender = str(envelope.sender_id)[:128]
        try:
            assert_envelope_shape(envelope)
        except ParleyError as error:
            self._security("message", error.code, sender, None, error.detail)
            self._gateway_ack(conn, delivery_id)
            return
        sid = bytes(envelope.session_id)
        if envelope.recipient_id != self.agent_id:
            self._security("message", "identity_mismatch", sender, sid, "envelope addressed to another agent")
            self._gateway_ack(conn, delivery_id)
            return
        if delivered.digest is None:
            delivered.digest = message_hash(envelope)
        digest = delivered.digest
        pending = self._unacked.get(digest)
        if pending is not None:  # §17.3 item 3: still in the inbox: this copy is acked with the application's ack
            # One delivery per open stream is enough (the gateway holds it in the stream's in-flight set until then);
            # an ended stream's deliveries come again on the next. Further copies (the sender's resends, a peer
            # replaying its envelope) are acked at once: held, they would fill the stream and stall it.
            pending.deliveries[:] = [d for d in pending.deliveries if d[0].is_open]
            if conn is not None and conn.is_open and len(pending.deliveries) < MAX_DELIVERIES_PER_MESSAGE and not any(d[0] is conn for d in pending.deliveries):
                pending.deliveries.append((conn, delivery_id))
            else:
                self._gateway_ack(conn, delivery_id)
            self._emit("duplicate", item="envelope", peer=sender, detail="still in the inbox, not acked by the application")
            return
        stored = self._receipts.get(digest)
        if stored is not None:  # acked before: the receipt may have been lost, send it again (with the ack)
            self._reply("receipt", self._sendable_receipt(stored), "receipt (again)", conn, delivery_id)
            self._emit("duplicate", item="envelope", peer=sender, detail="already acked; receipt sent again")
            return
        session = self._sessions.get(sid)
        if session is None:
            responding = self._responding.get(sid)
            if responding is not None:  # §17 recipient 4: hold until step 3
                if len(responding.held) < MAX_HELD_PER_HANDSHAKE and self._held_bytes + delivered.size <= MAX_HELD_BYTES:
                    responding.held.append(delivered)
                    self._held_bytes += delivered.size
                    return
                if delivered.deferrals == 0:
                    what = "more than 64 envelopes for one handshake" if len(responding.held) >= MAX_HELD_PER_HANDSHAKE else f"more than {MAX_HELD_BYTES} bytes held for handshakes"
                    self._security("message", "rate_limited", sender, sid, f"{what}: left unacknowledged, tried again")
                self._defer(delivered, "handshake")  # beyond its 64: tried again once it has room or has ended
                return
            answer = "acked without a SessionReject (it may have been taken)" if self._may_have_been_taken(envelope) else "answered with a SessionReject"
            self._security("message", "unknown_session", sender, sid, f"no session with that id: {answer}")
            self._answer_unknown_session(envelope, conn, delivery_id)
            return
        # §17.3 item 6, back-pressure: with the application max_unacked messages behind, a delivery is left
        # unacknowledged at the gateway and tried again as the application acks. The stream is still read (receipts,
        # Accepted, go-aways), and a new envelope waits behind those deferred before it, so the order holds.
        if len(self._unacked) >= self._max_unacked or (delivered.deferrals == 0 and self._waiting_capacity > 0):
            self._defer(delivered, "capacity")
            return
        opened = await self._open(session, delivered, sender)
        if opened is None:
            return
        entry = _InboxEntry(digest, sid, opened.counter, envelope, opened.payload_bytes, opened.salt, now_ms(), session.peer.serial, session.peer_certificate)
        if conn is not None:
            entry.deliveries.append((conn, delivery_id))
        try:
            await self._put("inbox", digest.hex(), entry.record())  # §17 recipient 1: durable before anything else
        except ParleyError:
            # Not acked, nothing marked: opened again later, backing off (the state_error event was emitted).
            opened.discard()
            self._defer(delivered, "state", min(MAX_STATE_RETRY, RETRY_INTERVAL * 2**delivered.deferrals))
            return
        if opened.commit():
            self._save_session_later(session)
        self._unacked[digest] = entry
        self._app.put_nowait(Message(self, entry, opened.payload, entry.sender_certificate, redelivered=False))

    async def _open(self, session: Session, delivered: _Delivered, sender: str) -> Opened | None:
        """Opens an envelope; None when it cannot be now, its delivery then acked (or answered with a SessionReject),
        or deferred while the revocation data is stale."""
        conn, delivery_id, envelope = delivered.conn, delivered.delivery_id, delivered.envelope
        try:
            return session.open(envelope)
        except IdentityError as error:
            if error.code == "revocation_stale":
                # Our own revocation copy is stale: nothing can be accepted until it is fresh (fail closed, §17.5).
                # Left unacknowledged and tried again once it is fresh; the stream is still read meanwhile.
                if delivered.deferrals == 0:
                    self._security("message", error.code, sender, session.id, "waiting for fresh revocation data")
                self._defer(delivered, "stale")
                return None
            self._security("message", error.code, sender, session.id, error.detail)
            if error.code in CLOSING_CODES:  # §8.4: the session closed itself; forget it and its record
                await self._close_session(session, f"peer {error.code}")
            self._gateway_ack(conn, delivery_id)
            return None
        except ParleyError as error:
            if error.code == "replay":
                self._emit("duplicate", item="envelope", peer=sender, detail=error.detail)
            elif error.code == "unknown_session":
                self._answer_unknown_session(envelope, conn, delivery_id)
                return None
            else:
                self._security("message", error.code, sender, session.id, error.detail)
            self._gateway_ack(conn, delivery_id)
            return None


    def _sendable_receipt(self, stored: dict[str, Any]) -> Any:
        """A stored receipt as it can be sent again now (§17.8): one carrying a certificate this agent no longer
        authenticates with (its key was rotated again since it signed it) is signed anew — the same message,
        sender and time — with the current key and carries the current certificate: the gateway relays only the
        certificate the stream authenticated with, and the superseded one would not stand with the peer either.
        Kept in memory (the record's copy is signed anew at its next resend after a restart)."""
        receipt = _receipt_from_record(stored)
        if not receipt.HasField("signer_certificate"):
            return receipt
        current = self.identity.certificate
        attached = receipt.signer_certificate
        if attached.agent_id == current.agent_id and bytes(attached.serial) == bytes(current.serial):
            return receipt
        again = sign_receipt(
            self.identity,
            message_hash=bytes(receipt.message_hash),
            sender_id=receipt.sender_id,
            received_at_ms=int(receipt.received_at_ms),
            signer_certificate=current,
        )
        stored["receipt"] = b64url_encode(again.SerializeToString())
        return again
    async def _ack(self, entry: _InboxEntry) -> Receipt:
        """§17 recipient 2: receipt signed and recorded, sent, gateway acked, inbox entry dropped.

        Refused once the agent is closed (its state store is): the message stays in the durable inbox and is
        handed over again after a restart (§17.1)."""
        if entry.acked is not None:
            return entry.acked
        if self._closed:
            raise DeliveryError("cancelled", "agent closed: the message stays in the inbox and is handed over again after a restart")
        proto = sign_receipt(
            self.identity,
            message_hash=entry.message_hash,
            sender_id=entry.envelope.sender_id,
            received_at_ms=entry.received_at_ms,
            signer_certificate=self._signer_certificate,  # after a key rotation (§17.8); kept in the record, sent again with it
        )
        record = {
            "v": RECORD_VERSION,
            "hash": entry.message_hash.hex(),
            "session": entry.session_id.hex(),
            "counter": entry.counter,
            "ts": entry.envelope.timestamp_ms,
            "receipt": b64url_encode(proto.SerializeToString()),
        }
        await self._put("receipts", entry.message_hash.hex(), record)
        if entry.acked is not None:  # a concurrent ack won
            return entry.acked
        receipt = Receipt.from_proto(proto)
        entry.acked = receipt
        self._receipts[entry.message_hash] = record
        self._unacked.pop(entry.message_hash, None)
        self._retry_deferred()  # §17.3 item 6: tried again as the application acks
        # The receipt carries the ack of this envelope's delivery on the stream it goes out on (§10.3); every
        # other delivery of it (an older stream, a redelivery) is acked on its own, with the application's ack.
        conn = self._conn
        carried: tuple[GatewayConnection, int] | None = None
        if conn is not None and conn.is_open:
            carried = next((d for d in entry.deliveries if d[0] is conn), None)
            self._reply("receipt", proto, "receipt", conn, carried[1] if carried is not None else 0)
        for d in entry.deliveries:
            if d is not carried:
                self._gateway_ack(*d)
        entry.deliveries.clear()
        await self._delete("inbox", entry.message_hash.hex())
        return receipt

    # =========================================================================================
    # Housekeeping: resends, expiry, session lifetimes, receipt store

    async def _housekeeping(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(1.0)
            now, mono = now_ms(), time.monotonic()
            for entry in list(self._outbox.values()):
                if now > entry.expires_at_ms:  # §17 sender 5: no conforming recipient can accept it any more
                    await self._settle(entry, error=DeliveryError("expired", f"no receipt from {entry.to!r} before the message expired"))
                elif entry.next_resend_at <= mono and not entry.resealing and self.connected:
                    self._spawn(self._relay(entry))
            for held in list(self._unsealed.values()):
                if now > held.expires_at_ms and not held.sealing:  # no session before it expired: nothing was sealed
                    await self._settle_unsealed(held, DeliveryError("expired", f"no session with {held.to!r} before the message expired"))
            await self._session_lifetimes(now)
            if mono - last_prune > 60:
                last_prune = mono
                await self._prune_receipts(now)

    async def _session_lifetimes(self, now: int) -> None:
        t = self._timeouts
        for session in list(self._sessions.values()):
            # §8.4: when the revocation data or the trust bundle changes (checked every second), the session of a
            # revoked or expired peer, or of one whose issuer left the bundle, closes.
            try:
                session.check_peer(now)
            except IdentityError as error:
                if error.code in CLOSING_CODES:
                    self._security("revocation", error.code, session.peer_id, session.id, error.detail)
                    await self._close_session(session, f"peer {error.code}")
                    continue
            age_s = (now - session.created_at_ms) / 1000
            if age_s >= t.max_duration_s:
                await self._close_session(session, "max_duration")
            elif (now - session.last_activity_ms) / 1000 >= t.idle_s:
                await self._close_session(session, "idle")
            elif t.auto_renew and age_s >= t.max_duration_s - t.renew_before_s and self._current.get(session.peer_id) is session:
                if session.peer_id not in self._initiations and self.connected:
                    peer = session.peer_id
                    future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
                    self._initiations[peer] = future
                    self._spawn(self._initiate(peer, future, time.monotonic() + self._handshake_timeout))

    async def _prune_receipts(self, now: int) -> None:
        """Drops receipts older than a message's lifetime, and the oldest beyond :data:`MAX_RECEIPTS`; the newest
        receipt time of those dropped while still within the lifetime is kept (:attr:`_forgotten_until`, §17.4)."""
        horizon = now - self._skew.max_age_ms - self._skew.max_future_ms
        old = [h for h, r in self._receipts.items() if int(r["ts"]) < horizon]
        if len(self._receipts) - len(old) > MAX_RECEIPTS:
            by_age = sorted(self._receipts.items(), key=lambda kv: int(kv[1]["ts"]))
            old = [h for h, _ in by_age[: len(self._receipts) - MAX_RECEIPTS]]
            for digest in old:
                record = self._receipts[digest]
                if int(record["ts"]) >= horizon:  # still within the lifetime: its envelope may come again
                    try:
                        at = _receipt_time(record)
                    except (KeyError, ValueError, DecodeError):
                        at = now  # signed before now, whenever it was
                    self._forgotten_until = at if self._forgotten_until is None else max(self._forgotten_until, at)
        for digest in old:
            self._receipts.pop(digest, None)
            await self._delete("receipts", digest.hex())


def _restamped(payload: bytes, timestamp_ms: int, ts: int) -> bytes:
    """A payload encoded at ``timestamp_ms`` encoded again with the timestamp ``ts`` (the envelope's it is sealed in)."""
    old = decode_payload(payload, timestamp_ms)
    return encode_payload(old.type, from_value(old.content), ts, handoff_hash=bytes(old.handoff_hash) or None, parent_message_hash=bytes(old.parent_message_hash) or None)


def _message_type(value: object) -> int:
    """A :class:`MessageType` (or its integer value) as the payload's type; ``malformed`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in _MESSAGE_TYPES:
        raise SessionError("malformed", f"message_type must be a parley.MessageType, got {value!r}"[:200])
    return int(value)


_MESSAGE_TYPES: Final = frozenset(int(t) for t in MessageType)


def _entry_id(user_id: str) -> str:
    """The outbox name of a caller's send id (stable across restarts)."""
    import hashlib

    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 256:
        raise SessionError("malformed", "a send id is 1..256 characters")
    return hashlib.blake2b(user_id.encode("utf-8"), digest_size=16, person=b"parley-send-id").hexdigest()


def _send_id_of(record: dict[str, Any]) -> str:
    """The send id an outbox or unsealed record was made under, as its caller knows it: ``send_id``, the id given to
    ``send(id=…)`` (the record's ``id``, its name, is that id's hash, :func:`_entry_id`), or the id made up for a send
    without one (then the record's ``id`` too).

    Compatibility: a record of an earlier release has no ``send_id`` (it kept only the hash). Its ``id`` stands for it:
    for a send made without an id that is exactly the id it was made up under, and reported under then and now; for one
    made with ``send(id=…)`` it is that id's hash, the caller's id being lost — until a caller sends with that id again,
    which gives the send its id back (:meth:`Agent.send`; the send's next record keeps it). ``ValueError`` (the loader's
    ``state_corrupt``) for a ``send_id`` that is not the record's ``id`` nor the id it is the hash of."""
    outbox_id = record["id"]
    send_id = record.get("send_id", outbox_id)
    if not isinstance(outbox_id, str) or not isinstance(send_id, str) or (send_id != outbox_id and _entry_id(send_id) != outbox_id):
        raise ValueError("the record's send id does not match its outbox id")
    return send_id


def _receipt_from_record(record: dict[str, Any]) -> Any:
    from .relay import DeliveryReceipt

    return DeliveryReceipt.FromString(b64url_decode(record["receipt"]))


def _receipt_time(record: dict[str, Any]) -> int:
    """When the receipt of a record was signed (its ``received_at_ms``: the message was taken then)."""
    return int(_receipt_from_record(record).received_at_ms)


__all__ = ["Agent", "Message", "ResendPolicy", "SessionTimeouts", "connect"]
