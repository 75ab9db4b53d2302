"""Copies of a message the application holds (docs/PROTOCOL.md §17.3 item 3), against fake Connect streams.

A message taken and not yet acknowledged by the application stays in the inbox; a copy of it (the sender's
resend, a peer replaying its own envelope) is acked with the application's ack — one delivery per open stream is
enough, at most :data:`parley.agent.MAX_DELIVERIES_PER_MESSAGE` in all. Every further copy is acked at once: the
gateway holds each unacked delivery in the stream's in-flight set (256), so held copies would fill the stream and
nothing else would reach the agent until its application acks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parley.agent import MAX_DELIVERIES_PER_MESSAGE, Agent, _Delivered
from parley.gateway import GatewayConnection, StreamEnd
from parley.session import now_ms
from parley.types import Backoff, Event
from parley.v1 import gateway_pb2

from .helpers import World
from .test_gateway_replies import FakeCall, FakeChannel, make_agent, run, seal

COPIES = 300  # more than a gateway's in-flight bound for one stream (256)


@pytest.fixture
def world() -> World:
    return World(now=now_ms())


def stream(agent: Agent, outbound_acks: bool) -> tuple[FakeCall, GatewayConnection]:
    call = FakeCall()
    conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id=agent.agent_id, outbound_acks=outbound_acks), "gw")  # type: ignore[arg-type]
    return call, conn


def acked(call: FakeCall) -> list[int]:
    """Every delivery id acked on a stream so far: Ack frames and the acks receipts carry (§10.3)."""
    ids: list[int] = []
    for r in call.written:
        if r.WhichOneof("kind") == "ack":
            ids += [r.ack.delivery_id, *r.ack.more_delivery_ids]
        elif r.send.ack_delivery_id:
            ids.append(r.send.ack_delivery_id)
    return ids


def receipts(call: FakeCall) -> int:
    return sum(1 for r in call.written if r.WhichOneof("kind") == "send" and r.send.WhichOneof("item") == "receipt")


def duplicates(events: list[Event]) -> int:
    return sum(1 for e in events if e.kind == "duplicate")


async def wait_for(predicate: Any, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
    for _ in range(20):  # the acks of this turn go out
        await asyncio.sleep(0)


@pytest.mark.parametrize("outbound_acks", [True, False])
def test_copies_of_a_held_message_keep_one_delivery_per_open_stream_and_are_acked_at_once(world: World, monkeypatch: pytest.MonkeyPatch, outbound_acks: bool) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    agent._reconnect = Backoff(initial_s=0.01, max_s=0.02)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        call1, conn1 = stream(agent, outbound_acks)
        agent._attach(conn1)
        loop = asyncio.get_running_loop().create_task(agent._envelope_loop())
        envelope = seal(alice, {"n": 1})
        call1.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=envelope))
        message = await asyncio.wait_for(agent._app.get(), 3)  # the application holds it, not acked
        for i in range(2, COPIES + 2):  # the same envelope again and again, on the same stream
            call1.play(delivery=gateway_pb2.Delivery(delivery_id=i, envelope=envelope))
        await wait_for(lambda: duplicates(events) == COPIES)
        seen["kept on stream 1"] = [(c is conn1, d) for c, d in message._entry.deliveries]
        seen["acked on stream 1"] = acked(call1)
        seen["receipts on stream 1"] = receipts(call1)

        # The stream ends; the agent reconnects to stream 2, which delivers the message again, many times.
        call2, conn2 = stream(agent, outbound_acks)

        async def open_(**_kw: Any) -> GatewayConnection:
            return conn2

        monkeypatch.setattr(GatewayConnection, "open", open_)
        call1.cancel()
        await wait_for(lambda: agent._conn is conn2)
        for i in range(1, COPIES + 1):
            call2.play(delivery=gateway_pb2.Delivery(delivery_id=i, envelope=envelope))
        await wait_for(lambda: duplicates(events) == 2 * COPIES)
        seen["kept on stream 2"] = [(c is conn2, d) for c, d in message._entry.deliveries]
        seen["acked on stream 2"] = acked(call2)
        seen["receipts on stream 2"] = receipts(call2)

        written1 = len(call1.written)
        await message.ack()
        await wait_for(lambda: receipts(call2) >= 1)
        seen["acked after the ack"] = acked(call2)
        seen["receipts after the ack"] = receipts(call2)
        seen["written to stream 1 after it ended"] = len(call1.written) - written1

        call2.play(delivery=gateway_pb2.Delivery(delivery_id=COPIES + 1, envelope=envelope))  # acked before: its receipt again
        await wait_for(lambda: duplicates(events) == 2 * COPIES + 1)
        seen["receipts after a later copy"] = receipts(call2)
        seen["acked after a later copy"] = acked(call2)
        loop.cancel()
        await agent.close()
        return seen

    seen = run(scenario)
    # Stream 1: its first delivery is kept for the application's ack; every copy after it is acked at once.
    assert seen["kept on stream 1"] == [(True, 1)]
    assert sorted(seen["acked on stream 1"]) == list(range(2, COPIES + 2))
    assert seen["receipts on stream 1"] == 0
    # Stream 2: stream 1's delivery is dropped (it ended), stream 2's first kept, the others acked at once.
    assert seen["kept on stream 2"] == [(True, 1)]
    assert sorted(seen["acked on stream 2"]) == list(range(2, COPIES + 1))
    assert seen["receipts on stream 2"] == 0
    # The application's ack: one receipt, and the kept delivery acked (each delivery of stream 2 acked once).
    assert seen["receipts after the ack"] == 1
    assert sorted(seen["acked after the ack"]) == list(range(1, COPIES + 1))
    assert seen["written to stream 1 after it ended"] == 0
    # A copy of a message acknowledged before gets its stored receipt again, with the ack of its delivery.
    assert seen["receipts after a later copy"] == 2
    assert sorted(seen["acked after a later copy"]) == list(range(1, COPIES + 2))


def test_at_most_16_deliveries_of_a_held_message_are_kept(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        call, current = stream(agent, True)
        agent._attach(current)
        envelope = seal(alice, {"n": 1})
        # Open streams other than the agent's current one (as after streams that have not ended yet): the first
        # delivery of the message comes on one of them; a copy on each of the others is kept, up to 16 in all.
        others = [stream(agent, True)[1] for _ in range(MAX_DELIVERIES_PER_MESSAGE + 1)]

        def kept() -> list[tuple[int | str, int]]:
            return [(others.index(c) if c in others else "current", d) for c, d in message._entry.deliveries]

        await agent._on_envelope(_Delivered(others[0], 1, envelope))
        message = agent._app.get_nowait()
        for conn in others[1:MAX_DELIVERIES_PER_MESSAGE]:
            for delivery_id in (1, 2, 3):  # one kept per stream, the other two acked at once
                await agent._on_envelope(_Delivered(conn, delivery_id, envelope))
        seen["kept"] = kept()
        # 16 kept: a copy on the current stream is acked at once, there.
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=envelope))
        copy = await asyncio.wait_for(agent._envelopes.get(), 3)  # as the envelope loop takes it
        await agent._on_envelope(copy)
        await wait_for(lambda: True)
        seen["kept at the bound"] = len(message._entry.deliveries)
        seen["acked at the bound"] = acked(call)
        # One of those streams ends: its delivery is dropped, and a copy on another open stream is kept again.
        others[3]._finish(StreamEnd("unavailable", "gateway stream ended", False))
        await agent._on_envelope(_Delivered(others[MAX_DELIVERIES_PER_MESSAGE], 7, envelope))
        seen["kept after one ended"] = kept()
        call.written.clear()
        await message.ack()
        await wait_for(lambda: receipts(call) >= 1)
        seen["receipts"] = receipts(call)
        seen["kept after the ack"] = len(message._entry.deliveries)
        await agent.close()
        return seen

    seen = run(scenario)
    assert seen["kept"] == [(i, 1) for i in range(MAX_DELIVERIES_PER_MESSAGE)]
    assert seen["kept at the bound"] == MAX_DELIVERIES_PER_MESSAGE
    assert seen["acked at the bound"] == [1]
    assert seen["kept after one ended"] == [(i, 1) for i in range(MAX_DELIVERIES_PER_MESSAGE) if i != 3] + [(MAX_DELIVERIES_PER_MESSAGE, 7)]
    assert seen["receipts"] == 1 and seen["kept after the ack"] == 0
