"""Deliveries in batches and acks in batches on the Connect stream (§10.3), against a fake stream.

The agent asks for ``deliveries`` frames in its hello and hands each item over as a lone delivery.
With ``welcome.outbound_acks`` the acks of one frame (or one turn of the event loop) go out as one
``ack`` frame of at most 1 + 1024 ids; without, one ``ack`` frame per delivery, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parley.gateway import MAX_MORE_ACK_IDS, GatewayConnection
from parley.relay import sign_receipt
from parley.types import Event
from parley.v1 import gateway_pb2

from .helpers import World
from .test_gateway_replies import FakeCall, FakeChannel, make_agent, run, settle


def acks(call: FakeCall) -> list[list[int]]:
    """The ack frames written, each as its list of ids (delivery_id first)."""
    return [[r.ack.delivery_id, *r.ack.more_delivery_ids] for r in call.written if r.WhichOneof("kind") == "ack"]


@pytest.fixture
def world() -> World:
    return World()


def test_hello_asks_for_delivery_batches(world: World) -> None:
    bob = world.identity("bob")

    async def scenario() -> Any:
        call = FakeCall()
        call.play(challenge=gateway_pb2.Challenge(gateway_id="gw", nonce=bytes(32)))
        call.play(welcome=gateway_pb2.Welcome(agent_id="bob"))
        await GatewayConnection._authenticate(FakeChannel(), call, bob, "gw")  # type: ignore[arg-type]
        return call.written[0]

    hello = run(scenario)
    assert hello.WhichOneof("kind") == "hello"
    assert hello.hello.delivery_batches


@pytest.mark.parametrize("outbound_acks", [True, False])
def test_items_of_a_deliveries_frame_are_handed_over_in_order_and_acked_together(outbound_acks: bool) -> None:
    async def scenario() -> tuple[list[int], list[list[int]], int]:
        call = FakeCall()
        conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id="bob", outbound_acks=outbound_acks), "gw")  # type: ignore[arg-type]
        seen: list[int] = []

        async def on_delivery(c: GatewayConnection, delivery: Any) -> None:
            seen.append(delivery.delivery_id)
            c.ack(delivery.delivery_id)

        conn.start(on_delivery)
        call.play(deliveries=gateway_pb2.Deliveries(items=[gateway_pb2.Delivery(delivery_id=i) for i in (1, 2, 3)]))
        call.play(delivery=gateway_pb2.Delivery(delivery_id=4))
        await settle()
        last = conn.last_delivery_id
        await conn.close()
        return seen, acks(call), last

    seen, written, last = run(scenario)
    assert seen == [1, 2, 3, 4]
    assert last == 4
    if outbound_acks:
        assert written == [[1, 2, 3], [4]]
    else:
        assert written == [[1], [2], [3], [4]]


def test_an_ack_frame_carries_at_most_1025_ids() -> None:
    async def scenario() -> list[list[int]]:
        call = FakeCall()
        conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id="bob", outbound_acks=True), "gw")  # type: ignore[arg-type]
        conn.last_delivery_id = 2000
        conn.start(lambda _c, _d: asyncio.sleep(0))
        for i in range(1, 1031):  # in one turn of the event loop
            conn.ack(i)
        conn.ack(5000)  # never written to this stream: not acked
        await settle()
        await conn.close()
        return acks(call)

    written = run(scenario)
    assert [len(ids) for ids in written] == [1 + MAX_MORE_ACK_IDS, 5]
    assert [i for ids in written for i in ids] == list(range(1, 1031))


def test_close_sends_the_acks_not_sent_yet_before_it_half_closes() -> None:
    async def scenario() -> list[Any]:
        conn = GatewayConnection(FakeChannel(), FakeCall(), gateway_pb2.Welcome(agent_id="bob", outbound_acks=True), "gw")  # type: ignore[arg-type]
        conn.last_delivery_id = 2
        conn.ack(1)
        conn.ack(2)
        await conn.close()  # no writer task: what close queued stays in the queue
        queued = []
        while not conn._writes.empty():
            queued.append(conn._writes.get_nowait())
        return queued

    queued = run(scenario)
    assert len(queued) == 2 and queued[1] is None  # the ack frame, then the half-close
    assert [queued[0].ack.delivery_id, *queued[0].ack.more_delivery_ids] == [1, 2]


@pytest.mark.parametrize("outbound_acks", [True, False])
def test_agent_acks_the_receipts_of_a_deliveries_frame_in_one_frame(world: World, outbound_acks: bool) -> None:
    events: list[Event] = []
    agent, _alice = make_agent(world, events)
    alice = world.identity("alice")
    # receipts for messages bob never sent: each is dropped and its delivery acked
    receipts = [sign_receipt(alice, message_hash=bytes([i]) * 32, sender_id="bob", received_at_ms=world.now) for i in (1, 2, 3)]

    async def scenario() -> list[list[int]]:
        call = FakeCall()
        conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id="bob", outbound_acks=outbound_acks), "gw")  # type: ignore[arg-type]
        agent._attach(conn)
        call.play(deliveries=gateway_pb2.Deliveries(items=[gateway_pb2.Delivery(delivery_id=i + 1, receipt=r) for i, r in enumerate(receipts)]))
        await settle()
        written = acks(call)
        await agent.close()
        return written

    written = run(scenario)
    assert written == ([[1, 2, 3]] if outbound_acks else [[1], [2], [3]])
    assert not [e for e in events if e.kind == "gateway_refused"]


def test_close_writes_the_acks_not_sent_yet_before_it_ends_the_call() -> None:
    async def scenario() -> list[list[int]]:
        call = FakeCall()
        conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id="bob", outbound_acks=True), "gw")  # type: ignore[arg-type]

        async def on_delivery(c: GatewayConnection, delivery: Any) -> None:
            pass

        conn.start(on_delivery)
        conn.last_delivery_id = 3
        conn.ack(1)
        conn.ack(3)
        await conn.close()  # before the turn ends: the acks go out in close, before the call is cancelled
        return acks(call)

    assert run(scenario) == [[1, 3]]
