"""Shared memory: what a store that misbehaves can no longer make the client do (a review of the client against
a store that is not trusted, docs/PROTOCOL.md §18.12) — page for ever, change the cached state with an answer
the client refuses, get a new write accepted under an old epoch, roll a memory back once it left the cache,
keep writes under a key an expired member holds, and slip in a backdated entry of an expired admin."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from parley import SharedMemoryError
from parley.memory.layouts import membership_entry_hash, membership_layout, write_layout
from parley.memory.model import Membership
from parley.memory.names import ACCESS_ADMIN, ACCESS_READ, ACCESS_WRITE, CHANGE_GRANT, CHANGE_REVOKE
from parley.memory.records import create_entry, new_epoch
from parley.v1 import memory_pb2

from .helpers import NOW
from .test_memory import FakeStore, Memory, answer, client_for, code


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), timeout))


async def outcome(call: Awaitable[Any]) -> str:
    try:
        await call
        return "ok"
    except SharedMemoryError as error:
        return error.code


# --- F4: listings end --------------------------------------------------------------------------------------


def test_a_store_that_pages_memories_for_ever_is_refused() -> None:
    m = Memory()
    for tokens in ("same", "new"):
        c = client_for(m, m.owner)
        calls = [0]

        async def call(name: str, request: Any, response_type: type, tokens: str = tokens) -> Any:
            assert name == "ListMemories" and request.page_size == 500
            calls[0] += 1
            await asyncio.sleep(0)
            token = "mem-" + "a" * 32 if tokens == "same" else f"mem-{calls[0]:032x}"
            page = memory_pb2.ListMemoriesResponse(next_page_token=token)
            page.memories.add(memory_id=m.memory_id, owner_id=m.owner.agent_id, access=ACCESS_ADMIN, created_at_ms=NOW)
            return page

        c._call = call  # type: ignore[method-assign]
        assert run(lambda: outcome(c.list()), timeout=10) == "malformed", tokens
        # a repeated token at the second page; new tokens for ever: 100,000 memories, so 200 pages of 500 and one more
        assert calls[0] == (2 if tokens == "same" else 202), tokens


class PagingStore(FakeStore):
    """FakeStore that lists one valid segment per page and points on to another page for ever (``tokens`` "new")
    or to the same page again ("same"); GetMemory reports a quota of ``max_segments``."""

    def __init__(self, m: Memory, me: Any, tokens: str, max_segments: int) -> None:
        super().__init__(m, me)
        self.tokens, self.max_segments = tokens, max_segments
        self.record, _ = m.write(m.writer, m.epoch1)
        self.pages = 0

    async def call(self, name: str, request: Any, response_type: type) -> Any:
        await asyncio.sleep(0)
        if name == "ListSegments":
            self.pages += 1
            token = "plan" if self.tokens == "same" else f"seg-{self.pages}"
            return memory_pb2.ListSegmentsResponse(segments=[self.record], next_page_token=token)
        res = await super().call(name, request, response_type)
        if name == "GetMemory":
            res.usage.max_segments, res.usage.owner_max_segments = self.max_segments, 100_000 if self.max_segments else 0
        return res


@pytest.mark.parametrize("tokens, max_segments, pages", [("same", 10_000, 2), ("new", 10_000, 14), ("new", 2500, 7), ("new", 0, 14)])
def test_a_store_that_pages_segments_for_ever_is_refused(tokens: str, max_segments: int, pages: int) -> None:
    m = Memory()
    store = PagingStore(m, m.reader, tokens, max_segments)
    c = client_for(m, m.reader)
    c._call = store.call  # type: ignore[method-assign]
    assert run(lambda: outcome(c.segments(m.memory_id)), timeout=10) == "malformed"
    # at most the quota and two pages of room in items, so ceil(that / 1000) pages with items and one more; the
    # page after them is refused before its record is checked (no quota reported: the default 10,000 segments)
    assert store.pages == pages


def test_a_page_larger_than_asked_for_is_refused() -> None:
    m = Memory()
    c = client_for(m, m.owner)

    async def call(name: str, request: Any, response_type: type) -> Any:
        page = memory_pb2.ListMemoriesResponse()
        for _ in range(501):
            page.memories.add(memory_id=m.memory_id, owner_id=m.owner.agent_id, access=ACCESS_ADMIN, created_at_ms=NOW)
        return page

    c._call = call  # type: ignore[method-assign]
    assert run(lambda: outcome(c.list())) == "malformed"


# --- F5: a refused answer changes nothing ---------------------------------------------------------------------


def test_a_refused_answer_leaves_the_cached_log_as_it_was_and_the_state_is_dropped() -> None:
    m = Memory()
    c = client_for(m, m.writer)
    seen = c._verify_state(m.memory_id, None, answer(m, for_member=m.writer))
    assert seen.log.version == 3
    # the store shows the owner's REVOKE of the reader (a valid entry) with no epoch made for it: refused…
    m.log.append(m.entry(m.owner, CHANGE_REVOKE, m.reader))
    assert code(lambda: c._verify_state(m.memory_id, seen, answer(m, for_member=m.writer, after=3))) == "bad_signature"
    # …and the cached log does not hold the REVOKE now (it was appended in place before the epoch check)
    assert seen.log.version == 3 and seen.log.member(m.reader.agent_id) is not None


def test_a_write_after_a_refused_answer_reloads_and_never_seals_under_an_epoch_a_revocation_ended() -> None:
    m = Memory()
    store = FakeStore(m, m.writer)
    c = client_for(m, m.writer)
    c._call = store.call  # type: ignore[method-assign]

    async def scenario() -> tuple[str, str, bool, list[str]]:
        await c.get(m.memory_id)
        # the store shows the REVOKE without its epoch: the answer is refused and the state dropped
        m.log.append(m.entry(m.owner, CHANGE_REVOKE, m.reader))
        refused = await outcome(c.get(m.memory_id))
        dropped = m.memory_id not in c._states
        store.calls.clear()
        # the next write loads afresh and is refused again: nothing is sealed under epoch 1, which the reader holds
        return refused, await outcome(c.write(m.memory_id, "plan", b"v1", previous_version=0)), dropped, store.calls[:]

    refused, write, dropped, calls = run(scenario)
    assert (refused, write, dropped) == ("bad_signature", "bad_signature", True)
    assert "WriteSegment" not in calls


def test_the_current_epoch_is_checked_against_the_state_s_log_before_sealing() -> None:
    m = Memory()
    store = FakeStore(m, m.writer)
    c = client_for(m, m.writer)
    c._call = store.call  # type: ignore[method-assign]

    async def scenario() -> tuple[str, list[str]]:
        state = await c.get(m.memory_id) and c._states[m.memory_id]
        # a state whose log moved past the current epoch's revocation floor (as an answer appended in place left it)
        state.log.append(m.entry(m.owner, CHANGE_REVOKE, m.reader))
        store.calls.clear()
        return await outcome(c.write(m.memory_id, "plan", b"v1", previous_version=0)), store.calls[:]

    assert run(scenario) == ("bad_signature", [])


# --- F6: a write is accepted under an epoch only from a writer of that epoch's time ------------------------------


def test_a_record_under_an_epoch_whose_writer_held_write_only_at_another_time_is_refused() -> None:
    m = Memory()  # 1 CREATE, 2 writer (write), 3 reader (read)
    late = m.world.identity("worker-5")
    m.grant(late, ACCESS_READ)  # 4: a reader while epoch 1 is current, so it holds epoch 1's key
    e2 = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, 4, m.log.head, m.epoch1, NOW + 2)
    m.grant(late, ACCESS_WRITE)  # 5: a writer from epoch 2 on
    c = client_for(m, m.writer)
    c._states[m.memory_id] = c._verify_state(m.memory_id, None, answer(m, for_member=m.writer, epochs=[m.epoch1, e2]))
    honest, honest_ct = m.write(late, e2)
    assert c.open(m.memory_id, honest, honest_ct).data == b"plan v1"
    forged, forged_ct = m.write(late, m.epoch1, b"under a key it held only as a reader")
    assert code(lambda: c.open(m.memory_id, forged, forged_ct)) == "bad_signature"
    # the writer of epoch 1's time still verifies under epoch 1
    earlier, earlier_ct = m.write(m.writer, m.epoch1)
    assert c.open(m.memory_id, earlier, earlier_ct).data == b"plan v1"


def test_a_removed_writer_s_new_write_under_its_old_epoch_is_refused() -> None:
    m = Memory()
    revoke = m.entry(m.owner, CHANGE_REVOKE, m.writer, at=NOW + 1_000)  # 4
    m.log.append(revoke)
    e2 = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, 4, membership_entry_hash(m.memory_id, revoke), m.epoch1, NOW + 1_000)
    c = client_for(m, m.reader)
    c._states[m.memory_id] = c._verify_state(m.memory_id, None, answer(m, for_member=m.reader, epochs=[m.epoch1, e2]))
    before, before_ct = m.write(m.writer, m.epoch1)  # written at NOW + 5, while a writer: still verifies
    assert c.open(m.memory_id, before, before_ct).data == b"plan v1"
    # ten minutes after its removal, the removed writer signs a new version under epoch 1 (which it holds)
    after = copy.deepcopy(before)
    after.timestamp_ms = NOW + 1_000 + 600_000
    after.signature = m.writer.signing_key.sign(write_layout(m.memory_id, after))
    assert code(lambda: c.open(m.memory_id, after, before_ct)) == "bad_signature"
    # within twice the clock skew of the REVOKE: what an honest store could have accepted
    edge = copy.deepcopy(before)
    edge.timestamp_ms = NOW + 1_000 + 120_000
    edge.signature = m.writer.signing_key.sign(write_layout(m.memory_id, edge))
    assert code(lambda: c.open(m.memory_id, edge, before_ct)) == "ok"


# --- F3: a memory that left the cache cannot be rolled back ------------------------------------------------------


class TwoMemories:
    """A store of two memories (GetMemory only); ``views[memory_id]`` is what it shows of each."""

    def __init__(self, views: dict[str, Callable[[int], Any]]) -> None:
        self.views = views

    async def call(self, name: str, request: Any, response_type: type) -> Any:
        await asyncio.sleep(0)
        assert name == "GetMemory"
        return self.views[request.memory_id](request.after_version)


def trimmed(m: Memory, me: Any, upto: int, after: int) -> Any:
    """GetMemory's answer for ``m`` as of log version ``upto`` (an older state the store kept)."""
    res = answer(m, for_member=me, after=min(after, upto))
    res.ClearField("entries")
    res.entries.extend(m.log.entries[after:upto])
    res.memory.membership_version = upto
    return res


