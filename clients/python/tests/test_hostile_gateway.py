"""A hostile or broken gateway (a review of the SDK against one): what it can make the agent hold is bounded, in count
and in bytes, and what breaks the protocol ends the stream with a typed code (the agent reconnects), logged in one
line — as @parley/client (docs/PROTOCOL.md §12).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest

from parley import crypto
from parley.agent import _Delivered, _EnvelopeQueue
from parley.errors import GatewayError
from parley.gateway import GatewayConnection, StreamEnd
from parley.handshake import InitiatorHandshake
from parley.session import now_ms
from parley.types import Event
from parley.v1 import gateway_pb2

from .helpers import World
from .test_gateway_replies import FakeCall, FakeChannel, make_agent, run, seal, settle

# The bounds, as docs/PROTOCOL.md §12 lists them (not imported: the old code has none of them).
MAX_UNANSWERED = 16_384
MIB = 1024 * 1024


@pytest.fixture
def world() -> World:
    return World(now=now_ms())


def connection(*, outbound_acks: bool = True) -> tuple[FakeCall, GatewayConnection]:
    call = FakeCall()
    conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id="bob", outbound_acks=outbound_acks), "gw")  # type: ignore[arg-type]
    return call, conn


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert not logged, [r.getMessage() for r in logged]


# 1. Items the gateway leaves unanswered.


def test_items_left_unanswered_are_bounded_a_burst_is_refused_and_a_stall_of_30_s_ends_the_stream() -> None:
    receipt = gateway_pb2.ConnectRequest().send.receipt.__class__(message_hash=bytes(32), sender_id="alice", recipient_id="bob", signature=bytes(64))

    async def scenario() -> tuple[list[Any], GatewayError, bool, GatewayError, StreamEnd, bool]:
        call, conn = connection(outbound_acks=False)
        conn.start(lambda _c, _d: asyncio.sleep(0))
        waiting = [conn.send("receipt", receipt) for _ in range(MAX_UNANSWERED)]
        call.play(accepted=gateway_pb2.Accepted(request_id=1))  # answered: leaves the count
        await settle()
        extra = conn.send("receipt", receipt)  # takes its place
        burst = conn.send("receipt", receipt)  # one too many: refused, the stream kept
        await settle()
        burst_error = burst.exception()
        open_after_burst = conn.is_open
        for request_id in conn._unanswered:  # as if the oldest had waited 31 s
            conn._unanswered[request_id] -= 31
        stalled = conn.send("receipt", receipt)
        end = await asyncio.wait_for(asyncio.shield(conn.ended), 3)
        all_failed = all(isinstance(f.exception(), GatewayError) for f in waiting[1:] + [extra])
        await conn.close()
        return [waiting[0].result().request_id], burst_error, open_after_burst, stalled.exception(), end, all_failed  # type: ignore[return-value]

    answered, burst_error, open_after_burst, stalled_error, end, all_failed = run(scenario)
    assert answered == [1]
    assert isinstance(burst_error, GatewayError) and burst_error.code == "unavailable"  # the outbox sends it again later
    assert open_after_burst  # a burst alone does not drop a healthy stream
    assert isinstance(stalled_error, GatewayError) and stalled_error.code == "unavailable"
    assert end.code == "unavailable" and "unanswered" in end.message and not end.go_away
    assert all_failed  # each fails, to be sent again on the next stream


def test_quiet_replies_are_not_counted_as_unanswered() -> None:
    receipt = gateway_pb2.ConnectRequest().send.receipt.__class__(message_hash=bytes(32), sender_id="alice", recipient_id="bob", signature=bytes(64))

    async def scenario() -> tuple[bool, Any]:
        call, conn = connection(outbound_acks=True)
        conn.start(lambda _c, _d: asyncio.sleep(0))
        for _ in range(MAX_UNANSWERED + 10):  # quiet: no accepted ever comes, only a rejected would
            conn.send_reply("receipt", receipt)
        future = conn.send("receipt", receipt)
        await settle()
        result = (conn.is_open, future.done())
        await conn.close()
        return result

    assert run(scenario) == (True, False)


# 3. The request queue to a gateway that stops reading.


def test_sends_waiting_to_be_written_are_bounded_in_bytes_a_burst_is_refused() -> None:
    big = gateway_pb2.ConnectRequest().send.envelope.__class__(encrypted_payload=bytes(4 * MIB - 64))  # 16 fit in 64 MiB

    async def scenario() -> tuple[list[str | None], bool]:
        _, conn = connection()  # not started: nothing is written, as with a gateway that stopped reading
        futures = [conn.send("envelope", big) for _ in range(20)]
        codes = [f.exception().code if f.done() and isinstance(f.exception(), GatewayError) else None for f in futures]  # type: ignore[union-attr]
        open_ = conn.is_open
        conn._finish(StreamEnd("cancelled", "test over", False))
        for f in futures:
            f.exception()
        return codes, open_

    codes, open_ = run(scenario)
    assert codes[:16] == [None] * 16  # 64 MiB
    assert codes[16:] == ["unavailable"] * 4
    assert open_


def test_acks_a_gateway_does_not_read_while_it_delivers_more_end_the_stream_malformed(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[bool, StreamEnd | None]:
        _, conn = connection(outbound_acks=False)  # one ack frame each; not started: nothing is written
        conn.last_delivery_id = 10**6
        for i in range(1, 70_000):
            conn.ack(i)
        end = conn.ended.result() if conn.ended.done() else None
        return conn.is_open, end

    with caplog.at_level(logging.WARNING, logger="parley"):
        open_, end = run(scenario)
    assert not open_ and end is not None and end.code == "malformed"
    no_traceback(caplog)


# 2. Frames that do not decode.


def test_a_frame_that_does_not_decode_ends_the_stream_malformed_without_a_traceback(world: World, caplog: pytest.LogCaptureFixture) -> None:
    events: list[Event] = []
    agent, _alice = make_agent(world, events)
    agent._reconnect = None  # the stream's end is the point, not the reconnection

    async def scenario() -> StreamEnd:
        call, conn = connection()
        agent._attach(conn)
        call._responses.put_nowait(None)  # what gRPC yields for a frame its deserializer could not decode
        end = await asyncio.wait_for(asyncio.shield(conn.ended), 3)
        await settle()
        await agent.close()
        return end

    with caplog.at_level(logging.INFO):
        end = run(scenario)
    assert end.code == "malformed" and "AttributeError" not in end.message
    assert [e.fields["code"] for e in events if e.kind == "disconnected"] == ["malformed"]
    no_traceback(caplog)


class _RawGateway:
    """A gateway speaking raw bytes: a challenge and a welcome, then ``after`` (bytes that are no ConnectResponse)."""

    def __init__(self, after: bytes, *, at_auth: bool = False) -> None:
        self.after = after
        self.at_auth = at_auth

    async def connect(self, request_iterator: Any, context: Any) -> Any:
        requests = request_iterator.__aiter__()
        await requests.__anext__()  # hello
        if self.at_auth:
            yield self.after
            return
        yield gateway_pb2.ConnectResponse(challenge=gateway_pb2.Challenge(gateway_id="gw-1", nonce=bytes(32))).SerializeToString()
        await requests.__anext__()  # auth
        yield gateway_pb2.ConnectResponse(welcome=gateway_pb2.Welcome(agent_id="bob")).SerializeToString()
        yield self.after
        await asyncio.sleep(5)


def _undecodable() -> bytes:
    delivery = gateway_pb2.ConnectResponse(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=gateway_pb2.Delivery().envelope.__class__(sender_id="ab")))
    return delivery.SerializeToString().replace(b"ab", b"\xff\xfe")  # a string field that is not UTF-8


@pytest.mark.parametrize("at_auth", [False, True])
def test_undecodable_bytes_from_a_real_stream_are_malformed_and_log_no_traceback(world: World, caplog: pytest.LogCaptureFixture, at_auth: bool) -> None:
    bob = world.identity("bob")

    async def scenario() -> str:
        gateway = _RawGateway(_undecodable(), at_auth=at_auth)
        handler = grpc.method_handlers_generic_handler("parley.v1.AgentGatewayService", {"Connect": grpc.stream_stream_rpc_method_handler(gateway.connect)})
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            try:
                conn = await GatewayConnection.open(address=f"127.0.0.1:{port}", identity=bob, expected_gateway_id="gw-1", tls=None, timeout=5)
            except GatewayError as error:
                return error.code
            conn.start(lambda _c, _d: asyncio.sleep(0))
            end = await asyncio.wait_for(asyncio.shield(conn.ended), 5)
            await conn.close()
            return end.code
        finally:
            await server.stop(0)

    with caplog.at_level(logging.INFO):
        code = run(scenario)
    assert code == "malformed"
    no_traceback(caplog)


# 3. What the agent holds of deliveries: bounded in bytes as well as in count.


def big_envelope(world: World, session_id: bytes, size: int = 1_000_000) -> Any:
    """An envelope of alice's of ``size`` ciphertext bytes (held or deferred before it is opened: never opened here)."""
    _, alice = make_agent(world, [])
    envelope = seal(alice, {"n": 0})
    envelope.session_id = session_id
    envelope.encrypted_payload = bytes(size)
    return envelope


