"""The delivery contract (docs/PROTOCOL.md §17) of the agent, against a fake Connect stream.

Bob's agent holds a session with alice (in memory); the test plays the gateway: it answers his sends,
delivers alice's envelopes, receipts, SessionRejects and handshake frames, and ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

import parley.agent
from parley import crypto
from parley.agent import Agent, Message
from parley.envelope import encode_payload, message_hash
from parley.errors import GatewayError, IdentityError, ParleyError, StateError
from parley.gateway import GatewayConnection
from parley.handshake import InitiatorHandshake, ResponderHandshake
from parley.identity import StaticRevocations
from parley.encoding import b64url_decode, b64url_encode
from parley.relay import sign_receipt, sign_session_reject, verify_receipt_signature
from parley.session import DEFAULT_SKEW, LocalIdentity, Session, SkewLimits, now_ms
from parley.state import IDENTITY_RECORD, DirectoryStateStore, MemoryStateStore, derive_state_key
from parley.types import Backoff, Event, MessageType
from parley.v1 import gateway_pb2

from .helpers import FollowedRegistry, World
from .test_gateway_replies import FakeCall, FakeChannel, make_agent, memory_agent, run, seal


@pytest.fixture
def world() -> World:
    return World(now=now_ms())  # the agent's own checks (handshakes, expiry) run on the real clock


def attach(agent: Agent, *, outbound_acks: bool = True) -> tuple[FakeCall, GatewayConnection]:
    call = FakeCall()
    conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id=agent.agent_id, outbound_acks=outbound_acks), "gw")
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


# §17.2 item 2: the outbox entry stays until a verified receipt, expiry, or a permanent refusal of the item.


def test_a_quota_refusal_is_not_permanent_the_send_stays_and_is_resent(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[int, int, int, bool]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        call.play(rejected=gateway_pb2.Rejected(request_id=sent(call, "envelope")[0].request_id, code="quota_exceeded", message="mailbox full"))
        await asyncio.sleep(0.1)
        pending, records = agent.pending(), len(outbox_records(agent))
        [entry] = agent._outbox.values()
        agent._spawn(agent._relay(entry))  # what the housekeeping does once the resend interval passed
        await wait_for(lambda: len(sent(call, "envelope")) == 2)
        resent = len(sent(call, "envelope"))
        done = sending.done()
        sending.cancel()
        await agent.close()
        return pending, records, resent, done

    pending, records, resent, done = run(scenario)
    assert (pending, records, resent, done) == (1, 1, 2, False)


def test_a_stream_ended_by_a_go_away_is_no_refusal_of_the_sends_in_flight(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[str, int, int]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        call.play(go_away=gateway_pb2.GoAway(code="replaced", message="another stream authenticated as bob"))
        call.cancel()  # the gateway ends the stream after its go_away
        with pytest.raises(ParleyError) as error:
            await sending
        await asyncio.sleep(0.1)
        pending, records = agent.pending(), len(outbox_records(agent))
        await agent.close()
        return error.value.code, pending, records

    code, pending, records = run(scenario)
    # The agent stopped for good (replaced): the caller learns it, but the durable record stays for a restarted process.
    assert (code, pending, records) == ("replaced", 1, 1)
    assert not [e for e in events if e.kind == "send_settled"]


def test_a_reseal_under_way_when_the_agent_stops_keeps_its_durable_record(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[str, int]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        call.play(**reject(alice, sent(call, "envelope")[0].envelope, 1))
        await wait_for(lambda: len(sent(call, "handshake")) == 1)  # the reseal's handshake is under way
        call.play(go_away=gateway_pb2.GoAway(code="revoked", message="bob was revoked"))
        call.cancel()
        with pytest.raises(ParleyError) as error:
            await sending
        await asyncio.sleep(1.0)  # the handshake's retry finds the agent stopped
        records = len(outbox_records(agent))
        await agent.close()
        return error.value.code, records

    code, records = run(scenario)
    assert (code, records) == ("revoked", 1)
    assert not [e for e in events if e.kind == "send_settled"]


# §17.2 item 2: durable before relayed, a resealed envelope too.


def test_a_resealed_envelope_whose_record_cannot_be_written_is_not_relayed(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> None:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        first = sent(call, "envelope")[0].envelope
        [entry] = agent._outbox.values()
        recorded = dict(outbox_records(agent)[entry.id])
        store = agent._store
        assert store is not None
        real_put = store.put

        def full_disk(kind: str, name: str, record: dict[str, Any]) -> None:
            if kind == "outbox":
                raise StateError("state_error", "No space left on device")
            real_put(kind, name, record)

        store.put = full_disk  # type: ignore[method-assign]
        call.play(**reject(alice, first, 1))
        await answer_handshake(world, call, alice, known=0, delivery_id=2)
        await wait_for(lambda: any(e.kind == "state_error" for e in events))
        await asyncio.sleep(0.2)
        # Nothing relayed that is not durable; the entry still is what its record says, and stays pending.
        assert len(sent(call, "envelope")) == 1
        assert outbox_records(agent)[entry.id] == recorded
        assert agent._outbox[entry.id] is entry and entry.message_hash.hex() == recorded["hash"] and not entry.resealing
        assert entry.reseals == 0 and not sending.done()
        # Its next resend brings the next SessionReject: once the record can be written, the reseal goes out.
        store.put = real_put  # type: ignore[method-assign]
        call.play(**reject(alice, first, 3))
        await wait_for(lambda: len(sent(call, "envelope")) == 2)
        assert outbox_records(agent)[entry.id]["hash"] == entry.message_hash.hex() != recorded["hash"] and entry.reseals == 1
        assert bytes(sent(call, "envelope")[1].envelope.session_id) != bytes(first.session_id)
        sending.cancel()
        await agent.close()

    run(scenario)


# §17.2 item 4: a verified SessionReject reseals the envelope it names, not the session's other pending ones.


class GatewayCall(FakeCall):
    """A stream whose gateway answers every item that asks for an answer (not quiet) with DELIVERED; the test
    decides what it delivers, to whom, and what it drops or holds."""

    async def write(self, request: Any) -> None:
        await super().write(request)
        if request.WhichOneof("kind") == "send" and not request.send.quiet:
            self.play(accepted=gateway_pb2.Accepted(request_id=request.send.request_id, status=gateway_pb2.DELIVERY_STATUS_DELIVERED))


class Relay:
    """The gateway between two agents' streams: hands out each item written once, delivers what the test passes on."""

    def __init__(self) -> None:
        self.taken: dict[tuple[int, str], int] = {}
        self.delivery_id = 0

    def new(self, call: FakeCall, kind: str) -> list[Any]:
        """The ``kind`` items written on ``call`` since the last look."""
        items = [getattr(s, kind) for s in sent(call, kind)]
        start = self.taken.get((id(call), kind), 0)
        self.taken[(id(call), kind)] = len(items)
        return items[start:]

    async def next(self, call: FakeCall, kind: str) -> Any:
        """The next ``kind`` item written on ``call`` (waits for it)."""
        start = self.taken.get((id(call), kind), 0)
        await wait_for(lambda: len(sent(call, kind)) > start)
        self.taken[(id(call), kind)] = start + 1
        return getattr(sent(call, kind)[start], kind)

    def deliver(self, call: FakeCall, **item: Any) -> None:
        self.delivery_id += 1
        call.play(delivery=gateway_pb2.Delivery(delivery_id=self.delivery_id, **item))


