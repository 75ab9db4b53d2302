"""Shared memory (docs/PROTOCOL.md §18) between Python agents through a REAL gateway process (its
MemoryService over TLS 1.3 on loopback, a real registry issuing the certificates): members read and
write, a reader cannot write, a non-member is refused, compare-and-set conflicts are typed and
``update`` loses no increment under concurrency, an expired grant stops working on time and the next
write moves to a new key epoch by itself, and a revoked member can read nothing written after its
removal (refused by the store, and no key it holds opens it) while it still opens what it had.
TypeScript ↔ Python interop is apps/gateway/test/load/python-agent.spec.ts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import parley

from ._paths import IN_CI
from .processes import Deployment, have_node_toolchain

if not have_node_toolchain() and IN_CI:
    raise RuntimeError("node, openssl and node_modules are required under CI=true")
pytestmark = [pytest.mark.process, pytest.mark.skipif(not have_node_toolchain(), reason="needs node + npm ci + openssl")]


def run(coro: Any, timeout: float = 120) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def connect(d: Deployment, enrolled: Any) -> parley.Agent:
    return await parley.connect(
        gateway=d.address,
        identity=parley.load_identity(enrolled.key_file, enrolled.cert_file),
        trust_bundle=d.trust_bundle,
        expected_gateway_id=d.gateway_id,
        tls=parley.TlsConfig(root_certificates=d.tls_cert),
        state_dir=None,
    )


async def refused(coro: Any) -> str:
    try:
        await coro
    except parley.SharedMemoryError as error:
        return error.code
    return "ok"


def refused_now(fn: Any) -> str:
    try:
        fn()
    except parley.SharedMemoryError as error:
        return error.code
    return "ok"


def test_members_read_and_write_with_typed_conflicts_expiry_and_revocation(deployment: Deployment) -> None:
    enrolled = [deployment.enrol(name, kind) for name, kind in (("py-mem-owner", "planner"), ("py-mem-writer", "worker"), ("py-mem-reader", "worker"), ("py-mem-outsider", "worker"))]

    async def scenario() -> None:
        owner, writer, reader, outsider = [await connect(deployment, e) for e in enrolled]
        try:
            info = await owner.memory.create()
            mid = info.memory_id
            assert info.owner_id == "py-mem-owner" and info.access == "admin" and info.current_epoch == 1
            await owner.memory.grant(mid, "py-mem-writer", "write")
            info = await owner.memory.grant(mid, "py-mem-reader", "read", expires_at_ms=int(time.time() * 1000) + 4_000)
            assert [(m.agent_id, m.access) for m in info.members] == [("py-mem-owner", "admin"), ("py-mem-reader", "read"), ("py-mem-writer", "write")]

            # a member writes, another reads it back verified (writer, version, signature)
            w = await writer.memory.write(mid, "plan", "ünïcödé plan v1", previous_version=0)
            assert (w.version, w.already_applied) == (1, False)
            r = await reader.memory.read(mid, "plan")
            assert (r.text(), r.version, r.writer_id) == ("ünïcödé plan v1", 1, "py-mem-writer")
            assert [m.memory_id for m in await reader.memory.list()] == [mid]
            assert await refused(reader.memory.write(mid, "plan", "no", previous_version=1)) == "permission_denied"
            assert await refused(outsider.memory.read(mid, "plan")) == "permission_denied"
            assert await refused(outsider.memory.get(mid)) == "permission_denied"
            assert await refused(writer.memory.grant(mid, "py-mem-outsider", "read")) == "permission_denied"  # the store refuses a writer's GRANT

            # compare-and-set: a stale write is a typed conflict carrying the current, verified record
            try:
                await owner.memory.write(mid, "plan", "stale", previous_version=0)
                raise AssertionError("a stale write was accepted")
            except parley.SharedMemoryError as error:
                assert error.code == "conflict" and error.current_version == 1
                assert error.current is not None and error.current.writer_id == "py-mem-writer"

            # two writers incrementing concurrently: every increment lands, the losers retried
            await owner.memory.write(mid, "counter", "0", previous_version=0)
            results = await asyncio.gather(*(agent.memory.update(mid, "counter", lambda cur: str(int(cur.text()) + 1) if cur else "1") for agent in (owner, writer) for _ in range(4)))
            final = await reader.memory.read(mid, "counter")
            assert final.text() == "8" and final.version == 9
            assert sorted(x.version for x in results) == list(range(2, 10))
            segments = await owner.memory.segments(mid)
            assert [(s.segment_id, s.version) for s in segments] == [("counter", 9), ("plan", 1)]

            # the reader's grant expires: it is refused at once; the next write starts epoch 2 by itself
            before = await reader.memory.read(mid, "plan")
            await asyncio.sleep(max(0.0, info.members[1].expires_at_ms / 1000 - time.time()) + 0.3)  # type: ignore[operator]
            assert await refused(reader.memory.read(mid, "plan")) == "expired"
            w = await writer.memory.write(mid, "plan", "plan v2, after the expiry", previous_version=1)
            after = await owner.memory.read(mid, "plan")
            assert w.version == 2 and after.info.key_epoch == 2 and after.text() == "plan v2, after the expiry"
            assert refused_now(lambda: reader.memory.open(mid, after.record, after.ciphertext)) == "permission_denied"
            assert reader.memory.open(mid, before.record, before.ciphertext).text() == "ünïcödé plan v1"

            # revocation: epoch 3 in the same call; the writer is refused and holds no key for what follows
            info = await owner.memory.revoke(mid, "py-mem-writer")
            assert info.current_epoch == 3 and [m.agent_id for m in info.members] == ["py-mem-owner"]
            assert await refused(writer.memory.read(mid, "plan")) == "permission_denied"
            await owner.memory.write(mid, "secret", "written after the revocation", previous_version=0)
            secret = await owner.memory.read(mid, "secret")
            assert secret.info.key_epoch == 3
            assert refused_now(lambda: writer.memory.open(mid, secret.record, secret.ciphertext)) == "permission_denied"
            assert writer.memory.open(mid, after.record, after.ciphertext).text() == "plan v2, after the expiry"  # what it had
            # the owner still reads epoch-1 data through the back links
            assert (await owner.memory.read(mid, "counter")).text() == "8"
        finally:
            for a in (owner, writer, reader, outsider):
                await a.close()
        with pytest.raises(parley.ParleyError) as closed:
            _ = owner.memory
        assert closed.value.code == "cancelled"

    run(scenario(), timeout=180)
