"""Python agents through REAL registry and gateway processes (TLS 1.3 on loopback): sessions in
both roles, messages both ways, receipts, acks, the durable inbox and outbox across restarts,
revocation. Needs node and the repository's node_modules (npm ci); skipped without them locally,
and failing under CI=true."""

from __future__ import annotations

import asyncio
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
            assert any(e.kind == "send_settled" and e["code"] == "ok" for e in events)
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


class Driver:
    """tests/driver.py as a child process (a real agent the test can SIGKILL)."""

    def __init__(self, d: Deployment, enrolled: Any, state_dir: Path, *extra: str) -> None:
        import subprocess
        import sys
        import threading

        from ._paths import CLIENT_DIR

        args = [sys.executable, str(CLIENT_DIR / "tests" / "driver.py"), "--gateway", d.address, "--gateway-id", d.gateway_id, "--key", str(enrolled.key_file),
                "--cert", str(enrolled.cert_file), "--trust-bundle", str(d.trust_bundle), "--tls-ca", str(d.tls_cert), "--state-dir", str(state_dir), *extra]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()

        def pump() -> None:
            import json

            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                with self._cond:
                    self.events.append(json.loads(line))
                    self._cond.notify_all()

        threading.Thread(target=pump, daemon=True).start()

    def command(self, **cmd: Any) -> None:
        import json

        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, kind: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e["event"] == kind and all(e.get(k) == v for k, v in match.items()):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self._cond.wait(0.2):
                    err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
                    raise AssertionError(f"no {kind} {match}: {self.events[-10:]} {err[-2000:]}")
                self._cond.wait(min(left, 0.5))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def exit(self) -> None:
        self.command(cmd="exit")
        assert self.proc.wait(30) == 0


def test_a_sender_killed_before_the_receipt_resends_from_its_outbox_after_a_restart(deployment: Deployment, tmp_path: Path) -> None:
    sender = deployment.enrol("py-planner-2", "planner")
    recipient = deployment.enrol("py-worker-2", "worker")
    state = tmp_path / "sender"

    async def scenario() -> None:
        r = await connect(deployment, recipient, tmp_path / "recipient")
        s1 = Driver(deployment, sender, state)
        try:
            s1.wait("ready")
            s1.command(cmd="send", id="m1", to="py-worker-2", type="TASK_ASSIGNMENT", content={"n": 1})
            first = await next_message(r)
            await first.ack()
            await asyncio.to_thread(s1.wait, "receipt", id="m1")
            await r.close()  # the recipient goes offline
            s1.command(cmd="send", id="m2", to="py-worker-2", type="TASK_ASSIGNMENT", content={"n": 2}, timeout=60)
            for _ in range(600):  # sealed and durably in the outbox (it is relayed right after)
                if list((state / "outbox").glob("*.rec")):
                    break
                await asyncio.sleep(0.05)
            assert list((state / "outbox").glob("*.rec"))
            s1.kill()  # no receipt yet
            s2 = Driver(deployment, sender, state)
            await asyncio.to_thread(s2.wait, "ready")  # resends m2 from its outbox on connect
            r2 = await connect(deployment, recipient, tmp_path / "recipient")
            second = await next_message(r2)
            assert second.content == {"n": 2} and not second.redelivered
            await second.ack()
            outcome = await asyncio.to_thread(s2.wait, "send_settled", code="ok")
            assert outcome["message_hash"] == second.message_hash.hex()
            # The gateway may hold m2 twice (the original, if it left before the kill, and the resend): handed over once.
            await asyncio.sleep(1.0)
            assert r2._app.qsize() == 0
            # Counters resume above the durable reservation (256 per block), never lower.
            s2.command(cmd="send", id="m3", to="py-worker-2", type="TASK_ASSIGNMENT", content={"n": 3})
            third = await next_message(r2)
            assert third.envelope.nonce == 257 and first.envelope.nonce == 0 and second.envelope.nonce == 1
            await third.ack()
            await asyncio.to_thread(s2.wait, "receipt", id="m3")
            s2.exit()
            await r2.close()
        finally:
            for d in (s1, locals().get("s2")):
                if d is not None and d.proc.poll() is None:
                    d.kill()

    run(scenario(), 120)


