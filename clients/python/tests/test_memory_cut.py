"""Shared memory: a key copy or back link that does not open is a member's fault, and its repair
(docs/PROTOCOL.md §18.5, "A key copy or back link that does not open", §18.12 "What a client holds").

A member that makes an epoch (or an admin that grants) can hand another member a copy that does not open to
the key the epoch commits to, or make a back link that does not open to the previous key: the store cannot
check a sealed key. The client adopts the rest of the answer (it verified) and names the member at fault in
every ``decrypt_failed`` that follows. A bad copy leaves it no key of that epoch; the owner or an admin revokes
that member with a **cut** (an epoch > 1 without a back link), after which writes and reads work again and what
was written before the cut fails "before the cut at epoch c" for clients that hold no key of that time. With a
bad back link the client keeps the epoch's key (it matches the commitment), so it writes under that epoch and
its revocation links back as usual; only the epochs before it are out of reach. A client given no copy at all
(the store withheld it) makes no cut: its revocation fails ``permission_denied``. A client accepts a cut only
for a REVOKE entry's version, made by that entry's signer. A fault is ``proven`` only when what the member signed is
wrong whatever record it is paired with: a store can pair genuine material with another genuine record of the epoch
(a losing rotation's), and a copy sealed to another key than the client's own is the store's fault (``bad_signature``).

The store here is an in-process double (:class:`CutStore`, several clients at once) that applies the rules
the real store applies to these calls, including this one (packages/memory-server has it too): an epoch
> 1 with an empty back link only in an ``UpdateMembership`` whose entry is a REVOKE (``malformed`` in
``RotateEpoch``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from parley import SharedMemoryError, crypto
from parley.memory.client import MemoryClient, MemoryKeyFault
from parley.memory.layouts import epoch_layout, key_wrap_layout, membership_entry_hash, wrap_plaintext
from parley.memory.model import Membership, is_cut, verify_epoch_record
from parley.memory.names import ACCESS_ADMIN, ACCESS_WRITE, CHANGE_GRANT, CHANGE_REVOKE
from parley.memory.records import EpochKey, new_cut_epoch, new_epoch, wrap_key
from parley.session import LocalIdentity
from parley.v1 import memory_pb2

from .helpers import NOW
from .test_memory import Memory, answer, code

CLOCK = NOW + 10


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), timeout))


async def outcome(call: Awaitable[Any]) -> tuple[str, str]:
    """(code, detail) of a call's failure, ("ok", "") when it succeeds."""
    try:
        await call
        return "ok", ""
    except SharedMemoryError as error:
        return error.code, error.detail