def test_a_session_reject_reseals_only_the_envelope_it_names_one_taken_before_the_session_ended_is_not_delivered_twice(world: World) -> None:
    # Review finding: every pending send of the rejected session was resealed, also one the recipient had taken and
    # acked before its copy of the session ended (its receipt dropped): its application got it again, unflagged.
    a_events: list[Event] = []
    b_events: list[Event] = []
    alice_id, bob_id = world.identity("alice"), world.identity("bob")
    sa, sb = world.sessions(world.config(alice_id), world.config(bob_id))
    alice, bob = memory_agent(alice_id, world.trust, a_events), memory_agent(bob_id, world.trust, b_events)
    for agent, session in ((alice, sa), (bob, sb)):
        agent._store = MemoryStateStore()
        agent._register(session, announce=False)
    gw = Relay()

    async def scenario() -> None:
        a_call, b_call = GatewayCall(), GatewayCall()
        for agent, call in ((alice, a_call), (bob, b_call)):
            agent._attach(GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id=agent.agent_id, outbound_acks=True), "gw"))
        tasks = start_loops(bob)
        handed: list[Message] = []

        async def application() -> None:
            async for message in bob.messages():
                handed.append(message)

        tasks.append(asyncio.ensure_future(application()))

        # 1. Alice sends M2; the gateway delivers it; Bob's application acks; the gateway DROPS Bob's receipt.
        send2 = asyncio.ensure_future(alice.send("bob", MessageType.STATUS_UPDATE, {"m": "M2: transfer $100"}, timeout=20))
        e2 = await gw.next(a_call, "envelope")
        gw.deliver(b_call, envelope=e2)
        await wait_for(lambda: len(handed) == 1)
        await handed[0].ack()
        assert len(gw.new(b_call, "receipt")) == 1  # dropped
        # 2. Alice sends M1 in the same session; the gateway holds it.
        send1 = asyncio.ensure_future(alice.send("bob", MessageType.STATUS_UPDATE, {"m": "M1"}, timeout=20))
        e1 = await gw.next(a_call, "envelope")
        assert bytes(e1.session_id) == bytes(e2.session_id) == sa.id
        [m2] = [e for e in alice._outbox.values() if e.envelope == e2]
        [m1] = [e for e in alice._outbox.values() if e.envelope == e1]
        m2_hash, m1_hash = m2.message_hash, m1.message_hash
        # 3. Bob's copy of the session idles out (nothing reached him for 31 minutes).
        await bob._session_lifetimes(now_ms() + 31 * 60_000)
        assert sb.id not in bob._sessions
        # 4. The gateway releases M1: Bob answers with a genuine SessionReject, which reaches Alice.
        gw.deliver(b_call, envelope=e1)
        gw.deliver(a_call, session_reject=await gw.next(b_call, "session_reject"))
        # 5. Alice reseals in a new session: its handshake goes through the gateway, then what she relays reaches Bob.
        gw.deliver(b_call, handshake=await gw.next(a_call, "handshake"))
        gw.deliver(a_call, handshake=await gw.next(b_call, "handshake"))
        gw.deliver(b_call, handshake=await gw.next(a_call, "handshake"))
        await wait_for(lambda: any(e.kind == "resealed" for e in a_events) and not any(e.resealing for e in alice._outbox.values()))
        await asyncio.sleep(0.3)  # anything else resealed is relayed by now
        for envelope in gw.new(a_call, "envelope"):
            gw.deliver(b_call, envelope=envelope)
        await wait_for(lambda: len(handed) >= 2)
        await asyncio.sleep(0.3)
        # Bob's application took M2 once (before the session ended) and M1 once (resealed): nothing twice.
        assert [(m.content, m.redelivered) for m in handed] == [({"m": "M2: transfer $100"}, False), ({"m": "M1"}, False)]
        # Only M1 was resealed (new session, new hash); M2 keeps its envelope, session and hash.
        assert [e.fields["message_hash"] for e in a_events if e.kind == "resealed"] == [m1.message_hash.hex()]
        assert m1.session_id != sa.id and m1.message_hash != m1_hash and m1.reseals == 1
        assert (m2.envelope, m2.session_id, m2.message_hash, m2.reseals) == (e2, sa.id, m2_hash, 0)
        assert outbox_records(alice)[m2.id]["hash"] == m2_hash.hex()
        # 6. Bob acks M1: its receipt settles M1. M2's resend (the same bytes, as the housekeeping sends it once its
        # interval passed) reaches Bob, whose receipt store answers with the receipt again: that settles M2.
        await handed[1].ack()
        gw.deliver(a_call, receipt=await gw.next(b_call, "receipt"))
        assert (await send1).message_hash == m1.message_hash
        alice._spawn(alice._relay(m2))
        resent = await gw.next(a_call, "envelope")
        assert resent.SerializeToString() == e2.SerializeToString()
        gw.deliver(b_call, envelope=resent)
        gw.deliver(a_call, receipt=await gw.next(b_call, "receipt"))
        assert (await send2).message_hash == m2_hash
        assert len(handed) == 2 and alice.pending() == 0
        assert any(e.kind == "duplicate" and e.fields["detail"] == "already acked; receipt sent again" for e in b_events)
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob.close()

    run(scenario)


def acked(call: FakeCall) -> set[int]:
    """The delivery ids acked on ``call`` so far: Ack frames, and the acks a reply carries."""
    ids: set[int] = set()
    for r in call.written:
        if r.WhichOneof("kind") == "ack":
            ids.update([r.ack.delivery_id, *r.ack.more_delivery_ids])
        elif r.send.ack_delivery_id:
            ids.add(r.send.ack_delivery_id)
    return ids


