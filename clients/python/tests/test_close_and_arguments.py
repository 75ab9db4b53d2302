"""What a new user's walkthrough found, against fake Connect streams and real state directories:

- ``close()`` right after a receipt finishes the settled send's record deletion (and the other durable bookkeeping
  already decided) before the store closes: the restarted process neither resends the send nor reports it again, and
  a new ``send(id=…)`` with its id sends anew. (A crash between the report and the deletion still reports the send
  again after the restart: ``send_settled`` is at least once for a delivered send.)
- Arguments of the wrong type or out of range are ``malformed`` (a :class:`parley.ParleyError`), refused before
  anything is sent: ``send``'s ``message_type``, ``timeout`` (negative, zero, NaN, infinite), hashes, ``id``; and the
  options of ``connect`` before anything is opened.
- A ``policy_denied`` the gateway does not explain names every cause it may be (unknown to the gateway, revoked, the
  policy), not only the first contact's.
- ``messages()`` hands out nothing more once ``close()`` has begun, and ends.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from parley.agent import Message
from parley.errors import GatewayError, ParleyError
from parley.session import now_ms
from parley.types import Backoff, Event, MessageType
from parley.v1 import gateway_pb2

from .helpers import World
from .test_connect_options import connect_offline
from .test_delivery_contract import attach, sent, start_loops, wait_for
from .test_first_contact import connect_to, records
from .test_first_contact_lookup import ROUTE_DENIED, IntroducingGateway, sender
from .test_gateway_replies import make_agent, run, seal
from .test_send_settled import receipt_for, restarted, settled, with_directory


@pytest.fixture
def world() -> World:
    return World(now=now_ms())  # the agents' own checks (handshakes, expiry) run on the real clock


# Defect 1: close() right after a receipt left the settled send's record behind; the restart resent it and reported it
# a second time.


def test_close_right_after_a_receipt_deletes_the_sends_record_and_the_restart_neither_resends_nor_reports_it_again(world: World, tmp_path: Path) -> None:
    events: list[Event] = []
    events2: list[Event] = []
    agent, alice = make_agent(world, events)
    path = tmp_path / "bob"
    with_directory(agent, path)

    async def scenario() -> tuple[int, list[dict[str, Any]], int, list[tuple[str, str]], int]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id="order-42", timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        [entry_id] = agent._outbox
        # Another state write is under way (a session save, an inbox record, …) when the receipt comes: the record's
        # deletion waits for the state lock, and the caller — who has its receipt — closes right away.
        await agent._io.acquire()
        call.play(**receipt_for(alice, agent, entry_id, 1))
        await asyncio.wait_for(sending, 3)
        closing = asyncio.ensure_future(agent.close())
        await asyncio.sleep(0.05)
        agent._io.release()
        await asyncio.wait_for(closing, 5)
        left = records(path, "outbox")
        agent2 = await restarted(agent, world, path, events2)
        pending = agent2.pending_sends()
        call2, _ = attach(agent2)
        await asyncio.sleep(0.2)
        resent = len(sent(call2, "envelope"))
        # The id is free again: a new send with it is a new message (sent, settled on its own receipt).
        again = asyncio.ensure_future(agent2.send("alice", MessageType.STATUS_UPDATE, {"n": 2}, id="order-42", timeout=10))
        await wait_for(lambda: len(sent(call2, "envelope")) == 1)
        [entry_id2] = agent2._outbox
        call2.play(**receipt_for(alice, agent2, entry_id2, 1))
        await asyncio.wait_for(again, 3)
        await agent2.close()
        return left, pending, resent, [(e["id"], e["code"]) for e in settled(events2)], records(path, "outbox")

    left, pending, resent, settled2, left2 = run(scenario)
    assert left == 0 and pending == [] and resent == 0
    assert [(e["id"], e["code"]) for e in settled(events)] == [("order-42", "ok")]
    assert settled2 == [("order-42", "ok")] and left2 == 0  # the new send's, once


def test_a_send_settled_on_a_permanent_refusal_while_close_begins_is_deleted_and_reported_once(world: World, tmp_path: Path) -> None:
    # The refusal's deletion waits for the state lock; close() begins meanwhile (cancelling the relay that decided it):
    # the deletion and the report still happen, once, before the store closes — the send is not resumed after a restart.
    events: list[Event] = []
    events2: list[Event] = []
    agent, _ = make_agent(world, events)
    path = tmp_path / "bob"
    with_directory(agent, path)

    async def scenario() -> tuple[int, int]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id="order-9", timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        await agent._io.acquire()
        call.play(rejected=gateway_pb2.Rejected(request_id=sent(call, "envelope")[0].request_id, code="too_large", message="too large"))
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(agent.close())
        await asyncio.sleep(0.05)
        agent._io.release()
        await asyncio.wait_for(closing, 5)
        with pytest.raises(ParleyError):
            await sending
        agent2 = await restarted(agent, world, path, events2)
        pending = agent2.pending()
        await agent2.close()
        return records(path, "outbox"), pending

    assert run(scenario) == (0, 0)
    assert [(e["id"], e["code"]) for e in settled(events)] == [("order-9", "too_large")] and settled(events2) == []


# Defect 2: wrong-typed arguments are malformed ParleyErrors, refused before anything is sent.

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "args, options",
    [
        (("alice", "foo", {"n": 1}), {}),
        (("alice", None, {"n": 1}), {}),
        (("alice", 999, {"n": 1}), {}),
        (("alice", True, {"n": 1}), {}),
        (("alice", 5.0, {"n": 1}), {}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"timeout": "abc"}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"timeout": -1}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"timeout": 0}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"timeout": NAN}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"timeout": INF}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"timeout": True}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"parent_message_hash": "a" * 32}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"handoff_hash": 7}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"id": 123}),
        (("alice", MessageType.STATUS_UPDATE, {"n": 1}), {"id": ""}),
        ((None, MessageType.STATUS_UPDATE, {"n": 1}), {}),
        (("alice", MessageType.STATUS_UPDATE, {1, 2}), {}),
    ],
)
def test_a_wrong_argument_to_send_is_malformed_and_nothing_is_sent(world: World, args: tuple[Any, ...], options: dict[str, Any]) -> None:
    events: list[Event] = []
    agent, _ = make_agent(world, events)

    async def scenario() -> tuple[ParleyError, int, int]:
        call, _ = attach(agent)
        with pytest.raises(ParleyError) as error:
            await agent.send(*args, **options)
        await asyncio.sleep(0.05)
        written = len(sent(call, "envelope")) + len(sent(call, "handshake"))
        await agent.close()
        return error.value, written, agent.pending()

    error, written, pending = run(scenario)
    assert error.code == "malformed" and str(error).startswith("[malformed] ")
    assert written == 0 and pending == 0 and settled(events) == []


def test_a_timeout_error_names_the_argument(world: World) -> None:
    agent, _ = make_agent(world, [])

    async def scenario() -> str:
        attach(agent)
        with pytest.raises(ParleyError) as error:
            await agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=-1)
        await agent.close()
        return error.value.detail

    assert "timeout must be a positive, finite number of seconds" in run(scenario)


@pytest.mark.parametrize(
    "overrides",
    [
        {"gateway": None},
        {"gateway": 7443},
        {"gateway": ""},
        {"identity": None},
        {"trust_bundle": 42},
        {"tls": "yes"},
        {"state_dir": 42},
        {"state_key": b"short"},
        {"revocations": "none"},
        {"rekey_threshold": "1000"},
        {"send_timeout": "x"},
        {"send_timeout": -1},
        {"send_timeout": 0},
        {"send_timeout": NAN},
        {"handshake_timeout": INF},
        {"auth_timeout": None},
        {"connect_timeout": -1},
        {"connect_timeout": math.nan},
        {"max_unacked": "10"},
        {"max_unacked": 0},
        {"reconnect": "fast"},
        {"reconnect": Backoff(initial_s=-1)},
        {"resend": None},
        {"skew": 60},
        {"timeouts": {}},
        {"on_event": 42},
        {"accept_handshake": "yes"},
    ],
)
def test_a_wrong_option_to_connect_is_malformed_before_anything_is_opened(tmp_path: Path, overrides: dict[str, Any]) -> None:
    with pytest.raises(ParleyError) as error:
        connect_offline(tmp_path, **overrides)
    assert error.value.code == "malformed", error.value
    assert not (tmp_path / "state").exists()  # nothing opened


# Defect 3: a policy_denied the gateway does not explain names every cause it may be.


def test_a_refused_first_contact_without_a_registry_names_every_cause_the_gateway_does_not_tell_apart(world: World) -> None:
    events: list[Event] = []
    bob = sender(world, events, world.trust)  # a pinned bundle: no registry

    async def scenario() -> str:
        connect_to(bob, IntroducingGateway(known={"bob"}))  # alice may be unknown to it, or revoked: it says the same
        with pytest.raises(GatewayError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10)
        await bob.close()
        assert error.value.code == "policy_denied"
        return error.value.detail

    detail = run(scenario)
    assert detail.startswith(ROUTE_DENIED) and "does not say why" in detail
    assert "may be unknown to the gateway" in detail and "RegistryTrustBundle" in detail and "connect to the gateway once" in detail
    assert "revoked" in detail and "not allowed by the gateway's policy" in detail


def test_an_envelope_refused_policy_denied_in_a_session_names_revocation_as_a_possible_cause(world: World) -> None:
    events: list[Event] = []
    agent, _ = make_agent(world, events)

    async def scenario() -> str:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        call.play(rejected=gateway_pb2.Rejected(request_id=sent(call, "envelope")[0].request_id, code="policy_denied", message=ROUTE_DENIED))
        with pytest.raises(GatewayError) as error:
            await asyncio.wait_for(sending, 3)
        await agent.close()
        assert error.value.code == "policy_denied"
        return error.value.detail

    detail = run(scenario)
    assert detail.startswith(ROUTE_DENIED) and "'alice' may have been revoked" in detail and "policy" in detail
    assert [e["code"] for e in settled(events)] == ["policy_denied"]


# Defect 4: messages() hands out nothing more once close() has begun.


def test_messages_hands_out_nothing_more_once_close_has_begun(world: World) -> None:
    agent, alice = make_agent(world, [])

    async def scenario() -> tuple[list[Any], int]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        for n in (1, 2, 3):
            call.play(delivery=gateway_pb2.Delivery(delivery_id=n, envelope=seal(alice, {"n": n})))
        await wait_for(lambda: agent._app.qsize() == 3)
        handed: list[Any] = []
        stream = agent.messages()
        first = await stream.__anext__()
        handed.append(first.content)
        await agent.close()
        async for m in stream:  # two more were queued before close(): neither is handed out
            handed.append(m.content)
        later = [m async for m in agent.messages()]  # a new iteration ends at once too
        for t in tasks:
            t.cancel()
        return handed, len(later)

    handed, later = run(scenario)
    assert handed == [{"n": 1}] and later == 0


def test_messages_waiting_when_close_begins_ends(world: World) -> None:
    agent, _ = make_agent(world, [])

    async def scenario() -> list[Message]:
        attach(agent)
        got: list[Message] = []

        async def consume() -> None:
            async for m in agent.messages():
                got.append(m)

        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        await agent.close()
        await asyncio.wait_for(consumer, 3)
        return got

    assert run(scenario) == []
