"""What ``parley.connect`` refuses before touching the network, and the gateway helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import parley
from parley.gateway import is_loopback

from .helpers import World


def _connect(tmp_path: Path, **overrides: Any) -> Any:
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
        _connect(tmp_path, gateway=address)
    assert e.value.code == "failed_precondition"


def test_the_gateway_id_is_required(tmp_path: Path) -> None:
    with pytest.raises(parley.ParleyError) as e:
        _connect(tmp_path, expected_gateway_id="")
    assert e.value.code == "malformed"


def test_an_unreachable_gateway_is_unavailable_and_releases_the_state_dir(tmp_path: Path) -> None:
    with pytest.raises(parley.GatewayError) as e:
        _connect(tmp_path)
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
