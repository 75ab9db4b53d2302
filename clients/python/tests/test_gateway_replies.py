"""Receipts and session rejects on the Connect stream (§10.3, §17.3 step 2), against a fake stream.

With ``welcome.outbound_acks`` a reply goes out quiet and carries the ack of the delivery it answers:
one frame. Without (an older gateway), the reply and an Ack frame, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from parley import crypto
from parley.agent import Agent, ResendPolicy, SessionTimeouts
from parley.envelope import encode_payload
from parley.errors import GatewayError
from parley.gateway import GatewayConnection
from parley.identity import TrustBundle
from parley.key_schedule import DEFAULT_REKEY_THRESHOLD
from parley.relay import sign_receipt
from parley.session import DEFAULT_SKEW, LocalIdentity, Session
from parley.state import MemoryStateStore
from parley.types import Backoff, Event
from parley.v1 import gateway_pb2

from .helpers import World


class FakeCall:
    """The agent's side of a Connect stream: records the frames written, reads what the test plays."""

    def __init__(self) -> None:
        self.written: list[Any] = []
        self._responses: asyncio.Queue[Any] = asyncio.Queue()

    async def write(self, request: Any) -> None:
        self.written.append(request)

    async def read(self) -> Any:
        return await self._responses.get()

    async def done_writing(self) -> None:
        pass

    def cancel(self) -> None:
        self._responses.put_nowait(grpc.aio.EOF)

    def play(self, **kind: Any) -> None:
        self._responses.put_nowait(gateway_pb2.ConnectResponse(**kind))


class FakeChannel:
    async def close(self) -> None:
        pass


def frames(call: FakeCall) -> list[tuple[Any, ...]]:
    """What was written, compactly: ("send", item kind, quiet, ack_delivery_id) or ("ack", delivery_id)."""
    out: list[tuple[Any, ...]] = []
    for r in call.written:
        if r.WhichOneof("kind") == "ack":
            out.append(("ack", r.ack.delivery_id))
        else:
            out.append(("send", r.send.WhichOneof("item"), r.send.quiet, r.send.ack_delivery_id))
    return out


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.fixture
def world() -> World:
    return World()


@pytest.mark.parametrize("outbound_acks", [True, False])
def test_send_reply_carries_the_ack_only_when_offered(world: World, outbound_acks: bool) -> None:
    bob = world.identity("bob")
    receipt = sign_receipt(bob, message_hash=bytes(32), sender_id="alice", received_at_ms=world.now)

    async def scenario() -> tuple[list[tuple[Any, ...]], str | None]:
        call = FakeCall()
        conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id="bob", outbound_acks=outbound_acks), "gw")  # type: ignore[arg-type]

        async def on_delivery(_conn: GatewayConnection, _delivery: Any) -> None:
            pass

        conn.start(on_delivery)
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, receipt=receipt))
        await settle()
        future = conn.send_reply("receipt", receipt, 1)
        conn.send_reply("receipt", receipt, 9)  # never written to this stream: not acked, not carried
        await settle()
        call.play(rejected=gateway_pb2.Rejected(request_id=1, code="rate_limited", message="slow down"))
        await settle()
        error = future.exception() if future.done() else None
        code = error.code if isinstance(error, GatewayError) else None
        await conn.close()
        return frames(call), code

    written, code = run(scenario)
    if outbound_acks:
        assert written == [("send", "receipt", True, 1), ("send", "receipt", True, 0)]
    else:
        assert written == [("send", "receipt", False, 0), ("ack", 1), ("send", "receipt", False, 0)]
    assert code == "rate_limited"  # a quiet item's refusal still reaches the sender's future


