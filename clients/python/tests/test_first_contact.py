"""Sends that wait for a session (docs/PROTOCOL.md §17.1, §17.2), against fake Connect streams.

A send to a peer without a session is recorded durably (an ``unsealed`` record) before it waits for the handshake,
and ends in exactly one ``send_settled``: a verified receipt, ``expired``, or the handshake's permanent failure —
whatever the caller's own timeout, a process restart, or an offline recipient (whose step 1 the gateway stores,
``QUEUED``). Timeouts are shortened instead of slept through: a handshake timeout of 0.3 s stands for the 10 s
default, and a step 2 that comes 1.5 s after its step 1 for one that comes minutes later.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from parley.agent import Agent, Message, ResendPolicy
from parley.envelope import message_hash
from parley.errors import DeliveryError, GatewayError, IdentityError, ParleyError, StateError
from parley.gateway import GatewayConnection
from parley.identity import Revocation
from parley.relay import sign_receipt
from parley.session import DEFAULT_SKEW, Session, SkewLimits, now_ms
from parley.state import DirectoryStateStore, MemoryStateStore
from parley.types import Event, MessageType
from parley.v1 import gateway_pb2

from .helpers import World
from .test_delivery_contract import GatewayCall, Relay, answer_handshake, reject, sent, start_loops, wait_for
from .test_gateway_replies import FakeChannel, memory_agent, run

KEY = bytes(range(32))
QUEUED = gateway_pb2.DELIVERY_STATUS_QUEUED
DELIVERED = gateway_pb2.DELIVERY_STATUS_DELIVERED


@pytest.fixture
def world() -> World:
    return World(now=now_ms())  # the agents' own checks (handshakes, expiry) run on the real clock


class Gateway(GatewayCall):
    """A stream whose gateway answers every item that asks for an answer: ``status`` (QUEUED while the recipient is
    offline, DELIVERED once it is connected), or ``refuse`` (a code) for handshake frames; ``answer=False`` leaves
    items unanswered until the test plays the answer."""

    def __init__(self, status: int = DELIVERED) -> None:
        super().__init__()
        self.status = status
        self.refuse: str | None = None
        self.answer = True

    async def write(self, request: Any) -> None:
        self.written.append(request)
        if not self.answer or request.WhichOneof("kind") != "send" or request.send.quiet:
            return
        if self.refuse is not None and request.send.WhichOneof("item") == "handshake":
            self.play(rejected=gateway_pb2.Rejected(request_id=request.send.request_id, code=self.refuse, message="no such agent"))
        else:
            self.play(accepted=gateway_pb2.Accepted(request_id=request.send.request_id, status=self.status))  # type: ignore[arg-type]


def connect_to(agent: Agent, call: GatewayCall) -> None:
    agent._attach(GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id=agent.agent_id, outbound_acks=True), "gw"))  # type: ignore[arg-type]


def step1s(call: GatewayCall) -> list[Any]:
    return [s.handshake for s in sent(call, "handshake") if s.handshake.step == 1]


def settled(events: list[Event]) -> list[str]:
    return [e.fields["code"] for e in events if e.kind == "send_settled"]


def records(path: Path, kind: str) -> int:
    return len(list((path / kind).glob("*.rec")))


async def collect(agent: Agent, handed: list[Message]) -> None:
    async for message in agent.messages():
        handed.append(message)


async def relay_handshake(gw: Relay, b_call: GatewayCall, a_call: GatewayCall) -> None:
    """Bob's handshake with alice through the gateway: his step 1 (the next one the relay has not handed out) to her,
    her step 2 to him, his step 3 to her."""
    gw.deliver(a_call, handshake=await gw.next(b_call, "handshake"))
    gw.deliver(b_call, handshake=await gw.next(a_call, "handshake"))
    gw.deliver(a_call, handshake=await gw.next(b_call, "handshake"))


async def deliver_and_ack(gw: Relay, b_call: GatewayCall, a_call: GatewayCall, handed: list[Message]) -> None:
    """Bob's next envelope to alice, her application's ack, her receipt to bob."""
    gw.deliver(a_call, envelope=await gw.next(b_call, "envelope"))
    await wait_for(lambda: len(handed) == 1)
    await handed[0].ack()
    gw.deliver(b_call, receipt=await gw.next(a_call, "receipt"))


def test_first_contact_with_an_offline_recipient_waits_for_its_step_2_and_delivers_once(world: World, tmp_path: Path) -> None:
    # Review finding: the step 1 the gateway stored for an offline recipient (QUEUED) was abandoned after the
    # handshake timeout, and the send failed although the recipient would have answered once connected.
    a_events: list[Event] = []
    b_events: list[Event] = []
    alice = memory_agent(world.identity("alice"), world.trust, a_events)
    alice._store = MemoryStateStore()
    bob = memory_agent(world.identity("bob"), world.trust, b_events, handshake_timeout=0.3, send_timeout=30)
    bob._store = DirectoryStateStore(tmp_path / "bob", KEY)
    gw = Relay()

    async def scenario() -> None:
        b_call = Gateway(status=QUEUED)  # alice is offline: the gateway stores what is sent to her
        connect_to(bob, b_call)
        sending = asyncio.ensure_future(bob.send("alice", MessageType.TASK_ASSIGNMENT, {"task": "index"}))
        await wait_for(lambda: len(step1s(b_call)) == 1)
        # Recorded before it waits for the session: unsealed, listed as pending.
        assert records(tmp_path / "bob", "unsealed") == 1 and records(tmp_path / "bob", "outbox") == 0
        [waiting] = bob.pending_sends()
        assert bob.pending() == 1 and (waiting["to"], waiting["state"], waiting["message_hash"]) == ("alice", "unsealed", None)
        await asyncio.sleep(1.5)  # five handshake timeouts: the stored step 1 is still waited on, not abandoned or started again
        assert len(step1s(b_call)) == 1 and len(bob._initiating) == 1 and not sending.done()

        # Alice connects; the gateway drains her mailbox: bob's step 1, which she answers.
        a_call = GatewayCall()
        connect_to(alice, a_call)
        tasks = start_loops(alice)
        handed: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(alice, handed)))
        b_call.status = DELIVERED
        await relay_handshake(gw, b_call, a_call)
        await deliver_and_ack(gw, b_call, a_call, handed)
        receipt = await asyncio.wait_for(sending, 5)
        assert receipt.message_hash == handed[0].message_hash and receipt.recipient_id == "alice"
        await asyncio.sleep(0.3)
        assert [m.content for m in handed] == [{"task": "index"}] and len(sent(b_call, "envelope")) == 1
        assert len(step1s(b_call)) == 1
        # §17.2 item 7: sealed when the session came, stamped when it was sent: its lifetime did not start again.
        assert handed[0].envelope.timestamp_ms == waiting["created_at_ms"] == waiting["expires_at_ms"] - DEFAULT_SKEW.max_age_ms
        assert settled(b_events) == ["ok"] and bob.pending() == 0
        assert records(tmp_path / "bob", "unsealed") == 0 and records(tmp_path / "bob", "outbox") == 0
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob.close()

    run(scenario)


def test_a_caller_timeout_shorter_than_the_handshake_is_not_an_outcome_the_send_is_delivered_later(world: World) -> None:
    # Review finding: the handshake ran under the caller's timeout; when that was the shorter, the send failed
    # (handshake_failed) with nothing recorded, and no send_settled ever followed.
    a_events: list[Event] = []
    b_events: list[Event] = []
    alice = memory_agent(world.identity("alice"), world.trust, a_events)
    alice._store = MemoryStateStore()
    bob = memory_agent(world.identity("bob"), world.trust, b_events)
    bob._store = MemoryStateStore()
    gw = Relay()

    async def scenario() -> None:
        a_call, b_call = GatewayCall(), GatewayCall()
        connect_to(alice, a_call)
        connect_to(bob, b_call)
        tasks = start_loops(alice)
        handed: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(alice, handed)))
        with pytest.raises(DeliveryError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=0.2)
        assert error.value.code == "deadline_exceeded" and bob.pending() == 1 and settled(b_events) == []
        await asyncio.sleep(0.3)  # the gateway is slow to pass the handshake on
        await relay_handshake(gw, b_call, a_call)
        await deliver_and_ack(gw, b_call, a_call, handed)
        await wait_for(lambda: settled(b_events) == ["ok"])
        [outcome] = [e for e in b_events if e.kind == "send_settled"]
        assert outcome.fields["receipt"].message_hash == handed[0].message_hash
        await asyncio.sleep(0.3)
        assert [m.content for m in handed] == [{"n": 1}] and bob.pending() == 0 and settled(b_events) == ["ok"]
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob.close()

    run(scenario)


def test_a_send_waiting_for_its_handshake_when_the_process_stops_resumes_after_the_restart(world: World, tmp_path: Path) -> None:
    # Review finding: nothing durable held a send until it was sealed: a process that died during the handshake lost it.
    a_events: list[Event] = []
    b_events: list[Event] = []
    b2_events: list[Event] = []
    alice = memory_agent(world.identity("alice"), world.trust, a_events)
    alice._store = MemoryStateStore()
    bob_id = world.identity("bob")
    bob = memory_agent(bob_id, world.trust, b_events)
    bob._store = DirectoryStateStore(tmp_path / "bob", KEY)
    gw = Relay()

    async def scenario() -> None:
        await bob._load_state()
        b_call = GatewayCall()
        connect_to(bob, b_call)
        sending = asyncio.ensure_future(bob.send("alice", MessageType.TASK_ASSIGNMENT, {"task": "index"}, id="order-7", timeout=30))
        first = await gw.next(b_call, "handshake")  # no answer comes before the process stops
        await bob.close()
        with pytest.raises(ParleyError) as error:
            await sending
        assert error.value.code == "cancelled" and records(tmp_path / "bob", "unsealed") == 1

        bob2 = memory_agent(bob_id, world.trust, b2_events)
        bob2._store = DirectoryStateStore(tmp_path / "bob", KEY)
        await bob2._load_state()
        assert bob2.pending() == 1 and [p["state"] for p in bob2.pending_sends()] == ["unsealed"]
        a_call, b2_call = GatewayCall(), GatewayCall()
        connect_to(alice, a_call)
        tasks = start_loops(alice)
        handed: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(alice, handed)))
        connect_to(bob2, b2_call)  # resumed: a new handshake
        again = asyncio.ensure_future(bob2.send("alice", MessageType.TASK_ASSIGNMENT, {"task": "index"}, id="order-7", timeout=30))
        await relay_handshake(gw, b2_call, a_call)
        assert bytes(sent(b2_call, "handshake")[0].handshake.session_id) != bytes(first.session_id)
        await deliver_and_ack(gw, b2_call, a_call, handed)
        receipt = await asyncio.wait_for(again, 5)  # the caller's retry with the same id waits for the resumed send
        assert receipt.message_hash == handed[0].message_hash
        await asyncio.sleep(0.3)
        assert [m.content for m in handed] == [{"task": "index"}] and len(sent(b2_call, "envelope")) == 1
        assert settled(b_events) == [] and settled(b2_events) == ["ok"] and bob2.pending() == 0
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob2.close()
        assert records(tmp_path / "bob", "unsealed") == 0 and records(tmp_path / "bob", "outbox") == 0

    run(scenario)


class Crash(Exception):
    """The process dies here."""


def test_a_crash_between_the_sealed_record_and_the_unsealed_ones_deletion_keeps_the_sealed_one(world: World, tmp_path: Path) -> None:
    # Both records on disk: the sealed one stands (its envelope may have left the process), the message is neither
    # sealed a second time (another hash: a second message to the recipient) nor lost.
    a_events: list[Event] = []
    b2_events: list[Event] = []
    alice = memory_agent(world.identity("alice"), world.trust, a_events)
    alice._store = MemoryStateStore()
    bob_id = world.identity("bob")
    bob = memory_agent(bob_id, world.trust, [])
    bob._store = DirectoryStateStore(tmp_path / "bob", KEY)
    gw = Relay()

    async def scenario() -> None:
        a_call, b_call = GatewayCall(), GatewayCall()
        connect_to(alice, a_call)
        connect_to(bob, b_call)
        tasks = start_loops(alice)
        handed: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(alice, handed)))
        real_delete = bob._delete

        async def dies_before_deleting_the_unsealed_record(kind: str, name: str, *, strict: bool = False) -> None:
            if kind == "unsealed":
                raise Crash()
            await real_delete(kind, name, strict=strict)

        bob._delete = dies_before_deleting_the_unsealed_record  # type: ignore[method-assign]
        sending = asyncio.ensure_future(bob.send("alice", MessageType.TASK_ASSIGNMENT, {"task": "index"}, timeout=30))
        await relay_handshake(gw, b_call, a_call)
        await wait_for(lambda: records(tmp_path / "bob", "outbox") == 1)
        await asyncio.sleep(0.2)
        assert records(tmp_path / "bob", "unsealed") == 1 and sent(b_call, "envelope") == []
        sending.cancel()
        await bob.close()

        bob2 = memory_agent(bob_id, world.trust, b2_events)
        bob2._store = DirectoryStateStore(tmp_path / "bob", KEY)
        await bob2._load_state()
        assert [p["state"] for p in bob2.pending_sends()] == ["sealed"] and records(tmp_path / "bob", "unsealed") == 0
        [entry] = bob2._outbox.values()
        b2_call = GatewayCall()
        connect_to(bob2, b2_call)  # the sealed envelope goes out as it was recorded; no new handshake
        envelope = await gw.next(b2_call, "envelope")
        assert envelope.SerializeToString() == entry.envelope.SerializeToString()
        gw.deliver(a_call, envelope=envelope)
        await wait_for(lambda: len(handed) == 1)
        await handed[0].ack()
        gw.deliver(b2_call, receipt=await gw.next(a_call, "receipt"))
        await wait_for(lambda: settled(b2_events) == ["ok"])
        await asyncio.sleep(0.2)
        assert sent(b2_call, "handshake") == [] and len(handed) == 1 and bob2.pending() == 0
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob2.close()

    run(scenario)


def test_a_state_directory_of_an_earlier_release_loads_and_records_sends_waiting_for_a_session(world: World, tmp_path: Path) -> None:
    path = tmp_path / "bob"
    bob_id = world.identity("bob")

    async def scenario() -> None:
        first = memory_agent(bob_id, world.trust, [])
        first._store = DirectoryStateStore(path, KEY)
        await first._load_state()
        await first.close()
        if (path / "unsealed").exists():
            shutil.rmtree(path / "unsealed")  # as an earlier release left it: no such kind
        again = memory_agent(bob_id, world.trust, [])
        again._store = DirectoryStateStore(path, KEY)
        await again._load_state()
        assert again.pending() == 0 and (path / "unsealed").is_dir()
        b_call = Gateway()
        b_call.answer = False
        connect_to(again, b_call)
        sending = asyncio.ensure_future(again.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=30))
        await wait_for(lambda: len(step1s(b_call)) == 1)
        assert records(path, "unsealed") == 1
        sending.cancel()
        await again.close()

    run(scenario)


def test_policy_denied_at_first_contact_settles_every_send_waiting_on_that_peer(world: World) -> None:
    # The gateway refuses the handshake (an unknown recipient, or its policy): permanent, raised by every caller still
    # waiting and reported once per send.
    events: list[Event] = []
    bob = memory_agent(world.identity("bob"), world.trust, events)
    bob._store = MemoryStateStore()

    async def scenario() -> None:
        b_call = Gateway()
        b_call.answer = False
        connect_to(bob, b_call)
        one = asyncio.ensure_future(bob.send("mallory", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(step1s(b_call)) == 1)
        two = asyncio.ensure_future(bob.send("mallory", MessageType.STATUS_UPDATE, {"n": 2}, timeout=10))
        await wait_for(lambda: bob.pending() == 2)
        [step1] = sent(b_call, "handshake")
        b_call.play(rejected=gateway_pb2.Rejected(request_id=step1.request_id, code="policy_denied", message="no such agent"))
        for sending in (one, two):
            with pytest.raises(GatewayError) as error:
                await asyncio.wait_for(sending, 5)
            assert error.value.code == "policy_denied"
        await asyncio.sleep(0.2)
        assert settled(events) == ["policy_denied", "policy_denied"] and bob.pending() == 0 and len(step1s(b_call)) == 1
        assert bob._store is not None and bob._store.load("unsealed") == {}
        await bob.close()

    run(scenario)


def test_a_handshake_that_never_gets_its_step_2_is_retried_then_the_send_expires_at_its_expiry(world: World) -> None:
    # Step 1 DELIVERED, step 2 never comes: a failure a retry may fix — retried with backoff, one handshake at a time,
    # until the message's expiry (3 s here), then expired: not delivered, and said once.
    events: list[Event] = []
    skew = SkewLimits(max_age_ms=3000, max_future_ms=DEFAULT_SKEW.max_future_ms)
    bob = memory_agent(world.identity("bob"), world.trust, events, handshake_timeout=0.3, skew=skew, resend=ResendPolicy(initial_s=0.3, max_s=1.0))
    bob._store = MemoryStateStore()

    async def scenario() -> tuple[int, int, int]:
        b_call = Gateway()
        connect_to(bob, b_call)
        housekeeping = asyncio.ensure_future(bob._housekeeping())
        started = now_ms()
        with pytest.raises(DeliveryError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10)
        ended = now_ms()
        assert error.value.code == "expired"
        await asyncio.sleep(0.5)
        assert settled(events) == ["expired"] and bob.pending() == 0 and bob._initiating == {}
        attempts = step1s(b_call)
        assert len({bytes(f.session_id) for f in attempts}) == len(attempts)  # each attempt a new handshake
        housekeeping.cancel()
        await bob.close()
        return len(attempts), started, ended

    attempts, started, ended = run(scenario)
    assert attempts >= 3
    assert ended >= started + 3000  # not before the message's expiry


class Standing:
    """Bob's revocation data about alice, as the test sets it: ``fresh``, ``stale`` or ``revoked``."""

    def __init__(self) -> None:
        self.state = "fresh"

    def check(self, agent_id: str, serial: bytes, now_ms: int) -> Revocation | None:
        if self.state == "stale":
            raise IdentityError("revocation_stale", "revocation data is stale")
        return Revocation("agent") if self.state == "revoked" else None