def test_an_envelope_of_an_unknown_session_no_younger_than_a_receipt_the_full_store_dropped_gets_no_session_reject(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Review finding (the second path): a full receipt store drops receipts still within the message lifetime; a resend
    # of such an envelope into a session the recipient no longer holds was answered with a SessionReject, and its sender,
    # resealing it, made it a second message to the application. §17.4: acked without a reject (its sender reports
    # expired); an envelope sealed after the dropped receipt cannot have been taken and still gets one.
    monkeypatch.setattr(parley.agent, "MAX_RECEIPTS", 1, raising=False)  # Bob's receipt store holds one
    a_events: list[Event] = []
    b_events: list[Event] = []
    alice_id, bob_id = world.identity("alice"), world.identity("bob")
    sa, sb = world.sessions(world.config(alice_id), world.config(bob_id))
    alice, bob = memory_agent(alice_id, world.trust, a_events), memory_agent(bob_id, world.trust, b_events)
    bob._skew = SkewLimits(max_age_ms=DEFAULT_SKEW.max_age_ms, max_future_ms=0)  # one clock: "sealed after" is a few ms later
    for agent, session in ((alice, sa), (bob, sb)):
        agent._store = MemoryStateStore()
        agent._register(session, announce=False)
    gw = Relay()

    async def scenario() -> None:
        a_call, b_call = GatewayCall(), GatewayCall()
        for agent, call in ((alice, a_call), (bob, b_call)):
            agent._attach(GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id=agent.agent_id, outbound_acks=True), "gw"))
        tasks = start_loops(bob)
        handed: list[Message] = []

        async def application() -> None:
            async for message in bob.messages():
                handed.append(message)

        tasks.append(asyncio.ensure_future(application()))

        # 1. Bob takes A1 and A2 and acks both; the gateway drops both receipts.
        sends = []
        for i, text in enumerate(("A1", "A2")):
            sends.append(asyncio.ensure_future(alice.send("bob", MessageType.STATUS_UPDATE, {"m": text}, timeout=20)))
            gw.deliver(b_call, envelope=await gw.next(a_call, "envelope"))
            await wait_for(lambda: len(handed) == i + 1)
            await handed[i].ack()
            await asyncio.sleep(0.005)
        send1, send2 = sends
        assert len(gw.new(b_call, "receipt")) == 2  # dropped
        m1, m2 = alice._outbox.values()
        e1 = m1.envelope
        # 2. The store holds one: the prune drops A1's receipt, still within the message lifetime.
        await bob._prune_receipts(now_ms())
        assert list(bob._receipts) == [m2.message_hash]
        # 3. Bob's copy of the session idles out.
        await bob._session_lifetimes(now_ms() + 31 * 60_000)
        assert sb.id not in bob._sessions
        # 4. A1 again (its sender's resend, the same bytes): it may have been taken — no reject (its reseal would make it
        # a second message), its delivery acked.
        alice._spawn(alice._relay(m1))
        resent = await gw.next(a_call, "envelope")
        assert resent.SerializeToString() == e1.SerializeToString()
        rejects = len(sent(b_call, "session_reject"))
        gw.deliver(b_call, envelope=resent)
        a1_delivery = gw.delivery_id
        await wait_for(lambda: a1_delivery in acked(b_call) or len(sent(b_call, "session_reject")) > rejects)
        assert gw.new(b_call, "session_reject") == []
        detail = "envelope of an unknown session no younger than a dropped receipt: acked without a SessionReject"
        assert any(e.kind == "duplicate" and e.fields["detail"] == detail for e in b_events)
        # 5. A2 again: its receipt is still held and sent again; it settles A2.
        alice._spawn(alice._relay(m2))
        gw.deliver(b_call, envelope=await gw.next(a_call, "envelope"))
        gw.deliver(a_call, receipt=await gw.next(b_call, "receipt"))
        assert (await send2).message_hash == m2.message_hash
        # 6. A3, sealed after the dropped receipt, cannot have been taken: a SessionReject, and Alice reseals it (only it).
        send3 = asyncio.ensure_future(alice.send("bob", MessageType.STATUS_UPDATE, {"m": "A3"}, timeout=20))
        e3 = await gw.next(a_call, "envelope")
        assert bytes(e3.session_id) == sa.id
        gw.deliver(b_call, envelope=e3)
        gw.deliver(a_call, session_reject=await gw.next(b_call, "session_reject"))
        gw.deliver(b_call, handshake=await gw.next(a_call, "handshake"))
        gw.deliver(a_call, handshake=await gw.next(b_call, "handshake"))
        gw.deliver(b_call, handshake=await gw.next(a_call, "handshake"))
        resealed = await gw.next(a_call, "envelope")
        assert bytes(resealed.session_id) != sa.id
        gw.deliver(b_call, envelope=resealed)
        await wait_for(lambda: len(handed) == 3)
        await handed[2].ack()
        gw.deliver(a_call, receipt=await gw.next(b_call, "receipt"))
        await send3
        await asyncio.sleep(0.3)
        # Bob's application took each message once; A1's send stays pending (its sender reports expired at its expiry).
        assert [(m.content, m.redelivered) for m in handed] == [({"m": "A1"}, False), ({"m": "A2"}, False), ({"m": "A3"}, False)]
        assert [e.fields["message_hash"] for e in a_events if e.kind == "resealed"] == [message_hash(resealed).hex()]
        assert not send1.done() and alice.pending() == 1 and m1.envelope == e1
        send1.cancel()
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob.close()

    run(scenario)


def test_after_a_restart_with_a_full_receipt_store_the_oldest_receipt_kept_stands_for_the_newest_dropped(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parley.agent, "MAX_RECEIPTS", 1, raising=False)  # one receipt kept: the store is full
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    agent._store = DirectoryStateStore(tmp_path / "state", bytes(range(32)))

    async def scenario() -> tuple[list[Any], set[int], list[Event], bytes]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=seal(alice, {"n": 1})))
        message = await asyncio.wait_for(agent._app.get(), 3)
        receipt = await message.ack()
        for t in tasks:
            t.cancel()
        await agent.close()
        again_events: list[Event] = []
        again = restarted(agent, again_events)
        again._store = DirectoryStateStore(tmp_path / "state", bytes(range(32)))
        await again._load_state()
        # Envelopes of a session the restarted agent does not hold: one within the future skew of the oldest receipt
        # kept may have been taken before the restart (acked, no reject); one beyond it cannot have been (a reject).
        other, _ = world.sessions(world.config(world.identity("alice")), world.config(agent.identity))
        limit = receipt.received_at_ms + DEFAULT_SKEW.max_future_ms
        old = other.seal_at(other.allocate_counter(), encode_payload(5, {"n": 2}, limit), limit).envelope
        young = other.seal_at(other.allocate_counter(), encode_payload(5, {"n": 3}, limit + 1), limit + 1).envelope
        call, _ = attach(again)
        tasks = start_loops(again)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=old))
        call.play(delivery=gateway_pb2.Delivery(delivery_id=2, envelope=young))
        await wait_for(lambda: {1, 2} <= acked(call))
        for t in tasks:
            t.cancel()
        await again.close()
        return sent(call, "session_reject"), acked(call), again_events, message_hash(young)

    rejects, acks, events_after, young_hash = run(scenario)
    assert [(r.ack_delivery_id, bytes(r.session_reject.message_hash)) for r in rejects] == [(2, young_hash)]
    assert {1, 2} <= acks
    detail = "envelope of an unknown session no younger than a dropped receipt: acked without a SessionReject"
    assert [e.fields["detail"] for e in events_after if e.kind == "duplicate"] == [detail]


# §17.3 item 4: beyond the 64 envelopes held for a handshake, left unacknowledged and tried again.


def start_loops(agent: Agent) -> list[asyncio.Task[Any]]:
    """The agent's envelope and retry loops (what ``_start`` runs besides the housekeeping)."""
    loop = asyncio.get_running_loop()
    return [loop.create_task(agent._envelope_loop()), loop.create_task(agent._retry_loop())]


async def alice_starts_a_handshake(world: World, call: FakeCall, alice: Session) -> tuple[Any, Any]:
    """Alice starts a second session with bob; returns her initiator and bob's step 2."""
    initiator, frame1 = InitiatorHandshake.start(world.config(alice.local), "bob")
    call.play(delivery=gateway_pb2.Delivery(delivery_id=1, handshake=frame1))
    await wait_for(lambda: len(sent(call, "handshake")) == 1)
    return initiator, sent(call, "handshake")[0].handshake


