"""A responder whose revocation data is stale (docs/PROTOCOL.md §17.3 item 7, §17.2 item 4), against a fake Connect stream.

New-user walkthrough finding (HIGH), the TS SDK's and this one's alike: a recipient whose revocation data was stale
acked and dropped the step 3 it could not check (``revocation_stale``), answered every envelope behind it with a
SessionReject, and its sender resealed at once until its budget was gone: nothing was ever delivered. Now a step 1
or step 3 it cannot check is left unacknowledged (its handshake held), the envelopes behind it are held, none is
refused, and all is processed once the data is fresh; and a sender's second reject in a row waits for the backoff.
"""

from __future__ import annotations

import asyncio

import pytest

from parley.agent import Agent
from parley.handshake import InitiatorHandshake
from parley.session import Session, now_ms
from parley.types import Backoff, Event, MessageType
from parley.v1 import gateway_pb2

from .helpers import World
from .test_delivery_contract import StaleRevocations, acked, attach, answer_handshake, reject, sent, start_loops, wait_for
from .test_gateway_replies import make_agent, run, seal


@pytest.fixture
def world() -> World:
    return World(now=now_ms())  # the agent's own checks (handshakes, expiry) run on the real clock


def stale_bob(world: World, events: list[Event]) -> tuple[Agent, Session, StaleRevocations]:
    """Bob's agent, his revocation data (handshakes and the sessions they make) stale until the test says otherwise."""
    agent, alice = make_agent(world, events)
    revocations = StaleRevocations()
    agent._revocations = revocations
    agent._config.revocations = revocations
    agent._handshake_timeout = 0.2  # a held step 3 must outlive it
    agent._max_unacked = 100
    return agent, alice, revocations


def refused(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "security" and e.fields["code"] == "handshake_failed"]


def test_a_step_1_is_left_unacknowledged_and_unanswered_until_the_data_is_fresh(world: World) -> None:
    events: list[Event] = []
    agent, alice, revocations = stale_bob(world, events)

    async def scenario() -> list[int]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        initiator, frame1 = InitiatorHandshake.start(world.config(alice.local), "bob")
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, handshake=frame1))
        await asyncio.sleep(0.6)
        assert sent(call, "handshake") == [] and acked(call) == set()  # not answered, not acked: the gateway keeps it
        revocations.stale = False
        await wait_for(lambda: len(sent(call, "handshake")) == 1)
        assert 1 in acked(call)
        frame3, session = initiator.receive(sent(call, "handshake")[0].handshake)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=2, handshake=frame3))
        for n in range(3):
            call.play(delivery=gateway_pb2.Delivery(delivery_id=3 + n, envelope=seal(session, {"n": n})))
        got = [await asyncio.wait_for(agent._app.get(), 3) for _ in range(3)]
        await asyncio.sleep(0.3)
        assert agent._app.qsize() == 0  # each once
        assert not sent(call, "session_reject")
        for t in tasks:
            t.cancel()
        await agent.close()
        return [m.content["n"] for m in got]

    assert run(scenario) == [0, 1, 2]
    assert len([e for e in events if e.kind == "security" and e.fields["code"] == "revocation_stale" and e.fields.get("stage") == "handshake"]) <= 1


def test_a_step_3_is_left_unacknowledged_its_handshake_held_past_the_timeout_and_the_envelopes_behind_it_are_not_refused(world: World) -> None:
    events: list[Event] = []
    agent, alice, revocations = stale_bob(world, events)
    revocations.stale = False

    async def scenario() -> list[int]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        initiator, frame1 = InitiatorHandshake.start(world.config(alice.local), "bob")
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, handshake=frame1))
        await wait_for(lambda: len(sent(call, "handshake")) == 1)
        frame3, session = initiator.receive(sent(call, "handshake")[0].handshake)  # alice holds the session …
        revocations.stale = True  # … and bob's data goes stale before he reads step 3
        call.play(delivery=gateway_pb2.Delivery(delivery_id=2, envelope=seal(session, {"n": 0})))  # overtook step 3
        call.play(delivery=gateway_pb2.Delivery(delivery_id=3, handshake=frame3))
        for n in (1, 2):
            call.play(delivery=gateway_pb2.Delivery(delivery_id=3 + n, envelope=seal(session, {"n": n})))
        await asyncio.sleep(0.8)  # four times the handshake timeout
        assert acked(call) == {1}
        assert not sent(call, "session_reject")
        assert session.id in agent._responding and not refused(events)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=6, handshake=frame3))  # a later copy takes its place
        await wait_for(lambda: 3 in acked(call))
        revocations.stale = False
        got = [await asyncio.wait_for(agent._app.get(), 3) for _ in range(3)]
        await wait_for(lambda: 6 in acked(call))
        for m in got:
            await m.ack()
        await wait_for(lambda: {2, 4, 5} <= acked(call))
        await asyncio.sleep(0.3)
        assert agent._app.qsize() == 0
        assert not sent(call, "session_reject") and len(sent(call, "receipt")) == 3
        for t in tasks:
            t.cancel()
        await agent.close()
        return [m.content["n"] for m in got]

    assert run(scenario) == [0, 1, 2]
    assert not refused(events)


def test_a_second_session_reject_in_a_row_waits_for_the_resend_backoff_before_the_next_reseal(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    agent._resend = Backoff(initial_s=0.5, max_s=5.0)

    async def scenario() -> None:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=30))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        first = sent(call, "envelope")[0].envelope
        call.play(**reject(alice, first, 1))  # the first reject: resealed at once, in a new session
        alice2 = await answer_handshake(world, call, alice, known=0, delivery_id=2)
        await wait_for(lambda: len(sent(call, "envelope")) == 2)
        second = sent(call, "envelope")[1].envelope
        call.play(**reject(alice2, second, 3))  # refused again: the next reseal waits 0.5 s
        await asyncio.sleep(0.3)
        assert len(sent(call, "handshake")) == 2  # no new handshake yet (step 1 and step 3 of the first reseal)
        await wait_for(lambda: len(sent(call, "handshake")) == 3, 2.0)
        assert not sending.done()
        sending.cancel()
        for t in tasks:
            t.cancel()
        await agent.close()

    run(scenario)