def bob_with_a_session(world: World, events: list[Event], standing: Standing) -> tuple[Agent, Session]:
    """Bob's agent holding a session with alice whose peer checks consult ``standing``; returns it and alice's end."""
    alice_id, bob_id = world.identity("alice"), world.identity("bob")
    sa, sb = world.sessions(world.config(alice_id), world.config(bob_id, standing))
    bob = memory_agent(bob_id, world.trust, events, resend=ResendPolicy(initial_s=0.2, max_s=1.0))
    bob._store = MemoryStateStore()
    bob._register(sb, announce=False)
    return bob, sa


def test_stale_revocation_data_about_the_current_sessions_peer_holds_the_send_until_it_is_fresh(world: World) -> None:
    # Stale revocation data is a failure time can fix (§17.2 item 6): the send waits for it, recorded; it was refused
    # at once before (revocation_stale), nothing recorded, no send_settled.
    events: list[Event] = []
    standing = Standing()
    bob, alice = bob_with_a_session(world, events, standing)

    async def scenario() -> None:
        b_call = Gateway()
        connect_to(bob, b_call)
        standing.state = "stale"
        with pytest.raises(DeliveryError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=0.3)
        assert error.value.code == "deadline_exceeded" and sent(b_call, "envelope") == [] and bob.pending() == 1
        standing.state = "fresh"
        await wait_for(lambda: len(sent(b_call, "envelope")) == 1)
        envelope = sent(b_call, "envelope")[0].envelope
        assert bytes(envelope.session_id) == alice.id and sent(b_call, "handshake") == []  # sealed in the session it had
        receipt = sign_receipt(alice.local, message_hash=message_hash(envelope), sender_id="bob", received_at_ms=now_ms())
        b_call.play(delivery=gateway_pb2.Delivery(delivery_id=1, receipt=receipt))
        await wait_for(lambda: settled(events) == ["ok"])
        assert bob.pending() == 0
        await bob.close()

    run(scenario)


