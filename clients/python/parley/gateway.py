"""One authenticated Connect stream to a gateway (docs/PROTOCOL.md §10.2–§10.4).

``hello {version 1, certificate, delivery_batches}`` → ``challenge {gateway_id, nonce}`` → ``auth {signature
over the §10.2 layout}`` → ``welcome``. The agent checks that the challenge names
the gateway it meant to reach and that ``welcome.agent_id`` is itself
(``identity_mismatch``). After that, items go out as ``send {request_id, item}``
(answered by ``accepted`` or ``rejected``), deliveries come in and are
acknowledged with ``ack {delivery_id}``. When ``welcome.outbound_acks`` is true
(§10.3), a receipt or session reject goes out ``quiet`` (no ``accepted``; a
``rejected`` still comes) and carries the ack of the delivery it answers in
``ack_delivery_id``: one frame instead of two upstream and none back.

Deliveries may also come several to a frame (``deliveries {items}``, asked for by
``hello.delivery_batches``, §10.3): each item is handed over in order exactly as a
lone ``delivery``. With ``welcome.outbound_acks`` the acks issued while the reader
handles one frame, or in one turn of the event loop, go out together as one ``ack``
frame (``delivery_id`` and up to :data:`MAX_MORE_ACK_IDS` ``more_delivery_ids``).

Writes go through one writer task, in order (a handshake's step 3 always leaves
before the first envelope of its session). Reads are one reader task that hands
each delivery to the agent's callback and awaits it: a callback that waits stops
reading, and gRPC flow control pushes back on the gateway. The agent's callback
waits only while its envelope queue is full (envelopes read ahead and not yet
opened); an application that is behind does not stop reading (§17.3 item 6).

A gateway that breaks the protocol is bounded (§12): at most :data:`MAX_UNANSWERED` items wait for its answer and
:data:`MAX_QUEUED_SEND_BYTES` of sends to be written (beyond, a send is refused ``unavailable``; a stall of
:data:`UNANSWERED_STALL_SECONDS` ends the stream), :data:`MAX_QUEUED_REPLIES` acks and replies to be written (beyond,
the stream ends ``malformed``); a frame that does not decode ends the stream ``malformed``. Logged in one line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc

from .errors import GatewayError, ParleyError, is_error_code
from .relay import gateway_auth_layout
from .session import LocalIdentity
from .v1 import gateway_pb2

_log = logging.getLogger("parley")

ERROR_CODE_METADATA_KEY: Final = "parley-error-code"
#: Quiet items whose refusal is still awaited: no ``accepted`` ends the wait, so only the newest are kept.
QUIET_WATCHED: Final = 1024
#: Most ids an ``ack`` frame carries in ``more_delivery_ids``, besides its ``delivery_id`` (§10.3).
MAX_MORE_ACK_IDS: Final = 1024
# How long close() waits for what is queued (the last acks among it) to be written before it ends the call.
CLOSE_DRAIN_SECONDS: Final = 1.0
#: Most items sent on one stream that wait for the gateway's answer (``accepted`` or ``rejected``; quiet items are
#: not counted): above the outbox's pending sends (10 000) and their replies, as @parley/client's. Beyond it a new
#: item is refused (``unavailable``: the outbox sends it again later); when the oldest has waited
#: :data:`UNANSWERED_STALL_SECONDS` as well, the gateway stopped answering and the stream is ended.
MAX_UNANSWERED: Final = 16_384
#: How long the oldest unanswered item waits, with the stream at one of its bounds, before the stream is taken for stalled.
UNANSWERED_STALL_SECONDS: Final = 30.0
#: Most bytes of sends waiting to be written (the gateway reads them no faster): beyond it a new send is refused
#: (``unavailable``), and ends the stream as above when the oldest unanswered item has waited 30 s.
MAX_QUEUED_SEND_BYTES: Final = 64 * 1024 * 1024
#: Most acks and replies (receipts, session rejects) waiting to be written, in count and bytes: each answers a
#: delivery, and a gateway writes at most its in-flight bound (default 256) of deliveries not yet acked, so more is a
#: gateway that goes on delivering without reading this agent's acks: the stream ends (``malformed``).
MAX_QUEUED_REPLIES: Final = 65_536
MAX_QUEUED_REPLY_BYTES: Final = 16 * 1024 * 1024
#: grpc status → Parley code when no ``parley-error-code`` trailer came (§15.8).
_CODE_BY_STATUS: Final = {
    grpc.StatusCode.INVALID_ARGUMENT: "malformed",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.ALREADY_EXISTS: "already_exists",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "permission_denied",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "too_large",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
    grpc.StatusCode.CANCELLED: "cancelled",
    grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
    grpc.StatusCode.ABORTED: "conflict",
    grpc.StatusCode.OUT_OF_RANGE: "malformed",
}


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS to the gateway (the gateway serves TLS 1.3 only).

    ``root_certificates``: PEM bytes or a path (None: the system roots).
    ``private_key``/``certificate_chain``: PEM, for gateways that require mTLS.
    ``server_name``: the name to check the gateway certificate against when it
    differs from the host in ``gateway`` (e.g. ``localhost`` for ``127.0.0.1``).
    """

    root_certificates: bytes | str | Path | None = None
    private_key: bytes | str | Path | None = None
    certificate_chain: bytes | str | Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(_pem(self.root_certificates), _pem(self.private_key), _pem(self.certificate_chain))

    def options(self) -> list[tuple[str, str]]:
        return [] if self.server_name is None else [("grpc.ssl_target_name_override", self.server_name)]