def test_envelopes_beyond_the_64_held_for_a_handshake_are_opened_after_step_3(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    agent._max_unacked = 100  # the application may hold all 70

    async def scenario() -> list[int]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        initiator, frame2 = await alice_starts_a_handshake(world, call, alice)
        frame3, session = initiator.receive(frame2)
        for n in range(70):  # they overtake step 3
            call.play(delivery=gateway_pb2.Delivery(delivery_id=2 + n, envelope=seal(session, {"n": n})))
        await asyncio.sleep(0.1)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=72, handshake=frame3))
        got = [await asyncio.wait_for(agent._app.get(), 3) for _ in range(70)]
        for t in tasks:
            t.cancel()
        await agent.close()
        return [m.content["n"] for m in got]

    assert run(scenario) == list(range(70))  # all of them, in arrival order


def test_envelopes_beyond_the_64_held_for_a_failed_handshake_are_answered_with_session_rejects(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[int, list[int]]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        initiator, frame2 = await alice_starts_a_handshake(world, call, alice)
        _, session = initiator.receive(frame2)
        for n in range(66):
            call.play(delivery=gateway_pb2.Delivery(delivery_id=2 + n, envelope=seal(session, {"n": n})))
        await asyncio.sleep(0.1)
        assert not sent(call, "session_reject")  # held or waiting, none acked
        await agent._responder_failed(session.id, "handshake timed out")
        await wait_for(lambda: len(sent(call, "session_reject")) == 66)  # the two beyond the 64 when tried again
        await asyncio.sleep(0.3)
        for t in tasks:
            t.cancel()
        await agent.close()
        return len(sent(call, "session_reject")), sorted(r.ack_delivery_id for r in sent(call, "session_reject"))

    count, acked = run(scenario)
    assert count == 66 and acked == list(range(2, 68))
    assert len([e for e in events if e.kind == "security" and e.fields["code"] == "rate_limited"]) == 2  # reported once each


def test_a_delivery_whose_inbox_record_cannot_be_written_is_tried_again(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[Any, list[Any]]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        store = agent._store
        assert store is not None
        real_put = store.put
        failures = [0]

        def flaky_disk(kind: str, name: str, record: dict[str, Any]) -> None:
            if kind == "inbox" and failures[0] < 2:
                failures[0] += 1
                raise StateError("state_error", "No space left on device")
            real_put(kind, name, record)

        store.put = flaky_disk  # type: ignore[method-assign]
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=seal(alice, {"n": 1})))
        message = await asyncio.wait_for(agent._app.get(), 3)
        before_ack = list(call.written)
        await message.ack()
        await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await agent.close()
        return message.content, before_ack

    content, before_ack = run(scenario)
    assert content == {"n": 1} and before_ack == []  # handed over once its record was written; nothing acked before
    assert len([e for e in events if e.kind == "state_error"]) == 2


# §17.3 item 6: with the application max_unacked messages behind, deliveries are left unacknowledged and tried
# again as it acks; the stream is still read (receipts, Accepted, go-aways).


def test_back_pressure_leaves_deliveries_unacked_and_keeps_reading_the_stream(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)  # max_unacked=16

    async def scenario() -> tuple[list[int], list[int]]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"ask": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        [entry] = agent._outbox.values()
        for n in range(100):  # more than the application's 16 and the 64 read ahead
            call.play(delivery=gateway_pb2.Delivery(delivery_id=1 + n, envelope=seal(alice, {"n": n})))
        call.play(delivery=gateway_pb2.Delivery(delivery_id=101, receipt=sign_receipt(alice.local, message_hash=entry.message_hash, sender_id="bob", received_at_ms=now_ms())))
        receipt = await asyncio.wait_for(sending, 3)  # read although the application acked nothing
        assert receipt.message_hash == entry.message_hash
        assert agent._app.qsize() == 16 and len(agent._unacked) == 16
        acks_before = [r for r in call.written if r.WhichOneof("kind") == "ack" or r.send.ack_delivery_id]
        assert [r.ack.delivery_id for r in acks_before] == [101]  # only the receipt's delivery: no envelope acked
        got: list[int] = []
        while len(got) < 100:
            message = await asyncio.wait_for(agent._app.get(), 3)
            got.append(message.content["n"])  # type: ignore[index]
            await message.ack()
        await asyncio.sleep(0.05)
        carried = sorted(r.send.ack_delivery_id for r in call.written if r.WhichOneof("kind") == "send" and r.send.WhichOneof("item") == "receipt")
        for t in tasks:
            t.cancel()
        await agent.close()
        return got, carried

    got, carried = run(scenario)
    assert got == list(range(100))  # each once, in arrival order
    assert carried == list(range(1, 101))  # each delivery acked once, by the receipt the application's ack sent


class StaleRevocations:
    """Revocation data that is stale until the test says it is fresh."""

    def __init__(self) -> None:
        self.stale = True

    def check(self, agent_id: str, serial: bytes, now_ms: int) -> None:
        if self.stale:
            raise IdentityError("revocation_stale", "revocation data is stale")
        return None


