"""``parley.connect`` retries what time fixes, as the gateway says it (parity with @parley/client's ``connect``).

A Python agent started while the gateway's revocation copy was stale (its registry down, or just restarted) raised
``revocation_stale`` at once, though an agent already connected reconnects through the same answers. Now ``connect``
retries, with the reconnect backoff and ``connect_retry`` events, the answers the GATEWAY gives that time fixes (a
go-away frame, or the call's status with the gateway's ``parley-error-code``) until ``connect_timeout``; a connection
that could not be made (nothing listening) and every verdict on the agent still fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import grpc
import pytest

import parley
from parley.gateway import ERROR_CODE_METADATA_KEY
from parley.v1 import gateway_pb2, gateway_pb2_grpc

from .helpers import World

FAST = parley.Backoff(0.005, 0.04)


class _StandInGateway(gateway_pb2_grpc.AgentGatewayServiceServicer):  # type: ignore[misc]
    """Refuses the first ``refusals`` streams as a real gateway does (alternately: the call's status carrying the
    gateway's ``parley-error-code``, and a go-away frame), then challenges and welcomes ``agent_id``."""

    def __init__(self, agent_id: str, refusals: int, code: str = "revocation_stale") -> None:
        self.agent_id = agent_id
        self.refusals = refusals
        self.code = code
        self.streams = 0

    async def Connect(self, request_iterator: Any, context: Any) -> Any:
        stream = self.streams
        self.streams += 1
        requests = request_iterator.__aiter__()
        await requests.__anext__()  # hello
        if stream < self.refusals:
            if stream % 2 == 0:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "revocation data is stale", trailing_metadata=((ERROR_CODE_METADATA_KEY, self.code),))
            yield gateway_pb2.ConnectResponse(go_away=gateway_pb2.GoAway(code=self.code, message="the gateway's revocation copy is stale"))
            return
        yield gateway_pb2.ConnectResponse(challenge=gateway_pb2.Challenge(gateway_id="gw-1", nonce=bytes(32)))
        await requests.__anext__()  # auth
        yield gateway_pb2.ConnectResponse(welcome=gateway_pb2.Welcome(agent_id=self.agent_id))
        with contextlib.suppress(StopAsyncIteration):
            async for _ in requests:
                pass


async def _with_gateway(gateway: _StandInGateway, body: Any) -> Any:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_AgentGatewayServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return await body(f"127.0.0.1:{port}")
    finally:
        await server.stop(0)


def _connect(world: World, address: str, events: list[parley.Event], **more: Any) -> Any:
    args: dict[str, Any] = {
        "gateway": address,
        "identity": world.identity("worker-1"),
        "trust_bundle": world.trust,
        "expected_gateway_id": "gw-1",
        "tls": None,
        "state_dir": None,
        "auth_timeout": 5.0,
        "reconnect": FAST,
        "on_event": events.append,
    }
    args.update(more)
    return parley.connect(**args)


def _retries(events: list[parley.Event]) -> list[parley.Event]:
    return [e for e in events if e.kind == "connect_retry"]


def test_revocation_stale_from_the_gateway_is_retried_with_backoff_until_the_welcome() -> None:
    world = World()
    agent_id = world.identity("worker-1").agent_id
    gateway = _StandInGateway(agent_id, refusals=2)
    events: list[parley.Event] = []

    async def body(address: str) -> bool:
        agent = await _connect(world, address, events)
        try:
            return bool(agent.connected)
        finally:
            await agent.close()

    assert asyncio.run(_with_gateway(gateway, body)) is True
    assert gateway.streams == 3
    retries = _retries(events)
    assert [e["attempt"] for e in retries] == [1, 2]
    assert [e["error"].code for e in retries] == ["revocation_stale", "revocation_stale"]
    for e in retries:
        assert isinstance(e["error"], parley.GatewayError)
        assert 0 < e["delay_s"] <= FAST.max_s
        assert e["remaining_s"] > 30  # the default deadline: 60 s
    kinds = [e.kind for e in events]
    assert kinds.index("connected") > max(i for i, k in enumerate(kinds) if k == "connect_retry")


def test_at_the_connect_timeout_the_last_answer_is_raised() -> None:
    world = World()
    gateway = _StandInGateway(world.identity("worker-1").agent_id, refusals=1_000_000)
    events: list[parley.Event] = []

    async def body(address: str) -> None:
        await _connect(world, address, events, connect_timeout=0.2)

    with pytest.raises(parley.GatewayError) as e:
        asyncio.run(_with_gateway(gateway, body))
    assert e.value.code == "revocation_stale"
    assert gateway.streams >= 2 and len(_retries(events)) == gateway.streams - 1


def test_connect_timeout_0_is_one_attempt() -> None:
    world = World()
    gateway = _StandInGateway(world.identity("worker-1").agent_id, refusals=1)
    events: list[parley.Event] = []

    async def body(address: str) -> None:
        await _connect(world, address, events, connect_timeout=0)

    with pytest.raises(parley.GatewayError) as e:
        asyncio.run(_with_gateway(gateway, body))
    assert e.value.code == "revocation_stale"
    assert gateway.streams == 1 and _retries(events) == []


def test_a_verdict_on_the_agent_is_raised_at_once() -> None:
    world = World()
    gateway = _StandInGateway(world.identity("worker-1").agent_id, refusals=1, code="revoked")
    events: list[parley.Event] = []

    async def body(address: str) -> None:
        await _connect(world, address, events)

    with pytest.raises(parley.GatewayError) as e:
        asyncio.run(_with_gateway(gateway, body))
    assert e.value.code == "revoked"
    assert gateway.streams == 1 and _retries(events) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_nothing_listening_fails_at_once_without_a_retry() -> None:
    world = World()
    events: list[parley.Event] = []
    with pytest.raises(parley.GatewayError) as e:
        asyncio.run(_connect(world, f"127.0.0.1:{_closed_port()}", events))
    assert e.value.code in ("unavailable", "deadline_exceeded")
    assert _retries(events) == []


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "60", True])
def test_a_bad_connect_timeout_is_malformed(value: Any) -> None:
    world = World()
    with pytest.raises(parley.ParleyError) as e:
        asyncio.run(_connect(world, "127.0.0.1:1", [], connect_timeout=value))
    assert e.value.code == "malformed"
