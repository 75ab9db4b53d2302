"""A responder whose revocation data is stale (docs/PROTOCOL.md §17.3 item 7, §17.2 item 4), against a fake Connect stream.

New-user walkthrough finding (HIGH), the TS SDK's and this one's alike: a recipient whose revocation data was stale
acked and dropped the step 3 it could not check (``revocation_stale``), answered every envelope behind it with a
SessionReject, and its sender resealed at once until its budget was gone: nothing was ever delivered. Now a step 1
or step 3 it cannot check is left unacknowledged (its handshake held), the envelopes behind it are held, none is
refused, and all is processed once the data is fresh; and a sender's second reject in a row waits for the backoff.
"""

from __future__ import annotations

import asyncio
from typing import Any

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


# Review findings (as @parley/client's handshakes.ts and outbox.ts): a held step 3 was let go when its stream ended
# (its handshake then timed out and the envelopes behind it were refused); every step 1 of a sender waited (the dead
# ones of handshakes its initiator had given up on were answered first); up to 256 frames — the gateway's whole in-flight
# window — could wait, from one sender as well.


def frames_from(world: World, senders: list[str]) -> list[Any]:
    """A step 1 to bob from each of ``senders``."""
    return [InitiatorHandshake.start(world.config(world.identity(name)), "bob")[1] for name in senders]


def stale_reports(events: list[Event], code: str) -> list[dict[str, Any]]:
    return [e.fields for e in events if e.kind == "security" and e.fields.get("stage") == "handshake" and e.fields["code"] == code]


def test_a_held_step_3_keeps_its_handshake_across_a_stream_end_and_its_copy_on_the_next_stream_takes_its_place(world: World) -> None:
    events: list[Event] = []
    agent, alice, revocations = stale_bob(world, events)
    revocations.stale = False

    async def scenario() -> list[int]:
        call, conn = attach(agent)
        tasks = start_loops(agent)
        initiator, frame1 = InitiatorHandshake.start(world.config(alice.local), "bob")
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, handshake=frame1))
        await wait_for(lambda: len(sent(call, "handshake")) == 1)
        frame3, session = initiator.receive(sent(call, "handshake")[0].handshake)
        revocations.stale = True
        first = seal(session, {"n": 0})
        call.play(delivery=gateway_pb2.Delivery(delivery_id=2, envelope=first))  # overtook step 3: held
        call.play(delivery=gateway_pb2.Delivery(delivery_id=3, handshake=frame3))
        await wait_for(lambda: len(agent._deferred_frames) == 1)
        call.cancel()  # the stream ends (the agent reconnects: the gateway delivers what was not acked again)
        await wait_for(lambda: not conn.is_open)
        await asyncio.sleep(0.8)  # four handshake timeouts
        assert session.id in agent._responding and not refused(events)
        call2, conn2 = attach(agent)
        call2.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=first))
        call2.play(delivery=gateway_pb2.Delivery(delivery_id=2, handshake=frame3))
        call2.play(delivery=gateway_pb2.Delivery(delivery_id=3, envelope=seal(session, {"n": 1})))
        await wait_for(lambda: len(agent._deferred_frames) == 1 and agent._deferred_frames[0].conn is conn2)  # the copy took its place
        await asyncio.sleep(0.5)
        assert session.id in agent._responding and not refused(events) and acked(call2) == set()
        revocations.stale = False
        got = [await asyncio.wait_for(agent._app.get(), 3) for _ in range(2)]
        await wait_for(lambda: 2 in acked(call2))
        for m in got:
            await m.ack()
        await wait_for(lambda: {1, 3} <= acked(call2))
        await asyncio.sleep(0.3)
        assert agent._app.qsize() == 0 and not sent(call2, "session_reject") and len(sent(call2, "receipt")) == 2
        for t in tasks:
            t.cancel()
        await agent.close()
        return [m.content["n"] for m in got]

    assert run(scenario) == [0, 1]
    assert not refused(events)


@pytest.mark.parametrize("when", ["stale", "fresh before the retry"])
def test_only_the_newest_step_1_of_a_sender_waits_the_older_ones_are_acked(world: World, when: str) -> None:
    # An initiator has one handshake in flight per peer: an older step 1 waiting is one it gave up on (it timed out
    # and retried with a new session id). Answered first, it would take a responder slot for nothing.
    events: list[Event] = []
    agent, alice, revocations = stale_bob(world, events)

    async def scenario() -> None:
        call, _ = attach(agent)
        envelopes = asyncio.get_running_loop().create_task(agent._envelope_loop())
        gave_up, frame_a = InitiatorHandshake.start(world.config(alice.local), "bob")
        initiator, frame_b = InitiatorHandshake.start(world.config(alice.local), "bob")
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, handshake=frame_a))
        await wait_for(lambda: len(agent._deferred_frames) == 1)
        if when != "stale":
            revocations.stale = False  # fresh again, but the frames waiting are not processed yet
        call.play(delivery=gateway_pb2.Delivery(delivery_id=2, handshake=frame_b))
        await wait_for(lambda: 1 in acked(call))  # the older one: acked, never answered
        assert [bytes(d.frame.session_id) for d in agent._deferred_frames] == [bytes(frame_b.session_id)]
        assert sent(call, "handshake") == []
        revocations.stale = False
        agent._retry_frames()
        await wait_for(lambda: 2 in acked(call))
        [step2] = sent(call, "handshake")
        assert bytes(step2.handshake.session_id) == bytes(frame_b.session_id) and list(agent._responding) == [bytes(frame_b.session_id)]
        initiator.receive(step2.handshake)  # the live handshake's step 2
        await asyncio.sleep(0.3)
        assert len(sent(call, "handshake")) == 1  # the one it gave up on was never answered
        envelopes.cancel()
        await agent.close()

    run(scenario)
    assert len(stale_reports(events, "revocation_stale")) == 1  # reported once for the sender's handshake