def test_stale_revocation_data_leaves_deliveries_unacked_and_keeps_reading_the_stream(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    agent._max_unacked = 100
    revocations = StaleRevocations()

    async def scenario() -> list[int]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"ask": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        [entry] = agent._outbox.values()
        [bobs] = agent._sessions.values()
        bobs._revocations = revocations  # §17.5: checked at every message
        for n in range(70):  # more than the 64 read ahead
            call.play(delivery=gateway_pb2.Delivery(delivery_id=1 + n, envelope=seal(alice, {"n": n})))
        call.play(delivery=gateway_pb2.Delivery(delivery_id=71, receipt=sign_receipt(alice.local, message_hash=entry.message_hash, sender_id="bob", received_at_ms=now_ms())))
        await asyncio.wait_for(sending, 3)  # read although no envelope can be opened
        await asyncio.sleep(0.6)  # tried again meanwhile: still stale
        assert agent._app.qsize() == 0 and [r.ack.delivery_id for r in call.written if r.WhichOneof("kind") == "ack"] == [71]
        revocations.stale = False
        got = [await asyncio.wait_for(agent._app.get(), 3) for _ in range(70)]
        for t in tasks:
            t.cancel()
        await agent.close()
        return [m.content["n"] for m in got]

    assert run(scenario) == list(range(70))
    assert len([e for e in events if e.kind == "security" and e.fields["code"] == "revocation_stale"]) == 70  # once each


# Reconnection: a failed attempt, whatever it raised, is followed by the next one (the loop never dies).


def test_reconnection_goes_on_after_an_attempt_fails_with_an_unexpected_error(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Event] = []
    agent, _ = make_agent(world, events)
    agent._reconnect = Backoff(initial_s=0.01, max_s=0.02)
    failures: list[BaseException] = [ParleyError("not_found", "cannot read ca.pem"), RuntimeError("grpc: call already finished")]

    async def scenario() -> tuple[bool, int]:
        call, _ = attach(agent)
        fresh = FakeCall()

        async def open_(**_kw: Any) -> GatewayConnection:
            if failures:
                raise failures.pop(0)  # a TLS file being replaced; something gRPC raised that nobody typed
            return GatewayConnection(FakeChannel(), fresh, gateway_pb2.Welcome(agent_id=agent.agent_id), "gw")

        monkeypatch.setattr(GatewayConnection, "open", open_)
        call.cancel()  # the gateway ends the stream
        await wait_for(lambda: agent.connected and agent._conn is not None and agent._conn._call is fresh)
        connected, attempts = agent.connected, len([e for e in events if e.kind == "reconnecting"])
        await agent.close()
        return connected, attempts

    connected, attempts = run(scenario)
    assert connected and attempts == 3 and agent._fatal is None


def test_an_answer_that_breaks_the_protocol_at_re_authentication_is_retried_not_fatal(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Review finding: a frame of the wrong kind, a bad challenge or a go-away ``malformed`` while re-authenticating
    # stopped the agent for good (FATAL_AUTH held ``malformed``), although the next stream would have been fine.
    events: list[Event] = []
    agent, _ = make_agent(world, events)
    agent._reconnect = Backoff(initial_s=0.01, max_s=0.02)
    failures = [GatewayError("malformed", "expected challenge, got accepted"), GatewayError("malformed", "nonce must be 32 bytes"), GatewayError("malformed", "busy")]

    async def scenario() -> tuple[bool, int]:
        call, _ = attach(agent)
        fresh = FakeCall()

        async def open_(**_kw: Any) -> GatewayConnection:
            if failures:
                raise failures.pop(0)
            return GatewayConnection(FakeChannel(), fresh, gateway_pb2.Welcome(agent_id=agent.agent_id), "gw")

        monkeypatch.setattr(GatewayConnection, "open", open_)
        call.cancel()  # the gateway ends the stream
        await wait_for(lambda: agent.connected and agent._conn is not None and agent._conn._call is fresh)
        connected, attempts = agent.connected, len([e for e in events if e.kind == "reconnecting"])
        await agent.close()
        return connected, attempts

    connected, attempts = run(scenario)
    assert connected and attempts == 4 and agent._fatal is None


# After close(): no record is written under the wiped key; an ack is refused and the message handed over again.


def restarted(agent: Agent, events: list[Event]) -> Agent:
    """Bob's agent again (same identity and trust), without a store: the test gives it one."""
    return memory_agent(agent.identity, agent._trust, events)


def test_an_ack_after_close_is_refused_and_the_message_is_handed_over_again_after_a_restart(world: World, tmp_path: Path) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    agent._store = DirectoryStateStore(tmp_path / "state", bytes(range(32)))

    async def scenario() -> tuple[str, Any]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=seal(alice, {"n": 1})))
        message = await asyncio.wait_for(agent._app.get(), 3)
        for t in tasks:
            t.cancel()
        await agent.close()
        with pytest.raises(ParleyError) as error:
            await message.ack()  # the application acks late
        again = restarted(agent, [])
        again._store = DirectoryStateStore(tmp_path / "state", bytes(range(32)))
        await again._load_state()  # opens: nothing was sealed under the wiped key
        redelivered = again._app.get_nowait()
        await again.close()
        return error.value.code, redelivered

    code, redelivered = run(scenario)
    assert code == "cancelled"
    assert redelivered.redelivered and redelivered.content == {"n": 1} and not redelivered.acked
    assert not [e for e in events if e.kind == "state_error"]


# A session that closes while its counter reservation waits for the state lock: that send fails, the agent goes on.


def test_a_session_closed_while_its_counter_reservation_waits_does_not_stop_the_agent(world: World) -> None:
    events: list[Event] = []
    agent, _ = make_agent(world, events)

    async def scenario() -> tuple[str, ParleyError | None]:
        [session] = agent._sessions.values()
        await agent._io.acquire()  # another record is being written
        ts = now_ms()
        sealing = asyncio.ensure_future(agent._seal(session, encode_payload(1, {"x": 1}, ts), ts))
        await asyncio.sleep(0.01)
        session.close()  # e.g. a verified SessionReject, or the peer's certificate expired
        agent._io.release()
        with pytest.raises(ParleyError) as error:
            await sealing
        fatal = agent._fatal
        await agent.close()
        return error.value.code, fatal

    code, fatal = run(scenario)
    assert code == "unknown_session" and fatal is None
    assert not [e for e in events if e.kind == "state_error"]


# send(id=...) is idempotent also when two calls overlap: the first one stands.


def test_overlapping_sends_with_the_same_id_seal_and_relay_once(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[int, int, bytes, bytes]:
        call, _ = attach(agent)
        first = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id="order-42", timeout=10))
        second = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, id="order-42", timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) >= 1)
        await asyncio.sleep(0.1)
        envelopes, records = len(sent(call, "envelope")), len(outbox_records(agent))
        [entry] = agent._outbox.values()
        receipt = sign_receipt(alice.local, message_hash=entry.message_hash, sender_id="bob", received_at_ms=now_ms())
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, receipt=receipt))
        a, b = await asyncio.wait_for(asyncio.gather(first, second), 3)
        await agent.close()
        return envelopes, records, a.message_hash, b.message_hash

    envelopes, records, a, b = run(scenario)
    assert (envelopes, records) == (1, 1) and a == b


# §12: sessions held with one peer (8, the oldest closed) and in all (beyond it, handshakes are refused).


async def complete_handshake(world: World, call: FakeCall, alice: Session, known: int, delivery_id: int) -> Session:
    """Alice starts a session with bob and completes it (bob's step 2 is his handshake frame number ``known``)."""
    initiator, frame1 = InitiatorHandshake.start(world.config(alice.local), "bob")
    call.play(delivery=gateway_pb2.Delivery(delivery_id=delivery_id, handshake=frame1))
    await wait_for(lambda: len(sent(call, "handshake")) > known)
    frame3, session = initiator.receive(sent(call, "handshake")[known].handshake)
    call.play(delivery=gateway_pb2.Delivery(delivery_id=delivery_id + 1, handshake=frame3))
    return session


def test_a_peer_holds_at_most_8_sessions_the_oldest_is_closed(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[int, bool, bytes]:
        call, _ = attach(agent)
        [oldest] = agent._sessions.values()
        newest = None
        for n in range(8):  # the peer completes handshake after handshake
            newest = await complete_handshake(world, call, alice, n, 1 + 2 * n)
            await wait_for(lambda: newest is not None and newest.id in agent._sessions)
        assert newest is not None
        held, closed, current = len(agent._sessions), oldest.closed, agent._current["alice"].id
        await agent.close()
        return held, closed, current if current == newest.id else b""

    held, closed, current = run(scenario)
    assert held == 8 and closed and current
    assert [e.fields["reason"] for e in events if e.kind == "session_closed"][:1] == ["too many sessions with this peer"]


def test_beyond_the_sessions_held_in_all_a_handshake_is_refused(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    monkeypatch.setattr(parley.agent, "MAX_SESSIONS", 1, raising=False)  # bob holds one already

    async def scenario() -> int:
        call, _ = attach(agent)
        _, frame1 = InitiatorHandshake.start(world.config(alice.local), "bob")
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, handshake=frame1))
        await asyncio.sleep(0.1)
        answered = len(sent(call, "handshake"))
        await agent.close()
        return answered

    assert run(scenario) == 0  # no step 2
    assert [e.fields["code"] for e in events if e.kind == "security"] == ["rate_limited"]


# Relaying: one relay of an envelope at a time; a late answer about an envelope a reseal replaced is ignored.


