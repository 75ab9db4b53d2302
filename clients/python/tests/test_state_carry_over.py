"""Carrying a state directory over to a new state key (``previous_identity_keys=``, ``previous_state_keys=``).

The default state key is derived from the identity seed, so ``parley-registry agent rotate`` changes it (§17.8):
the agent restarted with its new key opens its directory with the previous key given once, every record re-sealed
under the new key crash-safely, and from then on the new key alone opens it. The identity record still names the
old key, so the rotation is seen (no session restored, the certificate attached to replies).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

import parley
import parley.state
from parley import crypto
from parley.agent import Agent
from parley.errors import StateError
from parley.gateway import GatewayConnection
from parley.identity import TrustBundle
from parley.session import LocalIdentity, now_ms
from parley.state import IDENTITY_RECORD, KINDS, MAX_PREVIOUS_STATE_KEYS, DirectoryStateStore, StateKeyMismatch, derive_state_key
from parley.types import Event, MessageType
from parley.v1 import gateway_pb2

from .helpers import World
from .test_delivery_contract import attach, sent, start_loops, wait_for
from .test_connect_options import connect_offline
from .test_gateway_replies import make_agent, memory_agent, run, seal
from .test_keys import key_file

OLD = bytes(range(32))
NEW = bytes(range(100, 132))

#: One record of every kind (and two of one), as the agent names them.
RECORDS: dict[str, dict[str, dict[str, Any]]] = {
    "sessions": {"11" * 16: {"id": "11" * 16, "send": [[0, "aa" * 32]]}},
    "outbox": {"22" * 16: {"id": "order-1", "n": 1}, "23" * 16: {"id": "order-2", "n": 2}},
    "inbox": {"33" * 32: {"payload": "ëñ", "counter": 7}},
    "receipts": {"44" * 32: {"hash": "44" * 32, "ts": 1}},
    "identity": {IDENTITY_RECORD: {"v": 1, "key": "55" * 32}},
    "unsealed": {"66" * 16: {"id": "66" * 16, "to": "alice", "payload": "AAAA"}},
}
N_RECORDS = sum(len(r) for r in RECORDS.values())


class Crash(BaseException):
    """The process dies here (not an error the store may handle)."""


def write_records(path: Path, key: bytes) -> None:
    store = DirectoryStateStore(path, key)
    for kind, records in RECORDS.items():
        for name, record in records.items():
            store.put(kind, name, record)
    store.close()


def load_all(store: DirectoryStateStore) -> dict[str, dict[str, dict[str, Any]]]:
    return {kind: store.load(kind) for kind in KINDS}


def keys_of_files(path: Path) -> dict[str, str]:
    """Which key each record file opens under: "new", "old" or "none"."""
    out: dict[str, str] = {}
    for kind in KINDS:
        for file in sorted((path / kind).glob("*.rec")):
            data = file.read_bytes()
            opens = [label for label, key in (("new", NEW), ("old", OLD)) if DirectoryStateStore._decrypt(kind, file.stem, data, bytearray(key)) is not None]
            out[f"{kind}/{file.stem}"] = opens[0] if opens else "none"
    return out


def temporary_files(path: Path) -> list[Path]:
    return [f for kind in KINDS for f in (path / kind).glob(".*.tmp")]


# The store: re-sealing, crash safety, wrong keys, the bound.


def test_a_directory_sealed_under_a_previous_key_is_carried_over_and_then_opens_with_the_current_key_alone(tmp_path: Path) -> None:
    path = tmp_path / "s"
    write_records(path, OLD)
    store = DirectoryStateStore(path, NEW, [bytes(32), OLD])  # tried in turn: a key that opens nothing is fine
    assert store.carried_over == N_RECORDS
    assert load_all(store) == RECORDS
    store.put("outbox", "24" * 16, {"n": 3})  # written under the current key, as ever
    store.close()
    assert set(keys_of_files(path).values()) == {"new"}  # every record re-sealed: the old key opens none
    again = DirectoryStateStore(path, NEW)  # the current key alone
    assert load_all(again) == {**RECORDS, "outbox": {**RECORDS["outbox"], "24" * 16: {"n": 3}}}
    again.close()
    again = DirectoryStateStore(path, NEW, [OLD])  # given again: nothing left to carry over
    assert again.carried_over == 0
    again.close()
    # The records keep their kind and name as associated data: a file under another record's name does not open.
    d = path / "outbox"
    (d / f"{'22' * 16}.rec").write_bytes((d / f"{'23' * 16}.rec").read_bytes())
    with pytest.raises(StateError) as e:
        DirectoryStateStore(path, NEW, [OLD])
    assert e.value.code == "state_corrupt"
    swapped = DirectoryStateStore(path, NEW)
    with pytest.raises(StateError) as e:
        swapped.load("outbox")
    assert e.value.code == "state_corrupt"
    swapped.close()


@pytest.mark.parametrize("phase", ["before_rename", "after_rename"])
@pytest.mark.parametrize("k", range(N_RECORDS))
def test_a_crash_at_each_step_of_the_carry_over_loses_and_duplicates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int, phase: str) -> None:
    path = tmp_path / "s"
    write_records(path, OLD)
    write_file = parley.state._write_file
    calls: list[Path] = []

    def crashing(target: Path, data: bytes) -> None:
        calls.append(target)
        if len(calls) <= k:
            return write_file(target, data)
        if phase == "before_rename":  # half a temporary file, the record itself untouched
            (target.parent / f".{target.stem}.999.1.tmp").write_bytes(data[: len(data) // 2])
        else:  # renamed into place, the directory not fsynced yet
            write_file(target, data)
        raise Crash

    monkeypatch.setattr(parley.state, "_write_file", crashing)
    with pytest.raises(Crash):
        DirectoryStateStore(path, NEW, [OLD])
    monkeypatch.setattr(parley.state, "_write_file", write_file)
    done = k + (phase == "after_rename")
    # At the crash point every record opens under one of the keys: the ones done under the new, the rest the old.
    opened = keys_of_files(path)
    assert sorted(opened.values()) == sorted(["new"] * done + ["old"] * (N_RECORDS - done))
    # The crashed open released the directory; the next one (both keys) finishes the job, nothing lost or duplicated.
    store = DirectoryStateStore(path, NEW, [OLD])
    assert store.carried_over == N_RECORDS - done
    assert load_all(store) == RECORDS
    assert temporary_files(path) == []
    store.close()
    store = DirectoryStateStore(path, NEW)
    assert load_all(store) == RECORDS
    store.close()


def test_a_record_that_opens_under_no_key_given_is_state_corrupt_and_the_directory_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "s"
    write_records(path, OLD)
    with pytest.raises(StateError) as e:
        DirectoryStateStore(path, NEW, [bytes(32)])
    assert e.value.code == "state_corrupt" and isinstance(e.value, StateKeyMismatch)
    assert "previous state keys" in e.value.detail
    opened = keys_of_files(path)
    assert set(opened.values()) == {"old"} and len(opened) == N_RECORDS  # nothing re-sealed or removed
    store = DirectoryStateStore(path, NEW, [OLD])  # the lock was released; the right key carries it over
    assert load_all(store) == RECORDS
    store.close()


def test_more_than_four_previous_keys_or_a_key_of_another_length_is_malformed(tmp_path: Path) -> None:
    assert MAX_PREVIOUS_STATE_KEYS == 4
    keys = [crypto.random_bytes(32) for _ in range(MAX_PREVIOUS_STATE_KEYS + 1)]
    for bad in (keys, [bytes(31)], OLD):
        with pytest.raises(StateError) as e:
            DirectoryStateStore(tmp_path / "s", NEW, bad)  # type: ignore[arg-type]
        assert e.value.code == "malformed"
    assert not (tmp_path / "s").exists()  # refused before anything was created
    DirectoryStateStore(tmp_path / "s", NEW, keys[:MAX_PREVIOUS_STATE_KEYS]).close()


# The agent: `agent rotate`, then a restart with the new key and `previous_identity_keys=`.


def state_agent(identity: LocalIdentity, trust: TrustBundle, events: list[Event], state_dir: Path, **options: Any) -> Agent:
    """An agent (not connected) whose state lives in ``state_dir``; ``options``: state_key=, previous_*=."""
    return memory_agent(identity, trust, events, state_dir, **options)


class BeforeRotation:
    """Bob's state directory as his agent left it under his old key (the default state key, derived from it): a session
    with alice, a receipt (M1, acked), an inbox entry (M2, not acked) and an outbox entry (his send, unconfirmed)."""

    def __init__(self, root: Path) -> None:
        self.world = World(now=now_ms())
        self.path = root / "bob"
        agent, alice = make_agent(self.world, [])
        self.old = agent.identity
        self.key_file = key_file(root / "bob.old.key.json", self.old.signing_key)
        self.new = self.world.identity("bob")  # `agent rotate`: a new key and certificate, same agent id

        async def scenario() -> None:
            [session] = agent._sessions.values()
            agent._store = DirectoryStateStore(self.path, derive_state_key(self.old.signing_key.seed()))  # the default
            await agent._load_state()
            await agent._save_session(session)
            call, _ = attach(agent)
            tasks = start_loops(agent)
            call.play(delivery=gateway_pb2.Delivery(delivery_id=1, envelope=seal(alice, {"m": "M1"})))
            m1 = await asyncio.wait_for(agent._app.get(), 3)
            await m1.ack()
            call.play(delivery=gateway_pb2.Delivery(delivery_id=2, envelope=seal(alice, {"m": "M2"})))
            await asyncio.wait_for(agent._app.get(), 3)
            sending = asyncio.ensure_future(agent.send("alice", MessageType.STATUS_UPDATE, {"m": "out"}, id="order-1", timeout=10))
            await wait_for(lambda: len(sent(call, "envelope")) == 1)
            for t in tasks:
                t.cancel()
            sending.cancel()
            await agent.close()

        run(scenario)
        store = DirectoryStateStore(self.path, derive_state_key(self.old.signing_key.seed()))
        self.records = load_all(store)
        store.close()
        self.outbox = [r["id"] for r in self.records["outbox"].values()]
        assert {k: len(self.records[k]) for k in KINDS} == {"sessions": 1, "outbox": 1, "inbox": 1, "receipts": 1, "identity": 1, "unsealed": 0}

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.path, to)
        return to


@pytest.fixture(scope="module")
def before_rotation(tmp_path_factory: pytest.TempPathFactory) -> BeforeRotation:
    return BeforeRotation(tmp_path_factory.mktemp("rotation"))


class Offline(Exception):
    """The gateway cannot be reached (the state was opened and restored before)."""


async def offline(*args: Any, **kwargs: Any) -> Any:
    raise Offline


def restore(before: BeforeRotation, path: Path, identity: LocalIdentity, **options: Any) -> tuple[dict[str, Any], list[Event]]:
    """Starts bob's agent on ``path`` as ``connect`` does, up to the gateway connection, and reports what it restored."""
    events: list[Event] = []

    async def scenario() -> dict[str, Any]:
        agent = state_agent(identity, before.world.trust, events, path, **options)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(GatewayConnection, "open", offline)
                with pytest.raises(Offline):
                    await agent._start()
            assert agent._store is not None
            handed = []
            while not agent._app.empty():
                handed.append(agent._app.get_nowait())
            seen = {
                "sessions": len(agent._sessions),
                "outbox": sorted(e.id for e in agent._outbox.values()),
                "receipts": sorted(agent._receipts),
                "handed": [(m.content, m.redelivered) for m in handed],
                "certificate": agent._signer_certificate,
                "identity": agent._store.load("identity")[IDENTITY_RECORD],
                "previous_kept": bool(agent._previous_identity_keys or agent._previous_state_keys),
            }
        finally:
            await agent.close()
        return seen

    return run(scenario), events