class CutStore:
    """One memory's store in process, for several clients at once (each client's ``_call`` is replaced by
    :meth:`client`'s). It keeps the signed records as the real store does — the log, the epochs, one key copy
    per member and epoch, the current version of each segment — and applies its rules to these calls: entries
    and epochs must verify and follow; a REVOKE carries the next epoch made for its version and copies for
    exactly the remaining active members; ``RotateEpoch`` is refused a cut (``malformed``); a write goes under
    the current epoch at the segment's version (compare-and-set). It cannot open a sealed key, so it keeps
    whatever copy a member hands out, as the real one does."""

    def __init__(self, m: Memory) -> None:
        self.m = m
        self.epochs: list[Any] = [m.epoch1.record]
        self.wraps: dict[tuple[str, int], Any] = {}
        self.segments: dict[str, tuple[Any, bytes]] = {}
        self.calls: list[tuple[str, str]] = []
        for who in self.members():
            self.wraps[(who.agent_id, 1)] = m.wrap(m.epoch1, who)

    def members(self) -> list[LocalIdentity]:
        ids = {x.member_id for x in self.m.log.members()}
        return [who for who in self.everyone() if who.agent_id in ids]

    def everyone(self) -> list[LocalIdentity]:
        m = self.m
        return [m.owner, m.writer, m.reader, m.outsider, *getattr(m, "extra", [])]

    @property
    def current(self) -> Any:
        return self.epochs[-1]

    def client(self, me: LocalIdentity, on_security: Callable[..., None] | None = None) -> MemoryClient:
        c = MemoryClient(identity=me, address="127.0.0.1:1", service_id="gw-test", trust_bundle=self.m.world.trust, clock=lambda: CLOCK, on_security=on_security)

        async def call(name: str, request: Any, response_type: type) -> Any:
            await asyncio.sleep(0)
            self.calls.append((me.agent_id, name))
            return self.handle(me, name, request)

        c._call = call  # type: ignore[method-assign]
        return c

    def install(self, epoch: Any, wraps: list[Any]) -> None:
        active = sorted(x.member_id for x in self.m.log.active(CLOCK))
        if sorted(w.member_id for w in wraps) != active:
            raise SharedMemoryError("conflict", "key copies must go to exactly the active members")
        self.epochs.append(epoch)
        for w in wraps:
            self.wraps[(w.member_id, epoch.epoch)] = w

    def handle(self, me: LocalIdentity, name: str, request: Any) -> Any:
        m = self.m
        member = m.log.member(me.agent_id)
        if member is None:
            raise SharedMemoryError("permission_denied", "not a member")
        if name == "GetMemory":
            res = memory_pb2.GetMemoryResponse()
            res.memory.memory_id, res.memory.owner_id = m.memory_id, m.owner.agent_id
            res.memory.membership_version, res.memory.current_epoch = m.log.version, self.current.epoch
            res.entries.extend(m.log.entries[request.after_version :])
            for who in self.members():
                res.members.add(member_id=who.agent_id, access=ACCESS_ADMIN, member_public_key=who.signing_key.public_key, certificate=who.certificate)
            res.epochs.extend(self.epochs)
            wrap = self.wraps.get((me.agent_id, self.current.epoch))
            if wrap is not None:
                res.wrap.CopyFrom(wrap)
            return res
        if name == "ReadSegment":
            found = self.segments.get(request.segment_id)
            if found is None:
                raise SharedMemoryError("not_found", "no such segment")
            return memory_pb2.ReadSegmentResponse(record=found[0], ciphertext=found[1])
        if name == "WriteSegment":
            r = request.record
            if member.access < ACCESS_WRITE:
                raise SharedMemoryError("permission_denied", "not a writer")
            if r.key_epoch != self.current.epoch:
                raise SharedMemoryError("conflict", "not the current epoch")
            at = self.segments[r.segment_id][0].version if r.segment_id in self.segments else 0
            if r.previous_version != at:
                return memory_pb2.WriteSegmentResponse(conflict=memory_pb2.WriteConflict(current_version=at, current=self.segments[r.segment_id][0]))
            self.segments[r.segment_id] = (r, bytes(request.ciphertext))
            return memory_pb2.WriteSegmentResponse(accepted=memory_pb2.WriteAccepted(version=r.version))
        if name == "RotateEpoch":
            if is_cut(request.epoch):
                raise SharedMemoryError("malformed", "an epoch without a back link comes only with a REVOKE")
            verify_epoch_record(m.log, request.epoch, self.current)
            self.install(request.epoch, list(request.wraps))
            return memory_pb2.RotateEpochResponse(current_epoch=request.epoch.epoch)
        if name == "UpdateMembership":
            e = request.entry
            trial = m.log.copy()
            trial.append(e)
            if e.change == CHANGE_GRANT:
                if request.HasField("epoch") or len(request.wraps) != 1 or request.wraps[0].epoch != self.current.epoch:
                    raise SharedMemoryError("malformed", "a grant carries the member's copy of the current key")
                m.log = trial
                self.wraps[(e.member_id, self.current.epoch)] = request.wraps[0]
            else:
                if not request.HasField("epoch") or request.epoch.membership_version != e.version:
                    raise SharedMemoryError("malformed", "a revocation carries the next epoch, made for its version")
                verify_epoch_record(trial, request.epoch, self.current)
                before = m.log
                m.log = trial
                try:
                    self.install(request.epoch, list(request.wraps))
                except BaseException:
                    m.log = before
                    raise
            return memory_pb2.UpdateMembershipResponse()
        raise AssertionError(f"unexpected call {name}")

    def rotate_by(self, creator: LocalIdentity, previous: EpochKey, *, bad_copy_for: LocalIdentity | None = None, bad_copy: Callable[[EpochKey, LocalIdentity], Any] | None = None, link_to: EpochKey | None = None, at: int = NOW + 6) -> EpochKey:
        """``creator`` (a writer or admin) starts the next epoch as an honest rotation would, except that
        ``bad_copy_for`` gets ``bad_copy(epoch, member)`` instead of a true copy, and the back link seals
        ``link_to`` (default the previous key) under the new key."""
        m = self.m
        link = previous if link_to is None else EpochKey(previous.record, link_to.key)
        epoch = new_epoch(creator.agent_id, creator.signing_key, m.memory_id, m.log.version, m.log.head, link, at)
        wraps = []
        for who in self.members():
            if bad_copy_for is not None and who.agent_id == bad_copy_for.agent_id and bad_copy is not None:
                wraps.append(bad_copy(epoch, who))
            else:
                wraps.append(wrap_key(creator.agent_id, creator.signing_key, m.memory_id, epoch, who.agent_id, who.signing_key.public_key))
        self.handle(creator, "RotateEpoch", memory_pb2.RotateEpochRequest(memory_id=m.memory_id, epoch=epoch.record, wraps=wraps))
        return epoch