def test_an_envelope_is_relayed_once_at_a_time(world: World) -> None:
    events: list[Event] = []
    agent, _ = make_agent(world, events)

    async def scenario() -> int:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        [entry] = agent._outbox.values()
        agent._spawn(agent._relay(entry))  # the housekeeping's resend while the first relay waits for its answer
        await asyncio.sleep(0.1)
        relayed = len(sent(call, "envelope"))
        sending.cancel()
        await agent.close()
        return relayed

    assert run(scenario) == 1


def test_a_late_refusal_of_an_envelope_a_reseal_replaced_does_not_end_the_send(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[bool, int, int]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        first = sent(call, "envelope")[0]  # not answered yet
        call.play(**reject(alice, first.envelope, 1))
        await answer_handshake(world, call, alice, known=0, delivery_id=2)
        await wait_for(lambda: len(sent(call, "envelope")) == 2)  # resealed and relayed
        call.play(rejected=gateway_pb2.Rejected(request_id=first.request_id, code="policy_denied", message="about the first envelope"))
        await asyncio.sleep(0.1)
        done, pending, records = sending.done(), agent.pending(), len(outbox_records(agent))
        sending.cancel()
        await agent.close()
        return done, pending, records

    assert run(scenario) == (False, 1, 1)
    assert not [e for e in events if e.kind == "send_settled"]


# §17.3 item 1: the inbox record holds the sender's certificate.


def test_the_inbox_record_keeps_the_senders_certificate(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> tuple[dict[str, Any], Any]:
        call, _ = attach(agent)
        tasks = start_loops(agent)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=seal(alice, {"n": 1})))
        await asyncio.wait_for(agent._app.get(), 3)
        for t in tasks:
            t.cancel()
        store = agent._store
        assert store is not None
        [record] = store.load("inbox").values()
        for name in store.load("sessions"):
            store.delete("sessions", name)  # its session did not survive the restart
        again = restarted(agent, [])
        again._store = store
        await again._load_state()
        message = again._app.get_nowait()
        await agent.close()
        return record, message.sender_certificate

    record, certificate = run(scenario)
    assert "sender_certificate" in record
    assert certificate is not None and certificate.SerializeToString() == alice.local.certificate.SerializeToString()


# §8.1 step 2, §8.4, §13: a session checks its peer's issuer in the agent's trust bundle as it is at every open
# (a followed bundle changes), a restored one too: retired past its not_after_ms (`expired`) or gone
# (`unknown_issuer`) closes the session and deletes its record.


def test_a_restored_session_refuses_an_envelope_once_its_issuers_not_after_ms_has_passed(world: World) -> None:
    events: list[Event] = []
    registry = FollowedRegistry(world)
    agent, alice = make_agent(world, events, trust=registry.follower)
    clock = [world.now]

    async def scenario() -> tuple[list[object], Session, dict[str, Any]]:
        [session] = agent._sessions.values()
        await agent._save_session(session)
        again = restarted(agent, events)  # the same (followed) trust bundle
        again._store = agent._store
        await again._load_state()
        [restored] = again._sessions.values()
        restored._clock = lambda: clock[0]
        call, _ = attach(again)
        tasks = start_loops(again)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=seal(alice, {"n": 1})))
        got = [(await asyncio.wait_for(again._app.get(), 3)).content]
        registry.rotate(old_not_after_ms=world.now + 60_000)  # the issuer is retired after the restart
        call.play(delivery=gateway_pb2.Delivery(delivery_id=2, envelope=seal(alice, {"n": 2})))
        got.append((await asyncio.wait_for(again._app.get(), 3)).content)  # still within its bound
        clock[0] = world.now + 60_000  # the bound has passed
        call.play(delivery=gateway_pb2.Delivery(delivery_id=3, envelope=seal(alice, {"n": 3})))
        await wait_for(lambda: restored.id not in again._sessions)
        for t in tasks:
            t.cancel()
        records = again._store.load("sessions") if again._store is not None else {}
        await again.close()
        await agent.close()
        return got, restored, records

    got, restored, records = run(scenario)
    assert got == [{"n": 1}, {"n": 2}]
    assert restored.closed and records == {}
    assert [e.fields["code"] for e in events if e.kind == "security"] == ["expired"]
    assert [e.fields["reason"] for e in events if e.kind == "session_closed"] == ["peer expired"]


def test_a_session_whose_issuer_leaves_the_agents_trust_bundle_is_closed_at_the_next_open(world: World) -> None:
    events: list[Event] = []
    registry = FollowedRegistry(world)
    agent, alice = make_agent(world, events, trust=registry.follower)

    async def scenario() -> tuple[object, int, Session, list[str]]:
        [session] = agent._sessions.values()
        await agent._save_session(session)
        call, _ = attach(agent)
        tasks = start_loops(agent)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=seal(alice, {"n": 1})))
        first = (await asyncio.wait_for(agent._app.get(), 3)).content
        registry.rotate(old_not_after_ms=None)  # the agent's bundle follows a rotation that drops the issuer
        call.play(delivery=gateway_pb2.Delivery(delivery_id=2, envelope=seal(alice, {"n": 2})))
        await wait_for(lambda: session.id not in agent._sessions)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=3, envelope=seal(alice, {"n": 3})))  # names a closed session
        await wait_for(lambda: len(sent(call, "session_reject")) == 1)
        for t in tasks:
            t.cancel()
        assert agent._store is not None
        records, waiting = list(agent._store.load("sessions")), agent._app.qsize()
        await agent.close()
        return first, waiting, session, records

    first, waiting, session, records = run(scenario)
    assert first == {"n": 1} and waiting == 0  # neither later envelope reached the application
    assert session.closed and records == []
    assert [e.fields["code"] for e in events if e.kind == "security"] == ["unknown_issuer", "unknown_session"]
    assert [e.fields["reason"] for e in events if e.kind == "session_closed"] == ["peer unknown_issuer"]


# §17.8: identity key rotation. A receipt or SessionReject signed under the recipient's new key is accepted with the
# certificate it carries (same agent, trusted, valid, not revoked); an agent restarted under another key than its state
# was written under restores no sessions and attaches its certificate to what it signs.


def with_certificate(item: Any, certificate: Any) -> Any:
    """``item`` (a receipt or SessionReject) carrying ``certificate`` (not signed: any copy can carry one)."""
    item.signer_certificate.CopyFrom(certificate)
    return item


def signed_as(agent_id: str, identity: LocalIdentity) -> LocalIdentity:
    """An identity that signs as ``agent_id`` with another identity's key (its certificate names its own id)."""
    return LocalIdentity(agent_id, identity.signing_key, identity.certificate)


