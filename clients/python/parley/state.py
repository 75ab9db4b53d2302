"""The agent's durable state (delivery contract, docs/PROTOCOL.md §17): sessions with their
reserved send counters, the outbox, the inbox, the receipt store, and the identity key the
state was written under (§17.8).

One directory per agent, one sealed file per record::

    state_dir/LOCK                  flock: one process per state directory
    state_dir/sessions/<id>.rec     session keys, reserved send counter, replay window
    state_dir/outbox/<entry>.rec    a sent envelope and its payload, until a verified receipt or expiry
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

Writes are atomic and durable: a temporary file (mode 0600) is written and
fsynced, renamed into place, and the directory fsynced, so after a crash a
record is either the old one or the new one, never a mix. Deletions fsync the
directory too. Every write happens before the action it makes safe: a counter
reservation before sealing, the outbox entry before relaying, the inbox record
before the counter is marked and the message handed over, the receipt record
before the inbox entry is dropped.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Protocol

import nacl.bindings as _sodium
import nacl.exceptions

from . import crypto
from .errors import StateError
from .layout import Layout

KINDS: Final = ("sessions", "outbox", "inbox", "receipts", "identity")
#: The one record of kind ``identity`` (replaced in place: a write is atomic).
IDENTITY_RECORD: Final = "0" * 16
_MAGIC: Final = b"PPY1"
_NONCE_BYTES: Final = 24
_NAME_RE: Final = re.compile(r"[0-9a-f]{16,64}")
MAX_RECORD_BYTES: Final = 4 << 20


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

    def __init__(self, path: str | Path, state_key: bytes | bytearray) -> None:
        if len(state_key) != 32:
            raise StateError("malformed", "the state key is 32 bytes")
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
            raise StateError("state_error", f"state directory {self.path} is in use by another process") from error
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            self.close()
            raise StateError("state_error", f"state directory {self.path} is accessible by group or others (mode {mode:o})")
        self._sweep_temporary_files()

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
        plaintext = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
        nonce = crypto.random_bytes(_NONCE_BYTES)
        return _MAGIC + nonce + _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, _ad(kind, name), nonce, bytes(self._key))

    def _open(self, kind: str, name: str, data: bytes) -> dict[str, Any]:
        if len(data) < len(_MAGIC) + _NONCE_BYTES + 16 or not data.startswith(_MAGIC):
            raise StateError("state_corrupt", f"{kind}/{name} is not a sealed state record")
        nonce = data[len(_MAGIC) : len(_MAGIC) + _NONCE_BYTES]
        try:
            plaintext = _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(data[len(_MAGIC) + _NONCE_BYTES :], _ad(kind, name), nonce, bytes(self._key))
        except nacl.exceptions.CryptoError as error:
            raise StateError("state_corrupt", f"{kind}/{name} does not open with the state key (another key, or altered)") from error
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
                try:
                    data = file.read_bytes()
                except OSError as error:
                    raise StateError("state_error", f"cannot read {file}") from error
                if len(data) > MAX_RECORD_BYTES:
                    raise StateError("state_corrupt", f"{kind}/{name} is too large")
                out[name] = self._open(kind, name, data)
        return out

    def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        """Writes a record atomically and durably (tmp + fsync + rename + directory fsync); ``state_error`` once closed."""
        target = self._file(kind, name)
        directory = target.parent
        tmp = directory / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        with self._io:
            self._check_open(f"write {kind}/{name}")
            data = self._seal(kind, name, record)
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
                self._sync_dir(directory)
            except OSError as error:
                with contextlib.suppress(OSError):
                    tmp.unlink()
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
