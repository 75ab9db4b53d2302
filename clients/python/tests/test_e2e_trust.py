"""The Python SDK following the registry's signed trust bundle (docs/PROTOCOL.md §15.9) through REAL
registry and gateway processes: an online `issuer rotate` reaches a RegistryTrustBundle before the new
key signs anything; a Python agent with a certificate of the old issuer and one with a certificate of
the new issuer exchange a message; the followed version survives a restart of the follower with the
registry unreachable. Runs after the other process tests (it rotates the shared deployment's issuer;
the old key stays trusted until its certificates expire)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import parley
from parley import MessageType

from ._paths import IN_CI
from .processes import Deployment, have_node_toolchain

if not have_node_toolchain() and IN_CI:
    raise RuntimeError("node, openssl and node_modules are required under CI=true")
pytestmark = [pytest.mark.process, pytest.mark.skipif(not have_node_toolchain(), reason="needs node + npm ci + openssl")]


def test_an_online_issuer_rotation_reaches_a_python_follower_and_agents_of_both_issuers_talk(deployment: Deployment, tmp_path: Path) -> None:
    old = deployment.enrol("py-trust-planner", "planner")

    async def scenario() -> None:
        state = tmp_path / "followed.json"
        bundle = parley.RegistryTrustBundle(deployment.registry_address, deployment.trust_bundle, state_file=state, refresh_ms=200)
        async with bundle:
            before = bundle.version
            assert before >= 1 and bundle.state == "current"
            out = deployment.registry_cli(["issuer", "rotate", "--activate-after", "1s", "--json"]).stdout
            rotation: dict[str, Any] = json.loads(out)
            new_key_id = bytes.fromhex(rotation["prepared_key_id"])
            deadline = asyncio.get_running_loop().time() + 20
            while bundle.version < rotation["trust_bundle_version"] + 1:  # prepared, then active
                assert asyncio.get_running_loop().time() < deadline, f"stuck at version {bundle.version}"
                await asyncio.sleep(0.1)
            assert bundle.get(new_key_id) is not None
            new = deployment.enrol("py-trust-worker", "worker")
            cert = json.loads(new.cert_file.read_text())["certificate"]
            assert cert["issuer_key_id"] == new_key_id.hex()

            async def connect(enrolled: Any, name: str) -> parley.Agent:
                return await parley.connect(
                    gateway=deployment.address,
                    identity=parley.load_identity(enrolled.key_file, enrolled.cert_file),
                    trust_bundle=bundle,
                    expected_gateway_id=deployment.gateway_id,
                    tls=parley.TlsConfig(root_certificates=deployment.tls_cert),
                    state_dir=tmp_path / name,
                )

            a = await connect(old, "a")
            b = await connect(new, "b")
            try:
                sending = asyncio.ensure_future(a.send("py-trust-worker", MessageType.TASK_ASSIGNMENT, {"after": "rotation"}))
                msg = await asyncio.wait_for(b.messages().__aiter__().__anext__(), 30)
                assert msg.content == {"after": "rotation"}
                await msg.ack()
                assert (await asyncio.wait_for(sending, 30)).recipient_id == "py-trust-worker"
            finally:
                await a.close()
                await b.close()
            held = bundle.version
        # A restart with the registry unreachable continues from the saved version, not the pinned file.
        restarted = parley.RegistryTrustBundle("127.0.0.1:1", deployment.trust_bundle, state_file=state)
        assert restarted.version == held and restarted.get(new_key_id) is not None

    asyncio.run(asyncio.wait_for(scenario(), 120))