def test_handshake_frames_waiting_are_bounded_below_the_gateways_window_a_step_3_takes_the_place_of_a_step_1(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import parley.agent as agent_module

    assert agent_module.MAX_DEFERRED_FRAMES == 64 and agent_module.MAX_DEFERRED_FRAMES_PER_SENDER == 5
    events: list[Event] = []
    agent, alice, revocations = stale_bob(world, events)
    revocations.stale = False

    async def scenario() -> None:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        initiator, frame1 = InitiatorHandshake.start(world.config(alice.local), "bob")
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, handshake=frame1))
        await wait_for(lambda: len(sent(call, "handshake")) == 1)
        frame3, session = initiator.receive(sent(call, "handshake")[0].handshake)
        revocations.stale = True
        others = frames_from(world, [f"peer-{i}" for i in range(70)])
        for i, frame in enumerate(others):
            call.play(delivery=gateway_pb2.Delivery(delivery_id=10 + i, handshake=frame))
        await wait_for(lambda: acked(call) == {1} | set(range(10 + 64, 10 + 70)))  # beyond 64: acked and dropped
        assert len(agent._deferred_frames) == 64
        assert len(stale_reports(events, "rate_limited")) == 6
        # The step 3 of a handshake bob answers takes the place of the oldest waiting step 1 (its initiator retries).
        call.play(delivery=gateway_pb2.Delivery(delivery_id=100, handshake=frame3))
        await wait_for(lambda: 10 in acked(call))
        assert len(agent._deferred_frames) == 64 and agent._deferred_frames[-1].key[0] == 3
        await asyncio.sleep(0.5)
        assert session.id in agent._responding and not refused(events)  # held past its timeout
        revocations.stale = False
        await wait_for(lambda: 100 in acked(call) and not agent._deferred_frames, 5)
        assert len(agent._sessions) == 2  # make_agent's session with alice, and this one
        for t in tasks:
            t.cancel()
        await agent.close()

    run(scenario)


def test_one_sender_takes_at_most_its_share_of_the_frames_waiting(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import parley.agent as agent_module

    monkeypatch.setattr(agent_module, "MAX_DEFERRED_FRAMES_PER_SENDER", 2)
    events: list[Event] = []
    agent, alice, revocations = stale_bob(world, events)
    revocations.stale = False

    async def scenario() -> None:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        step3s = []
        for n in range(2):  # two handshakes alice started, answered (step 2) while bob's data was fresh
            initiator, frame1 = InitiatorHandshake.start(world.config(alice.local), "bob")
            call.play(delivery=gateway_pb2.Delivery(delivery_id=1 + n, handshake=frame1))
            await wait_for(lambda: len(sent(call, "handshake")) == n + 1)
            step3s.append(initiator.receive(sent(call, "handshake")[n].handshake)[0])
        revocations.stale = True
        for n, frame3 in enumerate(step3s):
            call.play(delivery=gateway_pb2.Delivery(delivery_id=10 + n, handshake=frame3))
        await wait_for(lambda: len(agent._deferred_frames) == 2)
        [frame1] = frames_from(world, ["alice"])
        call.play(delivery=gateway_pb2.Delivery(delivery_id=20, handshake=frame1))  # beyond alice's share: dropped
        [carol] = frames_from(world, ["carol"])
        call.play(delivery=gateway_pb2.Delivery(delivery_id=21, handshake=carol))  # another sender's: waits
        await wait_for(lambda: 20 in acked(call) and len(agent._deferred_frames) == 3)
        assert 21 not in acked(call) and [d.key[2] for d in agent._deferred_frames] == ["alice", "alice", "carol"]
        for t in tasks:
            t.cancel()
        await agent.close()

    run(scenario)


def test_a_new_send_and_a_reconnect_do_not_cut_a_refused_reseals_backoff_short(world: World) -> None:
    # @parley/client's outbox resealed every send waiting for a session when a new send to the peer (or a reconnect)
    # came, also one whose reseal had just been refused. Here a reseal is its own task, asleep for its backoff: a new
    # send to the peer and a reconnect do not wake it.
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    agent._resend = Backoff(initial_s=1.0, max_s=5.0)

    async def scenario() -> None:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=30))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        call.play(**reject(alice, sent(call, "envelope")[0].envelope, 1))  # resealed at once, in a new session
        alice2 = await answer_handshake(world, call, alice, known=0, delivery_id=2)
        await wait_for(lambda: len(sent(call, "envelope")) == 2)
        call.play(**reject(alice2, sent(call, "envelope")[1].envelope, 3))  # refused again: the next reseal waits 1 s
        refused_at = asyncio.get_running_loop().time()
        await wait_for(lambda: not agent._current)
        other = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 2}, timeout=30))  # a new send
        await answer_handshake(world, call, alice, known=2, delivery_id=4)
        await wait_for(lambda: len(sent(call, "envelope")) == 3)
        call2, _ = attach(agent)  # and a reconnect
        await asyncio.sleep(0.3)
        assert asyncio.get_running_loop().time() - refused_at < 0.9
        assert len([e for e in events if e.kind == "resealed"]) == 1
        assert all(s.envelope.SerializeToString() != sent(call, "envelope")[1].envelope.SerializeToString() for s in sent(call2, "envelope"))
        await wait_for(lambda: len([e for e in events if e.kind == "resealed"]) == 2, 3)
        assert asyncio.get_running_loop().time() - refused_at >= 1.0
        for f in (sending, other):
            f.cancel()
        for t in tasks:
            t.cancel()
        await agent.close()

    run(scenario)