def attacker_memory() -> tuple[Memory, CutStore, LocalIdentity]:
    """Owner, writer, reader, and an admin the owner granted (the attacker: it may rotate at will)."""
    m = Memory()
    attacker = m.world.identity("attacker-6")
    m.extra = [attacker]  # type: ignore[attr-defined]
    m.grant(attacker, ACCESS_ADMIN)
    return m, CutStore(m), attacker


def _signed(m: Memory, signer: LocalIdentity, epoch: EpochKey, member: LocalIdentity, sealed: bytes) -> Any:
    w = wrap_key(signer.agent_id, signer.signing_key, m.memory_id, epoch, member.agent_id, member.signing_key.public_key)
    w.sealed_key = sealed
    w.signature = signer.signing_key.sign(key_wrap_layout(m.memory_id, w))
    return w


def random_key_copy(m: Memory, attacker: LocalIdentity) -> Callable[[EpochKey, LocalIdentity], Any]:
    """A copy that opens, names the right memory, epoch and member, but holds a random key (not the committed one)."""
    return lambda epoch, member: wrap_key(attacker.agent_id, attacker.signing_key, m.memory_id, EpochKey(epoch.record, bytearray(crypto.random_bytes(32))), member.agent_id, member.signing_key.public_key)


def other_member_copy(m: Memory, attacker: LocalIdentity) -> Callable[[EpochKey, LocalIdentity], Any]:
    """The true key, sealed to the member, but its plaintext names another member (a copy moved elsewhere)."""
    return lambda epoch, member: _signed(m, attacker, epoch, member, crypto.sealed_box_seal(bytes(wrap_plaintext(m.memory_id, epoch.epoch, m.reader.agent_id, epoch.key)), member.signing_key.public_key))


def unopenable_copy(m: Memory, attacker: LocalIdentity) -> Callable[[EpochKey, LocalIdentity], Any]:
    """A sealed box to another key: it does not open with the member's identity key."""
    return lambda epoch, member: _signed(m, attacker, epoch, member, crypto.sealed_box_seal(bytes(wrap_plaintext(m.memory_id, epoch.epoch, member.agent_id, epoch.key)), m.outsider.signing_key.public_key))


# --- the attack: a member's copy that does not open, and the owner's repair ---------------------------------