def test_a_send_to_a_peer_found_revoked_is_settled_revoked(world: World) -> None:
    events: list[Event] = []
    standing = Standing()
    bob, _ = bob_with_a_session(world, events, standing)

    async def scenario() -> None:
        b_call = Gateway()
        connect_to(bob, b_call)
        standing.state = "revoked"
        with pytest.raises(IdentityError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=5)
        assert error.value.code == "revoked"
        assert settled(events) == ["revoked"] and bob.pending() == 0 and sent(b_call, "envelope") == [] and bob.sessions() == []
        assert bob._store is not None and bob._store.load("unsealed") == {}
        await bob.close()

    run(scenario)


def test_a_reseal_keeps_the_messages_creation_timestamp_and_expiry(world: World) -> None:
    # §17.2 item 7: a message sealed again (a verified SessionReject) carries the time it was sent, as its first envelope
    # did: its validity at the recipient still ends when its expiry at the sender does.
    events: list[Event] = []
    bob, alice = bob_with_a_session(world, events, Standing())

    async def scenario() -> None:
        b_call = GatewayCall()
        connect_to(bob, b_call)
        sending = asyncio.ensure_future(bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(b_call, "envelope")) == 1)
        first = sent(b_call, "envelope")[0].envelope
        [entry] = bob._outbox.values()
        expires = entry.expires_at_ms
        await asyncio.sleep(0.05)
        b_call.play(**reject(alice, first, 1))
        await answer_handshake(world, b_call, alice, known=0, delivery_id=2)
        await wait_for(lambda: len(sent(b_call, "envelope")) == 2)
        second = sent(b_call, "envelope")[1].envelope
        assert bytes(second.session_id) != bytes(first.session_id) and message_hash(second) != message_hash(first)
        assert second.timestamp_ms == first.timestamp_ms and entry.expires_at_ms == expires == first.timestamp_ms + DEFAULT_SKEW.max_age_ms
        sending.cancel()
        await bob.close()

    run(scenario)


