"""A send as its caller sees it: the id it is known by, a caller that stops waiting, the agent closing under it, and a
handshake that breaks with an unexpected error — against fake Connect streams and real state directories.

Review findings (each test fails on the code before the fix):

- a send made without an id is stored under the id made up for it; ``send(id=that id)`` — what the
  ``deadline_exceeded`` message points the caller at — looked up its hash, found nothing and sent a second message;
- cancelling ``send()`` while its first record was being written left a stored send this process never sent, settled
  or listed (it came back only after a restart); now, as in @parley/client, a started send goes on;
- ``close()`` during a send's first write left its caller waiting its full timeout for a ``deadline_exceeded`` saying
  that "the outbox keeps trying" of a closed agent; now it is ``cancelled``;
- an unexpected error in a handshake (a test hook with the old ``conn.send`` signature raised TypeError) became a
  retried ``handshake_failed`` that nothing logged: an invisible endless retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from parley.agent import Agent, ResendPolicy, _entry_id
from parley.errors import DeliveryError, IdentityError, ParleyError
from parley.session import now_ms
from parley.state import MemoryStateStore
from parley.types import Event, MessageType

from .helpers import World
from .test_delivery_contract import attach, sent, wait_for
from .test_first_contact import Gateway, connect_to, records
from .test_gateway_replies import make_agent, memory_agent, run
from .test_send_settled import receipt_for, restarted, settled, with_directory


@pytest.fixture
def world() -> World:
    return World(now=now_ms())  # the agents' own checks (handshakes, expiry) run on the real clock


def slow_writes(agent: Agent, kinds: tuple[str, ...], seconds: float) -> None:
    """Every write of a record of ``kinds`` takes ``seconds`` more (in the store's worker thread, as a slow disk)."""
    store = agent._store
    assert store is not None
    original = store.put

    def put(kind: str, name: str, record: dict[str, Any]) -> None:
        if kind in kinds:
            time.sleep(seconds)
        original(kind, name, record)

    store.put = put  # type: ignore[method-assign]


# -- the made-up id, handed back ------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["sealed", "unsealed"])
def test_a_send_with_the_id_made_up_for_an_earlier_one_waits_for_it_instead_of_sending_again(world: World, tmp_path: Path, state: str) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")
    if state == "unsealed":
        agent._current.clear()  # no session with alice: the send waits for one, recorded unsealed

    async def scenario() -> None:
        call, _ = attach(agent)
        with pytest.raises(DeliveryError) as timed_out:
            await agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=0.2)
        [pending] = agent.pending_sends()
        made_up = pending["id"]
        assert timed_out.value.code == "deadline_exceeded" and repr(made_up) in timed_out.value.detail
        # The caller does what the message says: waits on that send id (sending the same message with it).
        again = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id=made_up, timeout=5))
        await asyncio.sleep(0.3)
        assert [p["id"] for p in agent.pending_sends()] == [made_up] and agent.pending() == 1
        assert records(tmp_path / "bob", "outbox") + records(tmp_path / "bob", "unsealed") == 1
        if state == "sealed":
            assert len(sent(call, "envelope")) == 1
            [entry_id] = agent._outbox
            assert entry_id == made_up
            call.play(**receipt_for(alice, agent, entry_id, 1))
            receipt = await asyncio.wait_for(again, 3)
            assert receipt.recipient_id == "alice"
            await wait_for(lambda: len(settled(events)) == 1)
            assert [(e["id"], e["code"]) for e in settled(events)] == [(made_up, "ok")]
        else:
            assert not again.done() and list(agent._unsealed) == [made_up]
            again.cancel()
        await agent.close()

    run(scenario)