def test_a_session_reject_reseals_pending_messages_in_a_new_session(deployment: Deployment, tmp_path: Path) -> None:
    from parley.relay import sign_session_reject

    planner = deployment.enrol("py-planner-3", "planner")
    worker = deployment.enrol("py-worker-3", "worker")

    async def scenario() -> None:
        a_events: list[parley.Event] = []
        b_events: list[parley.Event] = []
        a = await connect(deployment, planner, tmp_path / "a", on_event=a_events.append)
        b = await connect(deployment, worker, tmp_path / "b")
        sending = asyncio.ensure_future(a.send("py-worker-3", MessageType.TASK_ASSIGNMENT, {"n": 1}))
        await (await next_message(b)).ack()
        await sending
        old = a.sessions()[0]
        await b.close()  # the worker loses its state: its sessions are gone
        b = await connect(deployment, worker, tmp_path / "b-fresh", on_event=b_events.append)
        try:
            entry_hashes: list[bytes] = []

            def watch(e: parley.Event) -> None:
                if e.kind == "resealed":
                    entry_hashes.append(bytes.fromhex(e["message_hash"]))

            a._on_event = lambda e: (a_events.append(e), watch(e))  # type: ignore[func-returns-value]
            pending = asyncio.ensure_future(a.send("py-worker-3", MessageType.TASK_ASSIGNMENT, {"n": 2}, timeout=60))
            # The worker cannot open it (unknown session) and answers with a signed SessionReject, which
            # the gateway relays; the planner checks it, closes the session and reseals in a new one.
            msg = await next_message(b)
            assert msg.content == {"n": 2}
            await msg.ack()
            receipt = await pending
            assert receipt.message_hash == msg.message_hash and entry_hashes == [msg.message_hash]  # resealed: a new envelope
            assert any(e.kind == "session_rejected" for e in a_events)
            assert any(e.kind == "security" and e["code"] == "unknown_session" for e in b_events)
            assert old.closed and old.id not in {s.id for s in a.sessions()}
            # A reject whose signature does not verify is ignored and reported (the gateway would refuse
            # to relay it, so it is handed over directly here).
            c = asyncio.ensure_future(a.send("py-worker-3", MessageType.TASK_ASSIGNMENT, {"n": 3}, timeout=60))
            while not a._outbox:
                await asyncio.sleep(0.01)
            entry = next(iter(a._outbox.values()))
            forged = sign_session_reject(parley.LocalIdentity("py-worker-3", parley.SigningKey.generate(), b.identity.certificate), entry.envelope, 1)
            forged.session_id = entry.session_id
            await a._on_session_reject(forged)
            assert any(e.kind == "security" and e["stage"] == "session_reject" and e["code"] == "bad_signature" for e in a_events)
            third = await next_message(b)
            await third.ack()
            await c
        finally:
            await a.close()
            await b.close()

    run(scenario(), 120)


def test_back_pressure_leaves_deliveries_unacked_until_the_application_acks(deployment: Deployment, tmp_path: Path) -> None:
    planner = deployment.enrol("py-planner-4", "planner")
    worker = deployment.enrol("py-worker-4", "worker")

    async def scenario() -> None:
        a = await connect(deployment, planner, tmp_path / "a")
        b = await connect(deployment, worker, tmp_path / "b", max_unacked=2)
        try:
            sends = [asyncio.ensure_future(a.send("py-worker-4", MessageType.STATUS_UPDATE, {"n": i}, timeout=60)) for i in range(4)]
            it = b.messages().__aiter__()
            got = [await asyncio.wait_for(it.__anext__(), 30) for _ in range(2)]
            await asyncio.sleep(1.5)  # the other two are delivered by the gateway but not opened
            assert b._app.qsize() == 0 and len(b._unacked) == 2 and not any(s.done() for s in sends)
            for m in got:
                await m.ack()
            rest = [await asyncio.wait_for(it.__anext__(), 30) for _ in range(2)]
            for m in rest:
                await m.ack()
            assert sorted(m.content["n"] for m in got + rest) == [0, 1, 2, 3]  # type: ignore[index]
            await asyncio.gather(*sends)
        finally:
            await a.close()
            await b.close()

    run(scenario(), 120)