def second_memory(a: Memory) -> Memory:
    """Another memory of a's owner, writer and reader (the same trust bundle)."""
    b = copy.copy(a)
    b.memory_id, create = create_entry(a.owner.agent_id, a.owner.signing_key, now_ms=NOW)
    b.log = Membership.create(create, b.memory_id)
    b.epoch1 = new_epoch(a.owner.agent_id, a.owner.signing_key, b.memory_id, 1, b.log.head, None, NOW)
    b.grant(a.writer, ACCESS_WRITE)
    b.grant(a.reader, ACCESS_READ)
    return b


def test_a_memory_that_left_the_cache_cannot_be_rolled_back_or_forked() -> None:
    a = Memory()
    b = second_memory(a)
    a.grant(a.world.identity("worker-5"), ACCESS_READ)  # a at version 4
    version = {"a": 4}
    store = TwoMemories({a.memory_id: lambda after: trimmed(a, a.writer, version["a"], after), b.memory_id: lambda after: answer(b, for_member=b.writer, after=after)})
    c = client_for(a, a.writer)
    c._cache_size = 1
    c._call = store.call  # type: ignore[method-assign]

    async def scenario() -> list[str]:
        got = [str((await c.get(a.memory_id)).membership_version)]
        key = c._states[a.memory_id].keys[1]
        await c.get(b.memory_id)  # a leaves the cache: its keys are wiped
        got.append(f"cached {sorted(c._states)} wiped {not any(key.key)}")
        version["a"] = 3  # the store shows a's log as it was before version 4
        got.append(await outcome(c.get(a.memory_id)))
        version["a"] = 4
        got.append(str((await c.get(a.memory_id)).membership_version))
        return got

    assert run(scenario) == ["4", f"cached {[b.memory_id]} wiped True", "replay", "4"]
    # another log at a version seen is refused too (a fork: bad_signature)
    fork = copy.copy(a)
    fork.log = Membership.create(a.log.entries[0], a.memory_id)
    for e in a.log.entries[1:3]:
        fork.log.append(e)
    fork.grant(a.world.identity("worker-6"), ACCESS_READ)  # another entry 4, signed by a's owner
    c2 = client_for(a, a.writer)
    c2._cache_size = 1
    c2._call = TwoMemories({a.memory_id: lambda after: answer(a, for_member=a.writer, after=after), b.memory_id: lambda after: answer(b, for_member=b.writer, after=after)}).call  # type: ignore[method-assign]

    async def forked() -> str:
        await c2.get(a.memory_id)
        await c2.get(b.memory_id)
        c2._call = TwoMemories({a.memory_id: lambda after: answer(fork, for_member=a.writer, after=after)}).call  # type: ignore[method-assign]
        return await outcome(c2.get(a.memory_id))

    assert run(forked) == "bad_signature"