def memory_agent(identity: LocalIdentity, trust: TrustBundle, events: list[Event], state_dir: Path | None = None, **options: Any) -> Agent:
    """An agent that is not connected, with short timeouts; without ``state_dir`` it keeps no store of its own (a test
    gives it one). ``options``: further Agent options (state_key=, previous_*=), and overrides of ``skew``,
    ``send_timeout``, ``handshake_timeout`` and ``resend``."""
    return Agent(
        gateway="127.0.0.1:1",
        identity=identity,
        trust_bundle=trust,
        expected_gateway_id="gw",
        tls=None,
        state_dir=state_dir,
        state_key=options.pop("state_key", None),
        revocations=None,
        rekey_threshold=DEFAULT_REKEY_THRESHOLD,
        skew=options.pop("skew", DEFAULT_SKEW),
        send_timeout=options.pop("send_timeout", 5),
        handshake_timeout=options.pop("handshake_timeout", 5),
        auth_timeout=5,
        reconnect=Backoff(),
        resend=options.pop("resend", ResendPolicy()),
        timeouts=SessionTimeouts(),
        max_unacked=16,
        on_event=events.append,
        **options,
    )


def make_agent(world: World, events: list[Event], trust: TrustBundle | None = None) -> tuple[Agent, Session]:
    """Bob's agent (in memory) holding a session with alice; returns it and alice's end of the session.
    ``trust``: bob's trust bundle (the world's by default), also the one his session was made with."""
    trust = world.trust if trust is None else trust
    alice, bob = world.identity("alice"), world.identity("bob")
    sa, sb = world.sessions(world.config(alice), world.config(bob, trust_bundle=trust))
    agent = memory_agent(bob, trust, events)
    agent._store = MemoryStateStore()
    agent._register(sb, announce=False)
    return agent, sa


def seal(s: Session, content: object) -> Any:
    ts = s._clock()
    return s.seal_at(s.allocate_counter(), encode_payload(5, content, ts), ts).envelope


@pytest.mark.parametrize("outbound_acks", [True, False])
def test_agent_replies_carry_the_ack_of_their_delivery(world: World, outbound_acks: bool) -> None:
    events: list[Event] = []
    agent, alice = make_agent(world, events)

    async def scenario() -> dict[str, list[tuple[Any, ...]]]:
        call = FakeCall()
        conn = GatewayConnection(FakeChannel(), call, gateway_pb2.Welcome(agent_id="bob", outbound_acks=outbound_acks), "gw")  # type: ignore[arg-type]
        loop = asyncio.get_running_loop().create_task(agent._envelope_loop())
        agent._attach(conn)
        seen: dict[str, list[tuple[Any, ...]]] = {}

        def step(name: str) -> None:
            seen[name] = frames(call)
            call.written.clear()

        envelope = seal(alice, {"n": 1})
        call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=envelope))
        message = await agent._app.get()
        call.play(delivery=gateway_pb2.Delivery(delivery_id=2, envelope=envelope))  # a redelivery, still in the inbox
        # §17.3 item 3: delivery 1 of this stream is kept for the application's ack; this copy is acked at once.
        await settle()
        step("before the ack")
        await message.ack()
        await settle()
        step("ack")
        call.play(delivery=gateway_pb2.Delivery(delivery_id=3, envelope=envelope))  # acked before: the receipt again
        await settle()
        step("duplicate")
        stray = seal(alice, {"n": 2})
        stray.session_id = crypto.random_bytes(16)  # a session bob does not hold: a SessionReject
        call.play(delivery=gateway_pb2.Delivery(delivery_id=4, envelope=stray))
        await settle()
        step("unknown session")
        loop.cancel()
        await agent.close()
        return seen

    seen = run(scenario)
    assert seen["before the ack"] == [("ack", 2)]
    if outbound_acks:
        assert seen["ack"] == [("send", "receipt", True, 1)]
        assert seen["duplicate"] == [("send", "receipt", True, 3)]
        assert seen["unknown session"] == [("send", "session_reject", True, 4)]
    else:
        assert seen["ack"] == [("send", "receipt", False, 0), ("ack", 1)]
        assert seen["duplicate"] == [("send", "receipt", False, 0), ("ack", 3)]
        assert seen["unknown session"] == [("send", "session_reject", False, 0), ("ack", 4)]
    assert not [e for e in events if e.kind == "gateway_refused"]