def test_after_a_rotation_previous_identity_keys_carries_the_state_over_and_later_starts_need_only_the_new_key(before_rotation: BeforeRotation, tmp_path: Path) -> None:
    before = before_rotation
    path = before.copy(tmp_path / "bob")
    old_hex, new_hex = before.old.signing_key.public_key.hex(), before.new.signing_key.public_key.hex()
    assert before.records["identity"][IDENTITY_RECORD]["key"] == old_hex
    receipts = sorted(bytes.fromhex(r["hash"]) for r in before.records["receipts"].values())

    # The first start under the new key: the key file of the old one, as kept before `agent rotate` replaced it.
    first, events = restore(before, path, before.new, previous_identity_keys=[before.key_file])
    assert first["outbox"] == before.outbox and first["receipts"] == receipts
    assert first["handed"] == [({"m": "M2"}, True)]
    # §17.8: the identity record carried over still named the old key, so the rotation is seen.
    assert first["sessions"] == 0
    assert [e.fields["reason"] for e in events if e.kind == "session_closed"] == ["not restored: the identity key was rotated"]
    assert first["certificate"] == before.new.certificate
    assert first["identity"]["key"] == new_hex and isinstance(first["identity"]["rotated_at_ms"], int)
    assert not first["previous_kept"]  # wiped and dropped once the directory is open
    assert set(keys_of_files_under(path, derive_state_key(before.new.signing_key.seed())).values()) == {True}

    # Later starts: the new key alone; nothing lost, the certificate still attached (a session lifetime after it).
    second, events = restore(before, path, before.new)
    assert (second["outbox"], second["receipts"], second["handed"]) == (first["outbox"], first["receipts"], first["handed"])
    assert second["certificate"] == before.new.certificate and second["identity"] == first["identity"]
    assert [e for e in events if e.kind == "session_closed"] == []