@pytest.mark.parametrize("make_bad_copy", [random_key_copy, other_member_copy, unopenable_copy], ids=["random-key", "names-another-member", "does-not-open"])
def test_a_bad_copy_is_adopted_attributed_and_repaired_by_a_revocation_that_cuts(make_bad_copy: Callable[[Memory, LocalIdentity], Callable[[EpochKey, LocalIdentity], Any]]) -> None:
    m, store, attacker = attacker_memory()
    events: list[tuple[str, str, str]] = []

    async def scenario() -> None:
        early_owner = store.client(m.owner)  # holds epoch 1's key from before the attack
        await early_owner.write(m.memory_id, "history", b"written under epoch 1", previous_version=0)
        early_reader = store.client(m.reader)
        assert (await early_reader.read(m.memory_id, "history")).data == b"written under epoch 1"

        # the attacker (an admin) rotates, handing the owner a copy that does not open to epoch 2's key, and writes
        store.rotate_by(attacker, m.epoch1, bad_copy_for=m.owner, bad_copy=make_bad_copy(m, attacker))
        atk = store.client(attacker)
        await atk.write(m.memory_id, "plan", b"written under epoch 2", previous_version=0)
        assert (await early_reader.read(m.memory_id, "plan")).data == b"written under epoch 2"  # the reader's copy opens

        # the owner's client adopts the answer (no refusal), holds no key of epoch 2 and names the attacker
        owner = store.client(m.owner, on_security=lambda *a: events.append(a))
        info = await owner.get(m.memory_id)
        assert (info.current_epoch, info.membership_version) == (2, m.log.version)
        # a copy that does not open or names another member is provably the attacker's; one of a random key is not
        # (the store may pair a genuine copy with another record of the epoch), but leaves the owner no key just the same
        proven = make_bad_copy is not random_key_copy
        assert info.key_faults == (MemoryKeyFault(2, "attacker-6", "key_copy", proven),)
        assert [e[0] for e in events] == ["decrypt_failed"] and "attacker-6" in events[0][2] and "epoch 2" in events[0][2]
        state = owner._states[m.memory_id]
        assert 2 not in state.keys and (state.faults[2].member_id, state.faults[2].kind) == ("attacker-6", "key_copy")
        store.calls.clear()
        for call in (
            owner.read(m.memory_id, "plan"),  # that epoch
            owner.read(m.memory_id, "history"),  # an earlier one, reached only through epoch 2's key
            owner.write(m.memory_id, "plan", b"no", previous_version=1),
            owner.rotate(m.memory_id),
            owner.grant(m.memory_id, "outsider-4", "read", certificate=m.outsider.certificate),
        ):
            failure, detail = await outcome(call)
            assert failure == "decrypt_failed", detail
            assert "epoch 2" in detail and "attacker-6" in detail and "revoke" in detail, detail
        # nothing was sent under a key the owner does not hold: no write, epoch or grant
        assert {n for who, n in store.calls if who == "owner-1"} <= {"GetMemory", "ReadSegment"}
        await owner.get(m.memory_id)  # the same copy again: not reported twice
        assert len(events) == 1
        # a client holding a key of that time still reads what it reaches; the answer was adopted there too
        assert (await early_owner.read(m.memory_id, "history")).data == b"written under epoch 1"
        assert (await early_owner.get(m.memory_id)).current_epoch == 2
        assert (await outcome(early_owner.read(m.memory_id, "plan")))[0] == "decrypt_failed"

        # the repair: the owner revokes the attacker, and the next epoch is a cut (no back link)
        store.calls.clear()
        info = await owner.revoke(m.memory_id, "attacker-6")
        assert info.current_epoch == 3 and "attacker-6" not in [x.agent_id for x in info.members]
        cut = store.current
        assert is_cut(cut) and cut.creator_id == "owner-1" and cut.membership_version == m.log.version
        assert m.log.entry_at(cut.membership_version).change == CHANGE_REVOKE
        assert ("owner-1", "UpdateMembership") in store.calls and ("owner-1", "RotateEpoch") not in store.calls

        # new writes and reads work, for the owner and the other members
        await owner.write(m.memory_id, "after", b"written after the cut", previous_version=0)
        assert (await owner.read(m.memory_id, "after")).data == b"written after the cut"
        assert (await early_reader.read(m.memory_id, "after")).data == b"written after the cut"
        w = await store.client(m.writer).write(m.memory_id, "after", b"v2", previous_version=1)
        assert w.version == 2

        # before the cut: readable only to a client holding a key of that time
        for who, segment in ((owner, "plan"), (owner, "history"), (store.client(m.reader), "history"), (store.client(m.writer), "plan")):
            failure, detail = await outcome(who.read(m.memory_id, segment))
            assert failure == "decrypt_failed" and "before the cut at epoch 3" in detail, detail
        assert (await early_reader.read(m.memory_id, "plan")).data == b"written under epoch 2"  # cached key 2
        assert (await early_owner.read(m.memory_id, "history")).data == b"written under epoch 1"  # cached key 1
        # the revoked attacker is refused by the store and holds no key of the cut
        assert (await outcome(atk.read(m.memory_id, "after")))[0] == "permission_denied"
        for c in (owner, early_owner, early_reader, atk):
            await c.close()

    run(scenario)


