"""Python agents through REAL registry and gateway processes (TLS 1.3 on loopback): sessions in
both roles, messages both ways, receipts, acks, the durable inbox and outbox across restarts,
revocation. Needs node and the repository's node_modules (npm ci); skipped without them locally,
and failing under CI=true."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with tempfile.TemporaryDirectory(prefix="parley-py-e2e-") as tmp:
        d = Deployment(Path(tmp)).start()
        try:
            yield d
        finally:
            d.stop()


def run(coro: Any, timeout: float = 90) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def connect(d: Deployment, enrolled: Any, state_dir: Path | None, **kw: Any) -> parley.Agent:
    return await parley.connect(
        gateway=d.address,
        identity=parley.load_identity(enrolled.key_file, enrolled.cert_file),
        trust_bundle=d.trust_bundle,
        expected_gateway_id=d.gateway_id,
        tls=parley.TlsConfig(root_certificates=d.tls_cert),
        state_dir=state_dir,
        **kw,
    )


async def next_message(agent: parley.Agent, timeout: float = 20) -> parley.Message:
    it = agent.messages().__aiter__()
    return await asyncio.wait_for(it.__anext__(), timeout)


def test_two_python_agents_exchange_messages_with_verified_receipts(deployment: Deployment, tmp_path: Path) -> None:
    planner = deployment.enrol("py-planner-1", "planner")
    worker = deployment.enrol("py-worker-1", "worker")

    async def scenario() -> None:
        events: list[parley.Event] = []
        a = await connect(deployment, planner, tmp_path / "a", on_event=events.append)
        b = await connect(deployment, worker, tmp_path / "b")
        try:
            sending = asyncio.ensure_future(a.send("py-worker-1", MessageType.TASK_ASSIGNMENT, {"task": "index", "text": "ünïcödé ✓"}))
            msg = await next_message(b)
            assert msg.sender == "py-planner-1" and msg.type is MessageType.TASK_ASSIGNMENT
            assert msg.content == {"task": "index", "text": "ünïcödé ✓"} and not msg.redelivered
            assert not sending.done()  # no receipt before the application acks
            await asyncio.sleep(0.3)
            assert not sending.done()
            mine = await msg.ack()
            receipt = await sending
            assert receipt == mine and receipt.message_hash == msg.message_hash
            assert receipt.verify(worker.public_key) and receipt.recipient_id == "py-worker-1"
            # and back, on the session the planner initiated (the worker answers as responder)
            back = asyncio.ensure_future(b.send("py-planner-1", MessageType.STATUS_UPDATE, {"progress": 0.5}, parent_message_hash=msg.message_hash))
            reply = await next_message(a)
            assert reply.parent_message_hash == msg.message_hash and reply.content == {"progress": 0.5}
            await reply.ack()
            assert (await back).verify(planner.public_key)
            assert [s.role for s in a.sessions()] == ["initiator"] and [s.role for s in b.sessions()] == ["responder"]
            assert any(e.kind == "outcome" and e["code"] == "ok" for e in events)
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_the_readme_quick_start_runs(deployment: Deployment, tmp_path: Path) -> None:
    import re
    import shutil
    import sys

    from ._paths import CLIENT_DIR

    readme = (CLIENT_DIR / "README.md").read_text()
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", readme, re.S)
    assert code is not None
    source = code.group(1).replace("gateway.example:7443", deployment.address).replace('"gw-1"', repr(deployment.gateway_id))
    worker = deployment.enrol("worker-1", "worker")
    planner = deployment.enrol("planner-1", "planner")
    shutil.copy(worker.key_file, tmp_path / "worker-1.key.json")
    shutil.copy(worker.cert_file, tmp_path / "worker-1.cert.json")
    shutil.copy(deployment.trust_bundle, tmp_path / "trust-bundle.json")
    shutil.copy(deployment.tls_cert, tmp_path / "gateway-ca.pem")

    async def scenario() -> None:
        p = await connect(deployment, planner, tmp_path / "planner")
        env = {**__import__("os").environ, "PYTHONPATH": str(CLIENT_DIR)}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", source, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            msg = await next_message(p, 30)  # the quick start's STATUS_UPDATE
            assert msg.sender == "worker-1" and msg.content == {"progress": 0.5, "note": "résumé ✓"}
            await msg.ack()
            await p.send("worker-1", MessageType.TASK_ASSIGNMENT, {"task": "next"})  # ends its loop
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            assert "receipt verified, signed by planner-1" in out.decode()
            assert "planner-1 TASK_ASSIGNMENT {'task': 'next'}" in out.decode()
        finally:
            if proc.returncode is None:
                proc.kill()
            await p.close()

    run(scenario())