def keys_of_files_under(path: Path, key: bytes | bytearray) -> dict[str, bool]:
    """Whether each record file opens under ``key``."""
    return {
        f"{kind}/{file.stem}": DirectoryStateStore._decrypt(kind, file.stem, file.read_bytes(), bytearray(key)) is not None
        for kind in KINDS
        for file in (path / kind).glob("*.rec")
    }


@pytest.mark.parametrize("k", range(5))
def test_a_crash_at_each_step_of_the_agents_carry_over_then_a_restart_completes_it_and_sees_the_rotation(
    before_rotation: BeforeRotation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int
) -> None:
    before = before_rotation
    path = before.copy(tmp_path / "bob")
    write_file = parley.state._write_file
    calls: list[Path] = []

    def crashing(target: Path, data: bytes) -> None:
        calls.append(target)
        if len(calls) > k:
            raise Crash
        write_file(target, data)

    monkeypatch.setattr(parley.state, "_write_file", crashing)
    with pytest.raises(Crash):
        restore(before, path, before.new, previous_identity_keys=[before.old.signing_key])
    monkeypatch.setattr(parley.state, "_write_file", write_file)
    assert len(calls) == k + 1
    new_key = derive_state_key(before.new.signing_key.seed())
    assert sorted(keys_of_files_under(path, new_key).values()) == [False] * (5 - k) + [True] * k

    first, events = restore(before, path, before.new, previous_identity_keys=[before.old.signing_key])
    assert first["outbox"] == before.outbox and first["handed"] == [({"m": "M2"}, True)] and len(first["receipts"]) == 1
    assert first["sessions"] == 0 and first["certificate"] == before.new.certificate
    assert [e.fields["reason"] for e in events if e.kind == "session_closed"] == ["not restored: the identity key was rotated"]
    second, _ = restore(before, path, before.new)  # completed: the new key alone
    assert (second["outbox"], second["receipts"], second["handed"]) == (first["outbox"], first["receipts"], first["handed"])