def _pem(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as error:
        raise ParleyError("not_found", f"cannot read {value}") from error


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names a loopback host (127.0.0.0/8, ::1, localhost); False for anything not a string."""
    if not isinstance(address, str):
        return False
    host = address.rsplit(":", 1)[0] if ":" in address else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rpc_error_code(error: grpc.aio.AioRpcError) -> str:
    """The Parley code of a failed call: the ``parley-error-code`` trailer, else one code per status."""
    trailers = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == ERROR_CODE_METADATA_KEY and is_error_code(value):
            return str(value)
    return _CODE_BY_STATUS.get(error.code(), "unavailable" if error.code() == grpc.StatusCode.UNKNOWN else "internal")


#: The gateway's answers to a first connection that time can fix (see :func:`is_transient_connect_refusal`): its
#: revocation copy is stale, it is busy, or it is shutting down.
TRANSIENT_CONNECT_CODES: Final[frozenset[str]] = frozenset({"revocation_stale", "unavailable", "rate_limited", "shutting_down"})


def is_transient_connect_refusal(error: BaseException) -> bool:
    """Whether a failed :meth:`GatewayConnection.open` is one ``connect`` retries until its deadline: a code time can
    fix (:data:`TRANSIENT_CONNECT_CODES`) AND said by the gateway itself — a go-away frame or the gateway ending the
    stream before its welcome (raised here with no cause), or the call's status carrying the gateway's own
    ``parley-error-code``. A connection that could not be made (nothing listening, a wrong host, TLS) is grpc's
    ``UNAVAILABLE`` with no such code: a configuration to fix, not retried; nor is any verdict on the agent."""
    if not isinstance(error, GatewayError) or error.code not in TRANSIENT_CONNECT_CODES:
        return False
    cause = error.__cause__
    if cause is None:
        return True
    if not isinstance(cause, grpc.aio.AioRpcError):
        return False
    return any(key == ERROR_CODE_METADATA_KEY for key, _ in cause.trailing_metadata() or ())


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Why a stream ended: a go-away code from the gateway, or the code of a failure."""

    code: str
    message: str
    go_away: bool


OnDelivery = Callable[["GatewayConnection", Any], Awaitable[None]]


class _Undecodable:
    """What the stream yields for a frame that is not a valid ``ConnectResponse`` (a truncated message, a string field
    that is not UTF-8): the gateway broke the protocol, and the stream ends ``malformed``."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def decode_response(data: bytes) -> Any:
    """The Connect stream's deserializer: a ``ConnectResponse``, or :class:`_Undecodable` (gRPC's own would log a
    traceback and hand over None)."""
    try:
        return gateway_pb2.ConnectResponse.FromString(data)
    except Exception as error:  # DecodeError, and whatever a protobuf runtime raises on bytes it cannot parse
        return _Undecodable(type(error).__name__)


def _check_decoded(response: Any) -> None:
    """Raises GatewayError ``malformed`` for a frame that did not decode (None: what gRPC yields when a deserializer fails)."""
    if response is None or isinstance(response, _Undecodable):
        why = f" ({response.reason})" if isinstance(response, _Undecodable) else ""
        raise GatewayError("malformed", f"the gateway sent a frame that is not a valid ConnectResponse{why}")


def _is_reply(request: Any) -> bool:
    """Whether a queued request is an ack or a quiet reply (bounded by :data:`MAX_QUEUED_REPLIES`), not a send."""
    return request.WhichOneof("kind") != "send" or bool(request.send.quiet)


class GatewayConnection:
    """An authenticated Connect stream. Create with :meth:`open`."""

    def __init__(self, channel: grpc.aio.Channel, call: Any, welcome: Any, gateway_id: str) -> None:
        self._channel = channel
        self._call = call
        self.welcome = welcome
        self.gateway_id = gateway_id
        self._writes: asyncio.Queue[Any] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        #: The items of :attr:`_pending` that wait for ``accepted`` (not quiet): request id → when queued (monotonic),
        #: oldest first.
        self._unanswered: dict[int, float] = {}
        self._quiet: collections.deque[int] = collections.deque()
        #: Bytes of sends, and count and bytes of acks and quiet replies, queued and not yet taken by the writer.
        self._queued_send_bytes = 0
        self._queued_replies = 0
        self._queued_reply_bytes = 0
        self._next_request_id = 1
        self._end: StreamEnd | None = None
        self.ended: asyncio.Future[StreamEnd] = asyncio.get_running_loop().create_future()
        self.last_delivery_id = 0
        #: Acks not sent yet (with ``outbound_acks``): they go out at the end of the frame or turn.
        self._acks: list[int] = []
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls,
        *,
        address: str,
        identity: LocalIdentity,
        expected_gateway_id: str,
        tls: TlsConfig | None,
        timeout: float = 10.0,
    ) -> GatewayConnection:
        """Connects and authenticates; raises GatewayError with the gateway's code (``revoked``, ``unknown_issuer``, …),
        ``unavailable`` when the stream fails on the way (whatever gRPC raised), or the ParleyError of unreadable
        TLS files (``not_found``). Nothing else."""
        options = [("grpc.keepalive_time_ms", 20_000), ("grpc.max_receive_message_length", 2 << 20)]
        if tls is None:
            channel = grpc.aio.insecure_channel(address, options=options)
        else:
            channel = grpc.aio.secure_channel(address, tls.credentials(), options=options + tls.options())
        # Not the generated stub's deserializer: on bytes that do not decode, gRPC logs a traceback and yields None.
        connect = channel.stream_stream(
            "/parley.v1.AgentGatewayService/Connect", request_serializer=gateway_pb2.ConnectRequest.SerializeToString, response_deserializer=decode_response
        )
        call = connect()
        try:
            return await asyncio.wait_for(cls._authenticate(channel, call, identity, expected_gateway_id), timeout)
        except asyncio.TimeoutError as error:
            call.cancel()
            await channel.close()
            raise GatewayError("deadline_exceeded", "gateway authentication timed out") from error
        except ParleyError:
            call.cancel()
            await channel.close()
            raise
        except Exception as error:  # whatever else gRPC raises on a stream that ended: typed, never raw
            call.cancel()
            await channel.close()
            raise GatewayError("unavailable", f"gateway stream failed during authentication ({type(error).__name__})") from error
        except BaseException:
            call.cancel()
            await channel.close()
            raise

    @classmethod
    async def _authenticate(cls, channel: grpc.aio.Channel, call: Any, identity: LocalIdentity, expected_gateway_id: str) -> GatewayConnection:
        async def next_kind(expected: str) -> Any:
            try:
                response = await call.read()
            except grpc.aio.AioRpcError as error:
                raise GatewayError(rpc_error_code(error), error.details() or "gateway refused the stream") from error  # type: ignore[arg-type]
            except (asyncio.InvalidStateError, grpc.aio.UsageError, RuntimeError) as error:
                raise GatewayError("unavailable", f"gateway ended the stream before {expected}") from error
            if response is grpc.aio.EOF:
                raise GatewayError("unavailable", f"gateway closed the stream before {expected}")
            _check_decoded(response)
            kind = response.WhichOneof("kind")
            if kind == "go_away":
                code = response.go_away.code if is_error_code(response.go_away.code) else "unavailable"
                raise GatewayError(code, response.go_away.message or "go away")  # type: ignore[arg-type]
            if kind != expected:
                raise GatewayError("malformed", f"expected {expected}, got {kind}")
            return getattr(response, expected)

        async def write(request: Any, what: str) -> None:
            # The gateway may end the stream at any step (a restart, a shutdown): typed, whatever gRPC raises.
            try:
                await call.write(request)
            except grpc.aio.AioRpcError as error:
                raise GatewayError(rpc_error_code(error), error.details() or f"gateway ended the stream before {what}") from error  # type: ignore[arg-type]
            except (asyncio.InvalidStateError, grpc.aio.UsageError, RuntimeError) as error:
                raise GatewayError("unavailable", f"gateway ended the stream before {what}") from error

        hello = gateway_pb2.ConnectRequest()
        hello.hello.version = 1
        hello.hello.certificate.CopyFrom(identity.certificate)
        hello.hello.delivery_batches = True
        await write(hello, "hello")
        challenge = await next_kind("challenge")
        if challenge.gateway_id != expected_gateway_id:
            raise GatewayError("identity_mismatch", f"connected to gateway {challenge.gateway_id!r}, expected {expected_gateway_id!r}")
        if len(challenge.nonce) != 32:
            raise GatewayError("malformed", "challenge nonce is not 32 bytes")
        auth = gateway_pb2.ConnectRequest()
        auth.auth.signature = identity.signing_key.sign(gateway_auth_layout(challenge.gateway_id, bytes(challenge.nonce), identity.agent_id, bytes(identity.certificate.serial)))
        await write(auth, "auth")
        welcome = await next_kind("welcome")
        if welcome.agent_id != identity.agent_id:
            raise GatewayError("identity_mismatch", f"gateway welcomed {welcome.agent_id!r}, not this agent")
        return cls(channel, call, welcome, challenge.gateway_id)

    def start(self, on_delivery: OnDelivery) -> None:
        """Starts the reader and writer tasks; ``on_delivery`` is awaited for each delivery, in order."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._writer(), name="parley-gateway-writer"), loop.create_task(self._reader(on_delivery), name="parley-gateway-reader")]

    @property
    def is_open(self) -> bool:
        return self._end is None

    def send(self, kind: str, item: Any, recipient_certificate: Any | None = None) -> asyncio.Future[Any]:
        """Queues ``send {request_id, item}``; the future resolves with ``Accepted`` or fails with GatewayError.

        ``recipient_certificate``: the recipient's registry-issued ``AgentCertificate``, for a first contact with an
        agent the gateway may never have seen (``Outbound.recipient_certificate``, docs/PROTOCOL.md §10.3 step 5).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._end is not None:
            future.set_exception(self._ended_error())
            return future
        request_id = self._next_request_id
        self._next_request_id += 1
        request = gateway_pb2.ConnectRequest()
        request.send.request_id = request_id
        getattr(request.send, kind).CopyFrom(item)
        if recipient_certificate is not None:
            request.send.recipient_certificate.CopyFrom(recipient_certificate)
        size = request.ByteSize()  # as the writer counts it off
        if len(self._unanswered) >= MAX_UNANSWERED or (self._queued_send_bytes > 0 and self._queued_send_bytes + size > MAX_QUEUED_SEND_BYTES):
            # The gateway answers every item (accepted or rejected) and reads what is written. This many waiting is
            # refused (the outbox sends it again later); when the oldest has waited UNANSWERED_STALL_SECONDS as well,
            # the gateway stopped answering (or reading): the stream ends (every waiting item fails, and is sent again
            # on the next one). A burst alone, answered as fast as the gateway can, does not drop a healthy stream.
            waiting = f"{len(self._unanswered)} items ({self._queued_send_bytes} bytes not yet written)"
            oldest = next(iter(self._unanswered.values()), None)
            if oldest is not None and time.monotonic() - oldest >= UNANSWERED_STALL_SECONDS:
                message = f"the gateway left {waiting} unanswered for {UNANSWERED_STALL_SECONDS:g} s: reconnecting"
                self.fail("unavailable", message)
                future.set_exception(GatewayError("unavailable", message))
            else:
                future.set_exception(GatewayError("unavailable", f"{waiting} wait for the gateway's answer: try again later"))
            return future
        self._pending[request_id] = future
        self._unanswered[request_id] = time.monotonic()
        self._queued_send_bytes += size
        self._writes.put_nowait(request)
        return future

    @property
    def outbound_acks(self) -> bool:
        """Whether the gateway takes an ack carried by an item and quiet items (``welcome.outbound_acks``, §10.3)."""
        return bool(self.welcome.outbound_acks)

    def send_reply(self, kind: str, item: Any, delivery_id: int = 0) -> asyncio.Future[Any]:
        """Sends a receipt or session reject that needs no ``accepted``, with the ack of ``delivery_id`` (0: none).

        With ``outbound_acks`` it is one quiet ``send`` carrying the ack (§10.3): the future
        fails with GatewayError on a ``rejected`` (or when the stream ends, as every pending
        send), and resolves with None once :data:`QUIET_WATCHED` newer quiet items went out.
        Without, the item is sent as by :meth:`send` and the delivery acked with its own
        frame. Nothing needs to await it: a lost reply is sent again on the envelope's
        redelivery.
        """
        if not self.outbound_acks or self._end is not None:
            future = self.send(kind, item)
            self.ack(delivery_id)
            return future
        future = asyncio.get_running_loop().create_future()
        request_id = self._next_request_id
        self._next_request_id += 1
        request = gateway_pb2.ConnectRequest()
        request.send.request_id = request_id
        request.send.quiet = True
        if 1 <= delivery_id <= self.last_delivery_id:
            request.send.ack_delivery_id = delivery_id
        getattr(request.send, kind).CopyFrom(item)
        self._pending[request_id] = future
        self._quiet.append(request_id)
        if len(self._quiet) > QUIET_WATCHED:
            old = self._pending.pop(self._quiet.popleft(), None)
            if old is not None and not old.done():
                old.set_result(None)
        self._put_reply(request)
        return future

    def ack(self, delivery_id: int) -> None:
        """Acknowledges a delivery written to this stream (ignored once the stream ended).

        With ``outbound_acks`` the id waits for the other acks of this frame or turn: they go out
        as one ``ack`` frame when the reader is done with the frame, at the end of the event loop's
        turn (``call_soon``), when a frame is full, or on :meth:`close`, whichever comes first.
        """
        if self._end is not None or not 1 <= delivery_id <= self.last_delivery_id:
            return
        if not self.outbound_acks:
            request = gateway_pb2.ConnectRequest()
            request.ack.delivery_id = delivery_id
            self._put_reply(request)
            return
        self._acks.append(delivery_id)
        if len(self._acks) == 1:
            asyncio.get_running_loop().call_soon(self._flush_acks)
        elif len(self._acks) > MAX_MORE_ACK_IDS:
            self._flush_acks()

    def _flush_acks(self) -> None:
        """Queues the acks not sent yet, 1 + :data:`MAX_MORE_ACK_IDS` ids to a frame."""
        acks, self._acks = self._acks, []
        if self._end is not None:
            return
        for i in range(0, len(acks), 1 + MAX_MORE_ACK_IDS):
            request = gateway_pb2.ConnectRequest()
            request.ack.delivery_id = acks[i]
            request.ack.more_delivery_ids.extend(acks[i + 1 : i + 1 + MAX_MORE_ACK_IDS])
            self._put_reply(request)

    def _put_reply(self, request: Any) -> None:
        """Queues an ack or a quiet reply. Beyond :data:`MAX_QUEUED_REPLIES` (or :data:`MAX_QUEUED_REPLY_BYTES`) not
        yet written, the gateway goes on delivering without reading: the stream ends ``malformed`` (the agent
        reconnects; the deliveries not acked come again on the next stream, their replies with them)."""
        if self._end is not None:
            return
        size = request.ByteSize()
        if self._queued_replies + 1 > MAX_QUEUED_REPLIES or self._queued_reply_bytes + size > MAX_QUEUED_REPLY_BYTES:
            self.fail("malformed", f"the gateway does not read this agent's acks and replies ({self._queued_replies} waiting to be written) while it delivers more")
            return
        self._queued_replies += 1
        self._queued_reply_bytes += size
        self._writes.put_nowait(request)

    def _taken(self, request: Any) -> None:
        """Accounts for a request the writer took from the queue."""
        if _is_reply(request):
            self._queued_replies -= 1
            self._queued_reply_bytes -= request.ByteSize()
        else:
            self._queued_send_bytes -= request.ByteSize()

    def fail(self, code: str, message: str) -> None:
        """Ends the stream from this side with ``code`` (the agent reconnects): a gateway that broke the protocol.
        Logged once, without a traceback."""
        if self._end is not None:
            return
        _log.warning("parley: ending the stream to gateway %s (%s): %s", self.gateway_id, code, message)
        self._finish(StreamEnd(code, message, False))

    async def _writer(self) -> None:
        try:
            while True:
                request = await self._writes.get()
                if request is None:
                    with contextlib.suppress(Exception):
                        await self._call.done_writing()
                    return
                self._taken(request)
                await self._call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError, RuntimeError):
            return  # the reader reports how the stream ended

    async def _reader(self, on_delivery: OnDelivery) -> None:
        end: StreamEnd | None = None
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                _check_decoded(response)
                kind = response.WhichOneof("kind")
                if kind == "accepted" or kind == "rejected":
                    value = getattr(response, kind)
                    self._unanswered.pop(value.request_id, None)
                    future = self._pending.pop(value.request_id, None)
                    if future is not None and not future.done():
                        if kind == "accepted":
                            future.set_result(value)
                        else:
                            code = value.code if is_error_code(value.code) else "internal"
                            future.set_exception(GatewayError(code, value.message or "refused by the gateway"))  # type: ignore[arg-type]
                elif kind == "delivery":
                    await self._deliver(on_delivery, response.delivery)
                    self._flush_acks()
                elif kind == "deliveries":
                    for delivery in response.deliveries.items:
                        await self._deliver(on_delivery, delivery)
                    self._flush_acks()
                elif kind == "go_away":
                    end = StreamEnd(response.go_away.code, response.go_away.message, True)
        except grpc.aio.AioRpcError as error:
            if end is None:
                end = StreamEnd(rpc_error_code(error), error.details() or "stream failed", False)
        except GatewayError as error:  # the gateway broke the protocol (a frame that does not decode, a bound exceeded)
            if end is None:
                _log.warning("parley: ending the stream to gateway %s (%s): %s", self.gateway_id, error.code, error.detail)
                end = StreamEnd(error.code, error.detail, False)
        except asyncio.CancelledError:
            if end is None:
                end = StreamEnd("cancelled", "closed", False)
        except Exception as error:  # a delivery handler bug must not leave the stream half-alive
            if end is None:
                end = StreamEnd("internal", f"delivery handling failed: {type(error).__name__}", False)
        self._finish(end or StreamEnd("unavailable", "gateway stream ended", False))

    async def _deliver(self, on_delivery: OnDelivery, delivery: Any) -> None:
        if delivery.delivery_id > self.last_delivery_id:
            self.last_delivery_id = delivery.delivery_id
        await on_delivery(self, delivery)

    def _finish(self, end: StreamEnd) -> None:
        if self._end is not None:
            return
        self._end = end
        error = self._ended_error()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self._unanswered.clear()
        self._quiet.clear()
        self._acks.clear()
        self._writes.put_nowait(None)
        self._call.cancel()
        if not self.ended.done():
            self.ended.set_result(end)

    def _ended_error(self) -> GatewayError:
        """What a send gets when the stream ended before its answer: ``unavailable``, whatever the stream ended
        with. The item was not refused (§17.2 item 2): a go-away ``replaced`` or ``revoked`` is about the stream
        and the agent (:attr:`ended` says it), and the item goes out again on the next stream."""
        end = self._end
        assert end is not None
        return GatewayError("unavailable", f"gateway stream ended before an answer ({end.code}: {end.message})")

    async def close(self) -> None:
        """Sends what is queued (the acks not sent yet among it) and half-closes, waiting at most
        ``CLOSE_DRAIN_SECONDS`` for that, then ends the call and the channel; waits for the tasks."""
        self._flush_acks()
        writer = next((t for t in self._tasks if t.get_name() == "parley-gateway-writer"), None)
        if self._end is None and writer is not None and not writer.done():
            self._writes.put_nowait(None)  # the writer half-closes after what is queued, then returns
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(writer), CLOSE_DRAIN_SECONDS)
        self._finish(StreamEnd("cancelled", "closed by the agent", False))
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._channel.close()