def test_an_earlier_releases_record_of_a_send_without_an_id_is_found_by_that_id(world: World, tmp_path: Path) -> None:
    # A record written before send ids were kept has no send_id: its name (the id made up for it) stands for it.
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")
    made_up = "0123456789abcdef0123456789abcdef"

    async def scenario() -> None:
        call, _ = attach(agent)
        with pytest.raises(DeliveryError):
            await agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=0.2)
        [entry] = agent._outbox.values()
        old = entry.record()
        del old["send_id"]
        old["id"] = made_up
        assert agent._store is not None
        agent._store.put("outbox", made_up, old)
        agent._store.delete("outbox", entry.id)
        await agent.close()
        events2: list[Event] = []
        again = await restarted(agent, world, tmp_path / "bob", events2)
        assert [p["id"] for p in again.pending_sends()] == [made_up]
        call2, _ = attach(again)
        waiting = asyncio.ensure_future(again.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id=made_up, timeout=5))
        await wait_for(lambda: len(sent(call2, "envelope")) >= 1)
        await asyncio.sleep(0.2)
        assert again.pending() == 1 and {s.envelope.SerializeToString() for s in sent(call2, "envelope")} == {old_envelope(old)}
        call2.play(**receipt_for(alice, again, made_up, 1))
        await asyncio.wait_for(waiting, 3)
        assert [(e["id"], e["code"]) for e in settled(events2)] == [(made_up, "ok")]
        await again.close()

    run(scenario)


def old_envelope(record: dict[str, Any]) -> bytes:
    from parley.encoding import b64url_decode

    return b64url_decode(record["envelope"])


def test_a_callers_id_that_is_another_sends_outbox_name_is_not_taken_for_it(world: World, tmp_path: Path) -> None:
    # The lookup by send id matches a send's own id only: a caller's id equal to the name (hash) of a send made with
    # another id is a send of its own.
    events: list[Event] = []
    agent, _ = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")

    async def scenario() -> None:
        call, _ = attach(agent)
        with pytest.raises(DeliveryError):
            await agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id="order-42", timeout=0.2)
        with pytest.raises(DeliveryError):
            await agent.send("alice", MessageType.STATUS_UPDATE, {"n": 2}, id=_entry_id("order-42"), timeout=0.2)
        assert sorted(p["id"] for p in agent.pending_sends()) == sorted(["order-42", _entry_id("order-42")])
        assert len(sent(call, "envelope")) == 2
        await agent.close()

    run(scenario)


# -- a caller that stops waiting while the first record is written ---------------------------------------------------


@pytest.mark.parametrize("state", ["sealed", "unsealed"])
def test_a_send_whose_caller_is_cancelled_while_its_first_record_is_written_goes_on_and_settles(world: World, tmp_path: Path, state: str) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")
    if state == "unsealed":
        agent._current.clear()  # no session with alice: recorded unsealed, then a handshake

    async def scenario() -> None:
        call, _ = attach(agent)
        if state == "sealed":  # counters reserved first, so that the next send writes only its outbox record
            first = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 0}, timeout=10))
            await wait_for(lambda: len(sent(call, "envelope")) == 1)
            [eid] = agent._outbox
            call.play(**receipt_for(alice, agent, eid, 1))
            await asyncio.wait_for(first, 3)
            await wait_for(lambda: records(tmp_path / "bob", "outbox") == 0)
        events.clear()
        slow_writes(agent, ("outbox", "unsealed"), 0.3)
        envelopes = len(sent(call, "envelope"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10), 0.1)
        await wait_for(lambda: agent.pending() == 1)
        [pending] = agent.pending_sends()
        assert pending["state"] == state and agent._claims == {}
        if state == "sealed":
            await wait_for(lambda: len(sent(call, "envelope")) == envelopes + 1)  # relayed, in this process
            call.play(**receipt_for(alice, agent, next(iter(agent._outbox)), 2))
            await wait_for(lambda: len(settled(events)) == 1)
            assert [(e["id"], e["code"]) for e in settled(events)] == [(pending["id"], "ok")] and agent.pending() == 0
        else:
            await wait_for(lambda: len([s for s in sent(call, "handshake") if s.handshake.step == 1]) == 1)  # its handshake started
        await agent.close()

    run(scenario)


# -- close() while the first record is written ------------------------------------------------------------------------


