"""A responder whose revocation data is stale (docs/PROTOCOL.md §17.3 item 7), through REAL registry and gateway
processes — the new-user walkthrough's finding, as @parley/client's test/e2e/stale-responder.spec.ts has it: a planner
queues three sends to a worker that never connected (a first contact through the registry lookup: the step 1 stored for
the worker); the registry stops; the worker starts for the first time — its revocation list never loaded, so it cannot
check the planner — and the registry comes back seconds later. The worker leaves the handshake frames unacknowledged
until its list is fresh (never refusing the envelopes behind them): its application gets the three messages once, and
the planner three verified receipts. A deployment of its own: it stops its registry. Needs node and the repository's
node_modules; skipped without them locally, failing under CI=true."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import grpc
import pytest

import parley
from parley import MessageType

from ._paths import IN_CI
from .processes import Deployment, have_node_toolchain
from .test_e2e_gateway import connect, run

if not have_node_toolchain() and IN_CI:
    raise RuntimeError("node, openssl and node_modules are required under CI=true")
pytestmark = [pytest.mark.process, pytest.mark.skipif(not have_node_toolchain(), reason="needs node + npm ci + openssl")]


def test_a_worker_started_while_the_registry_is_down_gets_the_messages_queued_for_it_once_it_is_back(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-py-stale-") as tmp:
        d = Deployment(Path(tmp)).start()
        try:
            _scenario(d, tmp_path)
        finally:
            d.stop()


def _scenario(d: Deployment, tmp_path: Path) -> None:
    planner = d.enrol("py-st-planner", "planner")
    worker = d.enrol("py-st-worker", "worker")  # registered, never connected

    async def scenario() -> None:
        a_events: list[parley.Event] = []
        b_events: list[parley.Event] = []
        received: list[parley.Message] = []
        b: parley.Agent | None = None
        revocations = parley.RegistryRevocations(d.registry_address, parley.TrustBundle.from_file(d.trust_bundle), refresh_ms=500)
        async with parley.RegistryTrustBundle(d.registry_address, d.trust_bundle, state_file=tmp_path / "bundle.json") as bundle:
            a = await parley.connect(
                gateway=d.address,
                identity=parley.load_identity(planner.key_file, planner.cert_file),
                trust_bundle=bundle,
                expected_gateway_id=d.gateway_id,
                tls=parley.TlsConfig(root_certificates=d.tls_cert),
                state_dir=tmp_path / "a",
                resend=parley.ResendPolicy(initial_s=0.5, max_s=2.0),
                on_event=a_events.append,
            )
            try:
                sends = [asyncio.ensure_future(a.send("py-st-worker", MessageType.TASK_ASSIGNMENT, {"n": n}, id=f"st-{n}", timeout=120)) for n in (1, 2, 3)]
                await asyncio.sleep(3)  # looked up, its step 1 stored for the offline worker: the sends wait, unsealed
                assert [p["state"] for p in a.pending_sends()] == ["unsealed"] * 3 and not any(s.done() for s in sends)

                d.stop_registry()
                # The worker starts for the first time: its revocation list cannot load (polled, never fetched: stale).
                revocations._channel = grpc.aio.insecure_channel(d.registry_address)
                revocations._task = asyncio.get_running_loop().create_task(revocations._poll())
                b = await connect(d, worker, tmp_path / "b", revocations=revocations, on_event=b_events.append)

                async def take() -> None:
                    assert b is not None
                    async for message in b.messages():
                        received.append(message)
                        await message.ack()

                taking = asyncio.ensure_future(take())
                await asyncio.sleep(8)
                assert received == []  # fail closed: nothing taken unchecked …
                assert not any(s.done() for s in sends), [s.exception() for s in sends if s.done()]  # … nothing refused
                assert any(e.kind == "security" and e["code"] == "revocation_stale" and e["stage"] == "handshake" for e in b_events)

                d.restart_registry()
                receipts = await asyncio.wait_for(asyncio.gather(*sends), 90)
                assert all(r.recipient_id == "py-st-worker" and r.verify(worker.public_key) for r in receipts)
                await asyncio.sleep(1.5)  # nothing more comes: each once
                assert sorted(m.content["n"] for m in received) == [1, 2, 3]  # type: ignore[index]
                assert all(m.sender == "py-st-planner" and not m.redelivered for m in received)
                assert sorted((e["id"], e["code"]) for e in a_events if e.kind == "send_settled") == [(f"st-{n}", "ok") for n in (1, 2, 3)]
                assert [e for e in a_events if e.kind == "resealed"] == []  # no SessionReject ever came
                assert not [e for e in b_events if e.kind == "security" and e["code"] in ("unknown_session", "handshake_failed")]
                taking.cancel()
            finally:
                await a.close()
                if b is not None:
                    await b.close()
                await revocations.close()

    run(scenario(), timeout=240)