@pytest.mark.parametrize("link", ["random-key", "garbage"])
def test_a_back_link_that_does_not_open_is_its_creator_s_fault_and_repaired_by_a_revocation_that_links_back(link: str) -> None:
    m, store, attacker = attacker_memory()
    events: list[tuple[str, str, str]] = []

    async def scenario() -> None:
        early_owner = store.client(m.owner)  # keeps epoch 1's key from before the attack
        await early_owner.write(m.memory_id, "history", b"epoch 1", previous_version=0)
        # every copy of epoch 2 opens, but its back link does not lead to epoch 1's key
        if link == "random-key":
            store.rotate_by(attacker, m.epoch1, link_to=EpochKey(m.epoch1.record, bytearray(crypto.random_bytes(32))))
        else:
            e2 = new_epoch(attacker.agent_id, attacker.signing_key, m.memory_id, m.log.version, m.log.head, m.epoch1, NOW + 6)
            e2.record.back_link = crypto.random_bytes(72)
            e2.record.signature = attacker.signing_key.sign(epoch_layout(m.memory_id, e2.record))
            wraps = [wrap_key(attacker.agent_id, attacker.signing_key, m.memory_id, e2, who.agent_id, who.signing_key.public_key) for who in store.members()]
            store.handle(attacker, "RotateEpoch", memory_pb2.RotateEpochRequest(memory_id=m.memory_id, epoch=e2.record, wraps=wraps))
        # a back link that does not open is provably its creator's; one that opens to a random key is not (the store
        # may serve another record of epoch 1 than the one it was made for)
        fault = MemoryKeyFault(2, "attacker-6", "back_link", link == "garbage")

        # detected when the epoch is loaded, by a client that never needed epoch 1, and attributed to its creator
        honest = store.client(m.writer, on_security=lambda *a: events.append(a))
        info = await honest.get(m.memory_id)
        assert info.current_epoch == 2 and info.key_faults == (fault,)
        state = honest._states[m.memory_id]
        assert set(state.keys) == {2} and state.faults == {2: fault}  # epoch 2's key matches its commitment: kept
        assert len(events) == 1 and "the back link of epoch 2" in events[0][2] and "attacker-6" in events[0][2]
        # so the honest writer writes and reads under epoch 2
        assert (await honest.write(m.memory_id, "notes", b"honest, epoch 2", previous_version=0)).version == 1
        notes = await honest.read(m.memory_id, "notes")
        assert notes.data == b"honest, epoch 2" and notes.info.key_epoch == 2
        # only what lies before it is out of reach, naming the attacker: for this client and fresh ones
        for c in (honest, store.client(m.writer), store.client(m.owner), store.client(m.reader)):
            failure, detail = await outcome(c.read(m.memory_id, "history"))
            assert failure == "decrypt_failed", detail
            assert "the key of epoch 1 (reached through epoch 2)" in detail and "the back link of epoch 2, made by member attacker-6" in detail, detail
            assert "the owner or an admin can revoke attacker-6" in detail, detail
            if link == "random-key":
                assert "either attacker-6 made a bad back link or the store served another record of epoch 1" in detail and "if it is at fault" in detail, detail
            else:
                assert "does not open under the key epoch 2 commits to" in detail and "at fault" not in detail, detail
        # the owner kept epoch 1's key: it still reads the epoch-1 segment, and reads epoch 2 too
        assert (await early_owner.read(m.memory_id, "history")).data == b"epoch 1"
        assert (await early_owner.read(m.memory_id, "notes")).data == b"honest, epoch 2"
        assert (await early_owner.get(m.memory_id)).key_faults == (fault,)

        # the repair: the owner holds the current key, so its revocation links back (no cut)
        store.calls.clear()
        info = await early_owner.revoke(m.memory_id, "attacker-6")
        assert info.current_epoch == 3 and "attacker-6" not in [x.agent_id for x in info.members]
        assert len(store.current.back_link) == 72 and not is_cut(store.current)
        assert m.log.entry_at(store.current.membership_version).change == CHANGE_REVOKE
        assert ("owner-1", "UpdateMembership") in store.calls
        atk = store.client(attacker)
        assert (await outcome(atk.read(m.memory_id, "notes")))[0] == "permission_denied"

        # new writes and reads work for the owner and the honest writer
        await early_owner.write(m.memory_id, "after", b"after the revocation", previous_version=0)
        assert (await honest.read(m.memory_id, "after")).data == b"after the revocation"
        await honest.write(m.memory_id, "notes", b"honest, epoch 3", previous_version=1)
        assert (await early_owner.read(m.memory_id, "notes")).data == b"honest, epoch 3"
        # a fresh client reaches epoch 2 through epoch 3's back link, but the back link of epoch 2 is still bad
        fresh = store.client(m.reader)
        assert (await fresh.read(m.memory_id, "after")).data == b"after the revocation"
        failure, detail = await outcome(fresh.read(m.memory_id, "history"))
        assert failure == "decrypt_failed" and "the back link of epoch 2, made by member attacker-6" in detail, detail
        # until the owner, who still reads it, rewrites it under the current epoch
        assert (await early_owner.read(m.memory_id, "history")).data == b"epoch 1"
        await early_owner.write(m.memory_id, "history", b"rewritten at epoch 3", previous_version=1)
        assert (await fresh.read(m.memory_id, "history")).data == b"rewritten at epoch 3"
        assert (await store.client(m.writer).read(m.memory_id, "history")).data == b"rewritten at epoch 3"
        for c in (early_owner, honest, fresh, atk):
            await c.close()

    run(scenario)