def test_a_receipt_signed_under_the_recipients_new_key_settles_the_send_only_with_its_new_certificate(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)  # bob's agent; alice's session was made with her old certificate
    rotated = world.identity("alice")  # alice's new key and certificate: same agent id, same issuer
    mallory = world.identity("mallory")
    stranger = world.identity("alice", issuer=crypto.SigningKey.generate())  # an issuer bob does not trust
    revoked = world.identity("alice")

    async def scenario() -> tuple[list[bool], Any]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        digest = message_hash(sent(call, "envelope")[0].envelope)

        def receipt(signer: Any, certificate: Any | None) -> Any:
            r = sign_receipt(signer, message_hash=digest, sender_id="bob", received_at_ms=now_ms())
            return r if certificate is None else with_certificate(r, certificate)

        refused = [
            receipt(rotated, None),  # the new key, no certificate
            receipt(signed_as("alice", mallory), mallory.certificate),  # another agent's, whose key signed it
            receipt(stranger, stranger.certificate),  # alice's id, an issuer bob does not trust
            receipt(revoked, revoked.certificate),  # revoked (bob's revocation data says so)
            receipt(rotated, world.identity("alice").certificate),  # a genuine certificate whose key did not sign it
        ]
        agent._revocations = StaticRevocations(serials=[bytes(revoked.certificate.serial)])
        settled: list[bool] = []
        for i, r in enumerate(refused):
            call.play(delivery=gateway_pb2.Delivery(delivery_id=i + 1, receipt=r))
            await wait_for(lambda: len([e for e in events if e.kind == "security"]) == i + 1)
            await asyncio.sleep(0.05)
            settled.append(sending.done())
        good = receipt(rotated, rotated.certificate)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=9, receipt=good))
        result = await asyncio.wait_for(sending, 3)
        await agent.close()
        return settled, result

    settled, result = run(scenario)
    assert settled == [False] * 5
    assert [(e.fields["stage"], e.fields["code"]) for e in events if e.kind == "security"] == [("receipt", "bad_signature")] * 5
    assert result.recipient_id == "alice" and result.verify(rotated.signing_key.public_key)
    assert [e.fields["code"] for e in events if e.kind == "send_settled"] == ["ok"]


def test_a_session_reject_signed_under_the_recipients_new_key_reseals_only_with_its_new_certificate(world: World) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    rotated, mallory = world.identity("alice"), world.identity("mallory")

    async def scenario() -> tuple[int, int]:
        call, _ = attach(agent)
        sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10))
        await wait_for(lambda: len(sent(call, "envelope")) == 1)
        envelope = sent(call, "envelope")[0].envelope
        for i, r in enumerate([
            sign_session_reject(rotated, envelope, now_ms()),
            with_certificate(sign_session_reject(signed_as("alice", mallory), envelope, now_ms()), mallory.certificate),
        ]):
            call.play(delivery=gateway_pb2.Delivery(delivery_id=i + 1, session_reject=r))
            await wait_for(lambda: len([e for e in events if e.kind == "security"]) == i + 1)
        await asyncio.sleep(0.1)
        handshakes_before = len(sent(call, "handshake"))
        call.play(delivery=gateway_pb2.Delivery(delivery_id=3, session_reject=with_certificate(sign_session_reject(rotated, envelope, now_ms()), rotated.certificate)))
        await wait_for(lambda: len(sent(call, "handshake")) == 1)  # the reseal's handshake: a new session
        sending.cancel()
        await agent.close()
        return handshakes_before, len([e for e in events if e.kind == "session_rejected"])

    handshakes_before, rejected = run(scenario)
    assert handshakes_before == 0 and rejected == 1
    assert [(e.fields["stage"], e.fields["code"]) for e in events if e.kind == "security"] == [("session_reject", "bad_signature")] * 2


def test_an_agent_restarted_under_a_rotated_key_restores_no_sessions_and_its_peer_goes_on(world: World, tmp_path: Path) -> None:
    # Operator review finding (HIGH), the TypeScript SDK's: after `agent rotate`, the agent came back with its old
    # sessions and signed receipts with the new key, which its peer checked against the old certificate
    # (bad_signature, resent until expiry).
    a_events: list[Event] = []
    b_events: list[Event] = []
    b2_events: list[Event] = []
    b3_events: list[Event] = []
    alice_id, bob_id = world.identity("alice"), world.identity("bob")
    bob_new = world.identity("bob")  # `agent rotate`: a new key and certificate for the same agent id, same issuer
    sa, sb = world.sessions(world.config(alice_id), world.config(bob_id))
    alice, bob = memory_agent(alice_id, world.trust, a_events), memory_agent(bob_id, world.trust, b_events)
    alice._store = MemoryStateStore()
    alice._register(sa, announce=False)
    bob._store = DirectoryStateStore(tmp_path / "bob", bytes(range(32)))
    gw = Relay()

    async def scenario() -> tuple[list[Session], list[Message], list[Any], list[Message]]:
        await bob._load_state()  # bob's first start: an empty state, which records his key
        bob._register(sb, announce=False)
        await bob._save_session(sb)
        a_call, b_call = GatewayCall(), GatewayCall()
        for agent, call in ((alice, a_call), (bob, b_call)):
            agent._attach(GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id=agent.agent_id, outbound_acks=True), "gw"))
        tasks = start_loops(bob)
        handed: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(bob, handed)))

        # 1. Bob takes M2 from Alice and does not ack it. His key is rotated: the gateway sends him away, he stops.
        send2 = asyncio.ensure_future(alice.send("bob", MessageType.STATUS_UPDATE, {"m": "M2"}, timeout=25))
        e2 = await gw.next(a_call, "envelope")
        gw.deliver(b_call, envelope=e2)
        await wait_for(lambda: len(handed) == 1)
        for t in tasks:
            t.cancel()
        await bob.close()
        # 2. Meanwhile Alice sends M3 in the session she holds (the gateway stores it for Bob).
        send3 = asyncio.ensure_future(alice.send("bob", MessageType.STATUS_UPDATE, {"m": "M3"}, timeout=25))
        e3 = await gw.next(a_call, "envelope")
        assert bytes(e3.session_id) == bytes(e2.session_id) == sa.id

        # 3. Bob restarts under his new key, from the same state: no session restored; M2 handed over again.
        bob2 = memory_agent(bob_new, world.trust, b2_events)
        bob2._store = DirectoryStateStore(tmp_path / "bob", bytes(range(32)))
        await bob2._load_state()
        restored = bob2.sessions()
        b2_call = GatewayCall()
        bob2._attach(GatewayConnection(FakeChannel(), b2_call, gateway_pb2.Welcome(agent_id="bob", outbound_acks=True), "gw"))
        tasks = start_loops(bob2)
        handed2: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(bob2, handed2)))
        await wait_for(lambda: len(handed2) == 1)
        # 3b. Before acking it Bob restarts once more, under the same new key: the state's identity record now names
        # that key, yet his replies still carry the certificate (for a message lifetime after the rotation, across
        # restarts), or Alice could verify none of them.
        for t in tasks:
            t.cancel()
        await bob2.close()
        bob3 = memory_agent(bob_new, world.trust, b3_events)
        bob3._store = DirectoryStateStore(tmp_path / "bob", bytes(range(32)))
        await bob3._load_state()
        restored += bob3.sessions()
        b3_call = GatewayCall()
        bob3._attach(GatewayConnection(FakeChannel(), b3_call, gateway_pb2.Welcome(agent_id="bob", outbound_acks=True), "gw"))
        tasks = start_loops(bob3)
        handed3: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(bob3, handed3)))
        await wait_for(lambda: len(handed3) == 1)
        gw.deliver(b3_call, envelope=e2)  # the gateway's redelivery of M2: the inbox holds it, not handed over twice
        await asyncio.sleep(0.1)
        # 4. Bob acks M2: its receipt, signed with the new key, carries the new certificate and settles Alice's send.
        await handed3[0].ack()
        receipt2 = await gw.next(b3_call, "receipt")
        assert receipt2.HasField("signer_certificate"), "run 3's receipt carries no certificate"
        gw.deliver(a_call, receipt=receipt2)
        await wait_for(lambda: send2.done())
        assert (await send2).message_hash == message_hash(e2)
        # 5. M3 (of the old session) gets a SessionReject carrying the certificate; Alice reseals it in a new session
        # that Bob opens, established with his new certificate.
        gw.deliver(b3_call, envelope=e3)
        reject3 = await gw.next(b3_call, "session_reject")
        gw.deliver(a_call, session_reject=reject3)
        gw.deliver(b3_call, handshake=await gw.next(a_call, "handshake"))
        gw.deliver(a_call, handshake=await gw.next(b3_call, "handshake"))
        gw.deliver(b3_call, handshake=await gw.next(a_call, "handshake"))
        resealed = await gw.next(a_call, "envelope")
        assert bytes(resealed.session_id) != sa.id
        gw.deliver(b3_call, envelope=resealed)
        await wait_for(lambda: len(handed3) == 2)
        await handed3[1].ack()
        gw.deliver(a_call, receipt=await gw.next(b3_call, "receipt"))
        await wait_for(lambda: send3.done())
        await send3
        [new_session] = alice.sessions()
        assert new_session.peer.identity_public_key == bob_new.signing_key.public_key
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob3.close()
        return restored, handed2 + handed3, [receipt2, reject3], handed

    restored, handed23, replies, handed = run(scenario)
    assert restored == []
    assert [(m.content, m.redelivered) for m in handed] == [({"m": "M2"}, False)]
    assert [(m.content, m.redelivered) for m in handed23] == [({"m": "M2"}, True), ({"m": "M2"}, True), ({"m": "M3"}, False)]
    for reply in replies:
        assert reply.HasField("signer_certificate") and reply.signer_certificate == bob_new.certificate
    assert [e for e in a_events if e.kind == "security"] == []
    assert [e.fields["code"] for e in a_events if e.kind == "send_settled"] == ["ok", "ok"]
    assert [e.fields["reason"] for e in b2_events if e.kind == "session_closed"] == ["not restored: the identity key was rotated"]
    assert [e for e in b3_events if e.kind == "session_closed"] == []