# Step 1 QUEUED: sent again while its step 2 is waited for ----------------------------------------------------------


def test_a_queued_step_1_whose_step_2_was_lost_is_sent_again_and_the_handshake_completes(world: World) -> None:
    # Review finding: a handshake whose step 1 the gateway answered QUEUED waited for its step 2 and sent nothing
    # again: a lost step 1 or step 2 (the responder dropped it, the gateway refused or lost the step 2) stranded every
    # send to that peer until it expired. The same step 1 (byte-identical) is now sent again on the resend backoff.
    a_events: list[Event] = []
    b_events: list[Event] = []
    alice = memory_agent(world.identity("alice"), world.trust, a_events, handshake_timeout=0.3)
    alice._store = MemoryStateStore()
    bob = memory_agent(world.identity("bob"), world.trust, b_events, handshake_timeout=0.3, send_timeout=30, resend=ResendPolicy(initial_s=0.3, max_s=0.6))
    bob._store = MemoryStateStore()
    gw = Relay()

    async def scenario() -> None:
        b_call = Gateway(status=QUEUED)  # alice is offline: her mailbox holds bob's step 1
        connect_to(bob, b_call)
        sending = asyncio.ensure_future(bob.send("alice", MessageType.TASK_ASSIGNMENT, {"task": "index"}))
        await wait_for(lambda: len(step1s(b_call)) == 1)
        first = step1s(b_call)[0]

        # Alice connects and answers the stored step 1; her step 2 is lost (the gateway refused it), and her
        # handshake for that session id ends (timed out).
        a_call = GatewayCall()
        connect_to(alice, a_call)
        tasks = start_loops(alice)
        handed: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(alice, handed)))
        gw.deliver(a_call, handshake=first)
        lost = await gw.next(a_call, "handshake")
        assert lost.step == 2
        await wait_for(lambda: alice._responding == {})

        # Bob sends the same step 1 again: byte-identical (same session id, same ephemeral).
        known = len(step1s(b_call))
        await wait_for(lambda: len(step1s(b_call)) > known, 3)
        copy = step1s(b_call)[-1]
        assert copy.SerializeToString() == first.SerializeToString() and not sending.done()
        b_call.status = DELIVERED
        gw.deliver(a_call, handshake=copy)  # alice answers it with a new step 2, which bob's handshake takes
        step2 = await gw.next(a_call, "handshake")
        assert step2.step == 2 and bytes(step2.session_id) == bytes(first.session_id)
        gw.deliver(b_call, handshake=step2)
        await wait_for(lambda: any(s.handshake.step == 3 for s in sent(b_call, "handshake")))
        step3 = [s.handshake for s in sent(b_call, "handshake") if s.handshake.step == 3]
        gw.deliver(a_call, handshake=step3[0])
        await deliver_and_ack(gw, b_call, a_call, handed)
        receipt = await asyncio.wait_for(sending, 5)
        assert receipt.message_hash == handed[0].message_hash and settled(b_events) == ["ok"]

        # Step 2 arrived: nothing is sent again any more.
        copies = len(step1s(b_call))
        await asyncio.sleep(1.5)
        assert len(step1s(b_call)) == copies and bob._initiating == {}
        assert [m.content for m in handed] == [{"task": "index"}] and len(alice.sessions()) == 1
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob.close()

    run(scenario)