def test_a_gateway_restart_is_survived_and_a_revoked_agent_stops(deployment: Deployment, tmp_path: Path) -> None:
    planner = deployment.enrol("py-planner-5", "planner")
    worker = deployment.enrol("py-worker-5", "worker")

    async def scenario() -> None:
        b_events: list[parley.Event] = []
        a = await connect(deployment, planner, tmp_path / "a", reconnect=parley.Backoff(0.2, 1.0))
        b = await connect(deployment, worker, tmp_path / "b", reconnect=parley.Backoff(0.2, 1.0), on_event=b_events.append)
        try:
            first = asyncio.ensure_future(a.send("py-worker-5", MessageType.STATUS_UPDATE, {"n": 1}))
            await (await next_message(b)).ack()
            await first
            address = deployment.address
            await asyncio.to_thread(deployment.gateway.stop)  # type: ignore[union-attr]  # go_away shutting_down: transient
            during = asyncio.ensure_future(a.send("py-worker-5", MessageType.STATUS_UPDATE, {"n": 2}, timeout=90))
            await asyncio.to_thread(deployment.start_gateway, address)
            msg = await next_message(b, 60)
            assert msg.content == {"n": 2}
            await msg.ack()
            await during
            assert any(e.kind == "disconnected" and e["code"] == "shutting_down" for e in b_events)
            assert any(e.kind == "reconnecting" for e in b_events) and b.connected
            # Revocation at the registry reaches the gateway, which sends go_away revoked: fatal.
            await asyncio.to_thread(deployment.revoke, "py-worker-5")
            with pytest.raises(parley.GatewayError) as stopped:
                async for _ in b.messages():
                    pass
            assert stopped.value.code == "revoked"
            with pytest.raises(parley.GatewayError):
                await b.send("py-planner-5", MessageType.STATUS_UPDATE, {})
        finally:
            await a.close()
            await b.close()

    run(scenario(), 180)


def test_a_sealed_key_file_written_by_the_registry_cli_opens(deployment: Deployment, tmp_path: Path) -> None:
    from .processes import REGISTRY_CLI, run_cli

    (tmp_path / "pass").write_text("correct horse battery staple\n")
    init = run_cli(REGISTRY_CLI, ["init", "--data-dir", str(tmp_path / "reg"), "--kdf", "interactive", "--passphrase-file", str(tmp_path / "pass")])
    assert init.returncode == 0, init.stderr
    issuer_file = next((tmp_path / "reg").rglob("issuer-key*.json"))
    key = parley.load_key_file(issuer_file, passphrase="correct horse battery staple", key_type="parley-registry-issuer-key")
    assert len(key.public_key) == 32
    with pytest.raises(parley.ParleyError) as wrong:
        parley.load_key_file(issuer_file, passphrase="wrong", key_type="parley-registry-issuer-key")
    assert wrong.value.code == "permission_denied"


