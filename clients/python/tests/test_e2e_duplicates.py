"""Copies of a message the application holds, through REAL registry and gateway processes (§17.3 item 3).

The gateway holds every unacknowledged delivery in the stream's in-flight set (at most 256). While bob's
application holds a message, its sender resends the same envelope (a hostile peer can, as fast as its rate limit
allows): bob keeps one delivery of it for his application's ack and acks every further copy at once, so his
stream does not fill — another peer's message, and the receipt of bob's own send, still reach him. Needs node and
the repository's node_modules (npm ci); skipped without them locally, and failing under CI=true."""

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

COPIES = 300  # more than the gateway's in-flight bound for one stream (256)


def test_copies_of_a_held_message_do_not_fill_the_recipients_stream(deployment: Deployment, tmp_path: Path) -> None:
    planner = deployment.enrol("py-dup-planner-1", "planner")
    worker = deployment.enrol("py-dup-worker-1", "worker")
    other = deployment.enrol("py-dup-planner-2", "planner")

    async def scenario() -> None:
        events: list[parley.Event] = []
        a = await connect(deployment, planner, tmp_path / "a")
        b = await connect(deployment, worker, tmp_path / "b", on_event=events.append)
        c = await connect(deployment, other, tmp_path / "c")
        inbox_b, inbox_a = b.messages().__aiter__(), a.messages().__aiter__()
        try:
            sending = asyncio.ensure_future(a.send("py-dup-worker-1", MessageType.TASK_ASSIGNMENT, {"task": "M"}, timeout=60))
            held = await asyncio.wait_for(inbox_b.__anext__(), 20)  # bob's application holds it, not acked
            [entry] = a._outbox.values()
            assert a._conn is not None
            sent = 0
            while sent < COPIES:  # the same envelope bytes again, as a resend (or a peer replaying it) does
                try:
                    await a._conn.send("envelope", entry.envelope)
                    sent += 1
                except parley.ParleyError:
                    await asyncio.sleep(0.05)  # rate limited: a moment later
            deadline = asyncio.get_running_loop().time() + 10
            while sum(1 for e in events if e.kind == "duplicate") < COPIES and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert sum(1 for e in events if e.kind == "duplicate") == COPIES, "the copies did not all reach bob"
            assert len(held._entry.deliveries) == 1  # one kept for the application's ack; the others acked at once

            # Another peer's message still reaches bob while he holds M.
            from_c = asyncio.ensure_future(c.send("py-dup-worker-1", MessageType.STATUS_UPDATE, {"other": 1}, timeout=30))
            second = await asyncio.wait_for(inbox_b.__anext__(), 8)
            assert second.sender == "py-dup-planner-2" and second.content == {"other": 1}
            await second.ack()
            await asyncio.wait_for(from_c, 10)

            # Bob sends before acking M (asks the planner): the receipt of his send reaches him.
            asking = asyncio.ensure_future(b.send("py-dup-planner-1", MessageType.STATUS_UPDATE, {"q": 1}, timeout=10))
            question = await asyncio.wait_for(inbox_a.__anext__(), 10)
            await question.ack()
            await asyncio.wait_for(asking, 10)

            mine = await held.ack()
            assert await asyncio.wait_for(sending, 30) == mine
        finally:
            for agent in (a, b, c):
                await agent.close()

    run(scenario())