def test_a_queued_step_1_is_sent_again_only_while_its_wait_lasts(world: World) -> None:
    # No step 2 ever comes: the same step 1 is sent again (backoff) until the sends waiting on it expire; then
    # nothing more is sent.
    events: list[Event] = []
    skew = SkewLimits(max_age_ms=2000, max_future_ms=DEFAULT_SKEW.max_future_ms)
    bob = memory_agent(world.identity("bob"), world.trust, events, handshake_timeout=0.3, skew=skew, resend=ResendPolicy(initial_s=0.3, max_s=0.6))
    bob._store = MemoryStateStore()

    async def scenario() -> None:
        b_call = Gateway(status=QUEUED)
        connect_to(bob, b_call)
        housekeeping = asyncio.ensure_future(bob._housekeeping())
        with pytest.raises(DeliveryError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10)
        assert error.value.code == "expired"
        frames = step1s(b_call)
        assert len(frames) >= 3  # 0.3 s, then 0.6 s apart, within the 2 s the send waited
        assert len({f.SerializeToString() for f in frames}) == 1  # one handshake: the same step 1 each time
        await asyncio.sleep(1.5)
        assert len(step1s(b_call)) == len(frames) and bob._initiating == {} and settled(events) == ["expired"]
        housekeeping.cancel()
        await bob.close()

    run(scenario)