async def collect(agent: Agent, handed: list[Message]) -> None:
    async for message in agent.messages():
        handed.append(message)


def test_the_state_records_its_identity_key_a_state_without_the_record_detects_no_rotation(world: World, tmp_path: Path) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    rotated = world.identity("bob")
    path, key = tmp_path / "state", bytes(range(32))
    agent._store = DirectoryStateStore(path, key)

    async def scenario() -> tuple[list[tuple[int, bool, list[tuple[str, int | None]]]], int, int]:
        [session] = agent._sessions.values()
        await agent._save_session(session)
        await agent.close()
        with contextlib.suppress(FileNotFoundError):
            (path / "identity").rmdir()  # a directory an earlier release wrote: no identity record
        seen: list[tuple[int, bool, list[tuple[str, int | None]]]] = []
        before = now_ms()
        for identity in (agent.identity, agent.identity, rotated, rotated, rotated):
            if len(seen) == 4:
                # The rotation is older than a session lifetime (24 h by default, longer than a message's): no certificate.
                store = DirectoryStateStore(path, key)
                [record] = store.load("identity").values()
                store.put("identity", IDENTITY_RECORD, {**record, "rotated_at_ms": now_ms() - 24 * 3600 * 1000 - 1})
                store.close()
            again = memory_agent(identity, world.trust, [])
            again._store = DirectoryStateStore(path, key)
            await again._load_state()
            recorded = [(r["key"], r.get("rotated_at_ms")) for r in again._store.load("identity").values()]
            seen.append((len(again._sessions), again._signer_certificate is not None, recorded))
            await again.close()
        return seen, before, now_ms()

    seen, before, after = run(scenario)
    old, new = agent.identity.signing_key.public_key.hex(), rotated.signing_key.public_key.hex()
    rotated_at = seen[2][2][0][1]
    assert rotated_at is not None and before <= rotated_at <= after
    assert seen[:4] == [
        (1, False, [(old, None)]),  # no record: not detected, the session restored; the key is recorded from now on
        (1, False, [(old, None)]),  # the same key: never rotated
        (0, True, [(new, rotated_at)]),  # another key: rotated now, and when is recorded
        (0, True, [(new, rotated_at)]),  # the next start under the new key: within a message lifetime of the rotation
    ]
    assert seen[4][:2] == (0, False)  # a rotation older than that: none attached


def test_a_state_sealed_under_the_key_derived_from_a_rotated_identity_key_says_how_to_open_it(world: World, tmp_path: Path) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)
    rotated = world.identity("bob")
    path = tmp_path / "state"
    agent._store = DirectoryStateStore(path, derive_state_key(agent.identity.signing_key.seed()))

    async def scenario() -> tuple[str, str, bool]:
        await agent._load_state()
        await agent.close()
        again = memory_agent(rotated, world.trust, [])
        again._state_dir = path  # the default state key: derived from the new identity key
        with pytest.raises(StateError) as error:
            await again._start()
        await again.close()
        previous = memory_agent(rotated, world.trust, [])
        previous._store = DirectoryStateStore(path, derive_state_key(agent.identity.signing_key.seed()))
        await previous._load_state()  # with the previous key's state key it opens, and the rotation is seen
        rotation_seen = previous._signer_certificate is not None
        await previous.close()
        return error.value.code, error.value.detail, rotation_seen

    code, detail, rotation_seen = run(scenario)
    assert code == "state_corrupt" and "previous_identity_keys=" in detail and "rotated" in detail
    assert rotation_seen


def test_a_receipt_sent_again_after_a_second_key_rotation_is_signed_anew_and_carries_the_current_certificate(world: World) -> None:
    # A receipt signed after one rotation carries that certificate (§17.8); after a second rotation the gateway relays
    # only the certificate the stream authenticated with (identity_mismatch), and the superseded one would not stand
    # with the peer: resent as it was, the sender's send ended `expired`.
    first, second = world.identity("bob"), world.identity("bob")
    bob = memory_agent(second, world.trust, [])
    fields = {"message_hash": bytes(range(32)), "sender_id": "alice", "received_at_ms": 1_700_000_000_000}
    stored = {"receipt": b64url_encode(sign_receipt(first, **fields, signer_certificate=first.certificate).SerializeToString())}
    again = bob._sendable_receipt(stored)
    assert again.signer_certificate == second.certificate
    assert verify_receipt_signature(again, second.signing_key.public_key)
    assert (bytes(again.message_hash), again.sender_id, again.received_at_ms) == (fields["message_hash"], "alice", fields["received_at_ms"])
    assert bob._sendable_receipt(stored).SerializeToString() == again.SerializeToString()  # signed anew once, then kept
    # Without a certificate (the session's key signed it: the peer verifies it so) or with the current one: as it was.
    for cert in (None, second.certificate):
        signer = first if cert is None else second
        record = {"receipt": b64url_encode(sign_receipt(signer, **fields, signer_certificate=cert).SerializeToString())}
        assert bob._sendable_receipt(record).SerializeToString() == b64url_decode(record["receipt"])