@pytest.mark.parametrize("held_epoch_1", [False, True], ids=["no-key-at-all", "held-epoch-1"])
def test_a_withheld_copy_of_the_current_epoch_makes_no_cut_revoke_fails_permission_denied(held_epoch_1: bool) -> None:
    m, store, attacker = attacker_memory()

    async def scenario() -> None:
        owner = store.client(m.owner)
        if held_epoch_1:
            await owner.get(m.memory_id)  # holds epoch 1's key
        store.rotate_by(attacker, m.epoch1)  # an honest rotation, every copy true ...
        del store.wraps[(m.owner.agent_id, 2)]  # ... but the store withholds the owner's
        info = await owner.get(m.memory_id)
        assert info.current_epoch == 2 and info.key_faults == ()  # nothing given, nothing failed to open: no one at fault
        store.calls.clear()
        failure, detail = await outcome(owner.revoke(m.memory_id, "attacker-6"))
        assert failure == "permission_denied" and "holds no key of epoch 2 or later" in detail, detail
        # no UpdateMembership at all, in particular none with a cut
        assert [n for _, n in store.calls] == ["GetMemory"]
        assert store.current.epoch == 2 and m.log.member("attacker-6") is not None
        await owner.close()

    run(scenario)


def test_a_client_that_holds_the_current_key_never_cuts_and_writes_and_rotations_never_do() -> None:
    m, store, attacker = attacker_memory()
    store.rotate_by(attacker, m.epoch1, bad_copy_for=m.reader, bad_copy=random_key_copy(m, attacker))

    async def scenario() -> None:
        owner = store.client(m.owner)
        info = await owner.revoke(m.memory_id, "attacker-6")  # the owner's copy opens: an ordinary epoch
        assert info.current_epoch == 3 and len(store.current.back_link) == 72 and not is_cut(store.current)
        # a writer holding no key of the current epoch neither rotates nor writes (so never makes a cut)
        writer = store.client(m.writer)
        store.wraps[(m.writer.agent_id, 3)] = random_key_copy(m, m.owner)(EpochKey(store.current, bytearray(32)), m.writer)
        store.calls.clear()
        assert (await outcome(writer.write(m.memory_id, "x", b"no", previous_version=0)))[0] == "decrypt_failed"
        assert (await outcome(writer.rotate(m.memory_id)))[0] == "decrypt_failed"
        assert [n for _, n in store.calls] == ["GetMemory", "GetMemory"]  # nothing sent
        # the store double refuses a cut outside a revocation, as the real store does
        cut = new_cut_epoch(m.writer.agent_id, m.writer.signing_key, m.memory_id, m.log.version, m.log.head, 4, NOW + 7)
        with pytest.raises(SharedMemoryError) as refused:
            store.handle(m.writer, "RotateEpoch", memory_pb2.RotateEpochRequest(memory_id=m.memory_id, epoch=cut.record))
        assert refused.value.code == "malformed"
        for c in (owner, writer):
            await c.close()

    run(scenario)


def test_a_member_s_copy_replaced_by_a_grant_clears_its_fault() -> None:
    m, store, attacker = attacker_memory()
    store.rotate_by(attacker, m.epoch1, bad_copy_for=m.reader, bad_copy=random_key_copy(m, attacker))

    async def scenario() -> None:
        reader = store.client(m.reader)
        await reader.get(m.memory_id)
        assert 2 in reader._states[m.memory_id].faults
        owner = store.client(m.owner)
        await owner.write(m.memory_id, "plan", b"epoch 2", previous_version=0)
        assert (await outcome(reader.read(m.memory_id, "plan")))[0] == "decrypt_failed"
        await owner.grant(m.memory_id, "reader-3", "read", certificate=m.reader.certificate)  # a fresh copy, the owner's
        assert (await reader.read(m.memory_id, "plan")).data == b"epoch 2"
        assert reader._states[m.memory_id].faults == {}
        for c in (owner, reader):
            await c.close()

    run(scenario)


# --- verification of a cut -----------------------------------------------------------------------------------


def cut_memory(*, change: int = CHANGE_REVOKE, creator: str = "owner") -> tuple[Memory, Any, EpochKey]:
    """A memory whose epoch 2 is a cut made for the last entry (a REVOKE of the reader by the owner, or a GRANT),
    by ``creator`` ("owner", or "admin": another admin the owner granted)."""
    m = Memory()
    admin = m.world.identity("admin-7")
    m.grant(admin, ACCESS_ADMIN)
    if change == CHANGE_REVOKE:
        entry = m.entry(m.owner, CHANGE_REVOKE, m.reader, at=NOW + 2)
    else:
        entry = m.entry(m.owner, CHANGE_GRANT, m.outsider, ACCESS_WRITE, at=NOW + 2)
    m.log.append(entry)
    who = m.owner if creator == "owner" else admin
    e2 = new_cut_epoch(who.agent_id, who.signing_key, m.memory_id, entry.version, membership_entry_hash(m.memory_id, entry), 2, NOW + 2)
    return m, entry, e2