def delivered(conn: GatewayConnection | None, delivery_id: int, envelope: Any) -> _Delivered:
    return _Delivered(conn, delivery_id, envelope, digest=crypto.random_bytes(32))  # its hash: not hashed again here


def test_envelopes_read_ahead_are_bounded_in_bytes_the_reader_waits(world: World) -> None:
    envelope = big_envelope(world, bytes(16), 1_500_000)

    async def scenario() -> int:
        queue = _EnvelopeQueue(64)
        taken = 0
        for i in range(64):
            try:
                await asyncio.wait_for(queue.put(delivered(None, i, envelope)), 0.05)
            except asyncio.TimeoutError:
                break
            taken += 1
        return taken

    taken = run(scenario)
    assert taken == (64 * MIB) // (1_500_000 + 256 + 10) + 1  # then the reader waits: 64 MiB, not 64 × 1.5 MB


def test_envelopes_held_for_handshakes_are_bounded_in_bytes_beyond_they_wait_unacked(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[int, int]:
        call, conn = connection()
        agent._conn = conn
        conn.last_delivery_id = 10**6
        sids = []
        for _ in range(2):  # two handshakes of alice's in progress, each may hold 64
            _, frame1 = InitiatorHandshake.start(world.config(alice.local), "bob")
            await agent._on_frame(conn, frame1)
            sids.append(bytes(frame1.session_id))
        envelopes = [big_envelope(world, sid) for sid in sids]
        for n in range(80):  # 40 of ~1 MB for each: 80 MB in all
            await agent._on_envelope(delivered(conn, 10 + n, envelopes[n % 2]))
        held = sum(len(r.held) for r in agent._responding.values())
        deferred = len(agent._deferred)
        conn._finish(StreamEnd("cancelled", "test over", False))
        await agent.close()
        return held, deferred

    held, deferred = run(scenario)
    per = 1_000_000 + 256 + 8
    assert held == (64 * MIB) // per and deferred == 80 - held
    assert any(e.kind == "security" and "bytes held" in e.fields["detail"] for e in events)


def test_deliveries_waiting_to_be_tried_again_beyond_64_mib_end_the_stream_malformed(world: World, caplog: pytest.LogCaptureFixture) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    agent._max_unacked = 0  # the application holds all it may: every delivery waits (§17.3 item 6)
    agent._reconnect = None

    async def scenario() -> tuple[StreamEnd, int]:
        call, conn = connection()
        agent._attach(conn)
        envelope = big_envelope(world, next(iter(agent._sessions)))
        n = 0
        while conn.is_open and n < 200:
            n += 1
            await agent._on_envelope(delivered(conn, n, envelope))
        end = await asyncio.wait_for(asyncio.shield(conn.ended), 3)
        await settle()
        await agent.close()
        return end, n

    with caplog.at_level(logging.INFO):
        end, n = run(scenario)
    assert end.code == "malformed" and n == (64 * MIB) // (1_000_000 + 256 + 8) + 1
    assert [e.fields["code"] for e in events if e.kind == "disconnected"] == ["malformed"]
    no_traceback(caplog)


def test_what_the_writer_wrote_leaves_the_queued_counts() -> None:
    envelope = gateway_pb2.ConnectRequest().send.envelope.__class__(encrypted_payload=bytes(1000))
    receipt = gateway_pb2.ConnectRequest().send.receipt.__class__(message_hash=bytes(32), sender_id="alice", recipient_id="bob", signature=bytes(64))

    async def scenario() -> tuple[int, int, int, int]:
        call, conn = connection(outbound_acks=True)
        conn.last_delivery_id = 100
        conn.start(lambda _c, _d: asyncio.sleep(0))
        for i in range(1, 51):
            conn.send("envelope", envelope)
            conn.send_reply("receipt", receipt, i)
            conn.ack(50 + i)
        await settle()
        counts = (len(call.written), conn._queued_send_bytes, conn._queued_replies, conn._queued_reply_bytes)
        await conn.close()
        return counts

    assert run(scenario) == (50 + 50 + 1, 0, 0, 0)
