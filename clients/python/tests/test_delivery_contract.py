"""The delivery contract (docs/PROTOCOL.md §17) of the agent, against a fake Connect stream.

Bob's agent holds a session with alice (in memory); the test plays the gateway: it answers his sends,
delivers alice's envelopes, receipts, SessionRejects and handshake frames, and ends the stream.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parley.agent import Agent
from parley.gateway import GatewayConnection
from parley.handshake import ResponderHandshake
from parley.relay import sign_session_reject
from parley.session import DEFAULT_SKEW, Session, now_ms
from parley.types import Event, MessageType
from parley.v1 import gateway_pb2

from .helpers import World
from .test_gateway_replies import FakeCall, FakeChannel, make_agent, run


@pytest.fixture
def world() -> World:
    return World(now=now_ms())  # the agent's own checks (handshakes, expiry) run on the real clock


def attach(agent: Agent, *, outbound_acks: bool = True) -> tuple[FakeCall, GatewayConnection]:
    call = FakeCall()
    conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id=agent.agent_id, outbound_acks=outbound_acks), "gw")  # type: ignore[arg-type]
    agent._attach(conn)
    return call, conn


def sent(call: FakeCall, kind: str) -> list[Any]:
    """The ``send`` requests of one item kind written so far."""
    return [r.send for r in call.written if r.WhichOneof("kind") == "send" and r.send.WhichOneof("item") == kind]


def outbox_records(agent: Agent) -> dict[str, dict[str, Any]]:
    assert agent._store is not None
    return agent._store.load("outbox")


async def wait_for(predicate: Any, seconds: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def answer_handshake(world: World, call: FakeCall, alice: Session, *, known: int, delivery_id: int) -> Session:
    """Plays alice's side of the handshake bob's agent starts (its handshake frame number ``known``); returns her session."""
    await wait_for(lambda: len(sent(call, "handshake")) > known)
    step1 = sent(call, "handshake")[known]
    call.play(accepted=gateway_pb2.Accepted(request_id=step1.request_id, status=gateway_pb2.DELIVERY_STATUS_DELIVERED))
    responder, frame2 = ResponderHandshake.accept(world.config(alice.local), step1.handshake)
    call.play(delivery=gateway_pb2.Delivery(delivery_id=delivery_id, handshake=frame2))
    await wait_for(lambda: len(sent(call, "handshake")) > known + 1)
    return responder.receive(sent(call, "handshake")[known + 1].handshake)


def reject(alice: Session, envelope: Any, delivery_id: int) -> dict[str, Any]:
    """A delivery of alice's verified SessionReject of ``envelope``."""
    return {"delivery": gateway_pb2.Delivery(delivery_id=delivery_id, session_reject=sign_session_reject(alice.local, envelope, now_ms()))}


# §17.1: a message's validity is timestamp_ms + max_age (not + max_future as well).


def test_a_send_expires_at_its_timestamp_plus_max_age_also_when_resealed(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> list[tuple[int, int, int]]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        seen: list[tuple[int, int, int]] = []

        def note() -> None:
            [entry] = agent._outbox.values()
            seen.append((entry.expires_at_ms, entry.envelope.timestamp_ms, int(outbox_records(agent)[entry.id]["expires_at_ms"])))

        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        note()
        call.play(**reject(alice, sent(call, "envelope")[0].envelope, 1))
        await answer_handshake(world, call, alice, known=0, delivery_id=2)
        await wait_for(lambda: len(sent(call, "envelope")) == 2)
        note()
        sending.cancel()
        await agent.close()
        return seen

    seen = run(scenario)
    assert len(seen) == 2
    for expires, timestamp, recorded in seen:
        assert expires == recorded == timestamp + DEFAULT_SKEW.max_age_ms
