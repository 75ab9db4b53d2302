"""What ``send_settled`` reports, and that every send a caller issued gets exactly one (docs/PROTOCOL.md §17.2 items 2
and 8), as @parley/client's outbox does — against fake Connect streams and real state directories.

- Its ``id`` is the caller's: the ``id`` given to ``send(id=…)``, or, without one, the id the agent made up for the send;
  ``pending_sends()`` lists the same one. Also for a send a restarted process resumes, and for one restored from a
  record of the previous version (which kept only a hash of the caller's id).
- A send whose first record cannot be written (the state directory is not writable when it starts) settles with
  ``state_error`` right after the ``state_error`` event, its caller gets the error that stopped the agent, and the
  agent stays stopped (fail closed): later sends and ``messages()`` raise that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.agent import Agent, _entry_id
from parley.encoding import b64url_encode
from parley.envelope import encode_payload
from parley.errors import DeliveryError, ParleyError, StateError
from parley.relay import sign_receipt
from parley.session import DEFAULT_SKEW, Session, now_ms
from parley.state import KINDS, DirectoryStateStore
from parley.types import Event, MessageType
from parley.v1 import gateway_pb2

from .helpers import World
from .test_delivery_contract import GatewayCall, attach, sent, wait_for
from .test_first_contact import Gateway, connect_to, records
from .test_gateway_replies import make_agent, memory_agent, run

KEY = bytes(range(32))


@pytest.fixture
def world() -> World:
    return World(now=now_ms())  # the agents' own checks (handshakes, expiry) run on the real clock


def settled(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "send_settled"]


def with_directory(agent: Agent, path: Path) -> Agent:
    """``agent`` (not started) keeping its state in the real directory ``path``."""
    agent._store = DirectoryStateStore(path, KEY)
    return agent


async def restarted(agent: Agent, world: World, path: Path, events: list[Event]) -> Agent:
    """A new process of ``agent`` (same identity) on its state directory, its state loaded."""
    again = with_directory(memory_agent(agent.identity, world.trust, events), path)
    await again._load_state()
    return again


def receipt_for(alice: Session, agent: Agent, entry_id: str, delivery_id: int) -> dict[str, Any]:
    """A delivery of alice's verified receipt of the outbox entry ``entry_id``."""
    entry = agent._outbox[entry_id]
    receipt = sign_receipt(alice.local, message_hash=entry.message_hash, sender_id=agent.agent_id, received_at_ms=now_ms())
    return {"delivery": gateway_pb2.Delivery(delivery_id=delivery_id, receipt=receipt)}


@contextlib.contextmanager
def unwritable(state_dir: Path) -> Iterator[None]:
    """Every record directory of ``state_dir`` refuses writes, for real: mode 0500. A process that permission bits do
    not stop (root, CAP_DAC_OVERRIDE) gets each swapped for a regular file of the same name instead (ENOTDIR),
    put back afterwards."""
    dirs = [state_dir / kind for kind in KINDS]
    for d in dirs:
        os.chmod(d, 0o500)
    probe = dirs[0] / ".probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600))
    except PermissionError:
        swapped = False
    else:
        probe.unlink()
        swapped = True
        for d in dirs:
            os.chmod(d, 0o700)
            d.rename(d.with_name(f".{d.name}.aside"))
            d.write_bytes(b"")
    try:
        yield
    finally:
        for d in dirs:
            if swapped:
                d.unlink()
                d.with_name(f".{d.name}.aside").rename(d)
            os.chmod(d, 0o700)


# §17.2 item 8: send_settled carries the caller's id.


@pytest.mark.parametrize("send_id", ["order-42", None])
def test_a_send_settles_with_the_callers_id_as_pending_sends_lists_it(world: World, tmp_path: Path, send_id: str | None) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")

    async def scenario() -> str:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id=send_id, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        [pending] = agent.pending_sends()
        [entry_id] = agent._outbox
        call.play(**receipt_for(alice, agent, entry_id, 1))
        await asyncio.wait_for(sending, 3)
        await agent.close()
        return str(pending["id"])

    listed = run(scenario)
    [outcome] = settled(events)
    assert outcome["code"] == "ok" and outcome["id"] == listed
    if send_id is None:
        assert re.fullmatch(r"[0-9a-f]{32}", listed)  # made up for the send, as @parley/client does
    else:
        assert listed == send_id


def test_a_sealed_send_resumed_after_a_restart_settles_with_the_callers_id(world: World, tmp_path: Path) -> None:
    events: list[Event] = []
    events2: list[Event] = []
    agent, alice = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")

    async def scenario() -> tuple[list[str], list[str]]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id="order-42", timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        await agent.close()  # no receipt before the process stops
        with pytest.raises(ParleyError, match="agent closed"):
            await sending
        agent2 = await restarted(agent, world, tmp_path / "bob", events2)
        listed = [p["id"] for p in agent2.pending_sends()]
        call2, _ = attach(agent2)
        await wait_for(lambda: len(sent(call2, "envelope")) == 1)  # resent as it was recorded; nobody waits for it here
        [entry_id] = agent2._outbox
        call2.play(**receipt_for(alice, agent2, entry_id, 1))
        await wait_for(lambda: bool(settled(events2)))
        await agent2.close()
        return listed, [e["id"] for e in settled(events2)]

    listed, ids = run(scenario)
    assert listed == ids == ["order-42"] and settled(events) == []