def _delay_first_step3(agent: parley.Agent, seconds: float) -> None:
    """Test hook: the agent's first handshake step 3 leaves ``seconds`` late, so the first envelope overtakes it."""
    conn = agent._conn
    assert conn is not None
    original = conn.send
    state = {"done": False}

    def send(kind: str, item: Any, *rest: Any) -> "asyncio.Future[Any]":  # *rest: e.g. a step 1's recipient certificate
        if kind != "handshake" or item.step != 3 or state["done"]:
            return original(kind, item, *rest)
        state["done"] = True
        result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def later() -> None:
            await asyncio.sleep(seconds)
            inner = original(kind, item, *rest)
            try:
                result.set_result(await inner)
            except Exception as error:
                result.set_exception(error)

        asyncio.ensure_future(later())
        return result

    conn.send = send  # type: ignore[method-assign]


def test_an_envelope_that_overtakes_step_3_is_held_then_opened(deployment: Deployment, tmp_path: Path) -> None:
    planner = deployment.enrol("py-planner-6", "planner")
    worker = deployment.enrol("py-worker-6", "worker")

    async def scenario() -> None:
        b_events: list[parley.Event] = []
        a = await connect(deployment, planner, tmp_path / "a")
        b = await connect(deployment, worker, tmp_path / "b", on_event=b_events.append)
        try:
            _delay_first_step3(a, 4.0)
            sending = asyncio.ensure_future(a.send("py-worker-6", MessageType.TASK_ASSIGNMENT, {"n": 1}))
            for _ in range(200):
                if any(r.held for r in b._responding.values()):
                    break
                await asyncio.sleep(0.02)
            assert any(r.held for r in b._responding.values()), "the envelope did not overtake step 3"
            msg = await next_message(b)
            assert msg.content == {"n": 1}
            await msg.ack()
            await sending
            assert not any(e.kind == "security" for e in b_events)  # held, not rejected
        finally:
            await a.close()
            await b.close()

    run(scenario(), 90)


def test_envelopes_held_for_a_handshake_that_times_out_are_rejected_and_resealed(deployment: Deployment, tmp_path: Path) -> None:
    planner = deployment.enrol("py-planner-7", "planner")
    worker = deployment.enrol("py-worker-7", "worker")

    async def scenario() -> None:
        a_events: list[parley.Event] = []
        a = await connect(deployment, planner, tmp_path / "a", on_event=a_events.append)
        b = await connect(deployment, worker, tmp_path / "b", handshake_timeout=1.0)
        try:
            _delay_first_step3(a, 3.0)  # beyond the worker's handshake timeout
            sending = asyncio.ensure_future(a.send("py-worker-7", MessageType.TASK_ASSIGNMENT, {"n": 1}, timeout=60))
            msg = await next_message(b, 40)
            assert msg.content == {"n": 1}
            await msg.ack()
            receipt = await sending
            assert receipt.message_hash == msg.message_hash
            assert any(e.kind == "resealed" for e in a_events) and any(e.kind == "session_rejected" for e in a_events)
        finally:
            await a.close()
            await b.close()

    run(scenario(), 90)


def test_a_counter_reservation_that_cannot_be_written_seals_nothing_and_stops_the_agent(deployment: Deployment, tmp_path: Path) -> None:
    planner = deployment.enrol("py-planner-8", "planner")
    worker = deployment.enrol("py-worker-8", "worker")

    async def scenario() -> None:
        a = await connect(deployment, planner, tmp_path / "a")
        b = await connect(deployment, worker, tmp_path / "b")
        try:
            sending = asyncio.ensure_future(a.send("py-worker-8", MessageType.STATUS_UPDATE, {"n": 1}))
            await (await next_message(b)).ack()
            await sending
            session = a.sessions()[0]
            a._reserved[session.id] = session.send_counter - 1  # the block is used up: the next seal must reserve
            store = a._store
            assert store is not None
            real_put = store.put

            def full_disk(kind: str, name: str, record: dict[str, Any]) -> None:
                if kind == "sessions":
                    raise parley.StateError("state_error", "No space left on device")
                real_put(kind, name, record)

            store.put = full_disk  # type: ignore[method-assign]
            before = session.sent
            with pytest.raises(parley.StateError) as e:
                await a.send("py-worker-8", MessageType.STATUS_UPDATE, {"n": 2})
            assert e.value.code == "state_error" and session.sent == before and not a._outbox  # nothing sealed
            with pytest.raises(parley.StateError):
                await a.send("py-worker-8", MessageType.STATUS_UPDATE, {"n": 3})  # stopped
            with pytest.raises(parley.StateError):
                async for _ in a.messages():
                    pass
        finally:
            await a.close()
            await b.close()

    run(scenario(), 90)