def test_a_cut_is_accepted_for_a_revocation_by_its_signer() -> None:
    m, _, e2 = cut_memory()
    verify_epoch_record(m.log, e2.record, m.epoch1.record)
    state = MemoryClient(identity=m.writer, address="127.0.0.1:1", service_id="gw-test", trust_bundle=m.world.trust, clock=lambda: CLOCK)._verify_state(
        m.memory_id, None, answer(m, for_member=m.writer, epochs=[m.epoch1, e2])
    )
    assert state.current_epoch == 2 and bytes(state.keys[2].key) == bytes(e2.key) and state.faults == {}


@pytest.mark.parametrize("change, creator", [(CHANGE_GRANT, "owner"), (CHANGE_REVOKE, "admin")], ids=["for-a-grant", "by-another-admin"])
def test_a_cut_for_another_entry_than_a_revocation_or_by_another_creator_is_refused(change: int, creator: str) -> None:
    m, _, e2 = cut_memory(change=change, creator=creator)
    assert code(lambda: verify_epoch_record(m.log, e2.record, m.epoch1.record)) == "bad_signature"
    seen: list[tuple[str, str, str]] = []
    c = MemoryClient(identity=m.writer, address="127.0.0.1:1", service_id="gw-test", trust_bundle=m.world.trust, clock=lambda: CLOCK, on_security=lambda *a: seen.append(a))
    with pytest.raises(SharedMemoryError) as refused:
        c._verify_state(m.memory_id, None, answer(m, for_member=m.writer, epochs=[m.epoch1, e2]))
    assert refused.value.code == "bad_signature" and "cut" in refused.value.detail
    assert [x[0] for x in seen] == ["bad_signature"]


def test_back_link_lengths() -> None:
    m, entry, e2 = cut_memory()
    record = memory_pb2.EpochRecord()
    record.CopyFrom(e2.record)
    record.back_link = b"\x00" * 10  # neither empty nor 72 bytes
    assert code(lambda: verify_epoch_record(m.log, record, m.epoch1.record)) == "malformed"
    first = memory_pb2.EpochRecord()
    first.CopyFrom(m.epoch1.record)
    first.back_link = b"\x00" * 72  # epoch 1 has none
    assert code(lambda: verify_epoch_record(Membership.create(m.log.entries[0], m.memory_id), first, None)) == "malformed"
    with pytest.raises(SharedMemoryError):
        new_cut_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, entry.version, m.log.head, 1, NOW + 2)  # a cut comes after epoch 1


# --- faults a store fakes from genuine signed material (§18.5 item 1: what is provable) ----------------------


def test_a_genuine_copy_sealed_to_an_old_key_of_this_agent_is_the_store_s_fault_refused_without_a_fault_or_a_cut() -> None:
    """This admin re-keyed and was granted again under its new key; the store serves it the genuine copy a writer
    sealed to its old key. The copy names a key this client does not hold: the store served the wrong copy (an
    honest one serves a member only the copy sealed to the key it calls with), so the answer is refused
    ``bad_signature``: no member is blamed and no revocation (so no cut) follows."""
    m = Memory()
    admin = m.world.identity("admin-7")
    m.extra = [admin]  # type: ignore[attr-defined]
    m.grant(admin, ACCESS_ADMIN)
    store = CutStore(m)
    epoch2 = store.rotate_by(m.writer, m.epoch1)  # sealed to the admin's key of that time
    old_copy = store.wraps[(admin.agent_id, 2)]
    admin2 = m.world.identity("admin-7")  # 'agent rotate'
    m.grant(admin2, ACCESS_ADMIN)
    m.extra = [admin2]  # type: ignore[attr-defined]
    assert store.wraps[(admin.agent_id, 2)] is old_copy  # the store keeps serving the old copy
    events: list[tuple[str, str, str]] = []

    async def scenario() -> None:
        c = store.client(admin2, on_security=lambda *a: events.append(a))
        failure, detail = await outcome(c.get(m.memory_id))
        assert failure == "bad_signature" and "sealed to another key than this agent's identity key" in detail, detail
        assert [e[0] for e in events] == ["bad_signature"]
        store.calls.clear()
        assert (await outcome(c.revoke(m.memory_id, m.writer.agent_id)))[0] == "bad_signature"
        assert [n for _, n in store.calls] == ["GetMemory"]  # no revocation sent, so no cut
        assert store.current.epoch == 2 and m.log.member(m.writer.agent_id) is not None
        # given the copy sealed to its new key, the same client opens it
        store.wraps[(admin.agent_id, 2)] = m.wrap(epoch2, admin2, m.writer)
        info = await c.get(m.memory_id)
        assert info.current_epoch == 2 and info.key_faults == ()
        await c.close()

    run(scenario)