def test_what_a_client_remembers_of_dropped_memories_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from parley.memory import client as client_module

    monkeypatch.setattr(client_module, "MAX_REMEMBERED_MEMORIES", 2)
    m = Memory()
    c = client_for(m, m.writer)
    state = c._verify_state(m.memory_id, None, answer(m, for_member=m.writer))
    for i in range(4):
        c._states[f"mem-{i:032x}"] = copy.copy(state)
        c._forget(f"mem-{i:032x}")
    assert list(c._seen) == [f"mem-{2:032x}", f"mem-{3:032x}"]


# --- F1: the client decides itself that a rotation is due ---------------------------------------------------------


def expiring_memory() -> tuple[Memory, Any]:
    """A memory whose member worker-5 (read) holds epoch 1 and whose grant expired at NOW + 5 (clocks read NOW + 10)."""
    m = Memory()
    lapsed = m.world.identity("worker-5")
    m.log.append(m.entry(m.owner, CHANGE_GRANT, lapsed, ACCESS_READ, expires_at_ms=NOW + 5))
    return m, lapsed


def test_a_store_that_says_no_rotation_is_required_after_a_grant_expired_is_not_believed() -> None:
    m, _ = expiring_memory()
    store = FakeStore(m, m.owner)  # store.required stays False: it claims no rotation is needed
    c = client_for(m, m.owner)
    c._call = store.call  # type: ignore[method-assign]

    async def scenario() -> tuple[int, list[str], int, list[str]]:
        first = await c.write(m.memory_id, "plan", b"v1", previous_version=0)
        calls = store.calls[:]
        store.calls.clear()
        await c.write(m.memory_id, "plan", b"v2", previous_version=first.version)  # epoch 2 was made after the expiry
        return len(store.epochs), calls, store.epochs[-1].epoch, store.calls[:]

    assert run(scenario) == (2, ["GetMemory", "RotateEpoch", "GetMemory", "WriteSegment"], 2, ["WriteSegment"])