# "Not delivered" only once the send's record is gone -----------------------------------------------------------------


def test_a_crash_before_a_failed_sends_unsealed_record_is_deleted_reports_nothing_and_the_restart_delivers_it(world: World, tmp_path: Path) -> None:
    # Review finding: send_settled (and the caller's error) came before the unsealed record's deletion was durable; a
    # crash in between restored the record, and the next run sealed and delivered the send reported "not delivered".
    a_events: list[Event] = []
    b_events: list[Event] = []
    b2_events: list[Event] = []
    alice = memory_agent(world.identity("alice"), world.trust, a_events)
    alice._store = MemoryStateStore()
    bob_id = world.identity("bob")
    bob = memory_agent(bob_id, world.trust, b_events)
    bob._store = DirectoryStateStore(tmp_path / "bob", KEY)
    gw = Relay()

    async def scenario() -> None:
        await bob._load_state()
        b_call = Gateway()
        b_call.refuse = "policy_denied"  # a permanent refusal: the send ends "not delivered"…
        connect_to(bob, b_call)
        real_delete = bob._delete

        async def dies_deleting_the_unsealed_record(kind: str, name: str, *, strict: bool = False) -> None:
            if kind == "unsealed":
                raise Crash()  # …but the process dies before its record is gone
            await real_delete(kind, name, strict=strict)

        bob._delete = dies_deleting_the_unsealed_record  # type: ignore[method-assign]
        sending = asyncio.ensure_future(bob.send("alice", MessageType.TASK_ASSIGNMENT, {"task": "index"}, id="order-9", timeout=30))
        await wait_for(lambda: len(step1s(b_call)) == 1)
        await asyncio.sleep(0.3)
        assert settled(b_events) == [] and not sending.done() and records(tmp_path / "bob", "unsealed") == 1
        sending.cancel()
        await bob.close()

        # The next run finds the send pending (never reported) and delivers it: reported once, "ok".
        bob2 = memory_agent(bob_id, world.trust, b2_events)
        bob2._store = DirectoryStateStore(tmp_path / "bob", KEY)
        await bob2._load_state()
        assert [p["state"] for p in bob2.pending_sends()] == ["unsealed"]
        a_call, b2_call = GatewayCall(), GatewayCall()
        connect_to(alice, a_call)
        tasks = start_loops(alice)
        handed: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(alice, handed)))
        connect_to(bob2, b2_call)
        again = asyncio.ensure_future(bob2.send("alice", MessageType.TASK_ASSIGNMENT, {"task": "index"}, id="order-9", timeout=30))
        await relay_handshake(gw, b2_call, a_call)
        await deliver_and_ack(gw, b2_call, a_call, handed)
        await asyncio.wait_for(again, 5)
        assert settled(b_events) == [] and settled(b2_events) == ["ok"] and [m.content for m in handed] == [{"task": "index"}]
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob2.close()

    run(scenario)