def test_a_genuine_copy_of_a_losing_rotation_paired_with_the_installed_record_is_a_fault_not_proven() -> None:
    """A writer's rotation attempt A lost (the store answered ``conflict``, or another writer raced it) and its retry
    B was installed; the store serves the owner the writer's genuine copy of A with B's record. It opens, to a key B
    does not commit to: adopted, recorded against the writer but not as proven, with a message that names both
    possibilities. A revocation is still a cut: the store can delete history's ciphertext anyway, so a cut it
    induces gives it no new power over availability."""
    m = Memory()
    store = CutStore(m)
    events: list[tuple[str, str, str]] = []

    async def scenario() -> None:
        owner0 = store.client(m.owner)
        await owner0.write(m.memory_id, "history", b"epoch 1 data", previous_version=0)
        await owner0.close()
        attempt_a = new_epoch(m.writer.agent_id, m.writer.signing_key, m.memory_id, m.log.version, m.log.head, m.epoch1, NOW + 6)
        copy_a = wrap_key(m.writer.agent_id, m.writer.signing_key, m.memory_id, attempt_a, m.owner.agent_id, m.owner.signing_key.public_key)
        store.rotate_by(m.writer, m.epoch1)  # B
        store.wraps[(m.owner.agent_id, 2)] = copy_a
        owner = store.client(m.owner, on_security=lambda *a: events.append(a))
        info = await owner.get(m.memory_id)
        assert info.key_faults == (MemoryKeyFault(2, "writer-2", "key_copy", False),)
        failure, detail = await outcome(owner.write(m.memory_id, "history", b"no", previous_version=1))
        assert failure == "decrypt_failed", detail
        expected = (
            "the key copy of epoch 2 that writer-2 signed does not match the key epoch 2 commits to: either writer-2 sealed another key, "
            "or the store paired the copy with another record of epoch 2 (a copy's signature does not cover the commitment); "
            "the owner or an admin can revoke writer-2 if it is at fault"
        )
        assert expected in detail, detail
        assert len(events) == 1 and expected in events[0][2]
        # revoking an unrelated member is a cut, as with any copy that leaves the owner without the current key
        await owner.revoke(m.memory_id, "reader-3")
        assert is_cut(store.current) and store.current.epoch == 3
        failure, detail = await outcome(store.client(m.writer).read(m.memory_id, "history"))
        assert failure == "decrypt_failed" and "before the cut" in detail, detail
        await owner.close()

    run(scenario)


def test_a_losing_record_of_the_previous_epoch_makes_the_back_link_fault_not_proven() -> None:
    """The owner made epoch 3 linking back honestly to the installed epoch 2 (B); the store serves the losing record
    A as epoch 2. Epoch 3's back link opens, to a key A does not commit to: the owner's key of epoch 3 is kept, and
    the fault is the back link's, not proven."""
    m = Memory()
    store = CutStore(m)

    async def scenario() -> None:
        attempt_a = new_epoch(m.writer.agent_id, m.writer.signing_key, m.memory_id, m.log.version, m.log.head, m.epoch1, NOW + 6)
        epoch_b = store.rotate_by(m.writer, m.epoch1)
        writer = store.client(m.writer)
        await writer.write(m.memory_id, "notes", b"written under epoch 2", previous_version=0)
        await writer.close()
        store.rotate_by(m.owner, epoch_b, at=NOW + 7)
        store.epochs[1] = attempt_a.record  # the fork
        reader = store.client(m.reader)
        info = await reader.get(m.memory_id)
        assert info.current_epoch == 3 and info.key_faults == (MemoryKeyFault(3, "owner-1", "back_link", False),)
        assert set(reader._states[m.memory_id].keys) == {3}  # epoch 3's own key matches its commitment: kept
        failure, detail = await outcome(reader.read(m.memory_id, "notes"))
        assert failure == "decrypt_failed", detail
        assert "the back link of epoch 3, made by member owner-1, does not open to the key of epoch 2: either owner-1 made a bad back link or the store served another record of epoch 2" in detail, detail
        await reader.close()

    run(scenario)
