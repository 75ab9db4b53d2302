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
from parley import crypto
from parley.memory.records import EpochKey, new_epoch, wrap_key
from parley.v1 import memory_pb2

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
            # long enough for everything below up to the expiry to run on a loaded machine (4 s was not)
            info = await owner.memory.grant(mid, "py-mem-reader", "read", expires_at_ms=int(time.time() * 1000) + 10_000)
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


async def rotate_with_a_bad_copy(attacker: parley.Agent, memory_id: str, victim_id: str) -> int:
    """An admin's rotation at will, as its client makes it, except that ``victim_id``'s copy holds a random key
    (sealed to its key and signed by the attacker: the store cannot tell). Returns the new epoch."""
    mem = attacker.memory
    state = await mem._refresh(memory_id)
    me = mem._identity
    now = mem._clock()
    epoch = new_epoch(me.agent_id, me.signing_key, memory_id, state.log.version, state.log.head, mem._key_for(state, state.current_epoch), now)
    bad = EpochKey(epoch.record, bytearray(crypto.random_bytes(32)))
    wraps = [wrap_key(me.agent_id, me.signing_key, memory_id, bad if m.member_id == victim_id else epoch, m.member_id, m.public_key) for m in state.log.active(now)]
    await mem._call("RotateEpoch", memory_pb2.RotateEpochRequest(memory_id=memory_id, epoch=epoch.record, wraps=wraps), memory_pb2.RotateEpochResponse)
    return int(epoch.record.epoch)


async def attacked_memory(d: Deployment, prefix: str) -> tuple[list[parley.Agent], str]:
    """owner, reader, attacker (an admin) and a memory with "history" under epoch 1 and "plan" written by the
    attacker under epoch 2, whose copy for the owner the attacker made with a random key."""
    enrolled = [d.enrol(f"{prefix}-{name}", kind) for name, kind in (("owner", "planner"), ("reader", "worker"), ("attacker", "worker"))]
    agents = [await connect(d, e) for e in enrolled]
    owner, reader, attacker = agents
    mid = (await owner.memory.create()).memory_id
    await owner.memory.grant(mid, reader.agent_id, "read")
    await owner.memory.grant(mid, attacker.agent_id, "admin")
    await owner.memory.write(mid, "history", "written under epoch 1", previous_version=0)
    assert await rotate_with_a_bad_copy(attacker, mid, owner.agent_id) == 2
    await attacker.memory.write(mid, "plan", "written under epoch 2", previous_version=0)
    return agents, mid


def test_a_member_s_key_copy_that_does_not_open_is_adopted_and_attributed(deployment: Deployment) -> None:
    """§18.5: the owner's client adopts the store's answer, holds no key of epoch 2, names the attacker in every
    operation that needs it, and still reads what it reaches (epoch 1, whose key it held)."""

    async def scenario() -> None:
        agents, mid = await attacked_memory(deployment, "py-bad-copy")
        owner, reader, attacker = agents
        try:
            info = await owner.memory.get(mid)
            assert info.current_epoch == 2
            assert (await reader.memory.read(mid, "plan")).text() == "written under epoch 2"  # the reader's copy opens
            for call in (owner.memory.read(mid, "plan"), owner.memory.write(mid, "plan", "no", previous_version=1), owner.memory.rotate(mid)):
                try:
                    await call
                    raise AssertionError("an operation needing epoch 2's key succeeded")
                except parley.SharedMemoryError as error:
                    assert error.code == "decrypt_failed" and "epoch 2" in error.detail and attacker.agent_id in error.detail and "revoke" in error.detail, error.detail
            assert (await owner.memory.read(mid, "history")).text() == "written under epoch 1"  # its key of epoch 1
        finally:
            for a in agents:
                await a.close()

    run(scenario(), timeout=120)


def test_the_owner_revokes_the_member_at_fault_with_a_cut(deployment: Deployment) -> None:
    """§18.5 item 2: the owner, holding no key of the current epoch, revokes the attacker with a cut epoch; new
    writes and reads work; what was written before the cut fails "before the cut" for a client that holds no
    key of that time, and stays readable to one that does."""

    async def scenario() -> None:
        agents, mid = await attacked_memory(deployment, "py-cut")
        owner, reader, attacker = agents
        late_reader: parley.Agent | None = None
        try:
            assert (await reader.memory.read(mid, "plan")).text() == "written under epoch 2"  # caches epoch 2's key
            info = await owner.memory.revoke(mid, attacker.agent_id)
            assert info.current_epoch == 3 and attacker.agent_id not in [m.agent_id for m in info.members]
            state = owner.memory._states[mid]
            assert len(state.epochs[3].back_link) == 0 and state.epochs[3].creator_id == owner.agent_id  # a cut
            await owner.memory.write(mid, "after", "written after the cut", previous_version=0)
            assert (await reader.memory.read(mid, "after")).text() == "written after the cut"
            assert (await owner.memory.read(mid, "after")).text() == "written after the cut"
            assert await refused(attacker.memory.read(mid, "after")) == "permission_denied"
            # before the cut: the owner (no key of epoch 2) and a member granted after the cut (key 3 only) cannot reach it
            late_reader = await connect(deployment, deployment.enrol("py-cut-late", "worker"))
            await owner.memory.grant(mid, late_reader.agent_id, "read")
            assert (await late_reader.memory.read(mid, "after")).text() == "written after the cut"
            for agent, segment in ((owner, "plan"), (late_reader, "plan"), (late_reader, "history")):
                try:
                    await agent.memory.read(mid, segment)
                    raise AssertionError("a segment before the cut was read without a key of its time")
                except parley.SharedMemoryError as error:
                    assert error.code == "decrypt_failed" and "before the cut at epoch 3" in error.detail, error.detail
            assert (await reader.memory.read(mid, "plan")).text() == "written under epoch 2"  # its key of that time
            assert (await owner.memory.read(mid, "history")).text() == "written under epoch 1"  # its key of epoch 1
        finally:
            for a in agents:
                await a.close()
            if late_reader is not None:
                await late_reader.close()

    run(scenario(), timeout=120)
