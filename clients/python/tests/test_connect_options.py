"""What ``parley.connect`` refuses before touching the network, and the gateway helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

import parley
from parley.gateway import GatewayConnection, is_loopback
from parley.v1 import gateway_pb2, gateway_pb2_grpc

from .helpers import World


def connect_offline(tmp_path: Path, **overrides: Any) -> Any:
    """``parley.connect`` to a gateway nothing listens on (the options are checked before any call)."""
    world = World()
    args: dict[str, Any] = {
        "gateway": "127.0.0.1:1",
        "identity": world.identity("worker-1"),
        "trust_bundle": world.trust,
        "expected_gateway_id": "gw-1",
        "tls": None,
        "state_dir": tmp_path / "state",
        "auth_timeout": 2.0,
    }
    args.update(overrides)
    return asyncio.run(parley.connect(**args))


@pytest.mark.parametrize("address", ["10.0.0.1:7443", "gateway.example:7443", "[2001:db8::1]:7443", "0.0.0.0:7443"])
def test_plaintext_is_refused_off_loopback(tmp_path: Path, address: str) -> None:
    with pytest.raises(parley.ParleyError) as e:
        connect_offline(tmp_path, gateway=address)
    assert e.value.code == "failed_precondition"


def test_the_gateway_id_is_required(tmp_path: Path) -> None:
    with pytest.raises(parley.ParleyError) as e:
        connect_offline(tmp_path, expected_gateway_id="")
    assert e.value.code == "malformed"


def test_an_unreachable_gateway_is_unavailable_and_releases_the_state_dir(tmp_path: Path) -> None:
    with pytest.raises(parley.GatewayError) as e:
        connect_offline(tmp_path)
    assert e.value.code in ("unavailable", "deadline_exceeded")
    # The failed connect closed its state store: the directory lock is free again.
    from parley.state import DirectoryStateStore

    DirectoryStateStore(tmp_path / "state", bytes(32)).close()


def test_loopback_detection() -> None:
    assert all(is_loopback(a) for a in ["127.0.0.1:1", "127.8.9.10:1", "localhost:7443", "[::1]:7443"])
    assert not any(is_loopback(a) for a in ["128.0.0.1:1", "example.com:1", "[::2]:1", "localhost.example:1"])


def test_every_error_carries_a_known_code() -> None:
    with pytest.raises(ValueError):
        parley.ParleyError("not_a_code", "x")  # type: ignore[arg-type]
    e = parley.DeliveryError("expired", "too late")
    assert str(e) == "[expired] too late" and e.code in parley.ERROR_CODES
    import pickle

    assert pickle.loads(pickle.dumps(e)).code == "expired"


class _EndsAfterChallenge(gateway_pb2_grpc.AgentGatewayServiceServicer):  # type: ignore[misc]
    """A gateway that ends the stream right after its challenge (a restart, a shutdown)."""

    async def Connect(self, request_iterator: Any, context: Any) -> Any:
        await request_iterator.__aiter__().__anext__()
        response = gateway_pb2.ConnectResponse()
        response.challenge.gateway_id = "gw-1"
        response.challenge.nonce = bytes(32)
        yield response
        await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")


def test_a_gateway_that_ends_the_stream_between_challenge_and_auth_is_a_typed_error(tmp_path: Path) -> None:
    async def scenario() -> list[BaseException]:
        server = grpc.aio.server()
        gateway_pb2_grpc.add_AgentGatewayServiceServicer_to_server(_EndsAfterChallenge(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        errors: list[BaseException] = []
        try:
            for _ in range(2):
                try:
                    await parley.connect(gateway=f"127.0.0.1:{port}", identity=World().identity("worker-1"), trust_bundle=World().trust, expected_gateway_id="gw-1", tls=None, state_dir=None, auth_timeout=5.0)
                except BaseException as error:  # what connect raises is the point
                    errors.append(error)
        finally:
            await server.stop(0)
        return errors

    errors = asyncio.run(scenario())
    assert len(errors) == 2
    assert all(isinstance(e, parley.GatewayError) and e.code == "unavailable" for e in errors), errors


class _CallThatFails:
    """The agent's side of a Connect stream that plays a challenge, then fails the next write with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.writes = 0

    async def write(self, _request: Any) -> None:
        self.writes += 1
        if self.writes > 1:
            raise self.error

    async def read(self) -> Any:
        response = gateway_pb2.ConnectResponse()
        response.challenge.gateway_id = "gw-1"
        response.challenge.nonce = bytes(32)
        return response


@pytest.mark.parametrize(
    "error",
    [grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "bye"), asyncio.InvalidStateError("RPC already finished"), grpc.aio.UsageError("done")],
)
def test_a_failed_auth_write_is_a_gateway_error(error: BaseException) -> None:
    identity = World().identity("worker-1")
    with pytest.raises(parley.GatewayError) as e:
        asyncio.run(GatewayConnection._authenticate(None, _CallThatFails(error), identity, "gw-1"))  # type: ignore[arg-type]
    assert e.value.code == "unavailable"