@pytest.mark.parametrize("kinds", [("outbox",), ("sessions", "outbox"), ("unsealed",)])
def test_close_while_a_sends_first_record_is_written_ends_the_call_cancelled_and_keeps_the_send(world: World, tmp_path: Path, kinds: tuple[str, ...]) -> None:
    events: list[Event] = []
    agent, _ = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")
    if kinds == ("unsealed",):
        agent._current.clear()
    slow_writes(agent, kinds, 0.3)

    async def scenario() -> None:
        attach(agent)
        started = time.monotonic()
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=3))
        await asyncio.sleep(0.1)
        await agent.close()
        with pytest.raises(DeliveryError) as error:
            await sending
        assert error.value.code == "cancelled" and time.monotonic() - started < 2
        held = error.value.held_send_id  # held in the state directory, under the id its send_settled will carry
        assert held is not None and held in error.value.detail
        assert not settled(events)  # no outcome: the restarted process resumes it
        events2: list[Event] = []
        again = await restarted(agent, world, tmp_path / "bob", events2)
        assert again.pending() == 1 and [p["id"] for p in again.pending_sends()] == [held]
        await again.close()

    run(scenario)


@pytest.mark.parametrize("end", ["close", "stop"])
def test_a_send_waiting_for_its_receipt_when_the_agent_closes_or_stops_names_the_send_it_holds(world: World, tmp_path: Path, end: str) -> None:
    # As @parley/client's heldSendId: the call's error says the send is held (and under which id its outcome comes
    # after a restart), so that the caller does not send it again under a new id; without a state directory (nothing
    # outlives the process) it names nothing.
    events: list[Event] = []
    agent, _ = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")
    plain, _ = make_agent(world, [])  # its state in memory

    async def scenario() -> None:
        for a in (agent, plain):
            attach(a)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=5))
        unkept = asyncio.ensure_future(plain.send("alice", MessageType.STATUS_UPDATE, {"n": 2}, timeout=5))
        await wait_for(lambda: agent.pending() == 1 and plain.pending() == 1)
        for a in (agent, plain):
            if end == "close":
                await a.close()
            else:
                a._stop(IdentityError("revoked", "this agent's certificate is revoked"))
        with pytest.raises(ParleyError) as error:
            await sending
        assert error.value.code == ("cancelled" if end == "close" else "revoked")
        [pending] = agent.pending_sends()
        assert error.value.held_send_id == pending["id"] and pending["id"] in error.value.detail
        with pytest.raises(ParleyError) as other:
            await unkept
        assert other.value.code == error.value.code and other.value.held_send_id is None
        if end == "stop":
            await agent.close()
            await plain.close()
        assert not settled(events)
        again = await restarted(agent, world, tmp_path / "bob", [])
        assert [p["id"] for p in again.pending_sends()] == [error.value.held_send_id]
        await again.close()

    run(scenario)


# -- an unexpected error in a handshake -------------------------------------------------------------------------------


def test_an_unexpected_error_in_a_handshake_is_logged_and_retried_as_internal(world: World, caplog: pytest.LogCaptureFixture) -> None:
    events: list[Event] = []
    bob = memory_agent(world.identity("bob"), world.trust, events, handshake_timeout=0.3, resend=ResendPolicy(initial_s=0.2, max_s=0.4))
    bob._store = MemoryStateStore()

    async def scenario() -> None:
        connect_to(bob, Gateway())
        conn = bob._conn
        assert conn is not None
        original = conn.send

        def send(kind: str, item: Any) -> "asyncio.Future[Any]":  # a hook written for send()'s old signature
            return original(kind, item)

        conn.send = send  # type: ignore[method-assign]
        with pytest.raises(ParleyError) as error:
            await bob._session_for("alice", time.monotonic() + 1)
        assert error.value.code == "internal" and "TypeError" in error.value.detail
        with pytest.raises(DeliveryError) as timed_out:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=1.0)
        assert timed_out.value.code == "deadline_exceeded" and bob.pending() == 1  # retried until it expires
        await bob.close()

    with caplog.at_level(logging.ERROR, logger="parley"):
        run(scenario)
    logged = [r for r in caplog.records if r.exc_info is not None and r.exc_info[0] is TypeError and "handshake" in r.getMessage()]
    assert len(logged) >= 3  # every attempt: the first, and the retries of the send's
