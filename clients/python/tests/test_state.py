"""The sealed state directory (§17): atomic durable records, sealing, one process at a time."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from parley import crypto
from parley.errors import StateError
from parley.state import DirectoryStateStore, MemoryStateStore, derive_state_key

KEY = bytes(range(32))
NAME = "00112233445566778899aabbccddeeff"


def test_round_trip_and_delete(tmp_path: Path) -> None:
    store = DirectoryStateStore(tmp_path / "s", KEY)
    store.put("outbox", NAME, {"a": 1, "b": ["x"]})
    assert store.load("outbox") == {NAME: {"a": 1, "b": ["x"]}}
    store.put("outbox", NAME, {"a": 2})
    assert store.load("outbox") == {NAME: {"a": 2}}
    store.delete("outbox", NAME)
    store.delete("outbox", NAME)  # a missing record is fine
    assert store.load("outbox") == {}
    store.close()


def test_directory_and_files_are_private(tmp_path: Path) -> None:
    store = DirectoryStateStore(tmp_path / "s", KEY)
    store.put("inbox", NAME, {"secret": "payload"})
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    f = tmp_path / "s" / "inbox" / f"{NAME}.rec"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert b"payload" not in f.read_bytes()  # sealed
    store.close()


def test_one_process_at_a_time(tmp_path: Path) -> None:
    first = DirectoryStateStore(tmp_path / "s", KEY)
    with pytest.raises(StateError) as e:
        DirectoryStateStore(tmp_path / "s", KEY)
    assert e.value.code == "state_error"
    first.close()
    DirectoryStateStore(tmp_path / "s", KEY).close()  # free again


def test_a_wrong_key_an_altered_file_or_a_swapped_name_is_state_corrupt(tmp_path: Path) -> None:
    store = DirectoryStateStore(tmp_path / "s", KEY)
    store.put("sessions", NAME, {"k": "v"})
    other = "ff" * 16
    store.put("sessions", other, {"k": "w"})
    store.close()
    wrong = DirectoryStateStore(tmp_path / "s", bytes(32))
    with pytest.raises(StateError) as e:
        wrong.load("sessions")
    assert e.value.code == "state_corrupt"
    wrong.close()
    d = tmp_path / "s" / "sessions"
    a, b = (d / f"{NAME}.rec").read_bytes(), (d / f"{other}.rec").read_bytes()
    (d / f"{NAME}.rec").write_bytes(b)  # another record's sealed bytes under this name
    store = DirectoryStateStore(tmp_path / "s", KEY)
    with pytest.raises(StateError):
        store.load("sessions")
    flipped = bytearray(a)
    flipped[-1] ^= 1
    (d / f"{NAME}.rec").write_bytes(bytes(flipped))
    with pytest.raises(StateError):
        store.load("sessions")
    store.close()


def test_a_crash_mid_write_leaves_the_old_record(tmp_path: Path) -> None:
    store = DirectoryStateStore(tmp_path / "s", KEY)
    store.put("receipts", NAME, {"v": "old"})
    store.close()
    # A crash between the temporary file and the rename leaves a temporary file behind.
    tmp = tmp_path / "s" / "receipts" / f".{NAME}.999.1.tmp"
    tmp.write_bytes(b"half a record")
    store = DirectoryStateStore(tmp_path / "s", KEY)
    assert store.load("receipts") == {NAME: {"v": "old"}}
    assert not tmp.exists()  # swept at open
    store.close()


def test_write_failures_are_state_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    store = DirectoryStateStore(tmp_path / "s", KEY)
    os.chmod(tmp_path / "s" / "outbox", 0o500)
    try:
        with pytest.raises(StateError) as e:
            store.put("outbox", NAME, {})
        assert e.value.code == "state_error"
    finally:
        os.chmod(tmp_path / "s" / "outbox", 0o700)
        store.close()


def test_names_are_checked(tmp_path: Path) -> None:
    store = DirectoryStateStore(tmp_path / "s", KEY)
    for bad in ["../x", "ABC", "", "zz" * 8]:
        with pytest.raises(StateError):
            store.put("outbox", bad, {})
    with pytest.raises(StateError):
        store.put("nope", NAME, {})
    store.close()


def test_memory_store_and_key_derivation() -> None:
    m = MemoryStateStore()
    m.put("inbox", NAME, {"a": [1]})
    loaded = m.load("inbox")
    loaded[NAME]["a"].append(2)
    assert m.load("inbox") == {NAME: {"a": [1]}}  # copies
    seed = crypto.random_bytes(32)
    assert derive_state_key(seed) == derive_state_key(seed) and derive_state_key(seed) != derive_state_key(bytes(32))
    assert len(derive_state_key(seed)) == 32


def test_a_closed_store_refuses_writes_and_close_waits_for_a_write_in_progress(tmp_path: Path) -> None:
    store = DirectoryStateStore(tmp_path / "s", KEY)
    store.put("receipts", NAME, {"v": 1})
    store._io.acquire()  # a write in progress (in another thread)
    closing = threading.Thread(target=store.close)
    closing.start()
    closing.join(0.1)
    assert closing.is_alive() and bytes(store._key) == KEY  # the key is not wiped under it
    store._io.release()
    closing.join(5)
    for late in (lambda: store.put("receipts", "ff" * 16, {"v": 1}), lambda: store.delete("receipts", NAME)):
        with pytest.raises(StateError) as e:
            late()  # e.g. Message.ack() after Agent.close()
        assert e.value.code == "state_error"
    store.close()  # idempotent
    again = DirectoryStateStore(tmp_path / "s", KEY)
    assert again.load("receipts") == {NAME: {"v": 1}}  # nothing sealed under the wiped key
    again.close()
    memory = MemoryStateStore()
    memory.close()
    with pytest.raises(StateError):
        memory.put("inbox", NAME, {})