class FailingDeletes(MemoryStateStore):
    """A store whose deletes of one kind fail while ``broken``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.broken = True

    def delete(self, kind: str, name: str) -> None:
        if self.broken and kind == self.kind:
            raise StateError("state_error", f"cannot delete {kind}/{name}: disk error")
        super().delete(kind, name)

    def close(self) -> None:
        pass  # the records outlive the process: the next one opens them again


def test_a_sealed_send_that_expires_is_reported_only_once_its_record_is_deleted(world: World) -> None:
    # The sealed-entry path: an expired envelope whose outbox record cannot be deleted is not reported (a restart
    # would restore and resend it); the next run, whose deletion works, reports it once.
    events: list[Event] = []
    events2: list[Event] = []
    skew = SkewLimits(max_age_ms=1500, max_future_ms=DEFAULT_SKEW.max_future_ms)
    alice_id, bob_id = world.identity("alice"), world.identity("bob")
    _, sb = world.sessions(world.config(alice_id), world.config(bob_id))
    store = FailingDeletes("outbox")
    bob = memory_agent(bob_id, world.trust, events, skew=skew)
    bob._store = store
    bob._register(sb, announce=False)

    async def scenario() -> None:
        b_call = GatewayCall()
        connect_to(bob, b_call)
        housekeeping = asyncio.ensure_future(bob._housekeeping())
        sending = asyncio.ensure_future(bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(b_call, "envelope")) == 1)
        await asyncio.sleep(2.5)  # expired (1.5 s), no receipt; its record cannot be deleted
        assert any(e.kind == "state_error" for e in events)
        assert settled(events) == [] and not sending.done() and len(store.load("outbox")) == 1
        housekeeping.cancel()
        sending.cancel()
        await bob.close()

        store.broken = False
        bob2 = memory_agent(bob_id, world.trust, events2, skew=skew)
        bob2._store = store
        await bob2._load_state()
        assert bob2.pending() == 1
        housekeeping = asyncio.ensure_future(bob2._housekeeping())
        await wait_for(lambda: settled(events2) == ["expired"])
        await asyncio.sleep(0.3)
        assert settled(events2) == ["expired"] and store.load("outbox") == {} and bob2.pending() == 0
        housekeeping.cancel()
        await bob2.close()

    run(scenario)