def test_an_unsealed_send_resumed_after_a_restart_settles_with_the_callers_id(world: World, tmp_path: Path) -> None:
    events: list[Event] = []
    events2: list[Event] = []
    bob = with_directory(memory_agent(world.identity("bob"), world.trust, events), tmp_path / "bob")

    async def scenario() -> tuple[list[str], list[tuple[str, str]]]:
        connect_to(bob, GatewayCall())  # the handshake's step 1 gets no answer before the process stops
        sending = asyncio.ensure_future(bob.send("alice", MessageType.TASK_ASSIGNMENT, {"task": "index"}, id="order-7", timeout=10))
        await wait_for(lambda: records(tmp_path / "bob", "unsealed") == 1)
        await bob.close()
        with pytest.raises(ParleyError, match="agent closed"):
            await sending
        bob2 = await restarted(bob, world, tmp_path / "bob", events2)
        listed = [p["id"] for p in bob2.pending_sends()]
        refusing = Gateway()
        refusing.refuse = "policy_denied"  # the resumed handshake is refused for good: the send settles with that code
        connect_to(bob2, refusing)
        await wait_for(lambda: bool(settled(events2)))
        await bob2.close()
        return listed, [(e["id"], e["code"]) for e in settled(events2)]

    listed, outcomes = run(scenario)
    assert listed == ["order-7"] and outcomes == [("order-7", "policy_denied")] and settled(events) == []


def test_records_of_the_previous_version_load_and_settle_with_the_id_they_can(world: World, tmp_path: Path) -> None:
    # The previous version kept no caller's id: only its hash, as the record's name and id. Such a record settles with
    # that id — a send made without an id therefore with the one it was made up under, as before —, unless a caller
    # sends with its id again: then the record's id is that one's, and the outcome carries it.
    events: list[Event] = []
    events2: list[Event] = []
    agent, alice = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")

    async def scenario() -> tuple[set[str], str, set[str]]:
        call, _ = attach(agent)
        sends = [asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": n}, id=i, timeout=10)) for n, i in [(1, "order-1"), (2, None)]]
        await wait_for(lambda: len(sent(call, "envelope")) == 2)
        await agent.close()
        for s in sends:
            with pytest.raises(ParleyError, match="agent closed"):
                await s
        store = DirectoryStateStore(tmp_path / "bob", KEY)
        for name, record in store.load("outbox").items():  # as the previous version wrote them
            store.put("outbox", name, {k: v for k, v in record.items() if k != "send_id"})
        store.close()
        agent2 = await restarted(agent, world, tmp_path / "bob", events2)
        before = {p["id"] for p in agent2.pending_sends()}
        made_up = (before - {_entry_id("order-1")}).pop()
        call2, _ = attach(agent2)
        again = asyncio.ensure_future(agent2.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id="order-1", timeout=10))
        await wait_for(lambda: "order-1" in {p["id"] for p in agent2.pending_sends()})
        for n, entry_id in enumerate(list(agent2._outbox), 1):
            call2.play(**receipt_for(alice, agent2, entry_id, n))
        await asyncio.wait_for(again, 3)
        await wait_for(lambda: len(settled(events2)) == 2)
        await agent2.close()
        return before, made_up, {e["id"] for e in settled(events2)}

    before, made_up, ids = run(scenario)
    assert before == {_entry_id("order-1"), made_up} and re.fullmatch(r"[0-9a-f]{32}", made_up)
    assert ids == {"order-1", made_up}


def test_an_unsealed_record_of_the_previous_version_loads_and_gets_its_callers_id_back(world: World, tmp_path: Path) -> None:
    events: list[Event] = []
    bob_id = world.identity("bob")
    created = now_ms()
    store = DirectoryStateStore(tmp_path / "bob", KEY)
    legacy = {  # an unsealed record as the previous version wrote it for send(…, id="order-3")
        "v": 1,
        "id": _entry_id("order-3"),
        "to": "alice",
        "payload": b64url_encode(encode_payload(int(MessageType.TASK_ASSIGNMENT), {"task": "index"}, created)),
        "created_at_ms": created,
        "expires_at_ms": created + DEFAULT_SKEW.max_age_ms,
    }
    store.put("unsealed", _entry_id("order-3"), legacy)
    store.close()

    async def scenario() -> tuple[list[str], list[str], list[tuple[str, str]], str]:
        bob = with_directory(memory_agent(bob_id, world.trust, events), tmp_path / "bob")
        await bob._load_state()
        before = [p["id"] for p in bob.pending_sends()]
        again = asyncio.ensure_future(bob.send("alice", MessageType.TASK_ASSIGNMENT, {"task": "index"}, id="order-3", timeout=10))
        await wait_for(lambda: [p["id"] for p in bob.pending_sends()] == ["order-3"])
        after = [p["id"] for p in bob.pending_sends()]
        refusing = Gateway()
        refusing.refuse = "policy_denied"
        connect_to(bob, refusing)
        with pytest.raises(ParleyError) as error:
            await asyncio.wait_for(again, 5)
        await bob.close()
        return before, after, [(e["id"], e["code"]) for e in settled(events)], error.value.code

    before, after, outcomes, code = run(scenario)
    assert before == [_entry_id("order-3")] and after == ["order-3"]
    assert outcomes == [("order-3", "policy_denied")] and code == "policy_denied"