def test_first_contact_with_an_offline_recipient_is_delivered_once_it_connects(deployment: Deployment, tmp_path: Path) -> None:
    # Review finding: a send to a peer without a session was recorded nowhere until sealed (a caller's timeout shorter
    # than the handshake ended it with nothing kept), and the step 1 the gateway stored for an offline recipient
    # (QUEUED) was abandoned after the handshake timeout.
    from parley.v1 import gateway_pb2

    planner = deployment.enrol("py-planner-9", "planner")
    worker = deployment.enrol("py-worker-9", "worker")

    async def scenario() -> None:
        # The worker has connected before (the gateway routes an offline agent by the certificate it last connected
        # with) and is offline now; the planner has never talked to it.
        await (await connect(deployment, worker, tmp_path / "b")).close()
        a_events: list[parley.Event] = []
        a = await connect(deployment, planner, tmp_path / "a", on_event=a_events.append, handshake_timeout=2.0)
        b: parley.Agent | None = None
        step1s: list[asyncio.Future[Any]] = []
        frames: list[bytes] = []
        conn = a._conn
        assert conn is not None
        original = conn.send

        def send(kind: str, item: Any, *rest: Any) -> "asyncio.Future[Any]":  # *rest: a step 1's recipient certificate
            answer = original(kind, item, *rest)
            if kind == "handshake" and item.step == 1:
                step1s.append(answer)
                frames.append(item.SerializeToString())
            return answer

        conn.send = send  # type: ignore[method-assign]
        try:
            with pytest.raises(parley.DeliveryError) as timed_out:
                await a.send("py-worker-9", MessageType.TASK_ASSIGNMENT, {"task": "index"}, timeout=1.0)
            assert timed_out.value.code == "deadline_exceeded" and a.pending() == 1
            assert len(list((tmp_path / "a" / "unsealed").glob("*.rec"))) == 1  # recorded before the handshake
            await asyncio.sleep(6.0)  # three handshake timeouts: the step 1 the gateway stored is still waited on
            # …and sent again (5 s after it: the resend interval), the same frame, which the gateway stores too.
            assert [f.result().status for f in step1s] == [gateway_pb2.DELIVERY_STATUS_QUEUED] * 2 and len(set(frames)) == 1
            b = await connect(deployment, worker, tmp_path / "b")  # its mailbox drains: the step 1, answered
            msg = await next_message(b, 30)
            assert msg.sender == "py-planner-9" and msg.content == {"task": "index"} and not msg.redelivered
            await msg.ack()
            for _ in range(400):
                if any(e.kind == "send_settled" for e in a_events):
                    break
                await asyncio.sleep(0.05)
            [settled] = [e for e in a_events if e.kind == "send_settled"]
            assert settled["code"] == "ok" and settled["message_hash"] == msg.message_hash.hex()
            assert settled["receipt"].verify(worker.public_key)
            await asyncio.sleep(1.0)
            # One handshake (the worker dropped the copy of the step 1 it had answered), delivered once; nothing sent
            # again after its step 2.
            assert len(step1s) == 2 and len(set(frames)) == 1 and b._app.qsize() == 0 and a.pending() == 0
            assert len(a.sessions()) == 1 and len(b.sessions()) == 1
            assert list((tmp_path / "a" / "unsealed").glob("*.rec")) == [] and list((tmp_path / "a" / "outbox").glob("*.rec")) == []
        finally:
            await a.close()
            if b is not None:
                await b.close()

    run(scenario(), 120)