def test_a_crash_after_the_carry_over_before_the_new_key_was_recorded_still_sees_the_rotation(before_rotation: BeforeRotation, tmp_path: Path) -> None:
    before = before_rotation
    path = before.copy(tmp_path / "bob")
    old_key, new_key = derive_state_key(before.old.signing_key.seed()), derive_state_key(before.new.signing_key.seed())
    DirectoryStateStore(path, new_key, [old_key]).close()  # carried over; the agent died before restoring anything
    first, events = restore(before, path, before.new)  # the new key alone
    assert first["sessions"] == 0 and first["certificate"] == before.new.certificate and first["outbox"] == before.outbox
    assert [e.fields["reason"] for e in events if e.kind == "session_closed"] == ["not restored: the identity key was rotated"]


def test_a_wrong_or_missing_previous_key_is_state_corrupt_naming_the_option_to_pass(before_rotation: BeforeRotation, tmp_path: Path) -> None:
    before = before_rotation
    path = before.copy(tmp_path / "bob")
    wrong: list[dict[str, Any]] = [{}, {"previous_identity_keys": [before.world.identity("bob").signing_key]}]
    for options in wrong:
        with pytest.raises(StateError) as e:
            restore(before, path, before.new, **options)
        assert e.value.code == "state_corrupt"
        assert "previous_identity_keys=" in e.value.detail and "rotated" in e.value.detail
    assert set(keys_of_files_under(path, derive_state_key(before.old.signing_key.seed())).values()) == {True}  # untouched
    first, _ = restore(before, path, before.new, previous_identity_keys=[before.key_file])
    assert first["outbox"] == before.outbox


def test_an_independent_state_key_is_carried_over_with_previous_state_keys(before_rotation: BeforeRotation, tmp_path: Path) -> None:
    before = before_rotation
    path = before.copy(tmp_path / "bob")
    old_key, new_key = bytes(derive_state_key(before.old.signing_key.seed())), crypto.random_bytes(32)
    with pytest.raises(StateError) as e:
        restore(before, path, before.old, state_key=new_key)
    assert e.value.code == "state_corrupt" and "previous_state_keys=" in e.value.detail
    # The same identity key, another state key: the state is carried over and, no rotation, the session restored.
    first, events = restore(before, path, before.old, state_key=new_key, previous_state_keys=[old_key])
    assert first["sessions"] == 1 and first["certificate"] is None and first["outbox"] == before.outbox
    assert [e for e in events if e.kind == "session_closed"] == []
    again, _ = restore(before, path, before.old, state_key=new_key)
    assert again["sessions"] == 1


def test_connect_refuses_more_than_four_previous_keys_before_touching_anything(tmp_path: Path) -> None:
    keys = [crypto.SigningKey.generate() for _ in range(3)]
    refused: list[dict[str, Any]] = [
        {"previous_state_keys": [crypto.random_bytes(32)] * 2, "previous_identity_keys": keys},  # 5 in all
        {"previous_state_keys": [bytes(16)]},
        {"previous_identity_keys": "old.key.json"},  # one path, not a list of them
    ]
    for bad in refused:
        with pytest.raises(parley.StateError) as e:
            connect_offline(tmp_path, **bad)
        assert e.value.code == "malformed"
    assert not (tmp_path / "state").exists()