def test_a_record_whose_send_id_is_not_its_own_is_state_corrupt(world: World, tmp_path: Path) -> None:
    store = DirectoryStateStore(tmp_path / "bob", KEY)
    created = now_ms()
    store.put(
        "unsealed",
        _entry_id("order-3"),
        {
            "v": 1,
            "id": _entry_id("order-3"),
            "send_id": "order-4",  # the hash of another id: the record is not what it says
            "to": "alice",
            "payload": b64url_encode(encode_payload(int(MessageType.TASK_ASSIGNMENT), {"task": "index"}, created)),
            "created_at_ms": created,
            "expires_at_ms": created + DEFAULT_SKEW.max_age_ms,
        },
    )
    store.close()
    bob = with_directory(memory_agent(world.identity("bob"), world.trust, []), tmp_path / "bob")

    async def scenario() -> str:
        with pytest.raises(StateError) as error:
            await bob._load_state()
        await bob.close()
        return error.value.code

    assert run(scenario) == "state_corrupt"


def test_a_timed_out_send_without_an_id_names_the_one_made_up_for_it(world: World, tmp_path: Path) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    with_directory(agent, tmp_path / "bob")

    async def scenario() -> tuple[str, str]:
        attach(agent)
        with pytest.raises(DeliveryError) as error:
            await agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=0.2)
        [pending] = agent.pending_sends()
        await agent.close()
        return error.value.code + " " + error.value.detail, str(pending["id"])

    message, listed = run(scenario)
    assert message.startswith("deadline_exceeded ") and f"send id {listed!r}" in message


# §17.2 item 8: a send whose first record cannot be written settles (state_error) and the agent stops.


@pytest.mark.parametrize("first_write", ["unsealed record", "counter reservation", "outbox record"])
def test_a_send_whose_first_record_cannot_be_written_settles_with_state_error_and_stops_the_agent(world: World, tmp_path: Path, first_write: str) -> None:
    events: list[Event] = []
    path = tmp_path / "bob"
    if first_write == "unsealed record":  # first contact: no session with alice
        agent, alice = memory_agent(world.identity("bob"), world.trust, events), None
    else:
        agent, alice = make_agent(world, events)
    with_directory(agent, path)

    async def scenario() -> None:
        call, _ = attach(agent)
        if first_write == "outbox record":
            # A first send reserves the session's counters (and ends with its receipt): the next one writes only its
            # outbox record.
            assert alice is not None
            first = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 0}, timeout=10))
            await wait_for(lambda: len(sent(call, "envelope")) == 1)
            [entry_id] = agent._outbox
            call.play(**receipt_for(alice, agent, entry_id, 1))
            await asyncio.wait_for(first, 3)
            await wait_for(lambda: records(path, "outbox") == 0)
        events.clear()
        envelopes = len(sent(call, "envelope"))
        with unwritable(path):
            with pytest.raises(StateError) as raised:
                await agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id="order-9", timeout=10)
            await asyncio.sleep(0.1)
            with pytest.raises(StateError) as later:  # the agent stopped: nothing new starts
                await agent.send("alice", MessageType.STATUS_UPDATE, {"n": 2}, id="order-10", timeout=10)
            # In the order @parley/client tells them: the failure, then the send's outcome (once).
            told = [(e.kind, e.fields.get("id"), e.fields.get("code")) for e in events if e.kind in ("state_error", "send_settled")]
            assert told == [("state_error", None, "state_error"), ("send_settled", "order-9", "state_error")]
            [outcome] = settled(events)
            assert outcome["message_hash"] is None and outcome["peer"] == "alice" and outcome["receipt"] is None
            with pytest.raises(StateError) as receiving:
                async for _ in agent.messages():
                    pass
            assert raised.value.code == "state_error" and raised.value is agent._fatal is later.value is receiving.value
            assert agent.pending() == 0 and agent.pending_sends() == [] and len(sent(call, "envelope")) == envelopes
        assert records(path, "unsealed") == records(path, "outbox") == 0  # nothing of it held: a restart resumes nothing
        await agent.close()

    run(scenario)
