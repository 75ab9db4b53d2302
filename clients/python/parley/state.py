"""The agent's durable state (delivery contract, docs/PROTOCOL.md §17): sessions with their
reserved send counters, the outbox (sends waiting for a session, and sealed ones), the inbox, the
receipt store, and the identity key the state was written under (§17.8).

One directory per agent, one sealed file per record::

    state_dir/LOCK                  flock: one process per state directory
    state_dir/sessions/<id>.rec     session keys, reserved send counter, replay window
    state_dir/outbox/<entry>.rec    a sent envelope and its payload, until a verified receipt or expiry
    state_dir/unsealed/<entry>.rec  a send waiting for a session with its recipient (first contact): recipient,
                                    payload (type, content, hashes), created and expiry; written before the send
                                    waits for anything. Sealing it writes outbox/<entry>.rec (the same name)
                                    durably, then deletes this one: a crash between leaves both, and the agent
                                    keeps the sealed one (its envelope may have left the process; a second seal
                                    would be a second message). Absent in a directory of an earlier release.
                                    An outbox or unsealed record is named by its send's outbox id
                                    (``<entry>``: a hash of the caller's send id, or the id made up for a
                                    send without one) and keeps the send id itself (``send_id``; absent in a
                                    record of an earlier release: see ``parley.agent._send_id_of``)
    state_dir/inbox/<hash>.rec      an opened envelope and its payload, until the application acks it
    state_dir/receipts/<hash>.rec   a receipt this agent signed, re-sent when the envelope comes again
    state_dir/identity/0000000000000000.rec
                                    the identity public key the state was written under: an agent started
                                    with another one (its key was rotated) restores no sessions (§17.8);
                                    ``rotated_at_ms``: when this key first replaced another (absent if it
                                    never did) — for a message lifetime after it, replies carry the
                                    agent's certificate, across restarts.
                                    Absent in a directory written before it was kept (then recorded at the
                                    next start; a rotation is not detected that once)

Each file is ``b"PPY1" ‖ nonce(24) ‖ XChaCha20-Poly1305(state_key, nonce, ad, JSON)`` with
``ad = str("parley/python/state-record") ‖ str(kind) ‖ str(name)``, so a record
cannot be read without the key, altered, or swapped with another record's file.
A file that does not open is ``state_corrupt``.

Carrying a directory over to a new state key (``previous_keys``, at most
:data:`MAX_PREVIOUS_STATE_KEYS`): the default state key is derived from the identity key, so an identity key
rotation (§17.8) changes it. Opened with earlier keys, the store re-seals, before anything else reads or
writes it, every record that does not open under the current key but does under an earlier one: the same
plaintext, kind and name (associated data), a fresh nonce, the current key, written as any record is
(temporary file, fsync, rename; each directory fsynced once its records are done). Every step replaces
one file atomically and none creates or deletes a record, so at any crash point each record is either
its old file (opens under an earlier key) or its new one (opens under the current key): the directory
opens with the current key and the earlier ones, nothing lost or duplicated, and the next open finishes
the job. Once every record opens under the current key, that key alone opens it; the earlier keys are
wiped when the open returns. A record that opens under none of them is ``state_corrupt``
(:class:`StateKeyMismatch`).

Writes are atomic and durable: a temporary file (mode 0600) is written and
fsynced, renamed into place, and the directory fsynced, so after a crash a
record is either the old one or the new one, never a mix. Deletions fsync the
directory too. Every write happens before the action it makes safe: a send's
unsealed record before it waits for a session, a counter reservation before
sealing, the outbox entry before relaying (and before the unsealed record is
deleted), the inbox record before the counter is marked and the message handed
over, the receipt record before the inbox entry is dropped. A directory of an
earlier release gains the ``unsealed`` subdirectory, empty, when it is opened.

This is the SDK's own local format (it never leaves the machine); §13's
``PSS1`` session export is the TypeScript SDK's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import nacl.bindings as _sodium
import nacl.exceptions

from . import crypto
from .errors import StateError
from .layout import Layout

KINDS: Final = ("sessions", "outbox", "inbox", "receipts", "identity", "unsealed")
#: The one record of kind ``identity`` (replaced in place: a write is atomic).
IDENTITY_RECORD: Final = "0" * 16
_MAGIC: Final = b"PPY1"
_NONCE_BYTES: Final = 24
_NAME_RE: Final = re.compile(r"[0-9a-f]{16,64}")
MAX_RECORD_BYTES: Final = 4 << 20
#: Earlier state keys one open may carry a directory over from (each record that does not open under the current
#: key is tried under each of them): beyond, ``malformed``. Carry a directory over soon after each rotation.
MAX_PREVIOUS_STATE_KEYS: Final = 4


class StateKeyMismatch(StateError):
    """``state_corrupt``: a record opens under neither the state key nor any earlier key given (another key, or
    altered). The agent adds which option to pass."""


def check_previous_keys(keys: Sequence[bytes | bytearray], what: str = "previous state keys") -> None:
    """``malformed`` unless ``keys`` are at most :data:`MAX_PREVIOUS_STATE_KEYS` keys of 32 bytes."""
    if isinstance(keys, (bytes, bytearray, str)):
        raise StateError("malformed", f"{what}: a sequence of keys, not one key")
    if len(keys) > MAX_PREVIOUS_STATE_KEYS:
        raise StateError("malformed", f"at most {MAX_PREVIOUS_STATE_KEYS} {what} at once, {len(keys)} given: carry the state directory over after each rotation")
    for key in keys:
        if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
            raise StateError("malformed", f"{what}: each is 32 bytes")


def _write_file(target: Path, data: bytes) -> None:
    """Replaces ``target`` atomically: a temporary file (mode 0600) written and fsynced, then renamed over it. The
    caller fsyncs the directory. ``OSError`` on failure (the temporary file removed)."""
    tmp = target.parent / f".{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _ad(kind: str, name: str) -> bytes:
    return Layout("parley/python/state-record").str(kind).str(name).bytes()


def derive_state_key(identity_seed: bytes) -> bytearray:
    """The default state key: keyed BLAKE2b-256 of a fixed domain under the identity seed.

    The identity key already lets its holder act as the agent, so the state key
    adds no second secret to manage; pass ``state_key`` to ``connect`` to use an
    independent one (for example when the identity key lives in a KMS).
    """
    import hashlib

    return bytearray(hashlib.blake2b(b"parley/python/state-key/v1", key=bytes(identity_seed), digest_size=32).digest())


class StateStore(Protocol):
    """Where records live: JSON-able dicts by kind and name."""

    def load(self, kind: str) -> dict[str, dict[str, Any]]: ...

    def put(self, kind: str, name: str, record: dict[str, Any]) -> None: ...

    def delete(self, kind: str, name: str) -> None: ...

    def close(self) -> None: ...


class MemoryStateStore:
    """Records in memory: no durability at all (tests, or agents that accept losing in-flight messages)."""

    durable = False

    def __init__(self) -> None:
        self._data: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self._closed = False

    def load(self, kind: str) -> dict[str, dict[str, Any]]:
        return {n: json.loads(json.dumps(r)) for n, r in self._data[kind].items()}

    def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        """Stores a copy; ``state_error`` once closed (as the directory store)."""
        if self._closed:
            raise StateError("state_error", f"cannot write {kind}/{name}: the state store is closed")
        self._data[kind][name] = json.loads(json.dumps(record))

    def delete(self, kind: str, name: str) -> None:
        if self._closed:
            raise StateError("state_error", f"cannot delete {kind}/{name}: the state store is closed")
        self._data[kind].pop(name, None)

    def close(self) -> None:
        self._closed = True


class DirectoryStateStore:
    """Sealed records in a directory (mode 0700), one process at a time (``state_error`` if locked)."""

    durable = True

    def __init__(self, path: str | Path, state_key: bytes | bytearray, previous_keys: Sequence[bytes | bytearray] = ()) -> None:
        """Opens (creates) the directory. ``previous_keys``: earlier state keys the directory may have been written
        under; every record sealed under one of them is re-sealed under ``state_key`` before this returns (see the
        module's docstring), and :attr:`carried_over` counts them. The caller keeps (and wipes) its own copies."""
        if len(state_key) != 32:
            raise StateError("malformed", "the state key is 32 bytes")
        check_previous_keys(previous_keys)
        #: Records this open re-sealed from an earlier state key to the current one.
        self.carried_over = 0
        self.path = Path(path)
        self._key = bytearray(state_key)
        #: Held by every read, write and deletion, and by close(): the key is never wiped under a write in progress.
        self._io = threading.Lock()
        self._closed = False
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            for kind in KINDS:
                (self.path / kind).mkdir(mode=0o700, exist_ok=True)
            self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StateError("state_error", f"cannot use state directory {self.path}: {error.strerror}") from error
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(self._lock_fd)
            raise StateError("state_error", f"state directory {self.path} is in use by another agent (another process, or an agent of this process not closed yet): one agent per state directory") from error
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            self.close()
            raise StateError("state_error", f"state directory {self.path} is accessible by group or others (mode {mode:o})")
        self._sweep_temporary_files()
        if previous_keys:
            try:
                self.carried_over = self._carry_over(previous_keys)
            except BaseException:
                self.close()  # the lock released, the key wiped: the next open goes on where this one stopped
                raise

    def _carry_over(self, previous_keys: Sequence[bytes | bytearray]) -> int:
        """Re-seals under the current key every record that opens only under an earlier one; returns how many.
        ``state_corrupt`` (:class:`StateKeyMismatch`) for a record that opens under none, ``state_error`` when a
        record cannot be written. The copies of the earlier keys are wiped before it returns or raises."""
        keys = [bytearray(k) for k in previous_keys if not crypto.constant_time_equal(bytes(k), bytes(self._key))]
        carried = 0
        try:
            with self._io:
                for kind in KINDS:
                    directory = self.path / kind
                    changed = False
                    for file in sorted(directory.glob("*.rec")):
                        name = file.stem
                        if _NAME_RE.fullmatch(name) is None:
                            continue
                        data = self._read(file, kind, name)
                        if self._decrypt(kind, name, data, self._key) is not None:
                            continue  # already under the current key (written so, or carried over before a crash)
                        plaintext = next((p for p in (self._decrypt(kind, name, data, k) for k in keys) if p is not None), None)
                        if plaintext is None:
                            raise StateKeyMismatch(
                                "state_corrupt",
                                f"{kind}/{name} opens neither with the state key nor with any of the {len(previous_keys)} previous state keys given (another key, or altered)",
                            )
                        try:
                            _write_file(file, self._seal_plaintext(kind, name, plaintext))
                        except OSError as error:
                            raise StateError("state_error", f"cannot carry {kind}/{name} over to the state key: {error.strerror}") from error
                        changed = True
                        carried += 1
                    if changed:
                        try:
                            self._sync_dir(directory)
                        except OSError as error:
                            raise StateError("state_error", f"cannot carry {kind} over to the state key: {error.strerror}") from error
        finally:
            for key in keys:
                crypto.wipe(key)
        return carried

    def _sweep_temporary_files(self) -> None:
        for kind in KINDS:
            for tmp in (self.path / kind).glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _file(self, kind: str, name: str) -> Path:
        if kind not in KINDS or _NAME_RE.fullmatch(name) is None:
            raise StateError("malformed", f"bad record name {kind}/{name}")
        return self.path / kind / f"{name}.rec"

    def _check_open(self, what: str) -> None:
        """Under ``_io``: after close() the key is wiped, so nothing more is read or written (``state_error``)."""
        if self._closed:
            raise StateError("state_error", f"cannot {what}: the state store is closed")

    def _seal(self, kind: str, name: str, record: dict[str, Any]) -> bytes:
        return self._seal_plaintext(kind, name, json.dumps(record, separators=(",", ":"), sort_keys=True).encode())

    def _seal_plaintext(self, kind: str, name: str, plaintext: bytes) -> bytes:
        nonce = crypto.random_bytes(_NONCE_BYTES)
        return _MAGIC + nonce + _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, _ad(kind, name), nonce, bytes(self._key))

    @staticmethod
    def _decrypt(kind: str, name: str, data: bytes, key: bytearray) -> bytes | None:
        """The plaintext of a record's file under ``key``, None when it does not open under it; ``state_corrupt``
        when the file is no sealed record at all."""
        if len(data) < len(_MAGIC) + _NONCE_BYTES + 16 or not data.startswith(_MAGIC):
            raise StateError("state_corrupt", f"{kind}/{name} is not a sealed state record")
        nonce = data[len(_MAGIC) : len(_MAGIC) + _NONCE_BYTES]
        try:
            plaintext: bytes = _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(data[len(_MAGIC) + _NONCE_BYTES :], _ad(kind, name), nonce, bytes(key))
        except nacl.exceptions.CryptoError:
            return None
        return plaintext

    @staticmethod
    def _read(file: Path, kind: str, name: str) -> bytes:
        try:
            data = file.read_bytes()
        except OSError as error:
            raise StateError("state_error", f"cannot read {file}") from error
        if len(data) > MAX_RECORD_BYTES:
            raise StateError("state_corrupt", f"{kind}/{name} is too large")
        return data

    def _open(self, kind: str, name: str, data: bytes) -> dict[str, Any]:
        plaintext = self._decrypt(kind, name, data, self._key)
        if plaintext is None:
            raise StateKeyMismatch("state_corrupt", f"{kind}/{name} does not open with the state key (another key, or altered)")
        try:
            record = json.loads(plaintext)
        except ValueError as error:
            raise StateError("state_corrupt", f"{kind}/{name} does not parse") from error
        if not isinstance(record, dict):
            raise StateError("state_corrupt", f"{kind}/{name} does not parse")
        return record

    def load(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every record of a kind; ``state_corrupt`` when one does not open."""
        out: dict[str, dict[str, Any]] = {}
        with self._io:
            self._check_open(f"read {kind}")
            for file in sorted((self.path / kind).glob("*.rec")):
                name = file.stem
                if _NAME_RE.fullmatch(name) is None:
                    continue
                out[name] = self._open(kind, name, self._read(file, kind, name))
        return out

    def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        """Writes a record atomically and durably (tmp + fsync + rename + directory fsync); ``state_error`` once closed."""
        target = self._file(kind, name)
        with self._io:
            self._check_open(f"write {kind}/{name}")
            data = self._seal(kind, name, record)
            try:
                _write_file(target, data)
                self._sync_dir(target.parent)
            except OSError as error:
                raise StateError("state_error", f"cannot write {kind}/{name}: {error.strerror}") from error

    def delete(self, kind: str, name: str) -> None:
        """Removes a record durably; a missing one is fine; ``state_error`` once closed."""
        target = self._file(kind, name)
        with self._io:
            self._check_open(f"delete {kind}/{name}")
            try:
                target.unlink()
            except FileNotFoundError:
                return
            except OSError as error:
                raise StateError("state_error", f"cannot delete {kind}/{name}: {error.strerror}") from error
            self._sync_dir(target.parent)

    @staticmethod
    def _sync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def names(self, kind: str) -> Iterator[str]:
        return (f.stem for f in (self.path / kind).glob("*.rec"))

    def close(self) -> None:
        """Waits for a write in progress, wipes the key and releases the directory. Idempotent; every
        later put, delete or load raises ``state_error``."""
        with self._io:
            if self._closed:
                return
            self._closed = True
            crypto.wipe(self._key)
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)

    def __repr__(self) -> str:
        return f"DirectoryStateStore({self.path})"
