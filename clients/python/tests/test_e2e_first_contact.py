"""A first contact with an agent that never connected, through REAL registry and gateway processes (docs/PROTOCOL.md
§10.3 step 5, §5.4): the worker is registered but has never been started, so the gateway holds no certificate of it
and refuses a step 1 to it ``policy_denied``. The Python planner follows its registry (a RegistryTrustBundle): it
looks the worker up (GetAgent, signed as itself), attaches the certificate to the same step 1, the gateway stores it
for the worker (QUEUED), and when the worker starts for the first time, seconds later, it gets both messages once and
the planner both verified receipts. Needs node and the repository's node_modules; skipped without them locally,
failing under CI=true."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import parley
from parley import MessageType

from ._paths import IN_CI
from .processes import Deployment, have_node_toolchain
from .test_e2e_gateway import connect, run

if not have_node_toolchain() and IN_CI:
    raise RuntimeError("node, openssl and node_modules are required under CI=true")
pytestmark = [pytest.mark.process, pytest.mark.skipif(not have_node_toolchain(), reason="needs node + npm ci + openssl")]


def test_first_messages_to_a_registered_agent_that_never_connected_are_delivered_when_it_starts(deployment: Deployment, tmp_path: Path) -> None:
    planner = deployment.enrol("py-fc-planner", "planner")
    worker = deployment.enrol("py-fc-worker", "worker")  # registered, never connected

    async def scenario() -> None:
        events: list[parley.Event] = []
        async with parley.RegistryTrustBundle(deployment.registry_address, deployment.trust_bundle, state_file=tmp_path / "bundle.json") as bundle:
            a = await parley.connect(
                gateway=deployment.address,
                identity=parley.load_identity(planner.key_file, planner.cert_file),
                trust_bundle=bundle,
                expected_gateway_id=deployment.gateway_id,
                tls=parley.TlsConfig(root_certificates=deployment.tls_cert),
                state_dir=tmp_path / "a",
                on_event=events.append,
            )
            b: parley.Agent | None = None
            try:
                sends = [asyncio.ensure_future(a.send("py-fc-worker", MessageType.TASK_ASSIGNMENT, {"n": n}, timeout=60)) for n in (1, 2)]
                await asyncio.sleep(6)  # the worker is not up yet: the sends wait, stored at the gateway
                assert not any(s.done() for s in sends), [s.exception() for s in sends if s.done()]
                assert [p["state"] for p in a.pending_sends()] == ["unsealed", "unsealed"]
                assert a._first_contact.lookups_started == 1

                b = await connect(deployment, worker, tmp_path / "b")  # its first connection ever
                received: list[parley.Message] = []

                async def take() -> None:
                    async for message in b.messages():  # type: ignore[union-attr]
                        received.append(message)
                        await message.ack()

                taking = asyncio.ensure_future(take())
                receipts = await asyncio.wait_for(asyncio.gather(*sends), 45)
                assert all(r.recipient_id == "py-fc-worker" and r.verify(worker.public_key) for r in receipts)
                await asyncio.sleep(1)  # no second copy of either
                assert sorted(m.content["n"] for m in received) == [1, 2]  # type: ignore[index]
                assert all(m.sender == "py-fc-planner" and not m.redelivered for m in received)
                assert {r.message_hash for r in receipts} == {m.message_hash for m in received}
                assert [e["code"] for e in events if e.kind == "send_settled"] == ["ok", "ok"]
                assert not [e for e in events if e.kind == "security"]
                taking.cancel()
            finally:
                await a.close()
                if b is not None:
                    await b.close()

    run(scenario(), timeout=120)