def test_a_writer_that_cannot_rotate_does_not_write_under_a_key_an_expired_member_holds() -> None:
    m, _ = expiring_memory()
    store = FakeStore(m, m.writer)
    c = client_for(m, m.writer)
    c._call = store.call  # type: ignore[method-assign]

    async def scenario() -> tuple[str, list[str]]:
        # the store refuses a writer's rotation while it says none is required: the write fails, nothing is sealed
        return await outcome(c.write(m.memory_id, "plan", b"v1", previous_version=0)), store.calls[:]

    assert run(scenario) == ("permission_denied", ["GetMemory", "RotateEpoch"])


# --- F2: entry times go forward, and an expired admin signs nothing after the client saw the log ------------------


def test_entry_times_never_go_down_along_the_log() -> None:
    m = Memory()  # entries at NOW + 1
    m.grant(m.outsider, ACCESS_READ)
    backdated = m.entry(m.owner, CHANGE_GRANT, m.world.identity("worker-5"), ACCESS_READ, at=NOW)
    assert backdated.timestamp_ms == NOW + 1  # our own entries follow the head's time
    backdated.timestamp_ms = NOW
    backdated.signature = m.owner.signing_key.sign(membership_layout(m.memory_id, backdated))
    assert code(lambda: m.log.append(backdated)) == "malformed"


def test_a_backdated_entry_of_an_admin_whose_grant_expired_before_the_client_saw_the_head_is_refused() -> None:
    m = Memory()
    m.log.append(m.entry(m.owner, CHANGE_GRANT, m.outsider, ACCESS_ADMIN, expires_at_ms=NOW + 100))  # 4
    clock = [NOW + 10 * 60_000]  # the client sees head 4 ten minutes after the admin's grant expired
    c = client_for(m, m.writer)
    c._clock = lambda: clock[0]
    seen = c._verify_state(m.memory_id, None, answer(m, for_member=m.writer))
    # the expired admin and the store append a GRANT it dates before its expiry (and after the head)
    m.log.append(m.entry(m.outsider, CHANGE_GRANT, m.world.identity("worker-5"), ACCESS_WRITE, at=NOW + 50))
    clock[0] += 1_000
    assert code(lambda: c._verify_state(m.memory_id, seen, answer(m, for_member=m.writer, after=4))) == "bad_signature"
    # a client that first sees the log now (it never saw head 4 before the entry) cannot tell: it accepts it
    assert client_for(m, m.writer)._verify_state(m.memory_id, None, answer(m, for_member=m.writer)).log.version == 5
    # an entry the admin made while a client had seen the head only before the expiry is accepted
    early = client_for(m, m.writer)
    early._clock = lambda: NOW + 60
    m2 = answer(m, for_member=m.writer)
    m2.ClearField("entries")
    m2.entries.extend(m.log.entries[:4])
    m2.memory.membership_version = 4
    before = early._verify_state(m.memory_id, None, m2)
    early._clock = lambda: NOW + 10 * 60_000
    assert early._verify_state(m.memory_id, before, answer(m, for_member=m.writer, after=4)).log.version == 5
